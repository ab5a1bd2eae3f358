//! Redaction measured on a labeled corpus, through the public API.
//!
//! `tests/data/redaction/secrets.tsv` holds secrets of many kinds, each inside a line the way a
//! tool prints it; `benign.tsv` holds code, logs, hashes, UUIDs, paths, URLs and shell lines that
//! must survive unchanged (both written by `scripts/gen-redaction-corpus.py`). Every line is put
//! into every field an agent can fill (task, context labels and tags, step tool, action,
//! parameter keys and values, output, error, verdict, artifacts, failure reason); the episode is
//! completed, read back, and everything the memory learned is read too.
//!
//! - Recall: a secret is caught in a field when no 8-character piece of it is in what was
//!   stored for that field. A line longer than the field's limit is refused with a typed error,
//!   so nothing is stored: those placements are counted apart and left out of the rate.
//! - False positives: a benign line is hit when what was stored differs from what was given
//!   (after the documented normalization of labels and tags: trimmed and lowercase).
//! - Nothing learned (patterns, heuristics, lessons) holds any whole secret.
//!
//! The test prints the table per kind and per field and fails below recall 0.98 (overall and for
//! any kind or field) or above 1% false positives (overall and for any field or benign kind).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::assigning_clones
)]

use std::collections::BTreeMap;
use std::sync::Arc;

use memory_core::{
    Episode, Error, InMemoryStorage, LearnedQuery, MemoryConfig, Namespace, NewEpisode, Outcome,
    RateLimitConfig, SelfLearningMemory, StepInput, TaskContext, TaskType,
};
use serde_json::{Value, json};

/// Every field a caller fills.
const FIELDS: &[&str] = &[
    "task",
    "domain",
    "language",
    "framework",
    "tag",
    "tool",
    "action",
    "params_key",
    "params_value",
    "output",
    "error",
    "verdict",
    "artifact",
    "failure_reason",
];

const MIN_RECALL: f64 = 0.98;
const MAX_FALSE_POSITIVES: f64 = 0.01;

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn data(name: &str) -> Vec<Vec<String>> {
    let path = format!("{}/tests/data/redaction/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split('\t').map(unescape).collect())
        .collect()
}

/// What was stored for each field of one placement.
type Stored = BTreeMap<&'static str, Option<String>>;

fn memory() -> SelfLearningMemory {
    let config = MemoryConfig {
        rate_limit: RateLimitConfig::disabled(),
        ..MemoryConfig::default()
    };
    SelfLearningMemory::new(Arc::new(InMemoryStorage::new()), config).unwrap()
}

fn params_value(line: &str) -> Value {
    // A line that is a JSON object goes in as that object (numbers under secret keys
    // included), anything else as a string.
    match serde_json::from_str::<Value>(line) {
        Ok(v @ Value::Object(_)) => json!({ "arg": v }),
        _ => json!({ "arg": line }),
    }
}

/// Puts `line` into every field, in two episodes (one succeeds, one fails), and returns what was
/// stored per field; `None` when the field refused the line (a typed limit error).
async fn place(memory: &SelfLearningMemory, ns: &Namespace, line: &str) -> Stored {
    let mut stored: Stored = BTreeMap::new();
    // Context fields one at a time, so a refused label does not hide the others.
    let single = |f: &str| -> (String, TaskContext) {
        let mut ctx = TaskContext::new("general");
        let mut task = "store the report".to_owned();
        match f {
            "task" => task = line.to_owned(),
            "domain" => ctx.domain = line.to_owned(),
            "language" => ctx.language = Some(line.to_owned()),
            "framework" => ctx.framework = Some(line.to_owned()),
            "tag" => ctx.tags = vec![line.to_owned()],
            _ => {}
        }
        (task, ctx)
    };
    for f in ["task", "domain", "language", "framework", "tag"] {
        let (task, ctx) = single(f);
        let id = match memory
            .start_episode(ns, NewEpisode::new(task, TaskType::Other, ctx))
            .await
        {
            Ok(id) => id,
            Err(Error::LimitExceeded { .. } | Error::InvalidInput { .. }) => {
                stored.insert(static_field(f), None);
                continue;
            }
            Err(e) => panic!("{f}: {e}"),
        };
        let ep = memory.get_episode(ns, id).await.unwrap();
        let value = match f {
            "task" => ep.task_description.clone(),
            "domain" => ep.context.domain.clone(),
            "language" => ep.context.language.clone().unwrap_or_default(),
            "framework" => ep.context.framework.clone().unwrap_or_default(),
            _ => ep.context.tags.join("\n"),
        };
        stored.insert(static_field(f), Some(value));
        memory
            .complete_episode(ns, id, Outcome::success("stored"))
            .await
            .unwrap();
    }

    // Step fields, each in its own step; then a success and a failure outcome.
    for (success, fields) in [
        (
            true,
            &[
                "tool",
                "action",
                "params_key",
                "params_value",
                "output",
                "verdict",
                "artifact",
            ][..],
        ),
        (false, &["error", "failure_reason"][..]),
    ] {
        let id = memory
            .start_episode(
                ns,
                NewEpisode::new(
                    "run the nightly job",
                    TaskType::Other,
                    TaskContext::new("ops"),
                ),
            )
            .await
            .unwrap();
        let mut logged: Vec<&'static str> = Vec::new();
        for &f in fields {
            let step = match f {
                "tool" => StepInput::ok(line, "run it", "ok"),
                "action" => StepInput::ok("shell", line, "ok"),
                "params_key" => {
                    let mut map = serde_json::Map::new();
                    map.insert(line.to_owned(), json!(1));
                    StepInput::ok("shell", "run with params", "ok")
                        .with_parameters(Value::Object(map))
                }
                "params_value" => StepInput::ok("shell", "run with params", "ok")
                    .with_parameters(params_value(line)),
                "output" => StepInput::ok("shell", "print it", line),
                "error" => StepInput::error("shell", "print it", line),
                _ => continue,
            };
            match memory.log_step(ns, id, step).await {
                Ok(()) => logged.push(static_field(f)),
                Err(Error::LimitExceeded { .. } | Error::InvalidInput { .. }) => {
                    stored.insert(static_field(f), None);
                }
                Err(e) => panic!("{f}: {e}"),
            }
        }
        let outcome = if success {
            Outcome::Success {
                verdict: line.to_owned(),
                artifacts: vec![line.to_owned()],
            }
        } else {
            Outcome::Failure {
                reason: line.to_owned(),
            }
        };
        let outcome_fields: &[&'static str] = if success {
            &["verdict", "artifact"]
        } else {
            &["failure_reason"]
        };
        let completed = match memory.complete_episode(ns, id, outcome).await {
            Ok(_) => true,
            Err(Error::LimitExceeded { .. } | Error::InvalidInput { .. }) => {
                for f in outcome_fields {
                    stored.insert(f, None);
                }
                let fallback = if success {
                    Outcome::success("done")
                } else {
                    Outcome::failure("failed")
                };
                memory.complete_episode(ns, id, fallback).await.unwrap();
                false
            }
            Err(e) => panic!("complete: {e}"),
        };
        let ep = memory.get_episode(ns, id).await.unwrap();
        for (i, f) in logged.iter().enumerate() {
            let step = &ep.steps[i];
            let value = match *f {
                "tool" => step.input.tool.clone(),
                "action" => step.input.action.clone(),
                "params_key" => step
                    .input
                    .parameters
                    .as_object()
                    .map(|m| m.keys().cloned().collect::<Vec<_>>().join("\n"))
                    .unwrap_or_default(),
                "params_value" => step.input.parameters["arg"].to_string(),
                _ => step.input.result.text().to_owned(),
            };
            stored.insert(f, Some(value));
        }
        if completed {
            for f in outcome_fields {
                stored.insert(f, Some(outcome_text(&ep, f)));
            }
        }
    }
    stored
}

fn outcome_text(ep: &Episode, field: &str) -> String {
    match (&ep.outcome, field) {
        (Some(Outcome::Success { verdict, .. }), "verdict") => verdict.clone(),
        (Some(Outcome::Success { artifacts, .. }), "artifact") => artifacts.join("\n"),
        (Some(Outcome::Failure { reason }), "failure_reason") => reason.clone(),
        (other, f) => panic!("{f}: unexpected outcome {other:?}"),
    }
}

fn static_field(f: &str) -> &'static str {
    FIELDS.iter().find(|&&x| x == f).copied().unwrap()
}

/// What a benign line is expected to become in a field (labels and tags are normalized).
fn expected(field: &str, line: &str) -> String {
    match field {
        "domain" | "language" | "framework" | "tag" => line.trim().to_lowercase(),
        "params_value" => params_value(line)["arg"].to_string(),
        _ => line.to_owned(),
    }
}

/// Whether any 8-character piece of `secret` (or all of it, when shorter) is in `text`,
/// ignoring case (labels and tags are stored lowercase).
fn leaks(secret: &str, text: &str) -> bool {
    let text = text.to_lowercase();
    let secret: Vec<char> = secret.to_lowercase().chars().collect();
    if secret.len() <= 8 {
        return text.contains(&secret.iter().collect::<String>());
    }
    secret
        .windows(8)
        .any(|w| text.contains(&w.iter().collect::<String>()))
}

#[derive(Default, Clone, Copy)]
struct Tally {
    placed: u32,
    caught: u32,
    refused: u32,
}

impl Tally {
    fn rate(self) -> f64 {
        if self.placed == 0 {
            1.0
        } else {
            f64::from(self.caught) / f64::from(self.placed)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redaction_recall_and_false_positives_on_the_labeled_corpus() {
    let secrets = data("secrets.tsv");
    let benign = data("benign.tsv");
    let kinds: std::collections::BTreeSet<&str> = secrets.iter().map(|r| r[0].as_str()).collect();
    assert!(secrets.len() >= 300, "{} secrets", secrets.len());
    assert!(kinds.len() >= 25, "{} kinds", kinds.len());
    assert!(benign.len() >= 1000, "{} benign lines", benign.len());

    let memory = memory();
    let ns = Namespace::new("corpus").unwrap();

    let mut by_kind: BTreeMap<String, Tally> = BTreeMap::new();
    let mut by_field: BTreeMap<&str, Tally> = BTreeMap::new();
    let mut misses: Vec<String> = Vec::new();
    for row in &secrets {
        let (kind, secret, line) = (&row[0], &row[1], &row[2]);
        assert!(
            line.contains(secret.as_str()),
            "{kind}: line lacks its secret"
        );
        let stored = place(&memory, &ns, line).await;
        for &field in FIELDS {
            let k = by_kind.entry(kind.clone()).or_default();
            let f = by_field.entry(field).or_default();
            match stored.get(field).expect(field) {
                None => {
                    k.refused += 1;
                    f.refused += 1;
                }
                Some(text) => {
                    k.placed += 1;
                    f.placed += 1;
                    if leaks(secret, text) {
                        misses.push(format!("{kind} in {field}: {text:?}"));
                    } else {
                        k.caught += 1;
                        f.caught += 1;
                    }
                }
            }
        }
    }

    let mut fp_by_field: BTreeMap<&str, Tally> = BTreeMap::new();
    let mut fp_by_kind: BTreeMap<String, Tally> = BTreeMap::new();
    let mut false_positives: Vec<String> = Vec::new();
    for row in &benign {
        let (kind, line) = (&row[0], &row[1]);
        let stored = place(&memory, &ns, line).await;
        for &field in FIELDS {
            let Some(Some(text)) = stored.get(field) else {
                continue;
            };
            let f = fp_by_field.entry(field).or_default();
            let k = fp_by_kind.entry(kind.clone()).or_default();
            f.placed += 1;
            k.placed += 1;
            // `caught` counts lines changed, i.e. false positives.
            if *text != expected(field, line) {
                f.caught += 1;
                k.caught += 1;
                false_positives.push(format!("{kind} in {field}: {line:?} -> {text:?}"));
            }
        }
    }

    // Nothing learned holds a whole secret.
    let query = LearnedQuery::default();
    let learned = serde_json::to_string(&(
        memory.patterns(&ns, &query).await.unwrap(),
        memory.heuristics(&ns, &query).await.unwrap(),
        memory.lessons(&ns, &query).await.unwrap(),
    ))
    .unwrap()
    .to_lowercase();
    let learned_leaks: Vec<&String> = secrets
        .iter()
        .map(|r| &r[1])
        .filter(|s| learned.contains(&s.to_lowercase()))
        .collect();

    println!("recall per kind (placed, caught, refused by a length limit):");
    for (kind, t) in &by_kind {
        println!(
            "  {kind:<26} {:>4} {:>4} {:>4}  {:.3}",
            t.placed,
            t.caught,
            t.refused,
            t.rate()
        );
    }
    println!("recall per field:");
    for (field, t) in &by_field {
        println!(
            "  {field:<16} {:>4} {:>4} {:>4}  {:.3}",
            t.placed,
            t.caught,
            t.refused,
            t.rate()
        );
    }
    println!("false positives per field (placed, changed):");
    for (field, t) in &fp_by_field {
        println!(
            "  {field:<16} {:>5} {:>3}  {:.4}",
            t.placed,
            t.caught,
            t.rate()
        );
    }
    println!("false positives per benign kind:");
    for (kind, t) in &fp_by_kind {
        println!(
            "  {kind:<8} {:>5} {:>3}  {:.4}",
            t.placed,
            t.caught,
            t.rate()
        );
    }
    let total = by_field.values().fold(Tally::default(), |a, t| Tally {
        placed: a.placed + t.placed,
        caught: a.caught + t.caught,
        refused: a.refused + t.refused,
    });
    let fp_total = fp_by_field.values().fold(Tally::default(), |a, t| Tally {
        placed: a.placed + t.placed,
        caught: a.caught + t.caught,
        refused: 0,
    });
    println!(
        "overall: recall {:.4} ({} of {} placements; {} refused), false positives {:.4} ({} of {})",
        total.rate(),
        total.caught,
        total.placed,
        total.refused,
        fp_total.rate(),
        fp_total.caught,
        fp_total.placed
    );
    for m in misses.iter().take(40) {
        println!("MISS {m}");
    }
    for m in false_positives.iter().take(40) {
        println!("FALSE POSITIVE {m}");
    }

    assert!(
        learned_leaks.is_empty(),
        "learned items hold {learned_leaks:?}"
    );
    assert!(
        total.rate() >= MIN_RECALL,
        "overall recall {:.4}",
        total.rate()
    );
    for (kind, t) in &by_kind {
        assert!(t.rate() >= MIN_RECALL, "recall of {kind}: {:.3}", t.rate());
    }
    for (field, t) in &by_field {
        assert!(t.rate() >= MIN_RECALL, "recall in {field}: {:.3}", t.rate());
    }
    assert!(
        fp_total.rate() <= MAX_FALSE_POSITIVES,
        "false positives {:.4}",
        fp_total.rate()
    );
    for (field, t) in &fp_by_field {
        assert!(
            t.rate() <= MAX_FALSE_POSITIVES,
            "false positives in {field}: {:.4}",
            t.rate()
        );
    }
    for (kind, t) in &fp_by_kind {
        assert!(
            t.rate() <= MAX_FALSE_POSITIVES,
            "false positives on {kind}: {:.4}",
            t.rate()
        );
    }
    memory.shutdown().await.unwrap();
}

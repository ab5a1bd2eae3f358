//! `memory demo`: a scripted learning session over a few task families, then what was learned.

use anyhow::Result;
use memory_core::retrieval::recommend::RecommendRequest;
use memory_core::{
    Complexity, LearnedQuery, NewEpisode, Outcome, SelfLearningMemory, StepInput, TaskContext,
    TaskType,
};
use serde_json::json;

use crate::display_safe;
use crate::output::{self, clip, pct, short_id};
use crate::settings::Settings;

/// One scripted step: tool, action, and `Ok(output)` or `Err(error)`.
type Script = &'static [(
    &'static str,
    &'static str,
    Result<&'static str, &'static str>,
)];

struct Family {
    task: &'static str,
    task_type: TaskType,
    domain: &'static str,
    language: &'static str,
    framework: Option<&'static str>,
    /// Scripts cycled through round by round, with their outcome (`true` = success).
    variants: &'static [(Script, bool)],
}

const RATE_LIMIT_CLEAN: Script = &[
    ("read_file", "read src/router.rs", Ok("212 lines")),
    ("edit_file", "add tower_governor layer", Ok("edit applied")),
    ("cargo", "cargo test", Ok("test result: ok. 48 passed")),
];
const RATE_LIMIT_RECOVER: Script = &[
    ("read_file", "read src/router.rs", Ok("212 lines")),
    ("edit_file", "add tower_governor layer", Ok("edit applied")),
    (
        "cargo",
        "cargo test",
        Err("error[E0277]: the trait bound `GovernorLayer: Layer<Route>` is not satisfied"),
    ),
    (
        "edit_file",
        "wrap the layer with ServiceBuilder",
        Ok("edit applied"),
    ),
    ("cargo", "cargo test", Ok("test result: ok. 49 passed")),
];
const FLAKY_FIX: Script = &[
    (
        "pytest",
        "pytest tests/test_billing.py",
        Err("AssertionError: invoice due date 2026-11-23 != 2026-11-22"),
    ),
    ("read_file", "read tests/test_billing.py", Ok("88 lines")),
    (
        "edit_file",
        "freeze time with a fake clock",
        Ok("edit applied"),
    ),
    ("pytest", "pytest tests/test_billing.py", Ok("14 passed")),
];
const FLAKY_RETRY_ONLY: Script = &[
    (
        "pytest",
        "pytest tests/test_billing.py",
        Err("AssertionError: invoice due date 2026-11-23 != 2026-11-22"),
    ),
    (
        "pytest",
        "pytest tests/test_billing.py --count 3",
        Err("AssertionError: invoice due date 2026-11-23 != 2026-11-22"),
    ),
];
const MIGRATION_OK: Script = &[
    (
        "read_file",
        "read migrations/0042_add_index.sql",
        Ok("12 lines"),
    ),
    (
        "sqlx",
        "sqlx migrate run",
        Ok("Applied 0042/migrate add index"),
    ),
    ("psql", "check the index", Ok("index valid")),
];
const MIGRATION_LOCKED: Script = &[
    (
        "read_file",
        "read migrations/0042_add_index.sql",
        Ok("12 lines"),
    ),
    (
        "sqlx",
        "sqlx migrate run",
        Err("canceling statement due to lock timeout"),
    ),
    (
        "edit_file",
        "use CREATE INDEX CONCURRENTLY",
        Ok("edit applied"),
    ),
    (
        "sqlx",
        "sqlx migrate run",
        Ok("Applied 0042/migrate add index"),
    ),
];

const FAMILIES: &[Family] = &[
    Family {
        task: "add per-client rate limiting to the axum API",
        task_type: TaskType::CodeGeneration,
        domain: "web_api",
        language: "rust",
        framework: Some("axum"),
        variants: &[(RATE_LIMIT_CLEAN, true), (RATE_LIMIT_RECOVER, true)],
    },
    Family {
        task: "fix the flaky billing test that fails around midnight",
        task_type: TaskType::Testing,
        domain: "testing",
        language: "python",
        framework: Some("pytest"),
        variants: &[(FLAKY_RETRY_ONLY, false), (FLAKY_FIX, true)],
    },
    Family {
        task: "add an index to the orders table with a migration",
        task_type: TaskType::Refactoring,
        domain: "databases",
        language: "sql",
        framework: None,
        variants: &[(MIGRATION_LOCKED, true), (MIGRATION_OK, true)],
    },
];

/// A new task, worded differently from the recorded one, asked about after every round.
const PROBE_TASK: &str = "stop the billing test from breaking near midnight";

/// What the memory advises for the probe task now, as one line and as JSON.
async fn probe(
    m: &SelfLearningMemory,
    ns: &memory_core::Namespace,
) -> Result<(String, serde_json::Value)> {
    m.embed_pending(ns).await?;
    let ctx = TaskContext::new("testing")
        .with_language("python")
        .with_framework("pytest");
    let rec = m
        .recommend(
            ns,
            &RecommendRequest::new(PROBE_TASK).with_context(Some(TaskType::Testing), ctx),
        )
        .await?;
    let playbook: Vec<&str> = rec.playbook.iter().map(|p| p.tool.as_str()).collect();
    let matched = match (rec.strong_match, rec.confidence) {
        (true, Some(c)) => format!("strong match ({})", pct(c)),
        (false, Some(c)) => format!("no strong match ({})", pct(c)),
        (_, None) if rec.degraded.is_some() => "lexical only (no model)".to_owned(),
        (_, None) => "nothing similar in memory yet".to_owned(),
    };
    let chance = rec
        .estimate
        .success_chance
        .map_or_else(|| "-".to_owned(), pct);
    let line = format!(
        "{matched}; success chance {chance} (n={}); playbook {}; {} pitfall(s)",
        rec.estimate.sample_size,
        if playbook.is_empty() {
            "none yet".to_owned()
        } else {
            playbook.join(" → ")
        },
        rec.pitfalls.len()
    );
    let value = json!({
        "strong_match": rec.strong_match,
        "confidence": rec.confidence,
        "success_chance": rec.estimate.success_chance,
        "sample_size": rec.estimate.sample_size,
        "playbook": playbook,
        "pitfalls": rec.pitfalls.len(),
    });
    Ok((line, value))
}

pub async fn run(rounds: u32, m: &SelfLearningMemory, s: &Settings) -> Result<()> {
    let ns = &s.namespace;
    let mut episodes = Vec::new();
    let mut advice = Vec::new();
    let (line, value) = probe(m, ns).await?;
    if !s.json {
        println!("Asking for advice on {PROBE_TASK:?} (a new wording of a task below):");
        println!("  before any episode: {}", display_safe::line(&line));
    }
    advice.push(value);
    if !s.json {
        println!(
            "Recording {} episodes in namespace {ns} ...",
            rounds as usize * FAMILIES.len()
        );
    }
    for round in 0..rounds {
        for fam in FAMILIES {
            let (script, ok) = fam.variants[round as usize % fam.variants.len()];
            let mut ctx = TaskContext::new(fam.domain)
                .with_language(fam.language)
                .with_complexity(Complexity::Moderate);
            ctx.framework = fam.framework.map(str::to_owned);
            let id = m
                .start_episode(ns, NewEpisode::new(fam.task, fam.task_type, ctx))
                .await?;
            for (i, (tool, action, result)) in script.iter().enumerate() {
                let step = match result {
                    Ok(out) => StepInput::ok(*tool, *action, *out),
                    Err(err) => StepInput::error(*tool, *action, *err),
                };
                m.log_step(ns, id, step.with_latency_ms(150 + 40 * i as u64))
                    .await?;
            }
            let outcome = if ok {
                Outcome::success("done and verified")
            } else {
                Outcome::failure("test still flaky")
            };
            let report = m.complete_episode(ns, id, outcome).await?;
            if !s.json {
                println!(
                    "  {:>2}. {:<55} {:<8} reward {:.2}",
                    episodes.len() + 1,
                    clip(fam.task, 55),
                    report.outcome.kind().as_str(),
                    report.reward.total
                );
            }
            episodes.push(json!({ "episode_id": id, "task": fam.task, "outcome": report.outcome.kind(), "reward": report.reward.total }));
        }
        let (line, value) = probe(m, ns).await?;
        if !s.json {
            println!(
                "  advice after round {}: {}",
                round + 1,
                display_safe::line(&line)
            );
        }
        advice.push(value);
    }

    let now = m.clock().now();
    let hl = m.config().learning.half_life_days;
    let all = LearnedQuery {
        limit: 200,
        ..LearnedQuery::default()
    };
    let patterns = m.patterns(ns, &all).await?;
    let heuristics = m
        .heuristics(
            ns,
            &LearnedQuery {
                include_inactive: true,
                ..all.clone()
            },
        )
        .await?;
    let lessons = m.lessons(ns, &all).await?;
    let stats = m.stats(ns).await?;

    if s.json {
        return output::json(&json!({
            "namespace": ns,
            "episodes": episodes,
            "probe_task": PROBE_TASK,
            "advice_by_round": advice,
            "stats": stats,
            "patterns": patterns.iter().map(|p| json!({"id": p.id, "kind": p.kind.name(), "description": p.describe(), "occurrences": p.occurrences, "success_rate": p.success_rate(), "confidence": p.confidence(now, hl)})).collect::<Vec<_>>(),
            "heuristics": heuristics.iter().map(|h| json!({"id": h.id, "condition": h.condition, "action": h.action, "support": h.support, "against": h.against, "status": h.status, "confidence": h.confidence(now, hl)})).collect::<Vec<_>>(),
            "lessons": lessons.iter().map(|l| json!({"id": l.id, "text": l.text(), "occurrences": l.occurrences, "recovered": l.recovered})).collect::<Vec<_>>(),
        }));
    }

    println!();
    println!(
        "Learned from {} episodes: {} patterns, {} heuristics ({} active), {} failure lessons.",
        stats.completed, stats.patterns, stats.heuristics, stats.active_heuristics, stats.lessons
    );
    println!();
    println!(
        "Patterns (merged across episodes; confidence = Wilson lower bound of success, decayed by age):"
    );
    for p in patterns
        .iter()
        .filter(|p| p.kind.name() != "context_pattern")
        .take(12)
    {
        println!(
            "  {}  seen {:>2}x  success {:>4}  conf {:>4}  {}",
            short_id(&p.id.0),
            p.occurrences,
            pct(p.success_rate()),
            pct(p.confidence(now, hl)),
            clip(&p.describe(), 90)
        );
    }
    println!();
    println!("Heuristics (one active answer per condition; contradicted ones kept with a reason):");
    for h in &heuristics {
        println!(
            "  {:<10} +{} -{}  conf {:>4}  if {} then {}",
            h.status.name(),
            h.support,
            h.against,
            pct(h.confidence(now, hl)),
            clip(&format!("{} ({})", h.condition, h.context.label()), 60),
            clip(&h.action, 60)
        );
    }
    println!();
    println!("Failure lessons (surfaced before similar tasks):");
    for l in &lessons {
        println!("  - {}", display_safe::line(&l.text()));
    }
    println!();
    println!(
        "Explore: memory --namespace {ns} pattern list | heuristic list --all | lesson list | stats"
    );
    Ok(())
}

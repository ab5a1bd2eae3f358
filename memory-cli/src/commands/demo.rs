//! `memory demo`: a scripted learning session over a few task families, then what was learned.

use anyhow::Result;
use chrono::{DateTime, Utc};
use memory_core::retrieval::recommend::RecommendRequest;
use memory_core::{
    CompletionReport, Complexity, EpisodeId, FailureLesson, Heuristic, LearnedQuery, Namespace,
    NamespaceStats, NewEpisode, Outcome, Pattern, SelfLearningMemory, StepInput, TaskContext,
    TaskType,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::display_safe;
use crate::output::{self, clip, pct, short_id};
use crate::settings::Settings;

/// A task family of the scripted session: its step scripts are cycled through round by round.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Family {
    task: String,
    task_type: TaskType,
    domain: String,
    language: String,
    framework: Option<String>,
    variants: Vec<Variant>,
}

/// One script with its outcome.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Variant {
    steps: Vec<ScriptStep>,
    success: bool,
}

/// One scripted step: its output, or its error.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScriptStep {
    tool: String,
    action: String,
    #[serde(default)]
    output: String,
    error: Option<String>,
}

/// The session's families (data: `demo.json`, embedded).
fn families() -> Result<Vec<Family>> {
    Ok(serde_json::from_str(include_str!("demo.json"))?)
}

/// A new task, worded differently from the recorded one, asked about after every round.
const PROBE_TASK: &str = "stop the billing test from breaking near midnight";

/// What the memory advises for the probe task now, as one line and as JSON.
async fn probe(m: &SelfLearningMemory, ns: &Namespace) -> Result<(String, Value)> {
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

/// Records one episode of `fam` with `variant`'s steps and completes it.
async fn record_episode(
    m: &SelfLearningMemory,
    ns: &Namespace,
    fam: &Family,
    variant: &Variant,
) -> Result<(EpisodeId, CompletionReport)> {
    let mut ctx = TaskContext::new(fam.domain.as_str())
        .with_language(fam.language.as_str())
        .with_complexity(Complexity::Moderate);
    ctx.framework.clone_from(&fam.framework);
    let new = NewEpisode::new(fam.task.as_str(), fam.task_type, ctx);
    let id = m.start_episode(ns, new).await?;
    for (i, st) in variant.steps.iter().enumerate() {
        let step = match &st.error {
            None => StepInput::ok(st.tool.as_str(), st.action.as_str(), st.output.as_str()),
            Some(err) => StepInput::error(st.tool.as_str(), st.action.as_str(), err.as_str()),
        };
        m.log_step(ns, id, step.with_latency_ms(150 + 40 * i as u64))
            .await?;
    }
    let outcome = if variant.success {
        Outcome::success("done and verified")
    } else {
        Outcome::failure("test still flaky")
    };
    let report = m.complete_episode(ns, id, outcome).await?;
    Ok((id, report))
}

/// The scripted rounds: every family's episode of the round, then the probe's advice.
/// Returns the recorded episodes and the advice before and after each round, as JSON.
async fn record_rounds(
    rounds: u32,
    families: &[Family],
    m: &SelfLearningMemory,
    s: &Settings,
) -> Result<(Vec<Value>, Vec<Value>)> {
    let ns = &s.namespace;
    let mut episodes = Vec::new();
    let mut advice = Vec::new();
    let (line, value) = probe(m, ns).await?;
    if !s.json {
        outln!("Asking for advice on {PROBE_TASK:?} (a new wording of a task below):");
        outln!("  before any episode: {}", display_safe::line(&line));
    }
    advice.push(value);
    if !s.json {
        outln!(
            "Recording {} episodes in namespace {ns} ...",
            rounds as usize * families.len()
        );
    }
    for round in 0..rounds {
        for fam in families {
            let Some(variant) = fam.variants.get(round as usize % fam.variants.len().max(1)) else {
                continue;
            };
            let (id, report) = record_episode(m, ns, fam, variant).await?;
            if !s.json {
                outln!(
                    "  {:>2}. {:<55} {:<8} reward {:.2}",
                    episodes.len() + 1,
                    clip(&fam.task, 55),
                    report.outcome.kind().as_str(),
                    report.reward.total
                );
            }
            episodes.push(json!({ "episode_id": id, "task": fam.task, "outcome": report.outcome.kind(), "reward": report.reward.total }));
        }
        let (line, value) = probe(m, ns).await?;
        if !s.json {
            outln!(
                "  advice after round {}: {}",
                round + 1,
                display_safe::line(&line)
            );
        }
        advice.push(value);
    }
    Ok((episodes, advice))
}

/// What the session taught, read back after the rounds.
struct Learned {
    now: DateTime<Utc>,
    half_life_days: f64,
    patterns: Vec<Pattern>,
    heuristics: Vec<Heuristic>,
    lessons: Vec<FailureLesson>,
    stats: NamespaceStats,
}

impl Learned {
    async fn read(m: &SelfLearningMemory, ns: &Namespace) -> Result<Learned> {
        let now = m.clock().now();
        let half_life_days = m.config().learning.half_life_days;
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
        Ok(Learned {
            now,
            half_life_days,
            patterns,
            heuristics,
            lessons,
            stats,
        })
    }
}

/// The session as one JSON document.
fn print_json(
    ns: &Namespace,
    episodes: &[Value],
    advice: &[Value],
    learned: &Learned,
) -> Result<()> {
    let (now, hl) = (learned.now, learned.half_life_days);
    output::json(&json!({
        "namespace": ns,
        "episodes": episodes,
        "probe_task": PROBE_TASK,
        "advice_by_round": advice,
        "stats": learned.stats,
        "patterns": learned.patterns.iter().map(|p| json!({"id": p.id, "kind": p.kind.name(), "description": p.describe(), "occurrences": p.occurrences, "success_rate": p.success_rate(), "confidence": p.confidence(now, hl)})).collect::<Vec<_>>(),
        "heuristics": learned.heuristics.iter().map(|h| json!({"id": h.id, "condition": h.condition, "action": h.action, "support": h.support, "against": h.against, "status": h.status, "confidence": h.confidence(now, hl)})).collect::<Vec<_>>(),
        "lessons": learned.lessons.iter().map(|l| json!({"id": l.id, "text": l.text(), "occurrences": l.occurrences, "recovered": l.recovered})).collect::<Vec<_>>(),
    }))
}

/// What the session learned, as text.
fn print_learned(ns: &Namespace, learned: &Learned) {
    let (now, hl, stats) = (learned.now, learned.half_life_days, &learned.stats);
    outln!();
    outln!(
        "Learned from {} episodes: {} patterns, {} heuristics ({} active), {} failure lessons.",
        stats.completed,
        stats.patterns,
        stats.heuristics,
        stats.active_heuristics,
        stats.lessons
    );
    outln!();
    outln!(
        "Patterns (merged across episodes; confidence = Wilson lower bound of success, decayed by age):"
    );
    for p in learned
        .patterns
        .iter()
        .filter(|p| p.kind.name() != "context_pattern")
        .take(12)
    {
        outln!(
            "  {}  seen {:>2}x  success {:>4}  conf {:>4}  {}",
            short_id(&p.id.0),
            p.occurrences,
            pct(p.success_rate()),
            pct(p.confidence(now, hl)),
            clip(&p.describe(), 90)
        );
    }
    outln!();
    outln!("Heuristics (one active answer per condition; contradicted ones kept with a reason):");
    for h in &learned.heuristics {
        outln!(
            "  {:<10} +{} -{}  conf {:>4}  if {} then {}",
            h.status.name(),
            h.support,
            h.against,
            pct(h.confidence(now, hl)),
            clip(&format!("{} ({})", h.condition, h.context.label()), 60),
            clip(&h.action, 60)
        );
    }
    outln!();
    outln!("Failure lessons (surfaced before similar tasks):");
    for l in &learned.lessons {
        outln!("  - {}", display_safe::line(&l.text()));
    }
    outln!();
    outln!(
        "Explore: memory --namespace {ns} pattern list | heuristic list --all | lesson list | stats"
    );
}

pub async fn run(rounds: u32, m: &SelfLearningMemory, s: &Settings) -> Result<()> {
    let ns = &s.namespace;
    let families = families()?;
    let (episodes, advice) = record_rounds(rounds, &families, m, s).await?;
    let learned = Learned::read(m, ns).await?;
    if s.json {
        return print_json(ns, &episodes, &advice, &learned);
    }
    print_learned(ns, &learned);
    Ok(())
}

//! `memory episode ...`

use anyhow::{Context, Result};
use memory_core::retrieval::recommend::RecommendRequest;
use memory_core::{
    EpisodeFilter, EpisodeId, EpisodeQuery, EpisodeStatus, NewEpisode, Outcome, OutcomeKind,
    SelfLearningMemory, StepInput, StepResult, TaskType, TextQuery,
};
use serde_json::json;

use crate::cli::{CompleteArgs, EpisodeCmd, ListArgs, StartArgs, StepArgs};
use crate::commands::{forget, recommend};
use crate::display_safe::line;
use crate::output::{self, clip, pct};
use crate::settings::Settings;

pub async fn run(cmd: EpisodeCmd, m: &SelfLearningMemory, s: &Settings) -> Result<()> {
    match cmd {
        EpisodeCmd::Start(a) => start(a, m, s).await,
        EpisodeCmd::Step(a) => step(a, m, s).await,
        EpisodeCmd::Complete(a) => complete(a, m, s).await,
        EpisodeCmd::Show { id } => show(&id, m, s).await,
        EpisodeCmd::List(a) => list(a, m, s).await,
        EpisodeCmd::Search { text, limit } => search(&text, limit, m, s).await,
        EpisodeCmd::Forget(a) => forget::forget(a, m, s).await,
        EpisodeCmd::Forgotten { limit } => forget::forgotten(limit, m, s).await,
    }
}

pub fn parse_id(id: &str) -> Result<EpisodeId> {
    Ok(id.parse::<EpisodeId>()?)
}

async fn start(a: StartArgs, m: &SelfLearningMemory, s: &Settings) -> Result<()> {
    let task_type: TaskType = a.task_type.parse()?;
    let context = a.context.to_context()?;
    // Asked first, in this process: the engine records the estimate with the episode that
    // starts next for the same task.
    let advice = if a.advise {
        let req =
            RecommendRequest::new(a.task.clone()).with_context(Some(task_type), context.clone());
        Some(recommend::advise(&req, m, s).await?)
    } else {
        None
    };
    let new = NewEpisode::new(a.task, task_type, context);
    let id = m.start_episode(&s.namespace, new).await?;
    if s.json {
        let mut out = json!({ "episode_id": id, "namespace": s.namespace });
        if let Some(rec) = &advice {
            out["recommendation"] = json!(rec);
        }
        return output::json(&out);
    }
    if let Some(rec) = &advice {
        recommend::print_human(rec);
        outln!("\nepisode");
    }
    outln!("{id}");
    Ok(())
}

async fn step(a: StepArgs, m: &SelfLearningMemory, s: &Settings) -> Result<()> {
    let id = parse_id(&a.episode_id)?;
    let parameters = match &a.params {
        Some(p) => serde_json::from_str(p)
            .map_err(|e| memory_core::Error::invalid("--params", format!("not valid JSON: {e}")))?,
        None => serde_json::Value::Null,
    };
    let result = match (a.ok, a.error, a.timeout) {
        (Some(output), _, _) => StepResult::Success { output },
        (None, Some(message), _) => StepResult::Error { message },
        _ => StepResult::Timeout {
            message: String::new(),
        },
    };
    let status = result.status();
    let input = StepInput {
        tool: a.tool,
        action: a.action,
        parameters,
        result,
        latency_ms: a.latency_ms,
        tokens: a.tokens,
    };
    m.log_step(&s.namespace, id, input).await?;
    m.flush().await?;
    let e = m.get_episode(&s.namespace, id).await?;
    let n = e.steps.last().map_or(0, |s| s.step_number);
    if s.json {
        output::json(&json!({ "episode_id": id, "step_number": n, "status": status }))
    } else {
        outln!("logged step {n} ({status}) of episode {id}");
        Ok(())
    }
}

async fn complete(a: CompleteArgs, m: &SelfLearningMemory, s: &Settings) -> Result<()> {
    let id = parse_id(&a.episode_id)?;
    let outcome = match (a.success, a.partial, a.failure) {
        (Some(verdict), _, _) => Outcome::Success {
            verdict,
            artifacts: a.artifacts,
        },
        (None, Some(verdict), _) => Outcome::PartialSuccess {
            verdict,
            completed: a.completed,
            failed: a.failed,
        },
        (None, None, Some(reason)) => Outcome::Failure { reason },
        (None, None, None) => Outcome::Abstained {
            reason: a.abstain.unwrap_or_default(),
        },
    };
    let report = m.complete_episode(&s.namespace, id, outcome).await?;
    if s.json {
        return output::json(&report);
    }
    let r = &report.reward;
    outln!("episode {id} completed ({})", report.outcome.kind());
    outln!(
        "reward {:.2}  (outcome {:.2}, efficiency {:.2}, quality {:.2}, complexity +{:.3}, learning +{:.3})",
        r.total,
        r.outcome_base,
        r.efficiency,
        r.quality,
        r.complexity_bonus,
        r.learning_bonus
    );
    let sections = [
        ("what worked", &report.reflection.successes),
        ("to improve", &report.reflection.improvements),
        ("insights", &report.reflection.insights),
    ];
    for (title, lines) in sections {
        if !lines.is_empty() {
            outln!("{title}:");
            for l in lines {
                outln!("  - {}", line(l));
            }
        }
    }
    let learned = report
        .patterns
        .iter()
        .chain(&report.heuristics)
        .chain(&report.lessons);
    outln!("learned:");
    for item in learned {
        let status = if item.created { "new" } else { "upd" };
        let (kind, what) = (&item.kind, clip(&item.description, 90));
        let (evidence, confidence) = (item.evidence, pct(item.confidence));
        outln!("  {status} {kind:<15} {what} (evidence {evidence}, confidence {confidence})");
    }
    Ok(())
}

async fn show(id: &str, m: &SelfLearningMemory, s: &Settings) -> Result<()> {
    let e = m.get_episode(&s.namespace, parse_id(id)?).await?;
    if s.json {
        return output::json(&e);
    }
    outln!("episode   {}", e.id);
    outln!("task      {}", line(&e.task_description));
    outln!("type      {}", e.task_type);
    let c = &e.context;
    outln!(
        "context   domain={} language={} framework={} complexity={} tags=[{}]",
        line(&c.domain),
        line(c.language.as_deref().unwrap_or("-")),
        line(c.framework.as_deref().unwrap_or("-")),
        c.complexity,
        line(&c.tags.join(", "))
    );
    outln!("started   {}", e.started_at.to_rfc3339());
    match (&e.outcome, &e.reward) {
        (Some(o), Some(r)) => outln!(
            "outcome   {} — {} (reward {:.2})",
            o.kind(),
            clip(o.summary(), 80),
            r.total
        ),
        _ => outln!("outcome   in progress"),
    }
    outln!("steps     {}", e.steps.len());
    for st in &e.steps {
        let (n, status, tool) = (st.step_number, st.result().status(), clip(st.tool(), 14));
        let (action, result) = (clip(&st.input.action, 40), clip(st.result().text(), 50));
        outln!("  {n:>3}. {status:<8} {tool:<14} {action} -> {result}");
    }
    if let Some(r) = &e.reflection {
        for l in r.successes.iter().chain(&r.improvements).chain(&r.insights) {
            outln!("  * {}", line(l));
        }
    }
    Ok(())
}

fn status_filter(outcome: Option<&str>) -> Result<Option<EpisodeStatus>> {
    Ok(match outcome {
        None => None,
        Some("in_progress" | "in-progress" | "open") => Some(EpisodeStatus::InProgress),
        Some("completed") => Some(EpisodeStatus::AnyCompleted),
        Some(o) => Some(EpisodeStatus::Completed(o.parse::<OutcomeKind>()?)),
    })
}

async fn list(a: ListArgs, m: &SelfLearningMemory, s: &Settings) -> Result<()> {
    let filter = EpisodeFilter {
        task_type: a.task_type.as_deref().map(str::parse).transpose()?,
        domain: a.context.domain.clone(),
        language: a.context.language.clone(),
        framework: a.context.framework.clone(),
        tag: a.context.tags.first().cloned(),
        status: status_filter(a.outcome.as_deref())?,
        ..EpisodeFilter::default()
    };
    let query = EpisodeQuery {
        filter,
        limit: a.limit,
        offset: a.offset,
    };
    let items = m.list_episodes(&s.namespace, &query).await?;
    if s.json {
        return output::json(&json!({ "episodes": items }));
    }
    if items.is_empty() {
        outln!("no episodes in namespace {}", s.namespace);
    }
    for e in items {
        let outcome = e.outcome.map_or("in_progress", OutcomeKind::as_str);
        let reward = e.reward.map_or("-".into(), |r| format!("{r:.2}"));
        let (id, steps, task) = (e.id, e.step_count, clip(&e.task_description, 60));
        outln!("{id}  {outcome:<15} {reward:>5}  {steps:>3} steps  {task}");
    }
    Ok(())
}

async fn search(text: &str, limit: u32, m: &SelfLearningMemory, s: &Settings) -> Result<()> {
    let query = TextQuery {
        text: text.to_owned(),
        filter: EpisodeFilter::default(),
        limit,
    };
    let hits = m.search_episodes(&s.namespace, &query).await;
    let hits = hits.context("search failed")?;
    // The step each hit matched (one read per hit with steps; one deleted meanwhile has none).
    let mut steps = Vec::with_capacity(hits.len());
    for h in &hits {
        let step = if h.summary.step_count == 0 {
            None
        } else {
            match m.matched_step(&s.namespace, h.summary.id, text).await {
                Ok(step) => step,
                Err(memory_core::Error::NotFound { .. }) => None,
                Err(e) => return Err(e).context("search failed"),
            }
        };
        steps.push(step);
    }
    if s.json {
        let items: Vec<_> = hits
            .iter()
            .zip(&steps)
            .map(
                |(h, step)| json!({ "score": h.score, "episode": h.summary, "matched_step": step }),
            )
            .collect();
        return output::json(&json!({ "results": items }));
    }
    if hits.is_empty() {
        outln!("no matches for \"{}\"", line(text));
    }
    for (h, step) in hits.iter().zip(&steps) {
        let (e, score) = (&h.summary, h.score);
        let outcome = e.outcome.map_or("in_progress", OutcomeKind::as_str);
        let (id, task) = (e.id, clip(&e.task_description, 60));
        outln!("{score:>6.2}  {id}  {outcome:<15} {task}");
        if let Some(step) = step {
            outln!(
                "        matched step {}: {}",
                step.step_number,
                step.excerpt
            );
        }
    }
    Ok(())
}

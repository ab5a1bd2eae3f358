//! `memory episode ...`

use anyhow::{Context, Result};
use memory_core::retrieval::recommend::RecommendRequest;
use memory_core::{
    Complexity, EpisodeFilter, EpisodeId, EpisodeQuery, EpisodeStatus, NewEpisode, Outcome,
    OutcomeKind, SelfLearningMemory, StepInput, StepResult, TaskContext, TaskType, TextQuery,
};
use serde_json::json;

use crate::cli::{CompleteArgs, ContextArgs, EpisodeCmd, ListArgs, StartArgs, StepArgs};
use crate::commands::recommend;
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
    }
}

pub fn parse_id(id: &str) -> Result<EpisodeId> {
    Ok(id.parse::<EpisodeId>()?)
}

pub fn context_from(a: &ContextArgs) -> Result<TaskContext> {
    Ok(TaskContext {
        domain: a.domain.clone().unwrap_or_default(),
        language: a.language.clone(),
        framework: a.framework.clone(),
        complexity: a
            .complexity
            .as_deref()
            .map(str::parse::<Complexity>)
            .transpose()?
            .unwrap_or_default(),
        tags: a.tags.clone(),
    })
}

async fn start(a: StartArgs, m: &SelfLearningMemory, s: &Settings) -> Result<()> {
    let task_type: TaskType = a.task_type.parse()?;
    let context = context_from(&a.context)?;
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
        println!("\nepisode");
    }
    println!("{id}");
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
        println!("logged step {n} ({status}) of episode {id}");
        Ok(())
    }
}

async fn complete(a: CompleteArgs, m: &SelfLearningMemory, s: &Settings) -> Result<()> {
    let id = parse_id(&a.episode_id)?;
    let outcome = if let Some(verdict) = a.success {
        Outcome::Success {
            verdict,
            artifacts: a.artifacts,
        }
    } else if let Some(verdict) = a.partial {
        Outcome::PartialSuccess {
            verdict,
            completed: a.completed,
            failed: a.failed,
        }
    } else if let Some(reason) = a.failure {
        Outcome::Failure { reason }
    } else {
        Outcome::Abstained {
            reason: a.abstain.unwrap_or_default(),
        }
    };
    let report = m.complete_episode(&s.namespace, id, outcome).await?;
    if s.json {
        return output::json(&report);
    }
    let r = &report.reward;
    println!("episode {id} completed ({})", report.outcome.kind());
    println!(
        "reward {:.2}  (outcome {:.2}, efficiency {:.2}, quality {:.2}, complexity +{:.3}, learning +{:.3})",
        r.total, r.outcome_base, r.efficiency, r.quality, r.complexity_bonus, r.learning_bonus
    );
    let sections = [
        ("what worked", &report.reflection.successes),
        ("to improve", &report.reflection.improvements),
        ("insights", &report.reflection.insights),
    ];
    for (title, lines) in sections {
        if !lines.is_empty() {
            println!("{title}:");
            for l in lines {
                println!("  - {}", line(l));
            }
        }
    }
    let learned = report
        .patterns
        .iter()
        .chain(&report.heuristics)
        .chain(&report.lessons);
    println!("learned:");
    for item in learned {
        println!(
            "  {} {:<15} {} (evidence {}, confidence {})",
            if item.created { "new" } else { "upd" },
            item.kind,
            clip(&item.description, 90),
            item.evidence,
            pct(item.confidence)
        );
    }
    Ok(())
}

async fn show(id: &str, m: &SelfLearningMemory, s: &Settings) -> Result<()> {
    let e = m.get_episode(&s.namespace, parse_id(id)?).await?;
    if s.json {
        return output::json(&e);
    }
    println!("episode   {}", e.id);
    println!("task      {}", line(&e.task_description));
    println!("type      {}", e.task_type);
    let c = &e.context;
    println!(
        "context   domain={} language={} framework={} complexity={} tags=[{}]",
        line(&c.domain),
        line(c.language.as_deref().unwrap_or("-")),
        line(c.framework.as_deref().unwrap_or("-")),
        c.complexity,
        line(&c.tags.join(", "))
    );
    println!("started   {}", e.started_at.to_rfc3339());
    match (&e.outcome, &e.reward) {
        (Some(o), Some(r)) => println!(
            "outcome   {} — {} (reward {:.2})",
            o.kind(),
            clip(o.summary(), 80),
            r.total
        ),
        _ => println!("outcome   in progress"),
    }
    println!("steps     {}", e.steps.len());
    for st in &e.steps {
        println!(
            "  {:>3}. {:<8} {:<14} {} -> {}",
            st.step_number,
            st.result().status(),
            clip(st.tool(), 14),
            clip(&st.input.action, 40),
            clip(st.result().text(), 50)
        );
    }
    if let Some(r) = &e.reflection {
        for l in r.successes.iter().chain(&r.improvements).chain(&r.insights) {
            println!("  * {}", line(l));
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
    let items = m
        .list_episodes(
            &s.namespace,
            &EpisodeQuery {
                filter,
                limit: a.limit,
                offset: a.offset,
            },
        )
        .await?;
    if s.json {
        return output::json(&json!({ "episodes": items }));
    }
    if items.is_empty() {
        println!("no episodes in namespace {}", s.namespace);
    }
    for e in items {
        println!(
            "{}  {:<15} {:>5}  {:>3} steps  {}",
            e.id,
            e.outcome.map_or("in_progress", OutcomeKind::as_str),
            e.reward
                .map_or_else(|| "-".to_owned(), |r| format!("{r:.2}")),
            e.step_count,
            clip(&e.task_description, 60)
        );
    }
    Ok(())
}

async fn search(text: &str, limit: u32, m: &SelfLearningMemory, s: &Settings) -> Result<()> {
    let hits = m
        .search_episodes(
            &s.namespace,
            &TextQuery {
                text: text.to_owned(),
                filter: EpisodeFilter::default(),
                limit,
            },
        )
        .await
        .context("search failed")?;
    if s.json {
        let items: Vec<_> = hits
            .iter()
            .map(|h| json!({ "score": h.score, "episode": h.summary }))
            .collect();
        return output::json(&json!({ "results": items }));
    }
    if hits.is_empty() {
        println!("no matches for \"{}\"", line(text));
    }
    for h in hits {
        let e = &h.summary;
        println!(
            "{:>6.2}  {}  {:<15} {}",
            h.score,
            e.id,
            e.outcome.map_or("in_progress", OutcomeKind::as_str),
            clip(&e.task_description, 60)
        );
    }
    Ok(())
}

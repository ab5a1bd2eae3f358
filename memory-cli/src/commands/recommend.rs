//! `memory recommend`: advice for a new task.

use anyhow::Result;
use memory_core::retrieval::recommend::{RecommendRequest, Recommendation};
use memory_core::{SelfLearningMemory, TaskType};

use crate::cli::RecommendArgs;
use crate::display_safe::line;
use crate::output::{self, clip, pct, short_id};
use crate::settings::Settings;

/// Backlogs from this size show a progress bar (about a second of embedding).
const EMBED_BAR_FROM: u64 = 20;

pub async fn run(a: RecommendArgs, m: &SelfLearningMemory, s: &Settings) -> Result<()> {
    let task_type = a
        .task_type
        .as_deref()
        .map(str::parse::<TaskType>)
        .transpose()?;
    let has_context = a.context.domain.is_some()
        || a.context.language.is_some()
        || a.context.framework.is_some()
        || task_type.is_some();
    let mut req = RecommendRequest::new(a.task).with_limit(a.limit);
    if has_context {
        req = req.with_context(task_type, a.context.to_context()?);
    }
    let rec = advise(&req, m, s).await?;
    if s.json {
        return output::json(&rec);
    }
    print_human(&rec);
    Ok(())
}

/// The recommendation for `req`, after embedding the episodes still waiting for it (with a
/// progress bar for a long backlog).
pub(crate) async fn advise(
    req: &RecommendRequest,
    m: &SelfLearningMemory,
    s: &Settings,
) -> Result<Recommendation> {
    // Episodes recorded by earlier commands may still wait for their embedding: the queue
    // is durable, and this is where it is drained when no long-lived process runs.
    let backlog = m.embedding_backlog(&s.namespace).await.unwrap_or(0);
    let bar = if backlog >= EMBED_BAR_FROM {
        crate::progress::bar(backlog, "embedding episodes", s)
    } else {
        indicatif::ProgressBar::hidden()
    };
    let rec = m
        .recommend_caught_up(&s.namespace, req, &|done| bar.set_position(done as u64))
        .await;
    bar.finish_and_clear();
    Ok(rec?)
}

pub(crate) fn print_human(rec: &Recommendation) {
    if let Some(d) = &rec.degraded {
        outln!("note: {}", line(d));
    }
    match (rec.confidence, rec.strong_match) {
        (Some(c), true) => outln!("match: strong (confidence {})", pct(c)),
        (Some(c), false) => outln!(
            "match: no strong match (confidence {}): nothing close in memory, treat this as weak advice",
            pct(c)
        ),
        (None, _) => outln!("match: unknown (lexical only, no calibrated confidence)"),
    }
    if !rec.advice_basis.is_empty() {
        outln!("advice:   {}", line(&rec.advice_basis));
    }
    let e = &rec.estimate;
    outln!("\nestimate  ({})", line(&e.why));
    if let Some(p) = e.success_chance {
        outln!("  success chance  {}", pct(p));
    }
    if let Some(steps) = e.expected_steps {
        outln!("  steps           {steps:.0}");
    }
    if let Some(ms) = e.expected_duration_ms {
        outln!("  duration        {:.1} s", ms / 1000.0);
    }
    if !rec.playbook.is_empty() {
        match (&rec.playbook_pattern, rec.playbook_attempt) {
            (Some(id), _) => outln!(
                "\nplaybook  (after using it: memory feedback --pattern {id} --episode <id> --outcome helped|no-effect|hindered)"
            ),
            (None, Some(id)) => outln!(
                "\nplaybook  (no similar task finished yet: the steps that worked in attempt {id}; go on from where it stopped)"
            ),
            (None, None) => outln!("\nplaybook"),
        }
        for st in &rec.playbook {
            let (n, tool) = (st.order, line(&st.tool));
            outln!("  {n}. {tool:<12} {}", clip(&st.why, 90));
        }
    }
    if !rec.episodes.is_empty() {
        outln!("\nsimilar episodes");
        for r in &rec.episodes {
            let ep = &r.retrieved.episode;
            let (id, score, task) = (ep.id, r.retrieved.score, clip(&ep.task_description, 60));
            outln!("  {id}  {score:.2}  {task}");
            outln!("      why: {}", clip(&r.retrieved.why, 90));
        }
    }
    if !rec.patterns.is_empty() {
        outln!("\npatterns");
        for p in &rec.patterns {
            let id = p.item.id.to_string();
            outln!("  {}  {}", short_id(&id), clip(&p.item.describe(), 80));
            outln!("      why: {}", clip(&p.why, 90));
        }
    }
    if !rec.heuristics.is_empty() {
        outln!("\nheuristics");
        for h in &rec.heuristics {
            outln!("  - {}", clip(&h.item.describe(), 90));
            outln!("      why: {}", clip(&h.why, 90));
        }
    }
    if !rec.pitfalls.is_empty() {
        outln!("\npitfalls");
        for p in &rec.pitfalls {
            outln!("  - {}", clip(&p.why, 110));
        }
    }
}

//! `memory feedback`, `memory pattern ...`, `memory heuristic ...`, `memory lesson ...`

use anyhow::Result;
use chrono::Utc;
use memory_core::{
    Error, FeedbackOutcome, FeedbackTarget, HeuristicId, LearnedKind, LearnedQuery, ObjectKind,
    Pattern, PatternId, SelfLearningMemory, quote_value,
};
use serde_json::json;

use crate::cli::{FeedbackArgs, HeuristicCmd, LearnedFilterArgs, LessonCmd, PatternCmd};
use crate::commands::correct;
use crate::commands::episode::parse_id;
use crate::display_safe::line;
use crate::output::{self, clip, pct, short_id};
use crate::settings::Settings;

fn query(f: &LearnedFilterArgs, kind: Option<String>) -> Result<LearnedQuery> {
    Ok(LearnedQuery {
        task_type: f.task_type.as_deref().map(str::parse).transpose()?,
        domain: f.domain.clone(),
        language: f.language.clone(),
        kind,
        include_inactive: f.all,
        limit: f.limit,
        offset: 0,
    })
}

/// Resolves a full or shortened (prefix, as printed in tables) pattern id.
async fn resolve_pattern(m: &SelfLearningMemory, s: &Settings, id: &str) -> Result<Pattern> {
    let id = id.trim();
    if id.len() == 32 {
        return Ok(m.pattern(&s.namespace, &PatternId(id.to_owned())).await?);
    }
    let every = LearnedQuery {
        include_inactive: true,
        limit: u32::MAX,
        ..LearnedQuery::default()
    };
    let all = m.patterns(&s.namespace, &every).await?;
    let mut found = all
        .into_iter()
        .filter(|p| !id.is_empty() && p.id.0.starts_with(id));
    match (found.next(), found.next()) {
        (Some(p), None) => Ok(p),
        (Some(_), Some(_)) => {
            let why = format!("prefix {} matches several patterns", quote_value(id));
            Err(Error::invalid("pattern id", why).into())
        }
        (None, _) => Err(Error::not_found(ObjectKind::Pattern, id).into()),
    }
}

pub async fn feedback(a: FeedbackArgs, m: &SelfLearningMemory, s: &Settings) -> Result<()> {
    let episode = parse_id(&a.episode)?;
    let outcome: FeedbackOutcome = a.outcome.parse()?;
    let target = match (a.pattern, a.heuristic) {
        (Some(p), _) => FeedbackTarget::Pattern(resolve_pattern(m, s, &p).await?.id),
        (None, Some(h)) => FeedbackTarget::Heuristic(HeuristicId(h)),
        (None, None) => {
            return Err(Error::invalid("feedback", "give --pattern or --heuristic").into());
        }
    };
    m.record_feedback(&s.namespace, target.clone(), episode, outcome)
        .await?;
    if s.json {
        output::json(
            &json!({ "recorded": true, "target": target, "episode_id": episode, "outcome": outcome, "at": Utc::now() }),
        )
    } else {
        let (kind, id, outcome) = (target.kind(), line(target.id()), outcome.as_str());
        outln!("recorded: {kind} {id} {outcome} in episode {episode}");
        Ok(())
    }
}

pub async fn pattern(cmd: PatternCmd, m: &SelfLearningMemory, s: &Settings) -> Result<()> {
    let now = m.clock().now();
    let hl = m.config().learning.half_life_days;
    match cmd {
        PatternCmd::List { filter, kind } => {
            let items = m.patterns(&s.namespace, &query(&filter, kind)?).await?;
            if s.json {
                let v: Vec<_> = items
                    .iter()
                    .map(|p| json!({ "pattern": p, "confidence": p.confidence(now, hl), "success_rate": p.success_rate() }))
                    .collect();
                return output::json(&json!({ "patterns": v }));
            }
            if items.is_empty() {
                outln!("no patterns yet in namespace {}", s.namespace);
            }
            for p in items {
                let (id, kind, seen) = (short_id(&p.id.0), p.kind.name(), p.occurrences);
                let (success, conf) = (pct(p.success_rate()), pct(p.confidence(now, hl)));
                let what = clip(&p.describe(), 80);
                outln!(
                    "{id}  {kind:<15} seen {seen:>4}  success {success:>4}  conf {conf:>4}  {what}"
                );
            }
            Ok(())
        }
        PatternCmd::Correct(c) => correct::correct(LearnedKind::Pattern, c, m, s).await,
        PatternCmd::Show { id } => {
            let p = resolve_pattern(m, s, &id).await?;
            if s.json {
                return output::json(&json!({ "pattern": p, "confidence": p.confidence(now, hl) }));
            }
            outln!("pattern     {}", line(&p.id.0));
            outln!("kind        {}", p.kind.name());
            outln!("describes   {}", line(&p.describe()));
            outln!("status      {}", p.status.name());
            let (seen, successes, rate) = (p.occurrences, p.successes, pct(p.success_rate()));
            outln!("evidence    {seen} episodes, {successes} successful ({rate})");
            let confidence = pct(p.confidence(now, hl));
            outln!("confidence  {confidence} (half-life {hl} days)");
            outln!("mean steps  {:.1}", p.mean_steps());
            let e = p.effectiveness;
            let (helped, no_effect, hindered) = (e.helped, e.no_effect, e.hindered);
            outln!("feedback    helped {helped}, no effect {no_effect}, hindered {hindered}");
            let (first, last) = (p.first_seen.to_rfc3339(), p.last_seen.to_rfc3339());
            outln!("first/last  {first} / {last}");
            for ev in &p.recent_evidence {
                outln!("  episode {} at {}", ev.episode_id, ev.at.to_rfc3339());
            }
            Ok(())
        }
    }
}

pub async fn heuristic(cmd: HeuristicCmd, m: &SelfLearningMemory, s: &Settings) -> Result<()> {
    let now = m.clock().now();
    let hl = m.config().learning.half_life_days;
    let filter = match cmd {
        HeuristicCmd::List { filter } => filter,
        HeuristicCmd::Correct(c) => return correct::correct(LearnedKind::Heuristic, c, m, s).await,
    };
    let items = m.heuristics(&s.namespace, &query(&filter, None)?).await?;
    if s.json {
        let v: Vec<_> = items
            .iter()
            .map(|h| json!({ "heuristic": h, "confidence": h.confidence(now, hl), "general": h.is_general() }))
            .collect();
        return output::json(&json!({ "heuristics": v }));
    }
    if items.is_empty() {
        outln!("no heuristics yet in namespace {}", s.namespace);
    }
    for h in items {
        let (id, support, against) = (short_id(&h.id.0), h.support, h.against);
        let (conf, status) = (pct(h.confidence(now, hl)), h.status.name());
        let (condition, action) = (clip(&h.condition, 50), clip(&h.action, 50));
        let place = if h.is_general() {
            format!("general rule for {}", h.context.label())
        } else {
            h.context.label()
        };
        outln!(
            "{id}  +{support:<3} -{against:<3} conf {conf:>4}  {status:<10} if {condition} then {action}  ({place})"
        );
    }
    Ok(())
}

pub async fn lesson(cmd: LessonCmd, m: &SelfLearningMemory, s: &Settings) -> Result<()> {
    let filter = match cmd {
        LessonCmd::List { filter } => filter,
        LessonCmd::Correct(c) => return correct::correct(LearnedKind::Lesson, c, m, s).await,
    };
    let items = m.lessons(&s.namespace, &query(&filter, None)?).await?;
    if s.json {
        return output::json(
            &json!({ "lessons": items.iter().map(|l| json!({ "lesson": l, "text": l.text() })).collect::<Vec<_>>() }),
        );
    }
    if items.is_empty() {
        outln!("no failure lessons yet in namespace {}", s.namespace);
    }
    for l in items {
        let (id, occurrences) = (short_id(&l.id.0), l.occurrences);
        outln!("{id}  x{occurrences:<3} {}", line(&l.text()));
    }
    Ok(())
}

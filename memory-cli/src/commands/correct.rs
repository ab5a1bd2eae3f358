//! `memory pattern|heuristic|lesson retract|pin|unpin ID`: an operator's corrections of what
//! was learned.

use anyhow::Result;
use memory_core::{
    Error, HeuristicId, LearnedId, LearnedItem, LearnedKind, LearnedQuery, LessonId, PatternId,
    SelfLearningMemory, quote_value,
};
use serde_json::json;

use crate::cli::CorrectCmd;
use crate::display_safe::line;
use crate::output;
use crate::settings::Settings;

/// The full id of the item of `kind` that `id` names in full or as a prefix (as listed).
async fn resolve(
    m: &SelfLearningMemory,
    s: &Settings,
    kind: LearnedKind,
    id: &str,
) -> Result<LearnedId> {
    let id = id.trim();
    let whole = |id: String| match kind {
        LearnedKind::Pattern => LearnedId::Pattern(PatternId(id)),
        LearnedKind::Heuristic => LearnedId::Heuristic(HeuristicId(id)),
        LearnedKind::Lesson => LearnedId::Lesson(LessonId(id)),
    };
    if id.len() == 32 {
        return Ok(whole(id.to_owned()));
    }
    let every = LearnedQuery {
        include_inactive: true,
        limit: u32::MAX,
        ..LearnedQuery::default()
    };
    let ns = &s.namespace;
    let ids: Vec<String> = match kind {
        LearnedKind::Pattern => (m.patterns(ns, &every).await?.into_iter())
            .map(|p| p.id.0)
            .collect(),
        LearnedKind::Heuristic => (m.heuristics(ns, &every).await?.into_iter())
            .map(|h| h.id.0)
            .collect(),
        LearnedKind::Lesson => (m.lessons(ns, &every).await?.into_iter())
            .map(|l| l.id.0)
            .collect(),
    };
    let mut found = ids
        .into_iter()
        .filter(|i| !id.is_empty() && i.starts_with(id));
    match (found.next(), found.next()) {
        (Some(i), None) => Ok(whole(i)),
        (Some(_), Some(_)) => {
            let why = format!("prefix {} matches several items", quote_value(id));
            Err(Error::invalid("id", why).into())
        }
        (None, _) => Err(Error::not_found(kind.object_kind(), id).into()),
    }
}

pub async fn correct(
    kind: LearnedKind,
    cmd: CorrectCmd,
    m: &SelfLearningMemory,
    s: &Settings,
) -> Result<()> {
    let ns = &s.namespace;
    let (item, done) = match cmd {
        CorrectCmd::Retract { id, reason } => {
            let id = resolve(m, s, kind, &id).await?;
            (m.retract(ns, &id, &reason).await?, "retracted")
        }
        CorrectCmd::Pin { id, reason } => {
            let id = resolve(m, s, kind, &id).await?;
            (m.pin(ns, &id, &reason).await?, "pinned")
        }
        CorrectCmd::Unpin { id } => {
            let id = resolve(m, s, kind, &id).await?;
            (m.unpin(ns, &id).await?, "unpinned")
        }
    };
    if s.json {
        return output::json(&json!({ "namespace": ns, "done": done, "item": item }));
    }
    let (id, status) = match &item {
        LearnedItem::Pattern(p) => (p.id.0.as_str(), p.status.name()),
        LearnedItem::Heuristic(h) => (h.id.0.as_str(), h.status.name()),
        LearnedItem::Lesson(l) => (l.id.0.as_str(), l.status.name()),
    };
    outln!("{} {} {done} (status {status})", kind.name(), line(id));
    Ok(())
}

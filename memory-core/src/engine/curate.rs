//! An operator's corrections of what was learned: retract an item (never recommended again,
//! kept for the record) or pin it (the team's agreed procedure, shown first).

use chrono::{DateTime, Utc};

use super::memory::SelfLearningMemory;
use crate::error::{Error, Result};
use crate::learned::{Learned, LearnedId, LearnedItem, LearnedStatus, Pin};
use crate::namespace::Namespace;
use crate::storage::{GuardedItems, LearnedItems};

/// Tries of a correction while other writers change the item between its read and its write.
const CURATE_TRIES: usize = 8;

/// The longest reason kept with a retraction or a pin, in bytes.
pub const MAX_CURATE_REASON_BYTES: usize = 500;

/// What an operator does to a learned item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Curation<'a> {
    Retract(&'a str),
    Pin(&'a str),
    Unpin,
}

impl Curation<'_> {
    /// Changes `x`, or says why it cannot be changed.
    fn apply<T: Learned>(self, x: &mut T, at: DateTime<Utc>) -> Result<()> {
        let refuse = |reason: String| Error::Conflict {
            kind: T::KIND.object_kind(),
            id: x.id().to_string(),
            reason,
        };
        match (self, x.status()) {
            (Curation::Retract(_) | Curation::Pin(_), LearnedStatus::Merged { into, .. }) => {
                return Err(refuse(format!("is merged into {into}: correct that one")));
            }
            (Curation::Pin(_), status) if !status.is_active() => {
                let name = status.name();
                return Err(refuse(format!(
                    "is {name}: only an item in use can be pinned"
                )));
            }
            _ => {}
        }
        match self {
            Curation::Retract(reason) => {
                if !matches!(x.status(), LearnedStatus::Retracted { .. }) {
                    let reason = reason.to_owned();
                    x.set_status(LearnedStatus::Retracted { reason, at });
                }
                x.set_pinned(None);
            }
            Curation::Pin(reason) => x.set_pinned(Some(Pin {
                reason: reason.to_owned(),
                at,
            })),
            Curation::Unpin => x.set_pinned(None),
        }
        Ok(())
    }

    fn apply_item(self, item: &mut LearnedItem, at: DateTime<Utc>) -> Result<()> {
        match item {
            LearnedItem::Pattern(p) => self.apply(p, at),
            LearnedItem::Heuristic(h) => self.apply(h, at),
            LearnedItem::Lesson(l) => self.apply(l, at),
        }
    }
}

impl SelfLearningMemory {
    /// Retracts a learned item: it is never recommended again and stays stored, with the
    /// reason, for the record (`status: retracted`; a pin on it is removed). Evidence that
    /// still arrives under its id is counted, but the item stays retracted: the episodes that
    /// taught it cannot teach it again. A retracted heuristic's condition is resolved again at
    /// once, so the best of its competitors takes its place. Idempotent.
    ///
    /// `Conflict` for an item merged into another (retract the survivor), `NotFound` for an id
    /// the namespace does not hold, `InvalidInput` for a reason over
    /// [`MAX_CURATE_REASON_BYTES`]. Returns the item as stored.
    pub async fn retract(
        &self,
        ns: &Namespace,
        id: &LearnedId,
        reason: &str,
    ) -> Result<LearnedItem> {
        self.curate(ns, id, Curation::Retract(reason)).await
    }

    /// Pins a learned item in use: every recommendation it takes part in shows it first among
    /// its kind, its `why` starting with `pinned: <reason>`, and consolidation never merges,
    /// folds or prunes it. `Conflict` for an item not in use (superseded, pruned, merged,
    /// retracted). Pinning again replaces the reason.
    pub async fn pin(&self, ns: &Namespace, id: &LearnedId, reason: &str) -> Result<LearnedItem> {
        self.curate(ns, id, Curation::Pin(reason)).await
    }

    /// Removes a pin; an item without one is returned as it is.
    pub async fn unpin(&self, ns: &Namespace, id: &LearnedId) -> Result<LearnedItem> {
        self.curate(ns, id, Curation::Unpin).await
    }

    /// Reads the item, changes it and writes it back only if it is still stored as read (a
    /// completion may have added evidence meanwhile: then read again).
    async fn curate(&self, ns: &Namespace, id: &LearnedId, c: Curation<'_>) -> Result<LearnedItem> {
        self.ensure_running()?;
        let inner = &self.inner;
        let reason = match c {
            Curation::Retract(r) | Curation::Pin(r) => r,
            Curation::Unpin => "",
        };
        if reason.len() > MAX_CURATE_REASON_BYTES {
            let len = reason.len();
            let why = format!("is {len} bytes; at most {MAX_CURATE_REASON_BYTES}");
            return Err(Error::invalid("reason", why));
        }
        let reason = inner.redactor.redact(reason).into_owned();
        let c = match c {
            Curation::Retract(_) => Curation::Retract(&reason),
            Curation::Pin(_) => Curation::Pin(&reason),
            Curation::Unpin => Curation::Unpin,
        };
        inner.limiter.acquire(ns, 1)?;
        for _ in 0..CURATE_TRIES {
            let read = (inner.storage.get_learned(ns, id).await?)
                .ok_or_else(|| Error::not_found(id.kind().object_kind(), id.as_str()))?;
            let mut item = read.clone();
            c.apply_item(&mut item, inner.clock.now())?;
            if item == read {
                return Ok(item);
            }
            let mut write = LearnedItems::default();
            write.push(item.clone());
            let group = GuardedItems {
                read: vec![(id.clone(), Some(read))],
                write,
            };
            if inner
                .storage
                .put_learned_unless_changed(ns, &[group])
                .await?
                .is_empty()
            {
                return Ok(item);
            }
        }
        Err(Error::Conflict {
            kind: id.kind().object_kind(),
            id: id.as_str().to_owned(),
            reason: "kept changing while it was corrected; try again".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::sync::Arc;

    use super::*;
    use crate::retrieval::recommend::RecommendRequest;
    use crate::{
        InMemoryStorage, MemoryConfig, NewEpisode, Outcome, PatternId, StepInput, TaskContext,
        TaskType,
    };

    fn context() -> TaskContext {
        TaskContext::new("billing").with_language("rust")
    }

    async fn record(m: &SelfLearningMemory, ns: &Namespace, task: &str, tools: &[&str]) {
        let new = NewEpisode::new(task, TaskType::Debugging, context());
        let id = m.start_episode(ns, new).await.unwrap();
        for tool in tools {
            let step = StepInput::ok(*tool, format!("run {tool}"), "ok");
            m.log_step(ns, id, step).await.unwrap();
        }
        m.complete_episode(ns, id, Outcome::success("fixed"))
            .await
            .unwrap();
    }

    async fn sequences(m: &SelfLearningMemory, ns: &Namespace) -> Vec<(PatternId, String)> {
        let req = RecommendRequest::new("fix the invoice rounding bug")
            .with_context(Some(TaskType::Debugging), context());
        let rec = m.recommend(ns, &req).await.unwrap();
        (rec.patterns.into_iter())
            .filter(|a| a.item.kind.name() == "tool_sequence")
            .map(|a| (a.item.id, a.why))
            .collect()
    }

    #[tokio::test]
    async fn a_retracted_pattern_is_never_advised_again_and_a_pinned_one_comes_first() {
        let storage = Arc::new(InMemoryStorage::new());
        let m = SelfLearningMemory::new(storage, MemoryConfig::default()).unwrap();
        let ns = Namespace::default();
        for i in 0..3 {
            let task = format!("fix the invoice rounding bug {i}");
            record(&m, &ns, &task, &["grep", "edit_file", "cargo"]).await;
        }
        record(
            &m,
            &ns,
            "fix the invoice total bug",
            &["read_file", "cargo"],
        )
        .await;
        let before = sequences(&m, &ns).await;
        assert!(before.len() >= 2, "{before:?}");
        let (strong, weak) = (before[0].0.clone(), before[1].0.clone());

        let id = LearnedId::Pattern(strong.clone());
        let retracted = m.retract(&ns, &id, "unsafe: skips review").await.unwrap();
        let LearnedItem::Pattern(p) = &retracted else {
            panic!()
        };
        assert!(
            matches!(&p.status, LearnedStatus::Retracted { reason, .. } if reason == "unsafe: skips review")
        );
        assert!(sequences(&m, &ns).await.iter().all(|(i, _)| *i != strong));
        // The same evidence again does not bring it back.
        record(
            &m,
            &ns,
            "fix the invoice rounding bug 4",
            &["grep", "edit_file", "cargo"],
        )
        .await;
        let p = m.pattern(&ns, &strong).await.unwrap();
        assert_eq!(p.occurrences, 4, "its evidence is still counted");
        assert_eq!(p.status.name(), "retracted");
        assert!(sequences(&m, &ns).await.iter().all(|(i, _)| *i != strong));
        let again = m.retract(&ns, &id, "again").await.unwrap();
        assert!(
            matches!(again, LearnedItem::Pattern(p) if matches!(&p.status, LearnedStatus::Retracted { reason, .. } if reason == "unsafe: skips review")),
            "idempotent"
        );

        let refused = m.pin(&ns, &id, "agreed").await.unwrap_err();
        assert!(matches!(refused, Error::Conflict { .. }), "{refused}");
        let weak_id = LearnedId::Pattern(weak.clone());
        m.pin(&ns, &weak_id, "the team's procedure").await.unwrap();
        let after = sequences(&m, &ns).await;
        assert_eq!(after[0].0, weak, "{after:?}");
        assert!(
            after[0].1.starts_with("pinned: the team's procedure"),
            "{}",
            after[0].1
        );
        m.unpin(&ns, &weak_id).await.unwrap();
        assert!(m.pattern(&ns, &weak).await.unwrap().pinned.is_none());

        let long = "x".repeat(MAX_CURATE_REASON_BYTES + 1);
        assert!(matches!(
            m.pin(&ns, &weak_id, &long).await,
            Err(Error::InvalidInput { .. })
        ));
        m.pin(&ns, &weak_id, &long[1..]).await.unwrap();
        let missing = LearnedId::Pattern(PatternId("0".repeat(32)));
        assert!(matches!(
            m.retract(&ns, &missing, "x").await,
            Err(Error::NotFound { .. })
        ));
        m.shutdown().await.unwrap();
    }
}

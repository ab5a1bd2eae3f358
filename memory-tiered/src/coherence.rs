//! Keeping cached copies coherent with every writer of the durable layer: other processes on
//! the same data directory, other machines on the same server.
//!
//! The durable layer stamps every changed episode, pattern and heuristic with a position of
//! its change feed ([`memory_core::Storage::changes_since`]). Before each cached read the tiered
//! storage asks whether anything was committed since it last looked (cheap: `PRAGMA
//! data_version` for a local file) and, if so, reads what changed after its position. Writes
//! that this process made itself and that followed only its own writes are already in the
//! cache (write-through); from the first position another writer took, every object stamped
//! at or after it is dropped. So a read never returns a copy older than what another writer
//! had committed before the read began (for servers: before the last poll, at most one
//! [`poll interval`](memory_core::Storage::may_have_changed) earlier).
//!
//! Fills and write-through puts race with that invalidation: a put prepared from an older
//! state could land after the invalidation that should have removed it. Every invalidation
//! first advances an epoch, and every put compares the epoch it started at once it has put:
//! if an invalidation ran meanwhile, it drops what it put.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tracing::{debug, info, warn};

use memory_core::Namespace;
use memory_core::{CacheKey, CacheMark, ChangeSet};

/// Most changed objects read per refresh; past it, the cache is cleared instead.
pub(super) const MAX_CHANGES: u32 = 10_000;

/// Where this process's cached copies stand in the durable layer's change feed.
#[derive(Debug, Default)]
pub(super) struct FeedState {
    /// The database the position belongs to.
    database: Option<String>,
    /// Every change up to here is reflected in the cache; `None` until the first read of
    /// the feed.
    position: Option<u64>,
    /// The mark the cache file was closed with, used by the first read.
    opened: Option<CacheMark>,
}

/// The coherence state of one tiered storage.
#[derive(Debug, Default)]
pub(super) struct Coherence {
    pub(super) state: tokio::sync::Mutex<FeedState>,
    /// Advanced before every invalidation (see the module docs).
    epoch: AtomicU64,
    /// Set when the durable layer has no change feed (a private database).
    unfed: AtomicBool,
}

/// What one refresh decided.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Nothing to drop.
    Current,
    /// Drop these.
    Drop(Vec<(Namespace, CacheKey)>),
    /// Drop everything (another database, a rewound or unknown position, too many changes).
    Clear(&'static str),
}

impl Coherence {
    pub(super) fn new(opened: Option<CacheMark>) -> Self {
        Coherence {
            state: tokio::sync::Mutex::new(FeedState {
                opened,
                ..FeedState::default()
            }),
            ..Coherence::default()
        }
    }

    /// The current epoch: take it before preparing a put, pass it to the put.
    pub(super) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Called before an invalidation.
    pub(super) fn advance(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    pub(super) fn unfed(&self) -> bool {
        self.unfed.load(Ordering::Relaxed)
    }

    pub(super) fn set_unfed(&self) {
        self.unfed.store(true, Ordering::Relaxed);
    }
}

impl FeedState {
    /// The position to read the feed after, and whether a first read is due.
    pub(super) fn after(&self) -> Option<u64> {
        self.position
            .or_else(|| self.opened.as_ref().map(|m| m.position))
    }

    pub(super) fn known(&self) -> bool {
        self.position.is_some()
    }

    /// Decides what `set` (read after [`FeedState::after`]) means for the cache, and moves
    /// the position to its head.
    pub(super) fn take(&mut self, set: ChangeSet) -> Verdict {
        let after = self.after();
        let database = self
            .database
            .clone()
            .or_else(|| self.opened.as_ref().map(|m| m.database.clone()));
        let verdict = match after {
            None => Verdict::Clear("no position yet"),
            Some(_) if database.as_deref() != Some(set.database.as_str()) => {
                Verdict::Clear("another database")
            }
            Some(a) if set.head < a => Verdict::Clear("the database is behind the cache"),
            Some(_) if set.truncated => Verdict::Clear("too many changes"),
            Some(a) => {
                let own: BTreeSet<u64> = set.own.iter().copied().collect();
                // The first position another writer took: from it on, own write-through
                // copies may rest on something older.
                match (a + 1..=set.head).find(|p| !own.contains(p)) {
                    None => Verdict::Current,
                    Some(first_foreign) => Verdict::Drop(
                        set.changes
                            .into_iter()
                            .filter(|c| c.seq >= first_foreign)
                            .map(|c| (c.namespace, c.key))
                            .collect(),
                    ),
                }
            }
        };
        self.position = Some(set.head);
        self.database = Some(set.database);
        self.opened = None;
        verdict
    }

    /// The mark to store when the cache closes.
    pub(super) fn mark(&self) -> Option<CacheMark> {
        Some(CacheMark {
            database: self.database.clone()?,
            position: self.position?,
        })
    }
}

pub(super) fn log_verdict(v: &Verdict, entries: u64) {
    match v {
        Verdict::Drop(keys) => debug!(count = keys.len(), "dropping copies another writer changed"),
        Verdict::Clear(why) if entries > 0 => {
            info!(
                reason = why,
                entries, "clearing the cache: its copies cannot be trusted"
            );
        }
        Verdict::Current | Verdict::Clear(_) => {}
    }
}

pub(super) fn log_feed_error(e: &memory_core::Error) {
    if e.is_transient() {
        debug!(error = %e, "change feed unavailable; cached copies served as they are");
    } else {
        warn!(error = %e, "change feed failed; cached copies served as they are");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use memory_core::Change;
    use memory_core::EpisodeId;

    fn set(head: u64, changes: &[(u64, EpisodeId)], own: &[u64]) -> ChangeSet {
        ChangeSet {
            database: "db".into(),
            head,
            changes: changes
                .iter()
                .map(|(seq, id)| Change {
                    seq: *seq,
                    namespace: Namespace::default(),
                    key: CacheKey::Episode(*id),
                })
                .collect(),
            truncated: false,
            own: own.to_vec(),
        }
    }

    #[test]
    fn own_writes_keep_the_cache_and_the_first_foreign_write_drops_from_there_on() {
        let (a, b, c) = (EpisodeId::new(), EpisodeId::new(), EpisodeId::new());
        let mut st = FeedState::default();
        assert_eq!(st.take(set(4, &[], &[])), Verdict::Clear("no position yet"));
        // Positions 5 and 6 are ours: the write-through copies are current.
        assert_eq!(
            st.take(set(6, &[(5, a), (6, b)], &[5, 6])),
            Verdict::Current
        );
        // 7 is ours, 8 another writer's, 9 ours again on an object that may rest on 8.
        let v = st.take(set(9, &[(7, a), (8, b), (9, c)], &[7, 9]));
        assert_eq!(
            v,
            Verdict::Drop(vec![
                (Namespace::default(), CacheKey::Episode(b)),
                (Namespace::default(), CacheKey::Episode(c)),
            ])
        );
        // Position 10 was taken by another writer (its row was then stamped again by our
        // 11): the copy of a may rest on it.
        let v = st.take(set(11, &[(11, a)], &[11]));
        assert_eq!(
            v,
            Verdict::Drop(vec![(Namespace::default(), CacheKey::Episode(a))])
        );
    }

    #[test]
    fn another_database_or_a_rewound_feed_clears() {
        let mut st = FeedState {
            opened: Some(CacheMark {
                database: "db".into(),
                position: 10,
            }),
            ..FeedState::default()
        };
        assert_eq!(st.after(), Some(10));
        assert_eq!(st.take(set(12, &[], &[])), Verdict::Drop(Vec::new()));
        let mut other = set(20, &[], &[]);
        other.database = "restored".into();
        assert_eq!(st.take(other), Verdict::Clear("another database"));
        assert_eq!(
            st.take(ChangeSet {
                database: "restored".into(),
                head: 3,
                ..ChangeSet::default()
            }),
            Verdict::Clear("the database is behind the cache")
        );
        let mut many = set(30, &[], &[]);
        many.database = "restored".into();
        many.truncated = true;
        assert_eq!(st.take(many), Verdict::Clear("too many changes"));
        assert_eq!(
            st.mark(),
            Some(CacheMark {
                database: "restored".into(),
                position: 30
            })
        );
    }
}

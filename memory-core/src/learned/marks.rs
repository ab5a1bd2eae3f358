//! Marks: the parts of a task's context that a learned item's context key leaves out (the
//! framework and the tags), counted over the episodes behind the item.
//!
//! A context key is kind of task, domain and language, so a tag that changes the procedure
//! (`openssl`: the build needs a dependency first) does not split it: the tagged tasks' tool
//! sequence, failure lesson and steps that gave way land in the same context as the plain
//! tasks'. Each such item counts, per mark, the episodes that had it and when one last did
//! ([`Marks`]); the marks every one of its episodes had are its *shared* marks. Counts and
//! latest times merge in any order, in any process, to the same result. Retrieval tells
//! variants apart only where the evidence shows a mark matters (`retrieval::variants`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::episode::TaskContext;
use crate::text::normalize_label;

/// The most marks taken from one episode (its framework and the first tags in sorted order).
/// Fewer marks only make an item apply more widely, as items did before marks were kept.
pub const MAX_MARKS: usize = 16;

/// The most marks an item counts. Beyond it the mark seen in the fewest episodes (the
/// earliest, then the first in order, on ties) is dropped; a shared mark, seen in every
/// episode, never is, since one episode brings at most [`MAX_MARKS`].
const MAX_COUNTED_MARKS: usize = 2 * MAX_MARKS;

/// The marks of a task's context: `framework=<name>` and `tag=<name>` for each tag, normalized
/// (trimmed, lowercase), sorted, without duplicates, at most [`MAX_MARKS`].
///
/// ```
/// use memory_core::{TaskContext, context_marks};
/// let mut ctx = TaskContext::new("web_api").with_language("rust");
/// ctx.framework = Some("Axum".into());
/// ctx.tags = vec!["openssl".into(), " HTTP ".into(), "openssl".into()];
/// assert_eq!(context_marks(&ctx), ["framework=axum", "tag=http", "tag=openssl"]);
/// ```
pub fn context_marks(ctx: &TaskContext) -> Vec<String> {
    let framework = normalize_label(ctx.framework.as_deref()).map(|f| format!("framework={f}"));
    let tags =
        (ctx.tags.iter()).filter_map(|t| normalize_label(Some(t)).map(|t| format!("tag={t}")));
    let mut marks: Vec<String> = framework.into_iter().chain(tags).collect();
    marks.sort();
    marks.dedup();
    marks.truncate(MAX_MARKS);
    marks
}

/// One mark of an item's episodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkSeen {
    /// The mark (`framework=axum`, `tag=openssl`).
    pub mark: String,
    /// In how many of the item's marked episodes it was.
    pub count: u64,
    /// When an episode with it was last seen.
    pub last_seen: DateTime<Utc>,
}

/// The marks of the episodes behind a learned item, counted.
///
/// ```
/// use chrono::Utc;
/// use memory_core::Marks;
/// let mut m = Marks::default();
/// m.observe(&["framework=axum".into(), "tag=openssl".into()], Utc::now());
/// m.observe(&["tag=openssl".into()], Utc::now());
/// assert_eq!(m.shared().collect::<Vec<_>>(), ["tag=openssl"]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Marks {
    /// The item's episodes whose marks were recorded.
    pub episodes: u64,
    /// Each mark those episodes had, in order of the mark.
    pub seen: Vec<MarkSeen>,
}

impl Marks {
    /// Whether nothing was counted (an item of a kind that keeps no marks, or recorded before
    /// marks were kept).
    pub fn is_empty(&self) -> bool {
        self.episodes == 0 && self.seen.is_empty()
    }

    /// In how many marked episodes `mark` was.
    pub fn count(&self, mark: &str) -> u64 {
        (self.seen.iter().find(|s| s.mark == mark)).map_or(0, |s| s.count)
    }

    /// Counts one more episode with `marks` (sorted or not), seen `at`.
    pub fn observe(&mut self, marks: &[String], at: DateTime<Utc>) {
        self.episodes += 1;
        for m in marks {
            self.add(m, 1, at);
        }
        self.cap();
    }

    /// Adds the counts of `other` (another item's episodes, merged into this one).
    pub fn merge(&mut self, other: &Marks) {
        self.episodes += other.episodes;
        for s in &other.seen {
            self.add(&s.mark, s.count, s.last_seen);
        }
        self.cap();
    }

    /// Takes one episode with `marks` out of the counts (an episode forgotten): each of its
    /// marks counts one episode fewer, and a mark no episode is left with is dropped. The
    /// latest times stay (the earlier ones are not kept), and a mark dropped before because
    /// this episode lacked it ([`Marks::keep_shared`]) does not come back.
    pub fn release(&mut self, marks: &[String]) {
        self.episodes = self.episodes.saturating_sub(1);
        for m in marks {
            if let Ok(i) = self.seen.binary_search_by(|s| s.mark.as_str().cmp(m)) {
                self.seen[i].count = self.seen[i].count.saturating_sub(1);
            }
        }
        self.seen.retain(|s| s.count > 0);
    }

    fn add(&mut self, mark: &str, count: u64, at: DateTime<Utc>) {
        match self.seen.binary_search_by(|s| s.mark.as_str().cmp(mark)) {
            Ok(i) => {
                self.seen[i].count += count;
                self.seen[i].last_seen = self.seen[i].last_seen.max(at);
            }
            Err(i) => self.seen.insert(
                i,
                MarkSeen {
                    mark: mark.to_owned(),
                    count,
                    last_seen: at,
                },
            ),
        }
    }

    fn cap(&mut self) {
        while self.seen.len() > MAX_COUNTED_MARKS {
            let weakest = (self.seen.iter().enumerate())
                .min_by(|(_, a), (_, b)| {
                    (a.count.cmp(&b.count))
                        .then(a.last_seen.cmp(&b.last_seen))
                        .then(b.mark.cmp(&a.mark))
                })
                .map(|(i, _)| i);
            if let Some(i) = weakest {
                self.seen.remove(i);
            }
        }
    }

    /// Drops the marks some episode lacked, for the kinds that need only the shared ones (a
    /// mark that fell behind can never be shared again): their bodies stay as small as the
    /// marks one episode brings, however many tags come and go.
    pub fn keep_shared(&mut self) {
        let episodes = self.episodes;
        self.seen.retain(|s| s.count == episodes);
    }

    /// Whether every one of the item's `occurrences` had its marks recorded (evidence from
    /// before marks were kept makes them unknown: the item then holds everywhere, as before).
    pub fn known(&self, occurrences: u64) -> bool {
        occurrences > 0 && self.episodes == occurrences
    }

    /// The marks every marked episode had.
    pub fn shared(&self) -> impl Iterator<Item = &str> {
        (self.seen.iter())
            .filter(|s| s.count == self.episodes)
            .map(|s| s.mark.as_str())
    }

    /// Whether an episode with `mark` was seen after `at`.
    pub fn seen_after(&self, mark: &str, at: DateTime<Utc>) -> bool {
        (self.seen.iter()).any(|s| s.mark == mark && s.last_seen > at)
    }

    /// Whether any marked episode had `mark`.
    pub fn has_seen(&self, mark: &str) -> bool {
        self.seen.iter().any(|s| s.mark == mark)
    }

    /// Whether every marked episode had `mark`.
    pub fn all_had(&self, mark: &str) -> bool {
        (self.seen.iter()).any(|s| s.mark == mark && s.count == self.episodes)
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;

    fn at(min: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + Duration::minutes(min)
    }

    fn owned(m: &[&str]) -> Vec<String> {
        m.iter().map(|m| (*m).to_owned()).collect()
    }

    #[test]
    fn counts_merge_in_any_order() {
        let obs = [
            (owned(&["framework=axum", "tag=openssl"]), at(1)),
            (owned(&["tag=openssl"]), at(3)),
            (owned(&["framework=actix", "tag=openssl"]), at(2)),
        ];
        let mut forward = Marks::default();
        for (m, t) in &obs {
            forward.observe(m, *t);
        }
        let mut backward = Marks::default();
        for (m, t) in obs.iter().rev() {
            backward.observe(m, *t);
        }
        assert_eq!(forward, backward);
        assert_eq!(forward.shared().collect::<Vec<_>>(), ["tag=openssl"]);
        assert!(forward.seen_after("framework=actix", at(1)));
        assert!(!forward.seen_after("framework=axum", at(1)));
        let (mut a, mut b) = (Marks::default(), Marks::default());
        a.observe(&obs[0].0, obs[0].1);
        b.observe(&obs[1].0, obs[1].1);
        b.observe(&obs[2].0, obs[2].1);
        a.merge(&b);
        assert_eq!(a, forward);
    }

    #[test]
    fn marks_are_capped_and_shared_ones_stay() {
        let mut ctx = TaskContext::new("d");
        ctx.tags = (0..40).map(|i| format!("t{i:02}")).collect();
        let marks = context_marks(&ctx);
        assert_eq!(marks.len(), MAX_MARKS);
        assert_eq!(marks[0], "tag=t00");
        let mut m = Marks::default();
        for i in 0..100 {
            m.observe(&owned(&["tag=always", &format!("tag=once{i}")]), at(i));
        }
        assert_eq!(m.seen.len(), MAX_COUNTED_MARKS);
        assert_eq!(m.shared().collect::<Vec<_>>(), ["tag=always"]);
        assert!(m.known(100) && !m.known(101));
        m.keep_shared();
        assert_eq!(m.seen.len(), 1);
        assert_eq!((m.episodes, m.count("tag=always")), (100, 100));
    }
}

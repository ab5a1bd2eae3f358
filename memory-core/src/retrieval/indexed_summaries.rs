//! The summaries an in-process index holds, in document order, with each document's domain
//! as a small number beside them.
//!
//! Why: a search filtered on a domain checks candidates as it scans. Reading a candidate's
//! summary is two cache misses (the summary, then its domain's text), and at a million
//! episodes the one-bit stage of a filtered vector search checked enough of them to take three
//! times as long as an unfiltered one. The numbers sit in one dense array, so a candidate of
//! another domain is turned away without reading its summary, and a filter on the domain alone
//! (the usual one) never reads a summary: equal numbers are equal domains. A filter with other
//! fields reads the summary of each candidate the numbers let through. Measured at 1M
//! episodes (one-bit stage, per part of the scan): reading the summaries of the ~40,000
//! candidates of the right domain took ~60 ms of ~98.

use std::collections::HashMap;
use std::ops::Index;
use std::sync::Arc;

use crate::episode::EpisodeSummary;
use crate::storage::EpisodeFilter;

/// Summaries in document order, with their domains numbered.
#[derive(Debug, Default)]
pub(crate) struct IndexedSummaries {
    summaries: Vec<Arc<EpisodeSummary>>,
    /// The number of each document's domain.
    domain_of: Vec<u32>,
    /// Domain -> number. Numbers are never reused; a namespace has few domains.
    numbers: HashMap<String, u32>,
}

/// How a filter is checked against [`IndexedSummaries`]: the domain number it asks for (if
/// it names a domain), then, if it names anything else, the whole filter on the summary.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FilterCheck<'f> {
    filter: &'f EpisodeFilter,
    domain: DomainCheck,
    /// Whether the filter names anything besides the domain (then the summary is read).
    beyond_domain: bool,
}

/// The domain part of a [`FilterCheck`].
#[derive(Debug, Clone, Copy)]
enum DomainCheck {
    /// The filter names no domain.
    Any,
    /// The filter names a domain no document has.
    Absent,
    /// The filter's domain has this number.
    Number(u32),
}

impl IndexedSummaries {
    /// The summaries, in order, numbering their domains.
    pub(crate) fn new(summaries: Vec<Arc<EpisodeSummary>>) -> Self {
        let mut out = IndexedSummaries {
            summaries: Vec::with_capacity(summaries.len()),
            domain_of: Vec::with_capacity(summaries.len()),
            numbers: HashMap::new(),
        };
        for summary in summaries {
            out.push(summary);
        }
        out
    }

    fn number(&mut self, domain: &str) -> u32 {
        if let Some(&n) = self.numbers.get(domain) {
            return n;
        }
        let n = u32::try_from(self.numbers.len()).unwrap_or(u32::MAX);
        self.numbers.insert(domain.to_owned(), n);
        n
    }

    pub(crate) fn len(&self) -> usize {
        self.summaries.len()
    }

    /// The summaries as a plain list (for a snapshot).
    pub(crate) fn to_vec(&self) -> Vec<Arc<EpisodeSummary>> {
        self.summaries.clone()
    }

    pub(crate) fn push(&mut self, summary: Arc<EpisodeSummary>) {
        let n = self.number(&summary.context.domain);
        self.domain_of.push(n);
        self.summaries.push(summary);
    }

    /// Replaces document `i`'s summary (nothing when there is no such document).
    pub(crate) fn set(&mut self, i: usize, summary: Arc<EpisodeSummary>) {
        if i >= self.summaries.len() {
            return;
        }
        let n = self.number(&summary.context.domain);
        self.domain_of[i] = n;
        self.summaries[i] = summary;
    }

    /// Removes document `i`, moving the last one into its place.
    pub(crate) fn swap_remove(&mut self, i: usize) {
        if i < self.summaries.len() {
            self.summaries.swap_remove(i);
            self.domain_of.swap_remove(i);
        }
    }

    /// How `filter` is checked here.
    pub(crate) fn check<'f>(&self, filter: &'f EpisodeFilter) -> FilterCheck<'f> {
        let domain_only = EpisodeFilter {
            domain: filter.domain.clone(),
            ..EpisodeFilter::default()
        };
        FilterCheck {
            filter,
            beyond_domain: *filter != domain_only,
            domain: match &filter.domain {
                None => DomainCheck::Any,
                Some(d) => self
                    .numbers
                    .get(d)
                    .map_or(DomainCheck::Absent, |&n| DomainCheck::Number(n)),
            },
        }
    }

    /// Whether document `i` passes the filter of `check` (false when there is no such document).
    pub(crate) fn passes(&self, check: &FilterCheck<'_>, i: usize) -> bool {
        match check.domain {
            DomainCheck::Absent => false,
            DomainCheck::Number(n) if self.domain_of.get(i) != Some(&n) => false,
            // The number matched, so document `i` exists and has the domain.
            DomainCheck::Number(_) if !check.beyond_domain => true,
            // An empty filter: every document passes, no summary read.
            DomainCheck::Any if !check.beyond_domain => i < self.summaries.len(),
            _ => self
                .summaries
                .get(i)
                .is_some_and(|s| check.filter.matches_summary(s)),
        }
    }
}

impl Index<usize> for IndexedSummaries {
    type Output = Arc<EpisodeSummary>;

    fn index(&self, i: usize) -> &Self::Output {
        &self.summaries[i]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::episode::{EpisodeId, TaskContext, TaskType};

    fn summary(domain: &str, language: &str) -> Arc<EpisodeSummary> {
        Arc::new(EpisodeSummary {
            id: EpisodeId::new(),
            task_description: "task".into(),
            task_type: TaskType::Debugging,
            context: TaskContext::new(domain).with_language(language),
            step_count: 0,
            started_at: chrono::Utc::now(),
            completed_at: None,
            outcome: None,
            reward: None,
        })
    }

    fn filter(domain: Option<&str>, language: Option<&str>) -> EpisodeFilter {
        EpisodeFilter {
            domain: domain.map(str::to_owned),
            language: language.map(str::to_owned),
            ..EpisodeFilter::default()
        }
    }

    /// After every change, each document passes exactly when the filter matches its summary.
    fn agrees(s: &IndexedSummaries) {
        for f in [
            filter(None, None),
            filter(Some("web"), None),
            filter(Some("cli"), Some("rust")),
            filter(Some("absent"), None),
            filter(None, Some("go")),
            filter(Some("web"), Some("go")),
        ] {
            let check = s.check(&f);
            for i in 0..s.len() {
                assert_eq!(
                    s.passes(&check, i),
                    f.matches_summary(&s[i]),
                    "{f:?} at {i}"
                );
            }
            assert!(!s.passes(&check, s.len()));
        }
    }

    #[test]
    fn the_numbers_follow_every_change_and_never_change_an_answer() {
        let mut s = IndexedSummaries::new(vec![
            summary("web", "rust"),
            summary("cli", "rust"),
            summary("web", "go"),
        ]);
        agrees(&s);
        s.push(summary("cli", "go"));
        agrees(&s);
        s.set(0, summary("cli", "rust"));
        s.set(9, summary("web", "rust"));
        agrees(&s);
        s.swap_remove(1);
        s.swap_remove(7);
        agrees(&s);
        assert_eq!(s.len(), 3);
        s.push(summary("absent", "go"));
        agrees(&s);
        assert_eq!(s.to_vec().len(), 4);
    }
}

//! The in-process lexical index: BM25 over each episode's task text and context words, per
//! namespace, answering top-k with a term-at-a-time scan of posting lists.
//!
//! Why our own, beside the backend's FTS5 index: FTS5 computes `bm25()` for every row that
//! matches any query term, and the words agents' tasks share (`fix`, `test`, `api`, the
//! language) match a large share of all episodes. Measured on a 100k-episode libsql store,
//! one context-rich query matched 112k index rows and took 0.7-1.4 s; pruning to the rarest
//! terms still took 0.4 s. Here a query costs one pass over the posting lists of its terms
//! (a few hundred thousand `u32`s at 100k episodes: about a millisecond), and it reuses the
//! summaries the vector index already loads, so it adds no read to the first search.
//!
//! What it indexes: [`task_search_text`] (the task description, then domain, language,
//! framework and tags), the same words FTS5 indexes as an episode's `task` part; not the
//! steps or the reflection (measured on the public retrieval dataset, dropping them moved
//! hybrid nDCG@10 from 0.915 to 0.911, with context). Scoring is Okapi BM25 with `k1 = 1.2`,
//! `b = 0.75` and the always-positive idf `ln(1 + (N - n + 0.5) / (n + 0.5))`.
//!
//! A crate such as tantivy would bring its own on-disk segments to keep consistent with the
//! durable layer; this index is derived data, rebuilt from what the vector index loads.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use super::indexed_summaries::IndexedSummaries;
use crate::episode::{EpisodeId, EpisodeSummary};
use crate::namespace::Namespace;
use crate::search_text::task_search_text;
use crate::storage::EpisodeFilter;
use crate::text::{BM25_B, BM25_K1, tokenize};

// Summed in `f32` over posting lists (half the memory of `f64` scores at 100k episodes).
const K1: f32 = BM25_K1 as f32;
const B: f32 = BM25_B as f32;

/// One scored candidate from the lexical index.
#[derive(Debug, Clone)]
pub struct LexicalHit {
    /// The episode's summary as indexed.
    pub summary: Arc<EpisodeSummary>,
    /// BM25 score (positive; comparable only within one query).
    pub score: f32,
}

#[derive(Debug, Default)]
struct Space {
    summaries: IndexedSummaries,
    /// Indexed length (terms) of each document.
    lengths: Vec<u32>,
    total_length: u64,
    position: HashMap<EpisodeId, u32>,
    /// Term -> (document, term frequency), documents in insertion order.
    postings: HashMap<String, Vec<(u32, u32)>>,
}

impl Space {
    fn remove_postings(&mut self, doc: u32, text: &str) {
        for term in distinct(tokenize(text)) {
            if let Some(list) = self.postings.get_mut(&term) {
                list.retain(|(d, _)| *d != doc);
                if list.is_empty() {
                    self.postings.remove(&term);
                }
            }
        }
    }

    fn add_postings(&mut self, doc: u32, text: &str) -> u32 {
        let terms = tokenize(text);
        let length = terms.len() as u32;
        let mut counts: HashMap<String, u32> = HashMap::new();
        for t in terms {
            *counts.entry(t).or_default() += 1;
        }
        for (term, tf) in counts {
            self.postings.entry(term).or_default().push((doc, tf));
        }
        length
    }
}

fn distinct(mut terms: Vec<String>) -> Vec<String> {
    terms.sort_unstable();
    terms.dedup();
    terms
}

fn indexed_text(s: &EpisodeSummary) -> String {
    task_search_text(&s.task_description, &s.context)
}

/// BM25 postings of many namespaces, each searched only within itself.
#[derive(Debug, Default)]
pub struct LexicalIndex {
    spaces: RwLock<HashMap<Namespace, Arc<RwLock<Space>>>>,
}

impl LexicalIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    fn space(&self, ns: &Namespace) -> Arc<RwLock<Space>> {
        if let Some(s) = self
            .spaces
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(ns)
        {
            return Arc::clone(s);
        }
        let mut spaces = self.spaces.write().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(spaces.entry(ns.clone()).or_default())
    }

    /// Adds an episode, or replaces its summary (re-indexing its words if they changed).
    pub fn upsert(&self, ns: &Namespace, summary: impl Into<Arc<EpisodeSummary>>) {
        self.upsert_many(ns, [summary.into()]);
    }

    /// [`upsert`](Self::upsert) of many episodes under one lock (how a namespace is loaded).
    pub fn upsert_many(
        &self,
        ns: &Namespace,
        summaries: impl IntoIterator<Item = Arc<EpisodeSummary>>,
    ) {
        let space = self.space(ns);
        let mut s = space.write().unwrap_or_else(PoisonError::into_inner);
        for summary in summaries {
            upsert_locked(&mut s, summary);
        }
    }
}

/// Adds or replaces one episode in a locked space.
fn upsert_locked(s: &mut Space, summary: Arc<EpisodeSummary>) {
    let text = indexed_text(&summary);
    if let Some(doc) = s.position.get(&summary.id).copied() {
        let i = doc as usize;
        let old = indexed_text(&s.summaries[i]);
        if old != text {
            s.remove_postings(doc, &old);
            let length = s.add_postings(doc, &text);
            s.total_length = s.total_length - u64::from(s.lengths[i]) + u64::from(length);
            s.lengths[i] = length;
        }
        s.summaries.set(i, summary);
        return;
    }
    let Ok(doc) = u32::try_from(s.summaries.len()) else {
        return; // beyond 4 billion episodes in one namespace: not indexed in process
    };
    let length = s.add_postings(doc, &text);
    s.position.insert(summary.id, doc);
    s.summaries.push(summary);
    s.lengths.push(length);
    s.total_length += u64::from(length);
}

/// What a snapshot stores of one namespace's lexical space besides its summaries: each
/// document's indexed length (in the summaries' order), their total, and the posting lists.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct LexicalParts {
    pub lengths: Vec<u32>,
    pub total_length: u64,
    pub postings: Vec<(String, Vec<(u32, u32)>)>,
}

impl LexicalParts {
    /// Indexes `summaries` (documents numbered in their order).
    pub(crate) fn build(summaries: &[Arc<EpisodeSummary>]) -> Self {
        let mut s = Space::default();
        for summary in summaries {
            upsert_locked(&mut s, Arc::clone(summary));
        }
        LexicalParts {
            lengths: s.lengths,
            total_length: s.total_length,
            postings: s.postings.into_iter().collect(),
        }
    }
}

impl LexicalIndex {
    /// Replaces the namespace's space with one restored from a snapshot. Refused (false, the
    /// space unchanged) when the parts do not fit the summaries.
    pub(crate) fn restore(
        &self,
        ns: &Namespace,
        summaries: Vec<Arc<EpisodeSummary>>,
        parts: LexicalParts,
    ) -> bool {
        let n = summaries.len();
        if parts.lengths.len() != n
            || parts.lengths.iter().map(|&l| u64::from(l)).sum::<u64>() != parts.total_length
            || parts
                .postings
                .iter()
                .any(|(_, list)| list.iter().any(|&(d, _)| d as usize >= n))
        {
            return false;
        }
        let Ok(docs) = u32::try_from(n) else {
            return false;
        };
        let position: HashMap<EpisodeId, u32> =
            summaries.iter().map(|s| s.id).zip(0..docs).collect();
        if position.len() != n {
            return false;
        }
        let restored = Space {
            summaries: IndexedSummaries::new(summaries),
            lengths: parts.lengths,
            total_length: parts.total_length,
            position,
            postings: parts.postings.into_iter().collect(),
        };
        let space = self.space(ns);
        *space.write().unwrap_or_else(PoisonError::into_inner) = restored;
        true
    }

    /// Removes an episode; false if it was not indexed.
    pub fn remove(&self, ns: &Namespace, id: EpisodeId) -> bool {
        let space = self.space(ns);
        let mut s = space.write().unwrap_or_else(PoisonError::into_inner);
        let Some(doc) = s.position.remove(&id) else {
            return false;
        };
        let i = doc as usize;
        let text = indexed_text(&s.summaries[i]);
        s.remove_postings(doc, &text);
        s.total_length -= u64::from(s.lengths[i]);
        let last = s.summaries.len() - 1;
        if i != last {
            // The last document takes the freed number.
            let moved_text = indexed_text(&s.summaries[last]);
            let from = last as u32;
            for term in distinct(tokenize(&moved_text)) {
                if let Some(list) = s.postings.get_mut(&term) {
                    for entry in list.iter_mut().filter(|(d, _)| *d == from) {
                        entry.0 = doc;
                    }
                }
            }
            let moved = s.summaries[last].id;
            s.position.insert(moved, doc);
        }
        s.summaries.swap_remove(i);
        s.lengths.swap_remove(i);
        true
    }

    /// How many episodes the namespace holds.
    pub fn len(&self, ns: &Namespace) -> usize {
        self.space(ns)
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .summaries
            .len()
    }

    /// True when the namespace holds no episodes.
    pub fn is_empty(&self, ns: &Namespace) -> bool {
        self.len(ns) == 0
    }

    /// The `k` best BM25 matches for `text` passing `filter`, best first (ties by id).
    /// Episodes sharing no term with the query are not returned.
    ///
    /// ```
    /// use memory_core::{EpisodeFilter, EpisodeSummary, Namespace, TaskContext, TaskType};
    /// use memory_core::retrieval::LexicalIndex;
    /// # fn summary(task: &str) -> EpisodeSummary {
    /// #     EpisodeSummary {
    /// #         id: memory_core::EpisodeId::new(),
    /// #         task_description: task.into(),
    /// #         task_type: TaskType::Debugging,
    /// #         context: TaskContext::new("web_api"),
    /// #         step_count: 0,
    /// #         started_at: chrono::Utc::now(),
    /// #         completed_at: None,
    /// #         outcome: None,
    /// #         reward: None,
    /// #     }
    /// # }
    /// let ns = Namespace::new("docs")?;
    /// let index = LexicalIndex::new();
    /// index.upsert(&ns, summary("fix the retry logic in the payment worker"));
    /// index.upsert(&ns, summary("add pagination to the search endpoint"));
    /// let hits = index.search(&ns, "payment retries", &EpisodeFilter::default(), 10);
    /// assert_eq!(hits.len(), 1);
    /// assert!(hits[0].summary.task_description.contains("payment"));
    /// # Ok::<(), memory_core::Error>(())
    /// ```
    pub fn search(
        &self,
        ns: &Namespace,
        text: &str,
        filter: &EpisodeFilter,
        k: usize,
    ) -> Vec<LexicalHit> {
        if k == 0 {
            return Vec::new();
        }
        let space = self.space(ns);
        let s = space.read().unwrap_or_else(PoisonError::into_inner);
        let n = s.summaries.len();
        if n == 0 {
            return Vec::new();
        }
        let average = (s.total_length as f32 / n as f32).max(1.0);
        // BM25's length norm of the documents a term reaches, computed as they are reached
        // (a per-query table of every document's norm cost as much as a common term).
        let norm = |doc: u32| K1 * (1.0 - B + B * s.lengths[doc as usize] as f32 / average);
        // Term at a time into a dense accumulator; `touched` lists the documents scored.
        let mut scores = vec![0.0f32; n];
        let mut touched: Vec<u32> = Vec::new();
        for term in distinct(tokenize(text)) {
            let Some(list) = s.postings.get(&term) else {
                continue;
            };
            let df = list.len() as f32;
            let idf = (1.0 + (n as f32 - df + 0.5) / (df + 0.5)).ln();
            for &(doc, tf) in list {
                let slot = &mut scores[doc as usize];
                if *slot == 0.0 {
                    touched.push(doc);
                }
                let tf = tf as f32;
                *slot += idf * tf * (K1 + 1.0) / (tf + norm(doc));
            }
        }
        let check = s.summaries.check(filter);
        let mut ranked: Vec<(f32, u32)> = touched
            .into_iter()
            .filter(|&d| s.summaries.passes(&check, d as usize))
            .map(|d| (scores[d as usize], d))
            .collect();
        let order = |a: &(f32, u32), b: &(f32, u32)| {
            b.0.total_cmp(&a.0).then_with(|| {
                s.summaries[a.1 as usize]
                    .id
                    .cmp(&s.summaries[b.1 as usize].id)
            })
        };
        if ranked.len() > k {
            // The k-th best score first, by score alone: breaking ties by episode id reads two
            // summaries per comparison, and a common word gives many documents one score. Only
            // the documents at or above that score can be in the top k; they are ordered fully.
            ranked.select_nth_unstable_by(k - 1, |a, b| b.0.total_cmp(&a.0));
            let bar = ranked[k - 1].0;
            ranked.retain(|(score, _)| score.total_cmp(&bar).is_ge());
            if ranked.len() > k {
                ranked.select_nth_unstable_by(k - 1, order);
                ranked.truncate(k);
            }
        }
        ranked.sort_unstable_by(order);
        ranked
            .into_iter()
            .map(|(score, d)| LexicalHit {
                summary: Arc::clone(&s.summaries[d as usize]),
                score,
            })
            .collect()
    }

    /// `(terms, known)`: how many distinct terms `text` has, and how many of them occur in
    /// at least one indexed episode of `ns` (whatever a filter would keep): what
    /// [`TextSearch`](crate::TextSearch) reports for the backend's index.
    ///
    /// ```
    /// # use memory_core::{EpisodeSummary, Namespace, TaskContext, TaskType};
    /// # use memory_core::retrieval::LexicalIndex;
    /// # let summary = |task: &str| EpisodeSummary {
    /// #     id: memory_core::EpisodeId::new(), task_description: task.into(),
    /// #     task_type: TaskType::Debugging, context: TaskContext::new("web_api"),
    /// #     step_count: 0, started_at: chrono::Utc::now(), completed_at: None,
    /// #     outcome: None, reward: None,
    /// # };
    /// let ns = Namespace::new("docs")?;
    /// let index = LexicalIndex::new();
    /// index.upsert(&ns, summary("fix the retry logic in the payment worker"));
    /// assert_eq!(index.known_terms(&ns, "payment worker crashes"), (3, 2));
    /// # Ok::<(), memory_core::Error>(())
    /// ```
    pub fn known_terms(&self, ns: &Namespace, text: &str) -> (u32, u32) {
        let terms = distinct(tokenize(text));
        let space = self.space(ns);
        let s = space.read().unwrap_or_else(PoisonError::into_inner);
        let known = terms.iter().filter(|t| s.postings.contains_key(*t)).count();
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        (count(terms.len()), count(known))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::episode::{OutcomeKind, TaskContext, TaskType};

    fn summary(task: &str, domain: &str) -> EpisodeSummary {
        EpisodeSummary {
            id: EpisodeId::new(),
            task_description: task.into(),
            task_type: TaskType::Debugging,
            context: TaskContext::new(domain),
            step_count: 0,
            started_at: chrono::Utc::now(),
            completed_at: None,
            outcome: None,
            reward: None,
        }
    }

    fn ns() -> Namespace {
        Namespace::new("lexical/test").unwrap_or_else(|e| unreachable!("{e}"))
    }

    #[test]
    fn ties_at_the_cut_are_broken_by_episode_id_as_in_a_full_sort() {
        let index = LexicalIndex::new();
        let ns = ns();
        // Thirty documents with one score (the cut of a top 5 falls among them), three above.
        for _ in 0..30 {
            index.upsert(&ns, summary("fix the parser", "cli"));
        }
        for task in ["fix the parser payment", "payment parser", "payment"] {
            index.upsert(&ns, summary(task, "billing"));
        }
        let all = index.search(&ns, "parser payment", &EpisodeFilter::default(), 100);
        assert_eq!(all.len(), 33);
        for k in [1, 3, 4, 5, 20, 33, 34] {
            let top = index.search(&ns, "parser payment", &EpisodeFilter::default(), k);
            let got: Vec<_> = top.iter().map(|h| h.summary.id).collect();
            let want: Vec<_> = all.iter().take(k).map(|h| h.summary.id).collect();
            assert_eq!(got, want, "top {k}");
        }
        let tied: Vec<_> = all[3..].iter().map(|h| h.summary.id).collect();
        assert!(tied.windows(2).all(|w| w[0] < w[1]), "ties in id order");
    }

    #[test]
    fn rare_terms_outrank_common_ones_and_the_filter_applies_inside() {
        let index = LexicalIndex::new();
        let ns = ns();
        for i in 0..20 {
            index.upsert(&ns, summary(&format!("fix the parser, case {i}"), "cli"));
        }
        let rare = summary("fix the payment worker", "billing");
        index.upsert(&ns, rare.clone());
        let hits = index.search(&ns, "fix payment", &EpisodeFilter::default(), 5);
        assert_eq!(hits.len(), 5);
        assert_eq!(hits[0].summary.id, rare.id);
        assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));

        let only_cli = EpisodeFilter {
            domain: Some("cli".into()),
            ..EpisodeFilter::default()
        };
        let hits = index.search(&ns, "fix payment", &only_cli, 50);
        assert_eq!(hits.len(), 20);
        assert!(hits.iter().all(|h| h.summary.context.domain == "cli"));
        assert!(
            index
                .search(&ns, "unrelated words", &EpisodeFilter::default(), 5)
                .is_empty()
        );
        let other = Namespace::new("lexical/other").unwrap_or_else(|e| unreachable!("{e}"));
        assert!(
            index
                .search(&other, "fix payment", &EpisodeFilter::default(), 5)
                .is_empty()
        );
    }

    #[test]
    fn removing_an_episode_renumbers_the_last_one() {
        let index = LexicalIndex::new();
        let ns = ns();
        let a = summary("fix the parser", "cli");
        let b = summary("retry the payment worker", "billing");
        let c = summary("document the parser flags", "cli");
        for s in [&a, &b, &c] {
            index.upsert(&ns, s.clone());
        }
        assert!(index.remove(&ns, a.id));
        assert!(!index.remove(&ns, a.id), "already gone");
        assert_eq!(index.len(&ns), 2);
        let hits = index.search(&ns, "parser", &EpisodeFilter::default(), 5);
        assert_eq!(hits.len(), 1, "the removed episode is not found");
        assert_eq!(hits[0].summary.id, c.id, "the moved one still is");
        let hits = index.search(&ns, "payment", &EpisodeFilter::default(), 5);
        assert_eq!(hits[0].summary.id, b.id);
        // Replacing the moved episode's words still finds its postings.
        let mut c2 = c.clone();
        c2.task_description = "rename the flags".into();
        index.upsert(&ns, c2);
        assert!(
            index
                .search(&ns, "parser", &EpisodeFilter::default(), 5)
                .is_empty()
        );
        assert!(index.remove(&ns, c.id));
        assert!(index.remove(&ns, b.id));
        assert!(index.is_empty(&ns));
    }

    #[test]
    fn upsert_replaces_summary_and_reindexes_changed_words() {
        let index = LexicalIndex::new();
        let ns = ns();
        let mut s = summary("add pagination", "web_api");
        index.upsert(&ns, s.clone());
        s.outcome = Some(OutcomeKind::Success);
        index.upsert(&ns, s.clone());
        assert_eq!(index.len(&ns), 1);
        let hits = index.search(&ns, "pagination", &EpisodeFilter::default(), 5);
        assert_eq!(hits[0].summary.outcome, Some(OutcomeKind::Success));

        s.task_description = "remove the feature flag".into();
        index.upsert(&ns, s.clone());
        assert!(
            index
                .search(&ns, "pagination", &EpisodeFilter::default(), 5)
                .is_empty()
        );
        assert_eq!(
            index
                .search(&ns, "flag", &EpisodeFilter::default(), 5)
                .len(),
            1
        );
    }
}

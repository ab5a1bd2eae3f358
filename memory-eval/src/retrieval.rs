//! Retrieval-quality evaluation on a labeled dataset (the JSONL format of
//! `shared/eval/retrieval/`: `episodes.jsonl` and `queries.jsonl`).
//!
//! [`RetrievalEval::run`] imports the episodes into a namespace through the normal API (start,
//! log every step, complete), embeds them, runs every query with each method and reports
//! recall@1/5/10, MRR and nDCG@10 (gain = grade), latency percentiles, and abstention: how
//! many no-answer queries come back without a strong match, and how many answerable ones do.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use memory_core::Namespace;
use memory_core::SelfLearningMemory;
use memory_core::{EpisodeId, NewEpisode, Outcome, StepInput, TaskContext, TaskType};
use memory_core::{Error, Result};
use memory_core::{RetrievalMethod, RetrievalQuery, RetrievedEpisode};

use crate::ratio;

/// One episode of the dataset.
#[derive(Debug, Clone, Deserialize)]
pub struct EvalEpisode {
    /// The dataset's id (e.g. `e0001`).
    pub id: String,
    /// The task.
    pub task_description: String,
    /// Its kind.
    pub task_type: TaskType,
    /// Its context.
    pub context: TaskContext,
    /// The tool steps.
    pub steps: Vec<EvalStep>,
    /// How it ended.
    pub outcome: EvalOutcome,
}

/// One step of a dataset episode.
#[derive(Debug, Clone, Deserialize)]
pub struct EvalStep {
    /// Tool name.
    pub tool: String,
    /// What was done.
    pub action: String,
    /// Tool parameters.
    #[serde(default)]
    pub parameters: serde_json::Value,
    /// What came back.
    pub result: EvalStepResult,
    /// Latency.
    #[serde(default)]
    pub latency_ms: u64,
}

/// A step's result in the dataset.
#[derive(Debug, Clone, Deserialize)]
pub struct EvalStepResult {
    /// `success`, `error` or `timeout`.
    pub status: String,
    /// Output on success.
    #[serde(default)]
    pub output: Option<String>,
    /// Message otherwise.
    #[serde(default)]
    pub error: Option<String>,
}

/// A dataset episode's outcome.
#[derive(Debug, Clone, Deserialize)]
pub struct EvalOutcome {
    /// `success`, `partial_success` or `failure`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Verdict, for successes.
    #[serde(default)]
    pub verdict: Option<String>,
    /// Reason, for failures.
    #[serde(default)]
    pub reason: Option<String>,
}

/// One labeled query.
#[derive(Debug, Clone, Deserialize)]
pub struct EvalQuery {
    /// The dataset's id.
    pub id: String,
    /// The new task.
    pub task_description: String,
    /// Its context.
    pub context: TaskContext,
    /// Its kind.
    pub task_type: TaskType,
    /// Relevant episode ids with their grade (1..3); empty when nothing is relevant.
    pub relevant: BTreeMap<String, u32>,
}

impl EvalQuery {
    /// The top-10 query this evaluation runs for `self` in `mode` with `method`.
    pub fn query(&self, mode: QueryMode, method: RetrievalMethod) -> RetrievalQuery {
        let query = RetrievalQuery::new(self.task_description.clone())
            .with_limit(10)
            .with_method(method);
        match mode {
            QueryMode::WithContext => {
                query.with_context(Some(self.task_type), self.context.clone())
            }
            QueryMode::DescriptionOnly => query,
        }
    }
}

/// A loaded dataset.
#[derive(Debug, Clone)]
pub struct EvalDataset {
    /// The episodes.
    pub episodes: Vec<EvalEpisode>,
    /// The queries.
    pub queries: Vec<EvalQuery>,
}

fn read_jsonl<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Vec<T>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::invalid("dataset", format!("cannot read {}: {e}", path.display())))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| {
                Error::invalid("dataset", format!("{} line {}: {e}", path.display(), i + 1))
            })
        })
        .collect()
}

impl EvalDataset {
    /// Loads `episodes.jsonl` and `queries.jsonl` from `dir`.
    pub fn load(dir: &Path) -> Result<Self> {
        let episodes: Vec<EvalEpisode> = read_jsonl(&dir.join("episodes.jsonl"))?;
        let queries: Vec<EvalQuery> = read_jsonl(&dir.join("queries.jsonl"))?;
        let ds = EvalDataset {
            episodes,
            queries: Vec::new(),
        };
        ds.with_queries(queries)
    }

    /// Adds the queries of a `queries.jsonl` file (for example a set of extra no-answer
    /// queries written for this corpus).
    ///
    /// # Errors
    /// An unreadable or malformed file, a query id already present, or a label naming an
    /// episode the dataset does not have.
    pub fn with_queries_from(self, path: &Path) -> Result<Self> {
        let queries: Vec<EvalQuery> = read_jsonl(path)?;
        self.with_queries(queries)
    }

    fn with_queries(mut self, queries: Vec<EvalQuery>) -> Result<Self> {
        let known: std::collections::HashSet<&str> =
            self.episodes.iter().map(|e| e.id.as_str()).collect();
        let mut ids: std::collections::HashSet<String> =
            self.queries.iter().map(|q| q.id.clone()).collect();
        for q in &queries {
            if let Some(missing) = q.relevant.keys().find(|id| !known.contains(id.as_str())) {
                return Err(Error::invalid(
                    "dataset",
                    format!("query {} labels unknown episode {missing}", q.id),
                ));
            }
            if !ids.insert(q.id.clone()) {
                return Err(Error::invalid(
                    "dataset",
                    format!("query id {} appears twice", q.id),
                ));
            }
        }
        self.queries.extend(queries);
        Ok(self)
    }
}

/// Which parts of a query speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueryMode {
    /// The task text with its context and task type.
    WithContext,
    /// The task text only.
    DescriptionOnly,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// Slowest.
    pub max_ms: f64,
}

/// How well no-answer queries were flagged ("no strong match").
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Abstention {
    /// Queries with nothing relevant.
    pub no_answer_queries: usize,
    /// Of those, flagged.
    pub no_answer_flagged: usize,
    /// Queries with something relevant.
    pub answerable_queries: usize,
    /// Of those, wrongly flagged.
    pub answerable_flagged: usize,
}

impl Abstention {
    /// Share of no-answer queries flagged.
    pub fn flag_rate(&self) -> f64 {
        ratio(self.no_answer_flagged, self.no_answer_queries)
    }
    /// Share of answerable queries flagged.
    pub fn false_flag_rate(&self) -> f64 {
        ratio(self.answerable_flagged, self.answerable_queries)
    }
}

/// The scores of one method in one mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodScores {
    /// The method.
    pub method: RetrievalMethod,
    /// Mean recall@1 over answerable queries (relevant = grade >= 1).
    pub recall_at_1: f64,
    /// Mean recall@5.
    pub recall_at_5: f64,
    /// Mean recall@10.
    pub recall_at_10: f64,
    /// Mean reciprocal rank of the first relevant result (within the top 10).
    pub mrr: f64,
    /// Mean nDCG@10 with gain = grade.
    pub ndcg_at_10: f64,
    /// Query latency, with the query vector cached.
    pub latency: Latency,
    /// Abstention (absent when the method has no calibrated confidence: lexical).
    pub abstention: Option<Abstention>,
    /// Per query, for error analysis.
    pub per_query: Vec<QueryOutcome>,
}

/// How one query went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryOutcome {
    /// The dataset's query id.
    pub id: String,
    /// Whether the dataset lists a relevant episode.
    pub answerable: bool,
    /// The best cosine similarity among the candidates, if any.
    pub best_cosine: Option<f64>,
    /// The retrieval's calibrated confidence, when it had one.
    #[serde(default)]
    pub confidence: Option<f64>,
    /// What the confidence is calibrated on ([`memory_core::Retrieval::support`]).
    #[serde(default)]
    pub support: Option<f64>,
    /// Flagged as "no strong match".
    pub flagged: bool,
    /// 1-based rank of the first relevant result in the top 10.
    pub first_relevant: Option<usize>,
    /// nDCG@10 (0 for no-answer queries).
    pub ndcg_at_10: f64,
    /// The dataset ids of the results, best first.
    pub results: Vec<String>,
}

/// The evaluation of one mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModeReport {
    /// The mode.
    pub mode: QueryMode,
    /// One entry per method.
    pub methods: Vec<MethodScores>,
}

/// The whole evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetrievalEvalReport {
    /// Episodes imported.
    pub episodes: usize,
    /// Queries run (per method and mode).
    pub queries: usize,
    /// The embedding model, if any (without one only lexical is evaluated).
    pub embedder: Option<String>,
    /// Seconds spent importing (start, steps, complete) the episodes.
    pub import_seconds: f64,
    /// Seconds spent embedding them.
    pub embed_seconds: f64,
    /// One report per mode.
    pub modes: Vec<ModeReport>,
}

/// Runs the retrieval evaluation.
#[derive(Debug)]
pub struct RetrievalEval<'a> {
    memory: &'a SelfLearningMemory,
    ns: Namespace,
}

impl<'a> RetrievalEval<'a> {
    /// An evaluation importing into `ns` of `memory` (use a fresh namespace or store).
    pub fn new(memory: &'a SelfLearningMemory, ns: Namespace) -> Self {
        RetrievalEval { memory, ns }
    }

    /// Imports the episodes through the normal API; returns dataset id -> episode id.
    pub async fn import(&self, ds: &EvalDataset) -> Result<HashMap<String, EpisodeId>> {
        let mut ids = HashMap::with_capacity(ds.episodes.len());
        let text = |t: &Option<String>| t.clone().unwrap_or_default();
        for e in &ds.episodes {
            let new = NewEpisode::new(e.task_description.clone(), e.task_type, e.context.clone());
            let id = self.memory.start_episode(&self.ns, new).await?;
            for s in &e.steps {
                let (tool, action) = (&s.tool, &s.action);
                let step = match s.result.status.as_str() {
                    "success" => StepInput::ok(tool, action, text(&s.result.output)),
                    "timeout" => crate::timed_out(tool, action, text(&s.result.error)),
                    _ => StepInput::error(tool, action, text(&s.result.error)),
                }
                .with_parameters(s.parameters.clone())
                .with_latency_ms(s.latency_ms);
                self.memory.log_step(&self.ns, id, step).await?;
            }
            let outcome = match e.outcome.kind.as_str() {
                "success" => Outcome::success(text(&e.outcome.verdict)),
                "partial_success" => Outcome::partial(text(&e.outcome.verdict)),
                _ => Outcome::failure(text(&e.outcome.reason)),
            };
            self.memory.complete_episode(&self.ns, id, outcome).await?;
            ids.insert(e.id.clone(), id);
        }
        Ok(ids)
    }

    /// Imports, embeds, and evaluates both modes with every available method.
    pub async fn run(&self, ds: &EvalDataset) -> Result<RetrievalEvalReport> {
        self.run_modes(ds, &[QueryMode::WithContext, QueryMode::DescriptionOnly])
            .await
    }

    /// Imports, embeds, and evaluates the given modes with every available method.
    pub async fn run_modes(
        &self,
        ds: &EvalDataset,
        modes: &[QueryMode],
    ) -> Result<RetrievalEvalReport> {
        let started = Instant::now();
        let ids = self.import(ds).await?;
        let import_seconds = started.elapsed().as_secs_f64();
        let started = Instant::now();
        self.memory.embed_pending(&self.ns).await?;
        let embed_seconds = started.elapsed().as_secs_f64();
        let embedder = self
            .memory
            .retriever()
            .embedder()
            .map(|e| e.model_id().to_owned());
        let methods: &[RetrievalMethod] = if embedder.is_some() {
            &[
                RetrievalMethod::Lexical,
                RetrievalMethod::Vector,
                RetrievalMethod::Hybrid,
            ]
        } else {
            &[RetrievalMethod::Lexical]
        };
        let mut reports = Vec::new();
        for &mode in modes {
            let mut scores = Vec::new();
            for &method in methods {
                scores.push(self.score(ds, &ids, mode, method).await?);
            }
            reports.push(ModeReport {
                mode,
                methods: scores,
            });
        }
        Ok(RetrievalEvalReport {
            episodes: ds.episodes.len(),
            queries: ds.queries.len(),
            embedder,
            import_seconds,
            embed_seconds,
            modes: reports,
        })
    }

    /// Runs every query with one method in one mode.
    pub async fn score(
        &self,
        ds: &EvalDataset,
        ids: &HashMap<String, EpisodeId>,
        mode: QueryMode,
        method: RetrievalMethod,
    ) -> Result<MethodScores> {
        let by_episode: HashMap<EpisodeId, &str> =
            ids.iter().map(|(k, v)| (*v, k.as_str())).collect();
        let mut totals = [0.0f64; 5];
        let mut answerable = 0usize;
        let mut latencies = Vec::with_capacity(ds.queries.len());
        let mut abstention = Abstention::default();
        let mut calibrated = false;
        let mut per_query = Vec::with_capacity(ds.queries.len());
        for q in &ds.queries {
            let query = q.query(mode, method);
            // Untimed first run: the timed one then measures ranking with the query vector
            // cached (embedding a query is measured by the embed benches).
            self.memory.retrieve(&self.ns, &query).await?;
            let t = Instant::now();
            let got = self.memory.retrieve(&self.ns, &query).await?;
            latencies.push(t.elapsed().as_secs_f64() * 1000.0);
            let ranked = grades(&got.results, &by_episode, q);
            calibrated |= got.confidence.is_some();
            let flagged = !got.strong_match;
            let best_cosine = got
                .results
                .iter()
                .filter_map(|r| r.breakdown.similarity)
                .fold(None, |m: Option<f64>, c| Some(m.map_or(c, |m| m.max(c))));
            let first_relevant = ranked.iter().position(|g| *g >= 1).map(|i| i + 1);
            let ndcg = ndcg_at_10(&ranked, q.relevant.values().copied());
            per_query.push(QueryOutcome {
                id: q.id.clone(),
                answerable: !q.relevant.is_empty(),
                best_cosine,
                confidence: got.confidence,
                support: got.support,
                flagged,
                first_relevant,
                ndcg_at_10: ndcg,
                results: got
                    .results
                    .iter()
                    .filter_map(|r| by_episode.get(&r.episode.id).map(|d| (*d).to_owned()))
                    .collect(),
            });
            if q.relevant.is_empty() {
                abstention.no_answer_queries += 1;
                abstention.no_answer_flagged += usize::from(flagged);
                continue;
            }
            abstention.answerable_queries += 1;
            abstention.answerable_flagged += usize::from(flagged);
            answerable += 1;
            for (slot, k) in [1usize, 5, 10].into_iter().enumerate() {
                totals[slot] += recall_at(&ranked, k, q);
            }
            totals[3] += first_relevant.map_or(0.0, |r| 1.0 / r as f64);
            totals[4] += ndcg;
        }
        let n = answerable.max(1) as f64;
        Ok(MethodScores {
            method,
            recall_at_1: totals[0] / n,
            recall_at_5: totals[1] / n,
            recall_at_10: totals[2] / n,
            mrr: totals[3] / n,
            ndcg_at_10: totals[4] / n,
            latency: percentiles(latencies),
            abstention: calibrated.then_some(abstention),
            per_query,
        })
    }
}

/// The grades of `results` for query `q`, in ranked order (0 for an unlisted episode).
pub(crate) fn grades(
    results: &[RetrievedEpisode],
    by_episode: &HashMap<EpisodeId, &str>,
    q: &EvalQuery,
) -> Vec<u32> {
    results
        .iter()
        .map(|r| {
            by_episode
                .get(&r.episode.id)
                .and_then(|d| q.relevant.get(*d))
                .copied()
                .unwrap_or(0)
        })
        .collect()
}

/// Share of `q`'s relevant episodes (grade >= 1) among the first `k` of `ranked`.
pub(crate) fn recall_at(ranked: &[u32], k: usize, q: &EvalQuery) -> f64 {
    let relevant = q.relevant.values().filter(|g| **g >= 1).count();
    let found = ranked.iter().take(k).filter(|g| **g >= 1).count();
    ratio(found, relevant)
}

/// nDCG@10 of the grades in ranked order against the ideal order of `all` grades.
pub fn ndcg_at_10(ranked: &[u32], all: impl Iterator<Item = u32>) -> f64 {
    let dcg = |grades: &mut dyn Iterator<Item = u32>| -> f64 {
        grades
            .take(10)
            .enumerate()
            .map(|(i, g)| f64::from(g) / ((i + 2) as f64).log2())
            .sum()
    };
    let mut ideal: Vec<u32> = all.collect();
    ideal.sort_unstable_by(|a, b| b.cmp(a));
    let best = dcg(&mut ideal.into_iter());
    if best == 0.0 {
        return 0.0;
    }
    dcg(&mut ranked.iter().copied()) / best
}

fn percentiles(mut ms: Vec<f64>) -> Latency {
    ms.sort_by(f64::total_cmp);
    let at = |p: f64| -> f64 {
        if ms.is_empty() {
            return 0.0;
        }
        let i = ((ms.len() as f64 - 1.0) * p).round() as usize;
        ms[i.min(ms.len() - 1)]
    };
    Latency {
        p50_ms: at(0.5),
        p95_ms: at(0.95),
        max_ms: at(1.0),
    }
}

/// The report as a plain-text table, one block per mode.
pub fn format_report(r: &RetrievalEvalReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} episodes, {} queries, embedder {}; import {:.1}s, embedding {:.1}s",
        r.episodes,
        r.queries,
        r.embedder.as_deref().unwrap_or("none (lexical only)"),
        r.import_seconds,
        r.embed_seconds
    );
    for m in &r.modes {
        let title = match m.mode {
            QueryMode::WithContext => "with context",
            QueryMode::DescriptionOnly => "description only",
        };
        let _ = writeln!(out, "\n{title}");
        let _ = writeln!(
            out,
            "  {:<8} {:>6} {:>6} {:>6} {:>6} {:>8} {:>8} {:>8}  abstention (no-answer flagged / false flags)",
            "method", "R@1", "R@5", "R@10", "MRR", "nDCG@10", "p50 ms", "p95 ms"
        );
        for s in &m.methods {
            let abst = match &s.abstention {
                None => "n/a (no calibrated confidence)".to_owned(),
                Some(a) => format!(
                    "{}/{} ({:.0}%) / {}/{} ({:.1}%)",
                    a.no_answer_flagged,
                    a.no_answer_queries,
                    a.flag_rate() * 100.0,
                    a.answerable_flagged,
                    a.answerable_queries,
                    a.false_flag_rate() * 100.0
                ),
            };
            let _ = writeln!(
                out,
                "  {:<8} {:>6.3} {:>6.3} {:>6.3} {:>6.3} {:>8.3} {:>8.2} {:>8.2}  {abst}",
                s.method.as_str(),
                s.recall_at_1,
                s.recall_at_5,
                s.recall_at_10,
                s.mrr,
                s.ndcg_at_10,
                s.latency.p50_ms,
                s.latency.p95_ms,
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ndcg_is_one_for_the_ideal_order_and_less_otherwise() {
        let grades = [3u32, 2, 1];
        assert!((ndcg_at_10(&[3, 2, 1], grades.into_iter()) - 1.0).abs() < 1e-12);
        let swapped = ndcg_at_10(&[1, 2, 3], grades.into_iter());
        assert!(swapped < 1.0 && swapped > 0.5);
        assert!(ndcg_at_10(&[0, 0], grades.into_iter()).abs() < 1e-12);
        assert!(ndcg_at_10(&[], std::iter::empty()).abs() < 1e-12);
    }

    #[test]
    fn extra_queries_are_added_and_checked_against_the_corpus() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("memory-eval-extra-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| Error::invalid("test", e.to_string()))?;
        let write = |name: &str, text: &str| -> Result<std::path::PathBuf> {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(|e| Error::invalid("test", e.to_string()))?;
            Ok(path)
        };
        write(
            "episodes.jsonl",
            r#"{"id": "e1", "task_description": "fix the build", "task_type": "debugging", "context": {"domain": "cli"}, "steps": [], "outcome": {"type": "success", "verdict": "ok"}}"#,
        )?;
        let query = |id: &str, relevant: &str| {
            format!(
                r#"{{"id": "{id}", "task_description": "t", "context": {{"domain": "cli"}}, "task_type": "debugging", "relevant": {{{relevant}}}}}"#
            )
        };
        write("queries.jsonl", &query("q1", r#""e1": 3"#))?;
        let extra = write("extra.jsonl", &query("na1", ""))?;
        let twice = write("twice.jsonl", &query("q1", ""))?;
        let unknown = write("unknown.jsonl", &query("na2", r#""e9": 1"#))?;

        let ds = EvalDataset::load(&dir)?.with_queries_from(&extra)?;
        assert_eq!(ds.queries.len(), 2);
        assert!(ds.queries[1].relevant.is_empty());
        let err = EvalDataset::load(&dir)?
            .with_queries_from(&twice)
            .unwrap_err();
        assert!(err.to_string().contains("q1 appears twice"), "{err}");
        let err = EvalDataset::load(&dir)?
            .with_queries_from(&unknown)
            .unwrap_err();
        assert!(err.to_string().contains("unknown episode e9"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }

    #[test]
    fn percentiles_pick_ranks() {
        let l = percentiles((1..=100).map(f64::from).collect());
        assert!((l.p50_ms - 51.0).abs() < 1.0);
        assert!((l.p95_ms - 95.0).abs() < 1.5);
        assert!((l.max_ms - 100.0).abs() < 1e-9);
    }
}

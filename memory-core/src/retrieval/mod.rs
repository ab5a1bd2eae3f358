//! Retrieval: hybrid (lexical + semantic) search over past episodes, and the embedding queue.
//!
//! - **Lexical** candidates come from the backend's full-text index (FTS5/BM25 in libsql) over
//!   task descriptions, reflections and step text, filtered inside the query.
//! - **Semantic** candidates come from the in-process [`VectorIndex`] over episode embeddings,
//!   filtered inside the scan. An episode's vector is the normalized sum of two embeddings:
//!   its task text with its context words ([`embedding_text`]) and, at `work_weight`, what was
//!   done ([`work_text`]: the distinct step actions and errors). The index ranks by the cosine
//!   after centering on the namespace's mean vector (see [`vector_index`]).
//! - Both lists are min-max normalized over their union and fused as a weighted sum, then
//!   re-ranked by context match (the kind of work: domain and task type), outcome and
//!   recency. Every result carries its [`ScoreBreakdown`] and a one-line `why`.
//! - [`Retrieval::confidence`] is calibrated on the mean plain cosine similarity of the
//!   [`SUPPORT`] closest episodes (an absolute measure, not a score relative to the other
//!   results), so "no strong match" means the memory has nothing close, not that the list was
//!   short.
//!
//! Embeddings are computed off the write path: the durable queue is the set of episodes with no
//! embedding under the [`vector_key`] (the model and the embedded text's recipe)
//! ([`EmbeddingStore::episodes_missing_embedding`](crate::EmbeddingStore::episodes_missing_embedding)), which is derived from the data and so
//! survives restarts; [`Retriever::embed_pending`] drains it in
//! batches. Without an embedder (model files missing), retrieval is lexical and says so in
//! [`Retrieval::degraded`].

mod embed_queue;
mod indexed_summaries;
mod indexes;
pub mod lexical_index;
mod query;
pub mod recommend;
mod retriever;
mod revise;
mod scoring;
mod sign_codes;
mod snapshot;
mod taught;
mod texts;
mod variants;
pub mod vector_index;

pub use lexical_index::{LexicalHit, LexicalIndex};
pub use query::{
    FusionMethod, IndexStatus, Retrieval, RetrievalConfig, RetrievalMethod, RetrievalQuery,
    RetrievedEpisode, ScoreBreakdown,
};
pub use retriever::{Retriever, SUPPORT};
pub use texts::{
    EXCERPT_CHARS, MatchedStep, StepWindow, WINDOW_CHARS, WINDOW_RESULT_CHARS, WORK_ACTION_CHARS,
    WORK_ERROR_CHARS, WORK_ERRORS, embedding_text, matched_step, step_windows, vector_key,
    work_text,
};
pub use vector_index::{VectorHit, VectorIndex};

//! Evaluations of the self-learning episodic memory, as a client of the library:
//!
//! - [`learning`]: a simulated task world and an agent that works through a stream of tasks
//!   with and without the memory (four arms), reported per window of tasks;
//! - [`retrieval`]: retrieval quality (recall@k, MRR, nDCG@10, abstention) on a labeled
//!   dataset read from JSON lines.
//!
//! `memory eval learning` and `memory eval retrieval` run them and write the reports.

pub mod learning;
pub mod retrieval;

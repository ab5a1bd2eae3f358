//! The labeled sets: one dataset, or a benchmark's dialogues, each a part of its own.

use std::path::Path;

use memory_core::{Error, Result};

use crate::retrieval::EvalDataset;

/// A labeled set: one dataset, or several (a benchmark's dialogues) that are each imported
/// into a namespace of their own and queried only with their own questions.
#[derive(Debug, Clone)]
pub struct EvalSet {
    /// What the reports call it.
    pub name: String,
    /// `(part name, dataset)`, in name order; one part named after the set for a single
    /// dataset.
    pub parts: Vec<(String, EvalDataset)>,
}

impl EvalSet {
    /// Loads `dir`: a dataset directory (`episodes.jsonl`, `queries.jsonl`), or a directory
    /// of them (each subdirectory holding `episodes.jsonl` is a part).
    ///
    /// # Errors
    /// An unreadable directory, a malformed dataset, or a directory with no dataset at all.
    pub fn load(name: impl Into<String>, dir: &Path) -> Result<Self> {
        let name = name.into();
        if dir.join("episodes.jsonl").is_file() {
            return Ok(EvalSet {
                parts: vec![(name.clone(), EvalDataset::load(dir)?)],
                name,
            });
        }
        let entries = std::fs::read_dir(dir).map_err(|e| {
            Error::invalid("dataset", format!("cannot read {}: {e}", dir.display()))
        })?;
        let mut dirs: Vec<_> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("episodes.jsonl").is_file())
            .collect();
        dirs.sort();
        if dirs.is_empty() {
            return Err(Error::invalid(
                "dataset",
                format!(
                    "{} holds neither episodes.jsonl nor directories that do",
                    dir.display()
                ),
            ));
        }
        let mut parts = Vec::with_capacity(dirs.len());
        for d in dirs {
            let part = d
                .file_name()
                .map_or_else(|| "part".to_owned(), |n| n.to_string_lossy().into_owned());
            parts.push((part, EvalDataset::load(&d)?));
        }
        Ok(EvalSet { name, parts })
    }

    /// Adds the queries of a `queries.jsonl` file to a single-dataset set.
    ///
    /// # Errors
    /// A set of several parts (which part the labels name would be a guess), or what
    /// [`EvalDataset::with_queries_from`] refuses.
    pub fn with_queries_from(mut self, path: &Path) -> Result<Self> {
        if self.parts.len() != 1 {
            return Err(Error::invalid(
                "extra_queries",
                format!(
                    "set {} has {} parts; extra queries need one",
                    self.name,
                    self.parts.len()
                ),
            ));
        }
        let (name, ds) = self.parts.remove(0);
        self.parts.push((name, ds.with_queries_from(path)?));
        Ok(self)
    }

    /// Episodes in all parts.
    pub fn episodes(&self) -> usize {
        self.parts.iter().map(|(_, d)| d.episodes.len()).sum()
    }

    /// Queries in all parts.
    pub fn queries(&self) -> usize {
        self.parts.iter().map(|(_, d)| d.queries.len()).sum()
    }

    /// Queries with nothing relevant.
    pub fn no_answer_queries(&self) -> usize {
        self.parts
            .iter()
            .flat_map(|(_, d)| &d.queries)
            .filter(|q| q.relevant.is_empty())
            .count()
    }
}

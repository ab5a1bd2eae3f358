//! Deterministic normalization and identities for learned items.
//!
//! Everything here is a pure function of its input, so the same tool sequence, error or
//! condition always yields the same id, on every machine and in every process.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::episode::TaskType;

/// A 128-bit hex digest of `parts`, separated so that `["ab","c"]` and `["a","bc"]` differ.
pub(crate) fn stable_id(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    let digest = h.finalize();
    digest[..16]
        .iter()
        .fold(String::with_capacity(32), |mut s, b| {
            use std::fmt::Write;
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The part of a task's context a learned item is conditioned on. `None` fields match any value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct ContextKey {
    /// Task type, if the item depends on it.
    pub task_type: Option<TaskType>,
    /// Domain, if the item depends on it.
    pub domain: Option<String>,
    /// Language, if the item depends on it.
    pub language: Option<String>,
}

impl ContextKey {
    /// Text used inside identities.
    pub(crate) fn signature(&self) -> String {
        format!(
            "{}|{}|{}",
            self.task_type.map_or("*", TaskType::as_str),
            self.domain.as_deref().unwrap_or("*"),
            self.language.as_deref().unwrap_or("*"),
        )
    }

    /// True when every set field equals the given value (unset fields match anything; an
    /// unset query value matches anything too).
    pub fn matches(
        &self,
        task_type: Option<TaskType>,
        domain: Option<&str>,
        language: Option<&str>,
    ) -> bool {
        fn ok<T: PartialEq + ?Sized>(mine: Option<&T>, want: Option<&T>) -> bool {
            match (mine, want) {
                (Some(m), Some(w)) => m == w,
                _ => true,
            }
        }
        ok(self.task_type.as_ref(), task_type.as_ref())
            && ok(self.domain.as_deref(), domain)
            && ok(self.language.as_deref(), language)
    }

    /// A human-readable label such as `debugging in web_api/rust`.
    pub fn label(&self) -> String {
        let place = match (&self.domain, &self.language) {
            (Some(d), Some(l)) => format!("{d}/{l}"),
            (Some(d), None) => d.clone(),
            (None, Some(l)) => l.clone(),
            (None, None) => "any context".to_owned(),
        };
        match self.task_type {
            Some(t) => format!("{t} in {place}"),
            None => place,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_ids_are_stable_and_separated() {
        assert_eq!(stable_id(&["a", "b"]), stable_id(&["a", "b"]));
        assert_ne!(stable_id(&["ab", "c"]), stable_id(&["a", "bc"]));
        assert_eq!(stable_id(&["x"]).len(), 32);
    }
}

//! Namespaces partition the memory by tenant / project / agent.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Longest accepted namespace, in bytes.
pub const MAX_NAMESPACE_LEN: usize = 128;

/// A validated namespace such as `default` or `acme/billing/agent-7`.
///
/// Every storage call is scoped to one namespace; no operation reads or changes another.
/// Allowed: 1 to 128 ASCII letters, digits and `-_./:`; no leading or trailing `/`, no empty,
/// `.` or `..` segment.
///
/// ```
/// use memory_core::Namespace;
/// let ns = Namespace::new("acme/billing")?;
/// assert_eq!(ns.as_str(), "acme/billing");
/// assert!(Namespace::new("bad namespace").is_err());
/// # Ok::<(), memory_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Namespace(String);

impl Namespace {
    /// Validates and wraps a namespace name.
    pub fn new(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        let reason = if name.is_empty() {
            Some("must not be empty".to_owned())
        } else if name.len() > MAX_NAMESPACE_LEN {
            Some(format!("longer than {MAX_NAMESPACE_LEN} bytes"))
        } else if let Some(c) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | ':')))
        {
            Some(format!(
                "character {c:?} is not allowed (use letters, digits and -_./:)"
            ))
        } else if name.split('/').any(str::is_empty) {
            Some("must not have empty segments or a leading/trailing '/'".to_owned())
        } else if name.split('/').any(|seg| seg == "." || seg == "..") {
            Some("must not have '.' or '..' segments".to_owned())
        } else {
            None
        };
        match reason {
            Some(reason) => Err(Error::invalid("namespace", reason)),
            None => Ok(Namespace(name)),
        }
    }

    /// The namespace `default`.
    pub fn default_namespace() -> Self {
        Namespace("default".to_owned())
    }

    /// The namespace as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Namespace {
    fn default() -> Self {
        Self::default_namespace()
    }
}

impl std::fmt::Display for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Namespace {
    type Error = Error;
    fn try_from(value: String) -> Result<Self> {
        Namespace::new(value)
    }
}

impl From<Namespace> for String {
    fn from(value: Namespace) -> Self {
        value.0
    }
}

impl std::str::FromStr for Namespace {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Namespace::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_rejects() {
        for ok in ["default", "a", "acme/billing/agent-7", "x:y.z_w"] {
            assert!(Namespace::new(ok).is_ok(), "{ok}");
        }
        let long = "a".repeat(MAX_NAMESPACE_LEN + 1);
        for bad in [
            "",
            "/a",
            "a/",
            "a//b",
            "a b",
            "ä",
            "../x",
            "a/./b",
            long.as_str(),
        ] {
            assert!(Namespace::new(bad).is_err(), "{bad}");
        }
        assert!(Namespace::new("a".repeat(MAX_NAMESPACE_LEN)).is_ok());
    }
}

//! Secret redaction of stored text.
//!
//! Everything the memory stores (task descriptions, step parameters and results, lessons) passes
//! through a [`Redactor`] first: API keys, tokens, private keys, passwords in URLs and
//! `password=...`-style assignments are replaced by `[REDACTED:<kind>]`. Redaction is on by
//! default and configured with [`RedactionConfig`].
//!
//! Kinds: `aws_access_key`, `aws_secret`, `gcp_api_key`, `github_token`, `gitlab_token`,
//! `slack_token`, `openai_key`, `stripe_key`, `sendgrid_key`, `huggingface_token`, `npm_token`,
//! `pypi_token`, `google_oauth_token`, `digitalocean_token`, `shopify_token`,
//! `databricks_token`, `docker_token`, `twilio_key`, `discord_token`, `telegram_token`,
//! `age_secret_key`, `jwt`, `private_key` (PEM blocks on many lines or one), `url_password`,
//! `cli_credential` (`curl -u user:pass`, `mysql -pPASS`, `sshpass -p PASS`,
//! `redis-cli -a PASS`, `openssl -k PASS`, `az login -p PASS`, `htpasswd -b FILE USER PASS`),
//! `assignment` (`key=value`, `key: value`, JSON and connection-string pairs under a sensitive
//! key, command line flags such as `--password X`, `Authorization` headers, and prose such as
//! `password is X` or `passphrase "..."`), `high_entropy` (a long
//! random-looking token shortly after a sensitive word) and `custom` (matches of
//! [`RedactionConfig::extra_patterns`]).
//!
//! How well it holds is measured on a labeled corpus (`tests/data/redaction/`, 390 secrets of
//! 39 kinds, 210 vendor keys cut short at the end of a line, and 1,750 ordinary lines, each put
//! into every field through the public API) by the
//! `redaction_corpus` test, which fails below recall 0.98 or above 1% false positives.
//!
//! Precision matters as much as recall: the memory stores code, and redacting
//! `let token = lexer.next_token();` would destroy useful context. Assignments are therefore only
//! redacted when the value looks like a literal, not a variable, type, call or placeholder.
//!
//! Redaction is idempotent: redacting redacted text changes nothing, and existing
//! `[REDACTED:<kind>]` markers are never rewritten.
//!
//! Cost: one [`RegexSet`](regex::RegexSet) scan decides which rules can match; text without
//! any candidate is returned borrowed after that single scan, with no allocation.
//!
//! ```
//! use memory_core::{RedactionConfig, Redactor};
//! # fn main() -> memory_core::Result<()> {
//! let r = Redactor::new(&RedactionConfig::default())?;
//! assert_eq!(r.redact("postgres://admin:hunter2@db:5432/app"), "postgres://admin:[REDACTED:url_password]@db:5432/app");
//! assert_eq!(r.redact("let token = lexer.next_token();"), "let token = lexer.next_token();");
//! # Ok(())
//! # }
//! ```

// Own implementation: no maintained Rust crate offers kind-tagged, key-preserving, borrow-when-clean redaction.

mod checks;
mod entropy;
mod keys;
mod rules;
mod values;

use std::borrow::Cow;
use std::sync::Arc;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::episode::{Outcome, StepInput, StepResult, TaskContext};
use crate::error::Error;

use keys::{is_secret_value, key_strength};
use rules::Inner;

/// Field named in [`Error::InvalidInput`] when a configured pattern does not compile.
const EXTRA_PATTERNS_FIELD: &str = "redaction.extra_patterns";

/// Every replacement starts with this; text already carrying a marker is left alone.
const MARKER_PREFIX: &str = "[REDACTED:";

/// Replacement written for a value redacted because of its key.
const ASSIGNMENT_MARKER: &str = "[REDACTED:assignment]";

/// Redaction settings.
///
/// # Default
///
/// `enabled: true`, `extra_patterns: []`: the built-in kinds are redacted, nothing else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedactionConfig {
    /// Whether stored text is redacted at all.
    pub enabled: bool,
    /// Extra regular expressions (Rust `regex` syntax); every match is replaced by
    /// `[REDACTED:custom]`. Built-in kinds win where they overlap.
    pub extra_patterns: Vec<String>,
}

impl Default for RedactionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            extra_patterns: Vec::new(),
        }
    }
}

impl RedactionConfig {
    /// A configuration that redacts nothing.
    #[must_use]
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            extra_patterns: Vec::new(),
        }
    }

    /// Adds a pattern whose matches are replaced by `[REDACTED:custom]`.
    #[must_use]
    pub fn with_extra_pattern(mut self, pattern: impl Into<String>) -> Self {
        self.extra_patterns.push(pattern.into());
        self
    }
}

/// Compiled redactor; cheap to clone (the compiled rules are shared), `Send + Sync`.
#[derive(Clone, Debug)]
pub struct Redactor {
    /// `None` when disabled.
    inner: Option<Arc<Inner>>,
}

impl Redactor {
    /// Compiles the built-in rules and the configured extra patterns.
    ///
    /// Extra patterns are validated even when redaction is disabled, so a bad configuration is
    /// reported at start-up rather than when redaction is switched on.
    ///
    /// # Errors
    ///
    /// An extra pattern that does not compile is an [`Error::InvalidInput`] on
    /// `redaction.extra_patterns`.
    pub fn new(config: &RedactionConfig) -> crate::error::Result<Self> {
        let mut custom = Vec::with_capacity(config.extra_patterns.len());
        for (i, pattern) in config.extra_patterns.iter().enumerate() {
            let regex = Regex::new(pattern).map_err(|e| {
                Error::invalid(
                    EXTRA_PATTERNS_FIELD,
                    format!("pattern {i} ({pattern:?}) does not compile: {e}"),
                )
            })?;
            custom.push(regex);
        }
        if !config.enabled {
            return Ok(Self::disabled());
        }
        Ok(Self {
            inner: Some(Arc::new(Inner::new(custom)?)),
        })
    }

    /// A redactor that leaves everything untouched.
    #[must_use]
    pub fn disabled() -> Self {
        Self { inner: None }
    }

    /// Whether this redactor changes anything at all.
    #[must_use]
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Returns `text` with every secret replaced by `[REDACTED:<kind>]`; borrowed when nothing
    /// matched.
    #[must_use]
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        match &self.inner {
            Some(inner) => inner.redact(text),
            None => Cow::Borrowed(text),
        }
    }

    /// Redacts `text` in place; does not allocate when nothing matched.
    pub fn redact_in_place(&self, text: &mut String) {
        let redacted = match self.redact(text) {
            Cow::Owned(s) => Some(s),
            Cow::Borrowed(_) => None,
        };
        if let Some(s) = redacted {
            *text = s;
        }
    }

    /// Redacts every string in a JSON value, recursively, object keys included.
    ///
    /// A string or number under a sensitive key (`password`, `passwd`, `pass`, `pwd`,
    /// `passphrase`, `secret`, `api_key`, `secret_key`, `private_key`, `access_key`,
    /// `account_key`, `credentials`, `authorization`, or a key ending in `token` or `auth` whose
    /// value looks like one) is replaced entirely by `[REDACTED:assignment]` unless it is a
    /// placeholder such as `${DB_PASSWORD}`. A key that itself holds a secret is redacted like
    /// any text (a clash with an existing key gets a `#2`, `#3`, ... suffix). Booleans and
    /// `null` are never changed.
    pub fn redact_json(&self, value: &mut serde_json::Value) {
        use serde_json::Value;
        let Some(inner) = &self.inner else {
            return;
        };
        // An explicit stack: values built in code can nest deeper than the parser's limit.
        let mut stack = vec![value];
        while let Some(value) = stack.pop() {
            match value {
                Value::String(s) => inner.redact_in_place(s),
                Value::Array(items) => stack.extend(items.iter_mut()),
                Value::Object(map) => {
                    inner.redact_keys(map);
                    for (key, value) in map.iter_mut() {
                        let secret = key_strength(key).is_some_and(|strength| match &*value {
                            Value::String(s) => is_secret_value(strength, s),
                            Value::Number(n) => is_secret_value(strength, &n.to_string()),
                            _ => false,
                        });
                        if secret {
                            *value = Value::String(ASSIGNMENT_MARKER.to_owned());
                            continue;
                        }
                        stack.push(value);
                    }
                }
                Value::Null | Value::Bool(_) | Value::Number(_) => {}
            }
        }
    }
}

impl Redactor {
    /// Redacts every field of a new episode a caller fills: the task description and the
    /// context (domain, language, framework, tags). Run it before
    /// [`TaskContext::normalize`]: lowercasing hides the shape of many keys.
    pub fn redact_new_episode(&self, task_description: &mut String, context: &mut TaskContext) {
        if !self.is_enabled() {
            return;
        }
        self.redact_in_place(task_description);
        self.redact_in_place(&mut context.domain);
        for label in [&mut context.language, &mut context.framework]
            .into_iter()
            .flatten()
        {
            self.redact_in_place(label);
        }
        for tag in &mut context.tags {
            self.redact_in_place(tag);
        }
    }

    /// Redacts every field of a step a caller fills: tool, action, parameters (keys and
    /// values) and the output or error.
    pub fn redact_step(&self, step: &mut StepInput) {
        if !self.is_enabled() {
            return;
        }
        self.redact_in_place(&mut step.tool);
        self.redact_in_place(&mut step.action);
        self.redact_json(&mut step.parameters);
        match &mut step.result {
            StepResult::Success { output: t }
            | StepResult::Error { message: t }
            | StepResult::Timeout { message: t } => self.redact_in_place(t),
        }
    }

    /// Redacts every text of an outcome: verdict, artifacts, completed and failed items,
    /// reason.
    pub fn redact_outcome(&self, outcome: &mut Outcome) {
        if !self.is_enabled() {
            return;
        }
        match outcome {
            Outcome::Success { verdict, artifacts } => {
                self.redact_in_place(verdict);
                for a in artifacts.iter_mut() {
                    self.redact_in_place(a);
                }
            }
            Outcome::PartialSuccess {
                verdict,
                completed,
                failed,
            } => {
                self.redact_in_place(verdict);
                for a in completed.iter_mut().chain(failed.iter_mut()) {
                    self.redact_in_place(a);
                }
            }
            Outcome::Failure { reason } | Outcome::Abstained { reason } => {
                self.redact_in_place(reason);
            }
        }
    }
}

#[cfg(test)]
mod tests;

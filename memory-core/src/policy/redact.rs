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
//! 39 kinds and 1,650 ordinary lines, each put into every field through the public API) by the
//! `redaction_corpus` test, which fails below recall 0.98 or above 1% false positives.
//!
//! Precision matters as much as recall: the memory stores code, and redacting
//! `let token = lexer.next_token();` would destroy useful context. Assignments are therefore only
//! redacted when the value looks like a literal, not a variable, type, call or placeholder.
//!
//! Redaction is idempotent: redacting redacted text changes nothing, and existing
//! `[REDACTED:<kind>]` markers are never rewritten.
//!
//! Cost: one [`RegexSet`] scan decides which rules can match; text without any candidate is
//! returned borrowed after that single scan, with no allocation.
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

use std::borrow::Cow;
use std::ops::Range;
use std::sync::Arc;

use regex::{Captures, Regex, RegexSet};
use serde::{Deserialize, Serialize};

use crate::episode::{Outcome, StepInput, StepResult, TaskContext};
use crate::error::Error;

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

/// How a rule validates a match and which part of it is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// Replace the `s` group (or the whole match) unconditionally.
    Always,
    /// Replace the whole match if its body looks random (has a digit, or mixed case).
    Random,
    /// A `Bearer <token>` outside an `Authorization` header: the token must look like one.
    Bearer,
    /// The password of a URL: skipped when it is a placeholder.
    UrlPassword,
    /// `key = value`: skipped when the value is a placeholder, variable, type or call.
    Assignment,
    /// A password given to a command-line client (`mysql -pX`, `sshpass -p X`,
    /// `redis-cli -a X`, `openssl -k X`, `az login -p X`, `htpasswd -b F U X`): the `s`, `p`,
    /// `r` or `h` group, skipped when it is a placeholder.
    CliPassword,
    /// A password named in prose: the quoted value, or a bare word that looks like a token.
    Prose,
    /// The `s` group when it looks random: long, letters and digits, high entropy, not a hex
    /// digest, UUID, path or slug.
    Entropy,
}

/// One compiled rule.
#[derive(Debug)]
struct Rule {
    /// The `<kind>` of its replacement.
    kind: &'static str,
    /// The rule's own regex (also part of the shared set).
    regex: Regex,
    /// How matches are validated.
    check: Check,
}

/// Compiled state shared by clones of a [`Redactor`].
#[derive(Debug)]
struct Inner {
    /// All rule patterns; one scan tells which rules can match at all.
    set: RegexSet,
    /// Rules in priority order: where matches overlap, the first rule names the kind.
    rules: Vec<Rule>,
    /// Finds existing `[REDACTED:<kind>]` markers, which are never redacted again.
    marker: Regex,
}

/// `key`, optional closing quote, separator (`=`, `:`, `:=`, `=>`, or a type annotation
/// `: Type =`), spaces. Never crosses a line. Written `{sep}` in the rules.
const SEP: &str = r#"(?P<kq>\\?["'])?[ \t]*(?P<op>:=|=>|=|:(?:[ \t]*(?P<ty>&?[A-Za-z_][A-Za-z0-9_:<>]*)[ \t]+=[ \t])?)[ \t]*"#;

/// A double-quoted, single-quoted or bare value. Written `{value}` in the rules.
const VALUE: &str =
    r#"(?:\\?"(?P<dq>[^"\\\r\n]+)|\\?'(?P<sq>[^'\\\r\n]+)|(?P<bare>[^\s"',;\\`]+))"#;

/// The built-in rules in priority order, as data: a `<kind> <check>` line, then the pattern.
const BUILTIN: &str = include_str!("redaction_rules.txt");

impl Check {
    /// The check a rule names in `redaction_rules.txt`.
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "always" => Self::Always,
            "random" => Self::Random,
            "bearer" => Self::Bearer,
            "url_password" => Self::UrlPassword,
            "assignment" => Self::Assignment,
            "cli_password" => Self::CliPassword,
            "prose" => Self::Prose,
            "entropy" => Self::Entropy,
            _ => return None,
        })
    }
}

/// The built-in rules, parsed: `(kind, pattern, check)` with `{sep}` and `{value}` expanded.
fn builtin_rules() -> crate::error::Result<Vec<(&'static str, String, Check)>> {
    let invalid = |what: String| Error::invalid("redaction.builtin", what);
    let mut lines = BUILTIN
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    let mut rules = Vec::new();
    while let Some(head) = lines.next() {
        let (kind, check) = head
            .split_once(' ')
            .and_then(|(kind, check)| Some((kind, Check::from_name(check)?)))
            .ok_or_else(|| invalid(format!("{head:?} is not `<kind> <check>`")))?;
        let pattern = lines
            .next()
            .ok_or_else(|| invalid(format!("rule {kind} has no pattern")))?;
        let pattern = pattern.replace("{sep}", SEP).replace("{value}", VALUE);
        rules.push((kind, pattern, check));
    }
    Ok(rules)
}

impl Inner {
    /// Compiles the built-in rules followed by the (already compiled) custom ones.
    fn new(custom: Vec<Regex>) -> crate::error::Result<Self> {
        let builtin_error =
            |e: regex::Error| Error::invalid("redaction.builtin", format!("does not compile: {e}"));
        let builtin = builtin_rules()?;
        let mut rules = Vec::with_capacity(builtin.len() + custom.len());
        for (kind, pattern, check) in builtin {
            rules.push(Rule {
                kind,
                regex: Regex::new(&pattern).map_err(builtin_error)?,
                check,
            });
        }
        rules.extend(custom.into_iter().map(|regex| Rule {
            kind: "custom",
            regex,
            check: Check::Always,
        }));
        let set = RegexSet::new(rules.iter().map(|r| r.regex.as_str())).map_err(|e| {
            Error::invalid(
                EXTRA_PATTERNS_FIELD,
                format!("patterns do not compile together: {e}"),
            )
        })?;
        let marker = Regex::new(r"\[REDACTED:[a-z_]+\]").map_err(builtin_error)?;
        Ok(Self { set, rules, marker })
    }

    /// Renames the keys of `map` that hold a secret (a token used as a key).
    fn redact_keys(&self, map: &mut serde_json::Map<String, serde_json::Value>) {
        let renamed: Vec<(String, String)> = map
            .keys()
            .filter_map(|k| match self.redact(k) {
                Cow::Owned(new) => Some((k.clone(), new)),
                Cow::Borrowed(_) => None,
            })
            .collect();
        for (old, new) in renamed {
            let Some(value) = map.remove(&old) else {
                continue;
            };
            let mut key = new.clone();
            let mut n = 2;
            while map.contains_key(&key) {
                key = format!("{new}#{n}");
                n += 1;
            }
            map.insert(key, value);
        }
    }

    fn redact_in_place(&self, text: &mut String) {
        let redacted = match self.redact(text) {
            Cow::Owned(s) => Some(s),
            Cow::Borrowed(_) => None,
        };
        if let Some(s) = redacted {
            *text = s;
        }
    }

    fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        /// Bound on extra passes; real text settles after one.
        const MAX_EXTRA_PASSES: usize = 8;
        let Some(mut out) = self.redact_once(text) else {
            return Cow::Borrowed(text);
        };
        // Some checks look at context (a `let` before the key, a quote after the value) that a
        // redaction can change, so repeat until nothing changes: that makes redaction
        // idempotent. Each pass only turns unredacted text into markers, so this ends.
        for _ in 0..MAX_EXTRA_PASSES {
            match self.redact_once(&out) {
                Some(next) => out = next,
                None => break,
            }
        }
        Cow::Owned(out)
    }

    /// One redaction pass; `None` when nothing was redacted.
    fn redact_once(&self, text: &str) -> Option<String> {
        // Most text holds no secret: a plain search that may stop at the first match is
        // cheaper than finding every rule that matches (no overlapping search, no set of
        // rules to allocate), so that comes first.
        if !self.set.is_match(text) {
            return None;
        }
        let matched = self.set.matches(text);
        if !matched.matched_any() {
            return None;
        }
        // (range, rule index) of every accepted match.
        let mut spans: Vec<(Range<usize>, usize)> = Vec::new();
        for index in &matched {
            let Some(rule) = self.rules.get(index) else {
                continue;
            };
            for caps in rule.regex.captures_iter(text) {
                if let Some(range) = secret_range(rule.check, text, &caps)
                    && !range.is_empty()
                {
                    spans.push((range, index));
                }
            }
        }
        // Existing markers are never redacted again: that keeps redaction idempotent even for
        // custom patterns that happen to match a marker.
        if !spans.is_empty() && text.contains(MARKER_PREFIX) {
            let markers: Vec<Range<usize>> =
                self.marker.find_iter(text).map(|m| m.range()).collect();
            spans.retain(|(range, _)| {
                let first = markers.partition_point(|m| m.end <= range.start);
                markers.get(first).is_none_or(|m| m.start >= range.end)
            });
        }
        if spans.is_empty() {
            return None;
        }
        // Overlapping matches are merged; the highest-priority rule names the kind.
        spans.sort_unstable_by_key(|(range, _)| (range.start, range.end));
        let mut merged: Vec<(Range<usize>, usize)> = Vec::with_capacity(spans.len());
        for (range, index) in spans {
            match merged.last_mut() {
                Some((last, last_index)) if range.start < last.end => {
                    last.end = last.end.max(range.end);
                    *last_index = (*last_index).min(index);
                }
                _ => merged.push((range, index)),
            }
        }
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for (range, index) in merged {
            let kind = self.rules.get(index).map_or("custom", |r| r.kind);
            out.push_str(&text[at..range.start]);
            out.push_str(MARKER_PREFIX);
            out.push_str(kind);
            out.push(']');
            at = range.end;
        }
        out.push_str(&text[at..]);
        Some(out)
    }
}

/// The byte range to replace for one match of a rule, or `None` when the match is not a secret.
fn secret_range(check: Check, text: &str, caps: &Captures<'_>) -> Option<Range<usize>> {
    let whole = caps.get(0)?;
    match check {
        Check::Always => Some(caps.name("s").unwrap_or(whole).range()),
        Check::Random => {
            // The part after the vendor prefix (`xoxb-`, `hf_`, `sk-proj-`), or all of it.
            let text = whole.as_str();
            let body = text.split_once(['-', '_', '.']).map_or(text, |(_, b)| b);
            looks_random(body).then(|| whole.range())
        }
        Check::CliPassword => {
            let password = ["s", "p", "r", "h"].iter().find_map(|g| caps.name(g))?;
            (!is_placeholder(password.as_str())).then(|| password.range())
        }
        Check::Prose => {
            if let Some(quoted) = caps.name("dq") {
                return (!is_placeholder(quoted.as_str())).then(|| quoted.range());
            }
            let word = caps.name("bare")?;
            let w = word.as_str();
            (!is_placeholder(w) && is_token_like(w) && !is_path(w)).then(|| word.range())
        }
        Check::Entropy => {
            let token = caps.name("s")?;
            is_high_entropy(token.as_str()).then(|| token.range())
        }
        Check::Bearer => {
            let token = caps.name("s")?;
            is_token_like(token.as_str()).then(|| token.range())
        }
        Check::UrlPassword => {
            let password = caps.name("s")?;
            let p = password.as_str();
            (!is_placeholder(p) && !is_port_and_path(p)).then(|| password.range())
        }
        Check::Assignment => assignment_range(text, caps),
    }
}

/// The value range of a `key = value` match, or `None` when the value is not a secret literal.
fn assignment_range(text: &str, caps: &Captures<'_>) -> Option<Range<usize>> {
    let key = caps.name("key")?.as_str();
    // No separator: a `--password value` command-line flag.
    let op = caps.name("op").map_or(" ", |m| m.as_str());
    let (value, quoted) = match (caps.name("dq"), caps.name("sq"), caps.name("bare")) {
        (Some(v), _, _) | (_, Some(v), _) => (v, true),
        (_, _, Some(v)) => (v, false),
        _ => return None,
    };
    let mut range = value.range();
    let mut v = value.as_str();
    let is_authorization = key.to_ascii_lowercase().ends_with("authorization");
    // After `Authorization: Bearer` the value is a credential, whatever it looks like.
    let mut has_scheme = caps.name("scheme").is_some();
    if is_authorization && quoted {
        // `"Authorization": "Bearer abc"`: keep the scheme.
        if let Some((scheme, rest)) = v.split_once(' ')
            && is_auth_scheme(scheme)
        {
            let rest = rest.trim_start();
            range.start = range.end - rest.len();
            v = rest;
            has_scheme = true;
        }
    }
    if !quoted {
        // `?password=x&user=y`: `&name=` (or `&amp`) starts the next parameter; `Tr0ub4dor&3`
        // keeps its `&`.
        if let Some(cut) = query_separator(v) {
            range.end -= v.len() - cut;
            v = &v[..cut];
        }
        // `(password=x)`: a closing bracket without an opening one is punctuation.
        for (open, close) in [('(', ')'), ('[', ']'), ('{', '}')] {
            while v.ends_with(close) && !v.contains(open) {
                v = &v[..v.len() - 1];
                range.end -= 1;
            }
        }
    }
    if is_placeholder(v) || (is_authorization && is_auth_scheme(v)) {
        return None;
    }
    // `DB_PASSWORD=@dm1n`, `password=!Qaz2wsx` on a command line: a value glued to `=` is a
    // literal unless it is a call.
    let glued = op == "="
        && caps
            .name("key")
            .zip(caps.name("op"))
            .is_some_and(|(k, o)| k.end() == o.start() && o.end() == value.start());
    if !quoted && !has_scheme {
        let code = if glued {
            is_call(v) || is_member_path(v) || is_indexing(v) || is_identifier_like_key(v)
        } else {
            is_code(text, caps, op, v, range.end)
        };
        if code {
            return None;
        }
    }
    if is_path(v) {
        return None;
    }
    // `"password=" + pw`, `"password=",`: the key is inside a string literal, so the quote after
    // the separator closes that literal rather than opening a value.
    if quoted && caps.name("kq").is_none() && key_follows_quote(text, caps) {
        return None;
    }
    let strength = if is_authorization {
        Strength::Strong
    } else {
        key_strength(key)?
    };
    is_secret_value(strength, v).then_some(range)
}

/// Whether an unquoted assignment value is code rather than a literal.
fn is_code(text: &str, caps: &Captures<'_>, op: &str, v: &str, end: usize) -> bool {
    let first = v.bytes().next().unwrap_or(b' ');
    // `!flag`, `@Inject`: an operator or annotation on a name; `!Qaz2wsx`, `@dm1n` are values.
    let negated_name = matches!(first, b'!' | b'@') && {
        let rest = &v[1..];
        is_identifier(rest) && !rest.bytes().any(|b| b.is_ascii_digit())
    };
    if matches!(first, b'&' | b'*' | b'=' | b'>' | b':' | b'|' | b'-')
        || negated_name
        || is_call(v)
        || v.contains("::")
        || v.contains('{')
        || v.contains('<')
        || v.contains('>')
        || is_member_path(v)
        || is_indexing(v)
    {
        return true;
    }
    // `let token = tok;`, `const secret = key` ...: a bare value after a declaration is a name.
    if let Some(start) = caps.get(0).map(|m| m.start())
        && follows_declaration(&text[..start])
    {
        return true;
    }
    // A type annotation was consumed (`password: String = ...`): code, and the value is a name.
    if caps.name("ty").is_some() {
        return true;
    }
    let after = &text[end..];
    // `f'Bearer {token}'`, `b"..."`: a string prefix, not a value.
    if v.len() <= 2 && v.bytes().all(|b| b"fbruFBRU".contains(&b)) && after.starts_with(['"', '\''])
    {
        return true;
    }
    // `password: it must be 12 characters`: prose, not a value.
    if op == ":"
        && v.bytes().all(|b| b.is_ascii_alphabetic())
        && after.starts_with(' ')
        && after
            .trim_start()
            .starts_with(|c: char| c.is_ascii_alphabetic())
    {
        return true;
    }
    if is_identifier(v) {
        // `token: Token`, `secret: bool` - a field or parameter type.
        if op == ":" && (is_known_type(v) || is_camel_type(v)) {
            return true;
        }
        // `self.password = password`, `token=my_token`: a variable named after the key.
        if key_strength(v).is_some() || contains_keyword(v) {
            return true;
        }
        // `token = tok;` - a statement.
        let spaced = caps.get(0).is_some_and(|m| m.as_str().contains(" = "));
        if spaced && after.trim_start_matches([' ', '\t']).starts_with(';') {
            return true;
        }
    }
    false
}

/// Whether the identifier holding the key (`db_password`, `--password`) starts right after a
/// quote.
fn key_follows_quote(text: &str, caps: &Captures<'_>) -> bool {
    let start = caps.get(0).map_or(0, |m| m.start());
    text[..start]
        .trim_end_matches(|c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        .ends_with(['"', '\'', '`'])
}

/// How sensitive a key is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strength {
    /// Any literal value is a secret (`password`, `secret`, `api_key`, ...).
    Strong,
    /// Only token-looking values are secrets (`token`, `access_token`, `next_token`, ...):
    /// parsers and lexers use the word for short, harmless values.
    Token,
}

/// The sensitivity of a key, matched on its lowercase letters and digits only
/// (`apiKey`, `api-key` and `API_KEY` are the same key), or `None` when it is not sensitive.
///
/// Short words count only as the key's last word: `pass`, `pwd` (`db_pass`, `dbPwd`, but not
/// `bypass` or the shell's `PWD`) and `auth` (token-like values only).
fn key_strength(key: &str) -> Option<Strength> {
    const STRONG: &[&str] = &[
        "password",
        "passwd",
        "passphrase",
        "secret",
        "apikey",
        "secretkey",
        "privatekey",
        "authorization",
        "accesskey",
        "accountkey",
        "credential",
        "credentials",
        // Rails' `SECRET_KEY_BASE`.
        "secretkeybase",
    ];
    let normalized: String = key
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if STRONG.iter().any(|s| normalized.ends_with(s)) {
        return Some(Strength::Strong);
    }
    if normalized.ends_with("token") {
        return Some(Strength::Token);
    }
    match last_word(key).as_str() {
        // `PWD` and `OLDPWD` are the shell's working directories (`MYSQL_PWD` is a password).
        "pwd" if key == "PWD" || key == "OLDPWD" => None,
        "pass" | "pwd" => Some(Strength::Strong),
        "auth" => Some(Strength::Token),
        _ => None,
    }
}

/// The last word of an identifier, lowercase: `db_pass` -> `pass`, `dbPass` -> `pass`,
/// `DB-PWD` -> `pwd`, `bypass` -> `bypass`.
fn last_word(key: &str) -> String {
    let key = key.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    let bytes = key.as_bytes();
    let mut start = 0;
    for i in 1..bytes.len() {
        let (prev, cur) = (bytes[i - 1], bytes[i]);
        if !prev.is_ascii_alphanumeric() || (prev.is_ascii_lowercase() && cur.is_ascii_uppercase())
        {
            start = i;
        }
    }
    key[start..]
        .trim_start_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_ascii_lowercase()
}

/// Where a bare value ends at a query-string separator: `&name=`, `&name` at the end (as in
/// `&amp`), or `&&`. `None` when the `&`s belong to the value.
fn query_separator(v: &str) -> Option<usize> {
    v.match_indices('&').find_map(|(i, _)| {
        let rest = &v[i + 1..];
        if i == 0 {
            return None;
        }
        if rest.starts_with('&') {
            return Some(i);
        }
        let name_len = rest
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
            .count();
        let starts_name = rest
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
        let after = &rest[name_len..];
        (starts_name && (after.is_empty() || after.starts_with('='))).then_some(i)
    })
}

/// `get_password()`, `os.getenv(`, `compute(a`: a name followed by an opening parenthesis whose
/// argument is not random-looking text (`Tr0ub(4dor` is a password).
fn is_call(v: &str) -> bool {
    let Some((head, args)) = v.split_once('(') else {
        return false;
    };
    !head.is_empty()
        && head
            .split(['.', ':'])
            .all(|p| p.is_empty() || is_identifier(p) || p.starts_with('$'))
        && (args.is_empty() || args.ends_with(')') || !args.bytes().any(|b| b.is_ascii_digit()))
}

/// A bare value glued to `=` that is a variable named after the key (`token=my_token`).
fn is_identifier_like_key(v: &str) -> bool {
    is_identifier(v) && (key_strength(v).is_some() || contains_keyword(v))
}

/// `/run/secrets/db`, `~/.aws/credentials`, `./keys/dev.pem`: a file path, not a secret.
fn is_path(v: &str) -> bool {
    (v.starts_with(['/', '~']) || v.starts_with("./") || v.starts_with("../"))
        && v.matches('/').count() >= 2
}

/// `8080/path`: what follows `host:` in a URL without credentials is a port and a path.
fn is_port_and_path(p: &str) -> bool {
    p.find(['/', '#', '?'])
        .is_some_and(|i| p[..i].bytes().all(|b| b.is_ascii_digit()))
}

/// A long random-looking token: letters and digits, at least 3.5 bits of entropy per
/// character, and not a hex digest, UUID, path or slug (`all-MiniLM-L6-v2`).
fn is_high_entropy(t: &str) -> bool {
    /// Minimum Shannon entropy, in bits per character; random base62 of length 24 has ~4.2.
    const MIN_BITS: f64 = 3.5;
    if t.len() < 24
        || !t.bytes().any(|b| b.is_ascii_digit())
        || !t.bytes().any(|b| b.is_ascii_alphabetic())
        || t.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
    {
        return false;
    }
    let parts: Vec<&str> = t
        .split(['/', '-', '_', '+'])
        .filter(|p| !p.is_empty())
        .collect();
    let words = parts
        .iter()
        .filter(|p| p.len() >= 3 && p.bytes().all(|b| b.is_ascii_alphabetic()))
        .count();
    if parts.len() >= 2 && words * 2 >= parts.len() {
        return false;
    }
    let mut counts = [0u32; 256];
    for b in t.bytes() {
        counts[usize::from(b)] += 1;
    }
    #[allow(clippy::cast_precision_loss)] // lengths are far below 2^52
    let len = t.len() as f64;
    let bits: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / len;
            -p * p.log2()
        })
        .sum();
    bits >= MIN_BITS
}

/// Whether an identifier mentions a sensitive word anywhere (`db_password_env`).
fn contains_keyword(v: &str) -> bool {
    let lower = v.to_ascii_lowercase();
    ["password", "passwd", "secret", "token", "api_key", "apikey"]
        .iter()
        .any(|k| lower.contains(k))
}

/// Whether a (non-placeholder) value under a key of this strength is a secret.
fn is_secret_value(strength: Strength, v: &str) -> bool {
    if is_placeholder(v) || is_path(v) {
        return false;
    }
    match strength {
        Strength::Strong => true,
        Strength::Token => is_token_like(v),
    }
}

/// Long enough and random enough to be a credential rather than a word.
fn is_token_like(v: &str) -> bool {
    let has_digit = v.bytes().any(|b| b.is_ascii_digit());
    let mixed_case =
        v.bytes().any(|b| b.is_ascii_uppercase()) && v.bytes().any(|b| b.is_ascii_lowercase());
    (v.len() >= 8 && has_digit) || (v.len() >= 20 && mixed_case)
}

/// Random-looking token body: a digit, or both upper and lower case (rules out kebab-case words).
fn looks_random(body: &str) -> bool {
    body.bytes().any(|b| b.is_ascii_digit())
        || (body.bytes().any(|b| b.is_ascii_uppercase())
            && body.bytes().any(|b| b.is_ascii_lowercase()))
}

/// Values that are references or stand-ins, not secrets: `$X`, `${X}`, `%X%`, `{{ x }}`,
/// `<your-token>`, `[REDACTED:..]`, `?`, `***`, `xxxx`, `your_api_key_here`, `null`, ...
fn is_placeholder(v: &str) -> bool {
    const WORDS: &[&str] = &[
        "password",
        "passwd",
        "pass",
        "secret",
        "token",
        "apikey",
        "api_key",
        "example",
        "placeholder",
        "redacted",
        "none",
        "null",
        "nil",
        "undefined",
        "true",
        "false",
        "bearer",
        "basic",
    ];
    let v = v.trim();
    let Some(first) = v.bytes().next() else {
        return true;
    };
    if matches!(first, b'$' | b'%' | b'{' | b'<' | b'[' | b'?' | b'*') {
        return true;
    }
    if v.bytes()
        .all(|b| matches!(b, b'x' | b'X' | b'.' | b'#' | b'-' | b'_'))
        || v.chars().all(|c| c == '•')
    {
        return true;
    }
    let lower = v.to_ascii_lowercase();
    WORDS.contains(&lower.as_str())
        || lower.starts_with("your_")
        || lower.starts_with("your-")
        || lower.starts_with("your ")
        || lower.ends_with("...")
        || lower.ends_with('…')
        || lower.ends_with("_here")
        || lower.ends_with("-here")
}

/// `Bearer`, `Basic`, ... (case-insensitive).
fn is_auth_scheme(v: &str) -> bool {
    ["bearer", "basic", "token", "digest", "apikey"]
        .iter()
        .any(|s| v.eq_ignore_ascii_case(s))
}

/// `[A-Za-z_][A-Za-z0-9_]*`.
fn is_identifier(v: &str) -> bool {
    let mut bytes = v.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `self.token`, `process.env.API_KEY`, `args.password`: a lowercase-first dotted path.
fn is_member_path(v: &str) -> bool {
    let mut parts = v.split('.');
    let first = parts.next().unwrap_or("");
    let mut rest = parts.peekable();
    rest.peek().is_some()
        && !first.is_empty()
        && first.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        && rest.all(is_identifier)
}

/// `os.environ[`, `ENV[`, `config[`: an identifier (path) being indexed.
fn is_indexing(v: &str) -> bool {
    v.split_once('[')
        .is_some_and(|(head, _)| !head.is_empty() && head.split('.').all(is_identifier))
}

/// Primitive and common type names that follow `name:` in code.
fn is_known_type(v: &str) -> bool {
    const TYPES: &[&str] = &[
        "str", "string", "bool", "boolean", "int", "integer", "i8", "i16", "i32", "i64", "i128",
        "isize", "u8", "u16", "u32", "u64", "u128", "usize", "f32", "f64", "float", "double",
        "char", "bytes", "number", "any", "unknown", "object", "void", "long", "byte", "impl",
        "dyn",
    ];
    TYPES.contains(&v)
}

/// `Token`, `SecretString`: an upper camel case name made of letters only.
fn is_camel_type(v: &str) -> bool {
    v.bytes().next().is_some_and(|b| b.is_ascii_uppercase())
        && v.bytes().any(|b| b.is_ascii_lowercase())
        && v.bytes().all(|b| b.is_ascii_alphabetic())
}

/// Whether the text before a key ends with a declaration keyword (`let`, `let mut`, `const`, ...)
/// followed by the key's identifier prefix.
fn follows_declaration(before: &str) -> bool {
    const KEYWORDS: &[&str] = &["let", "mut", "const", "var", "val", "static", "auto"];
    let before =
        before.trim_end_matches(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == '$');
    let trimmed = before.trim_end_matches([' ', '\t']);
    if trimmed.len() == before.len() {
        return false;
    }
    let word_start = trimmed
        .trim_end_matches(|c: char| c.is_ascii_alphanumeric() || c == '_')
        .len();
    KEYWORDS.contains(&&trimmed[word_start..])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Compiled once: building the rules in an unoptimised test build is slow.
    static DEFAULT: std::sync::LazyLock<Redactor> =
        std::sync::LazyLock::new(|| Redactor::new(&RedactionConfig::default()).unwrap());

    fn redactor() -> Redactor {
        DEFAULT.clone()
    }

    /// Deterministic pseudo-random alphanumeric text. Test secrets are assembled at run time so
    /// this file holds no string a secret scanner would flag.
    fn body(len: usize) -> String {
        const ALPHABET: &[u8] = b"aB3dE5gH7jK9mN2pQ4sT6vW8yZ0cF1";
        (0..len)
            .map(|i| char::from(ALPHABET[(i * 7 + 3) % ALPHABET.len()]))
            .collect()
    }

    fn assert_redacted(input: &str, expected: &str) {
        let r = redactor();
        assert_eq!(r.redact(input), expected, "input: {input}");
        let once = r.redact(input).into_owned();
        assert_eq!(r.redact(&once), once, "not idempotent: {input}");
    }

    fn assert_untouched(input: &str) {
        let out = redactor().redact(input);
        assert!(
            matches!(out, Cow::Borrowed(_)),
            "changed: {input:?} -> {out:?}"
        );
    }

    #[test]
    fn aws_access_key() {
        for prefix in ["AKIA", "ASIA"] {
            let key = format!("{prefix}{}", body(16).to_ascii_uppercase());
            assert_redacted(
                &format!("export AWS_ACCESS_KEY_ID={key}"),
                "export AWS_ACCESS_KEY_ID=[REDACTED:aws_access_key]",
            );
        }
    }

    #[test]
    fn aws_secret() {
        let secret = format!("{}/{}", body(20), body(19));
        assert_redacted(
            &format!("aws_secret_access_key = {secret}\nregion = eu"),
            "aws_secret_access_key = [REDACTED:aws_secret]\nregion = eu",
        );
        assert_redacted(
            &format!(r#"{{"AWS_SECRET_ACCESS_KEY": "{secret}"}}"#),
            r#"{"AWS_SECRET_ACCESS_KEY": "[REDACTED:aws_secret]"}"#,
        );
    }

    #[test]
    fn gcp_api_key() {
        let key = format!("AIza{}", body(35));
        assert_redacted(
            &format!("curl https://maps.example/api?key={key}&q=x"),
            "curl https://maps.example/api?key=[REDACTED:gcp_api_key]&q=x",
        );
    }

    #[test]
    fn github_token() {
        for prefix in ["ghp_", "gho_", "ghu_", "ghs_", "ghr_"] {
            let token = format!("{prefix}{}", body(36));
            assert_redacted(
                &format!("git clone with {token} done"),
                "git clone with [REDACTED:github_token] done",
            );
        }
        let fine = format!("github_pat_{}_{}", body(22), body(59));
        assert_redacted(&format!("GH={fine}"), "GH=[REDACTED:github_token]");
        // Inside an Authorization header the specific kind wins.
        assert_redacted(
            &format!("Authorization: token ghp_{}", body(36)),
            "Authorization: token [REDACTED:github_token]",
        );
    }

    #[test]
    fn gitlab_token() {
        let token = format!("glpat-{}", body(20));
        assert_redacted(
            &format!("PRIVATE-TOKEN: {token}"),
            "PRIVATE-TOKEN: [REDACTED:gitlab_token]",
        );
    }

    #[test]
    fn slack_token() {
        let bot = format!("xoxb-{}-{}", "1234567890", body(24));
        assert_redacted(
            &format!("slack {bot} ok"),
            "slack [REDACTED:slack_token] ok",
        );
        let app = format!("xapp-1-{}", body(30));
        assert_redacted(&app, "[REDACTED:slack_token]");
        let hook = format!(
            "https://hooks.slack.com/services/T{}/B{}/{}",
            body(8),
            body(8),
            body(24)
        );
        assert_redacted(
            &format!("post to {hook} now"),
            "post to https://hooks.slack.com/services/[REDACTED:slack_token] now",
        );
        assert_untouched("use an xoxb-your-token-here value");
    }

    #[test]
    fn openai_key() {
        let legacy = format!("sk-{}", body(48));
        assert_redacted(
            &format!("OPENAI_KEY {legacy}"),
            "OPENAI_KEY [REDACTED:openai_key]",
        );
        let project = format!("sk-proj-{}_{}", body(40), body(20));
        assert_redacted(&format!("key: '{project}'"), "key: '[REDACTED:openai_key]'");
        assert_untouched("see sk-learn-style-preprocessing-pipeline docs");
    }

    #[test]
    fn stripe_key() {
        for prefix in ["sk_live_", "rk_live_", "sk_test_"] {
            let key = format!("{prefix}{}", body(24));
            assert_redacted(
                &format!("stripe.api_key = {key}"),
                "stripe.api_key = [REDACTED:stripe_key]",
            );
        }
    }

    #[test]
    fn jwt() {
        let jwt = format!("eyJ{}.eyJ{}.{}", body(17), body(40), body(43));
        assert_redacted(
            &format!("cookie session={jwt}; path=/"),
            "cookie session=[REDACTED:jwt]; path=/",
        );
        assert_redacted(
            &format!("Authorization: Bearer {jwt}"),
            "Authorization: Bearer [REDACTED:jwt]",
        );
    }

    #[test]
    fn private_key() {
        for label in ["RSA ", "EC ", "OPENSSH ", "", "ENCRYPTED "] {
            let pem = format!(
                "-----BEGIN {label}PRIVATE KEY-----\n{}\n{}\n-----END {label}PRIVATE KEY-----",
                body(64),
                body(20)
            );
            assert_redacted(
                &format!("key:\n{pem}\nafter"),
                "key:\n[REDACTED:private_key]\nafter",
            );
        }
        // JSON-escaped and truncated.
        let escaped = format!("\"-----BEGIN PRIVATE KEY-----\\n{}\\n", body(64));
        assert_redacted(&escaped, "\"[REDACTED:private_key]");
        // A header constant in a PEM parser is not a key.
        assert_untouched(r#"if line.starts_with("-----BEGIN RSA PRIVATE KEY-----") {"#);
        assert_untouched(r#"const HEADER: &str = "-----BEGIN PRIVATE KEY-----\n";"#);
    }

    #[test]
    fn url_password_keeps_scheme_user_and_host() {
        assert_redacted(
            "postgres://admin:s3cr3t!@db:5432/app",
            "postgres://admin:[REDACTED:url_password]@db:5432/app",
        );
        assert_redacted(
            "redis://:p@ss@cache:6379",
            "redis://:[REDACTED:url_password]@cache:6379",
        );
        assert_redacted(
            "DATABASE_URL=\"mysql://root:hunter2@localhost/db\"",
            "DATABASE_URL=\"mysql://root:[REDACTED:url_password]@localhost/db\"",
        );
        assert_untouched("postgres://user:${DB_PASSWORD}@db/app");
        assert_untouched("postgres://user:password@localhost/app");
        assert_untouched("https://example.com:8443/path?q=1");
    }

    #[test]
    fn assignment_keeps_key_and_separator() {
        let cases = [
            ("password=hunter2", "password=[REDACTED:assignment]"),
            ("passwd: hunter2", "passwd: [REDACTED:assignment]"),
            (
                r#"api_key = "abc123""#,
                r#"api_key = "[REDACTED:assignment]""#,
            ),
            ("APIKEY=abcdef", "APIKEY=[REDACTED:assignment]"),
            ("secret=letmein", "secret=[REDACTED:assignment]"),
            (
                "client_secret: 'x9y8z7'",
                "client_secret: '[REDACTED:assignment]'",
            ),
            (
                "access_token=ya29a0AfH6SMC",
                "access_token=[REDACTED:assignment]",
            ),
            (
                "auth_token = tok_12345678",
                "auth_token = [REDACTED:assignment]",
            ),
            (
                "?token=abc123def456&user=bob",
                "?token=[REDACTED:assignment]&user=bob",
            ),
            (
                "DB_PASSWORD=hunter2 cargo run",
                "DB_PASSWORD=[REDACTED:assignment] cargo run",
            ),
            (
                "Server=db;User Id=sa;Password=letmein;",
                "Server=db;User Id=sa;Password=[REDACTED:assignment];",
            ),
            (
                r#"{"password": "correct horse battery"}"#,
                r#"{"password": "[REDACTED:assignment]"}"#,
            ),
            (
                r#"{\"password\":\"hunter2\"}"#,
                r#"{\"password\":\"[REDACTED:assignment]\"}"#,
            ),
            (
                r#"let password: &str = "hunter2";"#,
                r#"let password: &str = "[REDACTED:assignment]";"#,
            ),
            (
                "mysql --password=hunter2 -u root",
                "mysql --password=[REDACTED:assignment] -u root",
            ),
            ("(password=hunter2)", "(password=[REDACTED:assignment])"),
            (
                "docker login -u bob --password hunter2 registry",
                "docker login -u bob --password [REDACTED:assignment] registry",
            ),
            (
                "app --api-key 'k-123' --verbose",
                "app --api-key '[REDACTED:assignment]' --verbose",
            ),
            (
                "password: hunter2 # prod",
                "password: [REDACTED:assignment] # prod",
            ),
            (
                r#"args.push("--password=hunter2");"#,
                r#"args.push("--password=[REDACTED:assignment]");"#,
            ),
            (
                "Authorization: Bearer abc.def-ghi",
                "Authorization: Bearer [REDACTED:assignment]",
            ),
            (
                "authorization: bearer session.key",
                "authorization: bearer [REDACTED:assignment]",
            ),
            (
                "curl -H 'Authorization: Basic dXNlcjpwYXNz'",
                "curl -H 'Authorization: Basic [REDACTED:assignment]'",
            ),
            (
                r#""Authorization": "Bearer abc123""#,
                r#""Authorization": "Bearer [REDACTED:assignment]""#,
            ),
            (
                "requests.get(url, headers=h) # Bearer abcdefghij0123456789xyz",
                "requests.get(url, headers=h) # Bearer [REDACTED:assignment]",
            ),
        ];
        for (input, expected) in cases {
            assert_redacted(input, expected);
        }
    }

    #[test]
    fn values_that_once_escaped() {
        let cases = [
            ("password=!Qaz2wsx#Edc", "password=[REDACTED:assignment]"),
            (
                "DB_PASSWORD=@dm1n2024 ./run",
                "DB_PASSWORD=[REDACTED:assignment] ./run",
            ),
            ("password=Tr0ub4dor&3", "password=[REDACTED:assignment]"),
            ("password=Tr0ub(4dor", "password=[REDACTED:assignment]"),
            (
                "GET /login?user=bob&password=pa55w0rd&next=/home",
                "GET /login?user=bob&password=[REDACTED:assignment]&next=/home",
            ),
            (
                "redis://default:pa/ss#w0rd@cache:6379/0",
                "redis://default:[REDACTED:url_password]@cache:6379/0",
            ),
            (
                "curl -u admin:s3cr3tPass https://api.local",
                "curl -u admin:[REDACTED:cli_credential] https://api.local",
            ),
            (
                "mysql -u root -pHunter22 shop",
                "mysql -u root -p[REDACTED:cli_credential] shop",
            ),
            (
                "sshpass -p Hunter22 ssh deploy@db",
                "sshpass -p [REDACTED:cli_credential] ssh deploy@db",
            ),
            (
                "{\"pass\": \"letmein99\"}",
                "{\"pass\": \"[REDACTED:assignment]\"}",
            ),
            ("db_pwd=letmein99", "db_pwd=[REDACTED:assignment]"),
            (
                "SECRET_KEY_BASE=9f8e7d6c5b4a3928",
                "SECRET_KEY_BASE=[REDACTED:assignment]",
            ),
            (
                "MYSQL_PWD=my5qlR00tPw mysql -u root",
                "MYSQL_PWD=[REDACTED:assignment] mysql -u root",
            ),
            (
                "redis-cli -h cache -a R3disPassW0rd ping",
                "redis-cli -h cache -a [REDACTED:cli_credential] ping",
            ),
            (
                "openssl enc -aes-256-cbc -k Tr0ub4dor -in a",
                "openssl enc -aes-256-cbc -k [REDACTED:cli_credential] -in a",
            ),
            (
                "openssl pkcs12 -in c.p12 -passin pass:Hunter22",
                "openssl pkcs12 -in c.p12 -passin pass:[REDACTED:cli_credential]",
            ),
            (
                "az login -u ops@example.com -p Azur3Pw",
                "az login -u ops@example.com -p [REDACTED:cli_credential]",
            ),
            (
                "htpasswd -bc /etc/users admin S3cretAdm1n",
                "htpasswd -bc /etc/users admin [REDACTED:cli_credential]",
            ),
            (
                "the password is Hunter2Hunter2 for now",
                "the password is [REDACTED:assignment] for now",
            ),
            (
                "use passphrase \"correct horse battery\" to unlock",
                "use passphrase \"[REDACTED:assignment]\" to unlock",
            ),
        ];
        for (input, expected) in cases {
            assert_redacted(input, expected);
        }
        let aws = format!("{}/{}", body(20), body(19));
        assert_redacted(
            &format!(r#""SecretAccessKey": "{aws}","#),
            r#""SecretAccessKey": "[REDACTED:assignment]","#,
        );
        let azure = format!("{}{}==", body(40), body(46));
        assert_redacted(
            &format!("AccountName=store1;AccountKey={azure};EndpointSuffix=core.windows.net"),
            "AccountName=store1;AccountKey=[REDACTED:assignment];EndpointSuffix=core.windows.net",
        );
        let pem = format!(
            "-----BEGIN RSA PRIVATE KEY----- {} {} -----END RSA PRIVATE KEY-----",
            body(64),
            body(40)
        );
        assert_redacted(
            &format!("key: {pem} done"),
            "key: [REDACTED:private_key] done",
        );
        for (token, kind) in [
            (format!("SG.{}.{}", body(22), body(43)), "sendgrid_key"),
            (format!("hf_{}", body(34)), "huggingface_token"),
            (format!("npm_{}", body(36)), "npm_token"),
            (format!("dckr_pat_{}", body(27)), "docker_token"),
        ] {
            assert_redacted(
                &format!("using {token} now"),
                &format!("using [REDACTED:{kind}] now"),
            );
        }
        assert_redacted(
            &format!("the deploy key is {}", body(32)),
            "the deploy key is [REDACTED:high_entropy]",
        );
    }

    #[test]
    fn lookalikes_that_stay() {
        for line in [
            "bypass=true",
            "PWD=/home/dev/project",
            "OLDPWD=/tmp",
            "compass: north",
            "https://example.com:8443/users/@bob",
            "http://localhost:8080/#/login@home",
            "mysql -u app -p -h db shop",
            "password_hint: first pet",
            "GOOGLE_APPLICATION_CREDENTIALS=/etc/app/sa.json",
            "cache key 3f786850e387550fdab836ed7e6dc881de23001b miss",
            "token id 67e55044-10b1-426f-9247-bb680e5fe0c8 done",
            "key models/all-MiniLM-L6-v2/tokenizer.json",
            "if !password_ok { return }",
            "password = !valid",
            "the password is required",
            "Password was reset by the admin.",
            "password reset link sent",
            "the password must be 12 characters",
            "openssl x509 -in cert.pem -noout -text",
            "htpasswd -c /etc/users admin",
            "az login --use-device-code",
        ] {
            assert_untouched(line);
        }
    }

    #[test]
    fn json_numbers_short_keys_and_secret_keys() {
        let r = redactor();
        let gh = format!("ghp_{}", body(36));
        let mut value = json!({
            "password": 123_456_789,
            "pass": "letmein99",
            "pwd": "letmein99",
            "max_tokens": 4096,
            "auth": format!("{}==", body(30)),
            "bypass": "yes",
        });
        value.as_object_mut().unwrap().insert(gh.clone(), json!(1));
        r.redact_json(&mut value);
        assert_eq!(
            value,
            json!({
                "password": "[REDACTED:assignment]",
                "pass": "[REDACTED:assignment]",
                "pwd": "[REDACTED:assignment]",
                "max_tokens": 4096,
                "auth": "[REDACTED:assignment]",
                "bypass": "yes",
                "[REDACTED:github_token]": 1,
            })
        );
        let once = value.clone();
        r.redact_json(&mut value);
        assert_eq!(value, once);
        // Two secret keys that redact to the same marker both survive.
        let mut value = json!({});
        let map = value.as_object_mut().unwrap();
        map.insert(gh.clone(), json!(1));
        map.insert(format!("ghp_{}", body(40)), json!(2));
        r.redact_json(&mut value);
        let keys: Vec<&String> = value.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 2, "{value}");
        assert!(
            keys.iter()
                .all(|k| k.starts_with("[REDACTED:github_token]"))
        );
    }

    #[test]
    fn ordinary_code_is_untouched() {
        let sha = "3f786850e387550fdab836ed7e6dc881de23001b";
        let lines = [
            "let token = lexer.next_token();",
            "fn password_hash(input: &str) -> String",
            "if api_key.is_empty() { return Err(Error::invalid(\"api_key\", \"empty\")) }",
            "password: ${DB_PASSWORD}",
            "export PASSWORD=$SECRET",
            "https://docs.rs/regex/latest/regex/",
            "git@github.com:org/repo.git",
            "cargo test -- --nocapture",
            "id 67e55044-10b1-426f-9247-bb680e5fe0c8 done",
            sha,
            "checksum = \"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\"",
            "\"integrity\": \"sha512-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU9xK2bGx+zvQ==\"",
            "Send the Bearer token in the Authorization header.",
            "token: &str,",
            "let token = String::new();",
            "pub token: Token,",
            "fn login(user: &str, password: String) -> Result<Session>",
            "password: String,",
            "struct Creds { secret: Secret<String> }",
            "is_secret: bool,",
            "self.api_key = api_key",
            "password = get_password()",
            "api_key = os.environ[\"API_KEY\"]",
            "api_key = os.environ.get(\"API_KEY\")",
            "const token = process.env.API_TOKEN;",
            "let key = env::var(\"API_KEY\")?;",
            "token = tok;",
            "let mut secret = key;",
            "token: <your-token>",
            "password: \"***\"",
            "password=",
            "let url = \"password=\" + pw + \"&user=\";",
            "args.push(\"--password=\");",
            "password = \"\"",
            "api_key: ${{ secrets.API_KEY }}",
            "unexpected token: \")\"",
            "expected token: Ident",
            "max_tokens = 4096",
            "if password == stored { ok() }",
            "match token { Token::Ident(s) => s, _ => \"\" }",
            "let (token, rest) = split(input);",
            "secret: Secret::new(value),",
            "password: string | null;",
            "def connect(password: str = None):",
            "Forgot your password? Reset it here.",
            "Authorization: Bearer $TOKEN",
            "tokens: Vec<Token>,",
            "pub fn new(api_key: impl Into<String>) -> Self",
            "export OPENAI_API_KEY=sk-...",
            "headers = {'Authorization': f'Bearer {token}'}",
            "{\"Authorization\": \"Bearer \" + token}",
            "headers[\"Authorization\"] = \"Bearer \" + token",
            "Authorization: Bearer {token}",
            "The user enters a password: it must be 12 characters.",
            "psql --no-password -h db",
            "gh auth login --with-token < token.txt",
            "docker login --password-stdin",
        ];
        for line in lines {
            assert_untouched(line);
        }
    }

    #[test]
    fn json_values_are_redacted_keys_kept() {
        let r = redactor();
        let gh = format!("ghp_{}", body(36));
        let mut value = json!({
            "password": "hunter2",
            "db": { "api-key": "k3y", "url": "postgres://u:pw123@db/x", "port": 5432 },
            "steps": [
                { "command": format!("git push https://{gh}@github.com/o/r") },
                { "headers": { "Authorization": "Bearer abcdef" } },
                "plain text",
                42,
                null
            ],
            "session_token": "short",
            "next_token": format!("{}9", body(30)),
            "password_hint": "first pet",
            "placeholder": { "password": "${DB_PASSWORD}" },
            "secret": true,
            "count": 3
        });
        r.redact_json(&mut value);
        assert_eq!(
            value,
            json!({
                "password": "[REDACTED:assignment]",
                "db": { "api-key": "[REDACTED:assignment]", "url": "postgres://u:[REDACTED:url_password]@db/x", "port": 5432 },
                "steps": [
                    { "command": "git push https://[REDACTED:github_token]@github.com/o/r" },
                    { "headers": { "Authorization": "[REDACTED:assignment]" } },
                    "plain text",
                    42,
                    null
                ],
                "session_token": "short",
                "next_token": "[REDACTED:assignment]",
                "password_hint": "first pet",
                "placeholder": { "password": "${DB_PASSWORD}" },
                "secret": true,
                "count": 3
            })
        );
        let once = value.clone();
        r.redact_json(&mut value);
        assert_eq!(value, once);
    }

    #[test]
    fn json_deep_nesting_does_not_overflow() {
        let mut value = json!("password=hunter2");
        for _ in 0..100_000 {
            value = serde_json::Value::Array(vec![value]);
        }
        redactor().redact_json(&mut value);
        let mut inner = &value;
        while let serde_json::Value::Array(items) = inner {
            inner = &items[0];
        }
        assert_eq!(inner, &json!("password=[REDACTED:assignment]"));
        // Drop iteratively as well; serde_json's recursive drop would overflow the test stack.
        let mut stack = vec![value];
        while let Some(v) = stack.pop() {
            if let serde_json::Value::Array(items) = v {
                stack.extend(items);
            }
        }
    }

    #[test]
    fn disabled_changes_nothing() {
        let secret_text = format!("password=hunter2 ghp_{}", body(36));
        for r in [
            Redactor::disabled(),
            Redactor::new(&RedactionConfig::disabled()).unwrap(),
        ] {
            assert!(!r.is_enabled());
            assert!(matches!(r.redact(&secret_text), Cow::Borrowed(_)));
            let mut value = json!({ "password": "hunter2" });
            r.redact_json(&mut value);
            assert_eq!(value, json!({ "password": "hunter2" }));
        }
        assert!(redactor().is_enabled());
    }

    #[test]
    fn custom_pattern() {
        let config = RedactionConfig::default().with_extra_pattern(r"ACME-\d{6}");
        let r = Redactor::new(&config).unwrap();
        assert_eq!(
            r.redact("ticket ACME-123456 and password=hunter2"),
            "ticket [REDACTED:custom] and password=[REDACTED:assignment]"
        );
        // A custom pattern matching the marker itself keeps redaction idempotent.
        let r =
            Redactor::new(&RedactionConfig::default().with_extra_pattern("REDACTED|x*")).unwrap();
        let once = r.redact("REDACTED password=hunter2").into_owned();
        assert_eq!(once, "[REDACTED:custom] password=[REDACTED:assignment]");
        assert_eq!(r.redact(&once), once);
    }

    #[test]
    fn invalid_custom_pattern_is_invalid_input() {
        let config = RedactionConfig::default().with_extra_pattern("(unclosed");
        let err = Redactor::new(&config).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidInput { field, .. } if field == "redaction.extra_patterns"),
            "{err}"
        );
        // Also when disabled: bad configuration is reported early.
        let config = RedactionConfig::disabled().with_extra_pattern("[z-a]");
        assert!(matches!(
            Redactor::new(&config),
            Err(Error::InvalidInput { .. })
        ));
    }

    #[test]
    fn redaction_is_idempotent() {
        let r = redactor();
        let text = format!(
            "password=hunter2 token={t} url=postgres://a:b1@h/d key=AIza{g}\n\
             -----BEGIN PRIVATE KEY-----\n{k}\n-----END PRIVATE KEY-----\n\
             Authorization: Bearer eyJ{j}.eyJ{j}.{j} secret: \"x y\" {{\"api_key\": \"z\"}}",
            t = body(30),
            g = body(35),
            k = body(64),
            j = body(12)
        );
        let once = r.redact(&text).into_owned();
        assert_ne!(once, text);
        assert!(!once.contains("hunter2"));
        let twice = r.redact(&once);
        assert!(matches!(twice, Cow::Borrowed(_)), "{once}\n{twice}");
    }

    #[test]
    fn redact_in_place_does_not_reallocate_when_clean() {
        let r = redactor();
        let mut clean = String::from("let token = lexer.next_token();");
        let ptr = clean.as_ptr();
        r.redact_in_place(&mut clean);
        assert_eq!(clean.as_ptr(), ptr);
        let mut dirty = String::from("password=hunter2");
        r.redact_in_place(&mut dirty);
        assert_eq!(dirty, "password=[REDACTED:assignment]");
    }

    #[test]
    fn non_ascii_text_is_handled() {
        assert_redacted(
            "Passwort für die DB: password=hünter2 ✓",
            "Passwort für die DB: password=[REDACTED:assignment] ✓",
        );
        assert_untouched("日本語のテキスト token の説明");
        assert_redacted("ü token=abc123456", "ü token=[REDACTED:assignment]");
        assert_redacted("é\tpassword: hunter2", "é\tpassword: [REDACTED:assignment]");
    }

    #[test]
    fn config_defaults_and_serde() {
        let config: RedactionConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(config, RedactionConfig::default());
        assert!(config.enabled);
        assert!(config.extra_patterns.is_empty());
        let config: RedactionConfig = serde_json::from_str(r#"{"enabled": false}"#).unwrap();
        assert_eq!(config, RedactionConfig::disabled());
        let config = RedactionConfig::disabled()
            .with_extra_pattern("a")
            .with_extra_pattern("b");
        assert_eq!(config.extra_patterns, ["a", "b"]);
    }

    #[test]
    fn redactor_is_send_sync_and_cheap_to_clone() {
        fn assert_send_sync<T: Send + Sync + Clone>() {}
        assert_send_sync::<Redactor>();
        let r = redactor();
        let clone = r.clone();
        assert!(Arc::ptr_eq(
            r.inner.as_ref().unwrap(),
            clone.inner.as_ref().unwrap()
        ));
    }
}

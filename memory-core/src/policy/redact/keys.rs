//! How sensitive a key is (`password`, `api_key`, `next_token`, ...) and whether a value under
//! it is a secret.

use super::entropy::is_token_like;
use super::values::{is_identifier, is_path, is_placeholder};

/// How sensitive a key is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Strength {
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
pub(super) fn key_strength(key: &str) -> Option<Strength> {
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

/// A bare value glued to `=` that is a variable named after the key (`token=my_token`).
pub(super) fn is_identifier_like_key(v: &str) -> bool {
    is_identifier(v) && (key_strength(v).is_some() || contains_keyword(v))
}

/// Whether an identifier mentions a sensitive word anywhere (`db_password_env`).
pub(super) fn contains_keyword(v: &str) -> bool {
    let lower = v.to_ascii_lowercase();
    ["password", "passwd", "secret", "token", "api_key", "apikey"]
        .iter()
        .any(|k| lower.contains(k))
}

/// Whether a (non-placeholder) value under a key of this strength is a secret.
pub(super) fn is_secret_value(strength: Strength, v: &str) -> bool {
    if is_placeholder(v) || is_path(v) {
        return false;
    }
    match strength {
        Strength::Strong => true,
        Strength::Token => is_token_like(v),
    }
}

//! Validation of one rule match: which byte range (if any) is a secret, and the code-versus-
//! literal heuristics for `key = value` assignments.

use std::ops::Range;

use regex::Captures;

use super::entropy::{is_high_entropy, is_token_like, looks_random};
use super::keys::{
    Strength, contains_keyword, is_identifier_like_key, is_secret_value, key_strength,
};
use super::values::{
    follows_declaration, is_auth_scheme, is_call, is_camel_type, is_identifier, is_indexing,
    is_known_type, is_member_path, is_path, is_placeholder, is_port_and_path, query_separator,
};

/// How a rule validates a match and which part of it is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Check {
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

impl Check {
    /// The check a rule names in `redaction_rules.txt`.
    pub(super) fn from_name(name: &str) -> Option<Self> {
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

/// The byte range to replace for one match of a rule, or `None` when the match is not a secret.
pub(super) fn secret_range(check: Check, text: &str, caps: &Captures<'_>) -> Option<Range<usize>> {
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

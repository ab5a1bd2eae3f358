//! Shapes of values and their surroundings: placeholders, paths, identifiers, calls, types and
//! query strings, which tell code and stand-ins from secret literals.

/// Where a bare value ends at a query-string separator: `&name=`, `&name` at the end (as in
/// `&amp`), or `&&`. `None` when the `&`s belong to the value.
pub(super) fn query_separator(v: &str) -> Option<usize> {
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
pub(super) fn is_call(v: &str) -> bool {
    let Some((head, args)) = v.split_once('(') else {
        return false;
    };
    !head.is_empty()
        && head
            .split(['.', ':'])
            .all(|p| p.is_empty() || is_identifier(p) || p.starts_with('$'))
        && (args.is_empty() || args.ends_with(')') || !args.bytes().any(|b| b.is_ascii_digit()))
}

/// `/run/secrets/db`, `~/.aws/credentials`, `./keys/dev.pem`: a file path, not a secret.
pub(super) fn is_path(v: &str) -> bool {
    (v.starts_with(['/', '~']) || v.starts_with("./") || v.starts_with("../"))
        && v.matches('/').count() >= 2
}

/// `8080/path`: what follows `host:` in a URL without credentials is a port and a path.
pub(super) fn is_port_and_path(p: &str) -> bool {
    p.find(['/', '#', '?'])
        .is_some_and(|i| p[..i].bytes().all(|b| b.is_ascii_digit()))
}

/// Values that are references or stand-ins, not secrets: `$X`, `${X}`, `%X%`, `{{ x }}`,
/// `<your-token>`, `[REDACTED:..]`, `?`, `***`, `xxxx`, `your_api_key_here`, `null`, ...
pub(super) fn is_placeholder(v: &str) -> bool {
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
pub(super) fn is_auth_scheme(v: &str) -> bool {
    ["bearer", "basic", "token", "digest", "apikey"]
        .iter()
        .any(|s| v.eq_ignore_ascii_case(s))
}

/// `[A-Za-z_][A-Za-z0-9_]*`.
pub(super) fn is_identifier(v: &str) -> bool {
    let mut bytes = v.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `self.token`, `process.env.API_KEY`, `args.password`: a lowercase-first dotted path.
pub(super) fn is_member_path(v: &str) -> bool {
    let mut parts = v.split('.');
    let first = parts.next().unwrap_or("");
    let mut rest = parts.peekable();
    rest.peek().is_some()
        && !first.is_empty()
        && first.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        && rest.all(is_identifier)
}

/// `os.environ[`, `ENV[`, `config[`: an identifier (path) being indexed.
pub(super) fn is_indexing(v: &str) -> bool {
    v.split_once('[')
        .is_some_and(|(head, _)| !head.is_empty() && head.split('.').all(is_identifier))
}

/// Primitive and common type names that follow `name:` in code.
pub(super) fn is_known_type(v: &str) -> bool {
    const TYPES: &[&str] = &[
        "str", "string", "bool", "boolean", "int", "integer", "i8", "i16", "i32", "i64", "i128",
        "isize", "u8", "u16", "u32", "u64", "u128", "usize", "f32", "f64", "float", "double",
        "char", "bytes", "number", "any", "unknown", "object", "void", "long", "byte", "impl",
        "dyn",
    ];
    TYPES.contains(&v)
}

/// `Token`, `SecretString`: an upper camel case name made of letters only.
pub(super) fn is_camel_type(v: &str) -> bool {
    v.bytes().next().is_some_and(|b| b.is_ascii_uppercase())
        && v.bytes().any(|b| b.is_ascii_lowercase())
        && v.bytes().all(|b| b.is_ascii_alphabetic())
}

/// Whether the text before a key ends with a declaration keyword (`let`, `let mut`, `const`, ...)
/// followed by the key's identifier prefix.
pub(super) fn follows_declaration(before: &str) -> bool {
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

//! Whether a token looks random: Shannon entropy, digits and mixed case.

/// A long random-looking token: letters and digits, at least 3.5 bits of entropy per
/// character, and not a hex digest, UUID, path or slug (`all-MiniLM-L6-v2`).
pub(super) fn is_high_entropy(t: &str) -> bool {
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

/// Long enough and random enough to be a credential rather than a word.
pub(super) fn is_token_like(v: &str) -> bool {
    let has_digit = v.bytes().any(|b| b.is_ascii_digit());
    let mixed_case =
        v.bytes().any(|b| b.is_ascii_uppercase()) && v.bytes().any(|b| b.is_ascii_lowercase());
    (v.len() >= 8 && has_digit) || (v.len() >= 20 && mixed_case)
}

/// Random-looking token body: a digit, or both upper and lower case (rules out kebab-case words).
pub(super) fn looks_random(body: &str) -> bool {
    body.bytes().any(|b| b.is_ascii_digit())
        || (body.bytes().any(|b| b.is_ascii_uppercase())
            && body.bytes().any(|b| b.is_ascii_lowercase()))
}

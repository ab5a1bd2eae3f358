//! Lowercase hexadecimal, for sealed bytes kept in text (JSON fields, lines of a notes file)
//! and for keys. Own code: two small total functions, where a crate would be one more
//! dependency of every storage crate.

/// `bytes` as lowercase hexadecimal digits.
///
/// ```
/// assert_eq!(memory_seal::hex::encode(&[0, 0xab, 0xff]), "00abff");
/// ```
pub fn encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// The bytes `text` spells in hexadecimal digits (either case); `None` unless it is a
/// non-empty, even number of them.
///
/// ```
/// assert_eq!(memory_seal::hex::decode(b"00ABff"), Some(vec![0, 0xab, 0xff]));
/// assert_eq!(memory_seal::hex::decode(b"abc"), None);
/// assert_eq!(memory_seal::hex::decode(b""), None);
/// ```
pub fn decode(text: &[u8]) -> Option<Vec<u8>> {
    if text.is_empty() || !text.len().is_multiple_of(2) {
        return None;
    }
    text.chunks_exact(2)
        .map(|pair| Some((digit(pair[0])? << 4) | digit(pair[1])?))
        .collect()
}

fn digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

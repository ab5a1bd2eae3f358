//! Sealed records: XChaCha20-Poly1305 with a random nonce per record, and keyed names.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::key::{KEY_LEN, getrandom_fill};
use crate::{MasterKey, SealError};

/// The first byte of every sealed record (format version 1).
pub const RECORD_VERSION: u8 = 0xE1;
/// Nonce length of XChaCha20-Poly1305.
pub(crate) const NONCE_LEN: usize = 24;
/// Authentication tag length.
pub(crate) const TAG_LEN: usize = 16;
/// What sealing adds to a record: version byte, nonce and tag.
const OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;
/// The plaintext of a key check.
const CHECK_TEXT: &[u8] = b"memory-seal key check v1";

/// Seals and opens records under keys derived from one [`MasterKey`]: a record is
/// `0xE1 ++ nonce (24 bytes) ++ ciphertext ++ tag (16 bytes)`, and the associated data
/// (where the record belongs: its table and key) must match to open it, so a record moved to
/// another place does not open there.
///
/// ```
/// # use memory_seal::{MasterKey, Sealer};
/// let sealer = Sealer::new(&MasterKey::generate()?);
/// let a = sealer.seal(b"same", b"")?;
/// let b = sealer.seal(b"same", b"")?;
/// assert_ne!(a, b); // a fresh nonce each time
/// let other = Sealer::new(&MasterKey::generate()?);
/// assert!(other.open(&a, b"").is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Sealer {
    aead: XChaCha20Poly1305,
    names: Zeroizing<[u8; KEY_LEN]>,
    fingerprint: String,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealer({})", self.fingerprint)
    }
}

impl Sealer {
    /// The sealer of `key`.
    pub fn new(key: &MasterKey) -> Self {
        let record_key = key.derive("records");
        Sealer {
            aead: XChaCha20Poly1305::new(record_key.as_ref().into()),
            names: key.derive("names"),
            fingerprint: key.fingerprint(),
        }
    }

    /// The fingerprint of the key (safe to show).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// `plain` sealed, bound to `aad`.
    pub fn seal(&self, plain: &[u8], aad: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom_fill(&mut nonce).map_err(SealError::Random)?;
        let sealed = self
            .aead
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: plain, aad })
            .map_err(|_| SealError::Malformed("the record is too long to seal".into()))?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        out.push(RECORD_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// The plaintext of a record sealed with [`Sealer::seal`] under the same key and `aad`.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, SealError> {
        if sealed.len() < OVERHEAD {
            return Err(SealError::Malformed(format!(
                "{} bytes is shorter than a sealed record",
                sealed.len()
            )));
        }
        if sealed[0] != RECORD_VERSION {
            return Err(SealError::Malformed(format!(
                "version byte {:#04x}, expected {RECORD_VERSION:#04x}",
                sealed[0]
            )));
        }
        let (nonce, body) = sealed[1..].split_at(NONCE_LEN);
        self.aead
            .decrypt(XNonce::from_slice(nonce), Payload { msg: body, aad })
            .map_err(|_| SealError::WrongKeyOrDamaged)
    }

    /// Whether `bytes` start like a sealed record (the version byte and the minimum length).
    pub fn looks_sealed(bytes: &[u8]) -> bool {
        bytes.len() >= OVERHEAD && bytes[0] == RECORD_VERSION
    }

    /// A keyed name for `name` in `domain` (HMAC-SHA256 under a key derived for names): the
    /// same input gives the same 32 bytes under one key, and nothing about the input can be
    /// read from them without the key. For keys that must be looked up (a cache entry's
    /// namespace and id).
    pub fn hide(&self, domain: &[u8], name: &[u8]) -> [u8; 32] {
        // HMAC takes keys of any length, so this cannot fail; a fixed fallback keeps the
        // function total without a panic path.
        let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(self.names.as_ref()) else {
            return [0u8; 32];
        };
        mac.update(&(domain.len() as u64).to_le_bytes());
        mac.update(domain);
        mac.update(name);
        mac.finalize().into_bytes().into()
    }

    /// A sealed token that [`Sealer::verify_check`] accepts under this key only: kept beside
    /// encrypted data so that a wrong key is told apart from damage before anything is read.
    pub fn key_check(&self) -> Result<Vec<u8>, SealError> {
        self.seal(CHECK_TEXT, b"key check")
    }

    /// Whether `token` is a [`Sealer::key_check`] of this key.
    pub fn verify_check(&self, token: &[u8]) -> bool {
        self.open(token, b"key check")
            .is_ok_and(|plain| plain == CHECK_TEXT)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn records_open_only_with_their_key_place_and_bytes() {
        let s = Sealer::new(&MasterKey::generate().unwrap());
        let sealed = s.seal(b"MARKER text", b"place").unwrap();
        assert_eq!(sealed.len(), b"MARKER text".len() + OVERHEAD);
        assert!(Sealer::looks_sealed(&sealed));
        assert!(!sealed.windows(6).any(|w| w == b"MARKER"));
        assert_eq!(s.open(&sealed, b"place").unwrap(), b"MARKER text");
        assert!(matches!(
            s.open(&sealed, b"other"),
            Err(SealError::WrongKeyOrDamaged)
        ));
        for i in 1..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert!(s.open(&bad, b"place").is_err(), "flipped byte {i}");
        }
        assert!(matches!(
            s.open(&sealed[..10], b"place"),
            Err(SealError::Malformed(_))
        ));
        let mut v = sealed.clone();
        v[0] = 1;
        assert!(matches!(s.open(&v, b"place"), Err(SealError::Malformed(_))));
        assert!(s.open(b"", b"").is_err());
        let t = Sealer::new(&MasterKey::generate().unwrap());
        assert!(matches!(
            t.open(&sealed, b"place"),
            Err(SealError::WrongKeyOrDamaged)
        ));
    }

    #[test]
    fn names_are_stable_per_key_and_domain() {
        let key = MasterKey::generate().unwrap();
        let s = Sealer::new(&key);
        assert_eq!(s.hide(b"ns", b"a"), Sealer::new(&key).hide(b"ns", b"a"));
        assert_ne!(s.hide(b"ns", b"a"), s.hide(b"ns", b"b"));
        assert_ne!(s.hide(b"ns", b"a"), s.hide(b"id", b"a"));
        assert_ne!(s.hide(b"n", b"sa"), s.hide(b"ns", b"a"));
        let other = Sealer::new(&MasterKey::generate().unwrap());
        assert_ne!(s.hide(b"ns", b"a"), other.hide(b"ns", b"a"));
    }

    #[test]
    fn a_key_check_tells_keys_apart() {
        let s = Sealer::new(&MasterKey::generate().unwrap());
        let token = s.key_check().unwrap();
        assert!(s.verify_check(&token));
        assert!(!Sealer::new(&MasterKey::generate().unwrap()).verify_check(&token));
        assert!(!s.verify_check(b"garbage"));
    }
}

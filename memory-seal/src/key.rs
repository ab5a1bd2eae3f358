//! The master key and the keys derived from it.

use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use crate::KeyError;

/// Length of a master key in bytes.
pub(crate) const KEY_LEN: usize = 32;

/// The secret every encryption key of a memory is derived from: 32 bytes, written as 64
/// hexadecimal digits. Zeroed when dropped; `Debug` and [`MasterKey::fingerprint`] show a
/// short one-way fingerprint, never the key.
///
/// ```
/// let key = memory_seal::MasterKey::generate()?;
/// let again = memory_seal::MasterKey::from_hex(&key.to_hex())?;
/// assert_eq!(key.fingerprint(), again.fingerprint());
/// assert!(!format!("{key:?}").contains(key.to_hex().as_str()));
/// # Ok::<(), memory_seal::KeyError>(())
/// ```
#[derive(Clone)]
pub struct MasterKey {
    bytes: Zeroizing<[u8; KEY_LEN]>,
}

impl MasterKey {
    /// A new random key from the operating system's source.
    pub fn generate() -> Result<Self, KeyError> {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        getrandom_fill(bytes.as_mut()).map_err(KeyError::Random)?;
        Ok(MasterKey { bytes })
    }

    /// The key written as 64 hexadecimal digits (surrounding whitespace is ignored).
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        Self::parse(text).ok_or_else(|| KeyError::Malformed {
            source_name: "the given text".into(),
        })
    }

    /// The key from `text`, or `None` if it is not 64 hexadecimal digits.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        if text.len() != 2 * KEY_LEN {
            return None;
        }
        let decoded = Zeroizing::new(crate::hex::decode(text.as_bytes())?);
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        bytes.copy_from_slice(&decoded);
        Some(MasterKey { bytes })
    }

    /// The key as 64 lowercase hexadecimal digits (for `memory key generate`; handle with care).
    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(crate::hex::encode(self.bytes.as_ref()))
    }

    /// A short one-way fingerprint (16 hexadecimal digits) that tells keys apart without
    /// revealing them: safe to print and log.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::new()
            .chain_update(b"memory-seal fingerprint v1")
            .chain_update(self.bytes.as_ref())
            .finalize();
        crate::hex::encode(&digest[..8])
    }

    /// 32 bytes derived from the key for `purpose` (HKDF-SHA256); different purposes give
    /// unrelated keys.
    pub(crate) fn derive(&self, purpose: &str) -> Zeroizing<[u8; KEY_LEN]> {
        let hk = Hkdf::<Sha256>::new(Some(b"memory-seal v1"), self.bytes.as_ref());
        let mut out = Zeroizing::new([0u8; KEY_LEN]);
        // 32 bytes is far below HKDF-SHA256's limit of 255 * 32, so expand cannot fail.
        if hk.expand(purpose.as_bytes(), out.as_mut()).is_err() {
            out.zeroize();
        }
        out
    }

    /// The passphrase given to `SQLite3` Multiple Ciphers for the database file: 64
    /// hexadecimal digits derived from the key (text, so it can also be bound in SQL).
    pub fn database_passphrase(&self) -> Zeroizing<String> {
        Zeroizing::new(crate::hex::encode(self.derive("database").as_ref()))
    }
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({})", self.fingerprint())
    }
}

impl PartialEq for MasterKey {
    fn eq(&self, other: &Self) -> bool {
        // Constant time is not needed to compare two keys the process already holds, but
        // nothing is lost by it.
        self.bytes
            .iter()
            .zip(other.bytes.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl Eq for MasterKey {}

/// Fills `buf` from the operating system's random source.
pub(crate) fn getrandom_fill(buf: &mut [u8]) -> Result<(), String> {
    use chacha20poly1305::aead::OsRng;
    use chacha20poly1305::aead::rand_core::RngCore;
    OsRng.try_fill_bytes(buf).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn hex_round_trips_and_rejects_everything_else() {
        let key = MasterKey::generate().unwrap();
        assert_eq!(MasterKey::from_hex(&key.to_hex()).unwrap(), key);
        assert_eq!(
            MasterKey::from_hex(&format!("  {}\n", key.to_hex().to_uppercase())).unwrap(),
            key
        );
        for bad in ["", "00", &"0".repeat(63), &"0".repeat(65), &"g".repeat(64)] {
            assert!(MasterKey::from_hex(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn purposes_give_unrelated_keys() {
        let key = MasterKey::generate().unwrap();
        assert_ne!(*key.derive("a"), *key.derive("b"));
        assert_eq!(*key.derive("a"), *key.derive("a"));
        assert_ne!(
            key.database_passphrase(),
            MasterKey::generate().unwrap().database_passphrase()
        );
    }

    #[test]
    fn debug_shows_the_fingerprint_only() {
        let key = MasterKey::from_hex(&"ab".repeat(32)).unwrap();
        let shown = format!("{key:?}");
        assert!(!shown.contains("abab"), "{shown}");
        assert!(shown.contains(&key.fingerprint()));
    }
}

//! The errors of sealing and of finding the key.

use std::path::PathBuf;

/// A record or file that could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The bytes are not sealed by this format (too short, or an unknown version byte).
    #[error("not a sealed record: {0}")]
    Malformed(String),
    /// Authentication failed: another key, another place, or damaged bytes.
    #[error("the record does not open with this key (another key, or damaged)")]
    WrongKeyOrDamaged,
    /// The system's random source failed (no nonce, no key).
    #[error("the system's random source failed: {0}")]
    Random(String),
}

/// The encryption key could not be read.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// No source names a key.
    #[error(
        "no encryption key: set MEMORY_ENCRYPTION_KEY, MEMORY_ENCRYPTION_KEY_FILE or MEMORY_ENCRYPTION_KEY_COMMAND"
    )]
    Missing,
    /// The text is not a key (64 hexadecimal digits).
    #[error(
        "the encryption key from {source_name} is not 64 hexadecimal digits (32 bytes); `memory key generate` prints one"
    )]
    Malformed {
        /// Where it came from (never the key itself).
        source_name: String,
    },
    /// The key file is readable by others, a link, or not a regular file.
    #[error("refusing the key file {path}: {reason}")]
    UnsafeFile {
        /// The key file.
        path: PathBuf,
        /// Why it is refused.
        reason: String,
    },
    /// The key file could not be read.
    #[error("cannot read the key file {path}: {source}")]
    Read {
        /// The key file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The key command failed to run or exited unsuccessfully.
    #[error("the key command failed: {0}")]
    Command(String),
    /// The system's random source failed.
    #[error("the system's random source failed: {0}")]
    Random(String),
}

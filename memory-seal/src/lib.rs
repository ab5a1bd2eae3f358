//! Encryption at rest for the self-learning episodic memory.
//!
//! - [`MasterKey`]: the 32 secret bytes everything else is derived from (HKDF-SHA256), read
//!   from a [`KeySource`]: an environment variable, a key file only its owner can read, or a
//!   command that prints the key. Never from the configuration file, never logged: its
//!   `Debug` shows a fingerprint only.
//! - [`Sealer`]: sealed records (XChaCha20-Poly1305, a random 24-byte nonce per record, the
//!   record's place as associated data) for the redb cache and the journals, and keyed names
//!   ([`Sealer::hide`], HMAC-SHA256) for the keys under which they are stored.
//! - [`SealedWriter`] / [`SealedReader`]: sealed files (exports, backups) in 64 KiB chunks,
//!   each authenticated with its index and whether it is the last, so a file cut short or
//!   reordered fails to open instead of reading as a shorter file.
//!
//! Own code over the `RustCrypto` primitives: the formats (what is bound to what) are the
//! project's, the primitives are not.
//!
//! ```
//! use memory_seal::{MasterKey, Sealer};
//! let key = MasterKey::generate()?;
//! let sealer = Sealer::new(&key);
//! let sealed = sealer.seal(b"episode 42", b"journal entry 7")?;
//! assert_eq!(sealer.open(&sealed, b"journal entry 7")?, b"episode 42");
//! assert!(sealer.open(&sealed, b"journal entry 8").is_err()); // bound to its place
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod error;
mod file;
pub mod hex;
mod key;
mod record;
mod source;

pub use error::{KeyError, SealError};
pub use file::{SEALED_FILE_MAGIC, SealedReader, SealedWriter, is_sealed_file};
pub use key::MasterKey;
pub use record::{RECORD_VERSION, Sealer};
pub use source::{KEY_COMMAND_ENV, KEY_ENV, KEY_FILE_ENV, KeySource};

//! Where the key comes from: an environment variable, a key file, or a command.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use zeroize::Zeroizing;

use crate::{KeyError, MasterKey};

/// The environment variable holding the key itself (64 hexadecimal digits).
pub const KEY_ENV: &str = "MEMORY_ENCRYPTION_KEY";
/// The environment variable naming a key file (refused unless only its owner can read it).
pub const KEY_FILE_ENV: &str = "MEMORY_ENCRYPTION_KEY_FILE";
/// The environment variable holding a command (run with `sh -c`) that prints the key.
pub const KEY_COMMAND_ENV: &str = "MEMORY_ENCRYPTION_KEY_COMMAND";

/// The most a key file or a key command's output may hold: a key with some whitespace.
const MAX_KEY_TEXT: u64 = 4096;

/// Where a key comes from. None of them is the configuration file: a configuration may name
/// a key file or a key command, never hold the key.
///
/// ```
/// use memory_seal::{KeySource, MasterKey};
/// let key = MasterKey::generate()?;
/// let source = KeySource::Value(key.to_hex());
/// assert_eq!(source.load()?, key);
/// assert_eq!(source.describe(), "the given key");
/// # Ok::<(), memory_seal::KeyError>(())
/// ```
#[derive(Clone)]
pub enum KeySource {
    /// The key itself (from an environment variable or a prompt).
    Value(Zeroizing<String>),
    /// A file holding the key; refused if it is a symbolic link, not a regular file, or
    /// readable or writable by anyone but its owner (Unix modes `0600` or `0400`).
    File(PathBuf),
    /// A shell command (`sh -c`) whose standard output is the key, such as a secret
    /// manager's client.
    Command(String),
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl KeySource {
    /// The source the environment names, first of `MEMORY_ENCRYPTION_KEY`,
    /// `MEMORY_ENCRYPTION_KEY_FILE` and `MEMORY_ENCRYPTION_KEY_COMMAND` that is set and not
    /// empty; `None` when none is.
    pub fn from_env() -> Option<KeySource> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        if let Some(value) = var(KEY_ENV) {
            return Some(KeySource::Value(Zeroizing::new(value)));
        }
        if let Some(path) = var(KEY_FILE_ENV) {
            return Some(KeySource::File(PathBuf::from(path)));
        }
        var(KEY_COMMAND_ENV).map(KeySource::Command)
    }

    /// What the source is, for messages: never the key.
    pub fn describe(&self) -> String {
        match self {
            KeySource::Value(_) => "the given key".into(),
            KeySource::File(path) => format!("the key file {}", path.display()),
            KeySource::Command(_) => "the key command".into(),
        }
    }

    /// Reads the key.
    pub fn load(&self) -> Result<MasterKey, KeyError> {
        let text = match self {
            KeySource::Value(text) => text.clone(),
            KeySource::File(path) => read_key_file(path)?,
            KeySource::Command(command) => run_key_command(command)?,
        };
        MasterKey::parse(&text).ok_or_else(|| KeyError::Malformed {
            source_name: self.describe(),
        })
    }
}

/// The text of a key file that only its owner can read.
fn read_key_file(path: &Path) -> Result<Zeroizing<String>, KeyError> {
    let unsafe_file = |reason: String| KeyError::UnsafeFile {
        path: path.to_path_buf(),
        reason,
    };
    let read_error = |source| KeyError::Read {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::symlink_metadata(path).map_err(read_error)?;
    if meta.file_type().is_symlink() {
        return Err(unsafe_file(
            "it is a symbolic link; name the file itself".into(),
        ));
    }
    if !meta.file_type().is_file() {
        return Err(unsafe_file("it is not a regular file".into()));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(unsafe_file(format!(
                "its mode is {mode:04o}; only its owner may read it (chmod 600)"
            )));
        }
    }
    if meta.len() > MAX_KEY_TEXT {
        return Err(unsafe_file(format!(
            "it holds {} bytes; a key file holds one key (64 hexadecimal digits)",
            meta.len()
        )));
    }
    let file = std::fs::File::open(path).map_err(read_error)?;
    // The file opened is the one checked, not a link put in its place since.
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        let opened = file.metadata().map_err(read_error)?;
        if (opened.dev(), opened.ino()) != (meta.dev(), meta.ino()) {
            return Err(unsafe_file("it was replaced while being read".into()));
        }
    }
    let mut text = Zeroizing::new(String::new());
    file.take(MAX_KEY_TEXT)
        .read_to_string(&mut text)
        .map_err(read_error)?;
    Ok(text)
}

/// The standard output of `sh -c command`; its standard error goes to ours (a secret manager's
/// prompt or message), never into an error value.
fn run_key_command(command: &str) -> Result<Zeroizing<String>, KeyError> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| KeyError::Command(format!("cannot start `sh`: {e}")))?;
    let mut text = Zeroizing::new(String::new());
    if let Some(out) = child.stdout.take() {
        // One byte more than the limit tells an output at the limit from a longer one.
        let read = out
            .take(MAX_KEY_TEXT + 1)
            .read_to_string(&mut text)
            .map_err(|e| KeyError::Command(format!("cannot read its output: {e}")));
        if read.is_err() || text.len() as u64 > MAX_KEY_TEXT {
            let _ = child.kill();
            let _ = child.wait();
            read?;
            return Err(KeyError::Command(format!(
                "it printed more than {MAX_KEY_TEXT} bytes; a key command prints one key"
            )));
        }
    }
    let status = child
        .wait()
        .map_err(|e| KeyError::Command(format!("cannot wait for it: {e}")))?;
    if !status.success() {
        return Err(KeyError::Command(format!("it exited with {status}")));
    }
    Ok(text)
}

#[cfg(all(test, unix))]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn key_file(dir: &Path, mode: u32, text: &str) -> PathBuf {
        let path = dir.join(format!("key-{mode:o}"));
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn a_key_file_is_read_only_when_only_its_owner_can_read_it() {
        let dir = tempfile::tempdir().unwrap();
        let key = MasterKey::generate().unwrap();
        let text = format!("{}\n", key.to_hex().as_str());
        for mode in [0o600, 0o400] {
            let path = key_file(dir.path(), mode, &text);
            assert_eq!(KeySource::File(path).load().unwrap(), key);
        }
        for mode in [0o640, 0o604, 0o644, 0o660] {
            let path = key_file(dir.path(), mode, &text);
            let err = KeySource::File(path).load().unwrap_err();
            assert!(
                matches!(err, KeyError::UnsafeFile { .. }),
                "{mode:o}: {err}"
            );
            assert!(err.to_string().contains("chmod 600"), "{err}");
        }
        let target = key_file(dir.path(), 0o600, &text);
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(matches!(
            KeySource::File(link).load().unwrap_err(),
            KeyError::UnsafeFile { .. }
        ));
        // At the limit (the key and whitespace): read; one byte over: refused unread.
        let at_limit = format!(
            "{}{}",
            key.to_hex().as_str(),
            " ".repeat(MAX_KEY_TEXT as usize - 64)
        );
        let path = dir.path().join("at-limit");
        std::fs::write(&path, &at_limit).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(KeySource::File(path.clone()).load().unwrap(), key);
        std::fs::write(&path, format!("{at_limit} ")).unwrap();
        let err = KeySource::File(path).load().unwrap_err();
        assert!(matches!(err, KeyError::UnsafeFile { .. }), "{err}");
        let bad = dir.path().join("bad");
        std::fs::write(&bad, "not a key").unwrap();
        std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).unwrap();
        let err = KeySource::File(bad).load().unwrap_err();
        assert!(matches!(err, KeyError::Malformed { .. }));
        assert!(
            !err.to_string().contains("not a key"),
            "the text is never shown: {err}"
        );
    }

    #[test]
    fn a_key_command_prints_the_key_and_a_failing_one_is_an_error() {
        let key = MasterKey::generate().unwrap();
        let source = KeySource::Command(format!("echo {}", key.to_hex().as_str()));
        assert_eq!(source.load().unwrap(), key);
        assert!(!format!("{source:?}").contains(key.to_hex().as_str()));
        // A command printing more than a key file may hold is refused, not cut.
        let long = KeySource::Command(format!(
            "printf '%s%{}s' {} ''",
            MAX_KEY_TEXT as usize - 64 + 1,
            key.to_hex().as_str()
        ));
        assert!(matches!(long.load().unwrap_err(), KeyError::Command(_)));
        let at_limit = KeySource::Command(format!(
            "printf '%s%{}s' {} ''",
            MAX_KEY_TEXT as usize - 64,
            key.to_hex().as_str()
        ));
        assert_eq!(at_limit.load().unwrap(), key);
        let err = KeySource::Command("exit 3".into()).load().unwrap_err();
        assert!(matches!(err, KeyError::Command(_)), "{err}");
        assert!(matches!(
            KeySource::Command("echo short".into()).load().unwrap_err(),
            KeyError::Malformed { .. }
        ));
    }
}

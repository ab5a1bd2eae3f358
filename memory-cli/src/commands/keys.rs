//! `memory key generate|status`, `memory encrypt` and `memory rekey`: encryption at rest.
//!
//! The key never appears in an argument or in `memory.toml`: the current key comes from
//! `MEMORY_ENCRYPTION_KEY`, `MEMORY_ENCRYPTION_KEY_FILE`, `MEMORY_ENCRYPTION_KEY_COMMAND` or
//! `[encryption]`'s `key_file` / `key_command`; the new key of a rekey from
//! `MEMORY_NEW_ENCRYPTION_KEY`, `--new-key-file` or `--new-key-command`. Only fingerprints are
//! printed (`memory key generate` prints the one new key it makes).

use anyhow::{Context, Result, bail};
use serde_json::json;

use memory_stack::{DataDir, KeySource, MasterKey, Reencrypted};
use zeroize::Zeroizing;

use crate::backend::{stack_error, storage_mode};
use crate::cli::{KeyCmd, RekeyArgs};
use crate::display_safe;
use crate::output;
use crate::settings::Settings;

/// The environment variable holding the new key of `memory rekey`.
pub const NEW_KEY_ENV: &str = "MEMORY_NEW_ENCRYPTION_KEY";

pub fn key(cmd: &KeyCmd, s: &Settings) -> Result<()> {
    match cmd {
        KeyCmd::Generate => {
            let key = MasterKey::generate()?;
            if s.json {
                return output::json(&json!({
                    "key": key.to_hex().as_str(),
                    "fingerprint": key.fingerprint(),
                }));
            }
            outln!("{}", key.to_hex().as_str());
            if !s.quiet {
                errln!(
                    "note: key {} printed above; keep it in a secret manager or a 0600 key file (MEMORY_ENCRYPTION_KEY_FILE), never in memory.toml. Without it the memory cannot be read.",
                    key.fingerprint()
                );
            }
            Ok(())
        }
        KeyCmd::Status => status(s),
    }
}

fn status(s: &Settings) -> Result<()> {
    let dir = DataDir::new(&s.data_dir);
    let marker = memory_stack::read_marker(&dir).map_err(stack_error)?;
    let configured = s.load_key()?;
    let opens = match (&marker, &configured) {
        (Some(m), Some(k)) => Some(m.opens_with(k)),
        _ => None,
    };
    if s.json {
        return output::json(&json!({
            "data_dir": s.data_dir,
            "encrypted": marker.is_some(),
            "marker": marker,
            "configured_key": configured.as_ref().map(MasterKey::fingerprint),
            "configured_key_opens": opens,
            "feature": cfg!(feature = "encryption"),
        }));
    }
    match &marker {
        Some(m) => {
            outln!(
                "encrypted   yes, since {} (key {})",
                m.created_at.to_rfc3339(),
                m.fingerprint
            );
            outln!("database    {}", m.database);
            outln!("records     {} (cache, journals, journal notes)", m.records);
        }
        None => outln!("encrypted   no"),
    }
    match (&configured, opens) {
        (Some(k), Some(true)) => outln!("key         {} (opens this memory)", k.fingerprint()),
        (Some(k), Some(false)) => outln!(
            "key         {} (does NOT open this memory)",
            k.fingerprint()
        ),
        (Some(k), None) => outln!(
            "key         {} (the memory is not encrypted: `memory encrypt` encrypts it under this key)",
            k.fingerprint()
        ),
        (None, _) => outln!("key         none configured"),
    }
    Ok(())
}

pub async fn encrypt(s: &Settings) -> Result<()> {
    let Some(key) = s.load_key()? else {
        bail!(
            "no key: set MEMORY_ENCRYPTION_KEY, MEMORY_ENCRYPTION_KEY_FILE or MEMORY_ENCRYPTION_KEY_COMMAND (`memory key generate` makes one)"
        );
    };
    let dir = DataDir::new(&s.data_dir);
    if let Some(marker) = memory_stack::read_marker(&dir).map_err(stack_error)? {
        bail!(
            "{} is already encrypted (key {}); `memory rekey` changes its key",
            s.data_dir.display(),
            marker.fingerprint
        );
    }
    let done = memory_stack::reencrypt(&dir, &storage_mode(s)?, None, &key)
        .await
        .map_err(stack_error)?;
    report("encrypted", "they are not encrypted", &done, s)
}

pub async fn rekey(a: &RekeyArgs, s: &Settings) -> Result<()> {
    let Some(current) = s.load_key()? else {
        bail!(
            "no current key: set MEMORY_ENCRYPTION_KEY, MEMORY_ENCRYPTION_KEY_FILE or MEMORY_ENCRYPTION_KEY_COMMAND to the key the memory is encrypted under"
        );
    };
    let source = match (&a.new_key_file, &a.new_key_command) {
        (Some(path), _) => KeySource::File(path.clone()),
        (None, Some(command)) => KeySource::Command(command.clone()),
        (None, None) => match std::env::var(NEW_KEY_ENV) {
            Ok(v) if !v.trim().is_empty() => KeySource::Value(Zeroizing::new(v)),
            _ => bail!(
                "no new key: set {NEW_KEY_ENV}, or pass --new-key-file or --new-key-command (`memory key generate` makes one)"
            ),
        },
    };
    let new = source
        .load()
        .with_context(|| format!("reading the new key from {}", source.describe()))?;
    let dir = DataDir::new(&s.data_dir);
    if memory_stack::read_marker(&dir)
        .map_err(stack_error)?
        .is_none()
    {
        bail!(
            "{} is not encrypted; `memory encrypt` encrypts it",
            s.data_dir.display()
        );
    }
    let done = memory_stack::reencrypt(&dir, &storage_mode(s)?, Some(&current), &new)
        .await
        .map_err(stack_error)?;
    report(
        "re-encrypted",
        "they are readable with the old key",
        &done,
        s,
    )
}

fn report(what: &str, old_files: &str, done: &Reencrypted, s: &Settings) -> Result<()> {
    if s.json {
        return output::json(&json!({ "done": what, "result": done }));
    }
    outln!(
        "{what} {} under key {}{}",
        display_safe::path(&s.data_dir),
        done.fingerprint,
        if done.database {
            format!(
                " ({} checked in the new database)",
                if done.episodes == 1 {
                    "1 episode".to_owned()
                } else {
                    format!("{} episodes", done.episodes)
                }
            )
        } else {
            String::new()
        }
    );
    if !done.moved.is_empty() {
        outln!(
            "the files it replaced ({}) are in {}: {old_files}; delete that folder once the new key is known to work",
            done.moved.len(),
            display_safe::path(&done.moved_to)
        );
    }
    Ok(())
}

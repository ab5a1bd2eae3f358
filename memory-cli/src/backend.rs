//! Opening the storage stack the settings ask for (assembled by `memory-stack`, as every other
//! program of the workspace opens it).

use anyhow::{Result, bail};
use memory_stack::{Stack, StackBuilder, StackError, StorageMode};

use crate::cli::Mode;
use crate::settings::Settings;

pub use memory_stack::load_embedder;

fn server_url(s: &Settings) -> Result<String> {
    match &s.database_url {
        Some(u) => Ok(u.clone()),
        None => bail!(
            "storage mode {:?} needs a server: set TURSO_DATABASE_URL (or database_url in {}/memory.toml)",
            s.mode,
            s.data_dir.display()
        ),
    }
}

/// The storage mode the settings name.
pub fn storage_mode(s: &Settings) -> Result<StorageMode> {
    Ok(match s.mode {
        Mode::Local => StorageMode::Local,
        Mode::Remote => StorageMode::Remote {
            url: server_url(s)?,
            auth_token: s.auth_token.clone(),
        },
        Mode::Replica => StorageMode::Replica {
            url: server_url(s)?,
            auth_token: s.auth_token.clone(),
        },
    })
}

/// A stack error as the CLI reports it: the library's own errors stay typed (exit codes and
/// `--json` kinds depend on them).
pub fn stack_error(e: StackError) -> anyhow::Error {
    match e {
        StackError::Memory(m) => m.into(),
        other => anyhow::Error::new(other),
    }
}

/// Opens the memory over the configured storage; loads the embedding model when `semantic`
/// (commands that retrieve), since loading it costs a few hundred milliseconds.
pub async fn open(s: &Settings, semantic: bool) -> Result<Stack> {
    open_with(s, semantic, false).await
}

/// As [`open`]; with `key_for_files`, a key configured for a memory that is not encrypted
/// opens it anyway, the key serving only the files the command writes or reads (`export
/// --encrypt`, `backup --encrypt`, importing a sealed export). Elsewhere such a key is refused
/// (`memory encrypt` converts the memory); a new directory is always created encrypted.
pub async fn open_with(s: &Settings, semantic: bool, key_for_files: bool) -> Result<Stack> {
    let pin = s.schema_version;
    let mut key = s.load_key()?;
    if key.is_some() && key_for_files {
        let dir = memory_stack::DataDir::new(&s.data_dir);
        if memory_stack::holds_a_memory(&dir)
            && memory_stack::read_marker(&dir)
                .map_err(stack_error)?
                .is_none()
        {
            key = None;
        }
    }
    StackBuilder::new(&s.data_dir)
        .encryption_key(key)
        .mode(storage_mode(s)?)
        .configure_turso(move |b| match pin {
            Some(v) => b.schema_version(v),
            None => b,
        })
        .memory_config(s.memory.clone())
        .semantic(semantic)
        .open()
        .await
        .map_err(stack_error)
}

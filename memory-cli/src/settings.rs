//! Settings resolution: flags > environment > `memory.toml` in the data directory > defaults.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use memory_core::{MemoryConfig, Namespace};
use serde::Deserialize;

use crate::cli::{Cli, Mode};

/// The config file's name inside the data directory.
pub const CONFIG_FILE: &str = "memory.toml";

/// What `memory.toml` may hold. Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    /// Default namespace.
    pub namespace: Option<String>,
    /// Storage mode.
    pub mode: Option<Mode>,
    /// Server URL for remote and replica modes.
    pub database_url: Option<String>,
    /// Library tuning: limits, quotas, rate limit, redaction, step batching, learning.
    pub memory: Option<MemoryConfig>,
    /// Migrate the database no further than this schema version: processes of a new release
    /// run on the old schema until the whole fleet runs it (DEPLOYMENT.md, "Upgrading a
    /// fleet").
    pub schema_version: Option<u32>,
    /// Where the spans go (`[telemetry]`).
    pub telemetry: Option<TelemetryConfig>,
    /// Where the encryption key comes from (`[encryption]`); never the key itself.
    pub encryption: Option<EncryptionFileConfig>,
}

/// The `[encryption]` section of `memory.toml`: where the key is, never the key.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EncryptionFileConfig {
    /// A key file only its owner can read (mode 0600 or 0400).
    pub key_file: Option<PathBuf>,
    /// A command (run with `sh -c`) that prints the key, such as a secret manager's client.
    pub key_command: Option<String>,
    /// Refused with a message: the key never goes into the configuration file.
    key: Option<toml::Value>,
}

/// The key source the environment, else `[encryption]` of the file, names.
fn key_source(file: Option<EncryptionFileConfig>) -> Result<Option<memory_stack::KeySource>> {
    if let Some(source) = memory_stack::KeySource::from_env() {
        return Ok(Some(source));
    }
    let Some(section) = file else {
        return Ok(None);
    };
    if section.key.is_some() {
        anyhow::bail!(
            "`encryption.key` in {CONFIG_FILE}: the key never goes into the configuration file \
             (it would sit in plain text beside the data it protects); use MEMORY_ENCRYPTION_KEY, \
             `key_file` (a file only you can read) or `key_command` (a command that prints it)"
        );
    }
    match (section.key_file, section.key_command) {
        (Some(_), Some(_)) => anyhow::bail!(
            "`encryption` in {CONFIG_FILE} names both `key_file` and `key_command`; keep one"
        ),
        (Some(path), None) => Ok(Some(memory_stack::KeySource::File(path))),
        (None, Some(command)) => Ok(Some(memory_stack::KeySource::Command(command))),
        (None, None) => Ok(None),
    }
}

/// The `[telemetry]` section of `memory.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Base URL of an OpenTelemetry collector's OTLP/HTTP receiver, e.g.
    /// `http://127.0.0.1:4318`: the spans are posted to `<url>/v1/traces`. Unset: no export.
    pub otlp_endpoint: Option<String>,
}

impl Settings {
    /// The encryption key, read from its source once per process (a key command runs at the
    /// first call); `None` without one.
    pub fn load_key(&self) -> Result<Option<memory_stack::MasterKey>> {
        if let Some(key) = self.key.get() {
            return Ok(key.clone());
        }
        let key = self
            .encryption_key
            .as_ref()
            .map(memory_stack::KeySource::load)
            .transpose()?;
        Ok(self.key.get_or_init(|| key).clone())
    }
}

/// Resolved settings.
#[derive(Debug)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub namespace: Namespace,
    /// True when the namespace came from a flag, the environment or the file.
    pub namespace_explicit: bool,
    pub mode: Mode,
    pub database_url: Option<String>,
    pub auth_token: Option<String>,
    pub memory: MemoryConfig,
    /// The schema version to migrate no further than (`MEMORY_SCHEMA_VERSION`, else
    /// `schema_version`); `None`: this build's latest.
    pub schema_version: Option<u32>,
    pub json: bool,
    /// No progress bars or notes on stderr.
    pub quiet: bool,
    /// Where the spans are exported over OTLP/HTTP (`MEMORY_OTLP_ENDPOINT`, else
    /// `telemetry.otlp_endpoint`); `None`: nowhere.
    pub otlp_endpoint: Option<String>,
    /// Where the encryption key comes from (`MEMORY_ENCRYPTION_KEY*`, else `[encryption]`);
    /// `None`: the memory is not encrypted.
    pub encryption_key: Option<memory_stack::KeySource>,
    /// The key once read ([`Settings::load_key`]).
    pub key: std::sync::OnceLock<Option<memory_stack::MasterKey>>,
}

/// The checked OTLP endpoint: `http://` only (no TLS is built in; a collector on the same
/// host or network forwards elsewhere), and only in a build with the `otlp` feature.
fn otlp_endpoint(given: Option<String>) -> Result<Option<String>> {
    let Some(url) = given else {
        return Ok(None);
    };
    if !cfg!(feature = "otlp") {
        anyhow::bail!(
            "an OTLP endpoint is configured (MEMORY_OTLP_ENDPOINT or `telemetry.otlp_endpoint` \
             in {CONFIG_FILE}), but this `memory` was built without OTLP export: rebuild it \
             with `cargo build --release -p memory-cli --features otlp`, or unset the endpoint"
        );
    }
    let url = url.trim().trim_end_matches('/');
    let host = url
        .strip_prefix("http://")
        .map(|rest| rest.split('/').next().unwrap_or_default());
    match host {
        Some(host) if !host.is_empty() && !url.contains(char::is_whitespace) => {
            Ok(Some(url.to_owned()))
        }
        _ => anyhow::bail!(
            "invalid OTLP endpoint {}: expected http://HOST:PORT, the base URL of the \
             collector's OTLP/HTTP receiver (https is not supported)",
            memory_core::quote_value(url)
        ),
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn read_file_config(dir: &Path) -> Result<FileConfig> {
    let path = dir.join(CONFIG_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => parse_file_config(&text)
            .with_context(|| format!("invalid config file {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FileConfig::default()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Parses `memory.toml`; an unknown or misspelled key in any section is an error naming its
/// full path (`memory.quotas: unknown field ...`), never silently ignored.
fn parse_file_config(text: &str) -> Result<FileConfig> {
    let de = toml::Deserializer::parse(text).map_err(|e| anyhow::anyhow!("{e}"))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path.is_empty() || path == "." {
            anyhow::anyhow!("{inner}")
        } else {
            anyhow::anyhow!("at `{path}`: {inner}")
        }
    })
}

impl Settings {
    /// Resolves settings from the command line, the environment and the config file.
    pub fn resolve(cli: &Cli) -> Result<Self> {
        let data_dir = cli
            .data_dir
            .clone()
            .or_else(|| env("MEMORY_DATA_DIR").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("./.memory"));
        let file = read_file_config(&data_dir)?;
        let ns_given = cli
            .namespace
            .clone()
            .or_else(|| env("MEMORY_NAMESPACE"))
            .or(file.namespace);
        let namespace_explicit = ns_given.is_some();
        let ns_name = ns_given.unwrap_or_else(|| "default".to_owned());
        let namespace = Namespace::new(ns_name)?;
        let mode = match cli.mode {
            Some(m) => m,
            None => match env("MEMORY_MODE") {
                Some(m) => <Mode as clap::ValueEnum>::from_str(&m, true).map_err(|_| {
                    anyhow::anyhow!(
                        "invalid MEMORY_MODE {} (expected local, remote or replica)",
                        memory_core::quote_value(&m)
                    )
                })?,
                None => file.mode.unwrap_or(Mode::Local),
            },
        };
        Ok(Settings {
            data_dir,
            namespace,
            namespace_explicit,
            mode,
            database_url: env("TURSO_DATABASE_URL").or(file.database_url),
            auth_token: env("TURSO_AUTH_TOKEN"),
            memory: file.memory.unwrap_or_default(),
            schema_version: match env("MEMORY_SCHEMA_VERSION") {
                Some(v) => Some(v.trim().parse().map_err(|_| {
                    anyhow::anyhow!(
                        "invalid MEMORY_SCHEMA_VERSION {} (expected a schema version number)",
                        memory_core::quote_value(&v)
                    )
                })?),
                None => file.schema_version,
            },
            json: cli.json,
            quiet: cli.quiet,
            otlp_endpoint: otlp_endpoint(
                env("MEMORY_OTLP_ENDPOINT").or(file.telemetry.and_then(|t| t.otlp_endpoint)),
            )?,
            encryption_key: key_source(file.encryption)?,
            key: std::sync::OnceLock::new(),
        })
    }
}

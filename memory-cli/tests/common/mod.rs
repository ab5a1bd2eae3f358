//! What the binary tests of this crate share: the `memory` binary on a data directory, with
//! the environment that would change its behaviour cleared, and its `--json` answer.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::Path;

use assert_cmd::Command;
use serde_json::Value;

/// `memory --data-dir <dir>`, without the namespace, mode, line-limit, OTLP and model settings a
/// developer's environment may hold (no model: nothing here needs one, and loading it is slow
/// in a debug build).
pub fn memory(dir: &Path) -> Command {
    let mut c = Command::cargo_bin("memory").unwrap();
    c.arg("--data-dir")
        .arg(dir)
        .env_remove("MEMORY_NAMESPACE")
        .env_remove("MEMORY_MODE")
        .env_remove("MEMORY_IMPORT_MAX_LINE_BYTES")
        .env_remove("MEMORY_OTLP_ENDPOINT")
        .env_remove("MEMORY_ENCRYPTION_KEY")
        .env_remove("MEMORY_ENCRYPTION_KEY_FILE")
        .env_remove("MEMORY_ENCRYPTION_KEY_COMMAND")
        .env_remove("MEMORY_NEW_ENCRYPTION_KEY")
        .env("MEMORY_MODEL_DIR", "/nonexistent-model-dir");
    c
}

/// The `--json` answer of a command that must succeed.
pub fn json(dir: &Path, args: &[&str]) -> Value {
    let out = memory(dir).arg("--json").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

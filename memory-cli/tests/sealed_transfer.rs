//! Encryption of what leaves the data directory, on the real binary: `memory export --encrypt`
//! writes a sealed file that holds no plaintext and imports back only with its key (a wrong
//! key, a file cut short or no key at all imports nothing and says why); `memory backup` of an
//! encrypted memory is encrypted under its key, keeps namespace names out of its manifest, and
//! restores only with that key into an encrypted memory; a sealed backup restores with its key.
//!
//! Tests that run an encrypted memory need the `encryption` feature (it encrypts the database
//! file): `cargo test -p memory-cli --features encryption`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use assert_cmd::Command;
use memory_seal::{MasterKey, SealedWriter, Sealer};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

mod common;

/// A string that is in the episodes and must never be found in a sealed file.
const MARKER: &str = "MARKER-7f3a91c2-secret-task";

/// `memory --data-dir dir` with no key configured (whatever the developer's environment holds).
fn plain(dir: &Path) -> Command {
    let mut c = common::memory(dir);
    c.env_remove("MEMORY_ENCRYPTION_KEY")
        .env_remove("MEMORY_ENCRYPTION_KEY_FILE")
        .env_remove("MEMORY_ENCRYPTION_KEY_COMMAND");
    c
}

/// `memory --data-dir dir` with `key` configured.
fn keyed(dir: &Path, key: &MasterKey) -> Command {
    let mut c = plain(dir);
    c.env("MEMORY_ENCRYPTION_KEY", key.to_hex().as_str());
    c
}

/// The `--json` answer of a command that must succeed.
fn ok(mut c: Command, args: &[&str]) -> Value {
    let out = c.arg("--json").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The `--json` error of a command that must fail: (exit code, message).
fn fails(mut c: Command, args: &[&str]) -> (Option<i32>, String) {
    let out = c.arg("--json").args(args).output().unwrap();
    assert!(!out.status.success(), "{args:?} succeeded");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "not JSON: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (
        out.status.code(),
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

/// Records `n` completed episodes whose task holds [`MARKER`], with `key` when given.
fn record(dir: &Path, key: Option<&MasterKey>, n: usize) {
    let cmd = || key.map_or_else(|| plain(dir), |k| keyed(dir, k));
    for i in 0..n {
        let task = format!("{MARKER} {i}");
        let id = ok(
            cmd(),
            &["episode", "start", "--task", &task, "--domain", "d"],
        )["episode_id"]
            .as_str()
            .unwrap()
            .to_owned();
        ok(
            cmd(),
            &[
                "episode", "step", &id, "--tool", "t", "--action", MARKER, "--ok", "fine",
            ],
        );
        ok(cmd(), &["episode", "complete", &id, "--success", MARKER]);
    }
}

fn episodes(c: Command) -> u64 {
    ok(c, &["stats"])["counts"]["episodes"].as_u64().unwrap()
}

#[test]
fn export_and_backup_encrypt_without_a_key_fail_clearly_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    record(&data, None, 1);
    let file = tmp.path().join("out.jsonl");
    let (_, message) = fails(
        plain(&data),
        &["export", file.to_str().unwrap(), "--encrypt"],
    );
    assert!(message.contains("MEMORY_ENCRYPTION_KEY"), "{message}");
    assert!(!file.exists(), "a refused export left a file");
    let backup = tmp.path().join("backup");
    let (_, message) = fails(
        plain(&data),
        &["backup", backup.to_str().unwrap(), "--encrypt"],
    );
    assert!(message.contains("MEMORY_ENCRYPTION_KEY"), "{message}");
    assert!(!backup.join("memory.db").exists() && !backup.join("manifest.json").exists());
}

#[test]
fn a_sealed_file_without_a_key_imports_nothing_and_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    let source = tmp.path().join("source");
    record(&source, None, 2);
    let file = tmp.path().join("plain.jsonl");
    ok(plain(&source), &["export", file.to_str().unwrap()]);
    // Sealed by hand: the memory is not encrypted, so no key may be configured for it.
    let sealed = tmp.path().join("sealed.jsonl");
    let key = MasterKey::generate().unwrap();
    let mut w = SealedWriter::new(Vec::new(), Sealer::new(&key)).unwrap();
    std::io::Write::write_all(&mut w, &std::fs::read(&file).unwrap()).unwrap();
    std::fs::write(&sealed, w.finish().unwrap()).unwrap();

    let target = tmp.path().join("target");
    let (code, message) = fails(plain(&target), &["import", sealed.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{message}");
    assert!(message.contains("sealed export"), "{message}");
    assert!(message.contains("MEMORY_ENCRYPTION_KEY"), "{message}");
    assert_eq!(episodes(plain(&target)), 0);
}

/// Seals the plain backup in `backup` under `key` by hand, as `memory backup --encrypt` of a
/// memory that is not encrypted writes it: `memory.db.sealed` listed in the manifest, no
/// plaintext `memory.db`, no namespace names.
fn seal_backup(backup: &Path, key: &MasterKey) {
    let plain = std::fs::read(backup.join("memory.db")).unwrap();
    let mut w = SealedWriter::new(Vec::new(), Sealer::new(key)).unwrap();
    std::io::Write::write_all(&mut w, &plain).unwrap();
    let sealed = w.finish().unwrap();
    std::fs::write(backup.join("memory.db.sealed"), &sealed).unwrap();
    std::fs::remove_file(backup.join("memory.db")).unwrap();
    let path = backup.join("manifest.json");
    let mut m: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let obj = m.as_object_mut().unwrap();
    obj.remove("namespaces");
    obj.insert("encryption".into(), "sealed".into());
    obj.insert("key_fingerprint".into(), key.fingerprint().into());
    obj.insert(
        "files".into(),
        serde_json::json!([{
            "path": "memory.db.sealed",
            "bytes": sealed.len(),
            "sha256": format!("{:x}", Sha256::digest(&sealed)),
        }]),
    );
    std::fs::write(&path, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
}

#[test]
fn a_sealed_backup_restores_only_with_its_key_into_a_plain_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let source = tmp.path().join("source");
    record(&source, None, 2);
    let backup = tmp.path().join("backup");
    ok(plain(&source), &["backup", backup.to_str().unwrap()]);
    let key = MasterKey::generate().unwrap();
    seal_backup(&backup, &key);
    let b = backup.to_str().unwrap();

    let data = tmp.path().join("data");
    let (code, message) = fails(plain(&data), &["restore", b]);
    assert_eq!(code, Some(2), "{message}");
    assert!(message.contains("MEMORY_ENCRYPTION_KEY"), "{message}");
    let other = MasterKey::generate().unwrap();
    let (code, message) = fails(keyed(&data, &other), &["restore", b]);
    assert_eq!(code, Some(2), "{message}");
    assert!(message.contains(&key.fingerprint()), "{message}");
    assert!(!data.join("memory.db").exists());

    let restored = ok(keyed(&data, &key), &["restore", b]);
    assert_eq!(restored["encrypted"], false, "{restored}");
    assert!(
        restored["note"]
            .as_str()
            .unwrap()
            .contains("memory encrypt"),
        "{restored}"
    );
    assert!(!data.join("encryption.json").exists());
    assert_eq!(episodes(plain(&data)), 2);
    // Only the restored database, the lock: no scratch or incoming file left over.
    let mut names: Vec<String> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("memory.db-"))
        .collect();
    names.sort();
    assert!(!names.iter().any(|n| n.starts_with('.')), "{names:?}");
}

#[cfg(feature = "encryption")]
mod encrypted {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use super::*;

    fn contains(haystack: &[u8], needle: &str) -> bool {
        haystack
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
    }

    /// Every file under `dir` and its bytes.
    fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
        let mut out = BTreeMap::new();
        let mut todo = vec![dir.to_path_buf()];
        while let Some(d) = todo.pop() {
            for entry in std::fs::read_dir(&d).unwrap() {
                let p = entry.unwrap().path();
                if p.is_dir() {
                    todo.push(p);
                } else {
                    out.insert(p.clone(), std::fs::read(&p).unwrap());
                }
            }
        }
        out
    }

    #[test]
    fn a_sealed_export_round_trips_and_holds_no_plaintext() {
        let tmp = tempfile::tempdir().unwrap();
        let key = MasterKey::generate().unwrap();
        let source = tmp.path().join("source");
        record(&source, Some(&key), 3);
        let file = tmp.path().join("sealed.jsonl");
        let out = ok(
            keyed(&source, &key),
            &["export", file.to_str().unwrap(), "--encrypt"],
        );
        assert_eq!(out["episodes"], 3, "{out}");
        assert_eq!(out["encrypted"], true, "{out}");
        assert_eq!(out["key_fingerprint"], key.fingerprint().as_str());
        let bytes = std::fs::read(&file).unwrap();
        assert!(memory_seal::is_sealed_file(&bytes));
        assert!(
            !contains(&bytes, MARKER),
            "the sealed export holds plaintext"
        );
        assert!(!contains(&bytes, "task_description"));

        let target = tmp.path().join("target");
        let imported = ok(keyed(&target, &key), &["import", file.to_str().unwrap()]);
        assert_eq!(imported["imported"], 3, "{imported}");
        assert_eq!(imported["encrypted"], true, "{imported}");
        assert_eq!(episodes(keyed(&target, &key)), 3);
        let list = ok(keyed(&target, &key), &["episode", "list"]);
        assert!(list.to_string().contains(MARKER), "{list}");
        // Again: every episode is already present.
        let again = ok(keyed(&target, &key), &["import", file.to_str().unwrap()]);
        assert_eq!(again["already_present"], 3, "{again}");
    }

    #[test]
    fn a_sealed_export_with_the_wrong_key_or_cut_short_imports_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let key = MasterKey::generate().unwrap();
        let source = tmp.path().join("source");
        record(&source, Some(&key), 3);
        let file = tmp.path().join("sealed.jsonl");
        ok(
            keyed(&source, &key),
            &["export", file.to_str().unwrap(), "--encrypt"],
        );

        let other = MasterKey::generate().unwrap();
        let target = tmp.path().join("other-key");
        let (code, message) = fails(keyed(&target, &other), &["import", file.to_str().unwrap()]);
        assert_eq!(code, Some(2), "{message}");
        assert!(
            message.contains("does not open with the configured key"),
            "{message}"
        );
        assert!(message.contains("nothing was imported"), "{message}");
        assert_eq!(episodes(keyed(&target, &other)), 0);

        let bytes = std::fs::read(&file).unwrap();
        let cut = tmp.path().join("cut.jsonl");
        std::fs::write(&cut, &bytes[..bytes.len() - 5]).unwrap();
        let target = tmp.path().join("cut-target");
        let (code, message) = fails(keyed(&target, &key), &["import", cut.to_str().unwrap()]);
        assert_eq!(code, Some(2), "{message}");
        assert!(message.contains("nothing was imported"), "{message}");
        assert_eq!(episodes(keyed(&target, &key)), 0);
    }

    #[test]
    fn a_plain_export_of_an_encrypted_memory_warns_on_stderr_only() {
        let tmp = tempfile::tempdir().unwrap();
        let key = MasterKey::generate().unwrap();
        let source = tmp.path().join("source");
        record(&source, Some(&key), 1);
        let file = tmp.path().join("plain.jsonl");
        let out = keyed(&source, &key)
            .args(["--json", "export", file.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success());
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["encrypted"], false);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("plain text") && stderr.contains("--encrypt"),
            "{stderr}"
        );
        assert!(contains(&std::fs::read(&file).unwrap(), MARKER));
    }

    #[test]
    fn a_backup_of_an_encrypted_memory_restores_only_with_its_key() {
        let tmp = tempfile::tempdir().unwrap();
        let key = MasterKey::generate().unwrap();
        let source = tmp.path().join("source");
        let ns = "team-confidential-ns";
        record(&source, Some(&key), 2);
        let mut c = keyed(&source, &key);
        c.env("MEMORY_NAMESPACE", ns);
        ok(c, &["episode", "start", "--task", MARKER]);
        let backup = tmp.path().join("backup");
        let b = backup.to_str().unwrap();
        let out = ok(keyed(&source, &key), &["backup", b, "--encrypt"]);
        let m = &out["manifest"];
        assert_eq!(m["encryption"], "database", "{m}");
        assert_eq!(m["key_fingerprint"], key.fingerprint().as_str());
        assert_eq!(m["episodes"], 3, "{m}");
        assert!(m.get("namespaces").is_none(), "{m}");
        let text = std::fs::read(backup.join("manifest.json")).unwrap();
        assert!(!contains(&text, ns) && !contains(&text, "default"));
        let db = std::fs::read(backup.join("memory.db")).unwrap();
        assert!(!contains(&db, MARKER) && !db.starts_with(b"SQLite format 3"));

        // Without the key, or with another, nothing in the data directory changes.
        let data = tmp.path().join("data");
        let other = MasterKey::generate().unwrap();
        record(&data, Some(&other), 1);
        let before = snapshot(&data);
        let (code, message) = fails(plain(&data), &["restore", "--force", b]);
        assert_eq!(code, Some(2), "{message}");
        assert!(message.contains("MEMORY_ENCRYPTION_KEY"), "{message}");
        let (code, message) = fails(keyed(&data, &other), &["restore", "--force", b]);
        assert_eq!(code, Some(2), "{message}");
        assert!(message.contains(&key.fingerprint()), "{message}");
        assert_eq!(
            snapshot(&data),
            before,
            "a refused restore changed the data directory"
        );

        let restored = ok(keyed(&data, &key), &["restore", "--force", b]);
        assert_eq!(restored["encrypted"], true, "{restored}");
        let marker: Value =
            serde_json::from_slice(&std::fs::read(data.join("encryption.json")).unwrap()).unwrap();
        assert_eq!(marker["fingerprint"], key.fingerprint().as_str());
        assert_eq!(episodes(keyed(&data, &key)), 2);
        // The old marker (of the other key) went aside with the old files.
        let aside: Vec<PathBuf> = std::fs::read_dir(&data)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("pre-restore-")
            })
            .collect();
        assert_eq!(aside.len(), 1);
        assert!(aside[0].join("encryption.json").exists());
        // An encrypted memory opens only with its key.
        fails(plain(&data), &["stats"]);
    }
}

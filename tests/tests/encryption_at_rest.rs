//! Encryption at rest, through the real `memory` binary: no byte of a marker string that is in
//! every field of every episode (nor its lowercase, nor either as UTF-16) reaches any file of
//! an encrypted data directory (database, WAL, cache, journal notes, marker), of its backup or
//! of its encrypted export; a missing or wrong key is refused and changes nothing; `memory
//! encrypt` and `memory rekey` lose nothing and refuse while another process uses the memory.

#![cfg(feature = "encryption")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Output;

use memory_seal::MasterKey;
use serde_json::Value;
use tests::files_under;
use tests::procs::memory_binary;

const MARKER: &str = "ZQXMARKER";

fn memory(dir: &Path, key: Option<&MasterKey>, args: &[&str], extra: &[(&str, &str)]) -> Output {
    let mut cmd = std::process::Command::new(memory_binary());
    cmd.arg("--data-dir")
        .arg(dir)
        .args(args)
        .env("MEMORY_MODEL_DIR", "/nonexistent/model")
        .env("RUST_LOG", "trace")
        .env_remove("MEMORY_ENCRYPTION_KEY")
        .env_remove("MEMORY_ENCRYPTION_KEY_FILE")
        .env_remove("MEMORY_ENCRYPTION_KEY_COMMAND");
    if let Some(k) = key {
        cmd.env("MEMORY_ENCRYPTION_KEY", k.to_hex().as_str());
    }
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn ok(dir: &Path, key: Option<&MasterKey>, args: &[&str]) -> String {
    let out = memory(dir, key, args, &[]);
    assert!(
        out.status.success(),
        "memory {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails(dir: &Path, key: Option<&MasterKey>, args: &[&str]) -> String {
    let out = memory(dir, key, args, &[]);
    assert!(!out.status.success(), "memory {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Starts an episode whose every field holds the marker, logs steps and completes it.
fn record(dir: &Path, key: Option<&MasterKey>, ns: &str, i: usize) {
    let m = format!("{MARKER} {i}");
    let started = ok(
        dir,
        key,
        &[
            "--namespace",
            ns,
            "--json",
            "episode",
            "start",
            "--task",
            &format!("{m} task"),
            "--domain",
            &format!("{m}dom"),
            "--language",
            &format!("{m}lang"),
            "--framework",
            &format!("{m}fw"),
            "--tag",
            &format!("{m}tag"),
            "--type",
            "testing",
        ],
    );
    let v: Value = serde_json::from_str(&started).unwrap();
    let id = v["episode_id"].as_str().unwrap().to_owned();
    ok(
        dir,
        key,
        &[
            "--namespace",
            ns,
            "episode",
            "step",
            &id,
            "--tool",
            &format!("{m}tool"),
            "--action",
            &format!("{m} action"),
            "--ok",
            &format!("{m} result"),
            "--params",
            &format!("{{\"{m}key\": \"{m} value\"}}"),
        ],
    );
    ok(
        dir,
        key,
        &[
            "--namespace",
            ns,
            "episode",
            "step",
            &id,
            "--tool",
            "shell",
            "--action",
            &format!("{m} failing"),
            "--error",
            &format!("{m} error"),
        ],
    );
    ok(
        dir,
        key,
        &[
            "--namespace",
            ns,
            "episode",
            "complete",
            &id,
            "--success",
            &format!("{m} verdict"),
            "--artifact",
            &format!("{m}artifact"),
        ],
    );
}

fn utf16(s: &str, big_endian: bool) -> Vec<u8> {
    s.encode_utf16()
        .flat_map(|u| {
            if big_endian {
                u.to_be_bytes()
            } else {
                u.to_le_bytes()
            }
        })
        .collect()
}

/// The forms of the marker no file may hold.
fn forms() -> Vec<(String, Vec<u8>)> {
    let lower = MARKER.to_lowercase();
    vec![
        ("marker".into(), MARKER.as_bytes().to_vec()),
        ("lowercase".into(), lower.as_bytes().to_vec()),
        ("UTF-16LE".into(), utf16(MARKER, false)),
        ("UTF-16BE".into(), utf16(MARKER, true)),
        ("lowercase UTF-16LE".into(), utf16(&lower, false)),
        ("lowercase UTF-16BE".into(), utf16(&lower, true)),
    ]
}

fn leaks(files: &[PathBuf]) -> Vec<String> {
    let mut out = Vec::new();
    for f in files {
        let bytes = std::fs::read(f).unwrap();
        for (name, form) in forms() {
            if bytes.windows(form.len()).any(|w| w == form.as_slice()) {
                out.push(format!("{name} in {}", f.display()));
            }
        }
    }
    out
}

fn data(dir: &Path, key: Option<&MasterKey>, ns: &str) {
    for i in 0..6 {
        record(dir, key, ns, i);
    }
    ok(dir, key, &["--namespace", ns, "consolidate"]);
    ok(
        dir,
        key,
        &[
            "--namespace",
            ns,
            "episode",
            "search",
            &format!("{MARKER} task"),
        ],
    );
    ok(
        dir,
        key,
        &[
            "--namespace",
            ns,
            "recommend",
            "--task",
            &format!("{MARKER} task"),
        ],
    );
}

#[test]
fn no_byte_of_the_marker_reaches_an_encrypted_data_dir_backup_or_export() {
    let tmp = tempfile::tempdir().unwrap();
    let key = MasterKey::generate().unwrap();
    let ns = format!("team/{}", MARKER.to_lowercase());

    // The same work without a key leaves the marker everywhere: the scan can fail.
    let plain = tmp.path().join("plain");
    data(&plain, None, &ns);
    let mut plain_files = Vec::new();
    files_under(&plain, &mut plain_files);
    let found = leaks(&plain_files);
    assert!(
        found.iter().any(|l| l.starts_with("marker in")),
        "{found:?}"
    );
    assert!(
        found.iter().any(|l| l.starts_with("lowercase in")),
        "{found:?}"
    );

    let dir = tmp.path().join("enc");
    data(&dir, Some(&key), &ns);
    let backup = tmp.path().join("backup");
    let export = tmp.path().join("export.sealed");
    ok(
        &dir,
        Some(&key),
        &["backup", backup.to_str().unwrap(), "--encrypt"],
    );
    ok(
        &dir,
        Some(&key),
        &[
            "--namespace",
            &ns,
            "export",
            export.to_str().unwrap(),
            "--encrypt",
        ],
    );
    let mut files = Vec::new();
    files_under(&dir, &mut files);
    files_under(&backup, &mut files);
    files.push(export.clone());
    let bytes: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum();
    println!("scanned {} files, {bytes} bytes", files.len());
    assert!(files.iter().any(|f| f.ends_with("memory.db")));
    assert!(files.iter().any(|f| f.ends_with("cache.redb")));
    let found = leaks(&files);
    assert!(found.is_empty(), "{found:#?}");

    // And everything reads back with the key.
    let listed = ok(
        &dir,
        Some(&key),
        &["--namespace", &ns, "--json", "episode", "list"],
    );
    assert!(listed.matches(MARKER).count() >= 6, "{listed}");
    let restored = tmp.path().join("restored");
    ok(
        &restored,
        Some(&key),
        &["restore", backup.to_str().unwrap()],
    );
    let listed = ok(
        &restored,
        Some(&key),
        &["--namespace", &ns, "--json", "episode", "list"],
    );
    assert!(listed.contains(MARKER), "{listed}");
    let imported = tmp.path().join("imported");
    ok(
        &imported,
        Some(&key),
        &["--namespace", &ns, "import", export.to_str().unwrap()],
    );
    let listed = ok(
        &imported,
        Some(&key),
        &["--namespace", &ns, "--json", "episode", "list"],
    );
    assert!(listed.contains(MARKER), "{listed}");
}

/// Neither a key nor the database passphrase derived from it is in a command's output, its
/// log at `trace` included (libsql traces the text of every statement it prepares).
fn no_key_in(out: &Output, keys: &[&MasterKey]) {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("TRACE") || text.contains("DEBUG"),
        "the log is on"
    );
    for key in keys {
        assert!(!text.contains(key.to_hex().as_str()), "a key is in the log");
        let passphrase = key.database_passphrase();
        assert!(
            !text.contains(passphrase.as_str()),
            "a database passphrase is in the log"
        );
    }
}

fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = Vec::new();
    files_under(dir, &mut files);
    files
        .into_iter()
        .map(|f| {
            let bytes = std::fs::read(&f).unwrap();
            (f, bytes)
        })
        .collect()
}

#[test]
fn a_missing_or_wrong_key_is_refused_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let key = MasterKey::generate().unwrap();
    record(&dir, Some(&key), "default", 0);
    let before = snapshot(&dir);

    let err = fails(&dir, None, &["episode", "list"]);
    assert!(err.contains("is encrypted"), "{err}");
    assert!(err.contains(&key.fingerprint()), "{err}");
    let other = MasterKey::generate().unwrap();
    let err = fails(&dir, Some(&other), &["episode", "list"]);
    assert!(err.contains("does not open"), "{err}");
    assert!(
        !err.contains(other.to_hex().as_str()),
        "the key is never shown: {err}"
    );
    let err = fails(&dir, Some(&other), &["episode", "start", "--task", "x"]);
    assert!(err.contains("does not open"), "{err}");
    assert_eq!(snapshot(&dir), before, "a refused open changed a file");

    // A key file must be the owner's alone; the key never goes into memory.toml.
    let key_file = tmp.path().join("key");
    std::fs::write(&key_file, key.to_hex().as_bytes()).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = memory(
        &dir,
        None,
        &["episode", "list"],
        &[("MEMORY_ENCRYPTION_KEY_FILE", key_file.to_str().unwrap())],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("chmod 600"), "{err}");
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = memory(
        &dir,
        None,
        &["episode", "list"],
        &[("MEMORY_ENCRYPTION_KEY_FILE", key_file.to_str().unwrap())],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(
        dir.join("memory.toml"),
        format!("[encryption]\nkey = \"{}\"\n", key.to_hex().as_str()),
    )
    .unwrap();
    let err = fails(&dir, None, &["episode", "list"]);
    assert!(
        err.contains("never goes into the configuration file"),
        "{err}"
    );
    assert!(!err.contains(key.to_hex().as_str()), "{err}");
}

#[test]
fn encrypt_in_place_and_rekey_lose_nothing_and_wait_for_other_processes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    for i in 0..5 {
        record(&dir, None, "default", i);
    }
    let a = MasterKey::generate().unwrap();
    // A key for a memory that is not encrypted is refused, not half applied.
    let err = fails(&dir, Some(&a), &["episode", "list"]);
    assert!(err.contains("memory encrypt"), "{err}");

    let encrypted = memory(&dir, Some(&a), &["encrypt"], &[]);
    let out = String::from_utf8_lossy(&encrypted.stdout).into_owned();
    assert!(out.contains("5 episodes checked"), "{out}");
    no_key_in(&encrypted, &[&a]);
    let count = |key: &MasterKey| {
        let listed = ok(&dir, Some(key), &["--json", "episode", "list"]);
        listed.matches(MARKER).count()
    };
    assert!(count(&a) >= 5);
    let mut files = Vec::new();
    files_under(&dir, &mut files);
    files.retain(|f| !f.to_string_lossy().contains("pre-encrypt-"));
    assert!(leaks(&files).is_empty(), "{:?}", leaks(&files));

    let b = MasterKey::generate().unwrap();
    // Refused while a server uses the memory.
    let mut server = std::process::Command::new(memory_binary())
        .arg("--data-dir")
        .arg(&dir)
        .arg("mcp")
        .env("MEMORY_ENCRYPTION_KEY", a.to_hex().as_str())
        .env("MEMORY_MODEL_DIR", "/nonexistent/model")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let out = memory(
        &dir,
        Some(&a),
        &["rekey"],
        &[("MEMORY_NEW_ENCRYPTION_KEY", b.to_hex().as_str())],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("other memory processes"),
        "{err}"
    );
    server.kill().unwrap();
    server.wait().unwrap();

    let out = memory(
        &dir,
        Some(&a),
        &["rekey"],
        &[("MEMORY_NEW_ENCRYPTION_KEY", b.to_hex().as_str())],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    no_key_in(&out, &[&a, &b]);
    assert!(count(&b) >= 5);
    let err = fails(&dir, Some(&a), &["episode", "list"]);
    assert!(err.contains("does not open"), "{err}");
    let status = ok(&dir, Some(&b), &["--json", "key", "status"]);
    let v: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(v["configured_key_opens"], Value::Bool(true), "{status}");
}

/// Remote mode: the database is the server's, but what the memory keeps on this machine while
/// the server is down (the journal, the counts kept beside it, the cache) holds no marker, and
/// the replay reads it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_written_during_an_outage_is_sealed_and_replayed() {
    if tests::sqld::require_sqld().is_none() {
        return;
    }
    let mut sqld = tests::sqld::SqldServer::start().await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("memory.toml"),
        format!("mode = \"remote\"\ndatabase_url = \"{}\"\n", sqld.url()),
    )
    .unwrap();
    let key = MasterKey::generate().unwrap();
    let ns = format!("team/{}", MARKER.to_lowercase());
    record(&dir, Some(&key), &ns, 0);
    sqld.stop().await;
    for i in 1..4 {
        record(&dir, Some(&key), &ns, i);
    }
    let mut files = Vec::new();
    files_under(&dir, &mut files);
    let journals: Vec<_> = files
        .iter()
        .filter(|f| {
            f.extension().is_some_and(|e| e == "redb") && f.starts_with(dir.join("journal"))
        })
        .collect();
    assert!(!journals.is_empty(), "nothing was journaled: {files:?}");
    assert!(files.iter().any(|f| f.ends_with("usage.json")), "{files:?}");
    let found = leaks(&files);
    assert!(found.is_empty(), "{found:#?}");

    sqld.resume().await.unwrap();
    ok(&dir, Some(&key), &["sync", "now"]);
    let status = ok(&dir, Some(&key), &["--json", "sync", "status"]);
    let v: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(v["status"]["outbox_len"], 0, "{status}");
    // The server holds all four, completed (read through a process without the cache file).
    let listed = ok(
        &dir,
        Some(&key),
        &["--namespace", &ns, "--json", "episode", "list"],
    );
    for i in 0..4 {
        assert!(
            listed.contains(&format!("{MARKER} {i} task")),
            "{i}: {listed}"
        );
    }
}

/// Replica mode: the embedded replica's file is encrypted under the key (libsql's replica
/// builder takes the same setting), so what it copied from the server is not readable on disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_replica_is_encrypted_on_disk() {
    if tests::sqld::require_sqld().is_none() {
        return;
    }
    let sqld = tests::sqld::SqldServer::start().await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("memory.toml"),
        format!("mode = \"replica\"\ndatabase_url = \"{}\"\n", sqld.url()),
    )
    .unwrap();
    let key = MasterKey::generate().unwrap();
    let ns = format!("team/{}", MARKER.to_lowercase());
    for i in 0..3 {
        record(&dir, Some(&key), &ns, i);
    }
    ok(&dir, Some(&key), &["sync", "now"]);
    let listed = ok(
        &dir,
        Some(&key),
        &["--namespace", &ns, "--json", "episode", "list"],
    );
    assert!(listed.contains(&format!("{MARKER} 2 task")), "{listed}");
    let mut files = Vec::new();
    files_under(&dir, &mut files);
    assert!(files.iter().any(|f| f.ends_with("replica.db")), "{files:?}");
    let found = leaks(&files);
    assert!(found.is_empty(), "{found:#?}");
    let err = fails(&dir, None, &["--namespace", &ns, "episode", "list"]);
    assert!(err.contains("is encrypted"), "{err}");

    // A replica without a key holds the marker after the same sync: the scan can fail.
    let plain = tmp.path().join("plain");
    std::fs::create_dir_all(&plain).unwrap();
    std::fs::copy(dir.join("memory.toml"), plain.join("memory.toml")).unwrap();
    ok(&plain, None, &["sync", "now"]);
    ok(&plain, None, &["--namespace", &ns, "episode", "list"]);
    let mut files = Vec::new();
    files_under(&plain, &mut files);
    assert!(
        !leaks(&files).is_empty(),
        "the plain replica shows no marker: {files:?}"
    );
}

//! `memory restore` cannot be tricked, on the real binary: a good backup restores; a backup
//! whose files differ from its manifest (a changed byte, a wrong size, a symbolic link, a path
//! outside the backup, no manifest at all) is refused with exit code 2 and leaves every byte of
//! the data directory as it was; and links planted in the data directory are never written
//! through.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

mod common;

use common::{json, memory};

fn record(dir: &Path, task: &str) {
    let id = json(dir, &["episode", "start", "--task", task, "--domain", "d"])["episode_id"]
        .as_str()
        .unwrap()
        .to_owned();
    json(dir, &["episode", "complete", &id, "--success", "done"]);
}

/// A data directory with one episode and its backup in `<tmp>/backup`.
struct Fixture {
    tmp: tempfile::TempDir,
    source: PathBuf,
    backup: PathBuf,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let source = tmp.path().join("source");
    record(&source, "fix the flaky billing test");
    let backup = tmp.path().join("backup");
    json(&source, &["backup", backup.to_str().unwrap()]);
    Fixture {
        tmp,
        source,
        backup,
    }
}

/// Every entry under `dir` (links as their target text, not followed) and its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let p = entry.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&p).unwrap();
                out.insert(rel, format!("-> {}", target.display()).into_bytes());
            } else if meta.is_dir() {
                out.insert(rel, b"<dir>".to_vec());
                walk(root, &p, out);
            } else {
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn manifest(backup: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(backup.join("manifest.json")).unwrap()).unwrap()
}

fn write_manifest(backup: &Path, m: &Value) {
    std::fs::write(
        backup.join("manifest.json"),
        serde_json::to_vec_pretty(m).unwrap(),
    )
    .unwrap();
}

/// Restores `backup` into `data` with `--force` and expects a refusal: exit code 2, an
/// `invalid_input` error whose message holds every one of `says`, and the data directory
/// unchanged to the byte.
fn assert_refused(data: &Path, backup: &Path, says: &[&str]) {
    let before = snapshot(data);
    let out = memory(data)
        .args(["--json", "restore", "--force", backup.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["kind"], "invalid_input", "{stdout}");
    let message = v["error"]["message"].as_str().unwrap();
    for s in says {
        assert!(message.contains(s), "{message:?} does not say {s:?}");
    }
    assert_eq!(snapshot(data), before, "the data directory changed");
}

/// A data directory that already holds a memory (a different one from the backup's).
fn used_data_dir(f: &Fixture) -> PathBuf {
    let data = f.tmp.path().join("data");
    record(&data, "an unrelated episode");
    record(&data, "another unrelated episode");
    data
}

#[test]
fn a_good_backup_restores_and_lists_what_it_checked() {
    let f = fixture();
    let m = manifest(&f.backup);
    let files = m["files"].as_array().unwrap();
    assert_eq!(files.len(), 1, "{m}");
    assert_eq!(files[0]["path"], "memory.db");
    let db = std::fs::read(f.backup.join("memory.db")).unwrap();
    assert_eq!(files[0]["bytes"], db.len() as u64);
    assert_eq!(files[0]["sha256"].as_str().unwrap().len(), 64);

    let data = used_data_dir(&f);
    let restored = json(&data, &["restore", "--force", f.backup.to_str().unwrap()]);
    assert_eq!(restored["verified"][0]["path"], "memory.db");
    // Only the restored database, the lock and the folder of moved files: no copy left over.
    let mut names: Vec<String> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("pre-restore-") && !n.starts_with("memory.db-"))
        .collect();
    names.sort();
    assert_eq!(names, ["memory.db", "memory.lock"], "{names:?}");
    assert_eq!(
        json(&data, &["stats"])["counts"],
        json(&f.source, &["stats"])["counts"]
    );
    // Restore reads the backup, never writes it.
    assert_eq!(std::fs::read(f.backup.join("memory.db")).unwrap(), db);
}

#[test]
fn a_changed_byte_of_the_same_length_is_refused() {
    let f = fixture();
    let data = used_data_dir(&f);
    let db = f.backup.join("memory.db");
    let mut bytes = std::fs::read(&db).unwrap();
    let len = bytes.len();
    bytes[len / 2] ^= 0x01;
    std::fs::write(&db, &bytes).unwrap();
    assert_refused(&data, &f.backup, &["memory.db", "SHA-256"]);
}

#[test]
fn a_wrong_size_in_the_manifest_is_refused() {
    let f = fixture();
    let data = used_data_dir(&f);
    let mut m = manifest(&f.backup);
    let bytes = m["files"][0]["bytes"].as_u64().unwrap();
    m["files"][0]["bytes"] = (bytes + 1).into();
    write_manifest(&f.backup, &m);
    assert_refused(
        &data,
        &f.backup,
        &[
            "memory.db",
            &format!("{bytes} bytes"),
            &format!("{}", bytes + 1),
        ],
    );
}

#[test]
fn a_backup_without_a_manifest_or_without_a_file_list_is_refused() {
    let f = fixture();
    let data = used_data_dir(&f);
    // A manifest of an earlier version: no file list.
    let mut m = manifest(&f.backup);
    m.as_object_mut().unwrap().remove("files");
    write_manifest(&f.backup, &m);
    assert_refused(&data, &f.backup, &["lists no files"]);

    std::fs::remove_file(f.backup.join("manifest.json")).unwrap();
    assert_refused(&data, &f.backup, &["is not a backup", "manifest.json"]);
    // The human message says the same, on stderr.
    let out = memory(&data)
        .args(["restore", "--force", f.backup.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("manifest.json is missing"));
}

#[cfg(unix)]
#[test]
fn links_in_the_backup_are_refused() {
    let f = fixture();
    let data = used_data_dir(&f);
    // memory.db a link to a file with exactly the listed bytes: only the link is wrong.
    let elsewhere = f.tmp.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::rename(f.backup.join("memory.db"), elsewhere.join("memory.db")).unwrap();
    std::os::unix::fs::symlink(elsewhere.join("memory.db"), f.backup.join("memory.db")).unwrap();
    assert_refused(&data, &f.backup, &["memory.db", "symbolic link"]);
    std::fs::remove_file(f.backup.join("memory.db")).unwrap();
    std::fs::rename(elsewhere.join("memory.db"), f.backup.join("memory.db")).unwrap();

    // The manifest a link to a valid manifest.
    std::fs::rename(
        f.backup.join("manifest.json"),
        elsewhere.join("manifest.json"),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        elsewhere.join("manifest.json"),
        f.backup.join("manifest.json"),
    )
    .unwrap();
    assert_refused(&data, &f.backup, &["manifest.json", "symbolic link"]);
}

#[test]
fn a_manifest_path_outside_the_backup_is_refused() {
    let f = fixture();
    let data = used_data_dir(&f);
    // A sibling directory holding exactly the listed file, reached with `../`.
    let other = f.tmp.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::copy(f.backup.join("memory.db"), other.join("memory.db")).unwrap();
    let original = manifest(&f.backup);
    for path in ["../other/memory.db", "..", "/etc/passwd", "sub/memory.db"] {
        let mut m = manifest(&f.backup);
        m["files"][0]["path"] = path.into();
        write_manifest(&f.backup, &m);
        assert_refused(
            &data,
            &f.backup,
            &["not a file name inside the backup directory"],
        );
    }
    // An extra entry with `../` next to the real one.
    let mut m = original;
    let mut extra = m["files"][0].clone();
    extra["path"] = "../other/memory.db".into();
    m["files"].as_array_mut().unwrap().push(extra);
    write_manifest(&f.backup, &m);
    assert_refused(&data, &f.backup, &["../other/memory.db"]);
}

#[test]
fn an_oversized_manifest_is_refused() {
    let f = fixture();
    let data = used_data_dir(&f);
    let mut m = manifest(&f.backup);
    m["padding"] = "x".repeat(1024 * 1024).into();
    write_manifest(&f.backup, &m);
    assert_refused(&data, &f.backup, &["manifest.json", "larger than"]);
}

/// Links planted in the data directory under the names a restore used to write (and the
/// names it moves aside) are never written through: the files they point to keep their bytes.
#[cfg(unix)]
#[test]
fn planted_links_in_the_data_dir_are_never_written_through() {
    let f = fixture();
    let outside = f.tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let victim = outside.join("victim");
    std::fs::write(&victim, b"precious bytes").unwrap();

    // Into an empty data directory holding only the planted link.
    let data = f.tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::os::unix::fs::symlink(&victim, data.join("memory.db.restoring")).unwrap();
    json(&data, &["restore", f.backup.to_str().unwrap()]);
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious bytes");
    assert!(
        std::fs::symlink_metadata(data.join("memory.db.restoring"))
            .unwrap()
            .file_type()
            .is_symlink(),
        "left alone"
    );
    assert_eq!(
        json(&data, &["stats"])["counts"],
        json(&f.source, &["stats"])["counts"]
    );

    // memory.db itself a link (with --force): the link is moved aside, the restored
    // database is a regular file, and the victim is untouched.
    let data2 = f.tmp.path().join("data2");
    std::fs::create_dir(&data2).unwrap();
    std::os::unix::fs::symlink(&victim, data2.join("memory.db")).unwrap();
    std::os::unix::fs::symlink(&victim, data2.join("memory.db.restoring")).unwrap();
    memory(&data2)
        .args(["restore", f.backup.to_str().unwrap()])
        .assert()
        .failure();
    let restored = json(&data2, &["restore", "--force", f.backup.to_str().unwrap()]);
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious bytes");
    let db = std::fs::symlink_metadata(data2.join("memory.db")).unwrap();
    assert!(db.file_type().is_file(), "{db:?}");
    let aside = Path::new(restored["moved_aside"].as_str().unwrap());
    assert!(
        std::fs::symlink_metadata(aside.join("memory.db"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        json(&data2, &["stats"])["counts"],
        json(&f.source, &["stats"])["counts"]
    );
}

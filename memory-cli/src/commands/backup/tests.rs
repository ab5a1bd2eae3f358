//! The sealed path of `memory backup --encrypt` (a memory that is not encrypted, a key
//! configured) and its restore, end to end on a stack opened without the key: the CLI itself
//! opens a memory that is not encrypted only without a key, so the binary cannot reach it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use clap::Parser as _;
use memory_core::{NewEpisode, TaskContext, TaskType};

use super::*;

const MARKER: &str = "MARKER-b4c2-sealed-backup";

/// Settings for `dir` whose `memory.toml` names `key_file` (`--json`: nothing drawn).
fn settings(dir: &Path, key_file: &Path) -> Settings {
    std::fs::create_dir_all(dir).unwrap();
    let toml = format!(
        "[encryption]\nkey_file = {:?}\n",
        key_file.to_str().unwrap()
    );
    std::fs::write(dir.join("memory.toml"), toml).unwrap();
    let cli = crate::cli::Cli::try_parse_from([
        "memory",
        "--json",
        "--data-dir",
        dir.to_str().unwrap(),
        "stats",
    ])
    .unwrap();
    Settings::resolve(&cli).unwrap()
}

fn key_file(dir: &Path, key: &MasterKey) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join("key");
    std::fs::write(&path, key.to_hex().as_str()).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_backup_leaves_no_plaintext_and_restores_with_its_key() {
    let tmp = tempfile::tempdir().unwrap();
    let key = MasterKey::generate().unwrap();
    let key_path = key_file(tmp.path(), &key);
    let source = tmp.path().join("source");
    let s = settings(&source, &key_path);
    let stack = memory_stack::StackBuilder::new(&source)
        .open()
        .await
        .unwrap();
    assert!(stack.encryption().is_none());
    let ctx = TaskContext::new("d");
    let new = NewEpisode::new(MARKER, TaskType::Debugging, ctx);
    stack
        .memory()
        .start_episode(&s.namespace, new)
        .await
        .unwrap();

    let b = tmp.path().join("backup");
    backup(&b, true, &stack, &s).await.unwrap();
    stack.shutdown().await.unwrap();
    drop(stack);
    // The sealed snapshot and the manifest, nothing else: the scratch file is gone.
    assert_eq!(names(&b), [MANIFEST, SEALED_DATABASE]);
    let sealed = std::fs::read(b.join(SEALED_DATABASE)).unwrap();
    assert!(memory_seal::is_sealed_file(&sealed));
    assert!(!sealed.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()));
    let m: Manifest = verify::read_manifest(&b).unwrap();
    assert_eq!(m.encryption, BackupEncryption::Sealed);
    assert_eq!(
        m.key_fingerprint.as_deref(),
        Some(key.fingerprint().as_str())
    );
    assert_eq!((m.namespaces, m.episodes), (None, Some(1)));
    let counts = open_namespaces(m.namespaces_sealed.as_deref().unwrap(), &Sealer::new(&key));
    assert_eq!(counts, Some(vec![("default".to_owned(), 1)]));
    assert_eq!(m.files[0].path, SEALED_DATABASE);
    assert_eq!(m.files[0].bytes, sealed.len() as u64);
    let manifest_text = std::fs::read_to_string(b.join(MANIFEST)).unwrap();
    assert!(!manifest_text.contains("default"), "{manifest_text}");

    // Restored with the key: a plain memory (no marker), the episode in it.
    let data = tmp.path().join("data");
    let s2 = settings(&data, &key_path);
    restore(&b, false, &s2).await.unwrap();
    assert!(!data.join(ENCRYPTION_FILE).exists());
    let restored = memory_stack::open_data_dir_database(&data, None)
        .await
        .unwrap();
    let counted = episodes_per_namespace(&restored).await.unwrap();
    assert_eq!(counted, [("default".to_owned(), 1)]);
    drop(restored);
    assert!(!names(&data).iter().any(|n| n.contains("incoming")));
}

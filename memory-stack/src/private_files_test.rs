//! The data directory the stack creates is private: `0700`, every file in it `0600`, whatever
//! the umask (the helpers themselves are tested in `memory-files`).

#![cfg(all(test, unix))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use memory_core::{Namespace, NewEpisode, Outcome, StepInput, TaskContext, TaskType};

use crate::StackBuilder;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Every directory under `root` (itself included) is 0700 and every file 0600.
fn assert_private(root: &Path) {
    assert_eq!(mode(root), 0o700, "{}", root.display());
    for entry in std::fs::read_dir(root).unwrap() {
        let path = entry.unwrap().path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            assert_private(&path);
        } else if meta.is_file() {
            assert_eq!(
                meta.permissions().mode() & 0o777,
                0o600,
                "{}",
                path.display()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stack_creates_a_private_data_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("data");
    let stack = StackBuilder::new(&root).open().await.unwrap();
    let m = stack.memory();
    let ns = Namespace::new("perm").unwrap();
    let id = m
        .start_episode(
            &ns,
            NewEpisode::new("private files", TaskType::Other, TaskContext::new("x")),
        )
        .await
        .unwrap();
    m.log_step(&ns, id, StepInput::ok("t", "a", "o"))
        .await
        .unwrap();
    m.complete_episode(&ns, id, Outcome::success("done"))
        .await
        .unwrap();
    let db = root.join(crate::DATABASE_FILE);
    let wal = root.join(format!("{}-wal", crate::DATABASE_FILE));
    assert!(db.is_file() && wal.is_file() && root.join(crate::CACHE_FILE).is_file());
    assert_private(&root);
    stack.shutdown().await.unwrap();
    assert_private(&root);
}

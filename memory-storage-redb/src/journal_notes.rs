//! What a journal directory keeps beside the journals for the quotas: each namespace's last
//! counts read from the durable layer (`usage.json`), and the journaled writes the replay
//! refused because they would cross a quota (`refused.jsonl`, one JSON object per line).
//!
//! Both are small files every process of the data directory reads and writes. The counts are
//! replaced whole (a temporary file, fsynced, renamed over the old one); two processes
//! keeping counts at once may each lose the other's update of another namespace, which only
//! makes those counts older. Refusals are appended and fsynced, one line each, never removed
//! by the memory. Neither file is trusted: a symlink, a file over its size limit or bytes that
//! do not parse count as nothing kept (logged), and a bad line of refusals is skipped.
//!
//! With a sealer (the journal directory's [`OutboxConfig::sealer`](crate::OutboxConfig)), the
//! counts file is one sealed record (binary) and each refusal line the lowercase hex of a
//! sealed record, so that no namespace name is readable in either. Unsealed files and lines
//! (written before) are still read; a sealed one that does not open counts as nothing kept or
//! as a skipped line, like damaged ones.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::path::Path;

use memory_core::{KeptUsage, Namespace, RefusedWrite, Result};
use memory_seal::Sealer;
use tracing::warn;

use crate::error::failed;
use crate::sealing::{REFUSAL_AAD, USAGE_AAD, hex, open_line, open_note};

/// The counts file, in the journal directory.
pub const USAGE_FILE: &str = "usage.json";
/// The refusals file, in the journal directory.
pub const REFUSED_FILE: &str = "refused.jsonl";

/// The largest counts file read (far above what a million namespaces' counts take).
const MAX_USAGE_BYTES: u64 = 64 << 20;
/// The largest refusals file read (the newest lines beyond it are still counted on disk, not
/// listed).
const MAX_REFUSED_BYTES: u64 = 64 << 20;

/// The bytes of `path` if it is a regular file no larger than `max`; `None` if it is missing
/// or cannot be trusted (logged).
fn read_regular(path: &Path, max: u64) -> Option<Vec<u8>> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            warn!(path = %path.display(), error = %e, "cannot read a journal note");
            return None;
        }
    };
    if !meta.file_type().is_file() || meta.len() > max {
        warn!(path = %path.display(), bytes = meta.len(), "journal note ignored: not a regular file, or too large");
        return None;
    }
    let mut bytes = Vec::new();
    let read = std::fs::File::open(path).and_then(|f| f.take(max).read_to_end(&mut bytes));
    match read {
        Ok(_) => Some(bytes),
        Err(e) => {
            warn!(path = %path.display(), error = %e, "cannot read a journal note");
            None
        }
    }
}

fn read_usage(dir: &Path, sealer: Option<&Sealer>) -> BTreeMap<String, KeptUsage> {
    let path = dir.join(USAGE_FILE);
    let Some(bytes) = read_regular(&path, MAX_USAGE_BYTES) else {
        return BTreeMap::new();
    };
    let json = match open_note(sealer, &bytes, USAGE_AAD) {
        Ok(json) => json,
        Err(e) => {
            warn!(path = %path.display(), error = %e, "kept namespace counts cannot be read; ignored");
            return BTreeMap::new();
        }
    };
    serde_json::from_slice(&json).unwrap_or_else(|e| {
        warn!(path = %path.display(), error = %e, "kept namespace counts do not parse; ignored");
        BTreeMap::new()
    })
}

/// The counts kept for `ns`.
pub(crate) fn kept_usage(dir: &Path, sealer: Option<&Sealer>, ns: &Namespace) -> Option<KeptUsage> {
    read_usage(dir, sealer).get(ns.as_str()).copied()
}

/// Keeps `usage` as `ns`'s counts (the whole file sealed with `sealer`, if any).
pub(crate) fn keep_usage(
    dir: &Path,
    sealer: Option<&Sealer>,
    ns: &Namespace,
    usage: &KeptUsage,
) -> Result<()> {
    let mut all = read_usage(dir, sealer);
    all.insert(ns.as_str().to_owned(), *usage);
    let mut bytes = serde_json::to_vec(&all).map_err(|e| failed("keep counts", e))?;
    if let Some(sealer) = sealer {
        bytes = sealer
            .seal(&bytes, USAGE_AAD)
            .map_err(|e| failed("keep counts", e))?;
    }
    let tmp = dir.join(format!(
        ".{USAGE_FILE}.{}-{}.tmp",
        std::process::id(),
        uuid::Uuid::now_v7().simple()
    ));
    let written = memory_files::create_new(&tmp).and_then(|mut f| {
        f.write_all(&bytes)?;
        f.sync_all()
    });
    let renamed = written.and_then(|()| std::fs::rename(&tmp, dir.join(USAGE_FILE)));
    if let Err(e) = renamed {
        let _ = std::fs::remove_file(&tmp);
        return Err(failed("keep counts", e));
    }
    Ok(())
}

/// Appends `refused` to the refusals, durably (a line of JSON, or with `sealer` the hex of the
/// sealed JSON). Anything but a regular file in its place (a symlink) is refused.
pub(crate) fn record_refused(
    dir: &Path,
    sealer: Option<&Sealer>,
    refused: &RefusedWrite,
) -> Result<()> {
    let mut line = serde_json::to_vec(refused).map_err(|e| failed("record refusal", e))?;
    if let Some(sealer) = sealer {
        let sealed = sealer
            .seal(&line, REFUSAL_AAD)
            .map_err(|e| failed("record refusal", e))?;
        line = hex(&sealed).into_bytes();
    }
    line.push(b'\n');
    let path = dir.join(REFUSED_FILE);
    if let Ok(meta) = std::fs::symlink_metadata(&path)
        && !meta.file_type().is_file()
    {
        return Err(failed(
            "record refusal",
            format!("{} is not a regular file", path.display()),
        ));
    }
    let mut options = memory_files::file_options();
    options.append(true).create(true);
    let appended = options.open(&path).and_then(|mut f| {
        f.write_all(&line)?;
        f.sync_data()
    });
    appended.map_err(|e| failed("record refusal", e))
}

/// Every refusal recorded, oldest first (lines that do not open or parse are skipped, logged).
pub(crate) fn refused(dir: &Path, sealer: Option<&Sealer>) -> Vec<RefusedWrite> {
    let path = dir.join(REFUSED_FILE);
    let Some(bytes) = read_regular(&path, MAX_REFUSED_BYTES) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut bad = 0u64;
    for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let parsed = open_line(sealer, line, REFUSAL_AAD)
            .ok()
            .and_then(|json| serde_json::from_slice(&json).ok());
        match parsed {
            Some(r) => out.push(r),
            None => bad += 1,
        }
    }
    if bad > 0 {
        warn!(path = %path.display(), lines = bad, "refusal lines that do not open or parse were skipped");
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn ns(s: &str) -> Namespace {
        Namespace::new(s).unwrap()
    }

    fn refusal(n: &str) -> RefusedWrite {
        RefusedWrite {
            namespace: ns(n),
            write: "create_episode".into(),
            episode_id: None,
            resource: "episodes".into(),
            limit: 10,
            refused_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn counts_are_kept_per_namespace_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let at = chrono::Utc::now();
        let u = |episodes| KeptUsage {
            episodes,
            steps: 3,
            read_at: at,
        };
        assert_eq!(kept_usage(dir.path(), None, &ns("a")), None);
        keep_usage(dir.path(), None, &ns("a"), &u(1)).unwrap();
        keep_usage(dir.path(), None, &ns("b"), &u(2)).unwrap();
        keep_usage(dir.path(), None, &ns("a"), &u(5)).unwrap();
        assert_eq!(kept_usage(dir.path(), None, &ns("a")), Some(u(5)));
        assert_eq!(kept_usage(dir.path(), None, &ns("b")), Some(u(2)));
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn damaged_or_symlinked_notes_count_as_nothing_kept() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(USAGE_FILE), b"{not json").unwrap();
        assert_eq!(kept_usage(dir.path(), None, &ns("a")), None);
        std::fs::remove_file(dir.path().join(USAGE_FILE)).unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let target = elsewhere.path().join("x");
        std::fs::write(&target, b"").unwrap();
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(&target, dir.path().join(REFUSED_FILE)).unwrap();
            assert!(record_refused(dir.path(), None, &refusal("a")).is_err());
            assert!(refused(dir.path(), None).is_empty());
            assert_eq!(std::fs::read(&target).unwrap(), b"");
        }
    }

    #[test]
    fn refusals_append_and_bad_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        record_refused(dir.path(), None, &refusal("a")).unwrap();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(REFUSED_FILE))
            .unwrap();
        f.write_all(b"{torn\n").unwrap();
        record_refused(dir.path(), None, &refusal("b")).unwrap();
        let all = refused(dir.path(), None);
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].namespace, ns("b"));
    }

    #[test]
    fn sealed_notes_hide_namespaces_read_plain_ones_and_skip_foreign_ones() {
        use memory_seal::MasterKey;
        let dir = tempfile::tempdir().unwrap();
        let key = Sealer::new(&MasterKey::generate().unwrap());
        let other = Sealer::new(&MasterKey::generate().unwrap());
        let u = KeptUsage {
            episodes: 4,
            steps: 9,
            read_at: chrono::Utc::now(),
        };
        // Written before the directory was sealed: still read, and sealed when rewritten.
        keep_usage(dir.path(), None, &ns("plainns"), &u).unwrap();
        record_refused(dir.path(), None, &refusal("plainns")).unwrap();
        keep_usage(dir.path(), Some(&key), &ns("secretns"), &u).unwrap();
        record_refused(dir.path(), Some(&key), &refusal("secretns")).unwrap();
        assert_eq!(kept_usage(dir.path(), Some(&key), &ns("plainns")), Some(u));
        assert_eq!(kept_usage(dir.path(), Some(&key), &ns("secretns")), Some(u));
        let all = refused(dir.path(), Some(&key));
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].namespace, ns("secretns"));
        let usage = std::fs::read(dir.path().join(USAGE_FILE)).unwrap();
        assert!(
            !usage
                .windows(8)
                .any(|w| w == b"secretns" || w == b"plainns\"")
        );
        let lines = std::fs::read(dir.path().join(REFUSED_FILE)).unwrap();
        assert!(!lines.windows(8).any(|w| w == b"secretns"));
        assert_eq!(
            lines.split(|b| *b == b'\n').count(),
            3,
            "a line each, then nothing"
        );
        // Another key, or none: nothing kept, sealed lines skipped.
        for wrong in [Some(&other), None] {
            assert_eq!(kept_usage(dir.path(), wrong, &ns("secretns")), None);
            assert_eq!(refused(dir.path(), wrong).len(), 1, "the plain line only");
        }
    }
}

//! [`JournalDir`]: the outbox of one process, in a directory that every process of a data
//! directory shares.
//!
//! redb locks a file for the process that opens it, so one outbox file cannot serve several
//! processes at once. Each process therefore journals into a file of its own,
//! `<dir>/<pid>-<uuid>.redb`, created the first time it has to journal a write and removed
//! once everything in it has been replayed. A process that dies leaves its file behind,
//! unlocked; the next process to look (at start-up, then every few seconds) *adopts* it:
//! copies its entries, in order, into its own journal (one durable commit), then removes it.
//! A file that cannot be trusted (truncated, overwritten: the open checks every page) is
//! moved to `<dir>/damaged/`, every entry that can still be read from its bytes is adopted,
//! and a report beside it (`<name>.json`) says how many were recovered and what was lost;
//! `memory health` lists those reports.
//!
//! Orphans are adopted whole, before anything the adopter journals later, so one process's
//! journal keeps the order of each dead process's writes. Writes of two processes that were
//! both journaling are not ordered against each other (nor were they against each other's
//! durable writes).
//!
//! With a sealer ([`OutboxConfig::sealer`]), the own journal, the orphans and legacy files
//! opened for adoption, the salvage of damaged ones and the notes (`usage.json`,
//! `refused.jsonl`) all use it. An orphan whose sealed entries do not open (written under
//! another key) is left where it is, and the others are adopted.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use memory_core::{KeptUsage, Namespace, Outbox, OutboxEntry, RefusedWrite, Result};
use serde::{Deserialize, Serialize};
use tokio::sync::RwLock;
use tracing::{info, warn};

use crate::config::OutboxConfig;
use crate::error::failed;
use crate::journal_notes;
use crate::outbox::{Opening, RedbOutbox};
use crate::sealing::{find, scan_sealed_entries};

/// The folder, inside a journal directory, for files that could not be trusted.
pub const DAMAGED_DIR: &str = "damaged";

/// What adoption found in a damaged journal (written as `<damaged dir>/<file>.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DamagedJournal {
    /// Where the damaged file now is.
    pub file: PathBuf,
    /// When it was moved aside (RFC 3339).
    pub moved_at: String,
    /// Why it could not be opened.
    pub error: String,
    /// Entries read from its bytes and replayed.
    pub recovered: u64,
    /// Entries seen in its bytes that could not be decoded (at least this many were lost;
    /// entries whose bytes were overwritten entirely cannot be counted).
    pub unreadable: u64,
}

/// The journals of a data directory, seen from one process: its own (created on demand) and
/// the orphans it adopts. Implements [`Outbox`] for the tiered layer (`memory_tiered::TieredStorage`).
#[derive(Debug)]
pub struct JournalDir {
    dir: PathBuf,
    /// Files outside `dir` that older versions journaled into (adopted like orphans).
    legacy: Vec<PathBuf>,
    own_name: String,
    config: OutboxConfig,
    /// This process's journal, once it had to journal. Appends hold the read lock until
    /// their entry is durable; removing the emptied file takes the write lock.
    own: RwLock<Option<RedbOutbox>>,
}

impl JournalDir {
    /// The journals in `dir` (created `0700` if missing). Nothing is written until the first
    /// append; journal files are created `0600`.
    /// `legacy` names single-file outboxes of earlier versions, adopted like orphans.
    pub async fn open(
        dir: impl AsRef<Path>,
        legacy: Vec<PathBuf>,
        config: OutboxConfig,
    ) -> Result<Arc<Self>> {
        config.validate()?;
        let dir = dir.as_ref().to_path_buf();
        let made = dir.clone();
        tokio::task::spawn_blocking(move || memory_files::create_dir_all(&made))
            .await
            .map_err(|e| failed("journal open", e))?
            .map_err(|e| failed("journal open", e))?;
        let own_name = format!(
            "{}-{}.redb",
            std::process::id(),
            uuid::Uuid::now_v7().simple()
        );
        Ok(Arc::new(JournalDir {
            dir,
            legacy,
            own_name,
            config,
            own: RwLock::new(None),
        }))
    }

    /// The journal directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// This process's journal file (it exists only while it holds entries).
    pub fn own_path(&self) -> PathBuf {
        self.dir.join(&self.own_name)
    }

    /// Journal files of other processes now in the directory (live or orphaned), and
    /// single-file outboxes of earlier versions.
    pub fn other_files(&self) -> Vec<PathBuf> {
        let mut out = files_with_extension(&self.dir, "redb");
        out.retain(|p| p.file_name().is_some_and(|n| n != self.own_name.as_str()));
        out.extend(self.legacy.iter().filter(|p| p.exists()).cloned());
        out.sort();
        out
    }

    /// Reports of damaged journals found so far (by any process of this data directory).
    pub fn damaged(&self) -> Vec<DamagedJournal> {
        let reports = files_with_extension(&self.dir.join(DAMAGED_DIR), "json");
        let mut out: Vec<DamagedJournal> = reports
            .iter()
            .filter_map(|p| std::fs::read(p).ok())
            .filter_map(|b| serde_json::from_slice(&b).ok())
            .collect();
        out.sort_by(|a: &DamagedJournal, b| a.moved_at.cmp(&b.moved_at));
        out
    }

    /// This process's journal, created if needed; the caller holds the read lock.
    async fn own_for_append(&self) -> Result<tokio::sync::RwLockReadGuard<'_, Option<RedbOutbox>>> {
        {
            let g = self.own.read().await;
            if g.is_some() {
                return Ok(g);
            }
        }
        let mut g = self.own.write().await;
        if g.is_none() {
            // Created under a name other processes pass over, and renamed once redb holds its
            // lock: a file another process can see is never one it could open (and take for
            // a stopped process's) before its owner locked it.
            let creating = self.dir.join(format!(".{}.creating", self.own_name));
            let o = RedbOutbox::open(&creating, self.config.clone()).await?;
            std::fs::rename(&creating, self.own_path()).map_err(|e| failed("journal create", e))?;
            info!(path = %self.own_path().display(), "journaling writes in this process's outbox");
            *g = Some(o);
        }
        Ok(g.downgrade())
    }

    /// Adopts one orphan: its entries go into this process's journal, then the file goes.
    async fn adopt_file(&self, path: &Path) -> Result<Vec<(u64, OutboxEntry)>> {
        match RedbOutbox::open_existing(path, self.config.clone()).await {
            Opening::Held | Opening::Gone => Ok(Vec::new()),
            Opening::Open(orphan) => {
                let entries: Vec<OutboxEntry> = orphan
                    .peek(usize::MAX)
                    .await?
                    .into_iter()
                    .map(|(_, e)| e)
                    .collect();
                let adopted = self.take_in(&entries).await?;
                drop(orphan);
                remove_file(path)?;
                if !adopted.is_empty() {
                    info!(file = %path.display(), entries = adopted.len(), "adopted the journal of a process that stopped");
                }
                Ok(adopted)
            }
            Opening::Damaged(why) => self.salvage(path, &why).await,
        }
    }

    /// Appends entries taken from another journal to this process's own.
    async fn take_in(&self, entries: &[OutboxEntry]) -> Result<Vec<(u64, OutboxEntry)>> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let own = self.own_for_append().await?;
        let Some(o) = own.as_ref() else {
            return Err(failed("journal adopt", "no journal"));
        };
        let seqs = o.append_many(entries).await?;
        Ok(seqs.into_iter().zip(entries.iter().cloned()).collect())
    }

    /// Moves a damaged journal aside, adopts what can be read from its bytes, and reports.
    async fn salvage(&self, path: &Path, why: &str) -> Result<Vec<(u64, OutboxEntry)>> {
        let damaged_dir = self.dir.join(DAMAGED_DIR);
        memory_files::create_dir_all(&damaged_dir).map_err(|e| failed("journal salvage", e))?;
        let stamp = chrono::Utc::now();
        let name = path
            .file_name()
            .map_or_else(|| "journal".into(), |n| n.to_string_lossy().into_owned());
        let aside = damaged_dir.join(format!("{}-{name}", stamp.format("%Y%m%dT%H%M%S%.3fZ")));
        // A process that still holds it would have made the open fail as held, not damaged;
        // renaming keeps the bytes for a person to look at.
        std::fs::rename(path, &aside).map_err(|e| failed("journal salvage", e))?;
        let bytes = std::fs::read(&aside).map_err(|e| failed("journal salvage", e))?;
        let (entries, unreadable) = scan_entries(
            &bytes,
            self.config.max_entry_bytes,
            self.config.sealer.as_ref(),
        );
        let adopted = self.take_in(&entries).await?;
        let report = DamagedJournal {
            file: aside.clone(),
            moved_at: stamp.to_rfc3339(),
            error: why.to_owned(),
            recovered: adopted.len() as u64,
            unreadable,
        };
        let text = serde_json::to_vec_pretty(&report).unwrap_or_default();
        let mut report_path = aside.clone().into_os_string();
        report_path.push(".json");
        if let Err(e) = memory_files::write(Path::new(&report_path), &text) {
            warn!(error = %e, "cannot write the damaged-journal report");
        }
        warn!(file = %aside.display(), error = why, recovered = report.recovered, unreadable, "a journal could not be trusted: moved aside, readable entries adopted");
        Ok(adopted)
    }
}

/// Removes a file and makes the removal durable.
/// The files of `dir` (none if it cannot be read) whose name ends in `.<extension>`.
fn files_with_extension(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(std::result::Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == extension))
        .collect()
}

fn remove_file(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(failed("journal remove", e)),
    }
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Entries found in the raw bytes of a damaged outbox file: every decodable JSON entry
/// (stored as a version byte and JSON, see `FORMAT.md`) and every sealed entry that opens with
/// `sealer`, each once, in the order their idempotency keys (UUID v7, time-ordered) give; and
/// how many entry starts did not decode (sealed entries without a sealer among them).
///
/// Written here because no crate reads a damaged redb file: redb refuses it whole.
pub(crate) fn scan_entries(
    bytes: &[u8],
    max_entry_bytes: usize,
    sealer: Option<&memory_seal::Sealer>,
) -> (Vec<OutboxEntry>, u64) {
    const START: &[u8] = b"{\"idempotency_key\":\"";
    let mut found = std::collections::BTreeMap::new();
    let mut unreadable = scan_sealed_entries(bytes, sealer, max_entry_bytes, &mut found);
    let mut at = 0;
    while let Some(offset) = find(&bytes[at..], START) {
        let begin = at + offset;
        let end = (begin + max_entry_bytes).min(bytes.len());
        let mut stream =
            serde_json::Deserializer::from_slice(&bytes[begin..end]).into_iter::<OutboxEntry>();
        match stream.next() {
            Some(Ok(entry)) => {
                found.insert(entry.idempotency_key.clone(), entry);
            }
            _ => unreadable += 1,
        }
        at = begin + START.len();
    }
    // A key found whole elsewhere (an older copy of a page) is not lost.
    (found.into_values().collect(), unreadable)
}

#[async_trait]
impl Outbox for JournalDir {
    async fn append(&self, entry: &OutboxEntry) -> Result<u64> {
        let own = self.own_for_append().await?;
        match own.as_ref() {
            Some(o) => o.append(entry).await,
            None => Err(failed("journal append", "no journal")),
        }
    }

    async fn peek(&self, max: usize) -> Result<Vec<(u64, OutboxEntry)>> {
        match self.own.read().await.as_ref() {
            Some(o) => o.peek(max).await,
            None => Ok(Vec::new()),
        }
    }

    async fn ack(&self, up_to: u64) -> Result<()> {
        match self.own.read().await.as_ref() {
            Some(o) => o.ack(up_to).await,
            None => Ok(()),
        }
    }

    async fn len(&self) -> Result<u64> {
        match self.own.read().await.as_ref() {
            Some(o) => o.len().await,
            None => Ok(0),
        }
    }

    /// A file that cannot be adopted now (its sealed entries do not open here, say) does not
    /// keep the others from being adopted: its error is returned only when nothing was.
    async fn adopt(&self) -> Result<Vec<(u64, OutboxEntry)>> {
        let mut adopted = Vec::new();
        let mut errors = Vec::new();
        for path in self.other_files() {
            match self.adopt_file(&path).await {
                Ok(entries) => adopted.extend(entries),
                Err(e) => errors.push((path, e)),
            }
        }
        let mut errors = errors.into_iter();
        let returned = if adopted.is_empty() {
            errors.next()
        } else {
            None
        };
        for (path, e) in errors {
            warn!(file = %path.display(), error = %e, "cannot adopt a journal now; it is left in place");
        }
        returned.map_or(Ok(adopted), |(_, e)| Err(e))
    }

    async fn keep_usage(&self, ns: &Namespace, usage: &KeptUsage) -> Result<()> {
        let (dir, ns, usage) = (self.dir.clone(), ns.clone(), *usage);
        let sealer = self.config.sealer.clone();
        tokio::task::spawn_blocking(move || {
            journal_notes::keep_usage(&dir, sealer.as_ref(), &ns, &usage)
        })
        .await
        .map_err(|e| failed("keep counts", e))?
    }

    async fn kept_usage(&self, ns: &Namespace) -> Result<Option<KeptUsage>> {
        let (dir, ns) = (self.dir.clone(), ns.clone());
        let sealer = self.config.sealer.clone();
        tokio::task::spawn_blocking(move || journal_notes::kept_usage(&dir, sealer.as_ref(), &ns))
            .await
            .map_err(|e| failed("read kept counts", e))
    }

    async fn record_refused(&self, refused: &RefusedWrite) -> Result<()> {
        let (dir, refused) = (self.dir.clone(), refused.clone());
        let sealer = self.config.sealer.clone();
        tokio::task::spawn_blocking(move || {
            journal_notes::record_refused(&dir, sealer.as_ref(), &refused)
        })
        .await
        .map_err(|e| failed("record refusal", e))?
    }

    async fn refused(&self) -> Result<Vec<RefusedWrite>> {
        let dir = self.dir.clone();
        let sealer = self.config.sealer.clone();
        tokio::task::spawn_blocking(move || journal_notes::refused(&dir, sealer.as_ref()))
            .await
            .map_err(|e| failed("read refusals", e))
    }

    async fn release_if_empty(&self) -> Result<()> {
        let mut own = self.own.write().await;
        let empty = match own.as_ref() {
            Some(o) => o.is_empty().await?,
            None => return Ok(()),
        };
        if empty {
            let path = self.own_path();
            *own = None;
            remove_file(&path)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use memory_core::{EpisodeId, Namespace, WriteOp};

    use super::*;

    fn entry(i: usize) -> OutboxEntry {
        OutboxEntry {
            idempotency_key: uuid::Uuid::now_v7().to_string(),
            namespace: Namespace::new("acme").unwrap(),
            op: WriteOp::PutEmbedding {
                episode_id: EpisodeId::new(),
                model: format!("model-{i}"),
                vector: vec![i as f32; 64],
            },
        }
    }

    #[tokio::test]
    async fn the_own_journal_exists_only_while_it_holds_entries() {
        let dir = tempfile::tempdir().unwrap();
        let j = JournalDir::open(dir.path(), Vec::new(), OutboxConfig::default())
            .await
            .unwrap();
        assert!(
            !j.own_path().exists(),
            "nothing written before the first append"
        );
        let seq = j.append(&entry(1)).await.unwrap();
        assert!(j.own_path().exists());
        assert_eq!(j.len().await.unwrap(), 1);
        j.release_if_empty().await.unwrap();
        assert!(j.own_path().exists(), "kept while it holds an entry");
        j.ack(seq).await.unwrap();
        j.release_if_empty().await.unwrap();
        assert!(!j.own_path().exists(), "removed once empty");
        let seq2 = j.append(&entry(2)).await.unwrap();
        assert!(seq2 >= 1);
        assert_eq!(j.peek(10).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn orphans_are_adopted_in_order_and_held_journals_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let legacy = dir.path().join("outbox.redb");
        let journals = dir.path().join("journal");
        // A dead process's journal and an old single-file outbox.
        let orphan_entries: Vec<OutboxEntry> = (0..5).map(entry).collect();
        {
            let dead = RedbOutbox::open(journals.join("1-dead.redb"), OutboxConfig::default())
                .await
                .unwrap();
            dead.append_many(&orphan_entries).await.unwrap();
            let old = RedbOutbox::open(&legacy, OutboxConfig::default())
                .await
                .unwrap();
            old.append(&entry(9)).await.unwrap();
        }
        // A live process's journal.
        let live = RedbOutbox::open(journals.join("2-live.redb"), OutboxConfig::default())
            .await
            .unwrap();
        live.append(&entry(7)).await.unwrap();

        let j = JournalDir::open(&journals, vec![legacy.clone()], OutboxConfig::default())
            .await
            .unwrap();
        let adopted = j.adopt().await.unwrap();
        let keys: Vec<&str> = adopted
            .iter()
            .map(|(_, e)| e.idempotency_key.as_str())
            .collect();
        let mut want: Vec<&str> = orphan_entries
            .iter()
            .map(|e| e.idempotency_key.as_str())
            .collect();
        assert_eq!(keys[..5], want[..], "the dead journal's entries, in order");
        assert_eq!(adopted.len(), 6, "and the legacy outbox's");
        assert!(!journals.join("1-dead.redb").exists() && !legacy.exists());
        assert!(
            journals.join("2-live.redb").exists(),
            "held by a live process"
        );
        assert_eq!(j.len().await.unwrap(), 6);
        want.clear();
        drop(live);
        let again = j.adopt().await.unwrap();
        assert_eq!(again.len(), 1, "adopted once its process is gone");
    }

    #[tokio::test]
    async fn a_damaged_journal_is_moved_aside_and_its_readable_entries_adopted() {
        let dir = tempfile::tempdir().unwrap();
        let journals = dir.path().join("journal");
        let entries: Vec<OutboxEntry> = (0..40).map(entry).collect();
        let path = journals.join("3-crashed.redb");
        {
            let o = RedbOutbox::open(&path, OutboxConfig::default())
                .await
                .unwrap();
            o.append_many(&entries).await.unwrap();
        }
        // Three pages in the middle overwritten.
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid..mid + 3 * 4096].fill(0xAB);
        std::fs::write(&path, &bytes).unwrap();

        let j = JournalDir::open(&journals, Vec::new(), OutboxConfig::default())
            .await
            .unwrap();
        let adopted = j.adopt().await.unwrap();
        assert!(!path.exists(), "moved aside");
        let reports = j.damaged();
        assert_eq!(reports.len(), 1);
        let r = &reports[0];
        assert!(r.file.exists(), "the bytes are kept: {r:?}");
        assert_eq!(r.recovered, adopted.len() as u64);
        assert!(r.recovered > 0 && r.recovered <= 40, "{r:?}");
        // Every adopted entry is one of the originals, unchanged, in order.
        let originals: std::collections::HashMap<&str, &OutboxEntry> = entries
            .iter()
            .map(|e| (e.idempotency_key.as_str(), e))
            .collect();
        let mut last = String::new();
        for (_, e) in &adopted {
            assert_eq!(Some(&e), originals.get(e.idempotency_key.as_str()));
            assert!(e.idempotency_key > last);
            last.clone_from(&e.idempotency_key);
        }
    }

    #[tokio::test]
    async fn a_truncated_journal_keeps_what_its_bytes_hold() {
        let dir = tempfile::tempdir().unwrap();
        let journals = dir.path().join("journal");
        let entries: Vec<OutboxEntry> = (0..40).map(entry).collect();
        let path = journals.join("4-truncated.redb");
        {
            let o = RedbOutbox::open(&path, OutboxConfig::default())
                .await
                .unwrap();
            o.append_many(&entries).await.unwrap();
        }
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let j = JournalDir::open(&journals, Vec::new(), OutboxConfig::default())
            .await
            .unwrap();
        let adopted = j.adopt().await.unwrap();
        let r = &j.damaged()[0];
        assert!(r.error.contains("truncated"), "{r:?}");
        assert_eq!(r.recovered, adopted.len() as u64);
        assert!(r.recovered > 0, "{r:?}");
    }
}

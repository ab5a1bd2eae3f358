//! Encryption at rest, end to end: with a sealer nothing of the content, the namespaces or the
//! ids can be read in any file this crate writes (cache, journals, journal notes), and all of it
//! is read back under the same key; under another key the cache misses and the journal refuses.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use memory_core::{
    Cache, CachedValue, Episode, ExistingLearned, Heuristic, HeuristicId, KeptUsage, LearnedItems,
    Namespace, Outbox, OutboxEntry, Outcome, Pattern, PatternId, RefusedWrite, TaskType, WriteOp,
};
use memory_seal::{MasterKey, Sealer};
use memory_testkit::conformance;
use redb::{ReadableDatabase, ReadableTable};

use crate::tables::{ENTRIES, OUTBOX};
use crate::{CacheConfig, JournalDir, OutboxConfig, RedbCache, RedbOutbox};

const MARKER: &str = "ZQXMARKER";

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_750_000_000 + secs, 0).unwrap()
}

fn sealer() -> Sealer {
    Sealer::new(&MasterKey::generate().unwrap())
}

fn cache_config(sealer: Option<&Sealer>) -> CacheConfig {
    match sealer {
        Some(s) => CacheConfig::default().with_sealer(s.clone()),
        None => CacheConfig::default(),
    }
}

fn outbox_config(sealer: Option<&Sealer>) -> OutboxConfig {
    match sealer {
        Some(s) => OutboxConfig::default().with_sealer(s.clone()),
        None => OutboxConfig::default(),
    }
}

/// Episodes, patterns and heuristics whose every text, namespace and id holds [`MARKER`].
struct Data {
    ns: Namespace,
    episode: Episode,
    patterns: Vec<Pattern>,
    heuristics: Vec<Heuristic>,
    entries: Vec<OutboxEntry>,
}

fn data() -> Data {
    let m = |s: &str| format!("{s} {MARKER}");
    let ns = Namespace::new(format!("team-{MARKER}/proj-{MARKER}")).unwrap();
    let domain = format!("web_{MARKER}");
    let mut e = conformance::episode(&m("fix"), TaskType::Debugging, &domain, Some(MARKER), at(0));
    e.context.framework = Some(m("axum"));
    e.context.tags.push(m("tag"));
    let (build, edit) = (format!("cargo_{MARKER}"), format!("edit_{MARKER}"));
    let spec = [
        (build.as_str(), true),
        (edit.as_str(), false),
        (build.as_str(), true),
    ];
    e.steps = conformance::steps(&spec, 1, at(1));
    e.steps[0].input.parameters = serde_json::json!({ "note": m("param") });
    let c = conformance::completion_for(&e, Outcome::success(m("done")), at(10));
    e.outcome = Some(c.outcome.clone());
    e.reward = Some(c.reward.clone());
    e.reflection = Some(c.reflection.clone());
    e.completed_at = Some(c.completed_at);
    let update = memory_core::extract_learning(&e, e.outcome.as_ref().unwrap(), at(10));
    let changes = update.apply(ExistingLearned::default());
    let mut patterns: Vec<Pattern> = changes.patterns.into_iter().map(|p| p.item).collect();
    for (i, p) in patterns.iter_mut().enumerate() {
        p.id = PatternId(format!("{MARKER}-pattern-{i}"));
    }
    let mut heuristics: Vec<Heuristic> = changes.heuristics.into_iter().map(|h| h.item).collect();
    for (i, h) in heuristics.iter_mut().enumerate() {
        h.id = HeuristicId(format!("{MARKER}-heuristic-{i}"));
        h.condition = m(&h.condition);
        h.action = m(&h.action);
    }
    assert!(!patterns.is_empty() && !heuristics.is_empty());
    let entry = |i: usize, op| OutboxEntry {
        idempotency_key: format!("{}-{i}", uuid::Uuid::now_v7()),
        namespace: ns.clone(),
        op,
    };
    let learned = LearnedItems {
        patterns: patterns.clone(),
        heuristics: heuristics.clone(),
        ..LearnedItems::default()
    };
    let entries = vec![
        entry(0, WriteOp::CreateEpisode(e.clone())),
        entry(1, WriteOp::CompleteEpisode(c)),
        entry(2, WriteOp::PutLearned(learned)),
    ];
    Data {
        ns,
        episode: e,
        patterns,
        heuristics,
        entries,
    }
}

impl Data {
    fn values(&self) -> Vec<CachedValue> {
        let mut out = vec![CachedValue::Episode(Arc::new(self.episode.clone()))];
        out.extend(self.patterns.iter().cloned().map(CachedValue::Pattern));
        out.extend(self.heuristics.iter().cloned().map(CachedValue::Heuristic));
        out
    }
}

fn usage() -> KeptUsage {
    KeptUsage {
        episodes: 3,
        steps: 7,
        read_at: at(20),
    }
}

fn refusal(ns: &Namespace) -> RefusedWrite {
    RefusedWrite {
        namespace: ns.clone(),
        write: format!("create_episode {MARKER}"),
        episode_id: None,
        resource: "episodes".into(),
        limit: 10,
        refused_at: at(30),
    }
}

/// Writes the data through the cache (closed cleanly) and a journal directory (its own
/// journal left behind, as by a process that stopped), with its notes.
async fn write_everything(dir: &Path, sealer: Option<&Sealer>, d: &Data) {
    let cache = RedbCache::open(dir.join("cache.redb"), cache_config(sealer))
        .await
        .unwrap();
    cache.put_many(&d.ns, &d.values()).await.unwrap();
    cache.flush().await.unwrap();
    cache.close().await.unwrap();
    let journal = JournalDir::open(dir.join("journal"), Vec::new(), outbox_config(sealer))
        .await
        .unwrap();
    for e in &d.entries {
        journal.append(e).await.unwrap();
    }
    journal.keep_usage(&d.ns, &usage()).await.unwrap();
    journal.record_refused(&refusal(&d.ns)).await.unwrap();
}

/// Every file under `dir`.
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// The files under `dir` in which the marker can be read: as is, in lowercase, or in UTF-16LE.
fn files_showing_the_marker(dir: &Path) -> Vec<PathBuf> {
    let utf16: Vec<u8> = MARKER.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let needles = [
        MARKER.as_bytes().to_vec(),
        MARKER.to_lowercase().into_bytes(),
        utf16,
    ];
    let mut all = Vec::new();
    files(dir, &mut all);
    all.into_iter()
        .filter(|f| {
            let bytes = std::fs::read(f).unwrap();
            needles
                .iter()
                .any(|n| bytes.windows(n.len()).any(|w| w == n.as_slice()))
        })
        .collect()
}

#[tokio::test]
async fn sealed_files_show_nothing_and_plain_ones_show_the_marker() {
    let d = data();
    let plain = tempfile::tempdir().unwrap();
    write_everything(plain.path(), None, &d).await;
    let shown = files_showing_the_marker(plain.path());
    // The cache, the journal and both notes: the check can fail.
    assert_eq!(shown.len(), 4, "{shown:?}");

    let sealed = tempfile::tempdir().unwrap();
    write_everything(sealed.path(), Some(&sealer()), &d).await;
    let mut all = Vec::new();
    files(sealed.path(), &mut all);
    assert_eq!(all.len(), 4, "the same files: {all:?}");
    let shown = files_showing_the_marker(sealed.path());
    assert!(shown.is_empty(), "readable with a sealer: {shown:?}");
}

/// Reads everything back under `sealer` (the journal is adopted from the one left behind).
async fn read_everything(dir: &Path, sealer: &Sealer, d: &Data) {
    let cache = RedbCache::open(dir.join("cache.redb"), cache_config(Some(sealer)))
        .await
        .unwrap();
    for v in d.values() {
        assert_eq!(cache.get(&d.ns, &v.key()).await.unwrap(), Some(v));
    }
    assert_eq!(cache.stats().disk_hits, d.values().len() as u64);
    cache.close().await.unwrap();
    let journal = JournalDir::open(dir.join("journal"), Vec::new(), outbox_config(Some(sealer)))
        .await
        .unwrap();
    let adopted: Vec<OutboxEntry> = journal
        .adopt()
        .await
        .unwrap()
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    assert_eq!(adopted, d.entries);
    let peeked: Vec<OutboxEntry> = journal
        .peek(10)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    assert_eq!(peeked, d.entries);
    assert_eq!(journal.kept_usage(&d.ns).await.unwrap(), Some(usage()));
    assert_eq!(journal.refused().await.unwrap(), vec![refusal(&d.ns)]);
}

#[tokio::test]
async fn the_same_key_reads_everything_back() {
    let (d, key) = (data(), MasterKey::generate().unwrap());
    let dir = tempfile::tempdir().unwrap();
    write_everything(dir.path(), Some(&Sealer::new(&key)), &d).await;
    // Another sealer of the same key, as the next process builds it.
    let again = MasterKey::from_hex(&key.to_hex()).unwrap();
    read_everything(dir.path(), &Sealer::new(&again), &d).await;
}

#[tokio::test]
async fn a_cache_under_another_setting_misses_and_starts_over() {
    let (d, key, other) = (data(), sealer(), sealer());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.redb");
    let open = |s: Option<Sealer>| {
        let config = cache_config(s.as_ref());
        let path = path.clone();
        async move { RedbCache::open(path, config).await.unwrap() }
    };
    let episode = CachedValue::Episode(Arc::new(d.episode.clone()));
    let key_of = episode.key();
    // Written unsealed, then sealed under `key`, under `other`, and unsealed again: each time
    // the entries of the previous setting are misses, never errors, and the new ones hit.
    let settings = [None, Some(key.clone()), Some(other), None, Some(key)];
    for (i, s) in settings.into_iter().enumerate() {
        let c = open(s.clone()).await;
        assert_eq!(c.get(&d.ns, &key_of).await.unwrap(), None, "setting {i}");
        assert_eq!(c.stats().entries, 0, "setting {i}: a new file");
        c.put(&d.ns, &episode).await.unwrap();
        c.close().await.unwrap();
        let c = open(s).await;
        assert_eq!(c.get(&d.ns, &key_of).await.unwrap(), Some(episode.clone()));
        c.close().await.unwrap();
    }
    let mut left = Vec::new();
    files(dir.path(), &mut left);
    assert_eq!(left, vec![path], "no file left beside the cache");
}

#[tokio::test]
async fn a_plain_cache_file_is_replaced_so_its_bytes_do_not_stay() {
    let d = data();
    let dir = tempfile::tempdir().unwrap();
    let c = RedbCache::open(dir.path().join("cache.redb"), CacheConfig::default())
        .await
        .unwrap();
    c.put_many(&d.ns, &d.values()).await.unwrap();
    c.close().await.unwrap();
    assert!(!marker_positions(&dir.path().join("cache.redb")).is_empty());
    let c = RedbCache::open(dir.path().join("cache.redb"), cache_config(Some(&sealer())))
        .await
        .unwrap();
    c.close().await.unwrap();
    assert!(marker_positions(&dir.path().join("cache.redb")).is_empty());
}

/// Where the marker is in `file`.
fn marker_positions(file: &Path) -> Vec<usize> {
    let bytes = std::fs::read(file).unwrap();
    bytes
        .windows(MARKER.len())
        .enumerate()
        .filter(|(_, w)| *w == MARKER.as_bytes())
        .map(|(i, _)| i)
        .collect()
}

#[tokio::test]
async fn a_sealed_cache_value_that_does_not_open_is_a_corrupt_miss() {
    let (d, key) = (data(), sealer());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.redb");
    let episode = CachedValue::Episode(Arc::new(d.episode.clone()));
    let c = RedbCache::open(&path, cache_config(Some(&key)))
        .await
        .unwrap();
    c.put(&d.ns, &episode).await.unwrap();
    c.close().await.unwrap();
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(ENTRIES).unwrap();
            let (k, mut v) = {
                let (k, v) = t.first().unwrap().unwrap();
                (k.value().to_vec(), v.value().to_vec())
            };
            assert_eq!(k.len(), 32, "a hidden key");
            let last = v.len() - 1;
            v[last] ^= 1;
            t.insert(k.as_slice(), v.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let c = RedbCache::open(&path, cache_config(Some(&key)))
        .await
        .unwrap();
    assert_eq!(c.get(&d.ns, &episode.key()).await.unwrap(), None);
    assert_eq!(c.stats().corrupt, 1);
    assert_eq!(c.stats().entries, 0, "removed");
    c.close().await.unwrap();
}

#[tokio::test]
async fn a_journal_under_another_key_is_an_error_and_keeps_its_entries() {
    let (d, key, other) = (data(), sealer(), sealer());
    let dir = tempfile::tempdir().unwrap();
    write_everything(dir.path(), Some(&key), &d).await;
    let journals = dir.path().join("journal");
    let mut left = Vec::new();
    files(&journals, &mut left);
    let file = left
        .into_iter()
        .find(|p| p.extension().is_some_and(|x| x == "redb"))
        .unwrap();
    for wrong in [Some(&other), None] {
        let o = RedbOutbox::open(&file, outbox_config(wrong)).await.unwrap();
        let err = o.peek(10).await.unwrap_err();
        assert!(matches!(err, memory_core::Error::Decode { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("it is kept"), "{text}");
        if wrong.is_some() {
            assert!(text.contains("another key"), "{text}");
        }
        assert_eq!(o.len().await.unwrap(), 3);
        drop(o);
        // Adoption under the wrong key fails and leaves the file where it is.
        let j = JournalDir::open(&journals, Vec::new(), outbox_config(wrong))
            .await
            .unwrap();
        assert!(j.adopt().await.is_err());
        assert!(file.exists());
        assert_eq!(j.len().await.unwrap(), 0);
    }
    read_everything(dir.path(), &key, &d).await;
}

#[tokio::test]
async fn plain_journal_entries_are_read_by_a_sealed_process() {
    let (d, key) = (data(), sealer());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal").join("1-old.redb");
    {
        let o = RedbOutbox::open(&path, OutboxConfig::default())
            .await
            .unwrap();
        o.append(&d.entries[0]).await.unwrap();
    }
    let o = RedbOutbox::open(&path, outbox_config(Some(&key)))
        .await
        .unwrap();
    o.append(&d.entries[1]).await.unwrap();
    let peeked: Vec<OutboxEntry> = o
        .peek(10)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    assert_eq!(peeked, d.entries[..2]);
    drop(o);
    // The first is stored as it was, the second sealed.
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_read().unwrap();
        let t = txn.open_table(OUTBOX).unwrap();
        let rows: Vec<Vec<u8>> = t
            .iter()
            .unwrap()
            .map(|r| r.unwrap().1.value().to_vec())
            .collect();
        assert_eq!(rows[0][0], crate::OUTBOX_FORMAT_VERSION);
        assert!(rows[1].starts_with(crate::sealing::JOURNAL_MAGIC));
    }
    // A sealed journal directory adopts it whole.
    let j = JournalDir::open(
        dir.path().join("journal"),
        Vec::new(),
        outbox_config(Some(&key)),
    )
    .await
    .unwrap();
    let adopted: Vec<OutboxEntry> = j
        .adopt()
        .await
        .unwrap()
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    assert_eq!(adopted, d.entries[..2]);
    assert!(!path.exists());
}

#[tokio::test]
async fn a_damaged_sealed_journal_gives_up_the_entries_its_bytes_hold() {
    let key = sealer();
    let d = data();
    let dir = tempfile::tempdir().unwrap();
    let journals = dir.path().join("journal");
    let path = journals.join("3-crashed.redb");
    let entries: Vec<OutboxEntry> = (0..30)
        .map(|i| OutboxEntry {
            idempotency_key: format!("{}-{i:02}", uuid::Uuid::now_v7()),
            ..d.entries[i % 3].clone()
        })
        .collect();
    {
        let o = RedbOutbox::open(&path, outbox_config(Some(&key)))
            .await
            .unwrap();
        o.append_many(&entries).await.unwrap();
    }
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let j = JournalDir::open(&journals, Vec::new(), outbox_config(Some(&key)))
        .await
        .unwrap();
    let adopted = j.adopt().await.unwrap();
    let report = &j.damaged()[0];
    assert!(report.recovered > 0, "{report:?}");
    assert_eq!(report.recovered, adopted.len() as u64);
    for (_, e) in &adopted {
        assert!(entries.contains(e));
    }
    let reports = files_showing_the_marker(dir.path());
    assert!(reports.is_empty(), "{reports:?}");
}

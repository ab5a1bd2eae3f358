//! Outbox crash safety: a child process (`outbox_child`) appends entries and prints each sequence
//! number as soon as `append` returns; the test kills it with SIGKILL at a random point, reopens
//! the outbox and checks that every acknowledged entry is present, in order, byte-for-byte equal
//! to what was appended (none torn), and that sequence numbers keep increasing across crashes.
//! Several rounds reuse the same file (with acks in between), alternating one and four
//! concurrent appenders so kills also land inside group commits.
//!
//! Pins the invariant "an acknowledged write is never lost" for the outbox half of it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use memory_core::Outbox;
use memory_storage_redb::{OutboxConfig, RedbOutbox};
use rand::{Rng, SeedableRng};

#[path = "../src/bin/outbox_child/entry.rs"]
mod entry;

const ROUNDS: u64 = 6;

/// Complete `<seq> <index>` lines; a partial last line (cut by the kill) is ignored.
fn parse_acks(raw: &[u8]) -> Vec<(u64, u64)> {
    raw.split_inclusive(|b| *b == b'\n')
        .filter(|l| l.ends_with(b"\n"))
        .filter_map(|l| {
            let l = std::str::from_utf8(l).ok()?.trim();
            let (s, i) = l.split_once(' ')?;
            Some((s.parse().ok()?, i.parse().ok()?))
        })
        .collect()
}

#[test]
fn acknowledged_appends_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.redb");
    let seed: u64 = rand::rng().random();
    eprintln!("seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    let mut highest_seq = 0u64;
    let mut acked_up_to = 0u64;
    let mut total_acknowledged = 0usize;
    for round in 0..ROUNDS {
        let concurrency = if round % 2 == 0 { 1 } else { 4 };
        let start = round * 1_000_000;
        let mut child = Command::new(env!("CARGO_BIN_EXE_outbox_child"))
            .arg(&path)
            .arg(start.to_string())
            .arg(concurrency.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(
            line.trim(),
            "ready",
            "child failed to start (round {round})"
        );

        // Let it acknowledge a random number of appends, then kill it at a random moment.
        let want = rng.random_range(5..120usize);
        let mut raw = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        for _ in 0..want {
            assert!(Instant::now() < deadline, "child too slow (round {round})");
            let n = stdout.read_until(b'\n', &mut raw).unwrap();
            assert!(n > 0, "child exited early (round {round})");
        }
        std::thread::sleep(Duration::from_micros(rng.random_range(0..3_000)));
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert!(!status.success());
        stdout.read_to_end(&mut raw).unwrap(); // lines written before the kill

        let acks = parse_acks(&raw);
        assert!(acks.len() >= want, "round {round}: {} acks", acks.len());
        total_acknowledged += acks.len();

        let stored = rt.block_on(async {
            let outbox = RedbOutbox::open(&path, OutboxConfig::default())
                .await
                .unwrap();
            let all = outbox.peek(usize::MAX).await.unwrap();
            assert_eq!(
                outbox.len().await.unwrap(),
                all.len() as u64,
                "len agrees with peek"
            );
            all
        });

        // In order, strictly increasing, and past everything seen before the crash.
        assert!(
            stored.windows(2).all(|w| w[0].0 < w[1].0),
            "round {round}: not ordered"
        );
        let by_seq: BTreeMap<u64, &memory_core::OutboxEntry> =
            stored.iter().map(|(s, e)| (*s, e)).collect();
        for (seq, e) in &by_seq {
            assert!(
                *seq > acked_up_to,
                "round {round}: acked seq {seq} came back"
            );
            // Not torn: every stored entry is exactly one of the entries the child appended.
            let i: u64 = e
                .idempotency_key
                .strip_prefix("entry-")
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(
                *e,
                &entry::entry(i),
                "round {round}: seq {seq} differs from what was appended"
            );
        }
        // Every acknowledged append is present, under the sequence number it was given.
        for (seq, i) in &acks {
            let e = by_seq.get(seq).unwrap_or_else(|| {
                panic!("round {round}: acknowledged seq {seq} (entry {i}) lost")
            });
            assert_eq!(
                e.idempotency_key,
                format!("entry-{i}"),
                "round {round}: seq {seq}"
            );
            assert!(
                *seq > highest_seq,
                "round {round}: seq {seq} reused (previous max {highest_seq})"
            );
        }
        if concurrency == 1 {
            // One appender: appends are acknowledged in index order, so seq order = index order.
            assert!(acks.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1));
        }
        highest_seq = highest_seq.max(by_seq.keys().copied().max().unwrap_or(0));

        // Acknowledge a random prefix before the next round.
        if let Some(&(cut, _)) = acks.get(rng.random_range(0..acks.len())) {
            rt.block_on(async {
                let outbox = RedbOutbox::open(&path, OutboxConfig::default())
                    .await
                    .unwrap();
                outbox.ack(cut).await.unwrap();
                assert!(
                    outbox
                        .peek(1)
                        .await
                        .unwrap()
                        .first()
                        .is_none_or(|(s, _)| *s > cut)
                );
            });
            acked_up_to = acked_up_to.max(cut);
        }
    }
    eprintln!("{total_acknowledged} acknowledged appends over {ROUNDS} kills, all present");
}

//! Connection exhaustion against a hung sqld: every connection of the process busy with a call
//! the server never answers, until each call's timeout fires; then recovery, cycle after
//! cycle, with the number of connections open to the server staying flat.
//!
//! Each cycle stops sqld (SIGSTOP), starts more calls at once than the process has
//! connections (reads and writes), waits until every one has ended (by the call timeout: the
//! hang watchdog is set far off here), resumes sqld, and waits until the journal is replayed
//! and a read succeeds. The connections this process holds to sqld (ESTABLISHED sockets in
//! `/proc/net/tcp` whose remote port is sqld's) are counted after each cycle: they must not
//! grow after the first cycles (a leak of one connection per timed-out call would). Four
//! cycles by default; `MEMORY_EXHAUSTION_SOAK_SECS` runs cycles for that long instead (the
//! ten-minute soak of issue #65).
//!
//! Skips without sqld outside CI. Linux only (the socket count).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use memory_core::{EpisodeQuery, EpisodeStore, NewEpisode, TaskContext, TaskType};
use memory_stack::{BreakerConfig, StackBuilder, StorageMode, TieredConfig};
use tests::sqld::{SqldServer, require_sqld};

const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// Calls started at once while the server hangs: more than the process's connections (one
/// writer and four readers by default).
const AT_ONCE: usize = 24;

/// Sockets of this network namespace connected to `port` on loopback and established.
fn connections_to(port: u16) -> usize {
    let mut n = 0;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (Some(remote), Some(state)) = (cols.get(2), cols.get(3)) else {
                continue;
            };
            let remote_port = remote
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if remote_port == Some(port) && *state == "01" {
                n += 1;
            }
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_plateau_through_hangs_that_outlast_every_call() {
    if require_sqld().is_none() || !std::path::Path::new("/proc/net/tcp").exists() {
        return;
    }
    let soak = std::env::var("MEMORY_EXHAUSTION_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs);
    let sqld = SqldServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stack = StackBuilder::new(dir.path())
        .mode(StorageMode::Remote {
            url: sqld.url(),
            auth_token: None,
        })
        .configure_turso(|b| b.call_timeout(CALL_TIMEOUT))
        .tiered_config(TieredConfig {
            breaker: BreakerConfig {
                open_for: Duration::from_millis(500),
                // Far off: here the call timeout ends the calls a hang holds.
                hang_check_after: Duration::from_secs(3_600),
                ..BreakerConfig::default()
            },
            sync_interval: Duration::from_millis(100),
            ..TieredConfig::default()
        })
        .open()
        .await
        .unwrap();
    let m = stack.memory_arc();
    let ns = memory_core::Namespace::new("exhaustion").unwrap();
    let new = |i: usize| {
        NewEpisode::new(
            format!("task {i}"),
            TaskType::Debugging,
            TaskContext::new("ops"),
        )
    };
    m.start_episode(&ns, new(0)).await.unwrap();

    let started = Instant::now();
    let mut counts = Vec::new();
    let mut acknowledged = 1u64;
    let mut cycle = 0;
    loop {
        cycle += 1;
        sqld.freeze().unwrap();
        let hung_at = Instant::now();
        let calls: Vec<_> = (0..AT_ONCE)
            .map(|i| {
                let (m, ns) = (std::sync::Arc::clone(&m), ns.clone());
                tokio::spawn(async move {
                    if i % 2 == 0 {
                        m.start_episode(&ns, new(i)).await.is_ok()
                    } else {
                        let _ = m.list_episodes(&ns, &EpisodeQuery::default()).await;
                        false
                    }
                })
            })
            .collect();
        for call in calls {
            if call.await.unwrap() {
                acknowledged += 1;
            }
        }
        let ended_after = hung_at.elapsed();
        sqld.thaw().unwrap();
        // Recovery: the journal replayed, a read answered by the server.
        let recovering = Instant::now();
        loop {
            let _ = stack.tiered().sync_now().await;
            if stack.tiered().status().outbox_len == 0 && stack.tiered().ping().await.is_ok() {
                break;
            }
            assert!(
                recovering.elapsed() < Duration::from_secs(60),
                "cycle {cycle}: no recovery a minute after sqld resumed: {:?}",
                stack.tiered().status()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let open = connections_to(sqld.port());
        eprintln!(
            "cycle {cycle}: calls ended {ended_after:?} into the hang, recovered in {:?}, {open} connections open to sqld",
            recovering.elapsed()
        );
        counts.push(open);
        let done = match soak {
            Some(d) => started.elapsed() >= d,
            None => cycle >= 4,
        };
        if done {
            break;
        }
    }
    let stats = m.stats(&ns).await.unwrap();
    assert_eq!(
        stats.episodes, acknowledged,
        "every acknowledged start stored"
    );
    // The count settles once the pools are warm: no later cycle holds more than the first two.
    let settled = counts.iter().take(2).copied().max().unwrap_or(0);
    let most = counts.iter().copied().max().unwrap_or(0);
    assert!(
        most <= settled + 2,
        "connections to sqld grew through the cycles: {counts:?}"
    );
    stack.shutdown().await.unwrap();
}

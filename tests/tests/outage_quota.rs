//! Quotas through a database outage, drilled with CLI processes in remote mode on one sqld
//! (`max_episodes = 10`), with sqld stopped (killed, then started again) and with it hung
//! (SIGSTOP, then SIGCONT):
//! - data directory A starts 3 episodes and B, beside it on the same server, 6;
//! - during the outage, each start in A is a new process that cannot read the counts: it
//!   holds the quota with the counts kept beside A's journal (the last read: 2) plus what A's
//!   journal holds, so starts are acknowledged until that estimate reaches the quota and the
//!   next is refused with the quota error. (Before, a process that had read no counts let
//!   every start through: 16 of 16 were acknowledged and replayed.)
//! - the estimate could not see B's writes, so once the server answers the replay finds the
//!   namespace at 9: it stores one start and refuses the others entry by entry; `memory sync
//!   status` lists each refusal, and the namespace ends with exactly its quota.
//!
//! Skips without sqld outside CI.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use serde_json::Value;
use tests::procs::{CliRun, PidSlot, run_cli};
use tests::sqld::{SqldServer, require_sqld};

const QUOTA: u64 = 10;
const NS: &str = "quota/drill";

#[derive(Debug, Clone, Copy)]
enum Outage {
    Stopped,
    Hung,
}

fn configure(dir: &Path, url: &str) {
    let toml = format!(
        "mode = \"remote\"\ndatabase_url = \"{url}\"\nnamespace = \"{NS}\"\n\n[memory.quotas]\nmax_episodes = {QUOTA}\n"
    );
    std::fs::write(dir.join("memory.toml"), toml).unwrap();
}

async fn cli(dir: &Path, args: &[&str]) -> CliRun {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    run_cli(dir, &all, &[], &PidSlot::default()).await.unwrap()
}

async fn start(dir: &Path, task: &str) -> CliRun {
    cli(dir, &["episode", "start", "--task", task]).await
}

async fn drill(outage: Outage) {
    if require_sqld().is_none() {
        return;
    }
    let mut sqld = SqldServer::start().await.unwrap();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    configure(a.path(), &sqld.url());
    configure(b.path(), &sqld.url());
    for i in 0..3 {
        let run = start(a.path(), &format!("a {i}")).await;
        assert_eq!(run.code, Some(0), "{run:?}");
    }
    for i in 0..6 {
        let run = start(b.path(), &format!("b {i}")).await;
        assert_eq!(run.code, Some(0), "{run:?}");
    }

    match outage {
        Outage::Stopped => sqld.stop().await,
        Outage::Hung => sqld.freeze().unwrap(),
    }
    let mut acknowledged = 0u64;
    let refused = loop {
        let run = start(a.path(), &format!("during {acknowledged}")).await;
        if run.code != Some(0) {
            break run;
        }
        acknowledged += 1;
        assert!(
            acknowledged <= QUOTA,
            "{acknowledged} starts acknowledged during the {outage:?} outage"
        );
    };
    eprintln!("{outage:?} outage: {acknowledged} starts acknowledged, then {refused:?}");
    assert_eq!(
        refused.json().unwrap()["error"]["kind"],
        "quota_exceeded",
        "{outage:?}: {refused:?}"
    );
    // The counts A kept were read before its third start: 2, plus what it journaled.
    assert_eq!(acknowledged, QUOTA - 2, "{outage:?}");

    match outage {
        Outage::Stopped => sqld.resume().await.unwrap(),
        Outage::Hung => sqld.thaw().unwrap(),
    }
    let synced = cli(a.path(), &["sync", "now"]).await;
    assert_eq!(synced.code, Some(0), "{synced:?}");
    let status = cli(a.path(), &["sync", "status"]).await;
    assert_eq!(status.code, Some(0), "{status:?}");
    let status = status.json().unwrap();
    assert_eq!(status["status"]["outbox_len"], 0, "{status}");
    let refusals = status["refused_over_quota"].as_array().unwrap();
    let starts: Vec<&Value> = refusals
        .iter()
        .filter(|r| r["write"] == "create_episode")
        .collect();
    // The namespace held 9 when the replay began: one start fits, the rest are refused.
    assert_eq!(starts.len() as u64, acknowledged - 1, "{status}");
    for r in &starts {
        assert_eq!(r["namespace"], NS, "{r}");
        assert_eq!(r["resource"], "episodes", "{r}");
        assert_eq!(r["limit"], QUOTA, "{r}");
    }
    let text = run_cli(a.path(), &["sync", "status"], &[], &PidSlot::default())
        .await
        .unwrap();
    assert!(
        text.stdout
            .contains(&format!("refused     {}", refusals.len())),
        "{}",
        text.stdout
    );

    let stats = cli(b.path(), &["stats"]).await;
    assert_eq!(stats.code, Some(0), "{stats:?}");
    assert_eq!(
        stats.json().unwrap()["counts"]["episodes"],
        QUOTA,
        "{stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_hold_through_a_stopped_database() {
    drill(Outage::Stopped).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_hold_through_a_hung_database() {
    drill(Outage::Hung).await;
}

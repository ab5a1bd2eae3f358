//! Many processes, one memory: four CLI loops, two `memory mcp` servers driven over stdio and
//! one process using the library (`soak_child`) record episodes on one data directory at the
//! same time, while a random participant is killed with SIGKILL (and started again) every
//! second or so. Beside them a person runs `stats`, `consolidate`, `backup`, `export` and
//! `import`, and a `restore`, which must refuse while the directory is in use.
//!
//! Before version 5, a second process on a data directory failed every call after ten
//! seconds with "cannot open the outbox ... (another memory process may hold it)", a second
//! server could not start, and steps of two writers on one episode collided.
//!
//! Afterwards every acknowledged write is present exactly once (each step carries a unique
//! marker, its action text; a marker written by a call that was killed before it answered
//! may be present, at most once), each acknowledged completion is completed, step numbers
//! are dense in every episode, the context pattern counts each completed episode once, and
//! no call failed (a call cut off by a kill is not a failure; a lock or busy error would be).
//!
//! `MEMORY_SOAK=long` runs ten times as many operations and prints the figures (the short
//! run, in CI, prints them too).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use memory_core::{
    EpisodeId, EpisodeQuery, EpisodeStore, LearnedQuery, Namespace, PatternKind, StorageExt,
};
use memory_stack::{MasterKey, StackBuilder};
use rand::Rng;
use serde_json::{Value, json};
use tests::procs::{CallEnd, McpProcess, PidSlot, kill_slot, run_cli};
use tokio::io::{AsyncBufReadExt, BufReader};

const NS: &str = "soak";
const STEPS: usize = 3;

/// Operations of one run.
#[derive(Debug, Clone, Copy)]
struct Plan {
    cli_loops: usize,
    cli_episodes: usize,
    mcp_servers: usize,
    mcp_episodes: usize,
    library_episodes: usize,
    /// Rounds of maintenance commands (at most: they stop when the agents are done).
    maintenance_rounds: usize,
    /// Longest pause between two kills.
    kill_every: Duration,
}

impl Plan {
    fn from_env() -> Self {
        let long = std::env::var("MEMORY_SOAK").is_ok_and(|v| v == "long");
        let scale = if long { 10 } else { 1 };
        Plan {
            cli_loops: 4,
            cli_episodes: 25 * scale,
            mcp_servers: 2,
            mcp_episodes: 80 * scale,
            library_episodes: 150 * scale,
            maintenance_rounds: 3 * scale,
            kill_every: Duration::from_millis(1_500),
        }
    }
}

/// What every participant was told, and what went wrong.
#[derive(Debug, Default)]
struct Ledger {
    started: HashSet<EpisodeId>,
    /// Acknowledged steps: marker -> episode.
    steps: HashMap<String, EpisodeId>,
    /// Markers of step calls cut off by a kill (may or may not be stored).
    unacknowledged: HashSet<String>,
    completed: HashSet<EpisodeId>,
    /// Calls that answered (acknowledged or refused).
    calls: u64,
    /// Calls cut off by a kill.
    cut: u64,
    /// Calls that failed for another reason.
    errors: Vec<String>,
    /// Of those, lock or busy errors.
    lock_errors: Vec<String>,
    longest_call: HashMap<&'static str, Duration>,
    longest_lock_wait_us: u64,
    /// Restores refused because the directory was in use.
    restores_refused: u64,
}

impl Ledger {
    fn answered(&mut self, kind: &'static str, took: Duration) {
        self.calls += 1;
        let longest = self.longest_call.entry(kind).or_default();
        *longest = (*longest).max(took);
    }

    /// A server went away during a call: cut off by a kill, or a failure.
    fn gone(&mut self, who: &str, killed: bool, why: &str) {
        if killed {
            self.cut += 1;
        } else {
            self.failed(who, &format!("server gone: {why}"));
        }
    }

    fn failed(&mut self, who: &str, what: &str) {
        let line = format!("{who}: {what}");
        let lower = what.to_lowercase();
        if ["lock", "busy", "held", "another memory process"]
            .iter()
            .any(|w| lower.contains(w))
        {
            self.lock_errors.push(line.clone());
        }
        self.errors.push(line);
    }
}

type Shared = Arc<Mutex<Ledger>>;

/// A participant the killer can pick. Whether a call was cut off by a kill is read from how
/// the process ended (SIGKILL: nobody else sends it), never guessed from timing.
struct Victim {
    name: String,
    slot: PidSlot,
    done: AtomicBool,
}

impl Victim {
    fn new(name: String) -> Arc<Self> {
        Arc::new(Victim {
            name,
            slot: PidSlot::default(),
            done: AtomicBool::new(false),
        })
    }
}

fn marker(who: &str, e: usize, k: usize) -> String {
    format!("{who}-e{e}-s{k}-{}", uuid::Uuid::new_v4().simple())
}

async fn cli_loop(dir: PathBuf, me: Arc<Victim>, episodes: usize, ledger: Shared, keyed: Keyed) {
    let who = me.name.clone();
    let mut e = 0;
    while e < episodes {
        let task = format!("{who} soak episode {e}");
        let run = run_cli(
            &dir,
            &[
                "--namespace",
                NS,
                "--json",
                "episode",
                "start",
                "--task",
                &task,
                "--type",
                "testing",
                "--domain",
                "soak",
                "--language",
                "rust",
            ],
            &keyed.envs(),
            &me.slot,
        )
        .await
        .unwrap();
        let id: EpisodeId = match run.code {
            Some(0) => {
                ledger.lock().unwrap().answered("cli", run.elapsed);
                run.json().unwrap()["episode_id"]
                    .as_str()
                    .unwrap()
                    .parse()
                    .unwrap()
            }
            _ if run.signal == Some(9) => {
                ledger.lock().unwrap().cut += 1;
                continue; // start again
            }
            _ => {
                ledger
                    .lock()
                    .unwrap()
                    .failed(&who, &format!("start: {} {}", run.stdout, run.stderr));
                e += 1;
                continue;
            }
        };
        ledger.lock().unwrap().started.insert(id);
        for k in 0..STEPS {
            let m = marker(&who, e, k);
            let id_text = id.to_string();
            let result = if k % 3 == 1 { "--error" } else { "--ok" };
            let run = run_cli(
                &dir,
                &[
                    "--namespace",
                    NS,
                    "--json",
                    "episode",
                    "step",
                    &id_text,
                    "--tool",
                    "cargo",
                    "--action",
                    &m,
                    result,
                    "out",
                ],
                &keyed.envs(),
                &me.slot,
            )
            .await
            .unwrap();
            let cut = run.signal == Some(9);
            let mut l = ledger.lock().unwrap();
            match run.code {
                Some(0) => {
                    l.answered("cli", run.elapsed);
                    l.steps.insert(m, id);
                }
                _ if cut => {
                    l.cut += 1;
                    l.unacknowledged.insert(m);
                }
                _ => l.failed(&who, &format!("step: {} {}", run.stdout, run.stderr)),
            }
        }
        let id_text = id.to_string();
        let run = run_cli(
            &dir,
            &[
                "--namespace",
                NS,
                "--json",
                "episode",
                "complete",
                &id_text,
                "--success",
                "soak",
            ],
            &keyed.envs(),
            &me.slot,
        )
        .await
        .unwrap();
        let cut = run.signal == Some(9);
        let mut l = ledger.lock().unwrap();
        match run.code {
            Some(0) => {
                l.answered("cli", run.elapsed);
                l.completed.insert(id);
            }
            // Cut off: whether it completed is unknown; the episode is left as it is.
            _ if cut => l.cut += 1,
            _ => l.failed(&who, &format!("complete: {} {}", run.stdout, run.stderr)),
        }
        drop(l);
        e += 1;
    }
    me.done.store(true, Ordering::SeqCst);
}

async fn start_server(dir: &Path, me: &Victim, keyed: Keyed) -> McpProcess {
    loop {
        match McpProcess::start(
            dir,
            NS,
            &["--rate-per-second", "0"],
            &keyed.envs(),
            &me.slot,
        )
        .await
        {
            Ok(p) => return p,
            // Killed while starting: start again.
            Err(e) => eprintln!("{}: server start cut off ({e}); starting again", me.name),
        }
    }
}

async fn mcp_loop(dir: PathBuf, me: Arc<Victim>, episodes: usize, ledger: Shared, keyed: Keyed) {
    let who = me.name.clone();
    let mut server = start_server(&dir, &me, keyed).await;
    let mut e = 0;
    let context = json!({ "domain": "soak", "language": "rust" });
    while e < episodes {
        let t = Instant::now();
        let started = server
            .call(
                "start_episode",
                json!({ "task": format!("{who} soak episode {e}"), "task_type": "testing", "context": context }),
            )
            .await;
        let id: EpisodeId = match started {
            CallEnd::Ok(v) => {
                ledger.lock().unwrap().answered("mcp", t.elapsed());
                v["episode_id"].as_str().unwrap().parse().unwrap()
            }
            CallEnd::Gone(why) => {
                let killed = server.was_killed().await;
                ledger.lock().unwrap().gone(&who, killed, &why);
                server = start_server(&dir, &me, keyed).await;
                continue;
            }
            CallEnd::ToolError(err) => {
                ledger
                    .lock()
                    .unwrap()
                    .failed(&who, &format!("start: {err}"));
                e += 1;
                continue;
            }
        };
        ledger.lock().unwrap().started.insert(id);
        for k in 0..STEPS {
            let m = marker(&who, e, k);
            let t = Instant::now();
            let status = if k % 3 == 1 { "error" } else { "success" };
            let logged = server
                .call(
                    "log_step",
                    json!({ "episode_id": id.to_string(), "tool": "cargo", "action": m, "status": status, "output": "out" }),
                )
                .await;
            match logged {
                CallEnd::Ok(_) => {
                    let mut l = ledger.lock().unwrap();
                    l.answered("mcp", t.elapsed());
                    l.steps.insert(m, id);
                }
                CallEnd::Gone(why) => {
                    let cut = server.was_killed().await;
                    {
                        let mut l = ledger.lock().unwrap();
                        l.gone(&who, cut, &why);
                        l.unacknowledged.insert(m);
                    }
                    // The episode goes on in the next server (restart-safe).
                    server = start_server(&dir, &me, keyed).await;
                }
                CallEnd::ToolError(err) => {
                    ledger.lock().unwrap().failed(&who, &format!("step: {err}"));
                }
            }
        }
        let t = Instant::now();
        match server
            .call(
                "complete_episode",
                json!({ "episode_id": id.to_string(), "outcome": "success", "verdict": "soak" }),
            )
            .await
        {
            CallEnd::Ok(_) => {
                let mut l = ledger.lock().unwrap();
                l.answered("mcp", t.elapsed());
                l.completed.insert(id);
            }
            CallEnd::Gone(why) => {
                let cut = server.was_killed().await;
                {
                    let mut l = ledger.lock().unwrap();
                    l.gone(&who, cut, &why);
                }
                server = start_server(&dir, &me, keyed).await;
            }
            CallEnd::ToolError(err) => ledger
                .lock()
                .unwrap()
                .failed(&who, &format!("complete: {err}")),
        }
        e += 1;
    }
    me.done.store(true, Ordering::SeqCst);
    // The client goes away: the server finishes and exits on its own.
    let status = server.close().await.unwrap();
    assert!(status.success(), "{who}: server exit {status:?}");
}

async fn library_loop(
    dir: PathBuf,
    me: Arc<Victim>,
    episodes: usize,
    ledger: Shared,
    keyed: Keyed,
) {
    let who = me.name.clone();
    // Episodes still to finish, the one to resume included.
    let mut remaining = episodes;
    let mut resume: Option<(EpisodeId, usize)> = None;
    let mut round = 0;
    while remaining > 0 {
        round += 1;
        let new_ones = remaining - usize::from(resume.is_some());
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_soak_child"));
        cmd.arg(&dir)
            .args([
                NS,
                &format!("{who}r{round}"),
                &new_ones.to_string(),
                &STEPS.to_string(),
            ])
            .env("RUST_LOG", "warn")
            .envs(keyed.envs())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        if let Some((id, done)) = resume {
            cmd.args(["--continue", &id.to_string(), &done.to_string()]);
        }
        let mut child = cmd.spawn().unwrap();
        *me.slot.lock().unwrap() = child.id();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut current: Option<(EpisodeId, usize)> = resume.take();
        let mut last = Instant::now();
        while let Ok(Some(line)) = lines.next_line().await {
            let took = last.elapsed();
            last = Instant::now();
            let parts: Vec<&str> = line.splitn(4, ' ').collect();
            let mut l = ledger.lock().unwrap();
            match parts.as_slice() {
                ["ack", "start", id] => {
                    let id: EpisodeId = id.parse().unwrap();
                    l.answered("library", took);
                    l.started.insert(id);
                    current = Some((id, 0));
                }
                ["try", "step", _, m] => {
                    l.unacknowledged.insert((*m).to_owned());
                }
                ["ack", "step", id, m] => {
                    let id: EpisodeId = id.parse().unwrap();
                    l.answered("library", took);
                    l.steps.insert((*m).to_owned(), id);
                    if let Some((_, done)) = current.as_mut() {
                        *done += 1;
                    }
                }
                ["ack", "complete", id] => {
                    l.answered("library", took);
                    l.completed.insert(id.parse().unwrap());
                    current = None;
                    remaining = remaining.saturating_sub(1);
                }
                ["wait", us] => {
                    l.longest_lock_wait_us = l.longest_lock_wait_us.max(us.parse().unwrap());
                }
                ["error", rest @ ..] => l.failed(&who, &rest.join(" ")),
                _ => {}
            }
        }
        let status = child.wait().await.unwrap();
        *me.slot.lock().unwrap() = None;
        if status.success() {
            break;
        }
        if std::os::unix::process::ExitStatusExt::signal(&status) != Some(9) {
            ledger
                .lock()
                .unwrap()
                .failed(&who, &format!("exited {status:?}"));
            break;
        }
        ledger.lock().unwrap().cut += 1;
        // The next run finishes the episode this one was in, unless all its steps were in
        // (whether its completion landed is unknown: it is left as it is).
        resume = current.filter(|(_, done)| *done < STEPS);
        if current.is_some_and(|(_, done)| done >= STEPS) {
            remaining = remaining.saturating_sub(1);
        }
    }
    me.done.store(true, Ordering::SeqCst);
}

/// The maintenance commands a person runs beside the agents: stats, consolidate, backup,
/// export and import (into another namespace), and a restore that must refuse while the
/// directory is in use. Not killed: each must finish, and none may wait on the others.
async fn maintenance_loop(
    dir: PathBuf,
    rounds: usize,
    stop: Arc<AtomicBool>,
    ledger: Shared,
    keyed: Keyed,
) {
    let slot = PidSlot::default();
    let scratch = tempfile::tempdir().unwrap();
    let mut round = 0;
    while round < rounds && !stop.load(Ordering::SeqCst) {
        let backup = scratch.path().join(format!("backup-{round}"));
        let export = scratch.path().join(format!("export-{round}.jsonl"));
        let backup_text = backup.to_str().unwrap().to_owned();
        let export_text = export.to_str().unwrap().to_owned();
        let sample = scratch.path().join(format!("sample-{round}.jsonl"));
        let sample_text = sample.to_str().unwrap().to_owned();
        let commands: Vec<Vec<&str>> = vec![
            vec!["--namespace", NS, "--json", "stats"],
            vec!["--namespace", NS, "--json", "consolidate"],
            vec!["--json", "backup", &backup_text],
            vec!["--namespace", NS, "--json", "export", &export_text],
            vec![
                "--namespace",
                "soak/imported",
                "--json",
                "import",
                &sample_text,
            ],
        ];
        for args in commands {
            if args.contains(&"import") {
                // Twenty episodes of the export: import runs beside the agents, it is not
                // the load.
                let lines: Vec<String> = std::fs::read_to_string(&export)
                    .unwrap_or_default()
                    .lines()
                    .take(20)
                    .map(str::to_owned)
                    .collect();
                std::fs::write(&sample, lines.join("\n")).unwrap();
            }
            let run = run_cli(&dir, &args, &keyed.envs(), &slot).await.unwrap();
            if run.code == Some(0) {
                ledger.lock().unwrap().answered("maintenance", run.elapsed);
            } else {
                let what = format!("{args:?}: {} {}", run.stdout, run.stderr);
                ledger.lock().unwrap().failed("maintenance", &what);
            }
        }
        // A restore while the directory is in use refuses, and moves nothing. (Between two
        // commands of the loops and the restarts of the killed, nobody may hold it for an
        // instant; this process holds it through the attempt.)
        let holder = StackBuilder::new(&dir)
            .encryption_key(keyed.key())
            .open()
            .await
            .unwrap();
        let run = run_cli(
            &dir,
            &["--json", "restore", &backup_text, "--force"],
            &keyed.envs(),
            &slot,
        )
        .await
        .unwrap();
        holder.shutdown().await.unwrap();
        drop(holder);
        {
            let mut l = ledger.lock().unwrap();
            if run.code == Some(0) {
                l.failed(
                    "maintenance",
                    "restore went ahead while the directory was in use",
                );
            } else if !run.stdout.contains("other memory processes") {
                l.failed(
                    "maintenance",
                    &format!("restore refused unclearly: {}", run.stdout),
                );
            } else {
                l.restores_refused += 1;
            }
        }
        round += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn killer(victims: Vec<Arc<Victim>>, every: Duration) -> u64 {
    let mut kills = 0;
    loop {
        let pause = rand::rng().random_range(every / 3..every);
        tokio::time::sleep(pause).await;
        let alive: Vec<&Arc<Victim>> = victims
            .iter()
            .filter(|v| !v.done.load(Ordering::SeqCst))
            .collect();
        if alive.is_empty() {
            return kills;
        }
        let v = alive[rand::rng().random_range(0..alive.len())];
        if kill_slot(&v.slot) {
            kills += 1;
        }
    }
}

/// The key every participant of an encrypted run is given (through the environment for the
/// child processes); `None`: not encrypted.
#[derive(Debug, Clone, Copy)]
struct Keyed(Option<&'static str>);

impl Keyed {
    fn envs(self) -> Vec<(&'static str, &'static str)> {
        self.0
            .map(|k| vec![("MEMORY_ENCRYPTION_KEY", k)])
            .unwrap_or_default()
    }

    fn key(self) -> Option<MasterKey> {
        self.0.map(|k| MasterKey::from_hex(k).unwrap())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_processes_one_data_dir_nothing_lost_under_kill_9() {
    soak(Plan::from_env(), Keyed(None)).await;
}

/// The same soak on an encrypted memory (database, cache and journals), at half the load.
#[cfg(feature = "encryption")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_processes_one_encrypted_data_dir_nothing_lost_under_kill_9() {
    let key: &'static str = Box::leak(
        MasterKey::generate()
            .unwrap()
            .to_hex()
            .as_str()
            .to_owned()
            .into_boxed_str(),
    );
    let full = Plan::from_env();
    let plan = Plan {
        cli_episodes: full.cli_episodes / 2,
        mcp_episodes: full.mcp_episodes / 2,
        library_episodes: full.library_episodes / 2,
        ..full
    };
    soak(plan, Keyed(Some(key))).await;
}

async fn soak(plan: Plan, keyed: Keyed) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let ledger: Shared = Arc::default();
    let started = Instant::now();
    let mut victims = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..plan.cli_loops {
        let v = Victim::new(format!("cli{i}"));
        victims.push(v.clone());
        tasks.push(tokio::spawn(cli_loop(
            dir.clone(),
            v,
            plan.cli_episodes,
            ledger.clone(),
            keyed,
        )));
    }
    for i in 0..plan.mcp_servers {
        let v = Victim::new(format!("mcp{i}"));
        victims.push(v.clone());
        tasks.push(tokio::spawn(mcp_loop(
            dir.clone(),
            v,
            plan.mcp_episodes,
            ledger.clone(),
            keyed,
        )));
    }
    let v = Victim::new("lib".into());
    victims.push(v.clone());
    tasks.push(tokio::spawn(library_loop(
        dir.clone(),
        v,
        plan.library_episodes,
        ledger.clone(),
        keyed,
    )));
    let agents_done = Arc::new(AtomicBool::new(false));
    let maintenance = tokio::spawn(maintenance_loop(
        dir.clone(),
        plan.maintenance_rounds,
        agents_done.clone(),
        ledger.clone(),
        keyed,
    ));
    let killing = tokio::spawn(killer(victims.clone(), plan.kill_every));
    for t in tasks {
        t.await.unwrap();
    }
    agents_done.store(true, Ordering::SeqCst);
    maintenance.await.unwrap();
    let kills = killing.await.unwrap();
    let elapsed = started.elapsed();

    // Whatever a killed process journaled is adopted and replayed by the next opener.
    let stack = StackBuilder::new(&dir)
        .encryption_key(keyed.key())
        .open()
        .await
        .unwrap();
    stack.tiered().sync_now().await.unwrap();
    assert_eq!(stack.tiered().status().outbox_len, 0);
    stack.shutdown().await.unwrap();
    drop(stack);

    let l = std::mem::take(&mut *ledger.lock().unwrap());
    let store = memory_stack::open_data_dir_database(&dir, keyed.key().as_ref())
        .await
        .unwrap();
    let ns = Namespace::new(NS).unwrap();
    let mut stored = Vec::new();
    loop {
        let page = store
            .query_episodes(
                &ns,
                &EpisodeQuery {
                    limit: 500,
                    offset: stored.len() as u32,
                    ..EpisodeQuery::default()
                },
            )
            .await
            .unwrap();
        let n = page.len();
        stored.extend(page.into_iter().map(|s| s.id));
        if n < 500 {
            break;
        }
    }
    let stored_set: HashSet<EpisodeId> = stored.iter().copied().collect();
    assert_eq!(stored_set.len(), stored.len(), "an episode listed twice");
    for id in &l.started {
        assert!(
            stored_set.contains(id),
            "acknowledged episode {id} is missing"
        );
    }
    let mut seen_markers: HashMap<String, EpisodeId> = HashMap::new();
    let mut completed = 0u64;
    let mut steps_present = 0u64;
    for id in &stored {
        let e = store.get_episode(&ns, *id).await.unwrap().unwrap();
        let numbers: Vec<u32> = e.steps.iter().map(|s| s.step_number).collect();
        assert_eq!(
            numbers,
            (1..=numbers.len() as u32).collect::<Vec<_>>(),
            "{id}: step numbers"
        );
        for s in &e.steps {
            let prior = seen_markers.insert(s.input.action.clone(), *id);
            assert!(prior.is_none(), "step {} stored twice", s.input.action);
            assert!(
                l.steps.contains_key(&s.input.action) || l.unacknowledged.contains(&s.input.action),
                "a step nobody wrote: {}",
                s.input.action
            );
        }
        steps_present += e.steps.len() as u64;
        if e.is_completed() {
            completed += 1;
        }
    }
    for (m, id) in &l.steps {
        assert_eq!(
            seen_markers.get(m),
            Some(id),
            "acknowledged step {m} missing from {id}"
        );
    }
    for id in &l.completed {
        let e = store.get_episode(&ns, *id).await.unwrap().unwrap();
        assert!(e.is_completed(), "acknowledged completion of {id} missing");
    }
    let patterns = store
        .query_patterns(
            &ns,
            &LearnedQuery {
                limit: 1_000,
                include_inactive: true,
                ..LearnedQuery::default()
            },
        )
        .await
        .unwrap();
    let context_count: u64 = patterns
        .iter()
        .filter(|p| matches!(p.kind, PatternKind::ContextPattern { .. }))
        .map(|p| p.occurrences)
        .sum();
    assert_eq!(
        context_count, completed,
        "learned counts match the completed episodes"
    );

    let report = json!({
        "processes": { "cli_loops": plan.cli_loops, "mcp_servers": plan.mcp_servers, "library": 1 },
        "seconds": elapsed.as_secs_f64(),
        "kills": kills,
        "calls_answered": l.calls,
        "calls_cut_by_kills": l.cut,
        "acknowledged": { "episodes": l.started.len(), "steps": l.steps.len(), "completions": l.completed.len() },
        "present": { "episodes": stored.len(), "steps": steps_present, "completed": completed },
        "lost": 0,
        "errors": l.errors.len(),
        "lock_errors": l.lock_errors.len(),
        "longest_call_ms": l.longest_call.iter().map(|(k, v)| (k.to_string(), json!(v.as_secs_f64() * 1000.0))).collect::<serde_json::Map<String, Value>>(),
        "longest_write_lock_wait_ms": l.longest_lock_wait_us as f64 / 1000.0,
        "restores_refused_while_in_use": l.restores_refused,
    });
    eprintln!(
        "soak report: {}",
        serde_json::to_string_pretty(&report).unwrap()
    );
    if let Ok(path) = std::env::var("MEMORY_SOAK_REPORT") {
        std::fs::write(path, serde_json::to_vec_pretty(&report).unwrap()).unwrap();
    }
    assert!(
        l.lock_errors.is_empty(),
        "lock errors: {:#?}",
        l.lock_errors
    );
    assert!(l.errors.is_empty(), "failed calls: {:#?}", l.errors);
    assert!(kills > 0, "the killer never hit anyone");
    assert!(l.restores_refused > 0, "the restore drill ran");
}

//! No secret reaches a file: every secret of the labeled corpus
//! (`memory-core/tests/data/redaction/secrets.tsv`) is put into every field it fits of an
//! episode file, which the real `memory` binary imports with tracing at `trace`; then the memory
//! is consolidated, searched, exported and backed up. Every byte of the data dir (database,
//! WAL, cache, journals, snapshots), the export, the backup and the logs is scanned for every
//! secret.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::path::Path;
use std::process::Output;
use std::sync::Arc;

use memory_core::{
    InMemoryStorage, MemoryConfig, Namespace, NewEpisode, Outcome, RateLimitConfig,
    RedactionConfig, SelfLearningMemory, StepInput, TaskContext, TaskType,
};
use serde_json::{Value, json};
use tests::files_under;
use tests::procs::memory_binary;

/// (kind, secret, line) rows of the corpus.
fn corpus() -> Vec<(String, String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../memory-core/tests/data/redaction/secrets.tsv");
    let unescape = |s: &str| {
        let mut out = String::new();
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            match (c, c == '\\') {
                (_, true) => match chars.next() {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some(o) => out.push(o),
                    None => {}
                },
                (c, false) => out.push(c),
            }
        }
        out
    };
    std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let cols: Vec<String> = l.split('\t').map(unescape).collect();
            (cols[0].clone(), cols[1].clone(), cols[2].clone())
        })
        .collect()
}

/// Episodes holding the secrets verbatim, as `memory export` writes them: recorded with
/// redaction off, in memory, so that the import is the first redaction they meet.
async fn unredacted_episodes(rows: &[(String, String, String)]) -> String {
    let mut config = MemoryConfig::default().with_redaction(RedactionConfig::disabled());
    config.rate_limit = RateLimitConfig::disabled();
    let memory = SelfLearningMemory::new(Arc::new(InMemoryStorage::new()), config).unwrap();
    let limits = memory.config().limits.clone();
    let ns = Namespace::new("default").unwrap();
    let mut out = String::new();
    for (i, (_, _, line)) in rows.iter().enumerate() {
        let fits = |limit: usize| line.len() <= limit;
        let mut ctx = TaskContext::new(if fits(limits.max_label_bytes) {
            line.as_str()
        } else {
            "ops"
        });
        if fits(limits.max_label_bytes) {
            ctx.language = Some(line.clone());
            ctx.framework = Some(line.clone());
        }
        if fits(limits.max_tag_bytes) {
            ctx.tags = vec![line.clone()];
        }
        let id = memory
            .start_episode(&ns, NewEpisode::new(line.clone(), TaskType::Other, ctx))
            .await
            .unwrap();
        let tool = if fits(limits.max_tool_bytes) {
            line.as_str()
        } else {
            "shell"
        };
        let mut params = serde_json::Map::new();
        params.insert(line.clone(), json!(line));
        if let Ok(v @ Value::Object(_)) = serde_json::from_str::<Value>(line) {
            params.insert("object".into(), v);
        }
        for step in [
            StepInput::ok(tool, line.clone(), line.clone()).with_parameters(Value::Object(params)),
            StepInput::error("shell", line.clone(), line.clone()),
        ] {
            memory.log_step(&ns, id, step).await.unwrap();
        }
        let outcome = if i % 2 == 0 {
            Outcome::Success {
                verdict: line.clone(),
                artifacts: vec![line.clone()],
            }
        } else {
            Outcome::Failure {
                reason: line.clone(),
            }
        };
        memory.complete_episode(&ns, id, outcome).await.unwrap();
        let mut episode = Arc::unwrap_or_clone(memory.get_episode(&ns, id).await.unwrap());
        // Labels and tags as a caller would send them: the memory stored them lowercase.
        if fits(limits.max_label_bytes) {
            episode.context.domain.clone_from(line);
            episode.context.language = Some(line.clone());
            episode.context.framework = Some(line.clone());
        }
        if fits(limits.max_tag_bytes) {
            episode.context.tags = vec![line.clone()];
        }
        out.push_str(&serde_json::to_string(&episode).unwrap());
        out.push('\n');
    }
    memory.shutdown().await.unwrap();
    out
}

fn run(data_dir: &Path, args: &[&str], log: &mut Vec<u8>) -> Output {
    let started = std::time::Instant::now();
    let output = std::process::Command::new(memory_binary())
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env("RUST_LOG", "trace")
        // No model: embedding 600 episodes in a debug build takes minutes, and vectors hold no text.
        .env("MEMORY_MODEL_DIR", "/nonexistent/model")
        .output()
        .unwrap();
    println!(
        "memory {:?}: {:.1} s",
        args.first(),
        started.elapsed().as_secs_f64()
    );
    log.extend_from_slice(&output.stdout);
    log.extend_from_slice(&output.stderr);
    assert!(
        output.status.success(),
        "memory {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );
    output
}

/// Whether `needle` is in `haystack`; through `str::contains`, as std is built optimized and
/// a byte-window scan of ~18 MB per secret takes minutes in a debug build. Invalid UTF-8 becomes
/// U+FFFD, which no secret contains.
fn find(haystack: &[u8], needle: &[u8]) -> bool {
    String::from_utf8_lossy(haystack).contains(&*String::from_utf8_lossy(needle))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_data_dir_an_export_a_backup_or_a_log() {
    let rows = corpus();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let input = dir.path().join("episodes.jsonl");
    std::fs::write(&input, unredacted_episodes(&rows).await).unwrap();
    // The input really holds every secret: the scan below can fail.
    let raw = std::fs::read(&input).unwrap();
    for (kind, secret, _) in &rows {
        let escaped = serde_json::to_string(secret).unwrap();
        assert!(
            find(&raw, escaped.trim_matches('"').as_bytes()),
            "{kind}: the input lacks its secret"
        );
    }

    let mut log = Vec::new();
    let export = dir.path().join("export.jsonl");
    let backup = dir.path().join("backup");
    run(&data_dir, &["import", input.to_str().unwrap()], &mut log);
    run(&data_dir, &["consolidate"], &mut log);
    run(&data_dir, &["episode", "list", "--limit", "500"], &mut log);
    run(
        &data_dir,
        &["episode", "search", "password token key"],
        &mut log,
    );
    run(
        &data_dir,
        &["recommend", "--task", "rotate the deploy credentials"],
        &mut log,
    );
    run(&data_dir, &["--json", "pattern", "list"], &mut log);
    run(&data_dir, &["export", export.to_str().unwrap()], &mut log);
    run(&data_dir, &["backup", backup.to_str().unwrap()], &mut log);

    let mut files = Vec::new();
    files_under(&data_dir, &mut files);
    files.push(export.clone());
    files_under(&backup, &mut files);
    // As text once (invalid UTF-8 becomes U+FFFD, which no secret contains): `str::contains`
    // runs std's optimized search, where a byte-window scan takes minutes in a debug build.
    let mut scanned: Vec<(String, String)> = files
        .iter()
        .map(|f| {
            let bytes = std::fs::read(f).unwrap();
            (
                f.display().to_string(),
                String::from_utf8_lossy(&bytes).into_owned(),
            )
        })
        .collect();
    scanned.push((
        "stdout and stderr (RUST_LOG=trace)".into(),
        String::from_utf8_lossy(&log).into_owned(),
    ));
    let bytes: usize = scanned.iter().map(|(_, b)| b.len()).sum();
    assert!(
        std::fs::read_to_string(&export).unwrap().lines().count() == rows.len(),
        "every episode was imported and exported"
    );

    let mut leaks = Vec::new();
    for (kind, secret, _) in &rows {
        // As stored (JSON text escapes `/` never, `"` and `\` always) and lowercase (labels).
        let forms = [
            secret.clone(),
            serde_json::to_string(secret)
                .unwrap()
                .trim_matches('"')
                .to_owned(),
            secret.to_lowercase(),
        ];
        for (name, data) in &scanned {
            if forms.iter().any(|f| data.contains(f.as_str())) {
                leaks.push(format!("{kind} in {name}"));
            }
        }
    }
    println!(
        "scanned {} files and the logs, {bytes} bytes, for {} secrets of {} kinds",
        scanned.len() - 1,
        rows.len(),
        rows.iter()
            .map(|r| &r.0)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    );
    assert!(leaks.is_empty(), "{} leaks: {leaks:#?}", leaks.len());
}

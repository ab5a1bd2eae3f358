//! The `memory` command: record agent episodes, inspect what the memory learned.

// First: its printing macros are used by every module after it.
#[macro_use]
mod output;

mod argv;
mod backend;
mod cli;
mod commands;
mod display_safe;
mod progress;
mod settings;
mod signals;
mod telemetry;

/// mimalloc rather than glibc's allocator: a long-running `memory mcp` runs consolidation
/// every so often, and glibc's per-thread arenas kept what each run freed (a 30k-episode
/// ingest with a run every 5k peaked at 284 MiB and kept growing, against 222 MiB, flat, with
/// mimalloc; it was also 16% faster).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use memory_core::Namespace;
use serde_json::json;

use crate::cli::{Cli, Command};
use crate::settings::Settings;

/// How an error is reported: its `--json` kind, a hint, and the exit code (2 for input the
/// user can fix, 1 for everything else).
fn classify(e: &anyhow::Error) -> (&'static str, Option<&'static str>, u8) {
    use memory_core::Error as E;
    match e.downcast_ref::<E>() {
        Some(E::NotFound { .. }) => (
            "not_found",
            Some("check the id with `memory episode list` or `memory pattern list`"),
            2,
        ),
        Some(E::InvalidInput { .. }) => ("invalid_input", None, 2),
        Some(E::LimitExceeded { .. }) => (
            "limit_exceeded",
            Some("shorten the input; limits are listed in SECURITY.md"),
            2,
        ),
        Some(E::QuotaExceeded { .. }) => (
            "quota_exceeded",
            Some("raise the quota in memory.toml or use another namespace"),
            1,
        ),
        Some(E::RateLimited { .. }) => ("rate_limited", Some("retry after the given time"), 1),
        Some(E::Conflict { .. }) => ("conflict", Some("start a new episode"), 2),
        Some(E::Storage {
            transient: true, ..
        }) => (
            "storage",
            Some("the storage is unreachable or busy; retry"),
            1,
        ),
        Some(E::Storage { .. }) if unreadable_file(e) => (
            "storage",
            Some(
                "the database file is damaged where SQLite reads its structure, so nothing in it \
                 can be read (`health` and `export` included): restore a backup with \
                 `memory restore BACKUP --force`, which moves the damaged files aside",
            ),
            1,
        ),
        Some(E::Storage { .. } | E::CircuitOpen { .. }) => ("storage", None, 1),
        _ => ("error", None, 1),
    }
}

/// Whether SQLite refused the file itself: its schema or header is damaged (`SQLITE_CORRUPT`
/// at open, `SQLITE_NOTADB`). libsql reports these only as text.
fn unreadable_file(e: &anyhow::Error) -> bool {
    let text = format!("{e:#}");
    text.contains("database disk image is malformed") || text.contains("file is not a database")
}

/// Prints an error: as JSON on stdout under `--json`, else on stderr with its hint.
fn print_error(kind: &str, message: &str, hint: Option<&str>, json_out: bool) {
    if json_out {
        outln!(
            "{}",
            json!({ "error": { "kind": kind, "message": message, "hint": hint } })
        );
    } else {
        errln!("error: {}", display_safe::text(message));
        if let Some(h) = hint {
            errln!("hint: {h}");
        }
    }
}

async fn run(cli: Cli, settings: Result<Settings>) -> Result<ExitCode> {
    let mut settings = settings?;
    if matches!(cli.command, Command::Demo(_)) && !settings.namespace_explicit {
        let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S");
        settings.namespace = Namespace::new(format!("demo/run-{stamp}"))?;
    }
    // These commands open what they need themselves.
    let done = match cli.command {
        Command::Eval(cmd) => commands::eval::run(cmd, &settings).await,
        Command::Restore { dir, force } => commands::backup::restore(&dir, force, &settings).await,
        Command::Mcp(a) => commands::mcp::run(&a, &settings).await,
        Command::Serve(a) => commands::serve::run(&a, &settings).await,
        Command::Key(cmd) => commands::keys::key(&cmd, &settings),
        Command::Encrypt => commands::keys::encrypt(&settings).await,
        Command::Rekey(a) => commands::keys::rekey(&a, &settings).await,
        command => return Box::pin(run_on_stack(command, &settings)).await,
    };
    done.map(|()| ExitCode::SUCCESS)
}

/// Runs a command on the storage stack, then flushes and closes the stack.
async fn run_on_stack(command: Command, s: &Settings) -> Result<ExitCode> {
    // Commands that retrieve (or report on retrieval) load the embedding model.
    let semantic = matches!(
        command,
        Command::Recommend(_) | Command::Health | Command::Demo(_)
    );
    // The key of a memory that is not encrypted may still seal or open the command's file.
    let key_for_files = matches!(
        command,
        Command::Export { .. } | Command::Import { .. } | Command::Backup { .. }
    );
    let stack = backend::open_with(s, semantic, key_for_files).await?;
    let m = stack.memory();
    let mut code = ExitCode::SUCCESS;
    let command = async {
        match command {
            Command::Episode(cmd) => commands::episode::run(cmd, m, s).await,
            Command::Feedback(a) => commands::learned::feedback(a, m, s).await,
            Command::Pattern(cmd) => commands::learned::pattern(cmd, m, s).await,
            Command::Heuristic(cmd) => commands::learned::heuristic(cmd, m, s).await,
            Command::Lesson(cmd) => commands::learned::lesson(cmd, m, s).await,
            Command::Namespace(cmd) => commands::forget::namespace(cmd, m, s).await,
            Command::Stats => commands::status::stats(&stack, s).await,
            Command::Consolidate => commands::consolidate::run(m, s).await,
            Command::Sync(cmd) => commands::status::sync(cmd, &stack, s).await,
            Command::Health => commands::status::health(&stack, s).await.map(|ok| {
                if !ok {
                    code = ExitCode::from(1);
                }
            }),
            Command::Demo(a) => commands::demo::run(a.rounds, m, s).await,
            Command::Recommend(a) => commands::recommend::run(a, m, s).await,
            Command::Export { file, encrypt } => {
                commands::transfer::export(&file, encrypt, &stack, s).await
            }
            Command::Import { file } => commands::transfer::import(&file, m, s).await,
            Command::Backup { dir, encrypt } => {
                commands::backup::backup(&dir, encrypt, &stack, s).await
            }
            Command::Eval(_)
            | Command::Restore { .. }
            | Command::Mcp(_)
            | Command::Serve(_)
            | Command::Key(_)
            | Command::Encrypt
            | Command::Rekey(_) => Ok(()),
        }
    };
    // A signal lets the call in progress finish (long commands stop between items), then
    // the stack is flushed and closed as after any command.
    let mut signalled = None;
    let result = {
        tokio::pin!(command);
        tokio::select! {
            r = &mut command => r,
            (name, exit) = signals::terminated() => {
                tracing::warn!(signal = name, "stopping: finishing the call in progress");
                signalled = Some(exit);
                match tokio::time::timeout(signals::GRACE, &mut command).await {
                    Ok(r) => r,
                    Err(_) => Err(anyhow::anyhow!("stopped by {name} before the command finished")),
                }
            }
        }
    };
    let shutdown = stack.shutdown().await.map_err(backend::stack_error);
    result?;
    shutdown?;
    Ok(signalled.map_or(code, ExitCode::from))
}

/// A usage error: as JSON on stdout under `--json`, else on stderr; exit code 2.
fn usage_error(message: &str, json_requested: bool) -> ExitCode {
    print_error(
        "usage",
        message.trim(),
        Some("see `memory --help`"),
        json_requested,
    );
    ExitCode::from(2)
}

/// The parsed command line, or the exit code of a usage error already reported (help and
/// `--version` are printed by clap and exit 0).
fn parse_args() -> Result<Cli, ExitCode> {
    // `args_os`: `std::env::args` panics on an argument that is not UTF-8.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let json_requested = argv::json_requested(&args);
    if let Err(e) = argv::check_utf8(&args) {
        return Err(usage_error(&e.to_string(), json_requested));
    }
    // Every argument is UTF-8 now: the conversion is lossless.
    let args: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    match Cli::try_parse_from(&args) {
        Ok(cli) => Ok(cli),
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => match escaped_error(&args) {
            Some(escaped) if json_requested => Err(usage_error(&escaped.to_string(), true)),
            Some(escaped) => escaped.exit(),
            // Escaping changed the outcome (never seen): clap's message as plain text, escaped.
            None if args.iter().any(|a| display_safe::needs_escape(a)) => {
                let plain = e.render().to_string();
                let message = plain.trim_start().trim_start_matches("error: ");
                Err(usage_error(message, json_requested))
            }
            None if json_requested => Err(usage_error(&e.to_string(), true)),
            None => e.exit(),
        },
    }
}

/// clap's usage error for `args` with their control characters escaped, when any had some:
/// clap repeats a bad value in its message, and the terminal must not receive it raw.
/// `None` when no argument needed escaping, or the escaped arguments parse.
fn escaped_error(args: &[String]) -> Option<clap::Error> {
    let escaped: Vec<std::borrow::Cow<'_, str>> =
        args.iter().map(|a| display_safe::line(a)).collect();
    if escaped
        .iter()
        .all(|a| matches!(a, std::borrow::Cow::Borrowed(_)))
    {
        return None;
    }
    Cli::try_parse_from(escaped.iter().map(AsRef::<str>::as_ref)).err()
}

fn main() -> ExitCode {
    let cli = match parse_args() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let json_out = cli.json;
    // The settings first: the config file says where the spans are exported.
    let settings = Settings::resolve(&cli);
    let endpoint = settings.as_ref().ok().and_then(|s| s.otlp_endpoint.clone());
    let telemetry = match telemetry::init(cli.verbose, endpoint.as_deref()) {
        Ok(t) => t,
        Err(e) => return failed(&e, json_out),
    };
    let code = execute(cli, settings);
    // On every path, once the runtime is gone: the spans still batched are exported.
    telemetry.shutdown();
    code
}

/// Runs the command on a runtime of its own; its exit code, its error reported.
fn execute(cli: Cli, settings: Result<Settings>) -> ExitCode {
    let json_out = cli.json;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            errln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let outcome = runtime.block_on(run(cli, settings));
    // Everything is flushed and closed by now; a blocking read of stdin (the MCP transport,
    // when a signal stopped the server) must not hold the process open.
    runtime.shutdown_background();
    match outcome {
        Ok(code) => match output::stdout_failure() {
            // The command's work is done; only its report was lost.
            Some(e) => {
                errln!("error: cannot write the output: {e}");
                ExitCode::from(1)
            }
            None => code,
        },
        Err(e) => failed(&e, json_out),
    }
}

/// Reports a failed command; its exit code.
fn failed(e: &anyhow::Error, json_out: bool) -> ExitCode {
    let (kind, hint, code) = classify(e);
    print_error(kind, &format!("{e:#}"), hint, json_out);
    ExitCode::from(code)
}

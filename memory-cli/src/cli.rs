//! Command-line definitions. Commands and JSON fields are a contract for scripts and agents.
//!
//! Doc comments here are `--help` text, so they are written for the terminal, not rustdoc.
#![allow(clippy::doc_markdown)]

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Self-learning episodic memory for AI agents.
///
/// Record what an agent did (task, steps, outcome); the memory scores it, reflects on it and
/// learns patterns, heuristics and failure lessons that it hands back before the next task.
#[derive(Debug, Parser)]
#[command(
    name = "memory",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// Data directory holding the database and cache [env: MEMORY_DATA_DIR] [default: ./.memory]
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Namespace (tenant/project/agent) [env: MEMORY_NAMESPACE] [default: default]
    #[arg(long, global = true, value_name = "NAME")]
    pub namespace: Option<String>,

    /// Storage mode [env: MEMORY_MODE] [default: local]
    #[arg(long, global = true, value_enum)]
    pub mode: Option<Mode>,

    /// Machine output: one JSON document per command on stdout
    #[arg(long, global = true)]
    pub json: bool,

    /// No progress bars or notes on stderr (errors and warnings are still printed)
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// More log output on stderr (-v info, -vv debug); RUST_LOG overrides
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

/// Where the durable layer lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A libsql file in the data directory (nothing to start).
    Local,
    /// A libsql/Turso server at TURSO_DATABASE_URL.
    Remote,
    /// A local replica file synced with the server at TURSO_DATABASE_URL.
    Replica,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Record and inspect episodes
    #[command(subcommand)]
    Episode(EpisodeCmd),
    /// Record how applying a learned pattern or heuristic went
    Feedback(FeedbackArgs),
    /// Learned patterns
    #[command(subcommand)]
    Pattern(PatternCmd),
    /// Learned heuristics
    #[command(subcommand)]
    Heuristic(HeuristicCmd),
    /// Failure lessons
    #[command(subcommand)]
    Lesson(LessonCmd),
    /// Manage namespaces
    #[command(subcommand)]
    Namespace(NamespaceCmd),
    /// Counts and learning progress of the namespace
    Stats,
    /// Merge near-duplicate patterns and heuristics, prune stale ones, apply retention and
    /// take a learning-metrics snapshot, now
    Consolidate,
    /// Check each component (durable layer, cache, outbox, breaker, embedder)
    Health,
    /// Outbox replay and replica sync
    #[command(subcommand)]
    Sync(SyncCmd),
    /// Run a scripted learning session and show what the memory learned
    Demo(DemoArgs),
    /// Advice for a new task: similar episodes, patterns, heuristics, pitfalls, a playbook and
    /// an estimate, each with a reason
    Recommend(RecommendArgs),
    /// Measure retrieval quality on a labeled dataset
    #[command(subcommand)]
    Eval(EvalCmd),
    /// Write the namespace's episodes (steps, outcome, reward, reflection) to FILE as JSON
    /// lines, oldest first; FILE must not exist
    Export {
        /// The JSONL file to create
        file: PathBuf,
        /// Seal the file under the configured encryption key (MEMORY_ENCRYPTION_KEY, _FILE or
        /// _COMMAND): nothing of it is readable without the key; `memory import` reads it
        #[arg(long)]
        encrypt: bool,
    },
    /// Replay the episodes of an exported JSONL file into the namespace through the normal
    /// API (limits, quotas and redaction apply; the memory learns from them; new ids, the
    /// original start and completion times). The whole file is checked first: a bad line
    /// imports nothing. A sealed export (`export --encrypt`) is read with the configured key;
    /// a wrong key or a damaged file imports nothing.
    Import {
        /// A file written by `memory export`
        file: PathBuf,
    },
    /// Snapshot the database (all namespaces) into DIR: memory.db and manifest.json. The
    /// snapshot of an encrypted memory is encrypted under its key
    Backup {
        /// A new or empty directory
        dir: PathBuf,
        /// Encrypt the backup: an encrypted memory's snapshot already is (under its key); a
        /// memory that is not encrypted is sealed into memory.db.sealed under the configured
        /// key (MEMORY_ENCRYPTION_KEY, _FILE or _COMMAND)
        #[arg(long)]
        encrypt: bool,
    },
    /// Put a backup's database into the data directory (local mode); an encrypted backup
    /// needs the configured key
    Restore {
        /// A directory written by `memory backup`
        dir: PathBuf,
        /// Move the data directory's current files into `pre-restore-<time>/` instead of refusing
        #[arg(long)]
        force: bool,
    },
    /// Encryption at rest: generate a key, show what the data directory is encrypted under
    #[command(subcommand)]
    Key(KeyCmd),
    /// Encrypt a memory that is not encrypted, in place, under the configured key
    /// (MEMORY_ENCRYPTION_KEY, _FILE or _COMMAND); every other process must be stopped
    Encrypt,
    /// Re-encrypt the memory under a new key (MEMORY_NEW_ENCRYPTION_KEY, --new-key-file or
    /// --new-key-command); the current key is the configured one. Every other process must be
    /// stopped; the old files are kept in `pre-rekey-<time>/` until you delete them
    Rekey(RekeyArgs),
    /// Serve the memory to an agent over MCP on stdin/stdout (same data dir, namespace and
    /// mode as the other commands)
    Mcp(McpArgs),
    /// Serve the memory to many agents over MCP on streamable HTTP at /mcp, with GET /health
    /// and GET /metrics (one process shares its model, index and cache with every agent)
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on; any address other than loopback needs MEMORY_SERVE_TOKEN
    #[arg(long, default_value = "127.0.0.1:8931")]
    pub listen: std::net::SocketAddr,
    /// Another host name clients reach the server by (the Host header is checked); repeatable
    #[arg(long = "allow-host", value_name = "HOST")]
    pub allow_hosts: Vec<String>,
    /// Show GET /health's details (data dir, model, journal, ...) to callers without the
    /// token; loopback addresses only. Without it they get only "ok" or "degraded"
    #[arg(long)]
    pub health_details: bool,
    /// Connections open at once; one more is answered 503 and closed
    #[arg(long, default_value_t = 512)]
    pub max_connections: usize,
    /// Connections open at once from one client address; one more is answered 503 and closed
    #[arg(long, default_value_t = 128)]
    pub max_connections_per_client: usize,
    /// Seconds a new connection may take to send its first request header
    #[arg(long, default_value_t = 10)]
    pub header_timeout: u64,
    /// Seconds a request may take to send its body
    #[arg(long, default_value_t = 30)]
    pub body_timeout: u64,
    /// MCP sessions kept at once; at the cap a new session closes the idlest (its client
    /// starts another)
    #[arg(long, default_value_t = 1000)]
    pub max_sessions: usize,
    /// MCP sessions of one client address; at the cap its new session closes its idlest
    #[arg(long, default_value_t = 100)]
    pub max_sessions_per_client: usize,
    #[command(flatten)]
    pub rate: McpArgs,
}

#[derive(Debug, Args)]
pub struct McpArgs {
    /// Largest burst of tool calls from the client
    #[arg(long, default_value_t = 200)]
    pub rate_burst: u32,
    /// Tool calls per second the client may sustain (0: no per-client limit)
    #[arg(long, default_value_t = 50.0)]
    pub rate_per_second: f64,
    /// Another namespace clients may name (repeatable; `*` for every namespace). Without it
    /// the server serves only its own namespace (--namespace)
    #[arg(long = "allow-namespace", value_name = "NAMESPACE")]
    pub allow_namespaces: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RecommendArgs {
    /// The new task
    #[arg(long)]
    pub task: String,
    #[command(flatten)]
    pub context: ContextArgs,
    /// code_generation, debugging, refactoring, testing, analysis, documentation or other
    #[arg(long = "type")]
    pub task_type: Option<String>,
    /// Most items per list
    #[arg(long, default_value_t = 5)]
    pub limit: u32,
}

#[derive(Debug, Subcommand)]
pub enum EvalCmd {
    /// Recall@k, MRR and nDCG@10 of BM25, vector and hybrid retrieval, and abstention, on a
    /// dataset in the JSONL format of shared/eval/retrieval (episodes.jsonl, queries.jsonl).
    /// Runs in a fresh in-memory libsql store; the data directory is not touched.
    Retrieval(EvalRetrievalArgs),
    /// Whether the memory makes an agent better: a simulated task world, four arms (no
    /// memory, episodes only, full memory, full memory without failure lessons), each on a
    /// fresh in-memory libsql store. Writes learning.json and learning.svg into --out.
    Learning(EvalLearningArgs),
    /// Convert a public long-term conversation benchmark (LoCoMo's locomo10.json, or a
    /// directory of LoCoMo or REALTALK dialogue files) into the retrieval format: one
    /// dataset directory per dialogue under --out, one episode per sitting (its turns are
    /// the steps), one query per question labeled with the sittings of its evidence
    Convert(EvalConvertArgs),
    /// Choose the fusion and the abstention thresholds by leave-one-dataset-out over
    /// several labeled sets, and report every set side by side: BM25, vector, and hybrid
    /// with the configured settings and with those chosen without the set. Needs the
    /// embedding model
    LeaveOneOut(EvalLeaveOneOutArgs),
}

#[derive(Debug, Args)]
pub struct EvalConvertArgs {
    /// A JSON file, or a directory of them (read in name order)
    #[arg(long, value_name = "PATH")]
    pub input: PathBuf,
    /// A new or empty directory for the datasets
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Keep every question category (by default LoCoMo's adversarial category 5 is left out:
    /// its questions' premise is false)
    #[arg(long)]
    pub all_categories: bool,
}

#[derive(Debug, Args)]
pub struct EvalLeaveOneOutArgs {
    /// A labeled set as NAME=DIR: a dataset directory, or a directory of them (one per
    /// dialogue); at least two
    #[arg(long = "set", value_name = "NAME=DIR", required = true)]
    pub sets: Vec<String>,
    /// Extra queries for a single-dataset set, as NAME=FILE; may be repeated
    #[arg(long, value_name = "NAME=FILE")]
    pub extra_queries: Vec<String>,
}

#[derive(Debug, Args)]
pub struct EvalLearningArgs {
    /// Tasks in the stream
    #[arg(long, default_value_t = 500)]
    pub tasks: usize,
    /// Seed of the world and of the agent's exploration
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Directory for learning.json and learning.svg
    #[arg(long, value_name = "DIR", default_value = "eval-out")]
    pub out: PathBuf,
    /// Use lexical retrieval even when the embedding model is installed
    #[arg(long)]
    pub lexical: bool,
    /// Change one step of three families' procedures half way through the stream (the drift
    /// scenario); the report shows how fast each arm recovers on them
    #[arg(long)]
    pub drift: bool,
    /// The world of tasks: `tuning` (the one the memory was tuned on) or `holdout` (other
    /// families, tools, traps and wordings, never tuned on)
    #[arg(long, default_value = "tuning")]
    pub world: memory_eval::learning::WorldName,
    /// Tasks between consolidation runs of each arm's memory (0: never)
    #[arg(long, default_value_t = 50)]
    pub consolidate_every: usize,
    /// The agent: `repairing` (repairs a proven plan, applies lessons, gives feedback) or
    /// `literal` (follows the plan step by step, explores only once it is exhausted, retries a
    /// transient failure once, never gives feedback)
    #[arg(long, default_value = "repairing")]
    pub agent: memory_eval::learning::AgentStyle,
    /// Share of the calls of a task's right next step that fail transiently (flaky tools), in
    /// [0, 1)
    #[arg(long, default_value_t = 0.0)]
    pub flaky: f64,
}

#[derive(Debug, Args)]
pub struct EvalRetrievalArgs {
    /// Directory holding episodes.jsonl and queries.jsonl, or a directory of such
    /// directories (a converted benchmark: each part in a namespace of its own)
    #[arg(long, value_name = "DIR")]
    pub dataset: PathBuf,
    /// Add the queries of this file (queries.jsonl format, labels naming the dataset's
    /// episodes) to the dataset's; may be repeated
    #[arg(long, value_name = "FILE")]
    pub extra_queries: Vec<PathBuf>,
    /// Withhold the queries' context and task type: only the task text speaks
    #[arg(long)]
    pub description_only: bool,
    /// Evaluate both modes (with context and description only)
    #[arg(long, conflicts_with = "description_only")]
    pub both: bool,
    /// Choose the retrieval weights and abstention thresholds by k-fold cross-validation on
    /// the dataset (a grid of settings, hybrid, both modes); prints the out-of-fold scores and
    /// the choice. Needs the embedding model
    #[arg(long, conflicts_with_all = ["description_only", "both"])]
    pub cross_validate: bool,
    /// Folds of the cross-validation
    #[arg(long, default_value_t = 5, requires = "cross_validate")]
    pub folds: usize,
    /// After cross-validating, score the given and the chosen weights on this dataset (one
    /// never tuned on), without searching anything on it
    #[arg(long, value_name = "DIR", requires = "cross_validate")]
    pub report_on: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum EpisodeCmd {
    /// Start an episode; prints its id
    Start(StartArgs),
    /// Log one step of an episode
    Step(StepArgs),
    /// Complete an episode; prints reward, reflection and what was learned
    Complete(CompleteArgs),
    /// Show an episode with its steps
    Show {
        /// Episode id
        id: String,
    },
    /// List episodes, newest first
    List(ListArgs),
    /// Full-text search over tasks, reflections and steps
    Search {
        /// Search text
        text: String,
        /// Most results
        #[arg(long, default_value_t = 10)]
        limit: u32,
    },
    /// Forget episodes: remove them and take what they taught out of the learned items
    /// (cannot be undone; an audit record of id, time and reason remains)
    Forget(ForgetArgs),
    /// The audit records of forgotten episodes, newest first
    Forgotten {
        /// Most records
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["ids", "before"])))]
pub struct ForgetArgs {
    /// Episode ids (at most 256)
    pub ids: Vec<String>,
    /// Instead of ids: every episode started before this time (`2026-01-31` or RFC 3339),
    /// narrowed by --domain, --type and --tag; needs --yes
    #[arg(long, conflicts_with = "ids")]
    pub before: Option<String>,
    /// Only episodes of this domain (with --before)
    #[arg(long, requires = "before")]
    pub domain: Option<String>,
    /// Only episodes of this task type (with --before)
    #[arg(long = "type", requires = "before")]
    pub task_type: Option<String>,
    /// Only episodes with this tag (with --before)
    #[arg(long, requires = "before")]
    pub tag: Option<String>,
    /// Why they are forgotten: kept in the audit record (redacted; at most 500 bytes)
    #[arg(long, default_value = "forgotten on request")]
    pub reason: String,
    /// Confirms forgetting every episode a filter matches
    #[arg(long)]
    pub yes: bool,
}

#[derive(Debug, Args, Clone, Default)]
pub struct ContextArgs {
    /// Problem domain, e.g. web_api
    #[arg(long)]
    pub domain: Option<String>,
    /// Programming language
    #[arg(long)]
    pub language: Option<String>,
    /// Framework
    #[arg(long)]
    pub framework: Option<String>,
    /// simple, moderate or complex
    #[arg(long)]
    pub complexity: Option<String>,
    /// Tag (repeatable)
    #[arg(long = "tag")]
    pub tags: Vec<String>,
}

impl ContextArgs {
    /// The task context these flags describe (an unknown complexity is an error).
    pub fn to_context(&self) -> anyhow::Result<memory_core::TaskContext> {
        let complexity: Option<memory_core::Complexity> =
            self.complexity.as_deref().map(str::parse).transpose()?;
        Ok(memory_core::TaskContext {
            domain: self.domain.clone().unwrap_or_default(),
            language: self.language.clone(),
            framework: self.framework.clone(),
            complexity: complexity.unwrap_or_default(),
            tags: self.tags.clone(),
        })
    }
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// What the task is
    #[arg(long)]
    pub task: String,
    #[command(flatten)]
    pub context: ContextArgs,
    /// code_generation, debugging, refactoring, testing, analysis, documentation or other
    #[arg(long = "type", default_value = "other")]
    pub task_type: String,
    /// Print the recommendation for the task first; its estimate is recorded with the new
    /// episode, so `memory stats` can show how estimates compare with what happened
    #[arg(long)]
    pub advise: bool,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("result").required(true).args(["ok", "error", "timeout"])))]
pub struct StepArgs {
    /// Episode id
    pub episode_id: String,
    /// Tool name
    #[arg(long)]
    pub tool: String,
    /// What was done with it
    #[arg(long)]
    pub action: String,
    /// Tool parameters as JSON
    #[arg(long)]
    pub params: Option<String>,
    /// The step succeeded with this output
    #[arg(long, value_name = "OUTPUT")]
    pub ok: Option<String>,
    /// The step failed with this message
    #[arg(long, value_name = "MSG")]
    pub error: Option<String>,
    /// The step timed out
    #[arg(long)]
    pub timeout: bool,
    /// Latency in milliseconds
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Tokens used
    #[arg(long)]
    pub tokens: Option<u64>,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("outcome").required(true).args(["success", "partial", "failure", "abstain"])))]
pub struct CompleteArgs {
    /// Episode id
    pub episode_id: String,
    /// The task succeeded; a short verdict
    #[arg(long, value_name = "VERDICT")]
    pub success: Option<String>,
    /// The task partly succeeded; a short verdict
    #[arg(long, value_name = "VERDICT")]
    pub partial: Option<String>,
    /// The task failed; why
    #[arg(long, value_name = "REASON")]
    pub failure: Option<String>,
    /// The agent abstained; why
    #[arg(long, value_name = "REASON")]
    pub abstain: Option<String>,
    /// Produced artifact (repeatable; with --success)
    #[arg(long = "artifact")]
    pub artifacts: Vec<String>,
    /// Completed item (repeatable; with --partial)
    #[arg(long = "done")]
    pub completed: Vec<String>,
    /// Failed item (repeatable; with --partial)
    #[arg(long = "not-done")]
    pub failed: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub context: ContextArgs,
    /// Only this task type
    #[arg(long = "type")]
    pub task_type: Option<String>,
    /// Only this outcome: success, partial_success, failure, abstained, in_progress
    #[arg(long)]
    pub outcome: Option<String>,
    /// Most results
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    /// Results to skip
    #[arg(long, default_value_t = 0)]
    pub offset: u32,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["pattern", "heuristic"])))]
pub struct FeedbackArgs {
    /// Pattern id
    #[arg(long)]
    pub pattern: Option<String>,
    /// Heuristic id
    #[arg(long)]
    pub heuristic: Option<String>,
    /// The episode in which it was applied
    #[arg(long)]
    pub episode: String,
    /// helped, no-effect or hindered
    #[arg(long)]
    pub outcome: String,
}

#[derive(Debug, Args, Clone)]
pub struct LearnedFilterArgs {
    /// Only items compatible with this task type
    #[arg(long = "type")]
    pub task_type: Option<String>,
    /// Only items compatible with this domain
    #[arg(long)]
    pub domain: Option<String>,
    /// Only items compatible with this language
    #[arg(long)]
    pub language: Option<String>,
    /// Include superseded, pruned, merged and retracted items
    #[arg(long)]
    pub all: bool,
    /// Most results
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
}

#[derive(Debug, Subcommand)]
pub enum PatternCmd {
    /// List patterns, most evidence first
    List {
        #[command(flatten)]
        filter: LearnedFilterArgs,
        /// Only this kind: tool_sequence, decision_point, error_recovery, context_pattern
        #[arg(long)]
        kind: Option<String>,
    },
    /// Show one pattern
    Show {
        /// Pattern id
        id: String,
    },
    #[command(flatten)]
    Correct(CorrectCmd),
}

/// An operator's corrections of a learned item (full id, or a prefix as listed).
#[derive(Debug, Subcommand)]
pub enum CorrectCmd {
    /// Retract it: never recommended again, kept for the record (`--all` lists it)
    Retract {
        /// Id (full, or a prefix as listed)
        id: String,
        /// Why (kept with it; at most 500 bytes)
        #[arg(long)]
        reason: String,
    },
    /// Pin it: the team's agreed procedure, shown first and labelled pinned
    Pin {
        /// Id (full, or a prefix as listed)
        id: String,
        /// Why (kept with it; at most 500 bytes)
        #[arg(long)]
        reason: String,
    },
    /// Remove its pin
    Unpin {
        /// Id (full, or a prefix as listed)
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum HeuristicCmd {
    /// List heuristics, most support first
    List {
        #[command(flatten)]
        filter: LearnedFilterArgs,
    },
    #[command(flatten)]
    Correct(CorrectCmd),
}

#[derive(Debug, Subcommand)]
pub enum LessonCmd {
    /// List failure lessons, most occurrences first
    List {
        #[command(flatten)]
        filter: LearnedFilterArgs,
    },
    #[command(flatten)]
    Correct(CorrectCmd),
}

#[derive(Debug, Subcommand)]
pub enum NamespaceCmd {
    /// Empty a namespace for good: every episode forgotten (an audit record each), then
    /// every learned item and record of it removed; its quota is free again
    Purge {
        /// The namespace
        namespace: String,
        /// Why (kept in the audit records; at most 500 bytes)
        #[arg(long, default_value = "namespace purged")]
        reason: String,
        /// Confirms: this cannot be undone
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyCmd {
    /// Print a new random key (64 hexadecimal digits) to standard output; keep it in a secret
    /// manager or a 0600 key file, never in memory.toml
    Generate,
    /// Whether the data directory is encrypted, how, and the fingerprints of its key and of
    /// the configured one (never the keys)
    Status,
}

#[derive(Debug, Args)]
pub struct RekeyArgs {
    /// A file (mode 0600 or 0400) holding the new key
    #[arg(long, conflicts_with = "new_key_command")]
    pub new_key_file: Option<PathBuf>,
    /// A command (run with `sh -c`) that prints the new key
    #[arg(long)]
    pub new_key_command: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum SyncCmd {
    /// Breaker state, outbox length, last successful sync, last error
    Status,
    /// Replay the outbox and sync the replica now
    Now,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Episodes per task family
    #[arg(long, default_value_t = 4)]
    pub rounds: u32,
}

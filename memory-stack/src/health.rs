//! [`Stack::health`]: each component's state, as `memory health` and the MCP `health` tool
//! report it.

use std::time::{Duration, Instant};

use memory_core::EpisodeStore;
use serde::Serialize;
use serde_json::{Value, json};

use crate::{CacheState, EmbedderState, Stack};

/// A component's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Working.
    Ok,
    /// Working with less than it should have (no cache file, lexical retrieval, a damaged
    /// file moved aside, journaled writes waiting).
    Degraded,
    /// Unreachable.
    Down,
    /// Damaged: the database check found problems.
    Corrupt,
    /// Not looked at by this process.
    Unchecked,
}

impl Status {
    /// The word shown in tables.
    pub fn word(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Degraded => "degraded",
            Status::Down => "DOWN",
            Status::Corrupt => "CORRUPT",
            Status::Unchecked => "unchecked",
        }
    }
}

/// One component's state.
#[derive(Debug, Clone, Serialize)]
pub struct ComponentHealth {
    /// `durable`, `cache`, `journal`, `breaker` or `embedder`.
    pub component: &'static str,
    /// Its state.
    pub status: Status,
    /// One line for people.
    pub detail: String,
    /// Figures for programs (flattened into the component's JSON object).
    #[serde(flatten)]
    pub data: serde_json::Map<String, serde_json::Value>,
}

/// Every component's state.
#[derive(Debug, Clone, Serialize)]
pub struct HealthReport {
    /// The durable layer answers and its check found nothing wrong.
    pub healthy: bool,
    /// The components.
    pub components: Vec<ComponentHealth>,
}

impl Stack {
    /// Checks every component: pings the durable layer (and checks a local database file
    /// with `PRAGMA quick_check`, for at most `check_deadline`), and reports the cache, the
    /// journals (this process's pending writes, other processes' journals, damaged journals
    /// and what was recovered from them), the breaker and the embedder.
    pub async fn health(&self, check_deadline: Duration) -> HealthReport {
        let durable = self.durable_health(check_deadline).await;
        let healthy = durable.status == Status::Ok;
        let components = vec![
            durable,
            self.cache_health(),
            self.journal_health(),
            self.breaker_health(),
            self.embedder_health(),
        ];
        HealthReport {
            healthy,
            components,
        }
    }

    async fn durable_health(&self, deadline: Duration) -> ComponentHealth {
        let name = self.mode.name();
        let started = Instant::now();
        let ping = self.durable.ping().await;
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        if let Err(e) = &ping {
            let down = e.is_transient();
            let status = if down { Status::Down } else { Status::Corrupt };
            let data = json!({ "mode": name, "latency_ms": latency_ms, "error": e.to_string() });
            let detail = format!("{name} unreachable: {e}");
            return ComponentHealth::new("durable", status, detail, data);
        }
        let check = match self.durable.integrity_check(deadline, 20).await {
            Ok(c) => c,
            Err(e) => Some(memory_storage_turso::IntegrityCheck {
                problems: vec![e.to_string()],
                finished: true,
            }),
        };
        let schema = self.durable.schema_version();
        let ok = |check: &str| (Status::Ok, format!("{name} ({latency_ms:.1} ms){check}"));
        let (status, detail) = match &check {
            Some(c) if !c.ok() => {
                let n = c.problems.len();
                let first = c.problems.first().map_or("", String::as_str);
                let found = format!("{name}: the database check found {n} problem(s): {first}");
                (Status::Corrupt, found)
            }
            Some(c) if !c.finished => ok(&format!(
                "; database check unfinished after {deadline:?}, no problem so far"
            )),
            Some(_) => ok("; database check ok"),
            None => ok(""),
        };
        let data = json!({
            "mode": name,
            "latency_ms": latency_ms,
            "schema_version": schema,
            "check": check.as_ref().map(|c| json!({ "finished": c.finished, "problems": c.problems })),
        });
        ComponentHealth::new("durable", status, detail, data)
    }

    fn cache_health(&self) -> ComponentHealth {
        let (status, detail) = match &self.cache {
            CacheState::File { path } => (Status::Ok, format!("file {}", path.display())),
            CacheState::Rebuilt {
                path,
                moved_to,
                reason,
            } => (
                Status::Degraded,
                format!(
                    "the cache file was damaged ({reason}): moved to {}, new file {}",
                    moved_to.display(),
                    path.display()
                ),
            ),
            CacheState::InMemory { reason } => (Status::Ok, format!("in memory: {reason}")),
            CacheState::Off { reason } => (Status::Degraded, format!("off: {reason}")),
        };
        let stats = self.tiered.status().cache;
        let data = json!({ "state": format!("{:?}", self.cache), "stats": stats });
        ComponentHealth::new("cache", status, detail, data)
    }

    fn journal_health(&self) -> ComponentHealth {
        let sync = self.tiered.status();
        let others = self.journal.other_files();
        let damaged = self.journal.damaged();
        let unreadable: u64 = damaged.iter().map(|d| d.unreadable).sum();
        let dead = sync.dead_letters;
        let ok = damaged.is_empty() && sync.outbox_len == 0 && dead == 0;
        let status = if ok { Status::Ok } else { Status::Degraded };
        let mut parts = vec![format!("{} pending in this process", sync.outbox_len)];
        if !others.is_empty() {
            parts.push(format!("{} journal(s) of other processes", others.len()));
        }
        if dead > 0 {
            parts.push(format!("{dead} journaled write(s) rejected on replay"));
        }
        for d in &damaged {
            parts.push(format!(
                "damaged journal {}: {} entries recovered, {} unreadable ({})",
                d.file.display(),
                d.recovered,
                d.unreadable,
                d.error
            ));
        }
        let data = json!({
            "pending": sync.outbox_len,
            "queued_total": sync.queued_total,
            "replayed_total": sync.replayed_total,
            "dead_letters": sync.dead_letters,
            "last_rejected": sync.last_rejected,
            "other_journals": others,
            "damaged": damaged,
            "unreadable_entries": unreadable,
        });
        ComponentHealth::new("journal", status, parts.join("; "), data)
    }

    fn breaker_health(&self) -> ComponentHealth {
        let sync = self.tiered.status();
        let closed = sync.breaker == memory_tiered::BreakerState::Closed;
        let status = if closed { Status::Ok } else { Status::Degraded };
        let data = json!({
            "state": sync.breaker,
            "last_successful_sync": sync.last_successful_sync,
            "last_error": sync.last_error,
        });
        let detail = format!("{:?}", sync.breaker).to_lowercase();
        ComponentHealth::new("breaker", status, detail, data)
    }

    fn embedder_health(&self) -> ComponentHealth {
        let (status, detail) = match &self.embedder {
            EmbedderState::Loaded(desc) => {
                (Status::Ok, format!("{desc}: semantic + lexical retrieval"))
            }
            EmbedderState::Missing(why) => (
                Status::Degraded,
                format!("{why}; retrieval is lexical only"),
            ),
            EmbedderState::NotLoaded => {
                (Status::Unchecked, "not loaded by this command".to_owned())
            }
        };
        ComponentHealth::new("embedder", status, detail, json!({}))
    }
}

impl ComponentHealth {
    /// A component's state, with the fields of the JSON object `data` as its figures.
    fn new(component: &'static str, status: Status, detail: String, data: Value) -> Self {
        let data = match data {
            Value::Object(fields) => fields,
            _ => serde_json::Map::new(),
        };
        ComponentHealth {
            component,
            status,
            detail,
            data,
        }
    }
}

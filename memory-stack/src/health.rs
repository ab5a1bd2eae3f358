//! [`Stack::health`]: each component's state, as `memory health` and the MCP `health` tool
//! report it.

use std::time::{Duration, Instant};

use memory_core::EpisodeStore;
use serde::Serialize;
use serde_json::json;

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
        let mut components = vec![self.durable_health(check_deadline).await];
        components.push(self.cache_health());
        components.push(self.journal_health());
        let sync = self.tiered.status();
        components.push(ComponentHealth {
            component: "breaker",
            status: match sync.breaker {
                memory_core::BreakerState::Closed => Status::Ok,
                _ => Status::Degraded,
            },
            detail: format!("{:?}", sync.breaker).to_lowercase(),
            data: obj(json!({
                "state": sync.breaker,
                "last_successful_sync": sync.last_successful_sync,
                "last_error": sync.last_error,
            })),
        });
        components.push(self.embedder_health());
        let healthy = components
            .iter()
            .find(|c| c.component == "durable")
            .is_some_and(|c| c.status == Status::Ok);
        HealthReport {
            healthy,
            components,
        }
    }

    async fn durable_health(&self, deadline: Duration) -> ComponentHealth {
        let started = Instant::now();
        let ping = self.durable.ping().await;
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        if let Err(e) = &ping {
            return ComponentHealth {
                component: "durable",
                status: if e.is_transient() {
                    Status::Down
                } else {
                    Status::Corrupt
                },
                detail: format!("{} unreachable: {e}", self.mode.name()),
                data: obj(
                    json!({ "mode": self.mode.name(), "latency_ms": latency_ms, "error": e.to_string() }),
                ),
            };
        }
        let check = match self.durable.integrity_check(deadline, 20).await {
            Ok(c) => c,
            Err(e) => Some(memory_storage_turso::IntegrityCheck {
                problems: vec![e.to_string()],
                finished: true,
            }),
        };
        let schema = self.durable.schema_version();
        let (status, detail) = match &check {
            Some(c) if !c.ok() => (
                Status::Corrupt,
                format!(
                    "{}: the database check found {} problem(s): {}",
                    self.mode.name(),
                    c.problems.len(),
                    c.problems.first().map_or("", String::as_str)
                ),
            ),
            Some(c) if !c.finished => (
                Status::Ok,
                format!(
                    "{} ({latency_ms:.1} ms); database check unfinished after {deadline:?}, no problem so far",
                    self.mode.name()
                ),
            ),
            Some(_) => (
                Status::Ok,
                format!(
                    "{} ({latency_ms:.1} ms); database check ok",
                    self.mode.name()
                ),
            ),
            None => (
                Status::Ok,
                format!("{} ({latency_ms:.1} ms)", self.mode.name()),
            ),
        };
        ComponentHealth {
            component: "durable",
            status,
            detail,
            data: obj(json!({
                "mode": self.mode.name(),
                "latency_ms": latency_ms,
                "schema_version": schema,
                "check": check.as_ref().map(|c| json!({ "finished": c.finished, "problems": c.problems })),
            })),
        }
    }

    fn cache_health(&self) -> ComponentHealth {
        let stats = self.tiered.status().cache;
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
        ComponentHealth {
            component: "cache",
            status,
            detail,
            data: obj(json!({ "state": format!("{:?}", self.cache), "stats": stats })),
        }
    }

    fn journal_health(&self) -> ComponentHealth {
        let sync = self.tiered.status();
        let others = self.journal.other_files();
        let damaged = self.journal.damaged();
        let unreadable: u64 = damaged.iter().map(|d| d.unreadable).sum();
        let status = if damaged.is_empty() && sync.outbox_len == 0 && sync.dead_letters == 0 {
            Status::Ok
        } else {
            Status::Degraded
        };
        let mut parts = vec![format!("{} pending in this process", sync.outbox_len)];
        if !others.is_empty() {
            parts.push(format!("{} journal(s) of other processes", others.len()));
        }
        if sync.dead_letters > 0 {
            parts.push(format!(
                "{} journaled write(s) rejected on replay",
                sync.dead_letters
            ));
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
        let detail = parts.join("; ");
        ComponentHealth {
            component: "journal",
            status,
            detail,
            data: obj(json!({
                "pending": sync.outbox_len,
                "queued_total": sync.queued_total,
                "replayed_total": sync.replayed_total,
                "dead_letters": sync.dead_letters,
                "last_rejected": sync.last_rejected,
                "other_journals": others,
                "damaged": damaged,
                "unreadable_entries": unreadable,
            })),
        }
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
        ComponentHealth {
            component: "embedder",
            status,
            detail,
            data: serde_json::Map::new(),
        }
    }
}

/// The fields of a JSON object (a component's figures).
fn obj(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    match v {
        serde_json::Value::Object(m) => m,
        _ => serde_json::Map::new(),
    }
}

//! [`Metrics`]: what `memory serve` exposes at `GET /metrics`, in the Prometheus text format.
//!
//! Counted as they happen: tool calls and their latencies, per tool and outcome. Read when
//! scraped, from the stack: the circuit breaker, the journal's pending writes, the cache's
//! hit ratio, the embedding backlog of the server's namespace, consolidation runs.
//!
//! The latencies are also kept under the names of OpenTelemetry's semantic conventions (see
//! [`memory_core::telemetry`]), in their Prometheus form: `mcp_server_operation_duration_seconds`
//! per tool (`mcp.server.operation.duration`) and `gen_ai_client_operation_duration_seconds`
//! per memory operation (`gen_ai.client.operation.duration`: `create_memory`,
//! `update_memory`, `upsert_memory` or `search_memory`), each with `error_type` on failures
//! (empty otherwise), in the buckets the conventions give. The older
//! `memory_tool_calls_total` and `memory_tool_call_seconds` stay, unchanged, for the dashboards
//! that use them.

use memory_core::telemetry::{
    self, CLIENT_OPERATION_DURATION, CLIENT_OPERATION_DURATION_BUCKETS, ERROR_TYPE, EXECUTE_TOOL,
    MCP_METHOD_NAME, MCP_SERVER_OPERATION_DURATION, MCP_SERVER_OPERATION_DURATION_BUCKETS,
    OPERATION_NAME, TOOL_ERROR, TOOL_NAME, TOOLS_CALL,
};
use memory_tiered::BreakerState;
use std::time::Duration;

use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

use crate::error::{Error, Result};

/// The server's metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    calls: IntCounterVec,
    latency: HistogramVec,
    /// `mcp.server.operation.duration`, per tool.
    mcp_duration: HistogramVec,
    /// `gen_ai.client.operation.duration`, per memory operation.
    operation_duration: HistogramVec,
    breaker_open: IntGauge,
    journal_pending: IntGauge,
    journal_rejected: IntGauge,
    journal_refused_over_quota: IntGauge,
    cache_hit_ratio: Gauge,
    cache_entries: IntGauge,
    embedding_backlog: IntGauge,
    consolidations: IntCounter,
    in_flight: IntGauge,
}

fn registered<T: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: prometheus::Result<T>,
) -> Result<T> {
    let metric = metric.map_err(|e| Error::Metrics(e.to_string()))?;
    registry
        .register(Box::new(metric.clone()))
        .map_err(|e| Error::Metrics(e.to_string()))?;
    Ok(metric)
}

/// A histogram of seconds named after an OpenTelemetry metric (`_seconds` appended), with
/// its labels named after OpenTelemetry attributes.
fn otel_histogram(
    registry: &Registry,
    name: &str,
    help: &str,
    buckets: &[f64],
    attributes: &[&str],
) -> Result<HistogramVec> {
    let labels: Vec<String> = attributes
        .iter()
        .map(|a| telemetry::prometheus_name(a))
        .collect();
    let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
    registered(
        registry,
        HistogramVec::new(
            HistogramOpts::new(
                format!("{}_seconds", telemetry::prometheus_name(name)),
                help,
            )
            .buckets(buckets.to_vec()),
            &labels,
        ),
    )
}

/// Sets an integer gauge to a count (saturating at `i64::MAX`).
fn set(gauge: &IntGauge, count: u64) {
    gauge.set(i64::try_from(count).unwrap_or(i64::MAX));
}

/// Stack figures read when the metrics are scraped.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    /// The breaker's state.
    pub breaker: Option<BreakerState>,
    /// Writes waiting in this process's journal.
    pub journal_pending: u64,
    /// Journaled writes refused on replay since start.
    pub journal_rejected: u64,
    /// Journaled writes refused on replay since start for crossing a quota.
    pub journal_refused_over_quota: u64,
    /// The cache's hit ratio, and the entries it holds.
    pub cache: Option<(f64, u64)>,
    /// Episodes of the server's namespace waiting to be embedded.
    pub embedding_backlog: Option<u64>,
    /// Consolidation runs finished by this process.
    pub consolidations: u64,
    /// Tool calls running now.
    pub in_flight: usize,
}

impl Metrics {
    /// Empty metrics, registered in a registry of their own.
    pub fn new() -> Result<Self> {
        let registry = Registry::new();
        let calls = registered(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "memory_tool_calls_total",
                    "MCP tool calls by tool and outcome",
                ),
                &["tool", "outcome"],
            ),
        )?;
        let latency = registered(
            &registry,
            HistogramVec::new(
                HistogramOpts::new("memory_tool_call_seconds", "MCP tool call latency").buckets(
                    vec![
                        0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                        2.5, 5.0, 10.0,
                    ],
                ),
                &["tool"],
            ),
        )?;
        let mcp_duration = otel_histogram(
            &registry,
            MCP_SERVER_OPERATION_DURATION,
            "MCP tool call duration as the server saw it (mcp.server.operation.duration)",
            &MCP_SERVER_OPERATION_DURATION_BUCKETS,
            &[MCP_METHOD_NAME, TOOL_NAME, OPERATION_NAME, ERROR_TYPE],
        )?;
        let operation_duration = otel_histogram(
            &registry,
            CLIENT_OPERATION_DURATION,
            "Memory operation duration by gen_ai.operation.name (gen_ai.client.operation.duration)",
            &CLIENT_OPERATION_DURATION_BUCKETS,
            &[OPERATION_NAME, ERROR_TYPE],
        )?;
        let gauge = |name: &str, help: &str| registered(&registry, IntGauge::new(name, help));
        Ok(Metrics {
            breaker_open: gauge(
                "memory_breaker_state",
                "Circuit breaker of the durable layer: 0 closed, 1 half-open, 2 open",
            )?,
            journal_pending: gauge(
                "memory_journal_pending",
                "Writes journaled by this process, waiting for the durable layer",
            )?,
            journal_rejected: gauge(
                "memory_journal_rejected",
                "Journaled writes refused on replay since start",
            )?,
            journal_refused_over_quota: gauge(
                "memory_journal_refused_over_quota",
                "Journaled writes refused on replay since start because they would cross a quota (recorded in the journal directory's refused.jsonl)",
            )?,
            cache_hit_ratio: registered(
                &registry,
                Gauge::new("memory_cache_hit_ratio", "Share of cache lookups that hit"),
            )?,
            cache_entries: gauge("memory_cache_entries", "Entries the cache holds")?,
            embedding_backlog: gauge(
                "memory_embedding_backlog",
                "Episodes of the server's namespace waiting to be embedded",
            )?,
            consolidations: registered(
                &registry,
                IntCounter::new(
                    "memory_consolidation_runs_total",
                    "Consolidation runs finished by this process",
                ),
            )?,
            in_flight: gauge("memory_tool_calls_in_flight", "Tool calls running now")?,
            registry,
            calls,
            latency,
            mcp_duration,
            operation_duration,
        })
    }

    /// Counts a tool call: `operation` is the memory operation the tool performs (`None` for
    /// one that reads no memory records), `error` the failure's kind (`not_found`, ...), `None`
    /// when the call succeeded.
    pub fn observe(
        &self,
        tool: &str,
        operation: Option<&str>,
        error: Option<&str>,
        took: Duration,
    ) {
        let seconds = took.as_secs_f64();
        self.calls
            .with_label_values(&[tool, if error.is_none() { "ok" } else { "error" }])
            .inc();
        self.latency.with_label_values(&[tool]).observe(seconds);
        let tool_error = if error.is_some() { TOOL_ERROR } else { "" };
        self.mcp_duration
            .with_label_values(&[TOOLS_CALL, tool, EXECUTE_TOOL, tool_error])
            .observe(seconds);
        if let Some(operation) = operation {
            self.operation_duration
                .with_label_values(&[operation, error.unwrap_or("")])
                .observe(seconds);
        }
    }

    /// The text exposition, with the gauges set from `g`.
    pub fn render(&self, g: &Gauges) -> String {
        self.breaker_open.set(match g.breaker {
            Some(BreakerState::Open) => 2,
            Some(BreakerState::HalfOpen) => 1,
            _ => 0,
        });
        set(&self.journal_pending, g.journal_pending);
        set(&self.journal_rejected, g.journal_rejected);
        set(
            &self.journal_refused_over_quota,
            g.journal_refused_over_quota,
        );
        if let Some((ratio, entries)) = g.cache {
            self.cache_hit_ratio.set(ratio);
            set(&self.cache_entries, entries);
        }
        if let Some(backlog) = g.embedding_backlog {
            set(&self.embedding_backlog, backlog);
        }
        let seen = self.consolidations.get();
        if g.consolidations > seen {
            self.consolidations.inc_by(g.consolidations - seen);
        }
        set(&self.in_flight, g.in_flight as u64);
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            return format!("# metrics could not be encoded: {e}\n");
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn counts_calls_and_reports_gauges_in_the_text_format() {
        let m = Metrics::new().unwrap();
        m.observe(
            "recommend",
            crate::tools::memory_operation("recommend"),
            None,
            Duration::from_millis(12),
        );
        m.observe(
            "recommend",
            crate::tools::memory_operation("recommend"),
            Some("rate_limited"),
            Duration::from_millis(3),
        );
        m.observe(
            "log_step",
            crate::tools::memory_operation("log_step"),
            None,
            Duration::from_millis(1),
        );
        m.observe(
            "stats",
            crate::tools::memory_operation("stats"),
            None,
            Duration::from_millis(1),
        );
        let text = m.render(&Gauges {
            breaker: Some(BreakerState::Open),
            journal_pending: 7,
            cache: Some((0.75, 10)),
            embedding_backlog: Some(3),
            consolidations: 2,
            ..Gauges::default()
        });
        for line in [
            "memory_tool_calls_total{outcome=\"ok\",tool=\"recommend\"} 1",
            "memory_tool_calls_total{outcome=\"error\",tool=\"recommend\"} 1",
            "memory_tool_call_seconds_count{tool=\"recommend\"} 2",
            "memory_breaker_state 2",
            "memory_journal_pending 7",
            "memory_cache_hit_ratio 0.75",
            "memory_embedding_backlog 3",
            "memory_consolidation_runs_total 2",
            // The OpenTelemetry conventions' names.
            "gen_ai_client_operation_duration_seconds_count{error_type=\"\",gen_ai_operation_name=\"search_memory\"} 1",
            "gen_ai_client_operation_duration_seconds_count{error_type=\"rate_limited\",gen_ai_operation_name=\"search_memory\"} 1",
            "gen_ai_client_operation_duration_seconds_bucket{error_type=\"\",gen_ai_operation_name=\"update_memory\",le=\"0.01\"} 1",
            "mcp_server_operation_duration_seconds_count{error_type=\"\",gen_ai_operation_name=\"execute_tool\",gen_ai_tool_name=\"recommend\",mcp_method_name=\"tools/call\"} 1",
            "mcp_server_operation_duration_seconds_count{error_type=\"tool_error\",gen_ai_operation_name=\"execute_tool\",gen_ai_tool_name=\"recommend\",mcp_method_name=\"tools/call\"} 1",
            "mcp_server_operation_duration_seconds_count{error_type=\"\",gen_ai_operation_name=\"execute_tool\",gen_ai_tool_name=\"stats\",mcp_method_name=\"tools/call\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        // `stats` reads no memory records: no memory operation.
        assert!(!text.contains("gen_ai_operation_name=\"stats\""), "{text}");
    }

    #[test]
    fn every_tool_is_a_memory_operation_but_stats_and_health() {
        for tool in crate::tools::ALL {
            let expected = !matches!(tool.name, "stats" | "health");
            assert_eq!(
                crate::tools::memory_operation(tool.name).is_some(),
                expected,
                "{}",
                tool.name
            );
        }
    }
}

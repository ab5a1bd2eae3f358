//! [`Metrics`]: what `memory serve` exposes at `GET /metrics`, in the Prometheus text format.
//!
//! Counted as they happen: tool calls and their latencies, per tool and outcome. Read when
//! scraped, from the stack: the circuit breaker, the journal's pending writes, the cache's
//! hit ratio, the embedding backlog of the server's namespace, consolidation runs.

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
    breaker_open: IntGauge,
    journal_pending: IntGauge,
    journal_rejected: IntGauge,
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
        })
    }

    /// Counts a tool call.
    pub fn observe(&self, tool: &str, ok: bool, took: Duration) {
        self.calls
            .with_label_values(&[tool, if ok { "ok" } else { "error" }])
            .inc();
        self.latency
            .with_label_values(&[tool])
            .observe(took.as_secs_f64());
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
        m.observe("recommend", true, Duration::from_millis(12));
        m.observe("recommend", false, Duration::from_millis(3));
        m.observe("log_step", true, Duration::from_millis(1));
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
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}

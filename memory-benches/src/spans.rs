//! Where the time goes: a `tracing` layer that sums, per span name, how long spans lived (from
//! creation to close) and how many closed. The ingest run prints it per slice (`--spans`), so
//! a cost that grows with the store shows up by name.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tracing::Subscriber;
use tracing::span::{Attributes, Id};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// Total lifetime and count of the spans of each name.
#[derive(Debug, Default, Clone)]
pub struct SpanTotals(pub HashMap<(&'static str, &'static str), (Duration, u64)>);

impl SpanTotals {
    /// What happened between `earlier` and this: per name, time and count added since.
    #[must_use]
    pub fn since(&self, earlier: &SpanTotals) -> SpanTotals {
        let mut out = HashMap::new();
        for (name, (t, n)) in &self.0 {
            let (t0, n0) = earlier.0.get(name).copied().unwrap_or_default();
            if *n > n0 {
                out.insert(*name, (t.saturating_sub(t0), n - n0));
            }
        }
        SpanTotals(out)
    }

    /// `(module::name, mean time per span, count)`, largest total first.
    pub fn by_total(&self) -> Vec<(String, Duration, u64)> {
        let mut v: Vec<_> = self
            .0
            .iter()
            .map(|((target, name), (t, n))| (format!("{target}::{name}"), *t, *n))
            .collect();
        v.sort_by_key(|x| std::cmp::Reverse(x.1));
        v.into_iter()
            .map(|(name, t, n)| (name, t / u32::try_from(n.max(1)).unwrap_or(u32::MAX), n))
            .collect()
    }
}

/// The layer; clone the handle to read the totals.
#[derive(Debug, Clone, Default)]
pub struct SpanTimes(Arc<Mutex<SpanTotals>>);

impl SpanTimes {
    /// The totals so far.
    pub fn totals(&self) -> SpanTotals {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for SpanTimes {
    fn on_new_span(&self, _attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Instant::now());
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else {
            return;
        };
        let Some(born) = span.extensions().get::<Instant>().copied() else {
            return;
        };
        let mut totals = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (span.metadata().target(), span.name());
        let e = totals.0.entry(key).or_default();
        e.0 += born.elapsed();
        e.1 += 1;
    }
}

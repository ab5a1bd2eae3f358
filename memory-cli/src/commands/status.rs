//! `memory stats` and `memory health`.

use anyhow::Result;
use memory_core::SelfLearningMemory;
use serde_json::json;

use crate::output::{self, pct};
use crate::settings::Settings;

pub async fn stats(m: &SelfLearningMemory, s: &Settings) -> Result<()> {
    let st = m.stats(&s.namespace).await?;
    let success_rate = if st.completed == 0 {
        0.0
    } else {
        st.successes as f64 / st.completed as f64
    };
    if s.json {
        return output::json(&json!({
            "namespace": s.namespace,
            "backend": m.storage().backend_name(),
            "counts": st,
            "success_rate": success_rate,
        }));
    }
    println!(
        "namespace   {}  (backend {})",
        s.namespace,
        m.storage().backend_name()
    );
    println!(
        "episodes    {} ({} completed, {} in progress)",
        st.episodes,
        st.completed,
        st.episodes - st.completed
    );
    println!("success     {} of completed", pct(success_rate));
    println!("steps       {}", st.steps);
    println!(
        "patterns    {} active of {}",
        st.active_patterns, st.patterns
    );
    println!(
        "heuristics  {} active of {}",
        st.active_heuristics, st.heuristics
    );
    println!("lessons     {}", st.lessons);
    println!("feedback    {} events", st.feedback);
    Ok(())
}

pub async fn health(m: &SelfLearningMemory, s: &Settings) -> Result<bool> {
    let started = std::time::Instant::now();
    let durable = m.storage().ping().await;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let ok = durable.is_ok();
    let components = json!([
        {
            "component": "durable",
            "backend": m.storage().backend_name(),
            "status": if ok { "ok" } else { "down" },
            "latency_ms": latency_ms,
            "error": durable.as_ref().err().map(ToString::to_string),
        },
        {
            "component": "embedder",
            "status": "absent",
            "detail": "no semantic embedder is configured: retrieval is lexical only",
        },
    ]);
    if s.json {
        output::json(&json!({ "healthy": ok, "components": components }))?;
    } else {
        println!(
            "durable   {:<5} {} ({latency_ms:.1} ms)",
            if ok { "ok" } else { "DOWN" },
            m.storage().backend_name()
        );
        if let Err(e) = &durable {
            println!("          {e}");
        }
        println!("embedder  absent  no semantic embedder is configured: retrieval is lexical only");
    }
    Ok(ok)
}

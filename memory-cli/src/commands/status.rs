//! `memory stats`, `memory health` and `memory sync`.

use anyhow::Result;
use serde_json::json;

use crate::backend::Stack;
use crate::cli::SyncCmd;
use crate::output::{self, pct};
use crate::settings::Settings;

pub async fn stats(stack: &Stack, s: &Settings) -> Result<()> {
    let m = &stack.memory;
    let st = m.stats(&s.namespace).await?;
    let sync = stack.tiered.status();
    let success_rate = if st.completed == 0 {
        0.0
    } else {
        st.successes as f64 / st.completed as f64
    };
    let hit_rate = sync.cache.map(|c| c.hit_rate());
    if s.json {
        return output::json(&json!({
            "namespace": s.namespace,
            "counts": st,
            "success_rate": success_rate,
            "cache": sync.cache,
            "cache_hit_rate": hit_rate,
            "outbox_len": sync.outbox_len,
            "breaker": sync.breaker,
        }));
    }
    println!("namespace   {}", s.namespace);
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
    match sync.cache {
        Some(c) => println!(
            "cache       {} entries, {} bytes; this process: hit rate {} ({} memory + {} disk hits, {} misses)",
            c.entries,
            c.bytes,
            pct(c.hit_rate()),
            c.memory_hits,
            c.disk_hits,
            c.misses
        ),
        None => println!("cache       off"),
    }
    println!("outbox      {} pending", sync.outbox_len);
    Ok(())
}

pub async fn health(stack: &Stack, s: &Settings) -> Result<bool> {
    let started = std::time::Instant::now();
    let durable = stack.tiered.durable().ping().await;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let sync = stack.tiered.status();
    let ok = durable.is_ok();
    let (embedder_status, embedder_detail) = match &stack.embedder {
        Some(Ok(desc)) => ("ok", format!("{desc}: semantic + lexical retrieval")),
        Some(Err(why)) => ("degraded", format!("{why}; retrieval is lexical only")),
        None => ("unchecked", "not loaded by this command".to_owned()),
    };
    let cache_status = if stack.cache_problem.is_some() {
        "degraded"
    } else {
        "ok"
    };
    let components = json!([
        {
            "component": "durable",
            "mode": format!("{:?}", s.mode).to_lowercase(),
            "status": if ok { "ok" } else { "down" },
            "latency_ms": latency_ms,
            "error": durable.as_ref().err().map(ToString::to_string),
        },
        { "component": "cache", "status": cache_status, "error": stack.cache_problem, "stats": sync.cache },
        { "component": "outbox", "status": "ok", "pending": sync.outbox_len },
        { "component": "breaker", "status": sync.breaker },
        { "component": "embedder", "status": embedder_status, "detail": embedder_detail },
    ]);
    if s.json {
        output::json(&json!({ "healthy": ok, "components": components }))?;
    } else {
        println!(
            "durable   {:<9} {:?} ({latency_ms:.1} ms)",
            if ok { "ok" } else { "DOWN" },
            s.mode
        );
        if let Err(e) = &durable {
            println!("          {e}");
        }
        match &stack.cache_problem {
            Some(p) => println!("cache     degraded  running without cache: {p}"),
            None => println!("cache     ok"),
        }
        println!("outbox    ok        {} pending", sync.outbox_len);
        println!("breaker   {:?}", sync.breaker);
        println!("embedder  {embedder_status:<9} {embedder_detail}");
    }
    Ok(ok)
}

pub async fn sync(cmd: SyncCmd, stack: &Stack, s: &Settings) -> Result<()> {
    let replayed = match cmd {
        SyncCmd::Status => None,
        SyncCmd::Now => Some(stack.tiered.sync_now().await?),
    };
    let st = stack.tiered.status();
    if s.json {
        return output::json(&json!({ "status": st, "replayed": replayed }));
    }
    if let Some(n) = replayed {
        println!("replayed    {n} journaled writes");
    }
    println!("breaker     {:?}", st.breaker);
    println!("outbox      {} pending", st.outbox_len);
    println!(
        "last sync   {}",
        st.last_successful_sync
            .map_or_else(|| "never (this process)".to_owned(), |t| t.to_rfc3339())
    );
    println!("last error  {}", st.last_error.as_deref().unwrap_or("none"));
    Ok(())
}

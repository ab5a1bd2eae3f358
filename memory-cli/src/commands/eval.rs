//! `memory eval retrieval`: retrieval quality on a labeled dataset, in a fresh in-memory
//! libsql store (the data directory is not touched).
//!
//! `memory eval learning`: the learning evaluation (`memory_eval::learning`), each arm on
//! a fresh in-memory libsql store; writes `learning.json` and the `learning.svg` chart.

use std::sync::Arc;

use anyhow::{Context, Result};
use memory_core::{
    Embedder, MemoryConfig, Namespace, RateLimitConfig, SelfLearningMemory, SystemClock,
};
use memory_eval::retrieval::{EvalDataset, QueryMode, RetrievalEval, format_report};
use memory_storage_turso::TursoStorage;

use crate::backend::load_embedder;
use crate::cli::{EvalCmd, EvalLearningArgs, EvalRetrievalArgs};
use crate::display_safe;
use crate::output;
use crate::settings::Settings;

pub async fn run(cmd: EvalCmd, s: &Settings) -> Result<()> {
    match cmd {
        EvalCmd::Retrieval(a) => retrieval(a, s).await,
        EvalCmd::Learning(a) => learning(a, s).await,
    }
}

/// The embedding model, or `None` after a warning that says why and what is done `instead`.
async fn embedder_or_warn(s: &Settings, instead: &str) -> Option<Arc<dyn Embedder>> {
    match load_embedder(&s.data_dir).await {
        Ok(e) => Some(e),
        Err(why) => {
            eprintln!("warning: {}; {instead}", display_safe::line(&why));
            None
        }
    }
}

async fn retrieval(a: EvalRetrievalArgs, s: &Settings) -> Result<()> {
    let dataset = EvalDataset::load(&a.dataset)
        .with_context(|| format!("cannot load the dataset in {}", a.dataset.display()))?;
    let embedder = embedder_or_warn(s, "evaluating lexical retrieval only").await;
    let storage = Arc::new(TursoStorage::open_local(":memory:").await?);
    let config = MemoryConfig {
        rate_limit: RateLimitConfig::disabled(),
        ..s.memory.clone()
    };
    let memory =
        SelfLearningMemory::with_embedder(storage, config, Arc::new(SystemClock), embedder)?;
    let modes: &[QueryMode] = if a.both {
        &[QueryMode::WithContext, QueryMode::DescriptionOnly]
    } else if a.description_only {
        &[QueryMode::DescriptionOnly]
    } else {
        &[QueryMode::WithContext]
    };
    if !s.json {
        eprintln!(
            "importing {} episodes and running {} queries ...",
            dataset.episodes.len(),
            dataset.queries.len()
        );
    }
    let eval = RetrievalEval::new(&memory, Namespace::new("eval/retrieval")?);
    let report = eval.run_modes(&dataset, modes).await?;
    memory.shutdown().await?;
    if s.json {
        return output::json(&report);
    }
    print!("{}", display_safe::text(&format_report(&report)));
    Ok(())
}

async fn learning(a: EvalLearningArgs, s: &Settings) -> Result<()> {
    use memory_eval::learning::{Arm, LearningEval, LearningEvalConfig, format_report};

    let embedder = if a.lexical {
        None
    } else {
        embedder_or_warn(s, "the memory arms use lexical retrieval").await
    };
    let retrieval = embedder.as_ref().map_or_else(
        || "lexical".to_owned(),
        |e| format!("hybrid ({})", e.model_id()),
    );
    let eval = LearningEval::new(
        LearningEvalConfig::default()
            .with_tasks(a.tasks)
            .with_seed(a.seed)
            .with_drift(a.drift)
            .with_world(a.world)
            .with_consolidate_every(a.consolidate_every),
    )?;
    let bar = indicatif::ProgressBar::new((a.tasks * Arm::ALL.len()) as u64);
    if s.json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg:>14} [{bar:40}] {pos}/{len} tasks ({elapsed}, eta {eta})",
        )?
        .progress_chars("=> "),
    );
    let mut arms = Vec::with_capacity(Arm::ALL.len());
    for (i, arm) in Arm::ALL.into_iter().enumerate() {
        bar.set_message(arm.as_str());
        let storage = Arc::new(TursoStorage::open_local(":memory:").await?);
        // The no-memory arm never asks, so it needs no embeddings.
        let embedder = embedder.clone().filter(|_| arm.asks());
        let base = (i * a.tasks) as u64;
        let progress = bar.clone();
        let report = eval
            .run_arm(arm, storage, embedder, &mut move |done| {
                progress.set_position(base + done as u64);
            })
            .await
            .with_context(|| format!("arm {} failed", arm.as_str()))?;
        arms.push(report);
    }
    bar.finish_and_clear();
    let report = eval.report(retrieval, "libsql :memory:".to_owned(), arms);
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
    let json_path = a.out.join("learning.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("cannot write {}", json_path.display()))?;
    let svg_path = a.out.join("learning.svg");
    success_chart(&report, &svg_path)?;
    if s.json {
        return output::json(&report);
    }
    print!("{}", display_safe::text(&format_report(&report)));
    println!(
        "\nwrote {} and {}",
        display_safe::path(&json_path),
        display_safe::path(&svg_path)
    );
    Ok(())
}

/// Success rate per window, one line per arm, as an SVG (plotters' SVG backend: text is
/// laid out by the viewer, so no font files are needed).
fn success_chart(
    report: &memory_eval::learning::LearningReport,
    path: &std::path::Path,
) -> Result<()> {
    use plotters::prelude::*;

    let colors = [RED, BLUE, GREEN, MAGENTA];
    let last = report
        .arms
        .iter()
        .flat_map(|a| a.windows.iter().map(|w| w.last))
        .max()
        .unwrap_or(1);
    let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
    let draw = || -> std::result::Result<(), Box<dyn std::error::Error + '_>> {
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!(
                    "success rate per {}-task window (seed {}, {})",
                    report.config.window, report.config.seed, report.retrieval
                ),
                ("sans-serif", 20),
            )
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0usize..last, 0.0f64..1.0)?;
        chart
            .configure_mesh()
            .x_desc("tasks")
            .y_desc("success rate")
            .draw()?;
        for (arm, color) in report.arms.iter().zip(colors) {
            chart
                .draw_series(LineSeries::new(
                    arm.windows.iter().map(|w| (w.last, w.success_rate)),
                    color.stroke_width(2),
                ))?
                .label(arm.arm.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| anyhow::anyhow!("cannot draw {}: {e}", path.display()))
}

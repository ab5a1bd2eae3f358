//! `memory eval retrieval`: retrieval quality on a labeled dataset, in a fresh in-memory
//! libsql store (the data directory is not touched).
//!
//! `memory eval retrieval --cross-validate`: the retrieval weights and thresholds chosen by
//! k-fold cross-validation on the dataset (`memory_eval::cross_validation`), optionally
//! scored on a second dataset (`--report-on`).
//!
//! `memory eval learning`: the learning evaluation (`memory_eval::learning`), each arm on
//! a fresh in-memory libsql store; writes `learning.json` and the `learning.svg` chart.

use std::fmt::Write as _;
use std::sync::Arc;

use anyhow::{Context, Result};
use memory_core::{
    Embedder, MemoryConfig, Namespace, RateLimitConfig, SelfLearningMemory, SystemClock,
};
use memory_eval::cross_validation::{
    CrossValidation, ModeScores, SetScores, WeightGrid, Weights, hybrid_scores,
};
use memory_eval::leave_one_out::EvalSet;
use memory_eval::retrieval::{EvalDataset, QueryMode, RetrievalEval, format_report};

use crate::backend::load_embedder;
use crate::cli::{
    EvalCmd, EvalConvertArgs, EvalLearningArgs, EvalLeaveOneOutArgs, EvalRetrievalArgs,
};
use crate::display_safe;
use crate::output;
use crate::settings::Settings;

pub async fn run(cmd: EvalCmd, s: &Settings) -> Result<()> {
    match cmd {
        EvalCmd::Retrieval(a) => retrieval(a, s).await,
        EvalCmd::Learning(a) => learning(a, s).await,
        EvalCmd::Convert(a) => convert(&a, s),
        EvalCmd::LeaveOneOut(a) => leave_one_out(&a, s).await,
    }
}

fn convert(a: &EvalConvertArgs, s: &Settings) -> Result<()> {
    let skip: &[u64] = if a.all_categories {
        &[]
    } else {
        memory_eval::convert::SKIPPED_CATEGORIES
    };
    let summary = memory_eval::convert::convert_dialogues(&a.input, &a.out, skip)
        .with_context(|| format!("cannot convert {}", a.input.display()))?;
    if s.json {
        return output::json(&summary);
    }
    let mut text = format!(
        "{} dialogues, {} sittings (episodes), {} questions (queries) written to {}\n",
        summary.dialogues.len(),
        summary.episodes,
        summary.queries,
        a.out.display()
    );
    for d in &summary.dialogues {
        let _ = writeln!(
            text,
            "  {}: {} episodes, {} queries",
            d.name, d.episodes, d.queries
        );
    }
    let _ = write!(
        text,
        "left out: {} questions of a skipped category, {} whose evidence names no sitting; {} turns cut at the step action limit",
        summary.skipped_category, summary.skipped_no_evidence, summary.cut_turns
    );
    outln!("{}", display_safe::text(&text));
    Ok(())
}

/// The configuration an evaluation runs with: the settings' own, without the rate limit (an
/// evaluation is one client replaying a dataset as fast as it can).
fn eval_config(s: &Settings) -> MemoryConfig {
    MemoryConfig {
        rate_limit: RateLimitConfig::disabled(),
        ..s.memory.clone()
    }
}

/// The embedding model, or an error saying that `what` needs it.
async fn required_embedder(s: &Settings, what: &'static str) -> Result<Arc<dyn Embedder>> {
    load_embedder(&s.data_dir)
        .await
        .map_err(|why| anyhow::anyhow!("{}", display_safe::line(&why)))
        .context(what)
}

/// A progress bar labeled `label` and the `(done, total)` callback that moves it.
fn progress_bar(
    label: &'static str,
    s: &Settings,
) -> (indicatif::ProgressBar, impl FnMut(usize, usize) + use<>) {
    let bar = crate::progress::bar(0, label, s);
    let progress = bar.clone();
    (bar, move |done: usize, total: usize| {
        progress.set_length(total as u64);
        progress.set_position(done as u64);
    })
}

/// `NAME=VALUE`, both non-empty.
fn name_value(arg: &str) -> Result<(String, std::path::PathBuf)> {
    match arg.split_once('=') {
        Some((name, value)) if !name.is_empty() && !value.is_empty() => {
            Ok((name.to_owned(), std::path::PathBuf::from(value)))
        }
        _ => anyhow::bail!("expected NAME=PATH, got {arg:?}"),
    }
}

async fn leave_one_out(a: &EvalLeaveOneOutArgs, s: &Settings) -> Result<()> {
    let mut sets = Vec::with_capacity(a.sets.len());
    for arg in &a.sets {
        let (name, dir) = name_value(arg)?;
        if sets.iter().any(|x: &EvalSet| x.name == name) {
            anyhow::bail!("two sets are named {name}");
        }
        sets.push(
            EvalSet::load(name, &dir)
                .with_context(|| format!("cannot load the set in {}", dir.display()))?,
        );
    }
    for arg in &a.extra_queries {
        let (name, file) = name_value(arg)?;
        let Some(i) = sets.iter().position(|x| x.name == name) else {
            anyhow::bail!("--extra-queries names set {name}, which no --set gives");
        };
        let set = sets.remove(i);
        sets.insert(
            i,
            set.with_queries_from(&file)
                .with_context(|| format!("cannot add the queries of {}", file.display()))?,
        );
    }
    let embedder =
        required_embedder(s, "leave-one-dataset-out ranks with the embedding model").await?;
    let config = eval_config(s);
    let (bar, mut progress) = progress_bar("leave-one-dataset-out: runs", s);
    let report = memory_eval::leave_one_out::leave_one_out(
        &sets,
        &config,
        embedder,
        &memory_eval::leave_one_out::default_grid(),
        memory_stack::open_scratch_store,
        &mut progress,
    )
    .await?;
    bar.finish_and_clear();
    if s.json {
        return output::json(&report);
    }
    out!(
        "{}",
        display_safe::text(&memory_eval::leave_one_out::format_leave_one_out(&report))
    );
    Ok(())
}

/// `memory eval retrieval` on a directory of datasets: each part in its own namespace, the
/// queries of all parts scored together.
async fn retrieval_set(a: &EvalRetrievalArgs, s: &Settings) -> Result<()> {
    let set = EvalSet::load("set", &a.dataset)
        .with_context(|| format!("cannot load the dataset in {}", a.dataset.display()))?;
    if !a.extra_queries.is_empty() || a.cross_validate {
        anyhow::bail!(
            "{} holds {} datasets: --extra-queries and --cross-validate take one dataset \
             (use `memory eval leave-one-out` to choose settings over several)",
            a.dataset.display(),
            set.parts.len()
        );
    }
    let embedder = required_embedder(
        s,
        "a set of several datasets is evaluated with the embedding model",
    )
    .await?;
    let config = eval_config(s);
    if !s.json {
        errln!(
            "importing {} episodes in {} datasets and running {} queries ...",
            set.episodes(),
            set.parts.len(),
            set.queries()
        );
    }
    let rows = memory_eval::leave_one_out::score_set(
        &set,
        &config,
        embedder,
        memory_stack::open_scratch_store().await?,
    )
    .await?;
    let wanted = |m: QueryMode| {
        a.both
            || (a.description_only && m == QueryMode::DescriptionOnly)
            || (!a.description_only && m == QueryMode::WithContext)
    };
    let rows: Vec<_> = rows.into_iter().filter(|(m, _)| wanted(*m)).collect();
    if s.json {
        return set_rows_json(&rows);
    }
    out!("{}", display_safe::text(&format_set_rows(&set, &rows)));
    Ok(())
}

/// The scores of a set, per query mode: each method's rank scores and abstention.
type SetRows = [(
    QueryMode,
    Vec<(
        memory_core::RetrievalMethod,
        memory_eval::leave_one_out::RankScores,
        memory_eval::retrieval::Abstention,
    )>,
)];

/// A set's scores as JSON: one flat row per mode and method.
fn set_rows_json(rows: &SetRows) -> Result<()> {
    #[derive(serde::Serialize)]
    struct Row<'a> {
        mode: QueryMode,
        method: memory_core::RetrievalMethod,
        scores: &'a memory_eval::leave_one_out::RankScores,
        abstention: &'a memory_eval::retrieval::Abstention,
    }
    let flat: Vec<Row<'_>> = rows
        .iter()
        .flat_map(|(mode, methods)| {
            methods.iter().map(|(method, scores, abstention)| Row {
                mode: *mode,
                method: *method,
                scores,
                abstention,
            })
        })
        .collect();
    output::json(&flat)
}

/// A set's scores as a text table per query mode.
fn format_set_rows(set: &EvalSet, rows: &SetRows) -> String {
    let mut text = format!(
        "{} episodes in {} datasets, {} queries (latency is measured on single datasets only)\n",
        set.episodes(),
        set.parts.len(),
        set.queries()
    );
    for (mode, methods) in rows {
        let title = match mode {
            QueryMode::WithContext => "with context",
            QueryMode::DescriptionOnly => "description only",
        };
        let _ = writeln!(
            text,
            "\n{title}\n  {:<8} {:>6} {:>6} {:>6} {:>6} {:>8}  abstention (no-answer flagged / false flags)",
            "method", "R@1", "R@5", "R@10", "MRR", "nDCG@10"
        );
        for (method, r, ab) in methods {
            let abst = if *method == memory_core::RetrievalMethod::Lexical {
                "n/a (no calibrated confidence)".to_owned()
            } else {
                format!(
                    "{}/{} / {}/{} ({:.1}%)",
                    ab.no_answer_flagged,
                    ab.no_answer_queries,
                    ab.answerable_flagged,
                    ab.answerable_queries,
                    ab.false_flag_rate() * 100.0
                )
            };
            let _ = writeln!(
                text,
                "  {:<8} {:>6.3} {:>6.3} {:>6.3} {:>6.3} {:>8.3}  {abst}",
                method.as_str(),
                r.recall_at_1,
                r.recall_at_5,
                r.recall_at_10,
                r.mrr,
                r.ndcg_at_10
            );
        }
    }
    text
}

/// The embedding model, or `None` after a warning that says why and what is done `instead`.
async fn embedder_or_warn(s: &Settings, instead: &str) -> Option<Arc<dyn Embedder>> {
    match load_embedder(&s.data_dir).await {
        Ok(e) => Some(e),
        Err(why) => {
            errln!("warning: {}; {instead}", display_safe::line(&why));
            None
        }
    }
}

async fn retrieval(a: EvalRetrievalArgs, s: &Settings) -> Result<()> {
    if !a.dataset.join("episodes.jsonl").is_file() && a.dataset.is_dir() {
        return retrieval_set(&a, s).await;
    }
    let mut dataset = EvalDataset::load(&a.dataset)
        .with_context(|| format!("cannot load the dataset in {}", a.dataset.display()))?;
    for file in &a.extra_queries {
        dataset = dataset
            .with_queries_from(file)
            .with_context(|| format!("cannot add the queries of {}", file.display()))?;
    }
    if a.cross_validate {
        return cross_validate(&a, &dataset, s).await;
    }
    let embedder = embedder_or_warn(s, "evaluating lexical retrieval only").await;
    let storage = memory_stack::open_scratch_store().await?;
    let config = eval_config(s);
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
        errln!(
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
    out!("{}", display_safe::text(&format_report(&report)));
    Ok(())
}

/// What `--cross-validate --json` prints.
#[derive(Debug, serde::Serialize)]
struct CrossValidationReport {
    dataset: String,
    cross_validation: CrossValidation,
    held_out: Option<HeldOut>,
}

#[derive(Debug, serde::Serialize)]
struct HeldOut {
    dataset: String,
    given: SetScores,
    chosen: SetScores,
}

async fn cross_validate(a: &EvalRetrievalArgs, dataset: &EvalDataset, s: &Settings) -> Result<()> {
    let held_out = match &a.report_on {
        Some(dir) => Some(
            EvalDataset::load(dir)
                .with_context(|| format!("cannot load the dataset in {}", dir.display()))?,
        ),
        None => None,
    };
    let embedder = required_embedder(s, "cross-validation ranks with the embedding model").await?;
    let config = eval_config(s);
    let grid = WeightGrid::default();
    let (bar, mut progress) = progress_bar("cross-validating: settings", s);
    let cv = memory_eval::cross_validation::cross_validate(
        dataset,
        &config,
        Arc::clone(&embedder),
        &grid,
        a.folds,
        memory_stack::open_scratch_store,
        &mut progress,
    )
    .await?;
    bar.finish_and_clear();
    let held_out = match (held_out, &a.report_on) {
        (Some(ds), Some(dir)) => {
            let score = |weights: Weights| {
                let mut c = config.clone();
                c.retrieval = weights.apply(&c.retrieval);
                let (ds, embedder) = (&ds, Arc::clone(&embedder));
                async move {
                    hybrid_scores(ds, c, embedder, memory_stack::open_scratch_store().await?).await
                }
            };
            Some(HeldOut {
                dataset: dir.display().to_string(),
                given: score(cv.given).await?,
                chosen: score(cv.chosen).await?,
            })
        }
        _ => None,
    };
    let report = CrossValidationReport {
        dataset: a.dataset.display().to_string(),
        cross_validation: cv,
        held_out,
    };
    if s.json {
        return output::json(&report);
    }
    out!("{}", display_safe::text(&format_cross_validation(&report)));
    Ok(())
}

fn format_cross_validation(r: &CrossValidationReport) -> String {
    let cv = &r.cross_validation;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "cross-validation on {}: {} queries, {} folds, {} settings (hybrid, top 10)\n",
        r.dataset, cv.queries, cv.folds, cv.settings_tried
    );
    let _ = writeln!(
        out,
        "{:<34} {:>7} {:>6} {:>9} {:>9}   {:>7} {:>6} {:>9} {:>9}",
        "", "nDCG@10", "R@5", "no-answer", "false", "nDCG@10", "R@5", "no-answer", "false"
    );
    let _ = writeln!(
        out,
        "{:<34} {:^36}   {:^36}",
        "", "with context", "description only"
    );
    let row = |out: &mut String, label: &str, s: &SetScores| {
        let mode = |m: &ModeScores| {
            format!(
                "{:>7.3} {:>6.3} {:>9} {:>9}",
                m.ndcg_at_10,
                m.recall_at_5,
                format!(
                    "{}/{}",
                    m.abstention.no_answer_flagged, m.abstention.no_answer_queries
                ),
                format!(
                    "{}/{}",
                    m.abstention.answerable_flagged, m.abstention.answerable_queries
                )
            )
        };
        let _ = writeln!(
            out,
            "{label:<34} {}   {}",
            mode(&s.with_context),
            mode(&s.description_only)
        );
    };
    row(&mut out, "given weights, in sample", &cv.given_scores);
    row(&mut out, "chosen per fold, out of fold", &cv.out_of_fold);
    row(
        &mut out,
        "grid's best, in sample",
        &cv.best_in_sample_scores,
    );
    row(&mut out, "chosen on all, in sample", &cv.chosen_scores);
    if let Some(h) = &r.held_out {
        let _ = writeln!(out, "\nheld out ({}), scored only:", h.dataset);
        row(&mut out, "given weights", &h.given);
        row(&mut out, "chosen weights", &h.chosen);
    }
    let _ = writeln!(
        out,
        "\n{:<16} {:>5} {:>8} {:>6} {:>8} {:>11} {:>10} {:>15}",
        "weights",
        "work",
        "outcome",
        "dense",
        "context",
        "dense bare",
        "threshold",
        "threshold bare"
    );
    let weights = |out: &mut String, label: &str, w: &Weights| {
        let _ = writeln!(
            out,
            "{label:<16} {:>5.2} {:>8.2} {:>6.2} {:>8.2} {:>11.2} {:>10.3} {:>15.3}",
            w.work_weight,
            w.outcome_weight,
            w.dense_weight,
            w.context_weight,
            w.dense_weight_bare,
            w.strong_match_cosine,
            w.strong_match_cosine_bare
        );
    };
    weights(&mut out, "given", &cv.given);
    for (i, w) in cv.fold_choices.iter().enumerate() {
        weights(&mut out, &format!("fold {}", i + 1), w);
    }
    weights(&mut out, "grid's best", &cv.best_in_sample);
    weights(&mut out, "chosen", &cv.chosen);
    let _ = writeln!(
        out,
        "\nchosen: the grid's best when it beats the given weights by more than one standard \
         error of the per-query difference, else the given weights; thresholds fitted either way"
    );
    out
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
            .with_consolidate_every(a.consolidate_every)
            .with_agent(a.agent)
            .with_flaky(a.flaky),
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
        let storage = memory_stack::open_scratch_store().await?;
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
    out!("{}", display_safe::text(&format_report(&report)));
    outln!(
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

//! Metrics of the learning evaluation: per-window figures per arm, the comparison against the
//! no-memory arm, and the plain-text table.

use std::collections::HashSet;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::agent::TaskRecord;
use super::{Arm, LearningEvalConfig};
use crate::ratio;

/// One per-window figure, read from a window's statistics.
type WindowMetric = fn(&WindowStats) -> Option<f64>;

/// The figures of one window of consecutive tasks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowStats {
    /// First task of the window (1-based).
    pub first: usize,
    /// Last task of the window (1-based, inclusive).
    pub last: usize,
    /// Tasks that succeeded, as a share of the window.
    pub success_rate: f64,
    /// Mean steps of the successful tasks (`None` when none succeeded).
    pub steps_per_success: Option<f64>,
    /// Share of tasks that hit a failure of a kind already seen in an earlier task of the arm
    /// (kind: context, tool and error class; injected noise excluded).
    pub repeated_failure_rate: f64,
    /// Share of tasks whose plan came from memory (the playbook, or a past episode's tools).
    pub pattern_reuse_rate: f64,
}

/// Figures over a whole run or its tail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    /// Tasks counted.
    pub tasks: usize,
    /// Share that succeeded.
    pub success_rate: f64,
    /// Mean steps of the successes.
    pub steps_per_success: Option<f64>,
    /// Mean steps an oracle that knows every procedure would take on the same successes.
    pub oracle_steps_per_success: Option<f64>,
    /// Share of tasks with a repeated failure.
    pub repeated_failure_rate: f64,
    /// Share of tasks with a plan from memory.
    pub pattern_reuse_rate: f64,
    /// Of the tasks with a plan from memory, the share where the plan held to the end.
    pub plan_held_rate: Option<f64>,
    /// Pitfalls applied before a tool ran, per task.
    pub pitfalls_per_task: f64,
}

/// One arm's run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArmReport {
    /// The arm.
    pub arm: Arm,
    /// Per window, in stream order.
    pub windows: Vec<WindowStats>,
    /// The whole stream.
    pub overall: Totals,
    /// The last 100 tasks (or fewer if the stream is shorter).
    pub last_100: Totals,
    /// Wall-clock seconds the arm took.
    pub seconds: f64,
    /// The drifting families against the others, around the change (computed in a stable
    /// world too, for comparison).
    pub drift: DriftReport,
    /// Every task, for error analysis.
    pub tasks: Vec<TaskRecord>,
}

/// Stream tasks per window of the drift curves.
pub const DRIFT_WINDOW: usize = 30;

/// Success of the drifting families and of the others in one stretch of the stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftWindow {
    /// First task, relative to the change (negative: before it).
    pub from: i64,
    /// Last task (exclusive), relative to the change.
    pub to: i64,
    /// Tasks of the drifting families in it, and their success rate.
    pub changed: (usize, f64),
    /// Tasks of the other families in it, and their success rate.
    pub unchanged: (usize, f64),
}

/// How the drifting families fared around the change of their procedure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftReport {
    /// Whether their procedures changed in this run (false: a stable world, the same families).
    pub applied: bool,
    /// The families whose procedure changes.
    pub families: Vec<String>,
    /// The first task (0-based) of the changed procedures.
    pub change_at: usize,
    /// Windows of [`DRIFT_WINDOW`] tasks, aligned on the change.
    pub windows: Vec<DriftWindow>,
    /// Success of the drifting families from [`DRIFT_WINDOW`] tasks after the change to the end
    /// (goal: >= 0.90).
    pub changed_recovered: f64,
    /// Success of the other families from the change to the end.
    pub unchanged_after: f64,
}

/// The count of `tasks` and their success rate.
fn success_of<'a>(tasks: impl Iterator<Item = &'a TaskRecord>) -> (usize, f64) {
    let (n, ok) = tasks.fold((0, 0), |(n, ok), t| (n + 1, ok + usize::from(t.success)));
    (n, ratio(ok, n))
}

/// The drift report of one arm's tasks.
pub(crate) fn drift_report(
    tasks: &[TaskRecord],
    families: &[&str],
    change_at: usize,
    applied: bool,
) -> DriftReport {
    let drifts = |t: &TaskRecord| families.contains(&t.family.as_str());
    let at = change_at as i64;
    let between = |from: i64, to: i64| {
        tasks.iter().filter(move |t| {
            let i = t.index as i64 - at;
            i >= from && i < to
        })
    };
    let w = DRIFT_WINDOW as i64;
    let first = -(at / w) * w;
    let end = tasks.len() as i64 - at;
    let windows = (first..end)
        .step_by(DRIFT_WINDOW)
        .map(|from| DriftWindow {
            from,
            to: (from + w).min(end),
            changed: success_of(between(from, from + w).filter(|t| drifts(t))),
            unchanged: success_of(between(from, from + w).filter(|t| !drifts(t))),
        })
        .collect();
    DriftReport {
        applied,
        families: families.iter().map(|f| (*f).to_owned()).collect(),
        change_at,
        windows,
        changed_recovered: success_of(between(w, end).filter(|t| drifts(t))).1,
        unchanged_after: success_of(between(0, end).filter(|t| !drifts(t))).1,
    }
}

/// Full memory against no memory, on the brief's goals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// Success rate of full memory over the last 100 tasks (goal: >= 0.90).
    pub full_success_last_100: f64,
    /// Reduction of steps per success, full against none, over the whole stream (goal: >= 0.45).
    pub steps_per_success_cut: Option<f64>,
    /// Reduction of the repeated-failure rate, full against none, over the whole stream
    /// (goal: >= 0.80).
    pub repeated_failure_cut: Option<f64>,
}

/// The whole evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LearningReport {
    /// The settings it ran with.
    pub config: LearningEvalConfig,
    /// The retrieval the memory arms used (`lexical` or `hybrid` with the model id).
    pub retrieval: String,
    /// The storage backend each arm ran on (a fresh one per arm).
    pub storage: String,
    /// Tasks with an armed trap.
    pub trapped_tasks: usize,
    /// One report per arm, in [`Arm::ALL`] order.
    pub arms: Vec<ArmReport>,
    /// Full memory against no memory, when both ran.
    pub comparison: Option<Comparison>,
}

impl LearningReport {
    /// The report of `arm`, if it ran.
    pub fn arm(&self, arm: Arm) -> Option<&ArmReport> {
        self.arms.iter().find(|a| a.arm == arm)
    }

    /// Assembles the report and the comparison.
    pub fn new(
        config: LearningEvalConfig,
        retrieval: String,
        storage: String,
        trapped_tasks: usize,
        arms: Vec<ArmReport>,
    ) -> Self {
        let mut r = LearningReport {
            config,
            retrieval,
            storage,
            trapped_tasks,
            arms,
            comparison: None,
        };
        if let (Some(full), Some(none)) = (r.arm(Arm::FullMemory), r.arm(Arm::NoMemory)) {
            let cut = |a: Option<f64>, b: Option<f64>| match (a, b) {
                (Some(a), Some(b)) if b > 0.0 => Some(1.0 - a / b),
                _ => None,
            };
            r.comparison = Some(Comparison {
                full_success_last_100: full.last_100.success_rate,
                steps_per_success_cut: cut(
                    full.overall.steps_per_success,
                    none.overall.steps_per_success,
                ),
                repeated_failure_cut: cut(
                    Some(full.overall.repeated_failure_rate),
                    Some(none.overall.repeated_failure_rate),
                ),
            });
        }
        r
    }
}

/// For each task, whether it hit a failure kind seen in an earlier task.
pub(crate) fn repeated_flags(tasks: &[TaskRecord]) -> Vec<bool> {
    let mut seen: HashSet<&str> = HashSet::new();
    tasks
        .iter()
        .map(|t| {
            let repeated = t.failures.iter().any(|f| seen.contains(f.as_str()));
            seen.extend(t.failures.iter().map(String::as_str));
            repeated
        })
        .collect()
}

/// The mean of `f` over `tasks` (`None` when there are none).
fn mean(tasks: &[&TaskRecord], f: impl Fn(&TaskRecord) -> u32) -> Option<f64> {
    let n = tasks.len();
    (n > 0).then(|| tasks.iter().map(|t| f64::from(f(t))).sum::<f64>() / n as f64)
}

fn totals(tasks: &[TaskRecord], repeated: &[bool]) -> Totals {
    let n = tasks.len();
    let successes: Vec<&TaskRecord> = tasks.iter().filter(|t| t.success).collect();
    let with_plan: Vec<&TaskRecord> = tasks.iter().filter(|t| t.plan != "none").collect();
    Totals {
        tasks: n,
        success_rate: ratio(successes.len(), n),
        steps_per_success: mean(&successes, |t| t.steps),
        oracle_steps_per_success: mean(&successes, |t| t.oracle_steps),
        repeated_failure_rate: ratio(repeated.iter().filter(|r| **r).count(), n),
        pattern_reuse_rate: ratio(with_plan.len(), n),
        plan_held_rate: (!with_plan.is_empty()).then(|| {
            ratio(
                with_plan.iter().filter(|t| t.plan_held).count(),
                with_plan.len(),
            )
        }),
        pitfalls_per_task: ratio(tasks.iter().map(|t| t.pitfalls_applied as usize).sum(), n),
    }
}

/// The arm's report from its task records.
pub(crate) fn arm_report(
    arm: Arm,
    tasks: Vec<TaskRecord>,
    window: usize,
    seconds: f64,
    drift: DriftReport,
) -> ArmReport {
    let repeated = repeated_flags(&tasks);
    let window = window.max(1);
    let windows = tasks
        .chunks(window)
        .zip(repeated.chunks(window))
        .enumerate()
        .map(|(i, (chunk, rep))| {
            let t = totals(chunk, rep);
            WindowStats {
                first: i * window + 1,
                last: i * window + chunk.len(),
                success_rate: t.success_rate,
                steps_per_success: t.steps_per_success,
                repeated_failure_rate: t.repeated_failure_rate,
                pattern_reuse_rate: t.pattern_reuse_rate,
            }
        })
        .collect();
    let tail = tasks.len().saturating_sub(100);
    ArmReport {
        arm,
        windows,
        overall: totals(&tasks, &repeated),
        last_100: totals(&tasks[tail..], &repeated[tail..]),
        seconds,
        drift,
        tasks,
    }
}

/// The report as plain-text tables: one per metric, windows down, arms across.
pub fn format_report(r: &LearningReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} world, {} tasks, seed {}, windows of {}, step budget {}, noise {:.0}%, flaky right \
         steps {:.0}%, {} agent; {} trapped tasks; retrieval {}; storage {} (fresh per arm)",
        r.config.world.as_str(),
        r.config.tasks,
        r.config.seed,
        r.config.window,
        r.config.max_steps,
        r.config.noise * 100.0,
        r.config.flaky * 100.0,
        r.config.agent.as_str(),
        r.trapped_tasks,
        r.retrieval,
        r.storage
    );
    // Title, decimals, and the figure of a window.
    let metrics: [(&str, usize, WindowMetric); 4] = [
        ("success rate", 2, |w| Some(w.success_rate)),
        ("steps per success", 1, |w| w.steps_per_success),
        ("repeated-failure rate", 2, |w| {
            Some(w.repeated_failure_rate)
        }),
        ("pattern reuse rate", 2, |w| Some(w.pattern_reuse_rate)),
    ];
    // The arms' column titles.
    let mut arms = String::new();
    for a in &r.arms {
        let _ = write!(arms, " {:>13}", a.arm.as_str());
    }
    for (title, decimals, get) in metrics {
        let _ = writeln!(out, "\n{title}\n  {:<9}{arms}", "tasks");
        let rows = r.arms.iter().map(|a| a.windows.len()).max().unwrap_or(0);
        for i in 0..rows {
            let label = r
                .arms
                .iter()
                .find_map(|a| a.windows.get(i).map(|w| format!("{}-{}", w.first, w.last)));
            let _ = write!(out, "  {:<9}", label.unwrap_or_default());
            for a in &r.arms {
                let cell = or_dash(a.windows.get(i).and_then(get), decimals);
                let _ = write!(out, " {cell:>13}");
            }
            out.push('\n');
        }
    }
    let _ = writeln!(out, "\nwhole stream / last 100 tasks");
    let _ = writeln!(
        out,
        "  {:<13} {:>9} {:>9} {:>10} {:>7} {:>9} {:>9} {:>9} {:>8}",
        "arm",
        "success",
        "last 100",
        "steps/succ",
        "oracle",
        "repeated",
        "reuse",
        "held",
        "seconds"
    );
    for a in &r.arms {
        let _ = writeln!(
            out,
            "  {:<13} {:>9.3} {:>9.3} {:>10} {:>7} {:>9.3} {:>9.3} {:>9} {:>8.1}",
            a.arm.as_str(),
            a.overall.success_rate,
            a.last_100.success_rate,
            or_dash(a.overall.steps_per_success, 2),
            or_dash(a.overall.oracle_steps_per_success, 2),
            a.overall.repeated_failure_rate,
            a.overall.pattern_reuse_rate,
            or_dash(a.overall.plan_held_rate, 3),
            a.seconds
        );
    }
    format_drift(&mut out, r, &arms);
    if let Some(c) = &r.comparison {
        let pct =
            |v: Option<f64>| v.map_or_else(|| "n/a".to_owned(), |v| format!("{:.0}%", v * 100.0));
        let _ = writeln!(
            out,
            "\nfull memory vs no memory: last-100 success {:.0}% (goal >= 90%), steps per success \
             cut {} (goal >= 45%), repeated failures cut {} (goal >= 80%)",
            c.full_success_last_100 * 100.0,
            pct(c.steps_per_success_cut),
            pct(c.repeated_failure_cut)
        );
    }
    out
}

/// The drift curves: per window around the change, the drifting families' success per arm,
/// then the others'.
fn format_drift(out: &mut String, r: &LearningReport, arms: &str) {
    let Some(d) = r.arms.first().map(|a| &a.drift) else {
        return;
    };
    let _ = writeln!(
        out,
        "\n{} from task {}: {} (success rate; n = tasks of those families in the window)",
        if d.applied {
            "procedures changed"
        } else {
            "stable world, no change (for comparison)"
        },
        d.change_at + 1,
        d.families.join(", ")
    );
    for (title, pick) in [("changed families", true), ("unchanged families", false)] {
        let side = |w: &DriftWindow| if pick { w.changed } else { w.unchanged };
        let _ = writeln!(out, "  {title:<20}{arms}");
        for (i, w) in d.windows.iter().enumerate() {
            let (n, _) = side(w);
            let _ = write!(out, "  {:<13} n={n:<4}", format!("{}..{}", w.from, w.to));
            for a in &r.arms {
                let cell = or_dash(a.drift.windows.get(i).map(|w| side(w).1), 2);
                let _ = write!(out, " {cell:>13}");
            }
            out.push('\n');
        }
    }
    let _ = write!(
        out,
        "  changed from +{DRIFT_WINDOW} (goal >= 0.90) / unchanged after:"
    );
    for a in &r.arms {
        let (changed, unchanged) = (a.drift.changed_recovered, a.drift.unchanged_after);
        let _ = write!(out, " {} {changed:.3}/{unchanged:.3}", a.arm.as_str());
    }
    out.push('\n');
}

/// `v` with `decimals` decimals, or `-`.
fn or_dash(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.decimals$}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(
        index: usize,
        success: bool,
        steps: u32,
        failures: &[&str],
        plan: &str,
    ) -> TaskRecord {
        TaskRecord {
            index,
            family: "f".into(),
            trapped: false,
            success,
            steps,
            oracle_steps: 4,
            failures: failures.iter().map(|s| (*s).to_owned()).collect(),
            plan: plan.into(),
            plan_held: plan != "none",
            pitfalls_applied: 0,
            alternative_steps: 0,
        }
    }

    #[test]
    fn a_failure_counts_as_repeated_only_after_an_earlier_task_had_it() {
        let tasks = [
            record(0, false, 5, &["a", "a"], "none"),
            record(1, true, 3, &["b"], "none"),
            record(2, true, 3, &["a"], "playbook"),
        ];
        assert_eq!(repeated_flags(&tasks), [false, false, true]);
    }

    #[test]
    fn windows_split_the_stream_and_average_successes_only() {
        let tasks: Vec<TaskRecord> = (0..5)
            .map(|i| {
                record(
                    i,
                    i % 2 == 0,
                    2 + i as u32,
                    &[],
                    if i > 2 { "playbook" } else { "none" },
                )
            })
            .collect();
        let drift = drift_report(&tasks, &["f"], 2, false);
        let r = arm_report(Arm::FullMemory, tasks, 2, 0.0, drift);
        assert_eq!(r.windows.len(), 3);
        assert_eq!((r.windows[2].first, r.windows[2].last), (5, 5));
        assert!((r.windows[0].success_rate - 0.5).abs() < 1e-9);
        assert_eq!(r.windows[0].steps_per_success, Some(2.0));
        assert_eq!(r.windows[1].steps_per_success, Some(4.0));
        assert!((r.windows[1].pattern_reuse_rate - 0.5).abs() < 1e-9);
        assert!((r.overall.success_rate - 0.6).abs() < 1e-9);
    }

    #[test]
    fn drift_windows_align_on_the_change_and_split_the_families() {
        let tasks: Vec<TaskRecord> = (0..100)
            .map(|i| TaskRecord {
                family: if i % 2 == 0 { "a" } else { "b" }.into(),
                ..record(i, !(50..80).contains(&i) || i % 2 == 1, 3, &[], "none")
            })
            .collect();
        let d = drift_report(&tasks, &["a"], 50, true);
        let spans: Vec<(i64, i64)> = d.windows.iter().map(|w| (w.from, w.to)).collect();
        assert_eq!(spans, [(-30, 0), (0, 30), (30, 50)]);
        assert_eq!(d.windows[1].changed, (15, 0.0));
        assert_eq!(d.windows[1].unchanged, (15, 1.0));
        assert_eq!(d.windows[0].changed, (15, 1.0));
        // From 30 after the change: tasks 80..100 of family "a" succeed.
        assert!((d.changed_recovered - 1.0).abs() < 1e-9);
        assert!((d.unchanged_after - 1.0).abs() < 1e-9);
    }
}

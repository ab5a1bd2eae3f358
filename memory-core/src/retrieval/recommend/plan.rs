//! The playbook: the procedure a recommendation follows (the task's variant of its context,
//! sequences that gave way, rules that hold in general), and the pitfalls revised by what
//! agents did since (lessons that prepare a plan, lessons contradicted).

#[allow(clippy::wildcard_imports)]
use super::*;

/// A tool sequence hindered this many times in a row (since it last helped or was seen in an
/// episode) is outdated: it still ranks, demoted, but no playbook follows it.
pub(super) const OUTDATED_STREAK: u64 = 3;

/// A fix seen to work at least this often goes into the plan before the step it prepares.
pub(super) const RELIABLE_FIX: u64 = 2;

/// The preparation a lesson says its tool needs: the tools of its best remedy before the retry
/// of the failed tool, when that remedy worked at least [`RELIABLE_FIX`] times.
pub(super) fn preparation(lesson: &FailureLesson) -> Option<(&[String], u64)> {
    let r = lesson.best_remedy()?;
    let fix = fix_tools(lesson);
    (!fix.is_empty() && r.count >= RELIABLE_FIX).then_some((fix, r.count))
}

/// The tools a lesson's best remedy runs before the retry of its failed tool (empty when the
/// remedy is not a fix followed by that retry).
pub(super) fn fix_tools(lesson: &FailureLesson) -> &[String] {
    match lesson.best_remedy().and_then(|r| r.tools.split_last()) {
        Some((retry, fix)) if *retry == lesson.failed_tool => fix,
        _ => &[],
    }
}

/// The marks of a list, for a `why`: `tag=openssl, framework=axum`.
pub(super) fn marks_text(marks: &[impl AsRef<str>]) -> String {
    let marks: Vec<&str> = marks.iter().map(AsRef::as_ref).collect();
    marks.join(", ")
}

/// Notes how each failure lesson stands for the task ([`Variants::lesson`]): a lesson that
/// newer evidence contradicts is demoted as a run of hindered feedback would demote it; one
/// that holds for another variant of the context says so. Neither prepares the plan: returns
/// their ids.
pub(super) fn revise_pitfalls(
    pitfalls: &mut [Advice<FailureLesson>],
    patterns: &[Advice<Pattern>],
    task: Option<&[String]>,
) -> HashSet<LessonId> {
    let ranked: Vec<&Pattern> = patterns.iter().map(|a| &a.item).collect();
    let variants = Variants::of(task, &ranked);
    let mut held_back = HashSet::new();
    let mut demoted = false;
    for a in pitfalls.iter_mut() {
        let fix = fix_tools(&a.item);
        match variants.lesson(&a.item, fix) {
            LessonStanding::Holds => continue,
            LessonStanding::Contradicted(p) => {
                let without = if fix.is_empty() {
                    String::new()
                } else {
                    format!(" without {}", fix.join(" → "))
                };
                let _ = write!(
                    a.why,
                    "; contradicted by newer evidence: {}{without} worked in {} since, in episodes like these (last {}), demoted",
                    a.item.failed_tool,
                    p.context.label(),
                    p.last_seen.format("%Y-%m-%d %H:%M")
                );
                a.score *= HINDERED_STREAK_DISCOUNT;
                demoted = true;
            }
            LessonStanding::Elsewhere(missing) => {
                let _ = write!(
                    a.why,
                    "; struck only with {} (this task has not), and {} worked without it",
                    marks_text(&missing),
                    a.item.failed_tool
                );
            }
        }
        held_back.insert(a.item.id.clone());
    }
    if demoted {
        sort_advice(pitfalls, |l| l.id.to_string());
    }
    held_back
}

/// Where a rule's record comes from, for its `why`.
pub(super) fn rule_scope(h: &Heuristic, general: bool) -> String {
    if general {
        format!(
            "in {} contexts that agree, a general rule",
            h.context.label()
        )
    } else {
        format!("in {}", h.context.label())
    }
}

/// The best-ranked active rule that `fits`, an observed one (of a context the task is in)
/// before a general one.
pub(super) fn best_rule(
    heuristics: &[Advice<Heuristic>],
    fits: impl Fn(&Heuristic) -> bool,
) -> Option<(&Heuristic, bool)> {
    let fitting: Vec<&Heuristic> = (heuristics.iter())
        .map(|a| &a.item)
        .filter(|h| h.status.is_active() && fits(h))
        .collect();
    let general: Vec<bool> = fitting.iter().map(|h| h.is_general()).collect();
    let observed = (fitting.iter().zip(&general)).find(|(_, g)| !**g);
    observed
        .or_else(|| fitting.iter().zip(&general).next())
        .map(|(h, g)| (*h, *g))
}

/// The plan a general opening rule gives ("follow a → b → c"), when one applies and holds more
/// often than not: for a context with no tool sequence of its own yet.
pub(super) fn general_plan(heuristics: &[Advice<Heuristic>]) -> Option<(Vec<String>, &Heuristic)> {
    let (h, _) = best_rule(heuristics, |h| {
        h.condition.starts_with("starting a ") && h.support > h.against && h.is_general()
    })?;
    let tools: Vec<String> = h
        .action
        .strip_prefix("follow ")?
        .split(" → ")
        .map(str::to_owned)
        .collect();
    // Only a plan the action states exactly (a tool name holding the separator would not be).
    (follow_action(&tools) == h.action).then_some((tools, h))
}

/// The tool-sequence pattern a playbook follows, and why when it stands in for a contradicted
/// one: the best-ranked one that mostly succeeds, is not outdated by a run of hindered
/// feedback, and is not contradicted by newer evidence of its context ([`choose_procedure`]).
/// Of the task's variant of its context ([`Variants::fits`]) when one is; only the records of
/// that variant revise it.
pub(crate) fn procedure<'a>(
    patterns: &'a [Advice<Pattern>],
    task: Option<&[String]>,
) -> Option<(&'a Pattern, Option<String>)> {
    let ranked: Vec<&Pattern> = patterns.iter().map(|a| &a.item).collect();
    let variants = Variants::of(task, &ranked);
    let usable =
        |p: &Pattern| p.success_rate() >= 0.5 && p.effectiveness.hindered_streak < OUTDATED_STREAK;
    choose_procedure(
        &ranked,
        |p| usable(p) && variants.fits(p),
        |p| variants.fits(p),
    )
    .or_else(|| choose_procedure(&ranked, usable, |p| variants.fits(p)))
}

/// Notes on each tool sequence that newer evidence of the task's variant of its context
/// contradicts (a step of it gave way since it was last done), and on each that holds for
/// another variant ([`Variants::fits`]), and demotes them as a run of hindered feedback would.
pub(super) fn mark_contradicted(patterns: &mut [Advice<Pattern>], task: Option<&[String]>) {
    let notes: Vec<(usize, String)> = {
        let ranked: Vec<&Pattern> = patterns.iter().map(|a| &a.item).collect();
        let variants = Variants::of(task, &ranked);
        let records = GaveWay::of(&ranked, |p| variants.fits(p));
        (patterns.iter().enumerate())
            .filter_map(|(i, a)| {
                let missing = variants.missing(&a.item);
                if !missing.is_empty() && revise::tools_of(&a.item).is_some() {
                    let note = format!(
                        "; another variant of its context: its episodes all had {} (this task has not), demoted",
                        marks_text(&missing)
                    );
                    return Some((i, note));
                }
                let (record, step, next) = records.contradiction(&a.item)?;
                let place = (step.after.as_deref())
                    .map_or_else(|| "as the first step".to_owned(), |a| format!("after {a}"));
                let note = format!(
                    "; contradicted by newer evidence: {} gave way {place} on {} ({next} worked next), demoted",
                    step.failed,
                    record.last_seen.format("%Y-%m-%d %H:%M")
                );
                Some((i, note))
            })
            .collect()
    };
    if notes.is_empty() {
        return;
    }
    for (i, note) in notes {
        patterns[i].why.push_str(&note);
        patterns[i].score *= HINDERED_STREAK_DISCOUNT;
    }
    sort_advice(patterns, |p| p.id.to_string());
}

/// The playbook: the tools of the best tool-sequence pattern that mostly succeeds (or, where
/// the context has none, of the general opening rule that applies), each step carrying the
/// pitfalls of its tool and the best-ranked active rule about its failures. A step whose tool
/// a lesson says reliably fails in this context until a preparation runs gets that
/// preparation before it (unless the plan already ran it). `generic` labels every step when
/// the match is not strong (the plan is then the context's default, or rests on shared words
/// only).
pub(crate) fn playbook(
    patterns: &[Advice<Pattern>],
    heuristics: &[Advice<Heuristic>],
    pitfalls: &[Advice<FailureLesson>],
    generic: Option<&str>,
    variant: &TaskVariant<'_>,
) -> (Vec<PlaybookStep>, Option<PatternId>) {
    let best = procedure(patterns, variant.marks).and_then(|(pattern, revised)| {
        let PatternKind::ToolSequence { tools } = &pattern.kind else {
            return None;
        };
        let mut basis = format!(
            "({:.0}% success over {} episodes",
            pattern.success_rate() * 100.0,
            pattern.occurrences
        );
        if let Some(why) = revised {
            let _ = write!(basis, "; {why}");
        }
        basis.push(')');
        Some((tools.clone(), basis, Some(pattern.id.clone())))
    });
    let (tools, basis, pattern_id, rule) = match best {
        Some((tools, basis, pattern_id)) => {
            // The active opening rule that says to follow this very plan, if one does.
            let follow = follow_action(&tools);
            let rule = best_rule(heuristics, |h| {
                h.condition.starts_with("starting a ") && h.action == follow
            });
            (tools, basis, pattern_id, rule)
        }
        None => match general_plan(heuristics) {
            Some((tools, h)) => {
                let basis = format!(
                    "(no procedure of this context yet; the rule \"{}, {}\" held {} of {} times {})",
                    h.condition,
                    h.action,
                    h.support,
                    h.support + h.against,
                    rule_scope(h, true)
                );
                (tools, basis, None, None)
            }
            None => return (Vec::new(), None),
        },
    };
    let steps = plan_steps(&tools, &basis, rule, heuristics, pitfalls, generic, variant);
    (steps, pattern_id)
}

/// The playbook's steps for the plan `tools`: each step says where it comes from (`basis`),
/// carries the pitfalls of its tool and the best-ranked active rule about its failures, and
/// a tool a lesson says reliably fails in this context until a preparation runs gets that
/// preparation before it (unless the plan already ran it). `rule` is an opening rule that
/// agrees with the whole plan (noted on the first step); `generic` labels every step.
pub(super) fn plan_steps(
    tools: &[String],
    basis: &str,
    rule: Option<(&Heuristic, bool)>,
    heuristics: &[Advice<Heuristic>],
    pitfalls: &[Advice<FailureLesson>],
    generic: Option<&str>,
    variant: &TaskVariant<'_>,
) -> Vec<PlaybookStep> {
    let head = generic.map(|g| format!("{g}: ")).unwrap_or_default();
    let mut out: Vec<(String, String)> = Vec::new();
    for (i, tool) in tools.iter().enumerate() {
        // Only what the matched episodes taught changes the plan: a lesson there by context
        // alone may come from another kind of task of the same language, where its "fix" was
        // that task's own previous step.
        // Nor does a lesson of another variant of the context, or one newer evidence contradicts.
        let prepares = |p: &&Advice<FailureLesson>| {
            p.taught_share > 0.0 && !variant.held_back.contains(&p.item.id)
        };
        let prep = (pitfalls.iter().filter(prepares)).find_map(|p| {
            (&p.item.failed_tool == tool)
                .then(|| preparation(&p.item))
                .flatten()
                .map(|(fix, n)| (fix, n, &p.item))
        });
        if let Some((fix, n, lesson)) = prep
            && !fix.iter().any(|f| out.iter().any(|(t, _)| t == f))
        {
            for f in fix {
                let why = format!(
                    "{head}prepare for {tool}: in {} it failed with \"{}\" in {} episode(s), and {} then {tool} fixed it {n} time(s)",
                    lesson.context.label(),
                    lesson.error_class,
                    lesson.occurrences,
                    fix.join(" → "),
                );
                out.push((f.clone(), why));
            }
        }
        let mut why = format!("{head}step {} of {} {basis}", i + 1, tools.join(" → "));
        if let Some((h, general)) = rule.filter(|_| i == 0) {
            let _ = write!(
                why,
                "; agrees with the rule: {}, {} (held {} of {} times {})",
                h.condition,
                h.action,
                h.support,
                h.support + h.against,
                rule_scope(h, general)
            );
        }
        if let Some(p) = pitfalls.iter().find(|p| &p.item.failed_tool == tool) {
            let _ = write!(
                why,
                "; watch out: {} failed with \"{}\"",
                p.item.failed_tool, p.item.error_class
            );
            if let Some(r) = p.item.best_remedy() {
                let _ = write!(why, ", recover with {}", r.tools.join(" → "));
            }
        }
        // The best-ranked active rule about this tool's failures, with its record.
        let prefix = format!("{tool} fails with ");
        if let Some((h, general)) = best_rule(heuristics, |h| h.condition.starts_with(&prefix)) {
            let _ = write!(
                why,
                "; rule: when {}, {} (held {} of {} times {})",
                h.condition,
                h.action,
                h.support,
                h.support + h.against,
                rule_scope(h, general)
            );
        }
        out.push((tool.clone(), why));
    }
    let steps = out.into_iter().enumerate();
    let steps = steps.map(|(i, (tool, why))| PlaybookStep {
        order: i as u32 + 1,
        tool,
        why,
    });
    steps.collect()
}

/// The task's variant of its context, for the plan: its marks ([`context_marks`]; `None`: not
/// known) and the lessons whose preparation stays out of it ([`revise_pitfalls`]).
#[derive(Debug, Default)]
pub(crate) struct TaskVariant<'a> {
    pub(super) marks: Option<&'a [String]>,
    pub(super) held_back: HashSet<LessonId>,
}

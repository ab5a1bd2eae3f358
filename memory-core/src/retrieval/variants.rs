//! Variants of one context told apart by their marks (framework and tags, [`context_marks`]),
//! and failure lessons unlearned from newer evidence.
//!
//! A context key (kind of task, domain, language) holds every variant of its tasks: the
//! `openssl`-tagged tasks whose build needs a dependency first, and the plain ones whose build
//! does not. Each tool sequence, step that gave way and failure lesson counts the marks of its
//! episodes ([`Marks`]); its *shared* marks are those every one of them had. A mark restricts
//! an item only where the evidence shows it matters:
//!
//! - **A tool sequence or a step that gave way** holds for a task unless it has a shared mark
//!   the task lacks that its episodes all having would be unlikely by chance (at most 5%: the
//!   share of the context's episodes with the mark, to the power of the item's episodes). So
//!   the tagged tasks' sequence, and the record that their build gave way, hold for tagged
//!   tasks only once they are plainly the tagged tasks' own; the plan of a plain task is then
//!   never the tagged variant's, and is never revised by its records. A tag that half the
//!   tasks carry at random and a few episodes happen to share restricts nothing: a change that
//!   strikes every variant holds for all of them from its first record.
//! - **A failure lesson** holds for a task unless the task lacks one of the lesson's shared
//!   marks that an episode which got its tool working without the lesson's preparation lacked
//!   ("unprepared": the tool is in a tool sequence of the lesson's context with none of the
//!   preparation's tools before it). A lesson that does not hold for a task still warns about
//!   its tool, but puts no preparation into the plan.
//! - **A failure lesson is contradicted** by newer evidence when, since it last struck, its
//!   tool worked unprepared in episodes with each of its shared marks: the tool now works there
//!   without the fix (an environment repaired, a flaky failure that passed). It is demoted as a
//!   run of hindered feedback would demote it and prepares no plan until it strikes again.
//!   This is how lessons, which get no feedback, are unlearned from what agents do; their score
//!   also decays with the time since they last struck, as every learned item's does.
//!
//! Items with evidence from before marks were kept hold everywhere and are not contradicted,
//! as before.

use std::collections::HashMap;

use super::revise::{newer, tools_of};
use crate::learned::{ContextKey, FailureLesson, Pattern};
#[cfg(doc)]
use crate::learned::{Marks, context_marks};

/// How a failure lesson stands for a task.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum LessonStanding<'a> {
    /// It holds: its preparation may enter the plan.
    Holds,
    /// It holds where the task is not: the task lacks these marks, which episodes that got the
    /// tool working without the preparation lacked too.
    Elsewhere(Vec<String>),
    /// A tool sequence done without the preparation since the lesson last struck, by episodes
    /// with each of the lesson's shared marks (the newest such).
    Contradicted(&'a Pattern),
}

/// A shared mark tells an item's episodes apart from the rest of its context only when so many
/// of them having it would be this unlikely by chance: the share of the context's episodes
/// with the mark, to the power of the item's episodes, at most this. Tags that come and go at
/// random are shared by a few episodes often enough (half the tasks tagged `ci`: two
/// episodes in four share it), and a variant read into them would send a task to another
/// kind of task's procedure, or keep a change from the tasks it struck.
const CHANCE: f64 = 0.05;

/// The variants among a recommendation's candidates: the task's marks and, per context, how
/// often each mark occurs among the episodes of its tool sequences.
pub(crate) struct Variants<'a> {
    /// The task's marks; `None`: not known (nothing is told apart then).
    task: Option<&'a [String]>,
    /// Per context, the marked episodes of its tool sequences and, per mark, how many had it.
    rates: HashMap<&'a ContextKey, (u64, HashMap<&'a str, u64>)>,
    /// The active tool sequences.
    sequences: Vec<&'a Pattern>,
}

/// The shared marks of an item whose every episode had its marks recorded; none otherwise.
fn shared(p: &Pattern) -> Vec<&str> {
    if p.marks.known(p.occurrences) {
        p.marks.shared().collect()
    } else {
        Vec::new()
    }
}

impl<'a> Variants<'a> {
    /// The variants among `candidates`, for a task with `task` marks.
    pub(crate) fn of(task: Option<&'a [String]>, candidates: &[&'a Pattern]) -> Self {
        let sequences: Vec<&Pattern> = (candidates.iter().copied())
            .filter(|p| tools_of(p).is_some() && p.status.is_active())
            .collect();
        let mut rates: HashMap<&ContextKey, (u64, HashMap<&str, u64>)> = HashMap::new();
        for p in &sequences {
            let (episodes, with) = rates.entry(&p.context).or_default();
            *episodes += p.marks.episodes;
            for s in &p.marks.seen {
                *with.entry(s.mark.as_str()).or_default() += s.count;
            }
        }
        Variants {
            task,
            rates,
            sequences,
        }
    }

    /// The shared marks of a tool sequence or a step that gave way that restrict it and that
    /// the task lacks (none: it holds for the task): those its episodes all having would be
    /// unlikely by chance ([`CHANCE`]) among the episodes of its context.
    pub(crate) fn missing<'p>(&self, p: &'p Pattern) -> Vec<&'p str> {
        let (Some(task), Some((episodes, with))) = (self.task, self.rates.get(&p.context)) else {
            return Vec::new();
        };
        let n = i32::try_from(p.marks.episodes).unwrap_or(i32::MAX);
        let unlikely = |m: &str| {
            let share = with.get(m).copied().unwrap_or(0) as f64 / (*episodes).max(1) as f64;
            share.min(1.0).powi(n) <= CHANCE
        };
        (shared(p).into_iter())
            .filter(|m| !task.iter().any(|t| t == m))
            .filter(|m| unlikely(m))
            .collect()
    }

    /// Whether a tool sequence or a step that gave way holds for the task.
    pub(crate) fn fits(&self, p: &Pattern) -> bool {
        self.missing(p).is_empty()
    }

    /// How `lesson` stands for the task (see the module docs). `prepare` is the preparation
    /// its remedy names (the tools before the retry of the failed tool; empty for none).
    pub(crate) fn lesson(&self, lesson: &FailureLesson, prepare: &[String]) -> LessonStanding<'a> {
        if !lesson.marks.known(lesson.occurrences) {
            return LessonStanding::Holds;
        }
        let marks: Vec<&str> = lesson.marks.shared().collect();
        let ctx = &lesson.context;
        let unprepared = (self.sequences.iter().copied()).filter(|p| {
            let c = &p.context;
            ctx.matches(c.task_type, c.domain.as_deref(), c.language.as_deref())
                && tools_of(p).is_some_and(|tools| {
                    let at = tools.iter().position(|t| *t == lesson.failed_tool);
                    at.is_some_and(|at| !tools[..at].iter().any(|t| prepare.contains(t)))
                })
        });
        let mut newest: Option<&'a Pattern> = None;
        let mut lacked: Vec<&str> = Vec::new();
        for p in unprepared {
            let since = lesson.last_seen;
            let worked_since =
                p.last_seen > since && marks.iter().all(|m| p.marks.seen_after(m, since));
            if worked_since && newest.is_none_or(|n| newer(p, n)) {
                newest = Some(p);
            }
            for &m in &marks {
                if p.marks.count(m) < p.marks.episodes && !lacked.contains(&m) {
                    lacked.push(m);
                }
            }
        }
        if let Some(p) = newest {
            return LessonStanding::Contradicted(p);
        }
        let Some(task) = self.task else {
            return LessonStanding::Holds;
        };
        let mut missing: Vec<String> = (lacked.into_iter())
            .filter(|m| !task.iter().any(|t| t == m))
            .map(str::to_owned)
            .collect();
        if missing.is_empty() {
            LessonStanding::Holds
        } else {
            missing.sort_unstable();
            LessonStanding::Elsewhere(missing)
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Duration, Utc};

    use super::*;
    use crate::episode::{EpisodeId, TaskType};
    use crate::learned::{LessonObservation, Marks, PatternKind, PatternObservation, lesson_id};

    fn at(minutes: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default() + Duration::minutes(minutes)
    }

    fn task_context() -> ContextKey {
        ContextKey {
            task_type: Some(TaskType::CodeGeneration),
            domain: Some("web_api".into()),
            language: Some("rust".into()),
        }
    }

    fn marks(m: &[&str]) -> Vec<String> {
        m.iter().map(|m| (*m).to_owned()).collect()
    }

    /// A pattern of `kind` seen successfully at each of `seen`, by episodes with these marks.
    fn observed(kind: &PatternKind, seen: &[(i64, &[&str])]) -> Pattern {
        let obs = |(t, m): (i64, &[&str])| {
            let ctx = task_context();
            let mut o = PatternObservation::new(kind.clone(), ctx, EpisodeId::new(), true, at(t));
            o.marks = Some(marks(m));
            o
        };
        let mut p = Pattern::from_observation(&obs(seen[0]));
        for &s in &seen[1..] {
            p.absorb(&obs(s));
        }
        p
    }

    /// A tool sequence done successfully at each of `seen`, by episodes with these marks.
    fn sequence(tools: &[&str], seen: &[(i64, &[&str])]) -> Pattern {
        let tools = marks(tools);
        observed(&PatternKind::ToolSequence { tools }, seen)
    }

    /// A lesson: `build` failed at each of `struck`, in episodes with these marks, and
    /// `install_deps → build` fixed it.
    fn lesson(struck: &[(i64, &[&str])]) -> FailureLesson {
        let ctx = ContextKey {
            task_type: None,
            ..task_context()
        };
        let obs = |(t, m): (i64, &[&str])| LessonObservation {
            id: lesson_id(&ctx, "build", "linker failed"),
            context: ctx.clone(),
            failed_tool: "build".into(),
            failed_action: "cargo build".into(),
            error_class: "linker failed".into(),
            example_error: "linker failed".into(),
            remedy: Some(marks(&["install_deps", "build"])),
            episode_failed: false,
            episode_id: EpisodeId::new(),
            marks: Some(marks(m)),
            observed_at: at(t),
        };
        let mut l = FailureLesson::from_observation(&obs(struck[0]));
        for &s in &struck[1..] {
            l.absorb(&obs(s));
        }
        l
    }

    const PREP: &[&str] = &["install_deps"];

    /// `n` episodes seen at minutes `from..`, each with `marks`.
    fn times<'m>(from: i64, n: i64, marks: &'m [&'m str]) -> Vec<(i64, &'m [&'m str])> {
        (from..from + n).map(|t| (t, marks)).collect()
    }

    #[test]
    fn a_tagged_variant_of_a_context_holds_for_tagged_tasks_only() {
        let mut plain_seen = times(1, 3, &["framework=axum"]);
        plain_seen.extend(times(4, 3, &["framework=actix", "tag=http"]));
        let plain = sequence(&["edit", "build", "test"], &plain_seen);
        let mut tagged_seen = times(10, 3, &["framework=axum", "tag=openssl"]);
        tagged_seen.extend(times(13, 2, &["framework=actix", "tag=openssl"]));
        let tagged = sequence(&["edit", "install_deps", "build", "test"], &tagged_seen);
        let all = [&plain, &tagged];
        let task_plain = marks(&["framework=axum"]);
        let task_tagged = marks(&["framework=actix", "tag=openssl"]);
        let v = Variants::of(Some(&task_plain), &all);
        assert!(v.fits(&plain));
        assert_eq!(v.missing(&tagged), ["tag=openssl"]);
        let v = Variants::of(Some(&task_tagged), &all);
        assert!(v.fits(&plain) && v.fits(&tagged));
        // Unknown task marks tell nothing apart.
        assert!(Variants::of(None, &all).fits(&tagged));
        // Two tagged episodes of five in the context: as likely by chance as not.
        let early = sequence(
            &["edit", "install_deps", "build", "test"],
            &tagged_seen[..2],
        );
        let v = Variants::of(Some(&task_plain), &[&plain, &early]);
        assert!(v.fits(&early));
    }

    #[test]
    fn a_mark_every_sequence_of_the_context_has_restricts_nothing() {
        let a = sequence(&["a", "b"], &times(1, 6, &["framework=gin", "tag=ci"]));
        let b = sequence(&["a", "c"], &times(9, 6, &["framework=gin"]));
        let task = marks(&["tag=ci"]);
        let v = Variants::of(Some(&task), &[&a, &b]);
        assert!(v.fits(&a) && v.fits(&b));
    }

    /// A record that `build` gave way after `edit`, from episodes with these marks.
    fn gave_way(seen: &[(i64, &[&str])]) -> Pattern {
        let step = crate::learned::StepReplaced {
            failed: "build".into(),
            after: Some("edit".into()),
        };
        let kind = PatternKind::DecisionPoint {
            condition: step.condition(),
            choice: "make".into(),
        };
        observed(&kind, seen)
    }

    #[test]
    fn a_step_that_gave_way_is_restricted_only_by_marks_unlikely_by_chance() {
        // Half the context's episodes are tagged `ci`, a tenth `legacy`.
        let mut seen = times(1, 4, &["tag=ci"]);
        seen.extend(times(5, 1, &["tag=ci", "tag=legacy"]));
        seen.extend(times(6, 5, &[]));
        let plain = sequence(&["edit", "build"], &seen);
        let task = marks(&["tag=time"]);
        // Once, or twice, with `ci`: as likely by chance as not; a change of the context.
        for n in [1, 2] {
            let record = gave_way(&times(20, n, &["tag=ci"]));
            assert!(Variants::of(Some(&task), &[&plain, &record]).fits(&record));
        }
        // Five times with `ci`: 3% by chance.
        let record = gave_way(&times(20, 5, &["tag=ci"]));
        let v = Variants::of(Some(&task), &[&plain, &record]);
        assert_eq!(v.missing(&record), ["tag=ci"]);
        // Twice with a tag a tenth of the episodes have: 1% by chance.
        let record = gave_way(&times(20, 2, &["tag=legacy"]));
        let v = Variants::of(Some(&task), &[&plain, &record]);
        assert_eq!(v.missing(&record), ["tag=legacy"]);
    }

    #[test]
    fn a_lesson_holds_where_its_marks_matter_and_nowhere_else() {
        let l = lesson(&[
            (2, &["framework=axum", "tag=openssl"]),
            (4, &["framework=actix", "tag=openssl"]),
        ]);
        assert_eq!(l.marks.shared().collect::<Vec<_>>(), ["tag=openssl"]);
        let plain = sequence(&["edit", "build", "test"], &[(5, &["framework=axum"])]);
        let tagged = sequence(&["edit", "install_deps", "build"], &[(6, &["tag=openssl"])]);
        let all = [&plain, &tagged];
        let (task_plain, task_tagged) = (marks(&["framework=axum"]), marks(&["tag=openssl"]));
        let prep = marks(PREP);
        let standing = Variants::of(Some(&task_plain), &all).lesson(&l, &prep);
        assert_eq!(standing, LessonStanding::Elsewhere(marks(&["tag=openssl"])));
        let standing = Variants::of(Some(&task_tagged), &all).lesson(&l, &prep);
        assert_eq!(standing, LessonStanding::Holds);
        // With no episode that got the tool working unprepared, no mark is known to matter.
        let standing = Variants::of(Some(&task_plain), &[&tagged]).lesson(&l, &prep);
        assert_eq!(standing, LessonStanding::Holds);
    }

    #[test]
    fn a_lesson_is_unlearned_when_its_tool_works_unprepared_where_it_struck() {
        let l = lesson(&[(2, &["tag=openssl"]), (4, &["tag=openssl", "tag=http"])]);
        let task = marks(&["tag=openssl"]);
        let prep = marks(PREP);
        // Done unprepared by episodes with the lesson's marks, after it last struck.
        let since = sequence(&["edit", "build"], &[(9, &["tag=openssl"])]);
        let v = Variants::of(Some(&task), &[&since]);
        assert!(matches!(v.lesson(&l, &prep), LessonStanding::Contradicted(p) if p.id == since.id));
        // Before it last struck: the lesson is the newer evidence.
        let before = sequence(&["edit", "build"], &[(3, &["tag=openssl"])]);
        let v = Variants::of(Some(&task), &[&before]);
        assert_eq!(v.lesson(&l, &prep), LessonStanding::Holds);
        // Prepared: the fix ran first, so it says nothing against the lesson.
        let prepared = sequence(&["install_deps", "edit", "build"], &[(9, &["tag=openssl"])]);
        let v = Variants::of(Some(&task), &[&prepared]);
        assert_eq!(v.lesson(&l, &prep), LessonStanding::Holds);
        // Struck again since: it holds again.
        let again = lesson(&[(2, &["tag=openssl"]), (10, &["tag=openssl"])]);
        let v = Variants::of(Some(&task), &[&since]);
        assert_eq!(v.lesson(&again, &prep), LessonStanding::Holds);
    }

    #[test]
    fn items_recorded_before_marks_were_kept_hold_everywhere() {
        let mut l = lesson(&[(2, &["tag=openssl"])]);
        l.marks = Marks::default();
        let mut old = sequence(&["edit", "install_deps", "build"], &[(1, &["tag=openssl"])]);
        old.marks = Marks::default();
        let plain = sequence(&["edit", "build"], &[(9, &[])]);
        let task = marks(&[]);
        let v = Variants::of(Some(&task), &[&old, &plain]);
        assert!(v.fits(&old));
        assert_eq!(v.lesson(&l, &marks(PREP)), LessonStanding::Holds);
    }
}

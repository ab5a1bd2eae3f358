use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;

use super::*;
use crate::episode::EpisodeId;
use crate::learned::{
    ContextKey, HeuristicObservation, LessonObservation, PatternKind, PatternObservation, lesson_id,
};

/// One episode's evidence: which tool sequence (0-1) it followed and whether it succeeded,
/// which action (0-2) it took for one condition and whether that went well, whether the
/// "fetch" tool failed in it (and was recovered from), and its marks.
#[derive(Debug, Clone)]
struct Seen {
    sequence: usize,
    success: bool,
    action: usize,
    supports: bool,
    failed: Option<bool>,
    tagged: bool,
}

fn seen() -> impl Strategy<Value = Seen> {
    (
        0..2usize,
        any::<bool>(),
        0..3usize,
        any::<bool>(),
        proptest::option::of(any::<bool>()),
        any::<bool>(),
    )
        .prop_map(
            |(sequence, success, action, supports, failed, tagged)| Seen {
                sequence,
                success,
                action,
                supports,
                failed,
                tagged,
            },
        )
}

fn at(n: usize) -> DateTime<Utc> {
    let n = i64::try_from(n).unwrap_or(0);
    Utc.timestamp_opt(1_700_000_000, 0).unwrap() + Duration::minutes(n)
}

fn update(n: usize, s: &Seen) -> LearningUpdate {
    let ctx = ContextKey::default();
    let episode_id = EpisodeId::new();
    let observed_at = at(n);
    let marks = s
        .tagged
        .then(|| vec!["tag=openssl".to_owned()])
        .or(Some(Vec::new()));
    let tools = vec![format!("t{}", s.sequence), "test".to_owned()];
    let mut pattern = PatternObservation::new(
        PatternKind::ToolSequence { tools },
        ctx.clone(),
        episode_id,
        s.success,
        observed_at,
    );
    pattern.steps = u32::try_from(n % 7 + 1).unwrap_or(1);
    pattern.latency_ms = 10 * u64::try_from(n).unwrap_or(0);
    pattern.marks.clone_from(&marks);
    let heuristic = HeuristicObservation::new(
        "build fails",
        format!("a{}", s.action),
        ctx.clone(),
        episode_id,
        s.supports,
        observed_at,
    );
    let lessons = s
        .failed
        .map(|recovered| LessonObservation {
            id: lesson_id(&ctx, "fetch", "timeout"),
            context: ctx.clone(),
            failed_tool: "fetch".into(),
            failed_action: format!("fetch page {n}"),
            error_class: "timeout".into(),
            example_error: format!("timed out after {n} s"),
            remedy: recovered.then(|| vec!["retry".to_owned()]),
            episode_failed: !s.success,
            episode_id,
            observed_at,
            marks,
        })
        .into_iter()
        .collect();
    LearningUpdate {
        episode_id,
        observed_at,
        patterns: vec![pattern],
        heuristics: vec![heuristic],
        lessons,
    }
}

/// The learned items after applying `updates` in order, as a store would hold them.
fn learn(updates: &[&LearningUpdate]) -> ExistingLearned {
    let mut state = ExistingLearned::default();
    for u in updates {
        let changes = u.apply(state.clone());
        merge_into_state(&mut state, changes);
    }
    state
}

fn merge_into_state(state: &mut ExistingLearned, changes: LearnedChanges) {
    for c in changes.patterns {
        state.patterns.retain(|p| p.id != c.item.id);
        state.patterns.push(c.item);
    }
    for c in changes.heuristics {
        state.heuristics.retain(|h| h.id != c.item.id);
        state.heuristics.push(c.item);
    }
    for c in changes.lessons {
        state.lessons.retain(|l| l.id != c.item.id);
        state.lessons.push(c.item);
    }
}

fn forget(state: &ExistingLearned, u: &LearningUpdate) -> ExistingLearned {
    let out = u.unapply(state.clone());
    let mut next = state.clone();
    merge_into_state(&mut next, out.changes);
    next.patterns
        .retain(|p| !out.removed.patterns.contains(&p.id));
    next.heuristics
        .retain(|h| !out.removed.heuristics.contains(&h.id));
    next.lessons
        .retain(|l| !out.removed.lessons.contains(&l.id));
    next
}

type PatternCounts = (String, u64, u64, u64, u64, u64, Vec<(String, u64)>);
type LessonCounts = (String, u64, u64, u64, Vec<(Vec<String>, u64)>);
type AllCounts = (
    Vec<PatternCounts>,
    Vec<(String, u64, u64)>,
    Vec<LessonCounts>,
);

/// Every count of every item, by id.
fn counts(s: &ExistingLearned) -> AllCounts {
    let mut p: Vec<_> = (s.patterns.iter())
        .map(|p| {
            let marks = p.marks.seen.iter().map(|m| (m.mark.clone(), m.count));
            (
                p.id.0.clone(),
                p.occurrences,
                p.successes,
                p.total_steps,
                p.total_latency_ms,
                p.marks.episodes,
                marks.collect(),
            )
        })
        .collect();
    let mut h: Vec<_> = (s.heuristics.iter())
        .map(|h| (h.id.0.clone(), h.support, h.against))
        .collect();
    let mut l: Vec<_> = (s.lessons.iter())
        .map(|l| {
            let remedies = l.remedies.iter().map(|r| (r.tools.clone(), r.count));
            (
                l.id.0.clone(),
                l.occurrences,
                l.recovered,
                l.episode_failures,
                remedies.collect(),
            )
        })
        .collect();
    p.sort();
    h.sort();
    l.sort();
    (p, h, l)
}

proptest! {
    /// Forgetting any one episode leaves every count as in a memory that never saw it, and
    /// no item only it taught.
    #[test]
    fn forgetting_an_episode_counts_as_never_having_seen_it(
        history in proptest::collection::vec(seen(), 1..24),
        pick in any::<proptest::sample::Index>(),
    ) {
        let updates: Vec<LearningUpdate> =
            history.iter().enumerate().map(|(n, s)| update(n, s)).collect();
        let k = pick.index(updates.len());
        let all: Vec<&LearningUpdate> = updates.iter().collect();
        let without: Vec<&LearningUpdate> =
            (updates.iter().enumerate()).filter(|(i, _)| *i != k).map(|(_, u)| u).collect();
        let forgotten = forget(&learn(&all), &updates[k]);
        prop_assert_eq!(counts(&forgotten), counts(&learn(&without)));
        // Each condition key is resolved: one active heuristic at most.
        let active = forgotten.heuristics.iter().filter(|h| h.status.is_active()).count();
        prop_assert!(active <= 1);
        // The forgotten episode is named nowhere.
        let id = updates[k].episode_id;
        prop_assert!(forgotten.patterns.iter().all(|p| p.recent_evidence.iter().all(|e| e.episode_id != id)));
        prop_assert!(forgotten.lessons.iter().all(|l| l.recent_evidence.iter().all(|e| e.episode_id != id)));
    }
}

#[test]
fn evidence_moved_by_a_merge_is_taken_from_the_survivor() {
    let a = update(
        0,
        &Seen {
            sequence: 0,
            success: true,
            action: 0,
            supports: true,
            failed: None,
            tagged: false,
        },
    );
    let b = update(
        1,
        &Seen {
            sequence: 1,
            success: true,
            action: 0,
            supports: true,
            failed: None,
            tagged: false,
        },
    );
    let mut state = learn(&[&a, &b]);
    // Pattern of `a` merged into the one of `b` after both were seen: its counts moved.
    let (loser, survivor) = (a.patterns[0].id.clone(), b.patterns[0].id.clone());
    let mut moved = 0;
    for p in &mut state.patterns {
        if p.id == loser {
            moved = std::mem::take(&mut p.occurrences);
            p.successes = 0;
            p.total_steps = 0;
            p.total_latency_ms = 0;
            p.status = LearnedStatus::Merged {
                into: survivor.0.clone(),
                at: at(5),
            };
        }
    }
    for p in &mut state.patterns {
        if p.id == survivor {
            p.occurrences += moved;
            p.successes += moved;
        }
    }
    let out = a.unapply(state);
    assert!(out.removed.patterns.is_empty());
    let changed: Vec<&Pattern> = out.changes.patterns.iter().map(|c| &c.item).collect();
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].id, survivor);
    assert_eq!((changed[0].occurrences, changed[0].successes), (1, 1));
}

#[test]
fn a_lesson_keeps_no_words_of_the_forgotten_episode() {
    let failed = |n| {
        update(
            n,
            &Seen {
                sequence: 0,
                success: false,
                action: 0,
                supports: false,
                failed: Some(false),
                tagged: false,
            },
        )
    };
    let (first, last) = (failed(0), failed(1));
    let state = learn(&[&first, &last]);
    let out = last.unapply(state);
    let lesson = &out.changes.lessons[0].item;
    assert_eq!(lesson.occurrences, 1);
    assert!(!lesson.example_error.contains("1 s"), "{lesson:?}");
    assert!(!lesson.failed_action.contains("page 1"), "{lesson:?}");
    assert_eq!(lesson.last_seen, at(0));
}

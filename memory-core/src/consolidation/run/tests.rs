use super::*;
use crate::episode::{EpisodeId, TaskType};
use crate::learned::{ContextKey, PatternObservation};

fn sequence(tools: &str, at_min: i64, success: bool, seen: u64) -> Pattern {
    let ctx = ContextKey {
        task_type: Some(TaskType::Testing),
        domain: Some("web_api".into()),
        language: Some("rust".into()),
    };
    let kind = PatternKind::ToolSequence {
        tools: tools.split(' ').map(str::to_owned).collect(),
    };
    let at = DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::minutes(at_min);
    let obs = PatternObservation::new(kind, ctx, EpisodeId::new(), success, at);
    let mut p = Pattern::from_observation(&obs);
    p.occurrences = seen;
    p.successes = if success { seen } else { 0 };
    p
}

#[test]
fn items_linked_by_merges_are_written_as_one_group_with_what_was_read() {
    let [a, b, c, d] = ["a b c", "a b d", "a b e", "x y"].map(|t| sequence(t, 0, true, 2));
    let mut pool = Pool::new(vec![a.clone(), b.clone(), c.clone(), d.clone()]);
    let now = DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::minutes(9);
    assert!(pool.merge(&b.id, &a.id, now));
    assert!(pool.merge(&c.id, &b.id, now), "a chain: c into b into a");
    if let Some(x) = pool.items.get_mut(&d.id) {
        x.set_status(LearnedStatus::Pruned {
            reason: "test".into(),
            at: now,
        });
    }
    let groups = pool.changed_groups();
    let mut sizes: Vec<usize> = groups.iter().map(|g| g.read.len()).collect();
    sizes.sort_unstable();
    assert_eq!(sizes, vec![1, 3]);
    for g in &groups {
        assert_eq!(g.read.len(), g.write.patterns.len());
        for (id, was) in &g.read {
            let loaded = [&a, &b, &c, &d].into_iter().find(|p| p.id.0 == id.as_str());
            assert_eq!(was.as_ref(), loaded.map(|p| p.clone().into_item()).as_ref());
        }
    }
    assert!(
        Pool::new(vec![a]).changed_groups().is_empty(),
        "nothing changed"
    );
}

fn fold(items: Vec<Pattern>) -> (Pool<Pattern>, RunState) {
    let mut pool = Pool::new(items);
    let now = DateTime::<Utc>::UNIX_EPOCH;
    let run = ConsolidationRun::default();
    let mut st = RunState {
        run,
        changes: Vec::new(),
        now,
    };
    fold_sequence_variants(&mut pool, &mut st, 0.75);
    (pool, st)
}

#[test]
fn stale_variants_fold_into_the_recurring_sequence_and_recent_ones_stay() {
    let strong = sequence("a b c d", 100, true, 5);
    // Seen before the eight most recent sequences of the context: folded when alike.
    let stale = sequence("a b x d", 1, true, 1);
    let unlike = sequence("p q r s", 2, true, 1);
    let better = sequence("a b c e", 3, true, 1);
    let mut items = vec![strong.clone(), stale.clone(), unlike.clone()];
    for i in 0..RECENT_SEQUENCES as i64 - 1 {
        items.push(sequence(&format!("a b c y{i}"), 50 + i, true, 1));
    }
    let mut failing = sequence("a b c d f", 4, false, 9);
    failing.context.language = Some("go".into());
    items.extend([better.clone(), failing.clone()]);
    let (pool, st) = fold(items);
    let status = |p: &Pattern| pool.items[&p.id].status.clone();
    assert!(matches!(status(&stale), LearnedStatus::Merged { into, .. } if into == strong.id.0));
    assert!(matches!(status(&better), LearnedStatus::Merged { into, .. } if into == strong.id.0));
    assert_eq!(pool.items[&strong.id].occurrences, 7, "evidence moved");
    assert_eq!(status(&unlike), LearnedStatus::Active, "not alike");
    assert_eq!(status(&failing), LearnedStatus::Active, "another context");
    assert_eq!(st.run.merged_patterns, 2);
    let recent = pool
        .items
        .values()
        .filter(|p| p.last_seen.timestamp() >= 50 * 60);
    assert!(
        recent
            .into_iter()
            .all(|p| p.status == LearnedStatus::Active)
    );
}

#[test]
fn a_tagged_variant_seen_twice_never_folds_and_a_one_off_run_does() {
    let with = |mut p: Pattern, marks: &[&str]| {
        let marks: Vec<String> = marks.iter().map(|m| (*m).to_owned()).collect();
        for _ in 0..p.occurrences {
            p.marks.observe(&marks, p.last_seen);
        }
        p
    };
    let strong = with(sequence("a b c d", 100, true, 9), &["framework=axum"]);
    // The procedure of the tagged tasks: every one of its episodes had the tag.
    let tagged = with(
        sequence("a fix b c d", 1, true, 2),
        &["framework=axum", "tag=openssl"],
    );
    let one_off = with(
        sequence("a b x d", 2, true, 1),
        &["framework=axum", "tag=http"],
    );
    let mut items = vec![strong.clone(), tagged.clone(), one_off.clone()];
    for i in 0..RECENT_SEQUENCES as i64 {
        items.push(sequence(&format!("p{i} q{i} r{i} s{i}"), 50 + i, true, 1));
    }
    let (pool, st) = fold(items);
    assert_eq!(pool.items[&tagged.id].status, LearnedStatus::Active);
    assert!(matches!(
        &pool.items[&one_off.id].status,
        LearnedStatus::Merged { into, .. } if *into == strong.id.0
    ));
    assert_eq!(st.run.merged_patterns, 1);
    let survivor = &pool.items[&strong.id].marks;
    assert_eq!((survivor.episodes, survivor.count("tag=http")), (10, 1));
    assert_eq!(survivor.shared().collect::<Vec<_>>(), ["framework=axum"]);
}

#[test]
fn variants_fold_only_into_the_strongest_sequences_of_their_context() {
    // Strong, mutually unlike sequences: more than a run compares a variant with.
    let strong = |i: usize| sequence(&format!("s{i} t{i} u{i} v{i}"), 100, true, 1000 - i as u64);
    let mut items: Vec<Pattern> = (0..FOLD_TARGETS + 10).map(strong).collect();
    let near_first = sequence("s0 t0 u0 w", 1, true, 1);
    let near_last = sequence(&format!("s{0} t{0} u{0} w", FOLD_TARGETS + 5), 2, true, 1);
    items.extend([near_first.clone(), near_last.clone()]);
    let (pool, _) = fold(items);
    assert!(matches!(
        pool.items[&near_first.id].status,
        LearnedStatus::Merged { .. }
    ));
    assert_eq!(pool.items[&near_last.id].status, LearnedStatus::Active);
}

#[test]
fn only_old_rows_nothing_points_into_are_compactable() {
    let minute = |m: i64| DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::minutes(m);
    let before = minute(500);
    let merged = |tools: &str, into: &Pattern, at_min: i64, evidence: u64| {
        let mut p = sequence(tools, 1, true, evidence);
        p.status = LearnedStatus::Merged {
            into: into.id.0.clone(),
            at: minute(at_min),
        };
        p
    };
    let pruned = |tools: &str, seen_min: i64, at_min: i64| {
        let mut p = sequence(tools, seen_min, true, 1);
        p.status = LearnedStatus::Pruned {
            reason: "low".into(),
            at: minute(at_min),
        };
        p
    };
    let end = sequence("a b c d", 100, true, 5);
    let middle = merged("a b c e", &end, 10, 0);
    let first = merged("a b c f", &middle, 10, 0);
    let holding = merged("a b c g", &end, 10, 2);
    let recent = merged("a b c h", &end, 500, 0);
    let old_pruned = pruned("x y", 5, 10);
    let seen_since = pruned("x z", 20, 10);
    let recently_pruned = pruned("x w", 5, 500);
    let pointed_into = pruned("x v", 5, 10);
    let pointer = merged("x v u", &pointed_into, 400, 0);
    let mut rows = CompactableRows::new(before, before);
    for p in [&end, &middle, &first, &holding, &recent] {
        rows.observe(p);
    }
    for p in [&old_pruned, &seen_since, &recently_pruned, &pointed_into] {
        rows.observe(p);
    }
    rows.observe(&pointer);
    let (merged, pruned) = rows.compactable();
    assert_eq!(merged, vec![first.id, pointer.id]);
    assert_eq!(pruned, vec![(old_pruned.id, minute(10))]);
}

#[test]
fn a_sequence_never_folds_into_a_less_successful_one() {
    let mut items = vec![sequence("a b c d", 100, false, 5)];
    items.push(sequence("a b c e", 1, true, 1));
    for i in 0..RECENT_SEQUENCES as i64 {
        items.push(sequence(&format!("z{i}"), 50 + i, true, 1));
    }
    let (pool, st) = fold(items);
    assert_eq!(st.run.merged_patterns, 0);
    assert!(
        pool.items
            .values()
            .all(|p| p.status == LearnedStatus::Active)
    );
}

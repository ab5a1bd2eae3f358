//! Unit tests of the vector index.

use super::quantize::dot_i8;
use super::search::Scan;
use super::*;
use crate::episode::{TaskContext, TaskType};
use crate::retrieval::sign_codes::SignCodes;
use crate::storage::EpisodeFilter;
use chrono::Utc;

fn summary(domain: &str) -> EpisodeSummary {
    EpisodeSummary {
        id: EpisodeId::new(),
        task_description: format!("task in {domain}"),
        task_type: TaskType::Debugging,
        context: TaskContext::new(domain),
        step_count: 0,
        started_at: Utc::now(),
        completed_at: None,
        outcome: None,
        reward: None,
    }
}

fn unit(seed: u32, dims: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..dims)
        .map(|j| ((seed as f32 * 12.9898 + j as f32 * 78.233).sin() * 43_758.547).fract())
        .collect();
    crate::embedding::l2_normalize(&mut v);
    v
}

fn centered_cosine(q: &[f32], v: &[f32], m: &[f32]) -> f32 {
    let a: Vec<f32> = q.iter().zip(m).map(|(x, y)| x - y).collect();
    let b: Vec<f32> = v.iter().zip(m).map(|(x, y)| x - y).collect();
    crate::embedding::cosine(&a, &b)
}

#[test]
fn a_scan_in_parts_keeps_what_one_scan_keeps_ties_included() {
    let dims = 8;
    let index = VectorIndex::new(dims);
    let ns = Namespace::default();
    for i in 0..3_001u32 {
        // Every third vector repeats an earlier one: equal scores, kept by lower index.
        let seed = if i % 3 == 0 { i / 3 + 1 } else { i + 1 };
        let domain = if i % 2 == 0 { "cli" } else { "web_api" };
        index.upsert(&ns, summary(domain), &unit(seed, dims));
    }
    let space = index.fresh_space(&ns);
    let s = space.read().unwrap_or_else(PoisonError::into_inner);
    let (query, offset) = s.centered_query(&[&unit(77, dims)]).unwrap();
    let cli = EpisodeFilter {
        domain: Some("cli".into()),
        ..EpisodeFilter::default()
    };
    for filter in [EpisodeFilter::default(), cli] {
        let scan = Scan::new(&s, dims, (&query, offset), &filter, 40);
        let one = scan.in_parts(3_001, 1);
        assert_eq!(one.len(), 40);
        for parts in [2, 3, 4, 7] {
            assert_eq!(scan.in_parts(3_001, parts), one, "{parts} parts");
        }
    }
}

/// `n` random unit vectors of `dims` dimensions, half in `cli`, half in `web_api`.
fn filled(n: u32, dims: usize) -> (VectorIndex, Vec<EpisodeId>) {
    let index = VectorIndex::new(dims);
    let ns = Namespace::default();
    let ids = (0..n)
        .map(|i| {
            let s = summary(if i % 2 == 0 { "cli" } else { "web_api" });
            let id = s.id;
            index.upsert(&ns, s, &unit(i + 1, dims));
            id
        })
        .collect();
    (index, ids)
}

#[test]
fn the_sign_stage_keeps_the_exact_top_10_of_random_vectors() {
    let (index, _) = filled(5_000, 384);
    let ns = Namespace::default();
    let (mut found, mut wanted) = (0, 0);
    for seed in 0..10 {
        let q = unit(100_000 + seed, 384);
        index.set_sign_stage_from(usize::MAX);
        let exact = index.search(&ns, &[&q], &EpisodeFilter::default(), 10);
        index.set_sign_stage_from(0);
        let staged = index.search(&ns, &[&q], &EpisodeFilter::default(), 10);
        let got: Vec<EpisodeId> = staged.iter().map(|h| h.summary.id).collect();
        wanted += exact.len();
        found += exact.iter().filter(|h| got.contains(&h.summary.id)).count();
        // What both return is scored alike: the pool is re-scored exactly.
        for h in &staged {
            if let Some(e) = exact.iter().find(|e| e.summary.id == h.summary.id) {
                assert!((e.cosine - h.cosine).abs() < 1e-6);
            }
        }
    }
    assert_eq!(wanted, 100);
    // The pool is 1,600 of 5,000; a pool drawn at random would keep ~32 of 100.
    assert!(found >= 95, "recall@10 {found}/100");
    let space = index.space(&ns);
    assert_eq!(
        space.read().unwrap().signs.as_ref().map(SignCodes::len),
        Some(5_000)
    );
}

#[test]
fn a_sign_pool_in_parts_keeps_what_one_part_keeps_filtered_or_not() {
    let (index, _) = filled(3_001, 16);
    index.set_sign_stage_from(0);
    let ns = Namespace::default();
    let space = index.fresh_space(&ns);
    let s = space.read().unwrap_or_else(PoisonError::into_inner);
    let signs = s.signs.as_ref().unwrap();
    let (query, offset) = s.centered_query(&[&unit(77, 16)]).unwrap();
    let cli = EpisodeFilter {
        domain: Some("cli".into()),
        ..EpisodeFilter::default()
    };
    for filter in [EpisodeFilter::default(), cli] {
        let scan = Scan::new(&s, 16, (&query, offset), &filter, 40);
        let one = scan.sign_pool(signs, &query, 3_001, 1, 200);
        assert_eq!(one.len(), 200);
        assert!(one.windows(2).all(|w| w[0] < w[1]), "ascending indices");
        if filter.domain.is_some() {
            assert!(one.iter().all(|&i| s.summaries[i].context.domain == "cli"));
        }
        for parts in [2, 3, 4, 7] {
            assert_eq!(
                scan.sign_pool(signs, &query, 3_001, parts, 200),
                one,
                "{parts} parts"
            );
        }
    }
}

#[test]
fn sign_codes_follow_upserts_removals_and_restores() {
    let dims = 24;
    let (index, ids) = filled(400, dims);
    index.set_sign_stage_from(300);
    let ns = Namespace::default();
    let coded_afresh = |index: &VectorIndex| {
        let space = index.fresh_space(&ns);
        let mut s = space.write().unwrap();
        let kept = s.signs.clone();
        s.code_signs(dims);
        (kept, s.signs.clone())
    };
    let (kept, fresh) = coded_afresh(&index);
    assert!(kept.is_some());
    assert_eq!(kept, fresh);
    // Fewer changes than a tenth: no re-centering, so the codes are patched in place.
    index.upsert(&ns, summary("cli"), &unit(9_001, dims));
    index.upsert(&ns, summary("cli"), &unit(9_002, dims));
    assert!(index.remove(&ns, ids[3]));
    assert!(index.remove(&ns, ids[399]));
    let (kept, fresh) = coded_afresh(&index);
    assert_eq!(kept.as_ref().map(SignCodes::len), Some(400));
    assert_eq!(kept, fresh);
    // A restored image of a large namespace is coded as it is restored.
    let (summaries, parts) = index.export(&ns);
    let restored = VectorIndex::new(dims);
    restored.set_sign_stage_from(300);
    assert!(restored.restore(&ns, summaries, parts));
    let space = restored.space(&ns);
    assert_eq!(space.read().unwrap().signs, fresh);
    // Below the size, no codes are kept.
    let small = VectorIndex::new(dims);
    small.upsert(&ns, summary("cli"), &unit(1, dims));
    small.set_sign_stage_from(2);
    let (kept, _) = coded_afresh(&small);
    assert!(kept.is_none());
}

#[test]
fn removing_an_episode_keeps_the_others_scored_as_before() {
    let dims = 32;
    let index = VectorIndex::new(dims);
    let ns = Namespace::default();
    let docs: Vec<EpisodeSummary> = (0..5).map(|_| summary("cli")).collect();
    for (i, d) in docs.iter().enumerate() {
        index.upsert(&ns, d.clone(), &unit(i as u32 + 1, dims));
    }
    let q = unit(9, dims);
    let before = index.score(&ns, &[&q], docs[4].id).map(|h| h.similarity);
    assert!(index.remove(&ns, docs[1].id));
    assert!(!index.remove(&ns, docs[1].id), "already gone");
    assert_eq!(index.len(&ns), 4);
    assert!(!index.contains(&ns, docs[1].id));
    // The last document moved into the freed slot and keeps its vector.
    assert_eq!(
        index.score(&ns, &[&q], docs[4].id).map(|h| h.similarity),
        before
    );
    let hits = index.search(&ns, &[&q], &EpisodeFilter::default(), 10);
    assert_eq!(hits.len(), 4);
    assert!(hits.iter().all(|h| h.summary.id != docs[1].id));
    assert!(index.remove(&ns, docs[4].id), "the last one");
    assert_eq!(
        index
            .search(&ns, &[&q], &EpisodeFilter::default(), 10)
            .len(),
        3
    );
}

#[test]
fn quantized_cosines_are_close_to_exact() {
    let dims = 384;
    let index = VectorIndex::new(dims);
    let ns = Namespace::default();
    let q = unit(0, dims);
    let mut docs = Vec::new();
    for seed in 1..50 {
        let v = unit(seed, dims);
        let s = summary("web");
        docs.push((s.id, v.clone()));
        index.upsert(&ns, s, &v);
    }
    let m = index.center(&ns);
    assert_eq!(m.len(), dims);
    for (id, v) in docs {
        let hit = index.score(&ns, &[&q], id).unwrap();
        let exact = centered_cosine(&q, &v, &m);
        assert!(
            (exact - hit.cosine).abs() < 0.01,
            "{exact} vs {}",
            hit.cosine
        );
        let plain = crate::embedding::cosine(&q, &v);
        assert!(
            (plain - hit.similarity).abs() < 0.01,
            "{plain} vs {}",
            hit.similarity
        );
    }
}

#[test]
fn the_center_is_the_shrunk_mean_and_follows_growth() {
    let index = VectorIndex::new(2);
    let ns = Namespace::default();
    index.upsert(&ns, summary("web"), &[1.0, 0.0]);
    index.upsert(&ns, summary("web"), &[0.0, 1.0]);
    // sum (1, 1) over n + CENTER_PRIOR = 22.
    let m = index.center(&ns);
    assert!((m[0] - 1.0 / 22.0).abs() < 1e-3 && (m[1] - 1.0 / 22.0).abs() < 1e-3);
    // Growing by more than a tenth re-centers on the next search.
    for _ in 0..8 {
        index.upsert(&ns, summary("web"), &[1.0, 0.0]);
    }
    let m = index.center(&ns);
    assert!((m[0] - 9.0 / 30.0).abs() < 1e-2, "{m:?}");
    // An exact copy of a document still scores 1 after centering.
    let hits = index.search(&ns, &[&[0.0, 1.0]], &EpisodeFilter::default(), 1);
    assert!((hits[0].cosine - 1.0).abs() < 0.02);
}

#[test]
fn search_orders_by_cosine_and_applies_the_filter_inside() {
    let dims = 16;
    let index = VectorIndex::new(dims);
    let ns = Namespace::default();
    let other = Namespace::new("other").unwrap();
    let q = unit(7, dims);
    // The best match of all lives in another namespace and in a filtered-out domain.
    index.upsert(&other, summary("web"), &q);
    let best_filtered_out = summary("db");
    index.upsert(&ns, best_filtered_out, &q);
    for seed in 0..20 {
        index.upsert(&ns, summary("web"), &unit(seed, dims));
    }
    let filter = EpisodeFilter {
        domain: Some("web".into()),
        ..EpisodeFilter::default()
    };
    let hits = index.search(&ns, &[&q], &filter, 5);
    assert_eq!(hits.len(), 5);
    assert!(hits.iter().all(|h| h.summary.context.domain == "web"));
    assert!(hits.windows(2).all(|w| w[0].cosine >= w[1].cosine));
    // Unfiltered, the exact copy of the query comes first.
    let hits = index.search(&ns, &[&q], &EpisodeFilter::default(), 3);
    assert_eq!(hits[0].summary.context.domain, "db");
    assert!(hits[0].cosine > 0.99);
    assert_eq!(index.len(&other), 1);
}

#[test]
fn two_stage_search_returns_the_exact_top_k() {
    let dims = 384;
    let index = VectorIndex::new(dims);
    let ns = Namespace::default();
    let q = unit(10_000, dims);
    let mut ids = Vec::new();
    for seed in 0..2_000 {
        let s = summary("web");
        ids.push(s.id);
        index.upsert(&ns, s, &unit(seed, dims));
    }
    let mut exact: Vec<(f32, EpisodeId)> = ids
        .iter()
        .map(|&id| (index.score(&ns, &[&q], id).unwrap().cosine, id))
        .collect();
    exact.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let hits = index.search(&ns, &[&q], &EpisodeFilter::default(), 10);
    let got: Vec<EpisodeId> = hits.iter().map(|h| h.summary.id).collect();
    let want: Vec<EpisodeId> = exact.iter().take(10).map(|e| e.1).collect();
    assert_eq!(got, want);
    assert!((hits[0].cosine - exact[0].0).abs() < 1e-6);
}

#[test]
fn integer_dot_matches_the_float_dot_of_the_codes() {
    let q: Vec<i16> = (0..37).map(|j| (j * 7 % 255 - 127) as i16).collect();
    let c: Vec<i8> = (0..37).map(|j| (j * 13 % 255 - 127) as i8).collect();
    let want: i32 = q
        .iter()
        .zip(&c)
        .map(|(a, b)| i32::from(*a) * i32::from(*b))
        .sum();
    assert_eq!(dot_i8(&q, &c), want);
    assert_eq!(dot_i8(&[127; 384], &[-127; 384]), -127 * 127 * 384);
}

#[test]
fn episodes_of_several_rows_score_by_their_best_and_come_out_once() {
    let dims = 16;
    let index = VectorIndex::new(dims);
    let ns = Namespace::default();
    // Ten episodes of three rows each, one of which (row 2 of episode 4) is the query.
    let query = unit(7_777, dims);
    let mut ids = Vec::new();
    for e in 0..10u32 {
        let s = summary("chat");
        ids.push(s.id);
        let mut rows = Vec::new();
        for r in 0..3u32 {
            if e == 4 && r == 2 {
                rows.extend_from_slice(&query);
            } else {
                rows.extend(unit(e * 10 + r + 1, dims));
            }
        }
        index.upsert(&ns, s, &rows);
    }
    assert_eq!((index.len(&ns), index.rows(&ns)), (10, 30));
    let hits = index.search(&ns, &[&query], &EpisodeFilter::default(), 10);
    // Every episode once, however many of its rows made the shortlist.
    assert_eq!(hits.len(), 10);
    let mut seen: Vec<EpisodeId> = hits.iter().map(|h| h.summary.id).collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), 10);
    assert_eq!((hits[0].summary.id, hits[0].row), (ids[4], 2));
    let scored = index.score(&ns, &[&query], ids[4]).unwrap();
    assert_eq!(scored.row, 2);
    assert!((scored.cosine - hits[0].cosine).abs() < 1e-6);
    // Each hit's score is its episode's best row.
    for h in &hits {
        let best = index.score(&ns, &[&query], h.summary.id).unwrap();
        assert!((best.cosine - h.cosine).abs() < 1e-6);
    }
    // Fewer rows on the next upsert: the old extra rows go.
    index.upsert(&ns, summary_with(ids[4]), &unit(1, dims));
    assert_eq!((index.len(&ns), index.rows(&ns)), (10, 28));
    assert_eq!(index.score(&ns, &[&query], ids[4]).unwrap().row, 0);
    // Removal takes every row; the others keep theirs and their scores.
    let before = index.score(&ns, &[&query], ids[9]).unwrap().cosine;
    assert!(index.remove(&ns, ids[0]));
    assert!(!index.remove(&ns, ids[0]));
    assert_eq!((index.len(&ns), index.rows(&ns)), (9, 25));
    assert!(index.score(&ns, &[&query], ids[0]).is_none());
    let after = index.score(&ns, &[&query], ids[9]).unwrap().cosine;
    assert!((before - after).abs() < 0.05, "{before} vs {after}");
    // An image of rows restores the same answers; rows with a gap are refused.
    let (summaries, parts) = index.export(&ns);
    let restored = VectorIndex::new(dims);
    assert!(restored.restore(&ns, summaries.clone(), parts.clone()));
    let again = restored.search(&ns, &[&query], &EpisodeFilter::default(), 10);
    let key = |h: &[VectorHit]| -> Vec<(EpisodeId, u16)> {
        h.iter().map(|h| (h.summary.id, h.row)).collect()
    };
    assert_eq!(
        key(&again),
        key(&index.search(&ns, &[&query], &EpisodeFilter::default(), 10))
    );
    let mut gap = parts;
    if let Some(r) = gap.rows.iter_mut().find(|r| **r == 1) {
        *r = 5;
    }
    assert!(!VectorIndex::new(dims).restore(&ns, summaries, gap));
}

fn summary_with(id: EpisodeId) -> EpisodeSummary {
    EpisodeSummary {
        id,
        ..summary("chat")
    }
}

#[test]
fn upsert_replaces_and_wrong_lengths_are_ignored() {
    let index = VectorIndex::new(4);
    let ns = Namespace::default();
    let s = summary("web");
    let id = s.id;
    index.upsert(&ns, s.clone(), &[1.0, 0.0, 0.0, 0.0]);
    index.upsert(&ns, s, &[0.0, 1.0, 0.0, 0.0]);
    index.upsert(&ns, summary("web"), &[1.0, 0.0]);
    assert_eq!(index.len(&ns), 1);
    let hit = index.score(&ns, &[&[0.0, 1.0, 0.0, 0.0]], id).unwrap();
    assert!((hit.similarity - 1.0).abs() < 0.01);
    assert!(
        index
            .search(&ns, &[&[1.0]], &EpisodeFilter::default(), 3)
            .is_empty()
    );
}

#[test]
fn images_are_exported_and_restored_centered() {
    let index = VectorIndex::new(8);
    let ns = Namespace::default();
    for seed in 0..20 {
        index.upsert(&ns, summary("web"), &unit(seed, 8));
    }
    // Never searched, so never centered: the export centers first.
    let (summaries, parts) = index.export(&ns);
    assert_eq!(parts.centered_at, 20);
    // An image written uncentered (an older build) is centered by the restore.
    let stale = VectorParts {
        centered_at: 0,
        center: Vec::new(),
        ..parts.clone()
    };
    let restored = VectorIndex::new(8);
    assert!(restored.restore(&ns, summaries, stale));
    let (_, again) = restored.export(&ns);
    assert_eq!(again.centered_at, 20);
    assert_eq!(again.center, parts.center);
    assert_eq!(again.inv_norms, parts.inv_norms);
}

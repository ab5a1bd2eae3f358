use memory_core::{FusionMethod, RetrievalConfig};

use super::choice::fit_threshold;
use super::*;

fn q(answerable: bool, r5: f64, support: f32) -> QueryScore {
    QueryScore {
        answerable,
        recall: [r5, r5, r5],
        reciprocal_rank: r5,
        ndcg: r5,
        support: Some(support),
    }
}

#[test]
fn the_threshold_weighs_every_set_alike() {
    // Set 0: no-answer queries below 0.4, answerable above 0.5. Set 1 (no no-answer
    // queries, many of them): answerable at 0.45 and up. The middle of the cheapest
    // gap lies between 0.4 and 0.45.
    let a = vec![q(false, 0.0, 0.30), q(false, 0.0, 0.38), q(true, 1.0, 0.55)];
    let b: Vec<QueryScore> = (0..50)
        .map(|i| q(true, 1.0, 0.45 + i as f32 * 0.001))
        .collect();
    let t = fit_threshold(&[&a, &b], 0.9);
    assert!(t > 0.38 && t < 0.45, "{t}");
    assert!((fit_threshold(&[], 0.9) - 0.9).abs() < f32::EPSILON);
}

#[test]
fn the_choice_for_a_set_never_looks_at_it() {
    let grid = vec![
        FusionSetting {
            fusion: FusionMethod::MinMax,
            rank_constant: 60.0,
            semantic_trust_from: 0.0,
            semantic_trust_full: 0.0,
            dense_weight: 0.5,
            window_weight: 0.0,
            unknown_term_shift: 0.0,
        },
        FusionSetting {
            fusion: FusionMethod::ZScore,
            rank_constant: 60.0,
            semantic_trust_from: 0.0,
            semantic_trust_full: 0.0,
            dense_weight: 0.5,
            window_weight: 0.0,
            unknown_term_shift: 0.0,
        },
    ];
    // Sets 0 and 1 prefer min-max, set 2 (large) z-score.
    let runs = |good: usize| -> [Vec<Vec<QueryScore>>; 2] {
        let one = |i: usize| vec![q(true, if i == good { 1.0 } else { 0.2 }, 0.5)];
        [vec![one(0), one(1)], vec![one(0), one(1)]]
    };
    let m = Measured {
        grid: vec![runs(0), runs(0), runs(1)],
        vector: vec![
            [vec![q(true, 1.0, 0.5)], vec![q(true, 1.0, 0.5)]],
            [vec![q(true, 1.0, 0.5)], vec![q(true, 1.0, 0.5)]],
            [vec![q(true, 1.0, 0.5)], vec![q(true, 1.0, 0.5)]],
        ],
        parts: vec![[(0.0, 0.0); 2]; 3],
    };
    let given = Choice::of(&RetrievalConfig::default());
    // Without set 0, sets 1 and 2 tie (one each): the first family in grid order.
    let without_0 = choose(&grid, &m, &[false, true, true], &given);
    assert_eq!(without_0.fusion, FusionMethod::MinMax);
    // Without set 2, only min-max sets remain.
    let without_2 = choose(&grid, &m, &[true, true, false], &given);
    assert_eq!(without_2.fusion, FusionMethod::MinMax);
    // Without sets 0 and 1, only set 2 speaks.
    let only_2 = choose(&grid, &m, &[false, false, true], &given);
    assert_eq!(only_2.fusion, FusionMethod::ZScore);
}

#[test]
fn a_setting_that_loses_to_a_part_anywhere_is_not_chosen_for_a_higher_mean() {
    let setting = |fusion| FusionSetting {
        fusion,
        rank_constant: 60.0,
        semantic_trust_from: 0.0,
        semantic_trust_full: 0.0,
        dense_weight: 0.5,
        window_weight: 0.8,
        unknown_term_shift: 0.0,
    };
    let grid = vec![setting(FusionMethod::MinMax), setting(FusionMethod::ZScore)];
    // Min-max: far above the parts on set 0, below them on set 1 (mean 0.75). Z-score:
    // just above them on both (mean 0.62).
    let set = |minmax: f64, z: f64| -> [Vec<Vec<QueryScore>>; 2] {
        let runs = vec![vec![q(true, minmax, 0.5)], vec![q(true, z, 0.5)]];
        [runs.clone(), runs]
    };
    let m = Measured {
        grid: vec![set(1.0, 0.62), set(0.5, 0.62)],
        vector: vec![[vec![q(true, 0.6, 0.5)], vec![q(true, 0.6, 0.5)]]; 2],
        parts: vec![[(0.6, 0.6); 2]; 2],
    };
    let given = Choice::of(&RetrievalConfig::default());
    let chosen = choose(&grid, &m, &[true, true], &given);
    assert_eq!(chosen.fusion, FusionMethod::ZScore);
}

#[test]
fn the_default_grid_keeps_both_signals_in_every_fused_setting() {
    let grid = default_grid();
    assert_eq!(grid.len(), 2 * 7 * 6);
    for s in &grid {
        assert!(s.dense_weight > 0.0 && s.dense_weight < 1.0, "{s:?}");
        assert!(s.unknown_term_shift >= 0.0, "{s:?}");
    }
}

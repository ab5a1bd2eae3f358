use super::*;
use crate::namespace::Namespace;
use crate::retrieval::lexical_index::LexicalIndex;
use crate::retrieval::vector_index::VectorIndex;
use crate::storage::EpisodeFilter;

fn summary(i: usize) -> EpisodeSummary {
    let mut context = TaskContext::new(if i.is_multiple_of(2) {
        "web_api"
    } else {
        "cli"
    });
    if i.is_multiple_of(3) {
        context.language = Some("rust".into());
        context.tags = vec!["retry".into(), "ünïcode".into()];
    }
    EpisodeSummary {
        id: EpisodeId::new(),
        task_description: format!("fix the retry logic in worker {i}"),
        task_type: TaskType::Debugging,
        context,
        step_count: i as u32,
        started_at: DateTime::from_timestamp_nanos(1_700_000_000_000_000_123 + i as i64),
        completed_at: (i.is_multiple_of(2)).then(|| DateTime::from_timestamp_nanos(1_800_000_000)),
        outcome: (i.is_multiple_of(2)).then_some(OutcomeKind::PartialSuccess),
        reward: (i.is_multiple_of(2)).then_some(0.625),
    }
}

fn vector(i: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..16).map(|j| ((i * 7 + j) as f32).sin()).collect();
    crate::embedding::l2_normalize(&mut v);
    v
}

fn image_of(index: &VectorIndex, ns: &Namespace) -> Vec<u8> {
    let (summaries, parts) = index.export(ns);
    let lexical = LexicalParts::build(&summaries);
    encode(
        index.dims(),
        &summaries,
        &parts,
        &lexical,
        &WindowParts::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn an_image_restores_the_same_search_results() {
    let ns = Namespace::new("snapshot/test").unwrap_or_else(|e| panic!("{e}"));
    let index = VectorIndex::new(16);
    let lexical = LexicalIndex::new();
    for i in 0..50 {
        let s = Arc::new(summary(i));
        index.upsert(&ns, Arc::clone(&s), &vector(i));
        lexical.upsert(&ns, s);
    }
    let query = vector(3);
    let before = index.search(&ns, &[&query], &EpisodeFilter::default(), 10);
    let bytes = image_of(&index, &ns);

    // Split anywhere, as a backend may return it: every split decodes the same.
    let split: Vec<Vec<u8>> = bytes.chunks(7).map(<[u8]>::to_vec).collect();
    let uneven = vec![
        bytes[..1].to_vec(),
        Vec::new(),
        bytes[1..bytes.len() / 3].to_vec(),
        bytes[bytes.len() / 3..].to_vec(),
    ];
    for parts in [&split, &uneven] {
        let image = decode(parts, 16).unwrap_or_else(|e| panic!("{e}"));
        let decoded: Vec<&EpisodeSummary> = image.summaries.iter().map(|s| &**s).collect();
        let (original, _) = index.export(&ns);
        let expected: Vec<&EpisodeSummary> = original.iter().map(|s| &**s).collect();
        assert_eq!(decoded, expected);
    }
    let image = decode(&[bytes], 16).unwrap_or_else(|e| panic!("{e}"));
    let (original, _) = index.export(&ns);
    let decoded: Vec<&EpisodeSummary> = image.summaries.iter().map(|s| &**s).collect();
    let expected: Vec<&EpisodeSummary> = original.iter().map(|s| &**s).collect();
    assert_eq!(decoded, expected, "summaries round-trip exactly");

    let restored = VectorIndex::new(16);
    assert!(restored.restore(&ns, image.summaries.clone(), image.vectors));
    let restored_lexical = LexicalIndex::new();
    assert!(restored_lexical.restore(&ns, image.summaries, image.lexical));
    let after = restored.search(&ns, &[&query], &EpisodeFilter::default(), 10);
    let ids = |hits: &[crate::retrieval::vector_index::VectorHit]| -> Vec<(EpisodeId, f32)> {
        hits.iter().map(|h| (h.summary.id, h.cosine)).collect()
    };
    assert_eq!(ids(&before), ids(&after));
    let text = |l: &LexicalIndex| -> Vec<(EpisodeId, f32)> {
        l.search(&ns, "retry rust worker 7", &EpisodeFilter::default(), 10)
            .iter()
            .map(|h| (h.summary.id, h.score))
            .collect()
    };
    assert_eq!(text(&lexical), text(&restored_lexical));
}

#[test]
fn step_windows_round_trip_with_their_episodes() {
    let ns = Namespace::new("snapshot/windows").unwrap_or_else(|e| panic!("{e}"));
    let (index, windows) = (VectorIndex::new(16), VectorIndex::new(16));
    for i in 0..12 {
        let s = Arc::new(summary(i));
        index.upsert(&ns, Arc::clone(&s), &vector(i));
        // Every third episode has no windows; the others one to three.
        let rows: Vec<f32> = (0..i % 3).flat_map(|r| vector(100 + i * 3 + r)).collect();
        if !rows.is_empty() {
            windows.upsert(&ns, s, &rows);
        }
    }
    let (summaries, parts) = index.export(&ns);
    let (rows, window_vectors) = windows.export(&ns);
    let at: std::collections::HashMap<EpisodeId, u32> =
        (0u32..).zip(&summaries).map(|(i, s)| (s.id, i)).collect();
    let image_windows = WindowParts {
        owners: rows.iter().map(|s| at[&s.id]).collect(),
        vectors: window_vectors,
    };
    let lexical = LexicalParts::build(&summaries);
    let bytes =
        encode(16, &summaries, &parts, &lexical, &image_windows).unwrap_or_else(|e| panic!("{e}"));
    let image = decode(&[bytes], 16).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(image.windows, image_windows);
    let row_summaries = image
        .windows
        .row_summaries(&image.summaries)
        .unwrap_or_else(|| panic!("owners in range"));
    let restored = VectorIndex::new(16);
    assert!(restored.restore(&ns, row_summaries, image.windows.vectors));
    let query = vector(100 + 5 * 3 + 1);
    let hits = |i: &VectorIndex| -> Vec<(EpisodeId, u16)> {
        i.search(&ns, &[&query], &EpisodeFilter::default(), 5)
            .iter()
            .map(|h| (h.summary.id, h.row))
            .collect()
    };
    assert_eq!(hits(&restored), hits(&windows));
    assert_eq!(hits(&restored)[0], (summaries[5].id, 1));
    // An owner past the summaries is refused, not trusted.
    let mut bad = image_windows;
    bad.owners[0] = 99;
    assert!(bad.row_summaries(&summaries).is_none());
}

#[test]
fn damaged_or_foreign_images_are_errors() {
    let ns = Namespace::new("snapshot/damaged").unwrap_or_else(|e| panic!("{e}"));
    let index = VectorIndex::new(16);
    for i in 0..5 {
        index.upsert(&ns, summary(i), &vector(i));
    }
    let bytes = image_of(&index, &ns);
    let whole = |b: &[u8]| vec![b.to_vec()];
    assert!(decode(&whole(&bytes), 16).is_ok());
    assert!(
        decode(&whole(&bytes), 384).is_err(),
        "another model's dimensions"
    );
    for cut in [0, 3, 10, bytes.len() / 2, bytes.len() - 1] {
        assert!(
            decode(&whole(&bytes[..cut]), 16).is_err(),
            "truncated at {cut}"
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(decode(&whole(&longer), 16).is_err(), "trailing bytes");
    let mut wrong = bytes;
    wrong[0] = b'X';
    assert!(decode(&whole(&wrong), 16).is_err(), "magic");
}

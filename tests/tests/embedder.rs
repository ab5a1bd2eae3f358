//! Pins the offline semantic embedder (`memory_embed::MiniLmEmbedder`, all-MiniLM-L6-v2 on
//! candle): paraphrases score higher than unrelated texts, for plain sentences and for
//! coding-agent task descriptions; vectors are 384-d and unit length; a batch gives the same
//! vectors as embedding each text alone; an empty input gives an empty output; over-long texts
//! are truncated rather than rejected. The model is found through `MEMORY_MODEL_DIR` or the
//! workspace's `.tools/models/all-MiniLM-L6-v2` (`scripts/install-model.sh`). Without it the
//! tests skip with a note on stderr, except under CI (`CI` set), where they fail, so CI never
//! silently skips them.

use memory_core::{Embedder, cosine};
use memory_embed::{MINILM_DIMENSIONS, MINILM_MODEL_ID, MiniLmEmbedder};

fn embedder() -> anyhow::Result<Option<MiniLmEmbedder>> {
    tests::model::minilm()
}

fn texts(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

async fn embed_one(e: &MiniLmEmbedder, text: &str) -> anyhow::Result<Vec<f32>> {
    let mut v = e.embed(&[text.to_owned()]).await?;
    anyhow::ensure!(v.len() == 1, "one text gave {} vectors", v.len());
    Ok(v.remove(0))
}

/// `(anchor, close, unrelated)`: `close` must be nearer to `anchor` than `unrelated` is.
const TRIPLES: &[(&str, &str, &str)] = &[
    (
        "The cat sits on the mat",
        "A cat is sitting on a rug",
        "Quarterly tax filing deadlines",
    ),
    (
        "fix flaky test that fails near midnight",
        "inject a fake clock to stabilise a time-dependent test",
        "add rate limiting middleware",
    ),
    (
        "add rate limiting middleware to the HTTP API",
        "throttle requests per client with a token bucket",
        "migrate the users table to a new schema",
    ),
    (
        "migrate the database schema to add a created_at column",
        "write an ALTER TABLE migration for the new timestamp field",
        "fix flaky test that fails near midnight",
    ),
    (
        "the build fails because a dependency version conflicts",
        "resolve the crate version mismatch breaking compilation",
        "a recipe for chocolate chip cookies",
    ),
];

#[tokio::test]
async fn close_sentences_score_higher_than_unrelated_ones() -> anyhow::Result<()> {
    let Some(e) = embedder()? else {
        return Ok(());
    };
    for (anchor, close, unrelated) in TRIPLES {
        let a = embed_one(&e, anchor).await?;
        let c = embed_one(&e, close).await?;
        let u = embed_one(&e, unrelated).await?;
        let (sim_close, sim_far) = (cosine(&a, &c), cosine(&a, &u));
        eprintln!("{sim_close:.3} vs {sim_far:.3}: {anchor:?} / {close:?} / {unrelated:?}");
        assert!(
            sim_close > sim_far + 0.1,
            "{anchor:?}: close {close:?} = {sim_close:.3}, unrelated {unrelated:?} = {sim_far:.3}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn known_pair_scores_match_sentence_transformers() -> anyhow::Result<()> {
    let Some(e) = embedder()? else {
        return Ok(());
    };
    let v = e
        .embed(&texts(&[
            "The cat sits on the mat",
            "A cat is sitting on a rug",
            "Quarterly tax filing deadlines",
        ]))
        .await?;
    let (close, far) = (cosine(&v[0], &v[1]), cosine(&v[0], &v[2]));
    // sentence-transformers' all-MiniLM-L6-v2 puts paraphrases like these well above 0.6 and
    // unrelated topics near 0; a broken pooling or tokenizer set-up lands far from both.
    assert!(close > 0.6, "paraphrase cosine {close:.3}");
    assert!(far < 0.3, "unrelated cosine {far:.3}");
    Ok(())
}

/// Cosines printed by the sentence-transformers documentation for all-MiniLM-L6-v2
/// (sbert.net quickstart and "Semantic Textual Similarity" pages).
const SBERT_REFERENCE: &[(&str, &str, f32)] = &[
    (
        "The weather is lovely today.",
        "It's so sunny outside!",
        0.6660,
    ),
    (
        "The weather is lovely today.",
        "He drove to the stadium.",
        0.1046,
    ),
    ("It's so sunny outside!", "He drove to the stadium.", 0.1411),
    (
        "The new movie is awesome",
        "The new movie is so great",
        0.8939,
    ),
    ("The new movie is awesome", "A woman watches TV", -0.0502),
    (
        "The cat sits outside",
        "The dog plays in the garden",
        0.2838,
    ),
    (
        "A man is playing guitar",
        "The dog plays in the garden",
        0.2277,
    ),
];

#[tokio::test]
async fn cosines_match_the_sentence_transformers_reference() -> anyhow::Result<()> {
    let Some(e) = embedder()? else {
        return Ok(());
    };
    for (a, b, expected) in SBERT_REFERENCE {
        let v = e.embed(&texts(&[a, b])).await?;
        let got = cosine(&v[0], &v[1]);
        eprintln!("{got:.4} (sentence-transformers {expected:.4}): {a:?} / {b:?}");
        assert!(
            (got - expected).abs() < 0.005,
            "{a:?} vs {b:?}: {got:.4}, sentence-transformers gives {expected:.4}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn vectors_are_384_d_and_unit_length() -> anyhow::Result<()> {
    let Some(e) = embedder()? else {
        return Ok(());
    };
    assert_eq!(e.model_id(), MINILM_MODEL_ID);
    assert_eq!(e.model_id(), "all-MiniLM-L6-v2");
    assert_eq!(e.dimensions(), MINILM_DIMENSIONS);
    assert_eq!(e.dimensions(), 384);
    let inputs = texts(&["", "x", "add rate limiting middleware", "ünïcödé 文字 🦀"]);
    let vectors = e.embed(&inputs).await?;
    assert_eq!(vectors.len(), inputs.len());
    for (text, v) in inputs.iter().zip(&vectors) {
        assert_eq!(v.len(), 384, "{text:?}");
        assert!(
            v.iter().all(|x| x.is_finite()),
            "{text:?} has non-finite values"
        );
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "{text:?}: norm {norm}");
    }
    Ok(())
}

#[tokio::test]
async fn batch_results_equal_single_results() -> anyhow::Result<()> {
    let Some(e) = embedder()? else {
        return Ok(());
    };
    // Mixed lengths, so the batch pads and reorders; more than one batch of 32.
    let mut inputs = texts(&[
        "fix flaky test that fails near midnight",
        "ok",
        "inject a fake clock to stabilise a time-dependent test in the scheduler crate, \
         then run the suite a hundred times to be sure the flake is gone",
        "add rate limiting middleware",
        "",
    ]);
    for i in 0..35 {
        inputs.push(format!(
            "step {i}: run cargo test for module number {}",
            i * 7
        ));
    }
    let batch = e.embed(&inputs).await?;
    assert_eq!(batch.len(), inputs.len());
    for (text, from_batch) in inputs.iter().zip(&batch) {
        let single = embed_one(&e, text).await?;
        let max_diff = single
            .iter()
            .zip(from_batch)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            max_diff < 1e-4,
            "{text:?}: batch differs from single by {max_diff}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn empty_input_gives_empty_output() -> anyhow::Result<()> {
    let Some(e) = embedder()? else {
        return Ok(());
    };
    let out = e.embed(&[]).await?;
    assert!(out.is_empty());
    Ok(())
}

#[tokio::test]
async fn long_texts_are_truncated_not_rejected() -> anyhow::Result<()> {
    let Some(e) = embedder()? else {
        return Ok(());
    };
    let head = "refactor the retry loop in the http client to use exponential backoff. ";
    // Far past 256 tokens (and past the tokenizer's byte cut-off): only the head counts.
    let long = format!("{head}{}", "padding words keep coming here ".repeat(5_000));
    let longer = format!(
        "{long}{}",
        "and then some more completely different text ".repeat(100)
    );
    let v = e.embed(&[long, longer]).await?;
    assert_eq!(v.len(), 2);
    assert!(
        cosine(&v[0], &v[1]) > 0.9999,
        "both truncate to the same first 256 tokens"
    );
    Ok(())
}

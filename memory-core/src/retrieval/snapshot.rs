//! The encoded image of one namespace's in-process index (vectors, summaries, lexical
//! postings), stored with [`EmbeddingStore::put_index_snapshot`](crate::EmbeddingStore) so a
//! process opening a large store loads one blob instead of reading every embedding joined to
//! its episode (at 100k episodes: ~0.5 s of row reads and ~0.4 s of quantizing and indexing).
//!
//! Why a format of our own rather than bincode: the bulk of an image is flat arrays (384
//! one-byte codes per episode, scales, norms, postings), which bincode decodes element by
//! element; laid out as little-endian arrays they decode at memory speed. Every read is
//! bounds-checked and a damaged or foreign image is an error (the caller then loads from the
//! embeddings), never a panic.
//!
//! Layout (little-endian): `MIDX`, version `u16`, dims `u32`, documents `u32`, the byte
//! lengths of the three sections (`u64` each), then the sections: the vector parts
//! (centered-at `u64`, sum `f64`s, center `f32`s, scales, inverse norms, codes); the
//! summaries (the count of the first half `u32` and its byte length `u64`, then both
//! halves); the lexical parts (total length `u64`, lengths, then each term with its
//! postings). The sections are decoded in parallel: each half of the summaries (every
//! string is an allocation) on a thread of its own, the rest on the calling thread.

use std::sync::Arc;

use chrono::DateTime;

use super::lexical_index::LexicalParts;
use super::vector_index::VectorParts;
use crate::episode::{Complexity, EpisodeId, EpisodeSummary, OutcomeKind, TaskContext, TaskType};
use crate::error::{Error, Result};

const MAGIC: &[u8; 4] = b"MIDX";
const VERSION: u16 = 3;
/// Complexity and outcome kinds by their stored code (task types use `TaskType::ALL`).
const COMPLEXITIES: [Complexity; 3] = [
    Complexity::Simple,
    Complexity::Moderate,
    Complexity::Complex,
];
const OUTCOMES: [OutcomeKind; 4] = [
    OutcomeKind::Success,
    OutcomeKind::PartialSuccess,
    OutcomeKind::Failure,
    OutcomeKind::Abstained,
];
/// Marks an absent outcome.
const NO_OUTCOME: u8 = u8::MAX;
/// Marks an absent optional string or time.
const NONE_LEN: u32 = u32::MAX;

/// A decoded image.
#[derive(Debug)]
pub(crate) struct Image {
    pub summaries: Vec<Arc<EpisodeSummary>>,
    pub vectors: VectorParts,
    pub lexical: LexicalParts,
}

/// Encodes an image of `dims`-dimensional vectors.
pub(crate) fn encode(
    dims: usize,
    summaries: &[Arc<EpisodeSummary>],
    vectors: &VectorParts,
    lexical: &LexicalParts,
) -> Result<Vec<u8>> {
    let n = summaries.len();
    let mut w = Writer(Vec::with_capacity(n * (dims + 16) + 64));
    w.0.extend_from_slice(&(vectors.centered_at as u64).to_le_bytes());
    w.u32(len32(vectors.sum.len())?);
    for x in &vectors.sum {
        w.0.extend_from_slice(&x.to_le_bytes());
    }
    w.f32s(&vectors.center)?;
    w.f32s(&vectors.scales)?;
    w.f32s(&vectors.inv_norms)?;
    w.u32(len32(vectors.codes.len())?);
    w.0.extend(vectors.codes.iter().map(|&c| c.to_le_bytes()[0]));
    let vector_section = w.0;
    let half = n / 2;
    let mut first = Writer(Vec::with_capacity(n * 100));
    for s in &summaries[..half] {
        first.summary(s)?;
    }
    let mut w = Writer(Vec::with_capacity(n * 200 + 12));
    w.u32(len32(half)?);
    w.0.extend_from_slice(&(first.0.len() as u64).to_le_bytes());
    w.0.extend_from_slice(&first.0);
    for s in &summaries[half..] {
        w.summary(s)?;
    }
    let summary_section = w.0;
    let mut w = Writer(Vec::with_capacity(n * 100));
    w.0.extend_from_slice(&lexical.total_length.to_le_bytes());
    w.u32(len32(lexical.lengths.len())?);
    for l in &lexical.lengths {
        w.u32(*l);
    }
    w.u32(len32(lexical.postings.len())?);
    for (term, list) in &lexical.postings {
        w.str(term)?;
        w.u32(len32(list.len())?);
        for (doc, tf) in list {
            w.u32(*doc);
            w.u32(*tf);
        }
    }
    let lexical_section = w.0;
    let sections = [&vector_section, &summary_section, &lexical_section];
    let mut out = Writer(Vec::with_capacity(
        sections.iter().map(|s| s.len()).sum::<usize>() + 40,
    ));
    out.0.extend_from_slice(MAGIC);
    out.0.extend_from_slice(&VERSION.to_le_bytes());
    out.u32(len32(dims)?);
    out.u32(len32(n)?);
    for section in sections {
        out.0
            .extend_from_slice(&(section.len() as u64).to_le_bytes());
    }
    for section in sections {
        out.0.extend_from_slice(section);
    }
    Ok(out.0)
}

/// Decodes an image made by [`encode`] for `dims`-dimensional vectors.
pub(crate) fn decode(bytes: &[u8], dims: usize) -> Result<Image> {
    let mut r = Reader { bytes, at: 0 };
    if r.take(4)? != MAGIC {
        return Err(corrupt("not an index image"));
    }
    let version = u16::from_le_bytes([r.u8()?, r.u8()?]);
    if version != VERSION {
        return Err(corrupt(format!(
            "image version {version}, expected {VERSION}"
        )));
    }
    let image_dims = r.u32()? as usize;
    if image_dims != dims {
        return Err(corrupt(format!(
            "vectors of {image_dims} dimensions, the model has {dims}"
        )));
    }
    let n = r.u32()? as usize;
    let mut lengths = [0usize; 3];
    for l in &mut lengths {
        *l = usize::try_from(r.u64()?).map_err(corrupt)?;
    }
    let mut sections = [&bytes[..0]; 3];
    for (section, len) in sections.iter_mut().zip(lengths) {
        *section = r.take(len)?;
    }
    if r.at != bytes.len() {
        return Err(corrupt("trailing bytes"));
    }
    let [vector_section, summary_section, lexical_section] = sections;
    let mut r = Reader {
        bytes: summary_section,
        at: 0,
    };
    let first_count = r.u32()? as usize;
    let first_len = usize::try_from(r.u64()?).map_err(corrupt)?;
    let first_half = r.take(first_len)?;
    let second_half = &summary_section[r.at..];
    let second_count = n
        .checked_sub(first_count)
        .ok_or_else(|| corrupt("summary counts"))?;
    let stopped = || Err(corrupt("a summary decoder stopped"));
    let (first, second, rest) = std::thread::scope(|scope| {
        let first = scope.spawn(|| decode_summaries(first_half, first_count));
        let second = scope.spawn(|| decode_summaries(second_half, second_count));
        let rest = decode_vectors(vector_section)
            .and_then(|v| decode_lexical(lexical_section).map(|l| (v, l)));
        (
            first.join().unwrap_or_else(|_| stopped()),
            second.join().unwrap_or_else(|_| stopped()),
            rest,
        )
    });
    let (vectors, lexical) = rest?;
    let mut summaries = first?;
    summaries.extend(second?);
    Ok(Image {
        summaries,
        vectors,
        lexical,
    })
}

fn decode_summaries(bytes: &[u8], n: usize) -> Result<Vec<Arc<EpisodeSummary>>> {
    let mut r = Reader { bytes, at: 0 };
    let mut summaries = Vec::with_capacity(n.min(bytes.len() / 32));
    for _ in 0..n {
        summaries.push(Arc::new(r.summary()?));
    }
    r.end()?;
    Ok(summaries)
}

fn decode_vectors(bytes: &[u8]) -> Result<VectorParts> {
    let mut r = Reader { bytes, at: 0 };
    let centered_at = usize::try_from(r.u64()?).map_err(corrupt)?;
    let sum_len = r.u32()? as usize;
    let sum = r
        .take(
            sum_len
                .checked_mul(8)
                .ok_or_else(|| corrupt("sum too long"))?,
        )?
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect();
    let center = r.f32s()?;
    let scales = r.f32s()?;
    let inv_norms = r.f32s()?;
    let codes_len = r.u32()? as usize;
    let codes = r
        .take(codes_len)?
        .iter()
        .map(|&b| i8::from_le_bytes([b]))
        .collect();
    r.end()?;
    Ok(VectorParts {
        scales,
        codes,
        inv_norms,
        sum,
        center,
        centered_at,
    })
}

fn decode_lexical(bytes: &[u8]) -> Result<LexicalParts> {
    let mut r = Reader { bytes, at: 0 };
    let total_length = r.u64()?;
    let lengths_len = r.u32()? as usize;
    let lengths = r
        .take(
            lengths_len
                .checked_mul(4)
                .ok_or_else(|| corrupt("lengths"))?,
        )?
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let terms = r.u32()? as usize;
    let mut postings = Vec::with_capacity(terms.min(bytes.len() / 8));
    for _ in 0..terms {
        let term = r.string()?;
        let count = r.u32()? as usize;
        let list = r
            .take(count.checked_mul(8).ok_or_else(|| corrupt("postings"))?)?
            .chunks_exact(8)
            .map(|c| {
                (
                    u32::from_le_bytes([c[0], c[1], c[2], c[3]]),
                    u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
                )
            })
            .collect();
        postings.push((term, list));
    }
    r.end()?;
    Ok(LexicalParts {
        lengths,
        total_length,
        postings,
    })
}

fn corrupt(reason: impl std::fmt::Display) -> Error {
    Error::storage(
        "retrieval",
        "decode index snapshot",
        false,
        format!("damaged index snapshot: {reason}"),
    )
}

fn len32(n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| {
        Error::storage(
            "retrieval",
            "encode index snapshot",
            false,
            format!("{n} items do not fit an index snapshot"),
        )
    })
}

struct Writer(Vec<u8>);

impl Writer {
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn f32s(&mut self, values: &[f32]) -> Result<()> {
        self.u32(len32(values.len())?);
        for x in values {
            self.0.extend_from_slice(&x.to_le_bytes());
        }
        Ok(())
    }

    fn str(&mut self, s: &str) -> Result<()> {
        self.u32(len32(s.len())?);
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }

    fn opt_str(&mut self, s: Option<&str>) -> Result<()> {
        if let Some(s) = s {
            return self.str(s);
        }
        self.u32(NONE_LEN);
        Ok(())
    }

    fn summary(&mut self, s: &EpisodeSummary) -> Result<()> {
        self.0.extend_from_slice(s.id.0.as_bytes());
        self.str(&s.task_description)?;
        self.0.push(code_of(&TaskType::ALL, s.task_type)?);
        self.str(&s.context.domain)?;
        self.opt_str(s.context.language.as_deref())?;
        self.opt_str(s.context.framework.as_deref())?;
        self.0.push(code_of(&COMPLEXITIES, s.context.complexity)?);
        self.u32(len32(s.context.tags.len())?);
        for t in &s.context.tags {
            self.str(t)?;
        }
        self.u32(s.step_count);
        self.i64(nanos(s.started_at)?);
        match s.completed_at {
            Some(t) => {
                self.0.push(1);
                self.i64(nanos(t)?);
            }
            None => self.0.push(0),
        }
        match s.outcome {
            Some(o) => self.0.push(code_of(&OUTCOMES, o)?),
            None => self.0.push(NO_OUTCOME),
        }
        match s.reward {
            Some(r) => {
                self.0.push(1);
                self.0.extend_from_slice(&r.to_le_bytes());
            }
            None => self.0.push(0),
        }
        Ok(())
    }
}

/// The stored code of `value`: its position in `all`.
fn code_of<T: Copy + PartialEq + std::fmt::Debug>(all: &[T], value: T) -> Result<u8> {
    all.iter()
        .position(|v| *v == value)
        .and_then(|i| u8::try_from(i).ok())
        .ok_or_else(|| {
            Error::storage(
                "retrieval",
                "encode index snapshot",
                false,
                format!("{value:?} has no code"),
            )
        })
}

fn by_code<T: Copy>(all: &[T], code: u8) -> Result<T> {
    all.get(usize::from(code))
        .copied()
        .ok_or_else(|| corrupt(format!("unknown code {code}")))
}

fn nanos(t: DateTime<chrono::Utc>) -> Result<i64> {
    t.timestamp_nanos_opt().ok_or_else(|| {
        Error::storage(
            "retrieval",
            "encode index snapshot",
            false,
            format!("{t} is outside the range of nanosecond timestamps"),
        )
    })
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| corrupt("truncated"))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    /// Errors unless every byte was read.
    fn end(&self) -> Result<()> {
        if self.at == self.bytes.len() {
            Ok(())
        } else {
            Err(corrupt("trailing bytes"))
        }
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes([
            b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
        ]))
    }

    fn f32s(&mut self) -> Result<Vec<f32>> {
        let n = self.u32()? as usize;
        Ok(self
            .take(n.checked_mul(4).ok_or_else(|| corrupt("array too long"))?)?
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    fn str(&mut self) -> Result<&'a str> {
        let n = self.u32()? as usize;
        std::str::from_utf8(self.take(n)?).map_err(corrupt)
    }

    fn string(&mut self) -> Result<String> {
        self.str().map(str::to_owned)
    }

    fn opt_string(&mut self) -> Result<Option<String>> {
        let save = self.at;
        if self.u32()? == NONE_LEN {
            return Ok(None);
        }
        self.at = save;
        self.string().map(Some)
    }

    fn flag(&mut self) -> Result<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(corrupt(format!("flag byte {other}"))),
        }
    }

    fn summary(&mut self) -> Result<EpisodeSummary> {
        let id = self.take(16)?;
        let id = EpisodeId(uuid::Uuid::from_slice(id).map_err(corrupt)?);
        let task_description = self.string()?;
        let task_type = by_code(&TaskType::ALL, self.u8()?)?;
        let domain = self.string()?;
        let language = self.opt_string()?;
        let framework = self.opt_string()?;
        let complexity = by_code(&COMPLEXITIES, self.u8()?)?;
        let tag_count = self.u32()? as usize;
        let mut tags = Vec::with_capacity(tag_count.min(64));
        for _ in 0..tag_count {
            tags.push(self.string()?);
        }
        let step_count = self.u32()?;
        let started_at = DateTime::from_timestamp_nanos(self.u64()? as i64);
        let completed_at = if self.flag()? {
            Some(DateTime::from_timestamp_nanos(self.u64()? as i64))
        } else {
            None
        };
        let outcome = match self.u8()? {
            NO_OUTCOME => None,
            code => Some(by_code(&OUTCOMES, code)?),
        };
        let reward = if self.flag()? {
            Some(f64::from_bits(self.u64()?))
        } else {
            None
        };
        Ok(EpisodeSummary {
            id,
            task_description,
            task_type,
            context: TaskContext {
                domain,
                language,
                framework,
                complexity,
                tags,
            },
            step_count,
            started_at,
            completed_at,
            outcome,
            reward,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retrieval::{LexicalIndex, VectorIndex};
    use crate::{EpisodeFilter, Namespace};

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
            completed_at: (i.is_multiple_of(2))
                .then(|| DateTime::from_timestamp_nanos(1_800_000_000)),
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
        encode(index.dims(), &summaries, &parts, &lexical).unwrap_or_else(|e| panic!("{e}"))
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

        let image = decode(&bytes, 16).unwrap_or_else(|e| panic!("{e}"));
        let (original, _) = index.export(&ns);
        let decoded: Vec<&EpisodeSummary> = image.summaries.iter().map(|s| &**s).collect();
        let expected: Vec<&EpisodeSummary> = original.iter().map(|s| &**s).collect();
        assert_eq!(decoded, expected, "summaries round-trip exactly");

        let restored = VectorIndex::new(16);
        assert!(restored.restore(&ns, image.summaries.clone(), image.vectors));
        let restored_lexical = LexicalIndex::new();
        assert!(restored_lexical.restore(&ns, image.summaries, image.lexical));
        let after = restored.search(&ns, &[&query], &EpisodeFilter::default(), 10);
        let ids = |hits: &[crate::retrieval::VectorHit]| -> Vec<(EpisodeId, f32)> {
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
    fn damaged_or_foreign_images_are_errors() {
        let ns = Namespace::new("snapshot/damaged").unwrap_or_else(|e| panic!("{e}"));
        let index = VectorIndex::new(16);
        for i in 0..5 {
            index.upsert(&ns, summary(i), &vector(i));
        }
        let bytes = image_of(&index, &ns);
        assert!(decode(&bytes, 16).is_ok());
        assert!(decode(&bytes, 384).is_err(), "another model's dimensions");
        for cut in [0, 3, 10, bytes.len() / 2, bytes.len() - 1] {
            assert!(decode(&bytes[..cut], 16).is_err(), "truncated at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer, 16).is_err(), "trailing bytes");
        let mut wrong = bytes;
        wrong[0] = b'X';
        assert!(decode(&wrong, 16).is_err(), "magic");
    }
}

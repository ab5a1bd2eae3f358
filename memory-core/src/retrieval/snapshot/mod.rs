//! The encoded image of one namespace's in-process index (vectors, summaries, lexical
//! postings), stored with [`EmbeddingStore::put_index_snapshot`](crate::storage::EmbeddingStore) so a
//! process opening a large store loads one blob instead of reading every embedding joined to
//! its episode (at 100k episodes: ~0.5 s of row reads and ~0.4 s of quantizing and indexing).
//!
//! Why a format of our own rather than bincode: the bulk of an image is flat arrays (384
//! one-byte codes per episode, scales, norms, postings), which bincode decodes element by
//! element; laid out as little-endian arrays they decode at memory speed. Every read is
//! bounds-checked and a damaged or foreign image is an error (the caller then loads from the
//! embeddings), never a panic.
//!
//! Layout (little-endian): `MIDX`, version `u16`, dims `u32`, episodes `u32`, the byte
//! lengths of the four sections (`u64` each), then the sections: the episode vectors' parts
//! (centered-at `u64`, sum `f64`s, center `f32`s, row numbers `u16`s, scales, inverse norms,
//! codes); the summaries (the count of the first half `u32` and its byte length `u64`, then
//! both halves); the lexical parts (total length `u64`, lengths, then each term with its
//! postings); the step windows (each row's episode as an index into the summaries, `u32`s,
//! then their vector parts laid out as the first section). The sections are decoded in
//! parallel: each half of the summaries (every string is an allocation) on a thread of its
//! own, the rest on the calling thread.

use std::borrow::Cow;
use std::sync::Arc;

use chrono::DateTime;

use super::lexical_index::LexicalParts;
use super::vector_index::VectorParts;
use crate::episode::{Complexity, EpisodeId, EpisodeSummary, OutcomeKind, TaskContext, TaskType};
use crate::error::{Error, Result};

const MAGIC: &[u8; 4] = b"MIDX";
const VERSION: u16 = 4;
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
    pub windows: WindowParts,
}

/// The step-window index of an image: per row, the index of its episode in the image's
/// summaries, and the rows' vector parts.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct WindowParts {
    pub owners: Vec<u32>,
    pub vectors: VectorParts,
}

impl WindowParts {
    /// The summary of each row, from the image's `summaries`; `None` when an owner is out of
    /// range or the counts differ.
    pub(crate) fn row_summaries(
        &self,
        summaries: &[Arc<EpisodeSummary>],
    ) -> Option<Vec<Arc<EpisodeSummary>>> {
        if self.owners.len() != self.vectors.rows.len() {
            return None;
        }
        self.owners
            .iter()
            .map(|&o| summaries.get(o as usize).cloned())
            .collect()
    }
}

fn encode_vectors(w: &mut Writer, vectors: &VectorParts) -> Result<()> {
    w.0.extend_from_slice(&(vectors.centered_at as u64).to_le_bytes());
    w.u32(len32(vectors.sum.len())?);
    for x in &vectors.sum {
        w.0.extend_from_slice(&x.to_le_bytes());
    }
    w.f32s(&vectors.center)?;
    w.u32(len32(vectors.rows.len())?);
    for r in &vectors.rows {
        w.0.extend_from_slice(&r.to_le_bytes());
    }
    w.f32s(&vectors.scales)?;
    w.f32s(&vectors.inv_norms)?;
    w.u32(len32(vectors.codes.len())?);
    w.0.extend(vectors.codes.iter().map(|&c| c.to_le_bytes()[0]));
    Ok(())
}

/// Encodes an image of `dims`-dimensional vectors.
pub(crate) fn encode(
    dims: usize,
    summaries: &[Arc<EpisodeSummary>],
    vectors: &VectorParts,
    lexical: &LexicalParts,
    windows: &WindowParts,
) -> Result<Vec<u8>> {
    let n = summaries.len();
    let mut w = Writer(Vec::with_capacity(n * (dims + 18) + 64));
    encode_vectors(&mut w, vectors)?;
    let vector_section = w.0;
    let rows = windows.owners.len();
    let mut w = Writer(Vec::with_capacity(rows * (dims + 22) + 64));
    w.u32(len32(rows)?);
    for o in &windows.owners {
        w.u32(*o);
    }
    encode_vectors(&mut w, &windows.vectors)?;
    let window_section = w.0;
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
    let sections = [
        &vector_section,
        &summary_section,
        &lexical_section,
        &window_section,
    ];
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

/// Decodes an image made by [`encode`] for `dims`-dimensional vectors, held in `parts` (in
/// order, split anywhere: as storage returns it), without joining them first.
pub(crate) fn decode(parts: &[Vec<u8>], dims: usize) -> Result<Image> {
    let mut r = Reader::new(parts);
    if *r.take(4)? != *MAGIC {
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
    let mut lengths = [0usize; 4];
    for l in &mut lengths {
        *l = usize::try_from(r.u64()?).map_err(corrupt)?;
    }
    let vector_section = r.section(lengths[0])?;
    let mut summary_section = r.section(lengths[1])?;
    let lexical_section = r.section(lengths[2])?;
    let window_section = r.section(lengths[3])?;
    r.end()?;
    let first_count = summary_section.u32()? as usize;
    let first_len = usize::try_from(summary_section.u64()?).map_err(corrupt)?;
    let first_half = summary_section.section(first_len)?;
    let second_half = summary_section;
    let second_count = n
        .checked_sub(first_count)
        .ok_or_else(|| corrupt("summary counts"))?;
    let stopped = || Err(corrupt("a summary decoder stopped"));
    let (first, second, rest) = std::thread::scope(|scope| {
        let first = scope.spawn(|| decode_summaries(first_half, first_count));
        let second = scope.spawn(|| decode_summaries(second_half, second_count));
        let rest = decode_vectors(vector_section).and_then(|v| {
            let l = decode_lexical(lexical_section)?;
            Ok((v, l, decode_windows(window_section)?))
        });
        (
            first.join().unwrap_or_else(|_| stopped()),
            second.join().unwrap_or_else(|_| stopped()),
            rest,
        )
    });
    let (vectors, lexical, windows) = rest?;
    let mut summaries = first?;
    summaries.extend(second?);
    Ok(Image {
        summaries,
        vectors,
        lexical,
        windows,
    })
}

fn decode_windows(mut r: Reader<'_>) -> Result<WindowParts> {
    let rows = r.u32()? as usize;
    let owners = r
        .take(
            rows.checked_mul(4)
                .ok_or_else(|| corrupt("owners too long"))?,
        )?
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let vectors = decode_vectors(r)?;
    Ok(WindowParts { owners, vectors })
}

fn decode_summaries(mut r: Reader<'_>, n: usize) -> Result<Vec<Arc<EpisodeSummary>>> {
    let mut summaries = Vec::with_capacity(n.min(r.left / 32));
    for _ in 0..n {
        summaries.push(Arc::new(r.summary()?));
    }
    r.end()?;
    Ok(summaries)
}

fn decode_vectors(mut r: Reader<'_>) -> Result<VectorParts> {
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
    let rows_len = r.u32()? as usize;
    let rows = r
        .take(
            rows_len
                .checked_mul(2)
                .ok_or_else(|| corrupt("rows too long"))?,
        )?
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    let scales = r.f32s()?;
    let inv_norms = r.f32s()?;
    let codes_len = r.u32()? as usize;
    // Straight from the parts into the index's codes: the largest section, copied once.
    let mut codes = Vec::with_capacity(codes_len.min(r.left));
    r.take_with(codes_len, |piece| {
        codes.extend(piece.iter().map(|&b| i8::from_le_bytes([b])));
    })?;
    r.end()?;
    Ok(VectorParts {
        rows,
        scales,
        codes,
        inv_norms,
        sum,
        center,
        centered_at,
    })
}

fn decode_lexical(mut r: Reader<'_>) -> Result<LexicalParts> {
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
    let mut postings = Vec::with_capacity(terms.min(r.left / 8));
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

/// Reads a range of an image held in parts without joining them: a read within one part
/// borrows it, one across parts copies just those bytes.
#[derive(Clone)]
struct Reader<'a> {
    parts: &'a [Vec<u8>],
    /// The part and offset of the next byte.
    part: usize,
    at: usize,
    /// Bytes left in this reader's range.
    left: usize,
}

impl<'a> Reader<'a> {
    fn new(parts: &'a [Vec<u8>]) -> Self {
        Reader {
            parts,
            part: 0,
            at: 0,
            left: parts.iter().map(Vec::len).sum(),
        }
    }

    /// Claims the next `n` bytes of the range (`truncated` if they are not there).
    fn claim(&mut self, n: usize) -> Result<()> {
        self.left = self
            .left
            .checked_sub(n)
            .ok_or_else(|| corrupt("truncated"))?;
        Ok(())
    }

    /// Calls `f` with the consecutive pieces of the next `n` bytes (already claimed).
    fn walk(&mut self, mut n: usize, mut f: impl FnMut(&'a [u8])) -> Result<()> {
        while n > 0 {
            let Some(part) = self.parts.get(self.part) else {
                return Err(corrupt("truncated"));
            };
            let available = part.len().saturating_sub(self.at);
            if available == 0 {
                self.part += 1;
                self.at = 0;
                continue;
            }
            let k = n.min(available);
            f(&part[self.at..self.at + k]);
            self.at += k;
            n -= k;
        }
        Ok(())
    }

    /// Calls `f` with the consecutive pieces of the next `n` bytes.
    fn take_with(&mut self, n: usize, f: impl FnMut(&'a [u8])) -> Result<()> {
        self.claim(n)?;
        self.walk(n, f)
    }

    fn take(&mut self, n: usize) -> Result<Cow<'a, [u8]>> {
        self.claim(n)?;
        while self
            .parts
            .get(self.part)
            .is_some_and(|p| self.at >= p.len() && n > 0)
        {
            self.part += 1;
            self.at = 0;
        }
        if let Some(part) = self.parts.get(self.part)
            && part.len().saturating_sub(self.at) >= n
        {
            let out = &part[self.at..self.at + n];
            self.at += n;
            return Ok(Cow::Borrowed(out));
        }
        let mut out = Vec::with_capacity(n);
        self.walk(n, |piece| out.extend_from_slice(piece))?;
        Ok(Cow::Owned(out))
    }

    /// A reader of the next `n` bytes; this one continues after them.
    fn section(&mut self, n: usize) -> Result<Reader<'a>> {
        self.claim(n)?;
        let mut section = self.clone();
        section.left = n;
        self.walk(n, |_| {})?;
        Ok(section)
    }

    /// Errors unless every byte was read.
    fn end(&self) -> Result<()> {
        if self.left == 0 {
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

    fn string(&mut self) -> Result<String> {
        let n = self.u32()? as usize;
        match self.take(n)? {
            Cow::Borrowed(b) => std::str::from_utf8(b).map(str::to_owned).map_err(corrupt),
            Cow::Owned(v) => String::from_utf8(v).map_err(corrupt),
        }
    }

    fn opt_string(&mut self) -> Result<Option<String>> {
        let n = self.u32()?;
        if n == NONE_LEN {
            return Ok(None);
        }
        match self.take(n as usize)? {
            Cow::Borrowed(b) => std::str::from_utf8(b)
                .map(|s| Some(s.to_owned()))
                .map_err(corrupt),
            Cow::Owned(v) => String::from_utf8(v).map(Some).map_err(corrupt),
        }
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
        let id = EpisodeId(uuid::Uuid::from_slice(&id).map_err(corrupt)?);
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
mod tests;

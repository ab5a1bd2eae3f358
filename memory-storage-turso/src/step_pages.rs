//! Steps stored in pages: one `step_pages` row holds up to [`PAGE_STEPS`] consecutive steps of
//! an episode (schema v8), instead of a row per step.
//!
//! A batch of steps is one row written (and one full-text row), not one row and one key-index
//! entry per step: measured with SQLite on this project's machine, a 64-step batch took
//! 1.37-1.51 ms as keyed rows and 0.49-0.58 ms as one page.
//!
//! A page's `keys` column is the JSON array of its steps' keys (0 for a step journaled by a
//! version before keys), in order; step `i` of the page is numbered `first_number + i`. Its
//! `body` is the JSON array of the steps, each a compact array (see [`Record`]). Which steps
//! of a batch are new is decided from the stored keys ([`Stored`], [`NewSteps`]), under the
//! write lock; the remote one-request append checks the same in SQL (`json_each`).
//!
//! From schema v10 a body of 256 bytes or more is stored as a blob, its JSON compressed with
//! zstd ([`crate::compressed_json`]): a 50-step page of a typical episode is ~6.8 KB of JSON
//! and ~1.0 KB stored, so it fits in its b-tree cell instead of an overflow chain. Readers
//! take both forms; pages written before v10 stay JSON text.

use std::collections::HashSet;

use libsql::Value;
use memory_core::{ExecutionStep, StepInput, StepResult};
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::codec::{
    Cols, STEP_COLUMNS, from_json, from_nanos, nanos, step_from_row, text, to_json,
};
use crate::compressed_json::{JsonFormat, json_of};
use crate::error::{DbResult, decode};
use crate::prepared::Db;
use crate::sql::query_all;

/// Most steps a page holds; a longer batch is written as several pages.
pub(crate) const PAGE_STEPS: usize = 64;

/// The body column, as its decode errors name it.
const BODY: &str = "step page body";

/// The columns of a page read back whole, in order (`SELECT` them `ORDER BY first_number`).
pub(crate) const READ_PAGES: &str = "SELECT first_number, keys, body FROM step_pages \
     WHERE ns = ?1 AND episode_id = ?2 ORDER BY first_number";

/// The pages' numbering and keys, without their steps.
pub(crate) const READ_KEYS: &str =
    "SELECT first_number, count, keys FROM step_pages WHERE ns = ?1 AND episode_id = ?2";

/// The number of steps an episode's pages hold, as an SQL expression over `?1`, `?2`.
pub(crate) const STORED_COUNT: &str =
    "(SELECT COALESCE(SUM(count), 0) FROM step_pages WHERE ns = ?1 AND episode_id = ?2)";

/// A page numbered after the episode's last stored step (`?1` ns, `?2` episode id, then
/// `count`, `keys`, `body`, `output_bytes`): the number is taken in the writing transaction,
/// so writers numbering from different copies of the episode never collide.
const INSERT_NEXT: &str = "INSERT INTO step_pages (ns, episode_id, first_number, count, keys, \
     body, output_bytes) VALUES (?1, ?2, COALESCE((SELECT first_number + count FROM step_pages \
     WHERE ns = ?1 AND episode_id = ?2 ORDER BY first_number DESC LIMIT 1), 1), ?3, ?4, ?5, ?6)";

/// A page of steps that keep their own numbers (`?3` the first; steps journaled before keys).
const INSERT_NUMBERED: &str = "INSERT INTO step_pages (ns, episode_id, first_number, count, \
     keys, body, output_bytes) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

/// One step in a page's body: `[at, tool, action, parameters, status, text, latency_ms,
/// tokens]` (`at` in ns since the epoch, `status` as [`StepResult::status`]).
#[derive(Serialize)]
struct RecordRef<'a>(
    i64,
    &'a str,
    &'a str,
    &'a serde_json::Value,
    &'a str,
    &'a str,
    u64,
    Option<u64>,
);

/// [`RecordRef`], read back.
#[derive(Deserialize)]
struct Record(
    i64,
    String,
    String,
    serde_json::Value,
    String,
    String,
    u64,
    Option<u64>,
);

/// A page's `keys`, `body` (stored in `format`) and `output_bytes` (the bytes of its
/// successful steps' outputs, which compaction may clear) for `steps`.
fn encode(steps: &[&ExecutionStep], format: JsonFormat) -> DbResult<(String, Value, i64)> {
    let keys: Vec<i64> = steps.iter().map(|s| s.key as i64).collect();
    let mut output_bytes = 0i64;
    let records = steps
        .iter()
        .map(|s| {
            if let StepResult::Success { output } = &s.input.result {
                output_bytes += output.len() as i64;
            }
            Ok(RecordRef(
                nanos("step.timestamp", s.timestamp)?,
                &s.input.tool,
                &s.input.action,
                &s.input.parameters,
                s.input.result.status(),
                s.input.result.text(),
                s.input.latency_ms,
                s.input.tokens,
            ))
        })
        .collect::<DbResult<Vec<_>>>()?;
    Ok((
        to_json("step_pages.keys", &keys)?,
        format.store(BODY, to_json("step_pages.body", &records)?)?,
        output_bytes,
    ))
}

/// The steps of a page (numbered from `first`).
pub(crate) fn decode_page(first: i64, keys: &str, body: &str) -> DbResult<Vec<ExecutionStep>> {
    let keys: Vec<i64> = from_json("step page keys", keys)?;
    let records: Vec<Record> = from_json("step page", body)?;
    if keys.len() != records.len() {
        return Err(decode(
            "step page",
            format!("{} keys for {} steps", keys.len(), records.len()),
        ));
    }
    keys.into_iter()
        .zip(records)
        .enumerate()
        .map(|(i, (key, r))| {
            let number = first
                .checked_add(i as i64)
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| decode("step page", format!("step number {first} + {i}")))?;
            let result = match r.4.as_str() {
                "success" => StepResult::Success { output: r.5 },
                "error" => StepResult::Error { message: r.5 },
                "timeout" => StepResult::Timeout { message: r.5 },
                other => return Err(decode("step", format!("unknown step status {other:?}"))),
            };
            Ok(ExecutionStep {
                step_number: number,
                key: key as u64,
                timestamp: from_nanos(r.0),
                input: StepInput {
                    tool: r.1,
                    action: r.2,
                    parameters: r.3,
                    result,
                    latency_ms: r.6,
                    tokens: r.7,
                },
            })
        })
        .collect()
}

/// The steps of the pages in `rows` (`first_number, keys, body` as [`page_row`] reads them,
/// in order).
pub(crate) fn steps_of(rows: &[(i64, String, String)]) -> DbResult<Vec<ExecutionStep>> {
    let mut steps = Vec::new();
    for (first, keys, body) in rows {
        steps.extend(decode_page(*first, keys, body)?);
    }
    Ok(steps)
}

/// A row of [`READ_PAGES`], its body as JSON ([`json_of`]).
pub(crate) fn page_row(c: &Cols<'_>) -> DbResult<(i64, String, String)> {
    Ok((c.i64(0)?, c.text(1)?, json_of(BODY, c.value(2)?)?))
}

/// An episode's steps in order.
pub(crate) async fn read_steps(conn: &Db<'_>, ns: &str, id: &str) -> DbResult<Vec<ExecutionStep>> {
    let rows = query_all(conn, READ_PAGES, (ns, id), |row| {
        page_row(&Cols::new(row, "step page"))
    })
    .await?;
    steps_of(&rows)
}

/// What an episode's pages hold, for telling which steps of a batch are new.
#[derive(Debug, Default)]
pub(crate) struct Stored {
    /// The keys of the stored steps (not 0).
    pub(crate) keys: HashSet<i64>,
    /// Every number a stored step has (keyless steps of a batch are new unless theirs is here).
    pub(crate) numbers: HashSet<i64>,
    /// How many steps are stored.
    pub(crate) count: i64,
}

impl Stored {
    /// From rows of [`READ_KEYS`] (`first_number, count, keys`).
    pub(crate) fn of(rows: &[(i64, i64, String)]) -> DbResult<Self> {
        let mut stored = Stored::default();
        for (first, count, keys) in rows {
            let keys: Vec<i64> = from_json("step page keys", keys)?;
            if keys.len() as i64 != *count {
                return Err(decode(
                    "step page",
                    format!("{} keys for {count} steps", keys.len()),
                ));
            }
            for (i, key) in keys.into_iter().enumerate() {
                stored.numbers.insert(first + i as i64);
                if key != 0 {
                    stored.keys.insert(key);
                }
            }
            stored.count += count;
        }
        Ok(stored)
    }

    /// A row of [`READ_KEYS`].
    pub(crate) fn row(c: &Cols<'_>) -> DbResult<(i64, i64, String)> {
        Ok((c.i64(0)?, c.i64(1)?, c.text(2)?))
    }

    /// What the pages of episode `id` hold.
    pub(crate) async fn read(conn: &Db<'_>, ns: &str, id: &str) -> DbResult<Self> {
        let rows = query_all(conn, READ_KEYS, (ns, id), |row| {
            Self::row(&Cols::new(row, "step page"))
        })
        .await?;
        Self::of(&rows)
    }
}

/// The steps of a batch the store does not hold yet: keyed ones by key, the keyless ones of
/// earlier versions by number; a key (or number) repeated in the batch counts once.
pub(crate) struct NewSteps<'a> {
    /// Keyed steps, numbered after the stored ones, in the batch's order.
    pub(crate) keyed: Vec<&'a ExecutionStep>,
    /// Keyless steps, under their own numbers.
    pub(crate) legacy: Vec<&'a ExecutionStep>,
    /// Both, in the batch's order.
    pub(crate) all: Vec<&'a ExecutionStep>,
}

impl<'a> NewSteps<'a> {
    /// The steps of `steps` that `stored` does not hold.
    pub(crate) fn of(steps: &'a [ExecutionStep], stored: &Stored) -> Self {
        let mut keys = HashSet::new();
        let mut numbers = HashSet::new();
        let mut new = NewSteps {
            keyed: Vec::new(),
            legacy: Vec::new(),
            all: Vec::new(),
        };
        for s in steps {
            let is_new = if s.key == 0 {
                let n = i64::from(s.step_number);
                let is_new = !stored.numbers.contains(&n) && numbers.insert(n);
                if is_new {
                    new.legacy.push(s);
                }
                is_new
            } else {
                let k = s.key as i64;
                let is_new = !stored.keys.contains(&k) && keys.insert(k);
                if is_new {
                    new.keyed.push(s);
                }
                is_new
            };
            if is_new {
                new.all.push(s);
            }
        }
        new
    }

    /// How many steps are new.
    pub(crate) fn count(&self) -> i64 {
        self.all.len() as i64
    }

    /// The statements writing the new steps as pages: keyless ones under their own numbers
    /// (consecutive numbers share a page), then keyed ones numbered after the last stored
    /// step.
    pub(crate) fn statements(
        &self,
        ns: &str,
        id: &str,
        format: JsonFormat,
    ) -> DbResult<PageStatements> {
        let mut legacy = self.legacy.clone();
        legacy.sort_by_key(|s| s.step_number);
        let mut out = numbered_pages(ns, id, &legacy, format)?;
        out.extend(keyed_pages(ns, id, &self.keyed, format)?);
        Ok(out)
    }

    /// True when every step of `steps` is new and keyed, in their order: the pages of
    /// [`EncodedSteps`] are then the ones to write.
    fn are_all_keyed(&self, steps: &[ExecutionStep]) -> bool {
        self.legacy.is_empty() && self.keyed.len() == steps.len()
    }
}

/// Statements (SQL and values) that write pages.
pub(crate) type PageStatements = Vec<(&'static str, Vec<Value>)>;

/// The statements writing keyed `steps` as pages numbered after the last stored step.
fn keyed_pages(
    ns: &str,
    id: &str,
    steps: &[&ExecutionStep],
    format: JsonFormat,
) -> DbResult<PageStatements> {
    let mut out = Vec::with_capacity(steps.len().div_ceil(PAGE_STEPS));
    for chunk in steps.chunks(PAGE_STEPS) {
        let (keys, body, bytes) = encode(chunk, format)?;
        out.push((
            INSERT_NEXT,
            vec![
                text(ns),
                text(id),
                Value::Integer(chunk.len() as i64),
                Value::Text(keys),
                body,
                Value::Integer(bytes),
            ],
        ));
    }
    Ok(out)
}

/// A batch of steps with its pages encoded before the write transaction, on the caller's
/// side of the write lock: encoding (JSON, then zstd) is work no other write has to wait for.
/// The pages assume every step is new, as a batch almost always is; when the stored keys
/// say otherwise (a replay, or steps written elsewhere), [`EncodedSteps::statements`] encodes
/// the new ones under the lock instead.
pub(crate) struct EncodedSteps<'a> {
    steps: &'a [ExecutionStep],
    /// The pages of all of `steps`, when every one is keyed.
    pages: Option<PageStatements>,
}

impl<'a> EncodedSteps<'a> {
    /// Encodes the pages of `steps` of episode `id`, when every step is keyed.
    pub(crate) fn new(
        steps: &'a [ExecutionStep],
        ns: &str,
        id: &str,
        format: JsonFormat,
    ) -> DbResult<Self> {
        let pages = if steps.iter().all(|s| s.key != 0) {
            let all: Vec<&ExecutionStep> = steps.iter().collect();
            Some(keyed_pages(ns, id, &all, format)?)
        } else {
            None
        };
        Ok(EncodedSteps { steps, pages })
    }

    /// The statements that write the steps `stored` does not hold (see
    /// [`NewSteps::statements`]) and how many those are.
    pub(crate) fn statements(
        self,
        stored: &Stored,
        ns: &str,
        id: &str,
        format: JsonFormat,
    ) -> DbResult<(PageStatements, i64)> {
        let new = NewSteps::of(self.steps, stored);
        let count = new.count();
        match self.pages {
            Some(pages) if new.are_all_keyed(self.steps) => Ok((pages, count)),
            _ => Ok((new.statements(ns, id, format)?, count)),
        }
    }
}

/// The statements writing `steps` (in number order) under their own numbers: runs of
/// consecutive numbers, [`PAGE_STEPS`] at most a page.
fn numbered_pages(
    ns: &str,
    id: &str,
    steps: &[&ExecutionStep],
    format: JsonFormat,
) -> DbResult<PageStatements> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < steps.len() {
        let mut end = start + 1;
        while end < steps.len()
            && end - start < PAGE_STEPS
            && steps[end - 1].step_number.checked_add(1) == Some(steps[end].step_number)
        {
            end += 1;
        }
        let run = &steps[start..end];
        let (keys, body, bytes) = encode(run, format)?;
        out.push((
            INSERT_NUMBERED,
            vec![
                text(ns),
                text(id),
                Value::Integer(i64::from(run[0].step_number)),
                Value::Integer(run.len() as i64),
                Value::Text(keys),
                body,
                Value::Integer(bytes),
            ],
        ));
        start = end;
    }
    Ok(out)
}

/// A page with its successful steps' outputs cleared: its new body (stored in `format`), and
/// how many outputs and bytes were cleared.
pub(crate) fn cleared(
    first: i64,
    keys: &str,
    body: &str,
    format: JsonFormat,
) -> DbResult<(Value, u64, u64)> {
    let mut steps = decode_page(first, keys, body)?;
    let (mut count, mut bytes) = (0u64, 0u64);
    for s in &mut steps {
        if let StepResult::Success { output } = &mut s.input.result
            && !output.is_empty()
        {
            count += 1;
            bytes += output.len() as u64;
            output.clear();
        }
    }
    let refs: Vec<&ExecutionStep> = steps.iter().collect();
    let (_, body, _) = encode(&refs, format)?;
    Ok((body, count, bytes))
}

/// Episodes whose step rows one round of [`pack_v7_steps`] copies.
const PACK_EPISODES: i64 = 256;

/// The migration to version 8: copies the steps of every episode from the version-7 `steps`
/// table into pages ([`numbered_pages`]), with their numbers and keys, then drops the old
/// table and its key index. Runs inside the migration's transaction.
pub(crate) async fn pack_v7_steps(conn: &Db<'_>) -> DbResult<()> {
    let (mut after_ns, mut after_id) = (String::new(), String::new());
    let (mut episodes, mut steps) = (0u64, 0u64);
    let read = format!(
        "SELECT {STEP_COLUMNS} FROM steps WHERE ns = ?1 AND episode_id = ?2 ORDER BY step_number"
    );
    loop {
        let page = query_all(
            conn,
            "SELECT DISTINCT ns, episode_id FROM steps WHERE (ns, episode_id) > (?1, ?2) \
             ORDER BY ns, episode_id LIMIT ?3",
            (after_ns.as_str(), after_id.as_str(), PACK_EPISODES),
            |row| {
                let c = Cols::new(row, "steps");
                Ok((c.text(0)?, c.text(1)?))
            },
        )
        .await?;
        let Some(last) = page.last().cloned() else {
            break;
        };
        for (ns, id) in &page {
            let rows = query_all(conn, &read, (ns.as_str(), id.as_str()), step_from_row).await?;
            let rows: Vec<&ExecutionStep> = rows.iter().collect();
            // JSON text: the pages are written under version 8, whatever the target.
            for (sql, values) in numbered_pages(ns, id, &rows, JsonFormat::Text)? {
                conn.exec(sql, values).await?;
            }
            steps += rows.len() as u64;
        }
        episodes += page.len() as u64;
        if episodes % 10_000 < PACK_EPISODES as u64 {
            info!(episodes, steps, "packing steps into pages");
        }
        (after_ns, after_id) = last;
    }
    conn.execute("DROP TABLE steps", ()).await?;
    info!(episodes, steps, "steps packed into pages");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};

    fn step(number: u32, key: u64, result: StepResult) -> ExecutionStep {
        ExecutionStep {
            step_number: number,
            key,
            timestamp: DateTime::<Utc>::from_timestamp(1_750_000_000, 7).unwrap(),
            input: StepInput {
                tool: "cargo".into(),
                action: "test \"quoted\"".into(),
                parameters: serde_json::json!({"f": 0.1, "n": [1, 2]}),
                result,
                latency_ms: 12,
                tokens: Some(3),
            },
        }
    }

    #[test]
    fn a_page_round_trips_its_steps() {
        let steps = vec![
            step(
                4,
                9,
                StepResult::Success {
                    output: "ok ✓".into(),
                },
            ),
            step(
                5,
                0,
                StepResult::Error {
                    message: "boom".into(),
                },
            ),
            step(
                6,
                u64::MAX,
                StepResult::Timeout {
                    message: String::new(),
                },
            ),
        ];
        let refs: Vec<&ExecutionStep> = steps.iter().collect();
        let (keys, body, bytes) = encode(&refs, JsonFormat::Compressed).unwrap();
        assert_eq!(bytes, "ok ✓".len() as i64);
        let body = json_of(BODY, body).unwrap();
        assert_eq!(decode_page(4, &keys, &body).unwrap(), steps);
        let stored = Stored::of(&[(4, 3, keys.clone())]).unwrap();
        assert_eq!(stored.count, 3);
        assert_eq!(stored.numbers, HashSet::from([4, 5, 6]));
        assert_eq!(stored.keys, HashSet::from([9, -1]));
        assert!(
            Stored::of(&[(4, 2, keys.clone())]).is_err(),
            "count and keys disagree"
        );
        assert!(decode_page(4, "[1]", &body).is_err());
        assert!(decode_page(i64::from(u32::MAX), &keys, &body).is_err());
    }

    #[test]
    fn only_new_steps_are_written_keyless_ones_in_runs() {
        let steps: Vec<ExecutionStep> =
            [(1, 0), (2, 0), (5, 0), (7, 11), (8, 11), (9, 12), (3, 13)]
                .iter()
                .map(|&(n, k)| step(n, k, StepResult::Success { output: "x".into() }))
                .collect();
        let stored = Stored {
            keys: HashSet::from([13]),
            numbers: HashSet::from([2]),
            count: 1,
        };
        let new = NewSteps::of(&steps, &stored);
        assert_eq!(new.count(), 4, "1, 5 (keyless), 11 once, 12");
        let statements = new.statements("ns", "e", JsonFormat::Text).unwrap();
        let firsts: Vec<(&str, Value)> = statements
            .iter()
            .map(|(sql, v)| (*sql, v[2].clone()))
            .collect();
        assert_eq!(
            firsts,
            vec![
                (INSERT_NUMBERED, Value::Integer(1)),
                (INSERT_NUMBERED, Value::Integer(5)),
                (INSERT_NEXT, Value::Integer(2)),
            ]
        );
        let stored: Vec<&ExecutionStep> = steps[..3].iter().collect();
        assert_eq!(
            numbered_pages("ns", "e", &stored, JsonFormat::Text)
                .unwrap()
                .len(),
            2,
            "1-2, then 5"
        );
    }

    /// The pages encoded before the lock are the ones written when every step is new and
    /// keyed; otherwise only the new steps are encoded, as without them.
    #[test]
    fn steps_encoded_before_the_lock_are_written_only_when_all_are_new() {
        let ok = || StepResult::Success { output: "x".into() };
        let keyed: Vec<ExecutionStep> = (1..=70)
            .map(|n| step(n, u64::from(n) + 100, ok()))
            .collect();
        let none = Stored {
            keys: HashSet::new(),
            numbers: HashSet::new(),
            count: 0,
        };
        let format = JsonFormat::Text;
        let plain = |steps: &[ExecutionStep], stored: &Stored| {
            let new = NewSteps::of(steps, stored);
            (new.statements("ns", "e", format).unwrap(), new.count())
        };
        let encoded = |steps: &[ExecutionStep], stored: &Stored| {
            EncodedSteps::new(steps, "ns", "e", format)
                .unwrap()
                .statements(stored, "ns", "e", format)
                .unwrap()
        };
        let (pages, count) = encoded(&keyed, &none);
        assert_eq!((pages.len(), count), (2, 70), "64 steps, then 6");
        assert_eq!((pages, count), plain(&keyed, &none));

        // A replay of part of the batch: only the rest is written.
        let stored = Stored {
            keys: (101..=110).collect(),
            numbers: HashSet::new(),
            count: 10,
        };
        let (pages, count) = encoded(&keyed, &stored);
        assert_eq!((pages.len(), count), (1, 60));
        assert_eq!((pages, count), plain(&keyed, &stored));

        // A key twice in the batch, and a keyless step: what the store does not hold, once.
        let mut mixed = keyed[..5].to_vec();
        mixed.push(keyed[0].clone());
        assert_eq!(encoded(&mixed, &none), plain(&mixed, &none));
        assert_eq!(encoded(&mixed, &none).1, 5);
        mixed.push(step(200, 0, ok()));
        assert_eq!(encoded(&mixed, &none), plain(&mixed, &none));
        assert_eq!(encoded(&mixed, &none).1, 6);
    }

    #[test]
    fn clearing_outputs_keeps_failures() {
        let steps = [
            step(
                1,
                1,
                StepResult::Success {
                    output: "long output".into(),
                },
            ),
            step(
                2,
                2,
                StepResult::Error {
                    message: "kept".into(),
                },
            ),
        ];
        let refs: Vec<&ExecutionStep> = steps.iter().collect();
        let (keys, body, _) = encode(&refs, JsonFormat::Text).unwrap();
        let body = json_of(BODY, body).unwrap();
        let (body, count, bytes) = cleared(1, &keys, &body, JsonFormat::Text).unwrap();
        assert_eq!((count, bytes), (1, 11));
        let back = decode_page(1, &keys, &json_of(BODY, body).unwrap()).unwrap();
        assert_eq!(back[0].input.result.text(), "");
        assert_eq!(back[1].input.result.text(), "kept");
    }

    /// A page of `n` steps with realistic, repetitive outputs.
    fn page_of(n: u32) -> Vec<ExecutionStep> {
        (1..=n)
            .map(|i| {
                step(
                    i,
                    u64::from(i) * 7919,
                    StepResult::Success {
                        output: format!(
                            "test result: ok. {i} passed; 0 failed; finished in 0.{i}s"
                        ),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn a_large_body_is_stored_compressed_from_version_10_and_reads_back_whole() {
        let steps = page_of(50);
        let refs: Vec<&ExecutionStep> = steps.iter().collect();
        let (keys, json, _) = encode(&refs, JsonFormat::Text).unwrap();
        let (_, blob, _) = encode(&refs, JsonFormat::Compressed).unwrap();
        let (Value::Text(json), Value::Blob(compressed)) = (json, blob) else {
            panic!("JSON stays text; a large body under v10 is a blob")
        };
        assert!(
            compressed.len() * 4 < json.len(),
            "{} compressed bytes for {} of JSON",
            compressed.len(),
            json.len()
        );
        let back = json_of(BODY, Value::Blob(compressed)).unwrap();
        assert_eq!(back, json);
        assert_eq!(decode_page(1, &keys, &back).unwrap(), steps);
    }
}

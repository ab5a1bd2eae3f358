//! Conversions between domain values and SQL values / rows.
//!
//! Timestamps are stored as nanoseconds since the Unix epoch (exact round trip for
//! 1677-09-21 to 2262-04-11); JSON columns use `serde_json` with exact float round trips;
//! vectors are little-endian `f32` blobs (libsql's `F32_BLOB` layout). Every decode failure is
//! an [`Error::Decode`] naming the column, never a panic.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use libsql::{Row, Value};
use memory_core::{
    Complexity, Episode, EpisodeId, EpisodeSummary, Error, ExecutionStep, OutcomeKind, StepInput,
    StepResult, TaskContext, TaskType,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{DbResult, decode};

/// Nanoseconds since the epoch; `InvalidInput` outside what an `i64` holds (years 1677-2262).
pub(crate) fn nanos(field: &'static str, t: DateTime<Utc>) -> DbResult<i64> {
    t.timestamp_nanos_opt().ok_or_else(|| {
        Error::invalid(
            field,
            format!("{t} is outside the storable range (years 1677 to 2262)"),
        )
        .into()
    })
}

/// Nanoseconds since the epoch, clamped to the `i64` range (for filters and sort keys).
pub(crate) fn nanos_clamped(t: DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(if t.timestamp() < 0 {
        i64::MIN
    } else {
        i64::MAX
    })
}

/// The time `n` nanoseconds after the epoch.
pub(crate) fn from_nanos(n: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_nanos(n)
}

/// JSON text of a value.
pub(crate) fn to_json<T: Serialize + ?Sized>(field: &'static str, value: &T) -> DbResult<String> {
    serde_json::to_string(value)
        .map_err(|e| Error::invalid(field, format!("cannot encode as JSON: {e}")).into())
}

/// JSON text of a value, or NULL.
pub(crate) fn opt_json<T: Serialize>(field: &'static str, value: Option<&T>) -> DbResult<Value> {
    Ok(value
        .map(|v| to_json(field, v))
        .transpose()?
        .map_or(Value::Null, Value::Text))
}

/// A value from JSON text.
pub(crate) fn from_json<T: DeserializeOwned>(what: &'static str, text: &str) -> DbResult<T> {
    serde_json::from_str(text).map_err(|e| decode(what, e))
}

/// A `u64` counter as stored (two's complement in an `i64`; counters stay far below 2^63).
pub(crate) fn count(n: u64) -> i64 {
    n as i64
}

/// Text or NULL.
pub(crate) fn opt_text(s: Option<&str>) -> Value {
    s.map_or(Value::Null, |s| Value::Text(s.to_owned()))
}

/// Text.
pub(crate) fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

/// Little-endian `f32` bytes: libsql's `F32_BLOB` layout.
pub(crate) fn vector_to_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The inverse of [`vector_to_blob`].
pub(crate) fn blob_to_vector(blob: &[u8]) -> DbResult<Vec<f32>> {
    let chunks = blob.chunks_exact(4);
    if !chunks.remainder().is_empty() {
        return Err(decode(
            "embedding.vector",
            format!("{} bytes is not a whole number of f32", blob.len()),
        ));
    }
    Ok(chunks
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// Typed access to a row's columns with decode errors instead of panics.
pub(crate) struct Cols<'r> {
    row: Source<'r>,
    table: &'static str,
}

/// Where a row's values come from: libsql's rows, or the values of a Hrana batch result
/// ([`crate::hrana`]).
enum Source<'r> {
    Row(&'r Row),
    #[cfg_attr(not(feature = "remote"), allow(dead_code))]
    Values(&'r [Value]),
}

impl<'r> Cols<'r> {
    pub(crate) fn new(row: &'r Row, table: &'static str) -> Self {
        Cols {
            row: Source::Row(row),
            table,
        }
    }

    /// Typed access to a row given as its values.
    #[cfg_attr(not(feature = "remote"), allow(dead_code))]
    pub(crate) fn values(values: &'r [Value], table: &'static str) -> Self {
        Cols {
            row: Source::Values(values),
            table,
        }
    }

    /// Column `i` as it is stored.
    pub(crate) fn value(&self, i: i32) -> DbResult<Value> {
        match self.row {
            Source::Row(row) => Ok(row.get_value(i)?),
            Source::Values(values) => usize::try_from(i)
                .ok()
                .and_then(|i| values.get(i))
                .cloned()
                .ok_or_else(|| decode(self.table, format!("no column {i}"))),
        }
    }

    /// The decode error of column `i` holding `got` where `expected` belongs.
    fn unexpected(&self, i: i32, expected: &str, got: &Value) -> crate::error::Failure {
        decode(
            self.table,
            format!("column {i}: expected {expected}, got {got:?}"),
        )
    }

    /// `value` of column `i`, which must not be NULL.
    fn required<T>(&self, i: i32, value: Option<T>) -> DbResult<T> {
        value.ok_or_else(|| decode(self.table, format!("column {i}: unexpected NULL")))
    }

    pub(crate) fn opt_text(&self, i: i32) -> DbResult<Option<String>> {
        match self.value(i)? {
            Value::Null => Ok(None),
            Value::Text(s) => Ok(Some(s)),
            Value::Blob(b) => String::from_utf8(b)
                .map(Some)
                .map_err(|e| decode(self.table, format!("column {i}: {e}"))),
            other => Err(self.unexpected(i, "text", &other)),
        }
    }

    pub(crate) fn text(&self, i: i32) -> DbResult<String> {
        self.required(i, self.opt_text(i)?)
    }

    pub(crate) fn opt_i64(&self, i: i32) -> DbResult<Option<i64>> {
        match self.value(i)? {
            Value::Null => Ok(None),
            Value::Integer(n) => Ok(Some(n)),
            other => Err(self.unexpected(i, "an integer", &other)),
        }
    }

    pub(crate) fn i64(&self, i: i32) -> DbResult<i64> {
        self.required(i, self.opt_i64(i)?)
    }

    pub(crate) fn opt_f64(&self, i: i32) -> DbResult<Option<f64>> {
        match self.value(i)? {
            Value::Null => Ok(None),
            Value::Real(x) => Ok(Some(x)),
            Value::Integer(n) => Ok(Some(n as f64)),
            other => Err(self.unexpected(i, "a number", &other)),
        }
    }

    pub(crate) fn blob(&self, i: i32) -> DbResult<Vec<u8>> {
        match self.value(i)? {
            Value::Blob(b) => Ok(b),
            other => Err(self.unexpected(i, "a blob", &other)),
        }
    }

    pub(crate) fn episode_id(&self, i: i32) -> DbResult<EpisodeId> {
        let s = self.text(i)?;
        uuid::Uuid::parse_str(&s).map(EpisodeId).map_err(|e| {
            decode(
                self.table,
                format!("episode id {}: {e}", memory_core::quote_value(&s)),
            )
        })
    }

    pub(crate) fn parse<T: FromStr<Err = Error>>(&self, i: i32) -> DbResult<T> {
        let s = self.text(i)?;
        T::from_str(&s).map_err(|e| decode(self.table, e))
    }

    pub(crate) fn json<T: DeserializeOwned>(&self, i: i32) -> DbResult<T> {
        from_json(self.table, &self.text(i)?)
    }

    pub(crate) fn opt_json<T: DeserializeOwned>(&self, i: i32) -> DbResult<Option<T>> {
        self.opt_text(i)?
            .map(|s| from_json(self.table, &s))
            .transpose()
    }
}

// Free-text columns are read as `CAST(... AS BLOB)`: libsql's local driver reads TEXT values
// as C strings, which would cut them at the first NUL byte; blobs come back whole (and are
// checked to be UTF-8 by `Cols::opt_text`).

/// Columns of `episodes` read by [`episode_from_row`], in order.
pub(crate) const EPISODE_COLUMNS: &str = "id, CAST(task_description AS BLOB), task_type, \
     CAST(domain AS BLOB), CAST(language AS BLOB), CAST(framework AS BLOB), complexity, \
     tags, started_at, completed_at, outcome, reward, reflection";

/// Columns of `episodes` read by [`summary_from_row`], in order (prefixed with `e.`).
pub(crate) const SUMMARY_COLUMNS: &str = "e.id, CAST(e.task_description AS BLOB), e.task_type, \
     CAST(e.domain AS BLOB), CAST(e.language AS BLOB), CAST(e.framework AS BLOB), e.complexity, \
     e.tags, e.step_count, e.started_at, e.completed_at, e.outcome_kind, e.reward_total";

/// Columns of `steps` read by [`step_from_row`], in order.
pub(crate) const STEP_COLUMNS: &str = "step_number, at, CAST(tool AS BLOB), CAST(action AS BLOB), \
     parameters, status, CAST(result_text AS BLOB), latency_ms, tokens, step_key";

fn context_from(c: &Cols<'_>, first: i32) -> DbResult<TaskContext> {
    Ok(TaskContext {
        domain: c.text(first)?,
        language: c.opt_text(first + 1)?,
        framework: c.opt_text(first + 2)?,
        complexity: c.parse::<Complexity>(first + 3)?,
        tags: c.json(first + 4)?,
    })
}

/// An episode (without steps) from a row of [`EPISODE_COLUMNS`].
pub(crate) fn episode_from_row(row: &Row) -> DbResult<Episode> {
    episode_from(&Cols::new(row, "episode"))
}

/// An episode (without its steps) from the columns of [`EPISODE_COLUMNS`].
pub(crate) fn episode_from(c: &Cols<'_>) -> DbResult<Episode> {
    Ok(Episode {
        id: c.episode_id(0)?,
        task_description: c.text(1)?,
        task_type: c.parse::<TaskType>(2)?,
        context: context_from(c, 3)?,
        steps: Vec::new(),
        started_at: from_nanos(c.i64(8)?),
        completed_at: c.opt_i64(9)?.map(from_nanos),
        outcome: c.opt_json(10)?,
        reward: c.opt_json(11)?,
        reflection: match c.value(12)? {
            Value::Null => None,
            stored => Some(from_json(
                REFLECTION,
                &crate::compressed_json::json_of(REFLECTION, stored)?,
            )?),
        },
    })
}

/// The episode's reflection column, as its decode errors name it (JSON text, or compressed
/// from schema v10: [`crate::compressed_json`]).
pub(crate) const REFLECTION: &str = "episode reflection";

/// A summary from a row of [`SUMMARY_COLUMNS`].
pub(crate) fn summary_from_row(row: &Row) -> DbResult<EpisodeSummary> {
    summary_from(&Cols::new(row, "episode summary"))
}

/// A summary from the columns of [`SUMMARY_COLUMNS`].
pub(crate) fn summary_from(c: &Cols<'_>) -> DbResult<EpisodeSummary> {
    Ok(EpisodeSummary {
        id: c.episode_id(0)?,
        task_description: c.text(1)?,
        task_type: c.parse::<TaskType>(2)?,
        context: context_from(c, 3)?,
        step_count: u32::try_from(c.i64(8)?).map_err(|e| decode("episode summary", e))?,
        started_at: from_nanos(c.i64(9)?),
        completed_at: c.opt_i64(10)?.map(from_nanos),
        outcome: c
            .opt_text(11)?
            .map(|k| OutcomeKind::from_str(&k).map_err(|e| decode("episode summary", e)))
            .transpose()?,
        reward: c.opt_f64(12)?,
    })
}

/// A step from a row of [`STEP_COLUMNS`].
pub(crate) fn step_from_row(row: &Row) -> DbResult<ExecutionStep> {
    step_from(&Cols::new(row, "step"))
}

/// A step from the columns of [`STEP_COLUMNS`].
pub(crate) fn step_from(c: &Cols<'_>) -> DbResult<ExecutionStep> {
    let text = c.text(6)?;
    let result = match c.text(5)?.as_str() {
        "success" => StepResult::Success { output: text },
        "error" => StepResult::Error { message: text },
        "timeout" => StepResult::Timeout { message: text },
        other => return Err(decode("step", format!("unknown step status {other:?}"))),
    };
    Ok(ExecutionStep {
        step_number: u32::try_from(c.i64(0)?).map_err(|e| decode("step", e))?,
        // Rows written before keys existed have none.
        key: c.opt_i64(9)?.map_or(0, |k| k as u64),
        timestamp: from_nanos(c.i64(1)?),
        input: StepInput {
            tool: c.text(2)?,
            action: c.text(3)?,
            parameters: c.json(4)?,
            result,
            latency_ms: c.i64(7)? as u64,
            tokens: c.opt_i64(8)?.map(|t| t as u64),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_to_the_nanosecond() {
        let t = DateTime::from_timestamp(1_750_000_000, 123_456_789).unwrap();
        assert_eq!(from_nanos(nanos("t", t).unwrap()), t);
        let far = DateTime::from_timestamp(i64::from(i32::MAX) * 10, 0).unwrap();
        assert!(nanos("t", far).is_err());
        assert_eq!(nanos_clamped(far), i64::MAX);
        assert_eq!(nanos_clamped(DateTime::<Utc>::MIN_UTC), i64::MIN);
    }

    #[test]
    fn vectors_round_trip_bit_for_bit() {
        let v = vec![0.0, -0.0, 1.5, f32::MIN_POSITIVE, f32::MAX, -3.25e-7];
        let back = blob_to_vector(&vector_to_blob(&v)).unwrap();
        assert_eq!(
            back.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            v.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
        assert!(blob_to_vector(&[1, 2, 3]).is_err());
        assert!(blob_to_vector(&[]).unwrap().is_empty());
    }
}

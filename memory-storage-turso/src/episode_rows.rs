//! The SQL of an episode's rows that the local write path (`episodes`), the remote batch
//! (`remote_batch`) and maintenance share, written once.

use libsql::Value;
use memory_core::EstimateActual;

use crate::codec::{Cols, nanos, text, to_json};
use crate::error::DbResult;
use crate::prepared::Db;
use crate::sql::query_opt;

/// The head of an insert of an episode's tag rows (values follow, three per row).
pub(crate) const INSERT_TAGS: &str = "INSERT INTO episode_tags (ns, tag, episode_id)";

/// The completion's outcome update, for an in-progress episode only: `?1..?8` bind the
/// namespace, the id, the outcome's kind and body, the reward total and body, the reflection
/// and the completion time; `position` stamps the row (a parameter locally, the batch's
/// counter expression remotely).
pub(crate) fn complete_outcome(position: &str) -> String {
    format!(
        "UPDATE episodes SET outcome_kind = ?3, outcome = ?4, reward_total = ?5, \
         reward = ?6, reflection = ?7, completed_at = ?8, changed_seq = {position} \
         WHERE ns = ?1 AND id = ?2 AND outcome_kind IS NULL"
    )
}

/// Adds `?3` appended steps to the episode's step count, stamped with `position`.
pub(crate) fn add_step_count(position: &str) -> String {
    format!(
        "UPDATE episodes SET step_count = step_count + ?3, changed_seq = {position} \
         WHERE ns = ?1 AND id = ?2"
    )
}

/// Whether the episode exists (`None`) and is completed.
pub(crate) async fn episode_state(conn: &Db<'_>, ns: &str, id: &str) -> DbResult<Option<bool>> {
    query_opt(
        conn,
        "SELECT outcome_kind IS NOT NULL FROM episodes WHERE ns = ?1 AND id = ?2",
        (ns, id),
        |row| Ok(Cols::new(row, "episode").i64(0)? != 0),
    )
    .await
}

/// Stores a completion's actuals with the episode's estimate record when one is open (local
/// and remote completions run it in their transaction); `?4` is the [`EstimateActual`] as
/// JSON, set into the stored record's body.
pub(crate) const CLOSE_ESTIMATE: &str = "UPDATE estimates SET completed_at = ?3, \
     body = json_set(body, '$.actual', json(?4)) \
     WHERE ns = ?1 AND episode_id = ?2 AND completed_at IS NULL";

/// The values of [`CLOSE_ESTIMATE`].
pub(crate) fn close_estimate_values(
    ns: &str,
    id: &str,
    actual: &EstimateActual,
) -> DbResult<Vec<Value>> {
    Ok(vec![
        text(ns),
        text(id),
        Value::Integer(nanos("estimate.completed_at", actual.completed_at)?),
        Value::Text(to_json("estimate.actual", actual)?),
    ])
}

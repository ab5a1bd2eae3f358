//! The full-text index rows a group of writes holds until its commit writes them in one
//! statement (see [`DeferredText`]); the writing itself is the text index's.

use libsql::Value;

/// The index rows of a group of writes ([`crate::group_commit`]), written by its commit.
///
/// FTS5 writes out the terms it holds whenever a statement opens or releases a savepoint,
/// and each write of a group runs in a savepoint of its own: the rows of eight grouped
/// writes made eight segments (and their merges). Held here, they are one statement just
/// before the commit, so a group makes one. What a write that fails or is cancelled left
/// here is dropped with its savepoint ([`DeferredText::truncate`]); a delete of index rows
/// writes what is held first ([`crate::text_index::delete`]), so it always finds every row written before it.
/// A write that did that and then fails fails its whole group: its savepoint holds rows of
/// the members before it, which rolling it back alone would lose.
/// Alternating 10k ingest runs with 8 streams, 11-28 (an experiment build of this change):
/// 50 steps 1,127 and 1,219 episodes/s against 1,100 and 1,116; 10 steps 2,029 and 2,241
/// against 1,893 and 2,013.
#[derive(Debug, Default)]
pub(crate) struct DeferredText(std::sync::Mutex<Held>);

#[derive(Debug, Default)]
struct Held {
    rows: Vec<Vec<Value>>,
    /// The open body wrote held rows (before a delete): some may be earlier members'.
    written_in_body: bool,
}

impl DeferredText {
    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A body begins: returns where its rows begin.
    pub(crate) fn begin_body(&self) -> usize {
        let mut held = self.held();
        held.written_in_body = false;
        held.rows.len()
    }

    /// Whether the open body wrote the held rows. Rolling it back to its savepoint would
    /// then roll back rows of the members before it too, which are not held any more: the
    /// group must fail whole instead.
    pub(crate) fn written_in_body(&self) -> bool {
        self.held().written_in_body
    }

    /// Drops the rows held from `len` on (those of a write rolled back to its savepoint), or
    /// all of them (`0`: the group rolled back).
    pub(crate) fn truncate(&self, len: usize) {
        self.held().rows.truncate(len);
    }

    /// Holds `rows` until the group writes them.
    pub(crate) fn push(&self, rows: Vec<Vec<Value>>) {
        self.held().rows.extend(rows);
    }

    /// Takes every held row, to be written by one statement
    /// ([`crate::text_index::write_held`]); the open body counts as having written them.
    pub(crate) fn take_for_write(&self) -> Vec<Vec<Value>> {
        let mut held = self.held();
        held.written_in_body |= !held.rows.is_empty();
        std::mem::take(&mut held.rows)
    }
}

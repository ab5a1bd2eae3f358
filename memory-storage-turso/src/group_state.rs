//! The group-commit state of the writer connection (see [`crate::group_commit`], which runs
//! the groups): the open group, the writes waiting for the connection, the rows held for the
//! commit and the counts of shared commits.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::sync::watch;

use crate::deferred_text::DeferredText;

/// How a group's commit went, as each member learns it: a failure's text and whether it is
/// transient.
pub(crate) type Outcome = Result<(), (String, bool)>;

/// The open group of the writer connection, changed only while its lock is held.
#[derive(Debug)]
pub(crate) struct Group {
    pub(crate) id: u64,
    pub(crate) members: usize,
    /// A member's body runs, or was cancelled while running.
    pub(crate) body_open: bool,
    /// That body runs in a savepoint. The first member of a group needs none (its failure
    /// rolls back the whole transaction, which holds nothing else), and a savepoint is not
    /// free: SQLite copies every page the body changes into its journal.
    pub(crate) savepoint: bool,
    /// Where that body's full-text rows begin in [`Grouping::text`].
    pub(crate) text_from: usize,
    pub(crate) done: watch::Sender<Option<Outcome>>,
}

/// The group-commit state of a writer connection.
#[derive(Debug, Default)]
pub(crate) struct Grouping {
    pub(crate) group: std::sync::Mutex<Option<Group>>,
    /// Grouped writes waiting for the writer connection.
    pub(crate) waiting: AtomicUsize,
    pub(crate) ids: AtomicU64,
    pub(crate) shared_commits: AtomicU64,
    pub(crate) shared_writes: AtomicU64,
    /// The open group's full-text rows, written by its commit.
    pub(crate) text: DeferredText,
    /// Bumped when the writer connection may have been left free with a group open and
    /// nobody queued to commit it: a queued write was cancelled, or one holding the connection
    /// ended without committing or handing on (see `Inner::await_commit` in [`crate::group_commit`]).
    pub(crate) freed: watch::Sender<u64>,
}

/// Commits that several concurrent writes shared since the storage was opened
/// ([`TursoStorage::group_commits`](crate::TursoStorage::group_commits)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupCommits {
    /// Commits that held more than one write.
    pub commits: u64,
    /// The writes those commits held.
    pub writes: u64,
}

impl Grouping {
    pub(crate) fn stats(&self) -> GroupCommits {
        GroupCommits {
            commits: self.shared_commits.load(Ordering::Relaxed),
            writes: self.shared_writes.load(Ordering::Relaxed),
        }
    }
}

/// Counts a grouped write queued for the writer connection; one dropped before it got the
/// connection (cancelled) tells the members waiting for a commit that it will not come.
pub(crate) struct Waiting<'a> {
    pub(crate) grouping: &'a Grouping,
    pub(crate) acquired: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.grouping.waiting.fetch_sub(1, Ordering::AcqRel);
        if !self.acquired {
            self.grouping.tell_freed();
        }
    }
}

/// Held by a grouped write while it has the writer connection: dropped armed (the write
/// neither committed nor finished its group, nor handed it on to a queued write: it failed
/// or was cancelled midway) with a group open, it tells the members waiting for that group's
/// commit.
pub(crate) struct Holding<'a> {
    pub(crate) grouping: &'a Grouping,
    pub(crate) armed: bool,
}

impl Drop for Holding<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.grouping.tell_freed();
        }
    }
}

impl Grouping {
    /// Tells the members waiting for the open group's commit, if a group is open (none
    /// waits otherwise).
    pub(crate) fn tell_freed(&self) {
        if lock(self).is_some() {
            self.freed.send_modify(|n| *n = n.wrapping_add(1));
        }
    }
}

pub(crate) fn lock(g: &Grouping) -> std::sync::MutexGuard<'_, Option<Group>> {
    g.group
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

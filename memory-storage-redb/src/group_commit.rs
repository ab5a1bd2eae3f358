//! Group commit: writers queue operations and wait; one blocking task commits what is queued,
//! a batch per transaction, so writers that arrive while a commit runs share the next one.
//! The cache's writes and the outbox's appends both go through it.
//!
//! No crate offers this for redb: its transactions are synchronous and one at a time, and the
//! batching has to know the caller's operation and outcome types.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use memory_core::{Error, Result};
use tokio::sync::oneshot;

use crate::error::{StoreError, failed, map};

struct Pending<Op, Out> {
    op: Op,
    reply: oneshot::Sender<Result<Out>>,
}

struct Queue<Op, Out> {
    pending: Vec<Pending<Op, Out>>,
    /// True while a blocking task is committing batches.
    flushing: bool,
}

/// The queue of one committer.
pub(crate) struct GroupCommit<Op, Out> {
    queue: Mutex<Queue<Op, Out>>,
    max_batch: usize,
    /// The operation, for errors (`cache write`, `outbox append`).
    what: &'static str,
}

/// What commits the batches of a [`GroupCommit`].
pub(crate) trait Committer: Send + Sync + Sized + 'static {
    /// A queued operation.
    type Op: Send + 'static;
    /// What a committed operation reports back.
    type Out: Send + 'static;
    /// The queue.
    fn group(&self) -> &GroupCommit<Self::Op, Self::Out>;
    /// Applies `ops` in one transaction: an outcome per operation, in order, or an error for
    /// all of them.
    fn commit(&self, ops: &[Self::Op]) -> Result<Vec<Self::Out>, StoreError>;
}

impl<Op, Out> GroupCommit<Op, Out> {
    /// An empty queue committing at most `max_batch` operations per transaction.
    pub(crate) fn new(max_batch: usize, what: &'static str) -> Self {
        GroupCommit {
            queue: Mutex::new(Queue {
                pending: Vec::new(),
                flushing: false,
            }),
            max_batch: max_batch.max(1),
            what,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue<Op, Out>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stopped(&self) -> Error {
        failed(
            self.what,
            "the committing task stopped before this write was committed",
        )
    }
}

/// Queues `ops` together (one commit unless the batch limit splits them) and waits for each
/// outcome, in order. Starts the committing task when none runs.
pub(crate) async fn submit<C: Committer>(owner: &Arc<C>, ops: Vec<C::Op>) -> Vec<Result<C::Out>> {
    let waiting = enqueue(owner, ops);
    wait(owner.group(), waiting).await
}

/// The outcome of one queued operation, once its transaction committed.
pub(crate) type Reply<Out> = oneshot::Receiver<Result<Out>>;

/// Queues `ops` together, now (so what is queued later commits after them), and returns
/// where each outcome will arrive. Starts the committing task when none runs.
pub(crate) fn enqueue<C: Committer>(owner: &Arc<C>, ops: Vec<C::Op>) -> Vec<Reply<C::Out>> {
    let group = owner.group();
    let mut waiting = Vec::with_capacity(ops.len());
    let start = {
        let mut q = group.lock();
        for op in ops {
            let (reply, done) = oneshot::channel();
            q.pending.push(Pending { op, reply });
            waiting.push(done);
        }
        !std::mem::replace(&mut q.flushing, true)
    };
    if start {
        let owner = Arc::clone(owner);
        // Not awaited here: the task commits for every queued writer and ends when the queue
        // is empty.
        drop(tokio::task::spawn_blocking(move || run(owner)));
    }
    waiting
}

/// Waits for the outcomes of [`enqueue`]d operations, in order.
pub(crate) async fn wait<Op, Out>(
    group: &GroupCommit<Op, Out>,
    waiting: Vec<Reply<Out>>,
) -> Vec<Result<Out>> {
    let mut out = Vec::with_capacity(waiting.len());
    for done in waiting {
        out.push(done.await.unwrap_or_else(|_| Err(group.stopped())));
    }
    out
}

/// If the committing task panics, clears `flushing` and fails the queued writes (their senders
/// are dropped) instead of leaving them waiting. Weak, so it does not keep the file open.
struct PanicGuard<C: Committer>(Weak<C>);

impl<C: Committer> Drop for PanicGuard<C> {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(owner) = self.0.upgrade()
        {
            let mut q = owner.group().lock();
            q.flushing = false;
            q.pending.clear();
        }
    }
}

/// Commits queued operations, a batch per transaction, until the queue is empty.
///
/// The task lets go of its handle before it sends the last replies, so a caller that closes
/// right after its write holds the last handle and closes the file (another process can then
/// open it).
fn run<C: Committer>(owner: Arc<C>) {
    let _guard = PanicGuard(Arc::downgrade(&owner));
    let mut next = Some(owner);
    while let Some(this) = next.take() {
        let group = this.group();
        let batch: Vec<Pending<C::Op, C::Out>> = {
            let mut q = group.lock();
            if q.pending.is_empty() {
                q.flushing = false;
                return;
            }
            let n = q.pending.len().min(group.max_batch);
            q.pending.drain(..n).collect()
        };
        let (ops, replies): (Vec<C::Op>, Vec<_>) =
            batch.into_iter().map(|p| (p.op, p.reply)).unzip();
        let result = this.commit(&ops);
        {
            let mut q = group.lock();
            // Cleared under the same lock as the emptiness check, so a write queued after
            // this starts a new task.
            if q.pending.is_empty() {
                q.flushing = false;
            } else {
                next = Some(Arc::clone(&this));
            }
        }
        let what = group.what;
        drop(this);
        match result {
            Ok(outs) => {
                for (out, reply) in outs.into_iter().zip(replies) {
                    // A dropped receiver (cancelled caller) is fine: the write is applied.
                    let _ = reply.send(Ok(out));
                }
            }
            Err(e) => {
                let e = map(what, e);
                let msg = e.to_string();
                let mut first = Some(e);
                for reply in replies {
                    let err = first.take().unwrap_or_else(|| failed(what, msg.clone()));
                    let _ = reply.send(Err(err));
                }
            }
        }
    }
}

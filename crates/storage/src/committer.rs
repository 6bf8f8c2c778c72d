//! The group-commit thread of [`crate::FjallEngine`].
//!
//! One thread owns every write to the fjall journal. Its loop:
//!
//! 1. Block until a commit request arrives.
//! 2. Drain whatever else is already queued, up to `group_batches_max` requests or
//!    `group_bytes_max` bytes — the **group**.
//! 3. Write each batch of the group as its own atomic fjall batch, without any fsync (fjall is
//!    opened with manual journal persistence, and each batch is built with no durability, so
//!    fjall never syncs on its own).
//! 4. Persist the journal once: `fdatasync` if any batch of the group asked for
//!    [`Durability::Sync`], otherwise only a flush of the journal's user-space buffer to the OS.
//! 5. Complete every request of the group, in order.
//!
//! While step 4 waits on the disk, new requests queue up and form the next group: the more
//! concurrent writers, the more batches share one fsync.
//!
//! # Failures
//!
//! If writing a batch or persisting the journal fails, *no* batch of the group is acknowledged:
//! every waiter that would have succeeded gets the error, and the engine is poisoned (see
//! [`Shared::poison`]). A batch refused for its own reasons (its tree was dropped while it waited)
//! fails alone and does not affect the group. If the group code panics, the engine is poisoned
//! and every waiter of the group gets an error; no completion is ever lost.

use crate::engine::complete;
use crate::{Completion, Durability, EngineId, StorageError, WriteBatch, WriteOperation};
use fjall::{Database, Keyspace, PersistMode};
use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::Receiver;

/// A commit waiting for the committer.
pub(crate) struct Request {
    /// The batch, already validated against the limits.
    pub(crate) batch: WriteBatch,
    /// How durable it must be before `on_done`.
    pub(crate) durability: Durability,
    /// Called exactly once with the outcome.
    pub(crate) on_done: Completion,
}

/// State shared between the engine handle and the committer thread.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// The first fatal failure; once set, the engine refuses every operation.
    poison: OnceLock<String>,
    /// Requests sent to the committer and not yet taken into a group.
    pub(crate) queued_batches: AtomicUsize,
    /// Bytes (keys plus values) of the queued requests.
    pub(crate) queued_bytes: AtomicUsize,
}

impl Shared {
    /// Fails with [`StorageError::Poisoned`] once the engine is poisoned.
    pub(crate) fn usable(&self) -> Result<(), StorageError> {
        match self.poison.get() {
            Some(cause) => Err(StorageError::Poisoned { cause: cause.clone() }),
            None => Ok(()),
        }
    }

    /// Poisons the engine (the first cause wins) and returns the error to report for `cause`.
    ///
    /// A failed write or fsync is never retried: after a failed fsync the kernel may have dropped
    /// the dirty pages and cleared the error, so a retry could report success for data that never
    /// reached the disk ("fsyncgate"). Only a restart, which recovers from what the journal holds,
    /// is safe.
    pub(crate) fn poison(&self, cause: String) -> StorageError {
        tracing::error!(%cause, "storage poisoned: refusing all further operations until restart");
        let _ = self.poison.set(cause.clone());
        StorageError::Poisoned { cause }
    }
}

/// Limits of one group.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GroupLimits {
    /// Most requests in one group.
    pub(crate) group_batches_max: usize,
    /// A group stops growing once it holds this many bytes.
    pub(crate) group_bytes_max: usize,
}

/// The committer thread's body; returns when every sender is gone and the queue is empty, after
/// a final fsync of the journal.
pub(crate) fn run(
    receiver: Receiver<Request>,
    database: Database,
    engine: EngineId,
    shared: &Shared,
    limits: GroupLimits,
) {
    while let Ok(first) = receiver.recv() {
        let mut group_bytes = first.batch.size_bytes();
        let mut group = vec![first];
        while group.len() < limits.group_batches_max && group_bytes < limits.group_bytes_max {
            match receiver.try_recv() {
                Ok(request) => {
                    group_bytes += request.batch.size_bytes();
                    group.push(request);
                }
                Err(_) => break,
            }
        }
        shared.queued_batches.fetch_sub(group.len(), Ordering::AcqRel);
        shared.queued_bytes.fetch_sub(group_bytes, Ordering::AcqRel);

        let mut batches = Vec::with_capacity(group.len());
        let mut completions = Vec::with_capacity(group.len());
        for request in group {
            batches.push((request.batch, request.durability));
            completions.push(request.on_done);
        }
        let results = catch_unwind(AssertUnwindSafe(|| write_group(&database, engine, shared, batches)))
            .unwrap_or_else(|_| {
                let error = shared.poison("the storage committer panicked while writing a group".to_owned());
                vec![Err(error); completions.len()]
            });
        debug_assert_eq!(results.len(), completions.len(), "one result per request");
        let mut results = results.into_iter();
        for on_done in completions {
            let result = results
                .next()
                .unwrap_or_else(|| Err(StorageError::backend("commit", "internal error: the committer lost a result")));
            complete(on_done, result);
        }
    }
    // Shutdown: make everything written so far durable. Done here rather than in the engine's
    // `Drop`, which may itself run on this thread (if a completion held the last engine handle).
    if shared.usable().is_ok()
        && let Err(error) = database.persist(PersistMode::SyncData)
    {
        shared.poison(format!("final journal fsync at shutdown failed: {error}"));
    }
}

/// Writes one group and persists the journal once; returns one result per batch, in order.
fn write_group(
    database: &Database,
    engine: EngineId,
    shared: &Shared,
    batches: Vec<(WriteBatch, Durability)>,
) -> Vec<Result<(), StorageError>> {
    let count = batches.len();
    if let Err(error) = shared.usable() {
        return vec![Err(error); count];
    }
    let mut results = Vec::with_capacity(count);
    let mut sync_needed = false;
    let mut written = false;
    for (batch, durability) in batches {
        // The batch was validated when it was queued, but its trees may have been dropped since.
        let prepared = prepare(database, engine, batch);
        let fjall_batch = match prepared {
            Ok(fjall_batch) => fjall_batch,
            Err(error) => {
                results.push(Err(error));
                continue;
            }
        };
        sync_needed |= durability == Durability::Sync;
        if let Some(fjall_batch) = fjall_batch {
            if let Err(error) = fjall_batch.commit() {
                // The journal may now hold part of the group; nothing of it can be acknowledged.
                let error = shared.poison(format!("writing a batch to the journal failed: {error}"));
                return vec![Err(error); count];
            }
            written = true;
        }
        results.push(Ok(()));
    }
    if written || sync_needed {
        let mode = if sync_needed { PersistMode::SyncData } else { PersistMode::Buffer };
        if let Err(error) = database.persist(mode) {
            let error = shared.poison(format!("persisting the journal ({mode:?}) failed: {error}"));
            for result in &mut results {
                if result.is_ok() {
                    *result = Err(error.clone());
                }
            }
        }
    }
    debug_assert_eq!(results.len(), count);
    results
}

/// Turns a batch into a fjall batch (`None` for an empty batch) without writing anything.
fn prepare(
    database: &Database,
    engine: EngineId,
    batch: WriteBatch,
) -> Result<Option<fjall::OwnedWriteBatch>, StorageError> {
    for operation in batch.operations() {
        operation.tree().check(engine)?;
    }
    if batch.is_empty() {
        return Ok(None);
    }
    let operations = batch.into_operations();
    let superseded = superseded(&operations);
    // No durability on the batch itself: the committer persists once per group.
    let mut fjall_batch = database.batch().durability(None);
    for (operation, superseded) in operations.into_iter().zip(superseded) {
        if superseded {
            continue;
        }
        match operation {
            WriteOperation::Put { tree, key, value } => fjall_batch.insert(keyspace_of(&tree)?, key, value),
            WriteOperation::Delete { tree, key } => fjall_batch.remove(keyspace_of(&tree)?, key),
        }
    }
    Ok(Some(fjall_batch))
}

/// Marks the operations overridden by a later operation on the same key of the same tree.
///
/// All items of a fjall batch share one sequence number, so two writes of one key in one batch
/// would leave the winner up to the memtable's insertion behaviour; dropping all but the last
/// makes "last write wins" explicit.
fn superseded(operations: &[WriteOperation]) -> Vec<bool> {
    let mut superseded = vec![false; operations.len()];
    if operations.len() < 2 {
        return superseded;
    }
    let mut seen = HashSet::with_capacity(operations.len());
    for (index, operation) in operations.iter().enumerate().rev() {
        // By name: `prepare` checked that every handle is live, so one name is one incarnation.
        if !seen.insert((operation.tree().name(), operation.key())) {
            superseded[index] = true;
        }
    }
    superseded
}

/// The fjall keyspace behind a tree handle made by the fjall engine.
pub(crate) fn keyspace_of(tree: &crate::Tree) -> Result<&Keyspace, StorageError> {
    tree.backend::<Keyspace>().ok_or_else(|| {
        StorageError::backend("resolve tree", format!("internal error: tree {:?} has no fjall keyspace", tree.name()))
    })
}

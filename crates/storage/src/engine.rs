//! The [`Engine`] trait and the helpers built on it.

use crate::limits::KEY_BYTES_MAX;
use crate::{StorageError, Tree, WriteBatch};
use std::future::Future;
use std::ops::Bound;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// A key and its value, as returned by range scans.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// An owned iterator over a range scan. It reads a snapshot taken when the scan was opened, can
/// move to another thread, and yields `Err` if reading fails mid-scan (after which it should be
/// dropped).
///
/// An open iterator pins its snapshot: the LSM engine cannot discard versions it might still need,
/// and the memory engine copies a tree on the next write to it. Keep scans short-lived.
pub type BoxIter = Box<dyn Iterator<Item = Result<KeyValue, StorageError>> + Send + 'static>;

/// Called exactly once with the outcome of a commit. See [`Engine::commit`] for when and where.
pub type Completion = Box<dyn FnOnce(Result<(), StorageError>) + Send + 'static>;

/// The order of a range scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Ascending byte order of keys.
    Forward,
    /// Descending byte order of keys.
    Reverse,
}

/// How durable a commit must be before its completion reports success. See the crate docs for the
/// exact guarantees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Durability {
    /// Visible and handed to the operating system: survives a process crash, not a power loss.
    Buffered,
    /// On stable storage (fsynced): survives a power loss.
    Sync,
}

/// An ordered byte key-value store with named trees and atomic multi-tree batches.
///
/// The trait is object-safe; the node holds an `Arc<dyn Engine>`. All methods may be called from
/// many threads at once. Which calls block on the disk is described in the crate docs.
pub trait Engine: Send + Sync + 'static {
    /// Opens the tree `name`, creating it (empty) if it does not exist. Idempotent: opening an
    /// open tree returns a handle to the same incarnation. Creation is durable when this returns.
    ///
    /// Names are 1 to [`crate::limits::TREE_NAME_BYTES_MAX`] characters from `[A-Za-z0-9_.-]`.
    fn open_tree(&self, name: &str) -> Result<Tree, StorageError>;

    /// Removes the tree `name` and all its data. Durable when it returns; fast for a small tree
    /// (milliseconds, dominated by fsyncs), since data files are deleted in the background.
    /// Existing handles to the tree fail with [`StorageError::TreeDropped`] from then on, also
    /// after a tree of the same name is created again. Dropping a missing tree is not an error.
    fn drop_tree(&self, name: &str) -> Result<(), StorageError>;

    /// Names of all trees, sorted by byte order.
    fn list_trees(&self) -> Result<Vec<String>, StorageError>;

    /// Reads the value at `key`, or `None` if there is none. Sees every batch applied before the
    /// call and no part of any batch applied after it began.
    fn get(&self, tree: &Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;

    /// Scans the keys between `lower` and `upper` in `direction`, over a snapshot taken now: the
    /// iterator sees neither later writes nor half of any batch. A range whose lower bound is above
    /// its upper bound is empty (not an error).
    fn range(
        &self,
        tree: &Tree,
        lower: Bound<Vec<u8>>,
        upper: Bound<Vec<u8>>,
        direction: Direction,
    ) -> Result<BoxIter, StorageError>;

    /// Submits an atomic batch and returns without waiting for the disk.
    ///
    /// `on_done` is called exactly once: with `Ok` after the batch is applied (visible to `get` and
    /// `range`) and as durable as `durability` asks, or with the error that stopped it. A batch
    /// that is refused (limits, dropped tree, full queue, poisoned engine) leaves no trace.
    ///
    /// `on_done` may run on the calling thread before `commit` returns (always for the memory
    /// engine; for errors found before queueing with the fjall engine) or on the engine's
    /// committer thread. It must be quick and must not block (send on a channel, wake a task): a
    /// slow completion delays every commit after it, and one that waits for another commit or
    /// for `flush` deadlocks the committer. A panic in it is caught and logged.
    ///
    /// Concurrent `Sync` commits share fsyncs (group commit). Batches complete in the order they
    /// were applied.
    fn commit(&self, batch: WriteBatch, durability: Durability, on_done: Completion);

    /// Makes everything committed so far durable, as a `Sync` commit would; blocks until done.
    /// Used at shutdown and by tests.
    fn flush(&self) -> Result<(), StorageError>;
}

/// Commits `batch` and blocks the calling thread until it completes. Do not call it on an async
/// runtime's worker thread; use [`commit_async`] there.
pub fn commit_wait(
    engine: &(impl Engine + ?Sized),
    batch: WriteBatch,
    durability: Durability,
) -> Result<(), StorageError> {
    let (sender, receiver) = std::sync::mpsc::sync_channel(1);
    engine.commit(
        batch,
        durability,
        Box::new(move |result| {
            // The receiver is gone only if the waiting thread died; nothing is left to tell.
            let _ = sender.send(result);
        }),
    );
    // A completion dropped without being called would break the engine's contract; report it as
    // a closed engine rather than hanging.
    receiver.recv().unwrap_or(Err(StorageError::Closed))
}

/// Commits `batch` and returns a future of the outcome.
///
/// The batch is submitted *now*, when this function is called, not when the future is first
/// polled; dropping the future does not cancel the write, it only discards the outcome.
pub fn commit_async(
    engine: &(impl Engine + ?Sized),
    batch: WriteBatch,
    durability: Durability,
) -> impl Future<Output = Result<(), StorageError>> + Send + 'static {
    let (sender, receiver) = tokio::sync::oneshot::channel();
    engine.commit(
        batch,
        durability,
        Box::new(move |result| {
            // The receiver is gone if the future was dropped; the outcome is not wanted.
            let _ = sender.send(result);
        }),
    );
    async move { receiver.await.unwrap_or(Err(StorageError::Closed)) }
}

/// The bounds of all keys that start with `prefix`: from `prefix` included up to the next key
/// after every key with that prefix (excluded), or unbounded if there is none (an empty prefix, or
/// one made only of `0xFF` bytes).
pub fn prefix_range(prefix: &[u8]) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let lower = if prefix.is_empty() { Bound::Unbounded } else { Bound::Included(prefix.to_vec()) };
    // The successor: drop trailing 0xFF bytes, then increment the last byte.
    let mut successor = prefix.to_vec();
    while successor.last() == Some(&0xFF) {
        successor.pop();
    }
    let upper = match successor.last_mut() {
        Some(last) => {
            *last += 1;
            Bound::Excluded(successor)
        }
        None => Bound::Unbounded,
    };
    (lower, upper)
}

/// Scans every key of `tree` that starts with `prefix`, in `direction`.
pub fn scan_prefix(
    engine: &(impl Engine + ?Sized),
    tree: &Tree,
    prefix: &[u8],
    direction: Direction,
) -> Result<BoxIter, StorageError> {
    let (lower, upper) = prefix_range(prefix);
    engine.range(tree, lower, upper, direction)
}

/// A lower and an upper bound on keys.
pub(crate) type KeyRange = (Bound<Vec<u8>>, Bound<Vec<u8>>);

/// Rewrites range bounds into equivalent ones that both engines accept, or returns `None` if the
/// range is certainly empty.
///
/// No stored key is empty or longer than [`KEY_BYTES_MAX`], so: an empty lower bound is the same
/// as none; an empty upper bound admits nothing; and a bound `b` longer than the limit can be cut
/// to its first `KEY_BYTES_MAX` bytes `t` — a stored key is above `b` exactly when it is above `t`,
/// and below `b` exactly when it is at most `t`. The result never makes `BTreeMap::range` panic.
pub(crate) fn normalize_range(lower: Bound<Vec<u8>>, upper: Bound<Vec<u8>>) -> Option<KeyRange> {
    let lower = match lower {
        Bound::Included(key) | Bound::Excluded(key) if key.is_empty() => Bound::Unbounded,
        Bound::Included(mut key) | Bound::Excluded(mut key) if key.len() > KEY_BYTES_MAX => {
            key.truncate(KEY_BYTES_MAX);
            Bound::Excluded(key)
        }
        other => other,
    };
    let upper = match upper {
        Bound::Included(key) | Bound::Excluded(key) if key.is_empty() => return None,
        Bound::Included(mut key) | Bound::Excluded(mut key) if key.len() > KEY_BYTES_MAX => {
            key.truncate(KEY_BYTES_MAX);
            Bound::Included(key)
        }
        other => other,
    };
    if bounds_are_empty(&lower, &upper) { None } else { Some((lower, upper)) }
}

/// True if no key lies between the bounds (lower above upper, or equal with one side excluded).
pub(crate) fn bounds_are_empty(lower: &Bound<Vec<u8>>, upper: &Bound<Vec<u8>>) -> bool {
    match (lower, upper) {
        (Bound::Included(low), Bound::Included(high)) => low > high,
        (Bound::Included(low) | Bound::Excluded(low), Bound::Included(high) | Bound::Excluded(high)) => low >= high,
        _ => false,
    }
}

/// True if no stored key can equal `key` (empty or too long), so a point read can answer `None`
/// without asking the engine (which may refuse such keys).
pub(crate) fn key_is_unstorable(key: &[u8]) -> bool {
    key.is_empty() || key.len() > KEY_BYTES_MAX
}

/// Calls a completion, catching and logging a panic so that it cannot take down the committer or
/// the caller's bookkeeping.
pub(crate) fn complete(on_done: Completion, result: Result<(), StorageError>) {
    if catch_unwind(AssertUnwindSafe(move || on_done(result))).is_err() {
        tracing::error!("a commit completion panicked; the commit itself is unaffected");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn included(key: &[u8]) -> Bound<Vec<u8>> {
        Bound::Included(key.to_vec())
    }

    fn excluded(key: &[u8]) -> Bound<Vec<u8>> {
        Bound::Excluded(key.to_vec())
    }

    #[test]
    fn prefix_successor() {
        assert_eq!(prefix_range(b""), (Bound::Unbounded, Bound::Unbounded));
        assert_eq!(prefix_range(b"ab"), (included(b"ab"), excluded(b"ac")));
        assert_eq!(prefix_range(&[1, 0xFF, 0xFF]), (included(&[1, 0xFF, 0xFF]), excluded(&[2])));
        assert_eq!(prefix_range(&[0xFF, 0xFF]), (included(&[0xFF, 0xFF]), Bound::Unbounded));
    }

    #[test]
    fn normalized_bounds() {
        assert_eq!(normalize_range(included(b""), excluded(b"b")), Some((Bound::Unbounded, excluded(b"b"))));
        assert_eq!(normalize_range(Bound::Unbounded, excluded(b"")), None);
        assert_eq!(normalize_range(excluded(b"a"), excluded(b"a")), None);
        assert_eq!(normalize_range(included(b"a"), excluded(b"a")), None);
        assert_eq!(normalize_range(excluded(b"a"), included(b"a")), None);
        assert_eq!(normalize_range(included(b"a"), included(b"a")), Some((included(b"a"), included(b"a"))));
        assert_eq!(normalize_range(included(b"b"), included(b"a")), None);
        let long = vec![7; KEY_BYTES_MAX + 3];
        let cut = vec![7; KEY_BYTES_MAX];
        assert_eq!(normalize_range(included(&long), excluded(&long)), None);
        assert_eq!(
            normalize_range(included(&long), Bound::Unbounded),
            Some((Bound::Excluded(cut.clone()), Bound::Unbounded))
        );
        assert_eq!(normalize_range(Bound::Unbounded, excluded(&long)), Some((Bound::Unbounded, Bound::Included(cut))));
    }
}

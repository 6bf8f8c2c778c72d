//! The one error type of the storage layer.
//!
//! Errors are `Clone` because a single failed fsync must be reported to every waiter of its
//! group; underlying I/O errors are therefore carried as text.

use std::path::PathBuf;

/// Everything that can go wrong in storage. Each variant names the resource and, where there is
/// one, the limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// A tree name is empty, too long or has characters outside `[A-Za-z0-9_.-]`.
    #[error(
        "invalid tree name {name:?}: names are 1 to {tree_name_bytes_max} characters from [A-Za-z0-9_.-]",
        tree_name_bytes_max = crate::limits::TREE_NAME_BYTES_MAX
    )]
    InvalidTreeName {
        /// The name as given.
        name: String,
    },

    /// The tree handle refers to a tree that was dropped; open the tree again for a new handle.
    #[error("tree {name:?} was dropped; open it again to get a handle to the new, empty tree")]
    TreeDropped {
        /// Name of the dropped tree.
        name: String,
    },

    /// The tree handle was made by a different engine instance (for example one from before a
    /// simulated crash).
    #[error("tree handle {name:?} belongs to another engine instance")]
    ForeignTree {
        /// Name of the tree the handle refers to.
        name: String,
    },

    /// A key in a batch is empty; empty keys are not allowed (the LSM engine refuses them).
    #[error("a key in the batch is empty; keys must be 1 to {key_bytes_max} bytes", key_bytes_max = crate::limits::KEY_BYTES_MAX)]
    KeyEmpty,

    /// A key in a batch is longer than [`crate::limits::KEY_BYTES_MAX`].
    #[error("a key of {key_bytes} bytes exceeds key_bytes_max of {key_bytes_max} bytes")]
    KeyTooLarge {
        /// Length of the offending key.
        key_bytes: usize,
        /// The limit.
        key_bytes_max: usize,
    },

    /// A value in a batch is longer than [`crate::limits::VALUE_BYTES_MAX`].
    #[error("a value of {value_bytes} bytes exceeds value_bytes_max of {value_bytes_max} bytes")]
    ValueTooLarge {
        /// Length of the offending value.
        value_bytes: usize,
        /// The limit.
        value_bytes_max: usize,
    },

    /// A batch has too many operations or bytes.
    #[error(
        "batch of {operations} operations and {batch_bytes} bytes exceeds batch_operations_max {batch_operations_max} or batch_bytes_max {batch_bytes_max}"
    )]
    BatchTooLarge {
        /// Operations in the batch.
        operations: usize,
        /// Bytes (keys plus values) in the batch.
        batch_bytes: usize,
        /// The operation limit.
        batch_operations_max: usize,
        /// The byte limit.
        batch_bytes_max: usize,
    },

    /// The commit queue is full; the batch was not written. Retry later (back off).
    #[error(
        "commit queue full: {queued_batches} batches of {queued_bytes} bytes queued (queue_batches_max {queue_batches_max}, queue_bytes_max {queue_bytes_max}); the batch was not written, retry later"
    )]
    Overloaded {
        /// Batches waiting when the commit was refused.
        queued_batches: usize,
        /// Bytes waiting when the commit was refused.
        queued_bytes: usize,
        /// The batch limit of the queue.
        queue_batches_max: usize,
        /// The byte limit of the queue.
        queue_bytes_max: usize,
    },

    /// An earlier write or fsync failed. The engine refuses every operation from then on, because
    /// a failed fsync cannot be retried safely; restart to recover from the journal.
    #[error(
        "storage is poisoned by an earlier I/O failure and refuses all operations; restart to recover from the journal (cause: {cause})"
    )]
    Poisoned {
        /// The failure that poisoned the engine.
        cause: String,
    },

    /// The engine was shut down (or, for the memory engine, replaced by a simulated crash).
    #[error("storage engine is closed")]
    Closed,

    /// An operation of the underlying engine failed.
    #[error("storage {operation} failed: {message}")]
    Backend {
        /// What was being done, for example `"commit"` or `"fsync"`.
        operation: String,
        /// The underlying error, as text.
        message: String,
    },

    /// An I/O operation on a named path failed (opening, creating, reading the format marker).
    #[error("storage {operation} failed at {path}: {message}")]
    Io {
        /// What was being done.
        operation: String,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error, as text.
        message: String,
    },

    /// The directory is not empty but has no format marker, so it was not made by this crate.
    #[error(
        "{path} is not an onggi storage directory: it is not empty but has no {marker_file} file (expected format {expected:?}); refusing to touch it"
    )]
    NotStorageDirectory {
        /// The directory.
        path: PathBuf,
        /// Name of the marker file that is missing.
        marker_file: String,
        /// The format this build would have written.
        expected: String,
    },

    /// The directory's format marker names a format this build cannot open.
    #[error("{path} holds storage format {found:?}, but this build reads only {expected:?}")]
    FormatMismatch {
        /// The directory.
        path: PathBuf,
        /// The format found in the marker file.
        found: String,
        /// The format this build reads.
        expected: String,
    },

    /// An option given to an engine is out of range.
    #[error("invalid storage option: {reason}")]
    InvalidOptions {
        /// What is wrong, naming the option and its limit.
        reason: String,
    },
}

impl StorageError {
    /// True if the same operation may succeed when retried later without any other change
    /// (only [`StorageError::Overloaded`]).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Overloaded { .. })
    }

    /// Wraps an error of the fjall engine.
    pub(crate) fn backend(operation: &str, error: impl std::fmt::Display) -> Self {
        Self::Backend { operation: operation.to_owned(), message: error.to_string() }
    }

    /// Wraps an I/O error on a path.
    pub(crate) fn io(operation: &str, path: impl Into<PathBuf>, error: impl std::fmt::Display) -> Self {
        Self::Io { operation: operation.to_owned(), path: path.into(), message: error.to_string() }
    }
}

//! The production engine: fjall (an LSM tree) behind a group-commit thread.
//!
//! Each tree is a fjall keyspace; all keyspaces share one journal, which is what makes a batch
//! atomic across trees. Reads go through a fjall snapshot (so a read never sees half of a batch);
//! writes go through the committer thread described in the `committer` module, which gives group
//! commit and exact control of fsyncs: fjall is opened with manual journal persistence, so it never
//! syncs the journal by itself on a write.
//!
//! # Memory
//!
//! The defaults of [`FjallOptions`] aim at a whole server idling under about 30 MB: an 8 MiB block
//! cache (filled lazily, so a fresh server uses almost none of it), memtables sealed at 8 MiB per
//! tree, and at most 128 MiB of journal, which also bounds the unflushed memtable data of all trees
//! together. Only trees that received writes since their last flush hold memtable memory. Measured
//! with `examples/commit_bench.rs`: a process with an open engine and five empty trees is 3.7 MiB
//! resident.
//!
//! # Shutdown
//!
//! Dropping the engine closes the queue; the committer finishes every queued commit (each gets its
//! completion), fsyncs the journal and exits, and the drop waits for it. Tree handles that outlive the
//! engine keep their keyspace's files open but can no longer be used for writes.

use crate::committer::{self, GroupLimits, Request, Shared, keyspace_of};
use crate::engine::{complete, key_is_unstorable, normalize_range};
use crate::format::{FJALL_FORMAT, prepare_directory};
use crate::{
    BoxIter, Completion, Direction, Durability, Engine, EngineId, StorageError, Tree, WriteBatch, commit_wait,
    validate_tree_name,
};
use fjall::{Database, KeyspaceCreateOptions, KvSeparationOptions, Readable};
use std::collections::HashMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

/// The smallest journal budget fjall accepts (it panics below), in bytes.
const FJALL_JOURNAL_BYTES_MIN: u64 = 64 * 1024 * 1024;

/// The smallest memtable size this crate accepts, in bytes; smaller ones flush absurdly often.
const MEMTABLE_BYTES_MIN: u64 = 1024 * 1024;

/// Tuning of a [`FjallEngine`]. `Default` gives the values described on each field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FjallOptions {
    /// Capacity of the block cache shared by all trees, in bytes. Default 8 MiB (fjall's own
    /// default is 32 MiB, too much for the idle-memory budget; the OS page cache still caches
    /// compressed blocks behind it).
    pub cache_bytes: u64,
    /// Size at which a tree's memtable is sealed and flushed to disk, in bytes. Default 8 MiB
    /// (fjall's default is 64 MiB per tree). Applies to trees created afterwards; a tree keeps the
    /// size it was created with. At least 1 MiB.
    pub memtable_bytes_max: u64,
    /// Total size of journal files before fjall forces the oldest memtables to disk, in bytes.
    /// Bounds recovery time and unflushed memory. Default 128 MiB; at least 64 MiB (fjall's
    /// minimum).
    pub journal_bytes_max: u64,
    /// fjall's background threads for flushes and compactions. Default 3. With more than one,
    /// fjall's worker 0 keeps itself for flushes by handing every compaction message it receives
    /// back to the queue at once, so while the other workers are all busy it spins on that
    /// message: with 2 workers that was the whole length of each compaction (about a tenth of a
    /// three-node cluster's CPU under writes, measured with `perf`); with 3, the second
    /// compaction message of a flush is taken by the third worker, usually finds nothing to do,
    /// and frees it at once (2% instead of 13% of the nodes' samples). One worker does not spin
    /// but queues flushes behind compactions. At least 1.
    pub worker_threads: usize,
    /// Most commits waiting for the committer; beyond it commits fail with
    /// [`StorageError::Overloaded`]. Default 8192.
    pub queue_batches_max: usize,
    /// Most bytes (keys plus values) of the waiting commits; beyond it commits fail with
    /// [`StorageError::Overloaded`], except that a commit is always accepted into an empty queue.
    /// Default 128 MiB.
    pub queue_bytes_max: usize,
    /// Most commits written under one fsync. Default 1024.
    pub group_batches_max: usize,
    /// A group stops taking more commits once it holds this many bytes. Default 16 MiB.
    pub group_bytes_max: usize,
    /// If set, values of at least this many bytes are stored in separate blob files (key-value
    /// separation), which spares large items from being rewritten by every compaction. Applies to
    /// trees created afterwards. Default `None` (off): simpler, and most items are small.
    pub kv_separation_bytes_min: Option<u32>,
}

impl Default for FjallOptions {
    fn default() -> Self {
        Self {
            cache_bytes: 8 * 1024 * 1024,
            memtable_bytes_max: 8 * 1024 * 1024,
            journal_bytes_max: 128 * 1024 * 1024,
            worker_threads: 3,
            queue_batches_max: 8192,
            queue_bytes_max: 128 * 1024 * 1024,
            group_batches_max: 1024,
            group_bytes_max: 16 * 1024 * 1024,
            kv_separation_bytes_min: None,
        }
    }
}

impl FjallOptions {
    /// Checks every option against its limit.
    pub fn validate(&self) -> Result<(), StorageError> {
        let problem = if self.memtable_bytes_max < MEMTABLE_BYTES_MIN {
            Some(format!("memtable_bytes_max {} is below {MEMTABLE_BYTES_MIN}", self.memtable_bytes_max))
        } else if self.journal_bytes_max < FJALL_JOURNAL_BYTES_MIN {
            Some(format!(
                "journal_bytes_max {} is below fjall's minimum {FJALL_JOURNAL_BYTES_MIN}",
                self.journal_bytes_max
            ))
        } else if self.worker_threads == 0 {
            Some("worker_threads must be at least 1".to_owned())
        } else if self.queue_batches_max == 0 || self.queue_bytes_max == 0 {
            Some("queue_batches_max and queue_bytes_max must be at least 1".to_owned())
        } else if self.group_batches_max == 0 || self.group_bytes_max == 0 {
            Some("group_batches_max and group_bytes_max must be at least 1".to_owned())
        } else {
            None
        };
        match problem {
            Some(reason) => Err(StorageError::InvalidOptions { reason }),
            None => Ok(()),
        }
    }
}

/// The fjall-backed [`Engine`]. See the module docs and the crate docs.
pub struct FjallEngine {
    /// This instance's identity, recorded in its tree handles.
    id: EngineId,
    /// The storage directory.
    path: PathBuf,
    /// The options it was opened with.
    options: FjallOptions,
    /// The fjall database.
    database: Database,
    /// Handles of the trees opened so far, by name. Also serializes `open_tree` and `drop_tree`.
    trees: Mutex<HashMap<String, Tree>>,
    /// Poison flag and queue accounting, shared with the committer.
    shared: Arc<Shared>,
    /// The committer's queue; `None` only while dropping.
    sender: Option<Sender<Request>>,
    /// The committer thread; `None` only while dropping.
    committer: Option<JoinHandle<()>>,
}

impl FjallEngine {
    /// Opens the storage directory at `path`, creating it if it is missing or empty.
    ///
    /// Fails if the directory's format marker names another format, if the directory is not empty
    /// but has no marker, or if another process has it open (fjall holds a lock file).
    pub fn open(path: impl AsRef<Path>, options: FjallOptions) -> Result<Self, StorageError> {
        options.validate()?;
        let path = path.as_ref().to_path_buf();
        prepare_directory(&path, FJALL_FORMAT)?;
        let database = Database::builder(&path)
            .cache_size(options.cache_bytes)
            // The committer decides when the journal is persisted; fjall must not do it per batch.
            .manual_journal_persist(true)
            .worker_threads(options.worker_threads)
            .max_journaling_size(options.journal_bytes_max)
            .open()
            .map_err(|error| match error {
                fjall::Error::Locked => {
                    StorageError::io("open", &path, "the directory is in use by another process (lock file is held)")
                }
                error => StorageError::io("open", &path, error),
            })?;

        let id = EngineId::new_unique();
        let shared = Arc::new(Shared::default());
        let (sender, receiver) = mpsc::channel();
        let limits =
            GroupLimits { group_batches_max: options.group_batches_max, group_bytes_max: options.group_bytes_max };
        let committer = std::thread::Builder::new()
            .name("onggi-storage-commit".to_owned())
            .spawn({
                let database = database.clone();
                let shared = Arc::clone(&shared);
                move || committer::run(receiver, database, id, &shared, limits)
            })
            .map_err(|error| StorageError::io("start committer thread", &path, error))?;
        tracing::debug!(path = %path.display(), ?options, "opened fjall storage");
        Ok(Self {
            id,
            path,
            options,
            database,
            trees: Mutex::default(),
            shared,
            sender: Some(sender),
            committer: Some(committer),
        })
    }

    /// The storage directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The options the engine was opened with.
    pub fn options(&self) -> &FjallOptions {
        &self.options
    }

    /// Locks the tree map. Every update of it is a single map operation, so a lock poisoned by a
    /// panic elsewhere still guards a consistent map and is recovered.
    fn lock_trees(&self) -> MutexGuard<'_, HashMap<String, Tree>> {
        self.trees.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Creation options for new keyspaces.
    fn keyspace_options(&self) -> KeyspaceCreateOptions {
        let options = KeyspaceCreateOptions::default().max_memtable_size(self.options.memtable_bytes_max);
        match self.options.kv_separation_bytes_min {
            Some(bytes) => options.with_kv_separation(Some(KvSeparationOptions::default().separation_threshold(bytes))),
            None => options,
        }
    }

    /// Checks the engine and the handle, and returns the handle's keyspace.
    fn readable_keyspace<'tree>(&self, tree: &'tree Tree) -> Result<&'tree fjall::Keyspace, StorageError> {
        self.shared.usable()?;
        tree.check(self.id)?;
        keyspace_of(tree)
    }

    /// Checks a batch and reserves room for it in the queue.
    fn admit(&self, batch: &WriteBatch) -> Result<(), StorageError> {
        self.shared.usable()?;
        batch.validate(self.id)?;
        let batch_bytes = batch.size_bytes();
        let batches_before = self.shared.queued_batches.fetch_add(1, Ordering::AcqRel);
        let bytes_before = self.shared.queued_bytes.fetch_add(batch_bytes, Ordering::AcqRel);
        let full = batches_before >= self.options.queue_batches_max
            || (batches_before > 0 && bytes_before.saturating_add(batch_bytes) > self.options.queue_bytes_max);
        if full {
            self.release(batch_bytes);
            return Err(StorageError::Overloaded {
                queued_batches: batches_before,
                queued_bytes: bytes_before,
                queue_batches_max: self.options.queue_batches_max,
                queue_bytes_max: self.options.queue_bytes_max,
            });
        }
        Ok(())
    }

    /// Gives back the queue room of one batch that will not be queued after all.
    fn release(&self, batch_bytes: usize) {
        self.shared.queued_batches.fetch_sub(1, Ordering::AcqRel);
        self.shared.queued_bytes.fetch_sub(batch_bytes, Ordering::AcqRel);
    }
}

impl Engine for FjallEngine {
    fn open_tree(&self, name: &str) -> Result<Tree, StorageError> {
        validate_tree_name(name)?;
        self.shared.usable()?;
        let mut trees = self.lock_trees();
        if let Some(tree) = trees.get(name) {
            return Ok(tree.clone());
        }
        let keyspace = self
            .database
            .keyspace(name, || self.keyspace_options())
            .map_err(|error| StorageError::backend("open tree", format!("{name}: {error}")))?;
        let tree = Tree::new(name, self.id, Box::new(keyspace));
        trees.insert(name.to_owned(), tree.clone());
        Ok(tree)
    }

    fn drop_tree(&self, name: &str) -> Result<(), StorageError> {
        validate_tree_name(name)?;
        self.shared.usable()?;
        let mut trees = self.lock_trees();
        let keyspace = match trees.remove(name) {
            Some(tree) => {
                // Mark first: commits that have not been written yet now fail instead of writing
                // into the dropped keyspace.
                tree.mark_dropped();
                keyspace_of(&tree)?.clone()
            }
            None if self.database.keyspace_exists(name) => self
                .database
                .keyspace(name, || self.keyspace_options())
                .map_err(|error| StorageError::backend("drop tree", format!("{name}: {error}")))?,
            None => return Ok(()),
        };
        self.database
            .delete_keyspace(keyspace)
            .map_err(|error| StorageError::backend("drop tree", format!("{name}: {error}")))
    }

    fn list_trees(&self) -> Result<Vec<String>, StorageError> {
        self.shared.usable()?;
        let mut names: Vec<String> =
            self.database.list_keyspace_names().iter().map(|name| name.as_ref().to_owned()).collect();
        names.sort_unstable();
        Ok(names)
    }

    fn get(&self, tree: &Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let keyspace = self.readable_keyspace(tree)?;
        if key_is_unstorable(key) {
            return Ok(None);
        }
        // A snapshot, not `Keyspace::get`: the latter reads the newest entries, including those
        // of a batch that is still being applied.
        let value = self.database.snapshot().get(keyspace, key).map_err(|error| StorageError::backend("get", error))?;
        Ok(value.map(|value| value.to_vec()))
    }

    fn range(
        &self,
        tree: &Tree,
        lower: Bound<Vec<u8>>,
        upper: Bound<Vec<u8>>,
        direction: Direction,
    ) -> Result<BoxIter, StorageError> {
        let keyspace = self.readable_keyspace(tree)?;
        let Some(bounds) = normalize_range(lower, upper) else {
            return Ok(Box::new(std::iter::empty()));
        };
        // The iterator owns a clone of the snapshot, which keeps the versions it reads alive.
        let iter = self.database.snapshot().range(keyspace, bounds);
        let iter: Box<dyn Iterator<Item = fjall::Guard> + Send> = match direction {
            Direction::Forward => Box::new(iter),
            Direction::Reverse => Box::new(iter.rev()),
        };
        Ok(Box::new(iter.map(|guard| {
            guard
                .into_inner()
                .map(|(key, value)| (key.to_vec(), value.to_vec()))
                .map_err(|error| StorageError::backend("range scan", error))
        })))
    }

    fn commit(&self, batch: WriteBatch, durability: Durability, on_done: Completion) {
        if let Err(error) = self.admit(&batch) {
            complete(on_done, Err(error));
            return;
        }
        let batch_bytes = batch.size_bytes();
        let request = Request { batch, durability, on_done };
        let Some(sender) = &self.sender else {
            self.release(batch_bytes);
            complete(request.on_done, Err(StorageError::Closed));
            return;
        };
        if let Err(mpsc::SendError(request)) = sender.send(request) {
            // The committer thread is gone (it can only end early by a panic outside a group).
            self.release(batch_bytes);
            complete(request.on_done, Err(StorageError::Closed));
        }
    }

    fn flush(&self) -> Result<(), StorageError> {
        // An empty Sync batch is a barrier: it completes after an fsync that follows every commit
        // queued before it.
        commit_wait(self, WriteBatch::new(), Durability::Sync)
    }
}

impl Drop for FjallEngine {
    fn drop(&mut self) {
        // Closing the queue lets the committer drain it, complete every request and exit.
        // The committer then fsyncs the journal one last time and exits.
        drop(self.sender.take());
        let Some(committer) = self.committer.take() else { return };
        if committer.thread().id() == std::thread::current().id() {
            // The last handle was dropped by a completion, on the committer itself: it cannot
            // join itself, and it exits on its own once the completion returns.
            return;
        }
        if committer.join().is_err() {
            tracing::error!(path = %self.path.display(), "the storage committer thread panicked");
        }
    }
}

impl std::fmt::Debug for FjallEngine {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("FjallEngine").field("path", &self.path).field("options", &self.options).finish()
    }
}

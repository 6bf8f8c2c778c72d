//! Ordered byte key-value storage with named trees, behind one trait.
//!
//! # The idea
//!
//! Storage is deliberately ignorant of DynamoDB. It offers named **trees** (ordered maps from byte
//! keys to byte values, compared as unsigned bytes, like `memcmp`), point reads, ordered range scans
//! over a consistent snapshot, and **atomic write batches** spanning any number of trees. Higher
//! layers (the node) encode items, versions, tombstones, index rows and hints into keys and values
//! themselves; the only contract here is "bytes in, the same bytes out, in byte order".
//!
//! Everything goes through the object-safe [`Engine`] trait so that the node holds an
//! `Arc<dyn Engine>` and does not care which implementation it runs on:
//!
//! - [`MemoryEngine`]: `BTreeMap`s behind a lock, for unit tests and the deterministic simulator.
//!   It can simulate a power loss ([`MemoryEngine::simulate_crash`]) and a failing fsync
//!   ([`MemoryEngine::inject_sync_failure`]).
//! - [`FjallEngine`]: the embedded LSM engine [fjall](https://docs.rs/fjall) with a group-commit
//!   thread in front of it. This is the production engine.
//!
//! Both pass one conformance suite ([`conformance`]); a behaviour that is not in the suite is not
//! part of the contract.
//!
//! # What durability means exactly
//!
//! A commit names a [`Durability`]:
//!
//! - [`Durability::Sync`]: when the completion reports `Ok`, the batch is on stable storage: it
//!   survives a process crash (`kill -9`), a kernel crash and a power loss, under the disk
//!   assumptions below.
//! - [`Durability::Buffered`]: when the completion reports `Ok`, the batch is visible and has been
//!   handed to the operating system: it survives a process crash, but a kernel crash or power loss
//!   may lose it. It becomes stable with the next `Sync` commit that completes after it, or
//!   [`Engine::flush`].
//!
//! Batches are atomic in every case: after any crash a batch is either entirely present or entirely
//! absent, and durable batches are never reordered (if batch B committed after A survives, A
//! survives too).
//!
//! A write is **visible** to `get` and `range` as soon as it is applied, which can be a moment
//! *before* its completion runs and before its fsync. A reader can therefore observe a value that
//! a crash later takes away. Higher layers must treat only a completed commit as acknowledged, never
//! a value they happened to read.
//!
//! # Why group commit
//!
//! An fsync costs about as much for one small batch as for a thousand: the disk must flush its
//! write cache either way (hundreds of microseconds to milliseconds). Syncing each commit on its own
//! caps a node at roughly one commit per fsync. Instead, [`FjallEngine`] feeds all commits through
//! one committer thread. It writes every batch that is queued (each as its own atomic batch), makes
//! one fsync for the whole group, then completes every waiter. While it waits on the disk, new
//! commits queue up and form the next group, so throughput grows with the number of concurrent
//! writers while each writer still gets a real fsync before its acknowledgement. The committer is
//! also the reason [`Engine::commit`] takes a completion callback instead of blocking: a caller on
//! an async runtime never blocks a worker thread on the disk ([`commit_async`] wraps it in a
//! future, [`commit_wait`] blocks for callers that may).
//!
//! # Assumptions about the disk
//!
//! - `fdatasync` is honest: when it returns success, every byte written to the file before it is
//!   on stable media (no lying write cache, or one backed by power-loss protection).
//! - fjall preallocates each journal file and fsyncs the file and its directory when it creates
//!   it, so `fdatasync` (which skips metadata such as timestamps) is enough for the journal.
//! - A write torn by a crash can only damage the tail of the journal, which fjall detects with the
//!   per-batch checksum and drops on recovery. Those batches were never acknowledged as `Sync`.
//!   fjall cannot yet tell corruption in the *middle* of a journal from a torn tail
//!   (fjall-rs/fjall#311); we rely on the disk not corrupting data at rest.
//! - **A failed fsync is fatal and never retried.** After a failed fsync, Linux may already have
//!   dropped the dirty pages and cleared the error, so a retry can "succeed" without the data
//!   ever reaching the disk (the 2018 "fsyncgate" finding of PostgreSQL). The engine reports the
//!   failure to every waiter of that group and then refuses every further operation
//!   ([`StorageError::Poisoned`]). The node must restart, which recovers exactly what the journal
//!   holds.
//!
//! # Which calls block
//!
//! `get`, `range` (and iterating its result), `open_tree`, `drop_tree`, `list_trees` and `flush`
//! may touch the disk and block the calling thread: a cache miss is a disk read, tree creation and
//! removal are fsynced, and `flush` waits for an fsync. Callers on an async runtime should use
//! `spawn_blocking` unless the read is known to be small and hot. [`Engine::commit`] never blocks
//! on the disk.
//!
//! # Formats
//!
//! [`FjallEngine`] writes a marker file ([`FORMAT_FILE_NAME`]) holding [`FJALL_FORMAT`] when it
//! creates a directory, and refuses to open a directory whose marker differs or is missing from a
//! non-empty directory. Any change to how this crate lays out data gets a new marker value.

#![warn(missing_docs)]

mod batch;
mod committer;
pub mod conformance;
mod engine;
mod error;
mod fjall_engine;
mod format;
pub mod limits;
mod memory;
mod tree;

pub use batch::{WriteBatch, WriteOperation};
pub use engine::{
    BoxIter, Completion, Direction, Durability, Engine, KeyValue, commit_async, commit_wait, prefix_range, scan_prefix,
};
pub use error::StorageError;
pub use fjall_engine::{FjallEngine, FjallOptions};
pub use format::{FJALL_FORMAT, FORMAT_FILE_NAME};
pub use memory::MemoryEngine;
pub use tree::{EngineId, Tree, validate_tree_name};

//! Every size limit of the storage layer, in one place.
//!
//! Both engines enforce the same limits (a batch that one engine refuses, the other refuses too),
//! so that code tested against [`crate::MemoryEngine`] behaves the same on [`crate::FjallEngine`].

/// Longest tree name, in bytes. Names are ASCII (`[A-Za-z0-9_.-]`), so bytes and characters agree.
pub const TREE_NAME_BYTES_MAX: usize = 200;

/// Longest key, in bytes.
///
/// DynamoDB keys are at most 2048 bytes of partition key plus 1024 bytes of sort key; an index row
/// carries both the index key and the base key, plus prefixes and escaping added by the node.
/// 16 KiB leaves room for all of that while keeping LSM index blocks small.
pub const KEY_BYTES_MAX: usize = 16 * 1024;

/// Longest value, in bytes. DynamoDB items are at most 400 KB; the margin is for node metadata and
/// for values that bundle several items (hints, transaction records).
pub const VALUE_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Most operations (puts plus deletes) in one write batch.
pub const BATCH_OPERATIONS_MAX: usize = 65_536;

/// Most bytes (keys plus values) in one write batch. A full TransactWriteItems (100 items of
/// 400 KB) plus its index rows fits.
pub const BATCH_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Most unsynced (`Buffered`) batches the memory engine keeps for crash simulation; beyond it the
/// oldest become durable on their own, as an OS writes back dirty pages.
pub const UNSYNCED_BATCHES_MAX: usize = 10_000;

// lsm-tree (under fjall) stores key lengths in 16 bits and panics beyond that.
const _: () = assert!(KEY_BYTES_MAX <= u16::MAX as usize);
// lsm-tree stores value lengths in 32 bits.
const _: () = assert!(VALUE_BYTES_MAX <= u32::MAX as usize);
// A batch holding a single largest key and value must be accepted.
const _: () = assert!(KEY_BYTES_MAX + VALUE_BYTES_MAX <= BATCH_BYTES_MAX);
// fjall refuses keyspace names of 256 bytes or more.
const _: () = assert!(TREE_NAME_BYTES_MAX < 256);

//! The acceptor states of recently used items, in memory: what saves a replica two storage reads
//! per consensus step.
//!
//! A replica's state for an item is its committed version (the record in the items tree) and its
//! promise and accepted proposal (the `consensus.<id>` tree). Every consensus step — prepare,
//! accept, commit — loaded both from storage, so one strict write cost the item's replicas six
//! to seven pairs of point reads, about an eighth of a three-node cluster's CPU under workload A
//! (measured with `perf`; an LSM point read of an item that is not in the memtable decodes a
//! block). Here the states of recently used items are kept, bounded by their size, and a step
//! finds the state it needs in memory — always for the second and third steps of one write.
//!
//! **Exactly storage.** An entry is only ever what storage holds for the item. Entries are set
//! either from a load of storage or by the storage completion of a write of the item's state, and
//! removed by the completion of a failed write or of any other change of the item's record or
//! consensus state (tombstone collection, dropping a partition given away, a cluster of one's
//! single-node path). All of these happen under the item's lock, and every writer keeps the lock
//! until its write's completion has run — even when its caller stops waiting, since the guard
//! moves into the completion — so no load under the lock can meet a write in flight, and
//! completions (which run in commit order) leave the entry as the last write made it.
//!
//! Bounded by [`ACCEPTORS_BYTES_MAX`] of estimated size (quick_cache's S3-FIFO-like policy, which
//! keeps what is used again); a restarted node starts empty.

use std::sync::Arc;

use onggi_core::paxos::Acceptor;
use onggi_model::value::item_size_bytes;

use super::wire::Value;

/// The cache's budget, in estimated bytes of the states held.
const ACCEPTORS_BYTES_MAX: u64 = 8 * 1024 * 1024;

/// Items the cache expects to hold, for sizing its table (about 1 KB each).
const ACCEPTORS_EXPECTED: usize = 8 * 1024;

/// One item's state as storage holds it.
pub(crate) struct Cached {
    /// The acceptor: promise, accepted proposal, committed version.
    pub(crate) acceptor: Acceptor<Value>,
    /// Whether a consensus-state entry exists for the item.
    pub(crate) present: bool,
    weight: u64,
}

#[derive(Clone)]
struct Weight;

impl quick_cache::Weighter<Vec<u8>, Arc<Cached>> for Weight {
    fn weight(&self, _key: &Vec<u8>, value: &Arc<Cached>) -> u64 {
        value.weight
    }
}

fn value_size(value: &Value) -> u64 {
    value.item.as_ref().map_or(0, item_size_bytes) as u64
}

/// The states of recently used items of every table (see the module docs).
pub(crate) struct Acceptors {
    cache: quick_cache::sync::Cache<Vec<u8>, Arc<Cached>, Weight>,
}

impl Default for Acceptors {
    fn default() -> Self {
        Acceptors { cache: quick_cache::sync::Cache::with_weighter(ACCEPTORS_EXPECTED, ACCEPTORS_BYTES_MAX, Weight) }
    }
}

fn slot(table_id: &str, key: &[u8]) -> Vec<u8> {
    let mut slot = Vec::with_capacity(table_id.len() + 1 + key.len());
    slot.extend_from_slice(table_id.as_bytes());
    slot.push(0);
    slot.extend_from_slice(key);
    slot
}

impl Acceptors {
    /// The item's state, if held. Call under the item's lock.
    pub(crate) fn get(&self, table_id: &str, key: &[u8]) -> Option<Arc<Cached>> {
        self.cache.get(&slot(table_id, key))
    }

    /// Holds `acceptor` as the item's state in storage (`present`: with a consensus-state entry).
    /// Call under the item's lock, after loading it from storage or in the completion of the
    /// write that stored it.
    pub(crate) fn set(&self, table_id: &str, key: &[u8], acceptor: Acceptor<Value>, present: bool) {
        let slot = slot(table_id, key);
        let sizes = [&acceptor.accepted, &acceptor.committed]
            .into_iter()
            .flatten()
            .map(|version| value_size(&version.value))
            .sum::<u64>();
        // Keys, ballots, lineages and the allocations around them.
        let weight = sizes + slot.len() as u64 + 256;
        self.cache.insert(slot, Arc::new(Cached { acceptor, present, weight }));
    }

    /// Forgets the item's state: its storage changed in a way not told here, or a write of it
    /// failed. Call under the item's lock, in the completion of that change.
    pub(crate) fn forget(&self, table_id: &str, key: &[u8]) {
        self.cache.remove(&slot(table_id, key));
    }
}

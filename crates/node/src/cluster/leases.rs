//! Leases: what lets a coordinator's next write on an item skip the prepare round.
//!
//! Every accept a coordinator sends carries a fresh ballot of its own; replicas that accept the
//! proposal while holding nothing newer also promise that ballot (`Acceptor::accept_promising`
//! in the core, where the argument for its safety is). When a quorum did, the operation ends
//! with a [`Lease`] — the item's chosen version and the promised ballot — which this table keeps
//! for the next operation this node coordinates on the item: it starts at the accept, one round
//! trip and one durable write per replica instead of two (`Proposer::resume`). A lease is taken
//! out of the table when used; one that another coordinator's prepare has overtaken only makes
//! that accept fail, and the operation goes on with a full round.
//!
//! Kept in memory only (a restarted node starts without), per layout epoch (a lease is formed
//! with one epoch's replica sets), for at most [`LEASE_AGE_MAX`] (the leased ballot becomes the
//! written version's timestamp, so it must stay recent: lineages keep a minute of writers), and
//! for at most [`LEASES_MAX`] items at once (each holds an item).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use onggi_core::paxos::Lease;

use super::wire::Value;

/// Leases kept at most; when full, expired ones are dropped, and new ones refused if none were.
const LEASES_MAX: usize = 16_384;

/// Expired leases are dropped every this many kept ones (and whenever the table is full).
const PRUNE_EVERY: u64 = 1024;

/// A lease older than this is not used.
const LEASE_AGE_MAX: Duration = Duration::from_secs(10);

struct Held {
    epoch: u64,
    formed: Instant,
    lease: Lease<Value>,
}

/// The leases of the items this node coordinated writes on lately.
#[derive(Default)]
pub(crate) struct Leases {
    held: Mutex<HashMap<Vec<u8>, Held>>,
    formed: AtomicU64,
    used: AtomicU64,
}

/// Counters for the status page.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct LeaseCounts {
    /// Operations that ended with a lease.
    pub formed: u64,
    /// Operations that started from one.
    pub used: u64,
}

fn slot(table_id: &str, key: &[u8]) -> Vec<u8> {
    let mut slot = Vec::with_capacity(table_id.len() + 1 + key.len());
    slot.extend_from_slice(table_id.as_bytes());
    slot.push(0);
    slot.extend_from_slice(key);
    slot
}

impl Leases {
    /// The item's lease, taken out of the table, if one of layout epoch `epoch` is recent enough.
    pub(crate) fn take(&self, table_id: &str, key: &[u8], epoch: u64) -> Option<Lease<Value>> {
        let held = self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&slot(table_id, key))?;
        if held.epoch != epoch || held.formed.elapsed() > LEASE_AGE_MAX {
            return None;
        }
        self.used.fetch_add(1, Ordering::Relaxed);
        Some(held.lease)
    }

    /// Keeps the lease an operation on the item ended with, formed in layout epoch `epoch`.
    pub(crate) fn keep(&self, table_id: &str, key: &[u8], epoch: u64, lease: Lease<Value>) {
        let formed = self.formed.fetch_add(1, Ordering::Relaxed);
        let mut held = self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if held.len() >= LEASES_MAX || formed.is_multiple_of(PRUNE_EVERY) {
            held.retain(|_, held| held.formed.elapsed() <= LEASE_AGE_MAX);
            if held.len() >= LEASES_MAX {
                return;
            }
        }
        held.insert(slot(table_id, key), Held { epoch, formed: Instant::now(), lease });
    }

    pub(crate) fn counts(&self) -> LeaseCounts {
        LeaseCounts { formed: self.formed.load(Ordering::Relaxed), used: self.used.load(Ordering::Relaxed) }
    }
}

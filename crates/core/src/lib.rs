//! onggi's core: the algorithms that make a cluster, as pure state machines.
//!
//! **Architecture invariant:** nothing in this crate performs I/O, reads a clock or draws hidden
//! randomness. Time arrives as an argument (`physical_ms`), randomness as a seeded generator, so a
//! deterministic simulator can run whole clusters from a seed. The node crate is the thin shell
//! that feeds these machines real time, sockets and disks.
//!
//! What it holds: hybrid logical clocks ([`hlc`]), the seeded generator ([`rng`]), the versioned
//! item record every replica stores ([`record`]) and a replica's persisted consensus state
//! ([`consensus_state`]), the placement-aware key layout ([`keys`]), the partition layout that
//! places partitions on nodes ([`layout`]), per-item consensus ([`paxos`]), Merkle trees for
//! anti-entropy ([`merkle`]), when a deleted item's tombstone may be collected ([`tombstones`]) and gossip membership with failure detection ([`membership`]). The
//! simulator (`onggi-sim`) runs them together under faults.

pub mod consensus_state;
pub mod hlc;
pub mod keys;
pub mod layout;
pub mod membership;
pub mod merkle;
pub mod paxos;
pub mod record;
pub mod rng;
pub mod tombstones;

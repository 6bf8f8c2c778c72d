//! onggi's core: the algorithms that make a cluster, as pure state machines.
//!
//! **Architecture invariant:** nothing in this crate performs I/O, reads a clock or draws hidden
//! randomness. Time arrives as an argument (`physical_ms`), randomness as a seeded generator, so a
//! deterministic simulator can run whole clusters from a seed. The node crate is the thin shell
//! that feeds these machines real time, sockets and disks.
//!
//! Today this holds the pieces a single node already needs and the cluster will build on:
//! hybrid logical clocks ([`hlc`]), the versioned item record every replica stores ([`record`]),
//! the placement-aware key layout ([`keys`]), and the partition layout that places partitions on
//! nodes ([`layout`]).

pub mod hlc;
pub mod keys;
pub mod layout;
pub mod membership;
pub mod merkle;
pub mod paxos;
pub mod record;
pub mod rng;

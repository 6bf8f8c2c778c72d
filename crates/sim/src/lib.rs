//! The deterministic simulator: whole onggi clusters of pure state machines, run from a seed.
//!
//! A [`Config`] (drawn from the seed by [`Config::from_seed`], or written by hand) describes a
//! cluster of 3–7 nodes, a handful of items, clients and the faults to inject; [`run`] plays it
//! out in simulated time and returns a [`Report`] whose `violations` must be empty. Everything —
//! message delays, losses, duplicates, partitions, crashes, pauses, clock skew, client choices —
//! is drawn from one seeded generator and events are processed in (time, sequence) order, so a
//! seed replays exactly: `cargo run -p onggi-sim --release -- --seed S` (see `main.rs`).
//!
//! The nodes run the real core: [`onggi_core::paxos`] for every strict-mode operation,
//! [`onggi_core::layout`] to place items on replicas, [`onggi_core::hlc`] clocks (skewed per
//! node) for ballots, and [`onggi_core::merkle`] trees and comparisons for anti-entropy. What the
//! simulator adds is the shell a real node has: it delivers messages, persists acceptor state
//! before replying (and loses everything not yet persisted in a crash), keeps timers, retries
//! with randomized back-off, and runs background repair — finishing abandoned proposals, and
//! comparing each partition's Merkle trees with another replica's and exchanging the versions
//! under the leaves that differ. The [`world`] module holds that shell; the checkers are here.
//!
//! **Layout changes.** Most seeds also change the partition layout while clients run and faults
//! happen ([`Reconfiguration`]: one or two nodes join, or are decommissioned), by the epoch
//! protocol described in `world.rs`: joint quorums of the old and new replica sets while the
//! layout changes, new replicas catching up from a majority of the old ones, and the switch to
//! the new layout alone once a majority of every moved partition's new replicas has. The same
//! checkers judge the result, against the new layout's replicas.
//!
//! **Checkers.** (1) Every key's history — what clients invoked, when, and what they were told —
//! is linearizable ([`linearizability`]); acknowledged writes that were lost, and reads that went
//! back in time, both show up as non-linearizable histories. The history ends with a strict read
//! of every key after the cluster has healed, so a lost acknowledged write cannot hide by never
//! being read. (2) After the faults stop, the replicas converge within a bounded time
//! ([`Config::heal_bound_ms`]): every item has equal committed versions and no unfinished
//! proposals on all its replicas, and every partition equal Merkle roots on all its replicas.
//! (3) At the end every node's Merkle trees, kept up to date write by write, equal trees rebuilt
//! from its store.

pub mod linearizability;
pub mod world;

pub use world::{Config, Faults, Reconfiguration, Report, Sabotage, run};

//! Fault injection for tests: cut or slow the links to chosen peers, without root.
//!
//! Tests of real faults (a killed process, a dropped packet, a kernel that stops answering)
//! should prefer real mechanisms: `kill -9`/`SIGSTOP`, a TCP proxy between nodes that can stop
//! forwarding, or network namespaces with `iptables`/`tc netem`. Those exercise the operating
//! system's behaviour too. This switch exists so that Rust integration tests can partition nodes
//! of one process cheaply and deterministically: a blocked peer is treated as unreachable through
//! a silent network, so requests to it time out, as they would in a partition.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::lock;

/// The fault switches of one transport, per peer listen address. Get it with
/// [`crate::Transport::faults`].
#[derive(Debug, Default)]
pub struct Faults {
    peers: Mutex<HashMap<SocketAddr, Arc<PeerFaults>>>,
}

/// One peer's switches, shared by every connection to and from it (so a change applies to
/// established connections at once: each frame reads them).
#[derive(Debug, Default)]
pub(crate) struct PeerFaults {
    /// Drop every frame to and from the peer.
    pub(crate) blocked: AtomicBool,
    /// Hold every outgoing frame to the peer this many microseconds before writing it.
    pub(crate) delay_micros: AtomicU64,
}

impl PeerFaults {
    pub(crate) fn is_blocked(&self) -> bool {
        self.blocked.load(Ordering::Relaxed)
    }

    pub(crate) fn delay(&self) -> Option<Duration> {
        match self.delay_micros.load(Ordering::Relaxed) {
            0 => None,
            micros => Some(Duration::from_micros(micros)),
        }
    }
}

impl Faults {
    /// Drops every frame this node sends to `peer` and every frame it receives from `peer` (on
    /// connections in either direction), until [`Faults::unblock`]. Requests to the peer wait for
    /// their timeout; one-way sends report success and vanish, as on a cut network. To partition
    /// two nodes completely, block each on the other (then neither even sees the other's frames
    /// arrive), though blocking one side already stops all traffic between them.
    pub fn block(&self, peer: SocketAddr) {
        self.peer(peer).blocked.store(true, Ordering::Relaxed);
    }

    /// Lets frames to and from `peer` through again. Requests that timed out meanwhile stay
    /// failed; answers to them that arrive later are dropped.
    pub fn unblock(&self, peer: SocketAddr) {
        self.peer(peer).blocked.store(false, Ordering::Relaxed);
    }

    /// Whether `peer` is blocked.
    pub fn is_blocked(&self, peer: SocketAddr) -> bool {
        self.peer(peer).is_blocked()
    }

    /// Holds every frame to `peer` (requests, one-way messages, and answers to its requests)
    /// for `delay` before writing it; zero removes the delay. Frames keep their order.
    pub fn set_delay(&self, peer: SocketAddr, delay: Duration) {
        let micros = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.peer(peer).delay_micros.store(micros, Ordering::Relaxed);
    }

    /// Removes every switch.
    pub fn clear(&self) {
        for peer in lock(&self.peers).values() {
            peer.blocked.store(false, Ordering::Relaxed);
            peer.delay_micros.store(0, Ordering::Relaxed);
        }
    }

    /// The switches of `peer`, created (all off) on first use.
    pub(crate) fn peer(&self, peer: SocketAddr) -> Arc<PeerFaults> {
        lock(&self.peers).entry(peer).or_default().clone()
    }
}

//! Membership gossip and the local failure detector: the shell around
//! `onggi_core::membership` (scuttlebutt gossip of one record per member, a phi-accrual detector
//! per peer; see that module for the algorithm and its sources).
//!
//! Every [`GOSSIP_INTERVAL`] the node ticks its membership and sends the Syns it returns as
//! one-way messages (tag [`wire::tag::GOSSIP`]); a received message is merged and its answer (Ack,
//! Ack2) sent back the same way. Peers it gossips to are the members of the layout (the
//! membership's seeds) and whoever gossips to it. The layout itself travels by its own gossip
//! (`topology.rs`); a peer whose record shows a newer layout version is asked for it at once.
//!
//! What the detector's verdict is used for — never for who holds data, which only the layout
//! decides (a peer one node cannot hear is still a replica for everyone else):
//! - a consensus round asks first a majority of the item's replicas this node hears from
//!   (`first_asked`), so a replica that is down, paused or cut off stops costing each round the
//!   wait before the others are asked;
//! - `onggi cluster status` shows each member's phi and whether it is suspected.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use onggi_core::layout::NodeId;
use onggi_core::membership::{self, Event, Member, Membership, Outgoing, Status};
use onggi_core::rng::Rng;

use super::{Cluster, wire};
use crate::{Inner, Node};

/// How often a node gossips. A peer's newer record reaches this node, directly or relayed, about
/// every round or two, and phi 8 means about 18 mean intervals of silence
/// (`onggi_core::membership`): a silent peer is suspected after 10–20 s (18.5 s measured in the
/// failure-detector test), and heard again within a round of its return.
const GOSSIP_INTERVAL: Duration = Duration::from_millis(500);

/// A node's membership state.
pub(super) struct Gossip {
    membership: Mutex<Membership>,
    rng: Mutex<Rng>,
    /// Times passed to the membership are milliseconds since this instant.
    started: Instant,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Gossip {
    /// This node's membership: its own record (`generation` grows across restarts: the wall
    /// clock's milliseconds at start), gossiping to `seeds` until it hears from peers.
    pub(super) fn new(
        me: NodeId,
        address: SocketAddr,
        cluster_name: &str,
        generation: u64,
        seeds: Vec<String>,
        seed: u64,
    ) -> Result<Gossip, String> {
        let local = Member {
            id: me,
            address: address.to_string(),
            generation,
            heartbeat: 0,
            status: Status::Normal,
            layout_version: 0,
            protocol_version: membership::PROTOCOL_VERSION,
        };
        let mut config = membership::Config::new(cluster_name, seeds);
        config.phi_bootstrap_interval_ms = 2 * GOSSIP_INTERVAL.as_millis() as u64;
        config.phi_interval_max_ms = 8 * GOSSIP_INTERVAL.as_millis() as u64;
        let membership = Membership::new(config, local).map_err(|error| format!("membership: {error}"))?;
        Ok(Gossip { membership: Mutex::new(membership), rng: Mutex::new(Rng::new(seed)), started: Instant::now() })
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Whether this node suspects `node` (its phi is at or above the threshold). A peer never
    /// heard from is not suspected: nothing is known against it.
    pub(super) fn suspects(&self, node: NodeId) -> bool {
        let membership = lock(&self.membership);
        let threshold = membership.config().phi_threshold;
        membership.phi(node, self.now_ms()).is_some_and(|phi| phi >= threshold)
    }

    /// `node`'s phi now (`None` for peers never heard from).
    pub(super) fn phi(&self, node: NodeId) -> Option<f64> {
        lock(&self.membership).phi(node, self.now_ms())
    }
}

impl Node {
    /// Starts gossiping (see the module docs).
    pub(super) fn spawn_gossip(&self) {
        tokio::spawn(gossip_rounds(Arc::downgrade(&self.inner)));
    }

    /// Merges a peer's gossip message and sends the answer, if any.
    pub(super) fn receive_gossip(&self, payload: &[u8]) {
        let Some(cluster) = self.inner.cluster.get().cloned() else { return };
        let envelope = match wire::decode_gossip(payload) {
            Ok(envelope) => envelope,
            Err(error) => {
                tracing::debug!(%error, "malformed gossip ignored");
                return;
            }
        };
        let (answer, events) = {
            let mut membership = lock(&cluster.gossip.membership);
            let answer = membership.receive(cluster.gossip.now_ms(), envelope);
            (answer, membership.take_events())
        };
        self.send_gossip(&cluster, answer.into_iter().collect());
        self.handle_gossip_events(&cluster, events);
    }

    fn send_gossip(&self, cluster: &Arc<Cluster>, outgoing: Vec<Outgoing>) {
        for message in outgoing {
            let Ok(address) = message.to_address.parse::<SocketAddr>() else {
                tracing::debug!(address = %message.to_address, "gossip to an address that does not parse");
                continue;
            };
            let payload = Bytes::from(wire::encode_gossip(&message.envelope));
            let cluster = cluster.clone();
            tokio::spawn(async move {
                if let Err(error) = cluster.transport.send(address, wire::tag::GOSSIP, payload).await {
                    tracing::trace!(%error, %address, "gossip not sent");
                }
            });
        }
    }

    fn handle_gossip_events(&self, cluster: &Arc<Cluster>, events: Vec<Event>) {
        for event in events {
            match event {
                Event::Up(node) => tracing::info!(node = node.0, "a member is heard from (up)"),
                Event::Down(node) => tracing::warn!(node = node.0, "a member is suspected down (no gossip heard)"),
                Event::Joined(node) => tracing::debug!(node = node.0, "a member first heard from"),
                Event::Restarted { id, generation } => tracing::info!(node = id.0, generation, "a member restarted"),
                Event::StatusChanged(node, status) => {
                    tracing::info!(node = node.0, %status, "a member's status changed")
                }
                Event::NewerLayout { from, version } => {
                    let address = lock(&cluster.gossip.membership)
                        .member(from)
                        .and_then(|member| member.address.parse::<SocketAddr>().ok());
                    if let Some(address) = address {
                        tracing::debug!(node = from.0, version, "a member has a newer layout: fetching it");
                        let (node, cluster) = (self.clone(), cluster.clone());
                        tokio::spawn(async move { node.exchange_topology(&cluster, address).await });
                    }
                }
                Event::Removed(node) => tracing::info!(node = node.0, "a member that left is forgotten"),
                Event::Refused { address, reason } => {
                    tracing::warn!(%address, %reason, "gossip refused");
                }
            }
        }
    }

    /// One gossip round: the local record follows the layout (its version, and whether this node
    /// is in it or draining), then the membership's Syns go out.
    fn gossip_round(&self, cluster: &Arc<Cluster>) {
        let layout = cluster.layout();
        let status = match layout.target().node(cluster.me) {
            None if layout.removed(cluster.me) => Status::Left,
            None => Status::Joining,
            Some(member) if member.state == onggi_core::layout::NodeState::Draining => Status::Leaving,
            Some(_) => Status::Normal,
        };
        let (outgoing, events) = {
            let mut membership = lock(&cluster.gossip.membership);
            membership.set_layout_version(layout.version());
            if membership.local().status != Status::Left
                && let Err(error) = membership.set_status(status)
            {
                tracing::debug!(%error, "membership status not changed");
            }
            let mut rng = lock(&cluster.gossip.rng);
            let outgoing = membership.tick(cluster.gossip.now_ms(), &mut rng);
            (outgoing, membership.take_events())
        };
        drop(layout);
        self.send_gossip(cluster, outgoing);
        self.handle_gossip_events(cluster, events);
    }
}

/// Every [`GOSSIP_INTERVAL`], a gossip round, until the node stops.
async fn gossip_rounds(inner: Weak<Inner>) {
    loop {
        tokio::time::sleep(GOSSIP_INTERVAL).await;
        let Some(inner) = inner.upgrade() else { return };
        let node = Node { inner };
        let Some(cluster) = node.inner.cluster.get().cloned() else { continue };
        node.gossip_round(&cluster);
    }
}

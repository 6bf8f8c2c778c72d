//! Gossip membership with a local failure detector: who is in the cluster, where each member
//! listens, which layout it has adopted, and whether this node currently hears from it.
//!
//! **Records.** Every node owns one small [`Member`] record: its id, cluster address, generation
//! (bumped on every restart), heartbeat (bumped by its owner every gossip round), status
//! (joining, normal, leaving, left), the highest layout version it has adopted and the protocol
//! version it speaks. Only the owner changes its record, and it bumps the heartbeat with every
//! change, so the pair (generation, heartbeat) orders the versions of one record completely and
//! merging is "the highest (generation, heartbeat) wins" — no conflicts, no clocks. A restarted
//! node starts a higher generation, so its new record replaces the old one even though its
//! heartbeat starts again from zero.
//!
//! **Gossip** is scuttlebutt reconciliation (van Renesse et al., "Efficient reconciliation and flow
//! control for anti-entropy protocols", 2008) as Cassandra runs it, in three messages:
//! 1. *Syn*: every round ([`Membership::tick`]) the node bumps its heartbeat and sends a digest —
//!    (id, generation, heartbeat) of every member it lists but Left ones — to one random live
//!    peer; with probability `unreachable / (live + 1)` also to one unreachable peer; and to a seed
//!    when the live peer was not one or fewer peers are live than there are seeds (with
//!    probability `seeds / known`, always when no peer is live). These are Cassandra's rules: the
//!    unreachable draw lets a healed partition notice, the seeds keep the cluster from splitting
//!    into groups that never talk.
//! 2. *Ack*: the receiver answers with the records it holds newer than the digest (and, when the
//!    digest was complete, the records the sender does not list at all), plus requests for the
//!    members it lacks or holds older.
//! 3. *Ack2*: the first node answers the requests.
//!
//! One exchange thus brings both sides up to date on everything it mentions. A two-message
//! push-pull would need the first message to carry records blindly; the digest costs 24 bytes a
//! member and only what differs travels. Records are whole: a record is about a hundred bytes, so
//! scuttlebutt's per-key deltas would gain nothing. Every message is bounded: a digest lists at
//! most [`Config::digests_per_message_max`] members (this node first; when the list is longer, a
//! window starting at a random member, and the digest says it is incomplete) and an Ack or Ack2
//! carries at most [`Config::records_per_message_max`] records, the most out-of-date first; what
//! does not fit travels in later rounds. Receivers accept at most [`DIGESTS_PER_MESSAGE_MAX`]
//! digests and [`RECORDS_PER_MESSAGE_MAX`] records from any message and ignore the rest. A digest
//! is 24 bytes and a record at most about 300 (its address is at most [`ADDRESS_BYTES_MAX`]), so
//! with the defaults a message stays under 40 KB, and no message this code accepts in full needs
//! more than about 100 KB: the shell can refuse larger frames before decoding them.
//!
//! **Seeds** are addresses (their ids are not known until they answer). A node that knows no live
//! peer gossips to a random seed every round; that is how it joins. A node started without seeds
//! (or whose only seed is itself) is a cluster of one until someone gossips to it.
//!
//! **Handshake.** Every message carries the sender's cluster name and protocol version, and a
//! node merges nothing from a message whose cluster name or protocol version differs from its own:
//! it reports [`Event::Refused`] with a reason a person can act on ("peer 10.0.0.2:7000 speaks
//! cluster protocol 2, this node speaks 1") and answers with [`Message::Refuse`], which carries
//! its own name and version, so the sender reports the same mismatch from its side. A Refuse is
//! never answered. The shell must encode the envelope's header (cluster name, protocol version)
//! in a form every protocol version can read, so that the mismatch can be reported at all.
//!
//! **Failure detection is local** (Dynamo §4.8.3, Cassandra): a phi-accrual detector (Hayashibara
//! et al., "The φ accrual failure detector", 2004) per peer, fed by the local arrival times of that
//! peer's newer records, however they came (directly or relayed). It keeps the last
//! [`Config::phi_window`] (default 1000) intervals between arrivals and approximates their
//! distribution as exponential, as Cassandra does: `phi = Δt / mean · log10(e)`, where `Δt` is the
//! time since the last arrival; phi 8 then means about 18 mean intervals of silence. A newly seen
//! peer starts with one sample of [`Config::phi_bootstrap_interval_ms`] (two rounds) so it is not
//! suspect at once, and a gap longer than [`Config::phi_interval_max_ms`] is an outage, not a
//! sample of the arrival rate, so it is not recorded (Cassandra's rule: a node coming back does not
//! make the detector sluggish). A peer is up while its phi is below [`Config::phi_threshold`]
//! (default 8); [`Membership::tick`] turns changes of that verdict into [`Event::Up`] and
//! [`Event::Down`]. No node ever gossips its opinion of another's liveness: one node's network
//! trouble with a peer must not evict that peer from everybody's view. Who holds which data
//! changes only through the layout, by an operator's decision.
//!
//! **Layouts do not travel in gossip**, only their versions: when a peer's record shows a layout
//! version higher than this node's, [`Event::NewerLayout`] tells the shell to fetch that layout
//! from the peer and then call [`Membership::set_layout_version`].
//!
//! **Leaving.** A decommissioning node marks itself [`Status::Leaving`] and, when its data has
//! streamed away, [`Status::Left`]; it keeps gossiping a little while so peers learn it. Left is
//! final for a node id: records of a Left member that are not Left themselves (stale gossip, or the
//! same id started again) are ignored. A Left record is kept for [`Config::left_quarantine_ms`]
//! (default three days, Cassandra's) after this node first saw it, so stale gossip of the old
//! record, which the Left record outranks, cannot bring the id back, and is then removed
//! ([`Event::Removed`]). Left members are not advertised in digests, and a node never learns a
//! member for the first time as Left, so the Left record reaches exactly the nodes that still list
//! the member and removed members are not gossiped back forever (the trap chitchat#161 fell into).
//! Only a node cut off from the cluster for longer than the quarantine could bring a stale record
//! back; it would show as a member that is down. A member that dies for good cannot mark itself
//! Left; it stays listed, down, until removed some other way.
//!
//! **Why not foca.** `foca` (sans-IO SWIM with suspicion and custom broadcasts) was the crate
//! research suggested. Weighed against this module:
//! - SWIM's failure detection is cluster-wide: once a member is confirmed down, everyone drops it
//!   and it must rejoin under a renewed identity. Dynamo and Cassandra keep failure detection local
//!   and membership explicit, which is what sloppy quorums and hinted handoff need: a node that one
//!   peer cannot reach is still a replica for everyone else.
//! - Our metadata (address, status, layout version, protocol version) is state to reconcile, not
//!   events to broadcast: in foca it would ride either in the identity (every change a "new"
//!   member) or in custom broadcasts, which are disseminated a bounded number of times, so a node
//!   partitioned during the broadcast never learns the latest value. Scuttlebutt converges on the
//!   latest record of every member after any partition.
//! - Seeds are addresses without ids; foca announces to an identity.
//! - Determinism: foca takes a `rand` generator and schedules timers through its runtime; our
//!   machines take `now_ms` and [`Rng`], and adding foca would add dependencies (`rand_core`, MPL-2.0
//!   code) to the pure core.
//! - What foca would give and this does not: constant load per member and fast detection through
//!   indirect probes at thousands of nodes. Full-membership gossip serves "a couple of hundreds of
//!   nodes" (Dynamo §6.6), and [`crate::layout::NODES_MAX`] is 512.
//!
//! This module is a sans-IO state machine like the rest of the core: the shell calls
//! [`Membership::tick`] about once a second and [`Membership::receive`] for every message, sends
//! what they return, and drains [`Membership::take_events`] after each call.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::f64::consts::LOG10_E;
use std::fmt;

use crate::layout::{NODES_MAX, NodeId};
use crate::rng::Rng;

/// The cluster protocol this code speaks; a node refuses gossip from peers speaking another.
pub const PROTOCOL_VERSION: u32 = 1;
/// The most members one node lists, itself and Left members in quarantine included: room for a
/// full layout ([`NODES_MAX`]) and as many again leaving or left.
pub const MEMBERS_MAX: usize = 2 * NODES_MAX;
/// The most digests a receiver reads from one message: a complete digest of [`MEMBERS_MAX`].
pub const DIGESTS_PER_MESSAGE_MAX: usize = MEMBERS_MAX;
/// The most records a receiver reads from one message.
pub const RECORDS_PER_MESSAGE_MAX: usize = 256;
/// Records per Ack or Ack2 by default: a few kilobytes.
pub const RECORDS_PER_MESSAGE_DEFAULT: usize = 32;
/// The longest cluster address, in bytes.
pub const ADDRESS_BYTES_MAX: usize = 256;
/// The longest cluster name, in bytes.
pub const CLUSTER_NAME_BYTES_MAX: usize = 128;
/// The most seeds a node is configured with.
pub const SEEDS_MAX: usize = 64;
/// Phi above which a peer is down by default (Cassandra's `phi_convict_threshold`).
pub const PHI_THRESHOLD_DEFAULT: f64 = 8.0;
/// The most inter-arrival intervals the detector keeps per peer (Cassandra's window).
pub const PHI_WINDOW_MAX: usize = 1000;
/// The interval a newly seen peer's detector starts with: two gossip rounds of one second.
pub const PHI_BOOTSTRAP_INTERVAL_MS_DEFAULT: u64 = 2_000;
/// Gaps between arrivals longer than this are outages and are not recorded as intervals.
pub const PHI_INTERVAL_MAX_MS_DEFAULT: u64 = 4_000;
/// How long a Left member is remembered by default: three days, as Cassandra does.
pub const LEFT_QUARANTINE_MS_DEFAULT: u64 = 3 * 24 * 60 * 60 * 1000;
/// The most events held for the shell; later ones are counted in [`Membership::events_dropped`].
pub const EVENTS_MAX: usize = 65_536;

const _: () = assert!(RECORDS_PER_MESSAGE_DEFAULT <= RECORDS_PER_MESSAGE_MAX);
const _: () = assert!(DIGESTS_PER_MESSAGE_MAX >= MEMBERS_MAX);
// Intervals are stored as u32 milliseconds.
const _: () = assert!(PHI_INTERVAL_MAX_MS_DEFAULT <= u32::MAX as u64);
const _: () = assert!(PHI_BOOTSTRAP_INTERVAL_MS_DEFAULT <= PHI_INTERVAL_MAX_MS_DEFAULT);
// Every transition a full membership can produce in one call fits in the event queue.
const _: () = assert!(EVENTS_MAX >= 4 * MEMBERS_MAX);

/// Where a member stands in its life in the cluster. Only the member itself changes it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Status {
    /// Started, not yet holding data: waiting to be added to the layout and to receive its share.
    Joining,
    /// A full member.
    Normal,
    /// Decommissioning: streaming its data away.
    Leaving,
    /// Gone for good; the id is never used again.
    Left,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Joining => "joining",
            Status::Normal => "normal",
            Status::Leaving => "leaving",
            Status::Left => "left",
        })
    }
}

/// One member's record, owned and changed only by that member, gossiped to everyone.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Member {
    /// The member's stable id.
    pub id: NodeId,
    /// The address it listens on for cluster traffic.
    pub address: String,
    /// Bumped on every restart (the shell passes e.g. the start time in milliseconds, which grows
    /// across restarts), so a restarted node's record outranks its previous life's.
    pub generation: u64,
    /// Bumped by the owner every gossip round and with every change to the record.
    pub heartbeat: u64,
    /// Where the member stands.
    pub status: Status,
    /// The highest layout version the member has adopted.
    pub layout_version: u64,
    /// The cluster protocol version the member speaks.
    pub protocol_version: u32,
}

impl Member {
    /// The record's version: records of one member are ordered by it, higher is newer.
    pub fn version(&self) -> (u64, u64) {
        (self.generation, self.heartbeat)
    }

    fn digest(&self) -> Digest {
        Digest { id: self.id, generation: self.generation, heartbeat: self.heartbeat }
    }
}

/// A member's id and record version: what a Syn lists and an Ack requests.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Digest {
    /// The member.
    pub id: NodeId,
    /// The generation of the sender's record of it (0 in a request: "I have none").
    pub generation: u64,
    /// The heartbeat of the sender's record of it (0 in a request: "I have none").
    pub heartbeat: u64,
}

impl Digest {
    fn version(&self) -> (u64, u64) {
        (self.generation, self.heartbeat)
    }
}

/// A gossip message's body.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Message {
    /// Opens an exchange: the versions of the members the sender lists.
    Syn {
        /// The sender's own digest first, then others.
        digests: Vec<Digest>,
        /// True when `digests` lists every member the sender advertises; the receiver then also
        /// pushes the members missing from it.
        complete: bool,
    },
    /// Answers a Syn: records the sender of the Syn lacks, and requests for records it has newer.
    Ack {
        /// Records newer than the Syn's digest, most out of date first.
        records: Vec<Member>,
        /// Members this node lacks or holds older, with the version it holds.
        requests: Vec<Digest>,
    },
    /// Closes an exchange: the records an Ack requested.
    Ack2 {
        /// Records newer than the requests' versions.
        records: Vec<Member>,
    },
    /// The receiver's cluster name or protocol version differs; the envelope carries its own, so
    /// the sender can say what differs. Never answered.
    Refuse,
}

/// A message with the header every message carries.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Envelope {
    /// The sender's cluster name.
    pub cluster_name: String,
    /// The sender's cluster protocol version.
    pub protocol_version: u32,
    /// The sender's id.
    pub from: NodeId,
    /// The sender's cluster address, where answers go.
    pub from_address: String,
    /// The body.
    pub message: Message,
}

/// A message for the shell to send.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Outgoing {
    /// The destination address (a seed, a member's address, or the address an answered message
    /// came from; the shell may instead answer on the connection the message came in on).
    pub to_address: String,
    /// The destination's id, when known.
    pub to: Option<NodeId>,
    /// The message.
    pub envelope: Envelope,
}

/// Something the shell should know about; drained with [`Membership::take_events`].
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Event {
    /// A member this node did not list before.
    Joined(NodeId),
    /// A peer's phi fell below the threshold: this node hears from it (again).
    Up(NodeId),
    /// A peer's phi rose above the threshold: this node no longer hears from it. Not reported for
    /// Left members.
    Down(NodeId),
    /// A member restarted: its record now has this higher generation.
    Restarted {
        /// The member.
        id: NodeId,
        /// Its new generation.
        generation: u64,
    },
    /// A member's status changed.
    StatusChanged(NodeId, Status),
    /// A member has adopted a layout version higher than this node's: fetch it from that member.
    NewerLayout {
        /// A member holding the layout.
        from: NodeId,
        /// Its layout version.
        version: u64,
    },
    /// A Left member's quarantine ended and it is no longer listed.
    Removed(NodeId),
    /// A peer's gossip was not merged, for the reason given (another cluster, another protocol
    /// version, or a peer claiming this node's id). Repeats with every exchange, so the shell
    /// should rate-limit its log.
    Refused {
        /// The peer's address as it gave it.
        address: String,
        /// What differs, in words a person can act on.
        reason: String,
    },
}

/// Tuning and identity of a node's membership.
#[derive(Clone, Debug)]
pub struct Config {
    /// The cluster's name; gossip between different names is refused.
    pub cluster_name: String,
    /// Addresses to gossip to when joining and now and then afterwards.
    pub seeds: Vec<String>,
    /// Phi above which a peer is down.
    pub phi_threshold: f64,
    /// How many inter-arrival intervals the detector keeps per peer (1..=[`PHI_WINDOW_MAX`]).
    pub phi_window: usize,
    /// The interval a newly seen (or restarted) peer's detector starts with.
    pub phi_bootstrap_interval_ms: u64,
    /// Gaps between arrivals longer than this are not recorded as intervals.
    pub phi_interval_max_ms: u64,
    /// The most records this node puts in one Ack or Ack2 (1..=[`RECORDS_PER_MESSAGE_MAX`]).
    pub records_per_message_max: usize,
    /// The most digests this node puts in one Syn, and requests in one Ack
    /// (1..=[`DIGESTS_PER_MESSAGE_MAX`]).
    pub digests_per_message_max: usize,
    /// How long a Left member stays listed after this node first saw it Left.
    pub left_quarantine_ms: u64,
}

impl Config {
    /// The defaults, for a cluster name and its seeds.
    pub fn new(cluster_name: impl Into<String>, seeds: Vec<String>) -> Config {
        Config {
            cluster_name: cluster_name.into(),
            seeds,
            phi_threshold: PHI_THRESHOLD_DEFAULT,
            phi_window: PHI_WINDOW_MAX,
            phi_bootstrap_interval_ms: PHI_BOOTSTRAP_INTERVAL_MS_DEFAULT,
            phi_interval_max_ms: PHI_INTERVAL_MAX_MS_DEFAULT,
            records_per_message_max: RECORDS_PER_MESSAGE_DEFAULT,
            digests_per_message_max: DIGESTS_PER_MESSAGE_MAX,
            left_quarantine_ms: LEFT_QUARANTINE_MS_DEFAULT,
        }
    }
}

/// Why a membership could not be created or changed.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Error {
    /// The configuration or the local record breaks a rule; the text names it.
    Invalid(String),
    /// The local node has left; Left is final for a node id.
    LeftIsFinal,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Invalid(reason) => write!(f, "invalid membership configuration: {reason}"),
            Error::LeftIsFinal => f.write_str("this node has left the cluster; a left node id is never used again"),
        }
    }
}

impl std::error::Error for Error {}

/// A member as [`Membership::members`] shows it.
#[derive(Clone, Copy, Debug)]
pub struct MemberView<'a> {
    /// Its record.
    pub member: &'a Member,
    /// Up as of the last [`Membership::tick`] (the local node is always up).
    pub up: bool,
    /// Whether this is the local node.
    pub local: bool,
}

/// One node's view of the cluster: its own record, its peers' records, a failure detector per
/// peer, and the events waiting for the shell.
#[derive(Clone, Debug)]
pub struct Membership {
    config: Config,
    /// Seeds other than this node, without duplicates.
    seeds: Vec<String>,
    local: Member,
    peers: BTreeMap<NodeId, Peer>,
    events: EventQueue,
}

#[derive(Clone, Debug)]
struct Peer {
    record: Member,
    detector: ArrivalWindow,
    /// The verdict of the last tick.
    up: bool,
    /// When this node first held the record as Left.
    left_since_ms: Option<u64>,
}

#[derive(Clone, Debug, Default)]
struct EventQueue {
    events: Vec<Event>,
    dropped: u64,
}

impl EventQueue {
    fn push(&mut self, event: Event) {
        if self.events.len() < EVENTS_MAX {
            self.events.push(event);
        } else {
            self.dropped = self.dropped.saturating_add(1);
        }
    }
}

impl Membership {
    /// A membership for the local node `local` (heartbeat usually 0, generation at least 1 and
    /// higher than in any previous run; status [`Status::Joining`] for a new node,
    /// [`Status::Normal`] for a restart).
    pub fn new(config: Config, local: Member) -> Result<Membership, Error> {
        let invalid = |reason: String| Err(Error::Invalid(reason));
        if config.cluster_name.is_empty() || config.cluster_name.len() > CLUSTER_NAME_BYTES_MAX {
            return invalid(format!("the cluster name must be 1 to {CLUSTER_NAME_BYTES_MAX} bytes"));
        }
        if !address_is_valid(&local.address) {
            return invalid(format!("the node's address must be 1 to {ADDRESS_BYTES_MAX} bytes"));
        }
        if local.generation == 0 {
            return invalid("the generation must be at least 1".to_owned());
        }
        if local.status == Status::Left {
            return invalid("a node cannot start as left".to_owned());
        }
        if config.seeds.len() > SEEDS_MAX {
            return invalid(format!("{} seeds given, at most {SEEDS_MAX} allowed", config.seeds.len()));
        }
        if let Some(seed) = config.seeds.iter().find(|seed| !address_is_valid(seed)) {
            return invalid(format!("seed address {:?} must be 1 to {ADDRESS_BYTES_MAX} bytes", shown(seed)));
        }
        if !(config.phi_threshold.is_finite() && config.phi_threshold > 0.0) {
            return invalid(format!("the phi threshold must be a positive number, not {}", config.phi_threshold));
        }
        if config.phi_window == 0 || config.phi_window > PHI_WINDOW_MAX {
            return invalid(format!("the phi window must hold 1 to {PHI_WINDOW_MAX} intervals"));
        }
        let interval_ms_range = 1..=u64::from(u32::MAX);
        if !interval_ms_range.contains(&config.phi_bootstrap_interval_ms)
            || !interval_ms_range.contains(&config.phi_interval_max_ms)
        {
            return invalid(format!("phi intervals must be 1 to {} ms", u32::MAX));
        }
        if config.records_per_message_max == 0 || config.records_per_message_max > RECORDS_PER_MESSAGE_MAX {
            return invalid(format!("records per message must be 1 to {RECORDS_PER_MESSAGE_MAX}"));
        }
        if config.digests_per_message_max == 0 || config.digests_per_message_max > DIGESTS_PER_MESSAGE_MAX {
            return invalid(format!("digests per message must be 1 to {DIGESTS_PER_MESSAGE_MAX}"));
        }
        let mut seeds: Vec<String> = Vec::new();
        for seed in &config.seeds {
            if *seed != local.address && !seeds.contains(seed) {
                seeds.push(seed.clone());
            }
        }
        Ok(Membership { config, seeds, local, peers: BTreeMap::new(), events: EventQueue::default() })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The seeds this node gossips to: the configured ones, without this node and duplicates.
    pub fn seeds(&self) -> &[String] {
        &self.seeds
    }

    /// The local node's record.
    pub fn local(&self) -> &Member {
        &self.local
    }

    /// A member's record (the local node's included), if listed.
    pub fn member(&self, id: NodeId) -> Option<&Member> {
        if id == self.local.id { Some(&self.local) } else { self.peers.get(&id).map(|peer| &peer.record) }
    }

    /// Every listed member, the local node first, then peers in id order (Left ones in
    /// quarantine included), with liveness as of the last tick.
    pub fn members(&self) -> impl Iterator<Item = MemberView<'_>> {
        let local = MemberView { member: &self.local, up: true, local: true };
        let peers = self.peers.values().map(|peer| MemberView { member: &peer.record, up: peer.up, local: false });
        std::iter::once(local).chain(peers)
    }

    /// Whether this node hears from `id` at `now_ms`: its phi is below the threshold. The local
    /// node is alive; an unknown one is not.
    pub fn is_alive(&self, id: NodeId, now_ms: u64) -> bool {
        self.phi(id, now_ms).is_some_and(|phi| phi < self.config.phi_threshold)
    }

    /// A peer's suspicion level at `now_ms` (0 for the local node, `None` for unknown ids).
    pub fn phi(&self, id: NodeId, now_ms: u64) -> Option<f64> {
        if id == self.local.id {
            return Some(0.0);
        }
        self.peers.get(&id).map(|peer| peer.detector.phi(now_ms))
    }

    /// The events since the last call, oldest first.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events.events)
    }

    /// Events lost because the shell did not drain the queue ([`EVENTS_MAX`]).
    pub fn events_dropped(&self) -> u64 {
        self.events.dropped
    }

    /// Changes the local node's status. Left is final.
    pub fn set_status(&mut self, status: Status) -> Result<(), Error> {
        if self.local.status == Status::Left && status != Status::Left {
            return Err(Error::LeftIsFinal);
        }
        if self.local.status != status {
            self.local.status = status;
            self.local.heartbeat = self.local.heartbeat.saturating_add(1);
        }
        Ok(())
    }

    /// Records that the local node adopted layout `version`; a lower version than the current one
    /// is ignored (a node never goes back to an older layout).
    pub fn set_layout_version(&mut self, version: u64) {
        if version > self.local.layout_version {
            self.local.layout_version = version;
            self.local.heartbeat = self.local.heartbeat.saturating_add(1);
        }
    }

    /// One gossip round (the shell calls it about once a second): bumps the heartbeat, forgets
    /// Left members whose quarantine ended, turns phi into Up/Down events, and returns the Syns to
    /// send (to at most a live peer, an unreachable peer and a seed).
    pub fn tick(&mut self, now_ms: u64, rng: &mut Rng) -> Vec<Outgoing> {
        self.local.heartbeat = self.local.heartbeat.saturating_add(1);
        self.forget_left(now_ms);
        self.detect(now_ms);

        let mut live = Vec::new();
        let mut unreachable = Vec::new();
        for (id, peer) in &self.peers {
            if peer.record.status == Status::Left {
                continue;
            }
            if peer.up {
                live.push(*id);
            } else {
                unreachable.push(*id);
            }
        }
        let syn = self.syn(rng);
        let mut out: Vec<Outgoing> = Vec::new();
        let mut gossiped_to_seed = false;
        if let Some(&id) = pick(rng, &live) {
            let outgoing = self.to_peer(id, syn.clone());
            gossiped_to_seed = self.seeds.contains(&outgoing.to_address);
            out.push(outgoing);
        }
        if !unreachable.is_empty()
            && rng.chance(unreachable.len() as u64, live.len() as u64 + 1)
            && let Some(&id) = pick(rng, &unreachable)
        {
            out.push(self.to_peer(id, syn.clone()));
        }
        let seed_wanted = !gossiped_to_seed || live.len() < self.seeds.len();
        let known = (live.len() + unreachable.len()) as u64;
        if !self.seeds.is_empty()
            && seed_wanted
            && (live.is_empty() || rng.chance(self.seeds.len() as u64, known))
            && let Some(seed) = pick(rng, &self.seeds)
            && !out.iter().any(|outgoing| outgoing.to_address == *seed)
        {
            let to = self.peers.values().find(|peer| peer.record.address == *seed).map(|peer| peer.record.id);
            out.push(Outgoing { to_address: seed.clone(), to, envelope: self.envelope(syn) });
        }
        out
    }

    /// Handles one message from the network and returns the answer to send, if any. Any input is
    /// accepted: what breaks a rule is ignored.
    pub fn receive(&mut self, now_ms: u64, envelope: Envelope) -> Option<Outgoing> {
        if !address_is_valid(&envelope.from_address) {
            return None;
        }
        let mismatch = self.mismatch(&envelope);
        if envelope.message == Message::Refuse {
            let reason = mismatch
                .unwrap_or_else(|| format!("peer {} refused this node's gossip", shown(&envelope.from_address)));
            self.events.push(Event::Refused { address: envelope.from_address, reason });
            return None;
        }
        if let Some(reason) = mismatch {
            self.events.push(Event::Refused { address: envelope.from_address.clone(), reason });
            return Some(Outgoing {
                to_address: envelope.from_address,
                to: None,
                envelope: self.envelope(Message::Refuse),
            });
        }
        if envelope.from == self.local.id && envelope.from_address == self.local.address {
            // Our own message, looped back: nothing to learn.
            return None;
        }
        let reply = match envelope.message {
            Message::Syn { digests, complete } => {
                let (records, requests) = self.answer_syn(&digests, complete);
                if records.is_empty() && requests.is_empty() {
                    return None;
                }
                Message::Ack { records, requests }
            }
            Message::Ack { records, requests } => {
                self.merge_all(now_ms, records);
                let records = self.answer_requests(&requests);
                if records.is_empty() {
                    return None;
                }
                Message::Ack2 { records }
            }
            Message::Ack2 { records } => {
                self.merge_all(now_ms, records);
                return None;
            }
            Message::Refuse => return None,
        };
        let to = Some(envelope.from).filter(|id| self.peers.contains_key(id));
        Some(Outgoing { to_address: envelope.from_address, to, envelope: self.envelope(reply) })
    }

    fn envelope(&self, message: Message) -> Envelope {
        Envelope {
            cluster_name: self.config.cluster_name.clone(),
            protocol_version: self.local.protocol_version,
            from: self.local.id,
            from_address: self.local.address.clone(),
            message,
        }
    }

    fn to_peer(&self, id: NodeId, message: Message) -> Outgoing {
        let to_address = self.peers.get(&id).map(|peer| peer.record.address.clone()).unwrap_or_default();
        Outgoing { to_address, to: Some(id), envelope: self.envelope(message) }
    }

    /// Why a message's header keeps it from being merged, from this node's point of view.
    fn mismatch(&self, envelope: &Envelope) -> Option<String> {
        let address = shown(&envelope.from_address);
        if envelope.cluster_name != self.config.cluster_name {
            return Some(format!(
                "peer {address} belongs to cluster \"{}\", this node to cluster \"{}\"",
                shown(&envelope.cluster_name),
                shown(&self.config.cluster_name)
            ));
        }
        if envelope.protocol_version != self.local.protocol_version {
            return Some(format!(
                "peer {address} speaks cluster protocol {}, this node speaks {}",
                envelope.protocol_version, self.local.protocol_version
            ));
        }
        None
    }

    /// The Syn of this round: this node's digest, then the non-Left peers' (all of them, or a
    /// window starting at a random one when they do not fit).
    fn syn(&self, rng: &mut Rng) -> Message {
        let cap = self.config.digests_per_message_max;
        let advertised: Vec<&Member> =
            self.peers.values().map(|peer| &peer.record).filter(|record| record.status != Status::Left).collect();
        let complete = advertised.len() < cap;
        let mut digests = Vec::with_capacity(cap.min(advertised.len() + 1));
        digests.push(self.local.digest());
        if complete {
            digests.extend(advertised.iter().map(|record| record.digest()));
        } else if let Some(start) = index_below(rng, advertised.len()) {
            let window = advertised.iter().cycle().skip(start).take(cap - 1);
            digests.extend(window.map(|record| record.digest()));
        }
        Message::Syn { digests, complete }
    }

    /// The Ack's content for a Syn: records newer than its digests (and those it does not list, if
    /// complete), and requests for what the Syn's sender has newer.
    fn answer_syn(&self, digests: &[Digest], complete: bool) -> (Vec<Member>, Vec<Digest>) {
        let mut mentioned = BTreeSet::new();
        let mut candidates: Vec<(Staleness, &Member)> = Vec::new();
        let mut requests = Vec::new();
        for digest in digests.iter().take(DIGESTS_PER_MESSAGE_MAX) {
            if !mentioned.insert(digest.id) {
                continue;
            }
            match self.member(digest.id) {
                Some(mine) if mine.version() > digest.version() => {
                    candidates.push((staleness(mine, Some(digest.version())), mine));
                }
                Some(mine) if mine.version() < digest.version() => {
                    if requests.len() < self.config.digests_per_message_max {
                        requests.push(mine.digest());
                    }
                }
                Some(_) => {}
                None => {
                    if requests.len() < self.config.digests_per_message_max {
                        requests.push(Digest { id: digest.id, generation: 0, heartbeat: 0 });
                    }
                }
            }
        }
        if complete {
            for view in self.members() {
                if view.member.status != Status::Left && !mentioned.contains(&view.member.id) {
                    candidates.push((staleness(view.member, None), view.member));
                }
            }
        }
        (self.most_stale(candidates), requests)
    }

    /// The Ack2's records: those newer than the requests' versions.
    fn answer_requests(&self, requests: &[Digest]) -> Vec<Member> {
        let mut seen = BTreeSet::new();
        let mut candidates = Vec::new();
        for request in requests.iter().take(DIGESTS_PER_MESSAGE_MAX) {
            if !seen.insert(request.id) {
                continue;
            }
            if let Some(mine) = self.member(request.id)
                && mine.version() > request.version()
            {
                let theirs = Some(request.version()).filter(|version| *version != (0, 0));
                candidates.push((staleness(mine, theirs), mine));
            }
        }
        self.most_stale(candidates)
    }

    /// The records a peer is furthest behind on, as many as a message holds.
    fn most_stale(&self, mut candidates: Vec<(Staleness, &Member)>) -> Vec<Member> {
        candidates.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.id.cmp(&b.1.id)));
        candidates.into_iter().take(self.config.records_per_message_max).map(|(_, record)| record.clone()).collect()
    }

    fn merge_all(&mut self, now_ms: u64, records: Vec<Member>) {
        for record in records.into_iter().take(RECORDS_PER_MESSAGE_MAX) {
            self.merge(now_ms, record);
        }
    }

    /// Adopts a record if it is newer than the one held; every adopted record is an arrival for
    /// the failure detector.
    fn merge(&mut self, now_ms: u64, record: Member) {
        if !address_is_valid(&record.address) {
            return;
        }
        if record.id == self.local.id {
            self.merge_local(record);
            return;
        }
        let local_layout_version = self.local.layout_version;
        let Some(peer) = self.peers.get_mut(&record.id) else {
            // Learning a member as Left would gossip it back after its quarantine ends elsewhere.
            if record.status == Status::Left || self.peers.len() + 1 >= MEMBERS_MAX {
                return;
            }
            self.events.push(Event::Joined(record.id));
            if record.layout_version > local_layout_version {
                self.events.push(Event::NewerLayout { from: record.id, version: record.layout_version });
            }
            let detector = ArrivalWindow::new(now_ms, &self.config);
            self.peers.insert(record.id, Peer { record, detector, up: false, left_since_ms: None });
            return;
        };
        if record.version() <= peer.record.version() {
            return;
        }
        if peer.record.status == Status::Left && record.status != Status::Left {
            return;
        }
        if record.generation > peer.record.generation {
            self.events.push(Event::Restarted { id: record.id, generation: record.generation });
            peer.detector = ArrivalWindow::new(now_ms, &self.config);
        } else {
            peer.detector.arrive(now_ms, &self.config);
        }
        if record.status != peer.record.status {
            self.events.push(Event::StatusChanged(record.id, record.status));
            if record.status == Status::Left {
                peer.left_since_ms = Some(now_ms);
            }
        }
        if record.layout_version > peer.record.layout_version && record.layout_version > local_layout_version {
            self.events.push(Event::NewerLayout { from: record.id, version: record.layout_version });
        }
        peer.record = record;
    }

    /// A record of the local node from elsewhere. The owner always wins: a newer one with this
    /// node's address is an earlier life of this node (its generation was higher, e.g. the clock
    /// went back across a restart), so the generation moves past it; one with another address is
    /// a second node configured with this node's id, which only an operator can fix.
    fn merge_local(&mut self, record: Member) {
        if record.version() <= self.local.version() {
            return;
        }
        if record.address != self.local.address {
            let reason = format!(
                "peer {} claims this node's id {} (this node listens on {}); node ids must be unique",
                shown(&record.address),
                self.local.id,
                self.local.address
            );
            self.events.push(Event::Refused { address: record.address, reason });
            return;
        }
        self.local.generation = record.generation.saturating_add(1);
        self.local.heartbeat = 0;
    }

    fn forget_left(&mut self, now_ms: u64) {
        let quarantine_ms = self.config.left_quarantine_ms;
        let expired: Vec<NodeId> = self
            .peers
            .values()
            .filter(|peer| peer.left_since_ms.is_some_and(|since| now_ms.saturating_sub(since) >= quarantine_ms))
            .map(|peer| peer.record.id)
            .collect();
        for id in expired {
            self.peers.remove(&id);
            self.events.push(Event::Removed(id));
        }
    }

    fn detect(&mut self, now_ms: u64) {
        for (id, peer) in &mut self.peers {
            let up = peer.detector.phi(now_ms) < self.config.phi_threshold;
            if up == peer.up {
                continue;
            }
            peer.up = up;
            if peer.record.status != Status::Left {
                self.events.push(if up { Event::Up(*id) } else { Event::Down(*id) });
            }
        }
    }
}

/// How far behind a peer is on a record: generations first, then heartbeats; a peer without the
/// record is furthest behind.
type Staleness = (u64, u64);

fn staleness(mine: &Member, theirs: Option<(u64, u64)>) -> Staleness {
    match theirs {
        None => (u64::MAX, u64::MAX),
        Some((generation, heartbeat)) if generation == mine.generation => (0, mine.heartbeat.saturating_sub(heartbeat)),
        Some((generation, _)) => (mine.generation.saturating_sub(generation), mine.heartbeat),
    }
}

/// The last arrivals of one peer's newer records: the phi-accrual detector's state.
#[derive(Clone, Debug)]
struct ArrivalWindow {
    intervals_ms: VecDeque<u32>,
    sum_ms: u64,
    last_arrival_ms: u64,
}

impl ArrivalWindow {
    /// A detector for a peer first heard of at `now_ms`, holding one bootstrap interval.
    fn new(now_ms: u64, config: &Config) -> ArrivalWindow {
        let bootstrap_ms = u32::try_from(config.phi_bootstrap_interval_ms).unwrap_or(u32::MAX);
        ArrivalWindow {
            intervals_ms: VecDeque::from([bootstrap_ms]),
            sum_ms: u64::from(bootstrap_ms),
            last_arrival_ms: now_ms,
        }
    }

    fn arrive(&mut self, now_ms: u64, config: &Config) {
        let interval_ms = now_ms.saturating_sub(self.last_arrival_ms);
        self.last_arrival_ms = self.last_arrival_ms.max(now_ms);
        if interval_ms > config.phi_interval_max_ms {
            return;
        }
        let Ok(interval_ms) = u32::try_from(interval_ms) else { return };
        while self.intervals_ms.len() >= config.phi_window {
            match self.intervals_ms.pop_front() {
                Some(oldest) => self.sum_ms = self.sum_ms.saturating_sub(u64::from(oldest)),
                None => break,
            }
        }
        self.intervals_ms.push_back(interval_ms);
        self.sum_ms += u64::from(interval_ms);
    }

    fn mean_ms(&self) -> f64 {
        // An interval under a millisecond is a measurement artefact; the floor keeps phi finite.
        (self.sum_ms as f64 / self.intervals_ms.len().max(1) as f64).max(1.0)
    }

    /// `Δt / mean · log10(e)`: minus the decimal logarithm of the probability, under an
    /// exponential distribution of intervals, that the next arrival is still to come after Δt.
    fn phi(&self, now_ms: u64) -> f64 {
        now_ms.saturating_sub(self.last_arrival_ms) as f64 / self.mean_ms() * LOG10_E
    }
}

fn address_is_valid(address: &str) -> bool {
    !address.is_empty() && address.len() <= ADDRESS_BYTES_MAX
}

/// Text from the network, made safe and short enough to log.
fn shown(text: &str) -> String {
    let mut out: String = text.chars().take(CLUSTER_NAME_BYTES_MAX).flat_map(char::escape_debug).collect();
    if text.chars().nth(CLUSTER_NAME_BYTES_MAX).is_some() {
        out.push('…');
    }
    out
}

fn index_below(rng: &mut Rng, len: usize) -> Option<usize> {
    if len == 0 { None } else { Some(rng.below(len as u64) as usize) }
}

fn pick<'a, T>(rng: &mut Rng, items: &'a [T]) -> Option<&'a T> {
    index_below(rng, items.len()).and_then(|index| items.get(index))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUND_MS: u64 = 1_000;
    const STEP_MS: u64 = 50;
    const START_MS: u64 = 1_000_000;
    const CLUSTER: &str = "test";

    fn address(index: usize) -> String {
        format!("n{index}")
    }

    fn id(index: usize) -> NodeId {
        NodeId(index as u64 + 1)
    }

    fn record(index: usize, generation: u64) -> Member {
        Member {
            id: id(index),
            address: address(index),
            generation,
            heartbeat: 0,
            status: Status::Normal,
            layout_version: 1,
            protocol_version: PROTOCOL_VERSION,
        }
    }

    /// A membership that knows no one, for feeding messages by hand.
    fn alone(index: usize) -> Membership {
        Membership::new(Config::new(CLUSTER, Vec::new()), record(index, 1)).unwrap()
    }

    fn from_peer(index: usize, message: Message) -> Envelope {
        Envelope {
            cluster_name: CLUSTER.to_owned(),
            protocol_version: PROTOCOL_VERSION,
            from: id(index),
            from_address: address(index),
            message,
        }
    }

    fn ack2(index: usize, records: Vec<Member>) -> Envelope {
        from_peer(index, Message::Ack2 { records })
    }

    struct Node {
        membership: Membership,
        rng: Rng,
        running: bool,
        next_tick_ms: u64,
        events: Vec<Event>,
    }

    /// K memberships, a clock, and a queue of messages in flight with random delays and losses,
    /// all drawn from one seed. Every message sent is checked against its sender's caps.
    struct Net {
        nodes: Vec<Node>,
        in_flight: BTreeMap<(u64, u64), (usize, Envelope)>,
        rng: Rng,
        now_ms: u64,
        sequence: u64,
        loss_percent: u64,
        delay_max_ms: u64,
        full_messages: usize,
        incomplete_syns: usize,
        /// Refuse messages sent, per sender.
        refuses_sent: BTreeMap<usize, usize>,
    }

    impl Net {
        fn new(seed: u64) -> Net {
            Net {
                nodes: Vec::new(),
                in_flight: BTreeMap::new(),
                rng: Rng::new(seed),
                now_ms: START_MS,
                sequence: 0,
                loss_percent: 0,
                delay_max_ms: 300,
                full_messages: 0,
                incomplete_syns: 0,
                refuses_sent: BTreeMap::new(),
            }
        }

        /// `size` nodes of one cluster, all given node 0 as their seed.
        fn cluster(seed: u64, size: usize) -> Net {
            Net::with_configs(seed, size, |_| Config::new(CLUSTER, vec![address(0)]))
        }

        fn with_configs(seed: u64, size: usize, config: impl Fn(usize) -> Config) -> Net {
            let mut net = Net::new(seed);
            for index in 0..size {
                net.add(config(index), record(index, START_MS));
            }
            net
        }

        fn add(&mut self, config: Config, local: Member) {
            let membership = Membership::new(config, local).unwrap();
            let next_tick_ms = self.now_ms + self.rng.below(ROUND_MS);
            let rng = self.rng.fork();
            self.nodes.push(Node { membership, rng, running: true, next_tick_ms, events: Vec::new() });
        }

        fn send(&mut self, from: usize, outgoing: Outgoing) {
            let config = self.nodes[from].membership.config().clone();
            match &outgoing.envelope.message {
                Message::Syn { digests, complete } => {
                    assert!(digests.len() <= config.digests_per_message_max, "Syn over the digest cap");
                    assert_eq!(digests.first().map(|digest| digest.id), Some(id(from)), "a Syn starts with its sender");
                    if !complete {
                        self.incomplete_syns += 1;
                    }
                }
                Message::Ack { records, requests } => {
                    assert!(records.len() <= config.records_per_message_max, "Ack over the record cap");
                    assert!(requests.len() <= config.digests_per_message_max, "Ack over the request cap");
                    self.full_messages += usize::from(records.len() == config.records_per_message_max);
                }
                Message::Ack2 { records } => {
                    assert!(records.len() <= config.records_per_message_max, "Ack2 over the record cap");
                    self.full_messages += usize::from(records.len() == config.records_per_message_max);
                }
                Message::Refuse => *self.refuses_sent.entry(from).or_default() += 1,
            }
            let Some(to) = outgoing.to_address.strip_prefix('n').and_then(|index| index.parse::<usize>().ok()) else {
                return;
            };
            if to >= self.nodes.len() || self.rng.chance(self.loss_percent, 100) {
                return;
            }
            let deliver_at_ms = self.now_ms + 1 + self.rng.below(self.delay_max_ms);
            self.sequence += 1;
            self.in_flight.insert((deliver_at_ms, self.sequence), (to, outgoing.envelope));
        }

        fn step(&mut self) {
            self.now_ms += STEP_MS;
            while let Some(entry) = self.in_flight.first_entry() {
                if entry.key().0 > self.now_ms {
                    break;
                }
                let (to, envelope) = entry.remove();
                let node = &mut self.nodes[to];
                if !node.running {
                    continue;
                }
                let reply = node.membership.receive(self.now_ms, envelope);
                node.events.extend(node.membership.take_events());
                if let Some(reply) = reply {
                    self.send(to, reply);
                }
            }
            for index in 0..self.nodes.len() {
                let node = &mut self.nodes[index];
                if !node.running || node.next_tick_ms > self.now_ms {
                    continue;
                }
                node.next_tick_ms += ROUND_MS;
                let outgoing = node.membership.tick(self.now_ms, &mut node.rng);
                node.events.extend(node.membership.take_events());
                for message in outgoing {
                    self.send(index, message);
                }
            }
        }

        fn run(&mut self, rounds: u64) {
            for _ in 0..rounds * ROUND_MS / STEP_MS {
                self.step();
            }
        }

        /// Steps until `done` holds, for at most `rounds_max` rounds; the rounds it took.
        fn run_until(&mut self, rounds_max: u64, done: impl Fn(&Net) -> bool) -> Option<u64> {
            let start_ms = self.now_ms;
            while self.now_ms < start_ms + rounds_max * ROUND_MS {
                if done(self) {
                    return Some((self.now_ms - start_ms).div_ceil(ROUND_MS));
                }
                self.step();
            }
            None
        }

        fn stop(&mut self, index: usize) {
            self.nodes[index].running = false;
        }

        fn resume(&mut self, index: usize) {
            let node = &mut self.nodes[index];
            node.running = true;
            node.next_tick_ms = self.now_ms + STEP_MS;
        }

        fn clear_events(&mut self) {
            for node in &mut self.nodes {
                node.events.clear();
            }
        }

        fn running(&self) -> Vec<usize> {
            (0..self.nodes.len()).filter(|index| self.nodes[*index].running).collect()
        }

        /// Every running node lists every other running node's current generation, and holds it up.
        fn knows_all(&self) -> bool {
            let running = self.running();
            running.iter().all(|&viewer| {
                running.iter().all(|&other| {
                    let generation = self.nodes[other].membership.local().generation;
                    viewer == other
                        || self.nodes[viewer]
                            .membership
                            .members()
                            .any(|view| view.member.id == id(other) && view.member.generation == generation && view.up)
                })
            })
        }

        /// Every running node but `stranger` knows every other one.
        fn knows_all_but(&self, stranger: usize) -> bool {
            let nodes: Vec<usize> = self.running().into_iter().filter(|index| *index != stranger).collect();
            nodes.iter().all(|&viewer| {
                nodes.iter().all(|&other| viewer == other || self.nodes[viewer].membership.member(id(other)).is_some())
            })
        }

        /// Every running node other than `except` has seen `event`.
        fn all_saw(&self, except: usize, event: &Event) -> bool {
            self.running()
                .into_iter()
                .filter(|index| *index != except)
                .all(|index| self.nodes[index].events.contains(event))
        }
    }

    #[test]
    fn five_nodes_with_one_seed_learn_every_member() {
        for seed in 0..10 {
            let mut net = Net::cluster(seed, 5);
            let rounds = net.run_until(8, Net::knows_all);
            assert!(rounds.is_some(), "seed {seed}: not converged in 8 rounds");
            for viewer in 0..5 {
                for other in (0..5).filter(|other| *other != viewer) {
                    let events = &net.nodes[viewer].events;
                    let joined = events.iter().filter(|event| **event == Event::Joined(id(other))).count();
                    assert_eq!(joined, 1, "seed {seed}: node {viewer} saw node {other} join {joined} times");
                    assert!(events.contains(&Event::Up(id(other))), "seed {seed}: node {viewer} never saw {other} up");
                }
            }
        }
    }

    #[test]
    fn a_node_without_seeds_is_a_cluster_of_one() {
        let mut membership = alone(0);
        let mut rng = Rng::new(7);
        for round in 0..5 {
            assert!(membership.tick(START_MS + round * ROUND_MS, &mut rng).is_empty());
        }
        assert_eq!(membership.local().heartbeat, 5);
        assert_eq!(membership.members().count(), 1);
        assert!(membership.take_events().is_empty());
        // Its only seed being itself changes nothing.
        let config = Config::new(CLUSTER, vec![address(0), address(0)]);
        let mut membership = Membership::new(config, record(0, 1)).unwrap();
        assert!(membership.seeds().is_empty());
        assert!(membership.tick(START_MS, &mut rng).is_empty());
    }

    #[test]
    fn a_silent_node_is_marked_down_by_everyone_and_up_when_it_resumes() {
        for seed in 0..4 {
            let mut net = Net::cluster(seed, 5);
            assert!(net.run_until(8, Net::knows_all).is_some(), "seed {seed}: not converged");
            net.run(20);
            net.clear_events();
            net.stop(4);
            let down = net.run_until(40, |net| net.all_saw(4, &Event::Down(id(4))));
            // phi 8 takes about 18 mean intervals of silence: not sooner, and not much later.
            assert!(down.is_some_and(|rounds| rounds >= 10), "seed {seed}: Down after {down:?} rounds");
            for index in 0..4 {
                let downs: Vec<&Event> =
                    net.nodes[index].events.iter().filter(|event| matches!(event, Event::Down(_))).collect();
                assert_eq!(downs, [&Event::Down(id(4))], "seed {seed}: node {index} suspected the wrong nodes");
                assert!(!net.nodes[index].membership.is_alive(id(4), net.now_ms));
            }
            net.clear_events();
            net.resume(4);
            let up = net.run_until(5, |net| net.all_saw(4, &Event::Up(id(4))));
            assert!(up.is_some(), "seed {seed}: node 4 not up again within 5 rounds");
            assert!(net.run_until(5, Net::knows_all).is_some(), "seed {seed}: node 4 does not hear the others");
        }
    }

    #[test]
    fn a_restarted_node_is_adopted_though_its_heartbeat_is_lower() {
        let mut net = Net::cluster(3, 5);
        assert!(net.run_until(8, Net::knows_all).is_some());
        net.run(20);
        let old_heartbeat = net.nodes[3].membership.local().heartbeat;
        assert!(old_heartbeat >= 20);
        net.stop(3);
        net.run(3);
        net.clear_events();
        let generation = net.now_ms;
        let config = net.nodes[3].membership.config().clone();
        net.nodes[3].membership = Membership::new(config, record(3, generation)).unwrap();
        net.resume(3);
        let adopted = net.run_until(6, |net| {
            (0..5).filter(|index| *index != 3).all(|index| {
                net.nodes[index].membership.member(id(3)).is_some_and(|member| member.generation == generation)
            })
        });
        assert!(adopted.is_some(), "the restarted node was not adopted within 6 rounds");
        for index in (0..5).filter(|index| *index != 3) {
            let member = net.nodes[index].membership.member(id(3)).unwrap();
            assert!(member.heartbeat < old_heartbeat, "adopted before its heartbeat caught up");
            assert!(net.nodes[index].events.contains(&Event::Restarted { id: id(3), generation }));
        }
    }

    #[test]
    fn a_restarted_record_replaces_the_old_one_and_stale_ones_are_ignored() {
        let mut membership = alone(0);
        let mut old = record(1, 5);
        old.heartbeat = 500;
        membership.receive(START_MS, ack2(1, vec![old.clone()]));
        let mut restarted = record(1, 6);
        restarted.heartbeat = 1;
        membership.receive(START_MS + 10, ack2(2, vec![restarted.clone()]));
        assert_eq!(membership.member(id(1)), Some(&restarted));
        // A relayed record of the previous life, however high its heartbeat, is older.
        old.heartbeat = 9_999;
        membership.receive(START_MS + 20, ack2(2, vec![old]));
        assert_eq!(membership.member(id(1)), Some(&restarted));
        assert_eq!(membership.take_events(), [Event::Joined(id(1)), Event::Restarted { id: id(1), generation: 6 }]);
    }

    #[test]
    fn a_mismatched_protocol_or_cluster_is_refused_on_both_sides() {
        let cases = [
            (
                CLUSTER,
                2,
                "peer n3 speaks cluster protocol 2, this node speaks 1",
                "peer n0 speaks cluster protocol 1, this node speaks 2",
            ),
            (
                "other",
                PROTOCOL_VERSION,
                "peer n3 belongs to cluster \"other\", this node to cluster \"test\"",
                "peer n0 belongs to cluster \"test\", this node to cluster \"other\"",
            ),
        ];
        for (cluster, protocol_version, seed_reason, stranger_reason) in cases {
            let mut net = Net::cluster(11, 3);
            let mut stranger = record(3, START_MS);
            stranger.protocol_version = protocol_version;
            net.add(Config::new(cluster, vec![address(0)]), stranger);
            net.run(5);
            let refused_by_seed = Event::Refused { address: address(3), reason: seed_reason.to_owned() };
            let refused_by_stranger = Event::Refused { address: address(0), reason: stranger_reason.to_owned() };
            assert!(net.nodes[0].events.contains(&refused_by_seed), "{:?}", net.nodes[0].events);
            assert!(net.nodes[3].events.contains(&refused_by_stranger), "{:?}", net.nodes[3].events);
            // The seed answers each Syn with a Refuse; a Refuse is never answered.
            let refused_syns = net.nodes[0].events.iter().filter(|event| **event == refused_by_seed).count();
            assert_eq!(net.refuses_sent.get(&0), Some(&refused_syns));
            assert_eq!(net.refuses_sent.get(&3), None, "the stranger answered a Refuse");
            for index in 0..3 {
                assert!(net.nodes[index].membership.member(id(3)).is_none(), "node {index} let the stranger in");
            }
            assert_eq!(net.nodes[3].membership.members().count(), 1, "the stranger merged the cluster");
            assert!(net.knows_all_but(3));
        }
    }

    #[test]
    fn a_layout_version_bump_reaches_everyone_as_newer_layout() {
        let mut net = Net::cluster(5, 5);
        assert!(net.run_until(8, Net::knows_all).is_some());
        let any_newer_layout =
            |net: &Net| net.nodes.iter().any(|node| node.events.iter().any(|e| matches!(e, Event::NewerLayout { .. })));
        assert!(!any_newer_layout(&net), "NewerLayout while every node holds the same layout");
        net.nodes[2].membership.set_layout_version(7);
        let newer = Event::NewerLayout { from: id(2), version: 7 };
        assert!(net.run_until(6, |net| net.all_saw(2, &newer)).is_some(), "the new layout did not spread in 6 rounds");
        for index in (0..5).filter(|index| *index != 2) {
            let count = net.nodes[index].events.iter().filter(|event| **event == newer).count();
            assert_eq!(count, 1, "node {index} was told {count} times");
            net.nodes[index].membership.set_layout_version(7);
        }
        net.clear_events();
        net.run(5);
        assert!(!any_newer_layout(&net), "NewerLayout after everyone adopted the layout");
        // An older version is never adopted back.
        net.nodes[0].membership.set_layout_version(3);
        assert_eq!(net.nodes[0].membership.local().layout_version, 7);
    }

    #[test]
    fn twenty_percent_message_loss_still_converges() {
        for seed in 0..5 {
            let mut net = Net::cluster(100 + seed, 8);
            net.loss_percent = 20;
            assert!(net.run_until(20, Net::knows_all).is_some(), "seed {seed}: not converged in 20 rounds");
            net.nodes[5].membership.set_layout_version(2);
            let newer = Event::NewerLayout { from: id(5), version: 2 };
            assert!(net.run_until(15, |net| net.all_saw(5, &newer)).is_some(), "seed {seed}: layout did not spread");
        }
    }

    #[test]
    fn message_caps_hold_and_gossip_still_converges() {
        let mut net = Net::with_configs(9, 12, |_| {
            let mut config = Config::new(CLUSTER, vec![address(0)]);
            config.records_per_message_max = 2;
            config.digests_per_message_max = 4;
            config
        });
        // `Net::send` asserts every message against its sender's caps.
        assert!(net.run_until(60, Net::knows_all).is_some(), "not converged in 60 rounds");
        assert!(net.full_messages > 0, "no message reached the record cap: the test proves nothing");
        assert!(net.incomplete_syns > 0, "no digest was cut: the test proves nothing");
    }

    #[test]
    fn phi_stays_low_under_regular_heartbeats_and_grows_with_silence() {
        let config = Config::new(CLUSTER, Vec::new());
        let mut rng = Rng::new(1);
        let mut window = ArrivalWindow::new(0, &config);
        let mut now_ms = 0;
        for _ in 0..300 {
            now_ms += 900 + rng.below(200);
            assert!(window.phi(now_ms) < 1.0, "phi {} at a regular arrival", window.phi(now_ms));
            window.arrive(now_ms, &config);
        }
        let silences_ms = [0, 1_000, 5_000, 10_000, 17_000, 20_000, 40_000];
        let phis: Vec<f64> = silences_ms.iter().map(|silence_ms| window.phi(now_ms + silence_ms)).collect();
        assert!(phis.windows(2).all(|pair| pair[0] < pair[1]), "{phis:?}");
        assert!(phis[2] < 3.0 && phis[4] < PHI_THRESHOLD_DEFAULT, "{phis:?}");
        assert!(phis[5] > PHI_THRESHOLD_DEFAULT, "{phis:?}");
        // An outage is not a sample: after it the detector is as quick as before.
        let before = window.phi(now_ms + 10_000);
        now_ms += 60_000;
        window.arrive(now_ms, &config);
        assert!((window.phi(now_ms + 10_000) - before).abs() < 0.1);
        // The window keeps at most `phi_window` intervals.
        for _ in 0..2_000 {
            now_ms += 1_000;
            window.arrive(now_ms, &config);
        }
        assert_eq!(window.intervals_ms.len(), config.phi_window);
        assert_eq!(window.sum_ms, 1_000 * config.phi_window as u64);
    }

    #[test]
    fn a_peer_is_alive_while_its_heartbeat_advances_and_a_new_one_is_not_suspect_at_once() {
        let mut membership = alone(0);
        let mut peer = record(1, 1);
        membership.receive(START_MS, ack2(1, vec![peer.clone()]));
        // Just learned: the bootstrap interval keeps it alive for a while, not forever.
        assert_eq!(membership.phi(id(1), START_MS), Some(0.0));
        assert!(membership.is_alive(id(1), START_MS + 10_000));
        assert!(!membership.is_alive(id(1), START_MS + 40_000));
        let mut now_ms = START_MS;
        for _ in 0..50 {
            now_ms += 1_000;
            peer.heartbeat += 1;
            membership.receive(now_ms, ack2(1, vec![peer.clone()]));
            assert!(membership.phi(id(1), now_ms + 999).is_some_and(|phi| phi < 1.0));
        }
        assert!(membership.is_alive(id(1), now_ms + 10_000));
        assert!(!membership.is_alive(id(1), now_ms + 30_000));
        assert_eq!(membership.phi(id(0), now_ms), Some(0.0));
        assert!(membership.is_alive(id(0), now_ms));
        assert_eq!(membership.phi(id(9), now_ms), None);
        assert!(!membership.is_alive(id(9), now_ms));
        // Liveness is local: records carry none, so only the tick turns phi into events.
        let mut rng = Rng::new(3);
        membership.take_events();
        membership.tick(now_ms + 1_000, &mut rng);
        assert_eq!(membership.take_events(), [Event::Up(id(1))]);
        membership.tick(now_ms + 30_000, &mut rng);
        assert_eq!(membership.take_events(), [Event::Down(id(1))]);
    }

    #[test]
    fn a_node_that_hears_no_one_keeps_trying_its_unreachable_peers() {
        // No seeds, every peer down: only the unreachable draw (probability 2 / (0 + 1)) can heal.
        let mut membership = alone(0);
        membership.receive(START_MS, ack2(1, vec![record(1, 1), record(2, 1)]));
        let mut rng = Rng::new(8);
        membership.tick(START_MS + 1_000, &mut rng);
        assert_eq!(membership.members().filter(|view| view.up).count(), 3);
        let mut tried = BTreeSet::new();
        for round in 0..20 {
            let outgoing = membership.tick(START_MS + 60_000 + round * ROUND_MS, &mut rng);
            assert_eq!(outgoing.len(), 1, "round {round}: {outgoing:?}");
            assert!(matches!(outgoing[0].envelope.message, Message::Syn { .. }));
            tried.insert(outgoing[0].to);
        }
        assert_eq!(tried, BTreeSet::from([Some(id(1)), Some(id(2))]));
        assert_eq!(membership.members().filter(|view| view.up).count(), 1);
    }

    #[test]
    fn left_is_final_and_forgotten_after_the_quarantine() {
        let mut config = Config::new(CLUSTER, Vec::new());
        config.left_quarantine_ms = 60_000;
        let mut membership = Membership::new(config, record(0, 1)).unwrap();
        let mut rng = Rng::new(5);
        let mut peer = record(1, 1);
        peer.heartbeat = 10;
        membership.receive(START_MS, ack2(1, vec![peer.clone()]));
        peer.heartbeat = 11;
        peer.status = Status::Leaving;
        membership.receive(START_MS + 1_000, ack2(1, vec![peer.clone()]));
        peer.heartbeat = 12;
        peer.status = Status::Left;
        membership.receive(START_MS + 2_000, ack2(1, vec![peer.clone()]));
        assert_eq!(
            membership.take_events(),
            [
                Event::Joined(id(1)),
                Event::StatusChanged(id(1), Status::Leaving),
                Event::StatusChanged(id(1), Status::Left)
            ]
        );
        // Neither a newer record that is not Left nor a later life brings the id back.
        let mut back = peer.clone();
        back.heartbeat = 13;
        back.status = Status::Normal;
        membership.receive(START_MS + 3_000, ack2(2, vec![back.clone()]));
        back.generation = 2;
        membership.receive(START_MS + 3_000, ack2(2, vec![back.clone()]));
        assert_eq!(membership.member(id(1)).map(|member| member.status), Some(Status::Left));
        // Left members are not advertised, and they are not gossip targets.
        let outgoing = membership.tick(START_MS + 4_000, &mut rng);
        assert!(outgoing.is_empty(), "{outgoing:?}");
        let syn = membership.syn(&mut rng);
        assert_eq!(syn, Message::Syn { digests: vec![membership.local().digest()], complete: true });
        // After the quarantine the member is forgotten, and its Left record does not come back.
        membership.tick(START_MS + 61_999, &mut rng);
        assert!(membership.member(id(1)).is_some());
        membership.take_events();
        membership.tick(START_MS + 62_000, &mut rng);
        assert!(membership.member(id(1)).is_none());
        assert_eq!(membership.take_events(), [Event::Removed(id(1))]);
        membership.receive(START_MS + 63_000, ack2(2, vec![peer]));
        assert!(membership.member(id(1)).is_none());
        assert!(membership.take_events().is_empty());
        // The local node's own Left is final too.
        assert_eq!(membership.set_status(Status::Leaving), Ok(()));
        assert_eq!(membership.set_status(Status::Left), Ok(()));
        assert_eq!(membership.set_status(Status::Normal), Err(Error::LeftIsFinal));
        assert_eq!(membership.local().status, Status::Left);
    }

    #[test]
    fn a_record_of_this_node_from_elsewhere() {
        let mut membership = alone(0);
        // An earlier life with a higher generation (the clock went back): move past it.
        let mut earlier = record(0, 50);
        earlier.heartbeat = 7;
        membership.receive(START_MS, ack2(1, vec![earlier]));
        assert_eq!(membership.local().version(), (51, 0));
        assert!(membership.take_events().is_empty());
        // Another node with this node's id: reported, and the local record stays.
        let mut impostor = record(0, 90);
        impostor.address = "10.0.0.9:7000".to_owned();
        membership.receive(START_MS, ack2(1, vec![impostor]));
        assert_eq!(membership.local().version(), (51, 0));
        assert_eq!(
            membership.take_events(),
            [Event::Refused {
                address: "10.0.0.9:7000".to_owned(),
                reason: "peer 10.0.0.9:7000 claims this node's id 1 (this node listens on n0); node ids must be unique"
                    .to_owned()
            }]
        );
    }

    #[test]
    fn one_exchange_reconciles_both_sides() {
        let mut a = alone(0);
        let mut b = alone(1);
        let mut rng = Rng::new(2);
        let mut c = record(2, 1);
        c.heartbeat = 5;
        a.receive(START_MS, ack2(2, vec![c.clone()]));
        c.heartbeat = 9;
        let mut d = record(3, 1);
        d.heartbeat = 4;
        b.receive(START_MS, ack2(2, vec![c.clone(), d.clone()]));
        a.tick(START_MS, &mut rng);
        b.tick(START_MS, &mut rng);
        let Message::Syn { digests, complete } = a.syn(&mut rng) else { panic!("not a Syn") };
        assert!(complete);
        let syn = from_peer(0, Message::Syn { digests, complete });
        let ack = b.receive(START_MS, syn).unwrap();
        assert_eq!(ack.to_address, address(0));
        let Message::Ack { records, requests } = &ack.envelope.message else { panic!("not an Ack: {ack:?}") };
        // B pushes its newer c, the d that A does not list and itself; it asks for A.
        let mut pushed: Vec<NodeId> = records.iter().map(|record| record.id).collect();
        pushed.sort();
        assert_eq!(pushed, [id(1), id(2), id(3)]);
        assert_eq!(requests, &[Digest { id: id(0), generation: 0, heartbeat: 0 }]);
        let ack2 = a.receive(START_MS, ack.envelope).unwrap();
        b.receive(START_MS, ack2.envelope);
        for id in [id(0), id(1), id(2), id(3)] {
            assert_eq!(a.member(id), b.member(id), "{id:?} differs after one exchange");
        }
        assert_eq!(a.member(id(2)).unwrap().heartbeat, 9);
    }

    #[test]
    fn configuration_is_validated() {
        let valid = || Config::new(CLUSTER, vec![address(1)]);
        let rejected = |config: Config, local: Member| Membership::new(config, local).is_err();
        assert!(Membership::new(valid(), record(0, 1)).is_ok());
        assert!(rejected(Config::new("", Vec::new()), record(0, 1)));
        assert!(rejected(Config::new("x".repeat(CLUSTER_NAME_BYTES_MAX + 1), Vec::new()), record(0, 1)));
        assert!(rejected(valid(), record(0, 0)));
        assert!(rejected(valid(), Member { address: String::new(), ..record(0, 1) }));
        assert!(rejected(valid(), Member { status: Status::Left, ..record(0, 1) }));
        assert!(rejected(Config::new(CLUSTER, vec![String::new()]), record(0, 1)));
        assert!(rejected(Config::new(CLUSTER, vec![address(1); SEEDS_MAX + 1]), record(0, 1)));
        for change in [
            |config: &mut Config| config.phi_threshold = f64::NAN,
            |config: &mut Config| config.phi_threshold = 0.0,
            |config: &mut Config| config.phi_window = 0,
            |config: &mut Config| config.phi_window = PHI_WINDOW_MAX + 1,
            |config: &mut Config| config.phi_bootstrap_interval_ms = 0,
            |config: &mut Config| config.phi_interval_max_ms = u64::MAX,
            |config: &mut Config| config.records_per_message_max = 0,
            |config: &mut Config| config.records_per_message_max = RECORDS_PER_MESSAGE_MAX + 1,
            |config: &mut Config| config.digests_per_message_max = 0,
        ] {
            let mut config = valid();
            change(&mut config);
            assert!(rejected(config, record(0, 1)));
        }
        let error = Membership::new(Config::new("", Vec::new()), record(0, 1)).unwrap_err();
        assert_eq!(error.to_string(), "invalid membership configuration: the cluster name must be 1 to 128 bytes");
    }

    #[test]
    fn arbitrary_messages_never_panic_and_keep_every_limit() {
        let mut rng = Rng::new(0xF0CA);
        let mut membership = alone(0);
        let texts = ["n1", "n2", "", "test", "other", "\u{7}\n\"", &"é".repeat(ADDRESS_BYTES_MAX)];
        let text = |rng: &mut Rng| texts[rng.below(texts.len() as u64) as usize].to_owned();
        let mut now_ms = START_MS;
        for iteration in 0..3_000u64 {
            // Time mostly advances, sometimes stands still or goes back.
            now_ms = now_ms.saturating_add(rng.below(3_000)).saturating_sub(rng.below(500));
            let id_bound = if iteration % 500 < 20 { 5_000 } else { 12 };
            let random_member = |rng: &mut Rng| Member {
                id: NodeId(rng.below(id_bound)),
                address: if rng.chance(9, 10) { format!("n{}", rng.below(12)) } else { text(rng) },
                generation: if rng.chance(1, 20) { u64::MAX } else { rng.below(4) },
                heartbeat: if rng.chance(1, 20) { u64::MAX } else { rng.below(100) },
                status: [Status::Joining, Status::Normal, Status::Leaving, Status::Left][rng.below(4) as usize],
                layout_version: rng.below(10),
                protocol_version: PROTOCOL_VERSION,
            };
            let length = |rng: &mut Rng| if rng.chance(1, 10) { rng.below(3_000) } else { rng.below(8) };
            let count = length(&mut rng);
            let message = match rng.below(4) {
                0 => Message::Syn {
                    digests: (0..count)
                        .map(|_| Digest {
                            id: NodeId(rng.below(id_bound)),
                            generation: rng.below(4),
                            heartbeat: rng.below(200),
                        })
                        .collect(),
                    complete: rng.chance(1, 2),
                },
                1 => Message::Ack {
                    records: (0..count).map(|_| random_member(&mut rng)).collect(),
                    requests: (0..length(&mut rng))
                        .map(|_| Digest { id: NodeId(rng.below(id_bound)), generation: 0, heartbeat: rng.below(3) })
                        .collect(),
                },
                2 => Message::Ack2 { records: (0..count).map(|_| random_member(&mut rng)).collect() },
                _ => Message::Refuse,
            };
            let envelope = Envelope {
                cluster_name: if rng.chance(9, 10) { CLUSTER.to_owned() } else { text(&mut rng) },
                protocol_version: if rng.chance(9, 10) { PROTOCOL_VERSION } else { rng.next_u64() as u32 },
                from: NodeId(rng.below(12)),
                from_address: if rng.chance(9, 10) { format!("n{}", rng.below(12)) } else { text(&mut rng) },
                message,
            };
            let mut outgoing: Vec<Outgoing> = membership.receive(now_ms, envelope).into_iter().collect();
            if rng.chance(1, 5) {
                outgoing.extend(membership.tick(now_ms, &mut rng));
            }
            if rng.chance(1, 50) {
                let _ = membership.set_status(Status::Leaving);
                membership.set_layout_version(rng.below(20));
            }
            let config = membership.config();
            for message in &outgoing {
                assert!(address_is_valid(&message.to_address));
                match &message.envelope.message {
                    Message::Syn { digests, .. } => assert!(digests.len() <= config.digests_per_message_max),
                    Message::Ack { records, requests } => {
                        assert!(records.len() <= config.records_per_message_max);
                        assert!(requests.len() <= config.digests_per_message_max);
                    }
                    Message::Ack2 { records } => assert!(records.len() <= config.records_per_message_max),
                    Message::Refuse => {}
                }
            }
            assert!(membership.members().count() <= MEMBERS_MAX);
            assert_eq!((membership.local().id, membership.local().address.as_str()), (id(0), "n0"));
            for event in membership.take_events() {
                if let Event::Refused { reason, .. } = event {
                    assert!(!reason.contains('\n') && !reason.contains('\u{7}'), "unescaped: {reason:?}");
                }
            }
        }
        // Thousands of new members fill the membership to its bound and no further.
        for burst in 0..(MEMBERS_MAX / RECORDS_PER_MESSAGE_MAX + 2) as u64 {
            let records = (0..RECORDS_PER_MESSAGE_MAX as u64 * 2)
                .map(|offset| Member { id: NodeId(10_000 + burst * 1_000 + offset), ..record(1, 1) })
                .collect();
            membership.receive(now_ms, ack2(1, records));
        }
        assert_eq!(membership.members().count(), MEMBERS_MAX);
    }
}

//! The simulated world: nodes running the core protocols, a faulty network, clients, and time.
//!
//! One event queue ordered by (simulated millisecond, sequence number) drives everything. A node
//! here is what `onggi serve` will be: per item an [`Acceptor`] whose changes are persisted
//! before any reply (commits are written without a sync, like the node's commit path, and are
//! lost in a crash unless a later sync covered them), coordinators running [`Proposer`]s with
//! round timeouts and randomized back-off, and a background task that finishes stale proposals
//! and runs Merkle anti-entropy with the other replicas.
//!
//! **Anti-entropy** is what a node will do ([`onggi_core::merkle`]): every node keeps one
//! [`MerkleTree`] per partition it replicates, over the committed version of each key (tombstones
//! included), updated on every change of a committed version and rebuilt from storage when the
//! node starts. Every `REPAIR_INTERVAL_MS` a node picks one of its partitions and another
//! replica of it, and runs a [`Comparison`] over simulated messages (`Message::MerkleRequest`,
//! `Message::MerkleResponse`); a comparison whose answer does not come in time is abandoned (the
//! network loses messages; the next tick starts a fresh one). When the trees differ, the two nodes
//! exchange their committed versions of the keys in the differing token ranges only
//! (`Message::RangeVersions`, push then pull) and merge them with [`Acceptor::commit`], which
//! keeps the newer version.
//!
//! **Layout changes** ([`Reconfiguration`]). The run starts in the first layout (epoch 0). At
//! `reconfigure_at_ms` one node adopts epoch 1, the change; nodes adopt newer epochs from gossip
//! (`Message::Epoch`, one random peer per repair tick) and from any consensus message, which
//! carries its coordinator's epoch. In epoch 1 a coordinator's quorums are a majority of each of
//! the key's old and new replica sets ([`Quorums::joint`]); a replica answers a message of an
//! older epoch than its own with `Message::Stale`, and the coordinator continues the operation
//! in its newer epoch ([`Proposer::reconfigure`]). Each new replica of a moved partition asks
//! every old replica for its state there (`Message::SyncRequest`, `Message::SyncState`): the old
//! replica adopts epoch 1 first — from then on it refuses operations of the old layout alone —
//! and answers with its committed versions, and whether it held no unfinished proposal (it
//! finishes any it has). The new replica merges the versions, and once clean answers came from a
//! majority of the old replicas it has every version chosen before the change: it persists them
//! and counts itself caught up, which gossip spreads. A node switches to epoch 2, the new layout
//! alone, once a majority of every moved partition's new replicas caught up: versions chosen
//! before the change are then on a majority of the new replicas, and versions chosen during it
//! were chosen by one. Epochs are persisted when adopted (a crash keeps them).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::fmt::Write as _;

use onggi_core::hlc::{Clock, Timestamp};
use onggi_core::layout::{Change, Layout, Node as LayoutNode, NodeId, PartitionId};
use onggi_core::merkle::{self, Comparison, MerkleTree};
use onggi_core::paxos::{
    Acceptance, Acceptor, Ballot, Decision, Knowledge, Lease, Lineage, Lineaged, Promise, Proposer, Quorums, Step,
    Version,
};
use onggi_core::rng::Rng;
use onggi_core::tombstones::{self, AdoptToken, Floors, LiveDigest, Next, Prepared, Round};

use crate::linearizability::{self, Event as HistoryEvent, Op, Output};

/// A simulated item's key.
type Key = u64;
/// A simulated item's value: `None` is absent (never written, or deleted).
type Value = Option<u64>;

/// What replicas agree on for an item: its value and the lineage of writes that made it, which
/// lets a coordinator tell whether its earlier attempt is in the history (see `paxos.rs`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Stored {
    value: Value,
    lineage: Lineage,
}

impl Lineaged for Stored {
    fn written_by(&self, attempt: Ballot) -> Option<bool> {
        self.lineage.written_by(attempt)
    }
}

/// How much history of writers a value keeps: longer than any operation's retries.
const LINEAGE_WINDOW_MS: u64 = 10_000;

/// How long a coordinator waits for a round's answers before starting a new round.
const ROUND_TIMEOUT_MS: u64 = 120;
/// A lease older than this is not used (its ballot's time is the version's timestamp, and must
/// stay well within the lineage window, as in the node).
const LEASE_AGE_MAX_MS: u64 = 1_000;
/// How long a coordinator keeps trying before answering the client with an error.
const OPERATION_DEADLINE_MS: u64 = 1_500;
/// How long a client waits for an answer before counting its operation indeterminate.
const CLIENT_TIMEOUT_MS: u64 = 2_500;
/// How often each node runs its background repair.
const REPAIR_INTERVAL_MS: u64 = 100;
/// Proposals older than this (by ballot time) are finished by background repair.
const STALE_PROPOSAL_MS: u64 = 400;
/// Depth of every Merkle tree: a real node's default, so comparisons descend as far as they will
/// in production (six round trips to a differing leaf).
const MERKLE_DEPTH: u8 = merkle::DEPTH_DEFAULT;
/// Node digests per comparison message. Small on purpose: with at most five keys a comparison's
/// frontier never exceeds twenty nodes, so a production-sized bound would never split one, and
/// the split path would go untested.
const MERKLE_HASHES_PER_MESSAGE: u32 = 8;
/// How long the initiator of a comparison waits for each answer before abandoning the comparison:
/// a round trip takes at most twice the largest drawn delay (40 ms), so a later answer was lost
/// or is held by a paused peer.
const MERKLE_REQUEST_TIMEOUT_MS: u64 = 120;
/// Comparisons one node runs at once: repair ticks start none while this many are running, so a
/// node whose peers do not answer accumulates no state.
const MERKLE_COMPARISONS_MAX: usize = 4;
/// How far behind its node's clock a tombstone-collection round puts its floor, beyond the
/// longest an operation runs and the clocks' disagreement (see [`World::collection_grace_ms`]).
const COLLECTION_GRACE_MARGIN_MS: u64 = 100;
/// A node starts a collection round on one in this many repair ticks.
const COLLECTION_TICKS: u64 = 3;
/// A round not over after this long is abandoned (its messages lost, a replica down) and the
/// next may start.
const COLLECTION_ROUND_MS: u64 = 500;

const _: () = assert!(MERKLE_DEPTH <= merkle::DEPTH_MAX);
const _: () = assert!(MERKLE_HASHES_PER_MESSAGE >= 1 && MERKLE_HASHES_PER_MESSAGE <= merkle::HASHES_PER_MESSAGE_MAX);
/// Physical time of the simulation's start, so clocks look like real ones.
const EPOCH_MS: u64 = 1_800_000_000_000;

/// The faults a run injects.
#[derive(Clone, Debug)]
pub struct Faults {
    /// Messages lost, per thousand (node-to-node links; client links behave like TCP).
    pub loss_per_mille: u64,
    /// Messages delivered twice, per thousand.
    pub duplicate_per_mille: u64,
    /// Node-to-node delays are uniform in `1..=max_delay_ms`, which reorders messages.
    pub max_delay_ms: u64,
    /// Mean time between partition episodes (0: none). Episodes isolate a random group, both
    /// ways or one way only, for 100–1,000 ms.
    pub partition_every_ms: u64,
    /// Mean time between crashes (0: none). A crashed node loses what it had not persisted and
    /// restarts 50–1,000 ms later.
    pub crash_every_ms: u64,
    /// Mean time between pauses (0: none): a node freezes (like SIGSTOP) for 50–600 ms.
    pub pause_every_ms: u64,
    /// Each node's wall clock is off by up to this much, either way.
    pub clock_skew_ms: u64,
}

/// A simulation run's parameters.
#[derive(Clone, Debug)]
pub struct Config {
    /// The seed every random choice derives from.
    pub seed: u64,
    /// Nodes in the cluster.
    pub nodes: usize,
    /// Replicas per item (N).
    pub replication: usize,
    /// Distinct items the clients work on.
    pub keys: u64,
    /// Concurrent clients.
    pub clients: usize,
    /// Clients start operations during this long; faults happen during it.
    pub load_ms: u64,
    /// After the faults stop, replicas must converge within this long.
    pub heal_bound_ms: u64,
    /// What goes wrong.
    pub faults: Faults,
    /// A deliberate bug in the shell, to show that the checkers catch what they claim to.
    pub sabotage: Option<Sabotage>,
    /// A change of the partition layout during the run, if any.
    pub reconfiguration: Option<Reconfiguration>,
    /// When the layout change starts (one node hears of it; gossip and messages spread it).
    pub reconfigure_at_ms: u64,
}

/// A change of the partition layout, run online under load and faults (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reconfiguration {
    /// The last `nodes` nodes are not in the first layout; they join, and partitions move to
    /// them (with two, some partitions get two new replicas of three).
    Join { nodes: usize },
    /// `nodes` nodes are decommissioned: they stay members but every replica they held moves
    /// elsewhere.
    Decommission { nodes: usize },
}

/// Deliberate bugs, for testing the checkers (never set by [`Config::from_seed`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sabotage {
    /// Acceptors answer before persisting promises and proposals, so a crash forgets them.
    ForgetfulAcceptors,
    /// No background repair: no anti-entropy, no finishing of abandoned proposals.
    NoRepair,
    /// No anti-entropy, but abandoned proposals are still finished: a replica that missed both a
    /// version's accept and its commit has nothing else to bring it up to date.
    NoAntiEntropy,
    /// During a layout change, new replicas declare themselves caught up without copying
    /// anything from the old ones.
    SkipCatchUp,
    /// During a layout change, operations use the new layout's replicas alone instead of
    /// quorums of both layouts.
    NoJointQuorums,
    /// Replicas answer an accept that carries the next ballot as if they had promised it, without
    /// promising: a coordinator's lease then does not stop other writes in between, and its
    /// next write is built on a value that may no longer be current.
    BlindLeases,
    /// Tombstone collection ignores the replicas' digests: a replica that still holds an old
    /// version of an item the others deleted adopts the floor all the same, and the others remove
    /// their tombstones.
    CollectUnagreed,
}

impl Config {
    /// A configuration drawn from `seed`: 3–7 nodes, N = 3, 2–5 keys, 3–8 clients, and a random
    /// mix of faults (some seeds run fault-free, most inject several kinds at once).
    pub fn from_seed(seed: u64) -> Config {
        let mut rng = Rng::new(seed ^ 0x5157_AB1E_C0FF_EE00);
        let pick = |rng: &mut Rng, values: &[u64]| values[rng.below(values.len() as u64) as usize];
        let mut config = Config {
            seed,
            nodes: 3 + rng.below(5) as usize,
            replication: 3,
            keys: 2 + rng.below(4),
            clients: 3 + rng.below(6) as usize,
            load_ms: 3_000,
            heal_bound_ms: 10_000,
            faults: Faults {
                loss_per_mille: pick(&mut rng, &[0, 0, 10, 50, 150]),
                duplicate_per_mille: pick(&mut rng, &[0, 10, 50]),
                max_delay_ms: pick(&mut rng, &[2, 10, 40]),
                partition_every_ms: pick(&mut rng, &[0, 300, 1_000]),
                crash_every_ms: pick(&mut rng, &[0, 400, 1_500]),
                pause_every_ms: pick(&mut rng, &[0, 0, 800]),
                clock_skew_ms: pick(&mut rng, &[0, 50, 2_000]),
            },
            sabotage: None,
            reconfiguration: match rng.below(5) {
                0 => None,
                1 => Some(Reconfiguration::Join { nodes: 1 }),
                2 => Some(Reconfiguration::Join { nodes: 2 }),
                3 => Some(Reconfiguration::Decommission { nodes: 1 }),
                _ => Some(Reconfiguration::Decommission { nodes: 2 }),
            },
            reconfigure_at_ms: 200 + rng.below(2_300),
        };
        if config.reconfiguration.is_some() {
            // More keys than usual, so that some sit idle while the layout changes and only the
            // new replicas' catching up carries them over.
            config.keys = 8 + rng.below(9);
        }
        config
    }
}

/// What a run did and found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Operations clients completed successfully.
    pub ok: u64,
    /// Operations that failed with nothing applied (the coordinator knew).
    pub failed: u64,
    /// Operations whose outcome the client never learned.
    pub indeterminate: u64,
    /// Of those: a coordinator found a newer version that may derive from its attempt.
    pub unknown_by_contention: u64,
    /// Of those: a coordinator reached its deadline after an attempt that may have been accepted.
    pub unknown_by_deadline: u64,
    /// Node-to-node messages sent, and lost.
    pub messages: u64,
    /// Messages the network dropped.
    pub dropped: u64,
    /// Faults injected: partitions, crashes, pauses.
    pub partitions: u64,
    /// Crashes injected.
    pub crashes: u64,
    /// Pauses injected.
    pub pauses: u64,
    /// Merkle comparisons background repair started.
    pub merkle_comparisons: u64,
    /// Of those: abandoned before finishing (an answer lost or late, a peer paused or crashed).
    pub merkle_abandoned: u64,
    /// Of those: finished with differing token ranges, so the two replicas exchanged versions.
    pub merkle_differences: u64,
    /// Committed versions anti-entropy sent, both directions of every exchange.
    pub versions_transferred: u64,
    /// Of those: versions newer than the receiver's, which brought it up to date.
    pub versions_repaired: u64,
    /// Simulated milliseconds from the end of the faults to converged replicas.
    pub converged_after_ms: Option<u64>,
    /// The layout change run, if any.
    pub reconfiguration: Option<Reconfiguration>,
    /// Partitions whose replicas the layout change moved.
    pub partitions_moved: u64,
    /// When the first node switched to the new layout alone (simulated ms), if one did.
    pub new_layout_at_ms: Option<u64>,
    /// Committed versions new replicas merged while catching up on their partitions.
    pub versions_synced: u64,
    /// Writes that started at the accept, on a lease of the coordinator's previous write.
    pub leases_used: u64,
    /// Tombstone-collection rounds started, and of those, rounds whose floor every replica
    /// adopted.
    pub collection_rounds: u64,
    /// See [`Report::collection_rounds`].
    pub collection_rounds_adopted: u64,
    /// Tombstones removed, over all replicas.
    pub tombstones_removed: u64,
    /// Commits dropped because their version was at or below the receiver's adopted floor.
    pub commits_dropped: u64,
    /// Everything that went wrong; empty for a passing seed.
    pub violations: Vec<String>,
}

impl Report {
    /// One line for logs.
    pub fn summary(&self) -> String {
        format!(
            "seed {}: {} ok, {} failed, {} indeterminate ({} contention, {} deadline, {} client timeout); {} messages \
             ({} dropped); {} partitions, {} crashes, {} pauses; {} Merkle comparisons ({} abandoned, {} found \
             differences), {} versions transferred ({} repaired); {} writes on leases; {} collection rounds ({} \
             adopted), {} tombstones removed, {} old commits dropped; layout change {}; converged {} ms after \
             healing; {} violations",
            self.seed,
            self.ok,
            self.failed,
            self.indeterminate,
            self.unknown_by_contention,
            self.unknown_by_deadline,
            self.indeterminate - self.unknown_by_contention - self.unknown_by_deadline,
            self.messages,
            self.dropped,
            self.partitions,
            self.crashes,
            self.pauses,
            self.merkle_comparisons,
            self.merkle_abandoned,
            self.merkle_differences,
            self.versions_transferred,
            self.versions_repaired,
            self.leases_used,
            self.collection_rounds,
            self.collection_rounds_adopted,
            self.tombstones_removed,
            self.commits_dropped,
            match self.reconfiguration {
                None => "none".to_string(),
                Some(kind) => format!(
                    "{kind:?} ({} partitions moved, {} versions synced, new layout alone from {} ms)",
                    self.partitions_moved,
                    self.versions_synced,
                    self.new_layout_at_ms.map_or("never".to_string(), |ms| ms.to_string())
                ),
            },
            self.converged_after_ms.map_or("never".to_string(), |ms| ms.to_string()),
            self.violations.len()
        )
    }
}

/// Who sends and receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Endpoint {
    Node(usize),
    Client(usize),
}

/// Names one coordinator operation across restarts of its node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct OpRef {
    node: usize,
    incarnation: u64,
    id: u64,
}

/// A client's request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClientOp {
    Read,
    Write(Value),
    Cas { expected: Value, new: Value },
}

/// What a coordinator tells a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    Ok(Output),
    /// Nothing was applied.
    Failed,
    /// The operation may or may not have been applied.
    Unknown,
}

/// Why a coordinator answered [`Answer::Unknown`].
#[derive(Clone, Copy, Debug)]
enum Unknown {
    Contention,
    Deadline,
}

#[derive(Clone, Debug)]
enum Message {
    Request {
        seq: u64,
        key: Key,
        op: ClientOp,
    },
    Answer {
        seq: u64,
        answer: Answer,
    },
    Read {
        op: OpRef,
        key: Key,
        epoch: u64,
    },
    ReadReply {
        op: OpRef,
        knowledge: Knowledge<Stored>,
    },
    Prepare {
        op: OpRef,
        key: Key,
        ballot: Ballot,
        epoch: u64,
    },
    Promise {
        op: OpRef,
        ballot: Ballot,
        promise: Promise<Stored>,
    },
    Accept {
        op: OpRef,
        key: Key,
        proposal: Version<Stored>,
        /// The coordinator's next ballot for the key, to be promised with the acceptance (see
        /// `Lease` in the core).
        next: Ballot,
        epoch: u64,
    },
    /// A replica's answer to a consensus message sent under an older layout epoch than its own:
    /// the coordinator moves the operation to the newer epoch's replicas.
    Stale {
        op: OpRef,
        epoch: u64,
    },
    /// Layout gossip: the sender's epoch, and which new replicas it knows have caught up on
    /// which moved partitions.
    Epoch {
        epoch: u64,
        synced: BTreeMap<PartitionId, BTreeSet<NodeId>>,
    },
    /// A new replica of a moved partition asks a replica of the old layout for its state there.
    SyncRequest {
        partition: PartitionId,
        epoch: u64,
    },
    /// The answer: the committed versions of the partition's keys, and whether the sender holds
    /// no unfinished proposal there (only then does its answer count towards catching up).
    SyncState {
        partition: PartitionId,
        versions: Vec<(Key, Version<Stored>)>,
        clean: bool,
        /// The sender's tombstone-collection floors there: a new replica takes them over, so
        /// that the new layout's quorums refuse what the old one's promised to refuse.
        floors: Floors,
    },
    Accepted {
        op: OpRef,
        ballot: Ballot,
        answer: Acceptance,
    },
    Commit {
        key: Key,
        version: Version<Stored>,
    },
    /// Tombstone collection (`onggi_core::tombstones`), initiator to every replica of
    /// `partition`: promise `floor` partition-wide and answer.
    CollectPrepare {
        round: u64,
        partition: PartitionId,
        floor: Timestamp,
        epoch: u64,
    },
    CollectPrepared {
        round: u64,
        prepared: Prepared,
    },
    /// Adopt `floor` if nothing moved since the answer `token` names.
    CollectAdopt {
        round: u64,
        partition: PartitionId,
        floor: Timestamp,
        epoch: u64,
        token: AdoptToken,
    },
    CollectAdopted {
        round: u64,
        adopted: bool,
    },
    /// Every replica adopted `floor`: remove the tombstones at or below it.
    CollectNow {
        partition: PartitionId,
        floor: Timestamp,
        epoch: u64,
    },
    /// Anti-entropy, initiator to responder: request number `step` of the comparison
    /// `comparison` (an id of the initiator's) of the trees of `partition`. The responder keeps
    /// no state: it answers from its tree as it is.
    MerkleRequest {
        comparison: u64,
        step: u32,
        partition: PartitionId,
        request: merkle::Request,
    },
    /// Anti-entropy, responder to initiator: the answer to request `step` of `comparison`. The
    /// pair names the request exactly, so a duplicated or late answer to an earlier request is
    /// never taken for the answer to the one in flight.
    MerkleResponse {
        comparison: u64,
        step: u32,
        response: merkle::Response,
    },
    /// Anti-entropy after a comparison found differences: the sender's committed versions of the
    /// keys of `partition` whose tokens lie in `ranges` (the differing leaves' token ranges);
    /// `reply` asks the receiver to answer with its own versions there that this message did not
    /// carry.
    RangeVersions {
        partition: PartitionId,
        ranges: Vec<(u64, u64)>,
        versions: Vec<(Key, Version<Stored>)>,
        reply: bool,
    },
}

impl Message {
    fn ballot_time(&self) -> Option<Timestamp> {
        match self {
            Message::Prepare { ballot, .. } => Some(ballot.time),
            Message::Accept { next, .. } => Some(next.time),
            Message::Promise { promise: Promise::Refused(higher), .. } => Some(higher.time),
            Message::Accepted { answer: Acceptance::Refused(higher), .. } => Some(higher.time),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
enum Event {
    Deliver { from: Endpoint, to: Endpoint, message: Message },
    RoundTimeout { op: OpRef, round: u32 },
    Restart { op: OpRef, round: u32 },
    Deadline { op: OpRef },
    ClientNext { client: usize },
    ClientTimeout { client: usize, seq: u64 },
    Repair { node: usize, incarnation: u64 },
    Reconfigure,
    ComparisonTimeout { node: usize, comparison: u64, step: u32 },
    Fault,
    HealLink { from: usize, to: usize },
    NodeUp { node: usize },
    Resume { node: usize },
    Heal,
    CheckConvergence,
}

/// A coordinator's operation in progress.
struct Coordination {
    /// The client and its request number; `None` for background repair.
    client: Option<(usize, u64)>,
    key: Key,
    op: ClientOp,
    proposer: Proposer<Stored>,
    /// The layout epoch the operation's quorums come from (see [`World::quorums_of`]).
    epoch: u64,
    round: u32,
    /// What each round decided to tell the client, by the round's ballot.
    outputs: Vec<(Ballot, Output)>,
}

struct SimNode {
    id: NodeId,
    up: bool,
    paused_until: Option<u64>,
    incarnation: u64,
    skew_ms: i64,
    clock: Clock,
    /// The acceptor state as the node sees it.
    store: BTreeMap<Key, Acceptor<Stored>>,
    /// What survives a crash.
    durable: BTreeMap<Key, Acceptor<Stored>>,
    /// Keys changed since the last sync.
    dirty: BTreeSet<Key>,
    ops: BTreeMap<u64, Coordination>,
    /// Leases of the last write this node coordinated on each key: the layout epoch and the
    /// simulated time it was formed in, and the lease. Volatile, and each is used once.
    leases: BTreeMap<Key, (u64, u64, Lease<Stored>)>,
    next_op: u64,
    /// One Merkle tree per partition this node replicates, over the committed versions in
    /// `store`: kept current on every change of a committed version, rebuilt from `store` when
    /// the node starts (empty while it is down).
    trees: BTreeMap<PartitionId, MerkleTree>,
    /// The comparisons this node started that are still running, by id.
    comparisons: BTreeMap<u64, AntiEntropy>,
    /// The next comparison id. Never reset, not even by a crash, so that an answer meant for a
    /// comparison of an earlier life never pairs with one of this life (a real node would draw
    /// ids at random, or from its clock).
    next_comparison: u64,
    /// The layout epoch this node works in: 0 the first layout, 1 the change (joint quorums of
    /// both layouts), 2 the new layout alone. Persisted as soon as adopted (`durable_epoch`): a
    /// replica that refused a message of an older epoch must go on refusing after a restart.
    epoch: u64,
    durable_epoch: u64,
    /// Per moved partition this node newly replicates: the old replicas whose state it merged
    /// from an answer that counted (clean). A majority of the old replicas means caught up.
    sources: BTreeMap<PartitionId, BTreeSet<NodeId>>,
    /// What this node knows of who has caught up: per moved partition, new replicas that did.
    synced: BTreeMap<PartitionId, BTreeSet<NodeId>>,
    /// Tombstone collection's floors per partition, persisted as soon as they change
    /// (`durable_floors`).
    floors: BTreeMap<PartitionId, Floors>,
    durable_floors: BTreeMap<PartitionId, Floors>,
    /// Commits at or below the promise floor applied per partition in this life (volatile).
    old_commits: BTreeMap<PartitionId, u64>,
    /// Drawn at each start: tells an adopt token of this life from one of an earlier life.
    life: u64,
    /// The collection round this node runs, if any: its id, partition and epoch.
    collecting: Option<(u64, PartitionId, u64, Round)>,
    /// When that round started (simulated ms).
    collecting_since: u64,
    /// The next round id (never reset, like comparison ids).
    next_round: u64,
}

/// A Merkle comparison this node started with one other replica of a partition.
struct AntiEntropy {
    partition: PartitionId,
    /// The other replica, by index.
    peer: usize,
    comparison: Comparison,
    /// The number of the request in flight (numbered from 1).
    step: u32,
}

impl SimNode {
    /// Persists every change so far (a group commit covers earlier unsynced writes too).
    fn sync(&mut self) {
        for key in std::mem::take(&mut self.dirty) {
            match self.store.get(&key) {
                Some(state) => self.durable.insert(key, state.clone()),
                // Removed (a collected tombstone).
                None => self.durable.remove(&key),
            };
        }
    }

    fn acceptor(&mut self, key: Key) -> &mut Acceptor<Stored> {
        self.store.entry(key).or_default()
    }
}

struct Client {
    seq: u64,
    /// The operation in flight: its history index.
    pending: Option<usize>,
    /// The last value this client saw per key, for its next conditional write.
    seen: BTreeMap<Key, Value>,
}

struct World {
    config: Config,
    rng: Rng,
    now: u64,
    sequence: u64,
    queue: BinaryHeap<Reverse<(u64, u64, usize)>>,
    /// Event payloads by slot (the heap holds indices, so events need no ordering).
    events: Vec<Option<Event>>,
    free: Vec<usize>,
    /// The first layout (and the partitioning of the token space, which never changes).
    layout: Layout,
    /// The layout after the run's change: the same as `layout` when the run changes nothing.
    target: Layout,
    /// Partitions whose replica sets differ between the two layouts.
    moved: Vec<PartitionId>,
    nodes: Vec<SimNode>,
    clients: Vec<Client>,
    /// Directed links that drop everything until healed.
    cut: BTreeSet<(usize, usize)>,
    healed: bool,
    next_value: u64,
    /// Per key: the history; the client's event index lives in `Client::pending`.
    history: BTreeMap<Key, Vec<HistoryEvent>>,
    /// Where each pending client operation's event is: (key, index).
    pending_at: BTreeMap<(usize, u64), (Key, usize)>,
    final_reads: BTreeSet<Key>,
    /// Set once every final read has its answer: the run is over.
    done: bool,
    report: Report,
}

fn key_token(key: Key) -> u64 {
    // Spread the small keys over the token space, as xxh3 spreads real partition keys.
    let mut rng = Rng::new(key.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xA5A5);
    rng.next_u64()
}

/// A simulated key's storage key, as a Merkle tree sees it: the token (8 bytes, big-endian), then
/// the key itself, like a real storage key's token prefix and partition key.
fn tree_key(key: Key) -> [u8; 16] {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&key_token(key).to_be_bytes());
    bytes[8..].copy_from_slice(&key.to_be_bytes());
    bytes
}

/// The bytes that identify a committed version in a Merkle tree: its ballot is its timestamp.
fn stamp(ballot: Ballot) -> [u8; merkle::VERSION_STAMP_BYTES] {
    merkle::version_stamp(ballot.time, ballot.node)
}

/// Whether two replica lists hold the same nodes.
fn same_set(a: &[NodeId], b: &[NodeId]) -> bool {
    a.len() == b.len() && a.iter().all(|node| b.contains(node))
}

/// Whether `token` lies in one of the inclusive `ranges`.
fn in_ranges(token: u64, ranges: &[(u64, u64)]) -> bool {
    ranges.iter().any(|&(first, last)| first <= token && token <= last)
}

/// Runs the simulation `config` describes and checks it.
pub fn run(config: &Config) -> Report {
    let mut world = World::new(config.clone());
    world.start();
    // Load, the clients' last timeouts, the convergence bound, and the final reads' timeout.
    let end = config.load_ms + 2 * CLIENT_TIMEOUT_MS + config.heal_bound_ms + 1_000;
    world.run_until(end);
    world.finish()
}

impl World {
    fn new(config: Config) -> World {
        let mut rng = Rng::new(config.seed);
        let first_members = match config.reconfiguration {
            Some(Reconfiguration::Join { nodes }) => config.nodes - nodes,
            _ => config.nodes,
        };
        let layout =
            Layout::new(64, config.replication, (0..first_members).map(|i| LayoutNode::new(NodeId(i as u64 + 1))))
                .expect("a valid simulated layout");
        let target = match config.reconfiguration {
            None => Ok(layout.clone()),
            Some(Reconfiguration::Join { .. }) => {
                let joining =
                    (first_members..config.nodes).map(|i| Change::Join(LayoutNode::new(NodeId(i as u64 + 1))));
                layout.with_change(&joining.collect::<Vec<_>>())
            }
            Some(Reconfiguration::Decommission { nodes }) => {
                let n = config.nodes as u64;
                let draining = (0..nodes as u64).map(|i| Change::Drain(NodeId(1 + (config.seed + i) % n)));
                layout.with_change(&draining.collect::<Vec<_>>())
            }
        }
        .expect("a valid simulated layout change");
        let moved: Vec<PartitionId> = (0..layout.partition_count())
            .map(PartitionId)
            .filter(|&partition| !same_set(layout.replicas(partition), target.replicas(partition)))
            .collect();
        let nodes = (0..config.nodes)
            .map(|i| {
                let skew = if config.faults.clock_skew_ms == 0 {
                    0
                } else {
                    rng.below(2 * config.faults.clock_skew_ms + 1) as i64 - config.faults.clock_skew_ms as i64
                };
                SimNode {
                    id: NodeId(i as u64 + 1),
                    up: true,
                    paused_until: None,
                    incarnation: 0,
                    skew_ms: skew,
                    clock: Clock::new(),
                    store: BTreeMap::new(),
                    durable: BTreeMap::new(),
                    dirty: BTreeSet::new(),
                    ops: BTreeMap::new(),
                    leases: BTreeMap::new(),
                    next_op: 0,
                    trees: BTreeMap::new(),
                    comparisons: BTreeMap::new(),
                    next_comparison: 0,
                    epoch: 0,
                    durable_epoch: 0,
                    sources: BTreeMap::new(),
                    synced: BTreeMap::new(),
                    floors: BTreeMap::new(),
                    durable_floors: BTreeMap::new(),
                    old_commits: BTreeMap::new(),
                    life: 0,
                    collecting: None,
                    collecting_since: 0,
                    next_round: 0,
                }
            })
            .collect();
        let clients = (0..config.clients).map(|_| Client { seq: 0, pending: None, seen: BTreeMap::new() }).collect();
        let report = Report {
            seed: config.seed,
            reconfiguration: config.reconfiguration,
            partitions_moved: moved.len() as u64,
            ..Report::default()
        };
        let mut world = World {
            config,
            rng,
            now: 0,
            sequence: 0,
            queue: BinaryHeap::new(),
            events: Vec::new(),
            free: Vec::new(),
            layout,
            target,
            moved,
            nodes,
            clients,
            cut: BTreeSet::new(),
            healed: false,
            next_value: 1,
            history: BTreeMap::new(),
            pending_at: BTreeMap::new(),
            final_reads: BTreeSet::new(),
            done: false,
            report,
        };
        for node in 0..world.nodes.len() {
            world.rebuild_trees(node);
        }
        world
    }

    fn schedule(&mut self, after_ms: u64, event: Event) {
        let slot = match self.free.pop() {
            Some(slot) => {
                self.events[slot] = Some(event);
                slot
            }
            None => {
                self.events.push(Some(event));
                self.events.len() - 1
            }
        };
        self.sequence += 1;
        self.queue.push(Reverse((self.now + after_ms, self.sequence, slot)));
    }

    fn start(&mut self) {
        for client in 0..self.clients.len() {
            let delay = self.rng.below(20);
            self.schedule(delay, Event::ClientNext { client });
        }
        for node in 0..self.nodes.len() {
            let delay = self.rng.below(REPAIR_INTERVAL_MS);
            self.schedule(delay, Event::Repair { node, incarnation: 0 });
        }
        if self.any_episodic_faults() {
            let delay = self.rng.below(200);
            self.schedule(delay, Event::Fault);
        }
        // Faults stop when the clients stop starting operations (those in flight go on).
        self.schedule(self.config.load_ms, Event::Heal);
        if self.config.reconfiguration.is_some() {
            self.schedule(self.config.reconfigure_at_ms, Event::Reconfigure);
        }
    }

    fn any_episodic_faults(&self) -> bool {
        let faults = &self.config.faults;
        faults.partition_every_ms + faults.crash_every_ms + faults.pause_every_ms > 0
    }

    fn run_until(&mut self, end: u64) {
        while let Some(&Reverse((time, _, slot))) = self.queue.peek() {
            if time > end || self.done {
                break;
            }
            self.queue.pop();
            let event = self.events[slot].take().expect("scheduled event");
            self.free.push(slot);
            self.now = time;
            self.handle(event);
        }
    }

    fn physical_ms(&self, node: usize) -> u64 {
        (EPOCH_MS as i64 + self.now as i64 + self.nodes[node].skew_ms) as u64
    }

    fn send(&mut self, from: Endpoint, to: Endpoint, message: Message) {
        let (Endpoint::Node(a), Endpoint::Node(b)) = (from, to) else {
            // Client links: reliable and in order enough (TCP), a millisecond or two.
            let delay = 1 + self.rng.below(2);
            self.schedule(delay, Event::Deliver { from, to, message });
            return;
        };
        self.report.messages += 1;
        if a == b {
            self.schedule(0, Event::Deliver { from, to, message });
            return;
        }
        let faults = self.config.faults.clone();
        let lossy = !self.healed;
        if self.cut.contains(&(a, b)) || (lossy && self.rng.chance(faults.loss_per_mille, 1_000)) {
            self.report.dropped += 1;
            return;
        }
        let copies = if lossy && self.rng.chance(faults.duplicate_per_mille, 1_000) { 2 } else { 1 };
        for _ in 0..copies {
            let delay = 1 + self.rng.below(faults.max_delay_ms.max(1));
            self.schedule(delay, Event::Deliver { from, to, message: message.clone() });
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Deliver { from, to, message } => self.deliver(from, to, message),
            Event::RoundTimeout { op, round } => {
                if let Some(coordination) = self.coordination(op)
                    && coordination.round == round
                {
                    self.new_round(op, Ballot::ZERO);
                }
            }
            Event::Restart { op, round } => {
                if self.coordination(op).is_some_and(|c| c.round == round) {
                    self.new_round(op, Ballot::ZERO);
                }
            }
            Event::Deadline { op } => {
                if let Some(coordination) = self.coordination(op) {
                    if coordination.proposer.maybe_applied() {
                        self.finish_op(op, Answer::Unknown, Some(Unknown::Deadline));
                    } else {
                        self.finish_op(op, Answer::Failed, None);
                    }
                }
            }
            Event::ClientNext { client } => self.client_next(client),
            Event::ClientTimeout { client, seq } => {
                if self.clients[client].seq == seq && self.clients[client].pending.is_some() {
                    self.client_done(client, seq, Answer::Unknown);
                }
            }
            Event::Repair { node, incarnation } => self.repair(node, incarnation),
            Event::Reconfigure => {
                // The operator's command reaches one node, which adopts the change; gossip and
                // consensus messages carry it to the others.
                let up: Vec<usize> = (0..self.nodes.len()).filter(|&node| self.nodes[node].up).collect();
                if up.is_empty() {
                    self.schedule(50, Event::Reconfigure);
                } else {
                    let node = up[self.rng.below(up.len() as u64) as usize];
                    self.adopt_epoch(node, 1);
                }
            }
            Event::ComparisonTimeout { node, comparison, step } => {
                if self.nodes[node].comparisons.get(&comparison).is_some_and(|running| running.step == step) {
                    self.nodes[node].comparisons.remove(&comparison);
                    self.report.merkle_abandoned += 1;
                }
            }
            Event::Fault => self.inject_fault(),
            Event::HealLink { from, to } => {
                self.cut.remove(&(from, to));
            }
            Event::NodeUp { node } => self.node_up(node),
            Event::Resume { node } => self.nodes[node].paused_until = None,
            Event::Heal => self.heal(),
            Event::CheckConvergence => self.check_convergence(),
        }
    }

    // ----- clients -----

    fn client_next(&mut self, client: usize) {
        if self.now >= self.config.load_ms || self.healed {
            return;
        }
        let key = self.rng.below(self.config.keys);
        let op = match self.rng.below(10) {
            0..=3 => ClientOp::Read,
            4..=5 => ClientOp::Write(Some(self.fresh_value())),
            6 => ClientOp::Write(None),
            _ => {
                let expected = self.clients[client].seen.get(&key).copied().flatten();
                ClientOp::Cas { expected, new: Some(self.fresh_value()) }
            }
        };
        let node = self.rng.below(self.nodes.len() as u64) as usize;
        self.issue(client, node, key, op);
    }

    fn fresh_value(&mut self) -> u64 {
        self.next_value += 1;
        self.next_value
    }

    fn issue(&mut self, client: usize, node: usize, key: Key, op: ClientOp) {
        self.clients[client].seq += 1;
        let seq = self.clients[client].seq;
        let history_op = match op {
            ClientOp::Read => Op::Read,
            ClientOp::Write(value) => Op::Write(value),
            ClientOp::Cas { expected, new } => Op::Cas { expected, new },
        };
        let events = self.history.entry(key).or_default();
        events.push(HistoryEvent { client: client as u64, op: history_op, invoke: self.now, complete: None });
        let index = events.len() - 1;
        self.clients[client].pending = Some(index);
        self.pending_at.insert((client, seq), (key, index));
        self.send(Endpoint::Client(client), Endpoint::Node(node), Message::Request { seq, key, op });
        self.schedule(CLIENT_TIMEOUT_MS, Event::ClientTimeout { client, seq });
    }

    fn client_done(&mut self, client: usize, seq: u64, answer: Answer) {
        if self.clients[client].seq != seq || self.clients[client].pending.is_none() {
            return; // a late answer after a timeout
        }
        self.clients[client].pending = None;
        let (key, index) = self.pending_at.remove(&(client, seq)).expect("pending operation recorded");
        let event = &mut self.history.get_mut(&key).expect("history")[index];
        match answer {
            Answer::Ok(output) => {
                self.report.ok += 1;
                event.complete = Some((self.now, output));
                let seen = match (output, event.op) {
                    (Output::Read(value), _) => Some(value),
                    (Output::Written, Op::Write(value)) => Some(value),
                    (Output::Cas(true), Op::Cas { new, .. }) => Some(new),
                    _ => None,
                };
                if let Some(value) = seen {
                    self.clients[client].seen.insert(key, value);
                }
            }
            Answer::Failed => {
                // Nothing was applied: the operation is not part of the history. A read that
                // failed constrains nothing either.
                self.report.failed += 1;
                event.op = Op::Read;
                event.complete = None;
            }
            Answer::Unknown => self.report.indeterminate += 1,
        }
        if client >= self.config.clients {
            // A final read: the run is over once all of them have answers.
            self.done = self.clients[self.config.clients..].iter().all(|c| c.pending.is_none());
            return;
        }
        let think = self.rng.below(20);
        self.schedule(think, Event::ClientNext { client });
    }

    // ----- messages -----

    fn deliver(&mut self, from: Endpoint, to: Endpoint, message: Message) {
        let node = match to {
            Endpoint::Client(client) => {
                if let Message::Answer { seq, answer } = message {
                    self.client_done(client, seq, answer);
                }
                return;
            }
            Endpoint::Node(node) => node,
        };
        if !self.nodes[node].up {
            return;
        }
        if let Some(until) = self.nodes[node].paused_until {
            // A frozen process: the message waits in its socket buffer.
            self.schedule(until.saturating_sub(self.now) + 1, Event::Deliver { from, to, message });
            return;
        }
        if let Some(time) = message.ballot_time() {
            let physical = self.physical_ms(node);
            self.nodes[node].clock.observe(time, physical);
        }
        let reply_to = from;
        let me = Endpoint::Node(node);
        match message {
            Message::Request { seq, key, op } => {
                let Endpoint::Client(client) = from else { return };
                self.coordinate(node, Some((client, seq)), key, op);
            }
            Message::Read { op, key, epoch } => {
                if !self.admits(node, epoch, reply_to, op) {
                    return;
                }
                let knowledge = self.nodes[node].acceptor(key).knowledge();
                self.send(me, reply_to, Message::ReadReply { op, knowledge });
            }
            Message::Prepare { op, key, ballot, epoch } => {
                if !self.admits(node, epoch, reply_to, op) {
                    return;
                }
                let floors = self.floors_of(node, key);
                if floors.refuses(ballot) {
                    let promise = Promise::Refused(floors.refusal());
                    self.send(me, reply_to, Message::Promise { op, ballot, promise });
                    return;
                }
                let (promise, changed) = self.nodes[node].acceptor(key).prepare(ballot);
                if changed {
                    self.persist(node, key);
                }
                self.send(me, reply_to, Message::Promise { op, ballot, promise });
            }
            Message::Accept { op, key, proposal, next, epoch } => {
                if !self.admits(node, epoch, reply_to, op) {
                    return;
                }
                let ballot = proposal.ballot;
                let floors = self.floors_of(node, key);
                if floors.refuses(ballot) {
                    let answer = Acceptance::Refused(floors.refusal());
                    self.send(me, reply_to, Message::Accepted { op, ballot, answer });
                    return;
                }
                let (answer, changed) = if self.config.sabotage == Some(Sabotage::BlindLeases) {
                    match self.nodes[node].acceptor(key).accept(proposal) {
                        (Acceptance::Accepted, changed) => (Acceptance::AcceptedPromising(next), changed),
                        other => other,
                    }
                } else {
                    self.nodes[node].acceptor(key).accept_promising(proposal, next)
                };
                if changed {
                    self.persist(node, key);
                }
                self.send(me, reply_to, Message::Accepted { op, ballot, answer });
            }
            Message::Commit { key, version } => {
                self.commit(node, key, version);
            }
            Message::ReadReply { op, knowledge } => {
                let Endpoint::Node(replica) = from else { return };
                let id = self.nodes[replica].id;
                if let Some(coordination) = self.coordination_mut(op) {
                    let step = coordination.proposer.on_read(id, knowledge);
                    self.advance(op, step);
                }
            }
            Message::Promise { op, ballot, promise } => {
                let Endpoint::Node(replica) = from else { return };
                let id = self.nodes[replica].id;
                if let Some(coordination) = self.coordination_mut(op) {
                    let step = coordination.proposer.on_promise(id, ballot, promise);
                    self.advance(op, step);
                }
            }
            Message::Accepted { op, ballot, answer } => {
                let Endpoint::Node(replica) = from else { return };
                let id = self.nodes[replica].id;
                if let Some(coordination) = self.coordination_mut(op) {
                    let step = coordination.proposer.on_accept(id, ballot, answer);
                    self.advance(op, step);
                }
            }
            Message::MerkleRequest { comparison, step, partition, request } => {
                // A partition this node does not replicate has no tree: no answer, and the
                // initiator abandons the comparison.
                if let Some(tree) = self.nodes[node].trees.get_mut(&partition) {
                    tree.refresh();
                    let response = merkle::respond(tree, &request);
                    self.send(me, reply_to, Message::MerkleResponse { comparison, step, response });
                }
            }
            Message::MerkleResponse { comparison, step, response } => {
                self.on_merkle_response(node, from, comparison, step, response);
            }
            Message::RangeVersions { partition, ranges, versions, reply } => {
                self.on_range_versions(node, from, partition, ranges, versions, reply);
            }
            Message::Stale { op, epoch } => {
                self.adopt_epoch(node, epoch);
                self.move_to_current_epoch(op);
            }
            Message::Epoch { epoch, synced } => {
                self.adopt_epoch(node, epoch);
                for (partition, nodes) in synced {
                    self.nodes[node].synced.entry(partition).or_default().extend(nodes);
                }
                self.maybe_finish_change(node);
            }
            Message::SyncRequest { partition, epoch } => self.on_sync_request(node, reply_to, partition, epoch),
            Message::SyncState { partition, versions, clean, floors } => {
                self.on_sync_state(node, from, partition, versions, clean, floors);
            }
            Message::CollectPrepare { round, partition, floor, epoch } => {
                if let Some(prepared) = self.collect_prepare(node, partition, floor, epoch) {
                    self.send(me, reply_to, Message::CollectPrepared { round, prepared });
                }
            }
            Message::CollectAdopt { round, partition, floor, epoch, token } => {
                if let Some(adopted) = self.collect_adopt(node, partition, floor, epoch, token) {
                    self.send(me, reply_to, Message::CollectAdopted { round, adopted });
                }
            }
            Message::CollectNow { partition, floor, epoch } => self.collect_now(node, partition, floor, epoch),
            Message::CollectPrepared { round, mut prepared } => {
                if self.config.sabotage == Some(Sabotage::CollectUnagreed) {
                    prepared.digest = 0;
                }
                self.on_collection_answer(node, from, round, |round, id| round.on_prepared(id, prepared));
            }
            Message::CollectAdopted { round, adopted } => {
                self.on_collection_answer(node, from, round, |round, id| round.on_adopted(id, adopted));
            }
            Message::Answer { .. } => {}
        }
    }

    // ----- tombstone collection (see `onggi_core::tombstones`) -----

    /// A round's floor lies this far behind its initiator's clock. An operation that made an
    /// attempt before a delete may still be retrying until its deadline; were the delete's
    /// tombstone (whose lineage names the attempt) gone by then, the retry could apply the
    /// attempt again. So a tombstone waits out the longest operation (its deadline and a last
    /// round) plus the most two clocks disagree (the initiator's floor against the coordinator's
    /// deadline) — what `onggi serve --tombstone-grace` must respect too.
    fn collection_grace_ms(&self) -> u64 {
        OPERATION_DEADLINE_MS + ROUND_TIMEOUT_MS + 2 * self.config.faults.clock_skew_ms + COLLECTION_GRACE_MARGIN_MS
    }

    fn floors_of(&self, node: usize, key: Key) -> Floors {
        self.nodes[node].floors.get(&self.partition_of(key)).copied().unwrap_or_default()
    }

    /// Whether `node` takes part in a round of `epoch` over `partition`: it is in that epoch, the
    /// epoch has one replica set (no change running), and the node is in it.
    fn collects_in(&self, node: usize, partition: PartitionId, epoch: u64) -> Option<Vec<NodeId>> {
        if self.nodes[node].epoch != epoch || epoch == 1 {
            return None;
        }
        let sets = self.layout_sets(epoch, partition);
        let set = sets.into_iter().next()?;
        set.contains(&self.nodes[node].id).then_some(set)
    }

    fn persist_floors(&mut self, node: usize, partition: PartitionId, floors: Floors) {
        let state = &mut self.nodes[node];
        state.floors.insert(partition, floors);
        state.durable_floors.insert(partition, floors);
        // The node persists floors with an fsync, which covers every commit written before.
        state.sync();
    }

    /// A repair tick: sometimes start a round over a partition this node replicates (any of its
    /// replicas may start one here — rounds over one partition may overlap; the node lets only
    /// the first replica start them).
    fn maybe_start_collection(&mut self, node: usize) {
        let running = self.nodes[node].collecting.is_some();
        if running && self.now < self.nodes[node].collecting_since + COLLECTION_ROUND_MS {
            return;
        }
        if !self.rng.chance(1, COLLECTION_TICKS) {
            return;
        }
        let epoch = self.nodes[node].epoch;
        // A partition where this node holds a tombstone old enough, as a node's initiator looks
        // for; else (half the time) any partition holding keys here, so rounds also run where
        // there is nothing to collect.
        let floor = tombstones::floor_at(self.physical_ms(node), self.collection_grace_ms());
        let mut candidates: Vec<PartitionId> = self.nodes[node]
            .store
            .iter()
            .filter(|(_, state)| {
                state.committed.as_ref().is_some_and(|c| c.value.value.is_none() && c.ballot.time <= floor)
            })
            .map(|(&key, _)| self.partition_of(key))
            .filter(|partition| self.nodes[node].trees.contains_key(partition))
            .collect();
        if candidates.is_empty() || self.rng.chance(1, 2) {
            candidates = self.partitions_holding_keys(node);
        }
        if candidates.is_empty() {
            return;
        }
        let partition = candidates[self.rng.below(candidates.len() as u64) as usize];
        let Some(replicas) = self.collects_in(node, partition, epoch) else { return };
        let round = self.nodes[node].next_round;
        self.nodes[node].next_round += 1;
        self.nodes[node].collecting = Some((round, partition, epoch, Round::new(floor, replicas.clone())));
        self.nodes[node].collecting_since = self.now;
        self.report.collection_rounds += 1;
        for replica in replicas {
            let to = Endpoint::Node(self.index_of(replica));
            self.send(Endpoint::Node(node), to, Message::CollectPrepare { round, partition, floor, epoch });
        }
    }

    /// A replica's answer to round `round` of `node`'s: fed to the round if it is the one running.
    fn on_collection_answer(
        &mut self,
        node: usize,
        from: Endpoint,
        round: u64,
        feed: impl FnOnce(&mut Round, NodeId) -> Next,
    ) {
        let Endpoint::Node(replica) = from else { return };
        let id = self.nodes[replica].id;
        let Some((current, _, _, collecting)) = self.nodes[node].collecting.as_mut() else { return };
        if *current != round {
            return;
        }
        let next = feed(collecting, id);
        self.collection_step(node, next);
    }

    fn collection_step(&mut self, node: usize, next: Next) {
        let Some((round, partition, epoch, collecting)) = self.nodes[node].collecting.as_ref() else { return };
        let (round, partition, epoch, floor) = (*round, *partition, *epoch, collecting.floor());
        match next {
            Next::Wait => {}
            Next::Abandon(_) => self.nodes[node].collecting = None,
            Next::Adopt(tokens) => {
                for (replica, token) in tokens {
                    let to = Endpoint::Node(self.index_of(replica));
                    self.send(
                        Endpoint::Node(node),
                        to,
                        Message::CollectAdopt { round, partition, floor, epoch, token },
                    );
                }
            }
            Next::Collect => {
                self.nodes[node].collecting = None;
                self.report.collection_rounds_adopted += 1;
                for replica in self.layout_sets(epoch, partition).remove(0) {
                    let to = Endpoint::Node(self.index_of(replica));
                    self.send(Endpoint::Node(node), to, Message::CollectNow { partition, floor, epoch });
                }
            }
        }
    }

    /// A replica's prepare: raise the promise floor (persisted), then answer what it holds.
    fn collect_prepare(
        &mut self,
        node: usize,
        partition: PartitionId,
        floor: Timestamp,
        epoch: u64,
    ) -> Option<Prepared> {
        self.collects_in(node, partition, epoch)?;
        let mut floors = self.nodes[node].floors.get(&partition).copied().unwrap_or_default();
        floors.promised = floors.promised.max(floor);
        self.persist_floors(node, partition, floors);
        let mut pending = false;
        let mut live: Vec<([u8; 16], Ballot, bool)> = Vec::new();
        for (&key, state) in &self.nodes[node].store {
            if self.partition_of(key) != partition {
                continue;
            }
            pending |= state.accepted.as_ref().is_some_and(|accepted| accepted.ballot.time <= floor);
            if let Some(committed) = &state.committed {
                live.push((tree_key(key), committed.ballot, committed.value.value.is_none()));
            }
        }
        // In storage order, as a node's scan reads them.
        live.sort();
        let mut digest = LiveDigest::new(floor);
        for (key, version, tombstone) in &live {
            digest.add(key, *version, *tombstone);
        }
        let state = &self.nodes[node];
        let token =
            AdoptToken { life: state.life, old_commits: state.old_commits.get(&partition).copied().unwrap_or(0) };
        Some(Prepared { pending, digest: digest.finish(), token })
    }

    fn collect_adopt(
        &mut self,
        node: usize,
        partition: PartitionId,
        floor: Timestamp,
        epoch: u64,
        token: AdoptToken,
    ) -> Option<bool> {
        self.collects_in(node, partition, epoch)?;
        let state = &self.nodes[node];
        let floors = state.floors.get(&partition).copied().unwrap_or_default();
        let unmoved = token.life == state.life
            && token.old_commits == state.old_commits.get(&partition).copied().unwrap_or(0)
            && floors.promised >= floor;
        if unmoved {
            let adopted = Floors { adopted: floors.adopted.max(floor), ..floors };
            self.persist_floors(node, partition, adopted);
        }
        Some(unmoved)
    }

    /// Removes the partition's tombstones at or below `floor` (not synced: a crash may bring
    /// some back, for a later round), and their entries in the partition's Merkle tree.
    fn collect_now(&mut self, node: usize, partition: PartitionId, floor: Timestamp, epoch: u64) {
        if self.collects_in(node, partition, epoch).is_none() {
            return;
        }
        let floors = self.nodes[node].floors.get(&partition).copied().unwrap_or_default();
        let doomed: Vec<(Key, Ballot)> = self.nodes[node]
            .store
            .iter()
            .filter(|(key, _)| self.partition_of(**key) == partition)
            .filter_map(|(&key, state)| {
                let committed = state.committed.as_ref()?;
                let consensus = Some((state.promised, state.accepted.is_some()));
                (committed.value.value.is_none()
                    && tombstones::collectable(committed.ballot, floor, &floors, consensus))
                .then_some((key, committed.ballot))
            })
            .collect();
        for (key, ballot) in doomed {
            let state = &mut self.nodes[node];
            state.store.remove(&key);
            state.dirty.insert(key);
            self.report.tombstones_removed += 1;
            if let Some(tree) = self.nodes[node].trees.get_mut(&partition)
                && let Err(error) = tree.remove(&tree_key(key), &stamp(ballot))
            {
                self.report.violations.push(format!(
                    "node {node}'s Merkle tree of {partition:?} could not drop collected key {key}: {error}"
                ));
            }
        }
    }

    /// Persists a change before the reply that depends on it is sent.
    fn persist(&mut self, node: usize, key: Key) {
        self.nodes[node].dirty.insert(key);
        if self.config.sabotage != Some(Sabotage::ForgetfulAcceptors) {
            self.nodes[node].sync();
        }
    }

    /// Records a chosen version of `key` on `node` (a commit, or a version anti-entropy brought)
    /// and, when it is newer than the committed one, replaces that version's entry in the key's
    /// Merkle tree, in the same step, as a node's write path does. The write is not synced (the
    /// node's commit path does not wait for one). Returns whether the version was newer.
    fn commit(&mut self, node: usize, key: Key, version: Version<Stored>) -> bool {
        let partition = self.layout.partition_of_token(key_token(key));
        let floors = self.nodes[node].floors.get(&partition).copied().unwrap_or_default();
        if floors.drops(version.ballot) {
            self.report.commits_dropped += 1;
            return false;
        }
        if version.ballot.time <= floors.promised {
            *self.nodes[node].old_commits.entry(partition).or_default() += 1;
        }
        let ever = self.ever_holds(self.nodes[node].id, partition);
        let SimNode { store, dirty, trees, .. } = &mut self.nodes[node];
        let Some(tree) = trees.get_mut(&partition) else {
            // Commits and exchanges go to a partition's replicas only: this is a bug in the shell.
            // (During a layout change, a replica of one layout may hear from a coordinator that
            // is still in another epoch than its own: such a commit is left to the layout the
            // node is in, which moves the data itself.)
            if !ever {
                self.report.violations.push(format!("node {node} was sent key {key} of {partition:?}, not its own"));
            }
            return false;
        };
        let acceptor = store.entry(key).or_default();
        let before = acceptor.committed.as_ref().map(|version| version.ballot);
        let after = version.ballot;
        if !acceptor.commit(version) {
            return false;
        }
        dirty.insert(key);
        let old = before.map(stamp);
        if let Err(error) = tree.replace(&tree_key(key), old.as_ref().map(|old| old.as_slice()), &stamp(after)) {
            // The tree had drifted from storage: say so, and do what a node would, rebuild it.
            self.report.violations.push(format!(
                "node {node}'s Merkle tree of {partition:?} could not follow the commit of key {key}: {error}"
            ));
            let tree = self.tree_from_store(node, partition);
            self.nodes[node].trees.insert(partition, tree);
        }
        true
    }

    /// The Merkle tree of `partition` over the committed versions in `node`'s store: how a node
    /// builds its trees when it starts, by one scan of each partition.
    fn tree_from_store(&self, node: usize, partition: PartitionId) -> MerkleTree {
        let (first, last) = self.layout.partition_range(partition);
        let entries = self.store_entries(node, partition);
        // Most simulated partitions hold no key. `from_entries` hashes every node of the tree
        // whatever it holds (2,047 hashes at depth 10), `new` only one per level, and both build
        // the same empty tree: without this, building trees would take most of a run's time.
        let tree = if entries.is_empty() {
            MerkleTree::new(first, last, MERKLE_DEPTH)
        } else {
            MerkleTree::from_entries(first, last, MERKLE_DEPTH, entries)
        };
        tree.expect("a partition's range holds a token per leaf, and its keys' tokens")
    }

    /// The Merkle entries (tree key, version stamp) of `partition` in `node`'s store: its keys'
    /// committed versions.
    fn store_entries(&self, node: usize, partition: PartitionId) -> Vec<([u8; 16], [u8; merkle::VERSION_STAMP_BYTES])> {
        self.nodes[node]
            .store
            .iter()
            .filter(|(key, _)| self.layout.partition_of_token(key_token(**key)) == partition)
            .filter_map(|(&key, state)| state.committed.as_ref().map(|version| (tree_key(key), stamp(version.ballot))))
            .collect()
    }

    /// Rebuilds all of `node`'s trees, one per partition it replicates, from its store.
    fn rebuild_trees(&mut self, node: usize) {
        let partitions = self.held_partitions(node);
        let trees =
            partitions.into_iter().map(|partition| (partition, self.tree_from_store(node, partition))).collect();
        self.nodes[node].trees = trees;
    }

    // ----- coordination -----

    /// The replicas of `key` once the run's layout change (if any) is over.
    fn replicas_of(&self, key: Key) -> Vec<NodeId> {
        self.target.replicas(self.partition_of(key)).to_vec()
    }

    fn index_of(&self, id: NodeId) -> usize {
        id.0 as usize - 1
    }

    /// The replica sets of `partition` in layout epoch `epoch`: the first layout's (0), both
    /// (1, the change: a quorum is a majority of each), or the new layout's (2).
    fn layout_sets(&self, epoch: u64, partition: PartitionId) -> Vec<Vec<NodeId>> {
        let old = self.layout.replicas(partition).to_vec();
        let new = self.target.replicas(partition).to_vec();
        match epoch {
            0 => vec![old],
            1 if same_set(&old, &new) => vec![old],
            1 if self.config.sabotage == Some(Sabotage::NoJointQuorums) => vec![new],
            1 => vec![old, new],
            _ => vec![new],
        }
    }

    fn partition_of(&self, key: Key) -> PartitionId {
        self.layout.partition_of_token(key_token(key))
    }

    fn quorums_of(&self, epoch: u64, key: Key) -> Quorums {
        Quorums::joint(self.layout_sets(epoch, self.partition_of(key)))
    }

    /// The partitions `node` replicates in its epoch.
    fn held_partitions(&self, node: usize) -> Vec<PartitionId> {
        let (id, epoch) = (self.nodes[node].id, self.nodes[node].epoch);
        (0..self.layout.partition_count())
            .map(PartitionId)
            .filter(|&partition| self.layout_sets(epoch, partition).iter().any(|set| set.contains(&id)))
            .collect()
    }

    /// Whether `id` replicates `partition` in either layout.
    fn ever_holds(&self, id: NodeId, partition: PartitionId) -> bool {
        self.layout.replicas(partition).contains(&id) || self.target.replicas(partition).contains(&id)
    }

    // ----- layout change -----

    /// Lets a consensus message of layout epoch `epoch` through to `node`'s acceptors: a
    /// message of an older epoch is answered [`Message::Stale`] and goes no further; a newer
    /// epoch is adopted first.
    fn admits(&mut self, node: usize, epoch: u64, reply_to: Endpoint, op: OpRef) -> bool {
        let mine = self.nodes[node].epoch;
        if epoch < mine {
            self.send(Endpoint::Node(node), reply_to, Message::Stale { op, epoch: mine });
            return false;
        }
        self.adopt_epoch(node, epoch);
        true
    }

    /// Moves `node` to layout epoch `epoch` if it is newer: persisted at once, and the node's
    /// Merkle trees follow the partitions it now replicates.
    fn adopt_epoch(&mut self, node: usize, epoch: u64) {
        if epoch <= self.nodes[node].epoch || !self.nodes[node].up {
            return;
        }
        self.nodes[node].epoch = epoch;
        self.nodes[node].durable_epoch = epoch;
        if epoch == 2 && self.report.new_layout_at_ms.is_none() {
            self.report.new_layout_at_ms = Some(self.now);
        }
        let held = self.held_partitions(node);
        let mut trees = std::mem::take(&mut self.nodes[node].trees);
        trees.retain(|partition, _| held.contains(partition));
        for partition in held {
            trees.entry(partition).or_insert_with(|| self.tree_from_store(node, partition));
        }
        self.nodes[node].trees = trees;
    }

    /// During the change, a background tick of `node`: tells a random peer its epoch and what it
    /// knows of who caught up, and catches up on the moved partitions it newly replicates.
    fn change_tick(&mut self, node: usize) {
        let others: Vec<usize> = (0..self.nodes.len()).filter(|&other| other != node).collect();
        if !others.is_empty() {
            let peer = others[self.rng.below(others.len() as u64) as usize];
            let message = Message::Epoch { epoch: self.nodes[node].epoch, synced: self.nodes[node].synced.clone() };
            self.send(Endpoint::Node(node), Endpoint::Node(peer), message);
        }
        if self.nodes[node].epoch != 1 {
            return;
        }
        let id = self.nodes[node].id;
        for partition in self.moved.clone() {
            if !self.target.replicas(partition).contains(&id)
                || self.nodes[node].synced.get(&partition).is_some_and(|synced| synced.contains(&id))
            {
                continue;
            }
            if self.config.sabotage == Some(Sabotage::SkipCatchUp) {
                self.nodes[node].synced.entry(partition).or_default().insert(id);
                continue;
            }
            for old in self.layout.replicas(partition).to_vec() {
                if self.nodes[node].sources.get(&partition).is_some_and(|sources| sources.contains(&old)) {
                    continue;
                }
                let to = self.index_of(old);
                self.send(Endpoint::Node(node), Endpoint::Node(to), Message::SyncRequest { partition, epoch: 1 });
            }
        }
        self.maybe_finish_change(node);
    }

    /// An old replica's side of catching up: its committed versions of the partition, and
    /// whether it holds no unfinished proposal there. It adopts the requester's epoch first, so
    /// from its answer on it refuses operations of the first layout alone: whatever such an
    /// operation chose before is in the answer, and it can no longer gather a majority of old
    /// replicas that are not. Unfinished proposals are finished at once (the next request finds
    /// them committed).
    fn on_sync_request(&mut self, node: usize, reply_to: Endpoint, partition: PartitionId, epoch: u64) {
        self.adopt_epoch(node, epoch);
        let (first, last) = self.layout.partition_range(partition);
        let in_partition = |key: &Key| {
            let token = key_token(*key);
            first <= token && token <= last
        };
        let versions: Vec<(Key, Version<Stored>)> = self.nodes[node]
            .store
            .iter()
            .filter(|(key, _)| in_partition(key))
            .filter_map(|(&key, state)| state.committed.clone().map(|version| (key, version)))
            .collect();
        let unfinished: Vec<Key> = self.nodes[node]
            .store
            .iter()
            .filter(|(key, state)| in_partition(key) && state.unfinished())
            .map(|(&key, _)| key)
            .collect();
        for &key in &unfinished {
            self.finish_in_background(node, key);
        }
        let clean = unfinished.is_empty();
        let floors = self.nodes[node].floors.get(&partition).copied().unwrap_or_default();
        self.send(Endpoint::Node(node), reply_to, Message::SyncState { partition, versions, clean, floors });
    }

    /// A new replica's side: merges the versions, and counts the sender once it answered clean;
    /// with a majority of the old replicas counted, the partition is caught up (persisted first).
    fn on_sync_state(
        &mut self,
        node: usize,
        from: Endpoint,
        partition: PartitionId,
        versions: Vec<(Key, Version<Stored>)>,
        clean: bool,
        floors: Floors,
    ) {
        let Endpoint::Node(sender) = from else { return };
        let id = self.nodes[node].id;
        if self.nodes[node].epoch != 1 || !self.target.replicas(partition).contains(&id) {
            return;
        }
        for (key, version) in versions {
            if self.partition_of(key) == partition && self.commit(node, key, version) {
                self.report.versions_synced += 1;
            }
        }
        if !clean {
            return;
        }
        // An answer that counts carries floors every version it sent respects: promised by every
        // old replica before the change (no quorum of the old layout accepts below them), and
        // adopted over data this node now has. Taking them over, persisted before this node
        // counts as caught up, makes every quorum of the new layout refuse the same old ballots.
        let mut mine = self.nodes[node].floors.get(&partition).copied().unwrap_or_default();
        mine.promised = mine.promised.max(floors.promised);
        mine.adopted = mine.adopted.max(floors.adopted);
        self.persist_floors(node, partition, mine);
        let sender = self.nodes[sender].id;
        let old = self.layout.replicas(partition).to_vec();
        let sources = self.nodes[node].sources.entry(partition).or_default();
        sources.insert(sender);
        let counted = old.iter().filter(|replica| sources.contains(replica)).count();
        if counted > old.len() / 2 {
            self.nodes[node].sync();
            self.nodes[node].synced.entry(partition).or_default().insert(id);
            self.maybe_finish_change(node);
        }
    }

    /// Moves `node` to the new layout alone once, for every moved partition, a majority of its
    /// new replicas caught up: every version chosen before the change is then on a majority of
    /// the new replicas, and versions chosen during it were chosen by one.
    fn maybe_finish_change(&mut self, node: usize) {
        if self.nodes[node].epoch != 1 {
            return;
        }
        let synced = &self.nodes[node].synced;
        let done = self.moved.iter().all(|&partition| {
            let new = self.target.replicas(partition);
            let caught_up = synced.get(&partition).map_or(0, |nodes| new.iter().filter(|n| nodes.contains(n)).count());
            caught_up > new.len() / 2
        });
        if done {
            self.adopt_epoch(node, 2);
        }
    }

    /// Starts a background strict read of `key` on `node` (which finishes an unfinished
    /// proposal), unless one is running.
    fn finish_in_background(&mut self, node: usize, key: Key) {
        let busy = self.nodes[node].ops.values().any(|c| c.client.is_none() && c.key == key);
        if !busy {
            self.coordinate(node, None, key, ClientOp::Read);
        }
    }

    fn coordination(&self, op: OpRef) -> Option<&Coordination> {
        let node = &self.nodes[op.node];
        if !node.up || node.incarnation != op.incarnation {
            return None;
        }
        node.ops.get(&op.id)
    }

    fn coordination_mut(&mut self, op: OpRef) -> Option<&mut Coordination> {
        let node = &mut self.nodes[op.node];
        if !node.up || node.incarnation != op.incarnation {
            return None;
        }
        node.ops.get_mut(&op.id)
    }

    fn coordinate(&mut self, node: usize, client: Option<(usize, u64)>, key: Key, op: ClientOp) {
        let epoch = self.nodes[node].epoch;
        let quorums = self.quorums_of(epoch, key);
        let id = self.nodes[node].next_op;
        self.nodes[node].next_op += 1;
        let op_ref = OpRef { node, incarnation: self.nodes[node].incarnation, id };
        let lease = match op {
            ClientOp::Read => None,
            _ => self.nodes[node].leases.remove(&key).filter(|&(lease_epoch, formed_at, _)| {
                lease_epoch == epoch && self.now.saturating_sub(formed_at) <= LEASE_AGE_MAX_MS
            }),
        };
        let (proposer, step) = match op {
            ClientOp::Read => (Proposer::read_among(quorums), None),
            _ if lease.is_some() => {
                let (proposer, step) = Proposer::resume(lease.expect("checked").2);
                self.report.leases_used += 1;
                (proposer, Some(step))
            }
            _ => {
                let ballot = self.fresh_ballot(node, Ballot::ZERO);
                (Proposer::write_among(quorums, ballot), Some(Step::Prepare(ballot)))
            }
        };
        let coordination = Coordination { client, key, op, proposer, epoch, round: 0, outputs: Vec::new() };
        self.nodes[node].ops.insert(id, coordination);
        self.schedule(OPERATION_DEADLINE_MS, Event::Deadline { op: op_ref });
        match step {
            Some(step) => self.advance(op_ref, step),
            None => self.start_read(op_ref),
        }
    }

    /// Sends a strict read's read to every replica, and schedules the round's timeout.
    fn start_read(&mut self, op: OpRef) {
        let coordination = self.coordination(op).expect("coordinating");
        let (key, epoch, round) = (coordination.key, coordination.epoch, coordination.round);
        self.broadcast(op, |op| Message::Read { op, key, epoch });
        self.schedule(ROUND_TIMEOUT_MS, Event::RoundTimeout { op, round });
    }

    fn fresh_ballot(&mut self, node: usize, above: Ballot) -> Ballot {
        let physical = self.physical_ms(node);
        let signer = NodeId((self.nodes[node].id.0 << 32) | self.nodes[node].incarnation);
        let clock = &mut self.nodes[node].clock;
        if above.time > clock.last() {
            clock.observe(above.time, physical);
        }
        // The ballot's node part names this life of the node, as a real node's does (see
        // `onggi_node::cluster::ballot_node`): a restarted node's clock may repeat times it used
        // before the crash (it may have run ahead of its wall clock by observing a skewed peer),
        // and two proposals must never share a ballot.
        Ballot { time: clock.now(physical), node: signer }
    }

    fn broadcast(&mut self, op: OpRef, message: impl Fn(OpRef) -> Message) {
        let replicas = self.coordination(op).expect("coordinating").proposer.replicas().to_vec();
        for replica in replicas {
            let to = self.index_of(replica);
            self.send(Endpoint::Node(op.node), Endpoint::Node(to), message(op));
        }
    }

    fn new_round(&mut self, op: OpRef, above: Ballot) {
        if self.coordination(op).is_some_and(|c| c.epoch < self.nodes[op.node].epoch) {
            // The node moved to a newer layout epoch since the operation started: go on there.
            self.move_to_current_epoch(op);
            return;
        }
        let ballot = self.fresh_ballot(op.node, above);
        let coordination = self.coordination_mut(op).expect("coordinating");
        coordination.round += 1;
        let step = coordination.proposer.restart(ballot);
        self.advance(op, step);
    }

    fn advance(&mut self, op: OpRef, step: Step<Stored>) {
        match step {
            Step::Wait => {}
            Step::Prepare(ballot) => {
                let coordination = self.coordination(op).expect("coordinating");
                let (key, epoch) = (coordination.key, coordination.epoch);
                self.broadcast(op, |op| Message::Prepare { op, key, ballot, epoch });
                let round = self.coordination(op).expect("coordinating").round;
                self.schedule(ROUND_TIMEOUT_MS, Event::RoundTimeout { op, round });
            }
            Step::Apply(current) => {
                let coordination = self.coordination_mut(op).expect("coordinating");
                let current = current.map(|version| version.value).unwrap_or_default();
                let value = current.value;
                let ballot = coordination.proposer.ballot();
                let write = |new: Value| {
                    Decision::Write(Stored {
                        value: new,
                        lineage: current.lineage.with_writer(ballot, LINEAGE_WINDOW_MS),
                    })
                };
                let (decision, output) = match coordination.op {
                    ClientOp::Read => (Decision::Keep, Output::Read(value)),
                    ClientOp::Write(new) => (write(new), Output::Written),
                    ClientOp::Cas { expected, new } if expected == value => (write(new), Output::Cas(true)),
                    ClientOp::Cas { .. } => (Decision::Keep, Output::Cas(false)),
                };
                coordination.outputs.push((ballot, output));
                let step = coordination.proposer.decide(decision);
                self.advance(op, step);
            }
            Step::Accept(proposal) => {
                let next = self.fresh_ballot(op.node, proposal.ballot);
                let coordination = self.coordination(op).expect("coordinating");
                let (key, epoch) = (coordination.key, coordination.epoch);
                self.broadcast(op, |op| Message::Accept { op, key, proposal: proposal.clone(), next, epoch });
                let round = self.coordination(op).expect("coordinating").round;
                self.schedule(ROUND_TIMEOUT_MS, Event::RoundTimeout { op, round });
            }
            Step::Retry(above) => {
                let physical = self.physical_ms(op.node);
                self.nodes[op.node].clock.observe(above.time, physical);
                let coordination = self.coordination_mut(op).expect("coordinating");
                coordination.round += 1;
                let round = coordination.round;
                let backoff = 1 + self.rng.below(30);
                self.schedule(backoff, Event::Restart { op, round });
            }
            Step::Done(outcome) => {
                if let Some(chosen) = outcome.commit.clone() {
                    let key = self.coordination(op).expect("coordinating").key;
                    self.broadcast(op, |_| Message::Commit { key, version: chosen.clone() });
                }
                let coordination = self.coordination(op).expect("coordinating");
                let (key, epoch) = (coordination.key, coordination.epoch);
                if let Some(lease) = outcome.lease.clone()
                    && epoch == self.nodes[op.node].epoch
                {
                    let now = self.now;
                    self.nodes[op.node].leases.insert(key, (epoch, now, lease));
                }
                let coordination = self.coordination(op).expect("coordinating");
                let output = match coordination.op {
                    ClientOp::Read => Output::Read(outcome.version.and_then(|version| version.value.value)),
                    _ => coordination
                        .outputs
                        .iter()
                        .find(|(ballot, _)| *ballot == outcome.decided_at)
                        .map(|&(_, output)| output)
                        .expect("the deciding round's output was kept"),
                };
                self.finish_op(op, Answer::Ok(output), None);
            }
            Step::Indeterminate => self.finish_op(op, Answer::Unknown, Some(Unknown::Contention)),
        }
    }

    /// Moves an operation whose epoch is older than its node's to the node's epoch: the same
    /// operation continues among the new epoch's replicas with a new ballot (a read starts its
    /// read again).
    fn move_to_current_epoch(&mut self, op: OpRef) {
        let epoch = self.nodes[op.node].epoch;
        let Some(coordination) = self.coordination(op) else { return };
        if coordination.epoch >= epoch {
            return;
        }
        let quorums = self.quorums_of(epoch, coordination.key);
        let above = coordination.proposer.ballot();
        let ballot = self.fresh_ballot(op.node, above);
        let coordination = self.coordination_mut(op).expect("coordinating");
        coordination.epoch = epoch;
        coordination.round += 1;
        match coordination.proposer.reconfigure(quorums, ballot) {
            Step::Wait => self.start_read(op),
            step => self.advance(op, step),
        }
    }

    fn finish_op(&mut self, op: OpRef, answer: Answer, unknown: Option<Unknown>) {
        let Some(coordination) = self.nodes[op.node].ops.remove(&op.id) else { return };
        if coordination.client.is_some() {
            match unknown {
                Some(Unknown::Contention) => self.report.unknown_by_contention += 1,
                Some(Unknown::Deadline) => self.report.unknown_by_deadline += 1,
                None => {}
            }
        }
        if let Some((client, seq)) = coordination.client {
            self.send(Endpoint::Node(op.node), Endpoint::Client(client), Message::Answer { seq, answer });
        }
    }

    // ----- background repair -----

    fn repair(&mut self, node: usize, incarnation: u64) {
        if self.nodes[node].incarnation != incarnation || !self.nodes[node].up {
            return; // a timer of an earlier life; the restart scheduled a new one
        }
        self.schedule(REPAIR_INTERVAL_MS, Event::Repair { node, incarnation });
        if self.nodes[node].paused_until.is_some() {
            return;
        }
        if self.config.reconfiguration.is_some() {
            self.change_tick(node);
        }
        if self.config.sabotage == Some(Sabotage::NoRepair) {
            return;
        }
        // Finish proposals left unfinished (their coordinator crashed or gave up), in the
        // partitions this node replicates.
        let now = self.physical_ms(node);
        let held = self.held_partitions(node);
        let stale: Vec<Key> = self.nodes[node]
            .store
            .iter()
            .filter(|(_, state)| {
                state.accepted.as_ref().is_some_and(|a| a.ballot.time.physical_ms() + STALE_PROPOSAL_MS < now)
            })
            .map(|(&key, _)| key)
            .filter(|&key| held.contains(&self.partition_of(key)))
            .collect();
        for key in stale {
            self.finish_in_background(node, key);
        }
        self.maybe_start_collection(node);
        if self.config.sabotage == Some(Sabotage::NoAntiEntropy) {
            return;
        }
        self.start_comparison(node);
    }

    /// The partitions `node` replicates whose tree holds entries here.
    fn partitions_holding_keys(&self, node: usize) -> Vec<PartitionId> {
        self.nodes[node].trees.iter().filter(|(_, tree)| !tree.is_empty()).map(|(&partition, _)| partition).collect()
    }

    /// Starts a Merkle comparison of one partition this node replicates, picked at random, with
    /// another replica of it, picked at random. Only partitions whose tree here holds entries
    /// are picked: a partition empty here but not on a peer is compared, and repaired both ways,
    /// when that peer picks it. (The simulated keys fill a handful of the 64 partitions; picking
    /// among all of them would leave most ticks comparing empty trees.)
    fn start_comparison(&mut self, node: usize) {
        if self.nodes[node].comparisons.len() >= MERKLE_COMPARISONS_MAX {
            return;
        }
        let held = self.partitions_holding_keys(node);
        if held.is_empty() {
            return;
        }
        let partition = held[self.rng.below(held.len() as u64) as usize];
        let id = self.nodes[node].id;
        let mut peers: Vec<NodeId> = Vec::new();
        for set in self.layout_sets(self.nodes[node].epoch, partition) {
            for peer in set {
                if peer != id && !peers.contains(&peer) {
                    peers.push(peer);
                }
            }
        }
        if peers.is_empty() {
            return;
        }
        let pick = self.rng.below(peers.len() as u64) as usize;
        let peer = self.index_of(peers[pick]);
        let state = &mut self.nodes[node];
        let Some(tree) = state.trees.get_mut(&partition) else { return };
        // Digests read during the comparison are then cached ones.
        tree.refresh();
        let comparison =
            Comparison::new(tree, MERKLE_HASHES_PER_MESSAGE).expect("the per-message bound is checked at compile time");
        let comparison_id = state.next_comparison;
        state.next_comparison += 1;
        state.comparisons.insert(comparison_id, AntiEntropy { partition, peer, comparison, step: 0 });
        self.report.merkle_comparisons += 1;
        self.send_comparison_request(node, comparison_id);
    }

    /// Sends the next request of a running comparison, and schedules its timeout.
    fn send_comparison_request(&mut self, node: usize, comparison: u64) {
        let Some(running) = self.nodes[node].comparisons.get_mut(&comparison) else { return };
        let Some(request) = running.comparison.poll_request() else { return };
        running.step += 1;
        let (step, partition, peer) = (running.step, running.partition, running.peer);
        let message = Message::MerkleRequest { comparison, step, partition, request };
        self.send(Endpoint::Node(node), Endpoint::Node(peer), message);
        self.schedule(MERKLE_REQUEST_TIMEOUT_MS, Event::ComparisonTimeout { node, comparison, step });
    }

    /// The initiator's side: feeds an answer to its comparison, then asks the next question, or,
    /// once the comparison has finished with differences, starts the exchange of versions.
    fn on_merkle_response(
        &mut self,
        node: usize,
        from: Endpoint,
        comparison: u64,
        step: u32,
        response: merkle::Response,
    ) {
        let SimNode { trees, comparisons, .. } = &mut self.nodes[node];
        let Some(running) = comparisons.get_mut(&comparison) else {
            return; // finished, abandoned, or of an earlier life
        };
        if from != Endpoint::Node(running.peer) || step != running.step {
            return; // a duplicate, or a late answer to an earlier request
        }
        let handled = match trees.get(&running.partition) {
            Some(tree) => running.comparison.handle_response(tree, response).is_ok(),
            None => false,
        };
        if !handled {
            // A refusal or a malformed answer ends the comparison; the next tick starts another.
            comparisons.remove(&comparison);
            self.report.merkle_abandoned += 1;
            return;
        }
        if !running.comparison.is_finished() {
            self.send_comparison_request(node, comparison);
            return;
        }
        let Some(finished) = comparisons.remove(&comparison) else { return };
        let ranges = finished.comparison.differing_ranges();
        if ranges.is_empty() {
            return;
        }
        self.report.merkle_differences += 1;
        let versions = self.committed_versions_in(node, &ranges);
        self.report.versions_transferred += versions.len() as u64;
        let message = Message::RangeVersions { partition: finished.partition, ranges, versions, reply: true };
        self.send(Endpoint::Node(node), from, message);
    }

    /// `node`'s committed versions of the keys whose tokens lie in `ranges`: a range scan of
    /// storage on a real node.
    fn committed_versions_in(&self, node: usize, ranges: &[(u64, u64)]) -> Vec<(Key, Version<Stored>)> {
        self.nodes[node]
            .store
            .iter()
            .filter(|(key, _)| in_ranges(key_token(**key), ranges))
            .filter_map(|(&key, state)| state.committed.clone().map(|version| (key, version)))
            .collect()
    }

    /// Either side of the exchange that follows a comparison: merges the versions received, and
    /// when asked, answers with its own versions in the same ranges that it did not receive
    /// (newer ones, or keys the sender lacks). Ranges outside the partition, and versions of keys
    /// outside the ranges, are ignored: they were not asked about.
    fn on_range_versions(
        &mut self,
        node: usize,
        from: Endpoint,
        partition: PartitionId,
        ranges: Vec<(u64, u64)>,
        versions: Vec<(Key, Version<Stored>)>,
        reply: bool,
    ) {
        if !self.nodes[node].trees.contains_key(&partition) {
            return; // not a replica of it (so `partition` names a real partition below)
        }
        let (first, last) = self.layout.partition_range(partition);
        let ranges: Vec<(u64, u64)> =
            ranges.into_iter().filter(|&(start, end)| first <= start && start <= end && end <= last).collect();
        let received: BTreeMap<Key, Version<Stored>> =
            versions.into_iter().filter(|(key, _)| in_ranges(key_token(*key), &ranges)).collect();
        for (&key, version) in &received {
            if self.commit(node, key, version.clone()) {
                self.report.versions_repaired += 1;
            }
        }
        if !reply {
            return;
        }
        let answer: Vec<(Key, Version<Stored>)> = self
            .committed_versions_in(node, &ranges)
            .into_iter()
            .filter(|(key, version)| received.get(key) != Some(version))
            .collect();
        if answer.is_empty() {
            return;
        }
        self.report.versions_transferred += answer.len() as u64;
        let message = Message::RangeVersions { partition, ranges, versions: answer, reply: false };
        self.send(Endpoint::Node(node), from, message);
    }

    // ----- faults -----

    fn inject_fault(&mut self) {
        if self.now >= self.config.load_ms || self.healed {
            return;
        }
        let faults = self.config.faults.clone();
        let kinds: Vec<u64> = [faults.partition_every_ms, faults.crash_every_ms, faults.pause_every_ms]
            .into_iter()
            .filter(|&every| every > 0)
            .collect();
        // Next episode: exponential-ish spacing around the fastest configured rate.
        let mean = kinds.iter().copied().min().unwrap_or(1_000);
        let next = 1 + self.rng.below(2 * mean);
        self.schedule(next, Event::Fault);
        let n = self.nodes.len();
        let choice = self.rng.below(3);
        if choice == 0 && faults.partition_every_ms > 0 && self.rng.chance(mean, faults.partition_every_ms) {
            self.report.partitions += 1;
            let size = 1 + self.rng.below(n as u64 / 2) as usize;
            let mut group = BTreeSet::new();
            while group.len() < size {
                group.insert(self.rng.below(n as u64) as usize);
            }
            let one_way = self.rng.chance(1, 3);
            let duration = 100 + self.rng.below(900);
            for &a in &group {
                for b in (0..n).filter(|b| !group.contains(b)) {
                    for (from, to) in if one_way { vec![(a, b)] } else { vec![(a, b), (b, a)] } {
                        if self.cut.insert((from, to)) {
                            self.schedule(duration, Event::HealLink { from, to });
                        }
                    }
                }
            }
        } else if choice == 1 && faults.crash_every_ms > 0 && self.rng.chance(mean, faults.crash_every_ms) {
            let node = self.rng.below(n as u64) as usize;
            if self.nodes[node].up {
                self.report.crashes += 1;
                self.crash(node);
                let down_for = 50 + self.rng.below(950);
                self.schedule(down_for, Event::NodeUp { node });
            }
        } else if choice == 2 && faults.pause_every_ms > 0 && self.rng.chance(mean, faults.pause_every_ms) {
            let node = self.rng.below(n as u64) as usize;
            if self.nodes[node].up && self.nodes[node].paused_until.is_none() {
                self.report.pauses += 1;
                let until = self.now + 50 + self.rng.below(550);
                self.nodes[node].paused_until = Some(until);
                self.schedule(until - self.now, Event::Resume { node });
            }
        }
    }

    fn crash(&mut self, node: usize) {
        let state = &mut self.nodes[node];
        state.up = false;
        state.paused_until = None;
        state.store = state.durable.clone();
        state.dirty.clear();
        state.ops.clear();
        state.leases.clear();
        // Trees live in memory only; the restart rebuilds them from what survived.
        state.trees.clear();
        state.epoch = state.durable_epoch;
        state.sources.clear();
        state.synced.clear();
        state.comparisons.clear();
        state.floors = state.durable_floors.clone();
        state.old_commits.clear();
        state.collecting = None;
        // The clock survives only as far as physical time carries it: a restarted node's HLC
        // starts from its wall clock (ballots stay unique by node id and persisted promises).
        state.clock = Clock::new();
    }

    fn node_up(&mut self, node: usize) {
        if self.nodes[node].up {
            return;
        }
        // A starting node scans each partition it replicates to build its Merkle trees.
        self.rebuild_trees(node);
        let state = &mut self.nodes[node];
        state.up = true;
        state.incarnation += 1;
        let incarnation = state.incarnation;
        let life = self.rng.next_u64();
        self.nodes[node].life = life;
        let delay = self.rng.below(REPAIR_INTERVAL_MS);
        self.schedule(delay, Event::Repair { node, incarnation });
    }

    fn heal(&mut self) {
        self.healed = true;
        self.cut.clear();
        for node in 0..self.nodes.len() {
            self.nodes[node].paused_until = None;
            self.node_up(node);
        }
        self.schedule(0, Event::CheckConvergence);
    }

    fn check_convergence(&mut self) {
        let heal_started = self.config.load_ms;
        if self.converged() {
            self.report.converged_after_ms = Some(self.now - heal_started);
            self.final_reads();
            return;
        }
        if self.now - heal_started > self.config.heal_bound_ms {
            let mut detail = String::new();
            for key in 0..self.config.keys {
                for replica in self.replicas_of(key) {
                    let state = self.nodes[self.index_of(replica)].store.get(&key);
                    let _ = write!(detail, "\n  key {key} on {replica:?}: {state:?}");
                }
            }
            for node in &self.nodes {
                let _ = write!(detail, "\n  {:?} in layout epoch {}", node.id, node.epoch);
            }
            for partition in self.partitions_with_differing_roots() {
                for &replica in self.target.replicas(partition) {
                    let tree = self.nodes[self.index_of(replica)].trees.get(&partition);
                    let root = tree.map(MerkleTree::root);
                    let entries = tree.map(MerkleTree::len);
                    let _ =
                        write!(detail, "\n  {partition:?} on {replica:?}: Merkle root {root:?}, {entries:?} entries");
                }
            }
            self.report
                .violations
                .push(format!("replicas did not converge within {} ms of healing:{detail}", self.config.heal_bound_ms));
            self.queue.clear();
            return;
        }
        self.schedule(50, Event::CheckConvergence);
    }

    /// Whether the replicas agree: for every key no unfinished proposal and one committed
    /// version on all its replicas, and for every partition one Merkle root on all its replicas
    /// (what anti-entropy sees: equal roots end its work on a partition).
    fn converged(&self) -> bool {
        let keys_agree = (0..self.config.keys).all(|key| {
            let states: Vec<Option<&Acceptor<Stored>>> = self
                .replicas_of(key)
                .iter()
                .map(|&replica| self.nodes[self.index_of(replica)].store.get(&key))
                .collect();
            let committed = |state: &Option<&Acceptor<Stored>>| state.and_then(|s| s.committed.clone());
            states.iter().all(|state| state.is_none_or(|s| s.accepted.is_none()))
                && states.iter().all(|state| committed(state) == committed(&states[0]))
        });
        let change_over = self.config.reconfiguration.is_none() || self.nodes.iter().all(|node| node.epoch == 2);
        change_over && keys_agree && self.partitions_with_differing_roots().is_empty()
    }

    /// The partitions whose replicas' Merkle roots differ (a replica without the tree, down,
    /// differs from every other).
    fn partitions_with_differing_roots(&self) -> Vec<PartitionId> {
        (0..self.layout.partition_count())
            .map(PartitionId)
            .filter(|&partition| {
                let roots: Vec<Option<merkle::Digest>> = self
                    .target
                    .replicas(partition)
                    .iter()
                    .map(|&replica| self.nodes[self.index_of(replica)].trees.get(&partition).map(MerkleTree::root))
                    .collect();
                roots.iter().any(|root| root.is_none() || *root != roots[0])
            })
            .collect()
    }

    /// After convergence: one strict read of every key, by extra clients, through random nodes.
    fn final_reads(&mut self) {
        for key in 0..self.config.keys {
            self.final_reads.insert(key);
            let client = self.clients.len();
            self.clients.push(Client { seq: 0, pending: None, seen: BTreeMap::new() });
            let node = self.rng.below(self.nodes.len() as u64) as usize;
            self.issue(client, node, key, ClientOp::Read);
        }
    }

    fn finish(mut self) -> Report {
        // Paired with the incremental updates: every tree must equal one rebuilt from its store.
        // Empty trees of one depth share a root whatever their interval (the hashes do not
        // involve it), so partitions without entries need no tree of their own to check against.
        let (first, last) = self.layout.partition_range(PartitionId(0));
        let empty_root = MerkleTree::new(first, last, MERKLE_DEPTH).expect("a valid partition tree").root();
        for node in 0..self.nodes.len() {
            if !self.nodes[node].up {
                continue;
            }
            for partition in self.held_partitions(node) {
                let kept = self.nodes[node].trees.get(&partition).map(MerkleTree::root);
                let entries = self.store_entries(node, partition);
                let expected =
                    if entries.is_empty() { empty_root } else { self.tree_from_store(node, partition).root() };
                if kept != Some(expected) {
                    self.report
                        .violations
                        .push(format!("node {node}'s Merkle tree of {partition:?} does not match its store"));
                }
            }
        }
        for (key, events) in &self.history {
            if let Err(violation) = linearizability::check(None, events) {
                self.report.violations.push(format!("key {key} is not linearizable: {violation}"));
            }
        }
        for key in &self.final_reads {
            let answered = self.history[key].iter().rev().find(|event| event.client >= self.config.clients as u64);
            if answered.is_none_or(|event| event.complete.is_none()) {
                self.report.violations.push(format!("the final strict read of key {key} got no answer"));
            }
        }
        if self.report.converged_after_ms.is_none() && self.report.violations.is_empty() {
            self.report.violations.push("the run ended before convergence was checked".into());
        }
        self.report
    }
}

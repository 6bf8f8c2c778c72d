//! The node on a cluster: its replicas' consensus state and the coordinator of item operations.
//!
//! A node started with a [`ClusterConfig`] binds the cluster transport (`onggi-transport`) and
//! computes the partition layout (`onggi_core::layout`) of the configured members. From then on:
//!
//! - **As a replica** it answers consensus requests about items it holds (`Node::replica`): under the
//!   item's lock it loads the item's [`Acceptor`] — the committed version is the item's record in
//!   the table's tree, the promised ballot and any accepted proposal are a
//!   [`ConsensusState`] in the table's consensus tree — runs the pure handler, and persists what
//!   changed (fsynced) before answering. A commit writes the chosen version as the item's record,
//!   with its index entries, in one batch that also retires the consensus state it supersedes.
//! - **As a coordinator** it runs `Node::execute`'s decide closure as the apply function of a
//!   [`Proposer`] over the item's replicas (the local one called directly, the others through
//!   the transport; each round asks a majority first and the others only if it stalls, see
//!   `Node::round`), with round timeouts, randomized back-off under contention and an overall
//!   deadline; strict reads take the proposer's one-round-trip read path. Its accepts also ask
//!   the replicas to promise its next ballot for the item, and the lease a quorum's promises
//!   make lets its next write on the item start at the accept (`leases.rs`). A write is
//!   acknowledged once a majority of replicas accepted it durably; commits then go to every
//!   replica without the client waiting: the local one is applied before answering, the others
//!   are requests sent from background tasks, and a replica that does not acknowledge its commit
//!   gets a hint.
//! - **Hinted handoff** (`hints.rs`, the Dynamo paper's §4.6): the coordinator keeps a commit a
//!   replica did not acknowledge (down, partitioned, paused, overloaded) in its `hints` tree, one
//!   per item and replica, and a background task hands it over once the replica answers again, so
//!   a node back from a crash has what it missed within about a second. Hints are bounded in
//!   number and written without an fsync: they are an optimisation, and anti-entropy is the
//!   guarantee.
//! - **In the background** (`repair.rs`) it runs anti-entropy: it walks the (table, partition)
//!   pairs it replicates at a bounded rate, compares each with another replica of it by Merkle
//!   trees, exchanges the versions of the ranges that differ through the replica's commit path,
//!   and finishes proposals left accepted but not committed. A replica that missed commits and got
//!   no hint for them (a hint dropped or lost, a coordinator that died before committing) thus
//!   converges within a sweep or two (1.3–5 s per table).
//!
//! - **Layout changes** (`topology.rs`, `catch_up.rs`): every node holds the layout epoch it is
//!   in; while a change runs, an item's quorums are a majority of its old replicas and of its
//!   new ones, new replicas copy the old ones' committed versions, and every node switches to the
//!   new layout once a majority of each moved partition's new replicas has caught up.
//! - **Table changes** (`crate::registry`) are read-modify-writes of the table name's item in the
//!   registry, a system table under this same consensus; each node's catalog caches it, fed by
//!   announcements and catalog anti-entropy (`catalog_sync.rs`).
//! - **Membership gossip** (`gossip.rs`) runs the core's scuttlebutt gossip and phi-accrual
//!   detector; its verdict, and replicas that lagged in a recent round, only decide whom a round
//!   asks first.
//!
//! - **Global secondary indexes** (`views.rs`) are views: tables of their own placed by the
//!   index's key, fed by changes every replica of an item queues in its commit's batch.
//!
//! **What is not here yet** (each answers a clear error or is documented): one layout change at
//! a time; an index added to a table with items is active on each node once that node's backfill
//! is done, not once every node's is; hints are kept by the coordinator, not by a substitute replica that
//! counts towards the quorum (Dynamo's sloppy quorum): strict mode's majorities are of the item's
//! own replicas, and hints only make a replica catch up sooner.

mod acceptors;
mod catalog_sync;
mod catch_up;
mod counts;
mod forward;
mod gossip;
mod hints;
mod leases;
mod live_trees;
mod ranges;
mod repair;
mod status;
mod tombstones;
mod topology;
mod views;

pub(crate) use forward::{batch_delete_input, batch_put_input};
pub use hints::HINTS_MAX_DEFAULT;
pub use status::render_status;
pub use tombstones::{
    GRACE_DEFAULT as TOMBSTONE_GRACE_DEFAULT, GRACE_MIN as TOMBSTONE_GRACE_MIN,
    INTERVAL_DEFAULT as TOMBSTONE_INTERVAL_DEFAULT,
};
pub mod wire;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use onggi_core::consensus_state::ConsensusState;
use onggi_core::layout::{NodeId, PartitionId};
use onggi_core::paxos::{Acceptor, Ballot, Decision, Knowledge, Proposer, Quorums, Step, Version};
use onggi_core::record::Record;
use onggi_model::table::TableSchema;
use onggi_model::{DynamoError, Item};
use onggi_storage::{Durability, Tree, WriteBatch};
use onggi_transport::{Handler, HandlerError, PeerInfo, Transport};

use crate::catalog::TableHandle;
use crate::indexing;
use crate::items::{Effect, WriteOrigin};
use crate::tables::storage_error;
use crate::{Inner, Node};
use tombstones::TableFloors;
use topology::Topology;
use wire::{Reply, Request, Value};

/// How long a coordinator waits for one round's answers.
const ROUND_TIMEOUT: Duration = Duration::from_millis(1_000);
/// How long a round waits for the quorum it asked first before asking the item's other replicas
/// too (see `Node::round`): far above a round trip between healthy nodes, far below
/// [`ROUND_TIMEOUT`].
const HEDGE_DELAY: Duration = Duration::from_millis(50);
/// How long a replica that failed or lagged in a round is asked only after the others.
const LAGGARD_AVOIDED_FOR: Duration = Duration::from_secs(1);
/// How long a coordinator keeps trying before it gives up on an operation.
const OPERATION_DEADLINE: Duration = Duration::from_secs(10);
/// How much history of writers an item's value keeps (see `onggi_core::paxos::Lineage`): well
/// beyond [`OPERATION_DEADLINE`], the longest a coordinator retries one operation.
const LINEAGE_WINDOW_MS: u64 = 60_000;
/// Partitions of a cluster created by this build (fixed for the cluster's life).
pub const PARTITIONS_DEFAULT: u32 = 256;

/// How a replica handles a commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CommitMode {
    /// As usual.
    Local,
    /// Sent by a coordinator: answered once the commit's view changes were delivered (or
    /// [`views::COMMIT_WAIT_MAX`] passed), so that the coordinator's reads of global indexes see it.
    Remote,
    /// A backfill's view entry: applied below the collection floor when nothing is stored for
    /// its key (see `views.rs`).
    Backfill,
}

/// How a node joins a cluster.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// This node's id: unique in the cluster, never reused.
    pub node_id: u64,
    /// The cluster's name; nodes of another cluster are refused at the handshake.
    pub cluster_name: String,
    /// Where this node listens for its peers.
    pub listen: SocketAddr,
    /// Every member (this node included): id and cluster address. Empty when the node joins an
    /// existing cluster through `seeds`.
    pub members: Vec<(u64, SocketAddr)>,
    /// Cluster addresses of running members to learn the topology from, for a node that is not
    /// among `members` (it joins once an operator adds it: `onggi cluster join`).
    pub seeds: Vec<SocketAddr>,
    /// Replicas per item (N).
    pub replication: usize,
    /// The zones (failure domains) of `members` that have one, by id: a partition's replicas go
    /// to distinct zones when there are enough. Read only when the cluster is first formed.
    pub zones: BTreeMap<u64, String>,
}

/// A node's cluster state.
pub(crate) struct Cluster {
    me: NodeId,
    /// The layout epoch, its layouts and the members' addresses (`topology.rs`), replaced whole
    /// when this node adopts a newer one (`Node::update_topology`).
    topology: std::sync::RwLock<Arc<Topology>>,
    /// Other members known (old and new layouts'), kept beside the topology for the per-request
    /// check of whether this node works with peers at all (a cluster of one does not; a node
    /// started with seeds does, from the start).
    others: std::sync::atomic::AtomicUsize,
    /// Serializes adoptions of newer topologies (each is persisted before it is used).
    adopting: tokio::sync::Mutex<()>,
    /// Held (read) by a replica from its epoch check until its action is persisted, and (write)
    /// while a newer topology is published: see `Node::replica_in_epoch`.
    epoch_gate: tokio::sync::RwLock<()>,
    /// This node's cluster state tree (the persisted topology).
    state_tree: Tree,
    /// The clock's time when this node adopted its current epoch (packed hybrid time): every
    /// proposal accepted here before then has a ballot at or below it.
    adopted_at: std::sync::atomic::AtomicU64,
    transport: Transport,
    /// Consensus trees by table id, opened on first use.
    consensus_trees: Mutex<BTreeMap<String, Tree>>,
    /// Operations this node coordinates on one item run one at a time: concurrent rounds of one
    /// coordinator would only make each other retry (replica locks are separate, `Inner::locks`).
    coordinating: crate::items::LockStripes,
    /// Anti-entropy's counters and recently built Merkle trees.
    repair: repair::Repair,
    /// Hinted handoff's store and counters.
    hints: hints::Hints,
    /// Global index views' upkeep: the queue of changes and their delivery (`views.rs`).
    views: views::Views,
    /// Leases of this node's last writes on items (see `leases.rs`).
    leases: leases::Leases,
    /// The replica states of recently used items (`acceptors.rs`).
    acceptors: acceptors::Acceptors,
    /// What this node's coordinated operations ran into (shown by `onggi cluster status`).
    consensus_stats: ConsensusStats,
    /// Whether client writes go to their item's home coordinator (`forward.rs`); tests of other
    /// mechanisms turn it off to choose who coordinates.
    forwarding: std::sync::atomic::AtomicBool,
    /// Homes recently passed over (`forward.rs`).
    homes: forward::Homes,
    /// Tombstone collection's floors, rounds and counters (`tombstones.rs`).
    collector: tombstones::Collector,
    /// Commits this node sent to other replicas and has not yet seen acknowledged or kept as
    /// hints (what this node's reads from other replicas wait for).
    sent_commits: SentCommits,
    /// Membership gossip and the failure detector (`gossip.rs`).
    gossip: gossip::Gossip,
    /// Replicas that failed, or were still silent when a round asked the others too, with when
    /// to stop avoiding them (see [`Cluster::avoids`]).
    laggards: Mutex<BTreeMap<NodeId, tokio::time::Instant>>,
}

/// Counters of the operations a node coordinates, since it started.
#[derive(Default)]
pub(crate) struct ConsensusStats {
    /// Rounds started again because a replica had promised a higher ballot: contention with
    /// another coordinator on the same item.
    pub(crate) contended: std::sync::atomic::AtomicU64,
    /// Rounds started again because no quorum answered in time.
    pub(crate) timed_out: std::sync::atomic::AtomicU64,
    /// Operations given up at their deadline.
    pub(crate) past_deadline: std::sync::atomic::AtomicU64,
    /// Operations that ended not knowing whether their write took effect: a newer version whose
    /// history (its lineage) no longer tells whether it derives from one of their attempts.
    pub(crate) indeterminate: std::sync::atomic::AtomicU64,
    /// Writes this node handed to their item's home coordinator and got an answer for
    /// (`forward.rs`).
    pub(crate) forwarded: std::sync::atomic::AtomicU64,
    /// Writes this node handed to their home and then ran itself: not sent, started too late
    /// there, or not answered in time (`forward.rs`).
    pub(crate) taken_over: std::sync::atomic::AtomicU64,
}

/// The commits a coordinator sent to other replicas, in flight until acknowledged or kept as a
/// hint: what lets a client read its own writes through one node. A write is acknowledged once a
/// majority *accepted* it and this node applied it, while its commits to the other replicas are
/// still on their way; an eventually consistent read served by another replica could miss it. So
/// such reads (GetItem, BatchGetItem, the pieces of a Query or Scan, DescribeTable's counts)
/// first wait, briefly, until every commit this node sent before the read began has landed.
/// DynamoDB promises no more for eventually consistent reads, but clients (and test suites)
/// written against it do read back what they just wrote, and nearly always see it.
#[derive(Default)]
pub(crate) struct SentCommits {
    /// The next commit's number and the numbers of those in flight.
    state: Mutex<(u64, std::collections::BTreeSet<u64>)>,
    landed: tokio::sync::Notify,
}

/// The longest a read waits for this node's commits in flight.
pub(crate) const SENT_COMMITS_WAIT_MAX: Duration = Duration::from_millis(500);

impl SentCommits {
    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, std::collections::BTreeSet<u64>)> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Notes a commit sent; returns its number, for [`SentCommits::finish`].
    fn start(&self) -> u64 {
        let mut state = self.lock();
        let number = state.0;
        state.0 += 1;
        state.1.insert(number);
        number
    }

    /// Notes that commit `number` was acknowledged or kept as a hint.
    fn finish(&self, number: u64) {
        self.lock().1.remove(&number);
        self.landed.notify_waiters();
    }

    /// Waits until every commit sent before this call has landed, or [`SENT_COMMITS_WAIT_MAX`]
    /// passed (a replica may be down: its commits become hints only after a timeout).
    pub(crate) async fn settle(&self) {
        let mark = self.lock().0;
        let deadline = tokio::time::Instant::now() + SENT_COMMITS_WAIT_MAX;
        loop {
            let landed = self.landed.notified();
            if self.lock().1.first().is_none_or(|&oldest| oldest >= mark) {
                return;
            }
            if tokio::time::timeout_at(deadline, landed).await.is_err() {
                return;
            }
        }
    }
}

impl Cluster {
    /// The topology this node works in now (a snapshot: a newer one may be adopted meanwhile).
    pub(crate) fn layout(&self) -> Arc<Topology> {
        self.topology.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The replicas holding every chosen version of the item at `key`: its replicas in the
    /// epoch's layout, or in the old one while the layout changes (new replicas are catching up).
    pub(crate) fn replicas(&self, key: &[u8]) -> Vec<NodeId> {
        let layout = self.layout();
        layout.replicas(layout.partition_of_key(key)).to_vec()
    }

    /// Whether this node holds a replica of every partition (so local range reads see all data).
    pub(crate) fn holds_everything(&self) -> bool {
        let layout = self.layout();
        !layout.changing() && layout.partitions_of(self.me).count() == layout.partition_count() as usize
    }

    /// Other members' cluster addresses.
    fn peers(&self) -> Vec<SocketAddr> {
        self.layout().addresses().filter(|(id, _)| *id != self.me).map(|(_, address)| address).collect()
    }

    /// A member's cluster address.
    fn address(&self, node: NodeId) -> Option<SocketAddr> {
        self.layout().address(node)
    }

    /// This node's id.
    /// Whether a round should ask `node` only after the item's other replicas: the failure
    /// detector suspects it, or it failed or lagged in a round less than [`LAGGARD_AVOIDED_FOR`]
    /// ago. Which replicas are asked first never matters for safety, only for latency: a paused
    /// or cut-off replica costs one round [`HEDGE_DELAY`] per [`LAGGARD_AVOIDED_FOR`], not every
    /// round until the detector convicts it.
    fn avoids(&self, node: NodeId) -> bool {
        let lagging = {
            let mut laggards = self.laggards.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            match laggards.get(&node) {
                Some(&until) if until > tokio::time::Instant::now() => true,
                Some(_) => {
                    laggards.remove(&node);
                    false
                }
                None => false,
            }
        };
        lagging || self.gossip.suspects(node)
    }

    /// Notes that `node` failed or lagged in a round (see [`Cluster::avoids`]).
    fn avoid(&self, node: NodeId) {
        if node == self.me {
            return;
        }
        let until = tokio::time::Instant::now() + LAGGARD_AVOIDED_FOR;
        self.laggards.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(node, until);
    }

    pub(crate) fn me(&self) -> NodeId {
        self.me
    }

    /// Waits (each at most [`SENT_COMMITS_WAIT_MAX`]) until the view changes this node was
    /// delivering and the commits it had sent have landed: before a read of a global index, so
    /// that it sees this node's writes (`views.rs`).
    pub(crate) async fn settle_views(&self) {
        self.views.in_flight.settle().await;
        self.sent_commits.settle().await;
    }
}

/// The node part of the ballots (and version stamps) this process issues: the node id in the
/// high 32 bits and a random incarnation in the low 32. Ballots must never repeat, and a node
/// restarted after a crash may repeat clock readings it used before — its hybrid logical clock
/// can run ahead of its wall clock after observing a peer whose clock is ahead — so each life of
/// a node signs its ballots differently.
pub fn ballot_node(node_id: u64, incarnation: u64) -> u64 {
    (node_id << 32) | (incarnation & 0xFFFF_FFFF)
}

/// The name of the storage tree holding a table's consensus state.
pub fn consensus_tree_name(table_id: &str) -> String {
    format!("consensus.{table_id}")
}

/// Answers peers' requests on behalf of the node (held weakly: the node owns the transport).
struct PeerHandler {
    node: Weak<Inner>,
}

impl Handler for PeerHandler {
    async fn request(&self, from: PeerInfo, tag: u16, payload: Bytes) -> Result<Bytes, HandlerError> {
        let node = Node { inner: self.node.upgrade().ok_or_else(|| HandlerError::new("node is stopping"))? };
        match tag {
            wire::tag::CONSENSUS => {
                let (table_id, key, epoch, request) =
                    wire::decode_request(&payload).map_err(|error| HandlerError::new(error.to_string()))?;
                let reply = node
                    .replica_in_epoch(&table_id, key, epoch, request, Some(from.addr))
                    .await
                    .map_err(HandlerError::new)?;
                Ok(Bytes::from(wire::encode_reply(&reply)))
            }
            wire::tag::FORWARD => {
                node.answer_forwarded(&payload, NodeId(from.node_id)).await.map(Bytes::from).map_err(HandlerError::new)
            }
            wire::tag::TOPOLOGY => node.answer_topology(&payload).await.map(Bytes::from).map_err(HandlerError::new),
            wire::tag::CATCH_UP => {
                let request = wire::decode_catch_up(&payload).map_err(|error| HandlerError::new(error.to_string()))?;
                let reply = node.answer_catch_up(request, Some(from.addr)).await.map_err(HandlerError::new)?;
                Ok(Bytes::from(wire::encode_catch_up_reply(&reply)))
            }
            wire::tag::TABLE_CREATED => {
                let schema: TableSchema = serde_json::from_slice(&payload)
                    .map_err(|error| HandlerError::new(format!("table schema: {error}")))?;
                node.apply_schema(schema).await.map_err(|error| HandlerError::new(error.message.clone()))?;
                Ok(Bytes::new())
            }
            wire::tag::MERKLE => node.answer_merkle(&payload).await.map(Bytes::from).map_err(HandlerError::new),
            wire::tag::RANGE_SYNC => node.answer_range_sync(&payload).await.map(Bytes::from).map_err(HandlerError::new),
            wire::tag::RANGE_READ => {
                node.answer_range_read(&payload, from.addr).await.map(Bytes::from).map_err(HandlerError::new)
            }
            wire::tag::VIEW_CHANGES => {
                node.answer_view_changes(&payload, from.addr).await.map(|()| Bytes::new()).map_err(HandlerError::new)
            }
            wire::tag::TABLE_COUNTS => {
                node.answer_table_counts(&payload).await.map(Bytes::from).map_err(HandlerError::new)
            }
            wire::tag::STRICT_READ => {
                node.answer_strict_read(&payload, from.addr).await.map(Bytes::from).map_err(HandlerError::new)
            }
            wire::tag::TOMBSTONES => node.answer_collection(&payload).await.map(Bytes::from).map_err(HandlerError::new),
            wire::tag::CATALOG_SYNC => {
                node.answer_catalog_sync(&payload).await.map(Bytes::from).map_err(HandlerError::new)
            }
            wire::tag::STATUS => Ok(Bytes::new()),
            wire::tag::TABLE_DELETED => {
                let id = wire::decode_table_deleted(&payload).map_err(|error| HandlerError::new(error.to_string()))?;
                node.uninstall_table(&id).await.map_err(|error| HandlerError::new(error.message.clone()))?;
                Ok(Bytes::new())
            }
            other => Err(HandlerError::new(format!("unknown message tag {other}"))),
        }
    }

    fn message(&self, _from: PeerInfo, tag: u16, payload: Bytes) {
        let Some(inner) = self.node.upgrade() else { return };
        let node = Node { inner };
        if tag == wire::tag::GOSSIP {
            node.receive_gossip(&payload);
            return;
        }
        if tag != wire::tag::COMMIT {
            return;
        }
        tokio::spawn(async move {
            match wire::decode_request(&payload) {
                Ok((table_id, key, _, request @ Request::Commit(_))) => {
                    if let Err(error) = node.replica(&table_id, key, request).await {
                        tracing::debug!(%error, "commit not applied");
                    }
                }
                Ok(_) => tracing::warn!("a one-way consensus message that is not a commit was ignored"),
                Err(error) => tracing::warn!(%error, "malformed commit ignored"),
            }
        });
    }
}

/// One partition's replica state (floors, commit gate, live Merkle tree), owned: what a storage
/// completion updates.
#[derive(Clone)]
pub(crate) struct PartitionRef {
    floors: Arc<TableFloors>,
    partition: PartitionId,
}

impl PartitionRef {
    fn get(&self) -> &tombstones::PartitionFloors {
        self.floors.partition(self.partition).expect("a partition of the layout")
    }
}

impl Node {
    /// Joins the cluster `config` describes: binds the cluster transport and computes the layout.
    /// Call once, before serving requests.
    pub async fn start_cluster(&self, config: ClusterConfig) -> Result<(), String> {
        if config.node_id >= 1 << 32 {
            return Err(format!("node id {} is too large: node ids are below 2^32", config.node_id));
        }
        if !config.members.is_empty() && !config.members.iter().any(|(id, _)| *id == config.node_id) {
            return Err(format!("node {} is not among the cluster members", config.node_id));
        }
        if config.members.is_empty() && config.seeds.is_empty() {
            return Err("a cluster node needs its members or seeds".into());
        }
        // The topology this node last adopted wins over the command line's members: the layout
        // may have changed since the cluster was created.
        let state_tree =
            self.inner.engine.open_tree(topology::CLUSTER_TREE).map_err(|error| format!("cluster state: {error}"))?;
        let stored = self
            .inner
            .engine
            .get(&state_tree, topology::TOPOLOGY_KEY)
            .map_err(|error| format!("cluster state: {error}"))?;
        let handler = PeerHandler { node: Arc::downgrade(&self.inner) };
        let transport_config = onggi_transport::Config::new(config.node_id, config.cluster_name.clone(), config.listen);
        let transport = Transport::bind(transport_config, handler)
            .await
            .map_err(|error| format!("cannot listen for cluster peers on {}: {error}", config.listen))?;
        let topology = match stored {
            Some(bytes) => {
                let record = serde_json::from_slice(&bytes).map_err(|error| format!("stored topology: {error}"))?;
                Topology::from_record(record).map_err(|error| format!("stored topology: {error}"))?
            }
            None if config.members.is_empty() => {
                let topology = topology::fetch_from_seeds(&transport, &config.seeds).await?;
                if let Some(address) = topology.address(NodeId(config.node_id))
                    && address != config.listen
                {
                    return Err(format!(
                        "node id {} is already a member of the cluster, at {address}: ids are never reused",
                        config.node_id
                    ));
                }
                let mut batch = WriteBatch::new();
                let encoded = serde_json::to_vec(topology.record()).expect("a topology serializes");
                batch.put(&state_tree, topology::TOPOLOGY_KEY.to_vec(), encoded);
                self.commit_batch(batch, Durability::Sync, || {}).await.map_err(|error| error.message)?;
                topology
            }
            None => {
                let topology =
                    Topology::initial(PARTITIONS_DEFAULT, config.replication, &config.members, &config.zones)
                        .map_err(|error| format!("cannot lay out the cluster: {error}"))?;
                let mut batch = WriteBatch::new();
                let encoded = serde_json::to_vec(topology.record()).expect("a topology serializes");
                batch.put(&state_tree, topology::TOPOLOGY_KEY.to_vec(), encoded);
                self.commit_batch(batch, Durability::Sync, || {}).await.map_err(|error| error.message)?;
                topology
            }
        };
        let replication = topology.replica_count();
        let members = topology.addresses().count();
        let others = topology.addresses().filter(|(id, _)| id.0 != config.node_id).count();
        let hints = hints::Hints::open(&self.inner.engine).await?;
        let views = views::Views::open(&self.inner.engine).await?;
        // Gossip goes to the layout's other members and the seeds until peers answer.
        let mut gossip_seeds: Vec<String> = topology
            .addresses()
            .filter(|(id, _)| id.0 != config.node_id)
            .map(|(_, address)| address.to_string())
            .chain(config.seeds.iter().map(SocketAddr::to_string))
            .collect();
        gossip_seeds.sort_unstable();
        gossip_seeds.dedup();
        gossip_seeds.truncate(onggi_core::membership::SEEDS_MAX);
        let gossip = gossip::Gossip::new(
            NodeId(config.node_id),
            topology.address(NodeId(config.node_id)).unwrap_or_else(|| transport.local_addr()),
            &config.cluster_name,
            crate::wall_clock_ms(),
            gossip_seeds,
            self.inner.random_below(u64::MAX),
        )?;
        let cluster = Cluster {
            me: NodeId(config.node_id),
            topology: std::sync::RwLock::new(Arc::new(topology)),
            others: std::sync::atomic::AtomicUsize::new(others),
            adopting: tokio::sync::Mutex::new(()),
            epoch_gate: tokio::sync::RwLock::new(()),
            adopted_at: std::sync::atomic::AtomicU64::new(u64::MAX),
            state_tree,
            transport,
            consensus_trees: Mutex::new(BTreeMap::new()),
            coordinating: crate::items::LockStripes::new(),
            repair: repair::Repair::default(),
            hints,
            views,
            leases: leases::Leases::default(),
            acceptors: acceptors::Acceptors::default(),
            consensus_stats: ConsensusStats::default(),
            forwarding: std::sync::atomic::AtomicBool::new(true),
            homes: forward::Homes::default(),
            collector: tombstones::Collector::new(self.inner.random_below(u64::MAX)),
            sent_commits: SentCommits::default(),
            gossip,
            laggards: Mutex::new(BTreeMap::new()),
        };
        match self.forget_floors_of_deleted_tables(&cluster) {
            Ok(0) => {}
            Ok(removed) => tracing::info!(removed, "removed the collection floors of deleted tables"),
            Err(error) => tracing::warn!(%error, "collection floors of deleted tables not removed"),
        }
        let incarnation = self.inner.random_below(1 << 32);
        self.inner.node_id.store(ballot_node(config.node_id, incarnation), std::sync::atomic::Ordering::Relaxed);
        self.inner.cluster.set(Arc::new(cluster)).map_err(|_| "the cluster was already started".to_string())?;
        // Even for a cluster of one (which works as a single node until a second member joins):
        // each task idles while the node has no peers.
        self.spawn_repair();
        self.spawn_catalog_sync();
        self.spawn_hint_delivery();
        self.spawn_view_upkeep();
        self.spawn_topology_gossip();
        self.spawn_catch_up();
        self.spawn_gossip();
        if config.members.is_empty() {
            // A node started with seeds learns the tables before it serves a request (catalog
            // sync would bring them within a second or two).
            for &seed in &config.seeds {
                match self.pull_catalog(seed).await {
                    Ok(_) => break,
                    Err(error) => tracing::debug!(%error, %seed, "no catalog from this seed"),
                }
            }
        }
        tracing::info!(node = config.node_id, members, replication, "joined the cluster");
        Ok(())
    }

    /// The cluster, when this node is part of one with other members.
    pub(crate) fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.inner.cluster.get().filter(|cluster| cluster.others.load(std::sync::atomic::Ordering::Relaxed) > 0)
    }

    /// What forgets, in a write's completion, what the replica keeps in memory about `key` of
    /// table `table_id` — its cached state and its partition's live Merkle tree — for a write
    /// neither is told of (a cluster of one's single-node path).
    pub(crate) fn replica_state_forgetter(
        &self,
        cluster: &Arc<Cluster>,
        table_id: &str,
        key: &[u8],
    ) -> impl FnOnce() + Send + 'static {
        let partition = cluster.layout().partition_of_key(key);
        let floors = self.table_floors(cluster, table_id).ok();
        let (cluster, table_id, key) = (cluster.clone(), table_id.to_string(), key.to_vec());
        move || {
            cluster.acceptors.forget(&table_id, &key);
            if let Some(part) = floors.as_ref().and_then(|floors| floors.partition(partition)) {
                part.live.forget();
            }
        }
    }

    pub(crate) fn consensus_tree(&self, cluster: &Cluster, table: &TableHandle) -> Result<Tree, DynamoError> {
        let mut trees = cluster.consensus_trees.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(tree) = trees.get(&table.schema.id) {
            return Ok(tree.clone());
        }
        let tree = self.inner.engine.open_tree(&consensus_tree_name(&table.schema.id)).map_err(storage_error)?;
        trees.insert(table.schema.id.clone(), tree.clone());
        Ok(tree)
    }

    fn table_by_id(&self, id: &str) -> Result<Arc<TableHandle>, DynamoError> {
        self.inner
            .catalog
            .get_by_id(id)
            .ok_or_else(|| DynamoError::internal(format!("table {id} is not known on this node")))
    }

    // ----- replica -----

    /// Handles one consensus request for an item this node holds.
    async fn replica(&self, table_id: &str, key: Vec<u8>, request: Request) -> Result<Reply, DynamoError> {
        self.replica_with(table_id, key, request, CommitMode::Local).await
    }

    /// [`Node::replica`], a commit handled as `mode` says.
    async fn replica_with(
        &self,
        table_id: &str,
        key: Vec<u8>,
        request: Request,
        mode: CommitMode,
    ) -> Result<Reply, DynamoError> {
        let cluster = self.cluster().ok_or_else(|| DynamoError::internal("not part of a cluster"))?.clone();
        let table = self.table_by_id(table_id)?;
        let consensus = self.consensus_tree(&cluster, &table)?;
        let guard = self.inner.locks.lock(&table, &key).await;
        // The description as it is under the lock (the lock stripe depends on the id only): an
        // index backfill reads each item under its lock and counts on every later commit to
        // keep the new index (`backfill.rs`).
        let table = self.table_by_id(table_id)?;
        let partition = {
            let layout = cluster.layout();
            let partition = layout.partition_of_key(&key);
            if matches!(request, Request::Commit(_)) && !layout.holds(cluster.me, partition) {
                // A late commit (or hint) for a partition this node gave away in a layout change:
                // its data there is being dropped (under this same lock), and the item's replicas
                // have the version.
                return Ok(Reply::Committed);
            }
            partition
        };
        let floors = self.table_floors(&cluster, table_id).map_err(DynamoError::internal)?;
        let part = floors.partition(partition).ok_or_else(|| DynamoError::internal("no such partition"))?;
        // Tombstone collection's floors (`tombstones.rs`): prepares and accepts at or below the
        // promise floor are refused, commits at or below the adopted floor dropped.
        let below_floor = match &request {
            Request::Prepare(ballot) if part.floors().refuses(*ballot) => {
                Some(Reply::Promise(onggi_core::paxos::Promise::Refused(part.floors().refusal())))
            }
            Request::Accept(proposal) | Request::AcceptPromising(proposal, _)
                if part.floors().refuses(proposal.ballot) =>
            {
                Some(Reply::Acceptance(onggi_core::paxos::Acceptance::Refused(part.floors().refusal())))
            }
            _ => None,
        };
        if let Some(refusal) = below_floor {
            return Ok(refusal);
        }
        let commit_gate = match &request {
            Request::Commit(version) => {
                let gate = part.commit_gate().await;
                // A backfill's entry of an old item is no ghost when the view has nothing there.
                let admitted = mode == CommitMode::Backfill
                    && self.inner.engine.get(&table.tree, &key).map_err(storage_error)?.is_none();
                if part.floors().drops(version.ballot) && !admitted {
                    cluster.collector.stats.commits_dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return Ok(Reply::Committed);
                }
                Some(gate)
            }
            _ => None,
        };
        let (mut acceptor, state_present) = match cluster.acceptors.get(table_id, &key) {
            Some(cached) => (cached.acceptor.clone(), cached.present),
            None => {
                let (acceptor, present) = self.load_acceptor(&table, &consensus, &key)?;
                cluster.acceptors.set(table_id, &key, acceptor.clone(), present);
                (acceptor, present)
            }
        };
        let request_next = match request {
            Request::AcceptPromising(_, next) => Some(next),
            _ => None,
        };
        match request {
            Request::Read => Ok(Reply::Knowledge(acceptor.knowledge())),
            Request::Prepare(ballot) => {
                // The clock passes every ballot acted on (catching up tells proposals accepted
                // before a layout change from later ones by it, see `catch_up.rs`).
                self.inner.observe(ballot.time);
                let (promise, changed) = acceptor.prepare(ballot);
                if changed {
                    let part = PartitionRef { floors: floors.clone(), partition };
                    self.persist_state(&cluster, &consensus, table_id, key, acceptor, part, guard).await?;
                }
                Ok(Reply::Promise(promise))
            }
            Request::Accept(proposal) | Request::AcceptPromising(proposal, _) => {
                let (answer, changed) = match request_next {
                    Some(next) => {
                        self.inner.observe(next.time);
                        acceptor.accept_promising(proposal, next)
                    }
                    None => {
                        self.inner.observe(proposal.ballot.time);
                        acceptor.accept(proposal)
                    }
                };
                if changed {
                    let part = PartitionRef { floors: floors.clone(), partition };
                    self.persist_state(&cluster, &consensus, table_id, key, acceptor, part, guard).await?;
                }
                Ok(Reply::Acceptance(answer))
            }
            Request::Commit(version) => {
                let old = acceptor.committed.as_ref().and_then(|committed| committed.value.item.clone());
                let replaced = acceptor.committed.as_ref().map(|committed| committed.ballot);
                let ballot = version.ballot;
                if acceptor.commit(version.clone()) {
                    let live = (PartitionRef { floors: floors.clone(), partition }, replaced);
                    let views = self
                        .write_committed(
                            &cluster,
                            &table,
                            &consensus,
                            key,
                            old,
                            version,
                            acceptor,
                            state_present,
                            (guard, live),
                        )
                        .await?;
                    part.note_commit(ballot);
                    drop(commit_gate);
                    if let Some(delivery) = views
                        && mode == CommitMode::Remote
                    {
                        // The coordinator's reads of global indexes count on it (`views.rs`).
                        let _ = tokio::time::timeout(views::COMMIT_WAIT_MAX, delivery).await;
                    }
                }
                Ok(Reply::Committed)
            }
        }
    }

    /// The item's acceptor, and whether a consensus state entry exists for it.
    fn load_acceptor(
        &self,
        table: &TableHandle,
        consensus: &Tree,
        key: &[u8],
    ) -> Result<(Acceptor<Value>, bool), DynamoError> {
        let unreadable = |error: String| DynamoError::internal(format!("stored consensus data unreadable: {error}"));
        let committed = match self.inner.engine.get(&table.tree, key).map_err(storage_error)? {
            Some(bytes) => {
                let record = Record::decode(&bytes).map_err(|error| unreadable(error.to_string()))?;
                Some(wire::from_record(record))
            }
            None => None,
        };
        let (promised, accepted, present) = match self.inner.engine.get(consensus, key).map_err(storage_error)? {
            Some(bytes) => {
                let state = ConsensusState::decode(&bytes).map_err(|error| unreadable(error.to_string()))?;
                let accepted = state.accepted.map(wire::from_record);
                (state.promised, accepted, true)
            }
            None => (committed.as_ref().map_or(Ballot::ZERO, |version| version.ballot), None, false),
        };
        Ok((Acceptor { promised, accepted, committed }, present))
    }

    fn consensus_state(acceptor: &Acceptor<Value>) -> ConsensusState {
        ConsensusState { promised: acceptor.promised, accepted: acceptor.accepted.as_ref().map(wire::to_record) }
    }

    /// Persists a promise or an accepted proposal, durably, before the answer that depends on it;
    /// the item's lock is released (and its cached state set) when the write is done, even if the
    /// caller stops waiting (`acceptors.rs`).
    #[allow(clippy::too_many_arguments)]
    async fn persist_state(
        &self,
        cluster: &Arc<Cluster>,
        consensus: &Tree,
        table_id: &str,
        key: Vec<u8>,
        acceptor: Acceptor<Value>,
        part: PartitionRef,
        guard: tokio::sync::OwnedMutexGuard<()>,
    ) -> Result<(), DynamoError> {
        let mut batch = WriteBatch::new();
        batch.put(consensus, key.clone(), Self::consensus_state(&acceptor).encode());
        let (cluster, table_id) = (cluster.clone(), table_id.to_string());
        self.commit_batch_then(batch, Durability::Sync, move |written| {
            if written {
                if acceptor.accepted.is_some() {
                    part.get().note_proposal_written();
                }
                cluster.acceptors.set(&table_id, &key, acceptor, true);
            } else {
                cluster.acceptors.forget(&table_id, &key);
            }
            drop(guard);
        })
        .await
    }

    /// Writes a chosen version as the item's record, with its local index entries and its
    /// global indexes' view changes (queued, `views.rs`), and retires the consensus state it
    /// makes redundant, in one batch (not waiting for an fsync: a commit lost in a crash is
    /// recovered from the accepted proposal it would have retired, or from peers). Returns the
    /// delivery of the view changes, when there are some.
    #[allow(clippy::too_many_arguments)]
    async fn write_committed(
        &self,
        cluster: &Arc<Cluster>,
        table: &Arc<TableHandle>,
        consensus: &Tree,
        key: Vec<u8>,
        old: Option<Item>,
        version: Version<Value>,
        acceptor: Acceptor<Value>,
        state_present: bool,
        (guard, (part, replaced)): (tokio::sync::OwnedMutexGuard<()>, (PartitionRef, Option<Ballot>)),
    ) -> Result<Option<tokio::task::JoinHandle<()>>, DynamoError> {
        let mut batch = WriteBatch::new();
        let mut changes = Vec::new();
        let index_deltas = indexing::index_changes(
            table,
            &key,
            old.as_ref(),
            version.value.item.as_ref(),
            version.ballot,
            &mut batch,
            indexing::Globals::Views(&mut changes),
        );
        let queued = cluster.views.queue(&mut batch, &key, changes, false);
        let redundant = acceptor.accepted.is_none() && acceptor.promised <= version.ballot;
        let retained_proposal = acceptor.accepted.is_some();
        if redundant {
            if state_present {
                batch.delete(consensus, key.clone());
            }
        } else {
            batch.put(consensus, key.clone(), Self::consensus_state(&acceptor).encode());
        }
        let old_size = old.as_ref().map(onggi_model::value::item_size_bytes);
        let new_size = version.value.item.as_ref().map(onggi_model::value::item_size_bytes);
        let record = wire::to_record(&version);
        batch.put(&table.tree, key.clone(), record.encode());
        let table = table.clone();
        let ballot = version.ballot;
        let acceptors = cluster.clone();
        let mut acceptor = acceptor;
        if redundant {
            // As a load finds it without a consensus-state entry: promised what it committed.
            acceptor.promised = ballot;
        }
        self.commit_batch_then(batch, Durability::Buffered, move |written| {
            if written {
                // In the completion, so that the tree and the cached state follow every write
                // that lands (`live_trees.rs`, `acceptors.rs`).
                part.get().live.replaced(&key, replaced, ballot);
                if retained_proposal {
                    part.get().note_proposal_written();
                }
                table.account(old_size, new_size);
                for delta in index_deltas {
                    delta.apply(&table);
                }
                acceptors.acceptors.set(&table.schema.id, &key, acceptor, !redundant);
            } else {
                acceptors.acceptors.forget(&table.schema.id, &key);
            }
            drop(guard);
        })
        .await?;
        Ok((!queued.is_empty()).then(|| self.deliver_soon(cluster, queued)))
    }

    async fn commit_batch(
        &self,
        batch: WriteBatch,
        durability: Durability,
        on_success: impl FnOnce() + Send + 'static,
    ) -> Result<(), DynamoError> {
        self.commit_batch_then(batch, durability, move |written| {
            if written {
                on_success();
            }
        })
        .await
    }

    /// Commits `batch`; `on_done` runs in the storage completion, told whether the batch was
    /// written, whether or not the caller still waits.
    pub(crate) async fn commit_batch_then(
        &self,
        batch: WriteBatch,
        durability: Durability,
        on_done: impl FnOnce(bool) + Send + 'static,
    ) -> Result<(), DynamoError> {
        let (sender, receiver) = tokio::sync::oneshot::channel();
        self.inner.engine.commit(
            batch,
            durability,
            Box::new(move |result| {
                on_done(result.is_ok());
                let _ = sender.send(result);
            }),
        );
        receiver.await.unwrap_or(Err(onggi_storage::StorageError::Closed)).map_err(storage_error)
    }

    // ----- coordinator -----

    /// Sends `request` about an item to `replica` (called directly when it is this node).
    async fn ask(
        &self,
        cluster: &Cluster,
        replica: NodeId,
        table_id: &str,
        key: &[u8],
        epoch: u64,
        request: Request,
    ) -> Option<Reply> {
        if replica == cluster.me {
            return self.replica_in_epoch(table_id, key.to_vec(), epoch, request, None).await.ok();
        }
        self.ask_remote(cluster, replica, Bytes::from(wire::encode_request_in(table_id, key, epoch, &request))).await
    }

    /// Sends an encoded consensus request to another replica.
    async fn ask_remote(&self, cluster: &Cluster, replica: NodeId, payload: Bytes) -> Option<Reply> {
        let address = cluster.address(replica)?;
        match cluster.transport.request(address, wire::tag::CONSENSUS, payload, ROUND_TIMEOUT).await {
            Ok(bytes) => wire::decode_reply(&bytes).ok(),
            Err(error) => {
                tracing::debug!(%error, replica = replica.0, "consensus request failed");
                None
            }
        }
    }

    /// Sends `request` (of layout epoch `epoch`) to the item's replicas and feeds the answers to
    /// `on_answer` until it returns a step other than [`Step::Wait`], every replica has answered,
    /// or the round times out. A replica in a newer epoch is noted in `stale` (the newest such
    /// epoch, and who answered it).
    ///
    /// Thrifty: the request goes first to a quorum only (this node and the replicas after it in
    /// the item's preference list, [`first_asked`]), and to the others only when one of those
    /// fails to answer, when they all answered without the step moving on, or after
    /// [`HEDGE_DELAY`]. Which replicas are asked never matters for safety; asking fewer saves a
    /// third of the messages and durable writes of a three-replica item, and asking the same
    /// ones for an item each time keeps the leases their promises make usable.
    #[allow(clippy::too_many_arguments)]
    async fn round(
        &self,
        cluster: &Arc<Cluster>,
        quorums: &Quorums,
        table_id: &str,
        key: &[u8],
        epoch: u64,
        request: Request,
        stale: &mut Option<(u64, NodeId)>,
        mut on_answer: impl FnMut(NodeId, Reply) -> Step<Value>,
    ) -> Step<Value> {
        let (first, mut rest) = first_asked(quorums, cluster.me, |node| cluster.avoids(node));
        // The replicas asked first that have not answered yet: those still silent when the
        // hedge fires, and those that fail, are avoided by the next rounds for a while.
        let mut awaited = first.clone();
        let payload = Bytes::from(wire::encode_request_in(table_id, key, epoch, &request));
        let request = Arc::new(request);
        let mut answers = tokio::task::JoinSet::new();
        let ask = |answers: &mut tokio::task::JoinSet<_>, replicas: Vec<NodeId>| {
            for replica in replicas {
                let (node, cluster, payload, request) =
                    (self.clone(), cluster.clone(), payload.clone(), request.clone());
                let (table_id, key) = (table_id.to_string(), key.to_vec());
                answers.spawn(async move {
                    let reply = if replica == cluster.me {
                        node.replica_in_epoch(&table_id, key, epoch, (*request).clone(), None).await.ok()
                    } else {
                        node.ask_remote(&cluster, replica, payload).await
                    };
                    (replica, reply)
                });
            }
        };
        ask(&mut answers, first);
        let deadline = tokio::time::sleep(ROUND_TIMEOUT);
        tokio::pin!(deadline);
        let hedge = tokio::time::sleep(HEDGE_DELAY);
        tokio::pin!(hedge);
        loop {
            tokio::select! {
                answer = answers.join_next() => match answer {
                    Some(Ok((replica, Some(Reply::Stale(newer))))) => {
                        awaited.retain(|&node| node != replica); // it answered: not a laggard
                        if stale.is_none_or(|(known, _)| newer > known) {
                            *stale = Some((newer, replica));
                        }
                        ask(&mut answers, std::mem::take(&mut rest));
                    }
                    Some(Ok((replica, Some(reply)))) => {
                        awaited.retain(|&node| node != replica);
                        let step = on_answer(replica, reply);
                        if step != Step::Wait {
                            return step;
                        }
                    }
                    Some(failed) => {
                        if let Ok((replica, None)) = failed {
                            awaited.retain(|&node| node != replica);
                            cluster.avoid(replica);
                        }
                        ask(&mut answers, std::mem::take(&mut rest))
                    }
                    None if rest.is_empty() => return Step::Wait,
                    None => ask(&mut answers, std::mem::take(&mut rest)),
                },
                _ = &mut hedge, if !rest.is_empty() => {
                    for &replica in &awaited {
                        cluster.avoid(replica);
                    }
                    ask(&mut answers, std::mem::take(&mut rest))
                }
                _ = &mut deadline => return Step::Wait,
            }
        }
    }

    fn new_ballot(&self, above: Ballot) -> Ballot {
        self.inner.observe(above.time);
        let ballot = self.inner.version();
        debug_assert!(ballot > above);
        ballot
    }

    /// Runs an item operation through per-item consensus (see the module docs). `decide` may run
    /// several times, once per round that reaches the apply step. `origin` marks deletions made
    /// by the Time to Live expirer, as the one-node path does.
    pub(crate) async fn execute_replicated<T>(
        &self,
        cluster: &Arc<Cluster>,
        table: &Arc<TableHandle>,
        key: Vec<u8>,
        read_only: bool,
        origin: WriteOrigin,
        mut decide: impl FnMut(Option<&Item>) -> Result<(Effect, T), DynamoError>,
    ) -> Result<(T, Option<Item>), DynamoError> {
        let table_id = table.schema.id.clone();
        let started = tokio::time::Instant::now();
        let _turn = cluster.coordinating.lock(table, &key).await;
        let layout = cluster.layout();
        let mut epoch = layout.epoch();
        let quorums = layout.quorums(&key);
        drop(layout);
        let mut stale = None;
        let lease = if read_only { None } else { cluster.leases.take(&table_id, &key, epoch) };
        let (mut proposer, mut step) = if read_only {
            (Proposer::read_among(quorums), Step::Wait)
        } else if let Some(lease) = lease {
            Proposer::resume(lease)
        } else {
            let ballot = self.new_ballot(Ballot::ZERO);
            (Proposer::write_among(quorums, ballot), Step::Prepare(ballot))
        };
        if read_only {
            let quorums = proposer.quorums().clone();
            step =
                self.round(cluster, &quorums, &table_id, &key, epoch, Request::Read, &mut stale, |from, reply| {
                    match reply {
                        Reply::Knowledge(knowledge) => proposer.on_read(from, knowledge),
                        _ => Step::Wait,
                    }
                })
                .await;
        }
        let mut decisions: Vec<(Ballot, Result<T, DynamoError>)> = Vec::new();
        loop {
            if started.elapsed() > OPERATION_DEADLINE {
                cluster.consensus_stats.past_deadline.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return Err(self.gave_up(proposer.maybe_applied()));
            }
            // A replica is in a newer layout epoch: learn it, and go on among that epoch's
            // replicas (the proposer keeps what this operation may already have written).
            if let Some((newer, from)) = stale.take()
                && newer > cluster.layout().epoch()
                && let Some(address) = cluster.address(from)
            {
                self.exchange_topology(cluster, address).await;
            }
            let layout = cluster.layout();
            if layout.epoch() > epoch && !matches!(step, Step::Apply(_) | Step::Done(_) | Step::Indeterminate) {
                epoch = layout.epoch();
                let above = match &step {
                    Step::Retry(above) => proposer.ballot().max(*above),
                    _ => proposer.ballot(),
                };
                let ballot = self.new_ballot(above);
                step = proposer.reconfigure(layout.quorums(&key), ballot);
            }
            drop(layout);
            let quorums = proposer.quorums().clone();
            step =
                match step {
                    Step::Wait => {
                        // A round timed out, or every replica answered without a majority (some
                        // with errors): start a new one after a short random pause, so that
                        // replicas failing fast do not make this a busy loop until the deadline.
                        cluster.consensus_stats.timed_out.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let pause = Duration::from_millis(5 + self.inner.random_below(45));
                        tokio::time::sleep(pause).await;
                        let ballot = self.new_ballot(proposer.ballot());
                        proposer.restart(ballot)
                    }
                    Step::Prepare(ballot) => {
                        let request = Request::Prepare(ballot);
                        self.round(cluster, &quorums, &table_id, &key, epoch, request, &mut stale, |from, reply| {
                            match reply {
                                Reply::Promise(promise) => proposer.on_promise(from, ballot, promise),
                                _ => Step::Wait,
                            }
                        })
                        .await
                    }
                    Step::Apply(current) => {
                        let current = current.map(|version| version.value).unwrap_or_default();
                        let mut lineage = current.lineage.with_writer(proposer.ballot(), LINEAGE_WINDOW_MS);
                        // A marked write (`forward.rs`) is applied once, whoever runs it.
                        let applied = match forward::check_mark(&table_id, &key, &current) {
                            forward::MarkCheck::Unmarked => false,
                            forward::MarkCheck::Apply(mark) => {
                                lineage = lineage.with_writer(mark, LINEAGE_WINDOW_MS);
                                false
                            }
                            forward::MarkCheck::AppliedBefore => true,
                            forward::MarkCheck::Unknown => {
                                cluster
                                    .consensus_stats
                                    .indeterminate
                                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                return Err(self.gave_up(true));
                            }
                        };
                        let decided =
                            if applied { Err(forward::applied_before()) } else { decide(current.item.as_ref()) };
                        let (decision, answer) = match decided {
                            Ok((Effect::Put(new), answer)) => {
                                (Decision::Write(Value { item: Some(new), lineage, expired: false }), Ok(answer))
                            }
                            Ok((Effect::Delete, answer)) => (
                                Decision::Write(Value { item: None, lineage, expired: origin == WriteOrigin::Expiry }),
                                Ok(answer),
                            ),
                            Ok((Effect::Keep, answer)) => (Decision::Keep, Ok(answer)),
                            Err(error) => (Decision::Keep, Err(error)),
                        };
                        decisions.push((proposer.ballot(), answer));
                        proposer.decide(decision)
                    }
                    Step::Accept(proposal) => {
                        let ballot = proposal.ballot;
                        let next = self.new_ballot(ballot);
                        let request = Request::AcceptPromising(proposal, next);
                        self.round(cluster, &quorums, &table_id, &key, epoch, request, &mut stale, |from, reply| {
                            match reply {
                                Reply::Acceptance(answer) => proposer.on_accept(from, ballot, answer),
                                _ => Step::Wait,
                            }
                        })
                        .await
                    }
                    Step::Retry(above) => {
                        cluster.consensus_stats.contended.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let backoff = Duration::from_millis(1 + self.inner.random_below(20));
                        tokio::time::sleep(backoff).await;
                        let ballot = self.new_ballot(above.max(proposer.ballot()));
                        proposer.restart(ballot)
                    }
                    Step::Done(outcome) => {
                        if let Some(chosen) = outcome.commit.clone() {
                            self.spread_commit(cluster, quorums.members(), &table_id, &key, epoch, chosen).await;
                        }
                        if let Some(lease) = outcome.lease
                            && epoch == cluster.layout().epoch()
                        {
                            cluster.leases.keep(&table_id, &key, epoch, lease);
                        }
                        let current = outcome.version.and_then(|version| version.value.item);
                        if read_only && outcome.decided_at == Ballot::ZERO {
                            // The one-round-trip read decided nothing: decide now, on the value read.
                            let (_, answer) = decide(current.as_ref())?;
                            return Ok((answer, current));
                        }
                        let position = decisions
                            .iter()
                            .position(|(ballot, _)| *ballot == outcome.decided_at)
                            .ok_or_else(|| DynamoError::internal("consensus finished without its decision"))?;
                        return decisions.swap_remove(position).1.map(|answer| (answer, current));
                    }
                    Step::Indeterminate => {
                        cluster.consensus_stats.indeterminate.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        return Err(self.gave_up(true));
                    }
                };
        }
    }

    fn gave_up(&self, maybe_applied: bool) -> DynamoError {
        if maybe_applied {
            DynamoError::internal(
                "the item's replicas could not confirm the write in time; it may or may not have been applied",
            )
        } else {
            DynamoError::new(
                onggi_model::ErrorKind::Throttling,
                "not enough of the item's replicas are reachable; nothing was written, retry later",
            )
        }
    }

    /// Tells every replica about a chosen version: the local one before answering, the others
    /// without waiting, each by a request whose failure leaves a hint for it (`hints.rs`).
    async fn spread_commit(
        &self,
        cluster: &Arc<Cluster>,
        replicas: &[NodeId],
        table_id: &str,
        key: &[u8],
        epoch: u64,
        chosen: Version<Value>,
    ) {
        let local = replicas.contains(&cluster.me).then(|| Request::Commit(chosen.clone()));
        // A forwarded write's sender gets its commit in the answer (`forward.rs`).
        let diverted = forward::divert_commit(table_id, key, &chosen);
        let replicas: Vec<NodeId> = replicas.iter().copied().filter(|&replica| Some(replica) != diverted).collect();
        let replicas = &replicas[..];
        if replicas.iter().any(|&replica| replica != cluster.me) {
            // The epoch lets a replica that has not heard of a layout change yet learn it first:
            // it may be a new replica of the item, which would otherwise ignore the commit.
            let request = Request::Commit(chosen.clone());
            let payload = Bytes::from(wire::encode_request_in(table_id, key, epoch, &request));
            let chosen = Arc::new(chosen);
            for &replica in replicas.iter().filter(|&&replica| replica != cluster.me) {
                let (node, cluster, payload, chosen) = (self.clone(), cluster.clone(), payload.clone(), chosen.clone());
                let (table_id, key) = (table_id.to_string(), key.to_vec());
                let sent = cluster.sent_commits.start();
                tokio::spawn(async move {
                    node.commit_or_hint(&cluster, replica, &table_id, &key, payload, &chosen).await;
                    cluster.sent_commits.finish(sent);
                });
            }
        }
        if let Some(request) = local
            && let Err(error) = self.replica(table_id, key.to_vec(), request).await
        {
            tracing::warn!(%error, "local commit failed");
        }
    }

    /// Reads an item's committed version from one replica, this node when it is one (an
    /// eventually consistent read).
    pub(crate) async fn read_one_replica(
        &self,
        cluster: &Arc<Cluster>,
        table: &TableHandle,
        key: &[u8],
    ) -> Result<Option<Item>, DynamoError> {
        let replicas = cluster.replicas(key);
        if replicas.contains(&cluster.me) {
            return self.read_current(table, key);
        }
        cluster.sent_commits.settle().await;
        for replica in replicas {
            if let Some(Reply::Knowledge(Knowledge { committed, .. })) =
                self.ask(cluster, replica, &table.schema.id, key, cluster.layout().epoch(), Request::Read).await
            {
                return Ok(committed.and_then(|version| version.value.item));
            }
        }
        Err(self.gave_up(false))
    }

    // ----- tables -----

    /// Tells every other member a table's description after this node created or changed it (best
    /// effort: see the module docs).
    pub(crate) async fn announce_table_schema(&self, schema: &TableSchema) {
        let Some(cluster) = self.cluster() else { return };
        let payload = match serde_json::to_vec(schema) {
            Ok(bytes) => Bytes::from(bytes),
            Err(error) => {
                tracing::error!(%error, "table schema could not be encoded for peers");
                return;
            }
        };
        for peer in cluster.peers() {
            let answer =
                cluster.transport.request(peer, wire::tag::TABLE_CREATED, payload.clone(), ROUND_TIMEOUT).await;
            if let Err(error) = answer {
                tracing::warn!(%error, %peer, table = %schema.name, "peer did not learn of the new table");
            }
        }
    }

    /// Tells every other member about a table this node deleted.
    pub(crate) async fn announce_table_deleted(&self, schema: &TableSchema) {
        let Some(cluster) = self.cluster() else { return };
        let payload = Bytes::from(wire::encode_table_deleted(&schema.id));
        for peer in cluster.peers() {
            let answer =
                cluster.transport.request(peer, wire::tag::TABLE_DELETED, payload.clone(), ROUND_TIMEOUT).await;
            if let Err(error) = answer {
                tracing::warn!(%error, %peer, table = %schema.name, "peer did not learn that the table was deleted");
            }
        }
    }
}

/// The replicas a round asks first, and the others: when the item has one replica set, a
/// majority of it — this node if it is a replica, then the replicas after it in the set's order
/// (the layout's preference list), wrapping around, passing over the replicas this node
/// `suspects` (the failure detector's verdict, `gossip.rs`) while others remain — so that the same
/// coordinator asks the same replicas of an item every time; during a layout change (joint
/// quorums), everyone at once.
fn first_asked(quorums: &Quorums, me: NodeId, suspects: impl Fn(NodeId) -> bool) -> (Vec<NodeId>, Vec<NodeId>) {
    let [set] = quorums.sets() else { return (quorums.members().to_vec(), Vec::new()) };
    let start = set.iter().position(|&node| node == me).unwrap_or(0);
    let (mut order, suspected): (Vec<NodeId>, Vec<NodeId>) =
        set[start..].iter().chain(&set[..start]).copied().partition(|&node| node == me || !suspects(node));
    order.extend(suspected);
    let rest = order.split_off(set.len() / 2 + 1);
    (order, rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(ids: &[u64]) -> Vec<NodeId> {
        ids.iter().copied().map(NodeId).collect()
    }

    /// Suspects no one.
    fn none(_: NodeId) -> bool {
        false
    }

    #[test]
    fn a_round_asks_the_replicas_it_hears_from_first() {
        let three = Quorums::majority_of(nodes(&[4, 7, 9]));
        let seven_down = |node: NodeId| node == NodeId(7);
        assert_eq!(first_asked(&three, NodeId(4), seven_down), (nodes(&[4, 9]), nodes(&[7])));
        let five = Quorums::majority_of(nodes(&[1, 2, 3, 4, 5]));
        let some_down = |node: NodeId| [NodeId(5), NodeId(1)].contains(&node);
        assert_eq!(first_asked(&five, NodeId(4), some_down), (nodes(&[4, 2, 3]), nodes(&[5, 1])));
        // Too many suspected for a majority without them: the suspected complete it, in order.
        let all_down = |_: NodeId| true;
        assert_eq!(first_asked(&five, NodeId(4), all_down), (nodes(&[4, 5, 1]), nodes(&[2, 3])));
        // This node never suspects itself.
        assert_eq!(first_asked(&three, NodeId(9), all_down), (nodes(&[9, 4]), nodes(&[7])));
    }

    #[test]
    fn a_round_asks_a_majority_starting_with_itself_first() {
        let three = Quorums::majority_of(nodes(&[4, 7, 9]));
        assert_eq!(first_asked(&three, NodeId(4), none), (nodes(&[4, 7]), nodes(&[9])));
        assert_eq!(first_asked(&three, NodeId(9), none), (nodes(&[9, 4]), nodes(&[7])));
        // A coordinator that is not a replica starts at the head of the preference list.
        assert_eq!(first_asked(&three, NodeId(1), none), (nodes(&[4, 7]), nodes(&[9])));
        let five = Quorums::majority_of(nodes(&[1, 2, 3, 4, 5]));
        assert_eq!(first_asked(&five, NodeId(4), none), (nodes(&[4, 5, 1]), nodes(&[2, 3])));
        assert_eq!(first_asked(&Quorums::majority_of(nodes(&[3])), NodeId(3), none), (nodes(&[3]), vec![]));
        // During a layout change every replica of either set is asked at once.
        let joint = Quorums::joint(vec![nodes(&[1, 2, 3]), nodes(&[2, 3, 4])]);
        assert_eq!(first_asked(&joint, NodeId(1), none), (nodes(&[1, 2, 3, 4]), vec![]));
    }
}

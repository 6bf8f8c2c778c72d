//! The partition layout: which nodes hold which partitions, version by version.
//!
//! **Partitions.** The token space (the leading `u64` of every storage key, see [`crate::keys`])
//! is cut into a fixed number of equal partitions — a power of two chosen when the cluster is
//! created and never changed. This is the Dynamo paper's strategy 3 (DeCandia et al., SOSP 2007,
//! §6.2: equal-sized partitions placed on nodes, which gave Amazon the best load balance, routing
//! metadata small enough to gossip, and partitions that stream and archive as whole units); Riak's
//! ring works the same way, its size fixed at creation. A token's leading bits name its
//! partition, so a partition is one contiguous token interval, one contiguous range of storage
//! keys, and the unit that anti-entropy compares and that joins and decommissions stream.
//!
//! **Layout.** A [`Layout`] is a plain value: a version, the partition count, the replication
//! factor N, the nodes (a stable id, an optional zone, a capacity weight, active or draining) and
//! the assignment — each partition's replicas. Every node holds the same layout, so any node
//! routes any key without asking another (zero hops, Dynamo §4.8.1). A new version is computed
//! once, from the previous version and a batch of changes ([`Layout::with_change`]), by whoever
//! applies the change, and then travels as data: nodes adopt the highest version, as Garage's
//! nodes do with its layout. The computation is nonetheless a pure function of the previous
//! layout and the changes (no clock, no randomness, node order irrelevant), so it can be checked
//! and replayed anywhere.
//!
//! **Placement** takes two steps.
//! 1. *Quotas.* The `r · P` replica slots (`r = min(N, active nodes)`, `P` partitions) are shared
//!    in proportion to weight, within the placement rules: a node holds a partition at most once
//!    (at most `P` slots); when there are at least `r` failure domains (a zone, or the node itself
//!    when it has none) each domain holds a partition at most once, and with fewer domains every
//!    domain holds every partition at least once — as many distinct zones as possible. The shares
//!    are computed exactly, in integers, by clamped proportional allocation ("water-filling"),
//!    first over zones and then over each zone's nodes, and rounded to whole slots by largest
//!    remainder, preferring nodes that already hold enough, so that rounding avoids moves. A
//!    node's quota is within one slot of its exact share (two when zones are configured).
//! 2. *Assignment.* A minimum-cost flow over the network source → partition → (partition, zone)
//!    → node → sink: each partition sends `r` units, at least `min(r, zones)` of them through
//!    distinct zones; an edge to a node carries one unit (one replica) and costs 0 when that node
//!    held the partition in the previous version, 1 otherwise; a node passes on at most its quota.
//!    A maximum flow meets every quota and rule, and the cheapest one re-places the fewest
//!    replicas possible: when a node joins, it is the only node that receives data; when one
//!    leaves or drains, only its replicas move. The rules can force a few more moves — a node
//!    whose share grows to every partition, or a zone that must appear in every partition,
//!    displaces a peer wherever it is missing — and those are still the fewest possible.
//!
//! The network has the shape of Garage's (deuxfleurs-org/garage, `src/rpc/layout/version.rs`:
//! partition "up" and "down" vertices for the zone-redundancy constraint, then partition-zone
//! and node vertices). Garage treats capacities as absolute sizes, searches by bisection for the
//! largest partition size that fits, and then cancels negative cycles to move closer to the
//! previous assignment; here weights are relative, the quotas follow from them directly, and the
//! flow is solved by successive shortest paths (a Dijkstra search over costs reduced by vertex
//! potentials, then Dinic's blocking flow over the edges of zero reduced cost), which with 0/1
//! costs takes a handful of rounds.
//!
//! Stateless weighted rendezvous hashing (highest random weight) was the alternative: no stored
//! assignment and minimal movement by construction, but its balance is statistical — with 256
//! partitions, N = 3 and 12 nodes, a node's 64 expected slots vary with a standard deviation of
//! about 7, and the most loaded node typically holds 20% more than its share (measured over 200
//! sets of node ids with this module's scores); the zone rule skews it further — whereas Dynamo
//! moved to strategy 3 precisely for balance. Rendezvous scores still break ties: every
//! partition tries nodes in its own score order, so replica sets spread pseudo-randomly over the
//! cluster (a failed node's load is shared by many peers), and [`Layout::replicas`] lists a
//! partition's replicas in that order (the first is the partition's natural coordinator).
//!
//! **Draining.** A draining (decommissioning) node stays in the membership, because it still has
//! data to stream away, but its quota is zero: it receives nothing and every replica it held is
//! placed elsewhere. A layout with fewer active nodes than N places `min(N, active)` replicas.

use std::cmp::Reverse;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use xxhash_rust::xxh3::xxh3_64;

/// The replication factor N when none is chosen: the Dynamo paper's common configuration.
pub const REPLICATION_FACTOR_DEFAULT: usize = 3;
/// The largest replication factor.
pub const REPLICATION_FACTOR_MAX: usize = 7;
/// The largest partition count (a power of two, like every partition count).
pub const PARTITION_COUNT_MAX: u32 = 4096;
/// The most nodes a layout lists, draining ones included. The Dynamo paper reports full-membership
/// gossip working for "a couple of hundreds of nodes" (§6.6).
pub const NODES_MAX: usize = 512;
/// The largest capacity weight of a node (the smallest is 1).
pub const WEIGHT_MAX: u32 = 1 << 20;
/// The longest zone name, in bytes.
pub const ZONE_BYTES_MAX: usize = 128;

const _: () = assert!(PARTITION_COUNT_MAX.is_power_of_two());
const _: () = assert!(REPLICATION_FACTOR_DEFAULT <= REPLICATION_FACTOR_MAX);
// Placement builds one flow edge per (partition, node) pair: keep that graph bounded (at most
// 2^21 such edges, a few tens of megabytes).
const _: () = assert!(PARTITION_COUNT_MAX as usize * NODES_MAX <= 1 << 21);
// Quota arithmetic multiplies a slot count (at most P·N) by a weight sum (at most
// NODES_MAX·WEIGHT_MAX) and by another weight: well inside i128.
const _: () = assert!((PARTITION_COUNT_MAX as u128 * REPLICATION_FACTOR_MAX as u128) < 1 << 16);
const _: () = assert!((NODES_MAX as u128 * WEIGHT_MAX as u128) < 1 << 30);

/// A node's stable identity in the cluster: never reused for another node.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u64);

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node {}", self.0)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A partition: `0..partition_count`, in token order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct PartitionId(pub u32);

impl PartitionId {
    /// The partition's position, for indexing.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Whether a node takes replicas.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum NodeState {
    /// Holds its share of replicas.
    Active,
    /// Decommissioning: listed (it still streams its data away) but holds no replica.
    Draining,
}

/// A member of the cluster as the layout sees it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Node {
    /// Stable identity.
    pub id: NodeId,
    /// Failure domain (rack, data centre, availability zone). Replicas of a partition go to
    /// distinct zones when there are enough; a node without a zone is a domain of its own.
    pub zone: Option<String>,
    /// Relative capacity, `1..=WEIGHT_MAX`: a node of weight 2 holds twice the replicas of a node
    /// of weight 1, as far as the placement rules allow.
    pub weight: u32,
    /// Active or draining.
    pub state: NodeState,
}

impl Node {
    /// An active node of weight 1 without a zone.
    pub fn new(id: NodeId) -> Node {
        Node { id, zone: None, weight: 1, state: NodeState::Active }
    }

    /// The same node in `zone`.
    pub fn in_zone(mut self, zone: &str) -> Node {
        self.zone = Some(zone.to_owned());
        self
    }

    /// The same node with capacity weight `weight`.
    pub fn with_weight(mut self, weight: u32) -> Node {
        self.weight = weight;
        self
    }

    fn is_active(&self) -> bool {
        self.state == NodeState::Active
    }
}

/// One membership change; [`Layout::with_change`] applies a batch of them as one new version, so
/// that, for instance, replacing a node moves data once rather than twice.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Change {
    /// A node joins (in the state it carries, normally active).
    Join(Node),
    /// A node's capacity weight changes.
    SetWeight {
        /// The node.
        node: NodeId,
        /// Its new weight, `1..=WEIGHT_MAX`.
        weight: u32,
    },
    /// A node starts decommissioning: it keeps its place in the membership but gives away every
    /// replica.
    Drain(NodeId),
    /// A draining node takes replicas again.
    Activate(NodeId),
    /// A node leaves the membership (drained and done, or dead and being replaced).
    Remove(NodeId),
}

/// A replica that must be streamed for a new layout version: `to` gains `partition`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Move {
    /// The partition.
    pub partition: PartitionId,
    /// The replica `to` takes over from, which no longer holds the partition in the new version
    /// (a zone-mate when there is one); `None` when the partition gains a replica because the
    /// replica count grew. Any replica of the old version can be the source of the data.
    pub from: Option<NodeId>,
    /// The node that gains the replica.
    pub to: NodeId,
}

/// Why a layout cannot be built.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum LayoutError {
    /// The partition count is not a power of two in `1..=PARTITION_COUNT_MAX`.
    PartitionCount(u32),
    /// The replication factor is not in `1..=REPLICATION_FACTOR_MAX`.
    ReplicationFactor(usize),
    /// A node's weight is not in `1..=WEIGHT_MAX`.
    Weight {
        /// The node.
        node: NodeId,
        /// The refused weight.
        weight: u32,
    },
    /// A node's zone is empty or longer than `ZONE_BYTES_MAX` bytes.
    Zone(NodeId),
    /// A node joins twice, or joins while already a member.
    DuplicateNode(NodeId),
    /// A change names a node that is not a member.
    UnknownNode(NodeId),
    /// More than `NODES_MAX` nodes.
    TooManyNodes(usize),
    /// Every node is draining (or there is none): nothing could hold the data.
    NoActiveNode,
    /// Two layouts with different partition counts cannot be compared.
    PartitionCountMismatch {
        /// The partition count of the older layout.
        old: u32,
        /// The partition count of the newer layout.
        new: u32,
    },
    /// Placement found no assignment meeting the quotas (a bug: one always exists).
    Unplaceable {
        /// Replica slots placed.
        placed: usize,
        /// Replica slots needed.
        needed: usize,
    },
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayoutError::PartitionCount(count) => {
                write!(f, "partition count {count} is not a power of two between 1 and {PARTITION_COUNT_MAX}")
            }
            LayoutError::ReplicationFactor(factor) => {
                write!(f, "replication factor {factor} is not between 1 and {REPLICATION_FACTOR_MAX}")
            }
            LayoutError::Weight { node, weight } => {
                write!(f, "node {node}: weight {weight} is not between 1 and {WEIGHT_MAX}")
            }
            LayoutError::Zone(node) => write!(f, "node {node}: a zone name has 1 to {ZONE_BYTES_MAX} bytes"),
            LayoutError::DuplicateNode(node) => write!(f, "node {node} is already a member"),
            LayoutError::UnknownNode(node) => write!(f, "node {node} is not a member"),
            LayoutError::TooManyNodes(count) => write!(f, "{count} nodes; a layout holds at most {NODES_MAX}"),
            LayoutError::NoActiveNode => write!(f, "a layout needs at least one active node"),
            LayoutError::PartitionCountMismatch { old, new } => {
                write!(f, "layouts of {old} and {new} partitions belong to different clusters")
            }
            LayoutError::Unplaceable { placed, needed } => {
                write!(f, "internal error: placed {placed} of {needed} replicas")
            }
        }
    }
}

impl std::error::Error for LayoutError {}

/// One version of the cluster's partition layout. See the module documentation.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Layout {
    /// Increases by one with every change; the highest version wins.
    version: u64,
    /// `log2(partition count)`: the number of leading token bits that name a partition.
    partition_bits: u32,
    /// N, the configured number of replicas per partition.
    replication_factor: usize,
    /// Every member, active or draining, sorted by id.
    nodes: Vec<Node>,
    /// Replicas actually placed per partition: `min(N, active nodes)`.
    replica_count: usize,
    /// Partition `p`'s replicas are `assignment[p * replica_count..(p + 1) * replica_count]`, in
    /// preference order.
    assignment: Vec<NodeId>,
}

impl Layout {
    /// The first layout (version 1) of a cluster of `partition_count` partitions (a power of two,
    /// e.g. 256 or 1024; never changed afterwards), `replication_factor` replicas per partition
    /// (N; [`REPLICATION_FACTOR_DEFAULT`] is the usual choice) and these nodes, in any order.
    pub fn new(
        partition_count: u32,
        replication_factor: usize,
        nodes: impl IntoIterator<Item = Node>,
    ) -> Result<Layout, LayoutError> {
        if !partition_count.is_power_of_two() || partition_count > PARTITION_COUNT_MAX {
            return Err(LayoutError::PartitionCount(partition_count));
        }
        if replication_factor == 0 || replication_factor > REPLICATION_FACTOR_MAX {
            return Err(LayoutError::ReplicationFactor(replication_factor));
        }
        let mut members = BTreeMap::new();
        for node in nodes {
            if members.contains_key(&node.id) {
                return Err(LayoutError::DuplicateNode(node.id));
            }
            members.insert(node.id, node);
        }
        Layout::place(1, partition_count.trailing_zeros(), replication_factor, members, None)
    }

    /// The next version: this layout with `changes` applied in order, and the replicas re-placed
    /// so that as few as possible move. An empty batch re-places nothing.
    pub fn with_change(&self, changes: &[Change]) -> Result<Layout, LayoutError> {
        let mut members: BTreeMap<NodeId, Node> = self.nodes.iter().map(|node| (node.id, node.clone())).collect();
        for change in changes {
            match change {
                Change::Join(node) => {
                    if members.contains_key(&node.id) {
                        return Err(LayoutError::DuplicateNode(node.id));
                    }
                    members.insert(node.id, node.clone());
                }
                Change::SetWeight { node, weight } => {
                    members.get_mut(node).ok_or(LayoutError::UnknownNode(*node))?.weight = *weight;
                }
                Change::Drain(node) => {
                    members.get_mut(node).ok_or(LayoutError::UnknownNode(*node))?.state = NodeState::Draining;
                }
                Change::Activate(node) => {
                    members.get_mut(node).ok_or(LayoutError::UnknownNode(*node))?.state = NodeState::Active;
                }
                Change::Remove(node) => {
                    members.remove(node).ok_or(LayoutError::UnknownNode(*node))?;
                }
            }
        }
        Layout::place(self.version + 1, self.partition_bits, self.replication_factor, members, Some(self))
    }

    /// The layout's version.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The number of partitions, a power of two.
    pub fn partition_count(&self) -> u32 {
        1 << self.partition_bits
    }

    /// N, the configured number of replicas per partition.
    pub fn replication_factor(&self) -> usize {
        self.replication_factor
    }

    /// Replicas per partition in this version: `min(N, active nodes)`.
    pub fn replica_count(&self) -> usize {
        self.replica_count
    }

    /// Every member, active or draining, sorted by id.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The member `id`, if it is one.
    pub fn node(&self, id: NodeId) -> Option<&Node> {
        self.nodes.binary_search_by_key(&id, |node| node.id).ok().map(|index| &self.nodes[index])
    }

    /// The partition holding `token`: the token's leading bits.
    pub fn partition_of_token(&self, token: u64) -> PartitionId {
        // A shift by 64 (a single partition) is not defined on u64, hence checked_shr.
        PartitionId(token.checked_shr(64 - self.partition_bits).unwrap_or(0) as u32)
    }

    /// The partition holding a storage key (see [`crate::keys`]), read from its token prefix.
    pub fn partition_of_key(&self, storage_key: &[u8]) -> PartitionId {
        let mut token = [0u8; crate::keys::TOKEN_BYTES];
        let length = storage_key.len().min(crate::keys::TOKEN_BYTES);
        token[..length].copy_from_slice(&storage_key[..length]);
        self.partition_of_token(u64::from_be_bytes(token))
    }

    /// The first and last tokens of `partition`, both inclusive. Partitions tile the token space
    /// in order, with no gap and no overlap.
    ///
    /// # Panics
    /// If `partition` is not below the partition count.
    pub fn partition_range(&self, partition: PartitionId) -> (u64, u64) {
        assert!(partition.0 < self.partition_count(), "{partition:?} of {} partitions", self.partition_count());
        let shift = 64 - self.partition_bits;
        let first = u64::from(partition.0).checked_shl(shift).unwrap_or(0);
        let span_minus_one = 1u64.checked_shl(shift).map_or(u64::MAX, |span| span - 1);
        (first, first | span_minus_one)
    }

    /// The replicas of `partition`: `replica_count()` distinct active nodes in distinct zones
    /// when there are enough zones, in preference order (the first is the natural coordinator).
    ///
    /// # Panics
    /// If `partition` is not below the partition count.
    pub fn replicas(&self, partition: PartitionId) -> &[NodeId] {
        let start = partition.index() * self.replica_count;
        &self.assignment[start..start + self.replica_count]
    }

    /// The partitions `node` holds a replica of, in order.
    pub fn partitions_of(&self, node: NodeId) -> impl Iterator<Item = PartitionId> + '_ {
        (0..self.partition_count()).map(PartitionId).filter(move |&partition| self.replicas(partition).contains(&node))
    }

    /// Validates `members` and computes the assignment; `previous` is the version being changed.
    fn place(
        version: u64,
        partition_bits: u32,
        replication_factor: usize,
        members: BTreeMap<NodeId, Node>,
        previous: Option<&Layout>,
    ) -> Result<Layout, LayoutError> {
        if members.len() > NODES_MAX {
            return Err(LayoutError::TooManyNodes(members.len()));
        }
        for node in members.values() {
            if node.weight == 0 || node.weight > WEIGHT_MAX {
                return Err(LayoutError::Weight { node: node.id, weight: node.weight });
            }
            if node.zone.as_ref().is_some_and(|zone| zone.is_empty() || zone.len() > ZONE_BYTES_MAX) {
                return Err(LayoutError::Zone(node.id));
            }
        }
        let nodes: Vec<Node> = members.into_values().collect();
        let active: Vec<&Node> = nodes.iter().filter(|node| node.is_active()).collect();
        if active.is_empty() {
            return Err(LayoutError::NoActiveNode);
        }
        let partition_count = 1usize << partition_bits;
        let replica_count = replication_factor.min(active.len());
        let seed = version;
        let assignment = assign(partition_count, replica_count, &active, previous, seed)?;
        debug_assert_eq!(assignment.len(), partition_count * replica_count);
        Ok(Layout { version, partition_bits, replication_factor, nodes, replica_count, assignment })
    }
}

/// The streaming work that takes the cluster from `old` to `new`: one [`Move`] per replica that
/// a node gains, in partition order. Replicas that disappear without a successor (the replica
/// count fell) need no streaming and are not listed.
pub fn diff(old: &Layout, new: &Layout) -> Result<Vec<Move>, LayoutError> {
    if old.partition_bits != new.partition_bits {
        return Err(LayoutError::PartitionCountMismatch { old: old.partition_count(), new: new.partition_count() });
    }
    let zone_in = |layout: &Layout, id: NodeId| layout.node(id).and_then(|node| node.zone.clone());
    let mut moves = Vec::new();
    for partition in (0..new.partition_count()).map(PartitionId) {
        let before = old.replicas(partition);
        let after = new.replicas(partition);
        let mut losses: Vec<NodeId> = before.iter().copied().filter(|node| !after.contains(node)).collect();
        for &to in after.iter().filter(|node| !before.contains(node)) {
            // Name the zone-mate the new replica replaces when there is one, else any loser.
            let zone = zone_in(new, to);
            let same_zone = losses.iter().position(|&lost| zone.is_some() && zone_in(old, lost) == zone);
            let position = same_zone.or(if losses.is_empty() { None } else { Some(0) });
            moves.push(Move { partition, from: position.map(|index| losses.remove(index)), to });
        }
    }
    Ok(moves)
}

/// A failure domain: a zone, or a node without one.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Domain<'a> {
    Zone(&'a str),
    Alone(NodeId),
}

impl<'a> Domain<'a> {
    fn of(node: &'a Node) -> Domain<'a> {
        node.zone.as_deref().map_or(Domain::Alone(node.id), Domain::Zone)
    }
}

/// The rendezvous score of `node` for `partition`: each partition's own pseudo-random order of
/// the nodes, used to break ties between equally good placements.
fn preference(partition: usize, node: NodeId) -> u64 {
    let mut bytes = [0u8; 12];
    bytes[..4].copy_from_slice(&(partition as u32).to_be_bytes());
    bytes[4..].copy_from_slice(&node.0.to_be_bytes());
    xxh3_64(&bytes)
}

/// Places `replica_count` replicas of each partition on the `active` nodes (sorted by id). See
/// the module documentation; `seed` only orders the partitions for tie-breaking.
fn assign(
    partition_count: usize,
    replica_count: usize,
    active: &[&Node],
    previous: Option<&Layout>,
    seed: u64,
) -> Result<Vec<NodeId>, LayoutError> {
    debug_assert!(active.windows(2).all(|pair| pair[0].id < pair[1].id));
    debug_assert!(replica_count >= 1 && replica_count <= active.len());
    let slots_total = replica_count * partition_count;

    // What each active node held before: the zero-cost edges, and the counts rounding prefers.
    // `held_before[partition * active.len() + index]`.
    let mut held_before = vec![false; partition_count * active.len()];
    let mut previous_count = vec![0u64; active.len()];
    if let Some(previous) = previous {
        debug_assert_eq!(previous.partition_count() as usize, partition_count);
        for partition in 0..partition_count {
            for id in previous.replicas(PartitionId(partition as u32)) {
                if let Ok(index) = active.binary_search_by_key(id, |node| node.id) {
                    held_before[partition * active.len() + index] = true;
                    previous_count[index] += 1;
                }
            }
        }
    }

    // Failure domains and the zone-spread rule.
    let mut domains: BTreeMap<Domain, Vec<usize>> = BTreeMap::new();
    for (index, node) in active.iter().enumerate() {
        domains.entry(Domain::of(node)).or_default().push(index);
    }
    let domain_members: Vec<Vec<usize>> = domains.into_values().collect();
    let domain_count = domain_members.len();
    // Each partition spans `zone_spread` distinct domains; its other replicas may share them.
    let zone_spread = replica_count.min(domain_count);
    let shared_replicas = replica_count - zone_spread;
    let partition_slots = partition_count as u64;

    // Step 1: quotas, zones first, then the nodes of each zone.
    let domain_shares: Vec<Share> = domain_members
        .iter()
        .map(|members| Share {
            weight: members.iter().map(|&index| u64::from(active[index].weight)).sum(),
            low: if domain_count <= replica_count { partition_slots } else { 0 },
            high: (shared_replicas + 1).min(members.len()) as u64 * partition_slots,
            previous: members.iter().map(|&index| previous_count[index]).sum(),
        })
        .collect();
    let domain_quota = apportion(slots_total as u64, &domain_shares);
    let mut quota = vec![0u64; active.len()];
    for (members, &budget) in domain_members.iter().zip(&domain_quota) {
        let shares: Vec<Share> = members
            .iter()
            .map(|&index| Share {
                weight: u64::from(active[index].weight),
                low: 0,
                high: partition_slots,
                previous: previous_count[index],
            })
            .collect();
        for (&index, node_quota) in members.iter().zip(apportion(budget, &shares)) {
            quota[index] = node_quota;
        }
    }
    debug_assert_eq!(quota.iter().sum::<u64>(), slots_total as u64);
    debug_assert!(quota.iter().all(|&slots| slots <= partition_slots));

    // Step 2: the flow network. Vertices: source, sink, one per node, then per partition an "up"
    // vertex (the replicas that must be in distinct domains), a "down" vertex (the others, when
    // there are fewer domains than replicas) and one vertex per domain.
    const SOURCE: usize = 0;
    const SINK: usize = 1;
    let node_vertex = |index: usize| 2 + index;
    let mut network = FlowNetwork::new(2 + active.len());
    // Sink edges first, so that searches from a node try the sink before rerouting.
    for (index, &slots) in quota.iter().enumerate() {
        network.add_edge(node_vertex(index), SINK, slots as i64, 0);
    }
    let mut placements: Vec<(usize, usize, usize)> = Vec::with_capacity(partition_count * active.len());
    let mut partition_order: Vec<usize> = (0..partition_count).collect();
    partition_order.sort_by_cached_key(|&partition| (preference(partition, NodeId(seed)), partition));
    let mut scores = vec![0u64; active.len()];
    let mut domain_order: Vec<(Reverse<u64>, usize)> = Vec::with_capacity(domain_count);
    let mut members: Vec<(Reverse<u64>, usize)> = Vec::with_capacity(active.len());
    for &partition in &partition_order {
        for (score, node) in scores.iter_mut().zip(active) {
            *score = preference(partition, node.id);
        }
        // Domains in the order of their best node's score, nodes in score order.
        domain_order.clear();
        domain_order.extend(
            domain_members.iter().enumerate().map(|(domain, members)| {
                (Reverse(members.iter().map(|&index| scores[index]).max().unwrap_or(0)), domain)
            }),
        );
        domain_order.sort_unstable();
        let up = network.add_vertex();
        network.add_edge(SOURCE, up, zone_spread as i64, 0);
        let down = (shared_replicas > 0).then(|| {
            let down = network.add_vertex();
            network.add_edge(SOURCE, down, shared_replicas as i64, 0);
            down
        });
        for &(_, domain) in &domain_order {
            // A domain vertex limits what reaches a domain; a lone node in a domain needs none
            // when every replica comes through the up vertex (its edge carries at most 1).
            let domain_vertex = if down.is_none() && domain_members[domain].len() == 1 {
                up
            } else {
                let domain_vertex = network.add_vertex();
                network.add_edge(up, domain_vertex, 1, 0);
                if let Some(down) = down {
                    network.add_edge(down, domain_vertex, shared_replicas as i64, 0);
                }
                domain_vertex
            };
            members.clear();
            members.extend(domain_members[domain].iter().map(|&index| (Reverse(scores[index]), index)));
            members.sort_unstable();
            for &(_, index) in &members {
                let cost = if held_before[partition * active.len() + index] { 0 } else { 1 };
                let edge = network.add_edge(domain_vertex, node_vertex(index), 1, cost);
                placements.push((partition, index, edge));
            }
        }
    }
    let placed = network.min_cost_max_flow(SOURCE, SINK) as usize;
    if placed != slots_total {
        debug_assert!(false, "placed {placed} of {slots_total} replicas");
        return Err(LayoutError::Unplaceable { placed, needed: slots_total });
    }

    // Read the replicas off the saturated node edges, each partition's in preference order.
    let mut replicas: Vec<Vec<NodeId>> = vec![Vec::with_capacity(replica_count); partition_count];
    for &(partition, index, edge) in &placements {
        if network.is_saturated(edge) {
            replicas[partition].push(active[index].id);
        }
    }
    let mut assignment = Vec::with_capacity(slots_total);
    for (partition, mut nodes) in replicas.into_iter().enumerate() {
        if nodes.len() != replica_count {
            debug_assert!(false, "partition {partition} got {} replicas", nodes.len());
            return Err(LayoutError::Unplaceable { placed, needed: slots_total });
        }
        nodes.sort_by_key(|&node| (Reverse(preference(partition, node)), node));
        assignment.extend(nodes);
    }
    Ok(assignment)
}

/// One claimant in a proportional allocation.
#[derive(Clone, Copy, Debug)]
struct Share {
    /// Relative weight, at least 1.
    weight: u64,
    /// Fewest units it may get.
    low: u64,
    /// Most units it may get.
    high: u64,
    /// Units it held before, which rounding prefers not to exceed.
    previous: u64,
}

/// Splits `budget` whole units among `shares` in proportion to weight, each kept within its
/// bounds: the exact share is `clamp(λ · weight, low, high)` with the one λ that makes them sum
/// to `budget`, and each result is that share rounded down or up (largest remainders first,
/// but first those that held at least the rounded-up amount before, so rounding moves nothing).
/// Requires `sum(low) <= budget <= sum(high)`.
fn apportion(budget: u64, shares: &[Share]) -> Vec<u64> {
    debug_assert!(shares.iter().map(|share| share.low).sum::<u64>() <= budget);
    debug_assert!(shares.iter().map(|share| share.high).sum::<u64>() >= budget);
    debug_assert!(shares.iter().all(|share| share.weight >= 1 && share.low <= share.high));
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Bound {
        Free,
        Low,
        High,
    }
    let mut bound = vec![Bound::Free; shares.len()];
    // The free shares' total weight, and the units left for them once bounded shares are served.
    let free_and_rest = |bound: &[Bound]| {
        let mut free_weight = 0i128;
        let mut rest = budget as i128;
        for (share, bound) in shares.iter().zip(bound) {
            match bound {
                Bound::Free => free_weight += share.weight as i128,
                Bound::Low => rest -= share.low as i128,
                Bound::High => rest -= share.high as i128,
            }
        }
        (free_weight, rest)
    };
    // Each pass fixes at least one share at a bound that the solution also has it at: if the
    // shares above their high bound exceed by more than those below their low bound fall short,
    // the true λ is larger than the current one and the high ones stay high (and conversely).
    for _ in 0..=shares.len() {
        let (free_weight, rest) = free_and_rest(&bound);
        if free_weight == 0 {
            break;
        }
        debug_assert!(rest >= 0);
        // A free share's exact amount is rest · weight / free_weight; compare numerators.
        let mut excess = 0i128;
        let mut shortfall = 0i128;
        for (share, bound) in shares.iter().zip(&bound) {
            let scaled = rest * share.weight as i128;
            if *bound == Bound::Free && scaled > share.high as i128 * free_weight {
                excess += scaled - share.high as i128 * free_weight;
            } else if *bound == Bound::Free && scaled < share.low as i128 * free_weight {
                shortfall += share.low as i128 * free_weight - scaled;
            }
        }
        if excess == 0 && shortfall == 0 {
            break;
        }
        for (share, bound) in shares.iter().zip(bound.iter_mut()) {
            let scaled = rest * share.weight as i128;
            if *bound == Bound::Free && excess >= shortfall && scaled > share.high as i128 * free_weight {
                *bound = Bound::High;
            } else if *bound == Bound::Free && shortfall >= excess && scaled < share.low as i128 * free_weight {
                *bound = Bound::Low;
            }
        }
    }
    let (free_weight, rest) = free_and_rest(&bound);
    let mut units = Vec::with_capacity(shares.len());
    let mut remainders = Vec::new();
    for (index, (share, bound)) in shares.iter().zip(&bound).enumerate() {
        match bound {
            Bound::Low => units.push(share.low),
            Bound::High => units.push(share.high),
            Bound::Free => {
                let scaled = rest * share.weight as i128;
                let floor = (scaled / free_weight) as u64;
                debug_assert!(floor >= share.low && floor <= share.high);
                units.push(floor);
                if scaled % free_weight > 0 {
                    remainders.push((index, scaled % free_weight));
                }
            }
        }
    }
    let extra = budget - units.iter().sum::<u64>();
    debug_assert!(extra as usize <= remainders.len());
    remainders.sort_by_key(|&(index, remainder)| {
        let needs_data = shares[index].previous <= units[index];
        (needs_data, Reverse(remainder), index)
    });
    for &(index, _) in remainders.iter().take(extra as usize) {
        units[index] += 1;
    }
    debug_assert_eq!(units.iter().sum::<u64>(), budget);
    units
}

/// A flow network with integer capacities and costs, solved for a maximum flow of least cost.
struct FlowNetwork {
    /// Number of vertices.
    vertex_count: usize,
    /// Each edge's head. Edge `e ^ 1` is the residual reverse of edge `e`, so `target[e ^ 1]` is
    /// edge `e`'s tail.
    target: Vec<usize>,
    /// Each edge's remaining capacity.
    residual: Vec<i64>,
    /// Each edge's cost per unit (the reverse edge has the opposite cost).
    cost: Vec<i64>,
    /// Edge ids grouped by tail, each group in insertion order (searches try them in this order):
    /// vertex `v`'s edges are `outgoing[first_outgoing[v]..first_outgoing[v + 1]]`. Built once
    /// all edges are in, by [`FlowNetwork::index`].
    outgoing: Vec<usize>,
    /// Offsets into `outgoing`, one per vertex plus one.
    first_outgoing: Vec<usize>,
}

impl FlowNetwork {
    fn new(vertex_count: usize) -> FlowNetwork {
        FlowNetwork {
            vertex_count,
            target: Vec::new(),
            residual: Vec::new(),
            cost: Vec::new(),
            outgoing: Vec::new(),
            first_outgoing: Vec::new(),
        }
    }

    fn add_vertex(&mut self) -> usize {
        self.vertex_count += 1;
        self.vertex_count - 1
    }

    /// Adds an edge and its reverse; returns the edge's id.
    fn add_edge(&mut self, from: usize, to: usize, capacity: i64, cost: i64) -> usize {
        debug_assert!(capacity >= 0 && from < self.vertex_count && to < self.vertex_count);
        debug_assert!(self.outgoing.is_empty(), "edges are added before the network is solved");
        let edge = self.target.len();
        self.target.extend([to, from]);
        self.residual.extend([capacity, 0]);
        self.cost.extend([cost, -cost]);
        edge
    }

    /// Groups the edges by tail (a counting sort, stable, so insertion order is kept).
    fn index(&mut self) {
        let mut first_outgoing = vec![0usize; self.vertex_count + 1];
        for edge in 0..self.target.len() {
            first_outgoing[self.target[edge ^ 1] + 1] += 1;
        }
        for vertex in 0..self.vertex_count {
            first_outgoing[vertex + 1] += first_outgoing[vertex];
        }
        let mut next = first_outgoing.clone();
        let mut outgoing = vec![0usize; self.target.len()];
        for edge in 0..self.target.len() {
            let tail = self.target[edge ^ 1];
            outgoing[next[tail]] = edge;
            next[tail] += 1;
        }
        self.outgoing = outgoing;
        self.first_outgoing = first_outgoing;
    }

    fn edges_from(&self, vertex: usize) -> &[usize] {
        &self.outgoing[self.first_outgoing[vertex]..self.first_outgoing[vertex + 1]]
    }

    /// Whether every unit of the edge's capacity carries flow.
    fn is_saturated(&self, edge: usize) -> bool {
        self.residual[edge] == 0
    }

    /// Sends as much flow as possible from `source` to `sink` at the least total cost, by
    /// successive shortest paths: a shortest-distance search on costs reduced by vertex
    /// potentials, then a blocking-flow max flow (Dinic) along every path of that length at once.
    /// Costs must be non-negative. Returns the flow.
    fn min_cost_max_flow(&mut self, source: usize, sink: usize) -> i64 {
        debug_assert!(self.cost.iter().step_by(2).all(|&cost| cost >= 0));
        self.index();
        // Zero potentials are valid while every cost is non-negative, and the zero-cost paths
        // are the shortest if there are any: start with them, without a search.
        let mut potential = vec![0i64; self.vertex_count];
        let mut flow = self.admissible_max_flow(source, sink, &potential);
        // The shortest distance grows by at least one per round and never exceeds the number of
        // vertices (unit costs along a simple path), which bounds the rounds.
        for _ in 0..=self.vertex_count {
            let distance = self.distances(source, sink, &potential);
            let sink_distance = distance[sink];
            if sink_distance == i64::MAX {
                return flow;
            }
            // Keeps every residual edge's reduced cost non-negative and makes it zero along
            // every shortest path.
            for (potential, &distance) in potential.iter_mut().zip(&distance) {
                *potential += distance.min(sink_distance);
            }
            flow += self.admissible_max_flow(source, sink, &potential);
        }
        debug_assert!(false, "min-cost flow did not finish");
        flow
    }

    fn reduced_cost(&self, edge: usize, from: usize, potential: &[i64]) -> i64 {
        self.cost[edge] + potential[from] - potential[self.target[edge]]
    }

    /// Shortest distances from `source` by reduced cost, exact up to the sink's; farther
    /// vertices hold at least the sink's distance (or `i64::MAX`). Distances are small integers,
    /// so the queue is an array of buckets, one per distance (Dial's algorithm).
    fn distances(&self, source: usize, sink: usize, potential: &[i64]) -> Vec<i64> {
        let mut distance = vec![i64::MAX; self.vertex_count];
        let mut buckets: Vec<Vec<usize>> = vec![vec![source]];
        distance[source] = 0;
        let mut current = 0;
        while current < buckets.len() {
            while let Some(vertex) = buckets[current].pop() {
                if distance[vertex] != current as i64 {
                    continue;
                }
                if vertex == sink {
                    return distance;
                }
                for &edge in self.edges_from(vertex) {
                    if self.residual[edge] == 0 {
                        continue;
                    }
                    let reduced = self.reduced_cost(edge, vertex, potential);
                    debug_assert!(reduced >= 0, "negative reduced cost {reduced}");
                    let to = self.target[edge];
                    let candidate = current as i64 + reduced;
                    if candidate < distance[to] {
                        distance[to] = candidate;
                        let bucket = candidate as usize;
                        if bucket >= buckets.len() {
                            buckets.resize_with(bucket + 1, Vec::new);
                        }
                        buckets[bucket].push(to);
                    }
                }
            }
            current += 1;
        }
        distance
    }

    /// A maximum flow using only residual edges of zero reduced cost (Dinic's algorithm).
    fn admissible_max_flow(&mut self, source: usize, sink: usize, potential: &[i64]) -> i64 {
        const UNREACHED: usize = usize::MAX;
        let mut total = 0;
        let mut level = vec![UNREACHED; self.vertex_count];
        // Per vertex, the position in `outgoing` of the next edge to try (Dinic's current arc).
        let mut next_edge = vec![0usize; self.vertex_count];
        let mut path: Vec<usize> = Vec::new();
        let mut frontier = VecDeque::new();
        // Each phase saturates every shortest admissible path, so the sink's level grows; it
        // cannot exceed the number of vertices.
        for _ in 0..=self.vertex_count {
            level.fill(UNREACHED);
            level[source] = 0;
            frontier.push_back(source);
            while let Some(vertex) = frontier.pop_front() {
                for &edge in self.edges_from(vertex) {
                    let to = self.target[edge];
                    if self.residual[edge] > 0
                        && level[to] == UNREACHED
                        && self.reduced_cost(edge, vertex, potential) == 0
                    {
                        level[to] = level[vertex] + 1;
                        frontier.push_back(to);
                    }
                }
            }
            if level[sink] == UNREACHED {
                return total;
            }
            next_edge.copy_from_slice(&self.first_outgoing[..self.vertex_count]);
            // Depth-first search along the level graph, without recursion (paths can be long).
            let mut vertex = source;
            loop {
                if vertex == sink {
                    let bottleneck = path.iter().map(|&edge| self.residual[edge]).min().unwrap_or(0);
                    debug_assert!(bottleneck > 0);
                    for &edge in &path {
                        self.residual[edge] -= bottleneck;
                        self.residual[edge ^ 1] += bottleneck;
                    }
                    total += bottleneck;
                    path.clear();
                    vertex = source;
                    continue;
                }
                let mut advanced = false;
                while next_edge[vertex] < self.first_outgoing[vertex + 1] {
                    let edge = self.outgoing[next_edge[vertex]];
                    let to = self.target[edge];
                    if self.residual[edge] > 0
                        && level[to] == level[vertex] + 1
                        && self.reduced_cost(edge, vertex, potential) == 0
                    {
                        path.push(edge);
                        vertex = to;
                        advanced = true;
                        break;
                    }
                    next_edge[vertex] += 1;
                }
                if advanced {
                    continue;
                }
                if vertex == source {
                    break;
                }
                // A dead end: no path to the sink goes through this vertex in this phase.
                level[vertex] = UNREACHED;
                let edge = path.pop().expect("a vertex other than the source was reached by an edge");
                vertex = self.target[edge ^ 1];
                next_edge[vertex] += 1;
            }
        }
        debug_assert!(false, "max flow did not finish");
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// SplitMix64: a small seeded generator, so every run sees the same clusters.
    struct Generator(u64);

    impl Generator {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut mixed = self.0;
            mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            mixed ^ (mixed >> 31)
        }

        /// A number in `low..=high`.
        fn between(&mut self, low: u64, high: u64) -> u64 {
            low + self.next() % (high - low + 1)
        }
    }

    /// A random cluster of `count` active nodes: weights 1..=`weight_max`; with `zones` > 0,
    /// every node in one of that many zones (so that each zone has a node, the first ones go
    /// round).
    fn cluster(generator: &mut Generator, count: usize, weight_max: u32, zones: usize) -> Vec<Node> {
        (0..count)
            .map(|index| {
                let node = Node::new(NodeId(1000 + generator.next() % 1_000_000 * 16 + index as u64))
                    .with_weight(generator.between(1, u64::from(weight_max)) as u32);
                match zones {
                    0 => node,
                    _ if index < zones => node.in_zone(&format!("zone-{index}")),
                    _ => node.in_zone(&format!("zone-{}", generator.next() as usize % zones)),
                }
            })
            .collect()
    }

    fn counts(layout: &Layout) -> BTreeMap<NodeId, usize> {
        let mut counts: BTreeMap<NodeId, usize> = layout.nodes().iter().map(|node| (node.id, 0)).collect();
        for partition in (0..layout.partition_count()).map(PartitionId) {
            for node in layout.replicas(partition) {
                *counts.get_mut(node).unwrap() += 1;
            }
        }
        counts
    }

    fn domain_of(layout: &Layout, id: NodeId) -> String {
        let node = layout.node(id).unwrap();
        node.zone.clone().unwrap_or_else(|| format!("alone-{}", node.id))
    }

    /// The placement rules every layout keeps.
    fn check_rules(layout: &Layout) {
        let active: Vec<&Node> = layout.nodes().iter().filter(|node| node.is_active()).collect();
        let replica_count = layout.replication_factor().min(active.len());
        assert_eq!(layout.replica_count(), replica_count);
        let domains: BTreeSet<String> = active.iter().map(|node| domain_of(layout, node.id)).collect();
        for partition in (0..layout.partition_count()).map(PartitionId) {
            let replicas = layout.replicas(partition);
            assert_eq!(replicas.len(), replica_count);
            let distinct: BTreeSet<NodeId> = replicas.iter().copied().collect();
            assert_eq!(distinct.len(), replica_count, "{partition:?}: {replicas:?}");
            assert!(replicas.iter().all(|&id| layout.node(id).is_some_and(Node::is_active)));
            let zones: BTreeSet<String> = replicas.iter().map(|&id| domain_of(layout, id)).collect();
            assert_eq!(zones.len(), replica_count.min(domains.len()), "{partition:?}: zones {zones:?}");
        }
    }

    /// Each active node's exact share of the replica slots, computed independently of
    /// `apportion` (floating point, bisection on λ), zones first, then nodes.
    fn ideal_shares(layout: &Layout) -> BTreeMap<NodeId, f64> {
        fn clamped_proportional(budget: f64, items: &[(f64, f64, f64)]) -> Vec<f64> {
            let total = |lambda: f64| items.iter().map(|&(w, low, high)| (lambda * w).clamp(low, high)).sum::<f64>();
            let (mut low, mut high) = (0.0, 1.0);
            while total(high) < budget {
                high *= 2.0;
            }
            for _ in 0..200 {
                let middle = (low + high) / 2.0;
                if total(middle) < budget { low = middle } else { high = middle }
            }
            items.iter().map(|&(w, low_bound, high_bound)| (high * w).clamp(low_bound, high_bound)).collect()
        }
        let partitions = f64::from(layout.partition_count());
        let replica_count = layout.replica_count();
        let mut zones: BTreeMap<String, Vec<&Node>> = BTreeMap::new();
        for node in layout.nodes().iter().filter(|node| node.is_active()) {
            zones.entry(domain_of(layout, node.id)).or_default().push(node);
        }
        let spread = replica_count.min(zones.len());
        let items: Vec<(f64, f64, f64)> = zones
            .values()
            .map(|members| {
                let weight = members.iter().map(|node| f64::from(node.weight)).sum();
                let low = if zones.len() <= replica_count { partitions } else { 0.0 };
                let high = (replica_count - spread + 1).min(members.len()) as f64 * partitions;
                (weight, low, high)
            })
            .collect();
        let zone_shares = clamped_proportional(replica_count as f64 * partitions, &items);
        let mut shares = BTreeMap::new();
        for (members, zone_share) in zones.values().zip(zone_shares) {
            let items: Vec<(f64, f64, f64)> =
                members.iter().map(|node| (f64::from(node.weight), 0.0, partitions)).collect();
            for (node, share) in members.iter().zip(clamped_proportional(zone_share, &items)) {
                shares.insert(node.id, share);
            }
        }
        shares
    }

    #[test]
    fn partitions_tile_the_token_space() {
        let mut generator = Generator(7);
        for partition_count in [1u32, 2, 256, 1024, PARTITION_COUNT_MAX] {
            let layout = Layout::new(partition_count, 3, [Node::new(NodeId(1))]).unwrap();
            assert_eq!(layout.partition_count(), partition_count);
            assert_eq!(layout.partition_range(PartitionId(0)).0, 0);
            assert_eq!(layout.partition_range(PartitionId(partition_count - 1)).1, u64::MAX);
            let mut next_first = 0u64;
            for partition in (0..partition_count).map(PartitionId) {
                let (first, last) = layout.partition_range(partition);
                assert_eq!(first, next_first, "{partition:?} starts where the previous one ended");
                assert!(first <= last);
                assert_eq!(last - first, u64::MAX / u64::from(partition_count), "equal partitions");
                assert_eq!(layout.partition_of_token(first), partition);
                assert_eq!(layout.partition_of_token(last), partition);
                next_first = last.wrapping_add(1);
            }
            for _ in 0..1000 {
                let token = generator.next();
                let partition = layout.partition_of_token(token);
                let (first, last) = layout.partition_range(partition);
                assert!(first <= token && token <= last);
                assert_eq!(layout.partition_of_key(&token.to_be_bytes()), partition);
            }
        }
        // A storage key's partition is its token's.
        let layout = Layout::new(256, 3, [Node::new(NodeId(1))]).unwrap();
        let key = crate::keys::item_key(&onggi_model::AttributeValue::S("order-17".into()), None);
        let token = crate::keys::token(&onggi_model::AttributeValue::S("order-17".into()));
        assert_eq!(layout.partition_of_key(&key), layout.partition_of_token(token));
        assert_eq!(layout.partition_of_token(token).0, (token >> 56) as u32);
    }

    #[test]
    fn every_partition_has_distinct_replicas_in_distinct_zones() {
        let mut generator = Generator(11);
        for _ in 0..60 {
            let count = generator.between(1, 12) as usize;
            let zones = match generator.next() % 3 {
                0 => 0,
                _ => generator.between(1, count as u64) as usize,
            };
            let replication_factor = generator.between(1, 5) as usize;
            let mut nodes = cluster(&mut generator, count, 4, zones);
            if generator.next().is_multiple_of(4) {
                // Zoned and zoneless nodes mixed: a zoneless node is its own domain.
                nodes[0].zone = None;
            }
            let layout = Layout::new(64, replication_factor, nodes).unwrap();
            check_rules(&layout);
            assert_eq!(layout.replica_count(), replication_factor.min(count));
        }
    }

    #[test]
    fn shares_follow_weights() {
        let mut generator = Generator(13);
        let (mut deviation_max, mut relative_max) = (0.0f64, 0.0f64);
        for round in 0..40 {
            let count = generator.between(5, 12) as usize;
            let zones = if round % 2 == 0 { 0 } else { generator.between(3, 5) as usize };
            let layout = Layout::new(256, 3, cluster(&mut generator, count, 3, zones)).unwrap();
            check_rules(&layout);
            let counts = counts(&layout);
            let tolerance = if zones == 0 { 1.0 } else { 2.0 };
            for (node, share) in ideal_shares(&layout) {
                let deviation = (counts[&node] as f64 - share).abs();
                assert!(deviation < tolerance + 1e-9, "{node:?}: {} slots for a share of {share:.2}", counts[&node]);
                deviation_max = deviation_max.max(deviation);
                relative_max = relative_max.max(deviation / share);
            }
        }
        // Equal weights, no zones: shares differ by at most one slot.
        for count in 5..=12 {
            let layout = Layout::new(256, 3, (1..=count).map(|id| Node::new(NodeId(id)))).unwrap();
            let counts = counts(&layout);
            let (low, high) = (counts.values().min().unwrap(), counts.values().max().unwrap());
            assert!(high - low <= 1, "{count} nodes: {low}..={high}");
        }
        eprintln!("balance: at most {deviation_max:.2} slots ({:.1}%) from a node's exact share", relative_max * 100.0);
    }

    #[test]
    fn a_joining_node_is_the_only_one_that_receives() {
        let mut generator = Generator(17);
        let mut ratio_max = 0.0f64;
        for round in 0..32 {
            let count = generator.between(5, 12) as usize;
            let zones = if round % 2 == 0 { 0 } else { generator.between(3, 5) as usize };
            let weight_max = if round % 4 < 2 { 1 } else { 3 };
            let before = Layout::new(256, 3, cluster(&mut generator, count, weight_max, zones)).unwrap();
            let mut joining = Node::new(NodeId(7)).with_weight(generator.between(1, u64::from(weight_max)) as u32);
            if zones > 0 {
                joining = joining.in_zone(&format!("zone-{}", generator.between(0, zones as u64)));
            }
            let after = before.with_change(&[Change::Join(joining.clone())]).unwrap();
            check_rules(&after);
            assert_eq!(after.version(), before.version() + 1);
            let moves = diff(&before, &after).unwrap();
            assert!(moves.iter().all(|step| step.to == joining.id && step.from.is_some()), "{moves:?}");
            let received = counts(&after)[&joining.id];
            assert_eq!(moves.len(), received);
            let share = ideal_shares(&after)[&joining.id];
            assert!((received as f64) < share + 1.0, "received {received} for a share of {share:.2}");
            if zones == 0 {
                // N·P·w/W: the joining node's weight share of the slots, the least any placement moves.
                let weight_total: u32 = after.nodes().iter().map(|node| node.weight).sum();
                let bound = 3.0 * 256.0 * f64::from(joining.weight) / f64::from(weight_total);
                ratio_max = ratio_max.max(moves.len() as f64 / bound);
                assert!(moves.len() as f64 <= bound + 1.0, "{} moves for {bound:.1}", moves.len());
            }
        }
        eprintln!("join: moves at most {ratio_max:.3} × N·P·w/W, all to the joining node");
    }

    /// The fewest replicas any placement with `after`'s per-node counts streams: what each node
    /// holds beyond what it held before.
    fn movement_floor(before: &Layout, after: &Layout) -> usize {
        let (before, after) = (counts(before), counts(after));
        after.iter().map(|(node, &count)| count.saturating_sub(before.get(node).copied().unwrap_or(0))).sum()
    }

    #[test]
    fn a_leaving_or_draining_node_is_the_only_one_that_gives() {
        let mut generator = Generator(19);
        let (mut floor_total, mut moves_total) = (0, 0);
        for round in 0..32 {
            let count = generator.between(5, 12) as usize;
            let zones = if round % 2 == 0 { 0 } else { generator.between(2, 4) as usize };
            let before = Layout::new(256, 3, cluster(&mut generator, count, 3, zones)).unwrap();
            let leaving = before.nodes()[generator.next() as usize % count].id;
            let held = counts(&before)[&leaving];
            let change = if round % 4 < 2 { Change::Remove(leaving) } else { Change::Drain(leaving) };
            let after = before.with_change(std::slice::from_ref(&change)).unwrap();
            check_rules(&after);
            let moves = diff(&before, &after).unwrap();
            assert_eq!(moves.iter().filter(|step| step.from == Some(leaving)).count(), held, "{change:?}");
            assert_eq!(after.partitions_of(leaving).count(), 0);
            assert_eq!(after.node(leaving).is_some(), matches!(change, Change::Drain(_)));
            // A node that must now hold every partition (capped by the one-replica-per-node
            // rule) or the zone rule can force a few more moves: where the node is missing from a
            // partition the leaving one did not hold, it displaces another replica. Those moves
            // are still the fewest possible (`moves_are_the_fewest_possible`).
            let capped = counts(&after).values().any(|&count| count == 256);
            if zones == 0 && !capped {
                assert_eq!(moves.len(), held, "{change:?}: {moves:?}");
            } else {
                floor_total += movement_floor(&before, &after);
                moves_total += moves.len();
            }
            // Activating the drained node again sends data only to it.
            if let Change::Drain(node) = change {
                let back = after.with_change(&[Change::Activate(node)]).unwrap();
                check_rules(&back);
                if zones == 0 && !capped {
                    assert!(diff(&after, &back).unwrap().iter().all(|step| step.to == node));
                }
            }
        }
        eprintln!("leave, zoned or capped: {moves_total} moves where node counts alone force {floor_total}");
    }

    #[test]
    fn a_weight_change_moves_data_to_or_from_that_node_only() {
        let mut generator = Generator(23);
        let (mut floor_total, mut moves_total) = (0, 0);
        for round in 0..24 {
            let count = generator.between(5, 12) as usize;
            let zones = if round % 2 == 0 { 0 } else { generator.between(3, 5) as usize };
            let before = Layout::new(256, 3, cluster(&mut generator, count, 3, zones)).unwrap();
            let node = before.nodes()[generator.next() as usize % count].clone();
            let weight = if round % 4 < 2 { node.weight + 2 } else { 1 };
            let after = before.with_change(&[Change::SetWeight { node: node.id, weight }]).unwrap();
            check_rules(&after);
            let moves = diff(&before, &after).unwrap();
            let capped = counts(&after).values().any(|&count| count == 256);
            if zones == 0 && !capped && weight > node.weight {
                assert!(moves.iter().all(|step| step.to == node.id), "{moves:?}");
            } else if zones == 0 && !capped {
                assert!(moves.iter().all(|step| step.from == Some(node.id)), "{moves:?}");
            } else {
                floor_total += movement_floor(&before, &after);
                moves_total += moves.len();
            }
        }
        eprintln!("reweight, zoned or capped: {moves_total} moves where node counts alone force {floor_total}");
    }

    /// Every layout change moves the fewest replicas that any placement meeting the new
    /// per-node counts and the rules could: checked against an exhaustive search on small
    /// clusters, zones included.
    #[test]
    fn moves_are_the_fewest_possible() {
        /// The fewest pairs (partition, node) not in `before` over every assignment of `after`'s
        /// size, counts and rules; a depth-first search over partitions.
        fn fewest_moves(before: &Layout, after: &Layout) -> usize {
            let active: Vec<&Node> = after.nodes().iter().filter(|node| node.is_active()).collect();
            let replica_count = after.replica_count();
            let domains: BTreeSet<String> = active.iter().map(|node| domain_of(after, node.id)).collect();
            let spread = replica_count.min(domains.len());
            let all = counts(after);
            let mut remaining: Vec<usize> = active.iter().map(|node| all[&node.id]).collect();
            // Every replica set allowed by the zone rule, as indices into `active`.
            let mut sets = Vec::new();
            for mask in 0u32..(1 << active.len()) {
                if mask.count_ones() as usize != replica_count {
                    continue;
                }
                let members: Vec<usize> = (0..active.len()).filter(|&index| mask & (1 << index) != 0).collect();
                let zones: BTreeSet<String> = members.iter().map(|&index| domain_of(after, active[index].id)).collect();
                if zones.len() == spread {
                    sets.push(members);
                }
            }
            fn search(
                partition: u32,
                before: &Layout,
                active: &[&Node],
                sets: &[Vec<usize>],
                remaining: &mut [usize],
                cost: usize,
                best: &mut usize,
            ) {
                if cost >= *best {
                    return;
                }
                if partition == before.partition_count() {
                    *best = cost;
                    return;
                }
                for set in sets {
                    if set.iter().any(|&index| remaining[index] == 0) {
                        continue;
                    }
                    let held = before.replicas(PartitionId(partition));
                    let added = set.iter().filter(|&&index| !held.contains(&active[index].id)).count();
                    set.iter().for_each(|&index| remaining[index] -= 1);
                    search(partition + 1, before, active, sets, remaining, cost + added, best);
                    set.iter().for_each(|&index| remaining[index] += 1);
                }
            }
            let mut best = usize::MAX;
            search(0, before, &active, &sets, &mut remaining, 0, &mut best);
            best
        }
        let mut generator = Generator(31);
        for round in 0..160 {
            let count = generator.between(3, 6) as usize;
            let zones = generator.between(0, 3) as usize;
            let replication_factor = generator.between(2, 3) as usize;
            let before = Layout::new(4, replication_factor, cluster(&mut generator, count, 3, zones)).unwrap();
            let victim = before.nodes()[generator.next() as usize % count].id;
            let change = match round % 4 {
                0 => Change::Join(Node::new(NodeId(9)).in_zone(&format!("zone-{}", generator.between(0, 3)))),
                1 => Change::Remove(victim),
                2 => Change::Drain(victim),
                _ => Change::SetWeight { node: victim, weight: generator.between(1, 4) as u32 },
            };
            let Ok(after) = before.with_change(std::slice::from_ref(&change)) else { continue };
            check_rules(&after);
            let moves = diff(&before, &after).unwrap();
            assert_eq!(moves.len(), fewest_moves(&before, &after), "{change:?}");
        }
    }

    #[test]
    fn a_cluster_grows_from_one_node_to_many() {
        let mut layout = Layout::new(256, REPLICATION_FACTOR_DEFAULT, [Node::new(NodeId(1))]).unwrap();
        assert!(layout.replicas(PartitionId(0)) == [NodeId(1)]);
        for id in 2..=8 {
            let next = layout.with_change(&[Change::Join(Node::new(NodeId(id)))]).unwrap();
            check_rules(&next);
            let moves = diff(&layout, &next).unwrap();
            assert!(moves.iter().all(|step| step.to == NodeId(id)));
            // Below N nodes every partition gains a replica (nothing is given up); from then on
            // every new replica replaces one.
            let growing = next.replica_count() > layout.replica_count();
            assert!(moves.iter().all(|step| step.from.is_none() == growing), "{id}: {moves:?}");
            assert_eq!(moves.len(), counts(&next)[&NodeId(id)]);
            layout = next;
        }
        assert_eq!(layout.replica_count(), 3);
        // Shrinking below N drops replicas without streaming anything.
        let mut small = Layout::new(16, 3, (1..=3).map(|id| Node::new(NodeId(id)))).unwrap();
        small = small.with_change(&[Change::Drain(NodeId(3))]).unwrap();
        assert_eq!(small.replica_count(), 2);
        check_rules(&small);
    }

    #[test]
    fn same_inputs_give_the_same_layout() {
        let mut generator = Generator(29);
        for _ in 0..10 {
            let (count, zones) = (generator.between(3, 10) as usize, generator.between(0, 3) as usize);
            let nodes = cluster(&mut generator, count, 3, zones);
            let mut shuffled = nodes.clone();
            for index in (1..shuffled.len()).rev() {
                shuffled.swap(index, generator.next() as usize % (index + 1));
            }
            let layout = Layout::new(128, 3, nodes).unwrap();
            assert_eq!(layout, Layout::new(128, 3, shuffled).unwrap());
            let (first, second) = (Node::new(NodeId(5)).with_weight(2), Node::new(NodeId(6)));
            let joined = layout.with_change(&[Change::Join(first.clone()), Change::Join(second.clone())]).unwrap();
            assert_eq!(joined, layout.with_change(&[Change::Join(second), Change::Join(first)]).unwrap());
            check_rules(&joined);
            // A version without changes re-places nothing.
            let unchanged = layout.with_change(&[]).unwrap();
            assert_eq!(unchanged.version(), layout.version() + 1);
            assert_eq!(unchanged.assignment, layout.assignment);
            assert!(diff(&layout, &unchanged).unwrap().is_empty());
        }
    }

    #[test]
    fn a_thousand_partitions_on_twelve_nodes() {
        let nodes: Vec<Node> =
            (1..=12).map(|id| Node::new(NodeId(id)).in_zone(["a", "b", "c", "d"][id as usize % 4])).collect();
        let layout = Layout::new(1024, 3, nodes).unwrap();
        check_rules(&layout);
        let counts = counts(&layout);
        assert!(counts.values().all(|&count| count == 256), "{counts:?}");
        let replaced =
            layout.with_change(&[Change::Remove(NodeId(4)), Change::Join(Node::new(NodeId(40)).in_zone("a"))]);
        let replaced = replaced.unwrap();
        check_rules(&replaced);
        let moves = diff(&layout, &replaced).unwrap();
        // A replacement in the same zone takes over exactly the old node's replicas.
        assert_eq!(moves.len(), 256);
        assert!(moves.iter().all(|step| step.from == Some(NodeId(4)) && step.to == NodeId(40)));
        assert!(layout.partitions_of(NodeId(4)).eq(replaced.partitions_of(NodeId(40))));
    }

    #[test]
    fn replica_sets_spread_over_the_cluster() {
        // A node's partitions are replicated on many different peers, so that when it fails its
        // load is shared, not thrown on two neighbours.
        let layout = Layout::new(256, 3, (1..=10).map(|id| Node::new(NodeId(id)))).unwrap();
        let peers: BTreeSet<NodeId> = layout
            .partitions_of(NodeId(1))
            .flat_map(|partition| layout.replicas(partition).to_vec())
            .filter(|&node| node != NodeId(1))
            .collect();
        assert_eq!(peers.len(), 9);
        let sets: BTreeSet<Vec<NodeId>> = (0..256)
            .map(|partition| {
                let mut set = layout.replicas(PartitionId(partition)).to_vec();
                set.sort();
                set
            })
            .collect();
        assert!(sets.len() > 60, "only {} distinct replica sets", sets.len());
        // The first replica (the natural coordinator) is spread too.
        let mut first = BTreeMap::<NodeId, usize>::new();
        for partition in 0..256 {
            *first.entry(layout.replicas(PartitionId(partition))[0]).or_default() += 1;
        }
        assert!(first.values().all(|&count| count >= 10), "{first:?}");
    }

    #[test]
    fn invalid_layouts_and_changes_are_refused() {
        let three = || (1..=3).map(|id| Node::new(NodeId(id)));
        assert_eq!(Layout::new(100, 3, three()), Err(LayoutError::PartitionCount(100)));
        assert_eq!(Layout::new(0, 3, three()), Err(LayoutError::PartitionCount(0)));
        assert_eq!(Layout::new(8192, 3, three()), Err(LayoutError::PartitionCount(8192)));
        assert_eq!(Layout::new(256, 0, three()), Err(LayoutError::ReplicationFactor(0)));
        assert_eq!(Layout::new(256, 3, []), Err(LayoutError::NoActiveNode));
        assert_eq!(
            Layout::new(256, 3, [Node::new(NodeId(1)), Node::new(NodeId(1))]),
            Err(LayoutError::DuplicateNode(NodeId(1)))
        );
        assert_eq!(
            Layout::new(256, 3, [Node::new(NodeId(1)).with_weight(0)]),
            Err(LayoutError::Weight { node: NodeId(1), weight: 0 })
        );
        assert_eq!(Layout::new(256, 3, [Node::new(NodeId(1)).in_zone("")]), Err(LayoutError::Zone(NodeId(1))));
        let layout = Layout::new(256, 3, three()).unwrap();
        assert_eq!(layout.with_change(&[Change::Remove(NodeId(9))]), Err(LayoutError::UnknownNode(NodeId(9))));
        assert_eq!(
            layout.with_change(&[Change::Join(Node::new(NodeId(2)))]),
            Err(LayoutError::DuplicateNode(NodeId(2)))
        );
        let all_draining: Vec<Change> = (1..=3).map(|id| Change::Drain(NodeId(id))).collect();
        assert_eq!(layout.with_change(&all_draining), Err(LayoutError::NoActiveNode));
        let other = Layout::new(128, 3, three()).unwrap();
        assert_eq!(diff(&layout, &other), Err(LayoutError::PartitionCountMismatch { old: 256, new: 128 }));
        assert_eq!(
            LayoutError::PartitionCount(100).to_string(),
            "partition count 100 is not a power of two between 1 and 4096"
        );
    }

    #[test]
    fn apportion_keeps_bounds_and_sums() {
        let share = |weight, low, high, previous| Share { weight, low, high, previous };
        // Capped: the heavy one is clamped and the rest split the remainder.
        assert_eq!(apportion(30, &[share(10, 0, 10, 0), share(1, 0, 10, 0), share(1, 0, 10, 0)]), [10, 10, 10]);
        // Raised to a lower bound.
        assert_eq!(apportion(30, &[share(1, 10, 20, 0), share(9, 10, 20, 0)]), [10, 20]);
        // Rounding prefers a share that already holds the rounded-up amount.
        assert_eq!(apportion(10, &[share(1, 0, 10, 0), share(1, 0, 10, 0), share(1, 0, 10, 4)]), [3, 3, 4]);
        assert_eq!(apportion(10, &[share(1, 0, 10, 4), share(1, 0, 10, 0), share(1, 0, 10, 0)]), [4, 3, 3]);
        assert_eq!(apportion(0, &[share(1, 0, 10, 4)]), [0]);
    }
}

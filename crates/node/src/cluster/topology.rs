//! The cluster's layout as this node knows it: which layout epoch it is in, the layouts of that
//! epoch, the members' addresses, and — while the layout changes — which new replicas have caught
//! up.
//!
//! **Epochs** follow the protocol the simulator checks (`onggi-sim`, `world.rs`): epoch `2c` is
//! the layout after `c` changes, alone; epoch `2c + 1` is change `c + 1` in progress, in which an
//! item's quorums are a majority of its old replica set *and* of its new one
//! ([`Quorums::joint`]). Every read, prepare and accept carries its coordinator's epoch; a
//! replica in a newer epoch answers `Reply::Stale` and the coordinator continues in the newer
//! epoch, and a replica in an older epoch first learns the newer topology from the sender.
//!
//! **History, not snapshots.** A layout is a pure function of the one before it and a batch of
//! changes (`onggi_core::layout`), so the topology travels and is stored as its history — the
//! first layout's members and every batch of changes since — and each node replays it. Nodes
//! thus hold identical layouts without a layout encoding of their own.
//!
//! The topology is persisted (`cluster` tree, key `topology`, JSON) whenever this node adopts a
//! newer epoch, before it acts in it, so a replica that refused an older epoch's messages keeps
//! refusing them after a restart.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::ops::Deref;

use std::sync::Arc;

use bytes::Bytes;
use onggi_core::layout::{Change, Layout, Node as Member, NodeId, NodeState, PartitionId};
use onggi_core::paxos::Quorums;
use onggi_storage::{Durability, WriteBatch};
use serde::{Deserialize, Serialize};

use super::Cluster;
use super::wire::{self, Reply, Request};
use crate::Node;

/// The name of the storage tree of this node's cluster state.
pub(crate) const CLUSTER_TREE: &str = "cluster";
/// The key of the persisted topology in [`CLUSTER_TREE`].
pub(crate) const TOPOLOGY_KEY: &[u8] = b"topology";

/// A member as stored and sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MemberRecord {
    pub(crate) id: u64,
    #[serde(default)]
    pub(crate) zone: Option<String>,
    pub(crate) weight: u32,
    #[serde(default)]
    pub(crate) draining: bool,
}

impl MemberRecord {
    fn to_member(&self) -> Member {
        let mut member = Member::new(NodeId(self.id)).with_weight(self.weight);
        member.zone = self.zone.clone();
        if self.draining {
            member.state = NodeState::Draining;
        }
        member
    }

    pub(crate) fn active(id: u64) -> MemberRecord {
        MemberRecord { id, zone: None, weight: 1, draining: false }
    }
}

/// One change as stored and sent (see [`Change`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum ChangeRecord {
    Join(MemberRecord),
    Drain(u64),
    Activate(u64),
    Remove(u64),
}

impl ChangeRecord {
    fn to_change(&self) -> Change {
        match self {
            ChangeRecord::Join(member) => Change::Join(member.to_member()),
            ChangeRecord::Drain(id) => Change::Drain(NodeId(*id)),
            ChangeRecord::Activate(id) => Change::Activate(NodeId(*id)),
            ChangeRecord::Remove(id) => Change::Remove(NodeId(*id)),
        }
    }
}

/// The topology as stored and sent: everything a node needs to rebuild it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TopologyRecord {
    pub(crate) epoch: u64,
    pub(crate) partitions: u32,
    pub(crate) replication: usize,
    pub(crate) initial: Vec<MemberRecord>,
    /// Every batch of changes started, in order: `epoch / 2` completed ones, and while the epoch
    /// is odd one more, in progress.
    pub(crate) changes: Vec<Vec<ChangeRecord>>,
    pub(crate) addresses: BTreeMap<u64, SocketAddr>,
    /// During a change: per moved partition, the new replicas known to have caught up.
    #[serde(default)]
    pub(crate) caught_up: BTreeMap<u32, BTreeSet<u64>>,
}

/// The topology, rebuilt: see the module docs.
#[derive(Clone, Debug)]
pub(crate) struct Topology {
    record: TopologyRecord,
    /// The layout of the epoch, or the old one while a change is in progress.
    current: Layout,
    /// The new layout while a change is in progress.
    next: Option<Layout>,
    /// Partitions whose replica sets the change in progress moves.
    moved: Vec<PartitionId>,
}

impl Deref for Topology {
    type Target = Layout;

    /// The layout every node's data is complete on: the epoch's, or the old one during a change
    /// (new replicas are still catching up). Range reads and eventually consistent reads use it.
    fn deref(&self) -> &Layout {
        &self.current
    }
}

fn same_set(a: &[NodeId], b: &[NodeId]) -> bool {
    a.len() == b.len() && a.iter().all(|node| b.contains(node))
}

impl Topology {
    /// Rebuilds a topology from its record, checking that the record is consistent.
    pub(crate) fn from_record(record: TopologyRecord) -> Result<Topology, String> {
        let completed = (record.epoch / 2) as usize;
        let changing = record.epoch % 2 == 1;
        if record.changes.len() != completed + usize::from(changing) {
            return Err(format!(
                "topology of epoch {} lists {} changes, expected {}",
                record.epoch,
                record.changes.len(),
                completed + usize::from(changing)
            ));
        }
        let mut layout =
            Layout::new(record.partitions, record.replication, record.initial.iter().map(MemberRecord::to_member))
                .map_err(|error| format!("first layout: {error}"))?;
        for batch in &record.changes[..completed] {
            let changes: Vec<Change> = batch.iter().map(ChangeRecord::to_change).collect();
            layout = layout.with_change(&changes).map_err(|error| format!("layout change: {error}"))?;
        }
        let next = match record.changes.get(completed) {
            Some(batch) if changing => {
                let changes: Vec<Change> = batch.iter().map(ChangeRecord::to_change).collect();
                Some(layout.with_change(&changes).map_err(|error| format!("layout change: {error}"))?)
            }
            _ => None,
        };
        // Every member needs an address, except one being removed (drained: it holds nothing).
        let target = next.as_ref().unwrap_or(&layout);
        let holding = layout.nodes().iter().filter(|member| layout.partitions_of(member.id).next().is_some());
        for member in target.nodes().iter().chain(holding) {
            if !record.addresses.contains_key(&member.id.0) {
                return Err(format!("no address for member {}", member.id));
            }
        }
        let moved = match &next {
            None => Vec::new(),
            Some(next) => (0..layout.partition_count())
                .map(PartitionId)
                .filter(|&partition| !same_set(layout.replicas(partition), next.replicas(partition)))
                .collect(),
        };
        Ok(Topology { record, current: layout, next, moved })
    }

    /// The first topology of a cluster of these members, in these zones (by id, where given).
    pub(crate) fn initial(
        partitions: u32,
        replication: usize,
        members: &[(u64, SocketAddr)],
        zones: &BTreeMap<u64, String>,
    ) -> Result<Topology, String> {
        // N is kept even while the cluster has fewer members (a cluster of one has one replica
        // per partition): each partition gains replicas as members join, up to N.
        Topology::from_record(TopologyRecord {
            epoch: 0,
            partitions,
            replication,
            initial: members
                .iter()
                .map(|(id, _)| MemberRecord { zone: zones.get(id).cloned(), ..MemberRecord::active(*id) })
                .collect(),
            changes: Vec::new(),
            addresses: members.iter().copied().collect(),
            caught_up: BTreeMap::new(),
        })
    }

    pub(crate) fn record(&self) -> &TopologyRecord {
        &self.record
    }

    /// Whether `node` was removed from the membership by a completed change (decommissioned,
    /// then removed; or replaced): it left for good, and its id is never used again.
    pub(crate) fn removed(&self, node: NodeId) -> bool {
        let completed = (self.record.epoch / 2) as usize;
        self.record.changes[..completed.min(self.record.changes.len())]
            .iter()
            .flatten()
            .any(|change| matches!(change, ChangeRecord::Remove(id) if *id == node.0))
    }

    /// The epoch (see the module docs).
    pub(crate) fn epoch(&self) -> u64 {
        self.record.epoch
    }

    /// Whether a layout change is in progress.
    pub(crate) fn changing(&self) -> bool {
        self.next.is_some()
    }

    /// The new layout of the change in progress.
    pub(crate) fn next(&self) -> Option<&Layout> {
        self.next.as_ref()
    }

    /// The layout once the change in progress (if any) is over.
    pub(crate) fn target(&self) -> &Layout {
        self.next.as_ref().unwrap_or(&self.current)
    }

    /// The partitions the change in progress moves.
    pub(crate) fn moved(&self) -> &[PartitionId] {
        &self.moved
    }

    /// The replica sets of `partition` whose majorities make its quorums in this epoch.
    pub(crate) fn sets(&self, partition: PartitionId) -> Vec<Vec<NodeId>> {
        let old = self.current.replicas(partition).to_vec();
        match &self.next {
            Some(next) if !same_set(&old, next.replicas(partition)) => vec![old, next.replicas(partition).to_vec()],
            _ => vec![old],
        }
    }

    /// The quorums of the item at storage key `key`.
    pub(crate) fn quorums(&self, key: &[u8]) -> Quorums {
        Quorums::joint(self.sets(self.current.partition_of_key(key)))
    }

    /// Every replica of `partition` in this epoch (old and new ones during a change).
    pub(crate) fn replicas_now(&self, partition: PartitionId) -> Vec<NodeId> {
        let mut replicas: Vec<NodeId> = Vec::new();
        for node in self.sets(partition).into_iter().flatten() {
            if !replicas.contains(&node) {
                replicas.push(node);
            }
        }
        replicas
    }

    /// Whether `node` replicates `partition` in this epoch.
    pub(crate) fn holds(&self, node: NodeId, partition: PartitionId) -> bool {
        self.current.replicas(partition).contains(&node)
            || self.next.as_ref().is_some_and(|next| next.replicas(partition).contains(&node))
    }

    /// The partitions `node` replicates in this epoch.
    pub(crate) fn held_by(&self, node: NodeId) -> Vec<PartitionId> {
        (0..self.current.partition_count()).map(PartitionId).filter(|&p| self.holds(node, p)).collect()
    }

    /// A member's cluster address.
    pub(crate) fn address(&self, node: NodeId) -> Option<SocketAddr> {
        self.record.addresses.get(&node.0).copied()
    }

    /// Every known member and its address (old and new layouts' members).
    pub(crate) fn addresses(&self) -> impl Iterator<Item = (NodeId, SocketAddr)> + '_ {
        self.record.addresses.iter().map(|(id, address)| (NodeId(*id), *address))
    }

    /// The new replicas of `partition` known to have caught up.
    pub(crate) fn caught_up(&self, partition: PartitionId) -> BTreeSet<NodeId> {
        self.record
            .caught_up
            .get(&partition.0)
            .map(|nodes| nodes.iter().map(|id| NodeId(*id)).collect())
            .unwrap_or_default()
    }

    /// Whether a majority of every moved partition's new replicas caught up: the change can end.
    pub(crate) fn change_complete(&self) -> bool {
        let Some(next) = &self.next else { return false };
        self.moved.iter().all(|&partition| {
            let new = next.replicas(partition);
            let caught_up = self.caught_up(partition);
            new.iter().filter(|node| caught_up.contains(node)).count() > new.len() / 2
        })
    }

    /// This topology with `changes` started (the next odd epoch). Refused during a change.
    pub(crate) fn start_change(
        &self,
        changes: Vec<ChangeRecord>,
        new_addresses: &[(u64, SocketAddr)],
    ) -> Result<Topology, String> {
        if self.changing() {
            return Err("a layout change is already in progress; wait for it to finish".into());
        }
        if changes.is_empty() {
            return Err("no change given".into());
        }
        for change in &changes {
            if let ChangeRecord::Remove(id) = change {
                let node = NodeId(*id);
                let drained = self.current.node(node).is_some_and(|member| member.state == NodeState::Draining);
                if !drained || self.current.partitions_of(node).next().is_some() {
                    return Err(format!("node {id} can be removed only once it is drained (decommission it first)"));
                }
            }
        }
        let mut record = self.record.clone();
        record.epoch += 1;
        record.caught_up.clear();
        for change in &changes {
            if let ChangeRecord::Remove(id) = change {
                record.addresses.remove(id);
            }
        }
        record.changes.push(changes);
        for (id, address) in new_addresses {
            record.addresses.insert(*id, *address);
        }
        let topology = Topology::from_record(record)?;
        if topology.moved.is_empty() {
            // Nothing moves (e.g. a weight change that re-places nothing): the change is over.
            return topology.finish_change();
        }
        Ok(topology)
    }

    /// This topology with the change in progress finished (the next even epoch).
    pub(crate) fn finish_change(&self) -> Result<Topology, String> {
        let mut record = self.record.clone();
        if record.epoch.is_multiple_of(2) {
            return Err("no layout change is in progress".into());
        }
        record.epoch += 1;
        record.caught_up.clear();
        Topology::from_record(record)
    }

    /// Merges what a peer knows: returns the newer topology, if the peer's is newer or adds
    /// caught-up replicas to the same change. A peer whose history disagrees with this node's
    /// (two changes started at once on different nodes) is refused with the reason.
    pub(crate) fn merged_with(&self, theirs: &TopologyRecord) -> Result<Option<Topology>, String> {
        let common = self.record.changes.len().min(theirs.changes.len());
        if self.record.changes[..common] != theirs.changes[..common]
            || self.record.initial != theirs.initial
            || self.record.partitions != theirs.partitions
        {
            return Err(format!(
                "a peer's layout history (epoch {}) disagrees with this node's (epoch {}): were two layout \
                 changes started at once?",
                theirs.epoch, self.record.epoch
            ));
        }
        if theirs.epoch > self.record.epoch {
            // Addresses travel with the changes that add members (and leave with removals).
            return Topology::from_record(theirs.clone()).map(Some);
        }
        if theirs.epoch == self.record.epoch && self.record.epoch % 2 == 1 {
            let mut record = self.record.clone();
            let mut grew = false;
            for (partition, nodes) in &theirs.caught_up {
                let known = record.caught_up.entry(*partition).or_default();
                for node in nodes {
                    grew |= known.insert(*node);
                }
            }
            if grew {
                return Topology::from_record(record).map(Some);
            }
        }
        Ok(None)
    }

    /// This topology with `node` counted as caught up on `partition`.
    pub(crate) fn with_caught_up(&self, partition: PartitionId, node: NodeId) -> Topology {
        let mut topology = self.clone();
        topology.record.caught_up.entry(partition.0).or_default().insert(node.0);
        topology
    }
}

/// How long a node started with seeds keeps asking them for the topology.
const SEED_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// Asks `seeds` (in turn, until one answers or [`SEED_PATIENCE`] runs out) for their topology.
pub(crate) async fn fetch_from_seeds(
    transport: &onggi_transport::Transport,
    seeds: &[SocketAddr],
) -> Result<Topology, String> {
    let started = std::time::Instant::now();
    let mut last_error = String::from("no seed given");
    while started.elapsed() < SEED_PATIENCE {
        for &seed in seeds {
            let answer = transport.request(seed, wire::tag::TOPOLOGY, Bytes::new(), super::ROUND_TIMEOUT).await;
            match answer.map_err(|error| error.to_string()).and_then(|bytes| {
                serde_json::from_slice::<TopologyRecord>(&bytes).map_err(|error| format!("topology: {error}"))
            }) {
                Ok(record) => return Topology::from_record(record),
                Err(error) => last_error = format!("seed {seed}: {error}"),
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    Err(format!("no seed answered with the cluster's topology within {SEED_PATIENCE:?} ({last_error})"))
}

// ----- the node's side -----

/// How often a node exchanges topologies with a peer (in turn).
const GOSSIP_INTERVAL: std::time::Duration = std::time::Duration::from_millis(1_000);

impl Node {
    /// Computes a new topology from the one in use with `change` and, if it returns one (of
    /// the same epoch or newer), persists it and makes it this node's. Updates run one at a
    /// time, each against the topology the previous one left, so concurrent updates (merged
    /// gossip, catching up, a change started here) compose instead of overwriting each other.
    /// A newer epoch is published only once no replica action that passed the epoch check
    /// under the old one is still running (the epoch gate, see [`Node::replica_in_epoch`]).
    pub(crate) async fn update_topology(
        &self,
        cluster: &Cluster,
        change: impl FnOnce(&Topology) -> Result<Option<Topology>, String>,
    ) -> Result<Option<Arc<Topology>>, String> {
        let _turn = cluster.adopting.lock().await;
        let current = cluster.layout();
        let Some(topology) = change(&current)? else { return Ok(None) };
        if topology.epoch() < current.epoch() || topology.record() == current.record() {
            return Ok(None);
        }
        let mut batch = WriteBatch::new();
        let encoded = serde_json::to_vec(topology.record()).map_err(|error| error.to_string())?;
        batch.put(&cluster.state_tree, TOPOLOGY_KEY.to_vec(), encoded);
        self.commit_batch(batch, Durability::Sync, || {}).await.map_err(|error| error.message)?;
        if topology.epoch() > current.epoch() {
            tracing::info!(
                from = current.epoch(),
                to = topology.epoch(),
                changing = topology.changing(),
                moved = topology.moved().len(),
                "adopted a newer layout epoch"
            );
        }
        let topology = Arc::new(topology);
        let newer = topology.epoch() > current.epoch();
        let _gate = cluster.epoch_gate.write().await;
        if newer {
            // No replica action of the old epoch is running (the gate), and each observed its
            // ballot into the clock: every proposal accepted before this point has a ballot at
            // or below the clock's time now.
            cluster.adopted_at.store(self.inner.version().time.0, std::sync::atomic::Ordering::Relaxed);
        }
        let others = topology.addresses().filter(|(id, _)| *id != cluster.me).count();
        cluster.others.store(others, std::sync::atomic::Ordering::Relaxed);
        *cluster.topology.write().unwrap_or_else(std::sync::PoisonError::into_inner) = topology.clone();
        Ok(Some(topology))
    }

    /// Merges a peer's topology record into this node's (adopting it when newer).
    async fn merge_topology(&self, cluster: &Cluster, theirs: &TopologyRecord) -> Result<(), String> {
        self.update_topology(cluster, |current| current.merged_with(theirs)).await.map(|_| ())
    }

    /// Answers a peer's [`wire::tag::TOPOLOGY`]: merges its topology, answers with this node's.
    pub(super) async fn answer_topology(&self, payload: &[u8]) -> Result<Vec<u8>, String> {
        let cluster = self.inner.cluster.get().ok_or("not on a cluster")?.clone();
        // An empty payload: a node starting with --seeds asks for the topology.
        if !payload.is_empty() {
            let theirs: TopologyRecord =
                serde_json::from_slice(payload).map_err(|error| format!("topology: {error}"))?;
            if let Err(error) = self.merge_topology(&cluster, &theirs).await {
                tracing::warn!(%error, "a peer's topology was not merged");
            }
        }
        serde_json::to_vec(cluster.layout().record()).map_err(|error| error.to_string())
    }

    /// Sends this node's topology to `peer` and merges the peer's answer.
    pub(super) async fn exchange_topology(&self, cluster: &Cluster, peer: SocketAddr) {
        let mine = match serde_json::to_vec(cluster.layout().record()) {
            Ok(bytes) => bytes,
            Err(error) => return tracing::error!(%error, "topology not encoded"),
        };
        let answer =
            cluster.transport.request(peer, wire::tag::TOPOLOGY, Bytes::from(mine), super::ROUND_TIMEOUT).await;
        let result = match answer {
            Ok(bytes) => match serde_json::from_slice::<TopologyRecord>(&bytes) {
                Ok(theirs) => self.merge_topology(cluster, &theirs).await,
                Err(error) => Err(format!("topology: {error}")),
            },
            Err(error) => Err(error.to_string()),
        };
        if let Err(error) = result {
            tracing::debug!(%error, %peer, "topology exchange failed");
        }
    }

    /// A replica's handling of a consensus request sent in layout epoch `epoch`: a read, prepare
    /// or accept of an older epoch gets [`Reply::Stale`]; of a newer one, this node first learns
    /// the sender's topology. The epoch check and the action (up to its persisted answer) hold
    /// the epoch gate together, so a newer epoch is never published while an action that passed
    /// the check under the old one is still on its way to disk: once an old replica adopted a
    /// change, nothing of the old layout alone is accepted there any more — what catching up
    /// relies on. Commits are safe in any epoch and pass straight through.
    pub(super) async fn replica_in_epoch(
        &self,
        table_id: &str,
        key: Vec<u8>,
        epoch: u64,
        request: Request,
        sender: Option<SocketAddr>,
    ) -> Result<Reply, String> {
        let cluster = self.inner.cluster.get().ok_or("not on a cluster")?.clone();
        if matches!(request, Request::Commit(_)) {
            // A commit is safe in any epoch; a newer one is learned first all the same, since a
            // node ignores commits for partitions it does not replicate (yet).
            if epoch > cluster.layout().epoch()
                && let Some(sender) = sender
            {
                self.exchange_topology(&cluster, sender).await;
            }
            if epoch > cluster.layout().epoch() {
                // Not acknowledged: the sender keeps a hint and tries again.
                return Err(format!("layout epoch {epoch} is not known here yet"));
            }
            let mode = if sender.is_some() { super::CommitMode::Remote } else { super::CommitMode::Local };
            return self.replica_with(table_id, key, request, mode).await.map_err(|error| error.message);
        }
        for _ in 0..2 {
            let gate = cluster.epoch_gate.read().await;
            let mine = cluster.layout().epoch();
            if epoch < mine {
                return Ok(Reply::Stale(mine));
            }
            if epoch == mine {
                let reply = self.replica(table_id, key, request).await.map_err(|error| error.message);
                drop(gate);
                return reply;
            }
            drop(gate);
            let Some(sender) = sender else { break };
            self.exchange_topology(&cluster, sender).await;
        }
        Err(format!("layout epoch {epoch} is not known here yet"))
    }

    /// Starts the background topology gossip: every [`GOSSIP_INTERVAL`], an exchange with the
    /// next peer in turn.
    pub(super) fn spawn_topology_gossip(&self) {
        let inner = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut turn = 0usize;
            loop {
                tokio::time::sleep(GOSSIP_INTERVAL).await;
                let Some(inner) = inner.upgrade() else { return };
                let node = Node { inner };
                let Some(cluster) = node.cluster().cloned() else { continue };
                let peers = cluster.peers();
                if peers.is_empty() {
                    continue;
                }
                let peer = peers[turn % peers.len()];
                turn = turn.wrapping_add(1);
                node.exchange_topology(&cluster, peer).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(n: u64) -> Vec<(u64, SocketAddr)> {
        (1..=n).map(|id| (id, format!("127.0.0.1:{}", 9000 + id).parse().unwrap())).collect()
    }

    #[test]
    fn replicas_go_to_distinct_zones_from_the_first_layout_and_after_a_join() {
        let zone_of = |topology: &Topology, id: NodeId| topology.target().node(id).unwrap().zone.clone().unwrap();
        let zones: BTreeMap<u64, String> =
            [(1, "a"), (2, "a"), (3, "b"), (4, "b")].into_iter().map(|(id, zone)| (id, zone.to_string())).collect();
        let first = Topology::initial(64, 2, &members(4), &zones).unwrap();
        for partition in (0..64).map(PartitionId) {
            let replicas = first.replicas(partition);
            assert_eq!(replicas.len(), 2);
            assert_ne!(zone_of(&first, replicas[0]), zone_of(&first, replicas[1]), "partition {}", partition.0);
        }
        // A node joining in a third zone: each partition still spans two zones.
        let member = MemberRecord { zone: Some("c".into()), ..MemberRecord::active(5) };
        let address: SocketAddr = "127.0.0.1:9005".parse().unwrap();
        let joining = first.start_change(vec![ChangeRecord::Join(member)], &[(5, address)]).unwrap();
        let next = joining.next().unwrap();
        assert!(next.partitions_of(NodeId(5)).count() > 0);
        for partition in (0..64).map(PartitionId) {
            let replicas = next.replicas(partition);
            assert_ne!(zone_of(&joining, replicas[0]), zone_of(&joining, replicas[1]), "partition {}", partition.0);
        }
        assert!(Topology::initial(64, 2, &members(2), &[(1, String::new())].into_iter().collect()).is_err());
    }

    #[test]
    fn a_join_goes_through_a_joint_epoch_and_travels_as_history() {
        let first = Topology::initial(64, 3, &members(3), &BTreeMap::new()).unwrap();
        assert_eq!((first.epoch(), first.changing()), (0, false));
        let address: SocketAddr = "127.0.0.1:9004".parse().unwrap();
        let joining = first.start_change(vec![ChangeRecord::Join(MemberRecord::active(4))], &[(4, address)]).unwrap();
        assert_eq!((joining.epoch(), joining.changing()), (1, true));
        assert!(!joining.moved().is_empty());
        let moved = joining.moved()[0];
        assert_eq!(joining.sets(moved).len(), 2, "joint quorums for a moved partition");
        assert!(joining.holds(NodeId(4), moved));
        assert!(!joining.change_complete());
        assert!(first.start_change(vec![ChangeRecord::Drain(1)], &[]).is_ok());
        assert!(joining.start_change(vec![ChangeRecord::Drain(1)], &[]).is_err(), "one change at a time");

        // A peer rebuilds the same layouts from the record.
        let rebuilt = Topology::from_record(joining.record().clone()).unwrap();
        assert_eq!(rebuilt.next().unwrap(), joining.next().unwrap());
        // Caught-up news merges; a majority of every moved partition's new replicas ends it.
        let mut done = joining.clone();
        for &partition in joining.moved() {
            for &node in joining.next().unwrap().replicas(partition) {
                done = done.with_caught_up(partition, node);
            }
        }
        assert!(done.change_complete());
        let merged = joining.merged_with(done.record()).unwrap().expect("more caught up");
        assert!(merged.change_complete());
        let finished = done.finish_change().unwrap();
        assert_eq!((finished.epoch(), finished.changing()), (2, false));
        assert_eq!(&*finished, joining.next().unwrap());
        // An older node adopts the newer topology; a conflicting history is refused.
        let adopted = first.merged_with(finished.record()).unwrap().expect("newer");
        assert_eq!(adopted.epoch(), 2);
        let other = first.start_change(vec![ChangeRecord::Drain(2)], &[]).unwrap();
        assert!(other.merged_with(joining.record()).is_err());
        // A node is removed only once drained; removing it moves nothing and ends at once.
        assert!(finished.start_change(vec![ChangeRecord::Remove(4)], &[]).is_err());
        let mut draining = finished.start_change(vec![ChangeRecord::Drain(4)], &[]).unwrap();
        for &partition in draining.moved().to_vec().iter() {
            for &node in draining.next().unwrap().replicas(partition).to_vec().iter() {
                draining = draining.with_caught_up(partition, node);
            }
        }
        let drained = draining.finish_change().unwrap();
        let removed = drained.start_change(vec![ChangeRecord::Remove(4)], &[]).unwrap();
        assert_eq!((removed.epoch(), removed.changing()), (6, false));
        assert_eq!(removed.address(NodeId(4)), None);
        assert_eq!(removed.nodes().len(), 3);
    }
}

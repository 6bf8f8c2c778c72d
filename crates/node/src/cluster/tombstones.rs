//! Tombstone collection on a cluster: the shell of `onggi_core::tombstones` (read its module
//! docs first: the three phases and why they are safe).
//!
//! - **Floors** live per (table, partition) in memory, loaded from the cluster state tree
//!   (`floors/<table id>/<partition>`, [`Floors::encode`]) on first use, and are persisted
//!   (fsynced) before a prepare or adopt is answered. Each partition also has a *commit gate*: a
//!   replica applies a commit holding it shared, from the floor check until the write is done,
//!   so a prepare (taking it exclusively) sees every earlier commit in storage and counts every
//!   later old one ([`AdoptToken`]), and an adopt (exclusively too) cannot miss one in flight.
//! - **Replicas** (`Node::replica`) refuse prepares and accepts at or below the promise floor
//!   (`Floors::refuses`, answering the floor so the proposer retries above it), drop commits at or
//!   below the adopted floor, and count the old commits they apply.
//! - **The initiator** of a partition is its first replica in the layout, so one node runs its
//!   rounds; anti-entropy's walk offers it a round on each visit, and it runs one at most every
//!   `interval`, when it holds a tombstone at or below the floor (or the last round left some
//!   behind), while the layout is not changing — in a background task, one round at a time. (A
//!   tombstone only another replica holds reaches the initiator through anti-entropy first.) Every phase goes to every replica with a
//!   [`PHASE_TIMEOUT`]; a replica that does not answer ends the round (collection waits for every
//!   replica to be back). A collect removes at most [`COLLECT_MAX`] tombstones a round; more are
//!   left for the next.
//! - **Layout changes.** Rounds stop while the layout changes (replicas refuse a phase of
//!   another epoch, or while changing). A new replica of a moved partition takes over the floors
//!   of every old replica whose answer counts towards its catching up (the answer carries them,
//!   `wire::CatchUpReply::floors`): the old replicas promised not to accept below them, and the
//!   new layout's quorums — every one of which holds a caught-up replica — must refuse the same
//!   ballots, or a version below an old replica's adopted floor could be chosen without it and
//!   then be dropped by it for good (the simulator found exactly that). A partition given away
//!   (`catch_up.rs`) has its floors reset, so a node that replicates it again later starts from
//!   the floors it takes over then. Floors of a deleted table are removed at the next start.
//! - **The grace.** A round's floor lies `grace` behind its initiator's clock, and `grace` must
//!   exceed the longest an operation runs ([`super::OPERATION_DEADLINE`] and a last round) plus
//!   the most two nodes' clocks disagree: an operation that made an attempt before a delete and
//!   is still retrying after the tombstone went could no longer tell from the item (its
//!   tombstone carried the lineage naming the attempt) that the attempt was applied, and would
//!   apply it again (the simulator found that too, with a grace of 300 ms). The command line
//!   refuses a grace below [`GRACE_MIN`]; the default tolerates clocks 49 s apart.
//! - **Views of global indexes** (`views.rs`) are collected the same way with a grace of at
//!   least [`VIEW_GRACE_MIN`]: their versions are not chosen on the view's replicas but copied
//!   there by the item's replicas, and a copy that arrives at or below an adopted floor is
//!   dropped; the longer grace leaves an hour for copies held up (no replica of the view
//!   answering) to arrive.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use onggi_core::consensus_state::ConsensusState;
use onggi_core::hlc::Timestamp;
use onggi_core::layout::{NodeId, PartitionId};
use onggi_core::paxos::Ballot;
use onggi_core::record::Record;
use onggi_core::tombstones::{AdoptToken, Floors, LiveDigest, Next, Prepared, Round, collectable, floor_at};
use onggi_storage::{Direction, Durability, WriteBatch};

use super::wire::{self, Collection, CollectionPhase, CollectionReply};
use super::{Cluster, repair};
use crate::catalog::TableHandle;
use crate::{Node, wall_clock_ms};

/// How long the initiator waits for each phase's answers.
const PHASE_TIMEOUT: Duration = Duration::from_secs(5);
/// Tombstones one replica removes in one round (each under its item's lock).
const COLLECT_MAX: usize = 4_096;
/// Default age a tombstone reaches before a round may collect it (the floor's distance behind the
/// present): far above any operation's retries, so live rounds never meet the promise floor.
pub const GRACE_DEFAULT: Duration = Duration::from_secs(60);
/// The least grace `onggi serve` accepts: the operation deadline, a last round, and 4 s of
/// clock disagreement between nodes.
pub const GRACE_MIN: Duration = Duration::from_secs(15);
const _: () = assert!(GRACE_MIN.as_secs() >= super::OPERATION_DEADLINE.as_secs() + super::ROUND_TIMEOUT.as_secs() + 4);
/// The least grace of a round over a global index's view (see the module docs).
pub(crate) const VIEW_GRACE_MIN: Duration = Duration::from_secs(3_600);
/// Default time between two rounds over one partition.
pub const INTERVAL_DEFAULT: Duration = Duration::from_secs(60);
/// The state tree's key prefix of floors.
const FLOORS_PREFIX: &str = "floors/";

/// One partition's floors, commit gate and count of old commits, and its live Merkle tree (which
/// follows the commits the gate orders, `live_trees.rs`).
#[derive(Default)]
pub(crate) struct PartitionFloors {
    floors: Mutex<Floors>,
    gate: tokio::sync::RwLock<()>,
    old_commits: AtomicU64,
    pub(crate) live: super::live_trees::LiveTree,
    /// Consensus states holding an accepted proposal written here since the node started.
    proposals_written: AtomicU64,
    /// One more than the value `proposals_written` had when a scan of the partition's consensus
    /// state last found no accepted proposal at all (0: none did yet).
    free_of_proposals_at: AtomicU64,
}

impl PartitionFloors {
    pub(crate) fn floors(&self) -> Floors {
        *self.floors.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Held shared by a commit from its floor check until its write is done.
    pub(crate) async fn commit_gate(&self) -> tokio::sync::RwLockReadGuard<'_, ()> {
        self.gate.read().await
    }

    /// Held exclusively while no commit of the partition may be under way (a live tree's build
    /// opens its snapshot under it).
    pub(crate) async fn commits_stopped(&self) -> tokio::sync::RwLockWriteGuard<'_, ()> {
        self.gate.write().await
    }

    /// Counts a consensus state holding an accepted proposal, once written (in its completion).
    pub(crate) fn note_proposal_written(&self) {
        self.proposals_written.fetch_add(1, Ordering::Release);
    }

    /// How many consensus states holding a proposal were written so far: read before a scan of
    /// the partition's consensus state, and given to [`PartitionFloors::free_of_proposals`].
    pub(crate) fn proposals_written(&self) -> u64 {
        self.proposals_written.load(Ordering::Acquire)
    }

    /// Records that a scan, started when [`PartitionFloors::proposals_written`] was `written`,
    /// found no accepted proposal in the partition.
    pub(crate) fn free_of_proposals(&self, written: u64) {
        self.free_of_proposals_at.store(written + 1, Ordering::Release);
    }

    /// Whether the partition's consensus state is known to hold no accepted proposal: a scan found
    /// none and none was written since (so anti-entropy's walk need not scan it again).
    pub(crate) fn known_free_of_proposals(&self) -> bool {
        self.free_of_proposals_at.load(Ordering::Acquire) == self.proposals_written() + 1
    }

    /// Counts a commit applied (under the commit gate) if it is at or below the promise floor.
    pub(crate) fn note_commit(&self, ballot: Ballot) {
        if ballot.time <= self.floors().promised {
            self.old_commits.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A table's floors, one entry per partition.
pub(crate) struct TableFloors {
    partitions: Vec<PartitionFloors>,
}

impl TableFloors {
    pub(crate) fn partition(&self, partition: PartitionId) -> Option<&PartitionFloors> {
        self.partitions.get(partition.0 as usize)
    }
}

/// Tombstone collection's state on a node.
pub(crate) struct Collector {
    tables: Mutex<HashMap<String, Arc<TableFloors>>>,
    /// See [`AdoptToken::life`].
    life: u64,
    grace_ms: AtomicU64,
    interval_ms: AtomicU64,
    /// When this node last started a round over a (table id, partition), and whether that round
    /// left tombstones behind.
    rounds: Mutex<HashMap<(String, u32), (Instant, bool)>>,
    /// Set while a round (or its check) runs: one at a time per node.
    running: std::sync::atomic::AtomicBool,
    pub(crate) stats: CollectionStats,
}

/// Counters since the node started (shown by `onggi cluster status`).
#[derive(Default)]
pub(crate) struct CollectionStats {
    /// Rounds this node started.
    pub(crate) rounds: AtomicU64,
    /// Of those, ended before collecting (a replica out of reach, pending, differing or moved).
    pub(crate) rounds_abandoned: AtomicU64,
    /// Tombstones removed here.
    pub(crate) removed: AtomicU64,
    /// Commits dropped because their version is at or below the adopted floor.
    pub(crate) commits_dropped: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn floors_key(table_id: &str, partition: u32) -> Vec<u8> {
    format!("{FLOORS_PREFIX}{table_id}/{partition}").into_bytes()
}

/// Feeds a phase's answers to the round; returns what comes next, or why the round stops (a
/// replica that did not answer, answered nonsense, or made the round abandon).
fn feed(
    replies: Vec<(NodeId, Result<CollectionReply, String>)>,
    mut on_reply: impl FnMut(NodeId, CollectionReply) -> Result<Next, String>,
) -> Result<Next, String> {
    let mut next = Next::Wait;
    for (node, reply) in replies {
        let reply = reply.map_err(|error| format!("node {} did not answer: {error}", node.0))?;
        next = on_reply(node, reply)?;
        if let Next::Abandon(why) = &next {
            return Err(format!("{why:?}"));
        }
    }
    Ok(next)
}

/// A stored record's version and whether it is a tombstone, from format 2's header when it can
/// (`[2][flags][time u64][node u64]`, flag bit 0 = tombstone), else by decoding it.
fn record_header(bytes: &[u8]) -> Result<(Ballot, bool), String> {
    if bytes.len() >= 18 && bytes[0] == onggi_core::record::RECORD_FORMAT_VERSION {
        let word = |at: usize| u64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let ballot = Ballot { time: Timestamp(word(2)), node: NodeId(word(10)) };
        return Ok((ballot, bytes[1] & 1 != 0));
    }
    let record = Record::decode(bytes).map_err(|error| format!("stored record unreadable: {error}"))?;
    Ok((record.version, record.item.is_none()))
}

impl Collector {
    pub(crate) fn new(life: u64) -> Collector {
        Collector {
            tables: Mutex::new(HashMap::new()),
            life,
            grace_ms: AtomicU64::new(GRACE_DEFAULT.as_millis() as u64),
            interval_ms: AtomicU64::new(INTERVAL_DEFAULT.as_millis() as u64),
            rounds: Mutex::new(HashMap::new()),
            running: std::sync::atomic::AtomicBool::new(false),
            stats: CollectionStats::default(),
        }
    }
}

impl Node {
    /// Sets how old a tombstone must be before it may be collected, and how often a partition's
    /// initiator runs a round (`onggi serve --tombstone-grace`, `--tombstone-interval`).
    pub fn set_tombstone_collection(&self, grace: Duration, interval: Duration) {
        if let Some(cluster) = self.inner.cluster.get() {
            cluster.collector.grace_ms.store(grace.as_millis() as u64, Ordering::Relaxed);
            cluster.collector.interval_ms.store(interval.as_millis() as u64, Ordering::Relaxed);
        }
    }

    /// The floors of a table's partitions, loaded on first use.
    pub(crate) fn table_floors(&self, cluster: &Cluster, table_id: &str) -> Result<Arc<TableFloors>, String> {
        if let Some(floors) = lock(&cluster.collector.tables).get(table_id) {
            return Ok(floors.clone());
        }
        let count = cluster.layout().partition_count() as usize;
        let mut partitions: Vec<PartitionFloors> = (0..count).map(|_| PartitionFloors::default()).collect();
        let prefix = format!("{FLOORS_PREFIX}{table_id}/").into_bytes();
        let (lower, upper) = (std::ops::Bound::Included(prefix.clone()), std::ops::Bound::Unbounded);
        let entries = self.inner.engine.range(&cluster.state_tree, lower, upper, Direction::Forward);
        for entry in entries.map_err(|error| error.to_string())? {
            let (key, value) = entry.map_err(|error| error.to_string())?;
            let Some(rest) = key.strip_prefix(prefix.as_slice()) else { break };
            let partition: usize = std::str::from_utf8(rest)
                .ok()
                .and_then(|text| text.parse().ok())
                .filter(|&partition| partition < count)
                .ok_or_else(|| format!("stored floors under an unknown partition: {key:?}"))?;
            let floors = Floors::decode(&value).map_err(|error| error.to_string())?;
            *lock(&partitions[partition].floors) = floors;
        }
        let loaded = Arc::new(TableFloors { partitions: std::mem::take(&mut partitions) });
        let mut tables = lock(&cluster.collector.tables);
        // Tables deleted since they were loaded go when a new one comes.
        tables.retain(|id, _| self.inner.catalog.get_by_id(id).is_some());
        Ok(tables.entry(table_id.to_string()).or_insert(loaded).clone())
    }

    /// Removes the stored floors of tables this node no longer knows (deleted). At start.
    pub(super) fn forget_floors_of_deleted_tables(&self, cluster: &Cluster) -> Result<usize, String> {
        let known: std::collections::HashSet<String> =
            self.inner.catalog.tables().iter().map(|table| table.schema.id.clone()).collect();
        let lower = std::ops::Bound::Included(FLOORS_PREFIX.as_bytes().to_vec());
        let entries =
            self.inner.engine.range(&cluster.state_tree, lower, std::ops::Bound::Unbounded, Direction::Forward);
        let mut batch = WriteBatch::new();
        let mut removed = 0;
        for entry in entries.map_err(|error| error.to_string())? {
            let (key, _) = entry.map_err(|error| error.to_string())?;
            let Some(rest) = key.strip_prefix(FLOORS_PREFIX.as_bytes()) else { break };
            let table_id = rest.split(|&byte| byte == b'/').next().unwrap_or_default();
            if !known.contains(String::from_utf8_lossy(table_id).as_ref()) {
                batch.delete(&cluster.state_tree, key);
                removed += 1;
            }
        }
        if removed > 0 {
            self.inner.engine.commit(batch, Durability::Buffered, Box::new(|_| {}));
        }
        Ok(removed)
    }

    async fn persist_floors(
        &self,
        cluster: &Cluster,
        table_id: &str,
        partition: u32,
        floors: Floors,
    ) -> Result<(), String> {
        let mut batch = WriteBatch::new();
        batch.put(&cluster.state_tree, floors_key(table_id, partition), floors.encode());
        self.commit_batch(batch, Durability::Sync, || {}).await.map_err(|error| error.message)
    }

    /// Raises a partition's floors to at least `to`, durably (a new replica taking over an old
    /// one's while catching up).
    pub(super) async fn raise_floors(
        &self,
        cluster: &Cluster,
        table_id: &str,
        partition: PartitionId,
        to: Floors,
    ) -> Result<(), String> {
        let floors = self.table_floors(cluster, table_id)?;
        let Some(part) = floors.partition(partition) else { return Ok(()) };
        let _gate = part.gate.write().await;
        let current = part.floors();
        let raised = Floors { promised: current.promised.max(to.promised), adopted: current.adopted.max(to.adopted) };
        if raised == current {
            return Ok(());
        }
        self.persist_floors(cluster, table_id, partition.0, raised).await?;
        *lock(&part.floors) = raised;
        Ok(())
    }

    /// Forgets a partition's floors (it was given away), durably.
    pub(super) async fn reset_floors(
        &self,
        cluster: &Cluster,
        table_id: &str,
        partition: PartitionId,
    ) -> Result<(), String> {
        let floors = self.table_floors(cluster, table_id)?;
        let Some(part) = floors.partition(partition) else { return Ok(()) };
        let _gate = part.gate.write().await;
        let mut batch = WriteBatch::new();
        batch.delete(&cluster.state_tree, floors_key(table_id, partition.0));
        self.commit_batch(batch, Durability::Sync, || {}).await.map_err(|error| error.message)?;
        *lock(&part.floors) = Floors::default();
        Ok(())
    }

    // ----- replica -----

    /// Answers one phase of a round (tag `TOMBSTONES`).
    pub(super) async fn answer_collection(&self, payload: &[u8]) -> Result<Vec<u8>, String> {
        let request = wire::decode_collection(payload).map_err(|error| error.to_string())?;
        let reply = self.collection_phase(request).await?;
        Ok(wire::encode_collection_reply(&reply))
    }

    async fn collection_phase(&self, request: Collection) -> Result<CollectionReply, String> {
        let cluster = self.cluster().ok_or("not part of a cluster")?.clone();
        let partition = PartitionId(request.partition);
        {
            let layout = cluster.layout();
            if layout.epoch() != request.epoch || layout.changing() {
                return Err(format!("layout epoch {} here, the round's is {}", layout.epoch(), request.epoch));
            }
            if partition.0 >= layout.partition_count() || !layout.holds(cluster.me, partition) {
                return Err(format!("partition {} is not replicated here", partition.0));
            }
        }
        let table = self.table_by_id(&request.table_id).map_err(|error| error.message)?;
        let floors = self.table_floors(&cluster, &request.table_id)?;
        let part = floors.partition(partition).ok_or("no such partition")?;
        let floor = request.floor;
        match request.phase {
            CollectionPhase::Prepare => {
                // Raise the promise floor between consensus actions (each holds the epoch gate
                // from its checks until its state is persisted), so none in flight slips under.
                {
                    let _actions = cluster.epoch_gate.write().await;
                    let mut current = lock(&part.floors);
                    current.promised = current.promised.max(floor);
                }
                // Every commit applied before this point is in storage; every later one at or
                // below the floor is counted.
                let old_commits = {
                    let _commits = part.gate.write().await;
                    part.old_commits.load(Ordering::Relaxed)
                };
                // Durable before the answer; the fsync also covers the commits written before.
                self.persist_floors(&cluster, &request.table_id, partition.0, part.floors()).await?;
                let (pending, digest) = self.scan_for_prepare(&cluster, &table, partition, floor).await?;
                let token = AdoptToken { life: cluster.collector.life, old_commits };
                Ok(CollectionReply::Prepared(Prepared { pending, digest, token }))
            }
            CollectionPhase::Adopt(token) => {
                let _commits = part.gate.write().await;
                let current = part.floors();
                let unmoved = token.life == cluster.collector.life
                    && token.old_commits == part.old_commits.load(Ordering::Relaxed)
                    && current.promised >= floor;
                if !unmoved {
                    return Ok(CollectionReply::Adopted(false));
                }
                let adopted = Floors { adopted: current.adopted.max(floor), ..current };
                self.persist_floors(&cluster, &request.table_id, partition.0, adopted).await?;
                *lock(&part.floors) = adopted;
                Ok(CollectionReply::Adopted(true))
            }
            CollectionPhase::Collect => {
                let (removed, more) = self.collect_partition(&cluster, &table, partition, part, floor).await?;
                Ok(CollectionReply::Collected { removed, more })
            }
        }
    }

    /// Whether a proposal at or below `floor` waits in the partition's consensus state, and the
    /// digest of its live records at or below `floor`.
    async fn scan_for_prepare(
        &self,
        cluster: &Cluster,
        table: &Arc<TableHandle>,
        partition: PartitionId,
        floor: Timestamp,
    ) -> Result<(bool, u128), String> {
        let consensus = self.consensus_tree(cluster, table).map_err(|error| error.message)?;
        let (first, last) = cluster.layout().partition_range(partition);
        let (engine, items) = (self.inner.engine.clone(), table.tree.clone());
        let scan = move || -> Result<(bool, u128), String> {
            let (lower, upper) = repair::token_interval(first, last);
            let pending = !repair::scan_proposals_accepted_by(&*engine, &consensus, first, last, floor)?.is_empty();
            let mut digest = LiveDigest::new(floor);
            let (lower, upper) = repair::bounds(&lower, upper.as_deref());
            for entry in engine.range(&items, lower, upper, Direction::Forward).map_err(|error| error.to_string())? {
                let (key, value) = entry.map_err(|error| error.to_string())?;
                let (version, tombstone) = record_header(&value)?;
                digest.add(&key, version, tombstone);
            }
            Ok((pending, digest.finish()))
        };
        tokio::task::spawn_blocking(scan).await.map_err(|error| error.to_string())?
    }

    /// The keys of the partition's tombstones at or below `floor`, at most `max`, and whether
    /// there were more.
    async fn tombstones_at_or_below(
        &self,
        cluster: &Cluster,
        table: &Arc<TableHandle>,
        partition: PartitionId,
        floor: Timestamp,
        max: usize,
    ) -> Result<(Vec<Vec<u8>>, bool), String> {
        let (first, last) = cluster.layout().partition_range(partition);
        let (engine, items) = (self.inner.engine.clone(), table.tree.clone());
        let scan = move || -> Result<(Vec<Vec<u8>>, bool), String> {
            let (lower, upper) = repair::token_interval(first, last);
            let (lower, upper) = repair::bounds(&lower, upper.as_deref());
            let mut keys = Vec::new();
            for entry in engine.range(&items, lower, upper, Direction::Forward).map_err(|error| error.to_string())? {
                let (key, value) = entry.map_err(|error| error.to_string())?;
                let (version, tombstone) = record_header(&value)?;
                if tombstone && version.time <= floor {
                    if keys.len() == max {
                        return Ok((keys, true));
                    }
                    keys.push(key);
                }
            }
            Ok((keys, false))
        };
        tokio::task::spawn_blocking(scan).await.map_err(|error| error.to_string())?
    }

    /// Removes the partition's tombstones at or below `floor` (adopted here), each under its
    /// item's lock and only if it still is one and its consensus state holds nothing live.
    async fn collect_partition(
        &self,
        cluster: &Arc<Cluster>,
        table: &Arc<TableHandle>,
        partition: PartitionId,
        part: &PartitionFloors,
        floor: Timestamp,
    ) -> Result<(u64, bool), String> {
        if part.floors().adopted < floor {
            return Err("the floor to collect to is not adopted here".into());
        }
        let consensus = self.consensus_tree(cluster, table).map_err(|error| error.message)?;
        let (keys, more) = self.tombstones_at_or_below(cluster, table, partition, floor, COLLECT_MAX).await?;
        let mut removed = 0;
        for key in keys {
            let guard = self.inner.locks.lock(table, &key).await;
            let Some(bytes) = self.inner.engine.get(&table.tree, &key).map_err(|error| error.to_string())? else {
                continue;
            };
            let (version, tombstone) = record_header(&bytes)?;
            let state = match self.inner.engine.get(&consensus, &key).map_err(|error| error.to_string())? {
                Some(bytes) => {
                    let state = ConsensusState::decode(&bytes).map_err(|error| error.to_string())?;
                    Some((state.promised, state.accepted.is_some()))
                }
                None => None,
            };
            if !tombstone || !collectable(version, floor, &part.floors(), state) {
                continue;
            }
            let mut batch = WriteBatch::new();
            batch.delete(&table.tree, key.clone());
            if state.is_some() {
                batch.delete(&consensus, key.clone());
            }
            // Under the commit gate, so that the partition's live tree follows (`live_trees.rs`).
            let _gate = part.commit_gate().await;
            let (acceptors, table_id, removed_key) = (cluster.clone(), table.schema.id.clone(), key.clone());
            // Not fsynced: a removal lost in a crash leaves the tombstone for a later round.
            self.commit_batch_then(batch, Durability::Buffered, move |_| {
                acceptors.acceptors.forget(&table_id, &removed_key);
                drop(guard);
            })
            .await
            .map_err(|error| error.message)?;
            part.live.removed(&key, version);
            removed += 1;
        }
        cluster.collector.stats.removed.fetch_add(removed, Ordering::Relaxed);
        Ok((removed, more))
    }

    // ----- initiator -----

    /// Offers `partition` of `table` a round (anti-entropy's walk does, on each visit): started
    /// in the background when none is running here, so a replica that does not answer (a round
    /// waits up to [`PHASE_TIMEOUT`] per phase for it) never slows the walk.
    pub(super) fn offer_collection_round(
        &self,
        cluster: &Arc<Cluster>,
        table: &Arc<TableHandle>,
        partition: PartitionId,
    ) {
        if cluster.collector.running.swap(true, Ordering::AcqRel) {
            return;
        }
        /// Clears the running flag however the task ends.
        struct Running(Arc<Cluster>);
        impl Drop for Running {
            fn drop(&mut self) {
                self.0.collector.running.store(false, Ordering::Release);
            }
        }
        let running = Running(cluster.clone());
        let (node, table) = (self.clone(), table.clone());
        tokio::spawn(async move {
            node.collection_round_if_due(&running.0, &table, partition).await;
            drop(running);
        });
    }

    /// Runs a round over `partition` of `table` if this node is its initiator and one is due
    /// (see the module docs).
    async fn collection_round_if_due(&self, cluster: &Arc<Cluster>, table: &Arc<TableHandle>, partition: PartitionId) {
        let (replicas, epoch) = {
            let layout = cluster.layout();
            if layout.changing() {
                return;
            }
            (layout.replicas(partition).to_vec(), layout.epoch())
        };
        if replicas.first() != Some(&cluster.me) || replicas.len() < 2 {
            return;
        }
        let collector = &cluster.collector;
        let round_key = (table.schema.id.clone(), partition.0);
        let interval = Duration::from_millis(collector.interval_ms.load(Ordering::Relaxed));
        let left_behind = match lock(&collector.rounds).get(&round_key) {
            Some((started, left_behind)) if started.elapsed() < interval => return,
            Some((_, left_behind)) => *left_behind,
            None => false,
        };
        let mut grace_ms = collector.grace_ms.load(Ordering::Relaxed);
        if table.view {
            grace_ms = grace_ms.max(VIEW_GRACE_MIN.as_millis() as u64);
        }
        let floor = floor_at(wall_clock_ms(), grace_ms);
        if !left_behind {
            match self.tombstones_at_or_below(cluster, table, partition, floor, 1).await {
                Ok((keys, _)) if keys.is_empty() => {
                    lock(&collector.rounds).insert(round_key, (Instant::now(), false));
                    return;
                }
                Ok(_) => {}
                Err(error) => return tracing::warn!(%error, "tombstone collection cannot scan"),
            }
        }
        lock(&collector.rounds).insert(round_key.clone(), (Instant::now(), true));
        collector.stats.rounds.fetch_add(1, Ordering::Relaxed);
        match self.run_collection_round(cluster, table, partition, epoch, floor, replicas).await {
            Ok(more) => {
                lock(&collector.rounds).insert(round_key, (Instant::now(), more));
            }
            Err(reason) => {
                collector.stats.rounds_abandoned.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(table = %table.schema.name, partition = partition.0, %reason, "tombstone collection round abandoned");
            }
        }
    }

    /// One round; returns whether tombstones were left for the next (a replica's bound, or a
    /// replica that did not confirm its collect).
    async fn run_collection_round(
        &self,
        cluster: &Arc<Cluster>,
        table: &Arc<TableHandle>,
        partition: PartitionId,
        epoch: u64,
        floor: Timestamp,
        replicas: Vec<NodeId>,
    ) -> Result<bool, String> {
        let mut round = Round::new(floor, replicas.clone());
        let request =
            |phase| Collection { table_id: table.schema.id.clone(), partition: partition.0, epoch, floor, phase };
        let prepared =
            self.collection_phase_everywhere(cluster, &replicas, |_| request(CollectionPhase::Prepare)).await;
        let next = feed(prepared, |node, reply| match reply {
            CollectionReply::Prepared(answer) => Ok(round.on_prepared(node, answer)),
            other => Err(format!("node {} answered a prepare with {other:?}", node.0)),
        })?;
        let Next::Adopt(tokens) = next else { return Err("the prepare did not complete".into()) };
        let tokens: HashMap<NodeId, AdoptToken> = tokens.into_iter().collect();
        let adopted = self
            .collection_phase_everywhere(cluster, &replicas, |node| request(CollectionPhase::Adopt(tokens[&node])))
            .await;
        let next = feed(adopted, |node, reply| match reply {
            CollectionReply::Adopted(adopted) => Ok(round.on_adopted(node, adopted)),
            other => Err(format!("node {} answered an adopt with {other:?}", node.0)),
        })?;
        if next != Next::Collect {
            return Err("the adopt did not complete".into());
        }
        let collected =
            self.collection_phase_everywhere(cluster, &replicas, |_| request(CollectionPhase::Collect)).await;
        let mut left_behind = false;
        for (node, reply) in collected {
            match reply {
                Ok(CollectionReply::Collected { more, .. }) => left_behind |= more,
                other => {
                    tracing::debug!(node = node.0, ?other, "a replica did not confirm its collection");
                    left_behind = true;
                }
            }
        }
        Ok(left_behind)
    }

    /// Sends a phase to every replica at once (this node directly) and returns their answers.
    async fn collection_phase_everywhere(
        &self,
        cluster: &Arc<Cluster>,
        replicas: &[NodeId],
        request: impl Fn(NodeId) -> Collection,
    ) -> Vec<(NodeId, Result<CollectionReply, String>)> {
        let mut answers = tokio::task::JoinSet::new();
        for &replica in replicas {
            let (node, cluster, request) = (self.clone(), cluster.clone(), request(replica));
            answers.spawn(async move {
                let reply = if replica == cluster.me {
                    tokio::time::timeout(PHASE_TIMEOUT, node.collection_phase(request))
                        .await
                        .unwrap_or_else(|_| Err("timed out".into()))
                } else {
                    match cluster.address(replica) {
                        None => Err("no address".into()),
                        Some(address) => {
                            let payload = Bytes::from(wire::encode_collection(&request));
                            match cluster
                                .transport
                                .request(address, wire::tag::TOMBSTONES, payload, PHASE_TIMEOUT)
                                .await
                            {
                                Ok(bytes) => wire::decode_collection_reply(&bytes).map_err(|error| error.to_string()),
                                Err(error) => Err(error.to_string()),
                            }
                        }
                    }
                };
                (replica, reply)
            });
        }
        let mut replies = Vec::with_capacity(replicas.len());
        while let Some(answer) = answers.join_next().await {
            match answer {
                Ok(reply) => replies.push(reply),
                Err(error) => tracing::error!(%error, "a tombstone collection phase failed"),
            }
        }
        replies
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::repair::tests::{compare_all, delete, eventually, isolate, put, records, three_nodes};
    use crate::cluster::wire::{Request, Value};
    use onggi_core::paxos::{Acceptance, Lineage, Promise, Version};
    use onggi_model::ops::{Backend, GetItemInput, RequestContext};

    /// The tombstones and live records `node` stores.
    fn census(node: &Node) -> (usize, usize) {
        let records = records(node);
        let tombstones = records.values().filter(|bytes| record_header(bytes).unwrap().1).count();
        (tombstones, records.len() - tombstones)
    }

    /// Offers a round over every partition on every node (each runs those it initiates).
    async fn rounds_everywhere(nodes: &[Node]) {
        for node in nodes {
            let cluster = node.cluster().unwrap().clone();
            let table = node.inner.catalog.get("repairs").unwrap();
            for partition in cluster.layout().partitions_of(cluster.me).collect::<Vec<_>>() {
                node.collection_round_if_due(&cluster, &table, partition).await;
            }
        }
    }

    fn stats(node: &Node) -> (u64, u64, u64, u64) {
        let stats = &node.cluster().unwrap().collector.stats;
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        (read(&stats.rounds), read(&stats.rounds_abandoned), read(&stats.removed), read(&stats.commits_dropped))
    }

    /// Three nodes whose tombstones may go as soon as a round runs (the tests run rounds
    /// themselves, one operation at a time, so no operation outlives a zero grace).
    async fn three_collecting_nodes() -> (Vec<Node>, Vec<std::net::SocketAddr>) {
        let (nodes, addresses) = three_nodes().await;
        for node in &nodes {
            node.set_tombstone_collection(Duration::ZERO, Duration::ZERO);
        }
        (nodes, addresses)
    }

    async fn get(node: &Node, pk: &str, sk: u64) -> bool {
        let key = serde_json::json!({"TableName": "repairs", "Key": {"pk": {"S": pk}, "sk": {"N": sk.to_string()}},
                                     "ConsistentRead": true});
        let input: GetItemInput = serde_json::from_value(key).unwrap();
        node.get_item(&RequestContext::default(), input).await.unwrap().item.is_some()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tombstones_go_once_every_replica_has_them_and_old_versions_stay_gone() {
        let (nodes, addresses) = three_collecting_nodes().await;
        for sk in 0..20 {
            put(&nodes[0], "p", sk, "first").await;
        }
        for sk in 0..10 {
            delete(&nodes[1], "p", sk).await;
        }
        for node in &nodes {
            eventually(|| (census(node) == (10, 10)).then_some(())).await;
        }
        let deleted_keys: Vec<Vec<u8>> = records(&nodes[2])
            .into_iter()
            .filter(|(_, bytes)| record_header(bytes).unwrap().1)
            .map(|(key, _)| key)
            .collect();
        // With one replica cut off, no round gets past its prepare: nothing is collected.
        isolate(&nodes, &addresses, 2, true);
        rounds_everywhere(&nodes[..2]).await;
        for node in &nodes[..2] {
            let (rounds, abandoned, removed, _) = stats(node);
            assert!(rounds == abandoned && removed == 0, "{:?}", stats(node));
        }
        for node in &nodes {
            assert_eq!(census(node), (10, 10));
        }
        isolate(&nodes, &addresses, 2, false);
        rounds_everywhere(&nodes).await;
        for node in &nodes {
            assert_eq!(census(node), (0, 10), "tombstones left on node {:?}", node.cluster().unwrap().me);
        }
        let removed: u64 = nodes.iter().map(|node| stats(node).2).sum();
        assert_eq!(removed, 30);
        // What the replicas keep in memory followed: no state of a collected item, and the
        // others' as stored.
        for node in &nodes {
            let (cluster, table) = (node.cluster().unwrap(), node.inner.catalog.get("repairs").unwrap());
            assert!(deleted_keys.iter().all(|key| cluster.acceptors.get(&table.schema.id, key).is_none()));
            crate::cluster::repair::tests::assert_cached_states_match_storage(node, records(node).into_keys());
        }
        for node in &nodes {
            for sk in 0..20 {
                assert_eq!(get(node, "p", sk).await, sk >= 10, "item {sk} through {:?}", node.cluster().unwrap().me);
            }
        }
        // A late copy of a version older than the delete (a hint, a delayed commit) is dropped,
        // and a proposal at an old ballot is refused.
        let table = nodes[2].inner.catalog.get("repairs").unwrap();
        let key_deleted = deleted_keys[0].clone();
        let old = Ballot { time: Timestamp::new(1, 0), node: NodeId(1 << 32) };
        let item = onggi_model::Item::default();
        let ghost =
            Version { ballot: old, value: Value { item: Some(item), lineage: Lineage::default(), expired: false } };
        let reply =
            nodes[2].replica(&table.schema.id, key_deleted.clone(), Request::Commit(ghost.clone())).await.unwrap();
        assert_eq!(reply, wire::Reply::Committed);
        assert_eq!(census(&nodes[2]), (0, 10), "the ghost was applied");
        assert!(stats(&nodes[2]).3 >= 1);
        let refused = nodes[2].replica(&table.schema.id, key_deleted.clone(), Request::Prepare(old)).await.unwrap();
        assert!(matches!(refused, wire::Reply::Promise(Promise::Refused(above)) if above > old), "{refused:?}");
        let refused = nodes[2].replica(&table.schema.id, key_deleted, Request::Accept(ghost)).await.unwrap();
        assert!(matches!(refused, wire::Reply::Acceptance(Acceptance::Refused(_))), "{refused:?}");
        // The collected items can be written again.
        put(&nodes[2], "p", 3, "again").await;
        for node in &nodes {
            assert!(get(node, "p", 3).await);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replica_that_missed_the_delete_holds_collection_back_until_repaired() {
        let (nodes, addresses) = three_collecting_nodes().await;
        for sk in 0..6 {
            put(&nodes[0], "q", sk, "first").await;
        }
        for node in &nodes {
            eventually(|| (census(node) == (0, 6)).then_some(())).await;
        }
        // A replica other than the partition's initiator misses the deletes and keeps the old
        // versions (no hints: it is only cut off, and unit tests deliver none).
        let cluster = nodes[0].cluster().unwrap().clone();
        let key = records(&nodes[0]).into_keys().next().unwrap();
        let initiator = cluster.layout().replicas(cluster.layout().partition_of_key(&key))[0];
        let victim = (initiator.0 as usize) % 3; // the node after the initiator (ids are 1..=3)
        let coordinator = (victim + 1) % 3;
        isolate(&nodes, &addresses, victim, true);
        for sk in 0..3 {
            delete(&nodes[coordinator], "q", sk).await;
        }
        crate::cluster::repair::tests::hinted(&nodes[coordinator], 3).await;
        isolate(&nodes, &addresses, victim, false);
        assert_eq!(census(&nodes[victim]), (0, 6));
        // Its live versions differ from the others' tombstones: the round stops before adopting.
        rounds_everywhere(&nodes).await;
        let initiator = &nodes[initiator.0 as usize - 1];
        assert_eq!(stats(initiator).0, 1, "the initiator holds tombstones: it runs a round");
        assert_eq!(stats(initiator).1, 1, "and abandons it");
        assert_eq!(nodes.iter().map(|node| stats(node).2).sum::<u64>(), 0);
        assert_eq!(census(initiator), (3, 3));
        // Anti-entropy brings it the tombstones; then they all go.
        compare_all(initiator, NodeId(victim as u64 + 1)).await;
        assert_eq!(census(&nodes[victim]), (3, 3));
        rounds_everywhere(&nodes).await;
        for node in &nodes {
            assert_eq!(census(node), (0, 3));
        }
    }
}

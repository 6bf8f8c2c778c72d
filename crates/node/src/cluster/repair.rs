//! Anti-entropy: the replicas of a partition find what they disagree on, in the background, and
//! copy the newer versions across (the Dynamo paper's §4.7; `onggi_sim` runs the same design).
//!
//! A replica that was down, partitioned or paused misses commits. Hinted handoff (`hints.rs`)
//! brings it most of them soon after it is back, and consensus rounds on an item bring its
//! replicas up to date, but hints are best effort (bounded, not fsynced, lost with their
//! coordinator) and rounds happen only for items written or strictly read again. This task is
//! the guarantee: it covers the rest, and finishes proposals whose coordinator went away.
//!
//! **The walk.** A task started with the cluster visits, one after the other, every (table,
//! partition) pair this node replicates: each table of the catalog × `Layout::partitions_of(me)`.
//! A *sweep* is one walk over all of them; then it starts again. A visit:
//! 1. finishes abandoned proposals: entries of the table's `consensus.<id>` tree in the
//!    partition's token range whose accepted proposal is older than [`STALE_PROPOSAL_MS`] by its
//!    ballot's HLC time (its coordinator crashed or gave up, or the commit was lost) get a strict
//!    read through the coordinator's read path, which completes and commits the proposal (not
//!    scanned when the last scan found no proposal there and none was written since);
//! 2. compares the partition with one other replica of it, picked at random (a peer that just
//!    failed to answer is avoided for [`SUSPECT_PEER_FOR`] when another replica is left).
//!
//! **A comparison** ([`onggi_core::merkle`]). Each side compares its Merkle tree of the
//! partition's token range for that table (key ‖ version stamp of every record, tombstones
//! included). A partition large enough for it keeps a *live* tree, current with every commit
//! (`live_trees.rs`): two replicas that agree compare in one round trip without reading their
//! data. A smaller one (at most a leaf's worth of entries) is scanned for each comparison, in a
//! blocking thread. The initiator chooses the depth from the table's size here ([`tree_depth`]:
//! about [`ENTRIES_PER_LEAF`] entries per leaf, at most [`TREE_DEPTH_MAX`] = 10 levels, 1,024
//! leaves), or takes its live tree's when it is within a level of that, so that a small partition
//! costs few round trips and a large one exchanges few records per differing leaf; the shape
//! travels in every request and the responder answers from its live tree (folded when deeper),
//! builds one, or builds a tree to that shape by a scan. The initiator runs a [`Comparison`] over
//! `wire::tag::MERKLE` requests, at most [`HASHES_PER_MESSAGE`] digests per message; the
//! responder answers each with [`merkle::respond`]. Identical replicas finish in one round trip
//! carrying one digest; an isolated difference costs `1 + ⌈depth / 2⌉` round trips (six at depth
//! 10) and at most 21 digests. The responder keeps the trees it scans for [`TREE_CACHE_TTL`] (at
//! most [`TREE_CACHE_ENTRIES_MAX`] of them, dropped when anti-entropy writes into their
//! partition), so the several requests of one comparison scan storage once; the initiator uses
//! the same cache. A request not answered within [`MERKLE_REQUEST_TIMEOUT`], a refusal or a
//! malformed answer abandons the comparison; the next sweep tries again.
//!
//! **The exchange** (`wire::tag::RANGE_SYNC`, on the bulk lane). For each differing token range,
//! the initiator walks the range in steps. A step covers a key interval `[lower, upper)`: the
//! initiator pushes its records of every key in it (at most [`BATCH_RECORDS_MAX`] records or
//! [`BATCH_BYTES_MAX`] bytes, the interval ending after the last key sent when the batch is
//! full); the responder applies those newer than its own and answers with its records in the
//! interval that the push lacks or holds older, under the same bounds. When its answer is full it
//! says after which key it stopped, and the step covered the interval only up to there, on both
//! sides (pushed records beyond it are ignored and sent again by the next step). Both sides apply
//! what they receive through the replica's own commit path (`Node::replica` with
//! `Request::Commit`), which takes the item's lock, ignores versions not newer than the committed
//! one, and keeps index entries, statistics and consensus state right. Only committed versions
//! travel (records of the items tree), so spreading them never makes an unchosen proposal chosen.
//!
//! **Rates** (the constants below). Visits run one at a time. After a visit whose replicas agreed
//! at once (one round trip, nothing exchanged) the next starts [`AGREED_VISIT_INTERVAL`] = 5 ms
//! later at the soonest; after any other, [`VISIT_INTERVAL`] = 20 ms later
//! ([`COMPARISONS_PER_SECOND_MAX`] = 50 a second). So a sweep of a table's 256 partitions takes
//! about 1.3 s when they agree (a visit of a small partition costs about a millisecond, so the
//! walk keeps a few percent of a core busy on each side) and up to 5.1 s when every one
//! differs; the registry of table descriptions is walked like a table. And after local work that took `W` — scans, building trees,
//! applying versions — the task waits at least [`WORK_PAUSE_FACTOR`] × `W` (4 ×: the walk keeps
//! a node's storage and a core busy a fifth of the time at most; answering a peer's comparison
//! costs the peer about as much, so on large partitions a node spends up to about two fifths of a
//! core on anti-entropy, its walk and its answers, and the walk slows rather than foreground
//! requests). Waiting for a peer is not work: a peer that does not answer delays the walk by
//! [`MERKLE_REQUEST_TIMEOUT`] at most, and is avoided for a while. A comparison moves at most
//! [`RANGE_STEPS_PER_COMPARISON_MAX`] batches (64 MiB each way); repaired ranges compare equal
//! next time, so a larger difference takes several sweeps. Answering peers is not paced here: it
//! is paced by the peers' own walks.
//!
//! **Cost.** Live trees make a sweep over replicas that agree cost a round trip per partition and
//! no disk read; the step 1 scan of the consensus tree is skipped where the last one found no
//! proposal and none was written since. Building a live tree reads its partition once (at the
//! first visit after a start, when the table has grown a lot, and every ten minutes or so); on
//! three nodes holding 100,000 items of 1 KB, the idle cluster's CPU went from about half a core
//! to a tenth. Small partitions are still scanned on each visit (at most a leaf's worth).
//!
//! **Counters.** What happens is counted in [`RepairStats`] (comparisons run, abandoned and with
//! differences; versions sent, received and applied; proposals finished; live trees built), and
//! each sweep ends with a summary at debug level.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use onggi_core::consensus_state::ConsensusState;
use onggi_core::keys::TOKEN_BYTES;
use onggi_core::layout::{NodeId, PartitionId};
use onggi_core::merkle::{self, Comparison, MerkleTree, Refusal, Shape};
use onggi_core::paxos::{Ballot, Version};
use onggi_core::record::{RECORD_FORMAT_VERSION, Record};
use onggi_storage::{Direction, Engine, Tree};
use onggi_transport::Lane;

use super::wire::{self, KeyRecord, RangeSync, RangeSyncReply, Request, Value};
use super::{Cluster, live_trees};
use crate::catalog::TableHandle;
use crate::items::{Effect, WriteOrigin};
use crate::{Inner, Node, wall_clock_ms};

/// Visits (each at most one comparison) one node starts per second at most.
pub(crate) const COMPARISONS_PER_SECOND_MAX: u64 = 50;
/// The least time between the starts of two visits.
const VISIT_INTERVAL: Duration = Duration::from_millis(1_000 / COMPARISONS_PER_SECOND_MAX);
/// The least time between the start of a visit whose replicas agreed at once and the next: such a
/// visit costs one round trip and the building of a tree, paid for by the pause after work, so
/// partitions that agree (empty ones, most of a small table's, and the registry's) are walked
/// faster and a sweep's time follows the data that differs rather than the partition count.
const AGREED_VISIT_INTERVAL: Duration = Duration::from_millis(5);

/// What one visit did.
struct Visit {
    /// Local work (scans, building trees), which the walk pauses after in proportion.
    work: Duration,
    /// Whether the replicas compared equal at once (nothing to exchange).
    agreed: bool,
}
/// After local work that took `W` (storage scans, building trees, applying versions), the task
/// waits at least this many times `W`.
const WORK_PAUSE_FACTOR: u32 = 4;
/// How long the task waits before looking again when there is nothing to walk.
const IDLE_PAUSE: Duration = Duration::from_secs(1);
/// The deepest tree built or answered for: 1,024 leaves per partition, about 49 KiB.
const TREE_DEPTH_MAX: u8 = merkle::DEPTH_DEFAULT;
/// The entries per leaf the initiator aims at when it chooses a depth: a differing leaf costs
/// about this many records pushed.
const ENTRIES_PER_LEAF: u64 = 16;
/// Digests per comparison message: 4 KiB of digests.
const HASHES_PER_MESSAGE: u32 = merkle::HASHES_PER_MESSAGE_DEFAULT;
/// Round trips one comparison may take: at depth 10 and 256 digests per message it needs at
/// most 9 (levels 0, 2, 4, 6, 8 in one message each, level 10 in four).
const ROUND_TRIPS_MAX: u32 = 64;
/// How long the initiator waits for each answer of a comparison (the first one may need a scan of
/// the partition on the responder).
const MERKLE_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the initiator waits for the answer to a push (the responder applies up to a batch
/// of versions before answering).
const RANGE_SYNC_TIMEOUT: Duration = Duration::from_secs(15);
/// Records per batch, each way. Small under test, so that tests cross batch boundaries.
#[cfg(not(test))]
const BATCH_RECORDS_MAX: usize = 1_024;
#[cfg(test)]
const BATCH_RECORDS_MAX: usize = 7;
/// Bytes of keys and records per batch, each way (a batch ends after the record that reaches it).
const BATCH_BYTES_MAX: usize = 1 << 20;
/// Steps (batches each way) one comparison's exchange takes at most.
const RANGE_STEPS_PER_COMPARISON_MAX: u32 = 64;
/// How long a built tree may serve further requests.
const TREE_CACHE_TTL: Duration = Duration::from_secs(2);
/// Trees kept at most (about 49 KiB each at depth 10).
const TREE_CACHE_ENTRIES_MAX: usize = 16;
/// Accepted proposals older than this (by their ballot's HLC time) are finished: five times a
/// coordinator's round timeout, so their coordinator has long moved to another ballot or gone.
const STALE_PROPOSAL_MS: u64 = 5_000;
/// Abandoned proposals one visit finishes at most (the rest wait for the next sweep).
const PROPOSALS_PER_VISIT_MAX: usize = 32;
/// How long a peer that failed a comparison is avoided when another replica is available.
const SUSPECT_PEER_FOR: Duration = Duration::from_secs(10);

const _: () = assert!(COMPARISONS_PER_SECOND_MAX >= 1 && COMPARISONS_PER_SECOND_MAX <= 1_000);
const _: () = assert!(TREE_DEPTH_MAX <= merkle::DEPTH_MAX);
const _: () = assert!(ENTRIES_PER_LEAF >= 1);
const _: () = assert!(HASHES_PER_MESSAGE >= 1 && HASHES_PER_MESSAGE <= merkle::HASHES_PER_MESSAGE_MAX);
// A batch ends after the record that reaches the bound: one more item (400 KB and its key and
// header) fits in a frame beside a full batch.
const _: () = assert!(BATCH_BYTES_MAX + (1 << 20) <= onggi_transport::FRAME_BYTES_MAX_DEFAULT);
// The version of a stored record is read from its header (see `record_ballot`), whose layout is
// that of record format 2.
const _: () = assert!(RECORD_FORMAT_VERSION == 2);

/// Anti-entropy's state on a node: its counters, the trees recently built, and peers to avoid.
#[derive(Default)]
pub(crate) struct Repair {
    /// What happened so far.
    pub(crate) stats: RepairStats,
    /// Trees built recently, so that the requests of one comparison scan storage once.
    trees: Mutex<TreeCache>,
    /// Peers that failed a comparison, and until when they are avoided.
    suspects: Mutex<HashMap<NodeId, Instant>>,
    /// Numbers live trees' builds.
    builds: AtomicU64,
}

/// Counters of anti-entropy on one node since it started (what `onggi cluster status` will show).
#[derive(Default)]
pub(crate) struct RepairStats {
    /// Sweeps finished: walks over every (table, partition) this node replicates.
    pub(crate) sweeps: AtomicU64,
    /// Comparisons this node started.
    pub(crate) comparisons: AtomicU64,
    /// Of those, abandoned: a peer that did not answer in time, refused or answered nonsense, or
    /// an error here.
    pub(crate) comparisons_abandoned: AtomicU64,
    /// Of those, found differing ranges.
    pub(crate) comparisons_with_differences: AtomicU64,
    /// Versions this node sent to peers, pushing (initiator) or answering (responder).
    pub(crate) versions_sent: AtomicU64,
    /// Versions received from peers, in either role.
    pub(crate) versions_received: AtomicU64,
    /// Of those, newer than this replica's and applied.
    pub(crate) versions_applied: AtomicU64,
    /// Abandoned proposals finished by a strict read.
    pub(crate) proposals_finished: AtomicU64,
    /// Live Merkle trees built from storage (`live_trees.rs`): one per large partition at start,
    /// then a rebuild every ten minutes or so, or after a drift.
    pub(crate) live_trees_built: AtomicU64,
}

/// A reading of [`RepairStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RepairCounts {
    /// See [`RepairStats::sweeps`].
    pub(crate) sweeps: u64,
    /// See [`RepairStats::comparisons`].
    pub(crate) comparisons: u64,
    /// See [`RepairStats::comparisons_abandoned`].
    pub(crate) comparisons_abandoned: u64,
    /// See [`RepairStats::comparisons_with_differences`].
    pub(crate) comparisons_with_differences: u64,
    /// See [`RepairStats::versions_sent`].
    pub(crate) versions_sent: u64,
    /// See [`RepairStats::versions_received`].
    pub(crate) versions_received: u64,
    /// See [`RepairStats::versions_applied`].
    pub(crate) versions_applied: u64,
    /// See [`RepairStats::proposals_finished`].
    pub(crate) proposals_finished: u64,
    /// See [`RepairStats::live_trees_built`].
    pub(crate) live_trees_built: u64,
}

impl RepairStats {
    /// The counters now.
    pub(crate) fn snapshot(&self) -> RepairCounts {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        RepairCounts {
            sweeps: read(&self.sweeps),
            comparisons: read(&self.comparisons),
            comparisons_abandoned: read(&self.comparisons_abandoned),
            comparisons_with_differences: read(&self.comparisons_with_differences),
            versions_sent: read(&self.versions_sent),
            versions_received: read(&self.versions_received),
            versions_applied: read(&self.versions_applied),
            proposals_finished: read(&self.proposals_finished),
            live_trees_built: read(&self.live_trees_built),
        }
    }

    fn add(counter: &AtomicU64, amount: usize) {
        counter.fetch_add(amount as u64, Ordering::Relaxed);
    }
}

/// Recently built trees, by (table id, partition), oldest first.
#[derive(Default)]
struct TreeCache {
    entries: VecDeque<CachedTree>,
}

struct CachedTree {
    table_id: String,
    partition: PartitionId,
    built: Instant,
    tree: Arc<MerkleTree>,
}

impl TreeCache {
    fn get(&mut self, table_id: &str, partition: PartitionId, shape: Shape, now: Instant) -> Option<Arc<MerkleTree>> {
        self.entries.retain(|entry| now.saturating_duration_since(entry.built) < TREE_CACHE_TTL);
        self.entries
            .iter()
            .find(|entry| entry.table_id == table_id && entry.partition == partition && entry.tree.shape() == shape)
            .map(|entry| entry.tree.clone())
    }

    fn insert(&mut self, table_id: &str, partition: PartitionId, built: Instant, tree: Arc<MerkleTree>) {
        self.invalidate(table_id, partition);
        self.entries.push_back(CachedTree { table_id: table_id.to_string(), partition, built, tree });
        while self.entries.len() > TREE_CACHE_ENTRIES_MAX {
            self.entries.pop_front();
        }
    }

    /// Forgets the tree of a partition whose data anti-entropy just changed. (A build that started
    /// before the change may still put an older tree back; it lives [`TREE_CACHE_TTL`] at most,
    /// and costs at worst a needless exchange or a difference found one sweep later.)
    fn invalidate(&mut self, table_id: &str, partition: PartitionId) {
        self.entries.retain(|entry| entry.table_id != table_id || entry.partition != partition);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Why a comparison was abandoned.
#[derive(Debug)]
enum Abandoned {
    /// The peer did not answer in time, refused, or answered something unusable.
    Peer(String),
    /// Something failed here (storage, most likely).
    Local(String),
}

/// The storage key made of a token alone: the lowest key of that token.
fn token_key(token: u64) -> Vec<u8> {
    token.to_be_bytes().to_vec()
}

/// The key interval of the tokens `[first, last]`: from the first token's lowest key (inclusive)
/// to the next token's lowest key (exclusive), or to the end of the key space.
pub(super) fn token_interval(first: u64, last: u64) -> (Vec<u8>, Option<Vec<u8>>) {
    (token_key(first), last.checked_add(1).map(token_key))
}

/// The smallest key above `key`.
pub(super) fn successor(key: &[u8]) -> Vec<u8> {
    let mut next = Vec::with_capacity(key.len() + 1);
    next.extend_from_slice(key);
    next.push(0);
    next
}

fn in_interval(key: &[u8], lower: &[u8], upper: Option<&[u8]>) -> bool {
    key >= lower && upper.is_none_or(|upper| key < upper)
}

pub(super) fn bounds(lower: &[u8], upper: Option<&[u8]>) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    (Bound::Included(lower.to_vec()), upper.map_or(Bound::Unbounded, |upper| Bound::Excluded(upper.to_vec())))
}

/// The version of stored record bytes. A scan reads every record of a partition, so format 2's
/// header is read in place (`[2][flags][time u64 BE][node u64 BE]`, see `onggi_core::record`)
/// instead of decoding the item; anything else is decoded in full, which refuses what is invalid.
fn record_ballot(bytes: &[u8]) -> Result<Ballot, String> {
    if bytes.len() >= 18 && bytes[0] == RECORD_FORMAT_VERSION {
        let word = |at: usize| {
            let mut array = [0u8; 8];
            array.copy_from_slice(&bytes[at..at + 8]);
            u64::from_be_bytes(array)
        };
        return Ok(Ballot { time: onggi_core::hlc::Timestamp(word(2)), node: NodeId(word(10)) });
    }
    Record::decode(bytes).map(|record| record.version).map_err(|error| format!("stored record unreadable: {error}"))
}

/// The depth of the trees to compare for a partition of about `entries` entries: the smallest
/// that gives at most [`ENTRIES_PER_LEAF`] entries per leaf, at most [`TREE_DEPTH_MAX`].
fn tree_depth(entries: u64) -> u8 {
    let mut depth = 0;
    while depth < TREE_DEPTH_MAX && entries > ENTRIES_PER_LEAF << depth {
        depth += 1;
    }
    depth
}

/// Builds the Merkle tree of the records of `items` in `shape`'s token range. Blocking: a scan.
fn build_tree(engine: &dyn Engine, items: &Tree, shape: Shape) -> Result<MerkleTree, String> {
    let mut tree = MerkleTree::new(shape.first, shape.last, shape.depth).map_err(|error| error.to_string())?;
    let (lower, upper) = token_interval(shape.first, shape.last);
    let (lower, upper) = bounds(&lower, upper.as_deref());
    for entry in engine.range(items, lower, upper, Direction::Forward).map_err(|error| error.to_string())? {
        let (key, value) = entry.map_err(|error| error.to_string())?;
        let ballot = record_ballot(&value)?;
        tree.insert(&key, &merkle::version_stamp(ballot.time, ballot.node)).map_err(|error| error.to_string())?;
    }
    tree.refresh();
    Ok(tree)
}

/// A batch of records from `lower` (inclusive) up to `upper` (exclusive), and the last key it
/// holds when it stopped at the batch bounds. Blocking: a scan.
fn scan_batch(
    engine: &dyn Engine,
    items: &Tree,
    lower: &[u8],
    upper: Option<&[u8]>,
) -> Result<(Vec<KeyRecord>, Option<Vec<u8>>), String> {
    let (lower, upper) = bounds(lower, upper);
    let mut records = Vec::new();
    let mut bytes = 0;
    for entry in engine.range(items, lower, upper, Direction::Forward).map_err(|error| error.to_string())? {
        let (key, value) = entry.map_err(|error| error.to_string())?;
        bytes += key.len() + value.len();
        records.push((key, value));
        if records.len() >= BATCH_RECORDS_MAX || bytes >= BATCH_BYTES_MAX {
            let last = records.last().map(|(key, _)| key.clone());
            return Ok((records, last));
        }
    }
    Ok((records, None))
}

/// What the responder of a step finds in its own records.
struct Answer {
    /// Its records that the push lacks or holds older, ascending.
    records: Vec<KeyRecord>,
    /// The version of every key it read.
    own: BTreeMap<Vec<u8>, Ballot>,
    /// The last key read, when the answer reached the batch bounds.
    truncated_after: Option<Vec<u8>>,
}

/// The responder's side of a step: its records in `[lower, upper)` against `received` (the
/// versions pushed). Reads at most the pushed keys plus one batch. Blocking: a scan.
fn scan_answer(
    engine: &dyn Engine,
    items: &Tree,
    lower: &[u8],
    upper: Option<&[u8]>,
    received: &BTreeMap<Vec<u8>, Ballot>,
) -> Result<Answer, String> {
    let (lower, upper) = bounds(lower, upper);
    let mut answer = Vec::new();
    let mut own = BTreeMap::new();
    let mut bytes = 0;
    for entry in engine.range(items, lower, upper, Direction::Forward).map_err(|error| error.to_string())? {
        let (key, value) = entry.map_err(|error| error.to_string())?;
        let ballot = record_ballot(&value)?;
        own.insert(key.clone(), ballot);
        if received.get(&key).is_some_and(|theirs| *theirs >= ballot) {
            continue;
        }
        bytes += key.len() + value.len();
        answer.push((key, value));
        if answer.len() >= BATCH_RECORDS_MAX || bytes >= BATCH_BYTES_MAX {
            let truncated_after = answer.last().map(|(key, _)| key.clone());
            return Ok(Answer { records: answer, own, truncated_after });
        }
    }
    Ok(Answer { records: answer, own, truncated_after: None })
}

/// Keys of the entries of a consensus tree in `[first, last]` whose accepted proposal is older than
/// `stale_before_ms` (physical HLC milliseconds), at most [`PROPOSALS_PER_VISIT_MAX`], and whether
/// any entry there holds an accepted proposal at all. Blocking.
pub(super) fn scan_stale_proposals(
    engine: &dyn Engine,
    consensus: &Tree,
    first: u64,
    last: u64,
    stale_before_ms: u64,
) -> Result<(Vec<Vec<u8>>, bool), String> {
    let (lower, upper) = token_interval(first, last);
    let (lower, upper) = bounds(&lower, upper.as_deref());
    let mut stale = Vec::new();
    let mut any = false;
    for entry in engine.range(consensus, lower, upper, Direction::Forward).map_err(|error| error.to_string())? {
        let (key, value) = entry.map_err(|error| error.to_string())?;
        let state = match ConsensusState::decode(&value) {
            Ok(state) => state,
            Err(error) => {
                tracing::warn!(%error, "stored consensus state unreadable; anti-entropy skips it");
                any = true;
                continue;
            }
        };
        any |= state.accepted.is_some();
        if state.accepted.is_some_and(|accepted| accepted.version.time.physical_ms() < stale_before_ms) {
            stale.push(key);
            if stale.len() >= PROPOSALS_PER_VISIT_MAX {
                break;
            }
        }
    }
    Ok((stale, any))
}

/// The keys of `[first, last]` (tokens) with a proposal accepted at a ballot time at or below
/// `at_or_before` (at most [`PROPOSALS_PER_VISIT_MAX`]).
pub(super) fn scan_proposals_accepted_by(
    engine: &dyn Engine,
    consensus: &Tree,
    first: u64,
    last: u64,
    at_or_before: onggi_core::hlc::Timestamp,
) -> Result<Vec<Vec<u8>>, String> {
    let (lower, upper) = token_interval(first, last);
    let (lower, upper) = bounds(&lower, upper.as_deref());
    let mut keys = Vec::new();
    for entry in engine.range(consensus, lower, upper, Direction::Forward).map_err(|error| error.to_string())? {
        let (key, value) = entry.map_err(|error| error.to_string())?;
        let state = ConsensusState::decode(&value).map_err(|error| error.to_string())?;
        if state.accepted.is_some_and(|accepted| accepted.version.time <= at_or_before) {
            keys.push(key);
            if keys.len() >= PROPOSALS_PER_VISIT_MAX {
                break;
            }
        }
    }
    Ok(keys)
}

/// Runs blocking storage work on tokio's blocking pool, adding the time it took to `work`.
async fn blocking<T: Send + 'static>(
    work: &mut Duration,
    job: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let started = Instant::now();
    let result = tokio::task::spawn_blocking(job).await;
    *work += started.elapsed();
    result.map_err(|error| format!("storage task failed: {error}"))?
}

/// Waits [`WORK_PAUSE_FACTOR`] times the local work done since the last pause, and resets it.
async fn pause_for(work: &mut Duration) {
    let pause = work.saturating_mul(WORK_PAUSE_FACTOR);
    *work = Duration::ZERO;
    if !pause.is_zero() {
        tokio::time::sleep(pause).await;
    }
}

/// The walk: see the module docs. Holds the node only while visiting, so that dropping the node
/// ends the task.
async fn walk(node: Weak<Inner>) {
    let upgrade = || node.upgrade().map(|inner| Node { inner });
    loop {
        let started = Instant::now();
        let (tables, partitions) = {
            let Some(node) = upgrade() else { return };
            match node.cluster() {
                Some(cluster) => {
                    // Every replicated table, the registry of table descriptions included.
                    let tables: Vec<String> =
                        node.inner.catalog.tables().iter().map(|table| table.schema.id.clone()).collect();
                    (tables, cluster.layout().held_by(cluster.me))
                }
                // A cluster of one, until a member joins.
                None => (Vec::new(), Vec::new()),
            }
        };
        if tables.is_empty() || partitions.is_empty() {
            tokio::time::sleep(IDLE_PAUSE).await;
            continue;
        }
        for id in &tables {
            for &partition in &partitions {
                let visit_started = Instant::now();
                let visit = {
                    let Some(node) = upgrade() else { return };
                    let Some(cluster) = node.cluster().cloned() else { break };
                    let Some(table) = node.inner.catalog.get_by_id(id) else { break };
                    // A task of its own, so that a bug that panics ends one visit, not the walk.
                    tokio::spawn(async move { node.visit(&cluster, &table, partition).await })
                };
                let visit = visit.await.unwrap_or_else(|error| {
                    tracing::error!(%error, partition = partition.0, "an anti-entropy visit failed");
                    Visit { work: Duration::ZERO, agreed: false }
                });
                let mut work = visit.work;
                let earliest = visit_started + if visit.agreed { AGREED_VISIT_INTERVAL } else { VISIT_INTERVAL };
                pause_for(&mut work).await;
                tokio::time::sleep_until(earliest.into()).await;
            }
        }
        let Some(node) = upgrade() else { return };
        let Some(cluster) = node.cluster() else { continue };
        cluster.repair.stats.sweeps.fetch_add(1, Ordering::Relaxed);
        let counts = cluster.repair.stats.snapshot();
        tracing::debug!(
            sweep = counts.sweeps,
            tables = tables.len(),
            partitions = partitions.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            comparisons = counts.comparisons,
            abandoned = counts.comparisons_abandoned,
            with_differences = counts.comparisons_with_differences,
            versions_sent = counts.versions_sent,
            versions_received = counts.versions_received,
            versions_applied = counts.versions_applied,
            proposals_finished = counts.proposals_finished,
            "anti-entropy sweep finished (counts since start)"
        );
    }
}

impl Node {
    /// Starts anti-entropy for this node (see the module docs). Called once the cluster is set.
    pub(crate) fn spawn_repair(&self) {
        // This crate's unit tests drive visits and comparisons themselves, so that what they count
        // is theirs alone; the one that tests the walk starts it explicitly.
        if !cfg!(test) {
            self.start_walk();
        }
    }

    fn start_walk(&self) {
        tokio::spawn(walk(Arc::downgrade(&self.inner)));
    }

    /// One visit of the walk: finishes the partition's abandoned proposals, then compares it with
    /// another replica. Returns the local work not yet paced for.
    async fn visit(&self, cluster: &Arc<Cluster>, table: &Arc<TableHandle>, partition: PartitionId) -> Visit {
        let mut work = Duration::ZERO;
        self.finish_stale_proposals(cluster, table, partition, &mut work).await;
        let agreed = match self.pick_peer(cluster, partition) {
            Some(peer) => self.compare(cluster, table, partition, peer, &mut work).await,
            None => false,
        };
        self.offer_collection_round(cluster, table, partition);
        Visit { work, agreed }
    }

    /// Another replica of `partition`, at random, avoiding peers that recently failed when it can.
    fn pick_peer(&self, cluster: &Cluster, partition: PartitionId) -> Option<NodeId> {
        let others: Vec<NodeId> =
            cluster.layout().replicas_now(partition).into_iter().filter(|&id| id != cluster.me).collect();
        if others.is_empty() {
            return None;
        }
        let now = Instant::now();
        let healthy: Vec<NodeId> = {
            let mut suspects = lock(&cluster.repair.suspects);
            suspects.retain(|_, until| *until > now);
            others.iter().copied().filter(|peer| !suspects.contains_key(peer)).collect()
        };
        let pool = if healthy.is_empty() { &others } else { &healthy };
        Some(pool[self.inner.random_below(pool.len() as u64) as usize])
    }

    /// Finishes the proposals of `partition` abandoned in the table's consensus tree, by a strict
    /// read of each (the read path completes and commits an accepted proposal it finds).
    async fn finish_stale_proposals(
        &self,
        cluster: &Arc<Cluster>,
        table: &Arc<TableHandle>,
        partition: PartitionId,
        work: &mut Duration,
    ) {
        let consensus = match self.consensus_tree(cluster, table) {
            Ok(tree) => tree,
            Err(error) => {
                tracing::warn!(%error, table = %table.schema.name, "anti-entropy cannot open the consensus tree");
                return;
            }
        };
        // A partition whose consensus state held no proposal at the last scan, and got none
        // since, needs no scan: most do, and the tree of a busy table is full of the deletions
        // every commit leaves there, which a scan would read through.
        let floors = match self.table_floors(cluster, &table.schema.id) {
            Ok(floors) => floors,
            Err(error) => {
                tracing::warn!(%error, table = %table.schema.name, "anti-entropy cannot read the partition's state");
                return;
            }
        };
        let Some(part) = floors.partition(partition) else { return };
        let written = part.proposals_written();
        if part.known_free_of_proposals() {
            return;
        }
        let (first, last) = cluster.layout().partition_range(partition);
        let stale_before_ms = wall_clock_ms().saturating_sub(STALE_PROPOSAL_MS);
        let engine = self.inner.engine.clone();
        let scan = move || scan_stale_proposals(&*engine, &consensus, first, last, stale_before_ms);
        let stale = match blocking(work, scan).await {
            Ok((stale, any)) => {
                if !any {
                    part.free_of_proposals(written);
                }
                stale
            }
            Err(error) => {
                tracing::warn!(%error, table = %table.schema.name, "anti-entropy cannot read the consensus tree");
                return;
            }
        };
        for key in stale {
            let keep = |_: Option<&onggi_model::Item>| Ok((Effect::Keep, ()));
            match self.execute_replicated(cluster, table, key, true, WriteOrigin::Client, keep).await {
                Ok(_) => {
                    cluster.repair.stats.proposals_finished.fetch_add(1, Ordering::Relaxed);
                }
                Err(error) => {
                    // Its replicas are out of reach: the next sweep tries again.
                    tracing::debug!(%error, table = %table.schema.name, "an abandoned proposal could not be finished");
                    return;
                }
            }
        }
    }

    /// Compares `partition` of `table` with `peer` and exchanges the versions of the ranges that
    /// differ, counting the outcome.
    pub(super) async fn compare(
        &self,
        cluster: &Arc<Cluster>,
        table: &Arc<TableHandle>,
        partition: PartitionId,
        peer: NodeId,
        work: &mut Duration,
    ) -> bool {
        let stats = &cluster.repair.stats;
        stats.comparisons.fetch_add(1, Ordering::Relaxed);
        match self.run_comparison(cluster, table, partition, peer, work).await {
            Ok(false) => return true,
            Ok(true) => {
                stats.comparisons_with_differences.fetch_add(1, Ordering::Relaxed);
            }
            Err(Abandoned::Peer(reason)) => {
                stats.comparisons_abandoned.fetch_add(1, Ordering::Relaxed);
                lock(&cluster.repair.suspects).insert(peer, Instant::now() + SUSPECT_PEER_FOR);
                tracing::debug!(peer = peer.0, partition = partition.0, table = %table.schema.name, %reason, "anti-entropy comparison abandoned");
            }
            Err(Abandoned::Local(reason)) => {
                stats.comparisons_abandoned.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(peer = peer.0, partition = partition.0, table = %table.schema.name, %reason, "anti-entropy comparison failed here");
            }
        }
        false
    }

    /// The comparison itself; returns whether the trees differed.
    async fn run_comparison(
        &self,
        cluster: &Arc<Cluster>,
        table: &Arc<TableHandle>,
        partition: PartitionId,
        peer: NodeId,
        work: &mut Duration,
    ) -> Result<bool, Abandoned> {
        let address = cluster.address(peer).ok_or_else(|| Abandoned::Local(format!("no address for {peer:?}")))?;
        let (first, last) = cluster.layout().partition_range(partition);
        let held = cluster.layout().held_by(cluster.me).len() as u64;
        let items = u64::try_from(table.stats.item_count.load(Ordering::Relaxed)).unwrap_or(0);
        let estimate = items / held.max(1);
        let shape = Shape { first, last, depth: tree_depth(estimate) };
        let ours =
            self.comparison_tree(cluster, table, partition, shape, estimate, work).await.map_err(Abandoned::Local)?;
        let mut comparison =
            Comparison::new(&ours, HASHES_PER_MESSAGE).map_err(|error| Abandoned::Local(error.to_string()))?;
        let mut round_trips = 0;
        while let Some(request) = comparison.poll_request() {
            round_trips += 1;
            if round_trips > ROUND_TRIPS_MAX {
                return Err(Abandoned::Local(format!("comparison took more than {ROUND_TRIPS_MAX} round trips")));
            }
            let payload = Bytes::from(wire::encode_merkle_request(&table.schema.id, partition.0, &request));
            let answer = cluster
                .transport
                .request(address, wire::tag::MERKLE, payload, MERKLE_REQUEST_TIMEOUT)
                .await
                .map_err(|error| Abandoned::Peer(error.to_string()))?;
            let response = wire::decode_merkle_response(&answer).map_err(|error| Abandoned::Peer(error.to_string()))?;
            comparison.handle_response(&ours, response).map_err(|error| Abandoned::Peer(error.to_string()))?;
        }
        if !comparison.is_finished() {
            return Err(Abandoned::Local("the comparison stopped before finishing".into()));
        }
        let ranges = comparison.differing_ranges();
        if ranges.is_empty() {
            return Ok(false);
        }
        tracing::debug!(peer = peer.0, partition = partition.0, table = %table.schema.name, ranges = ranges.len(), "anti-entropy found differences");
        for (start, end) in ranges {
            self.exchange_range(cluster, table, partition, address, start, end, work).await?;
        }
        Ok(true)
    }

    /// The tree an initiator compares `partition` of `table` with, for a partition of about
    /// `estimate` entries: its live tree when it has one of about `wanted`'s depth (within a level),
    /// else a new live tree when the partition is large enough for one, else one built by a scan.
    async fn comparison_tree(
        &self,
        cluster: &Arc<Cluster>,
        table: &TableHandle,
        partition: PartitionId,
        wanted: Shape,
        estimate: u64,
        work: &mut Duration,
    ) -> Result<Arc<MerkleTree>, String> {
        let floors = self.table_floors(cluster, &table.schema.id)?;
        let part = floors.partition(partition).ok_or("no such partition")?;
        if let Some(depth) = part.live.depth()
            && depth.abs_diff(wanted.depth) < 2
            && let Some(tree) = part.live.snapshot(depth)
        {
            return Ok(Arc::new(tree));
        }
        if live_trees::worth_keeping(estimate)
            && !part.live.building()
            && let Some(tree) = self.build_live_tree(cluster, table, partition, wanted, work).await?
        {
            return Ok(Arc::new(tree));
        }
        self.partition_tree(cluster, table, partition, wanted, work).await
    }

    /// Builds the live tree of `partition` of `table` in `shape` (see `live_trees.rs` for why this
    /// misses no commit), and returns a copy of it; `None` when the build was overtaken.
    async fn build_live_tree(
        &self,
        cluster: &Arc<Cluster>,
        table: &TableHandle,
        partition: PartitionId,
        shape: Shape,
        work: &mut Duration,
    ) -> Result<Option<MerkleTree>, String> {
        let floors = self.table_floors(cluster, &table.schema.id)?;
        let part = floors.partition(partition).ok_or("no such partition")?;
        let build = cluster.repair.builds.fetch_add(1, Ordering::Relaxed);
        let (lower, upper) = token_interval(shape.first, shape.last);
        let (lower, upper) = bounds(&lower, upper.as_deref());
        let entries = {
            let _stopped = part.commits_stopped().await;
            part.live.begin_build(build);
            self.inner.engine.range(&table.tree, lower, upper, Direction::Forward)
        };
        let entries = match entries {
            Ok(entries) => entries,
            Err(error) => {
                part.live.abandon_build(build);
                return Err(error.to_string());
            }
        };
        let scanned = blocking(work, move || {
            let mut tree = MerkleTree::new(shape.first, shape.last, shape.depth).map_err(|error| error.to_string())?;
            for entry in entries {
                let (key, value) = entry.map_err(|error| error.to_string())?;
                let ballot = record_ballot(&value)?;
                tree.insert(&key, &merkle::version_stamp(ballot.time, ballot.node))
                    .map_err(|error| error.to_string())?;
            }
            Ok(tree)
        })
        .await;
        let tree = match scanned {
            Ok(tree) => tree,
            Err(error) => {
                part.live.abandon_build(build);
                return Err(error);
            }
        };
        let spread = live_trees::REBUILD_AFTER / 5;
        let rebuild_after = live_trees::REBUILD_AFTER + spread.mul_f64(self.inner.random_below(1_000) as f64 / 1_000.0);
        if part.live.finish_build(build, tree, rebuild_after) == live_trees::Built::Live {
            cluster.repair.stats.live_trees_built.fetch_add(1, Ordering::Relaxed);
        }
        Ok(part.live.snapshot(shape.depth))
    }

    /// This node's tree of `partition` of `table`, from the cache or built by a scan.
    async fn partition_tree(
        &self,
        cluster: &Cluster,
        table: &TableHandle,
        partition: PartitionId,
        shape: Shape,
        work: &mut Duration,
    ) -> Result<Arc<MerkleTree>, String> {
        if let Some(tree) = lock(&cluster.repair.trees).get(&table.schema.id, partition, shape, Instant::now()) {
            return Ok(tree);
        }
        let built = Instant::now();
        let (engine, items) = (self.inner.engine.clone(), table.tree.clone());
        let tree = Arc::new(blocking(work, move || build_tree(&*engine, &items, shape)).await?);
        lock(&cluster.repair.trees).insert(&table.schema.id, partition, built, tree.clone());
        Ok(tree)
    }

    /// The push-pull exchange of the tokens `[start, end]` with the peer at `address`, in steps of
    /// bounded batches (see the module docs).
    #[allow(clippy::too_many_arguments)]
    async fn exchange_range(
        &self,
        cluster: &Arc<Cluster>,
        table: &Arc<TableHandle>,
        partition: PartitionId,
        address: SocketAddr,
        start: u64,
        end: u64,
        work: &mut Duration,
    ) -> Result<(), Abandoned> {
        let stats = &cluster.repair.stats;
        let (mut lower, end_key) = token_interval(start, end);
        for _ in 0..RANGE_STEPS_PER_COMPARISON_MAX {
            let (engine, items) = (self.inner.engine.clone(), table.tree.clone());
            let (from, to) = (lower.clone(), end_key.clone());
            let (records, full_after) = blocking(work, move || scan_batch(&*engine, &items, &from, to.as_deref()))
                .await
                .map_err(Abandoned::Local)?;
            let upper = full_after.as_deref().map(successor).or_else(|| end_key.clone());
            let mut ours = BTreeMap::new();
            for (key, record) in &records {
                ours.insert(key.clone(), record_ballot(record).map_err(Abandoned::Local)?);
            }
            let pushed = records.len();
            let sync = RangeSync {
                table_id: table.schema.id.clone(),
                partition: partition.0,
                lower: lower.clone(),
                upper: upper.clone(),
                records,
            };
            let payload = Bytes::from(wire::encode_range_sync(&sync));
            let answer = cluster
                .transport
                .request_on(Lane::Bulk, address, wire::tag::RANGE_SYNC, payload, RANGE_SYNC_TIMEOUT)
                .await
                .map_err(|error| Abandoned::Peer(error.to_string()))?;
            RepairStats::add(&stats.versions_sent, pushed);
            let reply = wire::decode_range_sync_reply(&answer).map_err(|error| Abandoned::Peer(error.to_string()))?;
            if let Some(last) = &reply.truncated_after
                && !in_interval(last, &lower, upper.as_deref())
            {
                return Err(Abandoned::Peer("an answer that stops outside the interval asked about".into()));
            }
            let covered = reply.truncated_after.as_deref().map(successor).or_else(|| upper.clone());
            RepairStats::add(&stats.versions_received, reply.records.len());
            let mut newer = Vec::new();
            for (key, record) in reply.records {
                if !in_interval(&key, &lower, covered.as_deref()) {
                    return Err(Abandoned::Peer("an answer with a key outside the interval asked about".into()));
                }
                let theirs = Record::decode(&record).map_err(|error| Abandoned::Peer(error.to_string()))?;
                if ours.get(&key).is_none_or(|ours| *ours < theirs.version) {
                    newer.push((key, wire::from_record(theirs)));
                }
            }
            let started = Instant::now();
            let applied = self.apply_versions(cluster, table, partition, newer).await;
            *work += started.elapsed();
            RepairStats::add(&stats.versions_applied, applied);
            pause_for(work).await;
            match covered {
                Some(next) if Some(&next) != end_key.as_ref() => lower = next,
                _ => return Ok(()),
            }
        }
        // The step bound: what is left differs next time, and the next comparison continues.
        Ok(())
    }

    /// Applies chosen versions through the replica's commit path; returns how many succeeded.
    async fn apply_versions(
        &self,
        cluster: &Cluster,
        table: &TableHandle,
        partition: PartitionId,
        versions: Vec<(Vec<u8>, Version<Value>)>,
    ) -> usize {
        if versions.is_empty() {
            return 0;
        }
        let mut applied = 0;
        for (key, version) in versions {
            match self.replica(&table.schema.id, key, Request::Commit(version)).await {
                Ok(_) => applied += 1,
                Err(error) => {
                    tracing::warn!(%error, table = %table.schema.name, "anti-entropy could not apply a version")
                }
            }
        }
        lock(&cluster.repair.trees).invalidate(&table.schema.id, partition);
        applied
    }

    // ----- responder -----

    /// The partition a peer's request names, if this node replicates it, and the table it names.
    fn repair_target(
        &self,
        table_id: &str,
        partition: u32,
    ) -> Result<(Arc<Cluster>, Arc<TableHandle>, PartitionId), String> {
        let cluster = self.cluster().ok_or("not part of a cluster")?.clone();
        if partition >= cluster.layout().partition_count() {
            return Err(format!("no partition {partition}: the layout has {}", cluster.layout().partition_count()));
        }
        let partition = PartitionId(partition);
        if !cluster.layout().holds(cluster.me, partition) {
            return Err(format!("node {} does not replicate partition {}", cluster.me.0, partition.0));
        }
        let table = self.table_by_id(table_id).map_err(|error| error.message)?;
        Ok((cluster, table, partition))
    }

    /// Answers one step of a peer's Merkle comparison (`wire::tag::MERKLE`).
    pub(super) async fn answer_merkle(&self, payload: &[u8]) -> Result<Vec<u8>, String> {
        let (table_id, partition, request) = wire::decode_merkle_request(payload).map_err(|error| error.to_string())?;
        let (cluster, table, partition) = self.repair_target(&table_id, partition)?;
        let (first, last) = cluster.layout().partition_range(partition);
        let merkle::Request::Hashes { shape: asked, .. } = &request;
        // The initiator chooses the depth, up to ours; the interval is the partition's.
        let shape = Shape { first, last, depth: asked.depth.min(TREE_DEPTH_MAX) };
        if *asked != shape {
            // Not worth a scan: the answer is a refusal whatever the data.
            let refusal = merkle::Response::Refused(Refusal::ShapeMismatch { responder: shape });
            return Ok(wire::encode_merkle_response(&refusal));
        }
        let floors = self.table_floors(&cluster, &table.schema.id)?;
        let part = floors.partition(partition).ok_or("no such partition")?;
        if let Some(response) = part.live.respond(&request) {
            return Ok(wire::encode_merkle_response(&response));
        }
        // No live tree of this depth or deeper: build one when the initiator finds the partition
        // large enough for one (deeper than a live tree here, so that two initiators asking
        // different depths settle on the deeper, which answers both).
        let mut work = Duration::ZERO;
        // (The initiator chose a depth above the smallest from an estimate that was worth a
        // live tree.)
        if (cfg!(test) || shape.depth > tree_depth(live_trees::LIVE_ENTRIES_MIN))
            && !part.live.building()
            && part.live.depth().is_none_or(|depth| depth < shape.depth)
            && self.build_live_tree(&cluster, &table, partition, shape, &mut work).await?.is_some()
            && let Some(response) = part.live.respond(&request)
        {
            return Ok(wire::encode_merkle_response(&response));
        }
        let tree = self.partition_tree(&cluster, &table, partition, shape, &mut work).await?;
        Ok(wire::encode_merkle_response(&merkle::respond(&tree, &request)))
    }

    /// Answers a peer's push of versions (`wire::tag::RANGE_SYNC`): applies the newer ones and
    /// answers with the versions the push lacks or holds older (see the module docs).
    pub(super) async fn answer_range_sync(&self, payload: &[u8]) -> Result<Vec<u8>, String> {
        let sync = wire::decode_range_sync(payload).map_err(|error| error.to_string())?;
        let (cluster, table, partition) = self.repair_target(&sync.table_id, sync.partition)?;
        let stats = &cluster.repair.stats;
        let (first, last) = cluster.layout().partition_range(partition);
        let (partition_lower, partition_upper) = token_interval(first, last);
        let upper_inside = match (&sync.upper, &partition_upper) {
            (_, None) => true,
            (None, Some(_)) => false,
            (Some(upper), Some(partition_upper)) => upper <= partition_upper,
        };
        if sync.lower < partition_lower || !upper_inside {
            return Err(format!("a key interval outside partition {}", partition.0));
        }
        let mut received = BTreeMap::new();
        for (key, record) in &sync.records {
            if key.len() < TOKEN_BYTES || !in_interval(key, &sync.lower, sync.upper.as_deref()) {
                return Err("a pushed key outside the interval".into());
            }
            received.insert(key.clone(), record_ballot(record)?);
        }
        let (engine, items) = (self.inner.engine.clone(), table.tree.clone());
        let (lower, upper) = (sync.lower.clone(), sync.upper.clone());
        let mut work = Duration::ZERO;
        let (answer, received) = blocking(&mut work, move || {
            Ok((scan_answer(&*engine, &items, &lower, upper.as_deref(), &received)?, received))
        })
        .await?;
        let Answer { records: answer, own, truncated_after } = answer;
        // Pushed versions beyond the answer's end are not applied: the next step sends them again.
        let covered = truncated_after.as_deref().map(successor).or_else(|| sync.upper.clone());
        let mut newer = Vec::new();
        let mut counted = 0;
        for (key, record) in sync.records {
            if !in_interval(&key, &sync.lower, covered.as_deref()) {
                continue;
            }
            counted += 1;
            let ballot = received.get(&key).copied().unwrap_or(Ballot::ZERO);
            if own.get(&key).is_none_or(|own| *own < ballot) {
                let record = Record::decode(&record).map_err(|error| format!("pushed record: {error}"))?;
                newer.push((key, wire::from_record(record)));
            }
        }
        RepairStats::add(&stats.versions_received, counted);
        let applied = self.apply_versions(&cluster, &table, partition, newer).await;
        RepairStats::add(&stats.versions_applied, applied);
        RepairStats::add(&stats.versions_sent, answer.len());
        Ok(wire::encode_range_sync_reply(&RangeSyncReply { records: answer, truncated_after }))
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::cluster::ClusterConfig;
    use crate::{NodeConfig, StorageChoice};
    use onggi_core::hlc::Timestamp;
    use onggi_core::paxos::Lineage;
    use onggi_model::AttributeValue;
    use onggi_model::ops::{Backend, DeleteItemInput, PutItemInput, RequestContext};
    use onggi_model::table::CreateTableInput;
    use serde_json::json;

    pub(in crate::cluster) fn input<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
        serde_json::from_value(value).unwrap()
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    /// Three in-memory nodes on loopback, a cluster with N = 3, and a table with a sort key.
    pub(in crate::cluster) async fn three_nodes() -> (Vec<Node>, Vec<SocketAddr>) {
        let (nodes, addresses) = cluster_of(3).await;
        let create = json!({
            "TableName": "repairs", "BillingMode": "PAY_PER_REQUEST",
            "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"},
                                     {"AttributeName": "sk", "AttributeType": "N"}],
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}]
        });
        nodes[0].create_table(&RequestContext::default(), input::<CreateTableInput>(create)).await.unwrap();
        // The table's registry commits reach every replica before a test cuts one off (else a
        // late one becomes a hint the test does not expect).
        for node in &nodes {
            node.cluster().unwrap().sent_commits.settle().await;
        }
        (nodes, addresses)
    }

    /// `count` in-memory nodes on loopback, a cluster with N = 3 (fewer when `count` is).
    pub(in crate::cluster) async fn cluster_of(count: usize) -> (Vec<Node>, Vec<SocketAddr>) {
        let addresses: Vec<SocketAddr> =
            (0..count).map(|_| format!("127.0.0.1:{}", free_port()).parse().unwrap()).collect();
        let members: Vec<(u64, SocketAddr)> = addresses.iter().enumerate().map(|(i, a)| (i as u64 + 1, *a)).collect();
        let mut nodes = Vec::new();
        for (id, listen) in &members {
            let node =
                Node::open(NodeConfig { storage: StorageChoice::Memory, default_region: "us-east-1".into() }).unwrap();
            let config = ClusterConfig {
                node_id: *id,
                cluster_name: "repair-test".into(),
                listen: *listen,
                members: members.clone(),
                seeds: Vec::new(),
                replication: count.min(3),
                zones: BTreeMap::new(),
            };
            node.start_cluster(config).await.unwrap();
            // These tests choose which node coordinates a write: the one they send it to.
            if let Some(cluster) = node.cluster() {
                cluster.forwarding.store(false, Ordering::Relaxed);
            }
            nodes.push(node);
        }
        (nodes, addresses)
    }

    /// Cuts (or restores) every link between node `i` and the others, both ways.
    pub(in crate::cluster) fn isolate(nodes: &[Node], addresses: &[SocketAddr], i: usize, cut: bool) {
        for (j, node) in nodes.iter().enumerate() {
            if j == i {
                continue;
            }
            let pairs = [(node, addresses[i]), (&nodes[i], addresses[j])];
            for (from, to) in pairs {
                let faults = from.cluster().unwrap().transport.faults();
                if cut { faults.block(to) } else { faults.unblock(to) }
            }
        }
    }

    pub(in crate::cluster) async fn put(node: &Node, pk: &str, sk: u64, value: &str) {
        let item =
            json!({"TableName": "repairs", "Item": {"pk": {"S": pk}, "sk": {"N": sk.to_string()}, "v": {"S": value}}});
        node.put_item(&RequestContext::default(), input::<PutItemInput>(item)).await.unwrap();
    }

    pub(in crate::cluster) async fn delete(node: &Node, pk: &str, sk: u64) {
        let key = json!({"TableName": "repairs", "Key": {"pk": {"S": pk}, "sk": {"N": sk.to_string()}}});
        node.delete_item(&RequestContext::default(), input::<DeleteItemInput>(key)).await.unwrap();
    }

    /// Every record of the table on `node`, by storage key.
    pub(in crate::cluster) fn records(node: &Node) -> BTreeMap<Vec<u8>, Vec<u8>> {
        let table = node.inner.catalog.get("repairs").unwrap();
        node.inner
            .engine
            .range(&table.tree, Bound::Unbounded, Bound::Unbounded, Direction::Forward)
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    /// Polls `probe` until it gives an answer, for at most 5 s.
    pub(in crate::cluster) async fn eventually<T>(mut probe: impl FnMut() -> Option<T>) -> T {
        for _ in 0..500 {
            if let Some(answer) = probe() {
                return answer;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no answer within 5 s")
    }

    /// Waits until `node` has given up on `count` commits to an isolated replica and kept them as
    /// hints (a commit request to a cut link waits for its timeout): unblocking the link earlier
    /// would let a commit still on its way through, and the replica would not miss it.
    pub(in crate::cluster) async fn hinted(node: &Node, count: u64) {
        let cluster = node.cluster().unwrap().clone();
        eventually(|| (cluster.hints.counts().stored >= count).then_some(())).await;
    }

    /// Every partition of the table compared once from `node` with `peer`.
    pub(in crate::cluster) async fn compare_all(node: &Node, peer: NodeId) {
        let cluster = node.cluster().unwrap().clone();
        let table = node.inner.catalog.get("repairs").unwrap();
        for partition in cluster.layout().partitions_of(cluster.me).collect::<Vec<_>>() {
            let mut work = Duration::ZERO;
            node.compare(&cluster, &table, partition, peer, &mut work).await;
        }
    }

    /// Checks that every replica state `node` holds in memory for the test table's items is the
    /// one its storage holds (`acceptors.rs`), and that it holds some.
    pub(in crate::cluster) fn assert_cached_states_match_storage(node: &Node, keys: impl IntoIterator<Item = Vec<u8>>) {
        let cluster = node.cluster().unwrap().clone();
        let table = node.inner.catalog.get("repairs").unwrap();
        let consensus = node.consensus_tree(&cluster, &table).unwrap();
        let mut cached = 0;
        for key in keys {
            let Some(held) = cluster.acceptors.get(&table.schema.id, &key) else { continue };
            let (stored, present) = node.load_acceptor(&table, &consensus, &key).unwrap();
            assert_eq!((&held.acceptor, held.present), (&stored, present), "key {key:?}");
            cached += 1;
        }
        assert!(cached > 0, "node {} holds no state in memory", cluster.me.0);
    }

    /// Checks that every live tree of the test table on `node` is the tree a scan of its storage
    /// builds.
    pub(in crate::cluster) async fn assert_live_trees_follow_storage(node: &Node) {
        let cluster = node.cluster().unwrap().clone();
        let table = node.inner.catalog.get("repairs").unwrap();
        let floors = node.table_floors(&cluster, &table.schema.id).unwrap();
        let mut live = 0;
        for partition in cluster.layout().partitions_of(cluster.me).collect::<Vec<_>>() {
            let part = floors.partition(partition).unwrap();
            let Some(depth) = part.live.depth() else { continue };
            let (first, last) = cluster.layout().partition_range(partition);
            let scanned = build_tree(&*node.inner.engine, &table.tree, Shape { first, last, depth }).unwrap();
            let tree = part.live.snapshot(depth).unwrap();
            assert_eq!((tree.root(), tree.len()), (scanned.root(), scanned.len()), "partition {}", partition.0);
            live += 1;
        }
        assert!(live > 0, "node {} holds no live tree", cluster.me.0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replicas_that_missed_writes_both_ways_converge() {
        let (nodes, addresses) = three_nodes().await;
        // Node 3 misses these: 40 versions of one partition key, so of one leaf, many batches.
        isolate(&nodes, &addresses, 2, true);
        for sk in 0..40 {
            put(&nodes[0], "p", sk, "first").await;
        }
        hinted(&nodes[0], 40).await;
        isolate(&nodes, &addresses, 2, false);
        // Commits travel one way: let node 2 have them before node 1's links are cut.
        eventually(|| Some(()).filter(|_| records(&nodes[1]).len() == 40)).await;
        // Node 1 misses these: deletes (tombstones newer than its versions), newer versions, and
        // items it never saw, in several partitions.
        isolate(&nodes, &addresses, 0, true);
        for sk in 0..6 {
            delete(&nodes[2], "p", sk).await;
        }
        for sk in 30..35 {
            put(&nodes[2], "p", sk, "second").await;
        }
        for sk in 100..116 {
            put(&nodes[2], "p", sk, "fourth").await;
        }
        for pk in ["q", "r", "s"] {
            put(&nodes[2], pk, 1, "third").await;
        }
        hinted(&nodes[2], 30).await;
        isolate(&nodes, &addresses, 0, false);
        // Keys 0..40 (6 of them tombstones) and 100..116 of "p", and three more; commits reach
        // node 2 one way.
        let node2 = eventually(|| Some(records(&nodes[1])).filter(|records| records.len() == 59)).await;
        assert_ne!(records(&nodes[0]), node2);
        assert_ne!(records(&nodes[2]), node2);

        // One comparison per partition, from node 1 with node 3: node 1 pushes what node 3 lacks
        // and pulls what it lacks itself. Batches hold 7 records under test, so "p" takes steps
        // that end where node 1's batch is full, and steps that end where node 3's answer is.
        compare_all(&nodes[0], NodeId(3)).await;
        assert_eq!(records(&nodes[0]), node2, "node 1 converged");
        assert_eq!(records(&nodes[2]), node2, "node 3 converged");
        let first = nodes[0].cluster().unwrap().repair.stats.snapshot();
        assert_eq!((first.comparisons, first.comparisons_abandoned, first.comparisons_with_differences), (256, 0, 4));
        // Node 1 pushed its 40 versions of "p" and applied 6 tombstones, 5 newer versions and 19
        // new items; node 3 applied the 29 versions of "p" it lacked and no older one.
        assert_eq!((first.versions_sent, first.versions_applied), (40, 30), "{first:?}");
        let third = nodes[2].cluster().unwrap().repair.stats.snapshot();
        assert_eq!((third.versions_received, third.versions_applied, third.versions_sent), (40, 29, 30), "{third:?}");

        // Converged replicas compare equal: one round trip, nothing exchanged.
        let before = nodes[0].cluster().unwrap().repair.stats.snapshot();
        compare_all(&nodes[0], NodeId(2)).await;
        let after = nodes[0].cluster().unwrap().repair.stats.snapshot();
        assert_eq!(after.comparisons_with_differences, before.comparisons_with_differences);
        assert_eq!(after.comparisons_abandoned, before.comparisons_abandoned);

        // The comparisons ran on live trees (every partition qualifies under test), which the
        // exchanges' applied versions kept current; so do the commits of new writes, deletes and
        // tombstones included: each live tree is the tree a scan of storage builds.
        assert_eq!(after.live_trees_built, 256, "node 1 built each partition's tree once: {after:?}");
        for sk in 200..230 {
            put(&nodes[1], "p", sk, "fifth").await;
            put(&nodes[2], &format!("t{sk}"), 1, "fifth").await;
        }
        for sk in 6..12 {
            delete(&nodes[0], "p", sk).await;
        }
        let expected = eventually(|| {
            let node1 = records(&nodes[0]);
            Some(node1.clone())
                .filter(|node1| node1.len() == 59 + 60 && nodes[1..].iter().all(|n| records(n) == *node1))
        })
        .await;
        assert_eq!(expected.len(), 119);
        for node in &nodes {
            assert_live_trees_follow_storage(node).await;
            assert_cached_states_match_storage(node, expected.keys().cloned());
        }
        let before = nodes[0].cluster().unwrap().repair.stats.snapshot();
        compare_all(&nodes[0], NodeId(3)).await;
        let after = nodes[0].cluster().unwrap().repair.stats.snapshot();
        assert_eq!(after.comparisons_with_differences, before.comparisons_with_differences, "{after:?}");
        assert_eq!(after.live_trees_built, before.live_trees_built, "no rebuild: {after:?}");
        for node in &nodes {
            node.cluster().unwrap().transport.shutdown().await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_walk_repairs_a_replica_on_its_own() {
        let (nodes, addresses) = three_nodes().await;
        isolate(&nodes, &addresses, 2, true);
        for pk in 0..8 {
            put(&nodes[0], &format!("key-{pk}"), 0, "missed").await;
        }
        hinted(&nodes[0], 8).await;
        isolate(&nodes, &addresses, 2, false);
        let expected = eventually(|| Some(records(&nodes[1])).filter(|records| records.len() == 8)).await;
        assert!(records(&nodes[2]).is_empty());
        // Only node 3 walks: a sweep of the 256 partitions takes 1.3 to 5 s.
        let started = Instant::now();
        nodes[2].start_walk();
        while records(&nodes[2]) != expected {
            assert!(started.elapsed() < Duration::from_secs(30), "node 3 did not converge within 30 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let counts = nodes[2].cluster().unwrap().repair.stats.snapshot();
        assert!(counts.comparisons_with_differences >= 1 && counts.versions_applied >= 8, "{counts:?}");
        // The pace: no more visits than one per 5 ms, and no more that did not agree at once than
        // 50 a second (plus the one under way).
        let elapsed_ms = started.elapsed().as_millis() as u64;
        let allowed = elapsed_ms / AGREED_VISIT_INTERVAL.as_millis() as u64 + 1;
        assert!(counts.comparisons <= allowed, "{} comparisons, {allowed} allowed", counts.comparisons);
        let busy = counts.comparisons_with_differences + counts.comparisons_abandoned;
        let allowed = elapsed_ms * COMPARISONS_PER_SECOND_MAX / 1_000 + 1;
        assert!(busy <= allowed, "{busy} comparisons that did not agree, {allowed} allowed");
        for node in &nodes {
            node.cluster().unwrap().transport.shutdown().await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_abandoned_proposal_is_finished_and_committed_everywhere() {
        let (nodes, _addresses) = three_nodes().await;
        let key = onggi_core::keys::item_key(
            &AttributeValue::S("stale".into()),
            Some(&AttributeValue::N(onggi_model::Number::from_i64(1))),
        );
        let mut item = onggi_model::Item::new();
        item.insert("pk".into(), AttributeValue::S("stale".into()));
        item.insert("sk".into(), AttributeValue::N(onggi_model::Number::from_i64(1)));
        // A proposal accepted by two replicas a minute ago, whose coordinator never committed it.
        let ballot = Ballot { time: Timestamp::new(wall_clock_ms() - 60_000, 0), node: NodeId(3) };
        let lineage = Lineage { since: ballot.time, writers: vec![ballot] };
        let proposal = Version { ballot, value: Value { item: Some(item.clone()), lineage, expired: false } };
        let table_id = nodes[0].inner.catalog.get("repairs").unwrap().schema.id.clone();
        for node in &nodes[..2] {
            node.replica(&table_id, key.clone(), Request::Accept(proposal.clone())).await.unwrap();
        }
        let table = nodes[0].inner.catalog.get("repairs").unwrap();
        assert_eq!(nodes[0].read_current(&table, &key).unwrap(), None, "accepted, not committed");

        let cluster = nodes[0].cluster().unwrap().clone();
        let partition = cluster.layout().partition_of_key(&key);
        let mut work = Duration::ZERO;
        nodes[0].finish_stale_proposals(&cluster, &table, partition, &mut work).await;
        assert!(cluster.repair.stats.snapshot().proposals_finished >= 1);
        for node in &nodes {
            let table = node.inner.catalog.get("repairs").unwrap();
            let found = eventually(|| node.read_current(&table, &key).unwrap()).await;
            assert_eq!(found, item);
        }
        // The finished proposal no longer waits in node 1's consensus tree.
        let consensus = nodes[0].consensus_tree(&cluster, &table).unwrap();
        let stale = scan_stale_proposals(&*nodes[0].inner.engine, &consensus, 0, u64::MAX, wall_clock_ms()).unwrap();
        assert_eq!(stale, (Vec::new(), false));
        // Once a visit found no proposal there, the next ones skip the scan, until one is written.
        let floors = nodes[0].table_floors(&cluster, &table_id).unwrap();
        let part = floors.partition(partition).unwrap();
        assert!(!part.known_free_of_proposals(), "the first visit found the proposal");
        nodes[0].finish_stale_proposals(&cluster, &table, partition, &mut work).await;
        assert!(part.known_free_of_proposals());
        let next =
            Version { ballot: Ballot { time: Timestamp(proposal.ballot.time.0 + 1), ..proposal.ballot }, ..proposal };
        nodes[0].replica(&table_id, key.clone(), Request::Accept(next)).await.unwrap();
        assert!(!part.known_free_of_proposals(), "a proposal was written since");
        for node in &nodes {
            node.cluster().unwrap().transport.shutdown().await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn malformed_or_misdirected_requests_are_refused() {
        let (nodes, _addresses) = three_nodes().await;
        let node = &nodes[0];
        let table_id = node.inner.catalog.get("repairs").unwrap().schema.id.clone();
        let shape = Shape { first: 0, last: (1 << 56) - 1, depth: TREE_DEPTH_MAX };
        let ask = |partition, shape| {
            wire::encode_merkle_request(
                &table_id,
                partition,
                &merkle::Request::Hashes { shape, level: 0, nodes: vec![0] },
            )
        };
        assert!(node.answer_merkle(&ask(0, shape)).await.is_ok());
        assert!(node.answer_merkle(&ask(256, shape)).await.unwrap_err().contains("no partition 256"));
        assert!(node.answer_merkle(&[1, 2, 3]).await.is_err());
        let other = wire::encode_merkle_request(
            "no-such-table",
            0,
            &merkle::Request::Hashes { shape, level: 0, nodes: vec![0] },
        );
        assert!(node.answer_merkle(&other).await.is_err());
        // Any depth up to ours is answered; deeper trees and other intervals are refused in the
        // protocol's own terms.
        let shallow = Shape { depth: 3, ..shape };
        let answer = wire::decode_merkle_response(&node.answer_merkle(&ask(0, shallow)).await.unwrap()).unwrap();
        assert!(matches!(answer, merkle::Response::Hashes { level: 0, .. }), "{answer:?}");
        let deeper = Shape { depth: TREE_DEPTH_MAX + 1, ..shape };
        let refused = wire::decode_merkle_response(&node.answer_merkle(&ask(0, deeper)).await.unwrap()).unwrap();
        assert_eq!(refused, merkle::Response::Refused(Refusal::ShapeMismatch { responder: shape }));
        let wider = Shape { last: 1 << 56, ..shallow };
        let refused = wire::decode_merkle_response(&node.answer_merkle(&ask(0, wider)).await.unwrap()).unwrap();
        assert_eq!(refused, merkle::Response::Refused(Refusal::ShapeMismatch { responder: shallow }));

        let sync = |lower: Vec<u8>, upper: Option<Vec<u8>>, records: Vec<KeyRecord>| {
            wire::encode_range_sync(&RangeSync { table_id: table_id.clone(), partition: 1, lower, upper, records })
        };
        let (first, last) = (1u64 << 56, (2u64 << 56) - 1);
        let inside = sync(token_key(first), Some(token_key(last + 1)), vec![]);
        assert!(node.answer_range_sync(&inside).await.is_ok());
        for outside in [
            sync(token_key(first - 1), Some(token_key(last)), vec![]),
            sync(token_key(first), Some(token_key(last + 2)), vec![]),
            sync(token_key(first), None, vec![]),
            sync(token_key(first), Some(token_key(first + 5)), vec![(token_key(first + 9), vec![2; 18])]),
            sync(token_key(first), Some(token_key(first + 5)), vec![(token_key(first + 1), vec![9, 9])]),
        ] {
            assert!(node.answer_range_sync(&outside).await.is_err());
        }
        for node in &nodes {
            node.cluster().unwrap().transport.shutdown().await;
        }
    }

    #[test]
    fn the_version_read_from_a_header_is_the_decoded_one() {
        let ballot = Ballot { time: Timestamp(0x0102_0304_0506_0708), node: NodeId(0x1112_1314_1516_1718) };
        let mut item = onggi_model::Item::new();
        item.insert("pk".into(), AttributeValue::S("a".into()));
        for record in [
            Record { version: ballot, item: Some(item.clone()), expired: false, lineage: None },
            Record { version: ballot, item: None, expired: true, lineage: None },
            Record {
                version: ballot,
                item: Some(item),
                expired: false,
                lineage: Some(Lineage { since: Timestamp(1), writers: vec![ballot] }),
            },
        ] {
            assert_eq!(record_ballot(&record.encode()), Ok(ballot));
        }
        // Format 1 (no node id) is decoded in full, and reads as node 0.
        let mut version_one = vec![1, 0];
        version_one.extend_from_slice(&7u64.to_be_bytes());
        let decoded = Record::decode(&version_one).map(|record| record.version);
        assert_eq!(record_ballot(&version_one).ok(), decoded.ok());
        assert!(record_ballot(&[9, 9, 9]).is_err());
        assert!(record_ballot(&[]).is_err());
    }

    #[test]
    fn the_depth_follows_the_partition_size() {
        assert_eq!(
            [0, 1, 16, 17, 32, 33, 1_000, 16_384, 16_385, u64::MAX].map(tree_depth),
            [0, 0, 0, 1, 1, 2, 6, 10, 10, 10]
        );
    }

    #[test]
    fn intervals_and_successors() {
        assert_eq!(token_interval(5, 9), (token_key(5), Some(token_key(10))));
        assert_eq!(token_interval(5, u64::MAX), (token_key(5), None));
        assert!(successor(b"ab") > b"ab".to_vec() && successor(b"ab") < b"ab\x00\x00".to_vec());
        assert!(in_interval(b"b", b"a", Some(b"c")) && !in_interval(b"c", b"a", Some(b"c")));
        assert!(in_interval(b"\xFF\xFF", b"a", None) && !in_interval(b"0", b"a", None));
    }

    #[test]
    fn the_tree_cache_is_bounded_and_expires() {
        let mut cache = TreeCache::default();
        let shape = Shape { first: 0, last: u64::MAX, depth: 2 };
        let tree = Arc::new(MerkleTree::new(0, u64::MAX, 2).unwrap());
        let now = Instant::now();
        for partition in 0..TREE_CACHE_ENTRIES_MAX as u32 + 5 {
            cache.insert("t", PartitionId(partition), now, tree.clone());
        }
        assert_eq!(cache.entries.len(), TREE_CACHE_ENTRIES_MAX);
        assert!(cache.get("t", PartitionId(0), shape, now).is_none(), "the oldest went first");
        let newest = PartitionId(TREE_CACHE_ENTRIES_MAX as u32 + 4);
        assert!(cache.get("t", newest, shape, now).is_some());
        assert!(cache.get("t", newest, Shape { depth: 3, ..shape }, now).is_none(), "another shape");
        cache.invalidate("t", newest);
        assert!(cache.get("t", newest, shape, now).is_none());
        assert!(cache.get("t", PartitionId(10), shape, now + TREE_CACHE_TTL).is_none());
        assert!(cache.entries.is_empty(), "expired entries are dropped");
    }
}

//! Hinted handoff: commits a replica missed, kept by the coordinator and handed over when the
//! replica answers again (the Dynamo paper's §4.6).
//!
//! A coordinator sends a chosen version's commit to each remote replica as a request on
//! `wire::tag::CONSENSUS` (`Request::Commit`, answered `Reply::Committed`), in a background task:
//! the client's answer never waits for it. When the request fails — the replica is down,
//! partitioned, paused past [`super::ROUND_TIMEOUT`], overloaded, or answered with an error — the
//! coordinator writes a *hint*: the version, addressed to that replica, in its own `hints` tree.
//! A task started with the cluster then hands hints over to replicas that answer again, so a node
//! that was down for seconds catches up within about a second of its return instead of waiting
//! for anti-entropy's walk (`repair.rs`, about 5 s per table and sweep).
//!
//! **Hints are an optimisation; anti-entropy is the guarantee.** Hints are written without an
//! fsync (`Durability::Buffered`: they survive a process crash, not a power loss), their number
//! is bounded (new ones are dropped when the store is full), hints for tables deleted since, or
//! for nodes no longer members, are discarded, and the coordinator itself may die before it
//! delivers them. None of this loses data: the other replicas hold every chosen version, and
//! anti-entropy compares every partition with its replicas. Only chosen (committed) versions
//! become hints, and the replica applies them through its commit path, which keeps the newer of
//! its own version and the hinted one (merge by ballot), so a hint delivered late or twice is
//! harmless. This is also why a hint is never needed for correctness of reads: strict reads and
//! writes go through a majority, which a missed commit cannot fool.
//!
//! **Storage.** One tree, `hints`, keyed by [`hint_key`]: the target node id (8 bytes, big-endian,
//! so a target's hints are one contiguous range, in node order), the table id (u16 length +
//! UTF-8) and the item's storage key. The value is the version's [`Record`] in its own versioned
//! format. One entry per (target, item): a later hint for the same item replaces the stored one
//! only when its ballot is higher, so the queue holds at most one version per item and target.
//! The number of entries is counted at start (hints survive restarts) and kept current; once it
//! reaches the limit ([`HINTS_MAX_DEFAULT`], `Node::set_hint_limit`), new hints are dropped and
//! counted (a replaced hint takes no new room). Entries are read, written and deleted under a
//! stripe lock of their key, so the check before a write or a delete and the write itself are
//! one step.
//!
//! **Delivery.** Every [`DELIVERY_INTERVAL`], for each target with hints, the task reads them in
//! batches of [`BATCH_HINTS`], at most [`BATCHES_PER_TICK`] batches per target and tick (so at
//! most about 512 hints a second per target: a replica applies them as ordinary commits, and
//! foreground requests keep the rest of its time). The first hint of a batch probes the target
//! alone; when it fails the target is taken to be still down and left until the next tick; when
//! it succeeds the rest of the batch is sent at once. A delivered hint is deleted if the entry is
//! still the one delivered (a newer hint written meanwhile stays for the next tick). A hint whose
//! table no longer exists here, or whose target is no longer a member, is discarded. A hint the
//! target refuses with an error (for example a table it does not know yet) stays, and the next
//! batch continues after it, so hints that cannot be delivered yet do not block the others.
//!
//! **Counters** ([`HintStats`], shown by `onggi cluster status`): hints stored, delivered,
//! dropped (the store was full, or storage refused the write), discarded, and queued now.

use std::collections::HashMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use onggi_core::layout::NodeId;
use onggi_core::paxos::Version;
use onggi_core::record::Record;
use onggi_storage::{Direction, Durability, Engine, Tree, WriteBatch};

use super::wire::{self, Reply, Request, Value};
use super::{Cluster, ROUND_TIMEOUT};
use crate::{Inner, Node};

/// The name of the tree holding hints.
pub(crate) const HINTS_TREE: &str = "hints";
/// Hints a node keeps at most, unless configured otherwise.
pub const HINTS_MAX_DEFAULT: u64 = 100_000;
/// How often the delivery task looks for hints to hand over.
const DELIVERY_INTERVAL: Duration = Duration::from_millis(500);
/// Hints read and sent together.
const BATCH_HINTS: usize = 64;
/// Batches delivered to one target per tick at most: 256 hints, about 512 a second.
const BATCHES_PER_TICK: usize = 4;
/// Stripes of the lock that makes a hint's check and write one step.
const LOCK_STRIPES: usize = 64;

const _: () = assert!(BATCH_HINTS >= 1 && BATCHES_PER_TICK >= 1 && LOCK_STRIPES >= 1);

/// The storage key of a hint: `[target node id: u64 BE][table id: u16 length BE + UTF-8][item
/// storage key]`. Table ids are UUIDs (36 bytes); a longer one would be cut to its first
/// 65,535 bytes, which no table id reaches.
pub(crate) fn hint_key(target: NodeId, table_id: &str, key: &[u8]) -> Vec<u8> {
    let id = &table_id.as_bytes()[..table_id.len().min(usize::from(u16::MAX))];
    let mut out = Vec::with_capacity(8 + 2 + id.len() + key.len());
    out.extend_from_slice(&target.0.to_be_bytes());
    out.extend_from_slice(&(id.len() as u16).to_be_bytes());
    out.extend_from_slice(id);
    out.extend_from_slice(key);
    out
}

/// The parts of a hint's storage key: the target, the table id and the item's storage key.
pub(crate) fn decode_hint_key(bytes: &[u8]) -> Result<(NodeId, &str, &[u8]), String> {
    if bytes.len() < 10 {
        return Err(format!("a hint key of {} bytes", bytes.len()));
    }
    let target = NodeId(u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes")));
    let length = usize::from(u16::from_be_bytes(bytes[8..10].try_into().expect("2 bytes")));
    let rest = &bytes[10..];
    if rest.len() < length {
        return Err("a hint key shorter than its table id".into());
    }
    let (id, key) = rest.split_at(length);
    let id = std::str::from_utf8(id).map_err(|_| "a hint key whose table id is not UTF-8".to_string())?;
    Ok((target, id, key))
}

/// The target a hint key (or any key of the tree) belongs to: its first 8 bytes, a shorter key
/// padded with zeros.
fn key_target(key: &[u8]) -> NodeId {
    let mut bytes = [0u8; 8];
    let n = key.len().min(8);
    bytes[..n].copy_from_slice(&key[..n]);
    NodeId(u64::from_be_bytes(bytes))
}

/// The key range of a target's hints.
fn target_range(target: NodeId) -> (Vec<u8>, Bound<Vec<u8>>) {
    let upper = target.0.checked_add(1).map_or(Bound::Unbounded, |next| Bound::Excluded(next.to_be_bytes().to_vec()));
    (target.0.to_be_bytes().to_vec(), upper)
}

/// A node's hints: the tree, the limit, the stripe locks and the counters.
pub(crate) struct Hints {
    tree: Tree,
    max: AtomicU64,
    stripes: Box<[tokio::sync::Mutex<()>]>,
    /// What happened so far.
    pub(crate) stats: HintStats,
}

/// Counters of hinted handoff on one node since it started (`queued`: hints stored now).
#[derive(Default)]
pub(crate) struct HintStats {
    /// Hints written (new, or replacing an older one for the same item and target).
    pub(crate) stored: AtomicU64,
    /// Hints the target acknowledged.
    pub(crate) delivered: AtomicU64,
    /// Hints not kept: the store was full, or storage refused the write.
    pub(crate) dropped: AtomicU64,
    /// Hints deleted undelivered: their table no longer exists, their target is no longer a
    /// member, or the entry was unreadable.
    pub(crate) discarded: AtomicU64,
    /// Hints in the store now.
    pub(crate) queued: AtomicU64,
}

/// A reading of [`HintStats`] and the limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct HintCounts {
    pub(crate) stored: u64,
    pub(crate) delivered: u64,
    pub(crate) dropped: u64,
    pub(crate) discarded: u64,
    pub(crate) queued: u64,
    pub(crate) limit: u64,
}

impl Hints {
    /// Opens the hints tree and counts the hints it holds (they survive restarts).
    pub(crate) async fn open(engine: &Arc<dyn Engine>) -> Result<Hints, String> {
        let tree = engine.open_tree(HINTS_TREE).map_err(|error| format!("cannot open the hints tree: {error}"))?;
        let (scan_engine, scan_tree) = (engine.clone(), tree.clone());
        let count = tokio::task::spawn_blocking(move || -> Result<u64, String> {
            let entries = scan_engine
                .range(&scan_tree, Bound::Unbounded, Bound::Unbounded, Direction::Forward)
                .map_err(|error| error.to_string())?;
            let mut count = 0;
            for entry in entries {
                entry.map_err(|error| error.to_string())?;
                count += 1;
            }
            Ok(count)
        })
        .await
        .map_err(|error| format!("counting hints failed: {error}"))?
        .map_err(|error| format!("cannot read the hints tree: {error}"))?;
        if count > 0 {
            tracing::info!(hints = count, "hints kept from before the restart will be delivered");
        }
        let stats = HintStats::default();
        stats.queued.store(count, Ordering::Relaxed);
        Ok(Hints {
            tree,
            max: AtomicU64::new(HINTS_MAX_DEFAULT),
            stripes: (0..LOCK_STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            stats,
        })
    }

    /// The counters now.
    pub(crate) fn counts(&self) -> HintCounts {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        HintCounts {
            stored: read(&self.stats.stored),
            delivered: read(&self.stats.delivered),
            dropped: read(&self.stats.dropped),
            discarded: read(&self.stats.discarded),
            queued: read(&self.stats.queued),
            limit: read(&self.max),
        }
    }

    async fn lock(&self, key: &[u8]) -> tokio::sync::MutexGuard<'_, ()> {
        let stripe = xxhash_rust::xxh3::xxh3_64(key) as usize % self.stripes.len();
        self.stripes[stripe].lock().await
    }
}

/// What became of one delivery attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// The target applied it (or already had it or newer).
    Delivered,
    /// It can never be delivered: delete it.
    Discard(&'static str),
    /// The target answered with an error: keep it for later.
    Refused,
    /// The target did not answer: it is down again.
    Unreachable,
}

impl Node {
    /// Sets how many hints this node keeps at most (see the module docs); no effect outside a
    /// cluster. Hints already stored beyond a lower limit stay until delivered.
    pub fn set_hint_limit(&self, max: u64) {
        if let Some(cluster) = self.inner.cluster.get() {
            cluster.hints.max.store(max, Ordering::Relaxed);
        }
    }

    /// Sends a chosen version's commit to the remote replica `target` and waits for its
    /// acknowledgement; stores a hint for it when none comes (see the module docs).
    pub(super) async fn commit_or_hint(
        &self,
        cluster: &Cluster,
        target: NodeId,
        table_id: &str,
        key: &[u8],
        payload: Bytes,
        version: &Version<Value>,
    ) {
        let Some(address) = cluster.address(target) else { return };
        let failure = match cluster.transport.request(address, wire::tag::CONSENSUS, payload, ROUND_TIMEOUT).await {
            Ok(answer) => match wire::decode_reply(&answer) {
                Ok(Reply::Committed) => return,
                Ok(other) => format!("unexpected answer {other:?}"),
                Err(error) => error.to_string(),
            },
            Err(error) => error.to_string(),
        };
        tracing::debug!(replica = target.0, %failure, "commit not acknowledged; keeping a hint");
        self.store_hint(cluster, target, table_id, key, version).await;
    }

    /// Stores a hint of `version` for `target`, unless one as new is already stored, or the store
    /// is full.
    pub(super) async fn store_hint(
        &self,
        cluster: &Cluster,
        target: NodeId,
        table_id: &str,
        key: &[u8],
        version: &Version<Value>,
    ) {
        let hints = &cluster.hints;
        let hint = hint_key(target, table_id, key);
        let _stripe = hints.lock(&hint).await;
        let existing = match self.inner.engine.get(&hints.tree, &hint) {
            Ok(existing) => existing,
            Err(error) => {
                tracing::warn!(%error, "cannot read the hints tree; the hint is dropped");
                hints.stats.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        if let Some(bytes) = &existing
            && Record::decode(bytes).is_ok_and(|stored| stored.version >= version.ballot)
        {
            return;
        }
        if existing.is_none() && hints.stats.queued.load(Ordering::Relaxed) >= hints.max.load(Ordering::Relaxed) {
            let dropped = hints.stats.dropped.fetch_add(1, Ordering::Relaxed);
            if dropped.is_power_of_two() {
                tracing::warn!(
                    dropped = dropped + 1,
                    "the hint store is full: hints are dropped (anti-entropy repairs)"
                );
            }
            return;
        }
        let mut batch = WriteBatch::new();
        batch.put(&hints.tree, hint, wire::to_record(version).encode());
        match self.commit_batch(batch, Durability::Buffered, || {}).await {
            Ok(()) => {
                hints.stats.stored.fetch_add(1, Ordering::Relaxed);
                if existing.is_none() {
                    hints.stats.queued.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(error) => {
                hints.stats.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, "a hint could not be stored");
            }
        }
    }

    /// Deletes the hint at `key` if it still holds `value`; returns whether it did.
    async fn remove_hint(&self, cluster: &Cluster, key: &[u8], value: &[u8]) -> bool {
        let hints = &cluster.hints;
        let _stripe = hints.lock(key).await;
        match self.inner.engine.get(&hints.tree, key) {
            Ok(Some(current)) if current == value => {}
            Ok(_) => return false,
            Err(error) => {
                tracing::warn!(%error, "cannot read the hints tree");
                return false;
            }
        }
        let mut batch = WriteBatch::new();
        batch.delete(&hints.tree, key.to_vec());
        match self.commit_batch(batch, Durability::Buffered, || {}).await {
            Ok(()) => {
                let _ = hints.stats.queued.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
                true
            }
            Err(error) => {
                tracing::warn!(%error, "a hint could not be deleted");
                false
            }
        }
    }

    /// Sends one hint to the target at `address`.
    async fn deliver_hint(
        &self,
        cluster: &Cluster,
        address: std::net::SocketAddr,
        key: &[u8],
        value: &[u8],
    ) -> Outcome {
        let Ok((_, table_id, item_key)) = decode_hint_key(key) else { return Outcome::Discard("malformed key") };
        if self.inner.catalog.get_by_id(table_id).is_none() {
            return Outcome::Discard("its table no longer exists");
        }
        let Ok(record) = Record::decode(value) else { return Outcome::Discard("unreadable record") };
        let layout = cluster.layout();
        let Ok((target, _, _)) = decode_hint_key(key) else { return Outcome::Discard("malformed key") };
        if !layout.holds(target, layout.partition_of_key(item_key)) {
            return Outcome::Discard("its target no longer replicates the item");
        }
        // Sent in this node's epoch, so a target that has not heard of a layout change learns it
        // before deciding whether it replicates the item.
        let request = Request::Commit(wire::from_record(record));
        let payload = Bytes::from(wire::encode_request_in(table_id, item_key, layout.epoch(), &request));
        drop(layout);
        match cluster.transport.request(address, wire::tag::CONSENSUS, payload, ROUND_TIMEOUT).await {
            Ok(answer) => match wire::decode_reply(&answer) {
                Ok(Reply::Committed) => Outcome::Delivered,
                other => {
                    tracing::debug!(?other, "a hint's target answered unexpectedly");
                    Outcome::Refused
                }
            },
            Err(onggi_transport::Error::Remote { message, .. }) => {
                tracing::debug!(%message, "a hint's target refused it; it stays");
                Outcome::Refused
            }
            Err(error) => {
                tracing::debug!(%error, "a hint's target is unreachable");
                Outcome::Unreachable
            }
        }
    }

    /// Applies an outcome to the stored hint and the counters.
    async fn settle_hint(&self, cluster: &Cluster, key: &[u8], value: &[u8], outcome: Outcome) {
        let stats = &cluster.hints.stats;
        match outcome {
            Outcome::Delivered => {
                stats.delivered.fetch_add(1, Ordering::Relaxed);
                // A newer hint written meanwhile stays: it is delivered next time.
                self.remove_hint(cluster, key, value).await;
            }
            Outcome::Discard(reason) => {
                if self.remove_hint(cluster, key, value).await {
                    stats.discarded.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(reason, "a hint was discarded");
                }
            }
            Outcome::Refused | Outcome::Unreachable => {}
        }
    }

    /// The targets that have hints (one seek per target).
    async fn hint_targets(&self, cluster: &Cluster) -> Result<Vec<NodeId>, String> {
        let (engine, tree) = (self.inner.engine.clone(), cluster.hints.tree.clone());
        tokio::task::spawn_blocking(move || {
            let mut targets = Vec::new();
            let mut from = Some(0u64);
            while let Some(start) = from {
                let mut entries = engine
                    .range(&tree, Bound::Included(start.to_be_bytes().to_vec()), Bound::Unbounded, Direction::Forward)
                    .map_err(|error| error.to_string())?;
                let Some(entry) = entries.next() else { break };
                let (key, _) = entry.map_err(|error| error.to_string())?;
                let target = key_target(&key);
                targets.push(target);
                from = target.0.checked_add(1);
            }
            Ok(targets)
        })
        .await
        .map_err(|error| format!("reading hints failed: {error}"))?
    }

    /// At most [`BATCH_HINTS`] hints of `target` from `lower` on.
    async fn hint_batch(
        &self,
        cluster: &Cluster,
        target: NodeId,
        lower: Vec<u8>,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, String> {
        let (engine, tree) = (self.inner.engine.clone(), cluster.hints.tree.clone());
        let (_, upper) = target_range(target);
        tokio::task::spawn_blocking(move || {
            engine
                .range(&tree, Bound::Included(lower), upper, Direction::Forward)
                .map_err(|error| error.to_string())?
                .take(BATCH_HINTS)
                .map(|entry| entry.map_err(|error| error.to_string()))
                .collect()
        })
        .await
        .map_err(|error| format!("reading hints failed: {error}"))?
    }

    /// One tick's delivery to `target`, starting at `cursor` (a key of its range) or at its first
    /// hint. Returns where the next tick continues, or `None` to start again from the first.
    async fn deliver_to(&self, cluster: &Arc<Cluster>, target: NodeId, cursor: Option<Vec<u8>>) -> Option<Vec<u8>> {
        let (first, _) = target_range(target);
        let mut lower = cursor.filter(|cursor| cursor.starts_with(&first)).unwrap_or(first);
        // A node that holds nothing (drained, or removed) needs no hint.
        let layout = cluster.layout();
        let holds_some = layout.changing() || layout.partitions_of(target).next().is_some();
        drop(layout);
        let address = cluster.address(target).filter(|_| target != cluster.me && holds_some);
        for _ in 0..BATCHES_PER_TICK {
            let batch = match self.hint_batch(cluster, target, lower.clone()).await {
                Ok(batch) => batch,
                Err(error) => {
                    tracing::warn!(%error, "cannot read hints");
                    return None;
                }
            };
            let (last, _) = batch.last()?;
            let next = super::repair::successor(last);
            let full = batch.len() == BATCH_HINTS;
            let Some(address) = address else {
                for (key, value) in &batch {
                    self.settle_hint(cluster, key, value, Outcome::Discard("its target is no longer a member")).await;
                }
                if !full {
                    return None;
                }
                lower = next;
                continue;
            };
            let mut entries = batch.into_iter();
            // The first hint probes the target: when it fails, the target is still down.
            if let Some((key, value)) = entries.next() {
                let outcome = self.deliver_hint(cluster, address, &key, &value).await;
                if outcome == Outcome::Unreachable {
                    return Some(lower);
                }
                self.settle_hint(cluster, &key, &value, outcome).await;
            }
            let mut rest = tokio::task::JoinSet::new();
            for (key, value) in entries {
                let (node, cluster) = (self.clone(), cluster.clone());
                rest.spawn(async move {
                    let outcome = node.deliver_hint(&cluster, address, &key, &value).await;
                    node.settle_hint(&cluster, &key, &value, outcome).await;
                    outcome
                });
            }
            let mut unreachable = false;
            while let Some(done) = rest.join_next().await {
                unreachable |= done.is_ok_and(|outcome| outcome == Outcome::Unreachable);
            }
            if unreachable {
                // Down again: the next tick retries this batch's undelivered hints.
                return Some(lower);
            }
            if !full {
                return None;
            }
            lower = next;
        }
        Some(lower)
    }

    /// One tick of the delivery task: every target with hints, at once. `cursors` holds where each
    /// target's delivery continues.
    pub(super) async fn deliver_hints_once(&self, cluster: &Arc<Cluster>, cursors: &mut HashMap<NodeId, Vec<u8>>) {
        if cluster.hints.stats.queued.load(Ordering::Relaxed) == 0 {
            cursors.clear();
            return;
        }
        let targets = match self.hint_targets(cluster).await {
            Ok(targets) => targets,
            Err(error) => {
                tracing::warn!(%error, "cannot read hints");
                return;
            }
        };
        let mut deliveries = tokio::task::JoinSet::new();
        for target in targets {
            let (node, cluster, cursor) = (self.clone(), cluster.clone(), cursors.remove(&target));
            deliveries.spawn(async move { (target, node.deliver_to(&cluster, target, cursor).await) });
        }
        while let Some(done) = deliveries.join_next().await {
            match done {
                Ok((target, Some(cursor))) => {
                    cursors.insert(target, cursor);
                }
                Ok((_, None)) => {}
                Err(error) => tracing::error!(%error, "a hint delivery failed"),
            }
        }
    }

    /// Starts the delivery task (see the module docs). Called once the cluster is set.
    pub(super) fn spawn_hint_delivery(&self) {
        // This crate's unit tests deliver hints themselves, so that anti-entropy's tests count
        // only what anti-entropy does.
        if !cfg!(test) {
            tokio::spawn(deliver(Arc::downgrade(&self.inner)));
        }
    }
}

/// The delivery task: holds the node only during a tick, so that dropping the node ends it.
async fn deliver(node: Weak<Inner>) {
    let mut cursors = HashMap::new();
    loop {
        tokio::time::sleep(DELIVERY_INTERVAL).await;
        let Some(inner) = node.upgrade() else { return };
        let node = Node { inner };
        let Some(cluster) = node.cluster().cloned() else { continue };
        node.deliver_hints_once(&cluster, &mut cursors).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::repair::tests::{eventually, isolate, put, records, three_nodes};
    use onggi_core::hlc::Timestamp;
    use onggi_core::paxos::{Ballot, Lineage};
    use onggi_model::AttributeValue;

    #[test]
    fn hint_keys_round_trip_and_order_by_target() {
        let id = "0f8c3a4e-6b1d-4d0e-9a7b-2c5e8f1a3b6d";
        for (target, key) in [(1, &b"\x00\x01key"[..]), (u64::MAX, &b""[..]), (0, &b"\xFF\xFF"[..])] {
            let encoded = hint_key(NodeId(target), id, key);
            assert_eq!(decode_hint_key(&encoded), Ok((NodeId(target), id, key)));
            assert_eq!(key_target(&encoded), NodeId(target));
        }
        // A target's hints are one range, below the next target's whatever the table and key.
        let low = hint_key(NodeId(255), "zzzz", b"\xFF\xFF\xFF");
        let high = hint_key(NodeId(256), "", b"");
        assert!(low < high);
        let (first, upper) = target_range(NodeId(255));
        assert_eq!(upper, Bound::Excluded(high[..8].to_vec()));
        assert!(low >= first && low[..] < high[..8]);
        assert_eq!(target_range(NodeId(u64::MAX)).1, Bound::Unbounded);
        // Truncated or malformed keys are refused.
        let encoded = hint_key(NodeId(3), id, b"k");
        assert!(decode_hint_key(&encoded[..9]).is_err());
        assert!(decode_hint_key(&encoded[..20]).is_err());
        let mut bad = hint_key(NodeId(3), "ab", b"");
        bad[10] = 0xFF;
        assert!(decode_hint_key(&bad).is_err());
    }

    fn version(time: u64, node: u64) -> Version<Value> {
        let ballot = Ballot { time: Timestamp(time), node: NodeId(node) };
        Version { ballot, value: Value { item: None, lineage: Lineage::unknown_before(ballot), expired: false } }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn missed_commits_are_hinted_and_handed_over() {
        let (nodes, addresses) = three_nodes().await;
        let cluster = nodes[0].cluster().unwrap().clone();
        // Node 3 is cut off: node 1 coordinates writes whose commits node 3 never acknowledges.
        isolate(&nodes, &addresses, 2, true);
        for sk in 0..10 {
            put(&nodes[0], "hinted", sk, "while away").await;
        }
        // Each commit request times out after a round timeout, then becomes a hint.
        eventually(|| Some(()).filter(|_| cluster.hints.counts().queued == 10)).await;
        let expected = eventually(|| Some(records(&nodes[1])).filter(|records| records.len() == 10)).await;
        assert!(records(&nodes[2]).is_empty());
        // While node 3 is unreachable, a tick delivers nothing and keeps every hint.
        let mut cursors = HashMap::new();
        nodes[0].deliver_hints_once(&cluster, &mut cursors).await;
        assert_eq!((cluster.hints.counts().queued, cluster.hints.counts().delivered), (10, 0));

        isolate(&nodes, &addresses, 2, false);
        nodes[0].deliver_hints_once(&cluster, &mut cursors).await;
        assert_eq!(records(&nodes[2]), expected, "node 3 has every hinted version");
        let counts = cluster.hints.counts();
        assert_eq!((counts.stored, counts.delivered, counts.queued, counts.dropped), (10, 10, 0, 0), "{counts:?}");
        for node in &nodes {
            node.cluster().unwrap().transport.shutdown().await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_store_keeps_the_newest_hint_and_stays_bounded() {
        let (nodes, _addresses) = three_nodes().await;
        let node = &nodes[0];
        let cluster = node.cluster().unwrap().clone();
        let table_id = node.inner.catalog.get("repairs").unwrap().schema.id.clone();
        let key = |pk: &str| {
            let sk = AttributeValue::N(onggi_model::Number::from_i64(1));
            onggi_core::keys::item_key(&AttributeValue::S(pk.into()), Some(&sk))
        };
        let stored = |pk: &str| {
            let bytes = node.inner.engine.get(&cluster.hints.tree, &hint_key(NodeId(3), &table_id, &key(pk))).unwrap();
            bytes.map(|bytes| Record::decode(&bytes).unwrap().version)
        };
        node.store_hint(&cluster, NodeId(3), &table_id, &key("item"), &version(20, 1)).await;
        node.store_hint(&cluster, NodeId(3), &table_id, &key("item"), &version(10, 1)).await;
        assert_eq!(stored("item"), Some(version(20, 1).ballot), "an older hint does not replace a newer one");
        node.store_hint(&cluster, NodeId(3), &table_id, &key("item"), &version(30, 1)).await;
        assert_eq!(stored("item"), Some(version(30, 1).ballot));
        assert_eq!((cluster.hints.counts().stored, cluster.hints.counts().queued), (2, 1));

        node.set_hint_limit(3);
        for pk in ["a", "b", "c", "d"] {
            node.store_hint(&cluster, NodeId(3), &table_id, &key(pk), &version(40, 1)).await;
        }
        // A replacement takes no new room, even when the store is full.
        node.store_hint(&cluster, NodeId(3), &table_id, &key("item"), &version(50, 1)).await;
        let counts = cluster.hints.counts();
        assert_eq!((counts.queued, counts.dropped, counts.stored, counts.limit), (3, 2, 5, 3), "{counts:?}");
        assert_eq!(stored("item"), Some(version(50, 1).ballot));
        assert_eq!(stored("d"), None);

        // Hints for a node that is not a member, or for a table deleted since, are discarded; the
        // others are delivered.
        node.set_hint_limit(HINTS_MAX_DEFAULT);
        node.store_hint(&cluster, NodeId(9), &table_id, &key("x"), &version(60, 1)).await;
        node.store_hint(&cluster, NodeId(2), "no-such-table", &key("x"), &version(60, 1)).await;
        let mut cursors = HashMap::new();
        node.deliver_hints_once(&cluster, &mut cursors).await;
        let counts = cluster.hints.counts();
        assert_eq!((counts.discarded, counts.delivered, counts.queued), (2, 3, 0), "{counts:?}");
        let table = nodes[2].inner.catalog.get("repairs").unwrap();
        let delivered = nodes[2].inner.engine.get(&table.tree, &key("item")).unwrap().unwrap();
        assert_eq!(Record::decode(&delivered).unwrap().version, version(50, 1).ballot);
        for node in &nodes {
            node.cluster().unwrap().transport.shutdown().await;
        }
    }
}

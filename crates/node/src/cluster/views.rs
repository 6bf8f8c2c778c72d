//! Global secondary indexes on a cluster: *views*, tables of their own placed by the index's key
//! and kept asynchronously, as DynamoDB keeps its global indexes.
//!
//! **Placement.** A global index's entries are stored under `token(index partition key) ‖ index
//! key ‖ base key` (`onggi_core::keys::index_entry_key`), so the same partition layout that
//! places items places entries by the *index's* partition key: a Query of the index reads one
//! replica set, like a Query of a table, and a Scan walks the partitions in token order. The
//! catalog holds each global index as a table (its *view*, `TableHandle::view`: id = the
//! index's id, tree = the index's tree), so consensus's commit path, anti-entropy, tombstone
//! collection and layout changes replicate views with no special case. A local index stays in
//! the base partition's batch, strongly consistent.
//!
//! **Upkeep.** Every replica of an item computes, when it commits a new version (from a
//! coordinator, a hint, anti-entropy, a backfill), the changes that version makes to each view
//! (`crate::indexing::Globals::Views`): the new entry, and a tombstone for the entry it replaced
//! when the index key moved or the item left the index, both stamped with the item's version.
//! They are queued in the `views` tree *in the commit's own batch*, so a committed version never
//! loses its view changes, then delivered: applied here when this node replicates the entry's
//! view partition, and sent to the view's other replicas, except those that replicate the item
//! too (while no layout change runs): they compute the same changes from their own commits.
//! Each view replica applies a change through the replica's commit path (`Node::replica`), which
//! keeps the newer of its record and the change's by version, so changes arriving in any order,
//! twice, or from several replicas converge. Why the entries converge: every replica that put an
//! entry at version `v` tombstones it at its next version of the item unless that version has
//! the same entry, so once every replica of the item holds its latest version, the only live
//! entry for the item, everywhere, is the latest version's.
//!
//! **Queue.** A change leaves the queue once one replica of its view applied it (this node, or a
//! peer that acknowledged it): from there anti-entropy between the view's replicas spreads it.
//! Changes not delivered — no replica of the view answered, a peer that does not know the table
//! yet — stay, and a task retries them every [`DRAIN_INTERVAL`], [`DRAIN_BATCH`] at a time; the
//! queue survives restarts. Changes of views deleted since are discarded.
//!
//! **Reading your writes.** A client that writes through a node and then reads a global index
//! through the same node expects to see its write (DynamoDB does not promise it; suites written
//! against single-node servers rely on it). So a read of a global index first waits, at most
//! 500 ms, for the view changes this node was delivering when it began (`Views::in_flight`) and
//! for the commits it sent (`SentCommits`); and a replica answers a coordinator's commit only
//! once the view changes that commit made were delivered (at most [`COMMIT_WAIT_MAX`]).
//!
//! **Backfill** (an index added to a table with items): every replica queues the entries of the
//! items it holds, at the items' own versions, flagged so that a view replica applies one even
//! below its tombstone-collection floor when it holds nothing for that entry (an old item's entry
//! is not the ghost of a collected one, see `tombstones.rs`), and marks the index active once
//! every entry it queued was delivered.
//!
//! **Tombstones of views** are collected like a table's, with a longer grace
//! ([`super::tombstones`]): a view change delivered later than that (a view none of whose
//! replicas answered for an hour) would be dropped by the collection floor.
//!
//! **Storage.** The `views` tree, keyed by `[view id: u16 length + UTF-8][entry key][version
//! time: u64 BE][version node: u64 BE]`: a newer change of the same entry is another key, so
//! removing a delivered change never removes a newer one. The value is `[flags u8: bit 0 =
//! backfill][base key: u32 length][the change's record]`.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::Arc;
use std::sync::Weak;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use onggi_core::layout::NodeId;
use onggi_core::paxos::Ballot;
use onggi_core::record::Record;
use onggi_storage::{Direction, Durability, Engine, Tree, WriteBatch};

use super::wire::{self, Request};
use super::{Cluster, SentCommits};
use crate::indexing::ViewChange;
use crate::{Inner, Node};

/// The name of the tree of queued view changes.
pub(crate) const VIEWS_TREE: &str = "views";
/// How often queued changes not delivered at once are tried again.
const DRAIN_INTERVAL: Duration = Duration::from_millis(1_000);
/// Queued changes read and delivered together by the retry task.
const DRAIN_BATCH: usize = 512;
/// How long a view replica may take to apply one delivery.
const DELIVERY_TIMEOUT: Duration = Duration::from_millis(1_000);
/// How long a replica's answer to a coordinator's commit waits for that commit's view changes.
pub(super) const COMMIT_WAIT_MAX: Duration = Duration::from_millis(300);
/// How long a backfill waits for its changes to leave the queue before it gives up for now.
const BACKFILL_DRAIN_WAIT: Duration = Duration::from_secs(60);

const FLAG_BACKFILL: u8 = 1;

/// One change on the way to a view replica.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Delivery {
    pub(crate) entry_key: Vec<u8>,
    pub(crate) record: Record,
    /// Made by a backfill: applied below the collection floor when the view has nothing for
    /// the entry.
    pub(crate) backfill: bool,
}

/// A queued change: its key in the queue, the item it came from, and the change.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Queued {
    key: Vec<u8>,
    base_key: Vec<u8>,
    change: ViewChange,
    backfill: bool,
}

/// Counters of view upkeep on one node since it started.
#[derive(Default)]
pub(crate) struct ViewStats {
    /// Changes in the queue now (counted at start, kept current).
    pub(crate) queued: AtomicU64,
    /// Changes that left the queue: applied by a replica of their view.
    pub(crate) delivered: AtomicU64,
    /// Changes left in the queue by a delivery that reached no replica of their view.
    pub(crate) deferred: AtomicU64,
    /// Changes this node applied as a replica of a view.
    pub(crate) applied: AtomicU64,
}

/// A node's view upkeep: the queue, its counters, and the deliveries under way.
pub(crate) struct Views {
    tree: Tree,
    pub(crate) stats: ViewStats,
    /// The deliveries this node runs now: a read of a global index waits for those begun before
    /// it (see the module docs).
    pub(crate) in_flight: SentCommits,
}

fn queue_key(change: &ViewChange) -> Vec<u8> {
    let id = &change.view_id.as_bytes()[..change.view_id.len().min(usize::from(u16::MAX))];
    let mut key = Vec::with_capacity(2 + id.len() + change.entry_key.len() + 16);
    key.extend_from_slice(&(id.len() as u16).to_be_bytes());
    key.extend_from_slice(id);
    key.extend_from_slice(&change.entry_key);
    key.extend_from_slice(&change.record.version.time.0.to_be_bytes());
    key.extend_from_slice(&change.record.version.node.0.to_be_bytes());
    key
}

fn queue_value(base_key: &[u8], record: &Record, backfill: bool) -> Vec<u8> {
    let encoded = record.encode();
    let mut value = Vec::with_capacity(5 + base_key.len() + encoded.len());
    value.push(if backfill { FLAG_BACKFILL } else { 0 });
    value.extend_from_slice(&(base_key.len() as u32).to_be_bytes());
    value.extend_from_slice(base_key);
    value.extend_from_slice(&encoded);
    value
}

fn decode_queued(key: &[u8], value: &[u8]) -> Result<Queued, String> {
    let id_length = usize::from(u16::from_be_bytes(key.get(..2).ok_or("short key")?.try_into().expect("2 bytes")));
    let rest = key.get(2..).ok_or("short key")?;
    if rest.len() < id_length + 16 {
        return Err("a queue key shorter than its parts".into());
    }
    let view_id = std::str::from_utf8(&rest[..id_length]).map_err(|_| "a view id that is not UTF-8")?.to_string();
    let entry_key = rest[id_length..rest.len() - 16].to_vec();
    let (&flags, value) = value.split_first().ok_or("empty value")?;
    if flags & !FLAG_BACKFILL != 0 {
        return Err(format!("unknown flags {flags:#04x}"));
    }
    let base_length = u32::from_be_bytes(value.get(..4).ok_or("short value")?.try_into().expect("4 bytes")) as usize;
    let base_key = value.get(4..4 + base_length).ok_or("short value")?.to_vec();
    let record = Record::decode(&value[4 + base_length..]).map_err(|error| error.to_string())?;
    Ok(Queued {
        key: key.to_vec(),
        base_key,
        change: ViewChange { view_id, entry_key, record },
        backfill: flags & FLAG_BACKFILL != 0,
    })
}

impl Views {
    /// Opens the queue and counts what it holds (it survives restarts).
    pub(crate) async fn open(engine: &Arc<dyn Engine>) -> Result<Views, String> {
        let tree = engine.open_tree(VIEWS_TREE).map_err(|error| format!("cannot open the views tree: {error}"))?;
        let (scan_engine, scan_tree) = (engine.clone(), tree.clone());
        let count = tokio::task::spawn_blocking(move || -> Result<u64, String> {
            let mut count = 0;
            for entry in scan_engine
                .range(&scan_tree, Bound::Unbounded, Bound::Unbounded, Direction::Forward)
                .map_err(|error| error.to_string())?
            {
                entry.map_err(|error| error.to_string())?;
                count += 1;
            }
            Ok(count)
        })
        .await
        .map_err(|error| format!("counting view changes failed: {error}"))?
        .map_err(|error| format!("cannot read the views tree: {error}"))?;
        if count > 0 {
            tracing::info!(changes = count, "global index changes queued before the restart will be delivered");
        }
        let stats = ViewStats::default();
        stats.queued.store(count, Ordering::Relaxed);
        Ok(Views { tree, stats, in_flight: SentCommits::default() })
    }

    /// Adds `changes` (made by the write of the item at `base_key`) to `batch`, the write's own;
    /// returns them as queued, to deliver once the batch is durable (and to count with
    /// [`Views::note_queued`]).
    pub(crate) fn queue(
        &self,
        batch: &mut WriteBatch,
        base_key: &[u8],
        changes: Vec<ViewChange>,
        backfill: bool,
    ) -> Vec<Queued> {
        changes
            .into_iter()
            .map(|change| {
                let key = queue_key(&change);
                batch.put(&self.tree, key.clone(), queue_value(base_key, &change.record, backfill));
                Queued { key, base_key: base_key.to_vec(), change, backfill }
            })
            .collect()
    }

    /// Counts changes whose batch became durable.
    pub(crate) fn note_queued(&self, count: usize) {
        self.stats.queued.fetch_add(count as u64, Ordering::Relaxed);
    }

    /// Up to `limit` queued changes after `cursor` (from the start when `None`), with the
    /// undecodable ones' keys.
    fn read_queue(
        &self,
        engine: &dyn Engine,
        cursor: Option<&[u8]>,
        limit: usize,
    ) -> Result<(Vec<Queued>, Vec<Vec<u8>>), String> {
        let lower = cursor.map_or(Bound::Unbounded, |cursor| Bound::Excluded(cursor.to_vec()));
        let mut queued = Vec::new();
        let mut unreadable = Vec::new();
        for entry in engine.range(&self.tree, lower, Bound::Unbounded, Direction::Forward).map_err(|e| e.to_string())? {
            let (key, value) = entry.map_err(|error| error.to_string())?;
            match decode_queued(&key, &value) {
                Ok(change) => queued.push(change),
                Err(error) => {
                    tracing::warn!(%error, "unreadable queued view change discarded");
                    unreadable.push(key.to_vec());
                }
            }
            if queued.len() + unreadable.len() >= limit {
                break;
            }
        }
        Ok((queued, unreadable))
    }
}

/// The replicas of the partition holding `key` in every layout of the epoch (both while one
/// changes).
fn holders(cluster: &Cluster, key: &[u8]) -> BTreeSet<NodeId> {
    let layout = cluster.layout();
    layout.sets(layout.partition_of_key(key)).into_iter().flatten().collect()
}

impl Node {
    /// Starts delivering `queued` (changes made by a commit of this node, now durable) in the
    /// background; the returned task ends when they were delivered or left queued.
    pub(super) fn deliver_soon(&self, cluster: &Arc<Cluster>, queued: Vec<Queued>) -> tokio::task::JoinHandle<()> {
        cluster.views.note_queued(queued.len());
        let number = cluster.views.in_flight.start();
        let (node, cluster) = (self.clone(), cluster.clone());
        tokio::spawn(async move {
            node.deliver_view_changes(&cluster, queued).await;
            cluster.views.in_flight.finish(number);
        })
    }

    /// Delivers queued changes (see the module docs): applies here those whose view partition
    /// this node replicates, sends each to the other replicas of its view partition that do not
    /// replicate its item, and removes from the queue those one replica of their view applied.
    async fn deliver_view_changes(&self, cluster: &Arc<Cluster>, queued: Vec<Queued>) {
        if queued.is_empty() {
            return;
        }
        let changing = cluster.layout().changing();
        let mut local: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        let mut remote: BTreeMap<(NodeId, &str), Vec<usize>> = BTreeMap::new();
        // Changes no view replica needs from this node: every replica of the view is a replica
        // of the item, which makes the same change from its own commit.
        let mut done = vec![false; queued.len()];
        for (position, change) in queued.iter().enumerate() {
            let view = holders(cluster, &change.change.entry_key);
            let items = if changing { BTreeSet::new() } else { holders(cluster, &change.base_key) };
            if view.contains(&cluster.me) {
                local.entry(&change.change.view_id).or_default().push(position);
            }
            let mut targets: Vec<NodeId> =
                view.iter().copied().filter(|node| *node != cluster.me && !items.contains(node)).collect();
            if targets.is_empty() && !view.contains(&cluster.me) {
                done[position] = true;
            }
            // Replicas suspected or failing lately are left to anti-entropy, unless no other
            // replica of the view would take the change from here.
            let answering: Vec<NodeId> = targets.iter().copied().filter(|node| !cluster.avoids(*node)).collect();
            if !answering.is_empty() || view.contains(&cluster.me) {
                targets = answering;
            }
            for target in targets {
                remote.entry((target, &change.change.view_id)).or_default().push(position);
            }
        }
        let deliveries = |positions: &[usize]| -> Vec<Delivery> {
            positions
                .iter()
                .map(|&position| Delivery {
                    entry_key: queued[position].change.entry_key.clone(),
                    record: queued[position].change.record.clone(),
                    backfill: queued[position].backfill,
                })
                .collect()
        };
        let mut sends = tokio::task::JoinSet::new();
        for ((target, view_id), positions) in &remote {
            let Some(address) = cluster.address(*target) else { continue };
            let payload = Bytes::from(wire::encode_view_changes(view_id, &deliveries(positions)));
            let (cluster, positions, target) = (cluster.clone(), positions.clone(), *target);
            sends.spawn(async move {
                let answer =
                    cluster.transport.request(address, wire::tag::VIEW_CHANGES, payload, DELIVERY_TIMEOUT).await;
                if let Err(error) = &answer {
                    tracing::debug!(%error, replica = target.0, "view changes not delivered");
                    cluster.avoid(target);
                }
                (answer.is_ok(), positions)
            });
        }
        for (view_id, positions) in &local {
            match self.apply_view_changes(view_id, deliveries(positions)).await {
                Ok(()) => positions.iter().for_each(|&position| done[position] = true),
                Err(error) => tracing::debug!(%error, "view changes not applied here"),
            }
        }
        while let Some(sent) = sends.join_next().await {
            if let Ok((true, positions)) = sent {
                positions.iter().for_each(|&position| done[position] = true);
            }
        }
        let delivered: Vec<&Queued> = queued.iter().zip(&done).filter(|(_, done)| **done).map(|(q, _)| q).collect();
        let deferred = queued.len() - delivered.len();
        cluster.views.stats.deferred.fetch_add(deferred as u64, Ordering::Relaxed);
        self.forget_queued(cluster, delivered.iter().map(|queued| queued.key.clone()).collect()).await;
        cluster.views.stats.delivered.fetch_add(delivered.len() as u64, Ordering::Relaxed);
    }

    /// Removes changes from the queue.
    async fn forget_queued(&self, cluster: &Cluster, keys: Vec<Vec<u8>>) {
        if keys.is_empty() {
            return;
        }
        let count = keys.len() as u64;
        let mut batch = WriteBatch::new();
        for key in keys {
            batch.delete(&cluster.views.tree, key);
        }
        match self.commit_batch(batch, Durability::Buffered, || {}).await {
            Ok(()) => {
                let _ =
                    cluster.views.stats.queued.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |queued| {
                        Some(queued.saturating_sub(count))
                    });
            }
            Err(error) => tracing::warn!(%error, "delivered view changes not removed from the queue"),
        }
    }

    /// Applies changes to view `view_id` as one of its replicas, through the commit path.
    pub(super) async fn apply_view_changes(&self, view_id: &str, deliveries: Vec<Delivery>) -> Result<(), String> {
        let view = self.table_by_id(view_id).map_err(|error| error.message)?;
        if !view.view {
            return Err(format!("{view_id} is not a global index here"));
        }
        let count = deliveries.len() as u64;
        for delivery in deliveries {
            let version = wire::from_record(delivery.record);
            let mode = if delivery.backfill { super::CommitMode::Backfill } else { super::CommitMode::Local };
            self.replica_with(view_id, delivery.entry_key, Request::Commit(version), mode)
                .await
                .map_err(|error| error.message)?;
        }
        if let Some(cluster) = self.cluster() {
            cluster.views.stats.applied.fetch_add(count, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Answers a peer's [`wire::tag::VIEW_CHANGES`]; a view not known here yet (its table's
    /// creation not heard of) is looked up in the sender's catalog first.
    pub(super) async fn answer_view_changes(&self, payload: &[u8], sender: std::net::SocketAddr) -> Result<(), String> {
        let (view_id, deliveries) = wire::decode_view_changes(payload).map_err(|error| error.to_string())?;
        if self.inner.catalog.get_by_id(&view_id).is_none()
            && let Err(error) = self.pull_catalog(sender).await
        {
            tracing::debug!(%error, %sender, "the catalog of a view change's sender was not compared");
        }
        self.apply_view_changes(&view_id, deliveries).await
    }

    /// Delivers what the queue holds, [`DRAIN_BATCH`] changes after `cursor` (then from the
    /// start); returns where to go on next time.
    async fn drain_views_once(&self, cluster: &Arc<Cluster>, cursor: Option<Vec<u8>>) -> Option<Vec<u8>> {
        let (engine, views) = (self.inner.engine.clone(), cluster.clone());
        let read =
            tokio::task::spawn_blocking(move || views.views.read_queue(&*engine, cursor.as_deref(), DRAIN_BATCH)).await;
        let (queued, unreadable) = match read {
            Ok(Ok(read)) => read,
            Ok(Err(error)) => {
                tracing::warn!(%error, "cannot read the queue of view changes");
                return None;
            }
            Err(error) => {
                tracing::warn!(%error, "reading the queue of view changes failed");
                return None;
            }
        };
        let next = queued.last().map(|queued| queued.key.clone()).or_else(|| unreadable.last().cloned());
        let (known, gone): (Vec<Queued>, Vec<Queued>) = queued
            .into_iter()
            .partition(|queued| self.inner.catalog.get_by_id(&queued.change.view_id).is_some_and(|view| view.view));
        // Changes of views deleted since (their index or their table) are discarded.
        let mut discard = unreadable;
        discard.extend(gone.into_iter().map(|queued| queued.key));
        self.forget_queued(cluster, discard).await;
        // Not counted in flight: these changes' first delivery ended already, and a read must
        // not wait for retries to replicas that may be down.
        self.deliver_view_changes(cluster, known).await;
        next
    }

    pub(super) fn spawn_view_upkeep(&self) {
        tokio::spawn(drain(Arc::downgrade(&self.inner)));
    }

    /// Queues the entries `items` (each an item's storage key, version and item, read under its
    /// lock by a backfill) make in view `index_id` of `table` and delivers them; returns the
    /// queue keys of those not delivered yet.
    pub(crate) async fn backfill_view(
        &self,
        table: &crate::catalog::TableHandle,
        index_id: &str,
        items: Vec<(Vec<u8>, Ballot, onggi_model::Item)>,
    ) -> Result<Vec<Vec<u8>>, String> {
        let cluster = self.cluster().ok_or("not on a cluster")?.clone();
        let index = table.indexes.iter().find(|index| index.schema.id == index_id).ok_or("no such index")?;
        let mut batch = WriteBatch::new();
        let mut queued = Vec::new();
        for (key, version, item) in items {
            let Some((entry_key, entry)) = crate::indexing::keyed_entry(&table.schema.key, &index.schema, &item, &key)
            else {
                continue;
            };
            let change = ViewChange {
                view_id: index_id.to_string(),
                entry_key,
                record: Record { version, item: Some(entry), expired: false, lineage: None },
            };
            queued.extend(cluster.views.queue(&mut batch, &key, vec![change], true));
        }
        if queued.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<Vec<u8>> = queued.iter().map(|queued| queued.key.clone()).collect();
        self.commit_batch(batch, Durability::Buffered, || {}).await.map_err(|error| error.message)?;
        self.deliver_soon(&cluster, queued).await.map_err(|error| error.to_string())?;
        self.still_queued(&cluster, keys)
    }

    /// Which of `keys` the queue still holds.
    fn still_queued(&self, cluster: &Cluster, keys: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>, String> {
        let mut left = Vec::new();
        for key in keys {
            if self.inner.engine.get(&cluster.views.tree, &key).map_err(|error| error.to_string())?.is_some() {
                left.push(key);
            }
        }
        Ok(left)
    }

    /// Waits until the queue no longer holds `keys` (a backfill's changes not delivered at once;
    /// the retry task delivers them), at most [`BACKFILL_DRAIN_WAIT`].
    pub(crate) async fn view_changes_delivered(&self, mut keys: Vec<Vec<u8>>) -> Result<(), String> {
        let cluster = self.cluster().ok_or("not on a cluster")?.clone();
        let deadline = tokio::time::Instant::now() + BACKFILL_DRAIN_WAIT;
        loop {
            keys = self.still_queued(&cluster, keys)?;
            if keys.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "{} entries of the index are still queued: no replica of their partitions answers",
                    keys.len()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The retry task: holds the node only during a pass, so that dropping the node ends it.
async fn drain(node: Weak<Inner>) {
    let mut cursor = None;
    loop {
        tokio::time::sleep(DRAIN_INTERVAL).await;
        let Some(inner) = node.upgrade() else { return };
        let node = Node { inner };
        let Some(cluster) = node.cluster().cloned() else { continue };
        if cluster.views.stats.queued.load(Ordering::Relaxed) == 0 && cursor.is_none() {
            continue;
        }
        cursor = node.drain_views_once(&cluster, cursor).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::repair::tests::{cluster_of, input, isolate};
    use onggi_core::hlc::Timestamp;
    use onggi_core::keys::{index_entry_key, item_key};
    use onggi_core::layout::PartitionId;
    use onggi_model::ops::{Backend, DeleteItemInput, PutItemInput, QueryInput, RequestContext, UpdateTableInput};
    use onggi_model::table::{CreateTableInput, IndexStatus};
    use onggi_model::{AttributeValue, Item};
    use serde_json::json;
    use std::collections::HashMap;

    fn s(text: &str) -> AttributeValue {
        AttributeValue::S(text.to_string())
    }

    async fn create(node: &Node, with_index: bool) {
        let mut create = json!({
            "TableName": "views", "BillingMode": "PAY_PER_REQUEST",
            "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}]
        });
        if with_index {
            create["AttributeDefinitions"] = json!([{"AttributeName": "pk", "AttributeType": "S"},
                                                    {"AttributeName": "g", "AttributeType": "S"}]);
            create["GlobalSecondaryIndexes"] = json!([{"IndexName": "by_g",
                "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"}], "Projection": {"ProjectionType": "ALL"}}]);
        }
        node.create_table(&RequestContext::default(), input::<CreateTableInput>(create)).await.unwrap();
    }

    async fn put(node: &Node, pk: &str, g: Option<&str>) {
        let mut item = json!({"pk": {"S": pk}, "v": {"S": "x"}});
        if let Some(g) = g {
            item["g"] = json!({"S": g});
        }
        let request = json!({"TableName": "views", "Item": item});
        node.put_item(&RequestContext::default(), input::<PutItemInput>(request)).await.unwrap();
    }

    /// The live entries of the index's tree on `node`: (g, pk).
    fn entries(node: &Node) -> BTreeSet<(String, String)> {
        let table = node.inner.catalog.get("views").unwrap();
        let index = table.index("by_g").unwrap();
        let text = |item: &Item, name: &str| match &item[name] {
            AttributeValue::S(text) => text.clone(),
            other => panic!("{other:?}"),
        };
        node.inner
            .engine
            .range(&index.tree, Bound::Unbounded, Bound::Unbounded, Direction::Forward)
            .unwrap()
            .filter_map(|entry| Record::decode(&entry.unwrap().1).unwrap().item)
            .map(|item| (text(&item, "g"), text(&item, "pk")))
            .collect()
    }

    /// The entries `expected` (pk → g) puts on `node`: those of the index partitions it holds.
    fn placed(node: &Node, expected: &BTreeMap<String, Option<String>>) -> BTreeSet<(String, String)> {
        let cluster = node.cluster().unwrap();
        let layout = cluster.layout();
        let held: BTreeSet<PartitionId> = layout.partitions_of(cluster.me).collect();
        expected
            .iter()
            .filter_map(|(pk, g)| g.as_ref().map(|g| (g.clone(), pk.clone())))
            .filter(|(g, pk)| {
                let key = index_entry_key(&s(g), None, &item_key(&s(pk), None));
                held.contains(&layout.partition_of_key(&key))
            })
            .collect()
    }

    async fn query(node: &Node, g: &str) -> BTreeSet<String> {
        let request = json!({"TableName": "views", "IndexName": "by_g", "KeyConditionExpression": "g = :g",
                             "ExpressionAttributeValues": {":g": {"S": g}}});
        let output = node.query(&RequestContext::default(), input::<QueryInput>(request)).await.unwrap();
        output
            .items
            .unwrap_or_default()
            .iter()
            .map(|item| match &item["pk"] {
                AttributeValue::S(pk) => pk.clone(),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    /// Polls until every node holds exactly the entries of its index partitions, for at most 10 s.
    async fn converged(nodes: &[Node], expected: &BTreeMap<String, Option<String>>) {
        for _ in 0..200 {
            if nodes.iter().all(|node| entries(node) == placed(node, expected)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for (i, node) in nodes.iter().enumerate() {
            let (have, want) = (entries(node), placed(node, expected));
            let missing: Vec<_> = want.difference(&have).collect();
            let extra: Vec<_> = have.difference(&want).collect();
            eprintln!("node {}: missing {missing:?}, extra {extra:?}", i + 1);
        }
        panic!("the views did not converge within 10 s");
    }

    async fn queries_agree(nodes: &[Node], expected: &BTreeMap<String, Option<String>>) {
        let mut by_g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (pk, g) in expected {
            if let Some(g) = g {
                by_g.entry(g.clone()).or_default().insert(pk.clone());
            }
        }
        for (i, node) in nodes.iter().enumerate() {
            for (g, pks) in &by_g {
                assert_eq!(&query(node, g).await, pks, "query of g = {g} through node {}", i + 1);
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn global_index_entries_live_on_the_replicas_of_their_own_partitions() {
        let (nodes, addresses) = cluster_of(5).await;
        create(&nodes[0], true).await;
        let mut expected: BTreeMap<String, Option<String>> = BTreeMap::new();
        for i in 0..40 {
            let (pk, g) = (format!("p{i}"), format!("g{}", i % 7));
            put(&nodes[i % 5], &pk, Some(&g)).await;
            expected.insert(pk, Some(g));
        }
        converged(&nodes, &expected).await;
        // Placed by the index's key: no node holds every entry (5 nodes, 3 replicas).
        let all = entries(&nodes[0]).len().max(entries(&nodes[1]).len());
        assert!(nodes.iter().all(|node| entries(node).len() < 40), "every entry everywhere ({all})");
        queries_agree(&nodes, &expected).await;
        // Reads through one node see that node's writes at once.
        put(&nodes[3], "p0", Some("fresh")).await;
        assert_eq!(query(&nodes[3], "fresh").await, BTreeSet::from(["p0".to_string()]));
        expected.insert("p0".into(), Some("fresh".into()));

        // Entries move (a new key), leave (the attribute removed, the item deleted), while node 5
        // is cut off; it catches up from hints, and the views from their queues and anti-entropy.
        isolate(&nodes, &addresses, 4, true);
        for i in 1..30 {
            let pk = format!("p{i}");
            let writer = &nodes[i % 4];
            match i % 3 {
                0 => {
                    let g = format!("h{}", i % 4);
                    put(writer, &pk, Some(&g)).await;
                    expected.insert(pk, Some(g));
                }
                1 => {
                    put(writer, &pk, None).await;
                    expected.insert(pk, None);
                }
                _ => {
                    let key = json!({"TableName": "views", "Key": {"pk": {"S": pk}}});
                    writer.delete_item(&RequestContext::default(), input::<DeleteItemInput>(key)).await.unwrap();
                    expected.remove(&pk);
                }
            }
        }
        isolate(&nodes, &addresses, 4, false);
        let mut cursors = HashMap::new();
        for node in &nodes {
            let cluster = node.cluster().unwrap().clone();
            node.deliver_hints_once(&cluster, &mut cursors).await;
            cursors.clear();
        }
        let view_id = nodes[0].inner.catalog.get("views").unwrap().index("by_g").unwrap().schema.id.clone();
        for _ in 0..2 {
            for node in &nodes {
                let cluster = node.cluster().unwrap().clone();
                let view = node.inner.catalog.get_by_id(&view_id).unwrap();
                assert!(view.view);
                for partition in cluster.layout().partitions_of(cluster.me).collect::<Vec<_>>() {
                    for peer in cluster.layout().replicas(partition).to_vec() {
                        if peer != cluster.me {
                            let mut work = Duration::ZERO;
                            node.compare(&cluster, &view, partition, peer, &mut work).await;
                        }
                    }
                }
            }
        }
        converged(&nodes, &expected).await;
        queries_agree(&nodes, &expected).await;
        let applied: u64 =
            nodes.iter().map(|node| node.cluster().unwrap().views.stats.applied.load(Ordering::Relaxed)).sum();
        assert!(applied > 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_index_added_to_a_table_with_items_is_backfilled_into_its_view() {
        let (nodes, _) = cluster_of(4).await;
        create(&nodes[0], false).await;
        let mut expected = BTreeMap::new();
        for i in 0..30 {
            let (pk, g) = (format!("p{i}"), (i % 5 != 0).then(|| format!("g{}", i % 3)));
            put(&nodes[i % 4], &pk, g.as_deref()).await;
            expected.insert(pk, g);
        }
        let update = json!({
            "TableName": "views",
            "AttributeDefinitions": [{"AttributeName": "g", "AttributeType": "S"}],
            "GlobalSecondaryIndexUpdates": [{"Create": {"IndexName": "by_g",
                "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"}], "Projection": {"ProjectionType": "ALL"}}}]
        });
        nodes[1].update_table(&RequestContext::default(), input::<UpdateTableInput>(update)).await.unwrap();
        for _ in 0..200 {
            let active = nodes.iter().all(|node| {
                node.inner
                    .catalog
                    .get("views")
                    .and_then(|table| table.index("by_g").map(|index| index.schema.status == IndexStatus::Active))
                    .unwrap_or(false)
            });
            if active {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        converged(&nodes, &expected).await;
        queries_agree(&nodes, &expected).await;
    }

    #[test]
    fn queued_changes_round_trip_and_newer_ones_have_keys_of_their_own() {
        let mut item = Item::new();
        item.insert("g".into(), AttributeValue::S("x".into()));
        let change = |time: u64, item: Option<Item>| ViewChange {
            view_id: "view-1".into(),
            entry_key: vec![0, 1, 2, 0, 255],
            record: Record {
                version: Ballot { time: Timestamp(time), node: NodeId(7) },
                item,
                expired: false,
                lineage: None,
            },
        };
        for (change, backfill) in [(change(5, Some(item)), true), (change(6, None), false)] {
            let key = queue_key(&change);
            let value = queue_value(b"base", &change.record, backfill);
            let decoded = decode_queued(&key, &value).expect("decodes");
            assert_eq!(decoded, Queued { key, base_key: b"base".to_vec(), change, backfill });
        }
        assert_ne!(queue_key(&change(5, None)), queue_key(&change(6, None)));
        assert!(decode_queued(&[0, 9, 1], &[0]).is_err());
        assert!(decode_queued(&queue_key(&change(5, None)), &[4, 0, 0, 0, 0]).is_err());
    }
}

//! Layout changes on a running cluster: starting one, new replicas catching up, and the switch.
//!
//! The protocol is the one the simulator checks (`onggi-sim`, `world.rs`; summary in
//! `topology.rs` and ARCHITECTURE.md):
//! - **Start** ([`Node::change_layout`], `POST /onggi/cluster/layout`, `onggi cluster join` /
//!   `decommission`): the receiving node computes the next layout from its own, adopts the
//!   change's odd epoch (persisted) and sends its topology to every member, old and new. From then
//!   on every item's quorums are a majority of its old replicas and of its new ones.
//! - **Catching up** (a task on every node, every [`TICK`]): for each moved partition this node
//!   newly replicates, and each table, it pages through every old replica's committed versions
//!   there ([`wire::tag::CATCH_UP`]) and records them through its commit path (which keeps the
//!   newer of two versions). The old replica adopts the change's epoch before it answers, so
//!   from then on it refuses operations of the old layout alone; and its answer counts only if,
//!   before it read anything, it held no unfinished proposal in the partition (it finishes
//!   those, and the next attempt may count). Once answers of a majority of the old replicas counted for
//!   every table, this node has every version chosen before the change: it makes them durable,
//!   marks itself caught up on the partition in its topology, and tells every member.
//! - **Switch**: a node whose topology shows, for every moved partition, a majority of its new
//!   replicas caught up adopts the next even epoch — the new layout alone — and tells the others.
//!
//! - **Dropping** what was given away: once a node is in a layout epoch with no change in
//!   progress, it deletes its items (records, index entries, consensus state) of the partitions
//!   it no longer replicates; late commits and hints for them are ignored.
//!
//! Progress shows in `onggi cluster status` (moved partitions, caught up). A decommissioned node
//! stays listed (draining, holding nothing) until `onggi cluster remove` takes it out of the
//! membership — a change that moves nothing, over at once.

use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use onggi_core::layout::{NodeId, PartitionId};
use onggi_core::record::Record;
use onggi_storage::Direction;
use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::topology::{ChangeRecord, MemberRecord};
use super::wire::{self, CatchUp, CatchUpReply, Request};
use super::{Cluster, repair};
use crate::catalog::TableHandle;
use crate::{Inner, Node};

/// How often a node looks for catching up to do, and for a change it can finish.
const TICK: Duration = Duration::from_millis(500);
/// Most versions in one catch-up page.
const PAGE_RECORDS: usize = 512;
/// Most bytes of records in one catch-up page.
const PAGE_BYTES: usize = 4 << 20;
/// How long an old replica may take to answer a page.
const PAGE_TIMEOUT: Duration = Duration::from_secs(10);

/// A layout change as the operator asks for it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChangeRequest {
    /// Nodes joining: id and cluster address.
    #[serde(default)]
    join: Vec<JoiningNode>,
    /// Nodes to decommission (drain): their replicas move to the others.
    #[serde(default)]
    decommission: Vec<u64>,
    /// Drained nodes to remove from the membership (they hold nothing any more).
    #[serde(default)]
    remove: Vec<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JoiningNode {
    id: u64,
    address: std::net::SocketAddr,
    #[serde(default)]
    zone: Option<String>,
    #[serde(default)]
    weight: Option<u32>,
}

impl Node {
    /// Starts a layout change (see the module docs). Answers the change's epoch and how many
    /// partitions move.
    pub(crate) async fn change_layout(&self, request: Json) -> Result<Json, String> {
        let cluster = self.inner.cluster.get().ok_or("this node is not part of a cluster")?.clone();
        let request: ChangeRequest =
            serde_json::from_value(request).map_err(|error| format!("malformed layout change: {error}"))?;
        let mut changes = Vec::new();
        let mut addresses = Vec::new();
        for node in &request.join {
            if node.id == 0 || node.id >= 1 << 32 {
                return Err(format!("node id {} is out of range (1 to 2^32 - 1)", node.id));
            }
            let weight = node.weight.unwrap_or(1);
            changes.push(ChangeRecord::Join(MemberRecord {
                id: node.id,
                zone: node.zone.clone(),
                weight,
                draining: false,
            }));
            addresses.push((node.id, node.address));
        }
        changes.extend(request.decommission.iter().map(|id| ChangeRecord::Drain(*id)));
        changes.extend(request.remove.iter().map(|id| ChangeRecord::Remove(*id)));
        let topology = self
            .update_topology(&cluster, |current| current.start_change(changes, &addresses).map(Some))
            .await?
            .ok_or("the change was not adopted")?;
        let answer = json!({
            "epoch": topology.epoch(),
            "moved_partitions": topology.moved().len(),
            "changing": topology.changing(),
        });
        self.announce_topology(&cluster).await;
        Ok(answer)
    }

    /// Sends this node's topology to every other member at once.
    async fn announce_topology(&self, cluster: &Arc<Cluster>) {
        let mut sends = tokio::task::JoinSet::new();
        for peer in cluster.peers() {
            let (node, cluster) = (self.clone(), cluster.clone());
            sends.spawn(async move { node.exchange_topology(&cluster, peer).await });
        }
        while sends.join_next().await.is_some() {}
    }

    /// Answers [`wire::tag::CATCH_UP`] (also called for this node's own share).
    pub(super) async fn answer_catch_up(
        &self,
        request: CatchUp,
        sender: Option<std::net::SocketAddr>,
    ) -> Result<CatchUpReply, String> {
        let cluster = self.inner.cluster.get().ok_or("not on a cluster")?.clone();
        if request.epoch > cluster.layout().epoch()
            && let Some(sender) = sender
        {
            self.exchange_topology(&cluster, sender).await;
        }
        let layout = cluster.layout();
        if layout.epoch() < request.epoch {
            return Err(format!("layout epoch {} is not known here yet", request.epoch));
        }
        if layout.epoch() > request.epoch {
            // The change is over (and this node may be dropping what it gave away).
            return Err(format!("the layout change of epoch {} is over", request.epoch));
        }
        if request.partition >= layout.partition_count() {
            return Err(format!("no partition {}", request.partition));
        }
        let table = self.inner.catalog.get_by_id(&request.table_id).ok_or("table not known here yet")?;
        let partition = PartitionId(request.partition);
        let (first, last) = layout.partition_range(partition);
        drop(layout);
        // Whether the partition is clean is decided before anything is read: a proposal accepted
        // before this node adopted the change is then already committed, so the records read
        // next hold it (one accepted later is of the change's epoch, chosen by both layouts).
        let clean = match request.after {
            None => self.partition_is_clean(&cluster, &table, partition).await?,
            Some(_) => true,
        };
        let (lower, upper) = repair::token_interval(first, last);
        let (lower, upper) = repair::bounds(&lower, upper.as_deref());
        let lower = match &request.after {
            Some(after) => Bound::Excluded(after.clone()),
            None => lower,
        };
        let engine = self.inner.engine.clone();
        let tree = table.tree.clone();
        let page = tokio::task::spawn_blocking(move || -> Result<(Vec<wire::KeyRecord>, bool), String> {
            let mut records = Vec::new();
            let mut bytes = 0;
            for entry in engine.range(&tree, lower, upper, Direction::Forward).map_err(|error| error.to_string())? {
                let (key, value) = entry.map_err(|error| error.to_string())?;
                if records.len() >= PAGE_RECORDS || bytes >= PAGE_BYTES {
                    return Ok((records, true));
                }
                bytes += key.len() + value.len();
                records.push((key, value));
            }
            Ok((records, false))
        })
        .await
        .map_err(|error| error.to_string())??;
        let (records, more) = page;
        let tables = match request.after {
            None => self.inner.catalog.tables().iter().map(|table| table.schema.id.clone()).collect(),
            Some(_) => Vec::new(),
        };
        // Read after the partition was found clean, with this node in the change's epoch, where
        // tombstone collection has stopped: the floors every version sent respects.
        let floors = self
            .table_floors(&cluster, &request.table_id)?
            .partition(partition)
            .map(|part| part.floors())
            .unwrap_or_default();
        Ok(CatchUpReply { records, more, clean, tables, floors })
    }

    /// Whether `partition` of `table` holds no unfinished proposal here; if it does, they are
    /// finished in the background (a strict read of each completes and commits it).
    async fn partition_is_clean(
        &self,
        cluster: &Arc<Cluster>,
        table: &Arc<TableHandle>,
        partition: PartitionId,
    ) -> Result<bool, String> {
        let consensus = self.consensus_tree(cluster, table).map_err(|error| error.message)?;
        let (first, last) = cluster.layout().partition_range(partition);
        let engine = self.inner.engine.clone();
        // Only proposals accepted before this node adopted the change matter: later ones are of
        // the change's epoch, chosen (if ever) by a majority of the new replicas too. Counting
        // them would keep a partition under steady writes from ever catching up.
        let adopted_at = onggi_core::hlc::Timestamp(cluster.adopted_at.load(std::sync::atomic::Ordering::Relaxed));
        let unfinished = tokio::task::spawn_blocking(move || {
            repair::scan_proposals_accepted_by(&*engine, &consensus, first, last, adopted_at)
        })
        .await
        .map_err(|error| error.to_string())??;
        if unfinished.is_empty() {
            return Ok(true);
        }
        let (node, cluster, table) = (self.clone(), cluster.clone(), table.clone());
        tokio::spawn(async move {
            for key in unfinished {
                let keep = |_: Option<&onggi_model::Item>| Ok((crate::items::Effect::Keep, ()));
                let origin = crate::items::WriteOrigin::Client;
                if let Err(error) = node.execute_replicated(&cluster, &table, key, true, origin, keep).await {
                    tracing::debug!(%error, "an unfinished proposal could not be finished for catching up");
                    return;
                }
            }
        });
        Ok(false)
    }

    /// Pages through `source`'s committed versions of `partition` of `table` and records them
    /// here; returns whether the source's answer counts (clean on its last page).
    async fn catch_up_from(
        &self,
        cluster: &Arc<Cluster>,
        source: NodeId,
        epoch: u64,
        table: &Arc<TableHandle>,
        partition: PartitionId,
    ) -> Result<bool, String> {
        let mut after = None;
        let mut clean = true;
        let mut floors = onggi_core::tombstones::Floors::default();
        loop {
            let request =
                CatchUp { epoch, table_id: table.schema.id.clone(), partition: partition.0, after: after.clone() };
            let reply = if source == cluster.me {
                self.answer_catch_up(request, None).await?
            } else {
                let address = cluster.address(source).ok_or("no address")?;
                let payload = Bytes::from(wire::encode_catch_up(&request));
                let answer = cluster
                    .transport
                    .request(address, wire::tag::CATCH_UP, payload, PAGE_TIMEOUT)
                    .await
                    .map_err(|error| error.to_string())?;
                wire::decode_catch_up_reply(&answer).map_err(|error| error.to_string())?
            };
            for (key, bytes) in &reply.records {
                let record = Record::decode(bytes).map_err(|error| error.to_string())?;
                let version = wire::from_record(record);
                self.replica(&table.schema.id, key.clone(), Request::Commit(version))
                    .await
                    .map_err(|error| error.message)?;
            }
            if after.is_none() {
                clean = reply.clean;
                floors = reply.floors;
                let catalog = &self.inner.catalog;
                if let Some(unknown) =
                    reply.tables.iter().find(|id| catalog.get_by_id(id).is_none() && !catalog.was_deleted(id))
                {
                    return Err(format!("the old replica knows table {unknown}, not known here yet"));
                }
            }
            if !reply.more {
                if clean {
                    // An answer that counts: take over the old replica's collection floors, so
                    // that quorums of the new layout refuse what the old one promised to refuse
                    // and nothing it collected comes back here (see `tombstones.rs`).
                    self.raise_floors(cluster, &table.schema.id, partition, floors).await?;
                }
                return Ok(clean);
            }
            after = reply.records.last().map(|(key, _)| key.clone());
        }
    }

    /// Catches up on `partition` from a majority of its old replicas, for every table; returns
    /// whether it did.
    async fn catch_up_partition(&self, cluster: &Arc<Cluster>, partition: PartitionId) -> Result<bool, String> {
        let layout = cluster.layout();
        let epoch = layout.epoch();
        let old: Vec<NodeId> = layout.replicas(partition).to_vec();
        drop(layout);
        // Learn every table the old replicas know first (a node that just joined may not have
        // heard of them all yet); a table still unknown makes its source's answer not count.
        let mut compared = usize::from(old.contains(&cluster.me));
        for &source in old.iter().filter(|&&source| source != cluster.me) {
            let Some(address) = cluster.address(source) else { continue };
            match self.pull_catalog(address).await {
                Ok(_) => compared += 1,
                Err(error) => tracing::debug!(%error, source = source.0, "catalog not compared before catching up"),
            }
        }
        if compared <= old.len() / 2 {
            return Ok(false);
        }
        for table in self.inner.catalog.tables() {
            let mut counted = 0;
            for &source in &old {
                match self.catch_up_from(cluster, source, epoch, &table, partition).await {
                    Ok(true) => counted += 1,
                    Ok(false) => {}
                    Err(error) => tracing::debug!(%error, source = source.0, "catching up from an old replica failed"),
                }
            }
            if counted <= old.len() / 2 {
                return Ok(false);
            }
        }
        // What was merged went through the commit path without an fsync: make it durable before
        // telling anyone this node holds it.
        let engine = self.inner.engine.clone();
        tokio::task::spawn_blocking(move || engine.flush())
            .await
            .map_err(|error| error.to_string())?
            .map_err(|error| error.to_string())?;
        Ok(true)
    }

    /// One pass of the catching-up task.
    async fn catch_up_tick(&self, cluster: &Arc<Cluster>) {
        let layout = cluster.layout();
        if !layout.changing() {
            return;
        }
        if layout.change_complete() {
            let epoch = layout.epoch();
            let finish = |current: &super::topology::Topology| {
                if current.epoch() == epoch && current.change_complete() {
                    current.finish_change().map(Some)
                } else {
                    Ok(None)
                }
            };
            match self.update_topology(cluster, finish).await {
                Ok(_) => self.announce_topology(cluster).await,
                Err(error) => tracing::warn!(%error, "the layout change could not be finished"),
            }
            return;
        }
        let epoch = layout.epoch();
        let Some(next) = layout.next() else { return };
        let mine: Vec<PartitionId> = layout
            .moved()
            .iter()
            .copied()
            .filter(|&partition| {
                next.replicas(partition).contains(&cluster.me) && !layout.caught_up(partition).contains(&cluster.me)
            })
            .collect();
        drop(layout);
        let mut grew = false;
        for partition in mine {
            match self.catch_up_partition(cluster, partition).await {
                Ok(true) => {
                    let me = cluster.me;
                    let record = |current: &super::topology::Topology| {
                        Ok((current.epoch() == epoch).then(|| current.with_caught_up(partition, me)))
                    };
                    match self.update_topology(cluster, record).await {
                        Ok(_) => grew = true,
                        Err(error) => tracing::warn!(%error, "catching up was not recorded"),
                    }
                }
                Ok(false) => {}
                Err(error) => tracing::debug!(%error, partition = partition.0, "catching up failed; retrying later"),
            }
        }
        if grew {
            self.announce_topology(cluster).await;
        }
    }

    /// Starts the catching-up task (see the module docs).
    pub(super) fn spawn_catch_up(&self) {
        tokio::spawn(catch_up_task(Arc::downgrade(&self.inner)));
    }
}

impl Node {
    /// Drops this node's data of the partitions it no longer replicates (after a layout change
    /// that moved them elsewhere, or left behind by a crash in the middle of dropping): each
    /// item's record, index entries and consensus state, under the item's lock, item by item.
    /// Nobody reads them any more — coordinators of this epoch do not ask this node, and late
    /// commits for them are ignored.
    pub(super) async fn drop_partitions_given_away(&self, cluster: &Arc<Cluster>) -> bool {
        let layout = cluster.layout();
        let given_away: Vec<PartitionId> = (0..layout.partition_count())
            .map(PartitionId)
            .filter(|&partition| !layout.holds(cluster.me, partition))
            .collect();
        drop(layout);
        let mut dropped = 0usize;
        for table in self.inner.catalog.tables() {
            for &partition in &given_away {
                match self.drop_partition(cluster, &table, partition).await {
                    Ok(count) => dropped += count,
                    Err(error) => {
                        tracing::warn!(%error, table = %table.schema.name, "dropping a partition given away failed");
                        return false;
                    }
                }
            }
        }
        if dropped > 0 {
            tracing::info!(items = dropped, partitions = given_away.len(), "dropped the data of partitions given away");
        }
        true
    }

    async fn drop_partition(
        &self,
        cluster: &Arc<Cluster>,
        table: &Arc<TableHandle>,
        partition: PartitionId,
    ) -> Result<usize, String> {
        let consensus = self.consensus_tree(cluster, table).map_err(|error| error.message)?;
        // Tombstone collection's floors here say what this node held; it holds nothing now.
        self.reset_floors(cluster, &table.schema.id, partition).await?;
        let dropped = self.drop_partition_records(cluster, table, partition, consensus).await;
        // Deletions the partition's live Merkle tree is not told of (`live_trees.rs`).
        if let Some(part) = self.table_floors(cluster, &table.schema.id)?.partition(partition) {
            part.live.forget();
        }
        dropped
    }

    async fn drop_partition_records(
        &self,
        cluster: &Arc<Cluster>,
        table: &Arc<TableHandle>,
        partition: PartitionId,
        consensus: onggi_storage::Tree,
    ) -> Result<usize, String> {
        let (first, last) = cluster.layout().partition_range(partition);
        let (lower, upper) = repair::token_interval(first, last);
        let mut dropped = 0;
        let mut after: Option<Vec<u8>> = None;
        loop {
            if cluster.layout().holds(cluster.me, partition) {
                return Ok(dropped); // taken back by a newer change
            }
            let (mut from, to) = repair::bounds(&lower, upper.as_deref());
            if let Some(after) = &after {
                from = Bound::Excluded(after.clone());
            }
            let (engine, tree) = (self.inner.engine.clone(), table.tree.clone());
            let page = tokio::task::spawn_blocking(move || -> Result<Vec<wire::KeyRecord>, String> {
                let entries = engine.range(&tree, from, to, Direction::Forward).map_err(|error| error.to_string())?;
                entries.take(PAGE_RECORDS).map(|entry| entry.map_err(|error| error.to_string())).collect()
            })
            .await
            .map_err(|error| error.to_string())??;
            if page.is_empty() {
                break;
            }
            after = page.last().map(|(key, _)| key.clone());
            for (key, _) in page {
                // Under the item's lock: re-check (a newer change may have given the partition
                // back, and its operations must find what they leave) and read the record as it
                // is now (a late commit may have replaced it).
                let guard = self.inner.locks.lock(table, &key).await;
                if cluster.layout().holds(cluster.me, partition) {
                    return Ok(dropped);
                }
                let Some(bytes) = self.inner.engine.get(&table.tree, &key).map_err(|error| error.to_string())? else {
                    continue;
                };
                let record = Record::decode(&bytes).map_err(|error| error.to_string())?;
                let mut batch = onggi_storage::WriteBatch::new();
                // Global indexes are views placed by their own keys, dropped as tables of their own.
                let deltas = crate::indexing::index_changes(
                    table,
                    &key,
                    record.item.as_ref(),
                    None,
                    record.version,
                    &mut batch,
                    crate::indexing::Globals::Skip,
                );
                batch.delete(&table.tree, key.clone());
                batch.delete(&consensus, key.clone());
                let size = record.item.as_ref().map(onggi_model::value::item_size_bytes);
                let (table, acceptors) = (table.clone(), cluster.clone());
                self.commit_batch_then(batch, onggi_storage::Durability::Buffered, move |written| {
                    if written {
                        table.account(size, None);
                        for delta in deltas {
                            delta.apply(&table);
                        }
                    }
                    acceptors.acceptors.forget(&table.schema.id, &key);
                    drop(guard);
                })
                .await
                .map_err(|error| error.message)?;
                dropped += 1;
            }
        }
        // Consensus state of items that have no record (a promise, say) goes too.
        let (from, to) = repair::bounds(&lower, upper.as_deref());
        let engine = self.inner.engine.clone();
        let leftovers = tokio::task::spawn_blocking(move || -> Result<Vec<Vec<u8>>, String> {
            let entries = engine.range(&consensus, from, to, Direction::Forward).map_err(|error| error.to_string())?;
            entries.map(|entry| entry.map(|(key, _)| key).map_err(|error| error.to_string())).collect()
        })
        .await
        .map_err(|error| error.to_string())??;
        let consensus = self.consensus_tree(cluster, table).map_err(|error| error.message)?;
        for key in leftovers {
            let guard = self.inner.locks.lock(table, &key).await;
            if cluster.layout().holds(cluster.me, partition) {
                return Ok(dropped);
            }
            let mut batch = onggi_storage::WriteBatch::new();
            batch.delete(&consensus, key.clone());
            let (acceptors, table_id) = (cluster.clone(), table.schema.id.clone());
            self.commit_batch_then(batch, onggi_storage::Durability::Buffered, move |_| {
                acceptors.acceptors.forget(&table_id, &key);
                drop(guard);
            })
            .await
            .map_err(|error| error.message)?;
        }
        Ok(dropped)
    }
}

async fn catch_up_task(inner: std::sync::Weak<Inner>) {
    // The epoch whose given-away partitions were last dropped (none yet: a start checks once, for
    // what a crash in the middle of dropping left behind).
    let mut dropped_for = None;
    loop {
        tokio::time::sleep(TICK).await;
        let Some(inner) = inner.upgrade() else { return };
        let node = Node { inner };
        let Some(cluster) = node.inner.cluster.get().cloned() else { continue };
        node.catch_up_tick(&cluster).await;
        let epoch = cluster.layout().epoch();
        if !cluster.layout().changing() && dropped_for != Some(epoch) && node.drop_partitions_given_away(&cluster).await
        {
            dropped_for = Some(epoch);
        }
    }
}

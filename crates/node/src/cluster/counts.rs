//! DescribeTable's item counts and sizes on a cluster where no node holds every partition.
//!
//! Each node counts the items (and bytes, and index entries) it stores for a table, as one node
//! does. Where every node holds every partition that count is the table's; on a larger cluster a
//! node holds only its partitions, so the node answering DescribeTable asks every other member
//! for its counts ([`wire::tag::TABLE_COUNTS`]) and reports the sum divided by the replication
//! factor (every item is stored N times). Once replicas have converged the figure is exact; while
//! one lags, or when a member does not answer within [`COUNTS_TIMEOUT`], it is an estimate — as
//! DynamoDB's own counts are, which it refreshes about every six hours. The answering node first
//! waits (a moment, bounded) for the commits it sent to other replicas, so a client that writes
//! and then describes through one node sees its writes counted.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use onggi_model::ops::TableDescription;

use super::wire::{self, TableCounts};
use crate::Node;
use crate::catalog::TableHandle;

/// How long the node answering DescribeTable waits for the other members' counts.
const COUNTS_TIMEOUT: Duration = Duration::from_millis(500);

/// This node's counts for `table`.
fn local_counts(table: &TableHandle) -> TableCounts {
    let count = |value: &std::sync::atomic::AtomicI64| value.load(Ordering::Relaxed).max(0) as u64;
    TableCounts {
        items: count(&table.stats.item_count),
        bytes: count(&table.stats.size_bytes),
        indexes: table
            .indexes
            .iter()
            .map(|index| (index.schema.id.clone(), count(&index.stats.item_count), count(&index.stats.size_bytes)))
            .collect(),
    }
}

impl Node {
    /// Answers a peer's [`wire::tag::TABLE_COUNTS`].
    pub(super) async fn answer_table_counts(&self, payload: &[u8]) -> Result<Vec<u8>, String> {
        self.recounted().await;
        let id = wire::decode_table_deleted(payload).map_err(|error| error.to_string())?;
        let counts = match self.inner.catalog.get_by_id(&id) {
            Some(table) => local_counts(&table),
            // Not known here (yet): nothing stored for it.
            None => TableCounts::default(),
        };
        Ok(wire::encode_table_counts(&counts))
    }

    /// Replaces the counts and sizes of `description` (this node's) by the whole table's, on a
    /// cluster where this node does not hold every partition (see the module docs).
    pub(crate) async fn count_across_cluster(&self, table: &TableHandle, description: &mut TableDescription) {
        let Some(cluster) = self.cluster() else { return };
        if table.indexes.iter().any(|index| index.global) {
            // Global indexes are views kept asynchronously: this node's writes reach them first.
            cluster.settle_views().await;
        }
        if cluster.holds_everything() {
            let total = local_counts(table);
            let indexes = total.indexes.iter().map(|(id, items, bytes)| (id.clone(), (*items, *bytes))).collect();
            return describe_counts(table, description, &total, &indexes, 1);
        }
        let cluster = cluster.clone();
        // The writes this node coordinated a moment ago reach their other replicas first (or
        // become hints), so a client that writes and then describes through one node counts
        // its own writes, as on one node; bounded, since a replica may be down.
        cluster.sent_commits.settle().await;
        let replication = cluster.layout().replica_count().max(1) as u64;
        let payload = Bytes::from(wire::encode_table_deleted(&table.schema.id));
        let mut asks = tokio::task::JoinSet::new();
        for peer in cluster.peers() {
            let (cluster, payload) = (cluster.clone(), payload.clone());
            asks.spawn(async move {
                let reply = cluster.transport.request(peer, wire::tag::TABLE_COUNTS, payload, COUNTS_TIMEOUT).await;
                reply.ok().and_then(|bytes| wire::decode_table_counts(&bytes).ok())
            });
        }
        let mut total = local_counts(table);
        let mut indexes: BTreeMap<String, (u64, u64)> =
            total.indexes.iter().map(|(id, items, bytes)| (id.clone(), (*items, *bytes))).collect();
        while let Some(answer) = asks.join_next().await {
            let Ok(Some(counts)) = answer else { continue };
            total.items += counts.items;
            total.bytes += counts.bytes;
            for (id, items, bytes) in counts.indexes {
                if let Some(sum) = indexes.get_mut(&id) {
                    sum.0 += items;
                    sum.1 += bytes;
                }
            }
        }
        describe_counts(table, description, &total, &indexes, replication);
    }
}

/// Puts counts summed over members that each store `replication` copies into `description`.
fn describe_counts(
    table: &TableHandle,
    description: &mut TableDescription,
    total: &TableCounts,
    indexes: &BTreeMap<String, (u64, u64)>,
    replication: u64,
) {
    let share = |sum: u64| (sum + replication / 2) / replication;
    description.item_count = share(total.items);
    description.table_size_bytes = share(total.bytes);
    let described = description.local_secondary_indexes.iter_mut().chain(&mut description.global_secondary_indexes);
    for index in described.flatten() {
        let id = table.indexes.iter().find(|handle| handle.schema.name == index.index_name).map(|h| &h.schema.id);
        if let Some((items, bytes)) = id.and_then(|id| indexes.get(id)) {
            index.item_count = share(*items);
            index.index_size_bytes = share(*bytes);
        }
    }
}

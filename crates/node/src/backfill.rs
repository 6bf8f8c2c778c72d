//! Background index work: backfilling an index added to a table that has items, and dropping the
//! storage of a deleted index.
//!
//! **Backfill.** From the moment UpdateTable publishes a new index (status `Backfilling`), every
//! write maintains it. A writer that read the table's description before that moment notices,
//! once it holds its item's lock, that the description changed, and starts over (see
//! `Node::execute`). The backfill then visits every item under the item's lock: the entry
//! is either already there (written by a writer that knew the index, and then current) or missing
//! and added from the item as it is now. When the walk ends the index becomes `Active` (readable).
//! A crash during the walk leaves the status `Backfilling`, and the walk starts over at the next
//! start; entries already present are skipped, so it converges.
//!
//! On a cluster a global index is a view placed by its own key (`cluster/views.rs`): each
//! replica queues the entries of the items it holds for the view's replicas instead, and marks
//! the index active once all of them were delivered.
//!
//! **Drop.** A deleted index is first removed from the table's description; its tree is dropped
//! only after every write that might still hold the old description has finished, which visiting
//! every lock stripe once guarantees (writes hold their stripe until durable).

use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use onggi_core::record::Record;
use onggi_model::DynamoError;
use onggi_model::table::IndexStatus;
use onggi_storage::{Direction, Durability, WriteBatch};

use crate::Node;
use crate::catalog::TableHandle;
use crate::indexing::{entry_size, keyed_entry};
use crate::tables::storage_error;

/// Items visited per storage read.
const BACKFILL_CHUNK: usize = 256;

impl Node {
    /// Starts the node's background work: the TTL expirer (a pass every `ttl_interval`), the clock
    /// marks (`restart.rs`) and the backfill of every index left `Backfilling` by the last run. Needs a Tokio runtime.
    pub fn start_background(&self, ttl_interval: Duration) {
        self.spawn_expirer(ttl_interval);
        self.spawn_clock_marks();
        for name in self.inner.catalog.names() {
            if let Some(table) = self.inner.catalog.get(&name)
                && table.indexes.iter().any(|index| index.schema.status == IndexStatus::Backfilling)
            {
                self.spawn_backfill(table);
            }
        }
    }

    /// Backfills every `Backfilling` index of `table` in the background.
    pub(crate) fn spawn_backfill(&self, table: Arc<TableHandle>) {
        let node = self.clone();
        tokio::spawn(async move {
            let name = table.schema.name.clone();
            let ids: Vec<String> = table
                .indexes
                .iter()
                .filter(|index| index.schema.status == IndexStatus::Backfilling)
                .map(|index| index.schema.id.clone())
                .collect();
            for id in ids {
                match node.backfill(&name, &table.schema.id, &id).await {
                    Ok(added) => tracing::info!(table = %name, index = %id, added, "index backfilled"),
                    Err(error) => tracing::warn!(table = %name, index = %id, %error, "index backfill stopped"),
                }
            }
        });
    }

    /// Drops a deleted index's tree once no write can still be using it.
    pub(crate) fn spawn_index_drop(&self, tree: String) {
        let node = self.clone();
        tokio::spawn(async move {
            node.inner.locks.quiesce().await;
            let engine = node.inner.engine.clone();
            match tokio::task::spawn_blocking(move || engine.drop_tree(&tree)).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::warn!(%error, "could not drop a deleted index's storage; the next start will")
                }
                Err(error) => tracing::warn!(%error, "could not drop a deleted index's storage; the next start will"),
            }
        });
    }

    /// The current description of table `table_id`, if it still has index `index_id`
    /// backfilling.
    fn backfilling_table(&self, name: &str, table_id: &str, index_id: &str) -> Option<Arc<TableHandle>> {
        self.inner.catalog.get(name).filter(|table| {
            table.schema.id == table_id
                && table
                    .indexes
                    .iter()
                    .any(|index| index.schema.id == index_id && index.schema.status == IndexStatus::Backfilling)
        })
    }

    /// Walks every item of the table, adding its entry to the index where missing; then marks the
    /// index active. Returns how many entries it added.
    async fn backfill(&self, name: &str, table_id: &str, index_id: &str) -> Result<usize, DynamoError> {
        let mut added = 0;
        let mut lower = Bound::Unbounded;
        // On a cluster, the view entries queued and not delivered at once.
        let mut undelivered = Vec::new();
        loop {
            let Some(table) = self.backfilling_table(name, table_id, index_id) else { return Ok(added) };
            let keys: Vec<Vec<u8>> = self
                .inner
                .engine
                .range(&table.tree, lower.clone(), Bound::Unbounded, Direction::Forward)
                .map_err(storage_error)?
                .take(BACKFILL_CHUNK)
                .map(|entry| entry.map(|(key, _)| key))
                .collect::<Result<_, _>>()
                .map_err(storage_error)?;
            let Some(last) = keys.last().cloned() else { break };
            let global = table.indexes.iter().any(|index| index.schema.id == index_id && index.global);
            if global && self.cluster().is_some() {
                // A cluster keeps a global index as a view placed by its own key: this replica
                // queues the entries of the items it holds, at their versions (`cluster/views.rs`).
                let mut items = Vec::with_capacity(keys.len());
                for key in keys {
                    let _guard = self.inner.locks.lock(&table, &key).await;
                    // Under the lock, every commit from now on uses a description with the index.
                    if self.backfilling_table(name, table_id, index_id).is_none() {
                        return Ok(added);
                    }
                    let Some(bytes) = self.inner.engine.get(&table.tree, &key).map_err(storage_error)? else {
                        continue;
                    };
                    let record = Record::decode(&bytes)
                        .map_err(|error| DynamoError::internal(format!("stored record unreadable: {error}")))?;
                    if let Some(item) = record.item {
                        items.push((key, record.version, item));
                    }
                }
                added += items.len();
                undelivered.extend(self.backfill_view(&table, index_id, items).await.map_err(DynamoError::internal)?);
                lower = Bound::Excluded(last);
                continue;
            }
            for key in keys {
                let guard = self.inner.locks.lock(&table, &key).await;
                // Under the lock, the description the writers use is the current one.
                let Some(table) = self.backfilling_table(name, table_id, index_id) else { return Ok(added) };
                let Some(item) = self.read_current(&table, &key)? else { continue };
                let (position, index) = table
                    .indexes
                    .iter()
                    .enumerate()
                    .find(|(_, index)| index.schema.id == index_id)
                    .expect("checked by backfilling_table");
                let Some((entry_key, entry)) = keyed_entry(&table.schema.key, &index.schema, &item, &key) else {
                    continue;
                };
                if self.inner.engine.get(&index.tree, &entry_key).map_err(storage_error)?.is_some() {
                    continue;
                }
                let size = entry_size(&entry);
                let mut batch = WriteBatch::new();
                let record = Record { version: self.inner.version(), item: Some(entry), expired: false, lineage: None };
                batch.put(&index.tree, entry_key, record.encode());
                let (sender, receiver) = tokio::sync::oneshot::channel();
                let table = table.clone();
                // Buffered: the walk is redone after a crash, and the flush below makes it durable
                // before the index is declared active.
                self.inner.engine.commit(
                    batch,
                    Durability::Buffered,
                    Box::new(move |result| {
                        if result.is_ok() {
                            table.indexes[position].stats.account(None, Some(size));
                        }
                        drop(guard);
                        let _ = sender.send(result);
                    }),
                );
                receiver.await.unwrap_or(Err(onggi_storage::StorageError::Closed)).map_err(storage_error)?;
                added += 1;
            }
            lower = Bound::Excluded(last);
            tokio::task::yield_now().await;
        }
        if !undelivered.is_empty() {
            self.view_changes_delivered(undelivered).await.map_err(DynamoError::internal)?;
        }
        let engine = self.inner.engine.clone();
        tokio::task::spawn_blocking(move || engine.flush())
            .await
            .map_err(|error| DynamoError::internal(format!("flush task: {error}")))?
            .map_err(storage_error)?;
        let catalog = &self.inner.catalog;
        let _change = catalog.changes.lock().await;
        let Some(table) = self.backfilling_table(name, table_id, index_id) else { return Ok(added) };
        let mut schema = table.schema.clone();
        for index in schema.local_indexes.iter_mut().chain(&mut schema.global_indexes) {
            if index.id == index_id {
                index.status = IndexStatus::Active;
            }
        }
        catalog.store(schema).await.map_err(storage_error)?;
        Ok(added)
    }
}

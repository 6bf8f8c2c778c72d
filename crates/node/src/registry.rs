//! Table descriptions agreed by the cluster: the registry.
//!
//! On a cluster every change of a table's description — CreateTable, UpdateTable, DeleteTable,
//! UpdateTimeToLive, TagResource, UntagResource — is a read-modify-write of one item of a system
//! table, the *registry*, keyed by the table's name, under the per-item consensus every item
//! write takes (`cluster`): the change is a pure function of the registry's current value, run
//! by the proposer as its apply step. So of two CreateTable of one name at the same moment
//! through two nodes one wins and the other gets ResourceInUseException; two tag changes at the
//! same moment both stay; an UpdateTable never brings back a table a DeleteTable removed. The
//! registry is replicated like any table (by the N replicas of the partition its key falls in, a
//! majority needed for a change), so table changes stay available with one replica down, and
//! they cost one consensus round: milliseconds.
//!
//! Each node's catalog stays its cache of the registry, so that requests read descriptions
//! without a round trip: the node that made a change applies it before answering and announces it
//! to every member, and members that missed the announcement learn it from catalog anti-entropy
//! (`cluster::catalog_sync`) — eventually, as in DynamoDB, where a new table is not usable at once
//! everywhere either. A description carries its revision, which increases along the chain of one
//! name's registry values (each change's above its predecessor's), so a member keeps the newest
//! whatever order it hears of changes in, and a description of another table of the same name
//! with a higher revision means the member's table was deleted meanwhile.
//!
//! A registry value is `{name: S, schema: S (the description as JSON), deleted: BOOL}`. A deleted
//! table's value stays (it is not a tombstone), so the next table of that name continues the
//! chain of revisions. A name the registry has never seen but the coordinating node's catalog has
//! is a table created before the node was clustered (a cluster of one that grew): its description
//! there is taken as the registry's current value.
//!
//! On a single node, or a cluster of one, the catalog is the truth, and a change applies to it
//! under its change lock.

use std::sync::Arc;

use onggi_core::keys::item_key;
use onggi_model::table::{IndexStatus, TableSchema};
use onggi_model::value::AttributeValue;
use onggi_model::{DynamoError, Item};

use crate::Node;
use crate::catalog::{REGISTRY_KEY, REGISTRY_TABLE_ID, REGISTRY_TABLE_NAME, TableHandle};
use crate::items::{Effect, WriteOrigin};
use crate::tables::storage_error;

/// What a change makes of a table's description.
pub(crate) enum Change {
    /// The table's new (or first) description.
    Store(Box<TableSchema>),
    /// The table is deleted.
    Delete,
}

/// What a change did, as this node's catalog now holds it.
pub(crate) enum Changed {
    /// The table's description was created or replaced.
    Stored(Arc<TableHandle>),
    /// The table was deleted; its last handle (with its final statistics).
    Deleted(Arc<TableHandle>),
}

/// One registry value.
struct Entry {
    schema: TableSchema,
    deleted: bool,
}

impl Entry {
    fn encode(&self) -> Item {
        let schema = serde_json::to_string(&self.schema).expect("schemas always serialize");
        Item::from([
            (REGISTRY_KEY.to_string(), AttributeValue::S(self.schema.name.clone())),
            ("schema".to_string(), AttributeValue::S(schema)),
            ("deleted".to_string(), AttributeValue::Bool(self.deleted)),
        ])
    }

    fn decode(item: &Item) -> Result<Entry, DynamoError> {
        let (Some(AttributeValue::S(schema)), Some(AttributeValue::Bool(deleted))) =
            (item.get("schema"), item.get("deleted"))
        else {
            return Err(DynamoError::internal("a registry value lacks its description"));
        };
        let schema = serde_json::from_str(schema)
            .map_err(|error| DynamoError::internal(format!("a registry description is unreadable: {error}")))?;
        Ok(Entry { schema, deleted: *deleted })
    }
}

/// A change's revision: the clock's time `now`, but always above the revision it follows.
fn next_revision(previous: Option<u64>, now: u64) -> u64 {
    previous.map_or(now, |previous| now.max(previous + 1))
}

impl Node {
    /// Changes the description of the table named `name` (see the module docs): `change` gets its
    /// current description (`None` when no table has that name) and returns what becomes of it,
    /// with an answer for the caller. It may run several times on a cluster (once per consensus
    /// round that reaches the apply step), so it must depend on nothing but its argument and what
    /// it captured.
    pub(crate) async fn change_table<T>(
        &self,
        name: &str,
        mut change: impl FnMut(Option<&TableSchema>) -> Result<(Change, T), DynamoError>,
    ) -> Result<(Changed, T), DynamoError> {
        if let Some(cluster) = self.cluster() {
            let cluster = cluster.clone();
            return self.change_registered(&cluster, name, change).await;
        }
        let catalog = &self.inner.catalog;
        let guard = catalog.changes.lock().await;
        let current = catalog.get(name);
        let (change, answer) = change(current.as_ref().map(|table| &table.schema))?;
        let now = self.inner.version().time.0;
        let changed = match change {
            Change::Store(mut schema) => {
                schema.revision = next_revision(current.map(|table| table.schema.revision), now);
                let (handle, work) = self.apply_schema_locked(*schema).await?;
                drop(guard);
                self.start_index_work(&handle, work);
                Changed::Stored(handle)
            }
            Change::Delete => {
                let removed = catalog.remove(name, now).await.map_err(storage_error)?;
                Changed::Deleted(removed.ok_or_else(|| DynamoError::internal("deleted a table that was not there"))?)
            }
        };
        Ok((changed, answer))
    }

    /// [`Node::change_table`] on a cluster: through the registry.
    async fn change_registered<T>(
        &self,
        cluster: &Arc<crate::cluster::Cluster>,
        name: &str,
        mut change: impl FnMut(Option<&TableSchema>) -> Result<(Change, T), DynamoError>,
    ) -> Result<(Changed, T), DynamoError> {
        let catalog = &self.inner.catalog;
        let registry = catalog.registry();
        let key = item_key(&AttributeValue::S(name.to_string()), None);
        let unregistered = catalog.get(name).map(|table| table.schema.clone());
        let ((entry, answer), _) = self
            .execute_replicated(cluster, &registry, key, false, WriteOrigin::Client, |item| {
                let current = match item {
                    Some(item) => Some(Entry::decode(item)?),
                    None => unregistered.clone().map(|schema| Entry { schema, deleted: false }),
                };
                let previous = current.as_ref().map(|entry| entry.schema.revision);
                let live = current.filter(|entry| !entry.deleted).map(|entry| entry.schema);
                let (change, answer) = change(live.as_ref())?;
                let revision = next_revision(previous, self.inner.version().time.0);
                let entry = match change {
                    Change::Store(schema) => Entry { schema: *schema, deleted: false },
                    Change::Delete => Entry {
                        schema: live.ok_or_else(|| DynamoError::internal("deleted a table that was not there"))?,
                        deleted: true,
                    },
                };
                let entry = Entry { schema: TableSchema { revision, ..entry.schema }, deleted: entry.deleted };
                Ok((Effect::Put(entry.encode()), (entry, answer)))
            })
            .await?;
        let schema = entry.schema;
        if entry.deleted {
            // This node may not have learned the table yet: learn it, then delete it, so that
            // the answer describes it and the deletion is remembered.
            if catalog.get_by_id(&schema.id).is_none() {
                self.apply_schema(schema.clone()).await?;
            }
            let removed = self.uninstall_table(&schema.id).await?;
            self.announce_table_deleted(&schema).await;
            let removed = removed.ok_or_else(|| DynamoError::internal("the table changed again meanwhile"))?;
            return Ok((Changed::Deleted(removed), answer));
        }
        self.apply_schema(schema.clone()).await?;
        self.announce_table_schema(&schema).await;
        let handle = catalog
            .get(name)
            .filter(|table| table.schema.id == schema.id)
            .ok_or_else(|| DynamoError::internal("the table changed again meanwhile"))?;
        Ok((Changed::Stored(handle), answer))
    }

    /// The table named `name` as the registry has it, learned into this node's catalog: for a
    /// node asked about a table it has not heard of. `None` on a single node, when the registry
    /// has no such table, or when it cannot be read (then the table is reported missing, as it
    /// is on this node).
    pub(crate) async fn learn_table(&self, name: &str) -> Option<Arc<TableHandle>> {
        let cluster = self.cluster()?.clone();
        let registry = self.inner.catalog.registry();
        let key = item_key(&AttributeValue::S(name.to_string()), None);
        let read =
            self.execute_replicated(&cluster, &registry, key, true, WriteOrigin::Client, |_| Ok((Effect::Keep, ())));
        let item = match read.await {
            Ok((_, item)) => item?,
            Err(error) => {
                tracing::debug!(%error, table = name, "the registry could not be read");
                return None;
            }
        };
        let entry = Entry::decode(&item).ok().filter(|entry| !entry.deleted)?;
        if let Err(error) = self.apply_schema(entry.schema).await {
            tracing::warn!(%error, table = name, "a table description read from the registry was not applied");
        }
        self.inner.catalog.get(name)
    }

    /// Applies a table's description as the registry chose it — a change this node made, or one
    /// another member announced or catalog anti-entropy brought — unless this node holds the same
    /// revision or a newer one (see [`Node::apply_schema_locked`]).
    pub(crate) async fn apply_schema(&self, schema: TableSchema) -> Result<(), DynamoError> {
        if schema.id == REGISTRY_TABLE_ID || schema.name == REGISTRY_TABLE_NAME {
            return Err(DynamoError::internal("a description of the registry itself was sent"));
        }
        let catalog = &self.inner.catalog;
        let guard = catalog.changes.lock().await;
        if catalog.was_deleted(&schema.id) {
            return Ok(()); // a late description of a table this node knows is gone
        }
        if let Some(existing) = catalog.get(&schema.name) {
            if existing.schema.revision >= schema.revision {
                return Ok(()); // this node already has this change or a later one
            }
            if existing.schema.id != schema.id {
                // A later table of the same name: the one here was deleted meanwhile.
                catalog.remove(&existing.schema.name, self.inner.version().time.0).await.map_err(storage_error)?;
                tracing::info!(table = %schema.name, id = %existing.schema.id, "table deleted meanwhile, as a newer one shows");
            }
        }
        let (handle, work) = self.apply_schema_locked(schema).await?;
        drop(guard);
        tracing::info!(table = %handle.schema.name, revision = handle.schema.revision, "table description applied");
        self.start_index_work(&handle, work);
        Ok(())
    }

    /// Removes the table with id `id` from this node's catalog, if it has it; returns its last
    /// handle.
    pub(crate) async fn uninstall_table(&self, id: &str) -> Result<Option<Arc<TableHandle>>, DynamoError> {
        let catalog = &self.inner.catalog;
        let _change = catalog.changes.lock().await;
        let Some(table) = catalog.get_by_id(id).filter(|table| table.schema.id != REGISTRY_TABLE_ID) else {
            return Ok(None);
        };
        let removed = catalog.remove(&table.schema.name, self.inner.version().time.0).await.map_err(storage_error)?;
        tracing::info!(table = %table.schema.name, "table deleted");
        Ok(removed)
    }

    /// Stores a table's new description, the caller holding the catalog's change lock: creates
    /// the table, or replaces its description. A new table's indexes start readable (the table is
    /// empty: every item arrives through the write path, which writes its entries too). On a
    /// changed table, an index this node already has keeps its local status — a node's index is
    /// readable once *its* backfill is done, whatever another node's is — and an index it lacks
    /// starts backfilling. Returns the handle and the index work to start once the lock is
    /// released.
    async fn apply_schema_locked(&self, mut schema: TableSchema) -> Result<(Arc<TableHandle>, IndexWork), DynamoError> {
        let catalog = &self.inner.catalog;
        let existing = catalog.get(&schema.name).filter(|existing| existing.schema.id == schema.id);
        let mut work = IndexWork::default();
        for index in schema.local_indexes.iter_mut().chain(&mut schema.global_indexes) {
            index.status = match existing
                .as_ref()
                .and_then(|existing| existing.schema.indexes().find(|local| local.id == index.id))
            {
                Some(local) => local.status,
                None if existing.is_none() => IndexStatus::Active,
                None => {
                    work.backfill = true;
                    IndexStatus::Backfilling
                }
            };
        }
        work.dropped = existing
            .iter()
            .flat_map(|existing| existing.schema.indexes())
            .filter(|local| !schema.indexes().any(|index| index.id == local.id))
            .map(crate::catalog::index_tree_name)
            .collect();
        let handle = catalog.store(schema).await.map_err(storage_error)?;
        Ok((handle, work))
    }

    fn start_index_work(&self, handle: &Arc<TableHandle>, work: IndexWork) {
        for tree in work.dropped {
            tracing::info!(table = %handle.schema.name, %tree, "index deleted");
            self.spawn_index_drop(tree);
        }
        if work.backfill {
            tracing::info!(table = %handle.schema.name, "index created; backfilling");
            self.spawn_backfill(handle.clone());
        }
    }
}

/// What a new description asks of this node's indexes.
#[derive(Default)]
struct IndexWork {
    /// Trees of indexes the description no longer has.
    dropped: Vec<String>,
    /// Whether an index was added (and must be built from the table's items).
    backfill: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revisions_always_increase_along_a_chain() {
        assert_eq!(next_revision(None, 7), 7);
        assert_eq!(next_revision(Some(5), 7), 7);
        assert_eq!(next_revision(Some(9), 7), 10, "a clock behind the last change's still moves forward");
    }
}

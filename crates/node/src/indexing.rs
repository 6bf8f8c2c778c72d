//! Secondary-index maintenance: which index entries a write changes.
//!
//! An index holds one entry per base item that has the index's key attributes (a sparse index
//! skips the others): the table's key, the index's key and the projected attributes, stored under
//! `onggi_core::keys::index_entry_key`. A write that replaces item `old` by `new` deletes the old
//! entry when its index key changed (or the item left the index) and puts the new one when it
//! differs; an entry that does not change is not rewritten.
//!
//! On one node the entries go into the same atomic batch as the item, so an index is never seen
//! out of step with its table. The computation is a pure function of the two versions, so that a
//! cluster applies the same changes asynchronously to a global index's *view*, a table of its
//! own placed by the index's key (`crate::cluster::views`; eventually consistent, as in
//! DynamoDB), while local indexes stay in the base partition's batch.

use onggi_core::keys::index_entry_key;
use onggi_core::paxos::Ballot;
use onggi_core::record::Record;
use onggi_model::table::{IndexSchema, KeySchema};
use onggi_model::value::item_size_bytes;
use onggi_model::{AttributeValue, Item};
use onggi_storage::WriteBatch;

use crate::catalog::{IndexHandle, TableHandle};

/// Bytes DynamoDB adds to each index entry's size in an index's statistics (its documented
/// per-entry overhead).
pub const INDEX_ENTRY_OVERHEAD_BYTES: usize = 100;

/// The size an index entry counts for in its index's statistics.
pub(crate) fn entry_size(entry: &Item) -> usize {
    item_size_bytes(entry) + INDEX_ENTRY_OVERHEAD_BYTES
}

/// The change a committed write makes to one index's statistics.
pub(crate) struct IndexDelta {
    position: usize,
    old_size: Option<usize>,
    new_size: Option<usize>,
}

impl IndexDelta {
    /// Applies the change to the statistics of the index it was computed for.
    pub(crate) fn apply(&self, table: &TableHandle) {
        if let Some(index) = table.indexes.get(self.position) {
            index.stats.account(self.old_size, self.new_size);
        }
    }
}

/// The storage key of `entry` (an index entry, which carries the index key attributes) in `index`.
pub(crate) fn entry_key(index: &IndexSchema, entry: &Item, base_key: &[u8]) -> Vec<u8> {
    let partition = entry.get(&index.key.partition.name).expect("index entries carry their partition key");
    let sort = index.key.sort.as_ref().map(|sort| entry.get(&sort.name).expect("index entries carry their sort key"));
    index_entry_key(partition, sort, base_key)
}

/// The entry `index` holds for `item` (if any) with its storage key.
pub(crate) fn keyed_entry(
    table_key: &KeySchema,
    index: &IndexSchema,
    item: &Item,
    base_key: &[u8],
) -> Option<(Vec<u8>, Item)> {
    let entry = index.entry(table_key, item)?;
    // Items whose index key attributes have the wrong type are refused before they are written;
    // this guards the encoding against anything that slipped through.
    let scalar = |name: &str| {
        matches!(entry.get(name), Some(AttributeValue::S(_) | AttributeValue::N(_) | AttributeValue::B(_)))
    };
    if !index.key.names().all(scalar) {
        return None;
    }
    Some((entry_key(index, &entry, base_key), entry))
}

/// One change to a global index's view (see `crate::cluster::views`): the entry's storage key
/// and its new record — the entry, or a tombstone — stamped with the version of the item write
/// that made it, so that changes applied in any order, any number of times, by any replica of the
/// view converge on the entries of each item's latest version.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ViewChange {
    pub(crate) view_id: String,
    pub(crate) entry_key: Vec<u8>,
    pub(crate) record: Record,
}

/// Where a write's global-index changes go.
pub(crate) enum Globals<'a> {
    /// Into the index's tree, in the write's batch (one node: its indexes never drift).
    Local,
    /// Collected, for the caller to queue for the views' replicas (a replica of a cluster).
    Views(&'a mut Vec<ViewChange>),
    /// Nowhere: the write removes data this replica gave away, it does not change the item.
    Skip,
}

/// Adds to `batch` the index changes of replacing `old` by `new` at `base_key` (those of
/// global indexes as `globals` says); returns the statistics changes to apply once the batch is
/// durable.
pub(crate) fn index_changes(
    table: &TableHandle,
    base_key: &[u8],
    old: Option<&Item>,
    new: Option<&Item>,
    version: Ballot,
    batch: &mut WriteBatch,
    mut globals: Globals<'_>,
) -> Vec<IndexDelta> {
    let mut deltas = Vec::new();
    for (position, index) in table.indexes.iter().enumerate() {
        if index.global && !matches!(globals, Globals::Local) {
            if let Globals::Views(changes) = &mut globals {
                view_changes(table, index, base_key, old, new, version, changes);
            }
            continue;
        }
        let before = old.and_then(|item| keyed_entry(&table.schema.key, &index.schema, item, base_key));
        let after = new.and_then(|item| keyed_entry(&table.schema.key, &index.schema, item, base_key));
        if before == after {
            continue;
        }
        if let Some((old_key, _)) = &before
            && after.as_ref().is_none_or(|(new_key, _)| new_key != old_key)
        {
            batch.delete(&index.tree, old_key.clone());
        }
        let new_size = after.as_ref().map(|(_, entry)| entry_size(entry));
        if let Some((new_key, entry)) = after {
            batch.put(
                &index.tree,
                new_key,
                Record { version, item: Some(entry), expired: false, lineage: None }.encode(),
            );
        }
        deltas.push(IndexDelta { position, old_size: before.as_ref().map(|(_, entry)| entry_size(entry)), new_size });
    }
    deltas
}

/// The changes replacing `old` by `new` makes to a global index's view: a tombstone for the old
/// entry when it moved or left, the new entry when it changed.
fn view_changes(
    table: &TableHandle,
    index: &IndexHandle,
    base_key: &[u8],
    old: Option<&Item>,
    new: Option<&Item>,
    version: Ballot,
    changes: &mut Vec<ViewChange>,
) {
    let before = old.and_then(|item| keyed_entry(&table.schema.key, &index.schema, item, base_key));
    let after = new.and_then(|item| keyed_entry(&table.schema.key, &index.schema, item, base_key));
    if before == after {
        return;
    }
    let change = |entry_key: Vec<u8>, item: Option<Item>| ViewChange {
        view_id: index.schema.id.clone(),
        entry_key,
        record: Record { version, item, expired: false, lineage: None },
    };
    if let Some((old_key, _)) = before
        && after.as_ref().is_none_or(|(new_key, _)| *new_key != old_key)
    {
        changes.push(change(old_key, None));
    }
    if let Some((new_key, entry)) = after {
        changes.push(change(new_key, Some(entry)));
    }
}

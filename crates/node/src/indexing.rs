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
//! cluster can apply the same changes asynchronously to GSI partitions placed by their own key
//! (eventually consistent, as in DynamoDB) while LSIs stay with their base partition.

use onggi_core::keys::index_entry_key;
use onggi_core::paxos::Ballot;
use onggi_core::record::Record;
use onggi_model::table::{IndexSchema, KeySchema};
use onggi_model::value::item_size_bytes;
use onggi_model::{AttributeValue, Item};
use onggi_storage::WriteBatch;

use crate::catalog::TableHandle;

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

/// Adds to `batch` the index changes of replacing `old` by `new` at `base_key`; returns the
/// statistics changes to apply once the batch is durable.
pub(crate) fn index_changes(
    table: &TableHandle,
    base_key: &[u8],
    old: Option<&Item>,
    new: Option<&Item>,
    version: Ballot,
    batch: &mut WriteBatch,
) -> Vec<IndexDelta> {
    let mut deltas = Vec::new();
    for (position, index) in table.indexes.iter().enumerate() {
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

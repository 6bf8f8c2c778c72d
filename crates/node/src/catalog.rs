//! The table catalog: every table's schema, durable in the `catalog` tree and cached in memory.
//!
//! Each table's items live in their own storage tree, named after the table's unique id (not its
//! name), so that a table deleted and created again under the same name never sees old data, and
//! dropping a table is dropping its tree. Live statistics (item count, size) are kept in memory,
//! adjusted by every write, and recounted from storage in the background when the node starts
//! ([`Recount`]).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use crate::indexing::INDEX_ENTRY_OVERHEAD_BYTES;
use onggi_core::hlc::Timestamp;
use onggi_core::record::Record;
use onggi_model::codec::ITEM_FORMAT_VERSION;
use onggi_model::table::{IndexSchema, IndexStatus, TABLE_SCHEMA_FORMAT_VERSION, TableSchema};
use onggi_model::value::item_size_bytes;
use onggi_storage::{Direction, Durability, Engine, StorageError, Tree, WriteBatch, commit_async};

/// Name of the tree holding table schemas.
pub const CATALOG_TREE: &str = "catalog";
const TABLE_KEY_PREFIX: &str = "table/";
/// Catalog keys recording deleted tables: `deleted/<table id>` → the deletion's clock time (u64,
/// big-endian). A cluster member that missed a DeleteTable learns of it from these (and does not
/// take the table back from a member that missed it too).
const DELETED_KEY_PREFIX: &str = "deleted/";
/// Most deletions remembered; the oldest are forgotten first.
pub const DELETED_TABLES_REMEMBERED: usize = 10_000;

/// The catalog's name for the system table of table descriptions (`crate::registry`): a name no
/// DynamoDB table can have (`:` is not allowed in table names), so no request can reach it.
pub const REGISTRY_TABLE_NAME: &str = "onggi:tables";
/// The registry's table id: not a UUID, so no user table ever has it.
pub const REGISTRY_TABLE_ID: &str = "onggi-tables";
/// The registry's partition key attribute: the table name.
pub const REGISTRY_KEY: &str = "name";
/// Catalog names of system tables (the registry, global index views) start with this: no
/// DynamoDB table name contains `:`.
const SYSTEM_NAME_PREFIX: &str = "onggi:";

/// The catalog's name for the view of the global index whose id is `index_id`.
fn view_name(index_id: &str) -> String {
    format!("{SYSTEM_NAME_PREFIX}index:{index_id}")
}

fn is_system(name: &str) -> bool {
    name.starts_with(SYSTEM_NAME_PREFIX)
}

/// The registry's description: built in, the same on every node, never stored in the catalog
/// tree, never changed.
fn registry_schema() -> TableSchema {
    use onggi_model::table::{BillingMode, KeyAttribute, KeySchema, KeyType};
    TableSchema {
        format_version: TABLE_SCHEMA_FORMAT_VERSION,
        name: REGISTRY_TABLE_NAME.to_string(),
        id: REGISTRY_TABLE_ID.to_string(),
        key: KeySchema {
            partition: KeyAttribute { name: REGISTRY_KEY.to_string(), value_type: KeyType::S },
            sort: None,
        },
        attribute_definitions: vec![(REGISTRY_KEY.to_string(), KeyType::S)],
        billing_mode: BillingMode::PayPerRequest,
        read_capacity_units: 0,
        write_capacity_units: 0,
        local_indexes: Vec::new(),
        global_indexes: Vec::new(),
        created_ms: 0,
        pay_per_request_since_ms: None,
        deletion_protection: true,
        ttl_attribute: None,
        tags: BTreeMap::new(),
        revision: 0,
    }
}

/// Live statistics of one table (one table id): shared by every handle of that table, so that a
/// write that started before an UpdateTable still counts after it.
#[derive(Debug, Default)]
pub struct TableStats {
    /// Items currently stored (tombstones excluded).
    pub item_count: AtomicI64,
    /// Bytes of the items currently stored, as DynamoDB counts item size.
    pub size_bytes: AtomicI64,
}

impl TableStats {
    /// Adjusts the statistics after a write replaced `old` by `new` (sizes in bytes).
    pub fn account(&self, old_size: Option<usize>, new_size: Option<usize>) {
        let count_delta = i64::from(new_size.is_some()) - i64::from(old_size.is_some());
        let size_delta = new_size.unwrap_or(0) as i64 - old_size.unwrap_or(0) as i64;
        self.item_count.fetch_add(count_delta, Ordering::Relaxed);
        self.size_bytes.fetch_add(size_delta, Ordering::Relaxed);
    }
}

/// A secondary index of a table known to this node.
pub struct IndexHandle {
    /// Its schema.
    pub schema: IndexSchema,
    /// Whether it is a global index (else local).
    pub global: bool,
    /// The storage tree of its entries.
    pub tree: Tree,
    /// Its live statistics (entries and their projected size).
    pub stats: Arc<TableStats>,
}

/// A table known to this node.
pub struct TableHandle {
    /// Its schema.
    pub schema: TableSchema,
    /// The storage tree of its items.
    pub tree: Tree,
    /// Its live statistics.
    pub stats: Arc<TableStats>,
    /// Its secondary indexes, local ones first, as in the schema.
    pub indexes: Vec<IndexHandle>,
    /// Whether this is a global index's *view*: on a cluster, a global secondary index is kept
    /// as a table of its own, placed by the index's key (see `crate::cluster::views`); its
    /// handle shares the index's tree and statistics. Never reachable by a request's table name.
    pub view: bool,
}

impl TableHandle {
    /// Adjusts the statistics after a write replaced `old` by `new` (sizes in bytes; a view's
    /// entries count DynamoDB's per-entry overhead, as an index's do).
    pub fn account(&self, old_size: Option<usize>, new_size: Option<usize>) {
        let overhead = if self.view { INDEX_ENTRY_OVERHEAD_BYTES } else { 0 };
        self.stats.account(old_size.map(|size| size + overhead), new_size.map(|size| size + overhead));
    }

    /// The views of this table's global indexes (see [`TableHandle::view`]): each a table whose
    /// id is the index's id, whose tree and statistics are the index's.
    fn views(&self) -> Vec<Arc<TableHandle>> {
        self.indexes
            .iter()
            .filter(|index| index.global)
            .map(|index| {
                let mut schema = registry_schema();
                schema.name = view_name(&index.schema.id);
                schema.id = index.schema.id.clone();
                schema.key = index.schema.key.clone();
                schema.attribute_definitions = Vec::new();
                schema.deletion_protection = false;
                Arc::new(TableHandle {
                    schema,
                    tree: index.tree.clone(),
                    stats: index.stats.clone(),
                    indexes: Vec::new(),
                    view: true,
                })
            })
            .collect()
    }

    /// The index named `name`.
    pub fn index(&self, name: &str) -> Option<&IndexHandle> {
        self.indexes.iter().find(|index| index.schema.name == name)
    }
}

/// The name of the storage tree holding a table's items.
pub fn items_tree_name(schema: &TableSchema) -> String {
    format!("items.{}", schema.id)
}

/// The name of the storage tree holding an index's entries.
pub fn index_tree_name(index: &IndexSchema) -> String {
    format!("index.{}", index.id)
}

/// Every storage tree a table owns: its items, its indexes, and (on a cluster) its consensus
/// state and its global indexes' views' (see [`TableHandle::view`]).
pub fn tree_names(schema: &TableSchema) -> Vec<String> {
    std::iter::once(items_tree_name(schema))
        .chain(schema.indexes().map(index_tree_name))
        .chain(std::iter::once(crate::cluster::consensus_tree_name(&schema.id)))
        .chain(schema.global_indexes.iter().map(|index| crate::cluster::consensus_tree_name(&index.id)))
        .collect()
}

/// Opens the trees of a table's indexes, reusing the statistics of indexes `previous` already had.
fn open_indexes(
    engine: &dyn Engine,
    schema: &TableSchema,
    previous: Option<&TableHandle>,
) -> Result<Vec<IndexHandle>, StorageError> {
    let globals = schema.local_indexes.len();
    schema
        .indexes()
        .enumerate()
        .map(|(position, index)| {
            let tree = engine.open_tree(&index_tree_name(index))?;
            let stats = previous
                .and_then(|previous| {
                    previous.indexes.iter().find(|old| old.schema.id == index.id && old.schema.name == index.name)
                })
                .map(|old| old.stats.clone())
                .unwrap_or_default();
            Ok(IndexHandle { schema: index.clone(), global: position >= globals, tree, stats })
        })
        .collect()
}

/// All tables of this node.
pub struct Catalog {
    engine: Arc<dyn Engine>,
    catalog_tree: Tree,
    tables: RwLock<BTreeMap<String, Arc<TableHandle>>>,
    /// Ids of deleted tables, with the clock time of their deletion.
    deleted: RwLock<BTreeMap<String, u64>>,
    /// Serializes control-plane changes (create, update, delete) so that each one reads and
    /// writes the catalog without interference.
    pub(crate) changes: tokio::sync::Mutex<()>,
    /// The recounts of the statistics, opened at load and not yet taken (see [`Recount`]).
    recounts: std::sync::Mutex<Vec<Recount>>,
}

impl Catalog {
    /// Loads every table's schema, and opens (without running them) the recounts of their
    /// statistics: [`Catalog::take_recounts`].
    pub fn load(engine: Arc<dyn Engine>) -> Result<Catalog, String> {
        let catalog_tree = engine.open_tree(CATALOG_TREE).map_err(|error| error.to_string())?;
        let mut tables = BTreeMap::new();
        let mut recounts = Vec::new();
        let entries = engine
            .range(&catalog_tree, Bound::Unbounded, Bound::Unbounded, Direction::Forward)
            .map_err(|error| error.to_string())?;
        let mut deleted = BTreeMap::new();
        for entry in entries {
            let (key, value) = entry.map_err(|error| error.to_string())?;
            if let Some(id) = key.strip_prefix(DELETED_KEY_PREFIX.as_bytes()) {
                let time = value.as_slice().try_into().map(u64::from_be_bytes).unwrap_or(0);
                deleted.insert(String::from_utf8_lossy(id).into_owned(), time);
                continue;
            }
            let mut schema: TableSchema = serde_json::from_slice(&value)
                .map_err(|error| format!("catalog entry {} is unreadable: {error}", String::from_utf8_lossy(&key)))?;
            if schema.format_version != TABLE_SCHEMA_FORMAT_VERSION {
                return Err(format!(
                    "table {} was described in schema format {}; this build reads {TABLE_SCHEMA_FORMAT_VERSION}",
                    schema.name, schema.format_version
                ));
            }
            // An index described before indexes were maintained has no entries: rebuild it.
            // Its id is derived from the table's and its name, so it is the same at every start
            // until the finished backfill stores it.
            for index in schema.local_indexes.iter_mut().chain(&mut schema.global_indexes) {
                if index.id.is_empty() {
                    index.id = format!("{}.{:016x}", schema.id, xxhash_rust::xxh3::xxh3_64(index.name.as_bytes()));
                    index.status = IndexStatus::Backfilling;
                }
            }
            let tree = engine.open_tree(&items_tree_name(&schema)).map_err(|error| error.to_string())?;
            let indexes = open_indexes(&*engine, &schema, None).map_err(|error| error.to_string())?;
            let handle = TableHandle { schema, tree, stats: Arc::default(), indexes, view: false };
            recounts.push(Recount::open(&*engine, &handle.tree, &handle.stats, &handle.schema.name, 0)?);
            for index in &handle.indexes {
                let overhead = INDEX_ENTRY_OVERHEAD_BYTES;
                recounts.push(Recount::open(&*engine, &index.tree, &index.stats, &handle.schema.name, overhead)?);
            }
            for view in handle.views() {
                tables.insert(view.schema.name.clone(), view);
            }
            tables.insert(handle.schema.name.clone(), Arc::new(handle));
        }
        // The registry (like the views of global indexes) sits among the tables so that
        // everything replicating tables — consensus, hints, anti-entropy, tombstone collection,
        // layout changes — replicates it too; `get`, `names` and `user_tables` leave them out.
        let registry = registry_schema();
        let tree = engine.open_tree(&items_tree_name(&registry)).map_err(|error| error.to_string())?;
        let handle = TableHandle { schema: registry, tree, stats: Arc::default(), indexes: Vec::new(), view: false };
        recounts.push(Recount::open(&*engine, &handle.tree, &handle.stats, REGISTRY_TABLE_NAME, 0)?);
        tables.insert(REGISTRY_TABLE_NAME.to_string(), Arc::new(handle));
        // The item encoding version is recorded per record; this assertion keeps the two in step.
        debug_assert_eq!(ITEM_FORMAT_VERSION, 1);
        Ok(Catalog {
            engine,
            catalog_tree,
            tables: RwLock::new(tables),
            deleted: RwLock::new(deleted),
            changes: tokio::sync::Mutex::new(()),
            recounts: std::sync::Mutex::new(recounts),
        })
    }

    /// The recounts of the statistics opened at load, for the caller to run (once).
    pub fn take_recounts(&self) -> Vec<Recount> {
        std::mem::take(&mut *self.recounts.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// The user table named `name`, if it exists.
    pub fn get(&self, name: &str) -> Option<Arc<TableHandle>> {
        if is_system(name) {
            return None;
        }
        self.tables.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(name).cloned()
    }

    /// The registry of table descriptions (a system table; see `crate::registry`).
    pub fn registry(&self) -> Arc<TableHandle> {
        self.tables
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(REGISTRY_TABLE_NAME)
            .cloned()
            .expect("the registry is loaded with the catalog and never removed")
    }

    /// The table whose unique id is `id`, if it exists, the registry and the views of global
    /// indexes included (how cluster messages name tables). A scan
    /// of the handles under the read lock, without allocating: a node holds at most a few thousand
    /// tables.
    pub fn get_by_id(&self, id: &str) -> Option<Arc<TableHandle>> {
        let tables = self.tables.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        tables.values().find(|table| table.schema.id == id).cloned()
    }

    /// Every user table's name, sorted.
    pub fn names(&self) -> Vec<String> {
        let tables = self.tables.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        tables.keys().filter(|name| !is_system(name)).cloned().collect()
    }

    /// Durably records a new or changed schema and publishes it. The caller holds `changes`.
    pub async fn store(&self, schema: TableSchema) -> Result<Arc<TableHandle>, StorageError> {
        assert_ne!(schema.id, REGISTRY_TABLE_ID, "the registry's description is built in");
        let tree = self.engine.open_tree(&items_tree_name(&schema))?;
        let previous = self.get(&schema.name).filter(|previous| previous.schema.id == schema.id);
        let indexes = open_indexes(&*self.engine, &schema, previous.as_deref())?;
        let mut batch = WriteBatch::new();
        let encoded = serde_json::to_vec(&schema).expect("schemas always serialize");
        batch.put(&self.catalog_tree, format!("{TABLE_KEY_PREFIX}{}", schema.name).into_bytes(), encoded);
        commit_async(&*self.engine, batch, Durability::Sync).await?;
        let mut tables = self.tables.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let stats = match tables.get(&schema.name) {
            Some(previous) if previous.schema.id == schema.id => previous.stats.clone(),
            _ => Arc::default(),
        };
        let handle = Arc::new(TableHandle { schema, tree, stats, indexes, view: false });
        if let Some(previous) = tables.get(&handle.schema.name).cloned() {
            for view in previous.views() {
                tables.remove(&view.schema.name);
            }
        }
        for view in handle.views() {
            tables.insert(view.schema.name.clone(), view);
        }
        tables.insert(handle.schema.name.clone(), handle.clone());
        Ok(handle)
    }

    /// Ids of the deleted tables this node remembers.
    pub fn deleted(&self) -> Vec<String> {
        self.deleted.read().unwrap_or_else(std::sync::PoisonError::into_inner).keys().cloned().collect()
    }

    /// Whether the table with id `id` was deleted.
    pub fn was_deleted(&self, id: &str) -> bool {
        self.deleted.read().unwrap_or_else(std::sync::PoisonError::into_inner).contains_key(id)
    }

    /// Every table's handle, the registry and the views of global indexes included: what the
    /// cluster replicates.
    pub fn tables(&self) -> Vec<Arc<TableHandle>> {
        self.tables.read().unwrap_or_else(std::sync::PoisonError::into_inner).values().cloned().collect()
    }

    /// Every user table's handle (the registry and the views left out).
    pub fn user_tables(&self) -> Vec<Arc<TableHandle>> {
        let tables = self.tables.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        tables.iter().filter(|(name, _)| !is_system(name)).map(|(_, table)| table.clone()).collect()
    }

    /// Durably removes a table and its data, remembering the deletion (`time`: the clock's time
    /// now). The caller holds `changes`.
    pub async fn remove(&self, name: &str, time: u64) -> Result<Option<Arc<TableHandle>>, StorageError> {
        let Some(handle) = self.get(name) else { return Ok(None) }; // never the registry
        let mut batch = WriteBatch::new();
        batch.delete(&self.catalog_tree, format!("{TABLE_KEY_PREFIX}{name}").into_bytes());
        batch.put(
            &self.catalog_tree,
            format!("{DELETED_KEY_PREFIX}{}", handle.schema.id).into_bytes(),
            time.to_be_bytes().to_vec(),
        );
        let forgotten = {
            let deleted = self.deleted.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            let excess = (deleted.len() + 1).saturating_sub(DELETED_TABLES_REMEMBERED);
            let mut oldest: Vec<(u64, String)> = deleted.iter().map(|(id, time)| (*time, id.clone())).collect();
            oldest.sort_unstable();
            oldest.truncate(excess);
            oldest
        };
        for (_, id) in &forgotten {
            batch.delete(&self.catalog_tree, format!("{DELETED_KEY_PREFIX}{id}").into_bytes());
        }
        commit_async(&*self.engine, batch, Durability::Sync).await?;
        {
            let mut deleted = self.deleted.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            for (_, id) in forgotten {
                deleted.remove(&id);
            }
            deleted.insert(handle.schema.id.clone(), time);
        }
        {
            let mut tables = self.tables.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            for view in handle.views() {
                tables.remove(&view.schema.name);
            }
            tables.remove(name);
        }
        // The catalog no longer names the trees, so a crash from here on leaves only orphan trees,
        // which the next start removes.
        for tree in tree_names(&handle.schema) {
            self.engine.drop_tree(&tree)?;
        }
        Ok(Some(handle))
    }

    /// Drops item and index trees that no catalog entry names (left by a crash during DeleteTable
    /// or while an index was being deleted).
    pub fn drop_orphan_trees(&self) -> Result<usize, StorageError> {
        let named: std::collections::HashSet<String> = self
            .tables
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .flat_map(|table| tree_names(&table.schema))
            .collect();
        let mut dropped = 0;
        for tree in self.engine.list_trees()? {
            let owned_by_a_table = ["items.", "index.", "consensus."].iter().any(|prefix| tree.starts_with(prefix));
            if owned_by_a_table && !named.contains(&tree) {
                self.engine.drop_tree(&tree)?;
                dropped += 1;
            }
        }
        Ok(dropped)
    }
}

/// The recount of one table's or index's statistics from storage, in the background.
///
/// Statistics live in memory, adjusted by every write, and are not stored: a node counts them
/// again when it starts. Counting reads every record (a million items of 1 KB take seconds), so
/// it does not hold the start up: the catalog opens each tree's scan at load — a snapshot of the
/// tree as it is before the node serves anything — and the statistics start at zero, counting
/// only the writes made after it. Adding the snapshot's count when the scan ends gives the exact
/// figure. Until every recount ended, whoever shows statistics waits (`Node::recounted`).
pub struct Recount {
    table: String,
    entries: onggi_storage::BoxIter,
    stats: Arc<TableStats>,
    overhead: usize,
}

impl Recount {
    fn open(
        engine: &dyn Engine,
        tree: &Tree,
        stats: &Arc<TableStats>,
        table: &str,
        overhead: usize,
    ) -> Result<Recount, String> {
        let entries = engine
            .range(tree, Bound::Unbounded, Bound::Unbounded, Direction::Forward)
            .map_err(|error| error.to_string())?;
        Ok(Recount { table: table.to_string(), entries, stats: stats.clone(), overhead })
    }

    /// Counts the snapshot, adds it to the statistics, and returns the newest version timestamp
    /// it saw.
    pub fn run(self) -> Result<Timestamp, String> {
        let (mut count, mut size) = (0i64, 0i64);
        let mut newest = Timestamp::ZERO;
        for entry in self.entries {
            let (_, value) = entry.map_err(|error| format!("table {}: {error}", self.table))?;
            let record = Record::decode(&value).map_err(|error| format!("table {}: {error}", self.table))?;
            newest = newest.max(record.version.time);
            if let Some(item) = record.item {
                count += 1;
                size += (item_size_bytes(&item) + self.overhead) as i64;
            }
        }
        self.stats.item_count.fetch_add(count, Ordering::Relaxed);
        self.stats.size_bytes.fetch_add(size, Ordering::Relaxed);
        Ok(newest)
    }
}

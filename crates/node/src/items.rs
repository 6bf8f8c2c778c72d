//! Single-item operations: PutItem, GetItem, UpdateItem, DeleteItem.
//!
//! Every write follows the same steps:
//! 1. validate the whole request (table, values, key, expressions, return-value options) — a
//!    request that fails here has touched nothing;
//! 2. lock the item's stripe, read its current record;
//! 3. *decide*: evaluate the condition and compute the new item with pure functions of the old
//!    one — a closure from the current item to an [`Effect`] and the answer (or an error such as
//!    a failed condition), with no side effect;
//! 4. write the new record with a fresh version stamp (a delete removes it), durably;
//! 5. release the stripe and answer.
//!
//! The lock is held across the durable write, so a conditional write or an update never acts on a
//! version that another in-flight write is replacing. Writes to different stripes proceed in
//! parallel and share fsyncs through the engine's group commit.
//!
//! Steps 2–5 are [`Node::execute`], the one seam between an operation and how its item is made
//! to change: on a cluster the same decide closure becomes the apply function of a per-item
//! consensus round (`onggi_core::paxos`, driven by `crate::cluster`), which may run it more than
//! once — hence no side effects.

use onggi_core::keys::item_key;
use onggi_core::record::Record;
use onggi_model::ops::{
    DeleteItemInput, GetItemInput, GetItemOutput, PutItemInput, RequestContext, UpdateItemInput, WriteItemOutput,
};
use onggi_model::table::{ItemKey, required_table_name};
use onggi_model::value::{CONTAINER_DEPTH_MAX, ITEM_SIZE_BYTES_MAX, item_from_json, item_size_bytes};
use onggi_model::{DynamoError, ErrorKind, Item};
use onggi_storage::{Durability, WriteBatch};
use std::sync::Arc;

use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::Node;
use crate::capacity::{self, CapacityReport};
use crate::catalog::TableHandle;
use crate::cluster::{self, wire::WriteKind};
use crate::expressions;
use crate::indexing;
use crate::tables::{storage_error, table_not_found};

/// Number of item lock stripes: enough that unrelated items rarely share one at hundreds of
/// concurrent writers, small enough to cost nothing (a few tens of KB).
const LOCK_STRIPES: usize = 4096;

/// Per-item mutual exclusion, striped by a hash of the storage key. Guards are owned, so that a
/// write can hand its guard to the storage completion: the lock is released when the write is
/// durable, even if the request that made it was cancelled (a client that disconnects must not
/// let a second writer read the version the first is still replacing).
pub(crate) struct LockStripes(Box<[Arc<Mutex<()>>]>);

impl LockStripes {
    pub(crate) fn new() -> LockStripes {
        LockStripes((0..LOCK_STRIPES).map(|_| Arc::new(Mutex::new(()))).collect())
    }

    /// Waits until every write that held a stripe when this was called has finished.
    pub(crate) async fn quiesce(&self) {
        for stripe in self.0.iter() {
            drop(stripe.lock().await);
        }
    }

    pub(crate) async fn lock(&self, table: &TableHandle, key: &[u8]) -> OwnedMutexGuard<()> {
        let mut hashed = Vec::with_capacity(table.schema.id.len() + key.len());
        hashed.extend_from_slice(table.schema.id.as_bytes());
        hashed.extend_from_slice(key);
        let stripe = xxhash_rust::xxh3::xxh3_64(&hashed) as usize % self.0.len();
        self.0[stripe].clone().lock_owned().await
    }
}

/// What a write asks to get back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReturnValues {
    None,
    AllOld,
    UpdatedOld,
    AllNew,
    UpdatedNew,
}

fn parse_return_values(value: Option<&str>, allowed: &[ReturnValues]) -> Result<ReturnValues, DynamoError> {
    let parsed = match value {
        None | Some("NONE") => Some(ReturnValues::None),
        Some("ALL_OLD") => Some(ReturnValues::AllOld),
        Some("UPDATED_OLD") => Some(ReturnValues::UpdatedOld),
        Some("ALL_NEW") => Some(ReturnValues::AllNew),
        Some("UPDATED_NEW") => Some(ReturnValues::UpdatedNew),
        Some(_) => None,
    };
    parsed
        .filter(|parsed| allowed.contains(parsed))
        .ok_or_else(|| DynamoError::validation("Return values set to invalid value"))
}

fn parse_return_on_failure(value: Option<&str>) -> Result<bool, DynamoError> {
    match value {
        None | Some("NONE") => Ok(false),
        Some("ALL_OLD") => Ok(true),
        Some(other) => Err(DynamoError::validation(format!(
            "1 validation error detected: Value '{other}' at 'returnValuesOnConditionCheckFailure' failed to satisfy constraint: Member must satisfy enum value set: [ALL_OLD, NONE]"
        ))),
    }
}

pub(crate) fn parse_item_collection_metrics(value: Option<&str>) -> Result<(), DynamoError> {
    match value {
        None | Some("NONE") | Some("SIZE") => Ok(()),
        Some(other) => Err(DynamoError::validation(format!(
            "1 validation error detected: Value '{other}' at 'returnItemCollectionMetrics' failed to satisfy constraint: Member must satisfy enum value set: [SIZE, NONE]"
        ))),
    }
}

fn required_item(value: Option<&onggi_model::ops::JsonMap>) -> Result<&onggi_model::ops::JsonMap, DynamoError> {
    value.ok_or_else(|| DynamoError::validation("Item to put in PutItem cannot be null"))
}

fn required_key(value: Option<&onggi_model::ops::JsonMap>) -> Result<&onggi_model::ops::JsonMap, DynamoError> {
    value.ok_or_else(|| DynamoError::validation("Cannot have null key for GetItem, DeleteItem, or UpdateItem"))
}

/// Who asked for a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WriteOrigin {
    /// A client request.
    Client,
    /// The Time to Live expirer (a deletion streams will mark as a system delete).
    Expiry,
}

/// The options every write takes, parsed and checked.
pub(crate) struct WriteOptions {
    return_values: ReturnValues,
    return_old_on_failure: bool,
    report: CapacityReport,
}

impl WriteOptions {
    fn parse(
        return_values: Option<&str>,
        allowed: &[ReturnValues],
        on_failure: Option<&str>,
        capacity: Option<&str>,
        metrics: Option<&str>,
    ) -> Result<WriteOptions, DynamoError> {
        let return_values = parse_return_values(return_values, allowed)?;
        let return_old_on_failure = parse_return_on_failure(on_failure)?;
        let report = CapacityReport::parse(capacity)?;
        parse_item_collection_metrics(metrics)?;
        Ok(WriteOptions { return_values, return_old_on_failure, report })
    }
}

/// What a write does to its item, decided from the item's current value.
pub(crate) enum Effect {
    /// Nothing (a delete of a missing item).
    Keep,
    /// Store this item.
    Put(Item),
    /// Store a tombstone.
    Delete,
}

/// Where a client write may run: on its item's home coordinator, handed there when that is
/// another node (`cluster::forward`), or here whatever the home (a write handed to this node).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    Home,
    Here,
}

/// Whether a write's `ReturnValues` asks for attributes back.
fn asks_values(return_values: &Option<String>) -> bool {
    return_values.as_deref().is_some_and(|value| value != "NONE")
}

fn condition_failed(old: Option<&Item>, return_old: bool) -> DynamoError {
    let mut error = DynamoError::new(ErrorKind::ConditionalCheckFailed, "The conditional request failed");
    if return_old {
        error.item = old.cloned();
    }
    error
}

impl Node {
    /// The key item and storage key named by a `Key` parameter.
    pub(crate) fn key_of(
        table: &TableHandle,
        raw_key: &onggi_model::ops::JsonMap,
    ) -> Result<(Item, Vec<u8>), DynamoError> {
        let key_item = item_from_json(raw_key)?;
        let ItemKey { partition, sort } = table.schema.key_from_key_map(&key_item)?;
        let key = item_key(&partition, sort.as_ref());
        Ok((key_item, key))
    }

    /// Runs `decide` on the item's current value under the item's lock and makes the effect it
    /// chose durable (see the module docs); `decide`'s error, such as a failed condition, is the
    /// answer and writes nothing.
    ///
    /// Returns `None` when `table` stopped being the table's current description before the lock
    /// was taken (an index was added or removed): the caller starts over with the new one, so
    /// that every write maintains exactly the indexes its table has once it holds the lock (what
    /// index backfill and index removal rely on).
    pub(crate) async fn execute<T>(
        &self,
        table: &Arc<TableHandle>,
        key: Vec<u8>,
        origin: WriteOrigin,
        mut decide: impl FnMut(Option<&Item>) -> Result<(Effect, T), DynamoError>,
    ) -> Result<Option<T>, DynamoError> {
        if let Some(cluster) = self.cluster() {
            if !self.is_current(table) {
                return Ok(None);
            }
            let cluster = cluster.clone();
            return self
                .execute_replicated(&cluster, table, key, false, origin, decide)
                .await
                .map(|(answer, _)| Some(answer));
        }
        let guard = self.inner.locks.lock(table, &key).await;
        if !self.is_current(table) {
            return Ok(None);
        }
        let current = self.read_current(table, &key)?;
        let (effect, answer) = decide(current.as_ref())?;
        let new = match effect {
            Effect::Keep => return Ok(Some(answer)),
            Effect::Put(item) => Some(item),
            Effect::Delete => None,
        };
        self.write_current(table, key, current.as_ref(), new, origin, guard).await?;
        Ok(Some(answer))
    }

    /// The table named `name`. On a cluster, a table this node has not heard of yet (an
    /// announcement it missed, or that has not arrived) is looked up in the registry.
    pub(crate) async fn table(&self, name: &str) -> Result<Arc<TableHandle>, DynamoError> {
        if let Some(table) = self.inner.catalog.get(name) {
            return Ok(table);
        }
        self.learn_table(name).await.ok_or_else(table_not_found)
    }

    /// Learns the table named `name` from the registry if this node has not heard of it (see
    /// [`Node::table`]), for requests that look their table up later without waiting.
    pub(crate) async fn learn_unknown_table(&self, name: Option<&str>) {
        if let Some(name) = name
            && self.inner.catalog.get(name).is_none()
        {
            self.learn_table(name).await;
        }
    }

    /// Whether `table` is still the catalog's description of its table.
    pub(crate) fn is_current(&self, table: &Arc<TableHandle>) -> bool {
        self.inner.catalog.get(&table.schema.name).is_some_and(|current| Arc::ptr_eq(&current, table))
    }

    /// Reads the current item at `key`, `None` when absent or deleted.
    pub(crate) fn read_current(&self, table: &TableHandle, key: &[u8]) -> Result<Option<Item>, DynamoError> {
        let Some(bytes) = self.inner.engine.get(&table.tree, key).map_err(storage_error)? else {
            return Ok(None);
        };
        let record = Record::decode(&bytes)
            .map_err(|error| DynamoError::internal(format!("stored record unreadable: {error}")))?;
        Ok(record.item)
    }

    /// Writes `new` (or, for `None`, removes the record) as the version of `key` that replaces
    /// `old`, with the index entries that change, in one atomic durable batch; then accounts for
    /// it and releases the item's lock. Both happen in the storage completion, so they happen
    /// exactly when the write is durable even if the caller stops waiting (a cancelled request).
    pub(crate) async fn write_current(
        &self,
        table: &Arc<TableHandle>,
        key: Vec<u8>,
        old: Option<&Item>,
        new: Option<Item>,
        origin: WriteOrigin,
        guard: OwnedMutexGuard<()>,
    ) -> Result<(), DynamoError> {
        let old_size = old.map(item_size_bytes);
        let new_size = new.as_ref().map(item_size_bytes);
        // A cluster of one that grows takes the replicated path from the first join, whose
        // replica state in memory must not miss a write of this path still landing then.
        let forget =
            self.inner.cluster.get().map(|cluster| self.replica_state_forgetter(cluster, &table.schema.id, &key));
        let version = self.inner.version();
        let mut batch = WriteBatch::new();
        let index_deltas =
            indexing::index_changes(table, &key, old, new.as_ref(), version, &mut batch, indexing::Globals::Local);
        if new.is_some() {
            let record = Record { version, item: new, expired: origin == WriteOrigin::Expiry, lineage: None };
            batch.put(&table.tree, key, record.encode());
        } else {
            // One node has no replicas to agree with that the item is gone, so no tombstone: the
            // record goes (on a cluster, deletes are tombstones until every replica has them,
            // `cluster::tombstones`).
            batch.delete(&table.tree, key);
        }
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let table = table.clone();
        self.inner.engine.commit(
            batch,
            Durability::Sync,
            Box::new(move |result| {
                if result.is_ok() {
                    table.account(old_size, new_size);
                    for delta in index_deltas {
                        delta.apply(&table);
                    }
                }
                if let Some(forget) = forget {
                    forget();
                }
                drop(guard);
                // The receiver is gone if the request was cancelled; the write stands regardless.
                let _ = sender.send(result);
            }),
        );
        receiver.await.unwrap_or(Err(onggi_storage::StorageError::Closed)).map_err(storage_error)
    }

    pub(crate) async fn put_item_routed(
        &self,
        input: PutItemInput,
        route: Route,
    ) -> Result<WriteItemOutput, DynamoError> {
        let name = required_table_name(input.table_name.as_deref())?;
        let raw_item = required_item(input.item.as_ref())?;
        let options = WriteOptions::parse(
            input.return_values.as_deref(),
            &[ReturnValues::None, ReturnValues::AllOld],
            input.return_values_on_condition_check_failure.as_deref(),
            input.return_consumed_capacity.as_deref(),
            input.return_item_collection_metrics.as_deref(),
        )?;
        let prepared = expressions::for_put(&input)?;
        loop {
            let table = self.table(name).await?;
            prepared.check_against(&table.schema)?;
            let item = item_from_json(raw_item)?;
            let key = Self::checked_put_key(&table, &item)?;
            if route == Route::Home
                && let Some(answer) =
                    self.forward_write(&table, &key, WriteKind::Put, &input, asks_values(&input.return_values)).await
            {
                return answer;
            }
            if let Some(output) = self.put_once(&table, key, item, &prepared, &options).await? {
                return Ok(output);
            }
        }
    }

    /// The storage key of an item about to be put, after checking it fits the table.
    pub(crate) fn checked_put_key(table: &TableHandle, item: &Item) -> Result<Vec<u8>, DynamoError> {
        let ItemKey { partition, sort } = table.schema.key_of_item(item)?;
        if item_size_bytes(item) > ITEM_SIZE_BYTES_MAX {
            return Err(DynamoError::validation("Item size has exceeded the maximum allowed size"));
        }
        table.schema.check_index_keys(item, false)?;
        Ok(item_key(&partition, sort.as_ref()))
    }

    /// One attempt at a put; `None` when the table's description changed first (retry).
    async fn put_once(
        &self,
        table: &Arc<TableHandle>,
        key: Vec<u8>,
        item: Item,
        prepared: &expressions::Prepared,
        options: &WriteOptions,
    ) -> Result<Option<WriteItemOutput>, DynamoError> {
        self.execute(table, key, WriteOrigin::Client, |old| {
            if !prepared.check(old)? {
                return Err(condition_failed(old, options.return_old_on_failure));
            }
            let consumed_capacity = capacity::for_write(options.report, &table.schema, old, Some(&item));
            let attributes = if options.return_values == ReturnValues::AllOld { old.cloned() } else { None };
            Ok((Effect::Put(item.clone()), WriteItemOutput { attributes, consumed_capacity }))
        })
        .await
    }

    /// Puts `item` unconditionally (BatchWriteItem), returning the capacity it consumed.
    pub(crate) async fn put_unconditional(
        &self,
        name: &str,
        item: Item,
        report: CapacityReport,
    ) -> Result<Option<onggi_model::ops::ConsumedCapacity>, DynamoError> {
        let options = WriteOptions { return_values: ReturnValues::None, return_old_on_failure: false, report };
        let prepared = expressions::Prepared::unconditional();
        loop {
            let table = self.table(name).await?;
            let key = Self::checked_put_key(&table, &item)?;
            if self.cluster().is_some() {
                let input = cluster::batch_put_input(name, &item, report.name());
                if let Some(answer) = self.forward_write(&table, &key, WriteKind::Put, &input, false).await {
                    return answer.map(|output| output.consumed_capacity);
                }
            }
            if let Some(output) = self.put_once(&table, key, item.clone(), &prepared, &options).await? {
                return Ok(output.consumed_capacity);
            }
        }
    }

    /// Deletes the item at `key` unconditionally (BatchWriteItem), returning the capacity consumed.
    pub(crate) async fn delete_unconditional(
        &self,
        name: &str,
        key: &Item,
        report: CapacityReport,
    ) -> Result<Option<onggi_model::ops::ConsumedCapacity>, DynamoError> {
        let options = WriteOptions { return_values: ReturnValues::None, return_old_on_failure: false, report };
        let prepared = expressions::Prepared::unconditional();
        loop {
            let table = self.table(name).await?;
            let ItemKey { partition, sort } = table.schema.key_from_key_map(key)?;
            let storage_key = item_key(&partition, sort.as_ref());
            if self.cluster().is_some() {
                let input = cluster::batch_delete_input(name, key, report.name());
                if let Some(answer) = self.forward_write(&table, &storage_key, WriteKind::Delete, &input, false).await {
                    return answer.map(|output| output.consumed_capacity);
                }
            }
            if let Some(output) =
                self.delete_once(&table, storage_key, &prepared, &options, WriteOrigin::Client).await?
            {
                return Ok(output.consumed_capacity);
            }
        }
    }

    pub(crate) async fn get_item_impl(&self, input: GetItemInput) -> Result<GetItemOutput, DynamoError> {
        let name = required_table_name(input.table_name.as_deref())?;
        let raw_key = required_key(input.key.as_ref())?;
        let report = CapacityReport::parse(input.return_consumed_capacity.as_deref())?;
        let prepared = expressions::for_get(&input)?;
        let table = self.table(name).await?;
        prepared.check_against(&table.schema)?;
        let (_, key) = Self::key_of(&table, raw_key)?;
        let consistent = input.consistent_read.unwrap_or(false);
        let item = self.read_item(&table, &key, consistent).await?;
        let consumed_capacity = capacity::for_read(report, name, item.as_ref(), consistent);
        Ok(GetItemOutput { item: item.map(|item| prepared.project(item)), consumed_capacity })
    }

    /// Reads the item at `key`; a consistent read first waits for any in-flight write of the item
    /// to be durable and acknowledged, so it never returns a version a crash could take back.
    pub(crate) async fn read_item(
        &self,
        table: &TableHandle,
        key: &[u8],
        consistent: bool,
    ) -> Result<Option<Item>, DynamoError> {
        if let Some(cluster) = self.cluster() {
            let cluster = cluster.clone();
            if !consistent {
                return self.read_one_replica(&cluster, table, key).await;
            }
            let table = self.table(&table.schema.name).await?;
            let keep = |_: Option<&Item>| Ok((Effect::Keep, ()));
            return self
                .execute_replicated(&cluster, &table, key.to_vec(), true, WriteOrigin::Client, keep)
                .await
                .map(|(_, item)| item);
        }
        if consistent {
            let _guard = self.inner.locks.lock(table, key).await;
            self.read_current(table, key)
        } else {
            self.read_current(table, key)
        }
    }

    pub(crate) async fn update_item_routed(
        &self,
        input: UpdateItemInput,
        route: Route,
    ) -> Result<WriteItemOutput, DynamoError> {
        let name = required_table_name(input.table_name.as_deref())?;
        let raw_key = required_key(input.key.as_ref())?;
        let options = WriteOptions::parse(
            input.return_values.as_deref(),
            &[
                ReturnValues::None,
                ReturnValues::AllOld,
                ReturnValues::UpdatedOld,
                ReturnValues::AllNew,
                ReturnValues::UpdatedNew,
            ],
            input.return_values_on_condition_check_failure.as_deref(),
            input.return_consumed_capacity.as_deref(),
            input.return_item_collection_metrics.as_deref(),
        )?;
        loop {
            let table = self.table(name).await?;
            let prepared = expressions::for_update(&input, &table.schema)?;
            prepared.check_against(&table.schema)?;
            let (key_item, key) = Self::key_of(&table, raw_key)?;
            if route == Route::Home
                && let Some(answer) =
                    self.forward_write(&table, &key, WriteKind::Update, &input, asks_values(&input.return_values)).await
            {
                return answer;
            }
            if let Some(output) = self.update_once(&table, key_item, key, &prepared, &options, &input).await? {
                return Ok(output);
            }
        }
    }

    async fn update_once(
        &self,
        table: &Arc<TableHandle>,
        key_item: Item,
        key: Vec<u8>,
        prepared: &expressions::Prepared,
        options: &WriteOptions,
        input: &UpdateItemInput,
    ) -> Result<Option<WriteItemOutput>, DynamoError> {
        self.execute(table, key, WriteOrigin::Client, |old| {
            if !prepared.check(old)? {
                return Err(condition_failed(old, options.return_old_on_failure));
            }
            // An update of a missing item creates it from its key.
            let base = old.cloned().unwrap_or_else(|| key_item.clone());
            let outcome = prepared.apply_update(&base)?;
            let new = outcome.item.clone();
            if new.values().any(|value| value.depth() > CONTAINER_DEPTH_MAX) {
                return Err(DynamoError::validation("Nesting Levels have exceeded supported limits"));
            }
            let new_size = item_size_bytes(&new);
            if new_size > ITEM_SIZE_BYTES_MAX {
                return Err(DynamoError::validation("Item size to update has exceeded the maximum allowed size"));
            }
            // The "update expression" wording is for UpdateExpression only; AttributeUpdates gets PutItem's.
            table.schema.check_index_keys(&new, input.update_expression.is_some())?;
            let consumed_capacity = capacity::for_write(options.report, &table.schema, old, Some(&new));
            let attributes = match options.return_values {
                ReturnValues::None => None,
                ReturnValues::AllOld => old.cloned(),
                ReturnValues::AllNew => Some(new.clone()),
                ReturnValues::UpdatedOld => old.map(|old| outcome.project_updated(old)).filter(|item| !item.is_empty()),
                ReturnValues::UpdatedNew => Some(outcome.project_updated(&new)).filter(|item| !item.is_empty()),
            };
            Ok((Effect::Put(new), WriteItemOutput { attributes, consumed_capacity }))
        })
        .await
    }

    pub(crate) async fn delete_item_routed(
        &self,
        input: DeleteItemInput,
        route: Route,
    ) -> Result<WriteItemOutput, DynamoError> {
        let name = required_table_name(input.table_name.as_deref())?;
        let raw_key = required_key(input.key.as_ref())?;
        let options = WriteOptions::parse(
            input.return_values.as_deref(),
            &[ReturnValues::None, ReturnValues::AllOld],
            input.return_values_on_condition_check_failure.as_deref(),
            input.return_consumed_capacity.as_deref(),
            input.return_item_collection_metrics.as_deref(),
        )?;
        let prepared = expressions::for_delete(&input)?;
        loop {
            let table = self.table(name).await?;
            prepared.check_against(&table.schema)?;
            let (_, key) = Self::key_of(&table, raw_key)?;
            if route == Route::Home
                && let Some(answer) =
                    self.forward_write(&table, &key, WriteKind::Delete, &input, asks_values(&input.return_values)).await
            {
                return answer;
            }
            if let Some(output) = self.delete_once(&table, key, &prepared, &options, WriteOrigin::Client).await? {
                return Ok(output);
            }
        }
    }

    /// One attempt at a delete; `None` when the table's description changed first (retry).
    pub(crate) async fn delete_once(
        &self,
        table: &Arc<TableHandle>,
        key: Vec<u8>,
        prepared: &expressions::Prepared,
        options: &WriteOptions,
        origin: WriteOrigin,
    ) -> Result<Option<WriteItemOutput>, DynamoError> {
        self.execute(table, key, origin, |old| {
            if !prepared.check(old)? {
                return Err(condition_failed(old, options.return_old_on_failure));
            }
            let consumed_capacity = capacity::for_write(options.report, &table.schema, old, None);
            // On a cluster a tombstone, until every replica has it (`cluster::tombstones`).
            let effect = if old.is_some() { Effect::Delete } else { Effect::Keep };
            let attributes = if options.return_values == ReturnValues::AllOld { old.cloned() } else { None };
            Ok((effect, WriteItemOutput { attributes, consumed_capacity }))
        })
        .await
    }
}

/// Implements the DynamoDB operations by delegating to the node's table and item paths.
impl onggi_model::ops::Backend for Node {
    async fn create_table(
        &self,
        context: &RequestContext,
        input: onggi_model::table::CreateTableInput,
    ) -> Result<onggi_model::ops::TableDescriptionOutput, DynamoError> {
        self.create_table_impl(context, input).await
    }

    async fn describe_table(
        &self,
        context: &RequestContext,
        input: onggi_model::ops::TableNameInput,
    ) -> Result<onggi_model::ops::DescribeTableOutput, DynamoError> {
        self.describe_table_impl(context, input).await
    }

    async fn list_tables(
        &self,
        _context: &RequestContext,
        input: onggi_model::ops::ListTablesInput,
    ) -> Result<onggi_model::ops::ListTablesOutput, DynamoError> {
        self.list_tables_impl(input).await
    }

    async fn update_table(
        &self,
        context: &RequestContext,
        input: onggi_model::ops::UpdateTableInput,
    ) -> Result<onggi_model::ops::TableDescriptionOutput, DynamoError> {
        self.update_table_impl(context, input).await
    }

    async fn delete_table(
        &self,
        context: &RequestContext,
        input: onggi_model::ops::TableNameInput,
    ) -> Result<onggi_model::ops::TableDescriptionOutput, DynamoError> {
        self.delete_table_impl(context, input).await
    }

    async fn put_item(&self, _context: &RequestContext, input: PutItemInput) -> Result<WriteItemOutput, DynamoError> {
        self.put_item_routed(input, Route::Home).await
    }

    async fn get_item(&self, _context: &RequestContext, input: GetItemInput) -> Result<GetItemOutput, DynamoError> {
        self.get_item_impl(input).await
    }

    async fn update_item(
        &self,
        _context: &RequestContext,
        input: UpdateItemInput,
    ) -> Result<WriteItemOutput, DynamoError> {
        self.update_item_routed(input, Route::Home).await
    }

    async fn delete_item(
        &self,
        _context: &RequestContext,
        input: DeleteItemInput,
    ) -> Result<WriteItemOutput, DynamoError> {
        self.delete_item_routed(input, Route::Home).await
    }

    async fn query(
        &self,
        _context: &RequestContext,
        input: onggi_model::ops::QueryInput,
    ) -> Result<onggi_model::ops::QueryOutput, DynamoError> {
        self.query_impl(input).await
    }

    async fn scan(
        &self,
        _context: &RequestContext,
        input: onggi_model::ops::ScanInput,
    ) -> Result<onggi_model::ops::QueryOutput, DynamoError> {
        self.scan_impl(input).await
    }

    async fn batch_get_item(
        &self,
        _context: &RequestContext,
        input: onggi_model::ops::BatchGetItemInput,
    ) -> Result<onggi_model::ops::BatchGetItemOutput, DynamoError> {
        self.batch_get_item_impl(input).await
    }

    async fn batch_write_item(
        &self,
        _context: &RequestContext,
        input: onggi_model::ops::BatchWriteItemInput,
    ) -> Result<onggi_model::ops::BatchWriteItemOutput, DynamoError> {
        self.batch_write_item_impl(input).await
    }

    async fn update_time_to_live(
        &self,
        _context: &RequestContext,
        input: onggi_model::ops::UpdateTimeToLiveInput,
    ) -> Result<serde_json::Value, DynamoError> {
        self.update_time_to_live_impl(input).await
    }

    async fn describe_time_to_live(
        &self,
        _context: &RequestContext,
        input: onggi_model::ops::TableNameInput,
    ) -> Result<serde_json::Value, DynamoError> {
        self.describe_time_to_live_impl(input).await
    }

    async fn tags(
        &self,
        context: &RequestContext,
        operation: onggi_model::ops::TagOperation,
        input: onggi_model::ops::TagsInput,
    ) -> Result<serde_json::Value, DynamoError> {
        self.tags_impl(context, operation, input).await
    }

    async fn describe_service(
        &self,
        context: &RequestContext,
        operation: onggi_model::ops::ServiceDescription,
    ) -> Result<serde_json::Value, DynamoError> {
        Ok(self.describe_service_impl(context, operation))
    }

    async fn cluster_status(&self) -> serde_json::Value {
        self.cluster_status_impl().await
    }

    async fn change_layout(&self, change: serde_json::Value) -> Result<serde_json::Value, String> {
        self.change_layout(change).await
    }
}

//! Single-item operations: PutItem, GetItem, UpdateItem, DeleteItem.
//!
//! Every write follows the same steps:
//! 1. validate the whole request (table, values, key, expressions, return-value options) — a
//!    request that fails here has touched nothing;
//! 2. lock the item's stripe, read its current record;
//! 3. evaluate the condition and compute the new item with pure functions of the old one;
//! 4. write the new record (or a tombstone) with a fresh HLC timestamp, durably;
//! 5. release the stripe and answer.
//!
//! The lock is held across the durable write, so a conditional write or an update never acts on a
//! version that another in-flight write is replacing. Writes to different stripes proceed in
//! parallel and share fsyncs through the engine's group commit.

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
use crate::expressions;
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

    async fn lock(&self, table: &TableHandle, key: &[u8]) -> OwnedMutexGuard<()> {
        let mut hashed = Vec::with_capacity(table.schema.id.len() + key.len());
        hashed.extend_from_slice(table.schema.id.as_bytes());
        hashed.extend_from_slice(key);
        let stripe = xxhash_rust::xxh3::xxh3_64(&hashed) as usize % self.0.len();
        self.0[stripe].clone().lock_owned().await
    }
}

/// What a write asks to get back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReturnValues {
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

fn parse_item_collection_metrics(value: Option<&str>) -> Result<(), DynamoError> {
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

/// The options every write takes, parsed and checked.
struct WriteOptions {
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

fn condition_failed(old: Option<&Item>, return_old: bool) -> DynamoError {
    let mut error = DynamoError::new(ErrorKind::ConditionalCheckFailed, "The conditional request failed");
    if return_old {
        error.item = old.cloned();
    }
    error
}

impl Node {
    /// The key item and storage key named by a `Key` parameter.
    fn key_of(table: &TableHandle, raw_key: &onggi_model::ops::JsonMap) -> Result<(Item, Vec<u8>), DynamoError> {
        let key_item = item_from_json(raw_key)?;
        let ItemKey { partition, sort } = table.schema.key_from_key_map(&key_item)?;
        let key = item_key(&partition, sort.as_ref());
        Ok((key_item, key))
    }

    /// Takes the item's lock, reads its current version and checks the request's condition on
    /// it. The guard must be held until the new version is durable.
    async fn lock_and_check(
        &self,
        table: &TableHandle,
        key: &[u8],
        prepared: &expressions::Prepared,
        return_old_on_failure: bool,
    ) -> Result<(OwnedMutexGuard<()>, Option<Item>), DynamoError> {
        let guard = self.inner.locks.lock(table, key).await;
        let current = self.read_current(table, key)?;
        if !prepared.check(current.as_ref())? {
            return Err(condition_failed(current.as_ref(), return_old_on_failure));
        }
        Ok((guard, current))
    }

    fn table(&self, name: &str) -> Result<std::sync::Arc<TableHandle>, DynamoError> {
        self.inner.catalog.get(name).ok_or_else(table_not_found)
    }

    /// Reads the current item at `key`, `None` when absent or deleted.
    fn read_current(&self, table: &TableHandle, key: &[u8]) -> Result<Option<Item>, DynamoError> {
        let Some(bytes) = self.inner.engine.get(&table.tree, key).map_err(storage_error)? else {
            return Ok(None);
        };
        let record = Record::decode(&bytes)
            .map_err(|error| DynamoError::internal(format!("stored record unreadable: {error}")))?;
        Ok(record.item)
    }

    /// Writes `item` (or a tombstone) as the new version of `key`, durably, then accounts for it
    /// and releases the item's lock. Both happen in the storage completion, so they happen exactly
    /// when the write is durable even if the caller stops waiting (a cancelled request).
    async fn write_current(
        &self,
        table: &Arc<TableHandle>,
        key: Vec<u8>,
        item: Option<Item>,
        old_size: Option<usize>,
        guard: OwnedMutexGuard<()>,
    ) -> Result<(), DynamoError> {
        let new_size = item.as_ref().map(item_size_bytes);
        let record = Record { timestamp: self.inner.timestamp(), item };
        let mut batch = WriteBatch::new();
        batch.put(&table.tree, key, record.encode());
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let table = table.clone();
        self.inner.engine.commit(
            batch,
            Durability::Sync,
            Box::new(move |result| {
                if result.is_ok() {
                    table.account(old_size, new_size);
                }
                drop(guard);
                // The receiver is gone if the request was cancelled; the write stands regardless.
                let _ = sender.send(result);
            }),
        );
        receiver.await.unwrap_or(Err(onggi_storage::StorageError::Closed)).map_err(storage_error)
    }

    pub(crate) async fn put_item_impl(&self, input: PutItemInput) -> Result<WriteItemOutput, DynamoError> {
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
        let table = self.table(name)?;
        let prepared = prepared.check_against(&table.schema)?;
        let item = item_from_json(raw_item)?;
        let ItemKey { partition, sort } = table.schema.key_of_item(&item)?;
        let new_size = item_size_bytes(&item);
        if new_size > ITEM_SIZE_BYTES_MAX {
            return Err(DynamoError::validation("Item size has exceeded the maximum allowed size"));
        }
        table.schema.check_index_keys(&item, false)?;
        let key = item_key(&partition, sort.as_ref());

        let (guard, old) = self.lock_and_check(&table, &key, &prepared, options.return_old_on_failure).await?;
        let consumed_capacity = capacity::for_write(options.report, &table.schema, old.as_ref(), Some(&item));
        self.write_current(&table, key, Some(item), old.as_ref().map(item_size_bytes), guard).await?;
        let attributes = if options.return_values == ReturnValues::AllOld { old } else { None };
        Ok(WriteItemOutput { attributes, consumed_capacity })
    }

    pub(crate) async fn get_item_impl(&self, input: GetItemInput) -> Result<GetItemOutput, DynamoError> {
        let name = required_table_name(input.table_name.as_deref())?;
        let raw_key = required_key(input.key.as_ref())?;
        let report = CapacityReport::parse(input.return_consumed_capacity.as_deref())?;
        let prepared = expressions::for_get(&input)?;
        let table = self.table(name)?;
        let prepared = prepared.check_against(&table.schema)?;
        let (_, key) = Self::key_of(&table, raw_key)?;
        let consistent = input.consistent_read.unwrap_or(false);
        let item = if consistent {
            // A consistent read waits for any in-flight write of this item to be durable and
            // acknowledged, so it never returns a version that a crash could still take back.
            let _guard = self.inner.locks.lock(&table, &key).await;
            self.read_current(&table, &key)?
        } else {
            self.read_current(&table, &key)?
        };
        let consumed_capacity = capacity::for_read(report, name, item.as_ref(), consistent);
        Ok(GetItemOutput { item: item.map(|item| prepared.project(item)), consumed_capacity })
    }

    pub(crate) async fn update_item_impl(&self, input: UpdateItemInput) -> Result<WriteItemOutput, DynamoError> {
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
        let table = self.table(name)?;
        let prepared = expressions::for_update(&input, &table.schema)?.check_against(&table.schema)?;
        let (key_item, key) = Self::key_of(&table, raw_key)?;

        let (guard, old) = self.lock_and_check(&table, &key, &prepared, options.return_old_on_failure).await?;
        // An update of a missing item creates it from its key.
        let base = old.clone().unwrap_or_else(|| key_item.clone());
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
        let consumed_capacity = capacity::for_write(options.report, &table.schema, old.as_ref(), Some(&new));
        let attributes = match options.return_values {
            ReturnValues::None => None,
            ReturnValues::AllOld => old.clone(),
            ReturnValues::AllNew => Some(new.clone()),
            ReturnValues::UpdatedOld => {
                old.as_ref().map(|old| outcome.project_updated(old)).filter(|item| !item.is_empty())
            }
            ReturnValues::UpdatedNew => Some(outcome.project_updated(&new)).filter(|item| !item.is_empty()),
        };
        self.write_current(&table, key, Some(new), old.as_ref().map(item_size_bytes), guard).await?;
        Ok(WriteItemOutput { attributes, consumed_capacity })
    }

    pub(crate) async fn delete_item_impl(&self, input: DeleteItemInput) -> Result<WriteItemOutput, DynamoError> {
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
        let table = self.table(name)?;
        let prepared = prepared.check_against(&table.schema)?;
        let (_, key) = Self::key_of(&table, raw_key)?;

        let (guard, old) = self.lock_and_check(&table, &key, &prepared, options.return_old_on_failure).await?;
        let consumed_capacity = capacity::for_write(options.report, &table.schema, old.as_ref(), None);
        if old.is_some() {
            // A tombstone, not a removal: replicas must later agree that the item is gone.
            self.write_current(&table, key, None, old.as_ref().map(item_size_bytes), guard).await?;
        }
        let attributes = if options.return_values == ReturnValues::AllOld { old } else { None };
        Ok(WriteItemOutput { attributes, consumed_capacity })
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
        self.put_item_impl(input).await
    }

    async fn get_item(&self, _context: &RequestContext, input: GetItemInput) -> Result<GetItemOutput, DynamoError> {
        self.get_item_impl(input).await
    }

    async fn update_item(
        &self,
        _context: &RequestContext,
        input: UpdateItemInput,
    ) -> Result<WriteItemOutput, DynamoError> {
        self.update_item_impl(input).await
    }

    async fn delete_item(
        &self,
        _context: &RequestContext,
        input: DeleteItemInput,
    ) -> Result<WriteItemOutput, DynamoError> {
        self.delete_item_impl(input).await
    }
}

//! BatchGetItem and BatchWriteItem.
//!
//! A batch is validated whole before anything is read or written (a bad request changes nothing);
//! then each item is read or written on its own through the single-item path, atomic per item as
//! in DynamoDB. Writes of one batch run concurrently, so they share fsyncs through group commit.
//! An item the node cannot take now (its commit queue is full) is handed back in
//! `UnprocessedItems`/`UnprocessedKeys` for the client to retry, as DynamoDB does under throttling.

use std::collections::{BTreeMap, HashSet};

use onggi_core::keys::item_key;
use onggi_model::expr::{Operation, RequestExpressions};
use onggi_model::ops::{
    BatchGetItemInput, BatchGetItemOutput, BatchWriteItemInput, BatchWriteItemOutput, ConsumedCapacity,
};
use onggi_model::table::{ItemKey, validate_table_name};
use onggi_model::value::{item_from_json, item_size_bytes};
use onggi_model::{DynamoError, ErrorKind, Item};
use serde_json::{Map, Value as Json};

use crate::Node;
use crate::capacity::{self, CapacityReport};
use crate::expressions::Prepared;
use crate::items::parse_item_collection_metrics;

/// Most keys in one BatchGetItem.
const BATCH_GET_KEYS_MAX: usize = 100;
/// Most puts and deletes in one BatchWriteItem.
const BATCH_WRITE_REQUESTS_MAX: usize = 25;
/// Most bytes of items one BatchGetItem returns; the rest come back as UnprocessedKeys.
const BATCH_GET_BYTES_MAX: usize = 16 * 1024 * 1024;

fn validation(message: impl Into<String>) -> DynamoError {
    DynamoError::validation(message)
}

fn batch_table_not_found() -> DynamoError {
    crate::tables::table_not_found()
}

/// The `RequestItems` map, present and non-empty (`empty`: the message when it is not).
fn request_items<'j>(raw: Option<&'j Json>, empty: &str) -> Result<&'j Map<String, Json>, DynamoError> {
    match raw {
        None | Some(Json::Null) => Err(validation(empty)),
        Some(Json::Object(map)) if map.is_empty() => Err(validation(empty)),
        Some(Json::Object(map)) => {
            for name in map.keys() {
                validate_table_name(name)?;
            }
            Ok(map)
        }
        Some(_) => Err(validation("Unexpected value type in payload: RequestItems must be an object")),
    }
}

fn json_object<'j>(value: &'j Json, what: &str) -> Result<&'j Map<String, Json>, DynamoError> {
    value.as_object().ok_or_else(|| validation(format!("Unexpected value type in payload: {what} must be an object")))
}

/// One table's part of a BatchGetItem, checked.
struct GetPlan {
    table: String,
    keys: Vec<(Json, Vec<u8>)>,
    prepared: Prepared,
    consistent: bool,
    raw: Map<String, Json>,
}

/// One write of a BatchWriteItem, checked.
enum WritePlan {
    Put(Item),
    Delete(Item),
}

impl Node {
    pub(crate) async fn batch_get_item_impl(
        &self,
        input: BatchGetItemInput,
    ) -> Result<BatchGetItemOutput, DynamoError> {
        let report = CapacityReport::parse(input.return_consumed_capacity.as_deref())?;
        let tables = request_items(input.request_items.as_ref(), "BatchGetItem must have some requests set")?;
        let mut total = 0;
        for (name, request) in tables {
            let request = json_object(request, "KeysAndAttributes")?;
            let keys = request.get("Keys").and_then(Json::as_array).map_or(0, Vec::len);
            if keys == 0 {
                return Err(validation(format!(
                    "The list of keys in RequestItems for BatchGetItem is required: {name} has empty list"
                )));
            }
            let empty_key = request
                .get("Keys")
                .and_then(Json::as_array)
                .into_iter()
                .flatten()
                .any(|key| key.is_null() || key.as_object().is_some_and(Map::is_empty));
            if empty_key {
                return Err(validation(format!(
                    "The list of keys in RequestItems for BatchGetItem may not contain null or empty values: {name} has one or more empty keys"
                )));
            }
            total += keys;
        }
        if total > BATCH_GET_KEYS_MAX {
            return Err(validation("Too many items requested for the BatchGetItem call"));
        }
        let mut plans = Vec::new();
        for (name, request) in tables {
            let request = json_object(request, "KeysAndAttributes")?;
            let mut expressions = RequestExpressions::new(Operation::GetItem);
            expressions.projection = request.get("ProjectionExpression").and_then(Json::as_str);
            expressions.names = request.get("ExpressionAttributeNames").and_then(Json::as_object);
            expressions.attributes_to_get = request.get("AttributesToGet");
            let prepared = Prepared::from(expressions.resolve()?);
            let table = self.table(name).await.map_err(|_| batch_table_not_found())?;
            prepared.check_against(&table.schema)?;
            let mut seen = HashSet::new();
            let mut keys = Vec::new();
            for raw_key in request.get("Keys").and_then(Json::as_array).into_iter().flatten() {
                let key_item = item_from_json(json_object(raw_key, "Key")?)?;
                let ItemKey { partition, sort } = table.schema.key_from_key_map(&key_item)?;
                let key = item_key(&partition, sort.as_ref());
                if !seen.insert(key.clone()) {
                    return Err(validation("Provided list of item keys contains duplicates"));
                }
                keys.push((raw_key.clone(), key));
            }
            let consistent = request.get("ConsistentRead").and_then(Json::as_bool).unwrap_or(false);
            plans.push(GetPlan { table: name.clone(), keys, prepared, consistent, raw: request.clone() });
        }

        let mut output = BatchGetItemOutput::default();
        let mut returned_bytes = 0usize;
        let mut capacities = Vec::new();
        for plan in plans {
            let table = self.table(&plan.table).await.map_err(|_| batch_table_not_found())?;
            let mut items = Vec::new();
            let mut unprocessed = Vec::new();
            let mut units = 0.0;
            for (raw_key, key) in plan.keys {
                if returned_bytes >= BATCH_GET_BYTES_MAX {
                    unprocessed.push(raw_key);
                    continue;
                }
                let item = self.read_item(&table, &key, plan.consistent).await?;
                let size = item.as_ref().map_or(0, item_size_bytes);
                let whole = size.div_ceil(4096).max(1) as f64;
                units += if plan.consistent { whole } else { whole / 2.0 };
                if let Some(item) = item {
                    returned_bytes += size;
                    items.push(plan.prepared.project(item));
                }
            }
            if !unprocessed.is_empty() {
                let mut remaining = plan.raw.clone();
                remaining.insert("Keys".into(), Json::Array(unprocessed));
                output.unprocessed_keys.insert(plan.table.clone(), Json::Object(remaining));
            }
            if let Some(consumed) = capacity::for_batch(report, &plan.table, units) {
                capacities.push(consumed);
            }
            output.responses.insert(plan.table, items);
        }
        output.consumed_capacity = (report != CapacityReport::None).then_some(capacities);
        Ok(output)
    }

    pub(crate) async fn batch_write_item_impl(
        &self,
        input: BatchWriteItemInput,
    ) -> Result<BatchWriteItemOutput, DynamoError> {
        let report = CapacityReport::parse(input.return_consumed_capacity.as_deref())?;
        parse_item_collection_metrics(input.return_item_collection_metrics.as_deref())?;
        let tables =
            request_items(input.request_items.as_ref(), "BatchWriteItem cannot have a null or no requests set")?;
        let mut total = 0;
        for (name, requests) in tables {
            let count = requests.as_array().map_or(0, Vec::len);
            if count == 0 {
                return Err(validation(format!(
                    "The batch write request list for a table cannot be null or empty: {name}"
                )));
            }
            total += count;
        }
        if total > BATCH_WRITE_REQUESTS_MAX {
            return Err(validation("Too many items requested for the BatchWriteItem call"));
        }
        let mut plans: Vec<(String, Vec<(Json, WritePlan)>)> = Vec::new();
        for (name, requests) in tables {
            let table = self.table(name).await.map_err(|_| batch_table_not_found())?;
            let mut seen = HashSet::new();
            let mut writes = Vec::new();
            for raw in requests.as_array().into_iter().flatten() {
                let request = json_object(raw, "WriteRequest")?;
                let put = request.get("PutRequest").filter(|value| !value.is_null());
                let delete = request.get("DeleteRequest").filter(|value| !value.is_null());
                let (key, plan) = match (put, delete) {
                    (Some(put), None) => {
                        let raw_item = json_object(put, "PutRequest")?
                            .get("Item")
                            .ok_or_else(|| {
                                validation(
                                    "1 validation error detected: Value null at 'requestItems.member.member.putRequest.item' failed to satisfy constraint: Member must not be null",
                                )
                            })?;
                        let item = item_from_json(json_object(raw_item, "Item")?)?;
                        (Self::checked_put_key(&table, &item)?, WritePlan::Put(item))
                    }
                    (None, Some(delete)) => {
                        let raw_key = json_object(delete, "DeleteRequest")?.get("Key").ok_or_else(|| {
                            validation(
                                "1 validation error detected: Value null at 'requestItems.member.member.deleteRequest.key' failed to satisfy constraint: Member must not be null",
                            )
                        })?;
                        let key_item = item_from_json(json_object(raw_key, "Key")?)?;
                        let ItemKey { partition, sort } = table.schema.key_from_key_map(&key_item)?;
                        (item_key(&partition, sort.as_ref()), WritePlan::Delete(key_item))
                    }
                    _ => {
                        return Err(validation(
                            "Supplied AttributeValue has more than one datatypes set, must contain exactly one of the supported datatypes",
                        ));
                    }
                };
                if !seen.insert(key) {
                    return Err(validation("Provided list of item keys contains duplicates"));
                }
                writes.push((raw.clone(), plan));
            }
            plans.push((name.clone(), writes));
        }

        let mut tasks = tokio::task::JoinSet::new();
        for (name, writes) in plans {
            for (raw, plan) in writes {
                let node = self.clone();
                let name = name.clone();
                tasks.spawn(async move {
                    let result = match plan {
                        WritePlan::Put(item) => node.put_unconditional(&name, item, report).await,
                        WritePlan::Delete(key) => node.delete_unconditional(&name, &key, report).await,
                    };
                    (name, raw, result)
                });
            }
        }
        let mut output = BatchWriteItemOutput::default();
        let mut units: BTreeMap<String, Vec<ConsumedCapacity>> = BTreeMap::new();
        let mut failure = None;
        while let Some(joined) = tasks.join_next().await {
            let (name, raw, result) =
                joined.map_err(|error| DynamoError::internal(format!("batch write task: {error}")))?;
            match result {
                Ok(consumed) => units.entry(name).or_default().extend(consumed),
                Err(error) if error.kind == ErrorKind::Throttling => {
                    let entry = output.unprocessed_items.entry(name).or_insert_with(|| Json::Array(Vec::new()));
                    if let Json::Array(list) = entry {
                        list.push(raw);
                    }
                }
                Err(error) => failure = failure.or(Some(error)),
            }
        }
        if let Some(error) = failure {
            return Err(error);
        }
        if report != CapacityReport::None {
            output.consumed_capacity =
                Some(units.into_iter().filter_map(|(name, parts)| capacity::sum(report, &name, parts)).collect());
        }
        Ok(output)
    }
}

//! Table housekeeping: Time to Live (settings and the background expirer), tags,
//! DescribeEndpoints and DescribeLimits.
//!
//! The expirer deletes items whose TTL attribute (a number of seconds since the epoch) has
//! passed. Like DynamoDB it leaves alone items whose attribute is missing, not a number, or more
//! than five years in the past. Each deletion re-checks the item under its lock, so an item
//! updated meanwhile (a new TTL) is kept, and writes a tombstone marked as an expiry so that
//! streams can report it as a system deletion.

use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use onggi_core::record::Record;
use onggi_model::ops::{
    RequestContext, ServiceDescription, TableNameInput, TagOperation, TagsInput, UpdateTimeToLiveInput,
};
use onggi_model::table::{TableSchema, required_table_name};
use onggi_model::{AttributeValue, DynamoError, ErrorKind, Item};
use onggi_storage::Direction;
use serde_json::{Value as Json, json};

use crate::catalog::TableHandle;
use crate::describe::ACCOUNT_ID;
use crate::items::{Effect, WriteOrigin};
use crate::registry::Change;
use crate::tables::{storage_error, table_not_found};
use crate::{Node, wall_clock_ms};

/// Items whose TTL is further in the past than this are left alone, as DynamoDB does.
const TTL_PAST_LIMIT_SECONDS: u64 = 5 * 365 * 24 * 3600;
/// Most tags on one table.
const TAGS_MAX: usize = 50;
/// Items the expirer examines per storage read before yielding.
const EXPIRER_CHUNK: usize = 256;

fn validation(message: impl Into<String>) -> DynamoError {
    DynamoError::validation(message)
}

/// Whether `item` has expired at `now_seconds` under TTL attribute `attribute`.
pub(crate) fn is_expired(item: &Item, attribute: &str, now_seconds: u64) -> bool {
    let Some(AttributeValue::N(number)) = item.get(attribute) else { return false };
    let Ok(expiry) = number.to_string().parse::<f64>() else { return false };
    let now = now_seconds as f64;
    expiry <= now && expiry >= now - TTL_PAST_LIMIT_SECONDS as f64
}

/// Parses a table ARN (`arn:aws:dynamodb:<region>:<account>:table/<name>`) to the table name.
fn table_name_of_arn(arn: &str) -> Result<&str, DynamoError> {
    let invalid = || validation(format!("Invalid TableArn: Invalid ResourceArn provided as input {arn}"));
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    if parts.len() != 6 || parts[0] != "arn" || parts[2] != "dynamodb" {
        return Err(invalid());
    }
    let name = parts[5].strip_prefix("table/").ok_or_else(invalid)?;
    if name.is_empty() || name.contains('/') {
        return Err(invalid());
    }
    Ok(name)
}

fn parse_tags(raw: Option<&Json>) -> Result<Vec<(String, String)>, DynamoError> {
    let Some(list) = raw.and_then(Json::as_array) else {
        return Err(validation(
            "1 validation error detected: Value null at 'tags' failed to satisfy constraint: Member must not be null",
        ));
    };
    if list.is_empty() {
        return Err(validation(
            "1 validation error detected: Value '[]' at 'tags' failed to satisfy constraint: Member must have length greater than or equal to 1",
        ));
    }
    if list.len() > TAGS_MAX {
        return Err(validation(format!(
            "1 validation error detected: Value at 'tags' failed to satisfy constraint: Member must have length less than or equal to {TAGS_MAX}"
        )));
    }
    // Tag keys and values: letters, numbers, white space and `_ . : / = + - @`.
    let allowed = |text: &str| text.chars().all(|c| c.is_alphanumeric() || c.is_whitespace() || "_.:/=+-@".contains(c));
    let mut tags = Vec::with_capacity(list.len());
    for tag in list {
        let key = tag.get("Key").and_then(Json::as_str);
        let value = tag.get("Value").and_then(Json::as_str);
        let (Some(key), Some(value)) = (key, value) else {
            return Err(validation(
                "1 validation error detected: Value null at 'tags.member.key' failed to satisfy constraint: Member must not be null",
            ));
        };
        if key.is_empty() || key.chars().count() > 128 {
            return Err(validation(format!(
                "1 validation error detected: Value '{key}' at 'tags.member.key' failed to satisfy constraint: Member must have length less than or equal to 128 and greater than or equal to 1"
            )));
        }
        if !allowed(key) || !allowed(value) {
            return Err(validation(format!(
                "1 validation error detected: Value '{key}' at 'tags.member.key' failed to satisfy constraint: Member must satisfy regular expression pattern: ^([\\p{{L}}\\p{{Z}}\\p{{N}}_.:/=+\\-@]*)$"
            )));
        }
        if value.chars().count() > 256 {
            return Err(validation(format!(
                "1 validation error detected: Value '{value}' at 'tags.member.value' failed to satisfy constraint: Member must have length less than or equal to 256"
            )));
        }
        tags.push((key.to_string(), value.to_string()));
    }
    Ok(tags)
}

/// Applies CreateTable's `Tags` to a new schema.
pub(crate) fn tags_at_creation(schema: &mut TableSchema, raw: Option<&Json>) -> Result<(), DynamoError> {
    if raw.is_none_or(|raw| raw.is_null() || raw.as_array().is_some_and(Vec::is_empty)) {
        return Ok(());
    }
    for (key, value) in parse_tags(raw)? {
        schema.tags.insert(key, value);
    }
    if schema.tags.len() > TAGS_MAX {
        return Err(DynamoError::new(ErrorKind::LimitExceeded, "Too many tags attached to resource"));
    }
    Ok(())
}

fn ttl_description(schema: &TableSchema) -> Json {
    match &schema.ttl_attribute {
        Some(attribute) => json!({"TimeToLiveStatus": "ENABLED", "AttributeName": attribute}),
        None => json!({"TimeToLiveStatus": "DISABLED"}),
    }
}

impl Node {
    pub(crate) async fn update_time_to_live_impl(&self, input: UpdateTimeToLiveInput) -> Result<Json, DynamoError> {
        let name = required_table_name(input.table_name.as_deref())?;
        let Some(specification) = input.time_to_live_specification.as_ref().filter(|value| !value.is_null()) else {
            return Err(validation("TimeToLiveSpecification cannot be null"));
        };
        let enabled = specification.get("Enabled").and_then(Json::as_bool);
        let attribute = specification.get("AttributeName").and_then(Json::as_str);
        let (Some(enabled), Some(attribute)) = (enabled, attribute) else {
            return Err(validation("AttributeName cannot be null when time to live is being enabled"));
        };
        if attribute.is_empty() || attribute.len() > 255 {
            return Err(validation(
                "Names of key attributes and attributes projected into an index must be between 1 and 255 characters, inclusive",
            ));
        }
        self.change_table(name, |current| {
            let mut schema = current.ok_or_else(table_not_found)?.clone();
            match (&schema.ttl_attribute, enabled) {
                (Some(current), _) if current != attribute => {
                    return Err(validation("TimeToLive is active on a different AttributeName"));
                }
                (Some(_), true) => return Err(validation("TimeToLive is already enabled")),
                (None, false) => return Err(validation("TimeToLive is already disabled")),
                _ => {}
            }
            schema.ttl_attribute = enabled.then(|| attribute.to_string());
            Ok((Change::Store(Box::new(schema)), ()))
        })
        .await?;
        Ok(json!({"TimeToLiveSpecification": {"Enabled": enabled, "AttributeName": attribute}}))
    }

    pub(crate) async fn describe_time_to_live_impl(&self, input: TableNameInput) -> Result<Json, DynamoError> {
        let name = required_table_name(input.table_name.as_deref())?;
        let table = self.table(name).await?;
        Ok(json!({"TimeToLiveDescription": ttl_description(&table.schema)}))
    }

    pub(crate) async fn tags_impl(
        &self,
        context: &RequestContext,
        operation: TagOperation,
        input: TagsInput,
    ) -> Result<Json, DynamoError> {
        let Some(arn) = input.resource_arn.as_deref() else {
            return Err(validation(
                "1 validation error detected: Value null at 'resourceArn' failed to satisfy constraint: Member must not be null",
            ));
        };
        let name = table_name_of_arn(arn)?;
        let region = self.region(context);
        let expected_prefix = format!("arn:aws:dynamodb:{region}:{ACCOUNT_ID}:table/");
        let not_found =
            || DynamoError::resource_not_found(format!("Requested resource not found: ResourcArn: {arn} not found"));
        if !arn.starts_with(&expected_prefix) {
            return Err(not_found());
        }
        if operation == TagOperation::List {
            self.learn_unknown_table(Some(name)).await;
            let table = self.inner.catalog.get(name).ok_or_else(not_found)?;
            let tags: Vec<Json> =
                table.schema.tags.iter().map(|(key, value)| json!({"Key": key, "Value": value})).collect();
            return Ok(json!({"Tags": tags}));
        }
        let change = match operation {
            TagOperation::Tag => TagChange::Add(parse_tags(input.tags.as_ref())?),
            _ => {
                let Some(keys) = input.tag_keys.as_ref().and_then(Json::as_array) else {
                    return Err(validation(
                        "1 validation error detected: Value null at 'tagKeys' failed to satisfy constraint: Member must not be null",
                    ));
                };
                TagChange::Remove(keys.iter().filter_map(Json::as_str).map(str::to_string).collect())
            }
        };
        self.change_table(name, |current| {
            let mut schema = current.ok_or_else(not_found)?.clone();
            match &change {
                TagChange::Add(tags) => {
                    for (key, value) in tags {
                        schema.tags.insert(key.clone(), value.clone());
                    }
                    if schema.tags.len() > TAGS_MAX {
                        return Err(DynamoError::new(ErrorKind::LimitExceeded, "Too many tags attached to resource"));
                    }
                }
                TagChange::Remove(keys) => {
                    for key in keys {
                        schema.tags.remove(key);
                    }
                }
            }
            Ok((Change::Store(Box::new(schema)), ()))
        })
        .await?;
        Ok(json!({}))
    }

    pub(crate) fn describe_service_impl(&self, context: &RequestContext, operation: ServiceDescription) -> Json {
        match operation {
            ServiceDescription::Endpoints => json!({"Endpoints": [{
                "Address": format!("dynamodb.{}.amazonaws.com", self.region(context)),
                "CachePeriodInMinutes": 1440
            }]}),
            ServiceDescription::Limits => json!({
                "AccountMaxReadCapacityUnits": 80000,
                "AccountMaxWriteCapacityUnits": 80000,
                "TableMaxReadCapacityUnits": 40000,
                "TableMaxWriteCapacityUnits": 40000
            }),
        }
    }

    /// Runs the Time to Live expirer until the node is dropped: every `interval`, each table with
    /// TTL enabled is scanned and its expired items deleted.
    pub fn spawn_expirer(&self, interval: Duration) {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let Some(inner) = weak.upgrade() else { return };
                let node = Node { inner };
                if let Err(error) = node.expire_once().await {
                    tracing::warn!(%error, "TTL expiry pass failed");
                }
            }
        });
    }

    /// One expiry pass over every table; returns how many items it deleted.
    pub async fn expire_once(&self) -> Result<usize, DynamoError> {
        let mut deleted = 0;
        for name in self.inner.catalog.names() {
            let Some(table) = self.inner.catalog.get(&name) else { continue };
            let Some(attribute) = table.schema.ttl_attribute.clone() else { continue };
            deleted += self.expire_table(&table, &attribute).await?;
        }
        Ok(deleted)
    }

    async fn expire_table(&self, table: &Arc<TableHandle>, attribute: &str) -> Result<usize, DynamoError> {
        let mut deleted = 0;
        let mut lower = Bound::Unbounded;
        loop {
            let now = wall_clock_ms() / 1000;
            let mut expired_keys = Vec::new();
            let mut last = None;
            for entry in self
                .inner
                .engine
                .range(&table.tree, lower.clone(), Bound::Unbounded, Direction::Forward)
                .map_err(storage_error)?
                .take(EXPIRER_CHUNK)
            {
                let (key, value) = entry.map_err(storage_error)?;
                let record = Record::decode(&value)
                    .map_err(|error| DynamoError::internal(format!("stored record unreadable: {error}")))?;
                if record.item.as_ref().is_some_and(|item| is_expired(item, attribute, now)) {
                    expired_keys.push(key.clone());
                }
                last = Some(key);
            }
            for key in expired_keys {
                if self.expire_item(table, key, attribute, now).await? {
                    deleted += 1;
                }
            }
            match last {
                Some(key) => lower = Bound::Excluded(key),
                None => return Ok(deleted),
            }
            tokio::task::yield_now().await;
        }
    }

    /// Deletes the item at `key` if, under its lock, it is still expired.
    async fn expire_item(
        &self,
        table: &Arc<TableHandle>,
        key: Vec<u8>,
        attribute: &str,
        now: u64,
    ) -> Result<bool, DynamoError> {
        let expired = self
            .execute(table, key, WriteOrigin::Expiry, |current| {
                Ok(match current {
                    Some(item) if is_expired(item, attribute, now) => (Effect::Delete, true),
                    _ => (Effect::Keep, false),
                })
            })
            .await?;
        Ok(expired == Some(true))
    }
}

enum TagChange {
    Add(Vec<(String, String)>),
    Remove(Vec<String>),
}

#[cfg(test)]
mod tests {
    use super::*;
    use onggi_model::Number;

    #[test]
    fn expiry_ignores_non_numbers_and_the_far_past() {
        let now = 2_000_000_000;
        let item = |value: AttributeValue| Item::from([("ttl".to_string(), value)]);
        let number = |text: &str| AttributeValue::N(Number::parse(text).unwrap());
        assert!(is_expired(&item(number("1999999999")), "ttl", now));
        assert!(is_expired(&item(number("2000000000")), "ttl", now));
        assert!(!is_expired(&item(number("2000000001")), "ttl", now));
        assert!(!is_expired(&item(number("1")), "ttl", now));
        assert!(!is_expired(&item(AttributeValue::S("1".into())), "ttl", now));
        assert!(!is_expired(&item(number("1999999999")), "other", now));
    }

    #[test]
    fn table_arns_name_their_table() {
        assert_eq!(table_name_of_arn("arn:aws:dynamodb:us-east-1:000000000000:table/t1").unwrap(), "t1");
        assert!(table_name_of_arn("arn:aws:s3:::bucket").is_err());
        assert!(table_name_of_arn("arn:aws:dynamodb:us-east-1:0:table/t/index/i").is_err());
    }
}

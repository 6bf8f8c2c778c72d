//! Table operations: CreateTable, DescribeTable, ListTables, UpdateTable, DeleteTable.
//!
//! Tables become ACTIVE at once: creating one is writing its schema durably and opening an empty
//! tree, which takes milliseconds, so there is no CREATING phase to wait through (test suites
//! create and drop hundreds of tables).

use onggi_model::DynamoError;
use onggi_model::ErrorKind;
use onggi_model::ops::{
    DescribeTableOutput, ListTablesInput, ListTablesOutput, RequestContext, TableDescriptionOutput, TableNameInput,
    UpdateTableInput,
};
use onggi_model::table::{
    AttributeDefinition, BillingMode, CreateTableInput, IndexDefinition, IndexStatus, ProvisionedThroughput,
    required_table_name, validate_create_table, validate_new_global_index, validate_table_name,
};
use onggi_storage::StorageError;

use crate::describe::describe;
use crate::registry::{Change, Changed};
use crate::{Node, wall_clock_ms};

/// Most tables a node holds (DynamoDB's default account quota is 2,500).
pub const TABLES_MAX: usize = 2500;
/// Largest `Limit` of ListTables.
const LIST_TABLES_LIMIT_MAX: i64 = 100;

/// The client-facing error for a storage failure.
pub(crate) fn storage_error(error: StorageError) -> DynamoError {
    match error {
        // A full commit queue is back-pressure: SDKs retry throttling errors with backoff.
        StorageError::Overloaded { .. } => {
            DynamoError::new(ErrorKind::Throttling, "Rate of requests exceeds the allowed throughput.")
        }
        // The table was deleted while the request was in flight.
        StorageError::TreeDropped { .. } => table_not_found(),
        other => DynamoError::internal(format!("storage failure: {other}")),
    }
}

/// One entry of UpdateTable's GlobalSecondaryIndexUpdates.
enum IndexUpdate {
    Create(IndexDefinition),
    Delete(String),
    Update(String, ProvisionedThroughput),
}

fn parse_index_updates(updates: &[serde_json::Value]) -> Result<Vec<IndexUpdate>, DynamoError> {
    let malformed =
        |error: serde_json::Error| DynamoError::validation(format!("Unexpected value type in payload: {error}"));
    let mut parsed = Vec::with_capacity(updates.len());
    for update in updates {
        let actions = ["Create", "Delete", "Update"]
            .into_iter()
            .filter(|action| update.get(action).is_some_and(|value| !value.is_null()))
            .count();
        if actions == 0 {
            return Err(DynamoError::validation("Update global secondary index action is null"));
        }
        if actions > 1 {
            return Err(DynamoError::validation(
                "One or more parameter values were invalid: One of GlobalSecondaryIndexUpdate.Create, GlobalSecondaryIndexUpdate.Update, or GlobalSecondaryIndexUpdate.Delete must be provided",
            ));
        }
        let name_of = |value: &serde_json::Value| -> Result<String, DynamoError> {
            let name = value.get("IndexName").and_then(serde_json::Value::as_str).unwrap_or_default();
            validate_table_name(name)?;
            Ok(name.to_string())
        };
        if let Some(create) = update.get("Create").filter(|value| !value.is_null()) {
            parsed.push(IndexUpdate::Create(serde_json::from_value(create.clone()).map_err(malformed)?));
        } else if let Some(delete) = update.get("Delete").filter(|value| !value.is_null()) {
            parsed.push(IndexUpdate::Delete(name_of(delete)?));
        } else if let Some(change) = update.get("Update") {
            let throughput = change.get("ProvisionedThroughput").cloned().unwrap_or_default();
            let throughput: ProvisionedThroughput = serde_json::from_value(throughput).map_err(malformed)?;
            parsed.push(IndexUpdate::Update(name_of(change)?, throughput));
        }
    }
    let mut names: Vec<&str> = parsed
        .iter()
        .map(|update| match update {
            IndexUpdate::Create(definition) => definition.index_name.as_deref().unwrap_or_default(),
            IndexUpdate::Delete(name) | IndexUpdate::Update(name, _) => name,
        })
        .collect();
    names.sort_unstable();
    if names.windows(2).any(|pair| pair[0] == pair[1]) {
        return Err(DynamoError::validation(
            "Only one global secondary index update per index is allowed simultaneously.",
        ));
    }
    let structural = parsed.iter().filter(|update| !matches!(update, IndexUpdate::Update(..))).count();
    if structural > 1 {
        return Err(DynamoError::new(
            ErrorKind::LimitExceeded,
            "Subscriber limit exceeded: Only 1 online index can be created or deleted simultaneously per table",
        ));
    }
    Ok(parsed)
}

pub(crate) fn table_not_found() -> DynamoError {
    DynamoError::resource_not_found("Cannot do operations on a non-existent table")
}

impl Node {
    pub(crate) fn region<'a>(&'a self, context: &'a RequestContext) -> &'a str {
        if context.region.is_empty() { &self.inner.default_region } else { &context.region }
    }

    pub(crate) async fn create_table_impl(
        &self,
        context: &RequestContext,
        input: CreateTableInput,
    ) -> Result<TableDescriptionOutput, DynamoError> {
        let id = uuid::Uuid::new_v4().to_string();
        let mut schema = validate_create_table(&input, id, wall_clock_ms())?;
        for index in schema.local_indexes.iter_mut().chain(&mut schema.global_indexes) {
            index.id = uuid::Uuid::new_v4().to_string();
        }
        crate::meta::tags_at_creation(&mut schema, input.tags.as_ref())?;
        if let Some(specification) = &input.stream_specification
            && specification.get("StreamEnabled").and_then(serde_json::Value::as_bool) == Some(true)
        {
            return Err(DynamoError::validation("onggi does not support DynamoDB Streams yet"));
        }
        let catalog = &self.inner.catalog;
        let name = schema.name.clone();
        let (changed, ()) = self
            .change_table(&name, |current| {
                if current.is_some() {
                    return Err(DynamoError::new(ErrorKind::ResourceInUse, "Cannot create preexisting table"));
                }
                if catalog.names().len() >= TABLES_MAX {
                    return Err(DynamoError::new(
                        ErrorKind::LimitExceeded,
                        format!("Subscriber limit exceeded: a node holds at most {TABLES_MAX} tables"),
                    ));
                }
                Ok((Change::Store(Box::new(schema.clone())), ()))
            })
            .await?;
        let handle = stored(changed)?;
        tracing::info!(table = %handle.schema.name, id = %handle.schema.id, "table created");
        Ok(TableDescriptionOutput { table_description: describe(&handle, "ACTIVE", self.region(context)) })
    }

    pub(crate) async fn describe_table_impl(
        &self,
        context: &RequestContext,
        input: TableNameInput,
    ) -> Result<DescribeTableOutput, DynamoError> {
        let name = required_table_name(input.table_name.as_deref())?;
        let table = self.table(name).await?;
        self.recounted().await;
        let mut description = describe(&table, "ACTIVE", self.region(context));
        self.count_across_cluster(&table, &mut description).await;
        Ok(DescribeTableOutput { table: description })
    }

    pub(crate) async fn list_tables_impl(&self, input: ListTablesInput) -> Result<ListTablesOutput, DynamoError> {
        let limit = input.limit.unwrap_or(LIST_TABLES_LIMIT_MAX);
        if limit < 1 {
            return Err(DynamoError::validation("Limit must be greater than or equal to 1"));
        }
        if limit > LIST_TABLES_LIMIT_MAX {
            return Err(DynamoError::validation("Limit in ListTables must be <= 100"));
        }
        if let Some(start) = &input.exclusive_start_table_name {
            validate_table_name(start)?;
        }
        let remaining: Vec<String> = self
            .inner
            .catalog
            .names()
            .into_iter()
            .filter(|name| input.exclusive_start_table_name.as_ref().is_none_or(|start| name > start))
            .collect();
        let limit = limit as usize;
        let more = remaining.len() > limit;
        let table_names: Vec<String> = remaining.into_iter().take(limit).collect();
        let last_evaluated_table_name = if more { table_names.last().cloned() } else { None };
        Ok(ListTablesOutput { table_names, last_evaluated_table_name })
    }

    pub(crate) async fn update_table_impl(
        &self,
        context: &RequestContext,
        input: UpdateTableInput,
    ) -> Result<TableDescriptionOutput, DynamoError> {
        let name = required_table_name(input.table_name.as_deref())?;
        let index_updates = match &input.global_secondary_index_updates {
            Some(updates) => parse_index_updates(updates)?,
            None => Vec::new(),
        };
        if input.replica_updates.is_some() {
            return Err(DynamoError::validation("onggi does not support global table replicas"));
        }
        if let Some(specification) = &input.stream_specification
            && specification.get("StreamEnabled").and_then(serde_json::Value::as_bool) == Some(true)
        {
            return Err(DynamoError::validation("onggi does not support DynamoDB Streams yet"));
        }
        let requested_mode = match input.billing_mode.as_deref() {
            None => None,
            Some("PROVISIONED") => Some(BillingMode::Provisioned),
            Some("PAY_PER_REQUEST") => Some(BillingMode::PayPerRequest),
            Some(other) => {
                return Err(DynamoError::validation(format!(
                    "1 validation error detected: Value '{other}' at 'billingMode' failed to satisfy constraint: Member must satisfy enum value set: [PROVISIONED, PAY_PER_REQUEST]"
                )));
            }
        };
        if requested_mode.is_none()
            && index_updates.is_empty()
            && input.provisioned_throughput.is_none()
            && input.deletion_protection_enabled.is_none()
            && input.sse_specification.is_none()
            && input.table_class.is_none()
            && input.stream_specification.is_none()
        {
            return Err(DynamoError::validation("Nothing to update"));
        }
        let creates = index_updates.iter().any(|update| matches!(update, IndexUpdate::Create(_)));
        if creates && input.attribute_definitions.as_ref().is_none_or(|raw| raw.as_array().is_none_or(Vec::is_empty)) {
            return Err(DynamoError::validation("No Attribute Schema Defined"));
        }
        let definitions: Vec<AttributeDefinition> = match &input.attribute_definitions {
            Some(raw) => serde_json::from_value(raw.clone())
                .map_err(|error| DynamoError::validation(format!("Unexpected value type in payload: {error}")))?,
            None => Vec::new(),
        };
        let (changed, indexes_changed) = self
            .change_table(name, |current| {
                let schema = current.ok_or_else(table_not_found)?.clone();
                updated_schema(schema, &index_updates, &definitions, requested_mode, &input)
            })
            .await?;
        let handle = stored(changed)?;
        self.recounted().await;
        let status = if indexes_changed { "UPDATING" } else { "ACTIVE" };
        let mut table_description = describe(&handle, status, self.region(context));
        self.count_across_cluster(&handle, &mut table_description).await;
        Ok(TableDescriptionOutput { table_description })
    }

    pub(crate) async fn delete_table_impl(
        &self,
        context: &RequestContext,
        input: TableNameInput,
    ) -> Result<TableDescriptionOutput, DynamoError> {
        let name = required_table_name(input.table_name.as_deref())?;
        // Described before the deletion: on a cluster larger than N the counts come from every
        // member, and members forget the table once it is deleted.
        self.recounted().await;
        let before = match self.inner.catalog.get(name) {
            Some(table) => {
                let mut description = describe(&table, "DELETING", self.region(context));
                self.count_across_cluster(&table, &mut description).await;
                Some((table.schema.id.clone(), description))
            }
            None => None,
        };
        let (changed, ()) = self
            .change_table(name, |current| {
                let schema = current.ok_or_else(table_not_found)?;
                if schema.deletion_protection {
                    return Err(DynamoError::validation(
                        "Resource cannot be deleted as it is currently protected against deletion. Disable deletion protection first.",
                    ));
                }
                Ok((Change::Delete, ()))
            })
            .await?;
        let Changed::Deleted(table) = changed else {
            return Err(DynamoError::internal("a deletion stored a description"));
        };
        tracing::info!(table = %name, "table deleted");
        let table_description = match before {
            Some((id, description)) if id == table.schema.id => description,
            // The handle keeps the final statistics (of this node).
            _ => describe(&table, "DELETING", self.region(context)),
        };
        Ok(TableDescriptionOutput { table_description })
    }
}

/// The handle of a change that stores a description.
fn stored(changed: Changed) -> Result<std::sync::Arc<crate::catalog::TableHandle>, DynamoError> {
    match changed {
        Changed::Stored(handle) => Ok(handle),
        Changed::Deleted(_) => Err(DynamoError::internal("a change of description deleted the table")),
    }
}

/// UpdateTable's change of a table's description `schema` (a pure function of it, but for the
/// new index ids and the billing switch's time): the new description, and whether an index was
/// added or removed.
fn updated_schema(
    mut schema: onggi_model::table::TableSchema,
    index_updates: &[IndexUpdate],
    definitions: &[AttributeDefinition],
    requested_mode: Option<BillingMode>,
    input: &UpdateTableInput,
) -> Result<(Change, bool), DynamoError> {
    let mut indexes_changed = false;
    for update in index_updates {
        match update {
            IndexUpdate::Create(definition) => {
                let (mut index, merged) = validate_new_global_index(&schema, definition, definitions)?;
                index.id = uuid::Uuid::new_v4().to_string();
                index.status = IndexStatus::Backfilling;
                schema.attribute_definitions = merged;
                indexes_changed = true;
                schema.global_indexes.push(index);
            }
            IndexUpdate::Delete(index_name) => {
                let position = schema
                    .global_indexes
                    .iter()
                    .position(|index| &index.name == index_name)
                    .ok_or_else(|| DynamoError::resource_not_found("Requested resource not found"))?;
                schema.global_indexes.remove(position);
                schema.prune_attribute_definitions();
                indexes_changed = true;
            }
            IndexUpdate::Update(index_name, throughput) => {
                let billing = schema.billing_mode;
                let index = schema
                    .global_indexes
                    .iter_mut()
                    .find(|index| &index.name == index_name)
                    .ok_or_else(|| DynamoError::resource_not_found("Requested resource not found"))?;
                if billing == BillingMode::PayPerRequest {
                    return Err(DynamoError::validation(format!(
                        "One or more parameter values were invalid: ProvisionedThroughput should not be specified for index: {index_name} when BillingMode is PAY_PER_REQUEST"
                    )));
                }
                index.provisioned_throughput = Some(*throughput);
            }
        }
    }
    let mode = requested_mode.unwrap_or(schema.billing_mode);
    match mode {
        BillingMode::PayPerRequest => {
            if input.provisioned_throughput.is_some() {
                return Err(DynamoError::validation(
                    "One or more parameter values were invalid: Neither ReadCapacityUnits nor WriteCapacityUnits can be specified when BillingMode is PAY_PER_REQUEST",
                ));
            }
            if schema.billing_mode != BillingMode::PayPerRequest {
                schema.pay_per_request_since_ms = Some(wall_clock_ms());
            }
            schema.read_capacity_units = 0;
            schema.write_capacity_units = 0;
            for index in &mut schema.global_indexes {
                index.provisioned_throughput = None;
            }
        }
        BillingMode::Provisioned => {
            let throughput = match input.provisioned_throughput {
                Some(throughput) => throughput,
                None if schema.billing_mode == BillingMode::Provisioned => onggi_model::table::ProvisionedThroughput {
                    read_capacity_units: Some(schema.read_capacity_units),
                    write_capacity_units: Some(schema.write_capacity_units),
                },
                None => return Err(DynamoError::validation("No provisioned throughput specified for the table")),
            };
            let (Some(read @ 1..), Some(write @ 1..)) =
                (throughput.read_capacity_units, throughput.write_capacity_units)
            else {
                return Err(DynamoError::validation(
                    "Table read and write throughput must be at least 1, and cannot be null",
                ));
            };
            if input.provisioned_throughput.is_some()
                && schema.billing_mode == BillingMode::Provisioned
                && read == schema.read_capacity_units
                && write == schema.write_capacity_units
                && requested_mode.is_none()
            {
                return Err(DynamoError::validation("The requested throughput value equals the current value"));
            }
            schema.read_capacity_units = read;
            schema.write_capacity_units = write;
        }
    }
    schema.billing_mode = mode;
    if let Some(protection) = input.deletion_protection_enabled {
        schema.deletion_protection = protection;
    }
    Ok((Change::Store(Box::new(schema)), indexes_changed))
}

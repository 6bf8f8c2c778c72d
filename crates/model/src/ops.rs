//! The DynamoDB operations: their inputs and outputs, and the [`Backend`] trait that executes them.
//!
//! **API boundary:** the HTTP layer (`onggi-api`) parses requests into these inputs and renders
//! these outputs; whatever executes them (today a single node, tomorrow a cluster coordinator)
//! implements [`Backend`]. Neither side sees the other's internals.
//!
//! Inputs keep every member optional and item-bearing members as raw JSON, because DynamoDB
//! reports a missing member or an invalid value as a ValidationException with its own wording and
//! in its own order, after the body has been read — validation belongs to the backend, not to
//! the JSON parser.

use std::future::Future;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

use crate::error::DynamoError;
use crate::table::{CreateTableInput, IndexDefinition, KeySchemaElement, Projection, ProvisionedThroughput};
use crate::value::Item;

/// Who sent a request and how to name it in logs and responses.
#[derive(Clone, Debug, Default)]
pub struct RequestContext {
    /// The id sent back as `x-amzn-RequestId`.
    pub request_id: String,
    /// The access key id from the request's credential scope.
    pub access_key_id: String,
    /// The region from the request's credential scope.
    pub region: String,
}

/// A raw JSON object (an item, a key, or a map of expression attribute values).
pub type JsonMap = Map<String, Json>;

/// PutItem's input. Serializable, as UpdateItem's and DeleteItem's, so that a node can hand the
/// write to the item's home coordinator.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PutItemInput {
    pub table_name: Option<String>,
    pub item: Option<JsonMap>,
    pub condition_expression: Option<String>,
    pub expression_attribute_names: Option<JsonMap>,
    pub expression_attribute_values: Option<JsonMap>,
    pub return_values: Option<String>,
    pub return_values_on_condition_check_failure: Option<String>,
    pub return_consumed_capacity: Option<String>,
    pub return_item_collection_metrics: Option<String>,
    pub expected: Option<Json>,
    pub conditional_operator: Option<Json>,
}

/// GetItem's input.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetItemInput {
    pub table_name: Option<String>,
    pub key: Option<JsonMap>,
    pub projection_expression: Option<String>,
    pub expression_attribute_names: Option<JsonMap>,
    pub attributes_to_get: Option<Json>,
    pub consistent_read: Option<bool>,
    pub return_consumed_capacity: Option<String>,
}

/// UpdateItem's input.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateItemInput {
    pub table_name: Option<String>,
    pub key: Option<JsonMap>,
    pub update_expression: Option<String>,
    pub condition_expression: Option<String>,
    pub expression_attribute_names: Option<JsonMap>,
    pub expression_attribute_values: Option<JsonMap>,
    pub return_values: Option<String>,
    pub return_values_on_condition_check_failure: Option<String>,
    pub return_consumed_capacity: Option<String>,
    pub return_item_collection_metrics: Option<String>,
    pub attribute_updates: Option<Json>,
    pub expected: Option<Json>,
    pub conditional_operator: Option<Json>,
}

/// DeleteItem's input.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeleteItemInput {
    pub table_name: Option<String>,
    pub key: Option<JsonMap>,
    pub condition_expression: Option<String>,
    pub expression_attribute_names: Option<JsonMap>,
    pub expression_attribute_values: Option<JsonMap>,
    pub return_values: Option<String>,
    pub return_values_on_condition_check_failure: Option<String>,
    pub return_consumed_capacity: Option<String>,
    pub return_item_collection_metrics: Option<String>,
    pub expected: Option<Json>,
    pub conditional_operator: Option<Json>,
}

/// Query's input.
/// Serializable so that a coordinator can hand a piece of the read to a replica.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct QueryInput {
    pub table_name: Option<String>,
    pub index_name: Option<String>,
    pub select: Option<String>,
    pub attributes_to_get: Option<Json>,
    pub limit: Option<i64>,
    pub consistent_read: Option<bool>,
    pub key_conditions: Option<Json>,
    pub query_filter: Option<Json>,
    pub conditional_operator: Option<Json>,
    pub scan_index_forward: Option<bool>,
    pub exclusive_start_key: Option<JsonMap>,
    pub return_consumed_capacity: Option<String>,
    pub projection_expression: Option<String>,
    pub filter_expression: Option<String>,
    pub key_condition_expression: Option<String>,
    pub expression_attribute_names: Option<JsonMap>,
    pub expression_attribute_values: Option<JsonMap>,
}

/// Scan's input.
/// Serializable so that a coordinator can hand a piece of the read to a replica.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ScanInput {
    pub table_name: Option<String>,
    pub index_name: Option<String>,
    pub attributes_to_get: Option<Json>,
    pub limit: Option<i64>,
    pub select: Option<String>,
    pub scan_filter: Option<Json>,
    pub conditional_operator: Option<Json>,
    pub exclusive_start_key: Option<JsonMap>,
    pub return_consumed_capacity: Option<String>,
    pub total_segments: Option<i64>,
    pub segment: Option<i64>,
    pub projection_expression: Option<String>,
    pub filter_expression: Option<String>,
    pub expression_attribute_names: Option<JsonMap>,
    pub expression_attribute_values: Option<JsonMap>,
    pub consistent_read: Option<bool>,
}

/// Query's and Scan's output.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct QueryOutput {
    /// The items, absent when `Select` is `COUNT`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub items: Option<Vec<Item>>,
    pub count: u64,
    pub scanned_count: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_evaluated_key: Option<Item>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumed_capacity: Option<ConsumedCapacity>,
}

/// BatchGetItem's input: `RequestItems` is kept raw, validated by the backend.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct BatchGetItemInput {
    pub request_items: Option<Json>,
    pub return_consumed_capacity: Option<String>,
}

/// BatchGetItem's output.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct BatchGetItemOutput {
    pub responses: std::collections::BTreeMap<String, Vec<Item>>,
    pub unprocessed_keys: Map<String, Json>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumed_capacity: Option<Vec<ConsumedCapacity>>,
}

/// BatchWriteItem's input: `RequestItems` is kept raw, validated by the backend.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct BatchWriteItemInput {
    pub request_items: Option<Json>,
    pub return_consumed_capacity: Option<String>,
    pub return_item_collection_metrics: Option<String>,
}

/// BatchWriteItem's output.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct BatchWriteItemOutput {
    pub unprocessed_items: Map<String, Json>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumed_capacity: Option<Vec<ConsumedCapacity>>,
}

/// UpdateTimeToLive's input.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateTimeToLiveInput {
    pub table_name: Option<String>,
    pub time_to_live_specification: Option<Json>,
}

/// TagResource's, UntagResource's and ListTagsOfResource's inputs.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TagsInput {
    pub resource_arn: Option<String>,
    pub tags: Option<Json>,
    pub tag_keys: Option<Json>,
    pub next_token: Option<String>,
}

/// Capacity consumed by one request, when the client asks for it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ConsumedCapacity {
    pub table_name: String,
    pub capacity_units: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_capacity_units: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_capacity_units: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<CapacityUnits>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_secondary_indexes: Option<std::collections::BTreeMap<String, CapacityUnits>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub global_secondary_indexes: Option<std::collections::BTreeMap<String, CapacityUnits>>,
}

/// Capacity units of one table or index.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CapacityUnits {
    pub capacity_units: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_capacity_units: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_capacity_units: Option<f64>,
}

/// Output of PutItem, UpdateItem and DeleteItem.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct WriteItemOutput {
    /// The attributes asked for with ReturnValues.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attributes: Option<Item>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumed_capacity: Option<ConsumedCapacity>,
}

/// GetItem's output.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetItemOutput {
    /// The item, absent when there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item: Option<Item>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumed_capacity: Option<ConsumedCapacity>,
}

/// DescribeTable's, DeleteTable's and UpdateTable's inputs: just a table name.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TableNameInput {
    pub table_name: Option<String>,
}

/// UpdateTable's input.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateTableInput {
    pub table_name: Option<String>,
    pub billing_mode: Option<String>,
    pub provisioned_throughput: Option<ProvisionedThroughput>,
    pub attribute_definitions: Option<Json>,
    pub global_secondary_index_updates: Option<Vec<Json>>,
    pub stream_specification: Option<Json>,
    pub deletion_protection_enabled: Option<bool>,
    #[serde(rename = "SSESpecification")]
    pub sse_specification: Option<Json>,
    pub table_class: Option<String>,
    pub replica_updates: Option<Json>,
}

/// ListTables' input.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListTablesInput {
    pub exclusive_start_table_name: Option<String>,
    pub limit: Option<i64>,
}

/// ListTables' output.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListTablesOutput {
    pub table_names: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_evaluated_table_name: Option<String>,
}

/// A table as DescribeTable describes it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct TableDescription {
    pub attribute_definitions: Vec<crate::table::AttributeDefinition>,
    pub table_name: String,
    pub key_schema: Vec<KeySchemaElement>,
    pub table_status: String,
    /// Seconds since the Unix epoch, with milliseconds.
    pub creation_date_time: f64,
    pub provisioned_throughput: ProvisionedThroughputDescription,
    pub table_size_bytes: u64,
    pub item_count: u64,
    pub table_arn: String,
    pub table_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub billing_mode_summary: Option<BillingModeSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_secondary_indexes: Option<Vec<IndexDescription>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub global_secondary_indexes: Option<Vec<IndexDescription>>,
    pub deletion_protection_enabled: bool,
}

/// Throughput as DescribeTable describes it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProvisionedThroughputDescription {
    pub last_increase_date_time: f64,
    pub last_decrease_date_time: f64,
    pub number_of_decreases_today: u32,
    pub read_capacity_units: i64,
    pub write_capacity_units: i64,
}

/// The billing mode as DescribeTable describes it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct BillingModeSummary {
    pub billing_mode: String,
    pub last_update_to_pay_per_request_date_time: f64,
}

/// A secondary index as DescribeTable describes it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct IndexDescription {
    pub index_name: String,
    pub key_schema: Vec<KeySchemaElement>,
    pub projection: Projection,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index_status: Option<String>,
    /// Global indexes being built from existing items.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backfilling: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provisioned_throughput: Option<ProvisionedThroughput>,
    pub index_size_bytes: u64,
    pub item_count: u64,
    pub index_arn: String,
}

/// CreateTable's, UpdateTable's and DeleteTable's output.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct TableDescriptionOutput {
    pub table_description: TableDescription,
}

/// DescribeTable's output.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeTableOutput {
    pub table: TableDescription,
}

/// Executes DynamoDB operations. Implemented by the node; called by the HTTP layer.
///
/// Every method validates its input fully and returns DynamoDB's error for bad input, before
/// changing anything: a failed request leaves no partial write behind.
pub trait Backend: Send + Sync + 'static {
    /// CreateTable.
    fn create_table(
        &self,
        context: &RequestContext,
        input: CreateTableInput,
    ) -> impl Future<Output = Result<TableDescriptionOutput, DynamoError>> + Send;
    /// DescribeTable.
    fn describe_table(
        &self,
        context: &RequestContext,
        input: TableNameInput,
    ) -> impl Future<Output = Result<DescribeTableOutput, DynamoError>> + Send;
    /// ListTables.
    fn list_tables(
        &self,
        context: &RequestContext,
        input: ListTablesInput,
    ) -> impl Future<Output = Result<ListTablesOutput, DynamoError>> + Send;
    /// UpdateTable.
    fn update_table(
        &self,
        context: &RequestContext,
        input: UpdateTableInput,
    ) -> impl Future<Output = Result<TableDescriptionOutput, DynamoError>> + Send;
    /// DeleteTable.
    fn delete_table(
        &self,
        context: &RequestContext,
        input: TableNameInput,
    ) -> impl Future<Output = Result<TableDescriptionOutput, DynamoError>> + Send;
    /// PutItem.
    fn put_item(
        &self,
        context: &RequestContext,
        input: PutItemInput,
    ) -> impl Future<Output = Result<WriteItemOutput, DynamoError>> + Send;
    /// GetItem.
    fn get_item(
        &self,
        context: &RequestContext,
        input: GetItemInput,
    ) -> impl Future<Output = Result<GetItemOutput, DynamoError>> + Send;
    /// UpdateItem.
    fn update_item(
        &self,
        context: &RequestContext,
        input: UpdateItemInput,
    ) -> impl Future<Output = Result<WriteItemOutput, DynamoError>> + Send;
    /// DeleteItem.
    fn delete_item(
        &self,
        context: &RequestContext,
        input: DeleteItemInput,
    ) -> impl Future<Output = Result<WriteItemOutput, DynamoError>> + Send;
    /// Query.
    fn query(
        &self,
        context: &RequestContext,
        input: QueryInput,
    ) -> impl Future<Output = Result<QueryOutput, DynamoError>> + Send;
    /// Scan.
    fn scan(
        &self,
        context: &RequestContext,
        input: ScanInput,
    ) -> impl Future<Output = Result<QueryOutput, DynamoError>> + Send;
    /// BatchGetItem.
    fn batch_get_item(
        &self,
        context: &RequestContext,
        input: BatchGetItemInput,
    ) -> impl Future<Output = Result<BatchGetItemOutput, DynamoError>> + Send;
    /// BatchWriteItem.
    fn batch_write_item(
        &self,
        context: &RequestContext,
        input: BatchWriteItemInput,
    ) -> impl Future<Output = Result<BatchWriteItemOutput, DynamoError>> + Send;
    /// UpdateTimeToLive.
    fn update_time_to_live(
        &self,
        context: &RequestContext,
        input: UpdateTimeToLiveInput,
    ) -> impl Future<Output = Result<Json, DynamoError>> + Send;
    /// DescribeTimeToLive.
    fn describe_time_to_live(
        &self,
        context: &RequestContext,
        input: TableNameInput,
    ) -> impl Future<Output = Result<Json, DynamoError>> + Send;
    /// TagResource, UntagResource and ListTagsOfResource, told apart by `operation`.
    fn tags(
        &self,
        context: &RequestContext,
        operation: TagOperation,
        input: TagsInput,
    ) -> impl Future<Output = Result<Json, DynamoError>> + Send;
    /// DescribeEndpoints and DescribeLimits: answers that depend only on the server.
    fn describe_service(
        &self,
        context: &RequestContext,
        operation: ServiceDescription,
    ) -> impl Future<Output = Result<Json, DynamoError>> + Send;
    /// The state of the cluster as this server sees it (onggi's own `GET /onggi/cluster/status`,
    /// not a DynamoDB operation): members, their reachability, partitions, repair progress.
    fn cluster_status(&self) -> impl Future<Output = Json> + Send {
        async { serde_json::json!({"cluster": null}) }
    }
    /// Starts a change of the cluster's layout (onggi's own `POST /onggi/cluster/layout`):
    /// nodes joining, nodes decommissioned. Answers the change's epoch, or why it was refused.
    fn change_layout(&self, _change: Json) -> impl Future<Output = Result<Json, String>> + Send {
        async { Err("this server is not part of a cluster".to_string()) }
    }
}

/// The three tag operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TagOperation {
    Tag,
    Untag,
    List,
}

/// The operations that describe the service rather than a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceDescription {
    Endpoints,
    Limits,
}

/// Index definitions re-exported for inputs that carry them.
pub type IndexInput = IndexDefinition;

/// Every operation of the DynamoDB API (2012-08-10), so that a request for one onggi does not
/// serve yet can be told apart from a misspelt one.
pub const DYNAMODB_OPERATIONS: &[&str] = &[
    "BatchExecuteStatement",
    "BatchGetItem",
    "BatchWriteItem",
    "CreateBackup",
    "CreateGlobalTable",
    "CreateTable",
    "DeleteBackup",
    "DeleteItem",
    "DeleteResourcePolicy",
    "DeleteTable",
    "DescribeBackup",
    "DescribeContinuousBackups",
    "DescribeContributorInsights",
    "DescribeEndpoints",
    "DescribeExport",
    "DescribeGlobalTable",
    "DescribeGlobalTableSettings",
    "DescribeImport",
    "DescribeKinesisStreamingDestination",
    "DescribeLimits",
    "DescribeTable",
    "DescribeTableReplicaAutoScaling",
    "DescribeTimeToLive",
    "DisableKinesisStreamingDestination",
    "EnableKinesisStreamingDestination",
    "ExecuteStatement",
    "ExecuteTransaction",
    "ExportTableToPointInTime",
    "GetItem",
    "GetResourcePolicy",
    "ImportTable",
    "ListBackups",
    "ListContributorInsights",
    "ListExports",
    "ListGlobalTables",
    "ListImports",
    "ListTables",
    "ListTagsOfResource",
    "PutItem",
    "PutResourcePolicy",
    "Query",
    "RestoreTableFromBackup",
    "RestoreTableToPointInTime",
    "Scan",
    "TagResource",
    "TransactGetItems",
    "TransactWriteItems",
    "UntagResource",
    "UpdateContinuousBackups",
    "UpdateContributorInsights",
    "UpdateGlobalTable",
    "UpdateGlobalTableSettings",
    "UpdateItem",
    "UpdateKinesisStreamingDestination",
    "UpdateTable",
    "UpdateTableReplicaAutoScaling",
    "UpdateTimeToLive",
];

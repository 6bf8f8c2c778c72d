//! Tables: key schemas, attribute definitions, indexes, and their validation.
//!
//! [`TableSchema`] is the validated, stored description of a table. It is produced only by
//! [`validate_create_table`], which checks a CreateTable request the way DynamoDB does and in the
//! same order, so the first error a client sees is DynamoDB's first error.

use serde::{Deserialize, Serialize};

use crate::error::{DynamoError, ErrorKind};
use crate::value::{AttributeValue, Item, ValueType};

/// Shortest table or index name.
pub const TABLE_NAME_LENGTH_MIN: usize = 3;
/// Longest table or index name.
pub const TABLE_NAME_LENGTH_MAX: usize = 255;
/// Largest partition key value, in bytes.
pub const PARTITION_KEY_BYTES_MAX: usize = 2048;
/// Largest sort key value, in bytes.
pub const SORT_KEY_BYTES_MAX: usize = 1024;
/// Most local secondary indexes per table.
pub const LOCAL_INDEXES_MAX: usize = 5;
/// Most global secondary indexes per table.
pub const GLOBAL_INDEXES_MAX: usize = 20;

/// One element of a key schema, as sent by clients.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeySchemaElement {
    /// The key attribute's name.
    pub attribute_name: Option<String>,
    /// `HASH` or `RANGE`.
    pub key_type: Option<String>,
}

/// One attribute definition, as sent by clients.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AttributeDefinition {
    /// The attribute's name.
    pub attribute_name: Option<String>,
    /// `S`, `N` or `B`.
    pub attribute_type: Option<String>,
}

/// Provisioned throughput, as sent by clients.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProvisionedThroughput {
    /// Read capacity units per second.
    pub read_capacity_units: Option<i64>,
    /// Write capacity units per second.
    pub write_capacity_units: Option<i64>,
}

/// Which attributes an index holds, as sent by clients.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Projection {
    /// `KEYS_ONLY`, `INCLUDE` or `ALL`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub projection_type: Option<String>,
    /// For `INCLUDE`: the extra attributes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub non_key_attributes: Option<Vec<String>>,
}

/// A secondary index definition, as sent by clients (local or global).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IndexDefinition {
    /// The index name.
    pub index_name: Option<String>,
    /// The index's key schema.
    pub key_schema: Option<Vec<KeySchemaElement>>,
    /// What the index projects.
    pub projection: Option<Projection>,
    /// Global indexes only: their own throughput.
    pub provisioned_throughput: Option<ProvisionedThroughput>,
}

/// How a table is billed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BillingMode {
    /// Provisioned capacity (the default when no mode is given).
    #[serde(rename = "PROVISIONED")]
    Provisioned,
    /// On-demand.
    #[serde(rename = "PAY_PER_REQUEST")]
    PayPerRequest,
}

impl BillingMode {
    /// DynamoDB's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            BillingMode::Provisioned => "PROVISIONED",
            BillingMode::PayPerRequest => "PAY_PER_REQUEST",
        }
    }
}

/// A validated key attribute: its name and scalar type.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyAttribute {
    /// The attribute name.
    pub name: String,
    /// `S`, `N` or `B`.
    pub value_type: KeyType,
}

/// The scalar types a key attribute may have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyType {
    /// String.
    S,
    /// Number.
    N,
    /// Binary.
    B,
}

impl KeyType {
    /// DynamoDB's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::S => "S",
            KeyType::N => "N",
            KeyType::B => "B",
        }
    }

    fn parse(text: &str) -> Option<KeyType> {
        match text {
            "S" => Some(KeyType::S),
            "N" => Some(KeyType::N),
            "B" => Some(KeyType::B),
            _ => None,
        }
    }

    /// Whether `value` is of this key type.
    pub fn matches(self, value: &AttributeValue) -> bool {
        matches!(
            (self, value.value_type()),
            (KeyType::S, ValueType::S) | (KeyType::N, ValueType::N) | (KeyType::B, ValueType::B)
        )
    }
}

/// A validated key schema: a partition key and an optional sort key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySchema {
    /// The partition (HASH) key.
    pub partition: KeyAttribute,
    /// The sort (RANGE) key, if any.
    pub sort: Option<KeyAttribute>,
}

impl KeySchema {
    /// Names of the key attributes, partition key first.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.partition.name.as_str()).chain(self.sort.as_ref().map(|sort| sort.name.as_str()))
    }

    /// The key attributes, partition key first.
    pub fn partition_and_sort(&self) -> impl Iterator<Item = &KeyAttribute> {
        std::iter::once(&self.partition).chain(self.sort.as_ref())
    }

    /// The schema as DynamoDB describes it.
    pub fn elements(&self) -> Vec<KeySchemaElement> {
        let mut elements =
            vec![KeySchemaElement { attribute_name: Some(self.partition.name.clone()), key_type: Some("HASH".into()) }];
        if let Some(sort) = &self.sort {
            elements.push(KeySchemaElement { attribute_name: Some(sort.name.clone()), key_type: Some("RANGE".into()) });
        }
        elements
    }
}

/// A validated secondary index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexSchema {
    /// The index name.
    pub name: String,
    /// The index's key schema.
    pub key: KeySchema,
    /// The projection as given (validated).
    pub projection: Projection,
    /// Global indexes: their throughput.
    pub provisioned_throughput: Option<ProvisionedThroughput>,
    /// A unique id naming the index's storage; assigned by the node when the index is created.
    /// Empty in schemas written before indexes were maintained: such an index is rebuilt.
    #[serde(default)]
    pub id: String,
    /// Whether the index is usable or still being built from the table's items.
    #[serde(default)]
    pub status: IndexStatus,
}

/// The life cycle of a secondary index.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum IndexStatus {
    /// Complete and maintained by every write.
    #[default]
    Active,
    /// Maintained by every write while a background task adds the entries of existing items
    /// (an index added by UpdateTable); not yet readable.
    Backfilling,
}

impl IndexSchema {
    /// Whether `name` is an attribute this index stores for every entry (key attributes of the
    /// table and of the index, and the projected ones).
    pub fn projects(&self, table_key: &KeySchema, name: &str) -> bool {
        table_key.names().any(|key| key == name)
            || self.key.names().any(|key| key == name)
            || match self.projection.projection_type.as_deref() {
                Some("ALL") => true,
                Some("INCLUDE") => {
                    self.projection.non_key_attributes.iter().flatten().any(|attribute| attribute == name)
                }
                _ => false,
            }
    }

    /// Whether the index stores whole items.
    pub fn projects_all(&self) -> bool {
        self.projection.projection_type.as_deref() == Some("ALL")
    }
}

/// The stored description of a table. Serialized with serde into the node's catalog; the
/// `format_version` field guards against reinterpretation by other builds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TableSchema {
    /// Version of this description's layout.
    pub format_version: u32,
    /// The table name.
    pub name: String,
    /// A unique id (a UUID string), distinguishing this table from an earlier one of the same
    /// name.
    pub id: String,
    /// The primary key.
    pub key: KeySchema,
    /// All attribute definitions, in the order given.
    pub attribute_definitions: Vec<(String, KeyType)>,
    /// Billing mode.
    pub billing_mode: BillingMode,
    /// Provisioned throughput (zeros for on-demand tables, as DynamoDB describes them).
    pub read_capacity_units: i64,
    /// Provisioned throughput (zeros for on-demand tables).
    pub write_capacity_units: i64,
    /// Local secondary indexes.
    pub local_indexes: Vec<IndexSchema>,
    /// Global secondary indexes.
    pub global_indexes: Vec<IndexSchema>,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// When the table last switched to on-demand billing, milliseconds since the epoch.
    pub pay_per_request_since_ms: Option<u64>,
    /// Whether DeleteTable is refused.
    pub deletion_protection: bool,
    /// The Time to Live attribute, when TTL is enabled.
    #[serde(default)]
    pub ttl_attribute: Option<String>,
    /// The table's tags.
    #[serde(default)]
    pub tags: std::collections::BTreeMap<String, String>,
    /// Which change of the table this description is: the hybrid-logical-clock time of the last
    /// CreateTable, UpdateTable, UpdateTimeToLive or tagging that changed it, always above the
    /// revision of the change before (0 in descriptions written before revisions), so cluster
    /// members keep the newest description whatever order they hear of changes in.
    #[serde(default)]
    pub revision: u64,
}

/// The current [`TableSchema::format_version`].
pub const TABLE_SCHEMA_FORMAT_VERSION: u32 = 1;

/// The parts of a CreateTable request that define the table.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateTableInput {
    /// The table name.
    pub table_name: Option<String>,
    /// Attribute definitions for key attributes of the table and its indexes.
    pub attribute_definitions: Option<Vec<AttributeDefinition>>,
    /// The primary key.
    pub key_schema: Option<Vec<KeySchemaElement>>,
    /// `PROVISIONED` (default) or `PAY_PER_REQUEST`.
    pub billing_mode: Option<String>,
    /// Required for provisioned tables.
    pub provisioned_throughput: Option<ProvisionedThroughput>,
    /// Local secondary indexes.
    pub local_secondary_indexes: Option<Vec<IndexDefinition>>,
    /// Global secondary indexes.
    pub global_secondary_indexes: Option<Vec<IndexDefinition>>,
    /// Whether DeleteTable is refused.
    pub deletion_protection_enabled: Option<bool>,
    /// Tags (accepted; tag operations come with a later issue).
    pub tags: Option<serde_json::Value>,
    /// Streams (accepted only when disabled; streams come with a later issue).
    pub stream_specification: Option<serde_json::Value>,
    /// Server-side encryption settings (accepted and ignored, as DynamoDB Local does).
    #[serde(rename = "SSESpecification")]
    pub sse_specification: Option<serde_json::Value>,
    /// Table class (accepted).
    pub table_class: Option<String>,
}

fn validation(message: impl Into<String>) -> DynamoError {
    DynamoError::validation(message)
}

/// Checks a table or index name as DynamoDB does.
pub fn validate_table_name(name: &str) -> Result<(), DynamoError> {
    let valid_characters = name.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-' | b'.'));
    if !(TABLE_NAME_LENGTH_MIN..=TABLE_NAME_LENGTH_MAX).contains(&name.len()) || !valid_characters {
        return Err(validation(
            "Invalid table/index name.  Table/index names must be between 3 and 255 characters long, and may contain only the characters a-z, A-Z, 0-9, '_', '-', and '.'",
        ));
    }
    Ok(())
}

/// Extracts the table name of a request, refusing a missing or malformed one.
pub fn required_table_name(name: Option<&str>) -> Result<&str, DynamoError> {
    let name = name
        .ok_or_else(|| validation("Value null at 'tableName' failed to satisfy constraint: Member must not be null"))?;
    validate_table_name(name)?;
    Ok(name)
}

/// Which key schema is being checked: the messages differ.
#[derive(Clone, Copy, PartialEq, Eq)]
enum KeyContext {
    Table,
    LocalIndex,
    GlobalIndex,
}

const KEY_NAME_LENGTH_MESSAGE: &str =
    "Names of key attributes and attributes projected into an index must be between 1 and 255 characters, inclusive";

fn parse_key_schema(
    elements: &[KeySchemaElement],
    definitions: &[(String, KeyType)],
    context: KeyContext,
) -> Result<KeySchema, DynamoError> {
    if elements.is_empty() {
        return Err(validation(
            "No defined key schema.  A key schema containing at least a hash key must be defined for all tables",
        ));
    }
    if elements.len() > 2 {
        return Err(validation(
            "Key Schema too big.  Key Schema must at most consist of the hash and range key of a table",
        ));
    }
    let names: Vec<&str> = elements.iter().map(|element| element.attribute_name.as_deref().unwrap_or("")).collect();
    if names.len() == 2 && names[0] == names[1] {
        return Err(validation("Two keys can not have the same name"));
    }
    if names.iter().any(|name| name.is_empty() || name.len() > 255) {
        return Err(validation(KEY_NAME_LENGTH_MESSAGE));
    }
    let kinds: Vec<&str> = elements.iter().map(|element| element.key_type.as_deref().unwrap_or("")).collect();
    match kinds.iter().filter(|kind| **kind == "HASH").count() {
        0 => {
            return Err(validation(
                "No Hash Key specified in schema.  All Dynamo DB tables must have exactly one hash key",
            ));
        }
        1 => {}
        _ => {
            return Err(validation(
                "Too many hash keys specified.  All Dynamo DB tables must have exactly one hash key",
            ));
        }
    }
    if kinds[0] != "HASH" || kinds.get(1).is_some_and(|kind| *kind != "RANGE") {
        return Err(validation(
            "Invalid key order. Hash Key must be specified first in key schema, Range Key must be specifed second",
        ));
    }
    let lookup = |name: &str| definitions.iter().find(|(defined, _)| defined == name).map(|(_, key_type)| *key_type);
    let missing = |position: usize| -> DynamoError {
        match (context, position) {
            (KeyContext::Table, 0) => validation("Hash Key not specified in Attribute Definitions.  Type unknown."),
            (KeyContext::Table, _) => validation("Range Key not specified in Attribute Definitions.  Type unknown."),
            (KeyContext::LocalIndex, _) => {
                validation("Local Secondary Index range key not specified in Attribute Definitions.Type unknown.")
            }
            (KeyContext::GlobalIndex, _) => {
                validation(format!("Attribute {} is not defined in AttributeDefinitions", names[position]))
            }
        }
    };
    let attribute = |position: usize| -> Result<KeyAttribute, DynamoError> {
        let name = names[position];
        let value_type = lookup(name).ok_or_else(|| missing(position))?;
        Ok(KeyAttribute { name: name.to_string(), value_type })
    };
    let partition = attribute(0)?;
    let sort = if names.len() == 2 { Some(attribute(1)?) } else { None };
    Ok(KeySchema { partition, sort })
}

fn parse_projection(projection: Option<&Projection>) -> Result<Projection, DynamoError> {
    let projection = projection.cloned().ok_or_else(|| validation("Indexes must have a projection specified"))?;
    match projection.projection_type.as_deref() {
        Some("ALL" | "KEYS_ONLY") if projection.non_key_attributes.is_some() => {
            Err(validation("No attributes should be specified to be projected unless projection type is INCLUDE"))
        }
        Some("INCLUDE") if projection.non_key_attributes.as_ref().is_none_or(Vec::is_empty) => Err(validation(
            "If Projection type INCLUDE is specified, some non-key attributes to include in the projection must be specified as well",
        )),
        Some("INCLUDE") => {
            let attributes = projection.non_key_attributes.as_deref().unwrap_or_default();
            if attributes.iter().any(|name| name.is_empty() || name.len() > 255) {
                return Err(validation(KEY_NAME_LENGTH_MESSAGE));
            }
            let mut sorted = attributes.to_vec();
            sorted.sort();
            if sorted.windows(2).any(|pair| pair[0] == pair[1]) {
                return Err(validation("Cannot have two attributes with the same name"));
            }
            Ok(projection)
        }
        Some("ALL" | "KEYS_ONLY") => Ok(projection),
        None if projection.non_key_attributes.is_none() => Err(validation("Indexes must have a projection specified")),
        _ => Err(validation("Projection type must be INCLUDE, ALL, or KEYS_ONLY")),
    }
}

fn validate_throughput(throughput: &ProvisionedThroughput, index: bool) -> Result<(i64, i64), DynamoError> {
    match (throughput.read_capacity_units, throughput.write_capacity_units) {
        (Some(read), Some(write)) if read >= 1 && write >= 1 => Ok((read, write)),
        _ if index => Err(validation("Index read and write throughput must be at least 1, and cannot be null")),
        _ => Err(validation("Table read and write throughput must be at least 1, and cannot be null")),
    }
}

/// Validates a CreateTable request into a schema (id and times are filled by the caller), with
/// DynamoDB Local's messages, in its order.
pub fn validate_create_table(input: &CreateTableInput, id: String, now_ms: u64) -> Result<TableSchema, DynamoError> {
    // CreateTable reports a missing name as an invalid one.
    let name = input.table_name.as_deref().unwrap_or("");
    validate_table_name(name)?;
    let definitions_input = input
        .attribute_definitions
        .as_deref()
        .filter(|definitions| !definitions.is_empty())
        .ok_or_else(|| validation("No Attribute Schema Defined"))?;
    let mut definitions: Vec<(String, KeyType)> = Vec::new();
    let mut defined = std::collections::HashSet::with_capacity(definitions_input.len());
    for definition in definitions_input {
        let (attribute_name, key_type) = parse_definition(definition)?;
        if !defined.insert(attribute_name.clone()) {
            return Err(validation("Cannot have two attributes with the same name"));
        }
        definitions.push((attribute_name, key_type));
    }

    let billing_mode = match input.billing_mode.as_deref() {
        None | Some("PROVISIONED") => BillingMode::Provisioned,
        Some("PAY_PER_REQUEST") => BillingMode::PayPerRequest,
        Some(other) => {
            return Err(validation(format!(
                "1 validation error detected: Value '{other}' at 'billingMode' failed to satisfy constraint: Member must satisfy enum value set: [PROVISIONED, PAY_PER_REQUEST]"
            )));
        }
    };

    let key = parse_key_schema(input.key_schema.as_deref().unwrap_or_default(), &definitions, KeyContext::Table)?;

    let (read_capacity_units, write_capacity_units) = match billing_mode {
        BillingMode::PayPerRequest => {
            // Real DynamoDB refuses this combination (DynamoDB Local ignores the throughput).
            if input.provisioned_throughput.is_some() {
                return Err(validation(
                    "One or more parameter values were invalid: Neither ReadCapacityUnits nor WriteCapacityUnits can be specified when BillingMode is PAY_PER_REQUEST",
                ));
            }
            (0, 0)
        }
        BillingMode::Provisioned => {
            let throughput = input
                .provisioned_throughput
                .as_ref()
                .ok_or_else(|| validation("No provisioned throughput specified for the table"))?;
            validate_throughput(throughput, false)?
        }
    };

    let mut local_indexes: Vec<IndexSchema> = Vec::new();
    if let Some(indexes) = &input.local_secondary_indexes {
        if indexes.is_empty() {
            return Err(validation("LSI list is empty/invalid"));
        }
        // Limits first: validating an unbounded list of indexes would cost the server, not the client.
        if indexes.len() > LOCAL_INDEXES_MAX {
            return Err(validation(
                "One or more parameter values were invalid: Number of LocalSecondaryIndexes exceeds per-table limit of 5",
            ));
        }
        for index in indexes {
            let schema = validate_index(index, &definitions, KeyContext::LocalIndex, &key)?;
            if local_indexes.iter().any(|existing| existing.name == schema.name) {
                return Err(validation("Two local secondary indices have the same name"));
            }
            local_indexes.push(schema);
        }
    }
    let mut global_indexes: Vec<IndexSchema> = Vec::new();
    if let Some(indexes) = &input.global_secondary_indexes {
        if indexes.is_empty() {
            return Err(validation("GSI list is empty/invalid"));
        }
        if indexes.len() > GLOBAL_INDEXES_MAX {
            return Err(DynamoError::new(
                ErrorKind::LimitExceeded,
                "One or more parameter values were invalid: Number of GlobalSecondaryIndexes exceeds per-table limit of 20",
            ));
        }
        for index in indexes {
            let mut schema = validate_index(index, &definitions, KeyContext::GlobalIndex, &key)?;
            if global_indexes.iter().any(|existing| existing.name == schema.name) {
                return Err(validation("Two global secondary indices have the same name"));
            }
            if local_indexes.iter().any(|existing| existing.name == schema.name) {
                return Err(validation(
                    "Local Secondary Indices AND Global Secondary Indices must have different names",
                ));
            }
            check_global_index_throughput(&mut schema, index, billing_mode)?;
            global_indexes.push(schema);
        }
    }
    let used = key_attributes(&key, local_indexes.iter().chain(&global_indexes));
    if definitions.iter().any(|(name, _)| !used.contains(&name.as_str())) {
        return Err(validation(
            "The number of attributes in key schema must match the number of attributes defined in attribute definitions.",
        ));
    }

    Ok(TableSchema {
        format_version: TABLE_SCHEMA_FORMAT_VERSION,
        name: name.to_string(),
        id,
        key,
        attribute_definitions: definitions,
        billing_mode,
        read_capacity_units,
        write_capacity_units,
        local_indexes,
        global_indexes,
        created_ms: now_ms,
        pay_per_request_since_ms: (billing_mode == BillingMode::PayPerRequest).then_some(now_ms),
        deletion_protection: input.deletion_protection_enabled.unwrap_or(false),
        ttl_attribute: None,
        tags: Default::default(),
        revision: 0,
    })
}

/// Checks a global secondary index that UpdateTable adds to an existing table. `definitions` are
/// the request's AttributeDefinitions; returns the index and the table's attribute definitions
/// with the new index's key attributes added.
pub fn validate_new_global_index(
    schema: &TableSchema,
    index: &IndexDefinition,
    definitions: &[AttributeDefinition],
) -> Result<(IndexSchema, Vec<(String, KeyType)>), DynamoError> {
    let mut merged = schema.attribute_definitions.clone();
    for definition in definitions {
        let (name, key_type) = parse_definition(definition)?;
        match merged.iter().find(|(existing, _)| *existing == name) {
            Some((_, existing)) if *existing != key_type => {
                return Err(validation(
                    "invalid attribute, SchemaElement redefined should be of same type as previously defined",
                ));
            }
            Some(_) => {}
            None => merged.push((name, key_type)),
        }
    }
    let mut index_schema = validate_index(index, &merged, KeyContext::GlobalIndex, &schema.key)?;
    if schema.indexes().any(|existing| existing.name == index_schema.name) {
        return Err(validation("Attempting to create an index which already exists"));
    }
    if schema.global_indexes.len() >= GLOBAL_INDEXES_MAX {
        return Err(DynamoError::new(
            ErrorKind::LimitExceeded,
            "One or more parameter values were invalid: Number of GlobalSecondaryIndexes exceeds per-table limit of 20",
        ));
    }
    check_global_index_throughput(&mut index_schema, index, schema.billing_mode)?;
    // Keep only the definitions some key uses (the new index's included).
    let used = key_attributes(&schema.key, schema.indexes().chain([&index_schema]));
    let merged = merged.into_iter().filter(|(name, _)| used.contains(&name.as_str())).collect();
    Ok((index_schema, merged))
}

/// One attribute definition: its name (1–255 bytes) and key type.
fn parse_definition(definition: &AttributeDefinition) -> Result<(String, KeyType), DynamoError> {
    let name = definition.attribute_name.clone().unwrap_or_default();
    let key_type = definition
        .attribute_type
        .as_deref()
        .and_then(KeyType::parse)
        .ok_or_else(|| validation("Member must satisfy enum value set: [B, N, S]"))?;
    if name.is_empty() || name.len() > 255 {
        return Err(validation(KEY_NAME_LENGTH_MESSAGE));
    }
    Ok((name, key_type))
}

/// A global index's throughput against the table's billing mode: required when provisioned,
/// refused (and cleared) when on demand.
fn check_global_index_throughput(
    schema: &mut IndexSchema,
    index: &IndexDefinition,
    billing_mode: BillingMode,
) -> Result<(), DynamoError> {
    match billing_mode {
        BillingMode::Provisioned => {
            let throughput = index
                .provisioned_throughput
                .as_ref()
                .ok_or_else(|| validation("No provisioned throughput specified for the global secondary index"))?;
            validate_throughput(throughput, true)?;
        }
        BillingMode::PayPerRequest => {
            if index.provisioned_throughput.is_some() {
                return Err(validation(format!(
                    "One or more parameter values were invalid: ProvisionedThroughput should not be specified for index: {} when BillingMode is PAY_PER_REQUEST",
                    schema.name
                )));
            }
            schema.provisioned_throughput = None;
        }
    }
    Ok(())
}

/// The attributes a table key and its indexes' keys use: the only ones attribute definitions
/// may name.
fn key_attributes<'s>(key: &'s KeySchema, indexes: impl Iterator<Item = &'s IndexSchema>) -> Vec<&'s str> {
    key.names().chain(indexes.flat_map(|index| index.key.names())).collect()
}

fn validate_index(
    index: &IndexDefinition,
    definitions: &[(String, KeyType)],
    context: KeyContext,
    table_key: &KeySchema,
) -> Result<IndexSchema, DynamoError> {
    let name = index.index_name.clone().unwrap_or_default();
    validate_table_name(&name)?;
    let key = parse_key_schema(index.key_schema.as_deref().unwrap_or_default(), definitions, context)?;
    if context == KeyContext::LocalIndex {
        if key.partition.name != table_key.partition.name {
            return Err(validation("Local Secondary indices must have the same hash key as the main table"));
        }
        if table_key.sort.is_none() {
            return Err(validation(
                "Local Secondary indices are not allowed on hash tables, only hash and range tables",
            ));
        }
        if key.sort.is_none() {
            return Err(validation("Local secondary indices must have a range key"));
        }
    }
    let projection = parse_projection(index.projection.as_ref())?;
    Ok(IndexSchema {
        name,
        key,
        projection,
        provisioned_throughput: index.provisioned_throughput,
        id: String::new(),
        status: IndexStatus::Active,
    })
}

/// The key of an item, checked against a table's key schema.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ItemKey {
    /// The partition key value.
    pub partition: AttributeValue,
    /// The sort key value, if the table has one.
    pub sort: Option<AttributeValue>,
}

impl IndexSchema {
    /// The entry this index holds for `item`: the table's key, the index's key and the projected
    /// attributes — or `None` when the item lacks an index key attribute (a sparse index skips
    /// it). Used to cost index writes now, and to maintain indexes.
    pub fn entry(&self, table_key: &KeySchema, item: &Item) -> Option<Item> {
        if !self.key.names().all(|name| item.contains_key(name)) {
            return None;
        }
        Some(
            item.iter()
                .filter(|(name, _)| self.projects(table_key, name))
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect(),
        )
    }

    /// Checks the index key attributes an item carries: scalar, of the declared type, non-empty
    /// and within the key size limits (an item without them is simply not indexed).
    fn check_item(&self, item: &Item, by_update: bool) -> Result<(), DynamoError> {
        for (attribute, partition) in
            std::iter::once((&self.key.partition, true)).chain(self.key.sort.iter().map(|sort| (sort, false)))
        {
            let Some(value) = item.get(&attribute.name) else { continue };
            if !matches!(value, AttributeValue::S(_) | AttributeValue::N(_) | AttributeValue::B(_)) {
                return Err(validation("Invalid attribute value type"));
            }
            if !attribute.value_type.matches(value) {
                return Err(validation("One or more parameter values were invalid: Type mismatch for Index Key"));
            }
            let size = value.size_bytes();
            if size == 0 {
                let what = if matches!(value, AttributeValue::B(_)) { "binary" } else { "string" };
                if by_update {
                    return Err(validation(format!(
                        "One or more parameter values are not valid. The update expression attempted to update a secondary index key to a value that is not supported. The AttributeValue for a key attribute cannot contain an empty {what} value."
                    )));
                }
                return Err(validation(format!(
                    "One or more parameter values are not valid. A value specified for a secondary index key is not supported. The AttributeValue for a key attribute cannot contain an empty {what} value. IndexName: {}, IndexKey: {}",
                    self.name, attribute.name
                )));
            }
            if (partition && size > PARTITION_KEY_BYTES_MAX) || (!partition && size > SORT_KEY_BYTES_MAX) {
                return Err(validation("One or more parameter values were invalid: Size limit exceeded"));
            }
        }
        Ok(())
    }
}

impl TableSchema {
    /// Drops attribute definitions no key uses any more (after an index was removed).
    pub fn prune_attribute_definitions(&mut self) {
        let used: Vec<String> = key_attributes(&self.key, self.indexes()).into_iter().map(str::to_string).collect();
        self.attribute_definitions.retain(|(name, _)| used.contains(name));
    }

    /// Every secondary index, local ones first.
    pub fn indexes(&self) -> impl Iterator<Item = &IndexSchema> {
        self.local_indexes.iter().chain(&self.global_indexes)
    }

    /// Checks the secondary-index key attributes of an item about to be stored (`by_update`: the
    /// item is the result of an UpdateItem, whose messages differ slightly).
    pub fn check_index_keys(&self, item: &Item, by_update: bool) -> Result<(), DynamoError> {
        self.indexes().try_for_each(|index| index.check_item(item, by_update))
    }

    /// Extracts and checks the key of a full item (PutItem): every key attribute present, of the
    /// declared type, non-empty and within the size limits.
    pub fn key_of_item(&self, item: &Item) -> Result<ItemKey, DynamoError> {
        let partition = self.key_attribute(item, &self.key.partition, true)?;
        let sort = match &self.key.sort {
            Some(attribute) => Some(self.key_attribute(item, attribute, false)?),
            None => None,
        };
        Ok(ItemKey { partition, sort })
    }

    /// Checks a `Key` parameter (GetItem, UpdateItem, DeleteItem): exactly the key attributes.
    pub fn key_from_key_map(&self, key: &Item) -> Result<ItemKey, DynamoError> {
        let expected = 1 + usize::from(self.key.sort.is_some());
        if key.len() != expected {
            return Err(validation("The number of conditions on the keys is invalid"));
        }
        if !self.key.names().all(|name| key.contains_key(name)) {
            return Err(validation("The provided key element does not match the schema"));
        }
        self.key_of_item(key)
    }

    fn key_attribute(
        &self,
        item: &Item,
        attribute: &KeyAttribute,
        partition: bool,
    ) -> Result<AttributeValue, DynamoError> {
        let value =
            item.get(&attribute.name).ok_or_else(|| validation("One of the required keys was not given a value"))?;
        if !matches!(value, AttributeValue::S(_) | AttributeValue::N(_) | AttributeValue::B(_)) {
            return Err(validation("Invalid attribute value type"));
        }
        if !attribute.value_type.matches(value) {
            return Err(validation("One or more parameter values were invalid: Type mismatch for key"));
        }
        let size = value.size_bytes();
        if size == 0 {
            let what = match value {
                AttributeValue::B(_) => "binary",
                _ => "string",
            };
            return Err(validation(format!(
                "One or more parameter values are not valid. The AttributeValue for a key attribute cannot contain an empty {what} value. Key: {}",
                attribute.name
            )));
        }
        if (partition && size > PARTITION_KEY_BYTES_MAX) || (!partition && size > SORT_KEY_BYTES_MAX) {
            return Err(validation(
                "Hash primary key values must be under 2048 bytes, and range primary key values must be under 1024 bytes",
            ));
        }
        Ok(value.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn create(json: serde_json::Value) -> Result<TableSchema, String> {
        let input: CreateTableInput = serde_json::from_value(json).unwrap();
        validate_create_table(&input, "id".into(), 1).map_err(|error| error.message)
    }

    #[test]
    fn accepts_hash_and_range_tables_with_indexes() {
        let schema = create(json!({
            "TableName": "orders", "BillingMode": "PAY_PER_REQUEST",
            "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "N"}, {"AttributeName": "g", "AttributeType": "B"}],
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
            "GlobalSecondaryIndexes": [{"IndexName": "by_g", "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"}], "Projection": {"ProjectionType": "ALL"}}]
        }))
        .unwrap();
        assert_eq!(schema.key.sort.as_ref().unwrap().value_type, KeyType::N);
        assert_eq!(schema.global_indexes[0].key.partition.name, "g");
    }

    #[test]
    fn refuses_inconsistent_definitions() {
        let unused = create(json!({
            "TableName": "orders", "BillingMode": "PAY_PER_REQUEST",
            "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "x", "AttributeType": "S"}],
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}]
        }));
        assert!(unused.unwrap_err().contains("must match the number of attributes defined"));
        let missing = create(json!({
            "TableName": "orders", "ProvisionedThroughput": {"ReadCapacityUnits": 1, "WriteCapacityUnits": 1},
            "AttributeDefinitions": [{"AttributeName": "x", "AttributeType": "S"}],
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}]
        }));
        assert_eq!(missing.unwrap_err(), "Hash Key not specified in Attribute Definitions.  Type unknown.");
        let no_throughput = create(json!({
            "TableName": "orders",
            "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}]
        }));
        assert_eq!(no_throughput.unwrap_err(), "No provisioned throughput specified for the table");
        assert!(create(json!({"TableName": "ab"})).unwrap_err().contains("Invalid table/index name"));
    }
}

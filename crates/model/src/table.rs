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

    fn matches(self, value: &AttributeValue) -> bool {
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

fn parse_key_schema(
    elements: &[KeySchemaElement],
    definitions: &[(String, KeyType)],
    context: &str,
) -> Result<KeySchema, DynamoError> {
    if elements.is_empty() || elements.len() > 2 {
        return Err(validation(format!(
            "1 validation error detected: Value '{}' at '{context}' failed to satisfy constraint: Member must have length {}",
            elements.len(),
            if elements.is_empty() { "greater than or equal to 1" } else { "less than or equal to 2" }
        )));
    }
    let mut names = Vec::new();
    for (position, element) in elements.iter().enumerate() {
        let name = element.attribute_name.as_deref().ok_or_else(|| {
            validation(format!(
                "1 validation error detected: Value null at '{context}.{}.member.attributeName' failed to satisfy constraint: Member must not be null",
                position + 1
            ))
        })?;
        let key_type = element.key_type.as_deref().ok_or_else(|| {
            validation(format!(
                "1 validation error detected: Value null at '{context}.{}.member.keyType' failed to satisfy constraint: Member must not be null",
                position + 1
            ))
        })?;
        if key_type != "HASH" && key_type != "RANGE" {
            return Err(validation(format!(
                "1 validation error detected: Value '{key_type}' at '{context}.{}.member.keyType' failed to satisfy constraint: Member must satisfy enum value set: [HASH, RANGE]",
                position + 1
            )));
        }
        names.push((name, key_type));
    }
    if names[0].1 != "HASH" {
        return Err(validation("Invalid KeySchema: The first KeySchemaElement is not a HASH key type"));
    }
    if names.len() == 2 {
        if names[1].1 != "RANGE" {
            return Err(validation("Invalid KeySchema: The second KeySchemaElement is not a RANGE key type"));
        }
        if names[0].0 == names[1].0 {
            return Err(validation("Both the Hash Key and the Range Key element in the KeySchema have the same name"));
        }
    }
    let lookup = |name: &str| definitions.iter().find(|(defined, _)| defined == name).map(|(_, key_type)| *key_type);
    let missing: Vec<&str> = names.iter().map(|(name, _)| *name).filter(|name| lookup(name).is_none()).collect();
    if !missing.is_empty() {
        let defined: Vec<&str> = definitions.iter().map(|(name, _)| name.as_str()).collect();
        return Err(validation(format!(
            "One or more parameter values were invalid: Some index key attributes are not defined in AttributeDefinitions. Keys: [{}], AttributeDefinitions: [{}]",
            missing.join(", "),
            defined.join(", ")
        )));
    }
    let attribute = |name: &str| KeyAttribute { name: name.to_string(), value_type: lookup(name).expect("checked") };
    Ok(KeySchema { partition: attribute(names[0].0), sort: names.get(1).map(|(name, _)| attribute(name)) })
}

fn parse_projection(projection: Option<&Projection>) -> Result<Projection, DynamoError> {
    let projection = projection.cloned().unwrap_or_default();
    match projection.projection_type.as_deref() {
        None | Some("ALL") | Some("KEYS_ONLY") if projection.non_key_attributes.is_some() => Err(validation(
            "One or more parameter values were invalid: ProjectionType is ALL or KEYS_ONLY, but NonKeyAttributes is specified",
        )),
        Some("INCLUDE") if projection.non_key_attributes.as_ref().is_none_or(Vec::is_empty) => Err(validation(
            "One or more parameter values were invalid: ProjectionType is INCLUDE, but NonKeyAttributes is not specified",
        )),
        None => Err(validation("One or more parameter values were invalid: Unknown ProjectionType: null")),
        Some("ALL" | "KEYS_ONLY" | "INCLUDE") => Ok(projection),
        Some(other) => Err(validation(format!(
            "1 validation error detected: Value '{other}' at 'projection.projectionType' failed to satisfy constraint: Member must satisfy enum value set: [ALL, INCLUDE, KEYS_ONLY]"
        ))),
    }
}

fn validate_throughput(throughput: &ProvisionedThroughput) -> Result<(i64, i64), DynamoError> {
    let (Some(read), Some(write)) = (throughput.read_capacity_units, throughput.write_capacity_units) else {
        return Err(validation(
            "One or more parameter values were invalid: ReadCapacityUnits and WriteCapacityUnits must both be specified when BillingMode is PROVISIONED",
        ));
    };
    for (value, what) in [(read, "readCapacityUnits"), (write, "writeCapacityUnits")] {
        if value < 1 {
            return Err(validation(format!(
                "1 validation error detected: Value '{value}' at 'provisionedThroughput.{what}' failed to satisfy constraint: Member must have value greater than or equal to 1"
            )));
        }
    }
    Ok((read, write))
}

/// Validates a CreateTable request into a schema (id and times are filled by the caller).
pub fn validate_create_table(input: &CreateTableInput, id: String, now_ms: u64) -> Result<TableSchema, DynamoError> {
    let name = required_table_name(input.table_name.as_deref())?;
    let definitions_input = input.attribute_definitions.as_ref().ok_or_else(|| {
        validation("1 validation error detected: Value null at 'attributeDefinitions' failed to satisfy constraint: Member must not be null")
    })?;
    let key_input = input.key_schema.as_ref().ok_or_else(|| {
        validation("1 validation error detected: Value null at 'keySchema' failed to satisfy constraint: Member must not be null")
    })?;
    let mut definitions: Vec<(String, KeyType)> = Vec::new();
    for (position, definition) in definitions_input.iter().enumerate() {
        let attribute_name = definition.attribute_name.clone().ok_or_else(|| {
            validation(format!(
                "1 validation error detected: Value null at 'attributeDefinitions.{}.member.attributeName' failed to satisfy constraint: Member must not be null",
                position + 1
            ))
        })?;
        let type_text = definition.attribute_type.as_deref().ok_or_else(|| {
            validation(format!(
                "1 validation error detected: Value null at 'attributeDefinitions.{}.member.attributeType' failed to satisfy constraint: Member must not be null",
                position + 1
            ))
        })?;
        let key_type = KeyType::parse(type_text).ok_or_else(|| {
            validation(format!(
                "1 validation error detected: Value '{type_text}' at 'attributeDefinitions.{}.member.attributeType' failed to satisfy constraint: Member must satisfy enum value set: [B, N, S]",
                position + 1
            ))
        })?;
        if definitions.iter().any(|(existing, _)| *existing == attribute_name) {
            return Err(validation(format!(
                "Invalid Attribute Definitions: Duplicate AttributeName found: {attribute_name}"
            )));
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

    let key = parse_key_schema(key_input, &definitions, "keySchema")?;

    let (read_capacity_units, write_capacity_units) = match billing_mode {
        BillingMode::PayPerRequest => {
            if input.provisioned_throughput.is_some() {
                return Err(validation(
                    "One or more parameter values were invalid: Neither ReadCapacityUnits nor WriteCapacityUnits can be specified when BillingMode is PAY_PER_REQUEST",
                ));
            }
            (0, 0)
        }
        BillingMode::Provisioned => {
            let throughput = input.provisioned_throughput.as_ref().ok_or_else(|| {
                validation("One or more parameter values were invalid: ReadCapacityUnits and WriteCapacityUnits must both be specified when BillingMode is PROVISIONED")
            })?;
            validate_throughput(throughput)?
        }
    };

    let mut used: Vec<&str> = key.names().collect();
    let mut index_names: Vec<String> = Vec::new();
    let mut local_indexes = Vec::new();
    for index in input.local_secondary_indexes.iter().flatten() {
        let schema = validate_index(index, &definitions, &mut index_names, "localSecondaryIndexes")?;
        if schema.key.partition.name != key.partition.name {
            return Err(validation(
                "One or more parameter values were invalid: Index KeySchema does not have the same leading hash key as table KeySchema for index: "
                    .to_string()
                    + &schema.name
                    + ". index hash key: "
                    + &schema.key.partition.name
                    + ", table hash key: "
                    + &key.partition.name,
            ));
        }
        if schema.key.sort.is_none() || key.sort.is_none() {
            return Err(validation(format!(
                "One or more parameter values were invalid: Table KeySchema does not have a range key, which is required when specifying a LocalSecondaryIndex"
            )));
        }
        local_indexes.push(schema);
    }
    if input.local_secondary_indexes.as_ref().is_some_and(Vec::is_empty) {
        return Err(validation("One or more parameter values were invalid: List of LocalSecondaryIndexes is empty"));
    }
    if local_indexes.len() > LOCAL_INDEXES_MAX {
        return Err(validation(
            "One or more parameter values were invalid: Number of LocalSecondaryIndexes exceeds per-table limit of 5",
        ));
    }
    let mut global_indexes = Vec::new();
    for index in input.global_secondary_indexes.iter().flatten() {
        let mut schema = validate_index(index, &definitions, &mut index_names, "globalSecondaryIndexes")?;
        match billing_mode {
            BillingMode::Provisioned => {
                let throughput = index.provisioned_throughput.as_ref().ok_or_else(|| {
                    validation(format!(
                        "One or more parameter values were invalid: ProvisionedThroughput must be specified for index: {}",
                        schema.name
                    ))
                })?;
                validate_throughput(throughput)?;
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
        global_indexes.push(schema);
    }
    if input.global_secondary_indexes.as_ref().is_some_and(Vec::is_empty) {
        return Err(validation("One or more parameter values were invalid: List of GlobalSecondaryIndexes is empty"));
    }
    if global_indexes.len() > GLOBAL_INDEXES_MAX {
        return Err(DynamoError::new(
            ErrorKind::LimitExceeded,
            "One or more parameter values were invalid: Number of GlobalSecondaryIndexes exceeds per-table limit of 20",
        ));
    }
    for index in local_indexes.iter().chain(&global_indexes) {
        used.extend(index.key.names());
    }
    if definitions.iter().any(|(name, _)| !used.contains(&name.as_str())) {
        return Err(validation(
            "One or more parameter values were invalid: Number of attributes in KeySchema does not exactly match number of attributes defined in AttributeDefinitions",
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
    })
}

fn validate_index(
    index: &IndexDefinition,
    definitions: &[(String, KeyType)],
    seen_names: &mut Vec<String>,
    context: &str,
) -> Result<IndexSchema, DynamoError> {
    let name = index.index_name.clone().ok_or_else(|| {
        validation(format!(
            "1 validation error detected: Value null at '{context}.1.member.indexName' failed to satisfy constraint: Member must not be null"
        ))
    })?;
    validate_table_name(&name)?;
    if seen_names.contains(&name) {
        return Err(validation(format!("One or more parameter values were invalid: Duplicate index name: {name}")));
    }
    seen_names.push(name.clone());
    let key_input = index.key_schema.as_ref().ok_or_else(|| {
        validation(format!(
            "1 validation error detected: Value null at '{context}.1.member.keySchema' failed to satisfy constraint: Member must not be null"
        ))
    })?;
    let key = parse_key_schema(key_input, definitions, &format!("{context}.1.member.keySchema"))?;
    let projection = parse_projection(index.projection.as_ref())?;
    Ok(IndexSchema { name, key, projection, provisioned_throughput: index.provisioned_throughput })
}

/// The key of an item, checked against a table's key schema.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ItemKey {
    /// The partition key value.
    pub partition: AttributeValue,
    /// The sort key value, if the table has one.
    pub sort: Option<AttributeValue>,
}

impl TableSchema {
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
        if key.len() != expected || !self.key.names().all(|name| key.contains_key(name)) {
            return Err(validation("The provided key element does not match the schema"));
        }
        for attribute in std::iter::once(&self.key.partition).chain(&self.key.sort) {
            if !attribute.value_type.matches(&key[&attribute.name]) {
                return Err(validation("The provided key element does not match the schema"));
            }
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
        if !attribute.value_type.matches(value) {
            return Err(validation(format!(
                "One or more parameter values were invalid: Type mismatch for key {} expected: {} actual: {}",
                attribute.name,
                attribute.value_type.as_str(),
                value.value_type()
            )));
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
        if partition && size > PARTITION_KEY_BYTES_MAX {
            return Err(validation(format!(
                "One or more parameter values were invalid: Size of hashkey has exceeded the maximum size limit of{PARTITION_KEY_BYTES_MAX} bytes"
            )));
        }
        if !partition && size > SORT_KEY_BYTES_MAX {
            return Err(validation(format!(
                "One or more parameter values were invalid: Aggregated size of all range keys has exceeded the size limit of {SORT_KEY_BYTES_MAX} bytes"
            )));
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
        assert!(unused.unwrap_err().contains("does not exactly match"));
        let missing = create(json!({
            "TableName": "orders", "ProvisionedThroughput": {"ReadCapacityUnits": 1, "WriteCapacityUnits": 1},
            "AttributeDefinitions": [{"AttributeName": "x", "AttributeType": "S"}],
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}]
        }));
        assert!(missing.unwrap_err().contains("Some index key attributes are not defined"));
        let no_throughput = create(json!({
            "TableName": "orders",
            "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}]
        }));
        assert!(no_throughput.unwrap_err().contains("must both be specified"));
        assert!(create(json!({"TableName": "ab"})).unwrap_err().contains("Invalid table/index name"));
    }
}

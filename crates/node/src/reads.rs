//! Query and Scan: ordered range reads over a table's or an index's tree.
//!
//! Both become one range scan of a storage tree:
//! - Query reads one partition key's items (or index entries) between the bounds its sort-key
//!   condition gives, forward or backward: keys are stored in DynamoDB's order (see
//!   `onggi_core::keys`), so no sorting happens here.
//! - Scan reads the whole tree in storage (token) order; a parallel-scan segment reads one
//!   contiguous token interval, so segments partition the table.
//!
//! A page ends after `Limit` items were read, or once the items read reach 1 MB — both counted
//! before the filter, as DynamoDB counts them — and then carries the key of the last item read as
//! `LastEvaluatedKey`; a request that gives it back as `ExclusiveStartKey` resumes just after it.

use std::ops::Bound;
use std::sync::Arc;

use onggi_core::keys::{TOKEN_BYTES, index_prefix, item_key, partition_prefix, push_escaped, segment_start};
use onggi_core::paxos::Ballot;
use onggi_core::record::Record;
use onggi_model::expr::{
    Comparator, Condition, KeyCondition, Operation, Path, Projection, RequestExpressions, SortKeyCondition,
    compare_values,
};
use onggi_model::ops::{JsonMap, QueryInput, QueryOutput, ScanInput};
use onggi_model::table::{KeySchema, required_table_name};
use onggi_model::value::{item_from_json, item_size_bytes};
use onggi_model::{AttributeValue, DynamoError, Item};
use onggi_storage::{Direction, Tree, prefix_range};

use crate::Node;
use crate::capacity::{self, CapacityReport};
use crate::catalog::{IndexHandle, TableHandle};
use crate::indexing;
use crate::tables::storage_error;

/// Most bytes of items one page reads (counted before the filter).
pub const PAGE_BYTES_MAX: usize = 1024 * 1024;
/// Most segments of a parallel scan.
const TOTAL_SEGMENTS_MAX: i64 = 1_000_000;

/// What a read returns of each item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Select {
    AllAttributes,
    AllProjected,
    Specific,
    Count,
}

fn parse_select(value: Option<&str>) -> Result<Option<Select>, DynamoError> {
    Ok(match value {
        None => None,
        Some("ALL_ATTRIBUTES") => Some(Select::AllAttributes),
        Some("ALL_PROJECTED_ATTRIBUTES") => Some(Select::AllProjected),
        Some("SPECIFIC_ATTRIBUTES") => Some(Select::Specific),
        Some("COUNT") => Some(Select::Count),
        Some(_) => {
            return Err(DynamoError::validation(
                "Select must be ALL_ATTRIBUTES, ALL_PROJECTED_ATTRIBUTES, COUNT, or SPECIFIC_ATTRIBUTES",
            ));
        }
    })
}

/// Where a read looks: the table itself or one of its indexes.
struct Source<'t> {
    table: &'t TableHandle,
    index: Option<&'t IndexHandle>,
}

impl<'t> Source<'t> {
    fn resolve(table: &'t TableHandle, index_name: Option<&str>) -> Result<Source<'t>, DynamoError> {
        let index = match index_name {
            None => None,
            Some(name) => {
                let index = table.index(name).ok_or_else(|| {
                    DynamoError::validation(format!("The table does not have the specified index: {name}"))
                })?;
                if !index.readable() {
                    // Real DynamoDB's answer while a new index is being built.
                    return Err(DynamoError::validation(format!(
                        "Cannot read from backfilling global secondary index: {name}"
                    )));
                }
                Some(index)
            }
        };
        Ok(Source { table, index })
    }

    fn key(&self) -> &'t KeySchema {
        self.index.map_or(&self.table.schema.key, |index| &index.schema.key)
    }

    fn tree(&self) -> &'t Tree {
        self.index.map_or(&self.table.tree, |index| &index.tree)
    }

    fn is_global(&self) -> bool {
        self.index.is_some_and(|index| index.global)
    }

    /// Whether every attribute of the base items is in the source.
    fn has_all_attributes(&self) -> bool {
        self.index.is_none_or(|index| index.schema.projects_all())
    }

    fn projects(&self, name: &str) -> bool {
        self.index.is_none_or(|index| index.schema.projects(&self.table.schema.key, name))
    }

    /// The key attributes that locate an item in this source: the source's key, then the
    /// table's (for an index).
    fn position_attributes(&self) -> Vec<&'t str> {
        let mut names: Vec<&str> = self.key().names().collect();
        if self.index.is_some() {
            for name in self.table.schema.key.names() {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        names
    }

    /// The storage key of the item or entry whose key attributes `key` holds.
    fn storage_key(&self, key: &Item) -> Vec<u8> {
        let table_key = &self.table.schema.key;
        let base = item_key(&key[&table_key.partition.name], table_key.sort.as_ref().map(|sort| &key[&sort.name]));
        match self.index {
            None => base,
            Some(index) => indexing::entry_key(&index.schema, key, &base),
        }
    }

    /// `LastEvaluatedKey` for an item or entry of this source.
    fn last_key(&self, item: &Item) -> Item {
        self.position_attributes()
            .into_iter()
            .filter_map(|name| item.get(name).map(|value| (name.to_string(), value.clone())))
            .collect()
    }

    /// Checks an `ExclusiveStartKey` and returns it as an item of key attributes.
    fn start_key(&self, raw: &JsonMap) -> Result<Item, DynamoError> {
        let invalid = |detail: &str| {
            DynamoError::validation(if detail.is_empty() {
                "The provided starting key is invalid".to_string()
            } else {
                format!("The provided starting key is invalid: {detail}")
            })
        };
        let key = item_from_json(raw)?;
        let names = self.position_attributes();
        // DynamoDB checks the size first, except on global indexes.
        if !self.is_global() && key.len() != names.len() {
            return Err(validation("Exclusive Start Key must have same size as table's key schema"));
        }
        if key.len() != names.len() || !names.iter().all(|name| key.contains_key(*name)) {
            return Err(invalid(""));
        }
        let attributes = self
            .table
            .schema
            .key
            .partition_and_sort()
            .chain(self.index.into_iter().flat_map(|index| index.schema.key.partition_and_sort()));
        for attribute in attributes {
            let value = &key[&attribute.name];
            if !attribute.value_type.matches(value) {
                return Err(invalid("The provided key element does not match the schema"));
            }
            if value.size_bytes() == 0 {
                return Err(invalid(
                    "One or more parameter values are not valid. The AttributeValue for a key attribute cannot contain an empty string value.",
                ));
            }
        }
        Ok(key)
    }
}

impl IndexHandle {
    /// Whether reads may use the index (a backfilling index is not complete yet).
    pub(crate) fn readable(&self) -> bool {
        self.schema.status == onggi_model::table::IndexStatus::Active
    }
}

/// The request parameters Query and Scan share, parsed.
struct ReadRequest<'r> {
    name: &'r str,
    index_name: Option<&'r str>,
    select: Option<Select>,
    limit: Option<usize>,
    consistent: bool,
    report: CapacityReport,
    exclusive_start_key: Option<&'r JsonMap>,
    uses_projection_expression: bool,
}

fn parse_limit(limit: Option<i64>) -> Result<Option<usize>, DynamoError> {
    match limit {
        None => Ok(None),
        Some(limit) if limit < 1 => Err(DynamoError::validation("Limit must be greater than or equal to 1")),
        Some(limit) => Ok(Some(usize::try_from(limit).unwrap_or(usize::MAX))),
    }
}

/// What a read does with each item it reads: the filter, and what to return.
struct Shape {
    filter: Option<Condition>,
    projection: Option<Projection>,
    select: Select,
    /// Local index entries lack attributes the request wants: read the base item.
    fetch_base: bool,
}

fn shape(
    request: &ReadRequest<'_>,
    source: &Source<'_>,
    filter: Option<Condition>,
    projection: Option<Projection>,
    query: bool,
) -> Result<Shape, DynamoError> {
    let mut filter_missing: Vec<String> = Vec::new();
    if let Some(filter) = &filter {
        filter.for_each_path(&mut |path: &Path| {
            let name = path.attribute_name();
            if !source.projects(name) && !filter_missing.iter().any(|seen| seen == name) {
                filter_missing.push(name.to_string());
            }
        });
    }
    // DynamoDB Local refuses a Query filter on attributes an index does not hold, even on a local
    // index that could fetch them; onggi does the same. A Scan's filter sees the entry as it is
    // (a local index fetches the base item).
    if let (Some(index), false, true) = (source.index, filter_missing.is_empty(), query) {
        return Err(DynamoError::validation(format!(
            "One or more parameter values were invalid: Secondary index {} does not project one or more filter attributes: [{}]",
            index.schema.name,
            filter_missing.join(", ")
        )));
    }
    let has_projection = projection.is_some();
    let projection_name = if request.uses_projection_expression { "ProjectionExpression" } else { "AttributesToGet" };
    let select = match request.select {
        Some(select) => select,
        None if has_projection => Select::Specific,
        None if source.index.is_some() => Select::AllProjected,
        None => Select::AllAttributes,
    };
    match select {
        Select::Count if has_projection => {
            return Err(DynamoError::validation(format!(
                "Cannot specify the {projection_name} when choosing to get only the Count"
            )));
        }
        Select::AllAttributes if has_projection => {
            return Err(DynamoError::validation(format!(
                "Cannot specify the {projection_name} when choosing to get ALL_ATTRIBUTES"
            )));
        }
        Select::AllAttributes if source.is_global() && !source.has_all_attributes() => {
            let index = source.index.map_or("", |index| index.schema.name.as_str());
            return Err(DynamoError::validation(format!(
                "One or more parameter values were invalid: Select type ALL_ATTRIBUTES is not supported for global secondary index {index} because its projection type is not ALL"
            )));
        }
        Select::AllProjected if source.index.is_none() => {
            return Err(DynamoError::validation(
                "ALL_PROJECTED_ATTRIBUTES can be used only when Querying using an IndexName",
            ));
        }
        Select::AllProjected if has_projection => {
            return Err(DynamoError::validation(format!(
                "Cannot specify the {projection_name} when choosing to get ALL_PROJECTED_ATTRIBUTES"
            )));
        }
        Select::Specific if !has_projection => {
            return Err(DynamoError::validation(
                "Must specify the AttributesToGet or ProjectionExpression when choosing to get SPECIFIC_ATTRIBUTES",
            ));
        }
        _ => {}
    }
    let mut missing: Vec<String> = Vec::new();
    let mut note_missing = |path: &Path| {
        let name = path.attribute_name();
        if !source.projects(name) && !missing.iter().any(|seen| seen == name) {
            missing.push(name.to_string());
        }
    };
    if let Some(projection) = &projection {
        projection.paths.iter().for_each(&mut note_missing);
    }
    let projection_missing = !missing.is_empty();
    if source.is_global() && projection_missing {
        let index = source.index.map_or("", |index| index.schema.name.as_str());
        return Err(DynamoError::validation(format!(
            "One or more parameter values were invalid: Global secondary index {index} does not project [{}]",
            missing.join(", ")
        )));
    }
    let fetch_base = source.index.is_some()
        && !source.is_global()
        && !source.has_all_attributes()
        && (select == Select::AllAttributes || !missing.is_empty() || !filter_missing.is_empty());
    Ok(Shape { filter, projection, select, fetch_base })
}

/// A range of one storage tree, read in one direction.
#[derive(Clone, Debug)]
pub(crate) struct Range {
    pub(crate) lower: Bound<Vec<u8>>,
    pub(crate) upper: Bound<Vec<u8>>,
    pub(crate) direction: Direction,
}

impl Range {
    fn contains(&self, key: &[u8]) -> bool {
        let above = match &self.lower {
            Bound::Unbounded => true,
            Bound::Included(lower) => key >= lower.as_slice(),
            Bound::Excluded(lower) => key > lower.as_slice(),
        };
        let below = match &self.upper {
            Bound::Unbounded => true,
            Bound::Included(upper) => key <= upper.as_slice(),
            Bound::Excluded(upper) => key < upper.as_slice(),
        };
        above && below
    }

    /// Resumes after `key` (exclusive) in the read direction.
    fn resume_after(&mut self, key: Vec<u8>) {
        match self.direction {
            Direction::Forward => self.lower = Bound::Excluded(key),
            Direction::Reverse => self.upper = Bound::Excluded(key),
        }
    }
}

/// One page read (or, on a cluster, the part of a page one replica read).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Page {
    pub(crate) items: Vec<Item>,
    pub(crate) count: u64,
    pub(crate) scanned_count: u64,
    pub(crate) scanned_bytes: usize,
    /// Read units of the base items fetched for a local index's entries.
    pub(crate) fetch_units: f64,
    pub(crate) last_key: Option<Item>,
}

impl Page {
    /// Appends the page that follows this one (the next piece of the same read).
    fn absorb(&mut self, next: Page) {
        self.items.extend(next.items);
        self.count += next.count;
        self.scanned_count += next.scanned_count;
        self.scanned_bytes += next.scanned_bytes;
        self.fetch_units += next.fetch_units;
        self.last_key = next.last_key;
    }
}

/// A range read, planned and validated: everything but the reading.
struct Plan<'r> {
    request: ReadRequest<'r>,
    table: Arc<TableHandle>,
    shape: Shape,
    range: Range,
    /// A Query of a table without a sort key: one item per partition key, nothing can follow.
    single_item: bool,
}

/// One piece of a range read that a replica answers for a peer: the request it belongs to (for
/// its table, index, filter and projection) and the part of its range to read.
#[derive(Clone, Debug)]
pub(crate) struct Piece {
    pub(crate) table_id: String,
    pub(crate) read: RangeInput,
    pub(crate) range: Range,
    pub(crate) limit: Option<usize>,
    pub(crate) budget: usize,
}

/// A replica's share of a strongly consistent range read, for a coordinator that merges a
/// majority's (see `Node::merge_strict`): the base records (version and item) behind the
/// entries of the piece's range, in the read's order, up to its limit and budget; and the base
/// keys with a proposal accepted here and not known committed, in the part of the range read.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct StrictEntries {
    pub(crate) entries: Vec<(Ballot, Item)>,
    pub(crate) pending: Vec<Vec<u8>>,
    /// Whether the replica stopped at the limit or the byte budget (more may follow).
    pub(crate) more: bool,
}

/// The interval of tokens (as storage-key bounds of base keys) that holds every position of
/// `range` up to `stopped_at` (the position a replica stopped at, if it stopped short).
fn token_window(range: &Range, stopped_at: Option<&[u8]>) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let (lower, upper) = match (stopped_at, range.direction) {
        (None, _) => (range.lower.clone(), range.upper.clone()),
        (Some(at), Direction::Forward) => (range.lower.clone(), Bound::Included(at.to_vec())),
        (Some(at), Direction::Reverse) => (Bound::Included(at.to_vec()), range.upper.clone()),
    };
    let token = |key: &[u8]| key[..TOKEN_BYTES.min(key.len())].to_vec();
    let lower = match lower {
        Bound::Unbounded => Bound::Unbounded,
        Bound::Included(key) | Bound::Excluded(key) => Bound::Included(token(&key)),
    };
    let upper = match upper {
        Bound::Unbounded => Bound::Unbounded,
        Bound::Included(key) | Bound::Excluded(key) => {
            // The first token after this one: every key of this token lies below it.
            let mut next = token(&key);
            match next.iter().rposition(|byte| *byte != u8::MAX) {
                Some(at) => {
                    next[at] += 1;
                    next.truncate(at + 1);
                    Bound::Excluded(next)
                }
                None => Bound::Unbounded,
            }
        }
    };
    (lower, upper)
}

/// The request a range read came from, as the client sent it (without its starting key: the
/// piece's range says where to read).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) enum RangeInput {
    Query(QueryInput),
    Scan(ScanInput),
}

fn validation(message: impl Into<String>) -> DynamoError {
    DynamoError::validation(message)
}

fn type_mismatch() -> DynamoError {
    validation("One or more parameter values were invalid: Condition parameter type does not match schema type")
}

/// Refuses an empty string or binary as a key value.
fn check_not_empty(name: &str, value: &AttributeValue) -> Result<(), DynamoError> {
    let what = match value {
        AttributeValue::S(text) if text.is_empty() => "string",
        AttributeValue::B(bytes) if bytes.is_empty() => "binary",
        _ => return Ok(()),
    };
    Err(validation(format!(
        "One or more parameter values are not valid. The AttributeValue for a key attribute cannot contain an empty {what} value. Key: {name}"
    )))
}

/// Renders a key value as DynamoDB's messages show it: `{N:5}`.
fn render_value(value: &AttributeValue) -> String {
    let text = match value {
        AttributeValue::S(text) => text.clone(),
        AttributeValue::N(number) => number.to_string(),
        other => match other.to_json() {
            serde_json::Value::Object(map) => {
                map.values().next().and_then(|v| v.as_str()).unwrap_or_default().to_string()
            }
            _ => String::new(),
        },
    };
    format!("{{{}:{text}}}", value.value_type().as_str())
}

/// The bounds a key condition gives on `source`'s tree.
fn query_range(source: &Source<'_>, condition: &KeyCondition, forward: bool) -> Result<(Range, Item), DynamoError> {
    let key = source.key();
    let partition_part = condition
        .parts
        .iter()
        .find(|part| part.attribute == key.partition.name)
        .ok_or_else(|| validation("Query condition missed key schema element"))?;
    let sort_part = condition.parts.iter().find(|part| part.attribute != key.partition.name);
    if let Some(part) = sort_part
        && key.sort.as_ref().is_none_or(|sort| sort.name != part.attribute)
    {
        return Err(validation(match &key.sort {
            Some(_) => "Query condition missed key schema element",
            None => "Query key condition not supported",
        }));
    }
    let SortKeyCondition::Compare(Comparator::Equal, partition) = &partition_part.condition else {
        return Err(validation("Query key condition not supported"));
    };
    if !key.partition.value_type.matches(partition) {
        return Err(type_mismatch());
    }
    check_not_empty(&key.partition.name, partition)?;
    let mut fixed = Item::new();
    fixed.insert(key.partition.name.clone(), partition.clone());
    let prefix = partition_prefix(partition);
    let prefix_free = source.index.is_some();
    // The keys of items whose sort key equals `value`: one key in a table; in an index, every
    // entry key that starts with the index key.
    let equal_set = |value: &AttributeValue| -> (Vec<u8>, Bound<Vec<u8>>) {
        if prefix_free {
            let start = index_prefix(partition, Some(value));
            let (_, end) = prefix_range(&start);
            (start, end)
        } else {
            let key = item_key(partition, Some(value));
            (key.clone(), Bound::Included(key))
        }
    };
    let (partition_start, partition_end) = prefix_range(&prefix);
    let (lower, upper) = match sort_part {
        None => (partition_start, partition_end),
        Some(part) => {
            let sort = key.sort.as_ref().expect("checked above");
            let check = |value: &AttributeValue| {
                if !sort.value_type.matches(value) {
                    return Err(type_mismatch());
                }
                check_not_empty(&sort.name, value)
            };
            match &part.condition {
                SortKeyCondition::Compare(comparator, value) => {
                    check(value)?;
                    let (start, end) = equal_set(value);
                    match comparator {
                        Comparator::Equal => (Bound::Included(start), end),
                        Comparator::Less => (partition_start, Bound::Excluded(start)),
                        Comparator::LessOrEqual => (partition_start, end),
                        Comparator::Greater => {
                            let after = match end {
                                Bound::Included(key) => Bound::Excluded(key),
                                Bound::Excluded(key) => Bound::Included(key),
                                Bound::Unbounded => Bound::Excluded(start),
                            };
                            (after, partition_end)
                        }
                        Comparator::GreaterOrEqual => (Bound::Included(start), partition_end),
                        Comparator::NotEqual => return Err(validation("Query key condition not supported")),
                    }
                }
                SortKeyCondition::Between(low, high) => {
                    if low.value_type() != high.value_type() {
                        return Err(validation(format!(
                            "Invalid KeyConditionExpression: The BETWEEN operator requires same data type for lower and upper bounds; lower bound operand: AttributeValue: {}, upper bound operand: AttributeValue: {}",
                            render_value(low),
                            render_value(high)
                        )));
                    }
                    check(low)?;
                    check(high)?;
                    if compare_values(low, high) == Some(std::cmp::Ordering::Greater) {
                        return Err(validation(format!(
                            "Invalid KeyConditionExpression: The BETWEEN operator requires upper bound to be greater than or equal to lower bound; lower bound operand: AttributeValue: {}, upper bound operand: AttributeValue: {}",
                            render_value(low),
                            render_value(high)
                        )));
                    }
                    (Bound::Included(equal_set(low).0), equal_set(high).1)
                }
                SortKeyCondition::BeginsWith(value) => {
                    check(value)?;
                    if matches!(sort.value_type, onggi_model::table::KeyType::N) {
                        return Err(validation("Query key condition not supported"));
                    }
                    let mut start = prefix.clone();
                    let bytes = match value {
                        AttributeValue::S(text) => text.as_bytes(),
                        AttributeValue::B(bytes) => bytes.as_slice(),
                        _ => unreachable!("checked against the key type"),
                    };
                    if prefix_free {
                        push_escaped(&mut start, bytes);
                    } else {
                        start.extend_from_slice(bytes);
                    }
                    prefix_range(&start)
                }
            }
        }
    };
    let direction = if forward { Direction::Forward } else { Direction::Reverse };
    Ok((Range { lower, upper, direction }, fixed))
}

/// The members Query and Scan share (their inputs name them alike), parsed: the read options, and
/// the expression members every read has. Limit, Select and ReturnConsumedCapacity are checked
/// here, before anything else of the request.
macro_rules! shared_members {
    ($input:expr, $operation:expr) => {{
        let input = $input;
        let request = ReadRequest {
            name: required_table_name(input.table_name.as_deref())?,
            index_name: input.index_name.as_deref(),
            select: parse_select(input.select.as_deref())?,
            limit: parse_limit(input.limit)?,
            consistent: input.consistent_read.unwrap_or(false),
            report: CapacityReport::parse(input.return_consumed_capacity.as_deref())?,
            exclusive_start_key: input.exclusive_start_key.as_ref(),
            uses_projection_expression: input.projection_expression.is_some(),
        };
        let mut expressions = RequestExpressions::new($operation);
        expressions.filter = input.filter_expression.as_deref();
        expressions.projection = input.projection_expression.as_deref();
        expressions.names = input.expression_attribute_names.as_ref();
        expressions.values = input.expression_attribute_values.as_ref();
        expressions.attributes_to_get = input.attributes_to_get.as_ref();
        expressions.conditional_operator = input.conditional_operator.as_ref();
        (request, expressions)
    }};
}

impl Node {
    /// Reads one page of `range` in `source`.
    fn read_page(
        &self,
        source: &Source<'_>,
        range: &Range,
        shape: &Shape,
        limit: Option<usize>,
        consistent: bool,
        budget: usize,
    ) -> Result<Page, DynamoError> {
        let mut page = Page::default();
        let entries = self
            .inner
            .engine
            .range(source.tree(), range.lower.clone(), range.upper.clone(), range.direction)
            .map_err(storage_error)?;
        for entry in entries {
            let (_, value) = entry.map_err(storage_error)?;
            let record = Record::decode(&value)
                .map_err(|error| DynamoError::internal(format!("stored record unreadable: {error}")))?;
            let Some(stored) = record.item else { continue };
            page.scanned_count += 1;
            page.scanned_bytes += item_size_bytes(&stored);
            let full_page =
                limit.is_some_and(|limit| page.scanned_count as usize >= limit) || page.scanned_bytes >= budget;
            if full_page {
                page.last_key = Some(source.last_key(&stored));
            }
            self.take_entry(source, shape, stored, None, consistent, &mut page)?;
            if full_page {
                break;
            }
        }
        Ok(page)
    }

    /// Adds one item (or index entry) read to `page`: fetches the base item when a local index
    /// lacks attributes (unless the caller knows it: `base`), applies the filter and the
    /// projection.
    fn take_entry(
        &self,
        source: &Source<'_>,
        shape: &Shape,
        stored: Item,
        base: Option<Item>,
        consistent: bool,
        page: &mut Page,
    ) -> Result<(), DynamoError> {
        let table = source.table;
        let item = if shape.fetch_base {
            let item = match base {
                Some(item) => item,
                None => {
                    let key = &table.schema.key;
                    let base_key =
                        item_key(&stored[&key.partition.name], key.sort.as_ref().map(|sort| &stored[&sort.name]));
                    // The entry and its item were written in one batch; a read between a later
                    // write's batch and this one sees both at the newer version or both at the
                    // older.
                    self.read_current(table, &base_key)?.unwrap_or(stored)
                }
            };
            let whole = item_size_bytes(&item).div_ceil(4096).max(1) as f64;
            page.fetch_units += if consistent { whole } else { whole / 2.0 };
            item
        } else {
            stored
        };
        let matched = match &shape.filter {
            Some(filter) => filter.evaluate(Some(&item))?,
            None => true,
        };
        if matched {
            page.count += 1;
            if shape.select != Select::Count {
                let shown = match &shape.projection {
                    Some(projection) => projection.apply(&item),
                    None if shape.select == Select::AllProjected && shape.fetch_base => {
                        let index = source.index.expect("fetch_base reads an index");
                        index.schema.entry(&table.schema.key, &item).unwrap_or(item)
                    }
                    None => item,
                };
                page.items.push(shown);
            }
        }
        Ok(())
    }

    fn finish(&self, request: &ReadRequest<'_>, source: &Source<'_>, shape: &Shape, page: Page) -> QueryOutput {
        let consumed_capacity = capacity::for_range_read(
            request.report,
            &source.table.schema.name,
            source.index.map(|index| (index.schema.name.as_str(), index.global)),
            page.scanned_bytes,
            page.fetch_units,
            request.consistent,
        );
        QueryOutput {
            items: (shape.select != Select::Count).then_some(page.items),
            count: page.count,
            scanned_count: page.scanned_count,
            last_evaluated_key: page.last_key,
            consumed_capacity,
        }
    }

    pub(crate) async fn query_impl(&self, input: QueryInput) -> Result<QueryOutput, DynamoError> {
        self.learn_unknown_table(input.table_name.as_deref()).await;
        let plan = self.plan_query(&input)?;
        let page = self
            .read_planned(&plan, || RangeInput::Query(QueryInput { exclusive_start_key: None, ..input.clone() }))
            .await?;
        Ok(self.finish_planned(&plan, page))
    }

    pub(crate) async fn scan_impl(&self, input: ScanInput) -> Result<QueryOutput, DynamoError> {
        self.learn_unknown_table(input.table_name.as_deref()).await;
        let plan = self.plan_scan(&input)?;
        let page = self
            .read_planned(&plan, || {
                RangeInput::Scan(ScanInput {
                    exclusive_start_key: None,
                    segment: None,
                    total_segments: None,
                    ..input.clone()
                })
            })
            .await?;
        Ok(self.finish_planned(&plan, page))
    }

    /// Validates a Query and works out what it reads.
    fn plan_query<'r>(&self, input: &'r QueryInput) -> Result<Plan<'r>, DynamoError> {
        let (request, mut expressions) = shared_members!(input, Operation::Query);
        expressions.key_condition = input.key_condition_expression.as_deref();
        expressions.key_conditions = input.key_conditions.as_ref();
        expressions.query_filter = input.query_filter.as_ref();
        let resolved = expressions.resolve()?;
        let Some(key_condition) = resolved.key_condition.clone() else {
            return Err(validation(
                "Either the KeyConditions or KeyConditionExpression parameter must be specified in the request.",
            ));
        };
        let table = self.inner.catalog.get(request.name).ok_or_else(crate::tables::table_not_found)?;
        let source = Source::resolve(&table, request.index_name)?;
        if request.consistent && source.is_global() {
            return Err(validation("Consistent reads are not supported on global secondary indexes"));
        }
        let (mut range, fixed) = query_range(&source, &key_condition, input.scan_index_forward.unwrap_or(true))?;
        if let Some(filter) = &resolved.filter {
            let mut key_attribute = None;
            filter.for_each_path(&mut |path: &Path| {
                if key_attribute.is_none() && source.key().names().any(|name| name == path.attribute_name()) {
                    key_attribute = Some(path.attribute_name().to_string());
                }
            });
            if let Some(attribute) = key_attribute {
                return Err(validation(if input.filter_expression.is_some() {
                    format!(
                        "Filter Expression can only contain non-primary key attributes: Primary key attribute: {attribute}"
                    )
                } else {
                    format!(
                        "QueryFilter can only contain non-primary key attributes: Primary key attribute: {attribute}"
                    )
                }));
            }
        }
        crate::expressions::check_key_paths(&resolved, &table.schema)?;
        let shape = shape(&request, &source, resolved.filter, resolved.projection, true)?;
        if let Some(raw) = request.exclusive_start_key {
            let start = source.start_key(raw)?;
            let position = source.storage_key(&start);
            if fixed.iter().any(|(name, value)| start.get(name) != Some(value)) || !range.contains(&position) {
                return Err(validation("The provided starting key does not match the range key predicate"));
            }
            range.resume_after(position);
        }
        let single_item = source.index.is_none() && table.schema.key.sort.is_none();
        Ok(Plan { request, table, shape, range, single_item })
    }

    /// Validates a Scan and works out what it reads.
    fn plan_scan<'r>(&self, input: &'r ScanInput) -> Result<Plan<'r>, DynamoError> {
        let (request, mut expressions) = shared_members!(input, Operation::Scan);
        expressions.scan_filter = input.scan_filter.as_ref();
        let segment = match (input.segment, input.total_segments) {
            (None, None) => None,
            (Some(_), None) => {
                return Err(validation("If segment is specified, total segment must also be specified"));
            }
            (None, Some(_)) => {
                return Err(validation(
                    "If total segments is specified, a particular segment must also be specified for this request",
                ));
            }
            (Some(segment), Some(total)) => {
                if !(1..=TOTAL_SEGMENTS_MAX).contains(&total) {
                    let constraint =
                        if total < 1 { "greater than or equal to 1" } else { "less than or equal to 1000000" };
                    return Err(validation(format!(
                        "1 validation error detected: Value '{total}' at 'totalSegments' failed to satisfy constraint: Member must have value {constraint}"
                    )));
                }
                if segment < 0 {
                    return Err(validation(format!(
                        "1 validation error detected: Value '{segment}' at 'segment' failed to satisfy constraint: Member must have value greater than or equal to 0"
                    )));
                }
                if segment >= total {
                    return Err(validation(format!(
                        "1 validation error detected: Value '{segment}' at 'segment' failed to satisfy constraint: Member must have value less than or equal to {}",
                        total - 1
                    )));
                }
                Some((segment as u32, total as u32))
            }
        };
        let resolved = expressions.resolve()?;
        let table = self.inner.catalog.get(request.name).ok_or_else(crate::tables::table_not_found)?;
        let source = Source::resolve(&table, request.index_name)?;
        if request.consistent && source.is_global() {
            return Err(validation("Consistent reads are not supported on global secondary indexes"));
        }
        crate::expressions::check_key_paths(&resolved, &table.schema)?;
        let shape = shape(&request, &source, resolved.filter, resolved.projection, false)?;
        let mut range = match segment {
            None => Range { lower: Bound::Unbounded, upper: Bound::Unbounded, direction: Direction::Forward },
            Some((segment, total)) => Range {
                lower: Bound::Included(segment_start(segment, total).to_vec()),
                upper: if segment + 1 == total {
                    Bound::Unbounded
                } else {
                    Bound::Excluded(segment_start(segment + 1, total).to_vec())
                },
                direction: Direction::Forward,
            },
        };
        if let Some(raw) = request.exclusive_start_key {
            let start = source.start_key(raw)?;
            let position = source.storage_key(&start);
            debug_assert!(position.len() > TOKEN_BYTES);
            if !range.contains(&position) {
                return Err(validation("The provided Exclusive start key does not map to the provided segment"));
            }
            range.resume_after(position);
        }
        Ok(Plan { request, table, shape, range, single_item: false })
    }

    fn finish_planned(&self, plan: &Plan<'_>, mut page: Page) -> QueryOutput {
        if plan.single_item {
            // A table without a sort key holds one item per partition key: nothing can follow.
            page.last_key = None;
        }
        let source =
            Source { table: &plan.table, index: plan.request.index_name.and_then(|name| plan.table.index(name)) };
        self.finish(&plan.request, &source, &plan.shape, page)
    }

    /// Reads a planned range: on one node, from its storage; on a cluster, a strongly
    /// consistent read from a majority of replicas ([`Node::merge_strict`]); an eventually
    /// consistent one from this node's storage when it holds every partition (a cluster no
    /// larger than the replication factor), else piece by piece from replicas of the partitions
    /// the range crosses, in order (`input` is the request to send them).
    async fn read_planned(&self, plan: &Plan<'_>, input: impl FnOnce() -> RangeInput) -> Result<Page, DynamoError> {
        let source = Source::resolve(&plan.table, plan.request.index_name)?;
        let request = &plan.request;
        if source.is_global()
            && let Some(cluster) = self.cluster()
        {
            // A global index is a view kept asynchronously (`cluster/views.rs`): this node's
            // own writes reach it first.
            cluster.settle_views().await;
        }
        let cluster = match self.cluster() {
            Some(cluster) if request.consistent || !cluster.holds_everything() => cluster.clone(),
            _ => {
                return self.read_page(
                    &source,
                    &plan.range,
                    &plan.shape,
                    request.limit,
                    request.consistent,
                    PAGE_BYTES_MAX,
                );
            }
        };
        let input = input();
        let mut page = Page::default();
        let mut range = plan.range.clone();
        loop {
            let piece = Piece {
                table_id: plan.table.schema.id.clone(),
                read: input.clone(),
                range: range.clone(),
                limit: request.limit.map(|limit| limit - page.scanned_count as usize),
                budget: PAGE_BYTES_MAX - page.scanned_bytes,
            };
            let (part, next) = if request.consistent {
                let (parts, piece, next) =
                    self.read_piece_strictly(&cluster, piece, |piece| self.read_strict_entries(&source, piece)).await?;
                (self.merge_strict(&cluster, plan, &source, &piece, parts).await?, next)
            } else {
                self.read_piece_on_replica(&cluster, piece, |piece| {
                    self.read_page(&source, &piece.range, &plan.shape, piece.limit, request.consistent, piece.budget)
                })
                .await?
            };
            page.absorb(part);
            match next {
                Some(lower) if page.last_key.is_none() => range.lower = Bound::Included(lower),
                _ => return Ok(page),
            }
        }
    }

    /// Makes the page of one piece of a strongly consistent range read on a cluster
    /// (ConsistentRead of the table or a local index) from a majority's answers: every item the
    /// page holds is at its latest acknowledged version or a newer one, and no acknowledged item
    /// of the range read is missing.
    ///
    /// One replica's storage is not enough: a write is acknowledged once a majority of its
    /// replicas accepted it, and may not be committed on the others yet. So each piece (a run of
    /// partitions, as in `cluster/ranges.rs`) is read from a majority of its replicas
    /// ([`StrictEntries`]: the base records behind the entries read, and the items with a
    /// proposal accepted there and not committed), and merged here, up to the first place a
    /// replica stopped short. An item every replica read returned at the same version, with no
    /// proposal pending anywhere, is at its latest version: an acknowledged newer one would be
    /// accepted or committed on one of them. Every other item seen (versions that differ, an
    /// item missing from some replica's answer, a pending proposal) is read through per-item
    /// consensus, which returns its latest version, and placed where that version stands in the
    /// source (an index entry may have moved, or left the index). The page is then made here, as
    /// one node would have made it.
    async fn merge_strict(
        &self,
        cluster: &Arc<crate::cluster::Cluster>,
        plan: &Plan<'_>,
        source: &Source<'_>,
        piece: &Piece,
        parts: Vec<StrictEntries>,
    ) -> Result<Page, DynamoError> {
        /// Items read through consensus at once.
        const READS_AT_ONCE: usize = 32;
        let forward = piece.range.direction == Direction::Forward;
        let in_order = |a: &[u8], b: &[u8]| if forward { a.cmp(b) } else { b.cmp(a) };
        let table_key = &source.table.schema.key;
        // Where an item stands in the source — its position, base key and entry — or `None`
        // when it is not in it (an item without a sparse index's key attributes).
        let place = |item: &Item| -> Option<(Vec<u8>, Vec<u8>, Item)> {
            let base = item_key(
                item.get(&table_key.partition.name)?,
                match &table_key.sort {
                    Some(sort) => Some(item.get(&sort.name)?),
                    None => None,
                },
            );
            match source.index {
                None => Some((base.clone(), base, item.clone())),
                Some(index) => indexing::keyed_entry(table_key, &index.schema, item, &base)
                    .map(|(position, entry)| (position, base, entry)),
            }
        };
        // Past the first place a replica stopped short, another one may hold items not read.
        let cutoff: Option<(Vec<u8>, Item)> = parts
            .iter()
            .filter(|part| part.more)
            .filter_map(|part| part.entries.last())
            .filter_map(|(_, item)| place(item).map(|(position, _, _)| (position, item.clone())))
            .min_by(|a, b| in_order(&a.0, &b.0));
        let within = |position: &[u8]| {
            piece.range.contains(position)
                && cutoff.as_ref().is_none_or(|(cutoff, _)| in_order(position, cutoff) != std::cmp::Ordering::Greater)
        };
        let pending: std::collections::HashSet<&Vec<u8>> = parts.iter().flat_map(|part| &part.pending).collect();
        // Each item read within the window: the versions the replicas returned, and one of them.
        let mut seen: std::collections::HashMap<Vec<u8>, (Vec<Ballot>, &Item)> = std::collections::HashMap::new();
        for part in &parts {
            for (version, item) in &part.entries {
                if let Some((position, base, _)) = place(item)
                    && within(&position)
                {
                    seen.entry(base).or_insert_with(|| (Vec::new(), item)).0.push(*version);
                }
            }
        }
        let mut placed = Vec::new();
        let mut doubtful: Vec<Vec<u8>> = pending.iter().map(|key| (*key).clone()).collect();
        for (base, (versions, item)) in seen {
            let agreed = versions.len() == parts.len() && versions.iter().all(|version| *version == versions[0]);
            if pending.contains(&base) {
                continue;
            }
            if agreed {
                placed.extend(place(item).map(|(position, _, entry)| (position, entry, item.clone())));
            } else {
                doubtful.push(base);
            }
        }
        for keys in doubtful.chunks(READS_AT_ONCE) {
            let mut reads = tokio::task::JoinSet::new();
            for key in keys {
                let (node, cluster, table, key) = (self.clone(), cluster.clone(), plan.table.clone(), key.clone());
                reads.spawn(async move {
                    let keep = |_: Option<&Item>| Ok((crate::items::Effect::Keep, ()));
                    node.execute_replicated(&cluster, &table, key, true, crate::items::WriteOrigin::Client, keep).await
                });
            }
            while let Some(read) = reads.join_next().await {
                let (_, item) = read.map_err(|error| DynamoError::internal(error.to_string()))??;
                if let Some(item) = item
                    && let Some((position, _, entry)) = place(&item)
                    && within(&position)
                {
                    placed.push((position, entry, item));
                }
            }
        }
        placed.sort_by(|a, b| in_order(&a.0, &b.0));
        let mut page = Page::default();
        for (_, entry, item) in placed {
            page.scanned_count += 1;
            page.scanned_bytes += item_size_bytes(&entry);
            let full_page = piece.limit.is_some_and(|limit| page.scanned_count as usize >= limit)
                || page.scanned_bytes >= piece.budget;
            if full_page {
                page.last_key = Some(source.last_key(&entry));
            }
            self.take_entry(source, &plan.shape, entry, Some(item), true, &mut page)?;
            if full_page {
                return Ok(page);
            }
        }
        // Everything up to the cutoff was read: the next page starts after it.
        if let Some((_, item)) = cutoff {
            page.last_key = Some(source.last_key(&item));
        }
        Ok(page)
    }

    /// A replica's share of a strongly consistent read of `piece` (see [`Node::merge_strict`]).
    fn read_strict_entries(&self, source: &Source<'_>, piece: &Piece) -> Result<StrictEntries, DynamoError> {
        let cluster = self.cluster().ok_or_else(|| DynamoError::internal("not on a cluster"))?.clone();
        let table = source.table;
        let unreadable = |error: String| DynamoError::internal(format!("stored record unreadable: {error}"));
        let mut strict = StrictEntries::default();
        let mut bytes = 0;
        let mut last_position = None;
        let entries = self
            .inner
            .engine
            .range(source.tree(), piece.range.lower.clone(), piece.range.upper.clone(), piece.range.direction)
            .map_err(storage_error)?;
        for entry in entries {
            let (position, value) = entry.map_err(storage_error)?;
            let record = Record::decode(&value).map_err(|error| unreadable(error.to_string()))?;
            let Some(stored) = record.item else { continue };
            if piece.limit.is_some_and(|limit| strict.entries.len() >= limit) || bytes >= piece.budget {
                strict.more = true;
                break;
            }
            bytes += item_size_bytes(&stored);
            last_position = Some(position.to_vec());
            if source.index.is_none() {
                strict.entries.push((record.version, stored));
                continue;
            }
            let key = &table.schema.key;
            let base_key = item_key(&stored[&key.partition.name], key.sort.as_ref().map(|sort| &stored[&sort.name]));
            // The entry and its item were written in one batch.
            if let Some(value) = self.inner.engine.get(&table.tree, &base_key).map_err(storage_error)? {
                let base = Record::decode(&value).map_err(|error| unreadable(error.to_string()))?;
                if let Some(item) = base.item {
                    strict.entries.push((base.version, item));
                }
            }
        }
        // The proposals pending in the part of the range read. Consensus states are kept by
        // base key, which starts with the partition key's token, as source positions do.
        let (lower, upper) = token_window(&piece.range, last_position.as_deref().filter(|_| strict.more));
        let consensus = self.consensus_tree(&cluster, table)?;
        for entry in self.inner.engine.range(&consensus, lower, upper, Direction::Forward).map_err(storage_error)? {
            let (key, value) = entry.map_err(storage_error)?;
            let state = onggi_core::consensus_state::ConsensusState::decode(&value)
                .map_err(|error| DynamoError::internal(format!("stored consensus data unreadable: {error}")))?;
            if state.accepted.is_some() {
                strict.pending.push(key.to_vec());
            }
        }
        Ok(strict)
    }

    /// Refuses a piece that covers a partition this node does not replicate (now): it would
    /// answer from data it no longer keeps (or never had) as if the partition were empty. The
    /// coordinator then asks another replica.
    fn check_piece_held(&self, piece: &Piece) -> Result<(), DynamoError> {
        let Some(cluster) = self.cluster() else { return Ok(()) };
        let layout = cluster.layout();
        let me = cluster.me();
        let first = match &piece.range.lower {
            Bound::Unbounded => 0,
            Bound::Included(key) | Bound::Excluded(key) => layout.partition_of_key(key).0,
        };
        let last = match &piece.range.upper {
            Bound::Unbounded => layout.partition_count() - 1,
            Bound::Included(key) => layout.partition_of_key(key).0,
            Bound::Excluded(key) => {
                let partition = layout.partition_of_key(key);
                // A piece ends before the first key of the partition after its run.
                let starts_it = key.as_slice() == layout.partition_range(partition).0.to_be_bytes();
                if starts_it { partition.0.saturating_sub(1).max(first) } else { partition.0 }
            }
        };
        let partitions: Vec<u32> = (first..=last).collect();
        // A replica of either layout while one changes: a new replica still catching up may hold
        // less than the old ones, which is why a strict read asks a majority of each set (what
        // it lacks is seen elsewhere and read through consensus), and eventually consistent
        // pieces only go to the current layout's replicas.
        let holds = |p: u32| layout.sets(onggi_core::layout::PartitionId(p)).iter().any(|set| set.contains(&me));
        match partitions.iter().find(|&&p| !holds(p)) {
            Some(partition) => Err(DynamoError::internal(format!("partition {partition} is not replicated here"))),
            None => Ok(()),
        }
    }

    /// A peer's piece, checked (held here, same table) and planned as its request asks.
    fn plan_piece<'p>(&self, piece: &'p Piece) -> Result<Plan<'p>, DynamoError> {
        self.check_piece_held(piece)?;
        let plan = match &piece.read {
            RangeInput::Query(input) => self.plan_query(input)?,
            RangeInput::Scan(input) => self.plan_scan(input)?,
        };
        if plan.table.schema.id != piece.table_id {
            return Err(crate::tables::table_not_found());
        }
        Ok(plan)
    }

    /// Answers a peer's share of a strongly consistent range read.
    pub(crate) fn read_strict_piece(&self, piece: &Piece) -> Result<StrictEntries, DynamoError> {
        let plan = self.plan_piece(piece)?;
        let source = Source::resolve(&plan.table, plan.request.index_name)?;
        self.read_strict_entries(&source, piece)
    }

    /// Reads a piece of a range read for a peer (see [`Piece`]).
    pub(crate) fn read_piece(&self, piece: &Piece) -> Result<Page, DynamoError> {
        let plan = self.plan_piece(piece)?;
        let source = Source::resolve(&plan.table, plan.request.index_name)?;
        self.read_page(&source, &piece.range, &plan.shape, piece.limit, plan.request.consistent, piece.budget)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(lower: Bound<Vec<u8>>, upper: Bound<Vec<u8>>, direction: Direction) -> Range {
        Range { lower, upper, direction }
    }

    #[test]
    fn the_token_window_covers_the_part_of_a_range_read() {
        let key = |token: [u8; TOKEN_BYTES], rest: &[u8]| [&token[..], rest].concat();
        let mut first = [0u8; TOKEN_BYTES];
        first[TOKEN_BYTES - 1] = 7;
        let mut last = [0u8; TOKEN_BYTES];
        last[0] = 9;
        last[TOKEN_BYTES - 1] = u8::MAX;
        let whole = range(Bound::Included(key(first, b"a")), Bound::Excluded(key(last, b"z")), Direction::Forward);
        // Not stopped short: from the first key's token up to just past the last key's token.
        let after_last = {
            let mut next = last[..TOKEN_BYTES - 1].to_vec();
            *next.last_mut().expect("tokens have bytes") += 1;
            next
        };
        assert_eq!(token_window(&whole, None), (Bound::Included(first.to_vec()), Bound::Excluded(after_last)));
        // Stopped short, forward: up to the stopping key's token; backward: from it.
        let mut stop = [0u8; TOKEN_BYTES];
        stop[1] = 3;
        let mut after_stop = stop.to_vec();
        after_stop[TOKEN_BYTES - 1] = 1;
        let (lower, upper) = token_window(&whole, Some(&key(stop, b"m")));
        assert_eq!((lower, upper), (Bound::Included(first.to_vec()), Bound::Excluded(after_stop)));
        let backward = range(whole.lower.clone(), whole.upper.clone(), Direction::Reverse);
        assert_eq!(token_window(&backward, Some(&key(stop, b"m"))).0, Bound::Included(stop.to_vec()));
        // The highest token has no next one; unbounded stays unbounded.
        let top = range(Bound::Unbounded, Bound::Included(vec![u8::MAX; TOKEN_BYTES + 2]), Direction::Forward);
        assert_eq!(token_window(&top, None), (Bound::Unbounded, Bound::Unbounded));
    }
}

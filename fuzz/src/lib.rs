//! The checks behind onggi's fuzz targets.
//!
//! Each public function takes one fuzzer input and panics when an invariant breaks; the binaries
//! in `fuzz_targets/` are thin libFuzzer wrappers around them, and `tests/replay.rs` runs the
//! same functions over the committed seeds and regression inputs under plain `cargo test`.
//!
//! Nothing here may panic on its own account: a panic is always a finding about onggi.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde_json::{Map, Value as Json, json};

use onggi_core::hlc::Timestamp;
use onggi_core::layout::NodeId;
use onggi_core::paxos::Ballot;
use onggi_core::record::Record;
use onggi_model::codec::{decode_item, encode_item};
use onggi_model::expr::{Operand, Operation, RequestExpressions, ResolvedExpressions, UpdateAction};
use onggi_model::ops::{
    DeleteItemInput, GetItemInput, ListTablesInput, PutItemInput, TableNameInput, UpdateItemInput, UpdateTableInput,
};
use onggi_model::table::{CreateTableInput, TableSchema, validate_create_table};
use onggi_model::value::{CONTAINER_DEPTH_MAX, item_from_json, item_size_bytes, item_to_json};
use onggi_model::{AttributeValue, Item, Number};

// ---------------------------------------------------------------------------------------------
// Fixed data: an item, and pools of expression attribute names and values.
// ---------------------------------------------------------------------------------------------

fn object(json: Json) -> Map<String, Json> {
    match json {
        Json::Object(map) => map,
        _ => unreachable!("fixed data are objects"),
    }
}

/// `{"M": {"d": {"M": … {"S": "bottom"}}}}` with `levels` maps.
fn nested_map(levels: usize) -> Json {
    let mut value = json!({"S": "bottom"});
    for _ in 0..levels {
        value = json!({"M": {"d": value}});
    }
    value
}

/// `{"L": [{"L": … [] }]}` with `levels` lists.
fn nested_list(levels: usize) -> Json {
    let mut value = json!({"L": []});
    for _ in 1..levels {
        value = json!({"L": [value]});
    }
    value
}

/// The item conditions, updates and projections run against: every type, nesting, edge numbers.
pub fn fixed_item() -> &'static Item {
    static ITEM: OnceLock<Item> = OnceLock::new();
    ITEM.get_or_init(|| {
        let json = json!({
            "pk": {"S": "key"}, "sk": {"N": "1"},
            "a": {"N": "5"}, "b": {"S": "hello"}, "c": {"B": "AAEC"}, "e": {"S": ""},
            "ss": {"SS": ["a", "b", "c"]}, "ns": {"NS": ["1", "-2.5", "1E+10"]}, "bs": {"BS": ["AA==", "AQ=="]},
            "l": {"L": [{"N": "1"}, {"S": "x"}, {"L": [{"N": "2"}, {"NULL": true}]}, {"M": {"k": {"S": "v"}}}]},
            "m": {"M": {"a": {"N": "1"}, "l": {"L": [{"S": "y"}]}, "m": {"M": {"deep": {"BOOL": true}}},
                        "ss": {"SS": ["q"]}, "ns": {"NS": ["7"]}}},
            "n": {"NULL": true}, "t": {"BOOL": true}, "f": {"BOOL": false},
            "big": {"N": "9.9999999999999999999999999999999999999E+125"},
            "neg": {"N": "-9.9999999999999999999999999999999999999E+125"},
            "tiny": {"N": "1E-130"},
            "deep": nested_map(CONTAINER_DEPTH_MAX - 1),
            "deepl": nested_list(CONTAINER_DEPTH_MAX),
        });
        item_from_json(&object(json)).expect("the fixed item is valid")
    })
}

/// The key attributes of [`fixed_item`] alone (what UpdateItem starts from when there is no item).
fn key_item() -> &'static Item {
    static ITEM: OnceLock<Item> = OnceLock::new();
    ITEM.get_or_init(|| {
        fixed_item()
            .iter()
            .filter(|(name, _)| *name == "pk" || *name == "sk")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    })
}

/// `ExpressionAttributeNames` entries an expression may use. `#bad` and `#empty` are invalid.
fn name_pool() -> &'static Map<String, Json> {
    static POOL: OnceLock<Map<String, Json>> = OnceLock::new();
    POOL.get_or_init(|| {
        object(json!({
            "#a": "a", "#b": "b", "#l": "l", "#m": "m", "#pk": "pk", "#sk": "sk", "#ss": "ss", "#ns": "ns",
            "#bs": "bs", "#n": "n", "#t": "t", "#deep": "deep", "#big": "big", "#d": "d", "#k": "k",
            "#dot": "a.b", "#name": "name", "#weird": "é [0] #:", "#empty": "", "#bad": 5
        }))
    })
}

/// `ExpressionAttributeValues` entries an expression may use. `:bad`, `:empty` and `:two` are
/// invalid values.
fn value_pool() -> &'static Map<String, Json> {
    static POOL: OnceLock<Map<String, Json>> = OnceLock::new();
    POOL.get_or_init(|| {
        object(json!({
            ":s": {"S": "abc"}, ":e": {"S": ""}, ":a": {"S": "a"}, ":n": {"N": "1"}, ":neg": {"N": "-2.5"},
            ":big": {"N": "9.9999999999999999999999999999999999999E+125"}, ":tiny": {"N": "1E-130"},
            ":z": {"N": "0"}, ":b": {"B": "AAE="}, ":eb": {"B": ""},
            ":ss": {"SS": ["a", "z"]}, ":ns": {"NS": ["1", "3"]}, ":bs": {"BS": ["AA==", "Ag=="]},
            ":l": {"L": [{"N": "1"}, {"S": "x"}]}, ":el": {"L": []}, ":m": {"M": {"a": {"N": "1"}}}, ":em": {"M": {}},
            ":null": {"NULL": true}, ":t": {"BOOL": true}, ":f": {"BOOL": false},
            ":type": {"S": "SS"}, ":tn": {"S": "N"}, ":tx": {"S": "X"},
            ":deep": nested_list(CONTAINER_DEPTH_MAX), ":deepm": nested_map(CONTAINER_DEPTH_MAX - 1),
            ":bad": {"S": 5}, ":empty": {}, ":two": {"S": "a", "N": "1"}
        }))
    })
}

/// The placeholders (`#x`, `:x`) in `text`, tokenized as the lexer does.
fn placeholders(text: &str, sigil: u8) -> Vec<&str> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    let mut position = 0;
    while position < bytes.len() {
        if bytes[position] == sigil {
            let start = position;
            position += 1;
            while position < bytes.len() && (bytes[position].is_ascii_alphanumeric() || bytes[position] == b'_') {
                position += 1;
            }
            if position > start + 1 {
                found.push(&text[start..position]);
            }
        } else {
            position += 1;
        }
    }
    found
}

/// A map for the placeholders used in `texts`: pool entries by name, and for names not in the
/// pool (unless `leave_unknown`) a pool entry chosen by the name's bytes.
fn placeholder_map(
    texts: &[&str],
    sigil: u8,
    pool: &Map<String, Json>,
    all: bool,
    leave_unknown: bool,
) -> Map<String, Json> {
    let mut map = if all { pool.clone() } else { Map::new() };
    let entries: Vec<&Json> = pool.values().collect();
    for text in texts {
        for key in placeholders(text, sigil) {
            if map.contains_key(key) {
                continue;
            }
            match pool.get(key) {
                Some(value) => {
                    map.insert(key.to_string(), value.clone());
                }
                None if !leave_unknown => {
                    let choice = key.bytes().map(usize::from).sum::<usize>() % entries.len();
                    map.insert(key.to_string(), entries[choice].clone());
                }
                None => {}
            }
        }
    }
    map
}

// ---------------------------------------------------------------------------------------------
// Shared invariants.
// ---------------------------------------------------------------------------------------------

fn within_depth(item: &Item) -> bool {
    item.values().all(|value| value.depth() <= CONTAINER_DEPTH_MAX)
}

/// An item onggi would store must survive the disk format and be a valid DynamoDB item (sets
/// sorted, non-empty and without duplicates; no empty names; canonical numbers): the JSON it
/// renders parses back to the same item.
fn check_storable(item: &Item, origin: &str) {
    if !within_depth(item) {
        return; // The node refuses such items before storing them.
    }
    let mut bytes = Vec::new();
    encode_item(item, &mut bytes);
    match decode_item(&bytes) {
        Ok(decoded) => assert_eq!(&decoded, item, "{origin}: item changed through the codec"),
        Err(error) => panic!("{origin}: encoded item does not decode: {error}; item: {item:?}"),
    }
    let json = item_to_json(item);
    let Json::Object(map) = &json else { panic!("{origin}: item_to_json gave a non-object: {json}") };
    match item_from_json(map) {
        Ok(parsed) => assert_eq!(&parsed, item, "{origin}: item changed through DynamoDB JSON: {json}"),
        Err(error) => panic!("{origin}: item renders as JSON that is refused: {error:?}; item: {item:?}; JSON: {json}"),
    }
    let _ = item_size_bytes(item);
}

/// Runs resolved expressions against `items`; checks determinism and storability of results.
fn exercise(resolved: &ResolvedExpressions, items: &[&Item]) {
    for condition in [&resolved.condition, &resolved.filter].into_iter().flatten() {
        let _ = condition.evaluate(None);
        for item in items {
            let first = condition.evaluate(Some(item));
            assert_eq!(first, condition.evaluate(Some(item)), "condition evaluation is not deterministic");
        }
    }
    let mut updated = Vec::new();
    if let Some(update) = &resolved.update {
        for action in &update.actions {
            let _ = action.path().to_string();
        }
        for item in items {
            let Ok(outcome) = update.apply(item) else { continue };
            assert_eq!(update.apply(item).as_ref(), Ok(&outcome), "update is not deterministic");
            for path in &outcome.updated_paths {
                assert!(
                    outcome.written_attributes.contains(path.attribute_name()),
                    "updated path {path} is not among the written attributes {:?}",
                    outcome.written_attributes
                );
            }
            for action in &update.actions {
                if action.path().elements().len() != 1 {
                    continue;
                }
                let name = action.path().attribute_name();
                match action {
                    UpdateAction::Remove(_) => {
                        assert!(!outcome.item.contains_key(name), "REMOVE {name} left the attribute in place");
                    }
                    UpdateAction::Set(_, Operand::Value(value)) => {
                        assert_eq!(outcome.item.get(name), Some(value), "SET {name} = value did not write it");
                    }
                    _ => {}
                }
            }
            let _ = outcome.project_updated(item);
            let _ = outcome.project_updated(&outcome.item);
            check_storable(&outcome.item, "update result");
            updated.push(outcome.item);
        }
    }
    if let Some(projection) = &resolved.projection {
        for item in items.iter().copied().chain(updated.iter()) {
            let projected = projection.apply(item);
            check_storable(&projected, "projection result");
            if projection.paths.iter().all(|path| path.elements().len() == 1) {
                let expected: Item = item
                    .iter()
                    .filter(|(name, _)| projection.paths.iter().any(|path| path.attribute_name() == name.as_str()))
                    .map(|(name, value)| (name.clone(), value.clone()))
                    .collect();
                assert_eq!(projected, expected, "projection of top-level attributes is not a filter");
            }
        }
    }
    if let Some(key_condition) = &resolved.key_condition {
        assert!(matches!(key_condition.parts.len(), 1 | 2), "key condition with {} parts", key_condition.parts.len());
    }
}

// ---------------------------------------------------------------------------------------------
// Target `expression`.
// ---------------------------------------------------------------------------------------------

const OPERATIONS: [Operation; 6] = [
    Operation::UpdateItem,
    Operation::PutItem,
    Operation::DeleteItem,
    Operation::GetItem,
    Operation::Query,
    Operation::Scan,
];

/// Input: `[slots][flags]` then UTF-8 text; the text is split at NUL bytes and the parts fill, in
/// order, the expression slots whose bit is set in `slots`:
/// bit 0 update, 1 condition, 2 filter, 3 projection, 4 key condition (none set: condition);
/// bits 5–7 pick the operation. `flags`: bit 0 pass every pool name, bit 1 every pool value,
/// bit 2 no `ExpressionAttributeNames`, bit 3 no `ExpressionAttributeValues`, bit 4 leave
/// placeholders that are not in the pools undefined, bit 5 add a legacy `Expected` too, bit 6
/// pass a map even when it is empty (otherwise an empty map is left out).
pub fn expression(data: &[u8]) {
    let [slots, flags, rest @ ..] = data else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let mut parts = text.split('\0');
    let mut texts: [Option<&str>; 5] = [None; 5];
    let slots = if slots & 0x1f == 0 { slots | 0x02 } else { *slots };
    for (bit, slot) in texts.iter_mut().enumerate() {
        if slots & (1 << bit) != 0 {
            *slot = Some(parts.next().unwrap_or(""));
        }
    }
    let used: Vec<&str> = texts.iter().flatten().copied().collect();
    let leave_unknown = flags & 0x10 != 0;
    let names = placeholder_map(&used, b'#', name_pool(), flags & 0x01 != 0, leave_unknown);
    let values = placeholder_map(&used, b':', value_pool(), flags & 0x02 != 0, leave_unknown);
    let expected = json!({"a": {"Value": {"N": "5"}}});

    let mut request = RequestExpressions::new(OPERATIONS[usize::from(slots >> 5) % OPERATIONS.len()]);
    [request.update, request.condition, request.filter, request.projection, request.key_condition] = texts;
    let pass_empty = flags & 0x40 != 0;
    if flags & 0x04 == 0 && (pass_empty || !names.is_empty()) {
        request.names = Some(&names);
    }
    if flags & 0x08 == 0 && (pass_empty || !values.is_empty()) {
        request.values = Some(&values);
    }
    if flags & 0x20 != 0 {
        request.expected = Some(&expected);
    }
    let Ok(resolved) = request.resolve() else { return };
    exercise(&resolved, &[fixed_item(), &Item::new(), key_item()]);
}

// ---------------------------------------------------------------------------------------------
// Target `request_body`.
// ---------------------------------------------------------------------------------------------

fn check_value(json: &Json) {
    let Ok(value) = AttributeValue::from_json(json) else { return };
    let _ = value.size_bytes();
    let rendered = value.to_json();
    assert_eq!(AttributeValue::from_json(&rendered).as_ref(), Ok(&value), "value changed through JSON: {rendered}");
    if value.depth() <= CONTAINER_DEPTH_MAX {
        check_storable(&BTreeMap::from([("v".to_string(), value)]), "value from JSON");
    }
}

fn item_of(json: Option<&Map<String, Json>>) -> Option<Item> {
    let item = item_from_json(json?).ok()?;
    check_storable(&item, "item from JSON");
    Some(item)
}

/// The body parsed as every operation's input, then validated the way the node does.
pub fn request_body(data: &[u8]) {
    let schema = serde_json::from_slice::<CreateTableInput>(data)
        .ok()
        .and_then(|input| validate_create_table(&input, "00000000-0000-0000-0000-000000000000".into(), 0).ok());
    if let Some(schema) = &schema {
        let stored = serde_json::to_vec(schema).expect("a schema serializes");
        let reread: TableSchema = serde_json::from_slice(&stored).expect("a stored schema reads back");
        assert_eq!(&reread, schema, "schema changed through the catalog format");
    }
    let key_of = |item: &Item, whole: bool| {
        let Some(schema) = &schema else { return };
        let key = if whole { schema.key_of_item(item) } else { schema.key_from_key_map(item) };
        if let Ok(key) = key {
            let _ = onggi_core::keys::item_key(&key.partition, key.sort.as_ref());
            let _ = onggi_core::keys::partition_prefix(&key.partition);
        }
    };

    if let Ok(input) = serde_json::from_slice::<PutItemInput>(data) {
        let item = item_of(input.item.as_ref());
        if let Some(item) = &item {
            key_of(item, true);
        }
        let mut request = RequestExpressions::new(Operation::PutItem);
        request.condition = input.condition_expression.as_deref();
        request.names = input.expression_attribute_names.as_ref();
        request.values = input.expression_attribute_values.as_ref();
        request.expected = input.expected.as_ref();
        request.conditional_operator = input.conditional_operator.as_ref();
        if let Ok(resolved) = request.resolve() {
            exercise(&resolved, &[fixed_item(), item.as_ref().unwrap_or(key_item())]);
        }
    }
    if let Ok(input) = serde_json::from_slice::<GetItemInput>(data) {
        if let Some(key) = item_of(input.key.as_ref()) {
            key_of(&key, false);
        }
        let mut request = RequestExpressions::new(Operation::GetItem);
        request.projection = input.projection_expression.as_deref();
        request.names = input.expression_attribute_names.as_ref();
        request.attributes_to_get = input.attributes_to_get.as_ref();
        if let Ok(resolved) = request.resolve() {
            exercise(&resolved, &[fixed_item()]);
        }
    }
    if let Ok(input) = serde_json::from_slice::<UpdateItemInput>(data) {
        let key = item_of(input.key.as_ref());
        if let Some(key) = &key {
            key_of(key, false);
        }
        let mut request = RequestExpressions::new(Operation::UpdateItem);
        request.condition = input.condition_expression.as_deref();
        request.update = input.update_expression.as_deref();
        request.names = input.expression_attribute_names.as_ref();
        request.values = input.expression_attribute_values.as_ref();
        request.expected = input.expected.as_ref();
        request.conditional_operator = input.conditional_operator.as_ref();
        request.attribute_updates = input.attribute_updates.as_ref();
        if let Ok(resolved) = request.resolve() {
            exercise(&resolved, &[fixed_item(), key.as_ref().unwrap_or(key_item())]);
        }
    }
    if let Ok(input) = serde_json::from_slice::<DeleteItemInput>(data) {
        if let Some(key) = item_of(input.key.as_ref()) {
            key_of(&key, false);
        }
        let mut request = RequestExpressions::new(Operation::DeleteItem);
        request.condition = input.condition_expression.as_deref();
        request.names = input.expression_attribute_names.as_ref();
        request.values = input.expression_attribute_values.as_ref();
        request.expected = input.expected.as_ref();
        request.conditional_operator = input.conditional_operator.as_ref();
        if let Ok(resolved) = request.resolve() {
            exercise(&resolved, &[fixed_item()]);
        }
    }
    if let Ok(input) = serde_json::from_slice::<TableNameInput>(data) {
        let _ = onggi_model::table::required_table_name(input.table_name.as_deref());
    }
    let _ = serde_json::from_slice::<UpdateTableInput>(data);
    let _ = serde_json::from_slice::<ListTablesInput>(data);

    // Query and Scan have no typed input yet: drive their expression members from the raw object.
    let Ok(Json::Object(body)) = serde_json::from_slice::<Json>(data) else { return };
    if let Some(item) = item_of(Some(&body)) {
        key_of(&item, true);
    }
    for value in body.values() {
        check_value(value);
    }
    let text = |name: &str| body.get(name).and_then(Json::as_str);
    let map = |name: &str| body.get(name).and_then(Json::as_object);
    for operation in [Operation::Query, Operation::Scan] {
        let mut request = RequestExpressions::new(operation);
        if operation == Operation::Query {
            request.key_condition = text("KeyConditionExpression");
            request.key_conditions = body.get("KeyConditions");
            request.query_filter = body.get("QueryFilter");
        } else {
            request.scan_filter = body.get("ScanFilter");
        }
        request.filter = text("FilterExpression");
        request.projection = text("ProjectionExpression");
        request.names = map("ExpressionAttributeNames");
        request.values = map("ExpressionAttributeValues");
        request.conditional_operator = body.get("ConditionalOperator");
        request.attributes_to_get = body.get("AttributesToGet");
        if let Ok(resolved) = request.resolve() {
            exercise(&resolved, &[fixed_item()]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Target `codec`.
// ---------------------------------------------------------------------------------------------

/// Expressions run against every valid decoded item: every function and update action.
fn codec_expressions() -> &'static [ResolvedExpressions] {
    static EXPRESSIONS: OnceLock<Vec<ResolvedExpressions>> = OnceLock::new();
    EXPRESSIONS.get_or_init(|| {
        const CASES: &[(&str, &str, &str)] = &[
            (
                "SET #a = list_append(if_not_exists(#l, :el), :l), #b = #b + :n REMOVE #m.#d[0]",
                "size(#a) > :n AND contains(#b, :s) OR begins_with(#a, :s)",
                "#a, #b[1], #m.#d",
            ),
            ("ADD #ss :ss, #ns :n DELETE #bs :bs", "attribute_type(#ss, :type) AND #ns BETWEEN :n AND :big", "#ss"),
            ("SET #a[5] = :m, #b.#d = :null", "#a IN (:s, :n, :b, :null) OR NOT attribute_exists(#b)", "#a[0].#d"),
            ("REMOVE #a[0], #a[2], #b", "#a <> :s AND size(#b) >= :n AND contains(#a, :n)", "#b.#d[0], #l"),
        ];
        CASES
            .iter()
            .map(|(update, condition, projection)| {
                let texts = [*update, *condition];
                let names = placeholder_map(&texts, b'#', name_pool(), false, false);
                let values = placeholder_map(&texts, b':', value_pool(), false, false);
                let mut request = RequestExpressions::new(Operation::UpdateItem);
                request.update = Some(update);
                request.condition = Some(condition);
                request.names = Some(&names);
                request.values = Some(&values);
                let mut resolved =
                    request.resolve().unwrap_or_else(|error| panic!("{update} / {condition}: {error:?}"));
                let mut request = RequestExpressions::new(Operation::GetItem);
                let names = placeholder_map(&[projection], b'#', name_pool(), false, false);
                request.projection = Some(projection);
                request.names = Some(&names);
                resolved.projection = request.resolve().expect("projection resolves").projection;
                resolved
            })
            .collect()
    })
}

/// Arbitrary bytes as an item (codec v1) and as a record; whatever decodes round-trips.
pub fn codec(data: &[u8]) {
    if let Ok(item) = decode_item(data) {
        let mut bytes = Vec::new();
        encode_item(&item, &mut bytes);
        assert_eq!(decode_item(&bytes).as_ref(), Ok(&item), "decoded item does not survive re-encoding");
        let mut again = Vec::new();
        encode_item(&item, &mut again);
        assert_eq!(bytes, again, "encoding is not deterministic");
        let _ = item_size_bytes(&item);
        let json = item_to_json(&item);
        // Only items that are valid DynamoDB items (what onggi itself writes) go on to evaluation;
        // the decoder does not check set order, duplicates or emptiness.
        if let Json::Object(map) = &json
            && item_from_json(map).as_ref() == Ok(&item)
        {
            for resolved in codec_expressions() {
                exercise(resolved, &[&item]);
            }
        }
        let record = Record { version: Ballot { time: Timestamp(u64::MAX), node: NodeId(u64::MAX) }, item: Some(item), expired: false, lineage: None };
        assert_eq!(Record::decode(&record.encode()).as_ref(), Ok(&record), "record does not round-trip");
    }
    if let Ok(record) = Record::decode(data) {
        let bytes = record.encode();
        assert_eq!(Record::decode(&bytes).as_ref(), Ok(&record), "decoded record does not survive re-encoding");
    }
}

// ---------------------------------------------------------------------------------------------
// Target `number`.
// ---------------------------------------------------------------------------------------------

// An independent reference for parsing and addition: decimal digit strings, big-endian.

/// A value as `(negative, digits, exponent)`; digits without leading zeros (empty for zero).
type Decimal = (bool, Vec<u8>, i64);

/// DynamoDB's limits applied to an exact decimal, in the order onggi reports them.
fn reference_number((negative, mut digits, mut exponent): Decimal) -> Result<Number, onggi_model::NumberError> {
    use onggi_model::NumberError;
    let leading = digits.iter().take_while(|&&digit| digit == 0).count();
    digits.drain(..leading);
    while digits.last() == Some(&0) {
        digits.pop();
        exponent += 1;
    }
    if digits.is_empty() {
        return Ok(Number::ZERO);
    }
    if digits.len() > 38 {
        return Err(NumberError::Precision);
    }
    let scientific = exponent + digits.len() as i64 - 1;
    if scientific > 125 {
        return Err(NumberError::Overflow);
    }
    if scientific < -130 {
        return Err(NumberError::Underflow);
    }
    let coefficient = digits.iter().fold(0u128, |value, &digit| value * 10 + u128::from(digit));
    Ok(Number::from_canonical_parts(negative, coefficient, exponent as i16).expect("reference value is canonical"))
}

/// The grammar: `[+-]? digits-with-one-optional-point [eE [+-]? digits]?`, exponent within an i32.
fn reference_parse(text: &str) -> Result<Number, onggi_model::NumberError> {
    use onggi_model::NumberError;
    let (negative, rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let (mantissa, exponent_text) = match rest.find(['e', 'E']) {
        Some(at) => (&rest[..at], Some(&rest[at + 1..])),
        None => (rest, None),
    };
    let (integer, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all_digits = |part: &str| part.bytes().all(|byte| byte.is_ascii_digit());
    if integer.len() + fraction.len() == 0 || !all_digits(integer) || !all_digits(fraction) {
        return Err(NumberError::Invalid);
    }
    let exponent = match exponent_text {
        None => 0,
        Some(text) => {
            let (exponent_negative, digits) = match text.as_bytes().first() {
                Some(b'-') => (true, &text[1..]),
                Some(b'+') => (false, &text[1..]),
                _ => (false, text),
            };
            if digits.is_empty() || !all_digits(digits) {
                return Err(NumberError::Invalid);
            }
            let trimmed = digits.trim_start_matches('0');
            if trimmed.len() > 10 {
                return Err(NumberError::Invalid);
            }
            let magnitude: i64 = if trimmed.is_empty() { 0 } else { trimmed.parse().expect("ten digits") };
            if magnitude > i64::from(i32::MAX) {
                return Err(NumberError::Invalid);
            }
            if exponent_negative { -magnitude } else { magnitude }
        }
    };
    let digits: Vec<u8> = integer.bytes().chain(fraction.bytes()).map(|byte| byte - b'0').collect();
    let leading = digits.iter().take_while(|&&digit| digit == 0).count();
    let trailing = digits.iter().rev().take_while(|&&digit| digit == 0).count();
    if leading < digits.len() && digits.len() - leading - trailing > 38 {
        return Err(NumberError::Precision);
    }
    reference_number((negative, digits, exponent - fraction.len() as i64))
}

fn decimal(number: Number) -> Decimal {
    let (negative, coefficient, exponent) = number.parts();
    let digits =
        if coefficient == 0 { Vec::new() } else { coefficient.to_string().bytes().map(|b| b - b'0').collect() };
    (negative, digits, i64::from(exponent))
}

/// Exact `left + right` by schoolbook arithmetic on aligned digit strings.
fn reference_add(left: Number, right: Number) -> Result<Number, onggi_model::NumberError> {
    let ((left_negative, mut left_digits, left_exponent), (right_negative, mut right_digits, right_exponent)) =
        (decimal(left), decimal(right));
    if left_digits.is_empty() {
        return Ok(right);
    }
    if right_digits.is_empty() {
        return Ok(left);
    }
    let exponent = left_exponent.min(right_exponent);
    left_digits.resize(left_digits.len() + (left_exponent - exponent) as usize, 0);
    right_digits.resize(right_digits.len() + (right_exponent - exponent) as usize, 0);
    let width = left_digits.len().max(right_digits.len()) + 1;
    let pad = |digits: Vec<u8>| -> Vec<u8> {
        let mut padded = vec![0; width - digits.len()];
        padded.extend(digits);
        padded
    };
    let (a, b) = (pad(left_digits), pad(right_digits));
    let mut out = vec![0u8; width];
    let negative = if left_negative == right_negative {
        let mut carry = 0;
        for index in (0..width).rev() {
            let sum = a[index] + b[index] + carry;
            out[index] = sum % 10;
            carry = sum / 10;
        }
        left_negative
    } else {
        let (big, small, negative) = match a.cmp(&b) {
            std::cmp::Ordering::Equal => return Ok(Number::ZERO),
            std::cmp::Ordering::Greater => (&a, &b, left_negative),
            std::cmp::Ordering::Less => (&b, &a, right_negative),
        };
        let mut borrow = 0i8;
        for index in (0..width).rev() {
            let mut difference = big[index] as i8 - small[index] as i8 - borrow;
            borrow = i8::from(difference < 0);
            if difference < 0 {
                difference += 10;
            }
            out[index] = difference as u8;
        }
        negative
    };
    reference_number((negative, out, exponent))
}

fn check_number(number: Number) {
    let text = number.to_string();
    assert_eq!(Number::parse(&text), Ok(number), "Display output {text:?} does not parse back");
    let (negative, coefficient, exponent) = number.parts();
    assert_eq!(Number::from_canonical_parts(negative, coefficient, exponent), Some(number), "parts do not rebuild");
    assert_eq!(Number::from_ordered_bytes(&number.to_ordered_bytes()), Some(number), "ordered bytes do not decode");
    assert_eq!(number.negate().negate(), number, "double negation");
    assert_eq!(number.checked_add(&number.negate()), Ok(Number::ZERO), "x + -x is not zero");
    assert_eq!(number.checked_add(&Number::ZERO), Ok(number), "x + 0 is not x");
    assert_eq!(Number::ZERO.checked_sub(&number), Ok(number.negate()), "0 - x is not -x");
    if let Some(integer) = number.to_i64() {
        assert_eq!(Number::from_i64(integer), number, "to_i64 gave {integer}");
    }
    let value = AttributeValue::N(number);
    let _ = value.size_bytes();
    check_storable(&BTreeMap::from([("n".to_string(), value)]), "number");
    assert_eq!(AttributeValue::from_json(&json!({"N": text})), Ok(AttributeValue::N(number)));
}

fn check_pair(left: Number, right: Number) {
    let order = left.cmp(&right);
    assert_eq!(
        order,
        left.to_ordered_bytes().cmp(&right.to_ordered_bytes()),
        "ordered bytes disagree with Ord for {left} and {right}"
    );
    assert_eq!(order == std::cmp::Ordering::Equal, left == right, "Ord disagrees with Eq for {left} and {right}");
    assert_eq!(order, right.cmp(&left).reverse(), "Ord is not antisymmetric for {left} and {right}");
    let sum = left.checked_add(&right);
    assert_eq!(sum, reference_add(left, right), "{left} + {right} disagrees with the reference");
    assert_eq!(sum, right.checked_add(&left), "addition is not commutative for {left} and {right}");
    if let Ok(sum) = sum {
        assert_eq!(sum.checked_sub(&right), Ok(left), "({left} + {right}) - {right} is not {left}");
    }
    let difference = left.checked_sub(&right);
    assert_eq!(
        difference.map(|difference| difference.negate()),
        right.checked_sub(&left),
        "{left} - {right} is not -({right} - {left})"
    );
    if let Ok(difference) = difference {
        assert_eq!(difference.cmp(&Number::ZERO), order, "sign of {left} - {right} = {difference} disagrees with Ord");
        assert_eq!(difference.checked_add(&right), Ok(left), "({left} - {right}) + {right} is not {left}");
    }
}

/// UTF-8 text split at commas into up to 8 number strings; each is parsed (and compared with a
/// reference parser), each that parses is checked alone and against every other (sums compared
/// with a reference adder).
pub fn number(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut numbers = Vec::new();
    for part in text.split(',').take(8) {
        let parsed = Number::parse(part);
        assert_eq!(parsed, reference_parse(part), "Number::parse({part:?}) disagrees with the reference");
        numbers.extend(parsed);
    }
    for &number in &numbers {
        check_number(number);
    }
    for &left in &numbers {
        for &right in &numbers {
            check_pair(left, right);
        }
    }
}

// --------------------------------------------------------------------------- node_requests

/// The operations `node_requests` drives, chosen by the input's first byte.
const NODE_OPERATIONS: [&str; 12] = [
    "Query",
    "Scan",
    "BatchGetItem",
    "BatchWriteItem",
    "PutItem",
    "UpdateItem",
    "DeleteItem",
    "GetItem",
    "UpdateTable",
    "UpdateTimeToLive",
    "DescribeTable",
    "TagResource",
];

fn node_runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a runtime"))
}

/// A fresh in-memory node with table `tbl` (`pk` S, `sk` N; local index `lsi` on `lk` N, KEYS_ONLY;
/// global index `gsi` on `gk` S / `sk`, INCLUDE `x`) and a few items, some outside the indexes.
async fn fuzz_node() -> onggi_node::Node {
    use onggi_model::ops::{Backend, PutItemInput, RequestContext};
    let node = onggi_node::Node::open(onggi_node::NodeConfig {
        storage: onggi_node::StorageChoice::Memory,
        default_region: "us-east-1".into(),
    })
    .expect("a memory node");
    let context = RequestContext::default();
    let create: onggi_model::table::CreateTableInput = serde_json::from_value(serde_json::json!({
        "TableName": "tbl", "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [
            {"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "N"},
            {"AttributeName": "lk", "AttributeType": "N"}, {"AttributeName": "gk", "AttributeType": "S"}],
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        "LocalSecondaryIndexes": [{"IndexName": "lsi", "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "lk", "KeyType": "RANGE"}], "Projection": {"ProjectionType": "KEYS_ONLY"}}],
        "GlobalSecondaryIndexes": [{"IndexName": "gsi", "KeySchema": [{"AttributeName": "gk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"}], "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["x"]}}]
    }))
    .expect("a table definition");
    node.create_table(&context, create).await.expect("create the fuzz table");
    for (pk, sk, extra) in [
        ("a", "1", serde_json::json!({"lk": {"N": "5"}, "gk": {"S": "g1"}, "x": {"S": "x1"}})),
        ("a", "-2.5", serde_json::json!({"gk": {"S": "g1"}, "y": {"L": [{"N": "1"}, {"M": {"z": {"NULL": true}}}]}})),
        ("a", "1e10", serde_json::json!({"lk": {"N": "-1"}})),
        ("b", "0", serde_json::json!({"gk": {"S": "g2"}, "x": {"SS": ["p", "q"]}, "ttl": {"N": "1"}})),
        ("", "0", serde_json::json!({})),
    ] {
        let mut item = extra.as_object().cloned().unwrap_or_default();
        item.insert("pk".into(), serde_json::json!({"S": pk}));
        item.insert("sk".into(), serde_json::json!({"N": sk}));
        let input = PutItemInput { table_name: Some("tbl".into()), item: Some(item), ..Default::default() };
        // The empty partition key is refused; the others are stored.
        let _ = node.put_item(&context, input).await;
    }
    node
}

/// Every entry of an index, as `(index key, table key)` strings, read through Scan.
async fn scan_keys(node: &onggi_node::Node, index: Option<&str>, keys: &[&str]) -> Option<Vec<String>> {
    use onggi_model::ops::{Backend, RequestContext, ScanInput};
    let input = ScanInput { table_name: Some("tbl".into()), index_name: index.map(str::to_string), ..Default::default() };
    let output = node.scan(&RequestContext::default(), input).await.ok()?;
    let mut found: Vec<String> = output
        .items
        .unwrap_or_default()
        .iter()
        .filter(|item| keys.iter().all(|key| item.contains_key(*key)))
        .map(|item| keys.iter().map(|key| format!("{:?}", item[*key])).collect::<Vec<_>>().join("|"))
        .collect();
    found.sort();
    Some(found)
}

/// Runs one request (first byte: the operation; the rest: its JSON body) against a fresh node and
/// checks that it answers (never panics or hangs) and that the table's indexes still hold exactly
/// the entries its items call for.
pub fn node_requests(data: &[u8]) {
    use onggi_model::ops::{Backend, RequestContext, ServiceDescription, TagOperation};
    let Some((&selector, body)) = data.split_first() else { return };
    let operation = NODE_OPERATIONS[usize::from(selector) % NODE_OPERATIONS.len()];
    let Ok(json) = serde_json::from_slice::<Json>(body) else { return };
    node_runtime().block_on(async {
        let node = fuzz_node().await;
        let context = RequestContext::default();
        fn input<T: serde::de::DeserializeOwned>(json: &Json) -> Option<T> {
            serde_json::from_value(json.clone()).ok()
        }
        let run = async {
            match operation {
                "Query" => drop(node.query(&context, input(&json)?).await),
                "Scan" => drop(node.scan(&context, input(&json)?).await),
                "BatchGetItem" => drop(node.batch_get_item(&context, input(&json)?).await),
                "BatchWriteItem" => drop(node.batch_write_item(&context, input(&json)?).await),
                "PutItem" => drop(node.put_item(&context, input(&json)?).await),
                "UpdateItem" => drop(node.update_item(&context, input(&json)?).await),
                "DeleteItem" => drop(node.delete_item(&context, input(&json)?).await),
                "GetItem" => drop(node.get_item(&context, input(&json)?).await),
                "UpdateTable" => drop(node.update_table(&context, input(&json)?).await),
                "UpdateTimeToLive" => drop(node.update_time_to_live(&context, input(&json)?).await),
                "DescribeTable" => drop(node.describe_service(&context, ServiceDescription::Limits).await),
                _ => drop(node.tags(&context, TagOperation::Tag, input(&json)?).await),
            }
            Some(())
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), run)
            .await
            .unwrap_or_else(|_| panic!("{operation} did not answer within 10 s"));
        // The expirer and index maintenance keep the indexes exact.
        let _ = node.expire_once().await;
        let Some(mut items) = scan_keys(&node, None, &["pk", "sk"]).await else { return };
        items.sort();
        for (index, keys) in [("lsi", ["lk", "pk", "sk"]), ("gsi", ["gk", "pk", "sk"])] {
            let Some(entries) = scan_keys(&node, Some(index), &keys).await else { continue };
            let expected = scan_keys(&node, None, &keys).await.expect("the table scans");
            assert_eq!(entries, expected, "index {index} differs from its table after {operation} {json}");
        }
    });
}

//! Attribute values and items, exactly as DynamoDB has them.
//!
//! Values arrive as DynamoDB JSON (`{"S": "text"}`, `{"N": "1.5"}`, `{"M": {...}}`) and are
//! validated into [`AttributeValue`]: numbers canonical ([`Number`]), sets non-empty, duplicate-free
//! and kept sorted (DynamoDB Local returns them sorted; a fixed order also makes stored bytes a
//! function of the value), nesting at most [`NESTING_DEPTH_MAX`] levels. Validation is a separate
//! step from JSON parsing because DynamoDB reports framework errors (missing parameters, bad table
//! names) before value errors, and value errors as ValidationException, not SerializationException.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use serde_json::Value as Json;

use crate::error::DynamoError;
use crate::number::Number;

/// Deepest nesting DynamoDB accepts, counting the item itself as the first level: an attribute
/// value may hold at most 31 levels of lists and maps.
pub const NESTING_DEPTH_MAX: usize = 32;
/// Deepest nesting of lists and maps inside one attribute value.
pub const CONTAINER_DEPTH_MAX: usize = NESTING_DEPTH_MAX - 1;
/// DynamoDB's message when an item nests too deeply.
pub const NESTING_MESSAGE: &str =
    "Nesting Levels have exceeded supported limits: Attributes in the item have nested levels beyond supported limit";
/// Largest item, counting attribute names and values as DynamoDB counts them.
pub const ITEM_SIZE_BYTES_MAX: usize = 400 * 1024;

/// An item: attribute names to values. Ordered, so that iteration (and therefore encoding and
/// responses) is deterministic.
pub type Item = BTreeMap<String, AttributeValue>;

/// One DynamoDB attribute value.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum AttributeValue {
    /// A string (UTF-8; may be empty outside keys).
    S(String),
    /// A number.
    N(Number),
    /// Binary data.
    B(Vec<u8>),
    /// A string set: non-empty, sorted, no duplicates.
    Ss(Vec<String>),
    /// A number set: non-empty, sorted numerically, no duplicates.
    Ns(Vec<Number>),
    /// A binary set: non-empty, sorted bytewise, no duplicates.
    Bs(Vec<Vec<u8>>),
    /// A map of names to values.
    M(BTreeMap<String, AttributeValue>),
    /// A list of values.
    L(Vec<AttributeValue>),
    /// The null value.
    Null,
    /// A boolean.
    Bool(bool),
}

/// The ten DynamoDB type descriptors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ValueType {
    S,
    N,
    B,
    Ss,
    Ns,
    Bs,
    M,
    L,
    Null,
    Bool,
}

impl ValueType {
    /// The descriptor as DynamoDB spells it (`"SS"`, `"BOOL"`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            ValueType::S => "S",
            ValueType::N => "N",
            ValueType::B => "B",
            ValueType::Ss => "SS",
            ValueType::Ns => "NS",
            ValueType::Bs => "BS",
            ValueType::M => "M",
            ValueType::L => "L",
            ValueType::Null => "NULL",
            ValueType::Bool => "BOOL",
        }
    }

    /// Parses a descriptor as DynamoDB spells it.
    pub fn parse(text: &str) -> Option<ValueType> {
        Some(match text {
            "S" => ValueType::S,
            "N" => ValueType::N,
            "B" => ValueType::B,
            "SS" => ValueType::Ss,
            "NS" => ValueType::Ns,
            "BS" => ValueType::Bs,
            "M" => ValueType::M,
            "L" => ValueType::L,
            "NULL" => ValueType::Null,
            "BOOL" => ValueType::Bool,
            _ => return None,
        })
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AttributeValue {
    /// This value's type.
    pub fn value_type(&self) -> ValueType {
        match self {
            AttributeValue::S(_) => ValueType::S,
            AttributeValue::N(_) => ValueType::N,
            AttributeValue::B(_) => ValueType::B,
            AttributeValue::Ss(_) => ValueType::Ss,
            AttributeValue::Ns(_) => ValueType::Ns,
            AttributeValue::Bs(_) => ValueType::Bs,
            AttributeValue::M(_) => ValueType::M,
            AttributeValue::L(_) => ValueType::L,
            AttributeValue::Null => ValueType::Null,
            AttributeValue::Bool(_) => ValueType::Bool,
        }
    }

    /// Size of the value as DynamoDB counts it toward the 400 KB item limit and capacity units.
    pub fn size_bytes(&self) -> usize {
        match self {
            AttributeValue::S(text) => text.len(),
            AttributeValue::N(number) => number_size_bytes(number),
            AttributeValue::B(bytes) => bytes.len(),
            AttributeValue::Ss(texts) => texts.iter().map(String::len).sum(),
            AttributeValue::Ns(numbers) => numbers.iter().map(number_size_bytes).sum(),
            AttributeValue::Bs(blobs) => blobs.iter().map(Vec::len).sum(),
            AttributeValue::M(map) => {
                3 + map.iter().map(|(name, value)| name.len() + value.size_bytes() + 1).sum::<usize>()
            }
            AttributeValue::L(list) => 3 + list.iter().map(|value| value.size_bytes() + 1).sum::<usize>(),
            AttributeValue::Null | AttributeValue::Bool(_) => 1,
        }
    }

    /// Parses and validates one value from DynamoDB JSON.
    pub fn from_json(json: &Json) -> Result<AttributeValue, DynamoError> {
        from_json_at_depth(json, 0)
    }

    /// Nesting depth: 0 for scalars and sets, 1 + deepest child for lists and maps.
    pub fn depth(&self) -> usize {
        match self {
            AttributeValue::M(map) => 1 + map.values().map(AttributeValue::depth).max().unwrap_or(0),
            AttributeValue::L(list) => 1 + list.iter().map(AttributeValue::depth).max().unwrap_or(0),
            _ => 0,
        }
    }

    /// Converts back to DynamoDB JSON.
    pub fn to_json(&self) -> Json {
        serde_json::to_value(self).expect("attribute values always serialize")
    }
}

/// A number's size as DynamoDB counts it: one byte per base-100 digit of its mantissa (digits
/// paired around the decimal point, as in Oracle's NUMBER format), one byte for the exponent, and
/// one more for a negative number. Zero is one byte. (Pinned against DynamoDB Local: `1.5` is 3
/// bytes, `0.5` and `100` are 2.)
fn number_size_bytes(number: &Number) -> usize {
    if number.is_zero() {
        return 1;
    }
    let (negative, _, exponent) = number.parts();
    let lowest_position = i64::from(exponent);
    let highest_position = lowest_position + i64::from(number.significant_digits()) - 1;
    let base_100_digits = (highest_position.div_euclid(2) - lowest_position.div_euclid(2) + 1) as usize;
    // 38 digits need at most 20 base-100 digits; DynamoDB caps a number at 21 bytes in all.
    (base_100_digits + 1 + usize::from(negative)).min(NUMBER_SIZE_BYTES_MAX)
}

/// The most bytes a number counts for.
const NUMBER_SIZE_BYTES_MAX: usize = 21;

/// Size of an item as DynamoDB counts it: every attribute name plus its value.
pub fn item_size_bytes(item: &Item) -> usize {
    item.iter().map(|(name, value)| name.len() + value.size_bytes()).sum()
}

fn validation(message: impl Into<String>) -> DynamoError {
    DynamoError::validation(message)
}

fn from_json_at_depth(json: &Json, depth: usize) -> Result<AttributeValue, DynamoError> {
    let Json::Object(object) = json else {
        return Err(DynamoError::serialization("Unexpected value type in payload"));
    };
    let mut found: Option<(&str, &Json)> = None;
    for (key, value) in object {
        // DynamoDB treats an explicit JSON null member as absent.
        if value.is_null() || ValueType::parse(key).is_none() {
            continue;
        }
        if found.is_some() {
            return Err(validation(
                "Supplied AttributeValue has more than one datatypes set, must contain exactly one of the supported datatypes",
            ));
        }
        found = Some((key, value));
    }
    let Some((descriptor, body)) = found else {
        return Err(validation(
            "Supplied AttributeValue is empty, must contain exactly one of the supported datatypes",
        ));
    };
    let value_type = ValueType::parse(descriptor).expect("checked above");
    let value = match value_type {
        ValueType::S => AttributeValue::S(json_string(body)?),
        ValueType::N => AttributeValue::N(parse_number(&json_scalar_text(body)?)?),
        ValueType::B => AttributeValue::B(decode_binary(body)?),
        ValueType::Bool => AttributeValue::Bool(match body {
            Json::Bool(flag) => *flag,
            Json::String(text) if text == "true" => true,
            Json::String(text) if text == "false" => false,
            _ => return Err(DynamoError::serialization("Unexpected value type in payload")),
        }),
        ValueType::Null => match body {
            Json::Bool(true) => AttributeValue::Null,
            Json::Bool(false) => {
                return Err(validation(
                    "One or more parameter values were invalid: Null attribute value types must have the value of true",
                ));
            }
            _ => return Err(DynamoError::serialization("Unexpected value type in payload")),
        },
        ValueType::Ss => {
            let mut texts = json_array(body)?.iter().map(json_string).collect::<Result<Vec<_>, _>>()?;
            if texts.is_empty() {
                return Err(validation("One or more parameter values were invalid: An string set  may not be empty"));
            }
            let original = texts.clone();
            texts.sort();
            if has_adjacent_duplicates(&texts) {
                return Err(validation(format!(
                    "One or more parameter values were invalid: Input collection [{}] contains duplicates",
                    original.join(", ")
                )));
            }
            AttributeValue::Ss(texts)
        }
        ValueType::Ns => {
            let texts = json_array(body)?.iter().map(json_scalar_text).collect::<Result<Vec<_>, _>>()?;
            if texts.is_empty() {
                return Err(validation("One or more parameter values were invalid: An number set  may not be empty"));
            }
            let mut numbers = texts.iter().map(|text| parse_number(text)).collect::<Result<Vec<_>, _>>()?;
            numbers.sort();
            if has_adjacent_duplicates(&numbers) {
                return Err(validation("Input collection contains duplicates"));
            }
            AttributeValue::Ns(numbers)
        }
        ValueType::Bs => {
            let mut blobs = json_array(body)?.iter().map(decode_binary).collect::<Result<Vec<_>, _>>()?;
            if blobs.is_empty() {
                return Err(validation("One or more parameter values were invalid: Binary sets should not be empty"));
            }
            blobs.sort();
            if has_adjacent_duplicates(&blobs) {
                return Err(validation(
                    "One or more parameter values were invalid: Input collection of type BS contains duplicates.",
                ));
            }
            AttributeValue::Bs(blobs)
        }
        ValueType::M | ValueType::L if depth >= CONTAINER_DEPTH_MAX => {
            return Err(validation(NESTING_MESSAGE));
        }
        ValueType::M => {
            let Json::Object(members) = body else {
                return Err(DynamoError::serialization("Unexpected value type in payload"));
            };
            let mut map = BTreeMap::new();
            for (name, member) in members {
                if name.is_empty() {
                    return Err(validation("Empty attribute name"));
                }
                map.insert(name.clone(), from_json_at_depth(member, depth + 1)?);
            }
            AttributeValue::M(map)
        }
        ValueType::L => AttributeValue::L(
            json_array(body)?
                .iter()
                .map(|member| from_json_at_depth(member, depth + 1))
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    Ok(value)
}

fn has_adjacent_duplicates<T: PartialEq>(sorted: &[T]) -> bool {
    sorted.windows(2).any(|pair| pair[0] == pair[1])
}

fn parse_number(text: &str) -> Result<Number, DynamoError> {
    Number::parse(text).map_err(|error| validation(error.message()))
}

fn json_string(json: &Json) -> Result<String, DynamoError> {
    match json {
        Json::String(text) => Ok(text.clone()),
        _ => Err(DynamoError::serialization("Unexpected value type in payload")),
    }
}

/// Text of a number member: DynamoDB sends numbers as strings; a bare JSON integer is accepted as
/// DynamoDB Local accepts it. A bare fraction or a large integer is refused, because the JSON
/// parser has already rounded it to a binary float and its exact digits are gone.
fn json_scalar_text(json: &Json) -> Result<String, DynamoError> {
    match json {
        Json::String(text) => Ok(text.clone()),
        Json::Number(number) if number.is_i64() || number.is_u64() => Ok(number.to_string()),
        _ => Err(DynamoError::serialization("Unexpected value type in payload")),
    }
}

fn json_array(json: &Json) -> Result<&Vec<Json>, DynamoError> {
    match json {
        Json::Array(items) => Ok(items),
        _ => Err(DynamoError::serialization("Unexpected value type in payload")),
    }
}

fn decode_binary(json: &Json) -> Result<Vec<u8>, DynamoError> {
    let Json::String(text) = json else {
        return Err(DynamoError::serialization("Unexpected value type in payload"));
    };
    BASE64.decode(text).map_err(|_| {
        DynamoError::serialization(
            "Base64 encoded length is expected a multiple of 4 bytes but found: ".to_string() + &text.len().to_string(),
        )
    })
}

/// Parses and validates a whole item (a JSON object of attribute names to values).
pub fn item_from_json(json: &serde_json::Map<String, Json>) -> Result<Item, DynamoError> {
    let mut item = Item::new();
    for (name, value) in json {
        if name.is_empty() {
            return Err(validation("Empty attribute name"));
        }
        item.insert(name.clone(), AttributeValue::from_json(value)?);
    }
    Ok(item)
}

/// Serializes an item as DynamoDB JSON.
pub fn item_to_json(item: &Item) -> Json {
    serde_json::to_value(item).expect("items always serialize")
}

impl Serialize for AttributeValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(1))?;
        let descriptor = self.value_type().as_str();
        match self {
            AttributeValue::S(text) => map.serialize_entry(descriptor, text)?,
            AttributeValue::N(number) => map.serialize_entry(descriptor, &number.to_string())?,
            AttributeValue::B(bytes) => map.serialize_entry(descriptor, &BASE64.encode(bytes))?,
            AttributeValue::Ss(texts) => map.serialize_entry(descriptor, texts)?,
            AttributeValue::Ns(numbers) => map.serialize_entry(descriptor, &DisplaySeq(numbers))?,
            AttributeValue::Bs(blobs) => map.serialize_entry(descriptor, &Base64Seq(blobs))?,
            AttributeValue::M(members) => map.serialize_entry(descriptor, members)?,
            AttributeValue::L(list) => map.serialize_entry(descriptor, list)?,
            AttributeValue::Null => map.serialize_entry(descriptor, &true)?,
            AttributeValue::Bool(flag) => map.serialize_entry(descriptor, flag)?,
        }
        map.end()
    }
}

struct DisplaySeq<'a>(&'a [Number]);

impl Serialize for DisplaySeq<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for number in self.0 {
            seq.serialize_element(&number.to_string())?;
        }
        seq.end()
    }
}

struct Base64Seq<'a>(&'a [Vec<u8>]);

impl Serialize for Base64Seq<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for blob in self.0 {
            seq.serialize_element(&BASE64.encode(blob))?;
        }
        seq.end()
    }
}

impl fmt::Debug for AttributeValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", serde_json::to_string(self).map_err(|_| fmt::Error)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(json: Json) -> Result<AttributeValue, String> {
        AttributeValue::from_json(&json).map_err(|error| error.message)
    }

    #[test]
    fn round_trips_every_type() {
        let input = json!({"M": {
            "s": {"S": ""}, "n": {"N": "-1.50"}, "b": {"B": "AAE="}, "ss": {"SS": ["b", "a"]},
            "ns": {"NS": ["10", "2"]}, "bs": {"BS": ["AQ==", "AA=="]}, "l": {"L": [{"NULL": true}, {"BOOL": false}]}
        }});
        let value = parse(input).unwrap();
        assert_eq!(
            value.to_json(),
            json!({"M": {
                "s": {"S": ""}, "n": {"N": "-1.5"}, "b": {"B": "AAE="}, "ss": {"SS": ["a", "b"]},
                "ns": {"NS": ["2", "10"]}, "bs": {"BS": ["AA==", "AQ=="]}, "l": {"L": [{"NULL": true}, {"BOOL": false}]}
            }})
        );
    }

    #[test]
    fn refuses_malformed_values_with_dynamodb_messages() {
        assert!(parse(json!({})).unwrap_err().contains("is empty"));
        assert!(parse(json!({"Q": "1"})).unwrap_err().contains("is empty"));
        assert!(parse(json!({"S": "1", "N": "1"})).unwrap_err().contains("more than one datatypes"));
        assert_eq!(parse(json!({"NS": ["1", "1.0"]})).unwrap_err(), "Input collection contains duplicates");
        assert_eq!(
            parse(json!({"SS": ["a", "b", "a"]})).unwrap_err(),
            "One or more parameter values were invalid: Input collection [a, b, a] contains duplicates"
        );
        assert!(parse(json!({"SS": []})).unwrap_err().contains("may not be empty"));
        assert!(parse(json!({"NULL": false})).unwrap_err().contains("must have the value of true"));
    }

    #[test]
    fn limits_nesting_depth() {
        let mut value = json!({"S": "leaf"});
        for _ in 0..CONTAINER_DEPTH_MAX {
            value = json!({"L": [value]});
        }
        assert_eq!(parse(value.clone()).unwrap().depth(), CONTAINER_DEPTH_MAX);
        let too_deep = json!({"M": {"x": value}});
        assert_eq!(parse(too_deep).unwrap_err(), NESTING_MESSAGE);
    }

    #[test]
    fn sizes_count_names_and_values() {
        let item = item_from_json(
            json!({"a": {"S": "xyz"}, "bb": {"N": "12345"}, "m": {"M": {"k": {"BOOL": true}}}}).as_object().unwrap(),
        )
        .unwrap();
        // "a"+3, "bb"+(3 base-100 digits + 1), "m"+(3 + "k" + 1 + 1)
        assert_eq!(item_size_bytes(&item), 4 + 6 + 7);
        let size = |text: &str| AttributeValue::N(Number::parse(text).unwrap()).size_bytes();
        let expected =
            [("0", 1), ("1", 2), ("-1", 3), ("12", 2), ("123", 3), ("100", 2), ("0.5", 2), ("1.5", 3), ("1E+100", 2)];
        for (text, bytes) in expected {
            assert_eq!(size(text), bytes, "{text}");
        }
    }
}

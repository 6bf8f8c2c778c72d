//! The legacy (pre-expression) parameters, translated to the same trees as expressions.
//!
//! `Expected` and `QueryFilter`/`ScanFilter` become a [`Condition`] (their entries joined by
//! `ConditionalOperator`, `AND` by default), `AttributeUpdates` an [`Update`], `AttributesToGet`
//! a [`Projection`], `KeyConditions` a [`KeyCondition`]. Legacy parameters name attributes
//! directly, so there are no placeholders and no reserved words.
//!
//! Messages marked "verified" in the tests were checked on DynamoDB Local; the others follow
//! the same patterns.

use serde_json::Value as Json;

use crate::error::DynamoError;
use crate::value::{AttributeValue, ValueType};

use super::ast::{
    Comparator, Condition, KeyCondition, KeyPart, Operand, Path, Projection, SortKeyCondition, Update, UpdateAction,
};
use super::{Operation, RequestExpressions, ResolvedExpressions};

fn invalid(detail: impl AsRef<str>) -> DynamoError {
    DynamoError::validation(format!("One or more parameter values were invalid: {}", detail.as_ref()))
}

/// Present and not an empty map or list: DynamoDB treats an empty legacy map as absent.
fn given(json: Option<&Json>) -> bool {
    match json {
        None | Some(Json::Null) => false,
        Some(Json::Object(map)) => !map.is_empty(),
        Some(Json::Array(list)) => !list.is_empty(),
        Some(_) => true,
    }
}

/// DynamoDB's refusal of requests that mix expression and legacy parameters.
pub(crate) fn check_not_mixed(request: &RequestExpressions<'_>) -> Result<(), DynamoError> {
    let legacy: Vec<&str> = [
        ("AttributesToGet", request.attributes_to_get),
        ("AttributeUpdates", request.attribute_updates),
        ("Expected", request.expected),
        ("KeyConditions", request.key_conditions),
        ("QueryFilter", request.query_filter),
        ("ScanFilter", request.scan_filter),
        ("ConditionalOperator", request.conditional_operator),
    ]
    .into_iter()
    .filter(|(_, json)| given(*json))
    .map(|(name, _)| name)
    .collect();
    let expressions: Vec<&str> = [
        ("ProjectionExpression", request.projection),
        ("UpdateExpression", request.update),
        ("ConditionExpression", request.condition),
        ("FilterExpression", request.filter),
        ("KeyConditionExpression", request.key_condition),
    ]
    .into_iter()
    .filter(|(_, text)| text.is_some())
    .map(|(name, _)| name)
    .collect();
    if !legacy.is_empty() && !expressions.is_empty() {
        return Err(DynamoError::validation(format!(
            "Can not use both expression and non-expression parameters in the same request: Non-expression parameters: {{{}}} Expression parameters: {{{}}}",
            legacy.join(", "),
            expressions.join(", ")
        )));
    }
    Ok(())
}

fn object(json: &Json) -> Result<&serde_json::Map<String, Json>, DynamoError> {
    json.as_object().ok_or_else(|| DynamoError::serialization("Unexpected value type in payload"))
}

/// The legacy comparison operators.
#[derive(Clone, Copy, PartialEq, Eq)]
enum LegacyOperator {
    Eq,
    Ne,
    Le,
    Lt,
    Ge,
    Gt,
    NotNull,
    Null,
    Contains,
    NotContains,
    BeginsWith,
    In,
    Between,
}

impl LegacyOperator {
    fn parse(text: &str) -> Option<LegacyOperator> {
        Some(match text {
            "EQ" => LegacyOperator::Eq,
            "NE" => LegacyOperator::Ne,
            "LE" => LegacyOperator::Le,
            "LT" => LegacyOperator::Lt,
            "GE" => LegacyOperator::Ge,
            "GT" => LegacyOperator::Gt,
            "NOT_NULL" => LegacyOperator::NotNull,
            "NULL" => LegacyOperator::Null,
            "CONTAINS" => LegacyOperator::Contains,
            "NOT_CONTAINS" => LegacyOperator::NotContains,
            "BEGINS_WITH" => LegacyOperator::BeginsWith,
            "IN" => LegacyOperator::In,
            "BETWEEN" => LegacyOperator::Between,
            _ => return None,
        })
    }

    fn arguments_ok(self, count: usize) -> bool {
        match self {
            LegacyOperator::NotNull | LegacyOperator::Null => count == 0,
            LegacyOperator::In => count >= 1,
            LegacyOperator::Between => count == 2,
            _ => count == 1,
        }
    }

    fn allowed_types(self) -> &'static [ValueType] {
        const SCALAR: &[ValueType] = &[ValueType::S, ValueType::N, ValueType::B];
        const ANY: &[ValueType] = &[
            ValueType::S,
            ValueType::N,
            ValueType::B,
            ValueType::Ss,
            ValueType::Ns,
            ValueType::Bs,
            ValueType::M,
            ValueType::L,
            ValueType::Null,
            ValueType::Bool,
        ];
        match self {
            LegacyOperator::Eq | LegacyOperator::Ne => ANY,
            LegacyOperator::BeginsWith => &[ValueType::S, ValueType::B],
            _ => SCALAR,
        }
    }
}

/// One `{ComparisonOperator, AttributeValueList}` entry as a condition on `attribute`.
fn comparison(
    attribute: &str,
    operator_text: &str,
    list: Option<&Json>,
    value: Option<&Json>,
) -> Result<Condition, DynamoError> {
    let operator = LegacyOperator::parse(operator_text)
        .ok_or_else(|| DynamoError::validation("Comparison type does not exist in DynamoDB"))?;
    let arguments: Vec<AttributeValue> = match (list, value) {
        (Some(_), Some(_)) => {
            return Err(invalid(format!(
                "Value and AttributeValueList cannot be used together for Attribute: {attribute}"
            )));
        }
        (Some(Json::Array(items)), None) => items.iter().map(AttributeValue::from_json).collect::<Result<_, _>>()?,
        (Some(_), None) => return Err(DynamoError::serialization("Unexpected value type in payload")),
        (None, Some(value)) => vec![AttributeValue::from_json(value)?],
        (None, None) if matches!(operator, LegacyOperator::Null | LegacyOperator::NotNull) => Vec::new(),
        (None, None) => {
            return Err(invalid(format!(
                "Value or AttributeValueList must be used with ComparisonOperator: {operator_text} for Attribute: {attribute}"
            )));
        }
    };
    if !operator.arguments_ok(arguments.len()) {
        return Err(invalid(format!("Invalid number of argument(s) for the {operator_text} ComparisonOperator")));
    }
    for argument in &arguments {
        if !operator.allowed_types().contains(&argument.value_type()) {
            return Err(invalid(format!(
                "ComparisonOperator {operator_text} is not valid for {} AttributeValue type",
                argument.value_type()
            )));
        }
    }
    let path = Path::attribute(attribute);
    let subject = Operand::Path(path.clone());
    let first = || Operand::Value(arguments[0].clone());
    let compare = |comparator| Condition::Compare(comparator, subject.clone(), first());
    Ok(match operator {
        LegacyOperator::Eq => compare(Comparator::Equal),
        LegacyOperator::Ne => compare(Comparator::NotEqual),
        LegacyOperator::Le => compare(Comparator::LessOrEqual),
        LegacyOperator::Lt => compare(Comparator::Less),
        LegacyOperator::Ge => compare(Comparator::GreaterOrEqual),
        LegacyOperator::Gt => compare(Comparator::Greater),
        LegacyOperator::NotNull => Condition::AttributeExists(path),
        LegacyOperator::Null => Condition::AttributeNotExists(path),
        LegacyOperator::Contains => Condition::Contains(subject, first()),
        // A missing attribute contains nothing, but NOT_CONTAINS still needs it to exist.
        LegacyOperator::NotContains => Condition::And(
            Box::new(Condition::AttributeExists(path)),
            Box::new(Condition::Not(Box::new(Condition::Contains(subject, first())))),
        ),
        LegacyOperator::BeginsWith => Condition::BeginsWith(subject, first()),
        LegacyOperator::In => {
            if arguments.windows(2).any(|pair| pair[0].value_type() != pair[1].value_type()) {
                return Err(invalid("AttributeValues inside AttributeValueList must be of same type"));
            }
            Condition::In(subject, arguments.iter().cloned().map(Operand::Value).collect())
        }
        LegacyOperator::Between => {
            let (low, high) = (&arguments[0], &arguments[1]);
            if low.value_type() != high.value_type() {
                return Err(invalid("AttributeValues inside AttributeValueList must be of same type"));
            }
            if super::eval::compare_values(low, high) == Some(std::cmp::Ordering::Greater) {
                return Err(DynamoError::validation(
                    "The BETWEEN condition was provided a range where the lower bound is greater than the upper bound",
                ));
            }
            Condition::Between(subject, Operand::Value(low.clone()), Operand::Value(high.clone()))
        }
    })
}

/// Joins conditions with the `ConditionalOperator`.
fn join(conditions: Vec<Condition>, operator: Option<&Json>) -> Result<Condition, DynamoError> {
    let or = match operator {
        None | Some(Json::Null) => false,
        Some(Json::String(text)) if text == "AND" => false,
        Some(Json::String(text)) if text == "OR" => true,
        Some(Json::String(text)) => {
            return Err(DynamoError::validation(format!(
                "1 validation error detected: Value '{text}' at 'conditionalOperator' failed to satisfy constraint: Member must satisfy enum value set: [AND, OR]"
            )));
        }
        Some(_) => return Err(DynamoError::serialization("Unexpected value type in payload")),
    };
    Ok(balanced(conditions, or))
}

/// Joins conditions into a balanced tree, so that a request with thousands of legacy conditions
/// gives a tree of logarithmic depth: evaluating and dropping it recurse once per level, and a
/// left-leaning chain of N levels overflowed the stack. AND and OR are associative and evaluation
/// is pure, so the shape does not change the result.
fn balanced(mut conditions: Vec<Condition>, or: bool) -> Condition {
    match conditions.len() {
        0 => Condition::True,
        1 => conditions.pop().expect("one condition"),
        length => {
            let right = conditions.split_off(length / 2);
            let (left, right) = (Box::new(balanced(conditions, or)), Box::new(balanced(right, or)));
            if or { Condition::Or(left, right) } else { Condition::And(left, right) }
        }
    }
}

fn check_conditional_operator(entries: usize, operator: Option<&Json>) -> Result<(), DynamoError> {
    if given(operator) && entries == 0 {
        return Err(DynamoError::validation("ConditionalOperator cannot be used without Filter or Expected"));
    }
    if given(operator) && entries < 2 {
        return Err(DynamoError::validation(
            "ConditionalOperator can only be used when Filter or Expected has two or more elements",
        ));
    }
    Ok(())
}

/// `Expected` to a condition.
fn expected(json: &Json, operator: Option<&Json>) -> Result<Condition, DynamoError> {
    let entries = object(json)?;
    check_conditional_operator(entries.len(), operator)?;
    let mut conditions = Vec::with_capacity(entries.len());
    for (attribute, entry) in entries {
        let entry = object(entry)?;
        let value = entry.get("Value").filter(|json| !json.is_null());
        let exists = entry.get("Exists").filter(|json| !json.is_null());
        let operator_text = entry.get("ComparisonOperator").and_then(Json::as_str);
        let list = entry.get("AttributeValueList").filter(|json| !json.is_null());
        if attribute.is_empty() {
            return Err(DynamoError::validation("Empty attribute name"));
        }
        if value.is_some() && list.is_some() {
            return Err(invalid(format!(
                "Value and AttributeValueList cannot be used together for Attribute: {attribute}"
            )));
        }
        if let Some(operator_text) = operator_text {
            if exists.is_some() {
                return Err(invalid(format!(
                    "Exists and ComparisonOperator cannot be used together for Attribute: {attribute}"
                )));
            }
            conditions.push(comparison(attribute, operator_text, list, value)?);
            continue;
        }
        match (exists.and_then(Json::as_bool), value) {
            (Some(false), Some(_)) => {
                return Err(invalid(format!("Value cannot be used when Exists is false for Attribute: {attribute}")));
            }
            (Some(false), None) => conditions.push(Condition::AttributeNotExists(Path::attribute(attribute))),
            (_, Some(value)) => conditions.push(Condition::Compare(
                Comparator::Equal,
                Operand::Path(Path::attribute(attribute)),
                Operand::Value(AttributeValue::from_json(value)?),
            )),
            (flag, None) => {
                let shown = match flag {
                    Some(true) => "true",
                    _ => "null",
                };
                return Err(invalid(format!(
                    "Value must be provided when Exists is {shown} for Attribute: {attribute}"
                )));
            }
        }
    }
    join(conditions, operator)
}

/// `QueryFilter` or `ScanFilter` to a condition.
fn filter(json: &Json, operator: Option<&Json>) -> Result<Condition, DynamoError> {
    let entries = object(json)?;
    check_conditional_operator(entries.len(), operator)?;
    let mut conditions = Vec::with_capacity(entries.len());
    for (attribute, entry) in entries {
        let entry = object(entry)?;
        let operator_text = entry.get("ComparisonOperator").and_then(Json::as_str).ok_or_else(|| {
            DynamoError::validation(
                "1 validation error detected: Value null at 'comparisonOperator' failed to satisfy constraint: Member must not be null",
            )
        })?;
        conditions.push(comparison(attribute, operator_text, entry.get("AttributeValueList"), None)?);
    }
    join(conditions, operator)
}

/// `AttributeUpdates` to an update.
fn attribute_updates(json: &Json) -> Result<Update, DynamoError> {
    let mut actions = Vec::new();
    for (attribute, entry) in object(json)? {
        let entry = object(entry)?;
        let action = entry.get("Action").and_then(Json::as_str).unwrap_or("PUT");
        let value = match entry.get("Value").filter(|json| !json.is_null()) {
            Some(json) => Some(AttributeValue::from_json(json)?),
            None => None,
        };
        let path = Path::attribute(attribute);
        actions.push(match (action, value) {
            ("PUT", Some(value)) => UpdateAction::Set(path, Operand::Value(value)),
            ("PUT", None) => {
                return Err(invalid("Only DELETE action is allowed when no attribute value is specified"));
            }
            ("DELETE", None) => UpdateAction::Remove(path),
            ("DELETE", Some(value)) => match value.value_type() {
                ValueType::Ss | ValueType::Ns | ValueType::Bs => UpdateAction::Delete(path, value),
                other => {
                    return Err(invalid(format!(
                        "DELETE action with value is not supported for the type {}",
                        super::resolve::long_type_name(other)
                    )));
                }
            },
            ("ADD", Some(AttributeValue::L(list))) => UpdateAction::Set(
                path.clone(),
                Operand::ListAppend(
                    Box::new(Operand::IfNotExists(path, Box::new(Operand::Value(AttributeValue::L(Vec::new()))))),
                    Box::new(Operand::Value(AttributeValue::L(list))),
                ),
            ),
            ("ADD", Some(value)) => match value.value_type() {
                ValueType::N | ValueType::Ss | ValueType::Ns | ValueType::Bs => UpdateAction::Add(path, value),
                other => {
                    return Err(invalid(format!(
                        "ADD action is not supported for the type {}",
                        super::resolve::long_type_name(other)
                    )));
                }
            },
            ("ADD", None) => {
                return Err(invalid("Only DELETE action is allowed when no attribute value is specified"));
            }
            _ => {
                return Err(DynamoError::validation("Member must satisfy enum value set: [ADD, DELETE, PUT]"));
            }
        });
    }
    Ok(Update { actions })
}

/// `AttributesToGet` to a projection.
fn attributes_to_get(json: &Json) -> Result<Projection, DynamoError> {
    let Json::Array(names) = json else {
        return Err(DynamoError::serialization("Unexpected value type in payload"));
    };
    let mut paths: Vec<Path> = Vec::with_capacity(names.len());
    let mut seen = std::collections::HashSet::with_capacity(names.len());
    for name in names {
        let Json::String(name) = name else {
            return Err(DynamoError::serialization("Unexpected value type in payload"));
        };
        if name.is_empty() {
            return Err(DynamoError::validation("Empty attribute name"));
        }
        let path = Path::attribute(name.clone());
        if !seen.insert(name.as_str()) {
            return Err(DynamoError::validation("Cannot have two attributes with the same name"));
        }
        paths.push(path);
    }
    Ok(Projection { paths })
}

/// `KeyConditions` to a key condition.
fn key_conditions(json: &Json) -> Result<KeyCondition, DynamoError> {
    let mut parts = Vec::new();
    for (attribute, entry) in object(json)? {
        let entry = object(entry)?;
        let operator_text = entry.get("ComparisonOperator").and_then(Json::as_str).unwrap_or("");
        let condition = comparison(attribute, operator_text, entry.get("AttributeValueList"), None)?;
        let condition = match condition {
            Condition::Compare(comparator, _, Operand::Value(value)) if comparator != Comparator::NotEqual => {
                SortKeyCondition::Compare(comparator, value)
            }
            Condition::Between(_, Operand::Value(low), Operand::Value(high)) => SortKeyCondition::Between(low, high),
            Condition::BeginsWith(_, Operand::Value(prefix)) => SortKeyCondition::BeginsWith(prefix),
            Condition::Compare(Comparator::NotEqual, ..) => {
                return Err(DynamoError::validation("Query key condition not supported"));
            }
            _ => return Err(DynamoError::validation("Attempted conditional constraint is not an indexable operation")),
        };
        parts.push(KeyPart { attribute: attribute.clone(), condition });
    }
    if parts.len() > 2 {
        return Err(DynamoError::validation("Conditions can be of length 1 or 2 only"));
    }
    Ok(KeyCondition { parts })
}

/// Resolves the legacy parameters of a request that uses no expressions.
pub(crate) fn resolve(request: &RequestExpressions<'_>) -> Result<ResolvedExpressions, DynamoError> {
    let mut resolved = ResolvedExpressions::default();
    let operator = request.conditional_operator.filter(|json| !json.is_null());
    let has_filter = given(request.expected) || given(request.query_filter) || given(request.scan_filter);
    if operator.is_some() && !has_filter {
        return Err(DynamoError::validation("ConditionalOperator cannot be used without Filter or Expected"));
    }
    if let Some(json) = request.expected.filter(|json| given(Some(json))) {
        resolved.condition = Some(expected(json, operator)?);
    }
    let filter_json = match request.operation {
        Operation::Query => request.query_filter,
        Operation::Scan => request.scan_filter,
        _ => None,
    };
    if let Some(json) = filter_json.filter(|json| given(Some(json))) {
        resolved.filter = Some(filter(json, operator)?);
    }
    if let Some(json) = request.attribute_updates.filter(|json| given(Some(json))) {
        resolved.update = Some(attribute_updates(json)?);
    }
    if let Some(json) = request.attributes_to_get.filter(|json| given(Some(json))) {
        resolved.projection = Some(attributes_to_get(json)?);
    }
    if let Some(json) = request.key_conditions.filter(|json| given(Some(json))) {
        resolved.key_condition = Some(key_conditions(json)?);
    }
    Ok(resolved)
}

//! The DynamoDB expression language: conditions, filters, key conditions, updates, projections.
//!
//! A request carries up to five expressions (as strings) and two placeholder maps,
//! `ExpressionAttributeNames` (`#n` → attribute name) and `ExpressionAttributeValues`
//! (`:v` → value). They are checked *together*: a placeholder defined but used by no expression
//! is an error, so resolution takes all of them at once ([`RequestExpressions::resolve`]) and
//! returns either every expression resolved or the one error DynamoDB would report first.
//!
//! The work is split in stages, each its own file:
//! - `lexer`: text to tokens, never failing (bad characters become tokens the parser refuses);
//! - `syntax`: a hand-written recursive-descent parser to a tree that still holds placeholders;
//! - `resolve`: DynamoDB's checks, in DynamoDB's order, producing the owned trees of `ast`;
//! - `eval`, `update`, `projection`: pure evaluation of those trees against items;
//! - `legacy`: the pre-expression parameters (`Expected`, `AttributeUpdates`, `AttributesToGet`,
//!   `KeyConditions`, `QueryFilter`, `ScanFilter`) translated to the same trees.
//!
//! Error messages are DynamoDB's, byte for byte, as observed on DynamoDB Local 3.3.0; where
//! DynamoDB Local and the Developer Guide disagree we follow DynamoDB Local, and say so where it
//! happens.

mod ast;
mod eval;
mod legacy;
mod lexer;
mod projection;
mod reserved;
mod resolve;
mod syntax;
mod update;

#[cfg(test)]
mod tests;

use serde_json::Value as Json;

use crate::error::DynamoError;

pub use ast::{
    Comparator, Condition, KeyCondition, KeyPart, Operand, Path, PathElement, Projection, SortKeyCondition, Update,
    UpdateAction,
};
pub use eval::{compare_values, lookup, size_of};
pub use resolve::{EXPRESSION_SIZE_BYTES_MAX, IN_OPERANDS_MAX, LIST_INDEX_MAX, OPERATORS_MAX, PATH_ELEMENTS_MAX};
pub use syntax::{ExpressionKind, NESTING_DEPTH_MAX};
pub use update::UpdateOutcome;

use resolve::Placeholders;

/// The operation a request is for: it decides which parameters exist, and the wording of some
/// messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// GetItem (projection).
    GetItem,
    /// PutItem (condition).
    PutItem,
    /// DeleteItem (condition).
    DeleteItem,
    /// UpdateItem (update, condition).
    UpdateItem,
    /// Query (key condition, filter, projection).
    Query,
    /// Scan (filter, projection).
    Scan,
}

/// The expression-related parameters of one request, as they arrived (raw JSON where the API
/// has JSON). Fill in what the request has; leave the rest `None`.
#[derive(Clone, Copy, Debug)]
pub struct RequestExpressions<'r> {
    /// Which operation the request is.
    pub operation: Operation,
    /// `ConditionExpression`.
    pub condition: Option<&'r str>,
    /// `FilterExpression`.
    pub filter: Option<&'r str>,
    /// `KeyConditionExpression`.
    pub key_condition: Option<&'r str>,
    /// `UpdateExpression`.
    pub update: Option<&'r str>,
    /// `ProjectionExpression`.
    pub projection: Option<&'r str>,
    /// `ExpressionAttributeNames`.
    pub names: Option<&'r serde_json::Map<String, Json>>,
    /// `ExpressionAttributeValues`.
    pub values: Option<&'r serde_json::Map<String, Json>>,
    /// Legacy `Expected`.
    pub expected: Option<&'r Json>,
    /// Legacy `ConditionalOperator` (for `Expected`, `QueryFilter` or `ScanFilter`).
    pub conditional_operator: Option<&'r Json>,
    /// Legacy `AttributeUpdates`.
    pub attribute_updates: Option<&'r Json>,
    /// Legacy `AttributesToGet`.
    pub attributes_to_get: Option<&'r Json>,
    /// Legacy `KeyConditions`.
    pub key_conditions: Option<&'r Json>,
    /// Legacy `QueryFilter`.
    pub query_filter: Option<&'r Json>,
    /// Legacy `ScanFilter`.
    pub scan_filter: Option<&'r Json>,
}

/// Every expression of a request, resolved; `None` where the request had none.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct ResolvedExpressions {
    /// From `ConditionExpression` or `Expected`.
    pub condition: Option<Condition>,
    /// From `FilterExpression`, `QueryFilter` or `ScanFilter`.
    pub filter: Option<Condition>,
    /// From `KeyConditionExpression` or `KeyConditions`.
    pub key_condition: Option<KeyCondition>,
    /// From `UpdateExpression` or `AttributeUpdates`.
    pub update: Option<Update>,
    /// From `ProjectionExpression` or `AttributesToGet`.
    pub projection: Option<Projection>,
}

impl<'r> RequestExpressions<'r> {
    /// A request with no expression parameters yet.
    pub fn new(operation: Operation) -> RequestExpressions<'r> {
        RequestExpressions {
            operation,
            condition: None,
            filter: None,
            key_condition: None,
            update: None,
            projection: None,
            names: None,
            values: None,
            expected: None,
            conditional_operator: None,
            attribute_updates: None,
            attributes_to_get: None,
            key_conditions: None,
            query_filter: None,
            scan_filter: None,
        }
    }

    /// Checks and resolves every expression of the request, returning the first error DynamoDB
    /// would give.
    pub fn resolve(&self) -> Result<ResolvedExpressions, DynamoError> {
        legacy::check_not_mixed(self)?;
        let uses_expressions = self.condition.is_some()
            || self.filter.is_some()
            || self.key_condition.is_some()
            || self.update.is_some()
            || self.projection.is_some();
        if !uses_expressions {
            if self.names.is_some() {
                return Err(DynamoError::validation(
                    "ExpressionAttributeNames can only be specified when using expressions",
                ));
            }
            if self.values.is_some() {
                return Err(DynamoError::validation(format!(
                    "ExpressionAttributeValues can only be specified when using expressions: {}",
                    self.null_value_expressions()
                )));
            }
            return legacy::resolve(self);
        }
        let mut placeholders = Placeholders::new(self.names, self.values)?;
        if !self.uses_value_expressions() && placeholders.has_values() {
            return Err(DynamoError::validation(format!(
                "ExpressionAttributeValues can only be specified when using expressions: {}",
                self.null_value_expressions()
            )));
        }
        let mut resolved = ResolvedExpressions::default();
        if let Some(text) = self.update {
            resolved.update = Some(resolve::resolve_update(text, &mut placeholders)?);
        }
        if let Some(text) = self.condition {
            resolved.condition = Some(resolve::resolve_condition(text, ExpressionKind::Condition, &mut placeholders)?);
        }
        if let Some(text) = self.filter {
            resolved.filter = Some(resolve::resolve_condition(text, ExpressionKind::Filter, &mut placeholders)?);
        }
        if let Some(text) = self.projection {
            resolved.projection = Some(resolve::resolve_projection(text, &mut placeholders)?);
        }
        let key_condition = match self.key_condition {
            Some(text) => Some(resolve::resolve_condition(text, ExpressionKind::KeyCondition, &mut placeholders)?),
            None => None,
        };
        placeholders.check_all_used()?;
        if let Some(condition) = key_condition {
            resolved.key_condition = Some(key_condition_from(condition)?);
        }
        Ok(resolved)
    }

    fn uses_value_expressions(&self) -> bool {
        self.condition.is_some() || self.filter.is_some() || self.key_condition.is_some() || self.update.is_some()
    }

    /// "UpdateExpression and ConditionExpression are null": the expressions of this operation
    /// that could have used values.
    fn null_value_expressions(&self) -> String {
        let names: &[&str] = match self.operation {
            Operation::GetItem => &[],
            Operation::PutItem | Operation::DeleteItem => &["ConditionExpression"],
            Operation::UpdateItem => &["UpdateExpression", "ConditionExpression"],
            Operation::Query => &["FilterExpression", "KeyConditionExpression"],
            Operation::Scan => &["FilterExpression"],
        };
        match names {
            [one] => format!("{one} is null"),
            [first, second] => format!("{first} and {second} are null"),
            _ => "no expression uses them".to_string(),
        }
    }
}

/// Turns a resolved key condition expression into its parts, with DynamoDB's structural checks
/// (the checks against the table's key schema are the caller's).
fn key_condition_from(condition: Condition) -> Result<KeyCondition, DynamoError> {
    fn flatten(condition: Condition, parts: &mut Vec<Condition>) {
        match condition {
            Condition::And(left, right) => {
                flatten(*left, parts);
                flatten(*right, parts);
            }
            other => parts.push(other),
        }
    }
    fn invalid_operator(operator: &str) -> DynamoError {
        DynamoError::validation(format!("Invalid operator used in KeyConditionExpression: {operator}"))
    }
    fn key_name(operand: &Operand) -> Result<Option<String>, DynamoError> {
        match operand {
            Operand::Path(path) if path.elements().len() == 1 => Ok(Some(path.attribute_name().to_string())),
            Operand::Path(path) => Err(DynamoError::validation(format!(
                "Key attributes must be scalars; list random access '[]' and map lookup '.' are not allowed: Key: {}",
                path.attribute_name()
            ))),
            Operand::Value(_) => Ok(None),
            _ => Err(DynamoError::validation("KeyConditionExpressions cannot contain nested operations")),
        }
    }
    fn multiple_names() -> DynamoError {
        DynamoError::validation(
            "Invalid condition in KeyConditionExpression: Multiple attribute names used in one condition",
        )
    }
    fn no_name() -> DynamoError {
        DynamoError::validation("Invalid condition in KeyConditionExpression: No key attribute specified")
    }
    fn part(condition: Condition) -> Result<KeyPart, DynamoError> {
        match condition {
            Condition::Compare(comparator, left, right) => {
                if comparator == Comparator::NotEqual {
                    return Err(invalid_operator("<>"));
                }
                let (left_name, right_name) = (key_name(&left)?, key_name(&right)?);
                let (attribute, value, comparator) = match (left_name, right_name, left, right) {
                    (Some(_), Some(_), ..) => return Err(multiple_names()),
                    (Some(name), None, _, Operand::Value(value)) => (name, value, comparator),
                    (None, Some(name), Operand::Value(value), _) => (name, value, mirror(comparator)),
                    _ => return Err(no_name()),
                };
                Ok(KeyPart { attribute, condition: SortKeyCondition::Compare(comparator, value) })
            }
            Condition::Between(subject, low, high) => {
                let names = [key_name(&subject)?, key_name(&low)?, key_name(&high)?];
                if names.iter().filter(|name| name.is_some()).count() > 1 {
                    return Err(multiple_names());
                }
                match (names, low, high) {
                    ([Some(attribute), None, None], Operand::Value(low), Operand::Value(high)) => {
                        Ok(KeyPart { attribute, condition: SortKeyCondition::Between(low, high) })
                    }
                    _ => Err(no_name()),
                }
            }
            Condition::BeginsWith(subject, prefix) => match (key_name(&subject)?, key_name(&prefix)?, prefix) {
                (Some(_), Some(_), _) => Err(multiple_names()),
                (Some(attribute), None, Operand::Value(prefix)) => {
                    Ok(KeyPart { attribute, condition: SortKeyCondition::BeginsWith(prefix) })
                }
                _ => Err(no_name()),
            },
            Condition::Or(..) => Err(invalid_operator("OR")),
            Condition::Not(_) => Err(invalid_operator("NOT")),
            Condition::In(..) => Err(invalid_operator("IN")),
            Condition::Contains(..) => Err(invalid_operator("contains")),
            Condition::AttributeExists(_) => Err(invalid_operator("attribute_exists")),
            Condition::AttributeNotExists(_) => Err(invalid_operator("attribute_not_exists")),
            Condition::AttributeType(..) => Err(invalid_operator("attribute_type")),
            Condition::And(..) | Condition::True => unreachable!("flattened or never produced by parsing"),
        }
    }
    let mut conditions = Vec::new();
    flatten(condition, &mut conditions);
    let parts = conditions.into_iter().map(part).collect::<Result<Vec<_>, _>>()?;
    if parts.len() > 2 {
        let mut names: Vec<&str> = parts.iter().map(|part| part.attribute.as_str()).collect();
        names.sort_unstable();
        if names.windows(2).any(|pair| pair[0] == pair[1]) {
            return Err(DynamoError::validation("KeyConditionExpressions must only contain one condition per key"));
        }
        return Err(DynamoError::validation("Conditions can be of length 1 or 2 only"));
    }
    if parts.len() == 2 && parts[0].attribute == parts[1].attribute {
        return Err(DynamoError::validation("KeyConditionExpressions must only contain one condition per key"));
    }
    Ok(KeyCondition { parts })
}

/// `:v < a` is `a > :v`.
fn mirror(comparator: Comparator) -> Comparator {
    match comparator {
        Comparator::Less => Comparator::Greater,
        Comparator::LessOrEqual => Comparator::GreaterOrEqual,
        Comparator::Greater => Comparator::Less,
        Comparator::GreaterOrEqual => Comparator::LessOrEqual,
        other => other,
    }
}

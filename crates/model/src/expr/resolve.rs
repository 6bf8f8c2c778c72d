//! From syntax trees to resolved expressions, with DynamoDB's checks in DynamoDB's order.
//!
//! When a request breaks several rules, DynamoDB reports one of them, and clients (and tests
//! written against DynamoDB) see which. We reproduce its order, as observed on DynamoDB Local:
//!
//! 1. per expression, in the order update, condition, filter, projection, key condition:
//!    1. the empty expression, the size limit, then the syntax;
//!    2. redundant parentheses (`((a = :v))`), then too many operators, then a repeated update
//!       clause;
//!    3. one walk in textual order for reserved words, list index range, unknown functions and
//!       functions used where they are not allowed ([`check_names_and_functions`]);
//!    4. for updates: the names in the target paths, then overlapping target paths;
//!    5. one walk in textual order, children before parents, that resolves placeholders and
//!       checks each operator or function: arity, operand types, distinct operands, bounds.
//! 2. then names never used, then values never used.

use std::collections::{BTreeMap, HashSet};

use serde_json::Value as Json;

use crate::error::DynamoError;
use crate::value::{AttributeValue, ValueType};

use super::ast::{Comparator, Condition, Operand, Path, PathElement, Projection, Update, UpdateAction};
use super::reserved::is_reserved;
use super::syntax::{ExpressionKind, RawAction, RawCondition, RawElement, RawOperand, RawPath};

/// Longest expression DynamoDB accepts, in bytes.
pub const EXPRESSION_SIZE_BYTES_MAX: usize = 4096;
/// Most operators (comparators, `AND`, `OR`, `NOT`, `BETWEEN`, `IN`, functions, `+`, `-`) in one
/// expression.
pub const OPERATORS_MAX: usize = 300;
/// Most candidates in one `IN` list.
pub const IN_OPERANDS_MAX: usize = 100;
/// Most elements in one document path.
pub const PATH_ELEMENTS_MAX: usize = 32;
/// Largest list index (Java's `Integer.MAX_VALUE` in DynamoDB).
pub const LIST_INDEX_MAX: u64 = i32::MAX as u64;

/// The functions of the language, and where each may appear.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Function {
    AttributeExists,
    AttributeNotExists,
    AttributeType,
    BeginsWith,
    Contains,
    Size,
    IfNotExists,
    ListAppend,
}

impl Function {
    fn parse(name: &str) -> Option<Function> {
        Some(match name {
            "attribute_exists" => Function::AttributeExists,
            "attribute_not_exists" => Function::AttributeNotExists,
            "attribute_type" => Function::AttributeType,
            "begins_with" => Function::BeginsWith,
            "contains" => Function::Contains,
            "size" => Function::Size,
            "if_not_exists" => Function::IfNotExists,
            "list_append" => Function::ListAppend,
            _ => return None,
        })
    }

    /// Whether the function yields a truth value (a condition) rather than a value (an operand).
    fn is_condition(self) -> bool {
        matches!(
            self,
            Function::AttributeExists
                | Function::AttributeNotExists
                | Function::AttributeType
                | Function::BeginsWith
                | Function::Contains
        )
    }

    fn allowed_in_update(self) -> bool {
        matches!(self, Function::IfNotExists | Function::ListAppend)
    }

    fn arity(self) -> usize {
        match self {
            Function::AttributeExists | Function::AttributeNotExists | Function::Size => 1,
            _ => 2,
        }
    }
}

/// The placeholders of one request and which of them the expressions used.
pub(crate) struct Placeholders {
    names: BTreeMap<String, String>,
    values: BTreeMap<String, AttributeValue>,
    /// Keys in the order the request listed them, for DynamoDB's order of unused keys.
    name_order: Vec<String>,
    value_order: Vec<String>,
    used_names: HashSet<String>,
    used_values: HashSet<String>,
}

fn valid_placeholder(key: &str, sigil: char) -> bool {
    let mut characters = key.chars();
    characters.next() == Some(sigil)
        && key.len() > 1
        && characters.all(|character| character.is_ascii_alphanumeric() || character == '_')
}

impl Placeholders {
    /// Validates `ExpressionAttributeNames` and `ExpressionAttributeValues` as DynamoDB does
    /// before looking at any expression.
    pub(crate) fn new(
        names: Option<&serde_json::Map<String, Json>>,
        values: Option<&serde_json::Map<String, Json>>,
    ) -> Result<Placeholders, DynamoError> {
        let mut placeholders = Placeholders {
            names: BTreeMap::new(),
            values: BTreeMap::new(),
            name_order: Vec::new(),
            value_order: Vec::new(),
            used_names: HashSet::new(),
            used_values: HashSet::new(),
        };
        if let Some(names) = names {
            if names.is_empty() {
                return Err(DynamoError::validation("ExpressionAttributeNames must not be empty"));
            }
            for (key, value) in names {
                if !valid_placeholder(key, '#') {
                    return Err(DynamoError::validation(format!(
                        "ExpressionAttributeNames contains invalid key: Syntax error; key: \"{key}\""
                    )));
                }
                let Json::String(name) = value else {
                    return Err(DynamoError::serialization("Unexpected value type in payload"));
                };
                if name.is_empty() {
                    return Err(DynamoError::validation(format!(
                        "ExpressionAttributeNames contains invalid value: Empty attribute name for key {key}"
                    )));
                }
                placeholders.names.insert(key.clone(), name.clone());
                placeholders.name_order.push(key.clone());
            }
        }
        if let Some(values) = values {
            if values.is_empty() {
                return Err(DynamoError::validation("ExpressionAttributeValues must not be empty"));
            }
            for (key, json) in values {
                if !valid_placeholder(key, ':') {
                    return Err(DynamoError::validation(format!(
                        "ExpressionAttributeValues contains invalid key: Syntax error; key: \"{key}\""
                    )));
                }
                let value = AttributeValue::from_json(json).map_err(|error| match error.kind {
                    crate::error::ErrorKind::Validation => DynamoError::validation(format!(
                        "ExpressionAttributeValues contains invalid value: {} for key {key}",
                        error.message
                    )),
                    _ => error,
                })?;
                placeholders.values.insert(key.clone(), value);
                placeholders.value_order.push(key.clone());
            }
        }
        Ok(placeholders)
    }

    pub(crate) fn has_values(&self) -> bool {
        !self.value_order.is_empty()
    }

    fn name(&mut self, placeholder: &str, kind: ExpressionKind) -> Result<String, DynamoError> {
        match self.names.get(placeholder) {
            Some(name) => {
                self.used_names.insert(placeholder.to_string());
                Ok(name.clone())
            }
            None => Err(kind.error(format!(
                "An expression attribute name used in the document path is not defined; attribute name: {placeholder}"
            ))),
        }
    }

    fn value(&mut self, placeholder: &str, kind: ExpressionKind) -> Result<AttributeValue, DynamoError> {
        match self.values.get(placeholder) {
            Some(value) => {
                self.used_values.insert(placeholder.to_string());
                Ok(value.clone())
            }
            None => Err(kind.error(format!(
                "An expression attribute value used in expression is not defined; attribute value: {placeholder}"
            ))),
        }
    }

    /// DynamoDB's complaint about placeholders no expression used: names first, then values.
    pub(crate) fn check_all_used(&self) -> Result<(), DynamoError> {
        let unused_names: Vec<&str> =
            self.name_order.iter().filter(|key| !self.used_names.contains(*key)).map(String::as_str).collect();
        if !unused_names.is_empty() {
            return Err(DynamoError::validation(format!(
                "Value provided in ExpressionAttributeNames unused in expressions: keys: {{{}}}",
                java_hash_set_order(&unused_names).join(", ")
            )));
        }
        let unused_values: Vec<&str> =
            self.value_order.iter().filter(|key| !self.used_values.contains(*key)).map(String::as_str).collect();
        if !unused_values.is_empty() {
            return Err(DynamoError::validation(format!(
                "Value provided in ExpressionAttributeValues unused in expressions: keys: {{{}}}",
                java_hash_set_order(&unused_values).join(", ")
            )));
        }
        Ok(())
    }
}

/// The order in which a Java `HashSet<String>` filled in `keys`' order iterates: DynamoDB prints
/// unused placeholders that way, and matching it keeps messages byte-identical.
///
/// A `HashSet` buckets by `hashCode ^ (hashCode >>> 16)` modulo its capacity (16, doubled each
/// time it grows past three quarters full); within a bucket, insertion order.
pub(crate) fn java_hash_set_order<'k>(keys: &[&'k str]) -> Vec<&'k str> {
    let mut capacity: usize = 16;
    while keys.len() * 4 > capacity * 3 {
        capacity *= 2;
    }
    let bucket = |key: &str| {
        let hash = key.encode_utf16().fold(0i32, |hash, unit| hash.wrapping_mul(31).wrapping_add(i32::from(unit)));
        let hash = hash as u32;
        ((hash ^ (hash >> 16)) as usize) & (capacity - 1)
    };
    let mut ordered: Vec<(usize, usize, &str)> =
        keys.iter().enumerate().map(|(position, key)| (bucket(key), position, *key)).collect();
    ordered.sort();
    ordered.into_iter().map(|(_, _, key)| key).collect()
}

/// Empty text, then the size limit.
pub(crate) fn check_size(text: &str, kind: ExpressionKind) -> Result<(), DynamoError> {
    if text.len() > EXPRESSION_SIZE_BYTES_MAX {
        // DynamoDB Local names the size only for the condition grammar's expressions.
        return Err(match kind {
            ExpressionKind::Update | ExpressionKind::Projection => {
                kind.error("Expression size has exceeded the maximum allowed size;")
            }
            _ => kind.error(format!(
                "Expression size has exceeded the maximum allowed size; expression size: {}",
                text.len()
            )),
        });
    }
    Ok(())
}

fn redundant_parentheses(kind: ExpressionKind) -> DynamoError {
    kind.error("The expression has redundant parentheses;")
}

fn operand_has_redundant_parentheses(operand: &RawOperand) -> bool {
    match operand {
        RawOperand::Path(_) | RawOperand::Value(_) => false,
        RawOperand::Paren(inner) => matches!(**inner, RawOperand::Paren(_)) || operand_has_redundant_parentheses(inner),
        RawOperand::Call(_, arguments) => arguments.iter().any(operand_has_redundant_parentheses),
        RawOperand::Plus(left, right) | RawOperand::Minus(left, right) => {
            operand_has_redundant_parentheses(left) || operand_has_redundant_parentheses(right)
        }
    }
}

fn condition_has_redundant_parentheses(condition: &RawCondition) -> bool {
    match condition {
        RawCondition::Compare(_, left, right) => {
            operand_has_redundant_parentheses(left) || operand_has_redundant_parentheses(right)
        }
        RawCondition::Between(subject, low, high) => {
            [subject, low, high].into_iter().any(operand_has_redundant_parentheses)
        }
        RawCondition::In(subject, list) => {
            operand_has_redundant_parentheses(subject) || list.iter().any(operand_has_redundant_parentheses)
        }
        RawCondition::Call(_, arguments) => arguments.iter().any(operand_has_redundant_parentheses),
        RawCondition::Not(inner) => condition_has_redundant_parentheses(inner),
        RawCondition::And(left, right) | RawCondition::Or(left, right) => {
            condition_has_redundant_parentheses(left) || condition_has_redundant_parentheses(right)
        }
        RawCondition::Paren(inner) => {
            matches!(**inner, RawCondition::Paren(_)) || condition_has_redundant_parentheses(inner)
        }
    }
}

fn operand_operators(operand: &RawOperand) -> usize {
    match operand {
        RawOperand::Path(_) | RawOperand::Value(_) => 0,
        RawOperand::Paren(inner) => operand_operators(inner),
        RawOperand::Call(_, arguments) => 1 + arguments.iter().map(operand_operators).sum::<usize>(),
        RawOperand::Plus(left, right) | RawOperand::Minus(left, right) => {
            1 + operand_operators(left) + operand_operators(right)
        }
    }
}

fn condition_operators(condition: &RawCondition) -> usize {
    match condition {
        RawCondition::Compare(_, left, right) => 1 + operand_operators(left) + operand_operators(right),
        RawCondition::Between(subject, low, high) => {
            1 + operand_operators(subject) + operand_operators(low) + operand_operators(high)
        }
        RawCondition::In(subject, list) => {
            1 + operand_operators(subject) + list.iter().map(operand_operators).sum::<usize>()
        }
        RawCondition::Call(_, arguments) => 1 + arguments.iter().map(operand_operators).sum::<usize>(),
        RawCondition::Not(inner) | RawCondition::Paren(inner) => {
            usize::from(matches!(condition, RawCondition::Not(_))) + condition_operators(inner)
        }
        RawCondition::And(left, right) | RawCondition::Or(left, right) => {
            1 + condition_operators(left) + condition_operators(right)
        }
    }
}

fn check_operator_count(count: usize, kind: ExpressionKind) -> Result<(), DynamoError> {
    if count > OPERATORS_MAX {
        // DynamoDB counts as it goes and stops at the first operator past the limit.
        return Err(
            kind.error(format!("The expression contains too many operators; operator count: {}", OPERATORS_MAX + 1))
        );
    }
    Ok(())
}

/// Where a call appears: as a condition, or as an operand.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Position {
    Condition,
    Operand,
}

/// Step 3 of the module doc: reserved words, index range, function names and placement.
struct NameCheck {
    kind: ExpressionKind,
}

impl NameCheck {
    fn path(&self, path: &RawPath) -> Result<(), DynamoError> {
        for element in &path.0 {
            match element {
                RawElement::Name(name) if is_reserved(name) => {
                    return Err(self
                        .kind
                        .error(format!("Attribute name is a reserved keyword; reserved keyword: {name}")));
                }
                RawElement::Index(digits) if digits.parse::<u64>().map_or(true, |index| index > LIST_INDEX_MAX) => {
                    return Err(self
                        .kind
                        .error(format!("List index is not within the allowable range; index: [{digits}]")));
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn call(&self, name: &str, arguments: &[RawOperand], position: Position) -> Result<(), DynamoError> {
        let Some(function) = Function::parse(name) else {
            return Err(self.kind.error(format!("Invalid function name; function: {name}")));
        };
        if self.kind == ExpressionKind::Update {
            if !function.allowed_in_update() {
                return Err(self
                    .kind
                    .error(format!("The function is not allowed in an update expression; function: {name}")));
            }
        } else if function.allowed_in_update() {
            return Err(self
                .kind
                .error(format!("The function is not allowed in a condition expression; function: {name}")));
        } else if function.is_condition() != (position == Position::Condition) {
            return Err(self
                .kind
                .error(format!("The function is not allowed to be used this way in an expression; function: {name}")));
        }
        arguments.iter().try_for_each(|argument| self.operand(argument))
    }

    fn operand(&self, operand: &RawOperand) -> Result<(), DynamoError> {
        match operand {
            RawOperand::Path(path) => self.path(path),
            RawOperand::Value(_) => Ok(()),
            RawOperand::Call(name, arguments) => self.call(name, arguments, Position::Operand),
            RawOperand::Paren(inner) => self.operand(inner),
            RawOperand::Plus(left, right) | RawOperand::Minus(left, right) => {
                self.operand(left)?;
                self.operand(right)
            }
        }
    }

    fn condition(&self, condition: &RawCondition) -> Result<(), DynamoError> {
        match condition {
            RawCondition::Compare(_, left, right) => {
                self.operand(left)?;
                self.operand(right)
            }
            RawCondition::Between(subject, low, high) => {
                [subject, low, high].into_iter().try_for_each(|operand| self.operand(operand))
            }
            RawCondition::In(subject, list) => {
                self.operand(subject)?;
                list.iter().try_for_each(|operand| self.operand(operand))
            }
            RawCondition::Call(name, arguments) => self.call(name, arguments, Position::Condition),
            RawCondition::Not(inner) | RawCondition::Paren(inner) => self.condition(inner),
            RawCondition::And(left, right) | RawCondition::Or(left, right) => {
                self.condition(left)?;
                self.condition(right)
            }
        }
    }
}

/// Step 5 of the module doc: placeholders and per-operator checks, children first.
struct Resolver<'p> {
    kind: ExpressionKind,
    placeholders: &'p mut Placeholders,
}

/// The type names DynamoDB prints for ADD and DELETE operands.
pub(crate) fn long_type_name(value_type: ValueType) -> &'static str {
    match value_type {
        ValueType::S => "STRING",
        ValueType::N => "NUMBER",
        ValueType::B => "BINARY",
        ValueType::Ss => "STRING_SET",
        ValueType::Ns => "NUMBER_SET",
        ValueType::Bs => "BINARY_SET",
        ValueType::M => "MAP",
        ValueType::L => "LIST",
        ValueType::Null => "NULL",
        ValueType::Bool => "BOOLEAN",
    }
}

/// How DynamoDB (Java) prints a BETWEEN bound in its messages.
fn java_attribute_value(value: &AttributeValue) -> String {
    match value {
        AttributeValue::S(text) => format!("AttributeValue: {{S:{text}}}"),
        AttributeValue::N(number) => format!("AttributeValue: {{N:{number}}}"),
        AttributeValue::B(bytes) => {
            format!("AttributeValue: {{B:java.nio.HeapByteBuffer[pos=0 lim={0} cap={0}]}}", bytes.len())
        }
        other => format!("AttributeValue: {other:?}"),
    }
}

impl Resolver<'_> {
    fn path(&mut self, path: &RawPath) -> Result<Path, DynamoError> {
        let mut elements = Vec::with_capacity(path.0.len());
        for element in &path.0 {
            elements.push(match element {
                RawElement::Name(name) => PathElement::Name(name.clone()),
                RawElement::Placeholder(placeholder) => {
                    PathElement::Name(self.placeholders.name(placeholder, self.kind)?)
                }
                RawElement::Index(digits) => {
                    PathElement::Index(digits.parse::<usize>().expect("index range checked before resolution"))
                }
            });
        }
        if elements.len() > PATH_ELEMENTS_MAX {
            return Err(self
                .kind
                .error(format!("The document path has too many nesting levels; nesting levels: {}", elements.len())));
        }
        Ok(Path::new(elements))
    }

    fn type_error(&self, operator: &str, value_type: impl std::fmt::Display) -> DynamoError {
        self.kind.error(format!(
            "Incorrect operand type for operator or function; operator or function: {operator}, operand type: {value_type}"
        ))
    }

    fn arity(&self, name: &str, function: Function, count: usize) -> Result<(), DynamoError> {
        if count != function.arity() {
            return Err(self.kind.error(format!(
                "Incorrect number of operands for operator or function; operator or function: {name}, number of operands: {count}"
            )));
        }
        Ok(())
    }

    fn require_path(&self, name: &str, operand: Operand) -> Result<Path, DynamoError> {
        match operand {
            Operand::Path(path) => Ok(path),
            _ => Err(self
                .kind
                .error(format!("Operator or function requires a document path; operator or function: {name}"))),
        }
    }

    /// The type an operand is known to have before evaluation: a value's type, or N for `size`
    /// and arithmetic.
    fn static_type(operand: &Operand) -> Option<ValueType> {
        match operand {
            Operand::Value(value) => Some(value.value_type()),
            Operand::Size(_) | Operand::Plus(..) | Operand::Minus(..) => Some(ValueType::N),
            Operand::ListAppend(..) => Some(ValueType::L),
            Operand::Path(_) | Operand::IfNotExists(..) => None,
        }
    }

    fn check_types(&self, operator: &str, operand: &Operand, allowed: &[ValueType]) -> Result<(), DynamoError> {
        match Self::static_type(operand) {
            Some(value_type) if !allowed.contains(&value_type) => Err(self.type_error(operator, value_type)),
            _ => Ok(()),
        }
    }

    fn check_distinct(&self, operator: &str, first: &Operand, rest: &[&Operand]) -> Result<(), DynamoError> {
        if let Operand::Path(path) = first
            && rest.iter().any(|other| matches!(other, Operand::Path(other) if other == path))
        {
            return Err(self.kind.error(format!(
                "The first operand must be distinct from the remaining operands for this operator or function; operator: {operator}, first operand: {path}"
            )));
        }
        Ok(())
    }

    // The recursive functions only dispatch: each arm's work is in its own function, so the
    // frames on the recursion path stay small (debug builds give a big match one frame holding
    // every arm's temporaries, which overflowed the stack at ~20 levels).
    fn operand(&mut self, operand: &RawOperand) -> Result<Operand, DynamoError> {
        match operand {
            RawOperand::Path(path) => Ok(Operand::Path(self.path(path)?)),
            RawOperand::Value(placeholder) => Ok(Operand::Value(self.placeholders.value(placeholder, self.kind)?)),
            RawOperand::Paren(inner) => self.operand(inner),
            RawOperand::Plus(left, right) => self.arithmetic("+", left, right),
            RawOperand::Minus(left, right) => self.arithmetic("-", left, right),
            RawOperand::Call(name, arguments) => self.operand_call(name, arguments),
        }
    }

    #[inline(never)]
    fn arithmetic(&mut self, symbol: &str, left: &RawOperand, right: &RawOperand) -> Result<Operand, DynamoError> {
        let left = self.operand(left)?;
        let right = self.operand(right)?;
        self.check_types(symbol, &left, &[ValueType::N])?;
        self.check_types(symbol, &right, &[ValueType::N])?;
        Ok(if symbol == "+" {
            Operand::Plus(Box::new(left), Box::new(right))
        } else {
            Operand::Minus(Box::new(left), Box::new(right))
        })
    }

    #[inline(never)]
    fn operand_call(&mut self, name: &str, arguments: &[RawOperand]) -> Result<Operand, DynamoError> {
        let function = Function::parse(name).expect("function names checked before resolution");
        let mut resolved = arguments.iter().map(|argument| self.operand(argument)).collect::<Result<Vec<_>, _>>()?;
        self.arity(name, function, resolved.len())?;
        Ok(match function {
            Function::Size => {
                const SIZED: [ValueType; 7] = [
                    ValueType::S,
                    ValueType::B,
                    ValueType::Ss,
                    ValueType::Ns,
                    ValueType::Bs,
                    ValueType::L,
                    ValueType::M,
                ];
                self.check_types(name, &resolved[0], &SIZED)?;
                Operand::Size(Box::new(resolved.remove(0)))
            }
            Function::IfNotExists => {
                let fallback = resolved.pop().expect("arity checked");
                let path = self.require_path(name, resolved.pop().expect("arity checked"))?;
                Operand::IfNotExists(path, Box::new(fallback))
            }
            Function::ListAppend => {
                self.check_types(name, &resolved[0], &[ValueType::L])?;
                self.check_types(name, &resolved[1], &[ValueType::L])?;
                let second = resolved.pop().expect("arity checked");
                let first = resolved.pop().expect("arity checked");
                Operand::ListAppend(Box::new(first), Box::new(second))
            }
            _ => unreachable!("condition functions are refused in operand position before resolution"),
        })
    }

    fn condition(&mut self, condition: &RawCondition) -> Result<Condition, DynamoError> {
        match condition {
            RawCondition::Compare(comparator, left, right) => self.compare(*comparator, left, right),
            RawCondition::Between(subject, low, high) => self.between(subject, low, high),
            RawCondition::In(subject, list) => self.in_list(subject, list),
            RawCondition::Call(name, arguments) => self.condition_call(name, arguments),
            RawCondition::Not(inner) => Ok(Condition::Not(Box::new(self.condition(inner)?))),
            RawCondition::Paren(inner) => self.condition(inner),
            RawCondition::And(left, right) => {
                let left = self.condition(left)?;
                Ok(Condition::And(Box::new(left), Box::new(self.condition(right)?)))
            }
            RawCondition::Or(left, right) => {
                let left = self.condition(left)?;
                Ok(Condition::Or(Box::new(left), Box::new(self.condition(right)?)))
            }
        }
    }

    #[inline(never)]
    fn compare(
        &mut self,
        comparator: Comparator,
        left: &RawOperand,
        right: &RawOperand,
    ) -> Result<Condition, DynamoError> {
        let left = self.operand(left)?;
        let right = self.operand(right)?;
        let symbol = comparator.as_str();
        if !matches!(comparator, Comparator::Equal | Comparator::NotEqual) {
            self.check_types(symbol, &left, &ORDERED)?;
            self.check_types(symbol, &right, &ORDERED)?;
        }
        self.check_distinct(symbol, &left, &[&right])?;
        Ok(Condition::Compare(comparator, left, right))
    }

    #[inline(never)]
    fn between(&mut self, subject: &RawOperand, low: &RawOperand, high: &RawOperand) -> Result<Condition, DynamoError> {
        let subject = self.operand(subject)?;
        let low = self.operand(low)?;
        let high = self.operand(high)?;
        for operand in [&subject, &low, &high] {
            self.check_types("BETWEEN", operand, &ORDERED)?;
        }
        self.check_distinct("BETWEEN", &subject, &[&low, &high])?;
        if let (Operand::Value(low_value), Operand::Value(high_value)) = (&low, &high) {
            if low_value.value_type() != high_value.value_type() {
                return Err(self.kind.error(format!(
                    "The BETWEEN operator requires same data type for lower and upper bounds; lower bound operand: {}, upper bound operand: {}",
                    java_attribute_value(low_value),
                    java_attribute_value(high_value)
                )));
            }
            if super::eval::compare_values(low_value, high_value) == Some(std::cmp::Ordering::Greater) {
                return Err(self.kind.error(format!(
                    "The BETWEEN operator requires upper bound to be greater than or equal to lower bound; lower bound operand: {}, upper bound operand: {}",
                    java_attribute_value(low_value),
                    java_attribute_value(high_value)
                )));
            }
        }
        Ok(Condition::Between(subject, low, high))
    }

    #[inline(never)]
    fn in_list(&mut self, subject: &RawOperand, list: &[RawOperand]) -> Result<Condition, DynamoError> {
        let subject = self.operand(subject)?;
        let list = list.iter().map(|operand| self.operand(operand)).collect::<Result<Vec<_>, _>>()?;
        if list.len() > IN_OPERANDS_MAX {
            return Err(self.kind.error(format!(
                "The IN operator is provided with too many operands; number of operands: {}",
                list.len()
            )));
        }
        self.check_distinct("IN", &subject, &list.iter().collect::<Vec<_>>())?;
        Ok(Condition::In(subject, list))
    }

    #[inline(never)]
    fn condition_call(&mut self, name: &str, arguments: &[RawOperand]) -> Result<Condition, DynamoError> {
        let function = Function::parse(name).expect("function names checked before resolution");
        let mut resolved = arguments.iter().map(|argument| self.operand(argument)).collect::<Result<Vec<_>, _>>()?;
        self.arity(name, function, resolved.len())?;
        Ok(match function {
            Function::AttributeExists => Condition::AttributeExists(self.require_path(name, resolved.remove(0))?),
            Function::AttributeNotExists => Condition::AttributeNotExists(self.require_path(name, resolved.remove(0))?),
            Function::AttributeType => {
                let descriptor = resolved.pop().expect("arity checked");
                let path = self.require_path(name, resolved.pop().expect("arity checked"))?;
                let value_type = match descriptor {
                    Operand::Value(AttributeValue::S(text)) => ValueType::parse(&text).ok_or_else(|| {
                        self.kind.error(format!(
                            "Invalid attribute type name found; type: {text}, valid types: {{N,BS,L,B,NULL,M,S,SS,NS,BOOL}}"
                        ))
                    })?,
                    Operand::Path(_) => {
                        // DynamoDB Local's own wording, internal type names included.
                        return Err(self.type_error(
                            name,
                            "{M,BOOL,DICT,S,L,HD,HDS,INTSET,DECIMAL,B,DOUBLESET,BS,DECIMALSET,SS,NS,INT,N,FLOAT,DOUBLE,NULL,FS}",
                        ));
                    }
                    other => {
                        let value_type = Self::static_type(&other).unwrap_or(ValueType::N);
                        return Err(self.type_error(name, value_type));
                    }
                };
                Condition::AttributeType(path, value_type)
            }
            Function::BeginsWith => {
                self.check_types(name, &resolved[0], &[ValueType::S, ValueType::B])?;
                self.check_types(name, &resolved[1], &[ValueType::S, ValueType::B])?;
                self.check_distinct(name, &resolved[0], &[&resolved[1]])?;
                let prefix = resolved.pop().expect("arity checked");
                Condition::BeginsWith(resolved.pop().expect("arity checked"), prefix)
            }
            Function::Contains => {
                self.check_distinct(name, &resolved[0], &[&resolved[1]])?;
                let member = resolved.pop().expect("arity checked");
                Condition::Contains(resolved.pop().expect("arity checked"), member)
            }
            _ => unreachable!("operand functions are refused in condition position before resolution"),
        })
    }
}

/// The types `<`, `<=`, `>`, `>=` and `BETWEEN` order.
const ORDERED: [ValueType; 3] = [ValueType::N, ValueType::S, ValueType::B];

/// Whether two paths overlap (one is a prefix of the other) or conflict (they diverge at one
/// step where one indexes a list and the other looks up a map key).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Clash {
    Overlap,
    Conflict,
}

fn clash(one: &Path, two: &Path) -> Option<Clash> {
    for (left, right) in one.elements().iter().zip(two.elements()) {
        match (left, right) {
            _ if left == right => continue,
            (PathElement::Name(_), PathElement::Name(_)) | (PathElement::Index(_), PathElement::Index(_)) => {
                return None;
            }
            _ => return Some(Clash::Conflict),
        }
    }
    Some(Clash::Overlap)
}

/// DynamoDB's check that no two paths of an update (or projection) touch the same data.
///
/// DynamoDB Local names the pair oddly: the earlier path of the first clashing pair, and then
/// the path written just before the later one (or the later one itself when the two are
/// adjacent). We reproduce that so that messages match.
pub(crate) fn check_paths_disjoint(paths: &[&Path], kind: ExpressionKind) -> Result<(), DynamoError> {
    for later in 1..paths.len() {
        for earlier in 0..later {
            if let Some(found) = clash(paths[earlier], paths[later]) {
                let second = if earlier + 1 == later { paths[later] } else { paths[later - 1] };
                let word = if found == Clash::Overlap { "overlap" } else { "conflict" };
                return Err(kind.error(format!(
                    "Two document paths {word} with each other; must remove or rewrite one of these paths; path one: {}, path two: {}",
                    paths[earlier], second
                )));
            }
        }
    }
    Ok(())
}

/// Resolves a condition-like expression (condition, filter, key condition).
pub(crate) fn resolve_condition(
    text: &str,
    kind: ExpressionKind,
    placeholders: &mut Placeholders,
) -> Result<Condition, DynamoError> {
    if !text.is_empty() {
        check_size(text, kind)?;
    }
    let raw = super::syntax::parse_condition(text, kind)?;
    if condition_has_redundant_parentheses(&raw) {
        return Err(redundant_parentheses(kind));
    }
    check_operator_count(condition_operators(&raw), kind)?;
    NameCheck { kind }.condition(&raw)?;
    Resolver { kind, placeholders }.condition(&raw)
}

/// Resolves an update expression.
pub(crate) fn resolve_update(text: &str, placeholders: &mut Placeholders) -> Result<Update, DynamoError> {
    let kind = ExpressionKind::Update;
    if !text.is_empty() {
        check_size(text, kind)?;
    }
    let raw = super::syntax::parse_update(text)?;
    let has_redundant = raw.actions.iter().any(|action| match action {
        RawAction::Set(_, operand) => {
            matches!(operand, RawOperand::Paren(inner) if matches!(**inner, RawOperand::Paren(_)))
                || operand_has_redundant_parentheses(operand)
        }
        _ => false,
    });
    if has_redundant {
        return Err(redundant_parentheses(kind));
    }
    let operators: usize = raw
        .actions
        .iter()
        .map(|action| match action {
            RawAction::Set(_, operand) => operand_operators(operand),
            _ => 0,
        })
        .sum();
    check_operator_count(operators, kind)?;
    if let Some(clause) = raw.repeated_clause {
        return Err(kind.error(format!("The \"{clause}\" section can only be used once in an update expression;")));
    }
    let check = NameCheck { kind };
    for action in &raw.actions {
        match action {
            RawAction::Set(path, operand) => {
                check.path(path)?;
                check.operand(operand)?;
            }
            RawAction::Remove(path) | RawAction::Add(path, _) | RawAction::Delete(path, _) => check.path(path)?,
        }
    }
    let mut resolver = Resolver { kind, placeholders };
    let mut targets = Vec::with_capacity(raw.actions.len());
    for action in &raw.actions {
        let (RawAction::Set(path, _) | RawAction::Remove(path) | RawAction::Add(path, _) | RawAction::Delete(path, _)) =
            action;
        targets.push(resolver.path(path)?);
    }
    check_paths_disjoint(&targets.iter().collect::<Vec<_>>(), kind)?;
    let mut actions = Vec::with_capacity(raw.actions.len());
    for (action, target) in raw.actions.iter().zip(targets) {
        actions.push(match action {
            RawAction::Set(_, operand) => UpdateAction::Set(target, resolver.operand(operand)?),
            RawAction::Remove(_) => UpdateAction::Remove(target),
            RawAction::Add(_, placeholder) | RawAction::Delete(_, placeholder) => {
                let value = resolver.placeholders.value(placeholder, kind)?;
                let is_add = matches!(action, RawAction::Add(..));
                let allowed: &[ValueType] = if is_add {
                    &[ValueType::N, ValueType::Ss, ValueType::Ns, ValueType::Bs]
                } else {
                    &[ValueType::Ss, ValueType::Ns, ValueType::Bs]
                };
                if !allowed.contains(&value.value_type()) {
                    let (operator, type_set) =
                        if is_add { ("ADD", "ALLOWED_FOR_ADD_OPERAND") } else { ("DELETE", "ALLOWED_FOR_DELETE_OPERAND") };
                    return Err(kind.error(format!(
                        "Incorrect operand type for operator or function; operator: {operator}, operand type: {}, typeSet: {type_set}",
                        long_type_name(value.value_type())
                    )));
                }
                if is_add { UpdateAction::Add(target, value) } else { UpdateAction::Delete(target, value) }
            }
        });
    }
    Ok(Update { actions })
}

/// Resolves a projection expression.
pub(crate) fn resolve_projection(text: &str, placeholders: &mut Placeholders) -> Result<Projection, DynamoError> {
    let kind = ExpressionKind::Projection;
    if !text.is_empty() {
        check_size(text, kind)?;
    }
    let raw = super::syntax::parse_projection(text)?;
    let check = NameCheck { kind };
    raw.iter().try_for_each(|path| check.path(path))?;
    let mut resolver = Resolver { kind, placeholders };
    let paths = raw.iter().map(|path| resolver.path(path)).collect::<Result<Vec<_>, _>>()?;
    check_paths_disjoint(&paths.iter().collect::<Vec<_>>(), kind)?;
    Ok(Projection { paths })
}

//! Evaluating conditions against an item.
//!
//! DynamoDB's rules, checked against DynamoDB Local: an operand whose path is missing has no
//! value, and every comparison with no value is false, except `<>`, which is exactly `NOT =`
//! (so `missing <> :v` and even `missing <> other_missing` are true). Values of different types
//! are never equal and never ordered. Only numbers (numerically), strings and binaries (bytewise)
//! are ordered. `size` counts a string in UTF-16 code units (as Java does: `size("😀")` is 2), a
//! binary in bytes, and sets, lists and maps by elements.

use std::cmp::Ordering;

use crate::error::DynamoError;
use crate::number::Number;
use crate::value::{AttributeValue, Item};

use super::ast::{Comparator, Condition, Operand, Path, PathElement};

/// The value at `path` in `item`, if there is one.
pub fn lookup<'i>(item: &'i Item, path: &Path) -> Option<&'i AttributeValue> {
    let mut elements = path.elements().iter();
    let mut current = item.get(path.attribute_name())?;
    elements.next();
    for element in elements {
        current = match (element, current) {
            (PathElement::Name(name), AttributeValue::M(map)) => map.get(name)?,
            (PathElement::Index(index), AttributeValue::L(list)) => list.get(*index)?,
            _ => return None,
        };
    }
    Some(current)
}

/// Orders two values of the same ordered type (N, S, B); `None` for anything else.
pub fn compare_values(left: &AttributeValue, right: &AttributeValue) -> Option<Ordering> {
    match (left, right) {
        (AttributeValue::N(left), AttributeValue::N(right)) => Some(left.cmp(right)),
        (AttributeValue::S(left), AttributeValue::S(right)) => Some(left.as_bytes().cmp(right.as_bytes())),
        (AttributeValue::B(left), AttributeValue::B(right)) => Some(left.cmp(right)),
        _ => None,
    }
}

/// `size()` of a value, or `None` for types that have no size.
pub fn size_of(value: &AttributeValue) -> Option<usize> {
    Some(match value {
        AttributeValue::S(text) => text.encode_utf16().count(),
        AttributeValue::B(bytes) => bytes.len(),
        AttributeValue::Ss(set) => set.len(),
        AttributeValue::Ns(set) => set.len(),
        AttributeValue::Bs(set) => set.len(),
        AttributeValue::L(list) => list.len(),
        AttributeValue::M(map) => map.len(),
        AttributeValue::N(_) | AttributeValue::Null | AttributeValue::Bool(_) => return None,
    })
}

fn contains_subsequence(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|window| window == needle)
}

/// A condition operand's value, borrowed from the item or the expression where possible.
enum Evaluated<'a> {
    Borrowed(&'a AttributeValue),
    Owned(AttributeValue),
}

impl Evaluated<'_> {
    fn get(&self) -> &AttributeValue {
        match self {
            Evaluated::Borrowed(value) => value,
            Evaluated::Owned(value) => value,
        }
    }
}

fn operand_value<'a>(operand: &'a Operand, item: Option<&'a Item>) -> Option<Evaluated<'a>> {
    match operand {
        Operand::Path(path) => item.and_then(|item| lookup(item, path)).map(Evaluated::Borrowed),
        Operand::Value(value) => Some(Evaluated::Borrowed(value)),
        Operand::Size(inner) => {
            let inner = operand_value(inner, item)?;
            let size = size_of(inner.get())?;
            Some(Evaluated::Owned(AttributeValue::N(Number::from_i64(i64::try_from(size).ok()?))))
        }
        // Update-only operands never survive resolution of a condition.
        Operand::IfNotExists(..) | Operand::ListAppend(..) | Operand::Plus(..) | Operand::Minus(..) => None,
    }
}

fn compare(comparator: Comparator, left: Option<&AttributeValue>, right: Option<&AttributeValue>) -> bool {
    let (Some(left), Some(right)) = (left, right) else {
        return comparator == Comparator::NotEqual;
    };
    match comparator {
        Comparator::Equal => left == right,
        Comparator::NotEqual => left != right,
        Comparator::Less => compare_values(left, right) == Some(Ordering::Less),
        Comparator::LessOrEqual => matches!(compare_values(left, right), Some(Ordering::Less | Ordering::Equal)),
        Comparator::Greater => compare_values(left, right) == Some(Ordering::Greater),
        Comparator::GreaterOrEqual => {
            matches!(compare_values(left, right), Some(Ordering::Greater | Ordering::Equal))
        }
    }
}

fn contains(subject: &AttributeValue, member: &AttributeValue) -> bool {
    match (subject, member) {
        (AttributeValue::S(text), AttributeValue::S(part)) => text.contains(part.as_str()),
        (AttributeValue::B(bytes), AttributeValue::B(part)) => contains_subsequence(bytes, part),
        (AttributeValue::Ss(set), AttributeValue::S(element)) => set.binary_search(element).is_ok(),
        (AttributeValue::Ns(set), AttributeValue::N(element)) => set.binary_search(element).is_ok(),
        (AttributeValue::Bs(set), AttributeValue::B(element)) => set.binary_search(element).is_ok(),
        (AttributeValue::L(list), element) => list.contains(element),
        _ => false,
    }
}

fn begins_with(subject: &AttributeValue, prefix: &AttributeValue) -> bool {
    match (subject, prefix) {
        (AttributeValue::S(text), AttributeValue::S(prefix)) => text.starts_with(prefix.as_str()),
        (AttributeValue::B(bytes), AttributeValue::B(prefix)) => bytes.starts_with(prefix),
        _ => false,
    }
}

impl Condition {
    /// Evaluates the condition against `item` (`None`: no such item, every path is missing).
    ///
    /// Pure and deterministic. Every check DynamoDB makes before evaluation was made during
    /// resolution, so this cannot fail today; the `Result` leaves room for run-time errors.
    pub fn evaluate(&self, item: Option<&Item>) -> Result<bool, DynamoError> {
        Ok(self.holds(item))
    }

    fn holds(&self, item: Option<&Item>) -> bool {
        let value = |operand| operand_value(operand, item);
        match self {
            Condition::True => true,
            Condition::Compare(comparator, left, right) => {
                let (left, right) = (value(left), value(right));
                compare(*comparator, left.as_ref().map(Evaluated::get), right.as_ref().map(Evaluated::get))
            }
            Condition::Between(subject, low, high) => {
                let (Some(subject), Some(low), Some(high)) = (value(subject), value(low), value(high)) else {
                    return false;
                };
                matches!(compare_values(subject.get(), low.get()), Some(Ordering::Greater | Ordering::Equal))
                    && matches!(compare_values(subject.get(), high.get()), Some(Ordering::Less | Ordering::Equal))
            }
            Condition::In(subject, candidates) => {
                let Some(subject) = value(subject) else {
                    return false;
                };
                candidates
                    .iter()
                    .any(|candidate| value(candidate).is_some_and(|candidate| candidate.get() == subject.get()))
            }
            Condition::AttributeExists(path) => item.and_then(|item| lookup(item, path)).is_some(),
            Condition::AttributeNotExists(path) => item.and_then(|item| lookup(item, path)).is_none(),
            Condition::AttributeType(path, value_type) => {
                item.and_then(|item| lookup(item, path)).is_some_and(|found| found.value_type() == *value_type)
            }
            Condition::BeginsWith(subject, prefix) => match (value(subject), value(prefix)) {
                (Some(subject), Some(prefix)) => begins_with(subject.get(), prefix.get()),
                _ => false,
            },
            Condition::Contains(subject, member) => match (value(subject), value(member)) {
                (Some(subject), Some(member)) => contains(subject.get(), member.get()),
                _ => false,
            },
            Condition::Not(inner) => !inner.holds(item),
            Condition::And(left, right) => left.holds(item) && right.holds(item),
            Condition::Or(left, right) => left.holds(item) || right.holds(item),
        }
    }
}

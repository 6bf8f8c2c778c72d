//! Resolved expressions: every placeholder replaced by its name or value, every check done.
//!
//! These trees own their data (no borrow from the request), so a caller can keep them, move them
//! to another thread, and run them again: evaluation is a pure function of the tree and the item.

use std::fmt;

use crate::value::{AttributeValue, ValueType};

pub use super::syntax::Comparator;

/// One step of a document path.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PathElement {
    /// A map key (or, first in a path, a top-level attribute name).
    Name(String),
    /// A list index.
    Index(usize),
}

/// A document path: a top-level attribute name followed by map keys and list indexes.
///
/// Invariant: non-empty, and the first element is a [`PathElement::Name`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Path(Vec<PathElement>);

impl Path {
    /// A path from its elements.
    ///
    /// # Panics
    /// If `elements` is empty or does not start with a name.
    pub fn new(elements: Vec<PathElement>) -> Path {
        assert!(matches!(elements.first(), Some(PathElement::Name(_))), "a path starts with an attribute name");
        Path(elements)
    }

    /// The path of a top-level attribute.
    pub fn attribute(name: impl Into<String>) -> Path {
        Path(vec![PathElement::Name(name.into())])
    }

    /// The elements, first the top-level attribute name.
    pub fn elements(&self) -> &[PathElement] {
        &self.0
    }

    /// The top-level attribute this path starts at.
    pub fn attribute_name(&self) -> &str {
        match &self.0[0] {
            PathElement::Name(name) => name,
            PathElement::Index(_) => unreachable!("a path starts with a name"),
        }
    }
}

/// Formats as DynamoDB does in messages: `[a, b, [3]]`.
impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (position, element) in self.0.iter().enumerate() {
            if position > 0 {
                f.write_str(", ")?;
            }
            match element {
                PathElement::Name(name) => f.write_str(name)?,
                PathElement::Index(index) => write!(f, "[{index}]")?,
            }
        }
        f.write_str("]")
    }
}

/// An operand: something that evaluates to a value (or to nothing, for a missing path).
#[derive(Clone, Debug, PartialEq)]
pub enum Operand {
    /// The value at a document path of the item.
    Path(Path),
    /// A value from `ExpressionAttributeValues`.
    Value(AttributeValue),
    /// `size(operand)`: the size of a string, binary, set, list or map (conditions only).
    Size(Box<Operand>),
    /// `if_not_exists(path, operand)` (updates only).
    IfNotExists(Path, Box<Operand>),
    /// `list_append(operand, operand)` (updates only).
    ListAppend(Box<Operand>, Box<Operand>),
    /// `operand + operand` on numbers (updates only).
    Plus(Box<Operand>, Box<Operand>),
    /// `operand - operand` on numbers (updates only).
    Minus(Box<Operand>, Box<Operand>),
}

/// A condition (`ConditionExpression`, `FilterExpression`, or a legacy `Expected`/`QueryFilter`).
#[derive(Clone, Debug, PartialEq)]
pub enum Condition {
    /// `left <comparator> right`.
    Compare(Comparator, Operand, Operand),
    /// `subject BETWEEN low AND high` (both bounds inclusive).
    Between(Operand, Operand, Operand),
    /// `subject IN (candidates…)`.
    In(Operand, Vec<Operand>),
    /// `attribute_exists(path)`.
    AttributeExists(Path),
    /// `attribute_not_exists(path)`.
    AttributeNotExists(Path),
    /// `attribute_type(path, :type)`.
    AttributeType(Path, ValueType),
    /// `begins_with(subject, prefix)`.
    BeginsWith(Operand, Operand),
    /// `contains(subject, operand)`.
    Contains(Operand, Operand),
    /// `NOT condition`.
    Not(Box<Condition>),
    /// `left AND right`.
    And(Box<Condition>, Box<Condition>),
    /// `left OR right`.
    Or(Box<Condition>, Box<Condition>),
    /// Always true (legacy parameters with no conditions).
    True,
}

/// One action of an update.
#[derive(Clone, Debug, PartialEq)]
pub enum UpdateAction {
    /// `SET path = operand`.
    Set(Path, Operand),
    /// `REMOVE path`.
    Remove(Path),
    /// `ADD path value`: add to a number, or union into a set.
    Add(Path, AttributeValue),
    /// `DELETE path value`: remove elements from a set.
    Delete(Path, AttributeValue),
}

impl UpdateAction {
    /// The document path this action writes.
    pub fn path(&self) -> &Path {
        match self {
            UpdateAction::Set(path, _)
            | UpdateAction::Remove(path)
            | UpdateAction::Add(path, _)
            | UpdateAction::Delete(path, _) => path,
        }
    }
}

/// A resolved update: its actions in textual order. No two actions' paths overlap.
#[derive(Clone, Debug, PartialEq)]
pub struct Update {
    /// The actions, in the order written.
    pub actions: Vec<UpdateAction>,
}

/// A resolved projection: the document paths to keep, in the order written.
#[derive(Clone, Debug, PartialEq)]
pub struct Projection {
    /// The paths; no two overlap.
    pub paths: Vec<Path>,
}

/// The condition on the sort key of a key condition.
#[derive(Clone, Debug, PartialEq)]
pub enum SortKeyCondition {
    /// `sk <comparator> :v`; never `<>`.
    Compare(Comparator, AttributeValue),
    /// `sk BETWEEN :low AND :high`.
    Between(AttributeValue, AttributeValue),
    /// `begins_with(sk, :prefix)`.
    BeginsWith(AttributeValue),
}

/// One condition of a key condition, on one attribute.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyPart {
    /// The attribute (a top-level name).
    pub attribute: String,
    /// What it must satisfy. For the partition key this must be `Compare(Equal, _)`; the
    /// schema-specific checks belong to the caller, which knows the key schema.
    pub condition: SortKeyCondition,
}

/// A resolved key condition: one or two conditions joined by `AND`, in textual order. Which one
/// is the partition key is decided by the caller against the table's key schema.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyCondition {
    /// One or two parts, on distinct attributes.
    pub parts: Vec<KeyPart>,
}

impl Operand {
    /// Calls `visit` on every document path this operand reads.
    pub fn for_each_path(&self, visit: &mut impl FnMut(&Path)) {
        match self {
            Operand::Path(path) => visit(path),
            Operand::Value(_) => {}
            Operand::Size(inner) => inner.for_each_path(visit),
            Operand::IfNotExists(path, fallback) => {
                visit(path);
                fallback.for_each_path(visit);
            }
            Operand::ListAppend(left, right) | Operand::Plus(left, right) | Operand::Minus(left, right) => {
                left.for_each_path(visit);
                right.for_each_path(visit);
            }
        }
    }
}

impl Condition {
    /// Calls `visit` on every document path this condition reads.
    pub fn for_each_path(&self, visit: &mut impl FnMut(&Path)) {
        match self {
            Condition::Compare(_, left, right)
            | Condition::BeginsWith(left, right)
            | Condition::Contains(left, right) => {
                left.for_each_path(visit);
                right.for_each_path(visit);
            }
            Condition::Between(subject, low, high) => {
                for operand in [subject, low, high] {
                    operand.for_each_path(visit);
                }
            }
            Condition::In(subject, candidates) => {
                subject.for_each_path(visit);
                for candidate in candidates {
                    candidate.for_each_path(visit);
                }
            }
            Condition::AttributeExists(path)
            | Condition::AttributeNotExists(path)
            | Condition::AttributeType(path, _) => visit(path),
            Condition::Not(inner) => inner.for_each_path(visit),
            Condition::And(left, right) | Condition::Or(left, right) => {
                left.for_each_path(visit);
                right.for_each_path(visit);
            }
            Condition::True => {}
        }
    }
}

impl Update {
    /// Calls `visit` on every document path this update writes or reads.
    pub fn for_each_path(&self, visit: &mut impl FnMut(&Path)) {
        for action in &self.actions {
            visit(action.path());
            if let UpdateAction::Set(_, operand) = action {
                operand.for_each_path(visit);
            }
        }
    }
}

//! Applying a projection to an item.
//!
//! Each path that exists in the item is copied into the result at the same place: `a.b` gives
//! `{a: {b: …}}`, and several paths under one map merge. List elements picked by index are
//! gathered into a list in index order, without gaps (`l[3], l[1]` gives `[l1, l3]`), as
//! DynamoDB does. Paths that are missing contribute nothing.

use std::collections::BTreeMap;

use crate::value::{AttributeValue, Item};

use super::ast::{PathElement, Projection};

/// The part of the result built so far under one place.
enum Node {
    /// A whole value, copied.
    Whole(AttributeValue),
    /// Some members of a map.
    Members(BTreeMap<String, Node>),
    /// Some elements of a list, by their index in the source.
    Elements(BTreeMap<usize, Node>),
}

impl Node {
    fn is_empty(&self) -> bool {
        match self {
            Node::Whole(_) => false,
            Node::Members(members) => members.is_empty(),
            Node::Elements(elements) => elements.is_empty(),
        }
    }

    fn into_value(self) -> AttributeValue {
        match self {
            Node::Whole(value) => value,
            Node::Members(members) => {
                AttributeValue::M(members.into_iter().map(|(name, node)| (name, node.into_value())).collect())
            }
            Node::Elements(elements) => AttributeValue::L(elements.into_values().map(Node::into_value).collect()),
        }
    }
}

/// Copies `source` at `rest` into `node`. Returns false if the path is missing.
fn insert(node: &mut Node, source: &AttributeValue, rest: &[PathElement]) -> bool {
    let Some((first, rest)) = rest.split_first() else {
        *node = Node::Whole(source.clone());
        return true;
    };
    match (first, source) {
        (PathElement::Name(name), AttributeValue::M(map)) => {
            let Some(child) = map.get(name) else {
                return false;
            };
            if !matches!(node, Node::Members(_)) {
                *node = Node::Members(BTreeMap::new());
            }
            let Node::Members(members) = node else { unreachable!("set just above") };
            let mut child_node = members.remove(name).unwrap_or(Node::Members(BTreeMap::new()));
            let found = insert(&mut child_node, child, rest);
            // Keep what earlier paths put here even when this one was missing.
            if found || !child_node.is_empty() {
                members.insert(name.clone(), child_node);
            }
            found
        }
        (PathElement::Index(index), AttributeValue::L(list)) => {
            let Some(child) = list.get(*index) else {
                return false;
            };
            if !matches!(node, Node::Elements(_)) {
                *node = Node::Elements(BTreeMap::new());
            }
            let Node::Elements(elements) = node else { unreachable!("set just above") };
            let mut child_node = elements.remove(index).unwrap_or(Node::Members(BTreeMap::new()));
            let found = insert(&mut child_node, child, rest);
            if found || !child_node.is_empty() {
                elements.insert(*index, child_node);
            }
            found
        }
        _ => false,
    }
}

impl Projection {
    /// The projected item: only the parts of `item` that the paths name.
    pub fn apply(&self, item: &Item) -> Item {
        let mut top: BTreeMap<String, Node> = BTreeMap::new();
        for path in &self.paths {
            let name = path.attribute_name();
            let Some(value) = item.get(name) else {
                continue;
            };
            let mut node = top.remove(name).unwrap_or(Node::Members(BTreeMap::new()));
            let found = insert(&mut node, value, &path.elements()[1..]);
            // Keep what earlier paths put here even when this one was missing.
            if found || !node.is_empty() {
                top.insert(name.to_string(), node);
            }
        }
        top.into_iter().map(|(name, node)| (name, node.into_value())).collect()
    }
}

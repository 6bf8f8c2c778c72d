//! The bridge between requests and the pure expression language of `onggi_model::expr`.
//!
//! (Interim: expressions are refused until the expression module lands.)

use onggi_model::ops::{DeleteItemInput, GetItemInput, PutItemInput, UpdateItemInput};
use onggi_model::table::TableSchema;
use onggi_model::{DynamoError, Item};

/// The expressions of one request, parsed, resolved and checked.
pub(crate) struct Prepared {}

/// The result of applying an update.
pub(crate) struct UpdateOutcome {
    /// The item after the update.
    pub item: Item,
    /// Projects an item onto the paths the update touched (for `UPDATED_OLD` / `UPDATED_NEW`).
    pub project_updated: Box<dyn Fn(&Item) -> Item + Send>,
}

fn unsupported(what: bool) -> Result<(), DynamoError> {
    if what { Err(DynamoError::validation("expressions are not supported yet")) } else { Ok(()) }
}

pub(crate) fn for_put(input: &PutItemInput) -> Result<Prepared, DynamoError> {
    unsupported(input.condition_expression.is_some() || input.expected.is_some())?;
    Ok(Prepared {})
}

pub(crate) fn for_get(input: &GetItemInput) -> Result<Prepared, DynamoError> {
    unsupported(input.projection_expression.is_some() || input.attributes_to_get.is_some())?;
    Ok(Prepared {})
}

pub(crate) fn for_update(input: &UpdateItemInput) -> Result<Prepared, DynamoError> {
    unsupported(input.condition_expression.is_some() || input.update_expression.is_some())?;
    Ok(Prepared {})
}

pub(crate) fn for_delete(input: &DeleteItemInput) -> Result<Prepared, DynamoError> {
    unsupported(input.condition_expression.is_some() || input.expected.is_some())?;
    Ok(Prepared {})
}

impl Prepared {
    pub(crate) fn check(&self, _old: Option<&Item>) -> Result<bool, DynamoError> {
        Ok(true)
    }

    pub(crate) fn project(&self, item: Item) -> Item {
        item
    }

    pub(crate) fn apply_update(&self, base: &Item, _schema: &TableSchema) -> Result<UpdateOutcome, DynamoError> {
        Ok(UpdateOutcome { item: base.clone(), project_updated: Box::new(|_| Item::new()) })
    }
}

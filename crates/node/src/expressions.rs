//! The bridge between request members and the pure expression language of `onggi_model::expr`.
//!
//! Each operation gathers its expression members (and legacy parameters) into one
//! [`RequestExpressions`], which resolves placeholders and reports DynamoDB's first error for the
//! request as a whole. The resolved trees are owned and pure, so the node can evaluate them while
//! holding an item's lock — and a consensus retry could evaluate them again.

use onggi_model::expr::{Operation, RequestExpressions, ResolvedExpressions, UpdateOutcome};
use onggi_model::ops::{DeleteItemInput, GetItemInput, JsonMap, PutItemInput, UpdateItemInput};
use onggi_model::table::TableSchema;
use onggi_model::{DynamoError, Item};
use serde_json::Value as Json;

/// The update expression's message for an operand of the wrong type.
const INCORRECT_OPERAND_TYPE: &str = "An operand in the update expression has an incorrect data type";

/// The expressions of one request, parsed, resolved and checked.
pub(crate) struct Prepared {
    resolved: ResolvedExpressions,
    /// The update came from legacy `AttributeUpdates`, whose type errors DynamoDB words differently.
    legacy_update: bool,
}

impl From<ResolvedExpressions> for Prepared {
    fn from(resolved: ResolvedExpressions) -> Prepared {
        Prepared { resolved, legacy_update: false }
    }
}

/// The expression members every conditional write (Put, Update, Delete) has.
fn conditional_write<'r>(
    operation: Operation,
    condition: &'r Option<String>,
    names: &'r Option<JsonMap>,
    values: &'r Option<JsonMap>,
    expected: &'r Option<Json>,
    conditional_operator: &'r Option<Json>,
) -> RequestExpressions<'r> {
    let mut request = RequestExpressions::new(operation);
    request.condition = condition.as_deref();
    request.names = names.as_ref();
    request.values = values.as_ref();
    request.expected = expected.as_ref();
    request.conditional_operator = conditional_operator.as_ref();
    request
}

pub(crate) fn for_put(input: &PutItemInput) -> Result<Prepared, DynamoError> {
    let request = conditional_write(
        Operation::PutItem,
        &input.condition_expression,
        &input.expression_attribute_names,
        &input.expression_attribute_values,
        &input.expected,
        &input.conditional_operator,
    );
    Ok(request.resolve()?.into())
}

pub(crate) fn for_get(input: &GetItemInput) -> Result<Prepared, DynamoError> {
    let mut request = RequestExpressions::new(Operation::GetItem);
    request.projection = input.projection_expression.as_deref();
    request.names = input.expression_attribute_names.as_ref();
    request.attributes_to_get = input.attributes_to_get.as_ref();
    Ok(request.resolve()?.into())
}

pub(crate) fn for_update(input: &UpdateItemInput, schema: &TableSchema) -> Result<Prepared, DynamoError> {
    let mut request = conditional_write(
        Operation::UpdateItem,
        &input.condition_expression,
        &input.expression_attribute_names,
        &input.expression_attribute_values,
        &input.expected,
        &input.conditional_operator,
    );
    request.update = input.update_expression.as_deref();
    request.attribute_updates = input.attribute_updates.as_ref();
    let resolved = request.resolve()?;
    // Key attributes are refused from the expression itself, before the item is read.
    if let Some(update) = &resolved.update {
        for action in &update.actions {
            let attribute = action.path().attribute_name();
            if schema.key.names().any(|key| key == attribute) {
                return Err(DynamoError::validation(format!(
                    "One or more parameter values were invalid: Cannot update attribute {attribute}. This attribute is part of the key"
                )));
            }
        }
    }
    Ok(Prepared { resolved, legacy_update: input.attribute_updates.is_some() })
}

pub(crate) fn for_delete(input: &DeleteItemInput) -> Result<Prepared, DynamoError> {
    let request = conditional_write(
        Operation::DeleteItem,
        &input.condition_expression,
        &input.expression_attribute_names,
        &input.expression_attribute_values,
        &input.expected,
        &input.conditional_operator,
    );
    Ok(request.resolve()?.into())
}

/// Refuses document paths that look inside a key attribute (`pk.x`, `pk[0]`): key attributes are
/// scalars, and DynamoDB says so rather than evaluating the path as missing.
pub(crate) fn check_key_paths(resolved: &ResolvedExpressions, schema: &TableSchema) -> Result<(), DynamoError> {
    let mut offending: Option<String> = None;
    let mut visit = |path: &onggi_model::expr::Path| {
        if offending.is_none()
            && path.elements().len() > 1
            && schema.key.names().any(|key| key == path.attribute_name())
        {
            offending = Some(path.attribute_name().to_string());
        }
    };
    for condition in resolved.condition.iter().chain(&resolved.filter) {
        condition.for_each_path(&mut visit);
    }
    if let Some(update) = &resolved.update {
        update.for_each_path(&mut visit);
    }
    if let Some(projection) = &resolved.projection {
        projection.paths.iter().for_each(&mut visit);
    }
    match offending {
        Some(key) => Err(DynamoError::validation(format!(
            "Key attributes must be scalars; list random access '[]' and map lookup '.' are not allowed: Key: {key}"
        ))),
        None => Ok(()),
    }
}

impl Prepared {
    /// Checks the expressions against the table's key schema.
    pub(crate) fn check_against(&self, schema: &TableSchema) -> Result<(), DynamoError> {
        check_key_paths(&self.resolved, schema)
    }

    /// No condition, no update, no projection: what each write of BatchWriteItem evaluates.
    pub(crate) fn unconditional() -> Prepared {
        ResolvedExpressions::default().into()
    }

    /// Whether the request's condition holds for the current item (`None`: no item).
    pub(crate) fn check(&self, current: Option<&Item>) -> Result<bool, DynamoError> {
        match &self.resolved.condition {
            Some(condition) => condition.evaluate(current),
            None => Ok(true),
        }
    }

    /// The item as the request's projection shows it.
    pub(crate) fn project(&self, item: Item) -> Item {
        match &self.resolved.projection {
            Some(projection) => projection.apply(&item),
            None => item,
        }
    }

    /// Applies the request's update to `base` (the current item, or the key alone).
    pub(crate) fn apply_update(&self, base: &Item) -> Result<UpdateOutcome, DynamoError> {
        match &self.resolved.update {
            Some(update) => update.apply(base).map_err(|error| {
                if self.legacy_update && error.message == INCORRECT_OPERAND_TYPE {
                    DynamoError::validation("Type mismatch for attribute to update")
                } else {
                    error
                }
            }),
            None => Ok(UpdateOutcome {
                item: base.clone(),
                updated_paths: Vec::new(),
                written_attributes: Default::default(),
            }),
        }
    }
}

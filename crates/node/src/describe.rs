//! Rendering a table as DescribeTable describes it.

use std::sync::atomic::Ordering;

use onggi_model::ops::{BillingModeSummary, IndexDescription, ProvisionedThroughputDescription, TableDescription};
use onggi_model::table::{AttributeDefinition, IndexSchema, IndexStatus};

use crate::catalog::TableHandle;

/// The account id in ARNs: a single-tenant server has one account.
pub const ACCOUNT_ID: &str = "000000000000";

fn seconds(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

/// The table's ARN in `region`.
pub fn table_arn(region: &str, name: &str) -> String {
    format!("arn:aws:dynamodb:{region}:{ACCOUNT_ID}:table/{name}")
}

/// Describes `table` with the given status (`ACTIVE`, `DELETING`, …).
pub fn describe(table: &TableHandle, status: &str, region: &str) -> TableDescription {
    let schema = &table.schema;
    let arn = table_arn(region, &schema.name);
    let index = |index: &IndexSchema, global: bool| {
        let stats = table.indexes.iter().find(|handle| handle.schema.id == index.id).map(|handle| &handle.stats);
        let building = index.status == IndexStatus::Backfilling;
        IndexDescription {
            index_name: index.name.clone(),
            key_schema: index.key.elements(),
            projection: index.projection.clone(),
            index_status: global.then(|| if building { "CREATING" } else { "ACTIVE" }.to_string()),
            backfilling: (global && building).then_some(true),
            provisioned_throughput: if global { index.provisioned_throughput } else { None },
            index_size_bytes: stats.map_or(0, |stats| stats.size_bytes.load(Ordering::Relaxed).max(0) as u64),
            item_count: stats.map_or(0, |stats| stats.item_count.load(Ordering::Relaxed).max(0) as u64),
            index_arn: format!("{arn}/index/{}", index.name),
        }
    };
    TableDescription {
        attribute_definitions: schema
            .attribute_definitions
            .iter()
            .map(|(name, key_type)| AttributeDefinition {
                attribute_name: Some(name.clone()),
                attribute_type: Some(key_type.as_str().to_string()),
            })
            .collect(),
        table_name: schema.name.clone(),
        key_schema: schema.key.elements(),
        table_status: status.to_string(),
        creation_date_time: seconds(schema.created_ms),
        provisioned_throughput: ProvisionedThroughputDescription {
            last_increase_date_time: 0.0,
            last_decrease_date_time: 0.0,
            number_of_decreases_today: 0,
            read_capacity_units: schema.read_capacity_units,
            write_capacity_units: schema.write_capacity_units,
        },
        table_size_bytes: table.stats.size_bytes.load(Ordering::Relaxed).max(0) as u64,
        item_count: table.stats.item_count.load(Ordering::Relaxed).max(0) as u64,
        table_arn: arn.clone(),
        table_id: schema.id.clone(),
        // DynamoDB describes the billing mode once a table has ever been on demand.
        billing_mode_summary: schema.pay_per_request_since_ms.map(|since_ms| BillingModeSummary {
            billing_mode: schema.billing_mode.as_str().to_string(),
            last_update_to_pay_per_request_date_time: seconds(since_ms),
        }),
        local_secondary_indexes: (!schema.local_indexes.is_empty())
            .then(|| schema.local_indexes.iter().map(|schema| index(schema, false)).collect()),
        global_secondary_indexes: (!schema.global_indexes.is_empty())
            .then(|| schema.global_indexes.iter().map(|schema| index(schema, true)).collect()),
        deletion_protection_enabled: schema.deletion_protection,
    }
}

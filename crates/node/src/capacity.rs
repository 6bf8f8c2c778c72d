//! Consumed capacity, computed as DynamoDB computes it and reported when a request asks.
//!
//! Reads cost one unit per started 4 KB (half for eventually consistent reads); writes one unit per
//! started 1 KB of the larger of the old and new item. A write also costs every secondary index
//! whose entry for the item changes: one write for an entry added, removed or rewritten in place,
//! two when the index key changed (the old entry is deleted, the new one put), each sized by the
//! projected entry. An index entry that does not change costs nothing.

use std::collections::BTreeMap;

use onggi_model::ops::{CapacityUnits, ConsumedCapacity};
use onggi_model::table::TableSchema;
use onggi_model::value::item_size_bytes;
use onggi_model::{DynamoError, Item};

/// Which capacity report a request asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CapacityReport {
    None,
    Total,
    Indexes,
}

impl CapacityReport {
    /// The `ReturnConsumedCapacity` value that asks for this report (`None` for none).
    pub(crate) fn name(self) -> Option<&'static str> {
        match self {
            CapacityReport::None => None,
            CapacityReport::Total => Some("TOTAL"),
            CapacityReport::Indexes => Some("INDEXES"),
        }
    }

    /// Parses `ReturnConsumedCapacity`.
    pub(crate) fn parse(value: Option<&str>) -> Result<CapacityReport, DynamoError> {
        match value {
            None | Some("NONE") => Ok(CapacityReport::None),
            Some("TOTAL") => Ok(CapacityReport::Total),
            Some("INDEXES") => Ok(CapacityReport::Indexes),
            Some(other) => Err(DynamoError::validation(format!(
                "1 validation error detected: Value '{other}' at 'returnConsumedCapacity' failed to satisfy constraint: Member must satisfy enum value set: [INDEXES, TOTAL, NONE]"
            ))),
        }
    }
}

fn units(capacity_units: f64) -> CapacityUnits {
    CapacityUnits { capacity_units, read_capacity_units: None, write_capacity_units: None }
}

fn write_units_of(item: &Item) -> f64 {
    item_size_bytes(item).div_ceil(1024).max(1) as f64
}

fn report(
    report: CapacityReport,
    table_name: &str,
    table_units: f64,
    local: BTreeMap<String, f64>,
    global: BTreeMap<String, f64>,
) -> Option<ConsumedCapacity> {
    let total = table_units + local.values().sum::<f64>() + global.values().sum::<f64>();
    let detail = |indexes: BTreeMap<String, f64>| {
        (report == CapacityReport::Indexes && !indexes.is_empty())
            .then(|| indexes.into_iter().map(|(name, value)| (name, units(value))).collect())
    };
    match report {
        CapacityReport::None => None,
        _ => Some(ConsumedCapacity {
            table_name: table_name.to_string(),
            capacity_units: total,
            read_capacity_units: None,
            write_capacity_units: None,
            table: (report == CapacityReport::Indexes).then(|| units(table_units)),
            local_secondary_indexes: detail(local),
            global_secondary_indexes: detail(global),
        }),
    }
}

/// Capacity of reading `item` (absent items still cost the minimum).
pub(crate) fn for_read(
    kind: CapacityReport,
    table_name: &str,
    item: Option<&Item>,
    consistent: bool,
) -> Option<ConsumedCapacity> {
    let whole = item.map_or(0, item_size_bytes).div_ceil(4096).max(1) as f64;
    let table_units = if consistent { whole } else { whole / 2.0 };
    report(kind, table_name, table_units, BTreeMap::new(), BTreeMap::new())
}

/// Capacity of replacing `old` by `new` (`None`: absent or deleted).
pub(crate) fn for_write(
    kind: CapacityReport,
    schema: &TableSchema,
    old: Option<&Item>,
    new: Option<&Item>,
) -> Option<ConsumedCapacity> {
    if kind == CapacityReport::None {
        return None;
    }
    let size = old.map_or(0, item_size_bytes).max(new.map_or(0, item_size_bytes));
    let table_units = size.div_ceil(1024).max(1) as f64;
    let index_units = |index: &onggi_model::table::IndexSchema| -> f64 {
        let before = old.and_then(|item| index.entry(&schema.key, item));
        let after = new.and_then(|item| index.entry(&schema.key, item));
        match (before, after) {
            (None, None) => 0.0,
            (Some(before), Some(after)) if before == after => 0.0,
            (Some(before), Some(after)) => {
                let same_key = index.key.names().all(|name| before.get(name) == after.get(name));
                if same_key {
                    write_units_of(&before).max(write_units_of(&after))
                } else {
                    write_units_of(&before) + write_units_of(&after)
                }
            }
            (Some(entry), None) | (None, Some(entry)) => write_units_of(&entry),
        }
    };
    let costs = |indexes: &[onggi_model::table::IndexSchema]| -> BTreeMap<String, f64> {
        indexes.iter().map(|index| (index.name.clone(), index_units(index))).filter(|(_, units)| *units > 0.0).collect()
    };
    report(kind, &schema.name, table_units, costs(&schema.local_indexes), costs(&schema.global_indexes))
}

/// Capacity of a Query or Scan page that read `bytes` of items (or index entries), rounded up to
/// 4 KB once for the whole page; charged to the index when the read used one. `fetch_units`: the
/// table reads of base items fetched for a local index.
pub(crate) fn for_range_read(
    kind: CapacityReport,
    table_name: &str,
    index: Option<(&str, bool)>,
    bytes: usize,
    fetch_units: f64,
    consistent: bool,
) -> Option<ConsumedCapacity> {
    // A page that read nothing costs nothing (as DynamoDB Local reports it).
    let whole = bytes.div_ceil(4096) as f64;
    let read_units = if consistent { whole } else { whole / 2.0 };
    let (mut local, mut global) = (BTreeMap::new(), BTreeMap::new());
    let table_units = match index {
        None => read_units,
        Some((name, true)) => {
            global.insert(name.to_string(), read_units);
            fetch_units
        }
        Some((name, false)) => {
            local.insert(name.to_string(), read_units);
            fetch_units
        }
    };
    report(kind, table_name, table_units, local, global)
}

/// Capacity of one table's reads in a BatchGetItem (`units` summed item by item).
pub(crate) fn for_batch(kind: CapacityReport, table_name: &str, units: f64) -> Option<ConsumedCapacity> {
    report(kind, table_name, units, BTreeMap::new(), BTreeMap::new())
}

/// The sum of several reports for one table (the writes of a BatchWriteItem).
pub(crate) fn sum(kind: CapacityReport, table_name: &str, parts: Vec<ConsumedCapacity>) -> Option<ConsumedCapacity> {
    let (mut table_units, mut local, mut global) = (0.0, BTreeMap::new(), BTreeMap::new());
    for part in parts {
        table_units += part.table.map_or(part.capacity_units, |table| table.capacity_units);
        for (target, indexes) in
            [(&mut local, part.local_secondary_indexes), (&mut global, part.global_secondary_indexes)]
        {
            for (name, units) in indexes.into_iter().flatten() {
                *target.entry(name).or_insert(0.0) += units.capacity_units;
            }
        }
    }
    report(kind, table_name, table_units, local, global)
}

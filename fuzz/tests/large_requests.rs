//! Findings that need inputs far beyond libFuzzer's `-max_len`: requests of a few megabytes
//! (the API accepts bodies up to 16 MiB) whose cost grows with depth or quadratically.
//!
//! Each case runs on a thread with a 2 MiB stack, the size of a tokio worker thread (the server
//! runs requests on those), and must finish within a time budget; a case that runs over is
//! reported as a hang (its thread is left behind and dies with the test process).

use std::sync::mpsc;
use std::time::Duration;

use onggi_model::expr::{Operation, RequestExpressions};
use onggi_model::ops::{GetItemInput, PutItemInput};
use onggi_model::table::{CreateTableInput, validate_create_table};
use serde_json::Value as Json;

const STACK_BYTES: usize = 2 * 1024 * 1024;
const BUDGET: Duration = Duration::from_secs(10);

/// Runs `work` on a tokio-sized stack; fails if it panics or does not finish within the budget.
/// (A stack overflow aborts the whole test process: that is the failure mode being tested.)
fn within_budget(name: &str, work: impl FnOnce() + Send + 'static) {
    let (done, finished) = mpsc::channel();
    std::thread::Builder::new()
        .name(name.to_string())
        .stack_size(STACK_BYTES)
        .spawn(move || {
            work();
            let _ = done.send(());
        })
        .expect("spawn");
    match finished.recv_timeout(BUDGET) {
        Ok(()) => {}
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{name}: still running after {BUDGET:?} (hang)"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{name}: panicked"),
    }
}

fn entries(count: usize, entry: impl Fn(usize) -> String) -> String {
    (0..count).map(entry).collect::<Vec<_>>().join(",")
}

/// Legacy `Expected` with many entries is joined into a left-deep `AND` chain; evaluating it
/// (and, at larger sizes, dropping it) recursed once per entry.
#[test]
fn legacy_expected_with_many_entries() {
    for count in [6_000, 200_000] {
        within_budget("expected", move || {
            let body = format!(
                r#"{{"TableName":"t","Item":{{"pk":{{"S":"a"}}}},"Expected":{{{}}}}}"#,
                entries(count, |i| format!(r#""a{i}":{{"Exists":false}}"#))
            );
            let input: PutItemInput = serde_json::from_str(&body).expect("valid body");
            let mut request = RequestExpressions::new(Operation::PutItem);
            request.expected = input.expected.as_ref();
            let resolved = request.resolve().expect("resolves");
            let condition = resolved.condition.as_ref().expect("condition");
            assert_eq!(condition.evaluate(None), Ok(true));
            drop(resolved);
        });
    }
}

/// `ScanFilter` (and `QueryFilter`) go through the same join as `Expected`.
#[test]
fn legacy_scan_filter_with_many_entries() {
    within_budget("scan filter", || {
        let body = format!(
            r#"{{"{}":{{{}}},"ConditionalOperator":"OR"}}"#,
            "ScanFilter",
            entries(6_000, |i| format!(r#""a{i}":{{"ComparisonOperator":"NULL"}}"#))
        );
        let json: Json = serde_json::from_str(&body).expect("valid body");
        let mut request = RequestExpressions::new(Operation::Scan);
        request.scan_filter = json.get("ScanFilter");
        request.conditional_operator = json.get("ConditionalOperator");
        let resolved = request.resolve().expect("resolves");
        assert_eq!(resolved.filter.as_ref().expect("filter").evaluate(None), Ok(true));
    });
}

/// `AttributesToGet` checked each name against every earlier one (`Vec::contains`).
#[test]
fn attributes_to_get_with_many_names() {
    within_budget("attributes to get", || {
        let body = format!(
            r#"{{"TableName":"t","Key":{{"pk":{{"S":"a"}}}},"AttributesToGet":[{}]}}"#,
            entries(200_000, |i| format!(r#""a{i}""#))
        );
        let input: GetItemInput = serde_json::from_str(&body).expect("valid body");
        let mut request = RequestExpressions::new(Operation::GetItem);
        request.attributes_to_get = input.attributes_to_get.as_ref();
        let _ = request.resolve();
    });
}

/// CreateTable checked each attribute definition against every earlier one.
#[test]
fn create_table_with_many_attribute_definitions() {
    within_budget("attribute definitions", || {
        let body = format!(
            r#"{{"TableName":"tbl","BillingMode":"PAY_PER_REQUEST","KeySchema":[{{"AttributeName":"a0","KeyType":"HASH"}}],"AttributeDefinitions":[{}]}}"#,
            entries(200_000, |i| format!(r#"{{"AttributeName":"a{i}","AttributeType":"S"}}"#))
        );
        let input: CreateTableInput = serde_json::from_str(&body).expect("valid body");
        assert!(validate_create_table(&input, "id".into(), 0).is_err());
    });
}

/// CreateTable validated every index, comparing each name with every earlier one, before
/// checking the index count limits (5 local, 20 global).
#[test]
fn create_table_with_many_global_indexes() {
    within_budget("global indexes", || {
        let body = format!(
            r#"{{"TableName":"tbl","BillingMode":"PAY_PER_REQUEST","KeySchema":[{{"AttributeName":"pk","KeyType":"HASH"}}],"AttributeDefinitions":[{{"AttributeName":"pk","AttributeType":"S"}}],"GlobalSecondaryIndexes":[{}]}}"#,
            entries(120_000, |i| format!(
                r#"{{"IndexName":"g{i:06}","KeySchema":[{{"AttributeName":"pk","KeyType":"HASH"}}],"Projection":{{"ProjectionType":"ALL"}}}}"#
            ))
        );
        let input: CreateTableInput = serde_json::from_str(&body).expect("valid body");
        assert!(validate_create_table(&input, "id".into(), 0).is_err());
    });
}

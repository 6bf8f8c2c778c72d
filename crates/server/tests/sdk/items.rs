//! Items without expressions: PutItem, GetItem, DeleteItem and what they return.

use std::collections::HashMap;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ScalarAttributeType};

use crate::harness::{TestEnv, b, item, n, s};

type Item = HashMap<String, AttributeValue>;

/// The item with every set sorted, recursively: DynamoDB does not promise set order.
fn canonical(item: &Item) -> Item {
    item.iter().map(|(name, value)| (name.clone(), canonical_value(value))).collect()
}

fn canonical_value(value: &AttributeValue) -> AttributeValue {
    match value {
        AttributeValue::Ss(strings) => AttributeValue::Ss(sorted(strings)),
        AttributeValue::Ns(numbers) => AttributeValue::Ns(sorted(numbers)),
        AttributeValue::Bs(blobs) => {
            let mut bytes: Vec<Vec<u8>> = blobs.iter().map(|blob| blob.as_ref().to_vec()).collect();
            bytes.sort();
            AttributeValue::Bs(bytes.into_iter().map(Blob::new).collect())
        }
        AttributeValue::M(map) => AttributeValue::M(canonical(map)),
        AttributeValue::L(list) => AttributeValue::L(list.iter().map(canonical_value).collect()),
        other => other.clone(),
    }
}

fn sorted(values: &[String]) -> Vec<String> {
    let mut values = values.to_vec();
    values.sort();
    values
}

async fn get(env: &TestEnv, table: &str, key: Item) -> Option<Item> {
    let output =
        env.client.get_item().table_name(table).set_key(Some(key)).consistent_read(true).send().await.expect("get");
    output.item
}

async fn put(env: &TestEnv, table: &str, item: Item) {
    env.client.put_item().table_name(table).set_item(Some(item)).send().await.expect("put");
}

/// Applications store every DynamoDB type, often nested; any value that comes back different
/// (a lost digit, a changed byte, a dropped empty string) is silent data corruption.
#[tokio::test]
async fn every_attribute_type_round_trips_exactly() {
    let env = TestEnv::start();
    let table = env.create_table("types", ("pk", ScalarAttributeType::S), None).await;
    let all_bytes: Vec<u8> = (0..=255).collect();
    let stored = item([
        ("pk", s("every-type")),
        ("string", s("héllo, 세계 \u{1F600} \"quoted\" \\ \n")),
        ("empty_string", s("")),
        ("digits_38", n("12345678901234567890123456789012345678")),
        ("negative_fraction_38", n("-0.12345678901234567890123456789012345678")),
        ("small", n("0.001")),
        ("negative", n("-17")),
        ("binary", AttributeValue::B(Blob::new(all_bytes.clone()))),
        ("empty_binary", b(b"")),
        ("true", AttributeValue::Bool(true)),
        ("false", AttributeValue::Bool(false)),
        ("null", AttributeValue::Null(true)),
        ("string_set", AttributeValue::Ss(vec!["b".into(), "a".into(), "c c".into()])),
        (
            "number_set",
            AttributeValue::Ns(vec!["3".into(), "-1.5".into(), "12345678901234567890123456789012345678".into()]),
        ),
        ("binary_set", AttributeValue::Bs(vec![Blob::new(vec![0]), Blob::new(vec![255, 1]), Blob::new(vec![0, 0])])),
        ("empty_list", AttributeValue::L(vec![])),
        ("empty_map", AttributeValue::M(HashMap::new())),
        (
            "nested",
            AttributeValue::M(item([
                ("list", AttributeValue::L(vec![n(1), s("two"), AttributeValue::Null(true), b(b"\x03")])),
                (
                    "deeper",
                    AttributeValue::M(item([
                        ("set", AttributeValue::Ss(vec!["x".into()])),
                        (
                            "lists",
                            AttributeValue::L(vec![AttributeValue::L(vec![AttributeValue::M(item([("k", s(""))]))])]),
                        ),
                    ])),
                ),
                ("empty", s("")),
            ])),
        ),
    ]);
    put(&env, &table, stored.clone()).await;
    let got = get(&env, &table, item([("pk", s("every-type"))])).await.expect("the item");
    assert_eq!(canonical(&got), canonical(&stored));
    match &got["binary"] {
        AttributeValue::B(blob) => assert_eq!(blob.as_ref(), all_bytes.as_slice()),
        other => panic!("binary came back as {other:?}"),
    }
}

/// Numbers are decimal values, not strings: "1.0" and "1" are the same key, and numbers come back
/// in DynamoDB's canonical form (no trailing zeros, no exponent) whatever form was sent.
#[tokio::test]
async fn numbers_are_normalized_and_equal_numbers_are_the_same_key() {
    let env = TestEnv::start();
    let table = env.create_table("numbers", ("pk", ScalarAttributeType::N), None).await;
    put(&env, &table, item([("pk", n("1.0")), ("written_as", s("1.0"))])).await;
    let got = get(&env, &table, item([("pk", n("1"))])).await.expect("1.0 is found as 1");
    assert_eq!(got, item([("pk", n("1")), ("written_as", s("1.0"))]), "the key comes back normalized");

    put(&env, &table, item([("pk", n("10E-1")), ("written_as", s("10E-1"))])).await;
    let got = get(&env, &table, item([("pk", n("1.00"))])).await.expect("the same item");
    assert_eq!(got["written_as"], s("10E-1"), "10E-1 overwrote the item whose key was 1.0");

    put(
        &env,
        &table,
        item([
            ("pk", n(2)),
            ("trailing_zeros", n("1.50")),
            ("exponent", n("1E+2")),
            ("padded", n("-00012.3400")),
            ("set", AttributeValue::Ns(vec!["2.50".into(), "7".into()])),
        ]),
    )
    .await;
    let got = get(&env, &table, item([("pk", n(2))])).await.expect("the item");
    assert_eq!(got["trailing_zeros"], n("1.5"));
    assert_eq!(got["exponent"], n("100"));
    assert_eq!(got["padded"], n("-12.34"));
    assert_eq!(canonical_value(&got["set"]), AttributeValue::Ns(vec!["2.5".into(), "7".into()]));
}

/// PutItem replaces the whole item (it is not a merge), and ReturnValues=ALL_OLD hands back what
/// was replaced: applications use it to detect and undo overwrites.
#[tokio::test]
async fn put_item_replaces_the_whole_item_and_returns_the_old_one() {
    let env = TestEnv::start();
    let table =
        env.create_table("overwrite", ("pk", ScalarAttributeType::S), Some(("sk", ScalarAttributeType::N))).await;
    let first = item([("pk", s("p")), ("sk", n(1)), ("a", s("first")), ("b", n(1))]);
    let output = env
        .client
        .put_item()
        .table_name(&table)
        .set_item(Some(first.clone()))
        .return_values(ReturnValue::AllOld)
        .send()
        .await
        .expect("first put");
    assert_eq!(output.attributes(), None, "nothing was replaced");

    let second = item([("pk", s("p")), ("sk", n(1)), ("c", s("second"))]);
    let output = env
        .client
        .put_item()
        .table_name(&table)
        .set_item(Some(second.clone()))
        .return_values(ReturnValue::AllOld)
        .send()
        .await
        .expect("second put");
    assert_eq!(output.attributes(), Some(&first));
    assert_eq!(get(&env, &table, item([("pk", s("p")), ("sk", n(1))])).await, Some(second));
    // A neighbour with another sort key is a different item.
    assert_eq!(get(&env, &table, item([("pk", s("p")), ("sk", n(2))])).await, None);
}

/// DeleteItem with ReturnValues=ALL_OLD returns the deleted item exactly once; deleting what is
/// not there succeeds and returns nothing (DeleteItem is idempotent).
#[tokio::test]
async fn delete_item_returns_the_deleted_item_once() {
    let env = TestEnv::start();
    let table = env.create_table("delete", ("pk", ScalarAttributeType::B), None).await;
    let stored = item([("pk", b(b"\x00key")), ("list", AttributeValue::L(vec![n(1), n(2)]))]);
    put(&env, &table, stored.clone()).await;
    let key = item([("pk", b(b"\x00key"))]);

    let delete = || {
        env.client.delete_item().table_name(&table).set_key(Some(key.clone())).return_values(ReturnValue::AllOld).send()
    };
    assert_eq!(delete().await.expect("delete").attributes(), Some(&stored));
    assert_eq!(get(&env, &table, key.clone()).await, None);
    assert_eq!(delete().await.expect("delete again").attributes(), None);
}

/// A missing item is an empty answer, not an error: code checks `item().is_none()`.
#[tokio::test]
async fn get_item_of_a_missing_item_returns_no_item() {
    let env = TestEnv::start();
    let table = env.create_table("missing", ("pk", ScalarAttributeType::S), Some(("sk", ScalarAttributeType::S))).await;
    put(&env, &table, item([("pk", s("here")), ("sk", s("a"))])).await;
    for key in [item([("pk", s("absent")), ("sk", s("a"))]), item([("pk", s("here")), ("sk", s("b"))])] {
        let output = env.client.get_item().table_name(&table).set_key(Some(key)).send().await.expect("get");
        assert_eq!(output.item(), None);
    }
}

/// The 400 KB limit counts attribute names and values; an item of exactly 400 KB is accepted and
/// comes back whole, so applications can rely on the documented limit to the byte.
#[tokio::test]
async fn an_item_of_exactly_400_kb_round_trips() {
    let env = TestEnv::start();
    let table = env.create_table("big", ("pk", ScalarAttributeType::S), None).await;
    let value_bytes = 400 * 1024 - "pk".len() - "k".len() - "big".len();
    let stored = item([("pk", s("k")), ("big", s(&"x".repeat(value_bytes)))]);
    put(&env, &table, stored.clone()).await;
    assert_eq!(get(&env, &table, item([("pk", s("k"))])).await, Some(stored));
}

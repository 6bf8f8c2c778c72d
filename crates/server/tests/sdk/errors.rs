//! Bad requests get DynamoDB's error types through the SDK, and write nothing.
//!
//! Messages are checked by a fragment that DynamoDB and DynamoDB Local share; where they word an
//! error differently, only the type is checked.

use aws_sdk_dynamodb::types::{AttributeValue, KeyType, ScalarAttributeType};

use crate::harness::{TestEnv, assert_validation, attribute_definition, b, item, key_element, n, s};

/// A key of the wrong type must be refused, never coerced: "1" and 1 are different keys, and
/// storing one under the other's encoding would make items unreachable.
#[tokio::test]
async fn a_key_of_the_wrong_type_is_a_validation_error() {
    let env = TestEnv::start();
    let table = env.create_table("keytype", ("pk", ScalarAttributeType::S), None).await;
    let put = env.client.put_item().table_name(&table).set_item(Some(item([("pk", n(1))]))).send().await;
    assert_validation(&put, "Type mismatch for key");
    let get = env.client.get_item().table_name(&table).key("pk", b(b"1")).send().await;
    assert_validation(&get, "Type mismatch for key");
    let delete = env.client.delete_item().table_name(&table).key("pk", n(1)).send().await;
    assert_validation(&delete, "Type mismatch for key");
}

/// A key must name exactly the table's key attributes: a missing sort key or an extra attribute
/// would otherwise address an item the caller did not mean.
#[tokio::test]
async fn missing_or_extra_key_attributes_are_validation_errors() {
    let env = TestEnv::start();
    let table =
        env.create_table("keyparts", ("pk", ScalarAttributeType::S), Some(("sk", ScalarAttributeType::N))).await;
    let put = env.client.put_item().table_name(&table).set_item(Some(item([("pk", s("a")), ("x", n(1))]))).send().await;
    assert_validation(&put, "key");
    let put = env.client.put_item().table_name(&table).set_item(Some(item([("sk", n(1))]))).send().await;
    assert_validation(&put, "key");
    let get = env.client.get_item().table_name(&table).key("pk", s("a")).send().await;
    assert_validation(&get, "key");
    let get = env
        .client
        .get_item()
        .table_name(&table)
        .set_key(Some(item([("pk", s("a")), ("sk", n(1)), ("extra", s("x"))])))
        .send()
        .await;
    assert_validation(&get, "key");
    let delete = env.client.delete_item().table_name(&table).key("sk", n(1)).send().await;
    assert_validation(&delete, "key");
}

/// Empty strings are allowed in attributes but never in keys (DynamoDB's 2020 rule).
#[tokio::test]
async fn an_empty_string_key_is_a_validation_error() {
    let env = TestEnv::start();
    let table = env.create_table("emptykey", ("pk", ScalarAttributeType::S), None).await;
    let put = env.client.put_item().table_name(&table).set_item(Some(item([("pk", s(""))]))).send().await;
    assert_validation(&put, "cannot contain an empty string value");
}

/// The 400 KB item limit is a promise both ways: one byte over is refused, and nothing is stored.
#[tokio::test]
async fn an_item_over_400_kb_is_refused_and_not_stored() {
    let env = TestEnv::start();
    let table = env.create_table("toobig", ("pk", ScalarAttributeType::S), None).await;
    let value_bytes = 400 * 1024 - "pk".len() - "k".len() - "big".len() + 1;
    let put = env
        .client
        .put_item()
        .table_name(&table)
        .set_item(Some(item([("pk", s("k")), ("big", s(&"x".repeat(value_bytes)))])))
        .send()
        .await;
    assert_validation(&put, "Item size has exceeded the maximum allowed size");
    let get = env.client.get_item().table_name(&table).key("pk", s("k")).send().await.expect("get");
    assert_eq!(get.item(), None, "a refused write must leave nothing behind");
}

/// Numbers carry at most 38 significant digits; silently rounding a 39th would change the value.
#[tokio::test]
async fn a_number_with_39_significant_digits_is_refused() {
    let env = TestEnv::start();
    let table = env.create_table("digits", ("pk", ScalarAttributeType::S), None).await;
    let put = env
        .client
        .put_item()
        .table_name(&table)
        .set_item(Some(item([("pk", s("k")), ("n", n("123456789012345678901234567890123456789"))])))
        .send()
        .await;
    assert_validation(&put, "38");
}

/// Sets are sets: a duplicate member is a client bug DynamoDB reports instead of hiding.
#[tokio::test]
async fn a_set_with_duplicates_is_refused() {
    let env = TestEnv::start();
    let table = env.create_table("dupes", ("pk", ScalarAttributeType::S), None).await;
    let put = env
        .client
        .put_item()
        .table_name(&table)
        .set_item(Some(item([("pk", s("k")), ("set", AttributeValue::Ss(vec!["a".into(), "a".into()]))])))
        .send()
        .await;
    assert_validation(&put, "contains duplicates");
}

/// Table names are 3 to 255 characters of [a-zA-Z0-9_.-]; anything else is refused before any
/// table is looked up or created.
#[tokio::test]
async fn invalid_table_names_are_validation_errors() {
    let env = TestEnv::start();
    for name in ["ab".to_string(), "has space".to_string(), "slash/name".to_string(), "x".repeat(256)] {
        let create = env
            .client
            .create_table()
            .table_name(&name)
            .attribute_definitions(attribute_definition("pk", ScalarAttributeType::S))
            .key_schema(key_element("pk", KeyType::Hash))
            .billing_mode(aws_sdk_dynamodb::types::BillingMode::PayPerRequest)
            .send()
            .await;
        assert_validation(&create, "able");
        let get = env.client.get_item().table_name(&name).key("pk", s("k")).send().await;
        assert_validation(&get, "able");
    }
}

/// Every item operation on a table that does not exist is ResourceNotFoundException, the typed
/// error SDK users match on (not a generic validation error).
#[tokio::test]
async fn item_operations_on_a_missing_table_are_resource_not_found() {
    let env = TestEnv::start();
    let table = env.table_name("nosuchtable");
    let put = env.client.put_item().table_name(&table).set_item(Some(item([("pk", s("k"))]))).send().await;
    assert!(put.expect_err("put").into_service_error().is_resource_not_found_exception());
    let get = env.client.get_item().table_name(&table).key("pk", s("k")).send().await;
    assert!(get.expect_err("get").into_service_error().is_resource_not_found_exception());
    let delete = env.client.delete_item().table_name(&table).key("pk", s("k")).send().await;
    assert!(delete.expect_err("delete").into_service_error().is_resource_not_found_exception());
    let update = env.client.update_item().table_name(&table).key("pk", s("k")).send().await;
    assert!(update.expect_err("update").into_service_error().is_resource_not_found_exception());
    let describe = env.client.describe_table().table_name(&table).send().await;
    assert!(describe.expect_err("describe").into_service_error().is_resource_not_found_exception());
}

//! Table lifecycle: CreateTable, DescribeTable, ListTables, UpdateTable, DeleteTable.

use std::time::{Duration, SystemTime};

use aws_sdk_dynamodb::types::{
    BillingMode, KeyType, ProvisionedThroughput, ScalarAttributeType, TableDescription, TableStatus,
};

use crate::harness::{TestEnv, attribute_definition, b, item, key_element, n, s, unique_name, wait_active};

async fn describe(env: &TestEnv, name: &str) -> TableDescription {
    env.client.describe_table().table_name(name).send().await.expect("describe table").table.expect("a table")
}

fn throughput(read: i64, write: i64) -> ProvisionedThroughput {
    ProvisionedThroughput::builder().read_capacity_units(read).write_capacity_units(write).build().unwrap()
}

/// DescribeTable is how every SDK and tool (Terraform, CDK, boto3 waiters) learns a table's shape:
/// each field must say what was created.
#[tokio::test]
async fn describe_table_reports_what_create_table_was_given() {
    let env = TestEnv::start();
    let name = env.table_name("describe");
    let created = env
        .client
        .create_table()
        .table_name(&name)
        .attribute_definitions(attribute_definition("pk", ScalarAttributeType::S))
        .attribute_definitions(attribute_definition("sk", ScalarAttributeType::N))
        .key_schema(key_element("pk", KeyType::Hash))
        .key_schema(key_element("sk", KeyType::Range))
        .billing_mode(BillingMode::Provisioned)
        .provisioned_throughput(throughput(5, 4))
        .send()
        .await
        .expect("create table")
        .table_description
        .expect("CreateTable returns the description");
    assert_eq!(created.table_name(), Some(name.as_str()));
    wait_active(&env.client, &name).await;

    let table = describe(&env, &name).await;
    assert_eq!(table.table_name(), Some(name.as_str()));
    assert_eq!(table.table_status(), Some(&TableStatus::Active));
    assert_eq!(table.key_schema(), [key_element("pk", KeyType::Hash), key_element("sk", KeyType::Range)]);
    let mut definitions = table.attribute_definitions().to_vec();
    definitions.sort_by(|left, right| left.attribute_name().cmp(right.attribute_name()));
    assert_eq!(
        definitions,
        [attribute_definition("pk", ScalarAttributeType::S), attribute_definition("sk", ScalarAttributeType::N)]
    );
    let provisioned = table.provisioned_throughput().expect("provisioned throughput");
    assert_eq!((provisioned.read_capacity_units(), provisioned.write_capacity_units()), (Some(5), Some(4)));
    assert!(table.table_arn().expect("an ARN").ends_with(&format!(":table/{name}")), "{:?}", table.table_arn());
    assert_eq!((table.item_count(), table.table_size_bytes()), (Some(0), Some(0)));
    let created_at = table.creation_date_time().expect("a creation time");
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!((created_at.secs() - now).abs() < 120, "creation time {created_at:?} is not now ({now})");
}

/// Keys of each scalar type, alone or paired, are what every data model is built from; a wrong
/// type anywhere would corrupt key encoding.
#[tokio::test]
async fn tables_with_string_number_and_binary_keys_store_and_find_items() {
    let env = TestEnv::start();
    let cases = [
        (ScalarAttributeType::S, None, item([("id", s("alpha"))])),
        (ScalarAttributeType::N, None, item([("id", n("-12.5"))])),
        (ScalarAttributeType::B, None, item([("id", b(&[0, 1, 254, 255]))])),
        (ScalarAttributeType::S, Some(ScalarAttributeType::N), item([("id", s("user")), ("at", n(42))])),
        (ScalarAttributeType::N, Some(ScalarAttributeType::B), item([("id", n(7)), ("at", b(b"\x00z"))])),
        (ScalarAttributeType::B, Some(ScalarAttributeType::S), item([("id", b(b"k")), ("at", s("2026-01-01"))])),
    ];
    for (hash_type, range_type, key) in cases {
        let name = env.create_table("keys", ("id", hash_type.clone()), range_type.clone().map(|t| ("at", t))).await;
        let table = describe(&env, &name).await;
        let expected_schema: Vec<_> = std::iter::once(key_element("id", KeyType::Hash))
            .chain(range_type.as_ref().map(|_| key_element("at", KeyType::Range)))
            .collect();
        assert_eq!(table.key_schema(), expected_schema);
        assert!(table.attribute_definitions().contains(&attribute_definition("id", hash_type)));

        let mut stored = key.clone();
        stored.insert("payload".to_string(), s("value"));
        env.client.put_item().table_name(&name).set_item(Some(stored.clone())).send().await.expect("put");
        let got = env.client.get_item().table_name(&name).set_key(Some(key)).send().await.expect("get");
        assert_eq!(got.item(), Some(&stored), "table {name}");
    }
}

/// ListTables pages must chain through LastEvaluatedTableName without skipping or repeating a
/// table: the SDK paginator (and every "list all tables" loop) depends on it.
#[tokio::test]
async fn list_tables_paginates_in_name_order() {
    let env = TestEnv::start();
    let stem = unique_name("list");
    let names: Vec<String> = ["a", "b", "c", "d", "e"].iter().map(|suffix| format!("{stem}_{suffix}")).collect();
    for name in names.iter().rev() {
        env.remember(name);
        env.create_named_table(name, ("pk", ScalarAttributeType::S), None).await;
    }

    // Start just before our tables (other tests' tables may exist on a shared endpoint).
    let mut pages = env.client.list_tables().exclusive_start_table_name(&stem).limit(2).into_paginator().send();
    let mut listed = Vec::new();
    let mut page_count = 0;
    while let Some(page) = pages.next().await {
        let page = page.expect("list tables");
        page_count += 1;
        assert!(page.table_names().len() <= 2, "a page larger than the limit: {page:?}");
        if page.table_names().len() == 2 && page.last_evaluated_table_name().is_some() {
            assert_eq!(page.last_evaluated_table_name(), page.table_names().last().map(String::as_str));
        }
        let ours: Vec<String> = page.table_names().iter().filter(|name| name.starts_with(&stem)).cloned().collect();
        let past_ours = ours.len() < page.table_names().len();
        listed.extend(ours);
        if past_ours || page_count > 10 {
            break;
        }
    }
    assert_eq!(listed, names, "every table once, in name order");

    // The flattening paginator yields the same names.
    let items = env.client.list_tables().exclusive_start_table_name(&stem).limit(2).into_paginator().items().send();
    let mut items = items;
    let mut flattened = Vec::new();
    while let Some(name) = items.next().await {
        let name = name.expect("list tables");
        if !name.starts_with(&stem) {
            break;
        }
        flattened.push(name);
        assert!(flattened.len() <= names.len(), "paginator repeats tables: {flattened:?}");
    }
    assert_eq!(flattened, names);
}

/// Changing capacity and switching to on-demand must take effect and show in DescribeTable, since
/// infrastructure tools compare the described state with the wanted one.
#[tokio::test]
async fn update_table_changes_throughput_then_billing_mode() {
    let env = TestEnv::start();
    let name = env.table_name("update");
    env.client
        .create_table()
        .table_name(&name)
        .attribute_definitions(attribute_definition("pk", ScalarAttributeType::S))
        .key_schema(key_element("pk", KeyType::Hash))
        .provisioned_throughput(throughput(5, 5))
        .send()
        .await
        .expect("create table");
    wait_active(&env.client, &name).await;

    env.client
        .update_table()
        .table_name(&name)
        .provisioned_throughput(throughput(10, 7))
        .send()
        .await
        .expect("update throughput");
    wait_active(&env.client, &name).await;
    let provisioned = describe(&env, &name).await.provisioned_throughput.expect("provisioned throughput");
    assert_eq!((provisioned.read_capacity_units(), provisioned.write_capacity_units()), (Some(10), Some(7)));

    env.client
        .update_table()
        .table_name(&name)
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .expect("switch to on-demand");
    wait_active(&env.client, &name).await;
    let table = describe(&env, &name).await;
    assert_eq!(
        table.billing_mode_summary().and_then(|summary| summary.billing_mode()),
        Some(&BillingMode::PayPerRequest)
    );
    let provisioned = table.provisioned_throughput().expect("provisioned throughput");
    assert_eq!((provisioned.read_capacity_units(), provisioned.write_capacity_units()), (Some(0), Some(0)));
    // The items survive the change.
    env.client.put_item().table_name(&name).set_item(Some(item([("pk", s("x"))]))).send().await.expect("put");
}

/// A deleted table must be gone for every operation, with the typed error SDK users match on,
/// and its name must be free again.
#[tokio::test]
async fn deleted_table_is_not_found_and_its_name_is_free() {
    let env = TestEnv::start();
    let name = env.create_table("delete", ("pk", ScalarAttributeType::S), None).await;
    env.client.put_item().table_name(&name).set_item(Some(item([("pk", s("x"))]))).send().await.expect("put");

    let again = env
        .client
        .create_table()
        .table_name(&name)
        .attribute_definitions(attribute_definition("pk", ScalarAttributeType::S))
        .key_schema(key_element("pk", KeyType::Hash))
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await;
    assert!(again.expect_err("a second create").into_service_error().is_resource_in_use_exception());

    let deleted = env.client.delete_table().table_name(&name).send().await.expect("delete table");
    assert_eq!(deleted.table_description().and_then(|table| table.table_name()), Some(name.as_str()));

    // Deletion may take a moment to finish: poll (bounded) until DescribeTable says it is gone.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match env.client.describe_table().table_name(&name).send().await {
            Ok(_) => assert!(std::time::Instant::now() < deadline, "table still described after 10 s"),
            Err(error) => {
                assert!(error.into_service_error().is_resource_not_found_exception());
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let get = env.client.get_item().table_name(&name).key("pk", s("x")).send().await;
    assert!(get.expect_err("get from a deleted table").into_service_error().is_resource_not_found_exception());
    let put = env.client.put_item().table_name(&name).set_item(Some(item([("pk", s("y"))]))).send().await;
    assert!(put.expect_err("put into a deleted table").into_service_error().is_resource_not_found_exception());
    let delete = env.client.delete_table().table_name(&name).send().await;
    assert!(delete.expect_err("delete twice").into_service_error().is_resource_not_found_exception());

    // The name is free: a new table of that name starts empty.
    env.create_named_table(&name, ("pk", ScalarAttributeType::S), None).await;
    let get = env.client.get_item().table_name(&name).key("pk", s("x")).send().await.expect("get");
    assert_eq!(get.item(), None, "the old table's item must not reappear");
}

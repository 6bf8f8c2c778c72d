//! Condition, update and projection expressions through the SDK.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure, ScalarAttributeType};

use crate::harness::{TestEnv, assert_validation, item, n, s};

type Item = HashMap<String, AttributeValue>;

async fn get(env: &TestEnv, table: &str, pk: &str) -> Option<Item> {
    env.client.get_item().table_name(table).key("pk", s(pk)).consistent_read(true).send().await.expect("get").item
}

fn string_set(members: &[&str]) -> AttributeValue {
    AttributeValue::Ss(members.iter().map(|member| member.to_string()).collect())
}

/// Sorted members of a string set, for comparison (set order is not promised).
fn members(value: &AttributeValue) -> Vec<String> {
    let mut members = value.as_ss().expect("a string set").clone();
    members.sort();
    members
}

/// `attribute_not_exists(pk)` is the idiom for "create, never overwrite": the second create must
/// fail with the typed ConditionalCheckFailedException and leave the first item untouched.
#[tokio::test]
async fn conditional_put_creates_only_once() {
    let env = TestEnv::start();
    let table = env.create_table("createonce", ("pk", ScalarAttributeType::S), None).await;
    let create = |owner: &str| {
        env.client
            .put_item()
            .table_name(&table)
            .set_item(Some(item([("pk", s("lock")), ("owner", s(owner))])))
            .condition_expression("attribute_not_exists(pk)")
            .send()
    };
    create("first").await.expect("the first create succeeds");
    let second = create("second").await.expect_err("the second create must fail");
    let error = second.into_service_error();
    assert!(error.is_conditional_check_failed_exception(), "{error:?}");
    assert_eq!(get(&env, &table, "lock").await, Some(item([("pk", s("lock")), ("owner", s("first"))])));
}

/// ReturnValuesOnConditionCheckFailure=ALL_OLD saves a read after a failed condition: the error
/// carries the item as it is. Without it, the error carries no item.
#[tokio::test]
async fn failed_condition_returns_the_current_item_when_asked() {
    let env = TestEnv::start();
    let table = env.create_table("cfitem", ("pk", ScalarAttributeType::S), None).await;
    let stored = item([("pk", s("k")), ("version", n(3)), ("data", s("current"))]);
    env.client.put_item().table_name(&table).set_item(Some(stored.clone())).send().await.expect("put");

    let stale_write = |return_item: bool| {
        let mut request = env
            .client
            .put_item()
            .table_name(&table)
            .set_item(Some(item([("pk", s("k")), ("version", n(3)), ("data", s("stale"))])))
            .condition_expression("version = :expected")
            .expression_attribute_values(":expected", n(2));
        if return_item {
            request = request.return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        }
        request.send()
    };
    let error = stale_write(true).await.expect_err("stale version").into_service_error();
    let aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(failure) = error else {
        panic!("expected ConditionalCheckFailedException, got {error:?}");
    };
    assert_eq!(failure.item(), Some(&stored));

    let error = stale_write(false).await.expect_err("stale version").into_service_error();
    let aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(failure) = error else {
        panic!("expected ConditionalCheckFailedException, got {error:?}");
    };
    assert_eq!(failure.item(), None);
    assert_eq!(get(&env, &table, "k").await, Some(stored));
}

/// A failed condition on DeleteItem deletes nothing: guarded deletes protect live data.
#[tokio::test]
async fn conditional_delete_deletes_only_when_the_condition_holds() {
    let env = TestEnv::start();
    let table = env.create_table("cdelete", ("pk", ScalarAttributeType::S), None).await;
    let stored = item([("pk", s("k")), ("state", s("active"))]);
    env.client.put_item().table_name(&table).set_item(Some(stored.clone())).send().await.expect("put");
    let delete_if = |state: &str| {
        env.client
            .delete_item()
            .table_name(&table)
            .key("pk", s("k"))
            .condition_expression("#state = :state")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":state", s(state))
            .return_values(ReturnValue::AllOld)
            .send()
    };
    let error = delete_if("archived").await.expect_err("the condition is false").into_service_error();
    assert!(error.is_conditional_check_failed_exception(), "{error:?}");
    assert_eq!(get(&env, &table, "k").await, Some(stored.clone()));
    assert_eq!(delete_if("active").await.expect("the condition holds").attributes(), Some(&stored));
    assert_eq!(get(&env, &table, "k").await, None);
}

/// Counters are the most common UpdateItem: `if_not_exists` starts one, `n = n + :one` bumps it,
/// and UPDATED_NEW / UPDATED_OLD return just the counter.
#[tokio::test]
async fn counters_increment_with_set_arithmetic() {
    let env = TestEnv::start();
    let table = env.create_table("counter", ("pk", ScalarAttributeType::S), None).await;
    let update = |expression: &'static str, return_values: ReturnValue| {
        let mut request = env
            .client
            .update_item()
            .table_name(&table)
            .key("pk", s("c"))
            .update_expression(expression)
            .expression_attribute_values(":one", n(1))
            .return_values(return_values);
        if expression.contains(":zero") {
            request = request.expression_attribute_values(":zero", n(0));
        }
        request.send()
    };
    for expected in 1..=3 {
        let output =
            update("SET n = if_not_exists(n, :zero) + :one", ReturnValue::UpdatedNew).await.expect("increment");
        assert_eq!(output.attributes(), Some(&item([("n", n(expected))])));
    }
    let output = update("SET n = n + :one", ReturnValue::UpdatedOld).await.expect("increment");
    assert_eq!(output.attributes(), Some(&item([("n", n(3))])), "UPDATED_OLD returns the value before");
    let output = update("SET n = n - :one", ReturnValue::AllNew).await.expect("decrement");
    assert_eq!(output.attributes(), Some(&item([("pk", s("c")), ("n", n(3))])));
}

/// ADD creates missing numbers and sets and accumulates into existing ones; DELETE removes set
/// members. Tag sets and tallies are built this way.
#[tokio::test]
async fn add_and_delete_accumulate_numbers_and_sets() {
    let env = TestEnv::start();
    let table = env.create_table("add", ("pk", ScalarAttributeType::S), None).await;
    let add = |amount: i64, tags: &[&str]| {
        env.client
            .update_item()
            .table_name(&table)
            .key("pk", s("k"))
            .update_expression("ADD #total :amount, tags :tags")
            .expression_attribute_names("#total", "total")
            .expression_attribute_values(":amount", n(amount))
            .expression_attribute_values(":tags", string_set(tags))
            .return_values(ReturnValue::AllNew)
            .send()
    };
    let created = add(5, &["a", "b"]).await.expect("ADD to a missing item creates it");
    let created = created.attributes().expect("ALL_NEW");
    assert_eq!((&created["total"], members(&created["tags"])), (&n(5), vec!["a".to_string(), "b".to_string()]));

    let added = add(-2, &["b", "c"]).await.expect("ADD again");
    let added = added.attributes().expect("ALL_NEW");
    assert_eq!((&added["total"], members(&added["tags"])), (&n(3), vec!["a".into(), "b".into(), "c".into()]));

    let output = env
        .client
        .update_item()
        .table_name(&table)
        .key("pk", s("k"))
        .update_expression("DELETE tags :gone")
        .expression_attribute_values(":gone", string_set(&["a", "c", "not-a-member"]))
        .return_values(ReturnValue::UpdatedNew)
        .send()
        .await
        .expect("DELETE from a set");
    assert_eq!(output.attributes(), Some(&item([("tags", string_set(&["b"]))])));
}

/// list_append appends or prepends without a read-modify-write race.
#[tokio::test]
async fn list_append_appends_and_prepends() {
    let env = TestEnv::start();
    let table = env.create_table("listappend", ("pk", ScalarAttributeType::S), None).await;
    env.client
        .put_item()
        .table_name(&table)
        .set_item(Some(item([("pk", s("k")), ("events", AttributeValue::L(vec![n(1)]))])))
        .send()
        .await
        .expect("put");
    let output = env
        .client
        .update_item()
        .table_name(&table)
        .key("pk", s("k"))
        .update_expression("SET events = list_append(events, :tail), #log = list_append(:head, events)")
        .expression_attribute_names("#log", "log")
        .expression_attribute_values(":tail", AttributeValue::L(vec![n(2), n(3)]))
        .expression_attribute_values(":head", AttributeValue::L(vec![n(0)]))
        .return_values(ReturnValue::UpdatedNew)
        .send()
        .await
        .expect("list_append");
    // Every operand reads the item as it was before the update.
    assert_eq!(
        output.attributes(),
        Some(&item([
            ("events", AttributeValue::L(vec![n(1), n(2), n(3)])),
            ("log", AttributeValue::L(vec![n(0), n(1)])),
        ]))
    );
}

/// REMOVE deletes top-level attributes, list elements (shifting the rest down) and map entries.
#[tokio::test]
async fn remove_deletes_attributes_list_elements_and_map_entries() {
    let env = TestEnv::start();
    let table = env.create_table("remove", ("pk", ScalarAttributeType::S), None).await;
    let stored = item([
        ("pk", s("k")),
        ("gone", s("x")),
        ("list", AttributeValue::L(vec![s("a"), s("b"), s("c")])),
        ("map", AttributeValue::M(item([("keep", n(1)), ("drop", n(2))]))),
    ]);
    env.client.put_item().table_name(&table).set_item(Some(stored)).send().await.expect("put");
    let output = env
        .client
        .update_item()
        .table_name(&table)
        .key("pk", s("k"))
        .update_expression("REMOVE gone, #list[0], #map.#drop, never_there")
        .expression_attribute_names("#list", "list")
        .expression_attribute_names("#map", "map")
        .expression_attribute_names("#drop", "drop")
        .return_values(ReturnValue::AllNew)
        .send()
        .await
        .expect("remove");
    let expected = item([
        ("pk", s("k")),
        ("list", AttributeValue::L(vec![s("b"), s("c")])),
        ("map", AttributeValue::M(item([("keep", n(1))]))),
    ]);
    assert_eq!(output.attributes(), Some(&expected));
    assert_eq!(get(&env, &table, "k").await, Some(expected));
}

/// UPDATED_NEW and UPDATED_OLD return only the attributes the update touched, not the item.
#[tokio::test]
async fn updated_new_and_updated_old_return_only_what_changed() {
    let env = TestEnv::start();
    let table = env.create_table("updatednew", ("pk", ScalarAttributeType::S), None).await;
    let stored = item([("pk", s("k")), ("untouched", s("same")), ("city", s("Seoul"))]);
    env.client.put_item().table_name(&table).set_item(Some(stored)).send().await.expect("put");
    let update = |return_values: ReturnValue| {
        env.client
            .update_item()
            .table_name(&table)
            .key("pk", s("k"))
            .update_expression("SET city = :city, visits = if_not_exists(visits, :zero) + :one")
            .expression_attribute_values(":city", s("Busan"))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .return_values(return_values)
            .send()
    };
    let output = update(ReturnValue::UpdatedNew).await.expect("update");
    assert_eq!(output.attributes(), Some(&item([("city", s("Busan")), ("visits", n(1))])));
    // The second update's old values are what the first one wrote.
    let output = update(ReturnValue::UpdatedOld).await.expect("update");
    assert_eq!(output.attributes(), Some(&item([("city", s("Busan")), ("visits", n(1))])));
    let output = update(ReturnValue::None).await.expect("update");
    assert_eq!(output.attributes(), None);
}

/// For nested paths, UPDATED_NEW / UPDATED_OLD return just the paths written or removed, wrapped
/// in their parents, not whole top-level attributes: that is what DynamoDB does (as ScyllaDB's
/// Alternator tests, checked against DynamoDB, record). DynamoDB Local returns whole top-level
/// attributes instead; onggi follows DynamoDB (`project_updated` in `onggi_model::expr::update`).
#[tokio::test]
async fn updated_values_of_nested_paths_are_the_paths_alone() {
    let env = TestEnv::start();
    let table = env.create_table("nestedreturn", ("pk", ScalarAttributeType::S), None).await;
    let stored = item([
        ("pk", s("k")),
        ("profile", AttributeValue::M(item([("city", s("Seoul")), ("zip", s("04524"))]))),
        ("steps", AttributeValue::L(vec![s("a"), s("b"), s("c")])),
    ]);
    env.client.put_item().table_name(&table).set_item(Some(stored)).send().await.expect("put");
    let output = env
        .client
        .update_item()
        .table_name(&table)
        .key("pk", s("k"))
        .update_expression("SET profile.city = :city")
        .expression_attribute_values(":city", s("Busan"))
        .return_values(ReturnValue::UpdatedNew)
        .send()
        .await
        .expect("update");
    assert_eq!(output.attributes(), Some(&item([("profile", AttributeValue::M(item([("city", s("Busan"))])))])));
    let output = env
        .client
        .update_item()
        .table_name(&table)
        .key("pk", s("k"))
        .update_expression("REMOVE steps[1], profile.zip")
        .return_values(ReturnValue::UpdatedOld)
        .send()
        .await
        .expect("remove");
    assert_eq!(
        output.attributes(),
        Some(&item([
            ("steps", AttributeValue::L(vec![s("b")])),
            ("profile", AttributeValue::M(item([("zip", s("04524"))]))),
        ]))
    );
}

/// A condition on UpdateItem guards the update: a false one changes nothing and the typed error
/// says why; UpdateItem on a missing item with SET creates it.
#[tokio::test]
async fn conditional_update_applies_only_when_the_condition_holds() {
    let env = TestEnv::start();
    let table = env.create_table("cupdate", ("pk", ScalarAttributeType::S), None).await;
    let withdraw = |amount: i64| {
        env.client
            .update_item()
            .table_name(&table)
            .key("pk", s("account"))
            .update_expression("SET balance = balance - :amount")
            .condition_expression("balance >= :amount")
            .expression_attribute_values(":amount", n(amount))
            .return_values(ReturnValue::UpdatedNew)
            .send()
    };
    let error = withdraw(1).await.expect_err("no account yet").into_service_error();
    assert!(error.is_conditional_check_failed_exception(), "{error:?}");
    assert_eq!(get(&env, &table, "account").await, None, "a failed condition creates nothing");

    env.client
        .update_item()
        .table_name(&table)
        .key("pk", s("account"))
        .update_expression("SET balance = :start")
        .expression_attribute_values(":start", n(10))
        .send()
        .await
        .expect("UpdateItem creates a missing item");
    assert_eq!(withdraw(7).await.expect("enough funds").attributes(), Some(&item([("balance", n(3))])));
    let error = withdraw(7).await.expect_err("not enough funds").into_service_error();
    assert!(error.is_conditional_check_failed_exception(), "{error:?}");
    assert_eq!(get(&env, &table, "account").await, Some(item([("pk", s("account")), ("balance", n(3))])));
}

/// ProjectionExpression returns only the named paths, nested ones as nested values; `#name`
/// placeholders reach reserved words such as `name` and `list`.
#[tokio::test]
async fn projection_returns_only_the_named_paths() {
    let env = TestEnv::start();
    let table = env.create_table("projection", ("pk", ScalarAttributeType::S), None).await;
    let stored = item([
        ("pk", s("k")),
        ("name", s("onggi")),
        ("secret", s("not returned")),
        ("nested", AttributeValue::M(item([("deep", n(1)), ("other", n(2))]))),
        ("list", AttributeValue::L(vec![s("zero"), s("one"), s("two")])),
    ]);
    env.client.put_item().table_name(&table).set_item(Some(stored)).send().await.expect("put");
    let output = env
        .client
        .get_item()
        .table_name(&table)
        .key("pk", s("k"))
        .projection_expression("#name, nested.deep, #list[1], absent_attribute")
        .expression_attribute_names("#name", "name")
        .expression_attribute_names("#list", "list")
        .send()
        .await
        .expect("get with projection");
    assert_eq!(
        output.item(),
        Some(&item([
            ("name", s("onggi")),
            ("nested", AttributeValue::M(item([("deep", n(1))]))),
            ("list", AttributeValue::L(vec![s("one")])),
        ]))
    );
}

/// Expression mistakes are ValidationExceptions naming the problem, and write nothing.
#[tokio::test]
async fn malformed_expressions_are_validation_errors() {
    let env = TestEnv::start();
    let table = env.create_table("badexpr", ("pk", ScalarAttributeType::S), None).await;
    let undefined = env
        .client
        .update_item()
        .table_name(&table)
        .key("pk", s("k"))
        .update_expression("SET a = :missing")
        .send()
        .await;
    assert_validation(&undefined, "An expression attribute value used in expression is not defined");
    let syntax = env
        .client
        .update_item()
        .table_name(&table)
        .key("pk", s("k"))
        .update_expression("SET a = = :v")
        .expression_attribute_values(":v", n(1))
        .send()
        .await;
    assert_validation(&syntax, "Invalid UpdateExpression: Syntax error");
    let key_update = env
        .client
        .update_item()
        .table_name(&table)
        .key("pk", s("k"))
        .update_expression("SET pk = :v")
        .expression_attribute_values(":v", s("other"))
        .send()
        .await;
    assert_validation(&key_update, "part of the key");
    assert_eq!(get(&env, &table, "k").await, None);
}

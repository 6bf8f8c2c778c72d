//! Optimistic concurrency: many clients racing conditional updates on one item.

use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ScalarAttributeType};

use crate::harness::{TestEnv, item, n, s};

/// Concurrent tasks.
const TASKS: u64 = 16;
/// Successful increments each task makes.
const INCREMENTS_PER_TASK: u64 = 50;
/// Attempts a task may make before the test calls it starvation (each failed attempt means
/// another task succeeded, so this is far above what fair progress needs).
const ATTEMPTS_PER_TASK_MAX: u64 = 20_000;
/// The whole race must finish within this.
const RACE_TIMEOUT: Duration = Duration::from_secs(120);

fn number(value: &AttributeValue) -> u64 {
    value.as_n().expect("a number").parse().expect("an integer")
}

/// Version-checked read-modify-write is how applications build atomic updates on DynamoDB: if two
/// writers could both win against the same version, increments would be lost. Every successful
/// increment must see a distinct counter value, and the final count must equal the successes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conditional_increments_from_racing_tasks_are_never_lost() {
    let env = TestEnv::start();
    let table = env.create_table("race", ("pk", ScalarAttributeType::S), None).await;
    env.client
        .put_item()
        .table_name(&table)
        .set_item(Some(item([("pk", s("counter")), ("n", n(0)), ("version", n(0))])))
        .send()
        .await
        .expect("create the counter");

    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let client = env.client.clone();
        let table = table.clone();
        tasks.push(tokio::spawn(async move {
            let mut seen_values = Vec::new();
            let mut conflicts = 0u64;
            let mut attempts = 0u64;
            while (seen_values.len() as u64) < INCREMENTS_PER_TASK {
                attempts += 1;
                assert!(attempts <= ATTEMPTS_PER_TASK_MAX, "a task starved after {attempts} attempts");
                let current = client
                    .get_item()
                    .table_name(&table)
                    .key("pk", s("counter"))
                    .consistent_read(true)
                    .send()
                    .await
                    .expect("read the counter")
                    .item
                    .expect("the counter exists");
                let version = number(&current["version"]);
                let result = client
                    .update_item()
                    .table_name(&table)
                    .key("pk", s("counter"))
                    .update_expression("SET n = n + :one, version = :next")
                    .condition_expression("version = :seen")
                    .expression_attribute_values(":one", n(1))
                    .expression_attribute_values(":seen", n(version))
                    .expression_attribute_values(":next", n(version + 1))
                    .return_values(ReturnValue::UpdatedNew)
                    .send()
                    .await;
                match result {
                    Ok(output) => {
                        let new = output.attributes().expect("UPDATED_NEW");
                        let value = number(&new["n"]);
                        assert_eq!(number(&new["version"]), version + 1);
                        assert_eq!(value, version + 1, "n and version move together");
                        seen_values.push(value);
                    }
                    Err(error) => {
                        let error = error.into_service_error();
                        assert!(error.is_conditional_check_failed_exception(), "unexpected error: {error:?}");
                        conflicts += 1;
                    }
                }
            }
            (seen_values, conflicts)
        }));
    }

    let results = tokio::time::timeout(RACE_TIMEOUT, async {
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.expect("a task panicked"));
        }
        results
    })
    .await
    .expect("the race did not finish in time");

    let conflicts: u64 = results.iter().map(|(_, conflicts)| conflicts).sum();
    let mut values: Vec<u64> = results.into_iter().flat_map(|(values, _)| values).collect();
    values.sort_unstable();
    let successes = values.len() as u64;
    println!("{successes} successful increments, {conflicts} conditional-check conflicts");
    assert_eq!(values, (1..=TASKS * INCREMENTS_PER_TASK).collect::<Vec<_>>(), "each success saw its own value");

    let last = env
        .client
        .get_item()
        .table_name(&table)
        .key("pk", s("counter"))
        .consistent_read(true)
        .send()
        .await
        .expect("read the counter")
        .item
        .expect("the counter exists");
    assert_eq!((number(&last["n"]), number(&last["version"])), (successes, successes));
}

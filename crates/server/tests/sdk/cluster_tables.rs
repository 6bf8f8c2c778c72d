//! Table changes reach a cluster member that was down when they were made.
//!
//! With node 3 killed (`kill -9`), node 1 creates a table (with a global index) and writes to it,
//! deletes another, and enables Time to Live and tags on a third. Node 3 is restarted and, without
//! any operator help, must soon know all three changes — the new table and its items, the deleted
//! table gone, the new settings — by comparing catalogs with its peers in the background.

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    BillingMode, GlobalSecondaryIndex, KeyType, Projection, ProjectionType, ScalarAttributeType, Tag,
    TimeToLiveSpecification, TimeToLiveStatus,
};

use crate::cluster::Cluster;
use crate::harness::{attribute_definition, client, item, key_element, s, skip_without_own_server, wait_active};

const TEST_TIMEOUT: Duration = Duration::from_secs(90);
/// How long the returning node may take to learn the changes: catalogs are compared about once
/// a second with one peer at a time.
const CATCH_UP_BOUND: Duration = Duration::from_secs(20);

async fn create(client: &Client, name: &str, global_index: bool) {
    let mut request = client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attribute_definition("pk", ScalarAttributeType::S))
        .key_schema(key_element("pk", KeyType::Hash));
    if global_index {
        request = request
            .attribute_definitions(attribute_definition("color", ScalarAttributeType::S))
            .global_secondary_indexes(
                GlobalSecondaryIndex::builder()
                    .index_name("by_color")
                    .key_schema(key_element("color", KeyType::Hash))
                    .projection(Projection::builder().projection_type(ProjectionType::All).build())
                    .build()
                    .expect("index"),
            );
    }
    request.send().await.unwrap_or_else(|error| panic!("create {name}: {error:?}"));
    wait_active(client, name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_returning_node_learns_the_table_changes_it_missed() {
    if skip_without_own_server("cluster catalog test") {
        return;
    }
    tokio::time::timeout(TEST_TIMEOUT, missed_changes()).await.expect("the catalog test exceeded its time bound");
}

async fn missed_changes() {
    let mut cluster = Cluster::start(3);
    let first = client(&cluster.endpoint(0));
    let third = client(&cluster.endpoint(2));
    let name = |hint: &str| crate::harness::unique_name(hint);
    let (kept, doomed, fresh) = (name("kept"), name("doomed"), name("fresh"));
    create(&first, &kept, false).await;
    create(&first, &doomed, false).await;
    wait_active(&third, &doomed).await;

    cluster.nodes[2].take().expect("node 3").kill_hard();
    create(&first, &fresh, true).await;
    for i in 0..20 {
        let color = if i % 2 == 0 { "red" } else { "blue" };
        first
            .put_item()
            .table_name(&fresh)
            .set_item(Some(item([("pk", s(&format!("item-{i}"))), ("color", s(color))])))
            .send()
            .await
            .expect("put with one node down");
    }
    first.delete_table().table_name(&doomed).send().await.expect("delete with one node down");
    first
        .update_time_to_live()
        .table_name(&kept)
        .time_to_live_specification(
            TimeToLiveSpecification::builder().enabled(true).attribute_name("expires").build().expect("spec"),
        )
        .send()
        .await
        .expect("enable TTL with one node down");
    let arn = first.describe_table().table_name(&kept).send().await.expect("describe").table.and_then(|t| t.table_arn);
    first
        .tag_resource()
        .resource_arn(arn.clone().expect("table ARN"))
        .tags(Tag::builder().key("team").value("storage").build().expect("tag"))
        .send()
        .await
        .expect("tag with one node down");

    cluster.start_node(2);
    let returned = Instant::now();
    let mut missing = String::new();
    while returned.elapsed() < CATCH_UP_BOUND {
        missing.clear();
        let tables = match third.list_tables().send().await {
            Ok(answer) => answer.table_names().to_vec(),
            Err(error) => {
                missing = format!("list tables: {error:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        if !tables.contains(&fresh) {
            missing.push_str("the new table; ");
        }
        if tables.contains(&doomed) {
            missing.push_str("the deletion; ");
        }
        let ttl = third.describe_time_to_live().table_name(&kept).send().await.ok();
        let status = ttl.and_then(|answer| answer.time_to_live_description).and_then(|d| d.time_to_live_status);
        if status != Some(TimeToLiveStatus::Enabled) {
            missing.push_str("the TTL setting; ");
        }
        let tags = third.list_tags_of_resource().resource_arn(arn.clone().unwrap_or_default()).send().await.ok();
        if !tags.is_some_and(|answer| answer.tags().iter().any(|tag| tag.key() == "team" && tag.value() == "storage")) {
            missing.push_str("the tags; ");
        }
        if missing.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        missing.is_empty(),
        "node 3 had not learned {missing}{CATCH_UP_BOUND:?} after it returned; logs:\n{}",
        cluster.logs()
    );
    println!(
        "catalog test: node 3 knew every missed table change {} ms after it restarted",
        returned.elapsed().as_millis()
    );

    // The new table works through the returning node: strict reads see what was written while it
    // was down, and it coordinates writes of its own.
    for i in 0..20 {
        let answer = third
            .get_item()
            .table_name(&fresh)
            .key("pk", s(&format!("item-{i}")))
            .consistent_read(true)
            .send()
            .await
            .unwrap_or_else(|error| panic!("strict read through node 3: {error:?}"));
        assert!(answer.item().is_some(), "item-{i} written while node 3 was down");
    }
    third
        .put_item()
        .table_name(&fresh)
        .set_item(Some(item([("pk", s("through-node-3")), ("color", s("green"))])))
        .send()
        .await
        .expect("a write coordinated by the returning node");
    let index = third
        .query()
        .table_name(&fresh)
        .index_name("by_color")
        .key_condition_expression("color = :c")
        .expression_attribute_values(":c", s("green"))
        .send()
        .await
        .expect("the returning node reads the new table's index");
    assert_eq!(index.count(), 1, "the index has the item written through node 3");
    drop(cluster);
}

/// Rounds of the agreement test: each creates one table three times at once.
const AGREEMENT_ROUNDS: usize = 6;
/// Tags each node adds at once in the agreement test.
const TAGS_PER_NODE: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn table_changes_through_different_nodes_are_agreed() {
    if skip_without_own_server("cluster table agreement test") {
        return;
    }
    tokio::time::timeout(TEST_TIMEOUT, agreement()).await.expect("the agreement test exceeded its time bound");
}

/// Table changes are read-modify-writes of the registry under per-item consensus: of three
/// CreateTable of one name at once through three nodes exactly one wins, every node ends with
/// the winner's table; tags added at once through every node all stay; a DeleteTable racing an
/// UpdateTimeToLive leaves the table gone everywhere.
async fn agreement() {
    let cluster = Cluster::start(3);
    let clients: Vec<Client> = (0..3).map(|i| client(&cluster.endpoint(i))).collect();
    for round in 0..AGREEMENT_ROUNDS {
        let name = crate::harness::unique_name("contested");
        let mut attempts = tokio::task::JoinSet::new();
        for (i, client) in clients.iter().enumerate() {
            let request = client
                .create_table()
                .table_name(&name)
                .billing_mode(BillingMode::PayPerRequest)
                .attribute_definitions(attribute_definition("pk", ScalarAttributeType::S))
                .key_schema(key_element("pk", KeyType::Hash))
                .tags(Tag::builder().key("creator").value(format!("node-{}", i + 1)).build().expect("tag"));
            attempts.spawn(async move { (i, request.send().await) });
        }
        let mut answers = attempts.join_all().await;
        answers.sort_by_key(|(i, _)| *i);
        let mut winners = Vec::new();
        for (i, answer) in answers {
            match answer {
                Ok(answer) => winners.push((i, answer.table_description.and_then(|table| table.table_id))),
                Err(error) => assert!(
                    error.as_service_error().is_some_and(|error| error.is_resource_in_use_exception()),
                    "round {round}: a losing CreateTable through node {} must get ResourceInUseException: {error:?}",
                    i + 1
                ),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: exactly one CreateTable wins, not {winners:?}");
        let (winner, id) = winners.pop().expect("one winner");
        for (i, client) in clients.iter().enumerate() {
            let table = client.describe_table().table_name(&name).send().await.expect("describe").table.expect("table");
            assert_eq!(table.table_id, id, "round {round}: node {} holds the winner's table", i + 1);
            let tags = client
                .list_tags_of_resource()
                .resource_arn(table.table_arn.expect("ARN"))
                .send()
                .await
                .expect("list tags");
            let creator = tags.tags().iter().find(|tag| tag.key() == "creator").map(|tag| tag.value().to_string());
            assert_eq!(creator, Some(format!("node-{}", winner + 1)), "round {round}: node {} tags", i + 1);
        }
    }

    // Tags added at once through every node: each change reads the last, so none is lost.
    let name = crate::harness::unique_name("tagged");
    create(&clients[0], &name, false).await;
    let arn =
        clients[0].describe_table().table_name(&name).send().await.expect("describe").table.and_then(|t| t.table_arn);
    let arn = arn.expect("ARN");
    let mut tagging = tokio::task::JoinSet::new();
    for (i, client) in clients.iter().enumerate() {
        for j in 0..TAGS_PER_NODE {
            let request = client
                .tag_resource()
                .resource_arn(arn.clone())
                .tags(Tag::builder().key(format!("node-{}-{j}", i + 1)).value("x").build().expect("tag"));
            tagging.spawn(async move { request.send().await.expect("tag") });
        }
    }
    tagging.join_all().await;
    for (i, client) in clients.iter().enumerate() {
        let tags = client.list_tags_of_resource().resource_arn(&arn).send().await.expect("list tags");
        assert_eq!(tags.tags().len(), 3 * TAGS_PER_NODE, "node {} holds every tag: {:?}", i + 1, tags.tags());
    }

    // A deletion racing a change: the table ends gone everywhere, whichever came first.
    let ttl = clients[1].update_time_to_live().table_name(&name).time_to_live_specification(
        TimeToLiveSpecification::builder().enabled(true).attribute_name("expires").build().expect("spec"),
    );
    let delete = clients[0].delete_table().table_name(&name);
    let (deleted, ttl) = tokio::join!(delete.send(), ttl.send());
    deleted.expect("the deletion succeeds");
    if let Err(error) = ttl {
        assert!(
            error.as_service_error().is_some_and(|error| error.is_resource_not_found_exception()),
            "a change after the deletion finds no table: {error:?}"
        );
    }
    for (i, client) in clients.iter().enumerate() {
        let answer = client.describe_table().table_name(&name).send().await;
        assert!(
            answer
                .as_ref()
                .err()
                .and_then(|error| error.as_service_error())
                .is_some_and(|e| e.is_resource_not_found_exception()),
            "node {} no longer has the deleted table: {answer:?}",
            i + 1
        );
    }
    drop(cluster);
}

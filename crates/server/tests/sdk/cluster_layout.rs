//! Layout changes on a running cluster of real processes: a node joins, another is
//! decommissioned, while clients keep writing.
//!
//! Three nodes hold a table; clients increment a counter with conditional writes and put fresh
//! items through every node the whole time. A fourth node starts with `--seeds`, `onggi cluster
//! join` adds it, and the change must finish on its own (new replicas catch up, then every node
//! switches to the new layout); then `onggi cluster decommission` drains node 1, and once that
//! change is over node 1 must have dropped its data, and is killed with `kill -9`. Through the
//! remaining nodes: every item written before, every acknowledged put and the counter (exactly
//! the acknowledged increments, give or take those whose outcome the client never learned) must
//! be there, and the new node must hold its replica of everything; `onggi cluster remove` then
//! takes node 1 out of the membership.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    BillingMode, GlobalSecondaryIndex, KeyType, Projection, ProjectionType, ScalarAttributeType,
};
use tokio::sync::Mutex;

use crate::cluster::Cluster;
use crate::harness::{attribute_definition, client, item, key_element, n, s, skip_without_own_server, wait_active};

const TEST_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a layout change may take here (a few hundred items: catching up takes a second or
/// two; the bound leaves room for a slow machine).
const CHANGE_BOUND: Duration = Duration::from_secs(40);
const ITEMS_BEFORE: usize = 300;

/// `onggi cluster ...` with these arguments; its stdout.
fn onggi_cluster(arguments: &[&str]) -> Result<String, String> {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_onggi"))
        .arg("cluster")
        .args(arguments)
        .output()
        .map_err(|error| error.to_string())?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn status(endpoint: &str) -> Result<serde_json::Value, String> {
    let text = onggi_cluster(&["status", "--endpoint", endpoint, "--json"])?;
    serde_json::from_str(&text).map_err(|error| error.to_string())
}

/// Waits until every node in `endpoints` is in layout epoch `epoch`; returns how long it took.
async fn wait_for_epoch(endpoints: &[String], epoch: u64) -> Result<Duration, String> {
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < CHANGE_BOUND {
        let epochs: Vec<Option<u64>> =
            endpoints.iter().map(|endpoint| status(endpoint).ok().and_then(|s| s["layout_epoch"].as_u64())).collect();
        if epochs.iter().all(|e| *e == Some(epoch)) {
            return Ok(started.elapsed());
        }
        last = format!("{epochs:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!("epochs {last}, wanted {epoch}"))
}

#[derive(Default)]
struct Tally {
    acknowledged: AtomicU64,
    unknown: AtomicU64,
    puts: Mutex<Vec<String>>,
}

fn never_applied<E: ProvideErrorMetadata>(error: &SdkError<E>) -> bool {
    match error {
        SdkError::ServiceError(service) => {
            service.err().code() == Some("ConditionalCheckFailedException")
                || service.err().code() == Some("ThrottlingException")
        }
        SdkError::ConstructionFailure(_) | SdkError::DispatchFailure(_) => true,
        _ => false,
    }
}

/// Increments the counter (read strictly, then a conditional write) and puts fresh items,
/// through the endpoints in turn, until `stop`.
async fn client_loop(
    endpoints: Arc<std::sync::RwLock<Vec<String>>>,
    id: usize,
    table: String,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) {
    for (turn, round) in (id..).zip(0..2_000u64) {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let endpoint = {
            let endpoints = endpoints.read().unwrap();
            endpoints[turn % endpoints.len()].clone()
        };
        let client = client(&endpoint);
        let Ok(value) = read_counter(&client, &table).await else { continue };
        let outcome = client
            .put_item()
            .table_name(&table)
            .set_item(Some(item([("pk", s("counter")), ("sk", n(0)), ("v", n(value + 1))])))
            .condition_expression("attribute_not_exists(v) OR v = :old")
            .expression_attribute_values(":old", n(value))
            .send()
            .await;
        match outcome {
            Ok(_) => {
                tally.acknowledged.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) if never_applied(&error) => {}
            Err(_) => {
                tally.unknown.fetch_add(1, Ordering::Relaxed);
            }
        }
        let key = format!("during-{id}-{round}");
        let put = client
            .put_item()
            .table_name(&table)
            .set_item(Some(item([("pk", s(&key)), ("sk", n(1)), ("v", n(round))])))
            .send()
            .await;
        if put.is_ok() {
            tally.puts.lock().await.push(key);
        }
    }
}

/// The counter's value, read strictly (0 before its first increment).
async fn read_counter(client: &Client, table: &str) -> Result<u64, String> {
    let answer = client
        .get_item()
        .table_name(table)
        .key("pk", s("counter"))
        .key("sk", n(0))
        .consistent_read(true)
        .send()
        .await
        .map_err(|error| format!("{error:?}"))?;
    Ok(answer
        .item()
        .and_then(|item| item.get("v"))
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_joins_and_another_is_decommissioned_under_load() {
    if skip_without_own_server("layout change test") {
        return;
    }
    tokio::time::timeout(TEST_TIMEOUT, join_and_decommission()).await.expect("the layout test exceeded its time bound");
}

async fn join_and_decommission() {
    let mut cluster = Cluster::start(3);
    let table = crate::harness::unique_name("layout");
    let first = client(&cluster.endpoint(0));
    first
        .create_table()
        .table_name(&table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attribute_definition("pk", ScalarAttributeType::S))
        .attribute_definitions(attribute_definition("sk", ScalarAttributeType::N))
        .attribute_definitions(attribute_definition("v", ScalarAttributeType::N))
        .key_schema(key_element("pk", KeyType::Hash))
        .key_schema(key_element("sk", KeyType::Range))
        // A global index, placed by its own key: its partitions move with the table's.
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name("by_v")
                .key_schema(key_element("v", KeyType::Hash))
                .projection(Projection::builder().projection_type(ProjectionType::KeysOnly).build())
                .build()
                .expect("an index"),
        )
        .send()
        .await
        .expect("create the table");
    wait_active(&first, &table).await;
    for i in 0..ITEMS_BEFORE {
        let writer = client(&cluster.endpoint(i % 3));
        writer
            .put_item()
            .table_name(&table)
            .set_item(Some(item([("pk", s(&format!("before-{i}"))), ("sk", n(0)), ("v", n(i))])))
            .send()
            .await
            .expect("put before the changes");
    }

    let endpoints = Arc::new(std::sync::RwLock::new((0..3).map(|i| cluster.endpoint(i)).collect::<Vec<_>>()));
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let clients: Vec<_> = (0..3)
        .map(|id| tokio::spawn(client_loop(endpoints.clone(), id, table.clone(), stop.clone(), tally.clone())))
        .collect();

    // A fourth node joins.
    let (fourth, address) = cluster.start_seeded_node();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let answer = onggi_cluster(&["join", "--endpoint", &cluster.endpoint(0), "--node-id", "4", "--address", &address]);
    answer.unwrap_or_else(|error| panic!("join: {error}; logs:\n{}", cluster.logs()));
    endpoints.write().unwrap().push(cluster.endpoint(fourth));
    let all: Vec<String> = (0..4).map(|i| cluster.endpoint(i)).collect();
    let joined = wait_for_epoch(&all, 2)
        .await
        .unwrap_or_else(|error| panic!("join did not finish: {error}; logs:\n{}", cluster.logs()));
    println!("layout test: node 4 joined; every node in the new layout {} ms after the command", joined.as_millis());
    let held = status(&cluster.endpoint(fourth)).expect("status")["members"]
        .as_array()
        .and_then(|members| members.iter().find(|m| m["id"] == 4).map(|m| m["partitions"].as_u64().unwrap_or(0)))
        .unwrap_or(0);
    assert!(held > 0, "node 4 holds no partition after joining");

    // Node 1 is decommissioned, then killed.
    onggi_cluster(&["decommission", "--endpoint", &cluster.endpoint(1), "--node-id", "1"])
        .unwrap_or_else(|error| panic!("decommission: {error}"));
    let drained = wait_for_epoch(&all, 4)
        .await
        .unwrap_or_else(|error| panic!("decommission did not finish: {error}; logs:\n{}", cluster.logs()));
    println!("layout test: node 1 drained {} ms after the command", drained.as_millis());
    endpoints.write().unwrap().remove(0);
    let node1 = status(&cluster.endpoint(1)).expect("status")["members"][0].clone();
    assert_eq!(
        (node1["id"].as_u64(), node1["partitions"].as_u64(), node1["draining"].as_bool()),
        (Some(1), Some(0), Some(true))
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    // The drained node drops what it gave away: its own storage empties (DescribeTable counts
    // the whole table now that no node holds every partition; the status shows the node's own).
    let started = Instant::now();
    let mut left = i64::MAX;
    while started.elapsed() < CHANGE_BOUND && left != 0 {
        left = status(&cluster.endpoint(0)).expect("status of node 1")["items_stored"].as_i64().unwrap_or(-1);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(left, 0, "node 1 still stores items after it was drained");
    for task in clients {
        task.await.expect("client task");
    }
    cluster.nodes[0].take().expect("node 1").kill_hard();
    // The drained node leaves the membership (a change that moves nothing).
    onggi_cluster(&["remove", "--endpoint", &cluster.endpoint(2), "--node-id", "1"])
        .unwrap_or_else(|error| panic!("remove: {error}"));
    let remaining: Vec<String> = (1..4).map(|i| cluster.endpoint(i)).collect();
    wait_for_epoch(&remaining, 6).await.unwrap_or_else(|error| panic!("remove did not spread: {error}"));
    let members = status(&cluster.endpoint(3)).expect("status")["members"].as_array().map_or(0, Vec::len);
    assert_eq!(members, 3, "node 1 is no longer a member");

    // Everything is there, through the remaining nodes.
    let readers: Vec<Client> = (1..4).map(|i| client(&cluster.endpoint(i))).collect();
    let puts = tally.puts.lock().await.clone();
    let mut expected: BTreeMap<String, i64> = (0..ITEMS_BEFORE).map(|i| (format!("before-{i}"), 0)).collect();
    expected.extend(puts.iter().map(|key| (key.clone(), 1)));
    for (index, (key, sk)) in expected.iter().enumerate() {
        let reader = &readers[index % readers.len()];
        let answer =
            reader.get_item().table_name(&table).key("pk", s(key)).key("sk", n(*sk)).consistent_read(true).send().await;
        let answer = answer.unwrap_or_else(|error| panic!("read {key}: {error:?}"));
        assert!(answer.item().is_some(), "{key} was lost; logs:\n{}", cluster.logs());
    }
    let acknowledged = tally.acknowledged.load(Ordering::Relaxed);
    let unknown = tally.unknown.load(Ordering::Relaxed);
    let value = read_counter(&readers[2], &table).await.expect("read the counter");
    println!(
        "layout test: {} items checked ({} put during the changes), {acknowledged} increments acknowledged, {unknown} \
         unknown, counter {value}",
        expected.len(),
        puts.len()
    );
    assert!(acknowledged > 0 && !puts.is_empty(), "the clients made no progress during the changes");
    assert!(
        acknowledged <= value && value <= acknowledged + unknown,
        "counter {value}, {acknowledged} acknowledged, {unknown} unknown"
    );
    // With three nodes left and three replicas, node 4 replicates every partition now: its own
    // storage fills with every item (catching up during the changes; hints and anti-entropy
    // bring writes it missed since, as on any replica).
    let started = Instant::now();
    let mut held = 0;
    while started.elapsed() < CHANGE_BOUND {
        let description = readers[2].describe_table().table_name(&table).send().await.expect("describe");
        held = description.table().and_then(|t| t.item_count()).unwrap_or(0);
        if held as usize == expected.len() + 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("layout test: node 4 stores all {held} items {} ms after the checks began", started.elapsed().as_millis());
    assert_eq!(held as usize, expected.len() + 1, "node 4's own storage (DescribeTable counts the node's replica)");
    // Then an (eventually consistent) scan through the new node, which reads its own replica,
    // sees every item once.
    let mut scanned = 0;
    let mut start = None;
    loop {
        let page = readers[2].scan().table_name(&table).set_exclusive_start_key(start).send().await.expect("scan");
        scanned += page.count();
        match page.last_evaluated_key() {
            Some(key) if !key.is_empty() => start = Some(key.clone()),
            _ => break,
        }
    }
    assert_eq!(scanned as usize, expected.len() + 1, "a scan through node 4 (the counter included)");

    // The global index moved with the layout: queries of it through every remaining node find
    // every item by its value (each item's v: before-i has i, during-x-r has r).
    let v_of = |key: &str| -> i64 { key.rsplit('-').next().and_then(|v| v.parse().ok()).expect("a numbered key") };
    for v in [0, 1, 5, 17] {
        let wanted: std::collections::BTreeSet<String> = expected
            .keys()
            .filter(|key| v_of(key) == v)
            .cloned()
            .chain((value as i64 == v).then(|| "counter".into()))
            .collect();
        for (i, reader) in readers.iter().enumerate() {
            let started = Instant::now();
            loop {
                let page = reader
                    .query()
                    .table_name(&table)
                    .index_name("by_v")
                    .key_condition_expression("v = :v")
                    .expression_attribute_values(":v", n(v))
                    .send()
                    .await
                    .expect("query the global index");
                let found: std::collections::BTreeSet<String> = page
                    .items()
                    .iter()
                    .filter_map(|item| item.get("pk").and_then(|pk| pk.as_s().ok()).cloned())
                    .collect();
                if found == wanted {
                    break;
                }
                assert!(
                    started.elapsed() < CHANGE_BOUND,
                    "index query v = {v} through node {}: {found:?}, wanted {wanted:?}",
                    i + 2
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    drop(cluster);
}

/// Items a single node holds before it grows into a cluster.
const ITEMS_ALONE: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_single_node_grows_into_a_three_node_cluster() {
    if skip_without_own_server("growth test") {
        return;
    }
    tokio::time::timeout(TEST_TIMEOUT, grow()).await.expect("the growth test exceeded its time bound");
}

/// A node started as a cluster of one (`--members` naming itself) serves alone, then two nodes
/// join it one after the other: every partition ends with three replicas, each holding every
/// item, and the cluster keeps serving strict reads with the first node killed.
async fn grow() {
    let mut cluster = Cluster::start(1);
    let table = crate::harness::unique_name("grow");
    let alone = client(&cluster.endpoint(0));
    alone
        .create_table()
        .table_name(&table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attribute_definition("pk", ScalarAttributeType::S))
        .key_schema(key_element("pk", KeyType::Hash))
        .send()
        .await
        .expect("create the table");
    wait_active(&alone, &table).await;
    for i in 0..ITEMS_ALONE {
        let put = alone.put_item().table_name(&table).set_item(Some(item([("pk", s(&format!("g-{i}"))), ("v", n(i))])));
        put.send().await.expect("put on the single node");
    }
    for i in 0..ITEMS_ALONE / 10 {
        alone.delete_item().table_name(&table).key("pk", s(&format!("g-{i}"))).send().await.expect("delete");
    }
    let expected: std::collections::BTreeSet<String> =
        (ITEMS_ALONE / 10..ITEMS_ALONE).map(|i| format!("g-{i}")).collect();
    let read_all = |endpoint: String, table: String| async move {
        let client = client(&endpoint);
        let mut keys = std::collections::BTreeSet::new();
        let mut start = None;
        loop {
            let page = client
                .scan()
                .table_name(&table)
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .unwrap_or_else(|error| panic!("scan through {endpoint}: {error:?}"));
            keys.extend(page.items().iter().filter_map(|item| item.get("pk")?.as_s().ok().cloned()));
            match page.last_evaluated_key() {
                Some(key) if !key.is_empty() => start = Some(key.clone()),
                _ => return keys,
            }
        }
    };
    for id in 2..=3u64 {
        let (index, address) = cluster.start_seeded_node();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let join = onggi_cluster(&[
            "join",
            "--endpoint",
            &cluster.endpoint(0),
            "--node-id",
            &id.to_string(),
            "--address",
            &address,
        ]);
        join.unwrap_or_else(|error| panic!("join of node {id}: {error}; logs:\n{}", cluster.logs()));
        let endpoints: Vec<String> = (0..=index).map(|i| cluster.endpoint(i)).collect();
        // Strict scans while the change runs (through the new node too, whose replicas are
        // still catching up): each returns exactly the items.
        let started = Instant::now();
        let mut scans = 0;
        while started.elapsed() < CHANGE_BOUND
            && endpoints
                .iter()
                .any(|endpoint| status(endpoint).ok().and_then(|s| s["layout_epoch"].as_u64()) != Some(2 * (id - 1)))
        {
            let endpoint = endpoints[scans % endpoints.len()].clone();
            assert_eq!(
                read_all(endpoint.clone(), table.clone()).await,
                expected,
                "during the join of node {id}, through {endpoint}"
            );
            scans += 1;
        }
        wait_for_epoch(&endpoints, 2 * (id - 1))
            .await
            .unwrap_or_else(|error| panic!("join of node {id} did not finish: {error}; logs:\n{}", cluster.logs()));
        let took = started.elapsed().as_millis();
        println!("growth test: node {id} joined in {took} ms; {scans} strict scans during the change");
    }
    // Three replicas of every partition: every node holds them all.
    for i in 0..3 {
        let status = status(&cluster.endpoint(i)).expect("status");
        assert_eq!(status["replication"], 3, "node {}: {status}", i + 1);
        for member in status["members"].as_array().expect("members") {
            assert_eq!(member["partitions"], 256, "node {}'s view: {status}", i + 1);
        }
    }
    for i in 0..3 {
        assert_eq!(read_all(cluster.endpoint(i), table.clone()).await, expected, "through node {}", i + 1);
    }
    // Each new node holds its own replica of every item: with the first node gone, the other
    // two still form a majority of every partition.
    cluster.nodes[0].take().expect("node 1").kill_hard();
    for i in 1..3 {
        assert_eq!(read_all(cluster.endpoint(i), table.clone()).await, expected, "node 1 down, through node {}", i + 1);
    }
    // The table was created before the registry of table descriptions was replicated: its
    // description is taken from the catalog by the first change, made through node 2, and a
    // change through node 3 follows that one.
    let (second, third) = (client(&cluster.endpoint(1)), client(&cluster.endpoint(2)));
    let arn =
        second.describe_table().table_name(&table).send().await.expect("describe").table.and_then(|t| t.table_arn);
    let arn = arn.expect("ARN");
    let tag = |key: &str| aws_sdk_dynamodb::types::Tag::builder().key(key).value("v").build().expect("tag");
    second.tag_resource().resource_arn(&arn).tags(tag("first")).send().await.expect("tag through node 2");
    third.tag_resource().resource_arn(&arn).tags(tag("second")).send().await.expect("tag through node 3");
    for client in [&second, &third] {
        let tags = client.list_tags_of_resource().resource_arn(&arn).send().await.expect("list tags");
        let mut keys: Vec<&str> = tags.tags().iter().map(|tag| tag.key()).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["first", "second"], "both changes of the table created alone");
    }
    let again = third
        .create_table()
        .table_name(&table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attribute_definition("pk", ScalarAttributeType::S))
        .key_schema(key_element("pk", KeyType::Hash))
        .send()
        .await;
    assert!(
        again
            .as_ref()
            .err()
            .and_then(|error| error.as_service_error())
            .is_some_and(|e| e.is_resource_in_use_exception()),
        "the table created alone exists for the registry: {again:?}"
    );
}

/// A node given `--node-id` and `--cluster-listen` but neither members nor seeds forms a cluster
/// of one (which others can join), and says so; one given neither stays a plain single node.
#[test]
fn a_node_with_a_cluster_address_and_no_seeds_is_a_cluster_of_one() {
    if skip_without_own_server("cluster of one test") {
        return;
    }
    let directory = tempfile::tempdir().expect("temporary directory");
    let listen = std::net::TcpListener::bind("127.0.0.1:0").expect("a port").local_addr().expect("address");
    let extra = ["--node-id".to_string(), "7".to_string(), "--cluster-listen".to_string(), listen.to_string()];
    let node = crate::harness::Server::start_with(
        &directory.path().join("data"),
        &directory.path().join("node.log"),
        "127.0.0.1:0",
        &extra,
    );
    let one = status(&node.endpoint).expect("cluster status");
    assert_eq!(one["node"], 7);
    let members = one["members"].as_array().expect("members");
    assert_eq!(members.len(), 1, "{one}");
    assert_eq!(members[0]["address"], listen.to_string());
    let alone = crate::harness::Server::start(&directory.path().join("plain"), &directory.path().join("plain.log"));
    let plain = status(&alone.endpoint).expect("status of a plain node");
    assert_eq!((&plain["node"], &plain["cluster"]), (&serde_json::json!(0), &serde_json::Value::Null), "{plain}");
}

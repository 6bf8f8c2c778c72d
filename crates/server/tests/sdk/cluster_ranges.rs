//! Query and Scan on a five-node cluster with three replicas per item: no node holds every
//! partition, so every page is read piece by piece from replicas of the partitions it crosses.
//!
//! Items are written through every node; then, through every node, paginated Scans (with small
//! limits, filters and Select COUNT), parallel scan segments, and Queries (forward, backward,
//! paginated, on the table and on a local secondary index) must return exactly the items written,
//! each once, in storage order; so must Queries and Scans of a global secondary index, which merge
//! one replica's share of every partition (each replica indexes only its own items). After one
//! node is killed with `kill -9`, Scans through the others still return every item (pieces fail
//! over to other replicas).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeValue, BillingMode, GlobalSecondaryIndex, KeyType, LocalSecondaryIndex, Projection, ProjectionType,
    ScalarAttributeType, Select,
};

use crate::cluster::Cluster;
use crate::harness::{attribute_definition, client, item, key_element, n, s, skip_without_own_server, wait_active};

/// Partition keys written, and sort keys under each.
const PARTITION_KEYS: usize = 40;
const SORT_KEYS: usize = 8;
const TEST_TIMEOUT: Duration = Duration::from_secs(120);

type Key = (String, i64);

fn key_of(item: &HashMap<String, AttributeValue>) -> Key {
    let pk = item["pk"].as_s().expect("pk is a string").clone();
    let sk = item["sk"].as_n().expect("sk is a number").parse().expect("sk is an integer");
    (pk, sk)
}

/// Every item of a Scan (or of one segment), following LastEvaluatedKey; checks that no item comes
/// twice and returns them in the order read, with the summed Count and ScannedCount.
async fn scan_all(
    client: &Client,
    table: &str,
    limit: Option<i32>,
    segment: Option<(i32, i32)>,
    filter: bool,
    consistent: bool,
) -> Result<(Vec<Key>, i32, i32), String> {
    let mut keys = Vec::new();
    let (mut count, mut scanned) = (0, 0);
    let mut start = None;
    for _ in 0..10_000 {
        let mut request =
            client.scan().table_name(table).set_limit(limit).consistent_read(consistent).set_exclusive_start_key(start);
        if let Some((segment, total)) = segment {
            request = request.segment(segment).total_segments(total);
        }
        if filter {
            request = request.filter_expression("even = :yes").expression_attribute_values(":yes", n(1));
        }
        let page = request.send().await.map_err(|error| format!("{:?}", error.into_service_error()))?;
        keys.extend(page.items().iter().map(key_of));
        count += page.count();
        scanned += page.scanned_count();
        if let Some(limit) = limit
            && page.scanned_count() > limit
        {
            return Err(format!("a page scanned {} items with Limit {limit}", page.scanned_count()));
        }
        match page.last_evaluated_key() {
            Some(key) if !key.is_empty() => start = Some(key.clone()),
            _ => {
                let distinct: BTreeSet<&Key> = keys.iter().collect();
                if distinct.len() != keys.len() {
                    return Err("an item came twice".into());
                }
                return Ok((keys, count, scanned));
            }
        }
    }
    Err("the scan did not end".into())
}

/// Every sort key of one partition key, by Query pages of `limit`.
async fn query_all(
    client: &Client,
    table: &str,
    index: Option<&str>,
    pk: &str,
    forward: bool,
    limit: i32,
    consistent: bool,
) -> Result<Vec<i64>, String> {
    let mut sort_keys = Vec::new();
    let mut start = None;
    for _ in 0..1_000 {
        let page = client
            .query()
            .table_name(table)
            .set_index_name(index.map(str::to_string))
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(pk))
            .scan_index_forward(forward)
            .consistent_read(consistent)
            .limit(limit)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|error| format!("{:?}", error.into_service_error()))?;
        sort_keys.extend(page.items().iter().map(|item| key_of(item).1));
        match page.last_evaluated_key() {
            Some(key) if !key.is_empty() => start = Some(key.clone()),
            _ => return Ok(sort_keys),
        }
    }
    Err("the query did not end".into())
}

/// A table keyed by `pk` (S) and `sk` (N), with a local index `by_rank` (all attributes) and a
/// global one `by_rank_global` (keys only) on `rank` (N).
async fn create_table(client: &Client, table: &str) {
    client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attribute_definition("pk", ScalarAttributeType::S))
        .attribute_definitions(attribute_definition("sk", ScalarAttributeType::N))
        .attribute_definitions(attribute_definition("rank", ScalarAttributeType::N))
        .key_schema(key_element("pk", KeyType::Hash))
        .key_schema(key_element("sk", KeyType::Range))
        .local_secondary_indexes(
            LocalSecondaryIndex::builder()
                .index_name("by_rank")
                .key_schema(key_element("pk", KeyType::Hash))
                .key_schema(key_element("rank", KeyType::Range))
                .projection(Projection::builder().projection_type(ProjectionType::All).build())
                .build()
                .expect("local index"),
        )
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name("by_rank_global")
                .key_schema(key_element("rank", KeyType::Hash))
                .projection(Projection::builder().projection_type(ProjectionType::KeysOnly).build())
                .build()
                .expect("global index"),
        )
        .send()
        .await
        .expect("create the table");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn query_and_scan_span_the_partitions_of_a_five_node_cluster() {
    if skip_without_own_server("five-node range read test") {
        return;
    }
    tokio::time::timeout(TEST_TIMEOUT, five_nodes()).await.expect("the five-node test exceeded its time bound");
}

async fn five_nodes() {
    let mut cluster = Cluster::start(5);
    let clients: Vec<Client> = (0..5).map(|i| client(&cluster.endpoint(i))).collect();
    let table = crate::harness::unique_name("ranges");
    create_table(&clients[0], &table).await;
    for client in &clients {
        wait_active(client, &table).await;
    }

    // Items through every node; `rank` orders a partition key's items backwards.
    let mut expected: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for p in 0..PARTITION_KEYS {
        let pk = format!("key-{p}");
        for k in 0..SORT_KEYS as i64 {
            let writer = &clients[(p + k as usize) % clients.len()];
            writer
                .put_item()
                .table_name(&table)
                .set_item(Some(item([
                    ("pk", s(&pk)),
                    ("sk", n(k)),
                    ("rank", n(100 - k)),
                    ("even", n(i64::from(k % 2 == 0))),
                    ("pad", s(&"x".repeat(200))),
                ])))
                .send()
                .await
                .unwrap_or_else(|error| panic!("put {pk}/{k}: {error:?}"));
            expected.entry(pk.clone()).or_default().push(k);
        }
    }
    let all: BTreeSet<Key> = expected.iter().flat_map(|(pk, sks)| sks.iter().map(|sk| (pk.clone(), *sk))).collect();
    let total = all.len() as i32;

    // Commits reach the third replica of each item right after the write is acknowledged; an
    // eventually consistent Scan reads one replica per partition, so wait until they have.
    let settle = Instant::now();
    loop {
        let (keys, _, _) = scan_all(&clients[4], &table, None, None, false, false).await.expect("scan");
        if keys.len() as i32 == total || settle.elapsed() > Duration::from_secs(10) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // DescribeTable counts the whole table (every member's items over N), not the answering
    // node's replicas only: through every node, once the third replicas have their commits.
    for (i, client) in clients.iter().enumerate() {
        let counts = |table: &aws_sdk_dynamodb::types::TableDescription| {
            let index = |indexes: &[aws_sdk_dynamodb::types::LocalSecondaryIndexDescription]| {
                indexes.first().and_then(|index| index.item_count())
            };
            let global = |indexes: &[aws_sdk_dynamodb::types::GlobalSecondaryIndexDescription]| {
                indexes.first().and_then(|index| index.item_count())
            };
            (
                table.item_count(),
                index(table.local_secondary_indexes()),
                global(table.global_secondary_indexes()),
                table.table_size_bytes().is_some_and(|bytes| bytes > 200 * i64::from(total)),
            )
        };
        let wanted = (Some(i64::from(total)), Some(i64::from(total)), Some(i64::from(total)), true);
        let started = Instant::now();
        loop {
            let described = client.describe_table().table_name(&table).send().await.expect("describe");
            let seen = counts(described.table().expect("a table"));
            if seen == wanted {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "DescribeTable through node {}: {seen:?}", i + 1);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    for (i, client) in clients.iter().enumerate() {
        for limit in [None, Some(1), Some(7), Some(50)] {
            let (keys, count, scanned) = scan_all(client, &table, limit, None, false, false)
                .await
                .unwrap_or_else(|error| panic!("scan through node {} with limit {limit:?}: {error}", i + 1));
            assert_eq!(
                keys.iter().cloned().collect::<BTreeSet<_>>(),
                all,
                "scan through node {} limit {limit:?}",
                i + 1
            );
            assert_eq!((count, scanned), (total, total));
            // Storage order: a partition key's items together, by sort key.
            for pair in keys.windows(2) {
                if pair[0].0 == pair[1].0 {
                    assert!(pair[0].1 < pair[1].1, "sort keys out of order: {pair:?}");
                }
            }
        }
        // Strongly consistent: read from a majority of each partition's replicas and merged.
        let (keys, count, scanned) = scan_all(client, &table, Some(7), None, false, true)
            .await
            .unwrap_or_else(|error| panic!("consistent scan through node {}: {error}", i + 1));
        assert_eq!(keys.iter().cloned().collect::<BTreeSet<_>>(), all, "consistent scan through node {}", i + 1);
        assert_eq!((keys.len() as i32, count, scanned), (total, total, total));
        let (keys, count, scanned) = scan_all(client, &table, Some(5), None, true, false).await.expect("filtered scan");
        assert_eq!(keys.len() as i32, count);
        assert_eq!(count, total / 2, "the filter keeps the even sort keys");
        assert_eq!(scanned, total, "ScannedCount counts items before the filter");
        let counted = client.scan().table_name(&table).select(Select::Count).send().await.expect("count scan");
        assert_eq!((counted.count(), counted.scanned_count()), (total, total));
        assert!(counted.last_evaluated_key().is_none());
    }

    // Parallel scan segments partition the table exactly.
    for segments in [2, 3, 7] {
        let mut seen = BTreeSet::new();
        for segment in 0..segments {
            let reader = &clients[segment as usize % clients.len()];
            let (keys, _, _) =
                scan_all(reader, &table, Some(9), Some((segment, segments)), false, false).await.expect("segment scan");
            for key in keys {
                assert!(seen.insert(key), "segment {segment} of {segments} repeats an item");
            }
        }
        assert_eq!(seen, all, "{segments} segments together");
    }

    // Queries through every node, on the table and on the local index.
    for (p, (pk, sort_keys)) in expected.iter().enumerate() {
        let reader = &clients[p % clients.len()];
        assert_eq!(&query_all(reader, &table, None, pk, true, 3, false).await.expect("query"), sort_keys);
        let backwards: Vec<i64> = sort_keys.iter().rev().copied().collect();
        assert_eq!(query_all(reader, &table, None, pk, false, 2, false).await.expect("query"), backwards);
        // By rank (100 - sk) ascending: sort keys descending.
        assert_eq!(
            query_all(reader, &table, Some("by_rank"), pk, true, 3, false).await.expect("index query"),
            backwards
        );
        assert_eq!(&query_all(reader, &table, None, pk, true, 3, true).await.expect("consistent query"), sort_keys);
        assert_eq!(
            query_all(reader, &table, Some("by_rank"), pk, true, 5, true).await.expect("consistent index query"),
            backwards
        );
    }

    // A global secondary index: each replica indexes its own items, so a read merges one
    // replica's share of every partition. By rank (100 - sk): one entry per partition key.
    for (i, reader) in clients.iter().enumerate() {
        for rank in [100, 97] {
            let mut keys = Vec::new();
            let mut start = None;
            for _ in 0..100 {
                let page = reader
                    .query()
                    .table_name(&table)
                    .index_name("by_rank_global")
                    .key_condition_expression("#r = :r")
                    .expression_attribute_names("#r", "rank")
                    .expression_attribute_values(":r", n(rank))
                    .limit(6)
                    .set_exclusive_start_key(start)
                    .send()
                    .await
                    .unwrap_or_else(|error| panic!("global index query through node {}: {error:?}", i + 1));
                assert!(page.scanned_count() <= 6);
                keys.extend(page.items().iter().map(key_of));
                match page.last_evaluated_key() {
                    Some(key) if !key.is_empty() => start = Some(key.clone()),
                    _ => break,
                }
            }
            let wanted: BTreeSet<Key> = expected.keys().map(|pk| (pk.clone(), 100 - rank)).collect();
            assert_eq!(keys.len(), wanted.len(), "no entry twice (rank {rank}, node {})", i + 1);
            assert_eq!(keys.into_iter().collect::<BTreeSet<_>>(), wanted, "rank {rank} through node {}", i + 1);
        }
        // A paginated scan of the index sees every entry once.
        let mut seen = BTreeSet::new();
        let mut start = None;
        for _ in 0..1_000 {
            let page = reader
                .scan()
                .table_name(&table)
                .index_name("by_rank_global")
                .limit(11)
                .set_exclusive_start_key(start)
                .send()
                .await
                .expect("global index scan");
            for key in page.items().iter().map(key_of) {
                assert!(seen.insert(key), "an index entry came twice");
            }
            match page.last_evaluated_key() {
                Some(key) if !key.is_empty() => start = Some(key.clone()),
                _ => break,
            }
        }
        assert_eq!(seen, all, "the global index scanned through node {}", i + 1);
    }

    // One node down: pieces it would have read come from other replicas.
    cluster.nodes[2].take().expect("node 3").kill_hard();
    for i in [0, 1, 3, 4] {
        let (keys, _, _) = scan_all(&clients[i], &table, Some(25), None, false, false)
            .await
            .unwrap_or_else(|error| panic!("scan through node {} with node 3 down: {error}", i + 1));
        assert_eq!(keys.into_iter().collect::<BTreeSet<_>>(), all, "scan through node {} with node 3 down", i + 1);
        let (keys, _, _) = scan_all(&clients[i], &table, Some(40), None, false, true)
            .await
            .unwrap_or_else(|error| panic!("consistent scan through node {} with node 3 down: {error}", i + 1));
        assert_eq!(keys.into_iter().collect::<BTreeSet<_>>(), all, "consistent scan, node {}, node 3 down", i + 1);
    }
    for (pk, sort_keys) in &expected {
        assert_eq!(
            &query_all(&clients[0], &table, None, pk, true, 4, false).await.expect("query with node 3 down"),
            sort_keys
        );
    }
    drop(cluster);
}

/// Partition keys and sort keys of the lagging-replica test.
const LAGGING_PARTITION_KEYS: usize = 6;
const LAGGING_SORT_KEYS: i64 = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn consistent_query_and_scan_see_the_writes_a_lagging_replica_missed() {
    if skip_without_own_server("lagging-replica consistent read test") {
        return;
    }
    tokio::time::timeout(TEST_TIMEOUT, lagging_replica())
        .await
        .expect("the lagging-replica test exceeded its time bound");
}

/// On three nodes every node holds every item, so an eventually consistent read is served from
/// the node's own storage. Node 3 misses writes while it is down and, with hints disabled, learns
/// them only from anti-entropy (seconds after its return) or from the reads themselves: a
/// consistent Query or Scan through it right after its return must still see every write
/// acknowledged — new items, updates that move local index entries, deletions.
async fn lagging_replica() {
    let mut cluster = Cluster::start_with(3, &["--hints-max", "0"]);
    let clients: Vec<Client> = (0..3).map(|i| client(&cluster.endpoint(i))).collect();
    let table = crate::harness::unique_name("lagging");
    create_table(&clients[0], &table).await;
    for client in &clients {
        wait_active(client, &table).await;
    }
    let put = |writer: usize, pk: String, sk: i64, rank: i64| {
        let request = clients[writer].put_item().table_name(&table).set_item(Some(item([
            ("pk", s(&pk)),
            ("sk", n(sk)),
            ("rank", n(rank)),
        ])));
        async move { request.send().await.unwrap_or_else(|error| panic!("put {pk}/{sk}: {error:?}")) }
    };
    // (pk, sk) → rank.
    let mut model: BTreeMap<Key, i64> = BTreeMap::new();
    for p in 0..LAGGING_PARTITION_KEYS {
        for sk in 0..LAGGING_SORT_KEYS {
            let pk = format!("key-{p}");
            put(sk as usize % 3, pk.clone(), sk, 100 - sk).await;
            model.insert((pk, sk), 100 - sk);
        }
    }
    let settle = Instant::now();
    while scan_all(&clients[2], &table, None, None, false, false).await.expect("scan").0.len() < model.len() {
        assert!(settle.elapsed() < Duration::from_secs(10), "node 3 did not receive the first writes");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    cluster.nodes[2].take().expect("node 3").kill_hard();
    for p in 0..LAGGING_PARTITION_KEYS {
        let pk = format!("key-{p}");
        let writer = p % 2;
        // A new item, an index entry moved to the end, a deletion.
        put(writer, pk.clone(), LAGGING_SORT_KEYS, 50).await;
        model.insert((pk.clone(), LAGGING_SORT_KEYS), 50);
        clients[writer]
            .update_item()
            .table_name(&table)
            .key("pk", s(&pk))
            .key("sk", n(0))
            .update_expression("SET #r = :r")
            .expression_attribute_names("#r", "rank")
            .expression_attribute_values(":r", n(1_000))
            .send()
            .await
            .expect("update");
        model.insert((pk.clone(), 0), 1_000);
        clients[writer]
            .delete_item()
            .table_name(&table)
            .key("pk", s(&pk))
            .key("sk", n(1))
            .send()
            .await
            .expect("delete");
        model.remove(&(pk, 1));
    }
    cluster.start_node(2);
    let lagging = &clients[2];
    let eventual = scan_all(lagging, &table, None, None, false, false).await.expect("eventually consistent scan").0;
    println!(
        "lagging-replica test: node 3 returned with {} of the {} changes made while it was down applied",
        eventual.iter().filter(|key| key.1 == LAGGING_SORT_KEYS).count()
            + (0..LAGGING_PARTITION_KEYS).filter(|p| !eventual.contains(&(format!("key-{p}"), 1))).count(),
        2 * LAGGING_PARTITION_KEYS
    );

    let keys: BTreeSet<Key> = model.keys().cloned().collect();
    for limit in [None, Some(1), Some(4)] {
        let (scanned, count, _) = scan_all(lagging, &table, limit, None, false, true)
            .await
            .unwrap_or_else(|error| panic!("consistent scan with limit {limit:?}: {error}"));
        assert_eq!(scanned.len() as i32, count);
        assert_eq!(scanned.into_iter().collect::<BTreeSet<_>>(), keys, "consistent scan with limit {limit:?}");
    }
    let page = lagging.scan().table_name(&table).consistent_read(true).send().await.expect("consistent scan");
    let ranks: BTreeMap<Key, i64> = page
        .items()
        .iter()
        .map(|item| (key_of(item), item["rank"].as_n().expect("rank").parse().expect("integer")))
        .collect();
    assert_eq!(ranks, model, "every item at its latest version");
    for p in 0..LAGGING_PARTITION_KEYS {
        let pk = format!("key-{p}");
        let mut by_rank: Vec<(i64, i64)> =
            model.iter().filter(|((key, _), _)| *key == pk).map(|((_, sk), rank)| (*rank, *sk)).collect();
        by_rank.sort();
        let sort_keys: Vec<i64> = by_rank.iter().map(|(_, sk)| *sk).collect();
        let mut in_order: Vec<i64> = sort_keys.clone();
        in_order.sort();
        assert_eq!(query_all(lagging, &table, None, &pk, true, 2, true).await.expect("consistent query"), in_order);
        let backwards: Vec<i64> = in_order.iter().rev().copied().collect();
        assert_eq!(query_all(lagging, &table, None, &pk, false, 3, true).await.expect("consistent query"), backwards);
        assert_eq!(
            query_all(lagging, &table, Some("by_rank"), &pk, true, 2, true).await.expect("consistent index query"),
            sort_keys,
            "{pk} by rank"
        );
    }
    drop(cluster);
}

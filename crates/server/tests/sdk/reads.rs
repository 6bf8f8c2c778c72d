//! Query, Scan, secondary indexes, batches and TTL, through the SDK: the properties clients build
//! on — paging never loses or repeats an item, parallel scan segments partition a table, indexes
//! always hold exactly the entries their table's items call for (also while an index is being
//! backfilled under concurrent writes), and expired items go away.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeValue, BillingMode, CreateGlobalSecondaryIndexAction, GlobalSecondaryIndex, GlobalSecondaryIndexUpdate,
    IndexStatus, KeyType, LocalSecondaryIndex, Projection, ProjectionType, ScalarAttributeType,
    TimeToLiveSpecification,
};

use crate::harness::{TestEnv, attribute_definition, batch_put, item, key_element, n, s, wait_active};

type Item = HashMap<String, AttributeValue>;

/// A small deterministic generator (xorshift64*), so a failure names the data that caused it.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

/// A sort key as DynamoDB orders it, for numbers that f64 represents exactly enough here.
fn number_of(value: &AttributeValue) -> f64 {
    value.as_n().expect("a number").parse().expect("a decimal")
}

fn key_of(item: &Item, names: &[&str]) -> Vec<String> {
    names.iter().map(|name| format!("{:?}", item.get(*name))).collect()
}

/// Every page of a query, following LastEvaluatedKey (bounded).
async fn query_all(
    client: &Client,
    table: &str,
    partition: &str,
    limit: Option<i32>,
    forward: bool,
    filter: bool,
) -> Vec<Item> {
    let mut items = Vec::new();
    let mut start: Option<Item> = None;
    for _ in 0..10_000 {
        let mut request = client
            .query()
            .table_name(table)
            .key_condition_expression("pk = :p")
            .expression_attribute_values(":p", s(partition))
            .scan_index_forward(forward)
            .set_limit(limit)
            .set_exclusive_start_key(start.take());
        if filter {
            request = request.filter_expression("f < :f").expression_attribute_values(":f", n(5));
        }
        let output = request.send().await.expect("query");
        items.extend(output.items.unwrap_or_default());
        match output.last_evaluated_key {
            Some(key) => start = Some(key),
            None => return items,
        }
    }
    panic!("query did not finish paging");
}

/// Every page of a (segment of a) scan, following LastEvaluatedKey (bounded).
async fn scan_all(
    client: &Client,
    table: &str,
    index: Option<&str>,
    segment: Option<(i32, i32)>,
    limit: i32,
) -> Vec<Item> {
    let mut items = Vec::new();
    let mut start: Option<Item> = None;
    for _ in 0..10_000 {
        let output = client
            .scan()
            .table_name(table)
            .set_index_name(index.map(str::to_string))
            .set_segment(segment.map(|(segment, _)| segment))
            .set_total_segments(segment.map(|(_, total)| total))
            .limit(limit)
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .expect("scan");
        items.extend(output.items.unwrap_or_default());
        match output.last_evaluated_key {
            Some(key) => start = Some(key),
            None => return items,
        }
    }
    panic!("scan did not finish paging");
}

/// Paging must be invisible: for any Limit, direction and filter, the pages of a query put
/// together are exactly the unpaginated result, in sort-key order (numbers numerically), with no
/// item twice.
#[tokio::test]
async fn paging_with_any_limit_returns_exactly_one_unpaginated_read() {
    let env = TestEnv::start();
    let table = env.create_table("paging", ("pk", ScalarAttributeType::S), Some(("sk", ScalarAttributeType::N))).await;
    let mut rng = Rng(0x5eed_0001);
    let mut items = Vec::new();
    let mut used = BTreeSet::new();
    while items.len() < 150 {
        // Negative, fractional and large numbers, which byte order would sort wrongly.
        let whole = rng.below(2_000_000) as i64 - 1_000_000;
        let sort = match rng.below(3) {
            0 => format!("{whole}"),
            1 => format!("{whole}.{}", rng.below(1000)),
            _ => format!("{whole}e{}", rng.below(20)),
        };
        let partition = format!("p{}", rng.below(3));
        if !used.insert((partition.clone(), format!("{}", sort.parse::<f64>().unwrap()))) {
            continue;
        }
        items.push(item([("pk", s(&partition)), ("sk", n(&sort)), ("f", n(rng.below(10)))]));
    }
    batch_put(&env.client, &table, items).await;
    for partition in ["p0", "p1", "p2"] {
        for (forward, filter) in [(true, false), (false, false), (true, true)] {
            let whole = query_all(&env.client, &table, partition, None, forward, filter).await;
            let numbers: Vec<f64> = whole.iter().map(|item| number_of(&item["sk"])).collect();
            let mut sorted = numbers.clone();
            sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
            if !forward {
                sorted.reverse();
            }
            assert_eq!(numbers, sorted, "{partition}: items are not in numeric sort-key order");
            assert!(!whole.is_empty());
            for limit in [1, 2, 3, 7, 50] {
                let paged = query_all(&env.client, &table, partition, Some(limit), forward, filter).await;
                assert_eq!(
                    paged.iter().map(|item| key_of(item, &["sk"])).collect::<Vec<_>>(),
                    whole.iter().map(|item| key_of(item, &["sk"])).collect::<Vec<_>>(),
                    "{partition}, limit {limit}, forward {forward}, filter {filter}"
                );
            }
        }
    }
}

/// Parallel scan workers must together see every item exactly once, whatever the segment count
/// and page size.
#[tokio::test]
async fn parallel_scan_segments_partition_the_table() {
    let env = TestEnv::start();
    let table = env.create_table("segments", ("pk", ScalarAttributeType::S), None).await;
    let items: Vec<Item> = (0..300).map(|i| item([("pk", s(&format!("item{i}"))), ("v", n(i))])).collect();
    batch_put(&env.client, &table, items).await;
    let expected: BTreeSet<Vec<String>> =
        (0..300).map(|i| vec![format!("{:?}", Some(s(&format!("item{i}"))))]).collect();
    assert_eq!(scan_all(&env.client, &table, None, None, 1000).await.len(), 300);
    for total in [1, 2, 3, 7, 64] {
        let mut seen = Vec::new();
        for segment in 0..total {
            seen.extend(scan_all(&env.client, &table, None, Some((segment, total)), 13).await);
        }
        let keys: Vec<Vec<String>> = seen.iter().map(|item| key_of(item, &["pk"])).collect();
        let distinct: BTreeSet<Vec<String>> = keys.iter().cloned().collect();
        assert_eq!(keys.len(), distinct.len(), "{total} segments: an item came back twice");
        assert_eq!(distinct, expected, "{total} segments do not cover the table");
    }
}

/// The index entries a table's items call for: index key and table key of each item that has the
/// index key attributes.
fn expected_entries(items: &[Item], index_keys: &[&str]) -> BTreeSet<Vec<String>> {
    items
        .iter()
        .filter(|item| index_keys.iter().all(|name| item.contains_key(*name)))
        .map(|item| key_of(item, &[index_keys, &["pk", "sk"]].concat()))
        .collect()
}

/// The entries an index holds, read back with Scan.
async fn index_entries(client: &Client, table: &str, index: &str, index_keys: &[&str]) -> BTreeSet<Vec<String>> {
    let entries = scan_all(client, table, Some(index), None, 100).await;
    let keys: BTreeSet<Vec<String>> =
        entries.iter().map(|item| key_of(item, &[index_keys, &["pk", "sk"]].concat())).collect();
    assert_eq!(keys.len(), entries.len(), "{index}: an entry appears twice");
    keys
}

async fn create_indexed_table(env: &TestEnv, hint: &str) -> String {
    let name = env.table_name(hint);
    env.client
        .create_table()
        .table_name(&name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attribute_definition("pk", ScalarAttributeType::S))
        .attribute_definitions(attribute_definition("sk", ScalarAttributeType::N))
        .attribute_definitions(attribute_definition("g", ScalarAttributeType::S))
        .attribute_definitions(attribute_definition("l", ScalarAttributeType::N))
        .key_schema(key_element("pk", KeyType::Hash))
        .key_schema(key_element("sk", KeyType::Range))
        .local_secondary_indexes(
            LocalSecondaryIndex::builder()
                .index_name("by_l")
                .key_schema(key_element("pk", KeyType::Hash))
                .key_schema(key_element("l", KeyType::Range))
                .projection(Projection::builder().projection_type(ProjectionType::KeysOnly).build())
                .build()
                .expect("an LSI"),
        )
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name("by_g")
                .key_schema(key_element("g", KeyType::Hash))
                .key_schema(key_element("sk", KeyType::Range))
                .projection(Projection::builder().projection_type(ProjectionType::All).build())
                .build()
                .expect("a GSI"),
        )
        .send()
        .await
        .expect("create the indexed table");
    wait_active(&env.client, &name).await;
    name
}

/// A random write to one of few keys: put (with or without index attributes), update (setting or
/// removing them) or delete.
async fn random_write(client: &Client, table: &str, rng: &mut Rng) {
    let key = item([("pk", s(&format!("p{}", rng.below(3)))), ("sk", n(rng.below(20)))]);
    let g = s(&format!("g{}", rng.below(4)));
    let l = n(rng.below(5));
    match rng.below(4) {
        0 => {
            let mut full = key.clone();
            if rng.below(3) > 0 {
                full.insert("g".into(), g);
            }
            if rng.below(3) > 0 {
                full.insert("l".into(), l);
            }
            client.put_item().table_name(table).set_item(Some(full)).send().await.expect("put");
        }
        1 => {
            client
                .update_item()
                .table_name(table)
                .set_key(Some(key))
                .update_expression("SET g = :g, l = :l, v = :v")
                .expression_attribute_values(":g", g)
                .expression_attribute_values(":l", l)
                .expression_attribute_values(":v", n(rng.below(100)))
                .send()
                .await
                .expect("update");
        }
        2 => {
            let removed = if rng.below(2) == 0 { "g" } else { "l" };
            client
                .update_item()
                .table_name(table)
                .set_key(Some(key))
                .update_expression(format!("REMOVE {removed}"))
                .send()
                .await
                .expect("update");
        }
        _ => {
            client.delete_item().table_name(table).set_key(Some(key)).send().await.expect("delete");
        }
    }
}

/// Whatever sequence of puts, updates and deletes a table sees, its local and global indexes hold
/// exactly one entry per item that has the index key (sparse indexes skip the others), and their
/// item counts say so.
#[tokio::test]
async fn indexes_follow_every_write() {
    let env = TestEnv::start();
    let table = create_indexed_table(&env, "indexes").await;
    let mut rng = Rng(0x5eed_0002);
    for _ in 0..300 {
        random_write(&env.client, &table, &mut rng).await;
    }
    let items = scan_all(&env.client, &table, None, None, 100).await;
    assert!(!items.is_empty());
    let gsi = index_entries(&env.client, &table, "by_g", &["g"]).await;
    assert_eq!(gsi, expected_entries(&items, &["g"]));
    let lsi = index_entries(&env.client, &table, "by_l", &["l"]).await;
    assert_eq!(lsi, expected_entries(&items, &["l"]));
    let description = env.client.describe_table().table_name(&table).send().await.expect("describe").table.unwrap();
    let counts: BTreeMap<String, i64> = description
        .global_secondary_indexes()
        .iter()
        .map(|index| (index.index_name().unwrap().to_string(), index.item_count().unwrap()))
        .chain(
            description
                .local_secondary_indexes()
                .iter()
                .map(|index| (index.index_name().unwrap().to_string(), index.item_count().unwrap())),
        )
        .collect();
    assert_eq!(counts["by_g"], gsi.len() as i64);
    assert_eq!(counts["by_l"], lsi.len() as i64);
    assert_eq!(description.item_count(), Some(items.len() as i64));
}

/// A GSI added to a table that already has items is built in the background while writes go on;
/// once ACTIVE it holds exactly the entries of the items as they are then — no entry of a version
/// that a concurrent write replaced, none missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gsi_added_under_concurrent_writes_is_backfilled_exactly() {
    let env = TestEnv::start();
    let table =
        env.create_table("backfill", ("pk", ScalarAttributeType::S), Some(("sk", ScalarAttributeType::N))).await;
    let items: Vec<Item> = (0..600)
        .map(|i| item([("pk", s(&format!("p{}", i % 7))), ("sk", n(i)), ("h", s(&format!("h{}", i % 11)))]))
        .collect();
    batch_put(&env.client, &table, items).await;

    let writer = {
        let client = env.client.clone();
        let table = table.clone();
        tokio::spawn(async move {
            let mut rng = Rng(0x5eed_0003);
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut writes = 0u32;
            while Instant::now() < deadline && writes < 3000 {
                let sort = rng.below(600);
                let key = item([("pk", s(&format!("p{}", sort % 7))), ("sk", n(sort))]);
                let request = client.update_item().table_name(&table).set_key(Some(key));
                let request = if rng.below(4) == 0 {
                    request.update_expression("REMOVE h")
                } else {
                    request
                        .update_expression("SET h = :h")
                        .expression_attribute_values(":h", s(&format!("h{}", rng.below(11))))
                };
                request.send().await.expect("update during the backfill");
                writes += 1;
                tokio::task::yield_now().await;
            }
            writes
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    env.client
        .update_table()
        .table_name(&table)
        .attribute_definitions(attribute_definition("h", ScalarAttributeType::S))
        .global_secondary_index_updates(
            GlobalSecondaryIndexUpdate::builder()
                .create(
                    CreateGlobalSecondaryIndexAction::builder()
                        .index_name("by_h")
                        .key_schema(key_element("h", KeyType::Hash))
                        .projection(Projection::builder().projection_type(ProjectionType::KeysOnly).build())
                        .build()
                        .expect("a GSI creation"),
                )
                .build(),
        )
        .send()
        .await
        .expect("add a GSI");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let description = env.client.describe_table().table_name(&table).send().await.expect("describe").table.unwrap();
        let status = description.global_secondary_indexes()[0].index_status().cloned();
        if status == Some(IndexStatus::Active) {
            break;
        }
        assert!(Instant::now() < deadline, "the index is still {status:?} after 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let writes = writer.await.expect("the writer finished");
    assert!(writes > 0);
    let items = scan_all(&env.client, &table, None, None, 200).await;
    assert_eq!(items.len(), 600);
    assert_eq!(index_entries(&env.client, &table, "by_h", &["h"]).await, expected_entries(&items, &["h"]));
}

/// Items whose TTL attribute has passed are deleted by the expirer (the test server runs a pass
/// every half second); future, far-past and non-numeric TTLs are left alone, as DynamoDB does.
#[tokio::test]
async fn expired_items_are_deleted_and_others_kept() {
    let env = TestEnv::start();
    let table = env.create_table("ttl", ("pk", ScalarAttributeType::S), None).await;
    env.client
        .update_time_to_live()
        .table_name(&table)
        .time_to_live_specification(
            TimeToLiveSpecification::builder().enabled(true).attribute_name("expires").build().expect("a TTL spec"),
        )
        .send()
        .await
        .expect("enable TTL");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let cases = [
        ("expired", n(now - 60), false),
        ("future", n(now + 3600), true),
        ("ancient", n(now - 6 * 365 * 24 * 3600), true),
        ("text", s("0"), true),
    ];
    for (name, expires, _) in &cases {
        env.client
            .put_item()
            .table_name(&table)
            .set_item(Some(item([("pk", s(name)), ("expires", expires.clone())])))
            .send()
            .await
            .expect("put");
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let expired = env.client.get_item().table_name(&table).key("pk", s("expired")).send().await.expect("get").item;
        if expired.is_none() {
            break;
        }
        assert!(Instant::now() < deadline, "the expired item is still there after 20 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (name, _, kept) in &cases {
        let found = env.client.get_item().table_name(&table).key("pk", s(name)).send().await.expect("get").item;
        assert_eq!(found.is_some(), *kept, "{name}");
    }
}

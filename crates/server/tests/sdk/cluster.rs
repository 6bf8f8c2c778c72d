//! A three-node cluster of real `onggi serve` processes under real faults.
//!
//! Clients talk to different nodes through the Rust SDK while one node is killed with `kill -9`
//! and restarted on its data directory, and another is frozen with SIGSTOP and thawed. Every
//! operation's outcome is recorded, and the test checks what strict mode promises:
//! - conditional increments of one counter from many clients sum exactly to the increments
//!   acknowledged (plus at most those whose outcome the client never learned);
//! - no acknowledged put is lost, read back through the node that was killed;
//! - a client's strict reads of the counter never go back in time;
//! - with one node down, strict reads and writes stay available.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{AttributeValue, ScalarAttributeType};
use tokio::sync::Mutex;

use crate::harness::{Server, client, item, n, s, skip_without_own_server};

/// Clients incrementing the shared counter.
const INCREMENTERS: usize = 6;
/// Clients putting fresh items.
const PUTTERS: usize = 3;
/// Bound on operations per client, whatever the speed.
const OPERATIONS_PER_CLIENT_MAX: u64 = 3_000;
/// The whole test must finish within this.
const TEST_TIMEOUT: Duration = Duration::from_secs(90);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port").local_addr().expect("address").port()
}

/// Three nodes on loopback, each with its own data directory and log.
struct Cluster {
    directory: tempfile::TempDir,
    api: Vec<String>,
    members: String,
    nodes: Vec<Option<Server>>,
}

impl Cluster {
    fn start(size: usize) -> Cluster {
        let directory = tempfile::tempdir().expect("temporary directory");
        let api = (0..size).map(|_| format!("127.0.0.1:{}", free_port())).collect();
        let members = (0..size).map(|i| format!("{}=127.0.0.1:{}", i + 1, free_port())).collect::<Vec<_>>().join(",");
        let mut cluster = Cluster { directory, api, members, nodes: (0..size).map(|_| None).collect() };
        for i in 0..size {
            cluster.start_node(i);
        }
        cluster
    }

    fn start_node(&mut self, i: usize) {
        let extra = ["--node-id".to_string(), (i + 1).to_string(), "--members".to_string(), self.members.clone()];
        let data = self.directory.path().join(format!("node-{}", i + 1));
        let log = self.directory.path().join(format!("node-{}.log", i + 1));
        self.nodes[i] = Some(Server::start_with(&data, &log, &self.api[i], &extra));
    }

    fn endpoint(&self, i: usize) -> String {
        format!("http://{}", self.api[i])
    }

    fn pid(&self, i: usize) -> u32 {
        self.nodes[i].as_ref().expect("node running").pid()
    }

    fn signal(&self, i: usize, signal: &str) {
        let status =
            std::process::Command::new("kill").args([signal, &self.pid(i).to_string()]).status().expect("run kill");
        assert!(status.success(), "kill {signal} node {}", i + 1);
    }

    fn logs(&self) -> String {
        self.nodes.iter().flatten().map(|node| node.log()).collect::<Vec<_>>().join("\n----\n")
    }
}

/// What the clients saw.
#[derive(Default)]
struct Tally {
    increments_acknowledged: AtomicU64,
    increments_unknown: AtomicU64,
    increments_refused: AtomicU64,
    acknowledged_during_kill: AtomicU64,
    strict_reads: AtomicU64,
    went_back: AtomicU64,
    puts: Mutex<Vec<(String, u64)>>,
}

/// Whether a failed call certainly wrote nothing: the server said so, or the request never left.
fn certainly_not_applied<E: ProvideErrorMetadata>(error: &SdkError<E>) -> bool {
    match error {
        SdkError::ServiceError(service) => {
            matches!(service.err().code(), Some("ConditionalCheckFailedException" | "ThrottlingException"))
        }
        SdkError::DispatchFailure(failure) => failure.is_io(),
        _ => false,
    }
}

async fn counter(client: &Client, table: &str) -> Result<Option<u64>, String> {
    let answer = client
        .get_item()
        .table_name(table)
        .key("pk", s("counter"))
        .consistent_read(true)
        .send()
        .await
        .map_err(|error| format!("{error:?}"))?;
    Ok(answer.item().and_then(|item| item.get("n")).map(|value| value.as_n().expect("n").parse().expect("u64")))
}

async fn incrementer(
    cluster_endpoints: Vec<String>,
    first: usize,
    table: String,
    stop: Arc<AtomicBool>,
    killed: Arc<AtomicBool>,
    tally: Arc<Tally>,
) {
    let clients: Vec<Client> = cluster_endpoints.iter().map(|endpoint| client(endpoint)).collect();
    let mut node = first;
    let mut last_seen = 0;
    for _ in 0..OPERATIONS_PER_CLIENT_MAX {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let current = match counter(&clients[node], &table).await {
            Ok(value) => value,
            Err(_) => {
                node = (node + 1) % clients.len();
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        tally.strict_reads.fetch_add(1, Ordering::Relaxed);
        let value = current.unwrap_or(0);
        if value < last_seen {
            tally.went_back.fetch_add(1, Ordering::Relaxed);
        }
        last_seen = value;
        let mut update = clients[node]
            .update_item()
            .table_name(&table)
            .key("pk", s("counter"))
            .update_expression("SET n = :new")
            .expression_attribute_values(":new", n(value + 1));
        update = match current {
            Some(old) => update.condition_expression("n = :old").expression_attribute_values(":old", n(old)),
            None => update.condition_expression("attribute_not_exists(pk)"),
        };
        match update.send().await {
            Ok(_) => {
                tally.increments_acknowledged.fetch_add(1, Ordering::Relaxed);
                if killed.load(Ordering::Relaxed) {
                    tally.acknowledged_during_kill.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(error) if certainly_not_applied(&error) => {
                tally.increments_refused.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                if std::env::var("ONGGI_CLUSTER_TEST_DEBUG").is_ok() {
                    eprintln!("unknown: {:?} {:?}", error.code(), error.message());
                }
                tally.increments_unknown.fetch_add(1, Ordering::Relaxed);
                node = (node + 1) % clients.len();
            }
        }
    }
}

async fn putter(endpoints: Vec<String>, id: usize, table: String, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    let clients: Vec<Client> = endpoints.iter().map(|endpoint| client(endpoint)).collect();
    let mut node = id % clients.len();
    for index in 0..OPERATIONS_PER_CLIENT_MAX {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let key = format!("put-{id}-{index}");
        let value = (id as u64) * 1_000_000 + index;
        let put = clients[node].put_item().table_name(&table).set_item(Some(item([("pk", s(&key)), ("v", n(value))])));
        match put.send().await {
            Ok(_) => tally.puts.lock().await.push((key, value)),
            Err(_) => node = (node + 1) % clients.len(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_three_node_cluster_keeps_every_acknowledged_write_through_kill_and_pause() {
    if skip_without_own_server("cluster fault test") {
        return;
    }
    tokio::time::timeout(TEST_TIMEOUT, faults_under_load()).await.expect("the cluster test exceeded its time bound");
}

async fn faults_under_load() {
    let mut cluster = Cluster::start(3);
    let endpoints: Vec<String> = (0..3).map(|i| cluster.endpoint(i)).collect();
    let table = crate::harness::unique_name("cluster");
    let admin = client(&endpoints[0]);
    admin
        .create_table()
        .table_name(&table)
        .billing_mode(aws_sdk_dynamodb::types::BillingMode::PayPerRequest)
        .attribute_definitions(crate::harness::attribute_definition("pk", ScalarAttributeType::S))
        .key_schema(crate::harness::key_element("pk", aws_sdk_dynamodb::types::KeyType::Hash))
        .send()
        .await
        .expect("create the table");

    let stop = Arc::new(AtomicBool::new(false));
    let killed = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let mut tasks = Vec::new();
    for i in 0..INCREMENTERS {
        let task = incrementer(endpoints.clone(), i % 3, table.clone(), stop.clone(), killed.clone(), tally.clone());
        tasks.push(tokio::spawn(task));
    }
    for i in 0..PUTTERS {
        tasks.push(tokio::spawn(putter(endpoints.clone(), i, table.clone(), stop.clone(), tally.clone())));
    }

    // The faults, while the clients run.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    cluster.nodes[2].take().expect("node 3").kill_hard();
    killed.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    killed.store(false, Ordering::Relaxed);
    cluster.start_node(2);
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    cluster.signal(1, "-STOP");
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    cluster.signal(1, "-CONT");
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("client task");
    }

    let acknowledged = tally.increments_acknowledged.load(Ordering::Relaxed);
    let unknown = tally.increments_unknown.load(Ordering::Relaxed);
    let final_value = counter(&client(&endpoints[2]), &table).await.expect("read the counter").unwrap_or(0);
    let puts = tally.puts.lock().await.clone();
    println!(
        "cluster test: {acknowledged} increments acknowledged ({} while node 3 was down), {unknown} unknown, {} \
         refused; counter = {final_value}; {} strict reads, {} went back; {} puts acknowledged",
        tally.acknowledged_during_kill.load(Ordering::Relaxed),
        tally.increments_refused.load(Ordering::Relaxed),
        tally.strict_reads.load(Ordering::Relaxed),
        tally.went_back.load(Ordering::Relaxed),
        puts.len()
    );
    let logs = || cluster.logs();
    assert!(
        acknowledged <= final_value && final_value <= acknowledged + unknown,
        "counter {final_value} is not between the acknowledged increments {acknowledged} and that plus the \
         {unknown} unknown ones; logs:\n{}",
        logs()
    );
    assert_eq!(tally.went_back.load(Ordering::Relaxed), 0, "a strict read went back in time");
    assert!(
        tally.acknowledged_during_kill.load(Ordering::Relaxed) > 0,
        "no increment was acknowledged while one node was down; logs:\n{}",
        logs()
    );
    assert!(!puts.is_empty(), "no put was acknowledged");
    // Every acknowledged put, read strictly through the node that was killed and restarted.
    let reader = client(&endpoints[2]);
    for (key, value) in &puts {
        let answer = reader
            .get_item()
            .table_name(&table)
            .key("pk", s(key))
            .consistent_read(true)
            .send()
            .await
            .unwrap_or_else(|error| panic!("read {key}: {error:?}"));
        let stored = answer.item().and_then(|item| item.get("v")).cloned();
        assert_eq!(stored, Some(AttributeValue::N(value.to_string())), "acknowledged put {key} lost");
    }
}

//! `kill -9` while writes are in flight: no acknowledged write may be lost or torn.
//!
//! Writers put items whose payload is a function of their key and version, and record which
//! versions the server acknowledged. After the kill and a restart on the same data directory every
//! acknowledged key must be there, at the acknowledged version or a later attempted one, with the
//! payload that version implies. Writes cut by the kill may be present or absent, never torn.
//! The writer and checker here also serve the graceful-shutdown test.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::{AttributeValue, ScalarAttributeType};

use crate::harness::{Server, attribute_definition, item, key_element, n, s, skip_without_own_server};

/// Concurrent writers.
const WRITERS: usize = 8;
/// How long the writers run before the kill.
const WRITE_PHASE: Duration = Duration::from_secs(2);
/// Kill/restart cycles.
const CYCLES: usize = 3;
/// Writes one writer may make in one phase: bounds the work if the server is very fast.
const WRITES_PER_PHASE_MAX: u64 = 5_000;
/// One in this many writes overwrites an earlier key with a higher version.
const OVERWRITE_ONE_IN: u64 = 4;
/// The whole test must finish within this.
const TEST_TIMEOUT: Duration = Duration::from_secs(50);

/// The payload a (key, version) pair is written with: a few hundred bytes to a few KB, every byte
/// a function of both, so a torn or mixed-up item cannot match.
pub fn payload(key: &str, version: u64) -> String {
    let repeats = 1 + (key.bytes().map(u64::from).sum::<u64>() + version * 7) % 60;
    format!("{key}@{version};").repeat(repeats as usize)
}

/// The key of a writer's `index`th item.
fn key_name(writer: usize, index: u64) -> String {
    format!("w{writer}-{index:06}")
}

/// One writer's memory of what it wrote, kept across kills.
#[derive(Clone, Debug)]
pub struct Writer {
    /// Distinguishes this writer's keys from the others'.
    id: usize,
    /// The next fresh key index.
    next_index: u64,
    /// Key index → the highest version ever sent (acknowledged or not).
    attempted: HashMap<u64, u64>,
    /// Key index → the highest version the server acknowledged.
    acknowledged: HashMap<u64, u64>,
    /// xorshift state choosing between fresh keys and overwrites.
    random: u64,
    /// PutItem calls that returned success, over the whole test.
    pub acknowledged_writes: u64,
    /// How the last phase ended, if by an error (only allowed once stopping was requested).
    pub ending_error: Option<String>,
    /// Whether that error was a failure to send the request or to receive any response (as
    /// opposed to an error response, a response cut short, or a timeout).
    pub ending_was_dispatch_failure: bool,
}

impl Writer {
    /// A writer with no history.
    pub fn new(id: usize) -> Writer {
        Writer {
            id,
            next_index: 0,
            attempted: HashMap::new(),
            acknowledged: HashMap::new(),
            random: 0x9E37_79B9_7F4A_7C15 ^ (id as u64 + 1),
            acknowledged_writes: 0,
            ending_error: None,
            ending_was_dispatch_failure: false,
        }
    }

    /// How many keys have an acknowledged version.
    pub fn acknowledged_keys(&self) -> usize {
        self.acknowledged.len()
    }

    fn next_random(&mut self) -> u64 {
        self.random ^= self.random << 13;
        self.random ^= self.random >> 7;
        self.random ^= self.random << 17;
        self.random
    }

    /// The next (key index, version) to write: mostly fresh keys, sometimes a newer version of
    /// an earlier one.
    fn next_write(&mut self) -> (u64, u64) {
        if self.next_index > 0 && self.next_random().is_multiple_of(OVERWRITE_ONE_IN) {
            let index = self.next_random() % self.next_index;
            (index, self.attempted[&index] + 1)
        } else {
            self.next_index += 1;
            (self.next_index - 1, 1)
        }
    }

    /// Writes until `stopping` is set and a write fails (or the phase cap is reached).
    /// A failure before `stopping` is set fails the test.
    pub async fn run(
        mut self,
        client: Client,
        table: String,
        stopping: Arc<AtomicBool>,
        in_flight: Arc<AtomicUsize>,
    ) -> Writer {
        self.ending_error = None;
        self.ending_was_dispatch_failure = false;
        for _ in 0..WRITES_PER_PHASE_MAX {
            let (index, version) = self.next_write();
            self.attempted.insert(index, version);
            let key = key_name(self.id, index);
            in_flight.fetch_add(1, Ordering::SeqCst);
            let result = client
                .put_item()
                .table_name(&table)
                .set_item(Some(item([
                    ("pk", s(&key)),
                    ("version", n(version)),
                    ("payload", s(&payload(&key, version))),
                ])))
                .send()
                .await;
            in_flight.fetch_sub(1, Ordering::SeqCst);
            match result {
                Ok(_) => {
                    self.acknowledged.insert(index, version);
                    self.acknowledged_writes += 1;
                }
                Err(error) => {
                    assert!(
                        stopping.load(Ordering::SeqCst),
                        "write of {key} v{version} failed while the server was up: {error:?}"
                    );
                    self.ending_was_dispatch_failure = matches!(error, SdkError::DispatchFailure(_));
                    self.ending_error = Some(format!("{error:?}"));
                    break;
                }
            }
        }
        self
    }
}

/// What a check after a restart found.
#[derive(Debug, Default)]
pub struct Verification {
    /// Keys with an acknowledged version, all found intact at that version or a later one.
    pub acknowledged_keys_verified: u64,
    /// Keys whose newest acknowledged version was superseded by an unacknowledged write that
    /// turned out to be durable.
    pub newer_than_acknowledged: u64,
    /// Keys never acknowledged (cut by the kill) that are present, intact.
    pub unacknowledged_present: u64,
    /// Keys never acknowledged that are absent.
    pub unacknowledged_absent: u64,
}

/// Reads back every key any writer ever sent and checks it against what was acknowledged.
pub async fn verify(client: &Client, table: &str, writers: &[Writer]) -> Verification {
    let mut checks = Vec::new();
    for writer in writers {
        let client = client.clone();
        let table = table.to_string();
        let writer = writer.clone();
        checks.push(tokio::spawn(async move {
            let mut found = Verification::default();
            for (&index, &attempted) in &writer.attempted {
                let key = key_name(writer.id, index);
                let acknowledged = writer.acknowledged.get(&index).copied();
                let stored = client
                    .get_item()
                    .table_name(&table)
                    .key("pk", s(&key))
                    .consistent_read(true)
                    .send()
                    .await
                    .unwrap_or_else(|error| panic!("read {key}: {error:?}"))
                    .item;
                let Some(stored) = stored else {
                    assert_eq!(acknowledged, None, "LOST: {key} v{acknowledged:?} was acknowledged but is gone");
                    found.unacknowledged_absent += 1;
                    continue;
                };
                let version: u64 = match stored.get("version") {
                    Some(AttributeValue::N(number)) => number.parse().expect("an integer version"),
                    other => panic!("TORN: {key} has version {other:?}"),
                };
                let expected =
                    item([("pk", s(&key)), ("version", n(version)), ("payload", s(&payload(&key, version)))]);
                assert_eq!(stored, expected, "TORN: {key} does not hold what version {version} wrote");
                assert!(version <= attempted, "{key} holds v{version}, never written (highest sent: v{attempted})");
                match acknowledged {
                    Some(acknowledged) => {
                        assert!(
                            version >= acknowledged,
                            "LOST: {key} holds v{version}, but v{acknowledged} was acknowledged"
                        );
                        found.acknowledged_keys_verified += 1;
                        if version > acknowledged {
                            found.newer_than_acknowledged += 1;
                        }
                    }
                    None => found.unacknowledged_present += 1,
                }
            }
            found
        }));
    }
    let mut total = Verification::default();
    for check in checks {
        let found = check.await.expect("a check panicked");
        total.acknowledged_keys_verified += found.acknowledged_keys_verified;
        total.newer_than_acknowledged += found.newer_than_acknowledged;
        total.unacknowledged_present += found.unacknowledged_present;
        total.unacknowledged_absent += found.unacknowledged_absent;
    }
    total
}

/// Creates the test table (hash key `pk`, string) on a server, with a global index on `version`
/// (every item has one), so that a crash also tests that items and index entries are written
/// together.
pub async fn create_crash_table(client: &Client, table: &str) {
    use aws_sdk_dynamodb::types::{GlobalSecondaryIndex, KeyType, Projection, ProjectionType};
    client
        .create_table()
        .table_name(table)
        .attribute_definitions(attribute_definition("pk", ScalarAttributeType::S))
        .attribute_definitions(attribute_definition("version", ScalarAttributeType::N))
        .key_schema(key_element("pk", KeyType::Hash))
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name("by_version")
                .key_schema(key_element("version", KeyType::Hash))
                .projection(Projection::builder().projection_type(ProjectionType::KeysOnly).build())
                .build()
                .expect("a GSI"),
        )
        .billing_mode(aws_sdk_dynamodb::types::BillingMode::PayPerRequest)
        .send()
        .await
        .expect("create table");
    crate::harness::wait_active(client, table).await;
}

/// Every `(pk, version)` pair of the table (`index: None`) or of its index, by paged Scan.
async fn scan_pairs(client: &Client, table: &str, index: Option<&str>) -> std::collections::BTreeSet<(String, String)> {
    let mut pairs = std::collections::BTreeSet::new();
    let mut start = None;
    loop {
        let output = client
            .scan()
            .table_name(table)
            .set_index_name(index.map(str::to_string))
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .unwrap_or_else(|error| panic!("scan {index:?}: {error:?}"));
        for item in output.items.unwrap_or_default() {
            let text = |name: &str| match item.get(name) {
                Some(AttributeValue::S(text)) | Some(AttributeValue::N(text)) => text.clone(),
                other => panic!("{name} is {other:?}"),
            };
            assert!(pairs.insert((text("pk"), text("version"))), "{index:?} returned an item twice");
        }
        match output.last_evaluated_key {
            Some(key) => start = Some(key),
            None => return pairs,
        }
    }
}

/// After a crash the index holds exactly one entry per item, at the item's version: the entry and
/// the item were made durable together or not at all. Returns the number of items.
pub async fn verify_index(client: &Client, table: &str) -> usize {
    let items = scan_pairs(client, table, None).await;
    let entries = scan_pairs(client, table, Some("by_version")).await;
    assert_eq!(items.len(), entries.len(), "the index and its table hold different numbers of items");
    assert!(items == entries, "the index differs from its table after a crash");
    items.len()
}

/// Runs `writers` through `client` until `phase` has passed, then calls `stop` while writes are in
/// flight, sets the stop flag first so the writers accept the errors that follow, and collects
/// them. Returns the writers and how many writes were in flight at the stop.
pub async fn write_then_stop(
    client: Client,
    table: &str,
    writers: Vec<Writer>,
    phase: Duration,
    stop: impl FnOnce(),
) -> (Vec<Writer>, usize) {
    let stopping = Arc::new(AtomicBool::new(false));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = writers
        .into_iter()
        .map(|writer| tokio::spawn(writer.run(client.clone(), table.to_string(), stopping.clone(), in_flight.clone())))
        .collect();
    tokio::time::sleep(phase).await;
    // Make sure the stop lands on writes in flight (bounded: writers are always sending).
    let deadline = Instant::now() + Duration::from_secs(1);
    while in_flight.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
        tokio::task::yield_now().await;
    }
    stopping.store(true, Ordering::SeqCst);
    let in_flight_at_stop = in_flight.load(Ordering::SeqCst);
    stop();
    let mut writers = Vec::new();
    for task in tasks {
        writers.push(task.await.expect("a writer panicked"));
    }
    (writers, in_flight_at_stop)
}

/// An acknowledged write is durable: the one promise a database cannot break. Killing the process
/// with SIGKILL mid-write (the closest a test gets to pulling the plug, short of the page cache)
/// must lose nothing acknowledged and tear nothing, cycle after cycle on the same directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_during_writes_loses_no_acknowledged_write() {
    if skip_without_own_server("kill_9_during_writes_loses_no_acknowledged_write") {
        return;
    }
    tokio::time::timeout(TEST_TIMEOUT, kill_restart_cycles()).await.expect("the crash test exceeded its time bound");
}

async fn kill_restart_cycles() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let data_dir = directory.path().join("data");
    let log = directory.path().join("onggi.log");
    let table = crate::harness::unique_name("crash");
    let started = Instant::now();

    let mut server = Server::start(&data_dir, &log);
    create_crash_table(&server.client(), &table).await;
    let mut writers: Vec<Writer> = (0..WRITERS).map(Writer::new).collect();
    for cycle in 1..=CYCLES {
        let acknowledged_before: u64 = writers.iter().map(|writer| writer.acknowledged_writes).sum();
        let pid = server.pid();
        let victim = server;
        let client = victim.client();
        let (after, in_flight) =
            write_then_stop(client, &table, writers, WRITE_PHASE, move || victim.kill_hard()).await;
        writers = after;
        let acknowledged: u64 = writers.iter().map(|writer| writer.acknowledged_writes).sum();

        server = Server::start(&data_dir, &log);
        let client = server.client();
        let found = verify(&client, &table, &writers).await;
        let indexed = verify_index(&client, &table).await;
        println!("crash cycle {cycle}: the index holds exactly the {indexed} items' entries");
        println!(
            "crash cycle {cycle}: killed pid {pid} with {in_flight} writes in flight; {} writes acknowledged this cycle \
             ({acknowledged} in total); after restart: {} acknowledged keys verified intact ({} at a newer unacknowledged \
             version), {} unacknowledged writes present, {} absent",
            acknowledged - acknowledged_before,
            found.acknowledged_keys_verified,
            found.newer_than_acknowledged,
            found.unacknowledged_present,
            found.unacknowledged_absent,
        );
        let acknowledged_keys: usize = writers.iter().map(Writer::acknowledged_keys).sum();
        assert_eq!(found.acknowledged_keys_verified, acknowledged_keys as u64);
        assert!(acknowledged > acknowledged_before, "cycle {cycle} acknowledged no write at all");
    }
    drop(server);
    println!("crash test: {CYCLES} kill -9 cycles in {:.1} s", started.elapsed().as_secs_f64());
}

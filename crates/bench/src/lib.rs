//! `onggi bench`: a YCSB-style load generator speaking the DynamoDB JSON protocol to any
//! DynamoDB-compatible endpoint (onggi, DynamoDB Local, ...), with SigV4-signed requests.
//!
//! Phases: `load` creates the table (hash key `key`, type S) if missing and inserts the records
//! with BatchWriteItem (`--load-batch` records per call, resending unprocessed items; 1 means
//! PutItem); `run` drives a workload in a closed loop (`--concurrency` tasks, each waiting for
//! its reply before sending the next request) and reports per-operation throughput and latency
//! percentiles from HDR histograms. Errors and misses (a GetItem of a loaded key finding no
//! item) make a run invalid.

pub mod client;
pub mod sigv4;
pub mod timeline;
pub mod zipf;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::ValueEnum;
use hdrhistogram::Histogram;
use serde::Serialize;

use client::{Connection, Endpoint, Reply};
use sigv4::Signer;
use zipf::{KeyChooser, Rng};

/// Fields per record (YCSB's default); `--value-size` is spread over them.
pub const FIELDS: usize = 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Create the table if missing and insert the records.
    Load,
    /// Run the workload against records loaded before.
    Run,
    /// Load, then run.
    All,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// YCSB A: 50% reads, 50% updates.
    A,
    /// YCSB B: 95% reads, 5% updates.
    B,
    /// YCSB C: reads only.
    C,
    /// YCSB F: 50% reads, 50% read-modify-writes (GetItem then an update).
    F,
    /// PutItem of whole records only.
    Put,
    /// GetItem only (like C).
    Get,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UpdateMode {
    /// Updates replace the whole record with PutItem.
    Put,
    /// Updates set one field with UpdateItem.
    Update,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    /// Every key equally likely.
    Uniform,
    /// YCSB's scrambled zipfian, θ = 0.99.
    Zipfian,
}

/// The flags of `onggi bench`.
#[derive(clap::Args, Clone, Debug)]
pub struct BenchArgs {
    /// Endpoint(s) `http://host:port`, repeatable or comma-separated; requests go round-robin.
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:8000")]
    pub endpoint: Vec<String>,
    /// Which phase(s) to run.
    #[arg(long, value_enum, default_value = "all")]
    pub phase: Phase,
    /// The operation mix of the run phase.
    #[arg(long, value_enum, default_value = "a")]
    pub workload: Workload,
    /// Table name (hash key `key`, type S).
    #[arg(long, default_value = "usertable")]
    pub table: String,
    /// Number of records loaded, and the key space of the run phase.
    #[arg(long, default_value_t = 10_000)]
    pub records: u64,
    /// Bytes of value per record, spread over 10 fields.
    #[arg(long, default_value_t = 1000)]
    pub value_size: usize,
    /// Strongly consistent reads (ConsistentRead).
    #[arg(long)]
    pub consistent: bool,
    /// How updates write: PutItem of the whole record or UpdateItem of one field.
    #[arg(long, value_enum, default_value = "update")]
    pub update_mode: UpdateMode,
    /// Key distribution of the run phase.
    #[arg(long, value_enum, default_value = "zipfian")]
    pub distribution: Distribution,
    /// Concurrent requests (closed loop: one task each, one connection per endpoint each).
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Seconds run before measuring (not recorded).
    #[arg(long, default_value_t = 0.0)]
    pub warmup: f64,
    /// Seconds measured in the run phase.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Stop the run phase after this many operations (warm-up included), if sooner.
    #[arg(long)]
    pub operations: Option<u64>,
    /// Seed of the key and value generators.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Open loop: operations per second offered in the run phase, spread over the `--concurrency`
    /// connections (which bound the requests outstanding). Latency counts from each operation's
    /// intended start, so queueing behind a slow server is measured, not hidden (no coordinated
    /// omission). Without it the run is a closed loop.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Write an SVG chart of throughput and latency over time to this file.
    #[arg(long)]
    pub plot: Option<std::path::PathBuf>,
    /// Records per BatchWriteItem in the load phase (1 loads with PutItem; at most 25).
    #[arg(long, default_value_t = 25, value_parser = clap::value_parser!(u64).range(1..=25))]
    pub load_batch: u64,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// Access key id used to sign requests.
    #[arg(long, env = "AWS_ACCESS_KEY_ID", default_value = "onggi")]
    pub access_key: String,
    /// Secret key used to sign requests.
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", default_value = "onggi", hide_env_values = true)]
    pub secret_key: String,
    /// Region named in the signature's scope.
    #[arg(long, env = "AWS_DEFAULT_REGION", default_value = "us-east-1")]
    pub region: String,
}

/// The kinds of operation measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Read,
    Update,
    Put,
    Insert,
    ReadModifyWrite,
}

const OPS: [Op; 5] = [Op::Read, Op::Update, Op::Put, Op::Insert, Op::ReadModifyWrite];

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Read => "read",
            Op::Update => "update",
            Op::Put => "put",
            Op::Insert => "insert",
            Op::ReadModifyWrite => "read-modify-write",
        }
    }
    fn index(self) -> usize {
        self as usize
    }
}

/// Latency of one operation type, in microseconds.
#[derive(Clone, Debug, Serialize)]
pub struct OpReport {
    pub operation: String,
    pub count: u64,
    pub throughput: f64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

/// One phase's results.
#[derive(Clone, Debug, Serialize)]
pub struct PhaseReport {
    pub phase: String,
    /// Measured seconds (warm-up excluded).
    pub seconds: f64,
    /// Operations measured (a read-modify-write counts once).
    pub operations: u64,
    pub throughput: f64,
    /// Failed requests (transport failures and error responses), warm-up included.
    pub errors: u64,
    /// GetItems of loaded keys that found no item, warm-up included.
    pub misses: u64,
    pub error_kinds: BTreeMap<String, u64>,
    pub by_operation: Vec<OpReport>,
    /// Second by second since the phase began (warm-up included).
    pub timeline: Vec<timeline::TimelinePoint>,
}

/// An SVG chart of the report's throughput and latency over time, phase by phase.
pub fn render_svg(report: &Report) -> String {
    let title = format!(
        "onggi bench: workload {:?}, {} records, concurrency {}{}, {}",
        report.workload,
        report.records,
        report.concurrency,
        report.rate.map(|rate| format!(", open loop at {rate:.0} ops/s")).unwrap_or_default(),
        report.endpoints.join(",")
    );
    let phases: Vec<(&str, &[timeline::TimelinePoint])> =
        report.phases.iter().map(|phase| (phase.phase.as_str(), phase.timeline.as_slice())).collect();
    timeline::render_svg(&title, &phases)
}

/// The whole report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// No errors and no misses in any phase.
    pub valid: bool,
    pub endpoints: Vec<String>,
    pub workload: Workload,
    pub distribution: Distribution,
    pub update_mode: UpdateMode,
    pub consistent: bool,
    pub records: u64,
    pub value_size: usize,
    pub concurrency: usize,
    /// Open loop: the offered rate (operations per second); `None` for a closed loop.
    pub rate: Option<f64>,
    pub seed: u64,
    pub phases: Vec<PhaseReport>,
}

/// State shared by the workers of one phase.
struct Shared {
    table: String,
    signer: Signer,
    endpoints: Vec<Endpoint>,
    records: u64,
    field_size: usize,
    consistent: bool,
    update_mode: UpdateMode,
    workload: Workload,
    chooser: KeyChooser,
    /// Alphanumeric bytes that field values are sliced from.
    pool: Vec<u8>,
    counts: [AtomicU64; OPS.len()],
    errors: AtomicU64,
    misses: AtomicU64,
    error_kinds: Mutex<BTreeMap<String, u64>>,
    recording: AtomicBool,
    stop: AtomicBool,
    next_insert: AtomicU64,
    remaining: Option<AtomicU64>,
    load_batch: u64,
    /// Open loop: the offered rate, the schedule's origin and the next slot to take.
    rate: Option<f64>,
    schedule_origin: Instant,
    next_slot: AtomicU64,
}

fn key_name(index: u64) -> String {
    format!("user{index:012}")
}

/// Messages of the first few failures are printed; the rest are only counted.
const ERRORS_PRINTED: u64 = 5;

struct Worker {
    shared: Arc<Shared>,
    connections: Vec<Connection>,
    next_endpoint: usize,
    rng: Rng,
    histograms: Vec<Histogram<u64>>,
    timeline: timeline::Timeline,
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

impl Worker {
    fn new(shared: Arc<Shared>, index: usize, seed: u64) -> Worker {
        let connections = shared.endpoints.iter().cloned().map(Connection::new).collect();
        Worker {
            connections,
            next_endpoint: index % shared.endpoints.len(),
            rng: Rng::new(seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            histograms: OPS.iter().map(|_| new_histogram()).collect(),
            timeline: timeline::Timeline::default(),
            shared,
        }
    }

    fn fail(&self, message: String) {
        let previous = self.shared.errors.fetch_add(1, Ordering::Relaxed);
        if previous < ERRORS_PRINTED {
            eprintln!("onggi bench: request failed: {message}");
        }
        let kind = message.split(':').next().unwrap_or("").to_string();
        *self.shared.error_kinds.lock().unwrap_or_else(|e| e.into_inner()).entry(kind).or_default() += 1;
    }

    /// One request; `None` if it failed (counted).
    async fn call(&mut self, target: &str, body: String) -> Option<bytes::Bytes> {
        let index = self.next_endpoint;
        self.next_endpoint = (self.next_endpoint + 1) % self.connections.len();
        match self.connections[index].call(&self.shared.signer, target, body).await {
            Ok(Reply::Ok(body)) => Some(body),
            Ok(Reply::Error(kind)) => {
                self.fail(format!("{kind}: {target}"));
                None
            }
            Err(message) => {
                self.fail(format!("transport: {target} {message}"));
                None
            }
        }
    }

    fn value(&mut self) -> &str {
        let size = self.shared.field_size;
        let start = self.rng.below((self.shared.pool.len() - size) as u64) as usize;
        std::str::from_utf8(&self.shared.pool[start..start + size]).expect("the pool is ASCII")
    }

    fn record_body(&mut self, key: u64) -> String {
        let mut body = String::with_capacity(self.shared.field_size * FIELDS + 256);
        let _ = write!(body, r#"{{"TableName":"{}","Item":{{"key":{{"S":"{}"}}"#, self.shared.table, key_name(key));
        for field in 0..FIELDS {
            let value = self.value().to_string();
            let _ = write!(body, r#","field{field}":{{"S":"{value}"}}"#);
        }
        body.push_str("}}");
        body
    }

    async fn put(&mut self, key: u64) -> bool {
        let body = self.record_body(key);
        self.call("PutItem", body).await.is_some()
    }

    async fn read(&mut self) -> bool {
        let key = self.shared.chooser.next(&mut self.rng);
        self.read_key(key).await
    }

    async fn read_key(&mut self, key: u64) -> bool {
        let body = format!(
            r#"{{"TableName":"{}","Key":{{"key":{{"S":"{}"}}}},"ConsistentRead":{}}}"#,
            self.shared.table,
            key_name(key),
            self.shared.consistent
        );
        let Some(reply) = self.call("GetItem", body).await else { return false };
        #[derive(serde::Deserialize)]
        struct GetItemOutput {
            #[serde(rename = "Item")]
            item: Option<serde::de::IgnoredAny>,
        }
        match serde_json::from_slice::<GetItemOutput>(&reply) {
            Ok(GetItemOutput { item: Some(_) }) => {}
            Ok(GetItemOutput { item: None }) => {
                self.shared.misses.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                self.fail(format!("bad GetItem reply: {error}"));
                return false;
            }
        }
        true
    }

    async fn update_key(&mut self, key: u64) -> bool {
        match self.shared.update_mode {
            UpdateMode::Put => self.put(key).await,
            UpdateMode::Update => {
                let field = self.rng.below(FIELDS as u64);
                let value = self.value().to_string();
                let body = format!(
                    r#"{{"TableName":"{}","Key":{{"key":{{"S":"{}"}}}},"UpdateExpression":"SET field{field} = :v","ExpressionAttributeValues":{{":v":{{"S":"{value}"}}}}}}"#,
                    self.shared.table,
                    key_name(key),
                );
                self.call("UpdateItem", body).await.is_some()
            }
        }
    }

    fn record(&mut self, op: Op, started: Instant, ok: bool, recording: bool) {
        self.record_n(op, started, ok, recording, 1, true);
    }

    /// Records `count` operations that completed now, started at `started`; `chart`: also on the
    /// timeline (not the read and update inside a read-modify-write, which is charted whole).
    fn record_n(&mut self, op: Op, started: Instant, ok: bool, recording: bool, count: u64, chart: bool) {
        if ok {
            self.shared.counts[op.index()].fetch_add(count, Ordering::Relaxed);
            let micros = started.elapsed().as_micros().clamp(1, 60_000_000) as u64;
            if recording {
                self.histograms[op.index()].saturating_record_n(micros, count);
            }
            if chart {
                let second = self.shared.schedule_origin.elapsed().as_secs() as usize;
                self.timeline.record(second, micros, count);
            }
        }
    }

    async fn load(mut self) -> (Vec<Histogram<u64>>, timeline::Timeline) {
        let batch = self.shared.load_batch;
        loop {
            let first = self.shared.next_insert.fetch_add(batch, Ordering::Relaxed);
            if first >= self.shared.records || self.shared.stop.load(Ordering::Relaxed) {
                return (self.histograms, self.timeline);
            }
            let last = (first + batch).min(self.shared.records);
            let started = Instant::now();
            if batch == 1 {
                let ok = self.put(first).await;
                self.record(Op::Insert, started, ok, true);
                continue;
            }
            let written = self.put_batch(first..last).await;
            // Each record written counts once, at the latency of the BatchWriteItem that wrote it.
            if written > 0 {
                self.record_n(Op::Insert, started, true, true, written, true);
            }
        }
    }

    /// Writes the records `keys` with BatchWriteItem, resending unprocessed items (with backoff,
    /// bounded); returns how many were written.
    async fn put_batch(&mut self, keys: std::ops::Range<u64>) -> u64 {
        let total = keys.end - keys.start;
        let mut requests = Vec::with_capacity(total as usize);
        for key in keys {
            let body = self.record_body(key);
            let mut put: serde_json::Value = serde_json::from_str(&body).expect("record bodies are JSON");
            let item = put["Item"].take();
            requests.push(serde_json::json!({"PutRequest": {"Item": item}}));
        }
        let mut pending = serde_json::json!({ self.shared.table.as_str(): requests });
        for attempt in 0..10u32 {
            let body = serde_json::json!({"RequestItems": pending}).to_string();
            let Some(reply) = self.call("BatchWriteItem", body).await else { return 0 };
            #[derive(serde::Deserialize)]
            struct BatchWriteItemOutput {
                #[serde(rename = "UnprocessedItems", default)]
                unprocessed: serde_json::Map<String, serde_json::Value>,
            }
            match serde_json::from_slice::<BatchWriteItemOutput>(&reply) {
                Ok(output) if output.unprocessed.values().all(|left| left.as_array().is_none_or(Vec::is_empty)) => {
                    return total;
                }
                Ok(output) => pending = serde_json::Value::Object(output.unprocessed),
                Err(error) => {
                    self.fail(format!("bad BatchWriteItem reply: {error}"));
                    return 0;
                }
            }
            tokio::time::sleep(Duration::from_millis(10 << attempt.min(6))).await;
        }
        self.fail("unprocessed: BatchWriteItem left items unprocessed after 10 attempts".to_string());
        0
    }

    fn claim(&self) -> bool {
        match &self.shared.remaining {
            None => true,
            Some(remaining) => {
                remaining.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok()
            }
        }
    }

    async fn run(mut self) -> (Vec<Histogram<u64>>, timeline::Timeline) {
        while !self.shared.stop.load(Ordering::Relaxed) && self.claim() {
            let recording = self.shared.recording.load(Ordering::Relaxed);
            let draw = self.rng.next_f64();
            let op = match self.shared.workload {
                Workload::A if draw >= 0.5 => Op::Update,
                Workload::B if draw >= 0.95 => Op::Update,
                Workload::F if draw >= 0.5 => Op::ReadModifyWrite,
                Workload::Put => Op::Put,
                _ => Op::Read,
            };
            let started = match self.shared.rate {
                None => Instant::now(),
                Some(rate) => {
                    // Open loop: this operation's slot in a fixed schedule; wait for it if early,
                    // and count latency from it either way.
                    let slot = self.shared.next_slot.fetch_add(1, Ordering::Relaxed);
                    let intended = self.shared.schedule_origin + Duration::from_secs_f64(slot as f64 / rate);
                    if intended > Instant::now() {
                        tokio::time::sleep_until(tokio::time::Instant::from_std(intended)).await;
                    }
                    if self.shared.stop.load(Ordering::Relaxed) {
                        break;
                    }
                    intended
                }
            };
            let ok = match op {
                Op::Read => self.read().await,
                Op::Update => {
                    let key = self.shared.chooser.next(&mut self.rng);
                    self.update_key(key).await
                }
                Op::Put => {
                    let key = self.shared.chooser.next(&mut self.rng);
                    self.put(key).await
                }
                Op::ReadModifyWrite => {
                    let key = self.shared.chooser.next(&mut self.rng);
                    let read_ok = self.read_key(key).await;
                    self.record_n(Op::Read, started, read_ok, recording, 1, false);
                    let update_started = Instant::now();
                    let update_ok = read_ok && self.update_key(key).await;
                    self.record_n(Op::Update, update_started, update_ok, recording, 1, false);
                    update_ok
                }
                Op::Insert => unreachable!("the run phase does not insert"),
            };
            self.record(op, started, ok, recording);
        }
        (self.histograms, self.timeline)
    }
}

fn percentile(histogram: &Histogram<u64>, quantile: f64) -> u64 {
    histogram.value_at_quantile(quantile)
}

fn progress_line(phase: &str, elapsed: f64, shared: &Shared, previous: &mut [u64; OPS.len()]) -> String {
    let mut line = format!("[{elapsed:6.1}s] {phase}:");
    let mut total = 0;
    let mut parts = Vec::new();
    for op in OPS {
        let now = shared.counts[op.index()].load(Ordering::Relaxed);
        let delta = now - previous[op.index()];
        previous[op.index()] = now;
        if now > 0 {
            parts.push(format!("{} {delta}/s", op.name()));
            if op != Op::ReadModifyWrite || shared.workload != Workload::F {
                total += delta;
            }
        }
    }
    let _ = write!(
        line,
        " {total} req/s ({}) errors {} misses {}",
        parts.join(", "),
        shared.errors.load(Ordering::Relaxed),
        shared.misses.load(Ordering::Relaxed)
    );
    line
}

/// Runs one phase with `concurrency` workers; returns its report.
async fn run_phase(shared: Arc<Shared>, args: &BenchArgs, phase: Phase) -> Result<PhaseReport, String> {
    let name = if phase == Phase::Load { "load" } else { "run" };
    let started = Instant::now();
    let warmup = if phase == Phase::Load { Duration::ZERO } else { Duration::from_secs_f64(args.warmup.max(0.0)) };
    shared.recording.store(warmup.is_zero(), Ordering::Relaxed);
    let mut handles = Vec::new();
    for index in 0..args.concurrency.max(1) {
        let worker = Worker::new(shared.clone(), index, args.seed);
        handles.push(if phase == Phase::Load { tokio::spawn(worker.load()) } else { tokio::spawn(worker.run()) });
    }
    let mut measure_start = started;
    let deadline = started + warmup + Duration::from_secs_f64(args.duration.max(0.0));
    let mut previous = [0u64; OPS.len()];
    let mut tick =
        tokio::time::interval_at(tokio::time::Instant::now() + Duration::from_secs(1), Duration::from_secs(1));
    let all_done = async {
        let mut histograms: Vec<Histogram<u64>> = OPS.iter().map(|_| new_histogram()).collect();
        let mut timeline = timeline::Timeline::default();
        for handle in handles {
            let (worker, worker_timeline) = handle.await.map_err(|error| format!("a worker failed: {error}"))?;
            for (sum, part) in histograms.iter_mut().zip(worker) {
                sum.add(part).map_err(|error| error.to_string())?;
            }
            timeline.merge(&worker_timeline);
        }
        Ok::<_, String>((histograms, timeline, Instant::now()))
    };
    tokio::pin!(all_done);
    let (histograms, timeline, finished) = loop {
        tokio::select! {
            result = &mut all_done => break result?,
            _ = tick.tick() => {
                let now = Instant::now();
                if !shared.recording.load(Ordering::Relaxed) && now >= started + warmup {
                    shared.recording.store(true, Ordering::Relaxed);
                    measure_start = now;
                }
                if phase != Phase::Load && now >= deadline {
                    shared.stop.store(true, Ordering::Relaxed);
                }
                if !args.quiet {
                    eprintln!("{}", progress_line(name, (now - started).as_secs_f64(), &shared, &mut previous));
                }
            }
            () = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)), if phase != Phase::Load && !shared.stop.load(Ordering::Relaxed) => {
                shared.stop.store(true, Ordering::Relaxed);
            }
            () = tokio::time::sleep_until(tokio::time::Instant::from_std(started + warmup)), if !shared.recording.load(Ordering::Relaxed) => {
                shared.recording.store(true, Ordering::Relaxed);
                measure_start = Instant::now();
            }
        }
    };
    let seconds = (finished - measure_start).as_secs_f64().max(1e-9);
    let by_operation: Vec<OpReport> = OPS
        .iter()
        .zip(&histograms)
        .filter(|(_, h)| !h.is_empty())
        .map(|(op, h)| OpReport {
            operation: op.name().to_string(),
            count: h.len(),
            throughput: h.len() as f64 / seconds,
            mean_us: h.mean(),
            p50_us: percentile(h, 0.50),
            p90_us: percentile(h, 0.90),
            p99_us: percentile(h, 0.99),
            p999_us: percentile(h, 0.999),
            max_us: h.max(),
        })
        .collect();
    let operations = if args.workload == Workload::F && phase == Phase::Run {
        // Every operation of workload F (a read, or a read-modify-write) does exactly one read;
        // the reads and updates inside read-modify-writes are reported but count once.
        histograms[Op::Read.index()].len()
    } else {
        histograms.iter().map(Histogram::len).sum()
    };
    Ok(PhaseReport {
        phase: name.to_string(),
        seconds,
        operations,
        throughput: operations as f64 / seconds,
        errors: shared.errors.load(Ordering::Relaxed),
        misses: shared.misses.load(Ordering::Relaxed),
        error_kinds: shared.error_kinds.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        by_operation,
        timeline: timeline.points(),
    })
}

/// Creates the table (hash key `key`, S, on-demand) unless it exists, and waits until ACTIVE.
async fn ensure_table(connection: &mut Connection, signer: &Signer, table: &str) -> Result<(), String> {
    let describe = format!(r#"{{"TableName":"{table}"}}"#);
    let status = |body: &[u8]| -> Option<String> {
        let value: serde_json::Value = serde_json::from_slice(body).ok()?;
        value["Table"]["TableStatus"].as_str().map(str::to_string)
    };
    match connection.call(signer, "DescribeTable", describe.clone()).await? {
        Reply::Ok(body) if status(&body).as_deref() == Some("ACTIVE") => return Ok(()),
        Reply::Ok(_) => {}
        Reply::Error(kind) if kind == "ResourceNotFoundException" => {
            let create = serde_json::json!({
                "TableName": table,
                "AttributeDefinitions": [{"AttributeName": "key", "AttributeType": "S"}],
                "KeySchema": [{"AttributeName": "key", "KeyType": "HASH"}],
                "BillingMode": "PAY_PER_REQUEST",
            });
            match connection.call(signer, "CreateTable", create.to_string()).await? {
                Reply::Ok(_) => {}
                Reply::Error(kind) if kind == "ResourceInUseException" => {}
                Reply::Error(kind) => return Err(format!("CreateTable {table} failed: {kind}")),
            }
        }
        Reply::Error(kind) => return Err(format!("DescribeTable {table} failed: {kind}")),
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Reply::Ok(body) = connection.call(signer, "DescribeTable", describe.clone()).await?
            && status(&body).as_deref() == Some("ACTIVE")
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("table {table} did not become ACTIVE within 60 s"))
}

/// Runs the phases `args` asks for and returns the report.
pub async fn run(args: BenchArgs) -> Result<Report, String> {
    let endpoints = args.endpoint.iter().map(|url| Endpoint::parse(url)).collect::<Result<Vec<_>, _>>()?;
    if endpoints.is_empty() {
        return Err("no --endpoint given".into());
    }
    if args.concurrency == 0 {
        return Err("--concurrency must be at least 1".into());
    }
    if args.records == 0 {
        return Err("--records must be at least 1".into());
    }
    if let Some(rate) = args.rate
        && !(rate.is_finite() && rate > 0.0)
    {
        return Err(format!("--rate must be a positive number of operations per second, not {rate}"));
    }
    let signer = Signer {
        access_key: args.access_key.clone(),
        secret_key: args.secret_key.clone(),
        region: args.region.clone(),
        service: "dynamodb".into(),
    };
    let field_size = (args.value_size / FIELDS).max(1);
    let mut pool_rng = Rng::new(args.seed);
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let pool: Vec<u8> =
        (0..(65_536 + field_size)).map(|_| ALPHABET[pool_rng.below(ALPHABET.len() as u64) as usize]).collect();
    let chooser = match args.distribution {
        Distribution::Uniform => KeyChooser::uniform(args.records),
        Distribution::Zipfian => KeyChooser::scrambled_zipfian(args.records),
    };
    let shared = |remaining: Option<u64>| {
        Arc::new(Shared {
            table: args.table.clone(),
            signer: signer.clone(),
            endpoints: endpoints.clone(),
            records: args.records,
            field_size,
            consistent: args.consistent,
            update_mode: args.update_mode,
            workload: args.workload,
            chooser: chooser.clone(),
            pool: pool.clone(),
            counts: Default::default(),
            errors: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            error_kinds: Mutex::new(BTreeMap::new()),
            recording: AtomicBool::new(true),
            stop: AtomicBool::new(false),
            next_insert: AtomicU64::new(0),
            remaining: remaining.map(AtomicU64::new),
            load_batch: args.load_batch,
            rate: args.rate,
            schedule_origin: Instant::now(),
            next_slot: AtomicU64::new(0),
        })
    };
    let mut phases = Vec::new();
    if matches!(args.phase, Phase::Load | Phase::All) {
        let mut connection = Connection::new(endpoints[0].clone());
        ensure_table(&mut connection, &signer, &args.table).await?;
        phases.push(run_phase(shared(None), &args, Phase::Load).await?);
    }
    if matches!(args.phase, Phase::Run | Phase::All) {
        phases.push(run_phase(shared(args.operations), &args, Phase::Run).await?);
    }
    Ok(Report {
        valid: phases.iter().all(|p| p.errors == 0 && p.misses == 0),
        endpoints: args.endpoint.clone(),
        workload: args.workload,
        distribution: args.distribution,
        update_mode: args.update_mode,
        consistent: args.consistent,
        records: args.records,
        value_size: args.value_size,
        concurrency: args.concurrency,
        rate: args.rate,
        seed: args.seed,
        phases,
    })
}

/// The report as pretty-printed JSON.
pub fn render_json(report: &Report) -> Result<String, String> {
    serde_json::to_string_pretty(report).map_err(|error| error.to_string())
}

/// The report as a human-readable table.
pub fn render_text(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "onggi bench: workload {:?}, {:?} keys, {} records of {} B, concurrency {}, updates by {:?}, {} reads, endpoints {}",
        report.workload,
        report.distribution,
        report.records,
        report.value_size,
        report.concurrency,
        report.update_mode,
        if report.consistent { "consistent" } else { "eventually consistent" },
        report.endpoints.join(",")
    );
    match report.rate {
        Some(rate) => {
            let _ = writeln!(out, "open loop: {rate:.0} ops/s offered; latency counted from each intended start");
        }
        None => {
            let _ = writeln!(out, "closed loop");
        }
    }
    for phase in &report.phases {
        let _ = writeln!(
            out,
            "{}: {} ops in {:.2} s = {:.0} ops/s, errors {}, misses {}",
            phase.phase, phase.operations, phase.seconds, phase.throughput, phase.errors, phase.misses
        );
        for (kind, count) in &phase.error_kinds {
            let _ = writeln!(out, "  error {kind}: {count}");
        }
        let _ = writeln!(
            out,
            "  {:<18} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "operation", "count", "ops/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"
        );
        for op in &phase.by_operation {
            let ms = |us: u64| us as f64 / 1000.0;
            let _ = writeln!(
                out,
                "  {:<18} {:>9} {:>9.0} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
                op.operation,
                op.count,
                op.throughput,
                ms(op.p50_us),
                ms(op.p90_us),
                ms(op.p99_us),
                ms(op.p999_us),
                ms(op.max_us)
            );
        }
    }
    let _ = writeln!(out, "{}", if report.valid { "VALID run" } else { "INVALID run: errors or misses above" });
    out
}

//! Starting `onggi serve` processes, building SDK clients for them, and naming tables.
//!
//! A [`Server`] is one child process on a free port and a data directory it is given; dropping it
//! kills that process (and only that one, by its handle). A [`TestEnv`] is what most tests want:
//! a server on a fresh temporary directory (or the endpoint named by `ONGGI_TEST_ENDPOINT`) and a
//! client for it, plus unique table names that are cleaned up on an external endpoint.

use std::collections::HashMap;
use std::fmt::Debug;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, PutRequest, ScalarAttributeType,
    TableStatus, WriteRequest,
};

/// How long a server may take to print its banner. onggi starts in milliseconds; this bound only
/// keeps a broken build from hanging the suite.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one SDK operation may take before the test fails instead of hanging.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a table may take to become ACTIVE (DynamoDB Local and onggi are immediate).
const TABLE_ACTIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The environment variable naming an existing endpoint to test instead of starting onggi.
pub const ENDPOINT_VARIABLE: &str = "ONGGI_TEST_ENDPOINT";

/// The endpoint named by `ONGGI_TEST_ENDPOINT`, if any.
pub fn external_endpoint() -> Option<String> {
    std::env::var(ENDPOINT_VARIABLE).ok().filter(|endpoint| !endpoint.is_empty())
}

/// True (after saying so) when the test must own the server process and an external endpoint is
/// configured, so the test cannot run.
pub fn skip_without_own_server(test: &str) -> bool {
    match external_endpoint() {
        Some(endpoint) => {
            println!("{test}: skipped: it needs its own onggi process, and {ENDPOINT_VARIABLE}={endpoint} is set");
            true
        }
        None => false,
    }
}

/// One `onggi serve` child process.
pub struct Server {
    /// The process; killed on drop if still running.
    child: Child,
    /// `http://127.0.0.1:PORT`, read from the banner.
    pub endpoint: String,
    /// Where its stderr (the log) goes, for failure messages.
    log_path: PathBuf,
}

impl Server {
    /// Starts `onggi serve` on `data_dir` and a free port, and waits (bounded) for its banner.
    /// Its log goes to `log_path`. Panics, quoting the log, if it does not come up.
    pub fn start(data_dir: &Path, log_path: &Path) -> Server {
        Server::start_with(data_dir, log_path, "127.0.0.1:0", &[])
    }

    /// [`Server::start`] listening on `listen`, with extra `onggi serve` arguments (a cluster's).
    pub fn start_with(data_dir: &Path, log_path: &Path, listen: &str, extra: &[String]) -> Server {
        Server::try_start_with(data_dir, log_path, listen, extra).unwrap_or_else(|error| panic!("{error}"))
    }

    /// [`Server::start_with`], answering why the server did not come up instead of panicking (a
    /// cluster test retries on other ports when one was taken meanwhile).
    pub fn try_start_with(data_dir: &Path, log_path: &Path, listen: &str, extra: &[String]) -> Result<Server, String> {
        let log = File::options().create(true).append(true).open(log_path).expect("open the server log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_onggi"))
            .args(["serve", "--listen", listen, "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env("ONGGI_LOG", "info,fjall=warn,lsm_tree=warn")
            // Expire TTL items quickly, so that the TTL test stays short.
            .env("ONGGI_TTL_INTERVAL", "0.5")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn onggi");
        let stdout = child.stdout.take().expect("stdout is piped");
        // A thread reads the banner, then drains stdout until the process exits, so a later write
        // to stdout never meets a closed pipe.
        let (banner_sender, banner_receiver) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next().and_then(Result::ok);
            let _ = banner_sender.send(first);
            for _ in lines {}
        });
        let banner = match banner_receiver.recv_timeout(STARTUP_TIMEOUT) {
            Ok(Some(banner)) => banner,
            outcome => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "onggi did not print its banner within {STARTUP_TIMEOUT:?} ({outcome:?}); its log:\n{}",
                    std::fs::read_to_string(log_path).unwrap_or_default()
                ));
            }
        };
        let endpoint = banner
            .split_whitespace()
            .find(|word| word.starts_with("http://"))
            .unwrap_or_else(|| panic!("no endpoint in the banner {banner:?}"))
            .to_string();
        assert!(banner.starts_with("onggi ") && banner.contains("serving the DynamoDB API"), "banner: {banner}");
        Ok(Server { child, endpoint, log_path: log_path.to_path_buf() })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A client for this server.
    pub fn client(&self) -> Client {
        client(&self.endpoint)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// `kill -9`: the process dies at once, with no chance to flush anything.
    pub fn kill_hard(mut self) {
        // `Child::kill` sends SIGKILL on Unix, to this child only.
        self.child.kill().expect("SIGKILL the server");
        self.child.wait().expect("reap the server");
    }

    /// Sends SIGTERM to this process only.
    pub fn terminate(&self) {
        let status = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status().expect("run kill");
        assert!(status.success(), "kill -TERM {} failed", self.pid());
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_with_timeout(&mut self.child, timeout)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls `child` until it exits or `timeout` passes.
pub fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("poll the child") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A client for `endpoint` with static credentials, plain HTTP, no retries (a test must see the
/// server's first answer, not a retried one) and a bound on every operation.
pub fn client(endpoint: &str) -> Client {
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("AKIDONGGITESTS", "onggi-test-secret", None, None, "onggi-tests"))
        .endpoint_url(endpoint)
        .http_client(aws_smithy_http_client::Builder::new().build_http())
        .retry_config(RetryConfig::disabled())
        .timeout_config(TimeoutConfig::builder().operation_timeout(OPERATION_TIMEOUT).build())
        .build();
    Client::from_conf(config)
}

/// A server (or external endpoint) and a client, for one test.
pub struct TestEnv {
    /// The client to test with.
    pub client: Client,
    /// The endpoint the client talks to.
    endpoint: String,
    /// Tables created through [`TestEnv::table_name`]: deleted on drop from an external endpoint.
    tables: Mutex<Vec<String>>,
    /// Our own server, if no external endpoint is configured. Declared before `directory` so the
    /// process dies before its directory is removed.
    server: Option<Server>,
    /// The temporary directory holding the server's data and log.
    _directory: Option<tempfile::TempDir>,
}

impl TestEnv {
    /// A fresh onggi on a temporary data directory, or the external endpoint if configured.
    pub fn start() -> TestEnv {
        if let Some(endpoint) = external_endpoint() {
            return TestEnv {
                client: client(&endpoint),
                endpoint,
                tables: Mutex::new(Vec::new()),
                server: None,
                _directory: None,
            };
        }
        let directory = tempfile::tempdir().expect("create a temporary directory");
        let server = Server::start(&directory.path().join("data"), &directory.path().join("onggi.log"));
        TestEnv {
            client: server.client(),
            endpoint: server.endpoint.clone(),
            tables: Mutex::new(Vec::new()),
            server: Some(server),
            _directory: Some(directory),
        }
    }

    /// A table name no other test (or earlier run) uses, remembered for clean-up.
    pub fn table_name(&self, hint: &str) -> String {
        let name = unique_name(hint);
        self.remember(&name);
        name
    }

    /// Remembers a table name for clean-up.
    pub fn remember(&self, name: &str) {
        self.tables.lock().unwrap().push(name.to_string());
    }

    /// Creates a PAY_PER_REQUEST table with a hash key (and a range key) and waits until ACTIVE.
    pub async fn create_table(
        &self,
        hint: &str,
        hash: (&str, ScalarAttributeType),
        range: Option<(&str, ScalarAttributeType)>,
    ) -> String {
        let name = self.table_name(hint);
        self.create_named_table(&name, hash, range).await;
        name
    }

    /// Creates the PAY_PER_REQUEST table `name` (which the caller has remembered) and waits until
    /// it is ACTIVE.
    pub async fn create_named_table(
        &self,
        name: &str,
        hash: (&str, ScalarAttributeType),
        range: Option<(&str, ScalarAttributeType)>,
    ) {
        let mut request = self.client.create_table().table_name(name).billing_mode(BillingMode::PayPerRequest);
        for (attribute, attribute_type, key_type) in
            std::iter::once((hash.0, hash.1, KeyType::Hash)).chain(range.map(|(a, t)| (a, t, KeyType::Range)))
        {
            request = request
                .attribute_definitions(attribute_definition(attribute, attribute_type))
                .key_schema(key_element(attribute, key_type));
        }
        request.send().await.unwrap_or_else(|error| panic!("create table {name}: {error:?}"));
        wait_active(&self.client, name).await;
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let tables = std::mem::take(&mut *self.tables.lock().unwrap());
        if self.server.is_some() || tables.is_empty() {
            return; // our own server's data dies with its temporary directory
        }
        // Drop cannot await, and the test's runtime may be shutting down: delete the tables from a
        // thread with its own runtime and its own client.
        let endpoint = self.endpoint.clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async {
                let client = client(&endpoint);
                for table in tables {
                    let _ = client.delete_table().table_name(table).send().await;
                }
            });
        })
        .join();
    }
}

/// A table name that is unique across tests, processes and runs.
pub fn unique_name(hint: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("onggi_sdk_{hint}_{}_{}_{nanos:09}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Polls DescribeTable until the table is ACTIVE (bounded).
pub async fn wait_active(client: &Client, name: &str) {
    let deadline = Instant::now() + TABLE_ACTIVE_TIMEOUT;
    loop {
        let description = client.describe_table().table_name(name).send().await.expect("describe table").table;
        if description.and_then(|table| table.table_status) == Some(TableStatus::Active) {
            return;
        }
        assert!(Instant::now() < deadline, "table {name} not ACTIVE within {TABLE_ACTIVE_TIMEOUT:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An attribute definition.
pub fn attribute_definition(name: &str, attribute_type: ScalarAttributeType) -> AttributeDefinition {
    AttributeDefinition::builder().attribute_name(name).attribute_type(attribute_type).build().unwrap()
}

/// A key schema element.
pub fn key_element(name: &str, key_type: KeyType) -> KeySchemaElement {
    KeySchemaElement::builder().attribute_name(name).key_type(key_type).build().unwrap()
}

/// Writes `items` with BatchWriteItem, 25 at a time, retrying unprocessed items.
pub async fn batch_put(client: &Client, table: &str, items: Vec<HashMap<String, AttributeValue>>) {
    for chunk in items.chunks(25) {
        let mut requests: Vec<WriteRequest> = chunk
            .iter()
            .map(|item| {
                WriteRequest::builder()
                    .put_request(PutRequest::builder().set_item(Some(item.clone())).build().expect("a put request"))
                    .build()
            })
            .collect();
        for _ in 0..20 {
            let output =
                client.batch_write_item().request_items(table, requests.clone()).send().await.expect("batch write");
            requests = output.unprocessed_items.and_then(|mut left| left.remove(table)).unwrap_or_default();
            if requests.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(requests.is_empty(), "unprocessed items left after retries");
    }
}

/// An item (or key) from name/value pairs.
pub fn item<const N: usize>(pairs: [(&str, AttributeValue); N]) -> HashMap<String, AttributeValue> {
    pairs.into_iter().map(|(name, value)| (name.to_string(), value)).collect()
}

/// A string value.
pub fn s(text: &str) -> AttributeValue {
    AttributeValue::S(text.to_string())
}

/// A number value.
pub fn n(number: impl ToString) -> AttributeValue {
    AttributeValue::N(number.to_string())
}

/// A binary value.
pub fn b(bytes: &[u8]) -> AttributeValue {
    AttributeValue::B(Blob::new(bytes))
}

/// The service error's code (`ValidationException`, …), or a panic naming what came back instead.
pub fn error_code<T: Debug, E: ProvideErrorMetadata + Debug, R: Debug>(result: &Result<T, SdkError<E, R>>) -> String {
    match result {
        Ok(output) => panic!("expected an error, got {output:?}"),
        Err(SdkError::ServiceError(error)) => error.err().code().unwrap_or_default().to_string(),
        Err(other) => panic!("expected a service error, got {other:?}"),
    }
}

/// Asserts `result` is a ValidationException whose message contains `fragment`.
pub fn assert_validation<T: Debug, E: ProvideErrorMetadata + Debug, R: Debug>(
    result: &Result<T, SdkError<E, R>>,
    fragment: &str,
) {
    assert_eq!(error_code(result), "ValidationException", "{result:?}");
    let message = match result {
        Err(SdkError::ServiceError(error)) => error.err().message().unwrap_or_default().to_string(),
        _ => unreachable!("error_code checked it is a service error"),
    };
    assert!(message.contains(fragment), "message {message:?} should contain {fragment:?}");
}

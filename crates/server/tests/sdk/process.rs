//! The server process: graceful shutdown, restarts, and data directories it must refuse.

use std::process::{Command, Stdio};
use std::time::Duration;

use aws_sdk_dynamodb::types::ScalarAttributeType;

use crate::crash::{Writer, create_crash_table, verify, write_then_stop};
use crate::harness::{Server, item, s, skip_without_own_server, unique_name, wait_with_timeout};

/// How long a server may take to exit after SIGTERM.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// SIGTERM is how every supervisor (systemd, Kubernetes, docker stop) stops a server: requests in
/// flight must complete, the process must exit 0 promptly, and every acknowledged write must be
/// there after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_finishes_in_flight_requests_and_exits_cleanly() {
    if skip_without_own_server("sigterm_finishes_in_flight_requests_and_exits_cleanly") {
        return;
    }
    let directory = tempfile::tempdir().expect("temporary directory");
    let data_dir = directory.path().join("data");
    let log = directory.path().join("onggi.log");
    let table = unique_name("graceful");

    let mut server = Server::start(&data_dir, &log);
    create_crash_table(&server.client(), &table).await;
    let writers: Vec<Writer> = (0..4).map(Writer::new).collect();
    let (writers, in_flight) =
        write_then_stop(server.client(), &table, writers, Duration::from_millis(700), || server.terminate()).await;
    let status = server.wait_exit(SHUTDOWN_TIMEOUT);
    assert!(
        status.is_some_and(|status| status.success()),
        "onggi should exit 0 within {SHUTDOWN_TIMEOUT:?} of SIGTERM, got {status:?}; its log:\n{}",
        server.log()
    );
    // After SIGTERM a writer may only fail to reach the server (its idle connection was closed, or
    // a new one refused); an error response, a truncated response or a timeout would mean a request
    // the server had started was dropped half-way.
    for writer in &writers {
        if let Some(error) = &writer.ending_error {
            assert!(writer.ending_was_dispatch_failure, "a request failed during graceful shutdown: {error}");
        }
    }

    let restarted = Server::start(&data_dir, &log);
    let found = verify(&restarted.client(), &table, &writers).await;
    let acknowledged: u64 = writers.iter().map(|writer| writer.acknowledged_writes).sum();
    println!(
        "graceful shutdown: {acknowledged} writes acknowledged, {in_flight} in flight at SIGTERM; after restart \
         {} acknowledged keys verified, {} unacknowledged present, {} absent",
        found.acknowledged_keys_verified, found.unacknowledged_present, found.unacknowledged_absent
    );
    let acknowledged_keys: usize = writers.iter().map(|writer| writer.acknowledged_keys()).sum();
    assert_eq!(found.acknowledged_keys_verified, acknowledged_keys as u64);
    assert!(acknowledged > 0, "no write was acknowledged before SIGTERM");
}

/// Tables and items written before a clean stop are all there after a restart, including the
/// table's schema (the catalog is data too).
#[tokio::test]
async fn tables_and_items_survive_a_clean_restart() {
    if skip_without_own_server("tables_and_items_survive_a_clean_restart") {
        return;
    }
    let directory = tempfile::tempdir().expect("temporary directory");
    let data_dir = directory.path().join("data");
    let log = directory.path().join("onggi.log");
    let table = unique_name("restart");
    let mut server = Server::start(&data_dir, &log);
    let client = server.client();
    client
        .create_table()
        .table_name(&table)
        .attribute_definitions(crate::harness::attribute_definition("pk", ScalarAttributeType::S))
        .attribute_definitions(crate::harness::attribute_definition("sk", ScalarAttributeType::N))
        .key_schema(crate::harness::key_element("pk", aws_sdk_dynamodb::types::KeyType::Hash))
        .key_schema(crate::harness::key_element("sk", aws_sdk_dynamodb::types::KeyType::Range))
        .billing_mode(aws_sdk_dynamodb::types::BillingMode::PayPerRequest)
        .send()
        .await
        .expect("create table");
    let stored = item([("pk", s("p")), ("sk", crate::harness::n(1)), ("data", s("kept"))]);
    client.put_item().table_name(&table).set_item(Some(stored.clone())).send().await.expect("put");
    server.terminate();
    let status = server.wait_exit(SHUTDOWN_TIMEOUT);
    assert!(status.is_some_and(|status| status.success()), "exit status {status:?}");

    let restarted = Server::start(&data_dir, &log);
    let client = restarted.client();
    let described = client.describe_table().table_name(&table).send().await.expect("describe").table.expect("table");
    assert_eq!(described.key_schema().len(), 2);
    assert_eq!(described.item_count(), Some(1));
    let tables = client.list_tables().send().await.expect("list tables");
    assert_eq!(tables.table_names(), std::slice::from_ref(&table));
    let got = client
        .get_item()
        .table_name(&table)
        .key("pk", s("p"))
        .key("sk", crate::harness::n(1))
        .send()
        .await
        .expect("get");
    assert_eq!(got.item(), Some(&stored));
}

/// Runs `onggi serve` on `data_dir` expecting it to refuse: returns its stderr after checking it
/// exited non-zero within the startup bound and never printed the ready banner.
fn serve_expecting_refusal(data_dir: &std::path::Path) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_onggi"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn onggi");
    let status = wait_with_timeout(&mut child, crate::harness::STARTUP_TIMEOUT);
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("onggi kept running on {} instead of refusing it", data_dir.display());
    };
    let output = child.wait_with_output().expect("collect output");
    assert!(!status.success(), "onggi exited 0 on {}", data_dir.display());
    assert!(output.stdout.is_empty(), "onggi printed {:?} before refusing", String::from_utf8_lossy(&output.stdout));
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A directory written by another data format must be refused, not reinterpreted (reading one
/// layout as another corrupts data silently), and the message must say which formats are involved.
#[test]
fn a_data_directory_of_another_format_is_refused_with_a_clear_message() {
    if skip_without_own_server("a_data_directory_of_another_format_is_refused_with_a_clear_message") {
        return;
    }
    let directory = tempfile::tempdir().expect("temporary directory");
    std::fs::write(directory.path().join("ONGGI_FORMAT"), "onggi data directory\nformat 99\n").unwrap();
    let stderr = serve_expecting_refusal(directory.path());
    assert!(stderr.contains("format 99") && stderr.contains("format 1"), "stderr should name both formats: {stderr}");
    assert!(stderr.contains(&directory.path().display().to_string()), "stderr should name the directory: {stderr}");

    // A damaged marker is refused too.
    std::fs::write(directory.path().join("ONGGI_FORMAT"), "something else entirely\n").unwrap();
    let stderr = serve_expecting_refusal(directory.path());
    assert!(stderr.contains("ONGGI_FORMAT"), "stderr should name the marker file: {stderr}");
}

/// A non-empty directory that is not an onggi data directory (a typo'd path pointing at someone's
/// files) must be left alone.
#[test]
fn a_foreign_directory_is_refused() {
    if skip_without_own_server("a_foreign_directory_is_refused") {
        return;
    }
    let directory = tempfile::tempdir().expect("temporary directory");
    std::fs::write(directory.path().join("thesis.txt"), "precious").unwrap();
    let stderr = serve_expecting_refusal(directory.path());
    assert!(stderr.contains("not an onggi data directory"), "{stderr}");
    assert_eq!(std::fs::read_dir(directory.path()).unwrap().count(), 1, "nothing may be written into it");
}

/// Two servers on one directory would corrupt it: the second must be refused while the first runs.
#[test]
fn a_data_directory_in_use_is_refused() {
    if skip_without_own_server("a_data_directory_in_use_is_refused") {
        return;
    }
    let directory = tempfile::tempdir().expect("temporary directory");
    let data_dir = directory.path().join("data");
    let _first = Server::start(&data_dir, &directory.path().join("onggi.log"));
    let stderr = serve_expecting_refusal(&data_dir);
    assert!(stderr.contains("in use"), "{stderr}");
}

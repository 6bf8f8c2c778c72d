//! Black-box tests: real `onggi serve` processes driven through the real AWS SDK for Rust.
//!
//! Every test starts its own server on a fresh temporary data directory and a free port, so tests
//! share nothing and run in parallel. Each test is about one behaviour and says why it matters.
//!
//! Set `ONGGI_TEST_ENDPOINT` (for example `http://127.0.0.1:8111`, Amazon's DynamoDB Local) to run
//! the API tests against an existing endpoint instead: that proves the tests themselves right.
//! Tests that need to own the server process (crash, shutdown, data directory checks) are skipped
//! then, saying so on stdout.
//!
//! Layout: `harness` starts servers and builds clients, `proxy` cuts links between cluster nodes;
//! the other modules are groups of tests.

mod harness;

mod cluster;
mod cluster_layout;
mod cluster_ranges;
mod cluster_tables;
mod concurrency;
mod crash;
mod errors;
mod expressions;
mod items;
mod process;
mod proxy;
mod reads;
mod tables;

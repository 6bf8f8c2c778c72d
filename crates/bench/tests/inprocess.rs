//! `onggi bench` against an in-process onggi node (in memory): load, then a short run.

use std::sync::Arc;

use clap::Parser;
use onggi_bench::{BenchArgs, Phase, Workload};
use onggi_node::{Node, NodeConfig, StorageChoice};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    bench: BenchArgs,
}

fn args(endpoint: &str, extra: &[&str]) -> BenchArgs {
    let mut argv = vec!["bench", "--endpoint", endpoint, "--quiet", "--access-key", "AKID", "--secret-key", "s"];
    argv.extend_from_slice(extra);
    Cli::parse_from(argv).bench
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_then_run_against_onggi() {
    let node = Arc::new(
        Node::open(NodeConfig { storage: StorageChoice::Memory, default_region: "us-east-1".into() }).unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(onggi_api::serve(listener, node, onggi_api::ServerConfig::default(), async {
        let _ = stopped.await;
    }));

    // Load, then workload A (gets and UpdateItems) with the endpoint given twice (round-robin).
    let twice = format!("{endpoint},{endpoint}");
    let a = args(
        &twice,
        &["--records", "200", "--value-size", "100", "--concurrency", "4", "--duration", "1", "--workload", "a"],
    );
    assert_eq!(a.phase, Phase::All);
    assert_eq!(a.endpoint.len(), 2);
    let report = onggi_bench::run(a).await.unwrap();
    assert!(report.valid, "{}", onggi_bench::render_text(&report));
    let load = &report.phases[0];
    assert_eq!((load.phase.as_str(), load.operations, load.errors), ("load", 200, 0));
    let run = &report.phases[1];
    assert_eq!((run.errors, run.misses), (0, 0));
    assert!(run.operations > 0);
    let names: Vec<&str> = run.by_operation.iter().map(|o| o.operation.as_str()).collect();
    assert_eq!(names, ["read", "update"]);

    // Run only: F with strong reads and puts, capped by --operations; the table already exists.
    let f = args(
        &endpoint,
        &[
            "--phase",
            "run",
            "--records",
            "200",
            "--value-size",
            "100",
            "--workload",
            "f",
            "--consistent",
            "--update-mode",
            "put",
            "--operations",
            "300",
            "--distribution",
            "uniform",
            "--concurrency",
            "4",
        ],
    );
    assert_eq!(f.workload, Workload::F);
    let report = onggi_bench::run(f).await.unwrap();
    assert!(report.valid, "{}", onggi_bench::render_text(&report));
    assert_eq!(report.phases.len(), 1);
    assert_eq!(report.phases[0].operations, 300);
    assert!(onggi_bench::render_json(&report).unwrap().contains("read-modify-write"));

    // A key outside the loaded range is a miss and makes the run invalid.
    let misses = args(
        &endpoint,
        &["--phase", "run", "--records", "400", "--workload", "c", "--operations", "200", "--concurrency", "2"],
    );
    let report = onggi_bench::run(misses).await.unwrap();
    assert!(!report.valid);
    assert!(report.phases[0].misses > 0);

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

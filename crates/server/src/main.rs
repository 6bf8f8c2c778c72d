//! The `onggi` command: `onggi serve` runs a node; `onggi bench` load-tests an endpoint.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use onggi_api::ServerConfig;
use onggi_node::{Node, NodeConfig, StorageChoice};

/// mimalloc instead of the system allocator: a request allocates and frees many small objects
/// (JSON members, attribute names, values), and glibc's malloc took a quarter of the server's CPU
/// on a durable put workload (perf; see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// onggi: a leaderless, Dynamo-style database that speaks the Amazon DynamoDB API.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node: serve the DynamoDB API over HTTP.
    Serve(ServeArgs),
    /// Load-test a DynamoDB-compatible endpoint (YCSB-style workloads).
    Bench(onggi_bench::BenchArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to serve the DynamoDB API on.
    #[arg(long, env = "ONGGI_LISTEN", default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
    /// Directory holding the node's data (created if missing).
    #[arg(long, env = "ONGGI_DATA_DIR", default_value = "./onggi-data")]
    data_dir: PathBuf,
    /// Keep data in memory only (lost when the process stops); ignores --data-dir.
    #[arg(long, env = "ONGGI_IN_MEMORY")]
    in_memory: bool,
    /// Region named in ARNs when a request's signature names none.
    #[arg(long, env = "ONGGI_REGION", default_value = "us-east-1")]
    region: String,
    /// Log line format.
    #[arg(long, env = "ONGGI_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Seconds between two passes of the Time to Live expirer: an expired item is deleted at most
    /// about this long (plus the pass itself) after its TTL passes.
    #[arg(long, env = "ONGGI_TTL_INTERVAL", default_value_t = 10.0)]
    ttl_interval: f64,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ONGGI_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,fjall=warn,lsm_tree=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Resolves when SIGINT or SIGTERM arrives.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => tracing::info!("SIGINT received; shutting down"),
        () = terminate => tracing::info!("SIGTERM received; shutting down"),
    }
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    let started = Instant::now();
    let storage = if args.in_memory { StorageChoice::Memory } else { StorageChoice::Disk(args.data_dir.clone()) };
    let node = Node::open(NodeConfig { storage, default_region: args.region.clone() })?;
    if !(args.ttl_interval.is_finite() && args.ttl_interval > 0.0) {
        return Err(format!("--ttl-interval must be a positive number of seconds, not {}", args.ttl_interval));
    }
    node.start_background(Duration::from_secs_f64(args.ttl_interval));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|error| format!("cannot listen on {}: {error}", args.listen))?;
    let address = listener.local_addr().map_err(|error| error.to_string())?;
    let data = if args.in_memory { "in memory".to_string() } else { args.data_dir.display().to_string() };
    // The banner is the one line on stdout: scripts wait for it to know the server is ready.
    println!("onggi {} serving the DynamoDB API on http://{address} (data: {data})", env!("CARGO_PKG_VERSION"));
    tracing::info!(%address, data, startup_ms = started.elapsed().as_secs_f64() * 1000.0, "ready");
    let node = Arc::new(node);
    onggi_api::serve(listener, node.clone(), ServerConfig::default(), shutdown_signal())
        .await
        .map_err(|error| format!("server failed: {error}"))?;
    node.flush().map_err(|error| format!("flushing storage at shutdown failed: {error}"))?;
    tracing::info!("storage flushed; goodbye");
    Ok(())
}

fn bench(args: onggi_bench::BenchArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("onggi bench: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let json = args.json;
    let plot = args.plot.clone();
    match runtime.block_on(onggi_bench::run(args)) {
        Ok(report) => {
            if let Some(path) = plot
                && let Err(error) = std::fs::write(&path, onggi_bench::render_svg(&report))
            {
                eprintln!("onggi bench: cannot write the chart to {}: {error}", path.display());
                return ExitCode::FAILURE;
            }
            if json {
                match onggi_bench::render_json(&report) {
                    Ok(text) => println!("{text}"),
                    Err(error) => {
                        eprintln!("onggi bench: {error}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                print!("{}", onggi_bench::render_text(&report));
            }
            // An invalid run (errors or misses) exits with status 2.
            if report.valid { ExitCode::SUCCESS } else { ExitCode::from(2) }
        }
        Err(message) => {
            eprintln!("onggi bench: {message}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Bench(args) => bench(args),
        Command::Serve(args) => {
            init_logging(args.log_format);
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(error) => {
                    eprintln!("onggi: cannot start the runtime: {error}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(serve(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(message) => {
                    tracing::error!("{message}");
                    eprintln!("onggi: {message}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

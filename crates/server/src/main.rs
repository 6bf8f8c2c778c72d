//! The `onggi` command: `onggi serve` runs a node; `onggi dev` runs a local cluster of them;
//! `onggi bench` load-tests an endpoint.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use onggi_api::ServerConfig;
use onggi_node::cluster::ClusterConfig;
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
    /// Run a local cluster: several `onggi serve` processes on consecutive ports.
    Dev(DevArgs),
    /// Inspect a running cluster.
    #[command(subcommand)]
    Cluster(ClusterCommand),
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
    /// This node's id in its cluster: unique, never reused. Needed with --members or --seeds;
    /// with --cluster-listen alone, the node forms a cluster of one that others can join.
    #[arg(long, env = "ONGGI_NODE_ID")]
    node_id: Option<u64>,
    /// Where this node listens for its cluster peers. Needed with --members.
    #[arg(long, env = "ONGGI_CLUSTER_LISTEN")]
    cluster_listen: Option<SocketAddr>,
    /// Every member of the cluster, this node included, as ID=HOST:PORT (cluster addresses) or
    /// ID=HOST:PORT@ZONE (a failure domain: replicas of a partition go to distinct zones when
    /// there are enough), comma-separated, the same on every member. Read when the cluster is
    /// first formed; its stored layout wins afterwards. Without it the node forms a cluster of one.
    #[arg(long, env = "ONGGI_MEMBERS", value_delimiter = ',')]
    members: Vec<String>,
    /// Cluster addresses (HOST:PORT) of running members, comma-separated: this node learns the
    /// cluster from them and waits to be added (`onggi cluster join`). Instead of --members.
    #[arg(long, env = "ONGGI_SEEDS", value_delimiter = ',', conflicts_with = "members")]
    seeds: Vec<SocketAddr>,
    /// The cluster's name: nodes of another cluster are refused.
    #[arg(long, env = "ONGGI_CLUSTER_NAME", default_value = "onggi")]
    cluster_name: String,
    /// Replicas per item (N).
    #[arg(long, env = "ONGGI_REPLICATION", default_value_t = 3)]
    replication: usize,
    /// Hints (commits kept for a replica that missed them, handed over when it is back) this node
    /// stores at most; more are dropped, and anti-entropy repairs what they would have.
    #[arg(long, env = "ONGGI_HINTS_MAX", default_value_t = onggi_node::cluster::HINTS_MAX_DEFAULT)]
    hints_max: u64,
    /// Seconds a deleted item's tombstone is kept at least (15 or more: longer than any operation
    /// runs, plus the clocks' disagreement); it is then removed once every replica of its
    /// partition has it (a replica that is down holds collection back).
    #[arg(long, env = "ONGGI_TOMBSTONE_GRACE", default_value_t = onggi_node::cluster::TOMBSTONE_GRACE_DEFAULT.as_secs_f64())]
    tombstone_grace: f64,
    /// Seconds between two tombstone-collection rounds over one partition.
    #[arg(long, env = "ONGGI_TOMBSTONE_INTERVAL", default_value_t = onggi_node::cluster::TOMBSTONE_INTERVAL_DEFAULT.as_secs_f64())]
    tombstone_interval: f64,
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Print the cluster as one node sees it: members, reachability, partitions, hints, repair.
    Status {
        /// The node to ask (its DynamoDB API endpoint).
        #[arg(long, env = "ONGGI_ENDPOINT", default_value = "http://127.0.0.1:8000")]
        endpoint: String,
        /// Print the node's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Add a node to the cluster: start it first with `onggi serve --seeds`, then run this
    /// against any member. Partitions move to it online; `status` shows the progress.
    Join {
        /// A member to ask (its DynamoDB API endpoint).
        #[arg(long, env = "ONGGI_ENDPOINT", default_value = "http://127.0.0.1:8000")]
        endpoint: String,
        /// The new node's id (unique, never reused).
        #[arg(long)]
        node_id: u64,
        /// The new node's cluster address (its --cluster-listen).
        #[arg(long)]
        address: SocketAddr,
        /// The new node's zone (failure domain: rack, data centre): a partition's replicas go to
        /// distinct zones when there are enough.
        #[arg(long)]
        zone: Option<String>,
    },
    /// Remove a decommissioned node (drained, holding nothing) from the membership: members stop
    /// probing it and sending it anything.
    Remove {
        /// A member to ask (its DynamoDB API endpoint).
        #[arg(long, env = "ONGGI_ENDPOINT", default_value = "http://127.0.0.1:8000")]
        endpoint: String,
        /// The drained node.
        #[arg(long)]
        node_id: u64,
    },
    /// Replace a dead (or any) node by a new one in one change: the new node, started with
    /// `onggi serve --seeds`, takes over; data is copied from the surviving replicas (a majority
    /// of each of the old node's partitions' replicas must be up).
    Replace {
        /// A member to ask (its DynamoDB API endpoint).
        #[arg(long, env = "ONGGI_ENDPOINT", default_value = "http://127.0.0.1:8000")]
        endpoint: String,
        /// The node being replaced.
        #[arg(long)]
        dead: u64,
        /// The new node's id (unique, never reused).
        #[arg(long)]
        node_id: u64,
        /// The new node's cluster address (its --cluster-listen).
        #[arg(long)]
        address: SocketAddr,
        /// The new node's zone (failure domain).
        #[arg(long)]
        zone: Option<String>,
    },
    /// Decommission a node: its replicas move to the others online; once `status` shows the
    /// change done, the node holds nothing and can be stopped.
    Decommission {
        /// A member to ask (its DynamoDB API endpoint).
        #[arg(long, env = "ONGGI_ENDPOINT", default_value = "http://127.0.0.1:8000")]
        endpoint: String,
        /// The node to decommission.
        #[arg(long)]
        node_id: u64,
    },
}

#[derive(clap::Args)]
struct DevArgs {
    /// How many nodes.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// The first node serves the DynamoDB API on this port, the next on the port after, and so
    /// on; cluster ports start 100 higher.
    #[arg(long, default_value_t = 8000)]
    base_port: u16,
    /// Keep each node's data under DIR/node-ID (kept between runs).
    #[arg(long, default_value = "./onggi-dev")]
    data_dir: PathBuf,
    /// Keep data in memory only.
    #[arg(long)]
    in_memory: bool,
    /// Spread the nodes over this many zones (`zone-1`, `zone-2`, ...; node i in zone i mod Z), so
    /// that each partition's replicas sit in distinct zones. 0: no zones.
    #[arg(long, default_value_t = 0)]
    zones: usize,
}

/// A cluster's first members as `--members` gives them: ids and cluster addresses, and the
/// zones of those that name one.
type Members = (Vec<(u64, SocketAddr)>, std::collections::BTreeMap<u64, String>);

/// Parses `--members` entries: `ID=HOST:PORT`, or `ID=HOST:PORT@ZONE`.
fn parse_members(entries: &[String]) -> Result<Members, String> {
    let mut members = Vec::new();
    let mut zones = std::collections::BTreeMap::new();
    for entry in entries {
        let (id, rest) =
            entry.split_once('=').ok_or_else(|| format!("--members entry {entry:?} is not ID=HOST:PORT[@ZONE]"))?;
        let id: u64 = id.trim().parse().map_err(|_| format!("--members entry {entry:?}: {id:?} is not a node id"))?;
        let (address, zone) = match rest.split_once('@') {
            Some((address, zone)) => (address, Some(zone.trim())),
            None => (rest, None),
        };
        let address =
            address.trim().parse().map_err(|_| format!("--members entry {entry:?}: {address:?} is not an address"))?;
        if let Some(zone) = zone {
            if zone.is_empty() {
                return Err(format!("--members entry {entry:?}: the zone after @ is empty"));
            }
            zones.insert(id, zone.to_string());
        }
        members.push((id, address));
    }
    Ok((members, zones))
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
    let tombstone_grace =
        Duration::try_from_secs_f64(args.tombstone_grace).map_err(|_| "--tombstone-grace: not a duration")?;
    if tombstone_grace < onggi_node::cluster::TOMBSTONE_GRACE_MIN {
        return Err(format!(
            "--tombstone-grace {} is below {} seconds: a tombstone must outlive every operation begun before its \
             delete, and the clocks' disagreement",
            args.tombstone_grace,
            onggi_node::cluster::TOMBSTONE_GRACE_MIN.as_secs()
        ));
    }
    let (mut members, zones) = parse_members(&args.members)?;
    if members.is_empty()
        && args.seeds.is_empty()
        && let (Some(node_id), Some(listen)) = (args.node_id, args.cluster_listen)
    {
        // A node given an identity and a cluster address but no members or seeds forms a cluster
        // of one, which others can join.
        members.push((node_id, listen));
    }
    if !members.is_empty() || !args.seeds.is_empty() {
        let node_id = args.node_id.ok_or("--members and --seeds need --node-id")?;
        let listen = match args.cluster_listen {
            Some(listen) => listen,
            None => members
                .iter()
                .find(|(id, _)| *id == node_id)
                .map(|(_, address)| *address)
                .ok_or_else(|| format!("node {node_id} is not in --members; give --cluster-listen"))?,
        };
        let config = ClusterConfig {
            node_id,
            cluster_name: args.cluster_name.clone(),
            listen,
            members,
            seeds: args.seeds.clone(),
            replication: args.replication,
            zones,
        };
        node.start_cluster(config).await?;
        node.set_hint_limit(args.hints_max);
        node.set_tombstone_collection(
            tombstone_grace,
            Duration::try_from_secs_f64(args.tombstone_interval).map_err(|_| "--tombstone-interval: not a duration")?,
        );
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

/// Writes a report to stdout; a reader that went away (`| head`) is not an error worth a panic.
fn print_ignoring_closed_pipe(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
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
                    Ok(text) => print_ignoring_closed_pipe(&format!("{text}\n")),
                    Err(error) => {
                        eprintln!("onggi bench: {error}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                print_ignoring_closed_pipe(&onggi_bench::render_text(&report));
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

/// Runs `onggi dev`: starts the nodes, prints their endpoints, and stops them on Ctrl-C.
fn dev(args: DevArgs) -> Result<(), String> {
    use std::io::BufRead;
    if args.nodes == 0 || args.nodes > 16 {
        return Err("--nodes must be between 1 and 16".into());
    }
    let executable = std::env::current_exe().map_err(|error| format!("cannot find the onggi executable: {error}"))?;
    let api_port = |i: usize| args.base_port as usize + i;
    let cluster_port = |i: usize| args.base_port as usize + 100 + i;
    if cluster_port(args.nodes) > usize::from(u16::MAX) {
        return Err("--base-port is too high".into());
    }
    let zone = |i: usize| if args.zones == 0 { String::new() } else { format!("@zone-{}", i % args.zones + 1) };
    let members: Vec<String> =
        (0..args.nodes).map(|i| format!("{}=127.0.0.1:{}{}", i + 1, cluster_port(i), zone(i))).collect();
    let mut children = Vec::new();
    for i in 0..args.nodes {
        let mut command = std::process::Command::new(&executable);
        command
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", api_port(i)))
            .arg("--node-id")
            .arg((i + 1).to_string())
            .arg("--members")
            .arg(members.join(","))
            .stdout(std::process::Stdio::piped());
        if args.in_memory {
            command.arg("--in-memory");
        } else {
            command.arg("--data-dir").arg(args.data_dir.join(format!("node-{}", i + 1)));
        }
        let mut child = command.spawn().map_err(|error| format!("cannot start node {}: {error}", i + 1))?;
        let stdout = child.stdout.take().ok_or("no stdout from a node")?;
        children.push(child);
        // Wait for the node's banner (its one stdout line) before starting the next.
        let mut banner = String::new();
        std::io::BufReader::new(stdout).read_line(&mut banner).map_err(|error| error.to_string())?;
        if banner.is_empty() {
            for child in &mut children {
                let _ = child.kill();
            }
            return Err(format!("node {} exited during start-up (see its log above)", i + 1));
        }
    }
    println!("onggi dev: {} nodes, replication factor {}:", args.nodes, args.nodes.min(3));
    for i in 0..args.nodes {
        println!("  node {}: http://127.0.0.1:{}  (cluster port {})", i + 1, api_port(i), cluster_port(i));
    }
    println!("Press Ctrl-C to stop them.");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    runtime.block_on(shutdown_signal());
    for child in &mut children {
        // SIGTERM: each node finishes its requests and flushes; acknowledged writes are already durable.
        let _ = std::process::Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    }
    for child in &mut children {
        let _ = child.wait();
    }
    Ok(())
}

/// Sends one plain HTTP/1.1 request to `endpoint` (onggi's own small endpoints) and returns the
/// status code and body.
fn http_request(endpoint: &str, method: &str, path: &str, body: &str) -> Result<(u16, String), String> {
    use std::io::{Read, Write};
    let authority = endpoint
        .strip_prefix("http://")
        .ok_or_else(|| format!("{endpoint}: only http:// endpoints are supported"))?
        .trim_end_matches('/');
    let address = std::net::ToSocketAddrs::to_socket_addrs(authority)
        .map_err(|error| format!("{endpoint}: {error}"))?
        .next()
        .ok_or_else(|| format!("{endpoint}: no address"))?;
    let mut stream = std::net::TcpStream::connect_timeout(&address, Duration::from_secs(5))
        .map_err(|error| format!("cannot connect to {endpoint}: {error}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30))).map_err(|error| error.to_string())?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(|error| error.to_string())?;
    let mut response = String::new();
    stream.read_to_string(&mut response).map_err(|error| format!("reading from {endpoint}: {error}"))?;
    let (head, body) = response.split_once("\r\n\r\n").ok_or("malformed HTTP response")?;
    let status = head.split_whitespace().nth(1).and_then(|code| code.parse().ok()).ok_or("malformed HTTP status")?;
    Ok((status, body.to_string()))
}

/// Fetches `path` from the HTTP endpoint `endpoint` (the status page is small).
fn http_get(endpoint: &str, path: &str) -> Result<String, String> {
    match http_request(endpoint, "GET", path, "")? {
        (200, body) => Ok(body),
        (status, _) => Err(format!("{endpoint} answered {status}")),
    }
}

/// Starts a layout change through the node at `endpoint` and says what it answered.
fn cluster_change(endpoint: &str, change: serde_json::Value) -> Result<(), String> {
    let (status, body) = http_request(endpoint, "POST", onggi_api::CLUSTER_LAYOUT_PATH, &change.to_string())?;
    let answer: serde_json::Value =
        serde_json::from_str(&body).map_err(|error| format!("malformed answer ({status}): {error}"))?;
    if status != 200 {
        return Err(answer["error"].as_str().unwrap_or("the change was refused").to_string());
    }
    println!(
        "layout change started (epoch {}): {} partitions move; follow it with `onggi cluster status --endpoint {endpoint}`",
        answer["epoch"], answer["moved_partitions"]
    );
    Ok(())
}

fn cluster_status(endpoint: &str, json: bool) -> Result<(), String> {
    let body = http_get(endpoint, onggi_api::CLUSTER_STATUS_PATH)?;
    let status: serde_json::Value =
        serde_json::from_str(&body).map_err(|error| format!("malformed status: {error}"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status).map_err(|error| error.to_string())?);
        return Ok(());
    }
    print!("{}", onggi_node::cluster::render_status(&status));
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Cluster(command) => {
            let (name, result) = match command {
                ClusterCommand::Status { endpoint, json } => ("status", cluster_status(&endpoint, json)),
                ClusterCommand::Join { endpoint, node_id, address, zone } => (
                    "join",
                    cluster_change(
                        &endpoint,
                        serde_json::json!({"join": [{"id": node_id, "address": address, "zone": zone}]}),
                    ),
                ),
                ClusterCommand::Decommission { endpoint, node_id } => {
                    ("decommission", cluster_change(&endpoint, serde_json::json!({"decommission": [node_id]})))
                }
                ClusterCommand::Remove { endpoint, node_id } => {
                    ("remove", cluster_change(&endpoint, serde_json::json!({"remove": [node_id]})))
                }
                ClusterCommand::Replace { endpoint, dead, node_id, address, zone } => (
                    "replace",
                    cluster_change(
                        &endpoint,
                        serde_json::json!({
                            "join": [{"id": node_id, "address": address, "zone": zone}],
                            "decommission": [dead]
                        }),
                    ),
                ),
            };
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(message) => {
                    eprintln!("onggi cluster {name}: {message}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Bench(args) => bench(args),
        Command::Dev(args) => {
            init_logging(LogFormat::Text);
            match dev(args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(message) => {
                    eprintln!("onggi dev: {message}");
                    ExitCode::FAILURE
                }
            }
        }
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

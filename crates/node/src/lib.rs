//! One onggi node: the [`Backend`](onggi_model::ops::Backend) that executes DynamoDB operations.
//!
//! This is the only crate where time, disk and network meet. It owns:
//! - the data directory ([`datadir`]) and the storage engine opened inside it;
//! - the table catalog ([`catalog`]): table schemas in a system tree, cached in memory;
//! - the item path ([`items`]): validate, lock the item, read its current record, evaluate the
//!   pure condition/update functions of `onggi_model::expr`, write the new record durably, answer;
//! - on a multi-node cluster ([`cluster`]): the replica and coordinator sides of per-item
//!   consensus, anti-entropy, and the table changes sent between members.
//!
//! **Architecture invariant:** an item write is acknowledged only after the storage engine reports
//! it durable (`Durability::Sync`, group-committed); a request that fails validation or its
//! condition writes nothing.
//!
//! Single-item atomicity on one node comes from per-item lock stripes held across read, evaluate
//! and durable write. On a cluster this step is per-item consensus among the replicas
//! (`Node::execute` chooses); the evaluation functions are the same pure functions.

mod backfill;
mod batch;
mod capacity;
pub mod catalog;
pub mod cluster;
pub mod datadir;
mod describe;
mod expressions;
mod indexing;
mod items;
mod meta;
mod reads;
mod registry;
mod restart;
mod tables;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use onggi_core::hlc::{Clock, Timestamp};
use onggi_core::layout::NodeId;
use onggi_core::paxos::Ballot;
use onggi_core::rng::Rng;
use onggi_storage::{Engine, FjallEngine, FjallOptions, MemoryEngine, Tree};

use crate::catalog::Catalog;
use crate::datadir::DataDir;

/// How a node stores its data.
#[derive(Clone)]
pub enum StorageChoice {
    /// The embedded engine (fjall) in a data directory: durable.
    Disk(PathBuf),
    /// Memory only: for tests and the simulator; everything is lost when the node stops.
    Memory,
    /// A given engine: for tests and the simulator, which wrap engines to delay or fail commits.
    Engine(Arc<dyn Engine>),
}

/// A node's configuration.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Where data lives.
    pub storage: StorageChoice,
    /// The region named in ARNs when a request's credential scope names none.
    pub default_region: String,
}

/// Shared state of a node.
pub(crate) struct Inner {
    pub(crate) engine: Arc<dyn Engine>,
    pub(crate) catalog: Catalog,
    clock: Mutex<Clock>,
    /// This node's id in the cluster, the tie-breaker of its version stamps (0 on a single node).
    pub(crate) node_id: AtomicU64,
    /// The cluster this node is part of, once started.
    pub(crate) cluster: OnceLock<Arc<cluster::Cluster>>,
    /// Randomness for back-off, seeded from the operating system.
    rng: Mutex<Rng>,
    pub(crate) locks: items::LockStripes,
    pub(crate) default_region: String,
    /// Node-wide state kept across restarts (`restart.rs`).
    pub(crate) node_tree: Tree,
    /// The statistics' recount at start (`restart.rs`).
    recounting: restart::Recounting,
    _data_dir: Option<DataDir>,
}

/// One onggi node. Cheap to clone (shared state behind an `Arc`).
#[derive(Clone)]
pub struct Node {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for StorageChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StorageChoice::Disk(path) => f.debug_tuple("Disk").field(path).finish(),
            StorageChoice::Memory => f.write_str("Memory"),
            StorageChoice::Engine(_) => f.write_str("Engine(..)"),
        }
    }
}

impl Node {
    /// Opens a node: locks and checks the data directory, opens storage, loads the catalog.
    pub fn open(config: NodeConfig) -> Result<Node, String> {
        let (engine, data_dir): (Arc<dyn Engine>, Option<DataDir>) = match &config.storage {
            StorageChoice::Disk(path) => {
                let data_dir = DataDir::open(path)?;
                let engine_path = path.join("engine");
                let engine = FjallEngine::open(&engine_path, FjallOptions::default())
                    .map_err(|error| format!("cannot open storage in {}: {error}", engine_path.display()))?;
                (Arc::new(engine), Some(data_dir))
            }
            StorageChoice::Memory => (Arc::new(MemoryEngine::new()), None),
            StorageChoice::Engine(engine) => (engine.clone(), None),
        };
        let catalog =
            Catalog::load(engine.clone()).map_err(|error| format!("cannot load the table catalog: {error}"))?;
        let orphans =
            catalog.drop_orphan_trees().map_err(|error| format!("cannot clean up dropped tables: {error}"))?;
        if orphans > 0 {
            tracing::info!(orphans, "removed the data of tables deleted before the last stop");
        }
        // Versions written from now on must order after every version already stored, even if
        // the wall clock stepped back while the node was down: the clock starts past its last
        // mark, and the recount moves it past every version it reads (`restart.rs`).
        let node_tree =
            engine.open_tree(restart::NODE_TREE).map_err(|error| format!("cannot open node state: {error}"))?;
        let mut clock = Clock::new();
        clock.observe(restart::clock_floor(&*engine, &node_tree)?, wall_clock_ms());
        let recounts = catalog.take_recounts();
        let node = Node {
            inner: Arc::new(Inner {
                engine,
                catalog,
                clock: Mutex::new(clock),
                node_id: AtomicU64::new(0),
                cluster: OnceLock::new(),
                rng: Mutex::new(Rng::new(os_seed())),
                locks: items::LockStripes::new(),
                default_region: config.default_region,
                node_tree,
                recounting: restart::Recounting::default(),
                _data_dir: data_dir,
            }),
        };
        node.spawn_recount(recounts);
        Ok(node)
    }

    /// Makes everything written so far durable, with a last clock mark. Called at shutdown.
    pub fn flush(&self) -> Result<(), String> {
        self.write_clock_mark()?;
        self.inner.engine.flush().map_err(|error| error.to_string())
    }
}

impl Inner {
    /// A fresh version stamp for a local write: a hybrid-logical-clock time and this node.
    pub(crate) fn version(&self) -> Ballot {
        let mut clock = self.clock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Ballot { time: clock.now(wall_clock_ms()), node: NodeId(self.node_id.load(Ordering::Relaxed)) }
    }

    /// Moves the clock past a time seen from another node, so later stamps order after it.
    pub(crate) fn observe(&self, remote: Timestamp) {
        let mut clock = self.clock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        clock.observe(remote, wall_clock_ms());
    }

    /// A random number below `bound` (> 0).
    pub(crate) fn random_below(&self, bound: u64) -> u64 {
        self.rng.lock().unwrap_or_else(std::sync::PoisonError::into_inner).below(bound)
    }
}

/// A seed from the operating system's randomness (via the standard library's hash keys).
fn os_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(wall_clock_ms());
    hasher.finish()
}

/// Milliseconds since the Unix epoch, from the system clock.
pub(crate) fn wall_clock_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_millis() as u64)
}

//! What a node does so that a restart is fast whatever it stores: a clock mark, and statistics
//! recounted in the background.
//!
//! **The clock mark.** Versions a node writes must order after every version it stored before,
//! even when the wall clock stepped back while it was down. A node used to find its newest
//! version by reading every record at start (2.6 s for a million items of 1 KB). It now keeps
//! a *clock mark* in its `node` tree: a reading of its hybrid-logical clock, written every
//! [`MARK_INTERVAL`] (without an fsync: a process crash keeps it, and after a power loss the
//! recount below still corrects the clock) and at shutdown. A restarted node's clock starts
//! [`MARK_MARGIN_MS`] past the mark — later than any version written between the last mark and
//! the stop — and the background recount then moves it past the newest version it reads, which
//! also covers a data directory from before marks existed.
//!
//! **The recount** (`crate::catalog::Recount`): every table's and index's statistics are counted
//! from a snapshot taken at load, on a thread of their own, while the node serves; DescribeTable,
//! the cluster's counts and `onggi cluster status` wait for it ([`Node::recounted`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use onggi_core::hlc::Timestamp;
use onggi_storage::{Durability, Engine, Tree, WriteBatch};

use crate::catalog::Recount;
use crate::{Inner, Node};

/// The tree of node-wide state kept across restarts.
pub(crate) const NODE_TREE: &str = "node";
/// The clock mark's key in [`NODE_TREE`]: `[format 1][HLC time u64 BE]`.
const CLOCK_MARK_KEY: &[u8] = b"clock";
const CLOCK_MARK_FORMAT: u8 = 1;
/// How often the clock mark is written.
const MARK_INTERVAL: Duration = Duration::from_millis(1_000);
/// How far past the last mark a restarted node's clock starts: above [`MARK_INTERVAL`], the
/// longest a node writes versions after a mark without writing the next.
const MARK_MARGIN_MS: u64 = 2_000;

const _: () = assert!(MARK_MARGIN_MS > MARK_INTERVAL.as_millis() as u64);

/// Whether the recount ended, and who waits for it.
#[derive(Default)]
pub(crate) struct Recounting {
    done: AtomicBool,
    ended: tokio::sync::Notify,
}

/// The time a restarted node's clock starts after, from its stored mark (zero without one).
pub(crate) fn clock_floor(engine: &dyn Engine, tree: &Tree) -> Result<Timestamp, String> {
    let Some(bytes) = engine.get(tree, CLOCK_MARK_KEY).map_err(|error| error.to_string())? else {
        return Ok(Timestamp::ZERO);
    };
    match bytes.as_slice() {
        [CLOCK_MARK_FORMAT, time @ ..] if time.len() == 8 => {
            let mark = Timestamp(u64::from_be_bytes(time.try_into().expect("8 bytes")));
            Ok(Timestamp::new(mark.physical_ms().saturating_add(MARK_MARGIN_MS), 0))
        }
        _ => Err(format!("the clock mark has an unknown format ({} bytes)", bytes.len())),
    }
}

impl Node {
    /// Runs the catalog's recounts on a thread of their own; the clock then moves past the
    /// newest version they read.
    pub(crate) fn spawn_recount(&self, recounts: Vec<Recount>) {
        let inner = self.inner.clone();
        let run = move || {
            let started = std::time::Instant::now();
            let tables = recounts.len();
            for recount in recounts {
                match recount.run() {
                    Ok(newest) => inner.observe(newest),
                    // A tree dropped meanwhile (its table deleted), or a record this build cannot
                    // read: the statistics stay as the writes since the start made them.
                    Err(error) => tracing::warn!(%error, "statistics not recounted"),
                }
            }
            inner.recounting.done.store(true, Ordering::Release);
            inner.recounting.ended.notify_waiters();
            tracing::debug!(trees = tables, ms = started.elapsed().as_millis() as u64, "statistics recounted");
        };
        if let Err(error) = std::thread::Builder::new().name("onggi-recount".into()).spawn(run) {
            tracing::error!(%error, "cannot start the recount thread; statistics count writes since the start only");
            self.inner.recounting.done.store(true, Ordering::Release);
        }
    }

    /// Waits until the statistics counted at start are in.
    pub(crate) async fn recounted(&self) {
        let recounting = &self.inner.recounting;
        loop {
            let ended = recounting.ended.notified();
            if recounting.done.load(Ordering::Acquire) {
                return;
            }
            ended.await;
        }
    }

    /// Writes the clock mark every [`MARK_INTERVAL`] while the node lives.
    pub(crate) fn spawn_clock_marks(&self) {
        let node = std::sync::Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(MARK_INTERVAL).await;
                let Some(inner) = node.upgrade() else { return };
                if let Err(error) = write_mark(&inner, Durability::Buffered) {
                    tracing::warn!(%error, "clock mark not written");
                }
            }
        });
    }

    /// Writes the clock mark durably (at shutdown).
    pub(crate) fn write_clock_mark(&self) -> Result<(), String> {
        write_mark(&self.inner, Durability::Sync)
    }
}

/// Writes the clock's current reading as the mark (the commit completes on the engine's own
/// time; a failure is logged there).
fn write_mark(inner: &Inner, durability: Durability) -> Result<(), String> {
    let now = inner.version().time;
    let mut value = vec![CLOCK_MARK_FORMAT];
    value.extend_from_slice(&now.0.to_be_bytes());
    let mut batch = WriteBatch::new();
    batch.put(&inner.node_tree, CLOCK_MARK_KEY.to_vec(), value);
    let (sender, receiver) = std::sync::mpsc::channel();
    inner.engine.commit(
        batch,
        durability,
        Box::new(move |result| {
            let _ = sender.send(result);
        }),
    );
    match durability {
        // At shutdown: wait, the process is about to end.
        Durability::Sync => receiver.recv().map_err(|error| error.to_string())?.map_err(|error| error.to_string()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NodeConfig, StorageChoice, wall_clock_ms};
    use onggi_model::ops::{Backend, DeleteItemInput, PutItemInput, RequestContext, TableNameInput};
    use onggi_model::table::CreateTableInput;
    use serde_json::json;

    fn input<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
        serde_json::from_value(value).unwrap()
    }

    async fn put(node: &Node, pk: u32, size: usize) {
        let item = json!({"TableName": "counted", "Item": {"pk": {"S": pk.to_string()}, "v": {"S": "x".repeat(size)}}});
        node.put_item(&RequestContext::default(), input::<PutItemInput>(item)).await.unwrap();
    }

    /// The recount runs while the node serves: writes made before it ends (overwrites, new
    /// items, deletes) and the snapshot it counts add up to the exact statistics.
    #[tokio::test]
    async fn statistics_recounted_while_writes_go_on_are_exact() {
        let engine: std::sync::Arc<dyn Engine> = std::sync::Arc::new(onggi_storage::MemoryEngine::new());
        let config = NodeConfig { storage: StorageChoice::Engine(engine.clone()), default_region: "us-east-1".into() };
        let node = Node::open(config.clone()).unwrap();
        let create = json!({
            "TableName": "counted", "BillingMode": "PAY_PER_REQUEST",
            "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}]
        });
        node.create_table(&RequestContext::default(), input::<CreateTableInput>(create)).await.unwrap();
        for pk in 0..2_000 {
            put(&node, pk, 10).await;
        }
        drop(node);
        let node = Node::open(config).unwrap();
        // Overwrites with a larger value, new items and deletes, racing the recount.
        for pk in 1_900..2_100 {
            put(&node, pk, 20).await;
        }
        for pk in 0..50 {
            let key = json!({"TableName": "counted", "Key": {"pk": {"S": pk.to_string()}}});
            node.delete_item(&RequestContext::default(), input::<DeleteItemInput>(key)).await.unwrap();
        }
        let described = node
            .describe_table(&RequestContext::default(), input::<TableNameInput>(json!({"TableName": "counted"})))
            .await
            .unwrap();
        let table = described.table;
        assert_eq!(table.item_count, 2_100 - 50);
        // Each item: "pk" (2) + its digits, "v" (1) + its value.
        let digits = |pk: u32| pk.to_string().len() as u64;
        let expected: u64 = (50..2_100).map(|pk| 2 + digits(pk) + 1 + if pk >= 1_900 { 20 } else { 10 }).sum();
        assert_eq!(table.table_size_bytes, expected);
    }

    #[tokio::test]
    async fn a_restarted_clock_starts_past_the_mark() {
        let engine: std::sync::Arc<dyn Engine> = std::sync::Arc::new(onggi_storage::MemoryEngine::new());
        let config = NodeConfig { storage: StorageChoice::Engine(engine.clone()), default_region: "us-east-1".into() };
        let node = Node::open(config.clone()).unwrap();
        node.recounted().await;
        // A clock far ahead of the wall clock (it observed a peer's), then a mark.
        let ahead = Timestamp::new(wall_clock_ms() + 3_600_000, 0);
        node.inner.observe(ahead);
        node.write_clock_mark().unwrap();
        drop(node);
        let node = Node::open(config).unwrap();
        assert!(node.inner.version().time > Timestamp::new(ahead.physical_ms() + MARK_MARGIN_MS, 0));
        let tree = engine.open_tree(NODE_TREE).unwrap();
        assert!(clock_floor(&*engine, &tree).unwrap() > ahead);
        let mut batch = WriteBatch::new();
        batch.put(&tree, CLOCK_MARK_KEY.to_vec(), vec![9, 1]);
        onggi_storage::commit_async(&*engine, batch, Durability::Sync).await.unwrap();
        assert!(clock_floor(&*engine, &tree).is_err());
    }
}

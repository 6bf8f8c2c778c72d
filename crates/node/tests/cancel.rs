//! A request cancelled mid-write (its client disconnected) must not break per-item atomicity:
//! the item stays locked until the write it started is durable.

use std::ops::Bound;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use onggi_model::ErrorKind;
use onggi_model::ops::{Backend, PutItemInput, RequestContext, UpdateItemInput};
use onggi_model::table::CreateTableInput;
use onggi_node::{Node, NodeConfig, StorageChoice};
use onggi_storage::{BoxIter, Completion, Direction, Durability, Engine, MemoryEngine, StorageError, Tree, WriteBatch};
use serde_json::json;

/// A memory engine whose commits can be held back, as a slow fsync would hold them.
struct HoldingEngine {
    inner: MemoryEngine,
    hold: Mutex<bool>,
    held: Mutex<Vec<(WriteBatch, Durability, Completion)>>,
}

impl HoldingEngine {
    fn release(&self) {
        for (batch, durability, on_done) in self.held.lock().unwrap().drain(..) {
            self.inner.commit(batch, durability, on_done);
        }
    }
}

impl Engine for HoldingEngine {
    fn open_tree(&self, name: &str) -> Result<Tree, StorageError> {
        self.inner.open_tree(name)
    }
    fn drop_tree(&self, name: &str) -> Result<(), StorageError> {
        self.inner.drop_tree(name)
    }
    fn list_trees(&self) -> Result<Vec<String>, StorageError> {
        self.inner.list_trees()
    }
    fn get(&self, tree: &Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.inner.get(tree, key)
    }
    fn range(
        &self,
        tree: &Tree,
        lower: Bound<Vec<u8>>,
        upper: Bound<Vec<u8>>,
        direction: Direction,
    ) -> Result<BoxIter, StorageError> {
        self.inner.range(tree, lower, upper, direction)
    }
    fn commit(&self, batch: WriteBatch, durability: Durability, on_done: Completion) {
        if *self.hold.lock().unwrap() {
            self.held.lock().unwrap().push((batch, durability, on_done));
        } else {
            self.inner.commit(batch, durability, on_done);
        }
    }
    fn flush(&self) -> Result<(), StorageError> {
        self.inner.flush()
    }
}

fn input<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).unwrap()
}

fn bump_from(version: &str) -> UpdateItemInput {
    input(json!({
        "TableName": "cancel_t", "Key": {"pk": {"S": "a"}},
        "UpdateExpression": "SET v = :next", "ConditionExpression": "v = :seen",
        "ExpressionAttributeValues": {":seen": {"N": version}, ":next": {"N": "1"}}
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_write_keeps_its_item_locked_until_durable() {
    let engine =
        Arc::new(HoldingEngine { inner: MemoryEngine::new(), hold: Mutex::new(false), held: Mutex::new(Vec::new()) });
    let node =
        Node::open(NodeConfig { storage: StorageChoice::Engine(engine.clone()), default_region: "us-east-1".into() })
            .unwrap();
    let context = RequestContext::default();
    node.create_table(
        &context,
        input::<CreateTableInput>(json!({
            "TableName": "cancel_t", "BillingMode": "PAY_PER_REQUEST",
            "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}]
        })),
    )
    .await
    .unwrap();
    node.put_item(
        &context,
        input::<PutItemInput>(json!({"TableName": "cancel_t", "Item": {"pk": {"S": "a"}, "v": {"N": "0"}}})),
    )
    .await
    .unwrap();

    // First writer: its commit is held (a slow disk), then its request is cancelled.
    *engine.hold.lock().unwrap() = true;
    let first = tokio::spawn({
        let node = node.clone();
        async move { node.update_item(&RequestContext::default(), bump_from("0")).await }
    });
    for _ in 0..200 {
        if !engine.held.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(engine.held.lock().unwrap().len(), 1, "the first write reached storage");
    first.abort();
    let _ = first.await;

    // Second writer with the same expectation: it must wait for the first write, then see it.
    *engine.hold.lock().unwrap() = false;
    let second = tokio::spawn({
        let node = node.clone();
        async move { node.update_item(&RequestContext::default(), bump_from("0")).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!second.is_finished(), "the item stays locked while the cancelled write is in flight");
    engine.release();
    let outcome = tokio::time::timeout(Duration::from_secs(10), second).await.unwrap().unwrap();
    assert_eq!(outcome.unwrap_err().kind, ErrorKind::ConditionalCheckFailed);
}

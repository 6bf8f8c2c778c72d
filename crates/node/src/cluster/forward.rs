//! Writes run on their item's home coordinator: the first replica in the item's preference list
//! that this node does not pass over.
//!
//! Any node may coordinate any write (that never changes), but when the nodes a client spreads
//! its writes over each coordinate writes of one item, they duel: each one's prepare breaks the
//! promise the other's lease holds (`leases.rs`), its accept is refused, and it retries after a
//! random pause. Under YCSB's zipfian keys on three nodes, about one update in seven a node
//! coordinated started again because of another coordinator. The Dynamo paper does what this
//! module does (DeCandia et al., §4.4: a write is coordinated by one of the top nodes of its key's
//! preference list; a node that receives one for a key it is not among forwards it): a node that
//! receives a PutItem, UpdateItem or DeleteItem (or a write of a BatchWriteItem) whose item has
//! another home hands the request to it (`wire::tag::FORWARD`). The home runs it as if a client
//! had sent it there, one operation per item at a time, from the lease the last one left.
//!
//! **The answer carries the commit.** When the sender is one of the item's replicas, the home
//! sends it no commit: the chosen version travels in the answer, and the sender commits it
//! before answering its client, so the client reads its write back through the node it wrote
//! through (and one message pair per write is saved). When the sender holds no replica (a
//! cluster larger than N), the home answers once its commits have landed (at most
//! [`super::SENT_COMMITS_WAIT_MAX`]), for the same reason.
//!
//! **Once, whoever runs it.** A home may be paused, cut off or killed with writes handed to it,
//! and then only it knows whether it started them. So every forwarded write carries a *mark*, a
//! ballot its sender mints from its clock and never proposes with (so no proposal has it), and
//! whoever applies the write adds the mark to the item's lineage, the list of recent writers
//! each version carries (`onggi_core::paxos::Lineage`). Before applying it, a coordinator looks
//! for the mark in the item's current value, as learned by the round that will choose the write:
//! present, the write was applied and is not applied again; certainly absent (the lineage reaches
//! back past it), it is applied; past the lineage's reach (over 64 writes or a minute since), the
//! outcome cannot be told and the write ends as DynamoDB ends a write that may or may not have
//! been applied (InternalServerError). Per-item consensus makes the look and the write one step:
//! two coordinators running the same marked write cannot both find the mark absent and both be
//! chosen. With that, the sender may run the write itself whenever its home fails it: when it
//! could not be sent, when the home answers that it arrived past its start-by time (a home
//! receiving a write after [`START_WINDOW`] does not start it), when the connection drops, and
//! when no answer came within [`TAKEOVER_AFTER`]. A home heard from less recently than [`FRESH`]
//! is not handed writes at all, and one that failed is passed over for a second.
//!
//! What is forwarded: client writes of PutItem, UpdateItem and DeleteItem, and the puts and
//! deletes of BatchWriteItem. Not forwarded: strict reads (one round trip of reads that promise
//! nothing), Time to Live deletions (each node's expirer coordinates its own), and the registry's
//! table changes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use onggi_core::layout::NodeId;
use onggi_core::paxos::{Ballot, Version};
use onggi_model::ops::{DeleteItemInput, PutItemInput, UpdateItemInput, WriteItemOutput};
use onggi_model::value::item_from_json;
use onggi_model::{DynamoError, ErrorKind};
use serde::Serialize;

use super::Cluster;
use super::wire::{self, ForwardReply, Forwarded, ForwardedError, Value, WriteKind};
use crate::catalog::TableHandle;
use crate::items::Route;
use crate::{Node, wall_clock_ms};

/// How long after sending a forwarded write its home may still start it.
const START_WINDOW: Duration = Duration::from_secs(1);
/// How long the sender waits for a forwarded write's answer before it runs the write itself.
const TAKEOVER_AFTER: Duration = Duration::from_secs(1);
/// Writes are handed only to a home heard from this recently (an answer, a ping's pong): a home
/// cut off or paused since is not handed the writes that follow, which would wait for it.
const FRESH: Duration = Duration::from_millis(250);
/// A home that could not be handed a write, or answered that it started it too late, is passed
/// over for this long. (A slow home is not: handing its writes elsewhere would only make them
/// duel with the ones it runs.)
const FAILED_HOME_AVOIDED_FOR: Duration = Duration::from_secs(1);

/// Homes recently passed over, with until when.
#[derive(Default)]
pub(super) struct Homes {
    failed: Mutex<std::collections::BTreeMap<NodeId, Instant>>,
}

impl Homes {
    fn failed(&self, node: NodeId) {
        let until = Instant::now() + FAILED_HOME_AVOIDED_FOR;
        self.failed.lock().unwrap_or_else(PoisonError::into_inner).insert(node, until);
    }

    fn passed_over(&self, node: NodeId) -> bool {
        let mut failed = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
        match failed.get(&node) {
            Some(&until) if until > Instant::now() => true,
            Some(_) => {
                failed.remove(&node);
                false
            }
            None => false,
        }
    }
}

tokio::task_local! {
    /// Set while this node runs a marked write: one forwarded to it, or one it forwarded and now
    /// runs itself (see the module docs).
    static MARKED: Marked;
}

/// A marked write this node runs.
struct Marked {
    table_id: String,
    key: Vec<u8>,
    mark: Ballot,
    /// The sender, when this node runs the write as its home and the sender is one of the item's
    /// replicas: its commit goes in the answer.
    origin: Option<NodeId>,
    /// The version the write chose, kept for the answer.
    chosen: Mutex<Option<Version<Value>>>,
    /// Set when the write was found applied already.
    applied_before: AtomicBool,
}

/// What the item `(table_id, key)`'s coordinator does about the mark of the write it runs, if
/// it runs a marked one, given the item's current value (`Node::execute_replicated`).
pub(super) enum MarkCheck {
    /// No mark (not a marked write, or another item — a registry read on the way, say).
    Unmarked,
    /// Not applied yet: apply it, adding this mark to the lineage.
    Apply(Ballot),
    /// Applied already: do not apply it again.
    AppliedBefore,
    /// The lineage no longer reaches back to the mark.
    Unknown,
}

pub(super) fn check_mark(table_id: &str, key: &[u8], current: &Value) -> MarkCheck {
    MARKED
        .try_with(|marked| {
            if marked.table_id != table_id || marked.key != key {
                return MarkCheck::Unmarked;
            }
            match current.lineage.written_by(marked.mark) {
                Some(false) => MarkCheck::Apply(marked.mark),
                Some(true) => {
                    marked.applied_before.store(true, Ordering::Relaxed);
                    MarkCheck::AppliedBefore
                }
                None => MarkCheck::Unknown,
            }
        })
        .unwrap_or(MarkCheck::Unmarked)
}

/// The answer of a marked write found applied already (see [`MarkCheck::AppliedBefore`]): an
/// error the write's runner replaces (`Node::run_marked`).
pub(super) fn applied_before() -> DynamoError {
    DynamoError::internal("the write was applied already")
}

/// When the task runs, as the item's home, a forwarded write of the item `(table_id, key)` whose
/// sender is one of its replicas: keeps `chosen` for the answer and returns the sender, which the
/// caller then sends no commit (`Node::spread_commit`).
pub(super) fn divert_commit(table_id: &str, key: &[u8], chosen: &Version<Value>) -> Option<NodeId> {
    MARKED
        .try_with(|marked| {
            let origin = marked.origin?;
            if marked.table_id != table_id || marked.key != key {
                return None;
            }
            *marked.chosen.lock().unwrap_or_else(PoisonError::into_inner) = Some(chosen.clone());
            Some(origin)
        })
        .ok()
        .flatten()
}

/// How a marked write ended.
struct MarkedRun {
    answer: Result<WriteItemOutput, DynamoError>,
    /// The version it chose (when run as the home for a sender that replicates the item).
    chosen: Option<Version<Value>>,
    applied_before: bool,
}

/// The write `kind` of the request JSON `input`, run here. (Boxed: the write paths it calls are
/// the ones that forward, though never from here.)
fn run_here<'a>(
    node: &'a Node,
    kind: WriteKind,
    input: &'a [u8],
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<WriteItemOutput, DynamoError>> + Send + 'a>> {
    Box::pin(run_here_unboxed(node, kind, input))
}

async fn run_here_unboxed(node: &Node, kind: WriteKind, input: &[u8]) -> Result<WriteItemOutput, DynamoError> {
    let malformed =
        |error: serde_json::Error| DynamoError::internal(format!("a forwarded write is malformed: {error}"));
    match kind {
        WriteKind::Put => {
            let input: PutItemInput = serde_json::from_slice(input).map_err(malformed)?;
            node.put_item_routed(input, Route::Here).await
        }
        WriteKind::Update => {
            let input: UpdateItemInput = serde_json::from_slice(input).map_err(malformed)?;
            node.update_item_routed(input, Route::Here).await
        }
        WriteKind::Delete => {
            let input: DeleteItemInput = serde_json::from_slice(input).map_err(malformed)?;
            node.delete_item_routed(input, Route::Here).await
        }
    }
}

fn error_to_wire(error: &DynamoError) -> ForwardedError {
    ForwardedError {
        type_name: error.kind.type_name().to_string(),
        message: error.message.clone(),
        item: error.item.as_ref().and_then(|item| serde_json::to_vec(item).ok()),
    }
}

fn error_from_wire(error: ForwardedError) -> DynamoError {
    let kind = ErrorKind::from_type_name(&error.type_name).unwrap_or(ErrorKind::InternalServer);
    let mut answer = DynamoError::new(kind, error.message);
    answer.item = error
        .item
        .and_then(|bytes| serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&bytes).ok())
        .and_then(|json| item_from_json(&json).ok());
    answer
}

/// A write's output as the home encoded it (the JSON of the DynamoDB response).
fn output_from_wire(bytes: &[u8]) -> Result<WriteItemOutput, DynamoError> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Output {
        attributes: Option<serde_json::Map<String, serde_json::Value>>,
        consumed_capacity: Option<onggi_model::ops::ConsumedCapacity>,
    }
    let output: Output = serde_json::from_slice(bytes)
        .map_err(|error| DynamoError::internal(format!("a forwarded write's answer is malformed: {error}")))?;
    let attributes = output.attributes.as_ref().map(item_from_json).transpose()?;
    Ok(WriteItemOutput { attributes, consumed_capacity: output.consumed_capacity })
}

impl Node {
    /// Runs the write `kind` of the request JSON `input` here, marked with `mark` (for the item
    /// `(table_id, key)`); `origin`: the sender, when this node runs it as the home for a sender
    /// that replicates the item.
    async fn run_marked(&self, forwarded: &Forwarded, origin: Option<NodeId>) -> MarkedRun {
        let marked = Marked {
            table_id: forwarded.table_id.clone(),
            key: forwarded.key.clone(),
            mark: forwarded.mark,
            origin,
            chosen: Mutex::new(None),
            applied_before: AtomicBool::new(false),
        };
        MARKED
            .scope(marked, async {
                let answer = run_here(self, forwarded.kind, &forwarded.input).await;
                MARKED.with(|marked| MarkedRun {
                    answer,
                    chosen: marked.chosen.lock().unwrap_or_else(PoisonError::into_inner).take(),
                    applied_before: marked.applied_before.load(Ordering::Relaxed),
                })
            })
            .await
    }

    /// Runs here a write this node handed to its home and got no answer for (see the module
    /// docs); `returns_values`: the write asked for ReturnValues.
    async fn take_over(&self, forwarded: &Forwarded, returns_values: bool) -> Result<WriteItemOutput, DynamoError> {
        let run = self.run_marked(forwarded, None).await;
        if let Some(cluster) = self.cluster() {
            cluster.consensus_stats.taken_over.fetch_add(1, Ordering::Relaxed);
        }
        if !run.applied_before {
            return run.answer;
        }
        if returns_values {
            return Err(DynamoError::internal(
                "the write was applied by the item's home coordinator, whose answer was lost: its return values \
                 are not known",
            ));
        }
        Ok(WriteItemOutput::default())
    }
}

impl Node {
    /// The node that should run a write of the item at `key`, when it is another one: the first
    /// of the item's replicas this node does not avoid.
    fn home_of(&self, cluster: &Cluster, key: &[u8]) -> Option<(NodeId, SocketAddr)> {
        if !cluster.forwarding.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        for home in cluster.replicas(key) {
            if home == cluster.me {
                return None;
            }
            if cluster.gossip.suspects(home) || cluster.homes.passed_over(home) {
                continue;
            }
            let Some(address) = cluster.address(home) else { continue };
            if cluster.transport.heard_from_within(address, FRESH) {
                return Some((home, address));
            }
        }
        None
    }

    /// Hands a write of the item at `key` of `table` to its home when it has another one, and
    /// returns the answer (the write runs here, marked, if the home fails it: see the module
    /// docs); `None` when this node is the write's home. `input` is the request, as its
    /// operation's DynamoDB JSON; `returns_values`: it asks for ReturnValues.
    pub(crate) async fn forward_write(
        &self,
        table: &TableHandle,
        key: &[u8],
        kind: WriteKind,
        input: &impl Serialize,
        returns_values: bool,
    ) -> Option<Result<WriteItemOutput, DynamoError>> {
        let cluster = self.cluster()?.clone();
        let (home, address) = self.home_of(&cluster, key)?;
        let input = match serde_json::to_vec(input) {
            Ok(input) => input,
            Err(error) => return Some(Err(DynamoError::internal(format!("a write could not be forwarded: {error}")))),
        };
        let forwarded = Forwarded {
            kind,
            start_by_ms: wall_clock_ms() + START_WINDOW.as_millis() as u64,
            mark: self.inner.version(),
            table_id: table.schema.id.clone(),
            key: key.to_vec(),
            input,
        };
        let payload = Bytes::from(wire::encode_forwarded(&forwarded));
        let request = cluster.transport.request(address, wire::tag::FORWARD, payload, TAKEOVER_AFTER);
        let reply = match request.await.map(|bytes| wire::decode_forward_reply(&bytes)) {
            Ok(Ok(ForwardReply::Done { answer, commit })) => {
                cluster.consensus_stats.forwarded.fetch_add(1, Ordering::Relaxed);
                if let Some(commit) = commit
                    && let Err(error) =
                        self.replica(&commit.table_id, commit.key, wire::Request::Commit(commit.version)).await
                {
                    // Anti-entropy brings it; the write itself is chosen and acknowledged.
                    tracing::warn!(%error, "the commit of a forwarded write failed here");
                }
                return Some(answer.map_err(error_from_wire).and_then(|output| output_from_wire(&output)));
            }
            Ok(Ok(ForwardReply::Expired)) => "it arrived after its start-by time".to_string(),
            Ok(Err(error)) => format!("its answer is unreadable: {error}"),
            Err(error) => error.to_string(),
        };
        tracing::debug!(home = home.0, %reply, "a forwarded write runs here");
        cluster.homes.failed(home);
        Some(self.take_over(&forwarded, returns_values).await)
    }

    /// Answers a write forwarded by another node (`wire::tag::FORWARD`): runs it here, marked,
    /// unless its start-by time has passed.
    pub(super) async fn answer_forwarded(&self, payload: &[u8], from: NodeId) -> Result<Vec<u8>, String> {
        let forwarded = wire::decode_forwarded(payload).map_err(|error| error.to_string())?;
        if wall_clock_ms() > forwarded.start_by_ms {
            return Ok(wire::encode_forward_reply(&ForwardReply::Expired));
        }
        let cluster: Arc<Cluster> = self.cluster().ok_or("not part of a cluster")?.clone();
        let sender_replicates = cluster.replicas(&forwarded.key).contains(&from);
        let run = self.run_marked(&forwarded, sender_replicates.then_some(from)).await;
        if !sender_replicates {
            // Its next reads are served by other replicas: let this write's commits land first.
            cluster.sent_commits.settle().await;
        }
        // Applied before: by the sender, which took it over and answered its client itself.
        let answer = if run.applied_before { Ok(WriteItemOutput::default()) } else { run.answer };
        let answer = answer
            .and_then(|output| {
                serde_json::to_vec(&output)
                    .map_err(|error| DynamoError::internal(format!("a write's answer could not be encoded: {error}")))
            })
            .map_err(|error| error_to_wire(&error));
        let commit = run.chosen.map(|version| {
            Box::new(wire::ForwardedCommit { table_id: forwarded.table_id, key: forwarded.key, version })
        });
        Ok(wire::encode_forward_reply(&ForwardReply::Done { answer, commit }))
    }
}

/// An item (or key) as the DynamoDB JSON of a request's member.
fn item_json(item: &onggi_model::Item) -> Option<serde_json::Map<String, serde_json::Value>> {
    match serde_json::to_value(item) {
        Ok(serde_json::Value::Object(item)) => Some(item),
        _ => None,
    }
}

/// The request of a BatchWriteItem put, as a PutItem of it (how it is forwarded).
pub(crate) fn batch_put_input(table: &str, item: &onggi_model::Item, report: Option<&str>) -> PutItemInput {
    PutItemInput {
        table_name: Some(table.to_string()),
        item: item_json(item),
        return_consumed_capacity: report.map(str::to_string),
        ..PutItemInput::default()
    }
}

/// The request of a BatchWriteItem delete, as a DeleteItem of it.
pub(crate) fn batch_delete_input(table: &str, key: &onggi_model::Item, report: Option<&str>) -> DeleteItemInput {
    DeleteItemInput {
        table_name: Some(table.to_string()),
        key: item_json(key),
        return_consumed_capacity: report.map(str::to_string),
        ..DeleteItemInput::default()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::cluster::repair::tests::{input, isolate, put, three_nodes};
    use onggi_model::AttributeValue;
    use onggi_model::ops::{Backend, RequestContext};
    use serde_json::json;

    fn storage_key(pk: &str, sk: u64) -> Vec<u8> {
        onggi_core::keys::item_key(
            &AttributeValue::S(pk.into()),
            Some(&AttributeValue::N(onggi_model::Number::from_i64(sk as i64))),
        )
    }

    /// Partition keys of items whose home (first replica) is node `home`.
    fn homed_at(node: &Node, home: u64, count: usize) -> Vec<String> {
        let cluster = node.cluster().unwrap();
        (0..)
            .map(|i| format!("item-{i}"))
            .filter(|pk| cluster.replicas(&storage_key(pk, 1))[0] == NodeId(home))
            .take(count)
            .collect()
    }

    async fn forwarding_nodes() -> (Vec<Node>, Vec<SocketAddr>) {
        let (nodes, addresses) = three_nodes().await;
        for node in &nodes {
            node.cluster().unwrap().forwarding.store(true, Ordering::Relaxed);
        }
        (nodes, addresses)
    }

    fn forwarded(node: &Node) -> u64 {
        node.cluster().unwrap().consensus_stats.forwarded.load(Ordering::Relaxed)
    }

    fn local_item(node: &Node, pk: &str) -> Option<onggi_model::Item> {
        let table = node.inner.catalog.get("repairs").unwrap();
        node.read_current(&table, &storage_key(pk, 1)).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_run_on_their_home_and_the_sender_holds_them_when_it_answers() {
        let (nodes, _addresses) = forwarding_nodes().await;
        let away = homed_at(&nodes[0], 2, 20);
        for pk in &away {
            put(&nodes[0], pk, 1, "first").await; // also makes node 2 recently heard from
        }
        let before = forwarded(&nodes[0]);
        for pk in &away {
            put(&nodes[0], pk, 1, "second").await;
            // The sender committed the version the home chose before answering.
            let item = local_item(&nodes[0], pk).expect("the sender holds the write");
            assert_eq!(item.get("v"), Some(&AttributeValue::S("second".into())));
        }
        let handed = forwarded(&nodes[0]) - before;
        assert!(handed >= 15, "only {handed} of 20 writes were handed to their home");
        // The home coordinated them from its leases; nobody dueled.
        let home = nodes[1].cluster().unwrap();
        assert!(home.leases.counts().used >= 10, "{:?}", home.leases.counts());
        assert_eq!(home.consensus_stats.contended.load(Ordering::Relaxed), 0);
        // Writes whose home is the receiving node are not handed anywhere.
        let before = forwarded(&nodes[0]);
        for pk in homed_at(&nodes[0], 1, 5) {
            put(&nodes[0], &pk, 1, "here").await;
        }
        assert_eq!(forwarded(&nodes[0]), before);
        for node in &nodes {
            node.cluster().unwrap().transport.shutdown().await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_condition_comes_back_from_the_home_with_the_old_item() {
        let (nodes, _addresses) = forwarding_nodes().await;
        let pk = homed_at(&nodes[0], 3, 1).remove(0);
        put(&nodes[0], &pk, 1, "first").await;
        put(&nodes[0], &pk, 1, "second").await;
        let before = forwarded(&nodes[0]);
        let update = json!({
            "TableName": "repairs", "Key": {"pk": {"S": pk}, "sk": {"N": "1"}},
            "UpdateExpression": "SET v = :v", "ConditionExpression": "v = :other",
            "ExpressionAttributeValues": {":v": {"S": "third"}, ":other": {"S": "nope"}},
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD", "ReturnConsumedCapacity": "TOTAL"
        });
        let error = nodes[0].update_item(&RequestContext::default(), input(update)).await.unwrap_err();
        assert_eq!(forwarded(&nodes[0]), before + 1, "the update was handed to node 3");
        assert_eq!(error.kind, ErrorKind::ConditionalCheckFailed);
        assert_eq!(error.message, "The conditional request failed");
        let old = error.item.expect("the old item");
        assert_eq!(old.get("v"), Some(&AttributeValue::S("second".into())));
        // A successful one returns what was asked, as if run here.
        let update = json!({
            "TableName": "repairs", "Key": {"pk": {"S": pk}, "sk": {"N": "1"}},
            "UpdateExpression": "SET v = :v", "ReturnValues": "UPDATED_OLD", "ReturnConsumedCapacity": "TOTAL",
            "ExpressionAttributeValues": {":v": {"S": "third"}}
        });
        let output = nodes[0].update_item(&RequestContext::default(), input(update)).await.unwrap();
        assert_eq!(forwarded(&nodes[0]), before + 2);
        assert_eq!(output.attributes.unwrap().get("v"), Some(&AttributeValue::S("second".into())));
        assert_eq!(output.consumed_capacity.unwrap().capacity_units, 1.0);
        for node in &nodes {
            node.cluster().unwrap().transport.shutdown().await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_that_arrives_after_its_start_by_time_is_not_run() {
        let (nodes, _addresses) = forwarding_nodes().await;
        let pk = homed_at(&nodes[0], 2, 1).remove(0);
        let table = nodes[1].inner.catalog.get("repairs").unwrap();
        let put = json!({"TableName": "repairs", "Item": {"pk": {"S": pk}, "sk": {"N": "1"}, "v": {"S": "late"}}});
        let late = Forwarded {
            kind: WriteKind::Put,
            start_by_ms: wall_clock_ms() - 1,
            mark: nodes[0].inner.version(),
            table_id: table.schema.id.clone(),
            key: storage_key(&pk, 1),
            input: serde_json::to_vec(&put).unwrap(),
        };
        let answer = nodes[1].answer_forwarded(&wire::encode_forwarded(&late), NodeId(1)).await.unwrap();
        assert_eq!(wire::decode_forward_reply(&answer), Ok(ForwardReply::Expired));
        assert_eq!(local_item(&nodes[1], &pk), None, "not written");
        let in_time = Forwarded { start_by_ms: wall_clock_ms() + 1_000, ..late };
        let answer = nodes[1].answer_forwarded(&wire::encode_forwarded(&in_time), NodeId(1)).await.unwrap();
        let Ok(ForwardReply::Done { answer: Ok(_), commit: Some(commit) }) = wire::decode_forward_reply(&answer) else {
            panic!("not done");
        };
        assert_eq!((&commit.table_id, &commit.key), (&table.schema.id, &storage_key(&pk, 1)));
        assert_eq!(commit.version.value.item.unwrap().get("v"), Some(&AttributeValue::S("late".into())));
        assert_eq!(local_item(&nodes[0], &pk), None, "node 1 was not sent the commit: it is in the answer");
        for node in &nodes {
            node.cluster().unwrap().transport.shutdown().await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_whose_home_went_silent_runs_where_it_was_sent() {
        let (nodes, addresses) = forwarding_nodes().await;
        let pk = homed_at(&nodes[0], 2, 1).remove(0);
        put(&nodes[0], &pk, 1, "first").await;
        isolate(&nodes, &addresses, 1, true);
        tokio::time::sleep(FRESH + Duration::from_millis(100)).await;
        let before = forwarded(&nodes[0]);
        put(&nodes[0], &pk, 1, "while node 2 is away").await;
        assert_eq!(forwarded(&nodes[0]), before, "not handed to a home not heard from");
        let item = local_item(&nodes[0], &pk).unwrap();
        assert_eq!(item.get("v"), Some(&AttributeValue::S("while node 2 is away".into())));
        isolate(&nodes, &addresses, 1, false);
        for node in &nodes {
            node.cluster().unwrap().transport.shutdown().await;
        }
    }

    /// The counter's value, read strictly through `node`.
    async fn counter(node: &Node, pk: &str) -> Option<u64> {
        let get = json!({"TableName": "repairs", "Key": {"pk": {"S": pk}, "sk": {"N": "1"}}, "ConsistentRead": true});
        let item = node.get_item(&RequestContext::default(), input(get)).await.unwrap().item?;
        match item.get("n") {
            Some(AttributeValue::N(n)) => Some(n.to_string().parse().unwrap()),
            _ => None,
        }
    }

    fn increment(pk: &str) -> serde_json::Value {
        json!({
            "TableName": "repairs", "Key": {"pk": {"S": pk}, "sk": {"N": "1"}},
            "UpdateExpression": "SET n = if_not_exists(n, :zero) + :one",
            "ExpressionAttributeValues": {":zero": {"N": "0"}, ":one": {"N": "1"}}
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_marked_write_run_by_every_node_at_once_is_applied_once() {
        let (nodes, _addresses) = forwarding_nodes().await;
        let table = nodes[0].inner.catalog.get("repairs").unwrap();
        let pk = "counted";
        for round in 1..=12u64 {
            let forwarded = Forwarded {
                kind: WriteKind::Update,
                start_by_ms: wall_clock_ms() + 60_000,
                mark: nodes[(round % 3) as usize].inner.version(),
                table_id: table.schema.id.clone(),
                key: storage_key(pk, 1),
                input: serde_json::to_vec(&increment(pk)).unwrap(),
            };
            // The same write, run by the three nodes at once (a home and two senders taking it over).
            let mut runs = tokio::task::JoinSet::new();
            for node in &nodes {
                let (node, forwarded) = (node.clone(), forwarded.clone());
                runs.spawn(async move { node.run_marked(&forwarded, None).await });
            }
            let mut applied = 0;
            while let Some(run) = runs.join_next().await {
                let run = run.unwrap();
                match (&run.answer, run.applied_before) {
                    (Ok(_), false) => applied += 1,
                    (Err(_), true) => {}
                    // Contention may end a run at its deadline or unsure; never apply twice.
                    (Err(error), false) => assert!(
                        error.kind == ErrorKind::InternalServer || error.kind == ErrorKind::Throttling,
                        "{error:?}"
                    ),
                    (Ok(_), true) => panic!("a run found the write applied and still succeeded"),
                }
            }
            assert!(applied <= 1, "round {round}: applied {applied} times");
            assert_eq!(counter(&nodes[0], pk).await, Some(round), "round {round}");
        }
        for node in &nodes {
            node.cluster().unwrap().transport.shutdown().await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_whose_answer_is_lost_is_taken_over_and_applied_once() {
        let (nodes, addresses) = forwarding_nodes().await;
        let pk = homed_at(&nodes[0], 2, 1).remove(0);
        put(&nodes[0], &pk, 1, "first").await; // node 2 is now recently heard from
        // Node 2's frames to node 1 take two seconds: it runs the write at once (with node 3), but
        // its answer comes too late, and node 1 runs the write itself, finding it applied.
        let slow = nodes[1].cluster().unwrap().transport.faults();
        slow.set_delay(addresses[0], Duration::from_secs(2));
        let output = nodes[0].update_item(&RequestContext::default(), input(increment(&pk))).await.unwrap();
        assert_eq!(output, WriteItemOutput::default());
        let stats = &nodes[0].cluster().unwrap().consensus_stats;
        assert_eq!(stats.taken_over.load(Ordering::Relaxed), 1);
        assert_eq!(counter(&nodes[2], &pk).await, Some(1), "applied once");
        slow.set_delay(addresses[0], Duration::ZERO);
        // Node 1 cannot reach node 2 at all: it runs the write itself, once.
        put(&nodes[0], &pk, 1, "again").await;
        isolate(&nodes, &addresses, 1, true);
        let output = nodes[0].update_item(&RequestContext::default(), input(increment(&pk))).await;
        assert!(output.is_ok(), "{output:?}");
        isolate(&nodes, &addresses, 1, false);
        assert_eq!(counter(&nodes[2], &pk).await, Some(1), "the put reset it; one increment since");
        for node in &nodes {
            node.cluster().unwrap().transport.shutdown().await;
        }
    }
}

//! Query and Scan on a cluster: eventually consistent ones where no node holds every partition,
//! strongly consistent ones always.
//!
//! A range read (`crate::reads`) is one ordered walk of a storage tree. Keys of the table's tree
//! and of its local indexes start with the token of the item's partition key, so the walk crosses
//! partitions in token order, and each stretch of it can be read by any replica of its partition.
//! The coordinator cuts the walk into pieces: from the current position, it picks a replica of
//! the partition there — itself when it is one, otherwise the first reachable replica in the
//! layout's preference order — extends the piece over the following partitions that replica also
//! holds, and asks it for the piece with what is left of the page's `Limit` and 1 MB budget. The
//! pieces' items, counts and bytes add up to the page a single node would have read; a piece that
//! fills the page ends it with its last key as `LastEvaluatedKey`, which — being an ordinary item
//! key — resumes anywhere. A Query reads one partition key, hence one partition and one piece;
//! a Scan (or a parallel-scan segment, a token interval) walks as many partitions as it needs.
//!
//! Such reads are eventually consistent: each piece is one replica's committed data. A
//! ConsistentRead piece is instead read from a majority of the replicas of its stretch of
//! partitions ([`Node::read_piece_strictly`]) and merged by `crate::reads` (`Node::merge_strict`).
//! A replica that does not answer is skipped for the rest of the page; a partition without a
//! reachable replica (a majority, for a consistent read) fails the page with a retryable error.

use std::net::SocketAddr;
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use onggi_core::layout::{NodeId, PartitionId};
use onggi_core::paxos::Quorums;
use onggi_model::{DynamoError, ErrorKind};

use super::{Cluster, wire};
use crate::Node;
use crate::reads::{Page, Piece, StrictEntries};

/// How long a replica may take to read one piece (up to 1 MB of items) and answer.
const PIECE_TIMEOUT: Duration = Duration::from_secs(5);

impl Cluster {
    /// The replica to read from at `partition` (not one of `avoid`; this node first when it is a
    /// replica) and the last partition of the run that starts there and that replica holds.
    fn piece_reader(&self, partition: PartitionId, avoid: &[NodeId]) -> Option<(NodeId, PartitionId)> {
        // During a layout change the old layout's replicas hold everything; new ones catch up.
        let layout = self.layout();
        let replicas = layout.replicas(partition);
        let usable = |node: &&NodeId| !avoid.contains(node);
        let reader = replicas
            .iter()
            .filter(usable)
            .find(|node| **node == self.me)
            .or_else(|| replicas.iter().find(usable))
            .copied()?;
        let mut last = partition;
        while last.0 + 1 < layout.partition_count() && layout.replicas(PartitionId(last.0 + 1)).contains(&reader) {
            last = PartitionId(last.0 + 1);
        }
        Some((reader, last))
    }

    /// The partition a range read from `lower` starts in.
    fn first_partition(&self, lower: &Bound<Vec<u8>>) -> PartitionId {
        match lower {
            Bound::Unbounded => PartitionId(0),
            Bound::Included(key) | Bound::Excluded(key) => self.layout().partition_of_key(key),
        }
    }

    /// Ends `piece` with the run of partitions that ends at `last` (within `upper`, where the
    /// whole read ends); returns the key the read goes on from after it, if any.
    fn end_run(&self, piece: &mut Piece, last: PartitionId, upper: &Bound<Vec<u8>>) -> Option<Vec<u8>> {
        let next = self.key_after(last).filter(|next| reaches(upper, next));
        piece.range.upper = match &next {
            Some(next) => Bound::Excluded(next.clone()),
            None => upper.clone(),
        };
        next
    }

    /// The first storage key after partition `partition`, or `None` for the last partition.
    fn key_after(&self, partition: PartitionId) -> Option<Vec<u8>> {
        let layout = self.layout();
        let next = partition.0 + 1;
        (next < layout.partition_count()).then(|| layout.partition_range(PartitionId(next)).0.to_be_bytes().to_vec())
    }
}

impl Cluster {
    /// The replicas to read from strictly at `partition` — a majority of each of its replica
    /// sets (this node first when it is a replica, then in preference order, none of `avoid`) —
    /// and the last partition of the run from there that they all hold and whose quorums they make.
    fn strict_readers(&self, partition: PartitionId, avoid: &[NodeId]) -> Option<(Vec<NodeId>, PartitionId)> {
        let layout = self.layout();
        let mut readers: Vec<NodeId> = Vec::new();
        for set in layout.sets(partition) {
            let needed = set.len() / 2 + 1;
            let mut have = set.iter().filter(|node| readers.contains(node)).count();
            let mine = set.iter().filter(|node| **node == self.me);
            for node in mine.chain(set.iter().filter(|node| **node != self.me)) {
                if have >= needed {
                    break;
                }
                if !avoid.contains(node) && !readers.contains(node) {
                    readers.push(*node);
                    have += 1;
                }
            }
            if have < needed {
                return None;
            }
        }
        // Every reader must hold every partition of the run (a reader that does not refuses the
        // piece), and together they must still make its quorums.
        let covers = |next: PartitionId| {
            let sets = layout.sets(next);
            readers.iter().all(|reader| sets.iter().any(|set| set.contains(reader)))
                && Quorums::joint(sets).reached(readers.iter().copied())
        };
        let mut last = partition;
        while last.0 + 1 < layout.partition_count() && covers(PartitionId(last.0 + 1)) {
            last = PartitionId(last.0 + 1);
        }
        Some((readers, last))
    }
}

/// Whether `upper` admits some key at or after `key`.
fn reaches(upper: &Bound<Vec<u8>>, key: &[u8]) -> bool {
    match upper {
        Bound::Unbounded => true,
        Bound::Included(upper) => upper.as_slice() >= key,
        Bound::Excluded(upper) => upper.as_slice() > key,
    }
}

impl Node {
    /// Reads the first piece of `piece.range` (see the module docs): locally through `local`
    /// when this node is the chosen replica, else from a peer. Returns the page read and, when
    /// the piece stopped at a partition boundary before the range's end, the key to go on from.
    pub(crate) async fn read_piece_on_replica(
        &self,
        cluster: &Arc<Cluster>,
        mut piece: Piece,
        local: impl Fn(&Piece) -> Result<Page, DynamoError>,
    ) -> Result<(Page, Option<Vec<u8>>), DynamoError> {
        let start = cluster.first_partition(&piece.range.lower);
        let upper = piece.range.upper.clone();
        let mut avoid = Vec::new();
        let mut last_error = String::new();
        loop {
            let Some((reader, last)) = cluster.piece_reader(start, &avoid) else {
                return Err(DynamoError::new(
                    ErrorKind::Throttling,
                    format!("no replica of partition {} of the table answered ({last_error}); retry later", start.0),
                ));
            };
            // Each attempt's run ends where its replica's does, within the range asked for.
            let next = cluster.end_run(&mut piece, last, &upper);
            if reader == cluster.me {
                return Ok((local(&piece)?, next));
            }
            match self.read_piece_remote(cluster, reader, &piece).await {
                Ok(page) => return Ok((page, next)),
                Err(error) => {
                    tracing::debug!(%error, replica = reader.0, "range read piece failed");
                    last_error = error;
                    avoid.push(reader);
                }
            }
        }
    }

    /// Reads the first piece of `piece.range` strictly (see `Node::merge_strict`): from a
    /// majority of the replicas of the partitions it covers, this node's share through `local`.
    /// Returns their answers, the piece they answered (its range cut where their run of
    /// partitions ends) and, when it stopped at a partition boundary before the range's end,
    /// the key to go on from.
    pub(crate) async fn read_piece_strictly(
        &self,
        cluster: &Arc<Cluster>,
        mut piece: Piece,
        local: impl Fn(&Piece) -> Result<StrictEntries, DynamoError>,
    ) -> Result<(Vec<StrictEntries>, Piece, Option<Vec<u8>>), DynamoError> {
        let start = cluster.first_partition(&piece.range.lower);
        let upper = piece.range.upper.clone();
        let mut avoid = Vec::new();
        let mut last_error = String::new();
        loop {
            let Some((readers, last)) = cluster.strict_readers(start, &avoid) else {
                return Err(DynamoError::new(
                    ErrorKind::Throttling,
                    format!(
                        "not enough replicas of partition {} of the table answered for a strongly consistent read \
                         ({last_error}); retry later",
                        start.0
                    ),
                ));
            };
            let next = cluster.end_run(&mut piece, last, &upper);
            let mut reads = tokio::task::JoinSet::new();
            let payload = Bytes::from(wire::encode_piece(&piece));
            for &reader in readers.iter().filter(|&&reader| reader != cluster.me) {
                let (cluster, payload) = (cluster.clone(), payload.clone());
                reads.spawn(async move {
                    let reply = Node::send_encoded_piece(&cluster, reader, wire::tag::STRICT_READ, payload).await;
                    let answer =
                        reply.and_then(|reply| wire::decode_strict_entries(&reply).map_err(|error| error.to_string()));
                    (reader, answer)
                });
            }
            let mut parts = Vec::with_capacity(readers.len());
            if readers.contains(&cluster.me) {
                parts.push(local(&piece)?);
            }
            let mut failed = false;
            while let Some(answer) = reads.join_next().await {
                match answer.map_err(|error| DynamoError::internal(error.to_string()))? {
                    (_, Ok(part)) => parts.push(part),
                    (reader, Err(error)) => {
                        tracing::debug!(%error, replica = reader.0, "strict range read piece failed");
                        last_error = error;
                        avoid.push(reader);
                        failed = true;
                    }
                }
            }
            if !failed {
                return Ok((parts, piece, next));
            }
        }
    }

    /// Sends `piece` to `reader` as message `tag`; its answer.
    async fn send_piece(cluster: &Cluster, reader: NodeId, tag: u16, piece: &Piece) -> Result<Bytes, String> {
        Node::send_encoded_piece(cluster, reader, tag, Bytes::from(wire::encode_piece(piece))).await
    }

    /// Sends an encoded piece to `reader` as message `tag`; its answer.
    async fn send_encoded_piece(cluster: &Cluster, reader: NodeId, tag: u16, payload: Bytes) -> Result<Bytes, String> {
        let address = cluster.address(reader).ok_or("not a member")?;
        cluster.transport.request(address, tag, payload, PIECE_TIMEOUT).await.map_err(|error| error.to_string())
    }

    async fn read_piece_remote(&self, cluster: &Cluster, reader: NodeId, piece: &Piece) -> Result<Page, String> {
        // The client's own writes through this node first reach the reader (`SentCommits`).
        cluster.sent_commits.settle().await;
        let reply = Node::send_piece(cluster, reader, wire::tag::RANGE_READ, piece).await?;
        wire::decode_page(&reply).map_err(|error| error.to_string())
    }

    /// Answers a peer's [`wire::tag::STRICT_READ`].
    pub(super) async fn answer_strict_read(&self, payload: &[u8], sender: SocketAddr) -> Result<Vec<u8>, String> {
        self.answer_piece(payload, sender, Node::read_strict_piece, wire::encode_strict_entries).await
    }

    /// Answers a peer's [`wire::tag::RANGE_READ`].
    pub(super) async fn answer_range_read(&self, payload: &[u8], sender: SocketAddr) -> Result<Vec<u8>, String> {
        self.answer_piece(payload, sender, Node::read_piece, wire::encode_page).await
    }

    /// A peer's piece: decoded, its table learned from the sender if this node does not know it
    /// yet (it joined a moment ago, or missed the creation: catalog sync would bring it within a
    /// second), read by `read` off the async workers (up to 1 MB from storage), and encoded.
    async fn answer_piece<T: Send + 'static>(
        &self,
        payload: &[u8],
        sender: SocketAddr,
        read: fn(&Node, &Piece) -> Result<T, DynamoError>,
        encode: fn(&T) -> Vec<u8>,
    ) -> Result<Vec<u8>, String> {
        let piece = wire::decode_piece(payload).map_err(|error| error.to_string())?;
        if self.inner.catalog.get_by_id(&piece.table_id).is_none()
            && let Err(error) = self.pull_catalog(sender).await
        {
            tracing::debug!(%error, %sender, "the catalog of a reader's sender was not compared");
        }
        let node = self.clone();
        let answer = tokio::task::spawn_blocking(move || read(&node, &piece))
            .await
            .map_err(|error| error.to_string())?
            .map_err(|error| error.message)?;
        Ok(encode(&answer))
    }
}

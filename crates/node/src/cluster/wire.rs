//! The node-to-node messages of the item path, and their binary encoding.
//!
//! Every payload starts with [`WIRE_FORMAT_VERSION`]; an unknown version is refused (the
//! transport's handshake already refuses peers of another cluster protocol, this guards the
//! payloads themselves). Then: the table id (u16 length + UTF-8), the storage key (u32 length +
//! bytes), and the message's own fields. Versions travel as [`Record`]s in their own versioned
//! format (u32 length + bytes), ballots as two big-endian u64 (time, node).
//!
//! Anti-entropy (`super::repair`) has two messages of its own, both requests that name a table id
//! and a partition (u32) instead of an item: a Merkle comparison step ([`tag::MERKLE`]: the
//! initiator's [`merkle::Request`], answered by a [`merkle::Response`]) and a batch of versions in
//! one key interval of that partition ([`tag::RANGE_SYNC`]: a [`RangeSync`], answered by a
//! [`RangeSyncReply`]). Their layouts are on their encoders.

use onggi_core::hlc::Timestamp;
use onggi_core::layout::NodeId;
use onggi_core::membership::{self, Envelope, Member, Message, Status};
use onggi_core::merkle::{self, Digest, Refusal, Shape};
use onggi_core::paxos::{Acceptance, Ballot, Knowledge, Lineage, Lineaged, Promise, Version};
use onggi_core::record::Record;
use onggi_core::tombstones::{AdoptToken, Floors, Prepared};
use std::ops::Bound;

use onggi_model::{Item, codec};
use onggi_storage::Direction;

use super::views::Delivery;
use crate::reads::{Page, Piece, Range, RangeInput, StrictEntries};

/// The payload format version this build writes and reads.
pub const WIRE_FORMAT_VERSION: u8 = 5;

/// Transport tags: what a payload is.
pub mod tag {
    /// A consensus request ([`super::Request`]), answered by a [`super::Reply`].
    pub const CONSENSUS: u16 = 1;
    /// A one-way commit ([`super::Request::Commit`]).
    pub const COMMIT: u16 = 2;
    /// A table created elsewhere: its schema as JSON.
    pub const TABLE_CREATED: u16 = 3;
    /// A table deleted elsewhere: `[id len u16][id]`.
    pub const TABLE_DELETED: u16 = 4;
    /// One step of a Merkle comparison (anti-entropy): [`super::encode_merkle_request`], answered
    /// by [`super::encode_merkle_response`].
    pub const MERKLE: u16 = 5;
    /// Anti-entropy's push-pull of versions in a key interval of one partition:
    /// [`super::encode_range_sync`], answered by [`super::encode_range_sync_reply`]. Sent on the
    /// bulk lane: both ways carry batches of up to a few MiB.
    pub const RANGE_SYNC: u16 = 6;
    /// A liveness probe of `onggi cluster status`: an empty request, answered with an empty
    /// payload.
    pub const STATUS: u16 = 7;
    /// A piece of a Query or Scan read for a coordinator that holds no replica of that part of
    /// the table: [`super::encode_piece`], answered by [`super::encode_page`].
    pub const RANGE_READ: u16 = 8;
    /// A digest of the sender's table catalog (JSON), answered by the descriptions and deletions
    /// it lacks (JSON; see `super::super::catalog_sync`).
    pub const CATALOG_SYNC: u16 = 9;
    /// The sender's topology (JSON, `super::super::topology::TopologyRecord`), answered by the
    /// receiver's after it merged the sender's: layout gossip, and how a node learns a newer
    /// epoch from a peer that told it of one.
    pub const TOPOLOGY: u16 = 10;
    /// A new replica of a moved partition asks an old one for its committed versions there
    /// ([`super::CatchUp`], answered by a [`super::CatchUpReply`]). Bulk lane.
    pub const CATCH_UP: u16 = 11;
    // 12 was a replica's share of a global secondary index read, before global indexes were
    // views placed by their own key (`super::super::views`).
    /// A replica's share of a strongly consistent Query or Scan: [`super::encode_piece`],
    /// answered by [`super::encode_strict_entries`].
    pub const STRICT_READ: u16 = 13;
    /// A table's item counts and sizes on the receiving node: the table's id (as
    /// [`super::encode_table_deleted`]), answered by [`super::encode_table_counts`].
    pub const TABLE_COUNTS: u16 = 14;
    /// A phase of a tombstone-collection round over one partition (`super::super::tombstones`):
    /// [`super::encode_collection`], answered by [`super::encode_collection_reply`].
    pub const TOMBSTONES: u16 = 15;
    /// Membership gossip (`onggi_core::membership`: Syn, Ack, Ack2, Refuse), one-way both ways:
    /// [`super::encode_gossip`].
    pub const GOSSIP: u16 = 16;
    /// Changes to a global index's view for one of its replicas (`super::super::views`):
    /// [`super::encode_view_changes`], answered with an empty payload once applied.
    pub const VIEW_CHANGES: u16 = 17;
    /// A write handed to its item's home coordinator (`super::super::forward`):
    /// [`super::encode_forwarded`], answered by [`super::encode_forward_reply`].
    pub const FORWARD: u16 = 18;
}

/// Which write a [`Forwarded`] carries (its input is that operation's request JSON).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WriteKind {
    Put,
    Update,
    Delete,
}

/// A write handed to its item's home coordinator, to be started before `start_by_ms` (the
/// sender's wall clock) or not at all.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Forwarded {
    pub(crate) kind: WriteKind,
    pub(crate) start_by_ms: u64,
    /// The write's mark: a ballot the sender minted and proposes nothing with, added to the
    /// item's lineage by whoever applies the write, so it is applied once.
    pub(crate) mark: Ballot,
    /// The item's table and storage key, as the sender found them.
    pub(crate) table_id: String,
    pub(crate) key: Vec<u8>,
    /// The operation's input, as the JSON of its DynamoDB request.
    pub(crate) input: Vec<u8>,
}

/// A DynamoDB error as one node tells another: the kind by its `__type`, the message, and the
/// item (ReturnValuesOnConditionCheckFailure) as DynamoDB JSON.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ForwardedError {
    pub(crate) type_name: String,
    pub(crate) message: String,
    pub(crate) item: Option<Vec<u8>>,
}

/// The version a forwarded write chose, for its sender to commit: the item's table and storage key.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ForwardedCommit {
    pub(crate) table_id: String,
    pub(crate) key: Vec<u8>,
    pub(crate) version: Version<Value>,
}

/// The home coordinator's answer to a [`Forwarded`] write.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum ForwardReply {
    /// The write ran: its output (the JSON of the DynamoDB response) or its error, and the
    /// version it chose, for the sender to commit itself when it is one of the item's replicas
    /// (the home sends it no commit of its own).
    Done { answer: Result<Vec<u8>, ForwardedError>, commit: Option<Box<ForwardedCommit>> },
    /// The write arrived after its start-by time and was not started: it took no effect.
    Expired,
}

/// Encodes a [`Forwarded`]: `[version][kind u8: 1 put, 2 update, 3 delete][start by u64][mark:
/// time u64, node u64][table id: u16 length + UTF-8][key: u32 length][input: u32 length + JSON]`.
pub(crate) fn encode_forwarded(forwarded: &Forwarded) -> Vec<u8> {
    let mut out = Writer::new();
    out.u8(match forwarded.kind {
        WriteKind::Put => 1,
        WriteKind::Update => 2,
        WriteKind::Delete => 3,
    });
    out.u64(forwarded.start_by_ms);
    out.ballot(forwarded.mark);
    out.bytes16(forwarded.table_id.as_bytes());
    out.bytes32(&forwarded.key);
    out.bytes32(&forwarded.input);
    out.0
}

pub(crate) fn decode_forwarded(bytes: &[u8]) -> Result<Forwarded, WireError> {
    let mut input = Reader::start(bytes)?;
    let kind = match input.u8()? {
        1 => WriteKind::Put,
        2 => WriteKind::Update,
        3 => WriteKind::Delete,
        other => return Err(WireError(format!("forwarded write kind {other}"))),
    };
    let start_by_ms = input.u64()?;
    let mark = input.ballot()?;
    let table_id = input.table_id()?;
    let key = input.bytes32()?.to_vec();
    let json = input.bytes32()?.to_vec();
    input.finish()?;
    Ok(Forwarded { kind, start_by_ms, mark, table_id, key, input: json })
}

/// Encodes a [`ForwardReply`]: `[version]` then `[1]` for done — `[0][output: u32 length + JSON]`
/// or `[1][type: u16 length + UTF-8][message: u32 length + UTF-8][0 | 1 + item: u32 length +
/// JSON]`, then `[0]` or `[1][table id: u16 length + UTF-8][key: u32 length][version as a
/// record]` — or `[2]` for expired.
pub(crate) fn encode_forward_reply(reply: &ForwardReply) -> Vec<u8> {
    let mut out = Writer::new();
    match reply {
        ForwardReply::Done { answer, commit } => {
            out.u8(1);
            match answer {
                Ok(output) => {
                    out.u8(0);
                    out.bytes32(output);
                }
                Err(error) => {
                    out.u8(1);
                    out.bytes16(error.type_name.as_bytes());
                    out.bytes32(error.message.as_bytes());
                    match &error.item {
                        None => out.u8(0),
                        Some(item) => {
                            out.u8(1);
                            out.bytes32(item);
                        }
                    }
                }
            }
            match commit {
                None => out.u8(0),
                Some(commit) => {
                    out.u8(1);
                    out.bytes16(commit.table_id.as_bytes());
                    out.bytes32(&commit.key);
                    out.version(&commit.version);
                }
            }
        }
        ForwardReply::Expired => out.u8(2),
    }
    out.0
}

pub(crate) fn decode_forward_reply(bytes: &[u8]) -> Result<ForwardReply, WireError> {
    let mut input = Reader::start(bytes)?;
    let text = |bytes: &[u8]| String::from_utf8(bytes.to_vec()).map_err(|_| WireError("text".into()));
    let reply = match input.u8()? {
        1 => {
            let answer = match input.u8()? {
                0 => Ok(input.bytes32()?.to_vec()),
                1 => {
                    let type_name = text(input.bytes16()?)?;
                    let message = text(input.bytes32()?)?;
                    let item = match input.u8()? {
                        0 => None,
                        1 => Some(input.bytes32()?.to_vec()),
                        other => return Err(WireError(format!("presence flag {other}"))),
                    };
                    Err(ForwardedError { type_name, message, item })
                }
                other => return Err(WireError(format!("answer kind {other}"))),
            };
            let commit = match input.u8()? {
                0 => None,
                1 => Some(Box::new(ForwardedCommit {
                    table_id: input.table_id()?,
                    key: input.bytes32()?.to_vec(),
                    version: input.version()?,
                })),
                other => return Err(WireError(format!("presence flag {other}"))),
            };
            ForwardReply::Done { answer, commit }
        }
        2 => ForwardReply::Expired,
        other => return Err(WireError(format!("forward reply kind {other}"))),
    };
    input.finish()?;
    Ok(reply)
}

/// A phase of a tombstone-collection round (see `onggi_core::tombstones`), sent by the round's
/// initiator to every replica of a partition, in the layout epoch `epoch`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Collection {
    pub(crate) table_id: String,
    pub(crate) partition: u32,
    pub(crate) epoch: u64,
    pub(crate) floor: Timestamp,
    pub(crate) phase: CollectionPhase,
}

/// Which phase, with what it carries.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum CollectionPhase {
    /// Promise the floor; answered by [`CollectionReply::Prepared`].
    Prepare,
    /// Adopt the floor if nothing moved since the token; answered by [`CollectionReply::Adopted`].
    Adopt(AdoptToken),
    /// Remove the tombstones at or below the floor; answered by [`CollectionReply::Collected`].
    Collect,
}

/// A replica's answer to a [`Collection`] phase.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum CollectionReply {
    Prepared(Prepared),
    Adopted(bool),
    /// Tombstones removed, and whether some were left for the next round (a bound per round).
    Collected {
        removed: u64,
        more: bool,
    },
}

/// Encodes a [`Collection`]: `[kind u8: 1 prepare, 2 adopt, 3 collect][table id u16 len +
/// UTF-8][partition u32][epoch u64][floor u64]`, then for an adopt `[life u64][old commits u64]`.
pub(crate) fn encode_collection(request: &Collection) -> Vec<u8> {
    let mut out = Writer::new();
    out.u8(match request.phase {
        CollectionPhase::Prepare => 1,
        CollectionPhase::Adopt(_) => 2,
        CollectionPhase::Collect => 3,
    });
    out.bytes16(request.table_id.as_bytes());
    out.u32(request.partition);
    out.u64(request.epoch);
    out.u64(request.floor.0);
    if let CollectionPhase::Adopt(token) = request.phase {
        out.u64(token.life);
        out.u64(token.old_commits);
    }
    out.0
}

/// Decodes [`encode_collection`].
pub(crate) fn decode_collection(bytes: &[u8]) -> Result<Collection, WireError> {
    let mut input = Reader::start(bytes)?;
    let kind = input.u8()?;
    let table_id = input.table_id()?;
    let (partition, epoch, floor) = (input.u32()?, input.u64()?, Timestamp(input.u64()?));
    let phase = match kind {
        1 => CollectionPhase::Prepare,
        2 => CollectionPhase::Adopt(AdoptToken { life: input.u64()?, old_commits: input.u64()? }),
        3 => CollectionPhase::Collect,
        other => return Err(WireError(format!("collection phase {other}"))),
    };
    input.finish()?;
    Ok(Collection { table_id, partition, epoch, floor, phase })
}

/// Encodes a [`CollectionReply`]: `[kind u8]` then, prepared: `[pending u8][digest u128][life
/// u64][old commits u64]`; adopted: `[adopted u8]`; collected: `[removed u64][more u8]`.
pub(crate) fn encode_collection_reply(reply: &CollectionReply) -> Vec<u8> {
    let mut out = Writer::new();
    match reply {
        CollectionReply::Prepared(prepared) => {
            out.u8(1);
            out.u8(u8::from(prepared.pending));
            out.0.extend_from_slice(&prepared.digest.to_be_bytes());
            out.u64(prepared.token.life);
            out.u64(prepared.token.old_commits);
        }
        CollectionReply::Adopted(adopted) => {
            out.u8(2);
            out.u8(u8::from(*adopted));
        }
        CollectionReply::Collected { removed, more } => {
            out.u8(3);
            out.u64(*removed);
            out.u8(u8::from(*more));
        }
    }
    out.0
}

/// Decodes [`encode_collection_reply`].
pub(crate) fn decode_collection_reply(bytes: &[u8]) -> Result<CollectionReply, WireError> {
    let mut input = Reader::start(bytes)?;
    let flag = |value: u8| match value {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(WireError(format!("flag {other}"))),
    };
    let reply = match input.u8()? {
        1 => {
            let pending = flag(input.u8()?)?;
            let digest = input.u128()?;
            let token = AdoptToken { life: input.u64()?, old_commits: input.u64()? };
            CollectionReply::Prepared(Prepared { pending, digest, token })
        }
        2 => CollectionReply::Adopted(flag(input.u8()?)?),
        3 => {
            let removed = input.u64()?;
            CollectionReply::Collected { removed, more: flag(input.u8()?)? }
        }
        other => return Err(WireError(format!("collection reply {other}"))),
    };
    input.finish()?;
    Ok(reply)
}

/// What one node stores of a table: items and their bytes, and the same of each index (by id).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct TableCounts {
    pub(crate) items: u64,
    pub(crate) bytes: u64,
    pub(crate) indexes: Vec<(String, u64, u64)>,
}

/// Encodes a node's counts of a table: `[items u64][bytes u64][count u32][count × (index id:
/// u16 len + UTF-8, items u64, bytes u64)]`.
pub(crate) fn encode_table_counts(counts: &TableCounts) -> Vec<u8> {
    let mut out = Writer::new();
    out.u64(counts.items);
    out.u64(counts.bytes);
    out.u32(counts.indexes.len() as u32);
    for (id, items, bytes) in &counts.indexes {
        out.bytes16(id.as_bytes());
        out.u64(*items);
        out.u64(*bytes);
    }
    out.0
}

/// Decodes [`encode_table_counts`].
pub(crate) fn decode_table_counts(bytes: &[u8]) -> Result<TableCounts, WireError> {
    let mut input = Reader::start(bytes)?;
    let items = input.u64()?;
    let bytes = input.u64()?;
    let indexes = (0..input.count(18)?)
        .map(|_| {
            let id = String::from_utf8(input.bytes16()?.to_vec()).map_err(|_| WireError("index id".into()))?;
            Ok((id, input.u64()?, input.u64()?))
        })
        .collect::<Result<Vec<_>, WireError>>()?;
    input.finish()?;
    Ok(TableCounts { items, bytes, indexes })
}

/// An item's value in consensus: the item (`None`: absent — never written, or deleted) and the
/// lineage of recent writes that made it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Value {
    /// The item, or `None` when absent.
    pub item: Option<Item>,
    /// Its recent writers.
    pub lineage: Lineage,
    /// A tombstone written by the Time to Live expirer (see `Record::expired`).
    pub expired: bool,
}

impl Lineaged for Value {
    fn written_by(&self, attempt: Ballot) -> Option<bool> {
        self.lineage.written_by(attempt)
    }
}

/// A version as the record replicas store.
pub fn to_record(version: &Version<Value>) -> Record {
    Record {
        version: version.ballot,
        item: version.value.item.clone(),
        expired: version.value.expired && version.value.item.is_none(),
        lineage: Some(version.value.lineage.clone()),
    }
}

/// A stored record as a version (a record written without a lineage knows nothing of its
/// writers up to its own version).
pub fn from_record(record: Record) -> Version<Value> {
    let lineage = record.lineage.unwrap_or_else(|| Lineage::unknown_before(record.version));
    Version { ballot: record.version, value: Value { item: record.item, lineage, expired: record.expired } }
}

/// A request about one item, addressed to one of its replicas.
#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    /// What the replica knows (no state change).
    Read,
    /// Promise this ballot.
    Prepare(Ballot),
    /// Accept this proposal.
    Accept(Version<Value>),
    /// Accept this proposal, and promise the coordinator's next ballot for the item if the
    /// proposal is the newest thing held (see `Lease` in `onggi_core::paxos`).
    AcceptPromising(Version<Value>, Ballot),
    /// Record this chosen version.
    Commit(Version<Value>),
}

/// A replica's answer.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// To [`Request::Read`].
    Knowledge(Knowledge<Value>),
    /// To [`Request::Prepare`].
    Promise(Promise<Value>),
    /// To [`Request::Accept`].
    Acceptance(Acceptance),
    /// To [`Request::Commit`] sent as a request.
    Committed,
    /// To a read, prepare or accept sent in an older layout epoch than the replica's (its
    /// epoch): nothing was done; the coordinator continues in the newer epoch.
    Stale(u64),
}

/// A payload that could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireError(pub String);

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed cluster message: {}", self.0)
    }
}

struct Writer(Vec<u8>);

impl Writer {
    fn new() -> Writer {
        Writer(vec![WIRE_FORMAT_VERSION])
    }
    fn u8(&mut self, value: u8) {
        self.0.push(value);
    }
    fn u32(&mut self, value: u32) {
        self.0.extend_from_slice(&value.to_be_bytes());
    }
    fn u64(&mut self, value: u64) {
        self.0.extend_from_slice(&value.to_be_bytes());
    }
    fn bytes16(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        self.0.extend_from_slice(bytes);
    }
    fn bytes32(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        self.0.extend_from_slice(bytes);
    }
    fn ballot(&mut self, ballot: Ballot) {
        self.0.extend_from_slice(&ballot.time.0.to_be_bytes());
        self.0.extend_from_slice(&ballot.node.0.to_be_bytes());
    }
    fn version(&mut self, version: &Version<Value>) {
        self.bytes32(&to_record(version).encode());
    }
    fn optional_version(&mut self, version: Option<&Version<Value>>) {
        match version {
            None => self.u8(0),
            Some(version) => {
                self.u8(1);
                self.version(version);
            }
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn start(bytes: &'a [u8]) -> Result<Reader<'a>, WireError> {
        match bytes.first() {
            Some(&WIRE_FORMAT_VERSION) => Ok(Reader(&bytes[1..])),
            Some(other) => Err(WireError(format!("payload format {other}, this build reads {WIRE_FORMAT_VERSION}"))),
            None => Err(WireError("empty payload".into())),
        }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.0.len() < n {
            return Err(WireError("truncated".into()));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn u128(&mut self) -> Result<u128, WireError> {
        Ok(u128::from_be_bytes(self.take(16)?.try_into().expect("16 bytes")))
    }
    /// A count of elements at least `element_bytes` long each, refused when the rest of the
    /// payload cannot hold that many (so a forged count never makes the reader allocate).
    fn count(&mut self, element_bytes: usize) -> Result<usize, WireError> {
        let count = self.u32()? as usize;
        if count.saturating_mul(element_bytes) > self.0.len() {
            return Err(WireError(format!("{count} elements announced, the payload cannot hold them")));
        }
        Ok(count)
    }
    fn table_id(&mut self) -> Result<String, WireError> {
        String::from_utf8(self.bytes16()?.to_vec()).map_err(|_| WireError("table id".into()))
    }
    fn bytes16(&mut self) -> Result<&'a [u8], WireError> {
        let length = u16::from_be_bytes(self.take(2)?.try_into().expect("2 bytes"));
        self.take(usize::from(length))
    }
    fn bytes32(&mut self) -> Result<&'a [u8], WireError> {
        let length = u32::from_be_bytes(self.take(4)?.try_into().expect("4 bytes"));
        self.take(length as usize)
    }
    fn ballot(&mut self) -> Result<Ballot, WireError> {
        Ok(Ballot { time: Timestamp(self.u64()?), node: NodeId(self.u64()?) })
    }
    fn version(&mut self) -> Result<Version<Value>, WireError> {
        let record = Record::decode(self.bytes32()?).map_err(|error| WireError(error.to_string()))?;
        Ok(from_record(record))
    }
    fn optional_version(&mut self) -> Result<Option<Version<Value>>, WireError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.version()?)),
            other => Err(WireError(format!("presence flag {other}"))),
        }
    }
    fn finish(self) -> Result<(), WireError> {
        if self.0.is_empty() { Ok(()) } else { Err(WireError("trailing bytes".into())) }
    }
}

/// Encodes a gossip message: `[version][cluster name: u16 length + UTF-8][protocol u32][from
/// u64][from address: u16 length + UTF-8][kind u8]` then, for a Syn (1) `[complete u8][count
/// u32][count × digest]`, an Ack (2) `[count u32][count × member][count u32][count × digest]`,
/// an Ack2 (3) `[count u32][count × member]`, a Refuse (4) nothing. A digest is `[id u64][generation
/// u64][heartbeat u64]`; a member `[id u64][address: u16 length + UTF-8][generation u64][heartbeat
/// u64][status u8: 0 joining, 1 normal, 2 leaving, 3 left][layout version u64][protocol u32]`.
pub fn encode_gossip(envelope: &Envelope) -> Vec<u8> {
    fn digests(out: &mut Writer, digests: &[membership::Digest]) {
        out.u32(digests.len() as u32);
        for digest in digests {
            out.u64(digest.id.0);
            out.u64(digest.generation);
            out.u64(digest.heartbeat);
        }
    }
    fn members(out: &mut Writer, members: &[Member]) {
        out.u32(members.len() as u32);
        for member in members {
            out.u64(member.id.0);
            out.bytes16(member.address.as_bytes());
            out.u64(member.generation);
            out.u64(member.heartbeat);
            out.u8(match member.status {
                Status::Joining => 0,
                Status::Normal => 1,
                Status::Leaving => 2,
                Status::Left => 3,
            });
            out.u64(member.layout_version);
            out.u32(member.protocol_version);
        }
    }
    let mut out = Writer::new();
    out.bytes16(envelope.cluster_name.as_bytes());
    out.u32(envelope.protocol_version);
    out.u64(envelope.from.0);
    out.bytes16(envelope.from_address.as_bytes());
    match &envelope.message {
        Message::Syn { digests: list, complete } => {
            out.u8(1);
            out.u8(u8::from(*complete));
            digests(&mut out, list);
        }
        Message::Ack { records, requests } => {
            out.u8(2);
            members(&mut out, records);
            digests(&mut out, requests);
        }
        Message::Ack2 { records } => {
            out.u8(3);
            members(&mut out, records);
        }
        Message::Refuse => out.u8(4),
    }
    out.0
}

/// Decodes a gossip message (see [`encode_gossip`]).
pub fn decode_gossip(bytes: &[u8]) -> Result<Envelope, WireError> {
    fn text(input: &mut Reader) -> Result<String, WireError> {
        String::from_utf8(input.bytes16()?.to_vec()).map_err(|_| WireError("gossip text is not UTF-8".into()))
    }
    fn digests(input: &mut Reader) -> Result<Vec<membership::Digest>, WireError> {
        let count = input.count(24)?;
        (0..count)
            .map(|_| {
                Ok(membership::Digest { id: NodeId(input.u64()?), generation: input.u64()?, heartbeat: input.u64()? })
            })
            .collect()
    }
    fn members(input: &mut Reader) -> Result<Vec<Member>, WireError> {
        let count = input.count(39)?;
        (0..count)
            .map(|_| {
                Ok(Member {
                    id: NodeId(input.u64()?),
                    address: text(input)?,
                    generation: input.u64()?,
                    heartbeat: input.u64()?,
                    status: match input.u8()? {
                        0 => Status::Joining,
                        1 => Status::Normal,
                        2 => Status::Leaving,
                        3 => Status::Left,
                        other => return Err(WireError(format!("member status {other}"))),
                    },
                    layout_version: input.u64()?,
                    protocol_version: input.u32()?,
                })
            })
            .collect()
    }
    let mut input = Reader::start(bytes)?;
    let cluster_name = text(&mut input)?;
    let protocol_version = input.u32()?;
    let from = NodeId(input.u64()?);
    let from_address = text(&mut input)?;
    let message = match input.u8()? {
        1 => {
            let complete = match input.u8()? {
                0 => false,
                1 => true,
                other => return Err(WireError(format!("completeness flag {other}"))),
            };
            Message::Syn { digests: digests(&mut input)?, complete }
        }
        2 => Message::Ack { records: members(&mut input)?, requests: digests(&mut input)? },
        3 => Message::Ack2 { records: members(&mut input)? },
        4 => Message::Refuse,
        other => return Err(WireError(format!("gossip message kind {other}"))),
    };
    input.finish()?;
    Ok(Envelope { cluster_name, protocol_version, from, from_address, message })
}

/// Encodes a request about the item `key` of the table with id `table_id`, outside any layout
/// epoch: for commits (a chosen version is safe to record in any epoch).
pub fn encode_request(table_id: &str, key: &[u8], request: &Request) -> Vec<u8> {
    encode_request_in(table_id, key, 0, request)
}

/// Encodes a request sent in layout epoch `epoch`: `[table id][key][epoch u64][kind][fields]`.
pub fn encode_request_in(table_id: &str, key: &[u8], epoch: u64, request: &Request) -> Vec<u8> {
    let mut out = Writer::new();
    out.bytes16(table_id.as_bytes());
    out.bytes32(key);
    out.u64(epoch);
    match request {
        Request::Read => out.u8(0),
        Request::Prepare(ballot) => {
            out.u8(1);
            out.ballot(*ballot);
        }
        Request::Accept(version) => {
            out.u8(2);
            out.version(version);
        }
        Request::Commit(version) => {
            out.u8(3);
            out.version(version);
        }
        Request::AcceptPromising(version, next) => {
            out.u8(4);
            out.version(version);
            out.ballot(*next);
        }
    }
    out.0
}

/// Decodes a request: the table id, the key, the sender's layout epoch and the request.
pub fn decode_request(bytes: &[u8]) -> Result<(String, Vec<u8>, u64, Request), WireError> {
    let mut input = Reader::start(bytes)?;
    let table = String::from_utf8(input.bytes16()?.to_vec()).map_err(|_| WireError("table id".into()))?;
    let key = input.bytes32()?.to_vec();
    let epoch = input.u64()?;
    let request = match input.u8()? {
        0 => Request::Read,
        1 => Request::Prepare(input.ballot()?),
        2 => Request::Accept(input.version()?),
        3 => Request::Commit(input.version()?),
        4 => Request::AcceptPromising(input.version()?, input.ballot()?),
        other => return Err(WireError(format!("request kind {other}"))),
    };
    input.finish()?;
    Ok((table, key, epoch, request))
}

/// Encodes a reply.
pub fn encode_reply(reply: &Reply) -> Vec<u8> {
    let mut out = Writer::new();
    let knowledge = |out: &mut Writer, knowledge: &Knowledge<Value>| {
        out.optional_version(knowledge.accepted.as_ref());
        out.optional_version(knowledge.committed.as_ref());
    };
    match reply {
        Reply::Knowledge(known) => {
            out.u8(0);
            knowledge(&mut out, known);
        }
        Reply::Promise(Promise::Granted(known)) => {
            out.u8(1);
            knowledge(&mut out, known);
        }
        Reply::Promise(Promise::Refused(ballot)) => {
            out.u8(2);
            out.ballot(*ballot);
        }
        Reply::Acceptance(Acceptance::Accepted) => out.u8(3),
        Reply::Acceptance(Acceptance::Refused(ballot)) => {
            out.u8(4);
            out.ballot(*ballot);
        }
        Reply::Acceptance(Acceptance::AcceptedPromising(ballot)) => {
            out.u8(7);
            out.ballot(*ballot);
        }
        Reply::Committed => out.u8(5),
        Reply::Stale(epoch) => {
            out.u8(6);
            out.u64(*epoch);
        }
    }
    out.0
}

/// Decodes a reply.
pub fn decode_reply(bytes: &[u8]) -> Result<Reply, WireError> {
    let mut input = Reader::start(bytes)?;
    let knowledge = |input: &mut Reader| -> Result<Knowledge<Value>, WireError> {
        Ok(Knowledge { accepted: input.optional_version()?, committed: input.optional_version()? })
    };
    let reply = match input.u8()? {
        0 => Reply::Knowledge(knowledge(&mut input)?),
        1 => Reply::Promise(Promise::Granted(knowledge(&mut input)?)),
        2 => Reply::Promise(Promise::Refused(input.ballot()?)),
        3 => Reply::Acceptance(Acceptance::Accepted),
        4 => Reply::Acceptance(Acceptance::Refused(input.ballot()?)),
        5 => Reply::Committed,
        6 => Reply::Stale(input.u64()?),
        7 => Reply::Acceptance(Acceptance::AcceptedPromising(input.ballot()?)),
        other => return Err(WireError(format!("reply kind {other}"))),
    };
    input.finish()?;
    Ok(reply)
}

/// Encodes a deleted table's id.
pub fn encode_table_deleted(table_id: &str) -> Vec<u8> {
    let mut out = Writer::new();
    out.bytes16(table_id.as_bytes());
    out.0
}

/// Decodes a deleted table's id.
pub fn decode_table_deleted(bytes: &[u8]) -> Result<String, WireError> {
    let mut input = Reader::start(bytes)?;
    let id = String::from_utf8(input.bytes16()?.to_vec()).map_err(|_| WireError("table id".into()))?;
    input.finish()?;
    Ok(id)
}

/// Encodes one step of a Merkle comparison about partition `partition` of the table `table_id`:
/// `[version][table id: u16 length + UTF-8][partition: u32][first token: u64][last token: u64]
/// [depth: u8][level: u8][count: u32][count × node index: u32]`, all big-endian (the initiator's
/// tree shape, then the nodes of one level whose digests it asks for).
pub fn encode_merkle_request(table_id: &str, partition: u32, request: &merkle::Request) -> Vec<u8> {
    let merkle::Request::Hashes { shape, level, nodes } = request;
    let mut out = Writer::new();
    out.bytes16(table_id.as_bytes());
    out.u32(partition);
    out.u64(shape.first);
    out.u64(shape.last);
    out.u8(shape.depth);
    out.u8(*level);
    out.u32(nodes.len() as u32);
    for &node in nodes {
        out.u32(node);
    }
    out.0
}

/// Decodes a Merkle comparison step: the table id, the partition and the request. More than
/// [`merkle::HASHES_PER_MESSAGE_MAX`] nodes are refused here, before anything is allocated for them.
pub fn decode_merkle_request(bytes: &[u8]) -> Result<(String, u32, merkle::Request), WireError> {
    let mut input = Reader::start(bytes)?;
    let table = input.table_id()?;
    let partition = input.u32()?;
    let shape = Shape { first: input.u64()?, last: input.u64()?, depth: input.u8()? };
    let level = input.u8()?;
    let count = input.count(4)?;
    if count > merkle::HASHES_PER_MESSAGE_MAX as usize {
        return Err(WireError(format!(
            "{count} Merkle nodes in one request; the limit is {}",
            merkle::HASHES_PER_MESSAGE_MAX
        )));
    }
    let nodes = (0..count).map(|_| input.u32()).collect::<Result<Vec<u32>, WireError>>()?;
    input.finish()?;
    Ok((table, partition, merkle::Request::Hashes { shape, level, nodes }))
}

/// Encodes the answer to a Merkle comparison step: `[version][0][level: u8][count: u32][count ×
/// digest: u128 BE]`, or a refusal `[version][1]` then `[0][first: u64][last: u64][depth: u8]` (the
/// responder's shape differs), `[1][count: u64]` (too many nodes asked) or `[2][level: u8][node:
/// u32]` (no such node).
pub fn encode_merkle_response(response: &merkle::Response) -> Vec<u8> {
    let mut out = Writer::new();
    match response {
        merkle::Response::Hashes { level, digests } => {
            out.u8(0);
            out.u8(*level);
            out.u32(digests.len() as u32);
            for digest in digests {
                out.0.extend_from_slice(&digest.0.to_be_bytes());
            }
        }
        merkle::Response::Refused(refusal) => {
            out.u8(1);
            match refusal {
                Refusal::ShapeMismatch { responder } => {
                    out.u8(0);
                    out.u64(responder.first);
                    out.u64(responder.last);
                    out.u8(responder.depth);
                }
                Refusal::TooManyNodes { count } => {
                    out.u8(1);
                    out.u64(*count);
                }
                Refusal::NoSuchNode { level, node } => {
                    out.u8(2);
                    out.u8(*level);
                    out.u32(*node);
                }
            }
        }
    }
    out.0
}

/// Decodes the answer to a Merkle comparison step.
pub fn decode_merkle_response(bytes: &[u8]) -> Result<merkle::Response, WireError> {
    let mut input = Reader::start(bytes)?;
    let response = match input.u8()? {
        0 => {
            let level = input.u8()?;
            let count = input.count(16)?;
            let digests = (0..count).map(|_| input.u128().map(Digest)).collect::<Result<Vec<Digest>, WireError>>()?;
            merkle::Response::Hashes { level, digests }
        }
        1 => merkle::Response::Refused(match input.u8()? {
            0 => Refusal::ShapeMismatch {
                responder: Shape { first: input.u64()?, last: input.u64()?, depth: input.u8()? },
            },
            1 => Refusal::TooManyNodes { count: input.u64()? },
            2 => Refusal::NoSuchNode { level: input.u8()?, node: input.u32()? },
            other => return Err(WireError(format!("Merkle refusal kind {other}"))),
        }),
        other => return Err(WireError(format!("Merkle response kind {other}"))),
    };
    input.finish()?;
    Ok(response)
}

/// A storage key and its record, in the record's own versioned format ([`Record::encode`]).
pub type KeyRecord = (Vec<u8>, Vec<u8>);

/// Anti-entropy's push: one replica's versions of every key in a key interval of one partition,
/// sent to another replica of it, which applies the newer ones and answers with a
/// [`RangeSyncReply`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeSync {
    /// The table's id.
    pub table_id: String,
    /// The partition the interval lies in.
    pub partition: u32,
    /// The interval's first storage key (inclusive).
    pub lower: Vec<u8>,
    /// The storage key the interval ends before (exclusive); `None`: the end of the key space.
    pub upper: Option<Vec<u8>>,
    /// The sender's versions of every key in the interval, ascending by key.
    pub records: Vec<KeyRecord>,
}

/// Anti-entropy's pull: the answer to a [`RangeSync`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeSyncReply {
    /// The responder's versions in the interval that the push lacks or holds older, ascending.
    pub records: Vec<KeyRecord>,
    /// Set when the answer reached its size bound: the last key it covers. The exchange then
    /// covered the interval only up to this key (included), on both sides, and resumes after it.
    pub truncated_after: Option<Vec<u8>>,
}

fn write_records(out: &mut Writer, records: &[KeyRecord]) {
    out.u32(records.len() as u32);
    for (key, record) in records {
        out.bytes32(key);
        out.bytes32(record);
    }
}

fn read_records(input: &mut Reader) -> Result<Vec<KeyRecord>, WireError> {
    let count = input.count(8)?;
    (0..count).map(|_| Ok((input.bytes32()?.to_vec(), input.bytes32()?.to_vec()))).collect()
}

/// Encodes a push: `[version][table id: u16 length + UTF-8][partition: u32][lower: u32 length +
/// key][upper: 0 | 1, u32 length + key][count: u32][count × (key: u32 length + bytes, record: u32
/// length + bytes)]`.
pub fn encode_range_sync(sync: &RangeSync) -> Vec<u8> {
    let mut out = Writer::new();
    out.bytes16(sync.table_id.as_bytes());
    out.u32(sync.partition);
    out.bytes32(&sync.lower);
    match &sync.upper {
        None => out.u8(0),
        Some(upper) => {
            out.u8(1);
            out.bytes32(upper);
        }
    }
    write_records(&mut out, &sync.records);
    out.0
}

/// Decodes a push.
pub fn decode_range_sync(bytes: &[u8]) -> Result<RangeSync, WireError> {
    let mut input = Reader::start(bytes)?;
    let table_id = input.table_id()?;
    let partition = input.u32()?;
    let lower = input.bytes32()?.to_vec();
    let upper = match input.u8()? {
        0 => None,
        1 => Some(input.bytes32()?.to_vec()),
        other => return Err(WireError(format!("presence flag {other}"))),
    };
    let records = read_records(&mut input)?;
    input.finish()?;
    Ok(RangeSync { table_id, partition, lower, upper, records })
}

/// Encodes the answer to a push: `[version][count: u32][count × (key, record)][truncated: 0 | 1,
/// u32 length + the last key covered]`.
pub fn encode_range_sync_reply(reply: &RangeSyncReply) -> Vec<u8> {
    let mut out = Writer::new();
    write_records(&mut out, &reply.records);
    match &reply.truncated_after {
        None => out.u8(0),
        Some(key) => {
            out.u8(1);
            out.bytes32(key);
        }
    }
    out.0
}

/// Decodes the answer to a push.
pub fn decode_range_sync_reply(bytes: &[u8]) -> Result<RangeSyncReply, WireError> {
    let mut input = Reader::start(bytes)?;
    let records = read_records(&mut input)?;
    let truncated_after = match input.u8()? {
        0 => None,
        1 => Some(input.bytes32()?.to_vec()),
        other => return Err(WireError(format!("presence flag {other}"))),
    };
    input.finish()?;
    Ok(RangeSyncReply { records, truncated_after })
}

/// Encodes a piece of a range read: `[table id u16 len][request JSON u32 len][lower bound]
/// [upper bound][direction u8: 0 forward, 1 reverse][limit: u8 presence, u64][budget u64]`, a
/// bound being `[u8: 0 unbounded, 1 included, 2 excluded]` and, unless unbounded, `[u32 len][key]`.
pub(crate) fn encode_piece(piece: &Piece) -> Vec<u8> {
    let mut out = Writer::new();
    out.bytes16(piece.table_id.as_bytes());
    out.bytes32(&serde_json::to_vec(&piece.read).expect("a read request serializes"));
    for bound in [&piece.range.lower, &piece.range.upper] {
        match bound {
            Bound::Unbounded => out.u8(0),
            Bound::Included(key) => {
                out.u8(1);
                out.bytes32(key);
            }
            Bound::Excluded(key) => {
                out.u8(2);
                out.bytes32(key);
            }
        }
    }
    out.u8(match piece.range.direction {
        Direction::Forward => 0,
        Direction::Reverse => 1,
    });
    match piece.limit {
        None => out.u8(0),
        Some(limit) => {
            out.u8(1);
            out.u64(limit as u64);
        }
    }
    out.u64(piece.budget as u64);
    out.0
}

/// Decodes [`encode_piece`].
pub(crate) fn decode_piece(bytes: &[u8]) -> Result<Piece, WireError> {
    let mut input = Reader::start(bytes)?;
    let table_id = input.table_id()?;
    let read: RangeInput =
        serde_json::from_slice(input.bytes32()?).map_err(|error| WireError(format!("read request: {error}")))?;
    let bound = |input: &mut Reader| -> Result<Bound<Vec<u8>>, WireError> {
        Ok(match input.u8()? {
            0 => Bound::Unbounded,
            1 => Bound::Included(input.bytes32()?.to_vec()),
            2 => Bound::Excluded(input.bytes32()?.to_vec()),
            other => return Err(WireError(format!("bound kind {other}"))),
        })
    };
    let lower = bound(&mut input)?;
    let upper = bound(&mut input)?;
    let direction = match input.u8()? {
        0 => Direction::Forward,
        1 => Direction::Reverse,
        other => return Err(WireError(format!("direction {other}"))),
    };
    let limit = match input.u8()? {
        0 => None,
        1 => Some(usize::try_from(input.u64()?).map_err(|_| WireError("limit".into()))?),
        other => return Err(WireError(format!("presence flag {other}"))),
    };
    let budget = usize::try_from(input.u64()?).map_err(|_| WireError("budget".into()))?;
    input.finish()?;
    Ok(Piece { table_id, read, range: Range { lower, upper, direction }, limit, budget })
}

/// Encodes changes to the global index view `view_id` (`super::views`): `[version][view id: u16
/// length + UTF-8][count u32][count × ([flags u8: bit 0 = backfill][entry key: u32 length]
/// [record: u32 length])]`, answered with an empty payload once every change is applied.
pub(crate) fn encode_view_changes(view_id: &str, changes: &[Delivery]) -> Vec<u8> {
    let mut out = Writer::new();
    out.bytes16(view_id.as_bytes());
    out.u32(changes.len() as u32);
    for change in changes {
        out.u8(u8::from(change.backfill));
        out.bytes32(&change.entry_key);
        out.bytes32(&change.record.encode());
    }
    out.0
}

/// Decodes [`encode_view_changes`].
pub(crate) fn decode_view_changes(bytes: &[u8]) -> Result<(String, Vec<Delivery>), WireError> {
    let mut input = Reader::start(bytes)?;
    let view_id = input.table_id()?;
    let count = input.count(9)?;
    let mut changes = Vec::with_capacity(count);
    for _ in 0..count {
        let backfill = match input.u8()? {
            0 => false,
            1 => true,
            other => return Err(WireError(format!("view change flags {other}"))),
        };
        let entry_key = input.bytes32()?.to_vec();
        let record = Record::decode(input.bytes32()?).map_err(|error| WireError(error.to_string()))?;
        changes.push(Delivery { entry_key, record, backfill });
    }
    input.finish()?;
    Ok((view_id, changes))
}

/// Encodes a replica's share of a strongly consistent read: `[count u32][count × (ballot, u32 len
/// + item codec)][pending count u32][pending × (u32 len + base key)][more u8]`.
pub(crate) fn encode_strict_entries(strict: &StrictEntries) -> Vec<u8> {
    let mut out = Writer::new();
    out.u32(strict.entries.len() as u32);
    let mut bytes = Vec::new();
    for (version, item) in &strict.entries {
        out.ballot(*version);
        bytes.clear();
        codec::encode_item(item, &mut bytes);
        out.bytes32(&bytes);
    }
    out.u32(strict.pending.len() as u32);
    for key in &strict.pending {
        out.bytes32(key);
    }
    out.u8(u8::from(strict.more));
    out.0
}

/// Decodes [`encode_strict_entries`].
pub(crate) fn decode_strict_entries(bytes: &[u8]) -> Result<StrictEntries, WireError> {
    let mut input = Reader::start(bytes)?;
    let decode = |bytes: &[u8]| codec::decode_item(bytes).map_err(|error| WireError(format!("item: {error}")));
    let entries = (0..input.count(20)?)
        .map(|_| Ok((input.ballot()?, decode(input.bytes32()?)?)))
        .collect::<Result<Vec<_>, WireError>>()?;
    let pending = (0..input.count(4)?).map(|_| input.bytes32().map(<[u8]>::to_vec)).collect::<Result<Vec<_>, _>>()?;
    let more = match input.u8()? {
        0 => false,
        1 => true,
        other => return Err(WireError(format!("flag {other}"))),
    };
    input.finish()?;
    Ok(StrictEntries { entries, pending, more })
}

/// Encodes a page a replica read: `[count u64][scanned count u64][scanned bytes u64][fetch units
/// f64 bits u64][items: u32 count, each u32 len + item codec][last key: u8 presence, u32 len +
/// item codec]`.
pub(crate) fn encode_page(page: &Page) -> Vec<u8> {
    let mut out = Writer::new();
    out.u64(page.count);
    out.u64(page.scanned_count);
    out.u64(page.scanned_bytes as u64);
    out.u64(page.fetch_units.to_bits());
    out.u32(page.items.len() as u32);
    let mut item_bytes = Vec::new();
    let mut item = |out: &mut Writer, item: &Item| {
        item_bytes.clear();
        codec::encode_item(item, &mut item_bytes);
        out.bytes32(&item_bytes);
    };
    for each in &page.items {
        item(&mut out, each);
    }
    match &page.last_key {
        None => out.u8(0),
        Some(last) => {
            out.u8(1);
            item(&mut out, last);
        }
    }
    out.0
}

/// Decodes [`encode_page`].
pub(crate) fn decode_page(bytes: &[u8]) -> Result<Page, WireError> {
    let mut input = Reader::start(bytes)?;
    let count = input.u64()?;
    let scanned_count = input.u64()?;
    let scanned_bytes = usize::try_from(input.u64()?).map_err(|_| WireError("scanned bytes".into()))?;
    let fetch_units = f64::from_bits(input.u64()?);
    let decode = |bytes: &[u8]| codec::decode_item(bytes).map_err(|error| WireError(format!("item: {error}")));
    let items = (0..input.count(4)?).map(|_| decode(input.bytes32()?)).collect::<Result<Vec<_>, _>>()?;
    let last_key = match input.u8()? {
        0 => None,
        1 => Some(decode(input.bytes32()?)?),
        other => return Err(WireError(format!("presence flag {other}"))),
    };
    input.finish()?;
    Ok(Page { items, count, scanned_count, scanned_bytes, fetch_units, last_key })
}

/// A page of a new replica's catching up on a moved partition of one table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatchUp {
    /// The layout epoch of the change (the old replica adopts it before answering).
    pub epoch: u64,
    /// The table's id.
    pub table_id: String,
    /// The partition.
    pub partition: u32,
    /// Resume after this storage key (`None`: from the partition's start).
    pub after: Option<Vec<u8>>,
}

/// The answer to a [`CatchUp`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatchUpReply {
    /// Committed versions (records) in key order.
    pub records: Vec<KeyRecord>,
    /// Whether the partition has more: ask again after the last record's key.
    pub more: bool,
    /// On the first page: whether the old replica held no unfinished proposal in the partition
    /// before it read anything (only then does its answer count; it finishes them, so a later
    /// request may).
    pub clean: bool,
    /// On the first page: the ids of every table the old replica knows (the new one catches up
    /// only once it knows them all: a table missing here would go uncopied).
    pub tables: Vec<String>,
    /// The old replica's tombstone-collection floors of the partition: a new replica takes them
    /// over from answers that count (see `super::tombstones`).
    pub floors: Floors,
}

/// Encodes a [`CatchUp`]: `[version][epoch u64][table id u16 len][partition u32][after: 0 | 1 +
/// u32 len + key]`.
pub fn encode_catch_up(request: &CatchUp) -> Vec<u8> {
    let mut out = Writer::new();
    out.u64(request.epoch);
    out.bytes16(request.table_id.as_bytes());
    out.u32(request.partition);
    match &request.after {
        None => out.u8(0),
        Some(key) => {
            out.u8(1);
            out.bytes32(key);
        }
    }
    out.0
}

/// Decodes [`encode_catch_up`].
pub fn decode_catch_up(bytes: &[u8]) -> Result<CatchUp, WireError> {
    let mut input = Reader::start(bytes)?;
    let epoch = input.u64()?;
    let table_id = input.table_id()?;
    let partition = input.u32()?;
    let after = match input.u8()? {
        0 => None,
        1 => Some(input.bytes32()?.to_vec()),
        other => return Err(WireError(format!("presence flag {other}"))),
    };
    input.finish()?;
    Ok(CatchUp { epoch, table_id, partition, after })
}

/// Encodes a [`CatchUpReply`]: `[version][records][more u8][clean u8][tables: u32 count, each
/// u16 len + id][floors: promised u64, adopted u64]`.
pub fn encode_catch_up_reply(reply: &CatchUpReply) -> Vec<u8> {
    let mut out = Writer::new();
    write_records(&mut out, &reply.records);
    out.u8(u8::from(reply.more));
    out.u8(u8::from(reply.clean));
    out.u32(reply.tables.len() as u32);
    for table in &reply.tables {
        out.bytes16(table.as_bytes());
    }
    out.u64(reply.floors.promised.0);
    out.u64(reply.floors.adopted.0);
    out.0
}

/// Decodes [`encode_catch_up_reply`].
pub fn decode_catch_up_reply(bytes: &[u8]) -> Result<CatchUpReply, WireError> {
    let mut input = Reader::start(bytes)?;
    let records = read_records(&mut input)?;
    let more = input.u8()? == 1;
    let clean = input.u8()? == 1;
    let tables = (0..input.count(2)?).map(|_| input.table_id()).collect::<Result<Vec<_>, _>>()?;
    let floors = Floors { promised: Timestamp(input.u64()?), adopted: Timestamp(input.u64()?) };
    input.finish()?;
    Ok(CatchUpReply { records, more, clean, tables, floors })
}

#[cfg(test)]
mod tests {
    use super::*;
    use onggi_model::AttributeValue;

    fn ballot(time: u64, node: u64) -> Ballot {
        Ballot { time: Timestamp(time), node: NodeId(node) }
    }

    fn record(item: Option<Item>) -> Record {
        Record { version: ballot(3, 1), item, expired: false, lineage: None }
    }

    #[test]
    fn forwarded_writes_and_their_replies_round_trip() {
        let mut item = Item::new();
        item.insert("pk".into(), AttributeValue::S("a".into()));
        let version = Version {
            ballot: ballot(7, 2),
            value: Value { item: Some(item), lineage: Lineage::default(), expired: false },
        };
        for kind in [WriteKind::Put, WriteKind::Update, WriteKind::Delete] {
            let forwarded = Forwarded {
                kind,
                start_by_ms: 1_796_000_000_000,
                mark: ballot(1_796_000_000_000 << 16, 7 << 32),
                table_id: "t-id".into(),
                key: b"\x00key".to_vec(),
                input: br#"{"TableName":"t"}"#.to_vec(),
            };
            let bytes = encode_forwarded(&forwarded);
            assert_eq!(decode_forwarded(&bytes), Ok(forwarded));
            for cut in 0..bytes.len() {
                assert!(decode_forwarded(&bytes[..cut]).is_err());
            }
        }
        let error = ForwardedError {
            type_name: "com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException".into(),
            message: "The conditional request failed".into(),
            item: Some(br#"{"pk":{"S":"a"}}"#.to_vec()),
        };
        for reply in [
            ForwardReply::Done {
                answer: Ok(b"{}".to_vec()),
                commit: Some(Box::new(ForwardedCommit { table_id: "t-id".into(), key: b"\x00k".to_vec(), version })),
            },
            ForwardReply::Done { answer: Err(error.clone()), commit: None },
            ForwardReply::Done { answer: Err(ForwardedError { item: None, ..error }), commit: None },
            ForwardReply::Expired,
        ] {
            let bytes = encode_forward_reply(&reply);
            assert_eq!(decode_forward_reply(&bytes), Ok(reply));
            for cut in 0..bytes.len() {
                assert!(decode_forward_reply(&bytes[..cut]).is_err());
            }
        }
    }

    #[test]
    fn requests_and_replies_round_trip() {
        let mut item = Item::new();
        item.insert("pk".into(), AttributeValue::S("a".into()));
        let lineage = Lineage { since: Timestamp(5), writers: vec![ballot(7, 2)] };
        let version = Version {
            ballot: ballot(7, 2),
            value: Value { item: Some(item), lineage: lineage.clone(), expired: false },
        };
        let tombstone = Version { ballot: ballot(8, 3), value: Value { item: None, lineage, expired: true } };
        for request in [
            Request::Read,
            Request::Prepare(ballot(1, 1)),
            Request::Accept(version.clone()),
            Request::AcceptPromising(version.clone(), ballot(9, 2)),
            Request::Commit(tombstone.clone()),
        ] {
            let bytes = encode_request_in("table-id", b"\x00key", 7, &request);
            assert_eq!(decode_request(&bytes), Ok(("table-id".into(), b"\x00key".to_vec(), 7, request)));
            for cut in 0..bytes.len() {
                assert!(decode_request(&bytes[..cut]).is_err());
            }
        }
        let known = Knowledge { accepted: Some(version), committed: Some(tombstone) };
        for reply in [
            Reply::Knowledge(known.clone()),
            Reply::Knowledge(Knowledge { accepted: None, committed: None }),
            Reply::Promise(Promise::Granted(known)),
            Reply::Promise(Promise::Refused(ballot(9, 9))),
            Reply::Acceptance(Acceptance::Accepted),
            Reply::Acceptance(Acceptance::Refused(ballot(3, 4))),
            Reply::Acceptance(Acceptance::AcceptedPromising(ballot(3, 5))),
            Reply::Committed,
            Reply::Stale(3),
        ] {
            let bytes = encode_reply(&reply);
            assert_eq!(decode_reply(&bytes), Ok(reply));
            for cut in 0..bytes.len() {
                assert!(decode_reply(&bytes[..cut]).is_err());
            }
        }
        assert_eq!(decode_table_deleted(&encode_table_deleted("abc")), Ok("abc".into()));
    }

    #[test]
    fn catch_up_replies_carry_the_floors() {
        let floors = Floors { promised: Timestamp(90), adopted: Timestamp(70) };
        let records = vec![(vec![1, 2, 3], vec![4, 5])];
        let reply = CatchUpReply { records, more: true, clean: true, tables: vec!["t-1".into()], floors };
        let bytes = encode_catch_up_reply(&reply);
        assert_eq!(decode_catch_up_reply(&bytes), Ok(reply));
        for cut in 0..bytes.len() {
            assert!(decode_catch_up_reply(&bytes[..cut]).is_err());
        }
    }

    #[test]
    fn collection_messages_round_trip() {
        let token = AdoptToken { life: 7, old_commits: 3 };
        for phase in [CollectionPhase::Prepare, CollectionPhase::Adopt(token), CollectionPhase::Collect] {
            let request = Collection { table_id: "t-1".into(), partition: 9, epoch: 4, floor: Timestamp(77), phase };
            let bytes = encode_collection(&request);
            assert_eq!(decode_collection(&bytes), Ok(request));
            for cut in 0..bytes.len() {
                assert!(decode_collection(&bytes[..cut]).is_err());
            }
        }
        for reply in [
            CollectionReply::Prepared(Prepared { pending: true, digest: u128::MAX - 5, token }),
            CollectionReply::Adopted(false),
            CollectionReply::Adopted(true),
            CollectionReply::Collected { removed: 12, more: true },
        ] {
            let bytes = encode_collection_reply(&reply);
            assert_eq!(decode_collection_reply(&bytes), Ok(reply));
            for cut in 0..bytes.len() {
                assert!(decode_collection_reply(&bytes[..cut]).is_err());
            }
        }
        let mut forged = encode_collection_reply(&CollectionReply::Adopted(true));
        forged[2] = 2;
        assert!(decode_collection_reply(&forged).is_err());
    }

    #[test]
    fn merkle_messages_round_trip() {
        let shape = Shape { first: 1 << 56, last: (2 << 56) - 1, depth: 10 };
        for request in [
            merkle::Request::Hashes { shape, level: 0, nodes: vec![0] },
            merkle::Request::Hashes { shape, level: 6, nodes: vec![3, 4, 5, 60, 63] },
            merkle::Request::Hashes { shape, level: 2, nodes: vec![] },
        ] {
            let bytes = encode_merkle_request("table-id", 7, &request);
            assert_eq!(decode_merkle_request(&bytes), Ok(("table-id".into(), 7, request)));
            for cut in 0..bytes.len() {
                assert!(decode_merkle_request(&bytes[..cut]).is_err());
            }
        }
        for response in [
            merkle::Response::Hashes { level: 4, digests: vec![Digest(1), Digest(u128::MAX), Digest(1 << 100)] },
            merkle::Response::Hashes { level: 0, digests: vec![] },
            merkle::Response::Refused(Refusal::ShapeMismatch { responder: shape }),
            merkle::Response::Refused(Refusal::TooManyNodes { count: 5000 }),
            merkle::Response::Refused(Refusal::NoSuchNode { level: 11, node: 9 }),
        ] {
            let bytes = encode_merkle_response(&response);
            assert_eq!(decode_merkle_response(&bytes), Ok(response));
            for cut in 0..bytes.len() {
                assert!(decode_merkle_response(&bytes[..cut]).is_err());
            }
        }
        // More nodes than any message may carry are refused at decoding.
        let nodes = (0..=merkle::HASHES_PER_MESSAGE_MAX).collect();
        let bytes = encode_merkle_request("t", 0, &merkle::Request::Hashes { shape, level: 10, nodes });
        assert!(decode_merkle_request(&bytes).unwrap_err().0.contains("limit"));
        // A forged count is refused before anything is allocated for it.
        let mut forged = encode_merkle_response(&merkle::Response::Hashes { level: 0, digests: vec![] });
        forged[3..7].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(decode_merkle_response(&forged).is_err());
    }

    #[test]
    fn range_sync_messages_round_trip() {
        let record = Record {
            version: ballot(9, 1),
            item: None,
            expired: false,
            lineage: Some(Lineage { since: Timestamp(1), writers: vec![ballot(9, 1)] }),
        }
        .encode();
        let records = vec![(b"\x00\x01key-a".to_vec(), record.clone()), (b"\x00\x01key-b".to_vec(), vec![])];
        for sync in [
            RangeSync {
                table_id: "table-id".into(),
                partition: 255,
                lower: vec![0xFF, 0, 0, 0, 0, 0, 0, 0],
                upper: None,
                records: records.clone(),
            },
            RangeSync { table_id: "t".into(), partition: 0, lower: vec![0; 8], upper: Some(vec![1]), records: vec![] },
        ] {
            let bytes = encode_range_sync(&sync);
            assert_eq!(decode_range_sync(&bytes), Ok(sync));
            for cut in 0..bytes.len() {
                assert!(decode_range_sync(&bytes[..cut]).is_err());
            }
        }
        for reply in [
            RangeSyncReply { records: records.clone(), truncated_after: Some(b"\x00\x01key-b".to_vec()) },
            RangeSyncReply { records: vec![], truncated_after: None },
        ] {
            let bytes = encode_range_sync_reply(&reply);
            assert_eq!(decode_range_sync_reply(&bytes), Ok(reply));
            for cut in 0..bytes.len() {
                assert!(decode_range_sync_reply(&bytes[..cut]).is_err());
            }
        }
        let mut forged = encode_range_sync_reply(&RangeSyncReply { records: vec![], truncated_after: None });
        forged[1..5].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(decode_range_sync_reply(&forged).is_err());
        let mut trailing = encode_range_sync_reply(&RangeSyncReply { records, truncated_after: None });
        trailing.push(0);
        assert!(decode_range_sync_reply(&trailing).is_err());
    }

    #[test]
    fn gossip_messages_round_trip() {
        let member = |id: u64, status: Status| Member {
            id: NodeId(id),
            address: format!("127.0.0.1:{}", 7000 + id),
            generation: 1_700_000_000_000 + id,
            heartbeat: 42 * id,
            status,
            layout_version: 3,
            protocol_version: 1,
        };
        let digest = |id: u64| membership::Digest { id: NodeId(id), generation: id, heartbeat: 2 * id };
        let messages = [
            Message::Syn { digests: vec![digest(1), digest(2)], complete: true },
            Message::Syn { digests: vec![], complete: false },
            Message::Ack {
                records: vec![member(1, Status::Normal), member(2, Status::Left)],
                requests: vec![digest(3)],
            },
            Message::Ack2 { records: vec![member(4, Status::Joining), member(5, Status::Leaving)] },
            Message::Refuse,
        ];
        for message in messages {
            let envelope = Envelope {
                cluster_name: "onggi".into(),
                protocol_version: 1,
                from: NodeId(9),
                from_address: "127.0.0.1:7009".into(),
                message,
            };
            let bytes = encode_gossip(&envelope);
            assert_eq!(decode_gossip(&bytes).unwrap(), envelope);
            for cut in 0..bytes.len() {
                assert!(decode_gossip(&bytes[..cut]).is_err(), "a truncated message is refused");
            }
        }
    }

    #[test]
    fn refuses_other_versions_and_trailing_bytes() {
        let mut bytes = encode_reply(&Reply::Committed);
        bytes.push(0);
        assert!(decode_reply(&bytes).is_err());
        bytes[0] = 1;
        assert_eq!(
            decode_reply(&bytes[..2]),
            Err(WireError(format!("payload format 1, this build reads {WIRE_FORMAT_VERSION}")))
        );
    }

    #[test]
    fn range_read_pieces_and_pages_round_trip() {
        let input = onggi_model::ops::QueryInput {
            table_name: Some("t".into()),
            limit: Some(7),
            key_condition_expression: Some("pk = :p".into()),
            ..Default::default()
        };
        let piece = Piece {
            table_id: "t-1".into(),
            read: RangeInput::Query(input),
            range: Range {
                lower: Bound::Excluded(vec![1, 2, 3]),
                upper: Bound::Included(vec![9; 40]),
                direction: Direction::Reverse,
            },
            limit: Some(5),
            budget: 1 << 20,
        };
        let decoded = decode_piece(&encode_piece(&piece)).expect("decodes");
        assert_eq!(decoded.table_id, piece.table_id);
        assert_eq!((&decoded.range.lower, &decoded.range.upper), (&piece.range.lower, &piece.range.upper));
        assert_eq!(decoded.range.direction, Direction::Reverse);
        assert_eq!((decoded.limit, decoded.budget), (piece.limit, piece.budget));
        let changes = vec![
            Delivery { entry_key: vec![1, 2], record: record(Some(Item::new())), backfill: true },
            Delivery { entry_key: Vec::new(), record: record(None), backfill: false },
        ];
        assert_eq!(decode_view_changes(&encode_view_changes("v-1", &changes)), Ok(("v-1".to_string(), changes)));
        assert!(decode_view_changes(&encode_view_changes("v-1", &[])[..3]).is_err());
        let strict = StrictEntries {
            entries: vec![(ballot(7, 2), Item::new()), (ballot(9, 1), Item::new())],
            pending: vec![b"key".to_vec(), Vec::new()],
            more: true,
        };
        let counts = TableCounts { items: 3, bytes: 4_000, indexes: vec![("index-id".into(), 2, 90)] };
        let encoded = encode_table_counts(&counts);
        assert_eq!(decode_table_counts(&encoded), Ok(counts));
        assert!(decode_table_counts(&encoded[..encoded.len() - 1]).is_err());
        let encoded = encode_strict_entries(&strict);
        assert_eq!(decode_strict_entries(&encoded), Ok(strict));
        assert!(decode_strict_entries(&encoded[..encoded.len() - 1]).is_err());
        let json = |read: &RangeInput| serde_json::to_string(read).expect("serializes");
        assert_eq!(json(&decoded.read), json(&piece.read));

        let item: Item = [("pk".to_string(), AttributeValue::S("a".into()))].into_iter().collect();
        for last_key in [None, Some(item.clone())] {
            let page = Page {
                items: vec![item.clone(), Item::new()],
                count: 2,
                scanned_count: 3,
                scanned_bytes: 4_000,
                fetch_units: 1.5,
                last_key,
            };
            let bytes = encode_page(&page);
            assert_eq!(decode_page(&bytes), Ok(page));
            assert!(decode_page(&bytes[..bytes.len() - 1]).is_err(), "truncated");
        }
        let unbounded = Piece { range: Range { lower: Bound::Unbounded, ..piece.range.clone() }, ..piece };
        let bytes = encode_piece(&unbounded);
        assert_eq!(decode_piece(&bytes).expect("decodes").range.lower, Bound::Unbounded);
        assert!(decode_piece(&bytes[..bytes.len() - 1]).is_err(), "truncated");
    }
}

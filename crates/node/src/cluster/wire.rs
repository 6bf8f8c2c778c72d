//! The node-to-node messages of the item path, and their binary encoding.
//!
//! Every payload starts with [`WIRE_FORMAT_VERSION`]; an unknown version is refused (the
//! transport's handshake already refuses peers of another cluster protocol, this guards the
//! payloads themselves). Then: the table id (u16 length + UTF-8), the storage key (u32 length +
//! bytes), and the message's own fields. Versions travel as [`Record`]s in their own versioned
//! format (u32 length + bytes), ballots as two big-endian u64 (time, node).

use onggi_core::hlc::Timestamp;
use onggi_core::layout::NodeId;
use onggi_core::paxos::{Acceptance, Ballot, Knowledge, Lineage, Lineaged, Promise, Version};
use onggi_core::record::Record;
use onggi_model::Item;

/// The payload format version this build writes and reads.
pub const WIRE_FORMAT_VERSION: u8 = 1;

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
}

/// An item's value in consensus: the item (`None`: absent — never written, or deleted) and the
/// lineage of recent writes that made it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Value {
    /// The item, or `None` when absent.
    pub item: Option<Item>,
    /// Its recent writers.
    pub lineage: Lineage,
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
        expired: false,
        lineage: Some(version.value.lineage.clone()),
    }
}

/// A stored record as a version (a record written without a lineage knows nothing of its
/// writers up to its own version).
pub fn from_record(record: Record) -> Version<Value> {
    let lineage = record.lineage.unwrap_or_else(|| Lineage::unknown_before(record.version));
    Version { ballot: record.version, value: Value { item: record.item, lineage } }
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
    /// To [`Request::Commit`] sent as a request (the local replica).
    Committed,
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
    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().expect("8 bytes")))
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

/// Encodes a request about the item `key` of the table with id `table_id`.
pub fn encode_request(table_id: &str, key: &[u8], request: &Request) -> Vec<u8> {
    let mut out = Writer::new();
    out.bytes16(table_id.as_bytes());
    out.bytes32(key);
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
    }
    out.0
}

/// Decodes a request: the table id, the key and the request.
pub fn decode_request(bytes: &[u8]) -> Result<(String, Vec<u8>, Request), WireError> {
    let mut input = Reader::start(bytes)?;
    let table = String::from_utf8(input.bytes16()?.to_vec()).map_err(|_| WireError("table id".into()))?;
    let key = input.bytes32()?.to_vec();
    let request = match input.u8()? {
        0 => Request::Read,
        1 => Request::Prepare(input.ballot()?),
        2 => Request::Accept(input.version()?),
        3 => Request::Commit(input.version()?),
        other => return Err(WireError(format!("request kind {other}"))),
    };
    input.finish()?;
    Ok((table, key, request))
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
        Reply::Committed => out.u8(5),
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

#[cfg(test)]
mod tests {
    use super::*;
    use onggi_model::AttributeValue;

    fn ballot(time: u64, node: u64) -> Ballot {
        Ballot { time: Timestamp(time), node: NodeId(node) }
    }

    #[test]
    fn requests_and_replies_round_trip() {
        let mut item = Item::new();
        item.insert("pk".into(), AttributeValue::S("a".into()));
        let lineage = Lineage { since: Timestamp(5), writers: vec![ballot(7, 2)] };
        let version = Version { ballot: ballot(7, 2), value: Value { item: Some(item), lineage: lineage.clone() } };
        let tombstone = Version { ballot: ballot(8, 3), value: Value { item: None, lineage } };
        for request in [
            Request::Read,
            Request::Prepare(ballot(1, 1)),
            Request::Accept(version.clone()),
            Request::Commit(tombstone.clone()),
        ] {
            let bytes = encode_request("table-id", b"\x00key", &request);
            assert_eq!(decode_request(&bytes), Ok(("table-id".into(), b"\x00key".to_vec(), request)));
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
            Reply::Committed,
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
    fn refuses_other_versions_and_trailing_bytes() {
        let mut bytes = encode_reply(&Reply::Committed);
        bytes.push(0);
        assert!(decode_reply(&bytes).is_err());
        bytes[0] = 2;
        assert_eq!(decode_reply(&bytes[..2]), Err(WireError("payload format 2, this build reads 1".into())));
    }
}

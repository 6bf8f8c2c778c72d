//! The versioned item record: what every replica stores for one item key.
//!
//! A record is one version of an item — its version stamp (the [`Ballot`] of the consensus round
//! that chose it: a hybrid-logical-clock time and the coordinating node), and either the item or
//! a tombstone saying it was deleted. Deletes are tombstones rather than removals so that replicas
//! can later agree on "deleted at T" (anti-entropy, hinted handoff, read repair); tombstones are
//! collected only once every replica has them.
//!
//! Layout (format version 2): `[version: u8 = 2][flags: u8][time: u64 BE][node: u64 BE]` followed,
//! unless a tombstone, by the item in `onggi_model::codec` format version 1. Flags: bit 0 =
//! tombstone; bit 1 = expired (a tombstone written by the Time to Live expirer, which streams
//! report as a system deletion); bit 2 = a lineage follows the header, before the item:
//! `[since: u64 BE][count: u8][count × (time: u64 BE, node: u64 BE)]` (the recent writers a
//! cluster's consensus consults, see [`Lineage`]). Other bits are refused. Format version 1 (written by single-node
//! builds before the cluster) is the same without the node, and reads as node 0.

use onggi_model::Item;
use onggi_model::codec::{self, CodecError};

use crate::hlc::Timestamp;
use crate::layout::NodeId;
use crate::paxos::{Ballot, LINEAGE_WRITERS_MAX, Lineage};

/// The version of the record layout written by this code.
pub const RECORD_FORMAT_VERSION: u8 = 2;

const FLAG_TOMBSTONE: u8 = 1;
const FLAG_EXPIRED: u8 = 2;
const FLAG_LINEAGE: u8 = 4;
const HEADER_BYTES_V1: usize = 10;
const HEADER_BYTES: usize = 18;

/// One version of an item.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// Which version this is; versions of one key are ordered by it.
    pub version: Ballot,
    /// The item, or `None` for a tombstone.
    pub item: Option<Item>,
    /// A tombstone written because the item's Time to Live passed (never set on items).
    pub expired: bool,
    /// The writers of this version's recent history, when written through consensus.
    pub lineage: Option<Lineage>,
}

/// Why stored record bytes could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordError {
    /// Written by a format this code does not know; never reinterpreted.
    UnknownFormat(u8),
    /// Shorter than a header (or a tombstone with bytes after it).
    Truncated,
    /// Flag bits this version does not define: written by a newer build, or corrupt.
    UnknownFlags(u8),
    /// The item bytes are corrupt.
    Item(CodecError),
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordError::UnknownFormat(version) => {
                write!(f, "record format version {version} is not supported (this build reads {RECORD_FORMAT_VERSION})")
            }
            RecordError::Truncated => f.write_str("record length does not match its header"),
            RecordError::UnknownFlags(flags) => write!(f, "record has unknown flag bits {flags:#04x}"),
            RecordError::Item(error) => error.fmt(f),
        }
    }
}

impl std::error::Error for RecordError {}

impl Record {
    /// Encodes the record.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.push(RECORD_FORMAT_VERSION);
        let mut flags = if self.item.is_none() { FLAG_TOMBSTONE } else { 0 };
        if self.expired && self.item.is_none() {
            flags |= FLAG_EXPIRED;
        }
        if self.lineage.is_some() {
            flags |= FLAG_LINEAGE;
        }
        out.push(flags);
        out.extend_from_slice(&self.version.time.0.to_be_bytes());
        out.extend_from_slice(&self.version.node.0.to_be_bytes());
        if let Some(lineage) = &self.lineage {
            // At most LINEAGE_WRITERS_MAX (64) writers: the count fits a byte.
            let writers = &lineage.writers[..lineage.writers.len().min(LINEAGE_WRITERS_MAX)];
            out.extend_from_slice(&lineage.since.0.to_be_bytes());
            out.push(writers.len() as u8);
            for writer in writers {
                out.extend_from_slice(&writer.time.0.to_be_bytes());
                out.extend_from_slice(&writer.node.0.to_be_bytes());
            }
        }
        if let Some(item) = &self.item {
            codec::encode_item(item, &mut out);
        }
        out
    }

    /// Decodes a record, refusing unknown format versions.
    pub fn decode(bytes: &[u8]) -> Result<Record, RecordError> {
        let format = *bytes.first().ok_or(RecordError::Truncated)?;
        let header = match format {
            1 => HEADER_BYTES_V1,
            RECORD_FORMAT_VERSION => HEADER_BYTES,
            other => return Err(RecordError::UnknownFormat(other)),
        };
        if bytes.len() < header {
            return Err(RecordError::Truncated);
        }
        let flags = bytes[1];
        let known =
            if format == 1 { FLAG_TOMBSTONE | FLAG_EXPIRED } else { FLAG_TOMBSTONE | FLAG_EXPIRED | FLAG_LINEAGE };
        if flags & !known != 0 || flags & (FLAG_TOMBSTONE | FLAG_EXPIRED) == FLAG_EXPIRED {
            return Err(RecordError::UnknownFlags(flags));
        }
        let word = |at: usize| u64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let node = if format == 1 { NodeId(0) } else { NodeId(word(10)) };
        let version = Ballot { time: Timestamp(word(2)), node };
        let mut at = header;
        let lineage = if flags & FLAG_LINEAGE != 0 {
            if bytes.len() < at + 9 {
                return Err(RecordError::Truncated);
            }
            let since = Timestamp(word(at));
            let count = usize::from(bytes[at + 8]);
            at += 9;
            if count > LINEAGE_WRITERS_MAX || bytes.len() < at + 16 * count {
                return Err(RecordError::Truncated);
            }
            let writers = (0..count)
                .map(|i| Ballot { time: Timestamp(word(at + 16 * i)), node: NodeId(word(at + 16 * i + 8)) })
                .collect();
            at += 16 * count;
            Some(Lineage { since, writers })
        } else {
            None
        };
        let item = if flags & FLAG_TOMBSTONE != 0 {
            if bytes.len() != at {
                return Err(RecordError::Truncated);
            }
            None
        } else {
            Some(codec::decode_item(&bytes[at..]).map_err(RecordError::Item)?)
        };
        Ok(Record { version, item, expired: flags & FLAG_EXPIRED != 0, lineage })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use onggi_model::AttributeValue;

    #[test]
    fn round_trips_items_and_tombstones() {
        let mut item = Item::new();
        item.insert("pk".into(), AttributeValue::S("a".into()));
        let version = |time: Timestamp, node: u64| Ballot { time, node: NodeId(node) };
        for record in [
            Record {
                version: version(Timestamp::new(7, 3), 2),
                item: Some(item.clone()),
                expired: false,
                lineage: None,
            },
            Record { version: version(Timestamp(9), u64::MAX), item: None, expired: false, lineage: None },
            Record { version: version(Timestamp(10), 0), item: None, expired: true, lineage: None },
            Record {
                version: version(Timestamp(11), 1),
                item: Some(item.clone()),
                expired: false,
                lineage: Some(Lineage {
                    since: Timestamp(3),
                    writers: vec![version(Timestamp(4), 2), version(Timestamp(11), 1)],
                }),
            },
            Record {
                version: version(Timestamp(12), 1),
                item: None,
                expired: false,
                lineage: Some(Lineage { since: Timestamp(12), writers: Vec::new() }),
            },
        ] {
            assert_eq!(Record::decode(&record.encode()).unwrap(), record);
        }
        // Format 1 (no node) still reads, as node 0.
        let mut v1 = vec![1, 0];
        v1.extend_from_slice(&Timestamp::new(7, 3).0.to_be_bytes());
        codec::encode_item(&item, &mut v1);
        let record = Record::decode(&v1).unwrap();
        assert_eq!(record.version, version(Timestamp::new(7, 3), 0));
        assert_eq!(record.item, Some(item));
        assert_eq!(Record::decode(&[1, 1, 0, 0, 0, 0, 0, 0, 0, 9]).unwrap().item, None);
    }

    #[test]
    fn refuses_unknown_versions() {
        let mut bytes = Record { version: Ballot::ZERO, item: None, expired: false, lineage: None }.encode();
        bytes[0] = 3;
        assert_eq!(Record::decode(&bytes), Err(RecordError::UnknownFormat(3)));
        assert_eq!(Record::decode(&bytes[..17]), Err(RecordError::UnknownFormat(3)));
        bytes[0] = 2;
        assert_eq!(Record::decode(&bytes[..17]), Err(RecordError::Truncated));
        assert_eq!(Record::decode(&[]), Err(RecordError::Truncated));
    }
}

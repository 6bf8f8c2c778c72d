//! What a replica persists for each item's consensus, besides the item itself.
//!
//! An [`Acceptor`](crate::paxos::Acceptor) has three parts. The committed version is the item's
//! [`Record`] in the table's tree — what reads, indexes and anti-entropy use. The other two, the
//! promised ballot and the accepted-but-not-yet-committed proposal, are kept apart in a
//! consensus tree under the same storage key, as one [`ConsensusState`] value, and removed when a
//! commit makes them redundant (no promise above the committed version, no proposal waiting), so
//! the tree holds only items with a round in flight or recently finished.
//!
//! Layout (format version 1): `[version: u8 = 1][promised time: u64 BE][promised node: u64 BE]
//! [accepted: u8 = 0 | 1]` followed, when accepted is 1, by the proposal as a [`Record`] in its own
//! format. Unknown versions are refused, never reinterpreted.

use crate::hlc::Timestamp;
use crate::layout::NodeId;
use crate::paxos::Ballot;
use crate::record::{Record, RecordError};

/// The version of the consensus state layout written by this code.
pub const CONSENSUS_STATE_FORMAT_VERSION: u8 = 1;

const HEADER_BYTES: usize = 18;

/// A replica's persisted consensus state for one item, the committed version aside.
#[derive(Clone, Debug, PartialEq)]
pub struct ConsensusState {
    /// The highest ballot promised.
    pub promised: Ballot,
    /// The proposal accepted and not yet known committed; its version is the ballot it was
    /// accepted at.
    pub accepted: Option<Record>,
}

/// Why stored consensus state could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConsensusStateError {
    /// Written by a format this code does not know.
    UnknownFormat(u8),
    /// Shorter than its header, or a flag byte other than 0 or 1.
    Malformed,
    /// The accepted proposal is unreadable.
    Record(RecordError),
}

impl std::fmt::Display for ConsensusStateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConsensusStateError::UnknownFormat(version) => write!(
                f,
                "consensus state format version {version} is not supported (this build reads \
                 {CONSENSUS_STATE_FORMAT_VERSION})"
            ),
            ConsensusStateError::Malformed => f.write_str("consensus state is malformed"),
            ConsensusStateError::Record(error) => write!(f, "accepted proposal: {error}"),
        }
    }
}

impl std::error::Error for ConsensusStateError {}

impl ConsensusState {
    /// Encodes the state.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_BYTES + 64);
        out.push(CONSENSUS_STATE_FORMAT_VERSION);
        out.extend_from_slice(&self.promised.time.0.to_be_bytes());
        out.extend_from_slice(&self.promised.node.0.to_be_bytes());
        match &self.accepted {
            None => out.push(0),
            Some(record) => {
                out.push(1);
                out.extend_from_slice(&record.encode());
            }
        }
        out
    }

    /// Decodes a state, refusing unknown format versions.
    pub fn decode(bytes: &[u8]) -> Result<ConsensusState, ConsensusStateError> {
        let format = *bytes.first().ok_or(ConsensusStateError::Malformed)?;
        if format != CONSENSUS_STATE_FORMAT_VERSION {
            return Err(ConsensusStateError::UnknownFormat(format));
        }
        if bytes.len() < HEADER_BYTES {
            return Err(ConsensusStateError::Malformed);
        }
        let word = |at: usize| u64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let promised = Ballot { time: Timestamp(word(1)), node: NodeId(word(9)) };
        let accepted = match bytes[17] {
            0 if bytes.len() == HEADER_BYTES => None,
            1 => Some(Record::decode(&bytes[HEADER_BYTES..]).map_err(ConsensusStateError::Record)?),
            _ => return Err(ConsensusStateError::Malformed),
        };
        Ok(ConsensusState { promised, accepted })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use onggi_model::{AttributeValue, Item};

    fn ballot(time: u64, node: u64) -> Ballot {
        Ballot { time: Timestamp(time), node: NodeId(node) }
    }

    #[test]
    fn round_trips_with_and_without_a_proposal() {
        let mut item = Item::new();
        item.insert("pk".into(), AttributeValue::S("a".into()));
        for state in [
            ConsensusState { promised: ballot(5, 2), accepted: None },
            ConsensusState {
                promised: ballot(u64::MAX, u64::MAX),
                accepted: Some(Record { version: ballot(4, 1), item: Some(item), expired: false, lineage: None }),
            },
            ConsensusState {
                promised: ballot(9, 3),
                accepted: Some(Record {
                    version: ballot(9, 3),
                    item: None,
                    expired: false,
                    lineage: Some(crate::paxos::Lineage { since: Timestamp(2), writers: vec![ballot(9, 3)] }),
                }),
            },
        ] {
            assert_eq!(ConsensusState::decode(&state.encode()), Ok(state));
        }
    }

    #[test]
    fn refuses_unknown_formats_and_malformed_bytes() {
        let mut bytes = ConsensusState { promised: ballot(1, 1), accepted: None }.encode();
        assert_eq!(ConsensusState::decode(&bytes[..17]), Err(ConsensusStateError::Malformed));
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(ConsensusState::decode(&trailing), Err(ConsensusStateError::Malformed));
        bytes[17] = 2;
        assert_eq!(ConsensusState::decode(&bytes), Err(ConsensusStateError::Malformed));
        bytes[0] = 9;
        assert_eq!(ConsensusState::decode(&bytes), Err(ConsensusStateError::UnknownFormat(9)));
        assert_eq!(ConsensusState::decode(&[]), Err(ConsensusStateError::Malformed));
        let mut broken = ConsensusState { promised: ballot(1, 1), accepted: None }.encode();
        broken[17] = 1;
        assert!(matches!(ConsensusState::decode(&broken), Err(ConsensusStateError::Record(_))));
    }
}

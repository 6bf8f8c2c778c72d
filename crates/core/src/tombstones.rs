//! Tombstone collection: when a replica may forget that an item was deleted.
//!
//! A delete writes a tombstone (see [`crate::record`]) rather than removing the item, because
//! replicas must agree that it is gone: a replica that missed the delete still holds the old
//! version, and anti-entropy, hints and read repair spread versions by ballot, so the tombstone
//! is what keeps the old version from coming back. Removing it is safe only once nothing older
//! can ever be applied again anywhere — the rule of the Dynamo paper's descendants (Cassandra's
//! `gc_grace_seconds`, ScyllaDB's repair-based tombstone collection): every replica must have
//! it first. This module makes that rule exact instead of a timeout, per partition, in three
//! phases that one replica (the *initiator*) runs with **every** replica of the partition (not a
//! majority: one replica that cannot answer stops collection there, as it must).
//!
//! 1. **Prepare** at a floor `F` (a time some seconds in the past, [`floor_at`]). Each replica
//!    promises, for the whole partition, never again to grant a prepare or accept at a ballot
//!    time at or below `F` (its *promise floor*: a partition-wide Paxos promise), persists that,
//!    and answers whether it holds a proposal accepted at or below `F` and not committed
//!    (`pending`), a digest of its **live** records (not tombstones) at or below `F`, and a
//!    token naming the state its answer saw ([`AdoptToken`]). Once every replica has promised,
//!    no version at or below `F` can be chosen any more; with nothing pending, every version at
//!    or below `F` that was ever chosen is committed on every replica that accepted it, or
//!    superseded.
//! 2. **Adopt** `F`, when every replica answered, none has anything pending and all digests are
//!    equal — so every replica holds exactly the same live versions at or below `F`, and any
//!    tombstone at or below `F` is matched everywhere by the same tombstone, nothing, or a newer
//!    version. A replica adopts only if no commit of a version at or below its promise floor was
//!    applied since its prepare answer (the token), and from then on **drops** every commit
//!    (message, hint, anti-entropy, read repair) of a version at or below its adopted floor: such
//!    a version is already there, superseded, or the ghost of a collected item.
//! 3. **Collect**, once every replica adopted: each removes its tombstones at or below `F`
//!    whose consensus state holds nothing above its promise floor ([`collectable`]). Before
//!    that, a replica that had not yet adopted could still take a late copy of an old version
//!    for an item another replica already forgot.
//!
//! A failed phase changes nothing that matters: a promise floor only makes old ballots retry
//! higher (refusing is always safe in Paxos), and a round that does not reach "adopt" leaves
//! every replica applying commits as before. Collection pauses while a partition's layout
//! changes (its replica sets are two), and a replica that gains or gives away a partition starts
//! its floors there from zero.
//!
//! Floors are hybrid-logical-clock times; a ballot at or below a floor is one whose time is.

use crate::hlc::Timestamp;
use crate::layout::NodeId;
use crate::paxos::Ballot;
use std::collections::BTreeMap;

/// The version of [`Floors`]' stored layout written by this code.
pub const FLOORS_FORMAT_VERSION: u8 = 1;

/// A replica's collection floors for one partition of one table, persisted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Floors {
    /// No prepare or accept at a ballot time at or below it is granted in the partition.
    pub promised: Timestamp,
    /// No commit of a version at or below it is applied in the partition.
    pub adopted: Timestamp,
}

/// Why stored floors could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FloorsError(pub String);

impl std::fmt::Display for FloorsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FloorsError {}

impl Floors {
    /// `[version 1][promised u64 BE][adopted u64 BE]`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(17);
        out.push(FLOORS_FORMAT_VERSION);
        out.extend_from_slice(&self.promised.0.to_be_bytes());
        out.extend_from_slice(&self.adopted.0.to_be_bytes());
        out
    }

    /// Reads [`Floors::encode`]'s layout; refuses other versions and lengths.
    pub fn decode(bytes: &[u8]) -> Result<Floors, FloorsError> {
        match bytes.first() {
            Some(&FLOORS_FORMAT_VERSION) if bytes.len() == 17 => {
                let word = |at: usize| {
                    let mut array = [0u8; 8];
                    array.copy_from_slice(&bytes[at..at + 8]);
                    Timestamp(u64::from_be_bytes(array))
                };
                Ok(Floors { promised: word(1), adopted: word(9) })
            }
            Some(&FLOORS_FORMAT_VERSION) => Err(FloorsError("collection floors are malformed".into())),
            Some(other) => Err(FloorsError(format!(
                "collection floors format version {other} is not supported (this build reads \
                 {FLOORS_FORMAT_VERSION})"
            ))),
            None => Err(FloorsError("collection floors are empty".into())),
        }
    }

    /// Whether a prepare or accept at `ballot` must be refused.
    pub fn refuses(&self, ballot: Ballot) -> bool {
        ballot.time <= self.promised
    }

    /// The ballot a refusal under the promise floor names: above every ballot at or below the
    /// floor, so a proposer that retries above it is above the floor too.
    pub fn refusal(&self) -> Ballot {
        Ballot { time: self.promised, node: NodeId(u64::MAX) }
    }

    /// Whether a commit of a version at `ballot` is dropped (see the module docs, phase 2).
    pub fn drops(&self, ballot: Ballot) -> bool {
        ballot.time <= self.adopted
    }
}

/// The floor of a round started at wall-clock `now_ms`, `grace_ms` in the past: the latest time
/// of that millisecond, so every ballot of it is at or below. Far enough behind the present that
/// rounds in flight (their ballots are recent) rarely meet it.
pub fn floor_at(now_ms: u64, grace_ms: u64) -> Timestamp {
    Timestamp::new(now_ms.saturating_sub(grace_ms), u16::MAX)
}

/// Whether a stored tombstone may be removed by a replica whose floors are `floors` and which
/// may collect up to `collect_to`: the tombstone (at `tombstone`) is at or below it, and the
/// item's consensus state (if any) holds no accepted proposal and no promise above the promise
/// floor (a promise the floor does not cover would be forgotten with the state).
pub fn collectable(
    tombstone: Ballot,
    collect_to: Timestamp,
    floors: &Floors,
    consensus: Option<(Ballot, bool)>,
) -> bool {
    if tombstone.time > collect_to || collect_to > floors.adopted {
        return false;
    }
    match consensus {
        None => true,
        Some((promised, has_accepted)) => !has_accepted && promised.time <= floors.promised,
    }
}

/// What a replica's commits looked like when it answered a prepare: adopting checks that nothing
/// at or below its promise floor was applied since (`life` tells one run of the process from the
/// next, whose counter starts again).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdoptToken {
    /// Drawn at random when the replica's process starts.
    pub life: u64,
    /// Commits at or below the promise floor applied in the partition so far in this life.
    pub old_commits: u64,
}

/// A replica's answer to a prepare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prepared {
    /// A proposal at or below the floor is accepted and not committed.
    pub pending: bool,
    /// The digest of its live records at or below the floor ([`LiveDigest`]).
    pub digest: u128,
    /// See [`AdoptToken`].
    pub token: AdoptToken,
}

/// A digest of the live records at or below a floor, fed in key order (every replica scans its
/// partition in the same order, so equal sets give equal digests).
pub struct LiveDigest {
    hasher: xxhash_rust::xxh3::Xxh3,
    floor: Timestamp,
}

impl LiveDigest {
    /// An empty digest of the records at or below `floor`.
    pub fn new(floor: Timestamp) -> LiveDigest {
        LiveDigest { hasher: xxhash_rust::xxh3::Xxh3::new(), floor }
    }

    /// Takes one stored record: its key, version and whether it is a tombstone.
    pub fn add(&mut self, key: &[u8], version: Ballot, tombstone: bool) {
        if tombstone || version.time > self.floor {
            return;
        }
        self.hasher.update(&(key.len() as u32).to_be_bytes());
        self.hasher.update(key);
        self.hasher.update(&version.time.0.to_be_bytes());
        self.hasher.update(&version.node.0.to_be_bytes());
    }

    /// The digest.
    pub fn finish(&self) -> u128 {
        self.hasher.digest128()
    }
}

/// Why a round stopped before collecting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Abandoned {
    /// A replica holds a proposal at or below the floor that is not committed (anti-entropy
    /// finishes it; a later round tries again).
    Pending(NodeId),
    /// Two replicas hold different live versions at or below the floor (anti-entropy repairs
    /// them first).
    Differ(NodeId, NodeId),
    /// A replica refused to adopt: it applied an old commit after answering the prepare.
    Moved(NodeId),
}

/// What the initiator does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Wait for more answers.
    Wait,
    /// Send each replica its adopt (with the token it answered).
    Adopt(Vec<(NodeId, AdoptToken)>),
    /// Every replica adopted: tell each to collect up to the floor.
    Collect,
    /// Stop here; nothing is collected this round.
    Abandon(Abandoned),
}

/// The initiator's side of one round over a partition's replicas (see the module docs). Answers
/// from nodes that are not replicas, or repeated, are ignored; a replica that never answers
/// leaves the round waiting, and the caller's timeout ends it.
#[derive(Clone, Debug)]
pub struct Round {
    floor: Timestamp,
    replicas: Vec<NodeId>,
    prepared: BTreeMap<NodeId, Prepared>,
    adopted: Vec<NodeId>,
    over: bool,
}

impl Round {
    /// A round at `floor` over `replicas` (all of the partition's, the initiator among them).
    pub fn new(floor: Timestamp, replicas: Vec<NodeId>) -> Round {
        Round { floor, replicas, prepared: BTreeMap::new(), adopted: Vec::new(), over: false }
    }

    /// The round's floor.
    pub fn floor(&self) -> Timestamp {
        self.floor
    }

    /// A replica's answer to the prepare.
    pub fn on_prepared(&mut self, from: NodeId, answer: Prepared) -> Next {
        if self.over || !self.replicas.contains(&from) || self.prepared.contains_key(&from) {
            return Next::Wait;
        }
        if answer.pending {
            self.over = true;
            return Next::Abandon(Abandoned::Pending(from));
        }
        if let Some((&other, _)) = self.prepared.iter().find(|(_, seen)| seen.digest != answer.digest) {
            self.over = true;
            return Next::Abandon(Abandoned::Differ(other, from));
        }
        self.prepared.insert(from, answer);
        if self.prepared.len() < self.replicas.len() {
            return Next::Wait;
        }
        Next::Adopt(self.prepared.iter().map(|(&node, answer)| (node, answer.token)).collect())
    }

    /// A replica's answer to the adopt: whether it adopted.
    pub fn on_adopted(&mut self, from: NodeId, adopted: bool) -> Next {
        if self.over || !self.prepared.contains_key(&from) || self.adopted.contains(&from) {
            return Next::Wait;
        }
        if !adopted {
            self.over = true;
            return Next::Abandon(Abandoned::Moved(from));
        }
        self.adopted.push(from);
        if self.adopted.len() < self.replicas.len() {
            return Next::Wait;
        }
        self.over = true;
        Next::Collect
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ballot(time: u64, node: u64) -> Ballot {
        Ballot { time: Timestamp(time), node: NodeId(node) }
    }

    fn prepared(digest: u128, old_commits: u64) -> Prepared {
        Prepared { pending: false, digest, token: AdoptToken { life: 7, old_commits } }
    }

    #[test]
    fn floors_round_trip_and_refuse_other_formats() {
        let floors = Floors { promised: Timestamp(9 << 16), adopted: Timestamp(5 << 16) };
        assert_eq!(Floors::decode(&floors.encode()), Ok(floors));
        let mut other = floors.encode();
        other[0] = 2;
        assert!(Floors::decode(&other).unwrap_err().0.contains("version 2"));
        assert!(Floors::decode(&floors.encode()[..16]).is_err());
        assert!(Floors::decode(&[]).is_err());
    }

    #[test]
    fn floors_refuse_and_drop_at_or_below() {
        let floors = Floors { promised: floor_at(10_000, 1_000), adopted: floor_at(8_000, 1_000) };
        // Every ballot of the floor's millisecond is at or below it.
        assert!(floors.refuses(ballot(Timestamp::new(9_000, u16::MAX).0, u64::MAX - 1)));
        assert!(!floors.refuses(ballot(Timestamp::new(9_001, 0).0, 1)));
        assert!(floors.refusal() > ballot(Timestamp::new(9_000, u16::MAX).0, u64::MAX - 1));
        assert!(floors.refusal() < ballot(Timestamp::new(9_001, 0).0, 0));
        assert!(floors.drops(ballot(Timestamp::new(7_000, 3).0, 1)));
        assert!(!floors.drops(ballot(Timestamp::new(7_001, 0).0, 1)));
        assert_eq!(floor_at(500, 1_000), Timestamp::new(0, u16::MAX));
    }

    #[test]
    fn only_tombstones_below_an_adopted_floor_with_no_live_consensus_go() {
        let floors = Floors { promised: Timestamp(100), adopted: Timestamp(80) };
        assert!(collectable(ballot(80, 1), Timestamp(80), &floors, None));
        assert!(!collectable(ballot(81, 1), Timestamp(80), &floors, None));
        // Collecting beyond what was adopted is refused.
        assert!(!collectable(ballot(80, 1), Timestamp(90), &floors, None));
        // A promise the floor covers goes with the state; one above it keeps the tombstone.
        assert!(collectable(ballot(70, 1), Timestamp(80), &floors, Some((ballot(100, 2), false))));
        assert!(!collectable(ballot(70, 1), Timestamp(80), &floors, Some((ballot(101, 2), false))));
        assert!(!collectable(ballot(70, 1), Timestamp(80), &floors, Some((ballot(90, 2), true))));
    }

    #[test]
    fn digests_cover_live_records_at_or_below_the_floor_only() {
        let digest = |records: &[(&[u8], u64, bool)]| {
            let mut digest = LiveDigest::new(Timestamp(50));
            for &(key, time, tombstone) in records {
                digest.add(key, ballot(time, 1), tombstone);
            }
            digest.finish()
        };
        let base = digest(&[(b"a", 10, false), (b"b", 20, false)]);
        // Tombstones and newer versions do not count: a replica that collected, or that holds a
        // newer write, digests the same.
        assert_eq!(base, digest(&[(b"a", 10, false), (b"b", 20, false), (b"c", 30, true), (b"d", 60, false)]));
        // A live version another replica replaced by a tombstone does.
        assert_ne!(base, digest(&[(b"a", 10, false), (b"b", 20, false), (b"c", 30, false)]));
        assert_ne!(base, digest(&[(b"a", 10, false), (b"b", 21, false)]));
        assert_ne!(base, digest(&[(b"a", 10, false)]));
        // Keys and versions cannot run into each other.
        assert_ne!(digest(&[(b"ab", 10, false)]), digest(&[(b"a", 10, false), (b"b", 10, false)]));
    }

    #[test]
    fn a_round_adopts_only_when_every_replica_agrees() {
        let replicas = vec![NodeId(1), NodeId(2), NodeId(3)];
        let mut round = Round::new(Timestamp(50), replicas.clone());
        assert_eq!(round.on_prepared(NodeId(1), prepared(9, 0)), Next::Wait);
        assert_eq!(round.on_prepared(NodeId(1), prepared(9, 0)), Next::Wait, "repeats are ignored");
        assert_eq!(round.on_prepared(NodeId(4), prepared(8, 0)), Next::Wait, "strangers are ignored");
        assert_eq!(round.on_prepared(NodeId(2), prepared(9, 3)), Next::Wait);
        let Next::Adopt(tokens) = round.on_prepared(NodeId(3), prepared(9, 1)) else { panic!("no adopt") };
        assert_eq!(
            tokens.iter().map(|(node, token)| (node.0, token.old_commits)).collect::<Vec<_>>(),
            [(1, 0), (2, 3), (3, 1)]
        );
        assert_eq!(round.on_adopted(NodeId(1), true), Next::Wait);
        assert_eq!(round.on_adopted(NodeId(2), true), Next::Wait);
        assert_eq!(round.on_adopted(NodeId(3), true), Next::Collect);
        assert_eq!(round.on_adopted(NodeId(3), true), Next::Wait, "over");

        let mut differ = Round::new(Timestamp(50), replicas.clone());
        differ.on_prepared(NodeId(1), prepared(9, 0));
        assert_eq!(
            differ.on_prepared(NodeId(3), prepared(8, 0)),
            Next::Abandon(Abandoned::Differ(NodeId(1), NodeId(3)))
        );
        assert_eq!(differ.on_prepared(NodeId(2), prepared(9, 0)), Next::Wait);

        let mut pending = Round::new(Timestamp(50), replicas.clone());
        let answer = Prepared { pending: true, ..prepared(9, 0) };
        assert_eq!(pending.on_prepared(NodeId(2), answer), Next::Abandon(Abandoned::Pending(NodeId(2))));

        let mut moved = Round::new(Timestamp(50), replicas);
        for node in 1..=3 {
            moved.on_prepared(NodeId(node), prepared(9, 0));
        }
        assert_eq!(moved.on_adopted(NodeId(1), true), Next::Wait);
        assert_eq!(moved.on_adopted(NodeId(2), false), Next::Abandon(Abandoned::Moved(NodeId(2))));
        assert_eq!(moved.on_adopted(NodeId(3), true), Next::Wait);
    }
}

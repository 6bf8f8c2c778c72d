//! Per-item consensus: how the replicas of one item agree on its versions in strict mode.
//!
//! **The protocol** is CASPaxos (Rystsov, "CASPaxos: Replicated State Machines without logs",
//! 2018) — single-decree Paxos (Lamport, "Paxos Made Simple", 2001) re-run for every change, where
//! the proposed value is a pure function of the latest value the proposer learned — with the
//! committed/accepted split of Cassandra's Paxos v2 (CEP-14). There is no leader: any node
//! coordinates any operation on any item, in two round trips.
//!
//! 1. *Prepare.* The coordinator picks a ballot — its hybrid-logical-clock time and its node id,
//!    so ballots are unique and every version's ballot is also its timestamp — and asks every
//!    replica to promise it. A replica promises when it has promised nothing higher, persists the
//!    promise, and answers with the proposal it last accepted and the latest version it knows is
//!    committed. With a majority of promises the coordinator takes the highest-ballot version
//!    among all the answers as the item's current value.
//! 2. *Accept.* The operation (a put, a condition and an update expression, a delete) is applied
//!    to that value — by the caller, a pure function: a retry re-runs it — and the result is sent
//!    with the same ballot. A replica accepts unless it promised a higher ballot, and persists the
//!    proposal before answering. A majority of acceptances means the version is *chosen*: the
//!    write is acknowledged to the client.
//! 3. *Commit* (asynchronous, not awaited): every replica is told the chosen version, stores it
//!    as its committed value (what eventually consistent reads, indexes, hints, read repair and
//!    anti-entropy use) and forgets the accepted proposal it supersedes.
//!
//! **Why it is safe.** Paxos' invariant: once a version is chosen at ballot `b`, every proposal
//! with a higher ballot carries a value derived from it, because its prepare quorum intersects
//! `b`'s accept quorum and it builds on the highest accepted proposal it sees. Committed versions
//! are chosen ones, so they may travel freely (hints, repair, anti-entropy merge them by ballot)
//! without weakening that argument; proposals merely accepted never leave the replica's consensus
//! state except through another Paxos round, since spreading one that was never chosen could
//! make it chosen behind the back of a proposer that already decided without it.
//!
//! **One round trip for a coordinator's next write** (CASPaxos §2.2.1, "one-round trip
//! optimisation"; Multi-Paxos' leader does the same for a whole log). An accept may carry the
//! proposer's next ballot for the item: a replica that accepts the proposal and holds nothing newer
//! than it also promises that ballot, in the same persisted state. Such a promise is exactly what a
//! prepare of the next ballot would get — the replica would answer with the proposal just
//! accepted — so once a quorum has accepted and promised, the proposer holds a [`Lease`]: the
//! item's current value and a ballot a quorum promised, and its next operation on the item starts
//! at the accept ([`Proposer::resume`]). Anyone else's prepare above the leased ballot takes the
//! promise back from a majority, and the leased accept then fails and retries with a full round;
//! a lease is used once. Operations that keep the value (a failed condition) re-propose it at the
//! leased ballot, since only a quorum's acceptance shows the lease still holds.
//!
//! **Strict reads** take one round trip in the common case: a non-mutating read of a majority's
//! state; when the highest version seen is known chosen (some replica has it committed, or every
//! answer carries it as accepted — a majority) it is the answer. A read that finds an unfinished
//! proposal instead runs a full round that re-proposes it unchanged, so a value once returned
//! can never disappear (reads never go back in time). A read changes no state, so it costs no
//! disk write.
//!
//! **Retries never apply an operation twice, and never hide one.** When the accept phase fails
//! (a higher promise, a lost message, a timeout) some replica may hold the proposal — even one
//! that answered with a refusal, since a duplicated accept can be taken by its first copy and
//! refused by its second — and a later round may find it, or a version derived from it. So the
//! proposer remembers every attempt it sent, with the round whose decision it carries. In the
//! next round: if the current value *is* one of those attempts the operation already happened — it
//! is re-proposed unchanged and reported done with that earlier round's decision
//! ([`Outcome::decided_at`]); if the current value is older than every attempt (or is a value
//! this operation itself re-proposed unchanged) none of the attempts can be in its history, so the
//! operation is applied afresh — and even when that application changes nothing (a condition now
//! fails) its current value is re-proposed at the new ballot, because once a higher ballot is
//! chosen the old attempts can never surface after the client heard "not applied"; otherwise (a
//! newer foreign version, which may or may not derive from an attempt) the outcome cannot be
//! known and the proposer says so ([`Step::Indeterminate`]) — DynamoDB's own contract for a write
//! that fails with a server error. Each of these rules was found necessary by the simulator
//! (`crates/sim`), which produced non-linearizable histories without it.
//!
//! Everything here is pure: the shell (node or simulator) moves messages, persists acceptor state
//! before sending replies, keeps timers and supplies ballots from its clock.

use crate::hlc::Timestamp;
use crate::layout::NodeId;

/// Orders proposals and versions of an item: a hybrid-logical-clock time, ties broken by node.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Ballot {
    /// When the coordinator started the round.
    pub time: Timestamp,
    /// The coordinator, so that two nodes never share a ballot.
    pub node: NodeId,
}

impl Ballot {
    /// Lower than every real ballot.
    pub const ZERO: Ballot = Ballot { time: Timestamp::ZERO, node: NodeId(0) };
}

/// One version of an item's value, stamped with the ballot it was accepted at.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Version<V> {
    /// The ballot of the round that proposed it; also its timestamp.
    pub ballot: Ballot,
    /// The value (for items: the item, or a tombstone).
    pub value: V,
}

/// The highest-ballot version of two.
fn newer<'a, V>(a: Option<&'a Version<V>>, b: Option<&'a Version<V>>) -> Option<&'a Version<V>> {
    match (a, b) {
        (Some(x), Some(y)) => Some(if y.ballot > x.ballot { y } else { x }),
        (x, None) => x,
        (None, y) => y,
    }
}

/// A replica's consensus state for one item. Must be persisted, before any reply that depends on
/// it is sent, whenever a handler reports a change.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Acceptor<V> {
    /// The highest ballot promised: no proposal below it is accepted.
    pub promised: Ballot,
    /// The last proposal accepted and not yet known committed.
    pub accepted: Option<Version<V>>,
    /// The latest version known chosen.
    pub committed: Option<Version<V>>,
}

impl<V> Default for Acceptor<V> {
    fn default() -> Self {
        Acceptor { promised: Ballot::ZERO, accepted: None, committed: None }
    }
}

/// What a replica knows of an item: its answer to a read or a successful prepare.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Knowledge<V> {
    /// The last proposal accepted and not yet known committed.
    pub accepted: Option<Version<V>>,
    /// The latest version known chosen.
    pub committed: Option<Version<V>>,
}

/// A replica's answer to a prepare.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Promise<V> {
    /// Promised; here is what the replica knows.
    Granted(Knowledge<V>),
    /// Refused: the replica has promised (or committed) this ballot, which is higher.
    Refused(Ballot),
}

/// A replica's answer to an accept.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Acceptance {
    /// Accepted (and persisted).
    Accepted,
    /// Accepted, and the proposer's next ballot (carried by the accept) promised: the replica
    /// holds nothing newer than the proposal (persisted with it; see "One round trip" above).
    AcceptedPromising(Ballot),
    /// Refused: the replica has promised (or committed) this ballot, which is higher.
    Refused(Ballot),
}

impl<V: Clone + PartialEq> Acceptor<V> {
    /// What this replica knows, without changing anything (the answer to a strict read).
    pub fn knowledge(&self) -> Knowledge<V> {
        Knowledge { accepted: self.accepted.clone(), committed: self.committed.clone() }
    }

    fn committed_ballot(&self) -> Ballot {
        self.committed.as_ref().map_or(Ballot::ZERO, |version| version.ballot)
    }

    /// Handles a prepare. Returns the answer and whether the state changed (and must be persisted
    /// before the answer is sent).
    pub fn prepare(&mut self, ballot: Ballot) -> (Promise<V>, bool) {
        let floor = self.promised.max(self.committed_ballot());
        if ballot < floor || (ballot == floor && ballot != self.promised) {
            return (Promise::Refused(floor), false);
        }
        // A repeated prepare of the promised ballot (a duplicated message) is granted again.
        let changed = ballot != self.promised;
        self.promised = ballot;
        (Promise::Granted(self.knowledge()), changed)
    }

    /// Handles an accept. Returns the answer and whether the state changed (and must be persisted
    /// before the answer is sent).
    pub fn accept(&mut self, proposal: Version<V>) -> (Acceptance, bool) {
        let committed = self.committed_ballot();
        if proposal.ballot <= committed {
            // Already chosen at this ballot: accepting again changes nothing. Below it: too late.
            return if proposal.ballot == committed {
                (Acceptance::Accepted, false)
            } else {
                (Acceptance::Refused(self.promised.max(committed)), false)
            };
        }
        if proposal.ballot < self.promised {
            return (Acceptance::Refused(self.promised), false);
        }
        if self.accepted.as_ref() == Some(&proposal) {
            return (Acceptance::Accepted, false);
        }
        self.promised = proposal.ballot;
        self.accepted = Some(proposal);
        (Acceptance::Accepted, true)
    }

    /// Handles an accept that carries the proposer's next ballot for the item, `next` (above the
    /// proposal's). Accepted as [`Acceptor::accept`] would; then, if the proposal is the newest
    /// thing this replica holds and nothing above `next` is promised, `next` is promised too and
    /// the answer says so. Returns the answer and whether the state changed.
    pub fn accept_promising(&mut self, proposal: Version<V>, next: Ballot) -> (Acceptance, bool) {
        if self.promised == next && self.accepted.as_ref() == Some(&proposal) {
            // A duplicate: answered as the first copy was.
            return (Acceptance::AcceptedPromising(next), false);
        }
        let ballot = proposal.ballot;
        let (answer, mut changed) = self.accept(proposal);
        let holds_it_newest = self.accepted.as_ref().is_some_and(|accepted| accepted.ballot == ballot);
        if answer == Acceptance::Accepted && next > ballot && holds_it_newest && self.promised <= next {
            changed |= self.promised != next;
            self.promised = next;
            return (Acceptance::AcceptedPromising(next), changed);
        }
        (answer, changed)
    }

    /// Records a chosen version (a commit, a hint, a repair). Returns whether the state changed.
    /// Older versions are ignored, so delivery may repeat and reorder.
    pub fn commit(&mut self, chosen: Version<V>) -> bool {
        if chosen.ballot <= self.committed_ballot() {
            return false;
        }
        if self.accepted.as_ref().is_some_and(|accepted| accepted.ballot <= chosen.ballot) {
            self.accepted = None;
        }
        self.committed = Some(chosen);
        true
    }

    /// Whether a proposal newer than the committed version waits here: a round that may not have
    /// finished, which a background read completes (see [`Proposer::read`]).
    pub fn unfinished(&self) -> bool {
        self.accepted.is_some()
    }
}

/// What a value knows of the operations that wrote it, so that a proposer whose earlier attempt
/// may or may not have been built upon can tell (see "Retries" in the module docs).
pub trait Lineaged {
    /// `Some(true)` if the write proposed at ballot `attempt` is in this value's history,
    /// `Some(false)` if it certainly is not, `None` if the value cannot tell.
    fn written_by(&self, attempt: Ballot) -> Option<bool>;
}

/// Values that keep no lineage: a proposer falls back on ballot order alone.
impl Lineaged for u64 {
    fn written_by(&self, _attempt: Ballot) -> Option<bool> {
        None
    }
}

/// The recent writers of a value: the attempt ballots of the writes in its history since a
/// time, complete from that time on. (A shell may list other ballots too, as long as no attempt
/// ever has them: the node adds the *mark* of a write it may run twice, a ballot minted for the
/// write and never proposed with, to apply it once.) A writer adds its attempt's ballot; entries older than a
/// window behind the newest are dropped (raising `since`), so the lineage of an item written
/// rarely is empty, and a contended one holds the writes of the last window — longer than any
/// operation's retries last.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Lineage {
    /// Every write in the history at or after this time is listed.
    pub since: Timestamp,
    /// Attempt ballots of the writes since then, oldest first.
    pub writers: Vec<Ballot>,
}

/// Most writers a lineage keeps, whatever the window.
pub const LINEAGE_WRITERS_MAX: usize = 64;

impl Lineage {
    /// The lineage of a version written without one (before the cluster, or by one node alone):
    /// nothing is known of writes up to and including `version`.
    pub fn unknown_before(version: Ballot) -> Lineage {
        Lineage { since: Timestamp(version.time.0.saturating_add(1)), writers: Vec::new() }
    }

    /// See [`Lineaged::written_by`].
    pub fn written_by(&self, attempt: Ballot) -> Option<bool> {
        if self.writers.contains(&attempt) {
            Some(true)
        } else if attempt.time >= self.since {
            Some(false)
        } else {
            None
        }
    }

    /// This lineage with the write proposed at `attempt` added, keeping `window_ms` of history.
    pub fn with_writer(&self, attempt: Ballot, window_ms: u64) -> Lineage {
        let horizon = Timestamp::new(attempt.time.physical_ms().saturating_sub(window_ms), 0);
        let mut since = self.since.max(horizon);
        let mut writers: Vec<Ballot> =
            self.writers.iter().copied().filter(|writer| writer.time >= since && *writer != attempt).collect();
        writers.push(attempt);
        writers.sort_unstable();
        while writers.len() > LINEAGE_WRITERS_MAX {
            let dropped = writers.remove(0);
            since = since.max(Timestamp(dropped.time.0.saturating_add(1)));
        }
        Lineage { since, writers }
    }
}

/// The caller's decision once the item's current value is known.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Decision<V> {
    /// Change nothing (a read, or a condition that failed): the current value is the answer.
    Keep,
    /// Propose this new value.
    Write(V),
}

/// What the shell does next for an operation.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Step<V> {
    /// Nothing until more answers arrive (or the shell's timer fires: then [`Proposer::restart`]).
    Wait,
    /// Send a prepare of this ballot to every replica.
    Prepare(Ballot),
    /// The current value is known: apply the operation to it and call [`Proposer::decide`].
    Apply(Option<Version<V>>),
    /// Send this accept to every replica.
    Accept(Version<V>),
    /// Contention: a replica promised this higher ballot. Wait a little (randomly), then call
    /// [`Proposer::restart`] with a ballot above it.
    Retry(Ballot),
    /// Finished. `commit`, when present, is the chosen version to send to every replica.
    Done(Outcome<V>),
    /// The operation may or may not have taken effect, and no later round can tell: give up and
    /// report an unknown outcome to the client.
    Indeterminate,
}

/// How an operation finished.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Outcome<V> {
    /// The item's value as of the operation: the version written, or the current one kept.
    pub version: Option<Version<V>>,
    /// Whether this operation's write is in the item's history (false: it kept the value).
    pub wrote: bool,
    /// The ballot of the round whose [`Step::Apply`] decision this outcome carries out: when a
    /// round finds an earlier attempt of the operation and finishes it, the decision taken in
    /// that earlier round is the one that counts (the caller keeps each round's results, e.g.
    /// a condition's verdict or the old item for ReturnValues, by ballot). Zero for a read that
    /// decided nothing.
    pub decided_at: Ballot,
    /// A chosen version every replica should be told about (a `Commit`), if this round chose one.
    pub commit: Option<Version<V>>,
    /// A quorum of the replicas that accepted also promised the next ballot the accept carried:
    /// the proposer's next operation on the item may start from this (see [`Proposer::resume`]).
    pub lease: Option<Lease<V>>,
}

/// What a proposer knows after a quorum accepted its proposal and promised its next ballot: the
/// item's current value, and a ballot no other proposal below which can be chosen. Valid under
/// the replica sets it was formed with (a layout change ends it), and used at most once.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Lease<V> {
    /// The replica sets whose majorities made the quorum.
    pub quorums: Quorums,
    /// The promised ballot.
    pub ballot: Ballot,
    /// The chosen version the promise was made on: the item's current value while the lease holds.
    pub current: Version<V>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    /// A non-mutating read of a majority's knowledge.
    Reading,
    Preparing,
    /// Waiting for the caller's decision.
    Deciding,
    /// This round cannot succeed; waiting for [`Proposer::restart`].
    Stalled,
    /// The value being proposed and whether it is this operation's own write.
    Accepting {
        wrote: bool,
    },
    Finished,
}

/// Which sets of answers make a quorum: a majority of every one of some replica sets.
///
/// An item normally has one replica set, and any majority of it is a quorum. While the partition
/// layout changes, an item has two — its replicas under the old layout and under the new — and a
/// quorum is a majority of each (joint consensus, as Raft's configuration changes and Lamport,
/// Malkhi and Zhou's vertical Paxos use): it intersects every quorum of either layout alone, so
/// coordinators that have not all switched at the same instant never choose two values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quorums {
    /// The replica sets (each non-empty, without repeats).
    sets: Vec<Vec<NodeId>>,
    /// Every member of some set, once, in order of first appearance.
    members: Vec<NodeId>,
}

impl Quorums {
    /// Quorums of one replica set: its majorities.
    ///
    /// # Panics
    /// If `replicas` is empty.
    pub fn majority_of(replicas: Vec<NodeId>) -> Quorums {
        Quorums::joint(vec![replicas])
    }

    /// Quorums of several replica sets: a majority of each.
    ///
    /// # Panics
    /// If there is no set, or a set is empty.
    pub fn joint(sets: Vec<Vec<NodeId>>) -> Quorums {
        assert!(!sets.is_empty() && sets.iter().all(|set| !set.is_empty()), "an item has at least one replica");
        let mut members: Vec<NodeId> = Vec::new();
        for &node in sets.iter().flatten() {
            if !members.contains(&node) {
                members.push(node);
            }
        }
        Quorums { sets, members }
    }

    /// The replica sets.
    pub fn sets(&self) -> &[Vec<NodeId>] {
        &self.sets
    }

    /// Every replica, once.
    pub fn members(&self) -> &[NodeId] {
        &self.members
    }

    /// Whether `nodes` (no repeats) include a majority of every set.
    pub fn reached(&self, nodes: impl Iterator<Item = NodeId> + Clone) -> bool {
        self.sets.iter().all(|set| {
            let present = nodes.clone().filter(|node| set.contains(node)).count();
            present > set.len() / 2
        })
    }

    /// Whether a quorum can no longer form without some of `refused` (a set has lost its
    /// majority to them).
    pub fn out_of_reach(&self, refused: &[NodeId]) -> bool {
        self.sets.iter().any(|set| {
            let remaining = set.iter().filter(|node| !refused.contains(node)).count();
            remaining <= set.len() / 2
        })
    }
}

/// The coordinator's state for one operation on one item.
#[derive(Clone, Debug)]
pub struct Proposer<V> {
    quorums: Quorums,
    ballot: Ballot,
    phase: Phase,
    /// Answers of the current phase, one per replica at most.
    granted: Vec<(NodeId, Knowledge<V>)>,
    refused: Vec<NodeId>,
    accepted: Vec<NodeId>,
    /// Replicas that accepted and promised a next ballot, with the ballot.
    promising: Vec<(NodeId, Ballot)>,
    highest_refusal: Ballot,
    current: Option<Version<V>>,
    proposal: Option<Version<V>>,
    /// This operation's own writes that some replica may have accepted: each attempt's ballot,
    /// and the ballot of the round that decided its value (a re-proposal carries an earlier
    /// round's decision).
    attempts: Vec<(Ballot, Ballot)>,
    /// Ballots at which this operation re-proposed, unchanged, a value that predates all its
    /// attempts (to bury them): such a value is a safe base to apply the operation to.
    keeps: Vec<Ballot>,
    /// The ballot whose decision the accept phase in progress carries out.
    decided_at: Ballot,
}

impl<V: Clone + PartialEq + Default + Lineaged> Proposer<V> {
    fn with_phase(quorums: Quorums, ballot: Ballot, phase: Phase) -> Proposer<V> {
        Proposer {
            quorums,
            ballot,
            phase,
            granted: Vec::new(),
            refused: Vec::new(),
            accepted: Vec::new(),
            promising: Vec::new(),
            highest_refusal: Ballot::ZERO,
            current: None,
            proposal: None,
            attempts: Vec::new(),
            keeps: Vec::new(),
            decided_at: Ballot::ZERO,
        }
    }

    /// Starts a strict read: send a read to every replica (see the module docs).
    pub fn read(replicas: Vec<NodeId>) -> Proposer<V> {
        Proposer::read_among(Quorums::majority_of(replicas))
    }

    /// Starts an operation that may write: send a prepare of `ballot` to every replica.
    pub fn write(replicas: Vec<NodeId>, ballot: Ballot) -> Proposer<V> {
        Proposer::write_among(Quorums::majority_of(replicas), ballot)
    }

    /// [`Proposer::read`] with quorums of several replica sets (a layout change in progress).
    pub fn read_among(quorums: Quorums) -> Proposer<V> {
        Proposer::with_phase(quorums, Ballot::ZERO, Phase::Reading)
    }

    /// [`Proposer::write`] with quorums of several replica sets (a layout change in progress).
    pub fn write_among(quorums: Quorums, ballot: Ballot) -> Proposer<V> {
        Proposer::with_phase(quorums, ballot, Phase::Preparing)
    }

    /// Starts an operation that may write from a [`Lease`] of an earlier operation on the item:
    /// the current value is known and the leased ballot promised, so the first step is
    /// [`Step::Apply`]. If the lease no longer holds (someone prepared above it), the accept fails
    /// and the operation goes on as after any failed round ([`Step::Retry`], a timeout).
    pub fn resume(lease: Lease<V>) -> (Proposer<V>, Step<V>) {
        let mut proposer = Proposer::with_phase(lease.quorums, lease.ballot, Phase::Deciding);
        proposer.current = Some(lease.current.clone());
        // No answer was heard in this round, so a decision to keep the value is re-proposed
        // (see `decide`): only a quorum's acceptance shows the value is still the current one.
        (proposer, Step::Apply(Some(lease.current)))
    }

    /// Every replica to send to: the members of every replica set, each once.
    pub fn replicas(&self) -> &[NodeId] {
        &self.quorums.members
    }

    /// The replica sets whose majorities make a quorum.
    pub fn quorums(&self) -> &Quorums {
        &self.quorums
    }

    /// The ballot of the current round (zero while reading).
    pub fn ballot(&self) -> Ballot {
        self.ballot
    }

    /// Continues the operation among other replica sets (the item's replicas changed under it: a
    /// replica refused a message sent under an older layout). The round in progress is abandoned
    /// as a timeout would abandon it, and `ballot` starts the next, among `quorums`; what the
    /// operation may already have written elsewhere is remembered as on any restart. A read
    /// starts its read again.
    pub fn reconfigure(&mut self, quorums: Quorums, ballot: Ballot) -> Step<V> {
        self.quorums = quorums;
        if self.phase == Phase::Reading {
            self.clear_answers();
            return Step::Wait;
        }
        self.restart(ballot)
    }

    /// Whether this operation may already be in the item's history: some attempt might have been
    /// accepted somewhere. An operation abandoned in this state has an unknown outcome.
    pub fn maybe_applied(&self) -> bool {
        !self.attempts.is_empty() || self.phase == (Phase::Accepting { wrote: true })
    }

    /// Starts a new round with `ballot` (above every ballot seen), after a [`Step::Retry`] or a
    /// timeout. Answers to earlier rounds are ignored from now on.
    pub fn restart(&mut self, ballot: Ballot) -> Step<V> {
        if self.phase == Phase::Finished {
            return Step::Wait;
        }
        assert!(ballot > self.ballot, "a new round needs a higher ballot");
        if let Phase::Accepting { wrote: true } = self.phase {
            self.note_attempt_outcome();
        }
        self.ballot = ballot;
        self.phase = Phase::Preparing;
        self.clear_answers();
        Step::Prepare(ballot)
    }

    fn clear_answers(&mut self) {
        self.granted.clear();
        self.refused.clear();
        self.accepted.clear();
        self.promising.clear();
        self.highest_refusal = Ballot::ZERO;
    }

    /// Leaving an accept phase of our own write: remember its ballot. Even when every replica
    /// answered with a refusal it may be held somewhere: a duplicated accept can be accepted by
    /// its first copy and refused by its second, and the first answer may be the one lost.
    fn note_attempt_outcome(&mut self) {
        if !self.attempts.iter().any(|&(ballot, _)| ballot == self.ballot) {
            self.attempts.push((self.ballot, self.decided_at));
        }
    }

    fn is_replica(&self, from: NodeId) -> bool {
        self.quorums.members.contains(&from)
    }

    fn granted_quorum(&self) -> bool {
        self.quorums.reached(self.granted.iter().map(|(node, _)| *node))
    }

    fn answered(&self, from: NodeId) -> bool {
        self.granted.iter().any(|(node, _)| *node == from)
            || self.refused.contains(&from)
            || self.accepted.contains(&from)
    }

    /// A replica's answer to the read started by [`Proposer::read`].
    pub fn on_read(&mut self, from: NodeId, knowledge: Knowledge<V>) -> Step<V> {
        if self.phase != Phase::Reading || !self.is_replica(from) || self.answered(from) {
            return Step::Wait;
        }
        self.granted.push((from, knowledge));
        if !self.granted_quorum() {
            return Step::Wait;
        }
        let current = self.highest_known();
        if current.is_none() || self.known_chosen(current.as_ref()) {
            self.phase = Phase::Finished;
            let commit = self.commit_missing(current.as_ref());
            return Step::Done(Outcome {
                version: current,
                wrote: false,
                decided_at: Ballot::ZERO,
                commit,
                lease: None,
            });
        }
        // An unfinished proposal is the newest thing seen: finish it in a full round, with a
        // ballot above it.
        self.phase = Phase::Stalled;
        Step::Retry(current.map_or(Ballot::ZERO, |version| version.ballot))
    }

    /// A replica's answer to the prepare of `ballot`.
    pub fn on_promise(&mut self, from: NodeId, ballot: Ballot, promise: Promise<V>) -> Step<V> {
        if self.phase != Phase::Preparing || ballot != self.ballot || !self.is_replica(from) || self.answered(from) {
            return Step::Wait;
        }
        match promise {
            Promise::Refused(higher) => {
                self.refused.push(from);
                self.highest_refusal = self.highest_refusal.max(higher);
                if self.quorums.out_of_reach(&self.refused) {
                    self.phase = Phase::Stalled;
                    return Step::Retry(self.highest_refusal.max(self.ballot));
                }
                Step::Wait
            }
            Promise::Granted(knowledge) => {
                self.granted.push((from, knowledge));
                if !self.granted_quorum() {
                    return Step::Wait;
                }
                self.decide_from_promises()
            }
        }
    }

    fn highest_known(&self) -> Option<Version<V>> {
        let mut highest: Option<&Version<V>> = None;
        for (_, knowledge) in &self.granted {
            highest = newer(highest, knowledge.accepted.as_ref());
            highest = newer(highest, knowledge.committed.as_ref());
        }
        highest.cloned()
    }

    /// Whether `version` is known chosen from the answers: committed somewhere, or held by a
    /// quorum of the answering replicas.
    fn known_chosen(&self, version: Option<&Version<V>>) -> bool {
        let Some(version) = version else { return true };
        let committed_somewhere = self
            .granted
            .iter()
            .any(|(_, knowledge)| knowledge.committed.as_ref().is_some_and(|c| c.ballot == version.ballot));
        let held_by = self
            .granted
            .iter()
            .filter(|(_, knowledge)| {
                knowledge.accepted.as_ref().is_some_and(|a| a.ballot == version.ballot)
                    || knowledge.committed.as_ref().is_some_and(|c| c.ballot == version.ballot)
            })
            .map(|(node, _)| *node);
        committed_somewhere || self.quorums.reached(held_by)
    }

    /// A chosen `version` that some answering replica holds only as accepted (or not at all):
    /// it needs a commit, or the replicas would hold unfinished proposals forever.
    fn commit_missing(&self, version: Option<&Version<V>>) -> Option<Version<V>> {
        let version = version?;
        let everywhere = self.granted.iter().all(|(_, knowledge)| knowledge.committed.as_ref() == Some(version));
        (!everywhere).then(|| version.clone())
    }

    fn decide_from_promises(&mut self) -> Step<V> {
        let current = self.highest_known();
        let current_ballot = current.as_ref().map_or(Ballot::ZERO, |version| version.ballot);
        let earlier =
            self.attempts.iter().find(|&&(attempt, _)| attempt == current_ballot).map(|&(_, decided)| decided);
        if let (Some(version), Some(decided_at)) = (current.as_ref(), earlier) {
            // Our own earlier attempt is the newest version: the operation happened. Finish it.
            let proposal = Version { ballot: self.ballot, value: version.value.clone() };
            self.decided_at = decided_at;
            return self.start_accept(proposal, true);
        }
        let safe_base =
            self.attempts.iter().all(|&(attempt, _)| current_ballot < attempt) || self.keeps.contains(&current_ballot);
        if !safe_base {
            // A newer foreign version, possibly derived from one of our attempts: its lineage
            // may say which.
            let value = current.as_ref().map(|version| &version.value);
            let verdicts: Vec<(Option<bool>, Ballot)> = self
                .attempts
                .iter()
                .map(|&(attempt, decided)| (value.and_then(|value| value.written_by(attempt)), decided))
                .collect();
            if let Some(&(_, decided_at)) = verdicts.iter().find(|(verdict, _)| *verdict == Some(true)) {
                // The operation is in the current value's history: make sure that value is
                // chosen (it may be unfinished), then report the operation done.
                let value = current.map(|version| version.value).unwrap_or_default();
                self.decided_at = decided_at;
                return self.start_accept(Version { ballot: self.ballot, value }, true);
            }
            if verdicts.iter().any(|(verdict, _)| verdict.is_none()) {
                self.phase = Phase::Finished;
                return Step::Indeterminate;
            }
            // Every attempt is known absent from the current value's history: apply afresh.
        }
        self.phase = Phase::Deciding;
        self.current = current.clone();
        Step::Apply(current)
    }

    /// The caller's decision after [`Step::Apply`].
    pub fn decide(&mut self, decision: Decision<V>) -> Step<V> {
        if self.phase != Phase::Deciding {
            return Step::Wait;
        }
        self.decided_at = self.ballot;
        match decision {
            Decision::Write(value) => {
                let proposal = Version { ballot: self.ballot, value };
                self.start_accept(proposal, true)
            }
            Decision::Keep => {
                let current = self.current.clone();
                if self.attempts.is_empty() && self.known_chosen(current.as_ref()) {
                    self.phase = Phase::Finished;
                    let commit = self.commit_missing(current.as_ref());
                    let outcome =
                        Outcome { version: current, wrote: false, decided_at: self.ballot, commit, lease: None };
                    return Step::Done(outcome);
                }
                // Re-propose the current value unchanged at our ballot: if it may be unfinished,
                // this makes it chosen before anyone is told of it; if earlier attempts of this
                // operation may sit on some replica, a chosen higher ballot buries them, so they
                // can never surface after the client is told "not applied".
                if !self.attempts.is_empty() {
                    self.keeps.push(self.ballot);
                }
                let value = current.map(|version| version.value).unwrap_or_default();
                self.start_accept(Version { ballot: self.ballot, value }, false)
            }
        }
    }

    fn start_accept(&mut self, proposal: Version<V>, wrote: bool) -> Step<V> {
        self.clear_answers();
        self.phase = Phase::Accepting { wrote };
        self.proposal = Some(proposal.clone());
        Step::Accept(proposal)
    }

    /// The lease a quorum's promises of one next ballot give on `chosen`, if they do.
    fn lease_on(&self, chosen: &Version<V>) -> Option<Lease<V>> {
        let &(_, next) = self.promising.last()?;
        let promised = self.promising.iter().filter(|(_, ballot)| *ballot == next).map(|(node, _)| *node);
        self.quorums.reached(promised).then(|| Lease {
            quorums: self.quorums.clone(),
            ballot: next,
            current: chosen.clone(),
        })
    }

    /// A replica's answer to the accept of `ballot`.
    pub fn on_accept(&mut self, from: NodeId, ballot: Ballot, answer: Acceptance) -> Step<V> {
        if ballot != self.ballot || !self.is_replica(from) || self.answered(from) {
            return Step::Wait;
        }
        let Phase::Accepting { wrote } = self.phase else { return Step::Wait };
        match answer {
            Acceptance::Refused(higher) => {
                self.refused.push(from);
                self.highest_refusal = self.highest_refusal.max(higher);
                if self.quorums.out_of_reach(&self.refused) {
                    if wrote {
                        self.note_attempt_outcome();
                    }
                    self.phase = Phase::Stalled;
                    return Step::Retry(self.highest_refusal.max(self.ballot));
                }
                Step::Wait
            }
            Acceptance::Accepted | Acceptance::AcceptedPromising(_) => {
                self.accepted.push(from);
                if let Acceptance::AcceptedPromising(next) = answer
                    && next > self.ballot
                {
                    self.promising.push((from, next));
                }
                if !self.quorums.reached(self.accepted.iter().copied()) {
                    return Step::Wait;
                }
                self.phase = Phase::Finished;
                let chosen = self.proposal.take().expect("accepting a proposal");
                let decided_at = self.decided_at;
                let lease = self.lease_on(&chosen);
                Step::Done(Outcome { version: Some(chosen.clone()), wrote, decided_at, commit: Some(chosen), lease })
            }
        }
    }
}

#[cfg(test)]
// The tests name replicas by index ("replica 1 accepts, 2 and 3 refuse"), so they index.
#[allow(clippy::needless_range_loop)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn ballot(time: u64, node: u64) -> Ballot {
        Ballot { time: Timestamp(time), node: NodeId(node) }
    }

    fn nodes() -> Vec<NodeId> {
        vec![NodeId(1), NodeId(2), NodeId(3)]
    }

    #[test]
    fn joint_quorums_need_a_majority_of_every_set() {
        let old = vec![NodeId(1), NodeId(2), NodeId(3)];
        let new = vec![NodeId(1), NodeId(2), NodeId(4)];
        let quorums = Quorums::joint(vec![old.clone(), new]);
        assert_eq!(quorums.members(), &[NodeId(1), NodeId(2), NodeId(3), NodeId(4)]);
        let reached = |nodes: &[u64]| quorums.reached(nodes.iter().map(|&n| NodeId(n)));
        assert!(reached(&[1, 2]));
        assert!(!reached(&[1, 3]), "a majority of the old set only");
        assert!(!reached(&[1, 4]), "a majority of the new set only");
        assert!(reached(&[1, 3, 4]));
        assert!(reached(&[2, 3, 4]));
        assert!(!quorums.out_of_reach(&[NodeId(3), NodeId(4)]), "1 and 2 are still a majority of both");
        assert!(quorums.out_of_reach(&[NodeId(1), NodeId(3)]), "the old set has lost its majority");
        assert!(quorums.out_of_reach(&[NodeId(2), NodeId(4)]), "the new set has lost its majority");
        let single = Quorums::majority_of(old);
        assert!(single.reached([NodeId(3), NodeId(1)].into_iter()));
        assert!(single.out_of_reach(&[NodeId(1), NodeId(2)]));
    }

    #[test]
    fn a_joint_write_is_chosen_only_by_both_majorities_and_sees_what_the_old_set_chose() {
        // Chosen under the old layout by replicas 2 and 3 only.
        let mut acceptors: BTreeMap<u64, Acceptor<u64>> = (1..=4).map(|n| (n, Acceptor::default())).collect();
        let old_choice = Version { ballot: ballot(10, 7), value: 5 };
        for n in [2, 3] {
            acceptors.get_mut(&n).unwrap().prepare(old_choice.ballot);
            acceptors.get_mut(&n).unwrap().accept(old_choice.clone());
        }
        // A joint write (old {1,2,3}, new {1,3,4}) hears from 1, 4 and then 3.
        let quorums =
            Quorums::joint(vec![vec![NodeId(1), NodeId(2), NodeId(3)], vec![NodeId(1), NodeId(3), NodeId(4)]]);
        let b = ballot(20, 9);
        let mut proposer: Proposer<u64> = Proposer::write_among(quorums, b);
        let mut step = Step::Wait;
        for n in [1, 4, 3] {
            let (promise, _) = acceptors.get_mut(&n).unwrap().prepare(b);
            step = proposer.on_promise(NodeId(n), b, promise);
            if n != 3 {
                assert_eq!(step, Step::Wait, "no majority of the old set before replica 3 answers");
            }
        }
        let Step::Apply(current) = step else { panic!("expected to apply, got {step:?}") };
        assert_eq!(current.map(|version| version.value), Some(5), "the old set's choice is seen");
        let Step::Accept(proposal) = proposer.decide(Decision::Write(6)) else { panic!("expected an accept") };
        // Accepted by 1 and 2: a majority of the old set, not of the new one.
        for n in [1, 2] {
            let (answer, _) = acceptors.get_mut(&n).unwrap().accept(proposal.clone());
            assert_eq!(proposer.on_accept(NodeId(n), b, answer), Step::Wait);
        }
        let (answer, _) = acceptors.get_mut(&4).unwrap().accept(proposal.clone());
        let Step::Done(outcome) = proposer.on_accept(NodeId(4), b, answer) else { panic!("expected done") };
        assert_eq!(outcome.version.map(|version| version.value), Some(6));
    }

    #[test]
    fn reconfiguring_mid_operation_remembers_attempts() {
        let mut proposer: Proposer<u64> = Proposer::write(nodes(), ballot(1, 9));
        let mut acceptor = Acceptor::default();
        let (promise, _) = acceptor.prepare(ballot(1, 9));
        proposer.on_promise(NodeId(1), ballot(1, 9), promise.clone());
        let step = proposer.on_promise(NodeId(2), ballot(1, 9), promise);
        assert!(matches!(step, Step::Apply(None)));
        assert!(matches!(proposer.decide(Decision::Write(1)), Step::Accept(_)));
        assert!(proposer.maybe_applied());
        let quorums = Quorums::joint(vec![nodes(), vec![NodeId(1), NodeId(2), NodeId(4)]]);
        let step = proposer.reconfigure(quorums.clone(), ballot(2, 9));
        assert_eq!(step, Step::Prepare(ballot(2, 9)));
        assert_eq!(proposer.quorums(), &quorums);
        assert!(proposer.maybe_applied(), "the abandoned accept may have been accepted somewhere");
        assert_eq!(proposer.replicas(), &[NodeId(1), NodeId(2), NodeId(3), NodeId(4)]);
    }

    /// Runs one operation against in-memory acceptors, delivering to `reachable` only.
    fn run(
        acceptors: &mut [Acceptor<u64>; 3],
        reachable: &[usize],
        start: u64,
        op: impl Fn(Option<&Version<u64>>) -> Decision<u64>,
    ) -> Result<Outcome<u64>, &'static str> {
        let mut proposer = Proposer::write(nodes(), ballot(start, 9));
        let mut step = Step::Prepare(ballot(start, 9));
        let mut next_time = start;
        for _ in 0..10 {
            step = match step {
                Step::Prepare(b) => {
                    let mut last = Step::Wait;
                    for &i in reachable {
                        let (promise, _) = acceptors[i].prepare(b);
                        last = proposer.on_promise(NodeId(i as u64 + 1), b, promise);
                        if last != Step::Wait {
                            break;
                        }
                    }
                    last
                }
                Step::Apply(current) => proposer.decide(op(current.as_ref())),
                Step::Accept(proposal) => {
                    let mut last = Step::Wait;
                    for &i in reachable {
                        let (answer, _) = acceptors[i].accept(proposal.clone());
                        last = proposer.on_accept(NodeId(i as u64 + 1), proposal.ballot, answer);
                        if last != Step::Wait {
                            break;
                        }
                    }
                    last
                }
                Step::Retry(above) => {
                    next_time = next_time.max(above.time.0) + 1;
                    proposer.restart(ballot(next_time, 9))
                }
                Step::Done(outcome) => {
                    if let Some(chosen) = &outcome.commit {
                        for &i in reachable {
                            acceptors[i].commit(chosen.clone());
                        }
                    }
                    return Ok(outcome);
                }
                Step::Indeterminate => return Err("indeterminate"),
                Step::Wait => return Err("stuck"),
            };
        }
        Err("too many rounds")
    }

    fn increment(current: Option<&Version<u64>>) -> Decision<u64> {
        Decision::Write(current.map_or(1, |version| version.value + 1))
    }

    #[test]
    fn increments_chain_through_any_majority() {
        let mut acceptors: [Acceptor<u64>; 3] = Default::default();
        let quorums: [&[usize]; 3] = [&[0, 1], &[1, 2], &[2, 0]];
        for (round, quorum) in quorums.iter().cycle().take(9).enumerate() {
            let outcome = run(&mut acceptors, quorum, 10 * (round as u64 + 1), increment).unwrap();
            assert_eq!(outcome.version.unwrap().value, round as u64 + 1);
        }
    }

    /// Delivers a (leased or not) accept step to `reachable` with `next` as the next ballot.
    fn accept_round(
        acceptors: &mut [Acceptor<u64>; 3],
        reachable: &[usize],
        proposer: &mut Proposer<u64>,
        proposal: Version<u64>,
        next: Ballot,
    ) -> Step<u64> {
        let mut last = Step::Wait;
        for &i in reachable {
            let (answer, _) = acceptors[i].accept_promising(proposal.clone(), next);
            last = proposer.on_accept(NodeId(i as u64 + 1), proposal.ballot, answer);
            if last != Step::Wait {
                break;
            }
        }
        last
    }

    #[test]
    fn a_lease_lets_the_next_write_start_at_the_accept() {
        let mut acceptors: [Acceptor<u64>; 3] = Default::default();
        run(&mut acceptors, &[0, 1, 2], 10, increment).unwrap();
        // A write whose accept carries the next ballot: a quorum promises it.
        let mut proposer = Proposer::write(nodes(), ballot(20, 9));
        let mut step = Step::Wait;
        for i in 0..2 {
            let (promise, _) = acceptors[i].prepare(ballot(20, 9));
            step = proposer.on_promise(NodeId(i as u64 + 1), ballot(20, 9), promise);
        }
        let Step::Apply(current) = step else { panic!("expected to apply, got {step:?}") };
        let Step::Accept(proposal) = proposer.decide(increment(current.as_ref())) else { panic!("expected an accept") };
        let Step::Done(outcome) = accept_round(&mut acceptors, &[0, 1, 2], &mut proposer, proposal, ballot(21, 9))
        else {
            panic!("expected done")
        };
        let lease = outcome.lease.expect("a quorum promised the next ballot");
        assert_eq!((lease.ballot, lease.current.value), (ballot(21, 9), 2));
        // The next write: no prepare, straight to applying and accepting at the leased ballot.
        let (mut proposer, step) = Proposer::resume(lease);
        let Step::Apply(current) = step else { panic!("expected to apply") };
        let Step::Accept(proposal) = proposer.decide(increment(current.as_ref())) else { panic!("expected an accept") };
        assert_eq!(proposal.ballot, ballot(21, 9));
        let Step::Done(outcome) = accept_round(&mut acceptors, &[1, 2], &mut proposer, proposal, ballot(22, 9)) else {
            panic!("expected done")
        };
        assert_eq!(outcome.version.as_ref().map(|version| version.value), Some(3));
        assert!(outcome.wrote && outcome.lease.is_some());
        // A kept value is re-proposed under a lease: the quorum's acceptance is what shows it
        // is still current.
        let (mut proposer, _) = Proposer::resume(outcome.lease.unwrap());
        assert!(matches!(proposer.decide(Decision::Keep), Step::Accept(Version { value: 3, .. })));
    }

    #[test]
    fn a_prepare_above_the_lease_makes_the_leased_accept_fail_and_the_retry_see_the_newer_value() {
        let mut acceptors: [Acceptor<u64>; 3] = Default::default();
        let mut proposer = Proposer::write(nodes(), ballot(10, 9));
        let mut step = Step::Wait;
        for i in 0..3 {
            let (promise, _) = acceptors[i].prepare(ballot(10, 9));
            step = proposer.on_promise(NodeId(i as u64 + 1), ballot(10, 9), promise);
            if step != Step::Wait {
                break;
            }
        }
        let Step::Apply(current) = step else { panic!("expected to apply") };
        let Step::Accept(proposal) = proposer.decide(increment(current.as_ref())) else { panic!("expected an accept") };
        let Step::Done(outcome) = accept_round(&mut acceptors, &[0, 1, 2], &mut proposer, proposal, ballot(11, 9))
        else {
            panic!("expected done")
        };
        let lease = outcome.lease.unwrap();
        // Another coordinator increments through replicas 2 and 3, above the leased ballot.
        let other = run(&mut acceptors, &[1, 2], 50, increment).unwrap();
        assert_eq!(other.version.unwrap().value, 2);
        // The leased accept (of a value built on 1) is refused by that majority.
        let (mut proposer, step) = Proposer::resume(lease);
        let Step::Apply(current) = step else { panic!("expected to apply") };
        let Step::Accept(proposal) = proposer.decide(increment(current.as_ref())) else { panic!("expected an accept") };
        let step = accept_round(&mut acceptors, &[0, 1, 2], &mut proposer, proposal, ballot(12, 9));
        let Step::Retry(above) = step else { panic!("expected a retry, got {step:?}") };
        assert!(proposer.maybe_applied(), "replica 1 holds the attempt");
        // The full round that follows finds the other write, newer than the attempt: these
        // values keep no lineage, so whether the attempt is in its history cannot be told (an
        // item's lineage tells, see `Lineage`) and the outcome is reported unknown, never as
        // applied twice or not at all.
        let Step::Prepare(b) = proposer.restart(ballot(above.time.0 + 1, 9)) else { panic!("expected a prepare") };
        let mut step = Step::Wait;
        for i in 0..3 {
            let (promise, _) = acceptors[i].prepare(b);
            step = proposer.on_promise(NodeId(i as u64 + 1), b, promise);
            if step != Step::Wait {
                break;
            }
        }
        assert_eq!(step, Step::Indeterminate);
        assert_eq!(acceptors[1].committed.as_ref().map(|version| version.value), Some(2));
    }

    #[test]
    fn a_replica_promises_the_next_ballot_only_on_what_it_holds_newest() {
        let mut acceptor: Acceptor<u64> = Acceptor::default();
        let proposal = Version { ballot: ballot(5, 1), value: 1 };
        assert_eq!(
            acceptor.accept_promising(proposal.clone(), ballot(6, 1)),
            (Acceptance::AcceptedPromising(ballot(6, 1)), true)
        );
        // A duplicate is answered the same, without a change.
        assert_eq!(
            acceptor.accept_promising(proposal.clone(), ballot(6, 1)),
            (Acceptance::AcceptedPromising(ballot(6, 1)), false)
        );
        assert_eq!(acceptor.prepare(ballot(5, 9)).0, Promise::Refused(ballot(6, 1)));
        // Chosen, then a newer proposal accepted: a late duplicate of the old accept is
        // acknowledged (it is chosen) but promises nothing, since a newer proposal is held.
        acceptor.commit(proposal.clone());
        acceptor.prepare(ballot(8, 2));
        acceptor.accept(Version { ballot: ballot(8, 2), value: 2 });
        assert_eq!(acceptor.accept_promising(proposal, ballot(9, 1)), (Acceptance::Accepted, false));
        assert_eq!(acceptor.promised, ballot(8, 2));
    }

    #[test]
    fn a_refused_prepare_asks_for_a_higher_ballot() {
        let mut acceptor: Acceptor<u64> = Acceptor::default();
        assert_eq!(acceptor.prepare(ballot(5, 1)).0, Promise::Granted(acceptor.knowledge()));
        assert_eq!(acceptor.prepare(ballot(4, 2)).0, Promise::Refused(ballot(5, 1)));
        assert_eq!(acceptor.accept(Version { ballot: ballot(4, 2), value: 1 }).0, Acceptance::Refused(ballot(5, 1)));
        // A duplicate of the promised prepare is granted again without a state change.
        assert!(matches!(acceptor.prepare(ballot(5, 1)), (Promise::Granted(_), false)));
    }

    #[test]
    fn commit_supersedes_older_proposals_and_ignores_older_versions() {
        let mut acceptor: Acceptor<u64> = Acceptor::default();
        acceptor.accept(Version { ballot: ballot(3, 1), value: 30 });
        assert!(acceptor.commit(Version { ballot: ballot(4, 2), value: 40 }));
        assert!(acceptor.accepted.is_none());
        assert!(!acceptor.commit(Version { ballot: ballot(2, 2), value: 20 }));
        assert_eq!(acceptor.committed.as_ref().unwrap().value, 40);
        // A prepare below the committed ballot is refused even without a promise.
        assert_eq!(acceptor.prepare(ballot(3, 3)).0, Promise::Refused(ballot(4, 2)));
    }

    #[test]
    fn a_read_finishes_an_unfinished_proposal_before_returning_it() {
        let mut acceptors: [Acceptor<u64>; 3] = Default::default();
        // Proposal accepted by one replica only: not known chosen.
        acceptors[0].prepare(ballot(5, 1));
        acceptors[0].accept(Version { ballot: ballot(5, 1), value: 7 });
        let mut proposer: Proposer<u64> = Proposer::read(nodes());
        assert_eq!(proposer.on_read(NodeId(1), acceptors[0].knowledge()), Step::Wait);
        assert_eq!(proposer.on_read(NodeId(2), acceptors[1].knowledge()), Step::Retry(ballot(5, 1)));
        assert_eq!(proposer.restart(ballot(6, 9)), Step::Prepare(ballot(6, 9)));
        let (p1, _) = acceptors[0].prepare(ballot(6, 9));
        let (p2, _) = acceptors[1].prepare(ballot(6, 9));
        assert_eq!(proposer.on_promise(NodeId(1), ballot(6, 9), p1), Step::Wait);
        let Step::Apply(current) = proposer.on_promise(NodeId(2), ballot(6, 9), p2) else { panic!() };
        assert_eq!(current.unwrap().value, 7);
        assert_eq!(proposer.decide(Decision::Keep), Step::Accept(Version { ballot: ballot(6, 9), value: 7 }));
    }

    #[test]
    fn a_read_of_a_chosen_version_takes_one_round_trip() {
        let mut acceptors: [Acceptor<u64>; 3] = Default::default();
        run(&mut acceptors, &[0, 1], 10, increment).unwrap();
        let mut proposer: Proposer<u64> = Proposer::read(nodes());
        // Replica 3 missed everything; replica 1 has it committed.
        assert_eq!(proposer.on_read(NodeId(3), acceptors[2].knowledge()), Step::Wait);
        let Step::Done(outcome) = proposer.on_read(NodeId(1), acceptors[0].knowledge()) else { panic!() };
        assert_eq!(outcome.version.unwrap().value, 1);
        assert!(!outcome.wrote);
    }

    #[test]
    fn a_retry_after_a_partial_accept_does_not_apply_twice() {
        let mut acceptors: [Acceptor<u64>; 3] = Default::default();
        run(&mut acceptors, &[0, 1, 2], 10, increment).unwrap(); // value 1 everywhere
        let mut proposer = Proposer::write(nodes(), ballot(20, 9));
        for i in 0..2 {
            let (promise, _) = acceptors[i].prepare(ballot(20, 9));
            proposer.on_promise(NodeId(i as u64 + 1), ballot(20, 9), promise);
        }
        let Step::Accept(proposal) = proposer.decide(Decision::Write(2)) else { panic!() };
        // Only replica 1 receives the accept; the others' answers are lost: timeout, restart.
        let (answer, _) = acceptors[0].accept(proposal.clone());
        assert_eq!(proposer.on_accept(NodeId(1), proposal.ballot, answer), Step::Wait);
        assert!(matches!(proposer.restart(ballot(30, 9)), Step::Prepare(_)));
        assert!(proposer.maybe_applied());
        // The new round sees the attempt (replicas 1 and 3): it is finished, not re-applied.
        let (p1, _) = acceptors[0].prepare(ballot(30, 9));
        let (p3, _) = acceptors[2].prepare(ballot(30, 9));
        proposer.on_promise(NodeId(1), ballot(30, 9), p1);
        let step = proposer.on_promise(NodeId(3), ballot(30, 9), p3);
        assert_eq!(step, Step::Accept(Version { ballot: ballot(30, 9), value: 2 }));
    }

    #[test]
    fn a_retry_that_cannot_see_its_attempt_applies_again_only_if_nothing_newer_exists() {
        let mut acceptors: [Acceptor<u64>; 3] = Default::default();
        let mut proposer = Proposer::write(nodes(), ballot(20, 9));
        for i in 0..2 {
            let (promise, _) = acceptors[i].prepare(ballot(20, 9));
            proposer.on_promise(NodeId(i as u64 + 1), ballot(20, 9), promise);
        }
        let Step::Accept(proposal) = proposer.decide(Decision::Write(1)) else { panic!() };
        acceptors[0].accept(proposal.clone()); // the answer is lost
        proposer.restart(ballot(30, 9));
        // Replicas 2 and 3 know nothing newer than the attempt: apply afresh.
        let (p2, _) = acceptors[1].prepare(ballot(30, 9));
        let (p3, _) = acceptors[2].prepare(ballot(30, 9));
        proposer.on_promise(NodeId(2), ballot(30, 9), p2);
        assert_eq!(proposer.on_promise(NodeId(3), ballot(30, 9), p3), Step::Apply(None));

        // Another coordinator builds on the attempt; our next round sees only its version.
        let mut other = Proposer::write(nodes(), ballot(40, 8));
        let (q1, _) = acceptors[0].prepare(ballot(40, 8));
        let (q2, _) = acceptors[1].prepare(ballot(40, 8));
        other.on_promise(NodeId(1), ballot(40, 8), q1);
        assert!(matches!(other.on_promise(NodeId(2), ballot(40, 8), q2), Step::Apply(Some(_))));
        let Step::Accept(theirs) = other.decide(Decision::Write(11)) else { panic!() };
        acceptors[1].accept(theirs.clone());
        acceptors[2].prepare(ballot(40, 8));
        acceptors[2].accept(theirs);
        let Step::Accept(_) = proposer.decide(Decision::Write(1)) else { panic!() };
        proposer.restart(ballot(50, 9));
        let (p2, _) = acceptors[1].prepare(ballot(50, 9));
        let (p3, _) = acceptors[2].prepare(ballot(50, 9));
        proposer.on_promise(NodeId(2), ballot(50, 9), p2);
        assert_eq!(proposer.on_promise(NodeId(3), ballot(50, 9), p3), Step::Indeterminate);
    }

    #[test]
    fn refusals_never_clear_an_attempt_and_a_kept_value_buries_it() {
        let mut acceptors: [Acceptor<u64>; 3] = Default::default();
        let mut proposer = Proposer::write(nodes(), ballot(20, 9));
        for i in 0..2 {
            let (promise, _) = acceptors[i].prepare(ballot(20, 9));
            proposer.on_promise(NodeId(i as u64 + 1), ballot(20, 9), promise);
        }
        let Step::Accept(proposal) = proposer.decide(Decision::Write(5)) else { panic!() };
        // A duplicated accept: replica 1 accepts the first copy (that answer is lost) and refuses
        // the second after promising a higher ballot; the others refuse too.
        acceptors[0].accept(proposal.clone());
        let mut last = Step::Wait;
        for (i, acceptor) in acceptors.iter_mut().enumerate() {
            acceptor.prepare(ballot(25, 7));
            let (answer, _) = acceptor.accept(proposal.clone());
            assert!(matches!(answer, Acceptance::Refused(_)));
            if last == Step::Wait {
                last = proposer.on_accept(NodeId(i as u64 + 1), proposal.ballot, answer);
            }
        }
        assert_eq!(last, Step::Retry(ballot(25, 7)));
        assert!(proposer.maybe_applied(), "replica 1 holds the attempt despite refusing");

        // The next round sees only the value before the attempt (replicas 2 and 3): the operation
        // applies afresh, decides to keep the value, and must still write it, at its own ballot,
        // so the attempt on replica 1 can never surface later.
        assert_eq!(proposer.restart(ballot(30, 9)), Step::Prepare(ballot(30, 9)));
        for i in 1..3 {
            let (promise, _) = acceptors[i].prepare(ballot(30, 9));
            let step = proposer.on_promise(NodeId(i as u64 + 1), ballot(30, 9), promise);
            if i == 2 {
                assert_eq!(step, Step::Apply(None));
            }
        }
        assert_eq!(proposer.decide(Decision::Keep), Step::Accept(Version { ballot: ballot(30, 9), value: 0 }));
        for i in 1..3 {
            let (answer, _) = acceptors[i].accept(Version { ballot: ballot(30, 9), value: 0 });
            let step = proposer.on_accept(NodeId(i as u64 + 1), ballot(30, 9), answer);
            if i == 2 {
                let Step::Done(outcome) = step else { panic!("{step:?}") };
                assert!(!outcome.wrote);
                assert_eq!(outcome.decided_at, ballot(30, 9));
                // The commit reaches replica 2 only.
                acceptors[1].commit(outcome.commit.unwrap());
            }
        }
        // Any majority now sees the kept value, never the buried attempt.
        let mut reader: Proposer<u64> = Proposer::read(nodes());
        reader.on_read(NodeId(1), acceptors[0].knowledge());
        let Step::Done(outcome) = reader.on_read(NodeId(2), acceptors[1].knowledge()) else { panic!() };
        assert_eq!(outcome.version.unwrap().ballot, ballot(30, 9));
    }

    #[test]
    fn finishing_an_earlier_attempt_reports_that_rounds_decision() {
        let mut acceptors: [Acceptor<u64>; 3] = Default::default();
        let mut proposer = Proposer::write(nodes(), ballot(20, 9));
        for i in 0..2 {
            let (promise, _) = acceptors[i].prepare(ballot(20, 9));
            proposer.on_promise(NodeId(i as u64 + 1), ballot(20, 9), promise);
        }
        let Step::Accept(proposal) = proposer.decide(Decision::Write(5)) else { panic!() };
        acceptors[0].accept(proposal); // the answer is lost: timeout
        proposer.restart(ballot(30, 9));
        for i in [0, 2] {
            let (promise, _) = acceptors[i].prepare(ballot(30, 9));
            proposer.on_promise(NodeId(i as u64 + 1), ballot(30, 9), promise);
        }
        for i in [0, 2] {
            let (answer, _) = acceptors[i].accept(Version { ballot: ballot(30, 9), value: 5 });
            if let Step::Done(outcome) = proposer.on_accept(NodeId(i as u64 + 1), ballot(30, 9), answer) {
                assert!(outcome.wrote);
                assert_eq!(outcome.decided_at, ballot(20, 9));
                return;
            }
        }
        panic!("the re-proposal was not chosen");
    }

    #[test]
    fn a_lineage_knows_its_recent_writers_and_what_it_cannot_tell() {
        let t = |ms: u64| Ballot { time: Timestamp::new(ms, 0), node: NodeId(1) };
        let lineage = Lineage::default().with_writer(t(1_000), 500).with_writer(t(1_200), 500);
        assert_eq!(lineage.written_by(t(1_000)), Some(true));
        assert_eq!(lineage.written_by(t(1_100)), Some(false));
        // A later write pushes the window past the first writer: before the window, unknown.
        let later = lineage.with_writer(t(1_600), 500);
        assert_eq!(later.written_by(t(1_000)), None);
        assert_eq!(later.written_by(t(1_200)), Some(true));
        assert_eq!(later.written_by(t(1_150)), Some(false));
        // Versions written without a lineage know nothing up to their own version.
        let legacy = Lineage::unknown_before(t(2_000));
        assert_eq!(legacy.written_by(t(1_999)), None);
        assert_eq!(legacy.written_by(t(2_001)), Some(false));
        // The writer count is bounded; dropping the oldest raises the horizon past it.
        let mut crowded = Lineage::default();
        for ms in 0..(LINEAGE_WRITERS_MAX as u64 + 10) {
            crowded = crowded.with_writer(t(10_000 + ms), 60_000);
        }
        assert_eq!(crowded.writers.len(), LINEAGE_WRITERS_MAX);
        assert_eq!(crowded.written_by(t(10_000)), None);
        assert_eq!(crowded.written_by(t(10_000 + LINEAGE_WRITERS_MAX as u64 + 9)), Some(true));
    }
}

//! The simulated world: nodes running the core protocols, a faulty network, clients, and time.
//!
//! One event queue ordered by (simulated millisecond, sequence number) drives everything. A node
//! here is what `onggi serve` will be: per item an [`Acceptor`] whose changes are persisted
//! before any reply (commits are written without a sync, like the node's commit path, and are
//! lost in a crash unless a later sync covered them), coordinators running [`Proposer`]s with
//! round timeouts and randomized back-off, and a background task that finishes stale proposals
//! and exchanges committed versions with the other replicas (anti-entropy).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::fmt::Write as _;

use onggi_core::hlc::{Clock, Timestamp};
use onggi_core::layout::{Layout, Node as LayoutNode, NodeId, PartitionId};
use onggi_core::paxos::{Acceptance, Acceptor, Ballot, Decision, Knowledge, Promise, Proposer, Step, Version};
use onggi_core::rng::Rng;

use crate::linearizability::{self, Event as HistoryEvent, Op, Output};

/// A simulated item's key.
type Key = u64;
/// A simulated item's value: `None` is absent (never written, or deleted).
type Value = Option<u64>;

/// How long a coordinator waits for a round's answers before starting a new round.
const ROUND_TIMEOUT_MS: u64 = 120;
/// How long a coordinator keeps trying before answering the client with an error.
const OPERATION_DEADLINE_MS: u64 = 1_500;
/// How long a client waits for an answer before counting its operation indeterminate.
const CLIENT_TIMEOUT_MS: u64 = 2_500;
/// How often each node runs its background repair.
const REPAIR_INTERVAL_MS: u64 = 100;
/// Proposals older than this (by ballot time) are finished by background repair.
const STALE_PROPOSAL_MS: u64 = 400;
/// Physical time of the simulation's start, so clocks look like real ones.
const EPOCH_MS: u64 = 1_800_000_000_000;

/// The faults a run injects.
#[derive(Clone, Debug)]
pub struct Faults {
    /// Messages lost, per thousand (node-to-node links; client links behave like TCP).
    pub loss_per_mille: u64,
    /// Messages delivered twice, per thousand.
    pub duplicate_per_mille: u64,
    /// Node-to-node delays are uniform in `1..=max_delay_ms`, which reorders messages.
    pub max_delay_ms: u64,
    /// Mean time between partition episodes (0: none). Episodes isolate a random group, both
    /// ways or one way only, for 100–1,000 ms.
    pub partition_every_ms: u64,
    /// Mean time between crashes (0: none). A crashed node loses what it had not persisted and
    /// restarts 50–1,000 ms later.
    pub crash_every_ms: u64,
    /// Mean time between pauses (0: none): a node freezes (like SIGSTOP) for 50–600 ms.
    pub pause_every_ms: u64,
    /// Each node's wall clock is off by up to this much, either way.
    pub clock_skew_ms: u64,
}

/// A simulation run's parameters.
#[derive(Clone, Debug)]
pub struct Config {
    /// The seed every random choice derives from.
    pub seed: u64,
    /// Nodes in the cluster.
    pub nodes: usize,
    /// Replicas per item (N).
    pub replication: usize,
    /// Distinct items the clients work on.
    pub keys: u64,
    /// Concurrent clients.
    pub clients: usize,
    /// Clients start operations during this long; faults happen during it.
    pub load_ms: u64,
    /// After the faults stop, replicas must converge within this long.
    pub heal_bound_ms: u64,
    /// What goes wrong.
    pub faults: Faults,
    /// A deliberate bug in the shell, to show that the checkers catch what they claim to.
    pub sabotage: Option<Sabotage>,
}

/// Deliberate bugs, for testing the checkers (never set by [`Config::from_seed`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sabotage {
    /// Acceptors answer before persisting promises and proposals, so a crash forgets them.
    ForgetfulAcceptors,
    /// No background repair: no anti-entropy, no finishing of abandoned proposals.
    NoRepair,
}

impl Config {
    /// A configuration drawn from `seed`: 3–7 nodes, N = 3, 2–5 keys, 3–8 clients, and a random
    /// mix of faults (some seeds run fault-free, most inject several kinds at once).
    pub fn from_seed(seed: u64) -> Config {
        let mut rng = Rng::new(seed ^ 0x5157_AB1E_C0FF_EE00);
        let pick = |rng: &mut Rng, values: &[u64]| values[rng.below(values.len() as u64) as usize];
        Config {
            seed,
            nodes: 3 + rng.below(5) as usize,
            replication: 3,
            keys: 2 + rng.below(4),
            clients: 3 + rng.below(6) as usize,
            load_ms: 3_000,
            heal_bound_ms: 10_000,
            faults: Faults {
                loss_per_mille: pick(&mut rng, &[0, 0, 10, 50, 150]),
                duplicate_per_mille: pick(&mut rng, &[0, 10, 50]),
                max_delay_ms: pick(&mut rng, &[2, 10, 40]),
                partition_every_ms: pick(&mut rng, &[0, 300, 1_000]),
                crash_every_ms: pick(&mut rng, &[0, 400, 1_500]),
                pause_every_ms: pick(&mut rng, &[0, 0, 800]),
                clock_skew_ms: pick(&mut rng, &[0, 50, 2_000]),
            },
            sabotage: None,
        }
    }
}

/// What a run did and found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Operations clients completed successfully.
    pub ok: u64,
    /// Operations that failed with nothing applied (the coordinator knew).
    pub failed: u64,
    /// Operations whose outcome the client never learned.
    pub indeterminate: u64,
    /// Of those: a coordinator found a newer version that may derive from its attempt.
    pub unknown_by_contention: u64,
    /// Of those: a coordinator reached its deadline after an attempt that may have been accepted.
    pub unknown_by_deadline: u64,
    /// Node-to-node messages sent, and lost.
    pub messages: u64,
    /// Messages the network dropped.
    pub dropped: u64,
    /// Faults injected: partitions, crashes, pauses.
    pub partitions: u64,
    /// Crashes injected.
    pub crashes: u64,
    /// Pauses injected.
    pub pauses: u64,
    /// Simulated milliseconds from the end of the faults to converged replicas.
    pub converged_after_ms: Option<u64>,
    /// Everything that went wrong; empty for a passing seed.
    pub violations: Vec<String>,
}

impl Report {
    /// One line for logs.
    pub fn summary(&self) -> String {
        format!(
            "seed {}: {} ok, {} failed, {} indeterminate ({} contention, {} deadline, {} client timeout); {} messages \
             ({} dropped); {} partitions, {} crashes, {} pauses; converged {} ms after healing; {} violations",
            self.seed,
            self.ok,
            self.failed,
            self.indeterminate,
            self.unknown_by_contention,
            self.unknown_by_deadline,
            self.indeterminate - self.unknown_by_contention - self.unknown_by_deadline,
            self.messages,
            self.dropped,
            self.partitions,
            self.crashes,
            self.pauses,
            self.converged_after_ms.map_or("never".to_string(), |ms| ms.to_string()),
            self.violations.len()
        )
    }
}

/// Who sends and receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Endpoint {
    Node(usize),
    Client(usize),
}

/// Names one coordinator operation across restarts of its node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct OpRef {
    node: usize,
    incarnation: u64,
    id: u64,
}

/// A client's request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClientOp {
    Read,
    Write(Value),
    Cas { expected: Value, new: Value },
}

/// What a coordinator tells a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    Ok(Output),
    /// Nothing was applied.
    Failed,
    /// The operation may or may not have been applied.
    Unknown,
}

/// Why a coordinator answered [`Answer::Unknown`].
#[derive(Clone, Copy, Debug)]
enum Unknown {
    Contention,
    Deadline,
}

#[derive(Clone, Debug)]
enum Message {
    Request {
        seq: u64,
        key: Key,
        op: ClientOp,
    },
    Answer {
        seq: u64,
        answer: Answer,
    },
    Read {
        op: OpRef,
        key: Key,
    },
    ReadReply {
        op: OpRef,
        knowledge: Knowledge<Value>,
    },
    Prepare {
        op: OpRef,
        key: Key,
        ballot: Ballot,
    },
    Promise {
        op: OpRef,
        ballot: Ballot,
        promise: Promise<Value>,
    },
    Accept {
        op: OpRef,
        key: Key,
        proposal: Version<Value>,
    },
    Accepted {
        op: OpRef,
        ballot: Ballot,
        answer: Acceptance,
    },
    Commit {
        key: Key,
        version: Version<Value>,
    },
    /// Anti-entropy: the sender's committed versions of one partition's keys; `reply` asks the
    /// receiver to answer with its own.
    Sync {
        partition: PartitionId,
        versions: Vec<(Key, Version<Value>)>,
        reply: bool,
    },
}

impl Message {
    fn ballot_time(&self) -> Option<Timestamp> {
        match self {
            Message::Prepare { ballot, .. } => Some(ballot.time),
            Message::Accept { proposal, .. } => Some(proposal.ballot.time),
            Message::Promise { promise: Promise::Refused(higher), .. } => Some(higher.time),
            Message::Accepted { answer: Acceptance::Refused(higher), .. } => Some(higher.time),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
enum Event {
    Deliver { from: Endpoint, to: Endpoint, message: Message },
    RoundTimeout { op: OpRef, round: u32 },
    Restart { op: OpRef, round: u32 },
    Deadline { op: OpRef },
    ClientNext { client: usize },
    ClientTimeout { client: usize, seq: u64 },
    Repair { node: usize, incarnation: u64 },
    Fault,
    HealLink { from: usize, to: usize },
    NodeUp { node: usize },
    Resume { node: usize },
    Heal,
    CheckConvergence,
}

/// A coordinator's operation in progress.
struct Coordination {
    /// The client and its request number; `None` for background repair.
    client: Option<(usize, u64)>,
    key: Key,
    op: ClientOp,
    proposer: Proposer<Value>,
    round: u32,
    /// What each round decided to tell the client, by the round's ballot.
    outputs: Vec<(Ballot, Output)>,
}

struct SimNode {
    id: NodeId,
    up: bool,
    paused_until: Option<u64>,
    incarnation: u64,
    skew_ms: i64,
    clock: Clock,
    /// The acceptor state as the node sees it.
    store: BTreeMap<Key, Acceptor<Value>>,
    /// What survives a crash.
    durable: BTreeMap<Key, Acceptor<Value>>,
    /// Keys changed since the last sync.
    dirty: BTreeSet<Key>,
    ops: BTreeMap<u64, Coordination>,
    next_op: u64,
}

impl SimNode {
    /// Persists every change so far (a group commit covers earlier unsynced writes too).
    fn sync(&mut self) {
        for key in std::mem::take(&mut self.dirty) {
            if let Some(state) = self.store.get(&key) {
                self.durable.insert(key, state.clone());
            }
        }
    }

    fn acceptor(&mut self, key: Key) -> &mut Acceptor<Value> {
        self.store.entry(key).or_default()
    }
}

struct Client {
    seq: u64,
    /// The operation in flight: its history index.
    pending: Option<usize>,
    /// The last value this client saw per key, for its next conditional write.
    seen: BTreeMap<Key, Value>,
}

struct World {
    config: Config,
    rng: Rng,
    now: u64,
    sequence: u64,
    queue: BinaryHeap<Reverse<(u64, u64, usize)>>,
    /// Event payloads by slot (the heap holds indices, so events need no ordering).
    events: Vec<Option<Event>>,
    free: Vec<usize>,
    layout: Layout,
    nodes: Vec<SimNode>,
    clients: Vec<Client>,
    /// Directed links that drop everything until healed.
    cut: BTreeSet<(usize, usize)>,
    healed: bool,
    next_value: u64,
    /// Per key: the history; the client's event index lives in `Client::pending`.
    history: BTreeMap<Key, Vec<HistoryEvent>>,
    /// Where each pending client operation's event is: (key, index).
    pending_at: BTreeMap<(usize, u64), (Key, usize)>,
    final_reads: BTreeSet<Key>,
    /// Set once every final read has its answer: the run is over.
    done: bool,
    report: Report,
}

fn key_token(key: Key) -> u64 {
    // Spread the small keys over the token space, as xxh3 spreads real partition keys.
    let mut rng = Rng::new(key.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xA5A5);
    rng.next_u64()
}

/// Runs the simulation `config` describes and checks it.
pub fn run(config: &Config) -> Report {
    let mut world = World::new(config.clone());
    world.start();
    // Load, the clients' last timeouts, the convergence bound, and the final reads' timeout.
    let end = config.load_ms + 2 * CLIENT_TIMEOUT_MS + config.heal_bound_ms + 1_000;
    world.run_until(end);
    world.finish()
}

impl World {
    fn new(config: Config) -> World {
        let mut rng = Rng::new(config.seed);
        let layout =
            Layout::new(64, config.replication, (0..config.nodes).map(|i| LayoutNode::new(NodeId(i as u64 + 1))))
                .expect("a valid simulated layout");
        let nodes = (0..config.nodes)
            .map(|i| {
                let skew = if config.faults.clock_skew_ms == 0 {
                    0
                } else {
                    rng.below(2 * config.faults.clock_skew_ms + 1) as i64 - config.faults.clock_skew_ms as i64
                };
                SimNode {
                    id: NodeId(i as u64 + 1),
                    up: true,
                    paused_until: None,
                    incarnation: 0,
                    skew_ms: skew,
                    clock: Clock::new(),
                    store: BTreeMap::new(),
                    durable: BTreeMap::new(),
                    dirty: BTreeSet::new(),
                    ops: BTreeMap::new(),
                    next_op: 0,
                }
            })
            .collect();
        let clients = (0..config.clients).map(|_| Client { seq: 0, pending: None, seen: BTreeMap::new() }).collect();
        let report = Report { seed: config.seed, ..Report::default() };
        World {
            config,
            rng,
            now: 0,
            sequence: 0,
            queue: BinaryHeap::new(),
            events: Vec::new(),
            free: Vec::new(),
            layout,
            nodes,
            clients,
            cut: BTreeSet::new(),
            healed: false,
            next_value: 1,
            history: BTreeMap::new(),
            pending_at: BTreeMap::new(),
            final_reads: BTreeSet::new(),
            done: false,
            report,
        }
    }

    fn schedule(&mut self, after_ms: u64, event: Event) {
        let slot = match self.free.pop() {
            Some(slot) => {
                self.events[slot] = Some(event);
                slot
            }
            None => {
                self.events.push(Some(event));
                self.events.len() - 1
            }
        };
        self.sequence += 1;
        self.queue.push(Reverse((self.now + after_ms, self.sequence, slot)));
    }

    fn start(&mut self) {
        for client in 0..self.clients.len() {
            let delay = self.rng.below(20);
            self.schedule(delay, Event::ClientNext { client });
        }
        for node in 0..self.nodes.len() {
            let delay = self.rng.below(REPAIR_INTERVAL_MS);
            self.schedule(delay, Event::Repair { node, incarnation: 0 });
        }
        if self.any_episodic_faults() {
            let delay = self.rng.below(200);
            self.schedule(delay, Event::Fault);
        }
        // Faults stop when the clients stop starting operations (those in flight go on).
        self.schedule(self.config.load_ms, Event::Heal);
    }

    fn any_episodic_faults(&self) -> bool {
        let faults = &self.config.faults;
        faults.partition_every_ms + faults.crash_every_ms + faults.pause_every_ms > 0
    }

    fn run_until(&mut self, end: u64) {
        while let Some(&Reverse((time, _, slot))) = self.queue.peek() {
            if time > end || self.done {
                break;
            }
            self.queue.pop();
            let event = self.events[slot].take().expect("scheduled event");
            self.free.push(slot);
            self.now = time;
            self.handle(event);
        }
    }

    fn physical_ms(&self, node: usize) -> u64 {
        (EPOCH_MS as i64 + self.now as i64 + self.nodes[node].skew_ms) as u64
    }

    fn send(&mut self, from: Endpoint, to: Endpoint, message: Message) {
        let (Endpoint::Node(a), Endpoint::Node(b)) = (from, to) else {
            // Client links: reliable and in order enough (TCP), a millisecond or two.
            let delay = 1 + self.rng.below(2);
            self.schedule(delay, Event::Deliver { from, to, message });
            return;
        };
        self.report.messages += 1;
        if a == b {
            self.schedule(0, Event::Deliver { from, to, message });
            return;
        }
        let faults = self.config.faults.clone();
        let lossy = !self.healed;
        if self.cut.contains(&(a, b)) || (lossy && self.rng.chance(faults.loss_per_mille, 1_000)) {
            self.report.dropped += 1;
            return;
        }
        let copies = if lossy && self.rng.chance(faults.duplicate_per_mille, 1_000) { 2 } else { 1 };
        for _ in 0..copies {
            let delay = 1 + self.rng.below(faults.max_delay_ms.max(1));
            self.schedule(delay, Event::Deliver { from, to, message: message.clone() });
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Deliver { from, to, message } => self.deliver(from, to, message),
            Event::RoundTimeout { op, round } => {
                if let Some(coordination) = self.coordination(op)
                    && coordination.round == round
                {
                    self.new_round(op, Ballot::ZERO);
                }
            }
            Event::Restart { op, round } => {
                if self.coordination(op).is_some_and(|c| c.round == round) {
                    self.new_round(op, Ballot::ZERO);
                }
            }
            Event::Deadline { op } => {
                if let Some(coordination) = self.coordination(op) {
                    if coordination.proposer.maybe_applied() {
                        self.finish_op(op, Answer::Unknown, Some(Unknown::Deadline));
                    } else {
                        self.finish_op(op, Answer::Failed, None);
                    }
                }
            }
            Event::ClientNext { client } => self.client_next(client),
            Event::ClientTimeout { client, seq } => {
                if self.clients[client].seq == seq && self.clients[client].pending.is_some() {
                    self.client_done(client, seq, Answer::Unknown);
                }
            }
            Event::Repair { node, incarnation } => self.repair(node, incarnation),
            Event::Fault => self.inject_fault(),
            Event::HealLink { from, to } => {
                self.cut.remove(&(from, to));
            }
            Event::NodeUp { node } => self.node_up(node),
            Event::Resume { node } => self.nodes[node].paused_until = None,
            Event::Heal => self.heal(),
            Event::CheckConvergence => self.check_convergence(),
        }
    }

    // ----- clients -----

    fn client_next(&mut self, client: usize) {
        if self.now >= self.config.load_ms || self.healed {
            return;
        }
        let key = self.rng.below(self.config.keys);
        let op = match self.rng.below(10) {
            0..=3 => ClientOp::Read,
            4..=5 => ClientOp::Write(Some(self.fresh_value())),
            6 => ClientOp::Write(None),
            _ => {
                let expected = self.clients[client].seen.get(&key).copied().flatten();
                ClientOp::Cas { expected, new: Some(self.fresh_value()) }
            }
        };
        let node = self.rng.below(self.nodes.len() as u64) as usize;
        self.issue(client, node, key, op);
    }

    fn fresh_value(&mut self) -> u64 {
        self.next_value += 1;
        self.next_value
    }

    fn issue(&mut self, client: usize, node: usize, key: Key, op: ClientOp) {
        self.clients[client].seq += 1;
        let seq = self.clients[client].seq;
        let history_op = match op {
            ClientOp::Read => Op::Read,
            ClientOp::Write(value) => Op::Write(value),
            ClientOp::Cas { expected, new } => Op::Cas { expected, new },
        };
        let events = self.history.entry(key).or_default();
        events.push(HistoryEvent { client: client as u64, op: history_op, invoke: self.now, complete: None });
        let index = events.len() - 1;
        self.clients[client].pending = Some(index);
        self.pending_at.insert((client, seq), (key, index));
        self.send(Endpoint::Client(client), Endpoint::Node(node), Message::Request { seq, key, op });
        self.schedule(CLIENT_TIMEOUT_MS, Event::ClientTimeout { client, seq });
    }

    fn client_done(&mut self, client: usize, seq: u64, answer: Answer) {
        if self.clients[client].seq != seq || self.clients[client].pending.is_none() {
            return; // a late answer after a timeout
        }
        self.clients[client].pending = None;
        let (key, index) = self.pending_at.remove(&(client, seq)).expect("pending operation recorded");
        let event = &mut self.history.get_mut(&key).expect("history")[index];
        match answer {
            Answer::Ok(output) => {
                self.report.ok += 1;
                event.complete = Some((self.now, output));
                let seen = match (output, event.op) {
                    (Output::Read(value), _) => Some(value),
                    (Output::Written, Op::Write(value)) => Some(value),
                    (Output::Cas(true), Op::Cas { new, .. }) => Some(new),
                    _ => None,
                };
                if let Some(value) = seen {
                    self.clients[client].seen.insert(key, value);
                }
            }
            Answer::Failed => {
                // Nothing was applied: the operation is not part of the history. A read that
                // failed constrains nothing either.
                self.report.failed += 1;
                event.op = Op::Read;
                event.complete = None;
            }
            Answer::Unknown => self.report.indeterminate += 1,
        }
        if client >= self.config.clients {
            // A final read: the run is over once all of them have answers.
            self.done = self.clients[self.config.clients..].iter().all(|c| c.pending.is_none());
            return;
        }
        let think = self.rng.below(20);
        self.schedule(think, Event::ClientNext { client });
    }

    // ----- messages -----

    fn deliver(&mut self, from: Endpoint, to: Endpoint, message: Message) {
        let node = match to {
            Endpoint::Client(client) => {
                if let Message::Answer { seq, answer } = message {
                    self.client_done(client, seq, answer);
                }
                return;
            }
            Endpoint::Node(node) => node,
        };
        if !self.nodes[node].up {
            return;
        }
        if let Some(until) = self.nodes[node].paused_until {
            // A frozen process: the message waits in its socket buffer.
            self.schedule(until.saturating_sub(self.now) + 1, Event::Deliver { from, to, message });
            return;
        }
        if let Some(time) = message.ballot_time() {
            let physical = self.physical_ms(node);
            self.nodes[node].clock.observe(time, physical);
        }
        let reply_to = from;
        let me = Endpoint::Node(node);
        match message {
            Message::Request { seq, key, op } => {
                let Endpoint::Client(client) = from else { return };
                self.coordinate(node, Some((client, seq)), key, op);
            }
            Message::Read { op, key } => {
                let knowledge = self.nodes[node].acceptor(key).knowledge();
                self.send(me, reply_to, Message::ReadReply { op, knowledge });
            }
            Message::Prepare { op, key, ballot } => {
                let (promise, changed) = self.nodes[node].acceptor(key).prepare(ballot);
                if changed {
                    self.persist(node, key);
                }
                self.send(me, reply_to, Message::Promise { op, ballot, promise });
            }
            Message::Accept { op, key, proposal } => {
                let ballot = proposal.ballot;
                let (answer, changed) = self.nodes[node].acceptor(key).accept(proposal);
                if changed {
                    self.persist(node, key);
                }
                self.send(me, reply_to, Message::Accepted { op, ballot, answer });
            }
            Message::Commit { key, version } => {
                if self.nodes[node].acceptor(key).commit(version) {
                    self.nodes[node].dirty.insert(key);
                }
            }
            Message::ReadReply { op, knowledge } => {
                let Endpoint::Node(replica) = from else { return };
                let id = self.nodes[replica].id;
                if let Some(coordination) = self.coordination_mut(op) {
                    let step = coordination.proposer.on_read(id, knowledge);
                    self.advance(op, step);
                }
            }
            Message::Promise { op, ballot, promise } => {
                let Endpoint::Node(replica) = from else { return };
                let id = self.nodes[replica].id;
                if let Some(coordination) = self.coordination_mut(op) {
                    let step = coordination.proposer.on_promise(id, ballot, promise);
                    self.advance(op, step);
                }
            }
            Message::Accepted { op, ballot, answer } => {
                let Endpoint::Node(replica) = from else { return };
                let id = self.nodes[replica].id;
                if let Some(coordination) = self.coordination_mut(op) {
                    let step = coordination.proposer.on_accept(id, ballot, answer);
                    self.advance(op, step);
                }
            }
            Message::Sync { partition, versions, reply } => self.on_sync(node, from, partition, versions, reply),
            Message::Answer { .. } => {}
        }
    }

    /// Persists a change before the reply that depends on it is sent.
    fn persist(&mut self, node: usize, key: Key) {
        self.nodes[node].dirty.insert(key);
        if self.config.sabotage != Some(Sabotage::ForgetfulAcceptors) {
            self.nodes[node].sync();
        }
    }

    // ----- coordination -----

    fn replicas_of(&self, key: Key) -> Vec<NodeId> {
        self.layout.replicas(self.layout.partition_of_token(key_token(key))).to_vec()
    }

    fn index_of(&self, id: NodeId) -> usize {
        id.0 as usize - 1
    }

    fn coordination(&self, op: OpRef) -> Option<&Coordination> {
        let node = &self.nodes[op.node];
        if !node.up || node.incarnation != op.incarnation {
            return None;
        }
        node.ops.get(&op.id)
    }

    fn coordination_mut(&mut self, op: OpRef) -> Option<&mut Coordination> {
        let node = &mut self.nodes[op.node];
        if !node.up || node.incarnation != op.incarnation {
            return None;
        }
        node.ops.get_mut(&op.id)
    }

    fn coordinate(&mut self, node: usize, client: Option<(usize, u64)>, key: Key, op: ClientOp) {
        let replicas = self.replicas_of(key);
        let id = self.nodes[node].next_op;
        self.nodes[node].next_op += 1;
        let op_ref = OpRef { node, incarnation: self.nodes[node].incarnation, id };
        let (proposer, step) = match op {
            ClientOp::Read => (Proposer::read(replicas), None),
            _ => {
                let ballot = self.fresh_ballot(node, Ballot::ZERO);
                (Proposer::write(replicas, ballot), Some(Step::Prepare(ballot)))
            }
        };
        self.nodes[node].ops.insert(id, Coordination { client, key, op, proposer, round: 0, outputs: Vec::new() });
        self.schedule(OPERATION_DEADLINE_MS, Event::Deadline { op: op_ref });
        match step {
            Some(step) => self.advance(op_ref, step),
            None => {
                self.broadcast(op_ref, |op| Message::Read { op, key });
                self.schedule(ROUND_TIMEOUT_MS, Event::RoundTimeout { op: op_ref, round: 0 });
            }
        }
    }

    fn fresh_ballot(&mut self, node: usize, above: Ballot) -> Ballot {
        let physical = self.physical_ms(node);
        let clock = &mut self.nodes[node].clock;
        if above.time > clock.last() {
            clock.observe(above.time, physical);
        }
        Ballot { time: clock.now(physical), node: self.nodes[node].id }
    }

    fn broadcast(&mut self, op: OpRef, message: impl Fn(OpRef) -> Message) {
        let replicas = self.coordination(op).expect("coordinating").proposer.replicas().to_vec();
        for replica in replicas {
            let to = self.index_of(replica);
            self.send(Endpoint::Node(op.node), Endpoint::Node(to), message(op));
        }
    }

    fn new_round(&mut self, op: OpRef, above: Ballot) {
        let ballot = self.fresh_ballot(op.node, above);
        let coordination = self.coordination_mut(op).expect("coordinating");
        coordination.round += 1;
        let step = coordination.proposer.restart(ballot);
        self.advance(op, step);
    }

    fn advance(&mut self, op: OpRef, step: Step<Value>) {
        match step {
            Step::Wait => {}
            Step::Prepare(ballot) => {
                let key = self.coordination(op).expect("coordinating").key;
                self.broadcast(op, |op| Message::Prepare { op, key, ballot });
                let round = self.coordination(op).expect("coordinating").round;
                self.schedule(ROUND_TIMEOUT_MS, Event::RoundTimeout { op, round });
            }
            Step::Apply(current) => {
                let coordination = self.coordination_mut(op).expect("coordinating");
                let value = current.and_then(|version| version.value);
                let (decision, output) = match coordination.op {
                    ClientOp::Read => (Decision::Keep, Output::Read(value)),
                    ClientOp::Write(new) => (Decision::Write(new), Output::Written),
                    ClientOp::Cas { expected, new } if expected == value => (Decision::Write(new), Output::Cas(true)),
                    ClientOp::Cas { .. } => (Decision::Keep, Output::Cas(false)),
                };
                let ballot = coordination.proposer.ballot();
                coordination.outputs.push((ballot, output));
                let step = coordination.proposer.decide(decision);
                self.advance(op, step);
            }
            Step::Accept(proposal) => {
                let key = self.coordination(op).expect("coordinating").key;
                self.broadcast(op, |op| Message::Accept { op, key, proposal: proposal.clone() });
                let round = self.coordination(op).expect("coordinating").round;
                self.schedule(ROUND_TIMEOUT_MS, Event::RoundTimeout { op, round });
            }
            Step::Retry(above) => {
                let physical = self.physical_ms(op.node);
                self.nodes[op.node].clock.observe(above.time, physical);
                let coordination = self.coordination_mut(op).expect("coordinating");
                coordination.round += 1;
                let round = coordination.round;
                let backoff = 1 + self.rng.below(30);
                self.schedule(backoff, Event::Restart { op, round });
            }
            Step::Done(outcome) => {
                if let Some(chosen) = outcome.commit.clone() {
                    let key = self.coordination(op).expect("coordinating").key;
                    self.broadcast(op, |_| Message::Commit { key, version: chosen.clone() });
                }
                let coordination = self.coordination(op).expect("coordinating");
                let output = match coordination.op {
                    ClientOp::Read => Output::Read(outcome.version.and_then(|version| version.value)),
                    _ => coordination
                        .outputs
                        .iter()
                        .find(|(ballot, _)| *ballot == outcome.decided_at)
                        .map(|&(_, output)| output)
                        .expect("the deciding round's output was kept"),
                };
                self.finish_op(op, Answer::Ok(output), None);
            }
            Step::Indeterminate => self.finish_op(op, Answer::Unknown, Some(Unknown::Contention)),
        }
    }

    fn finish_op(&mut self, op: OpRef, answer: Answer, unknown: Option<Unknown>) {
        let Some(coordination) = self.nodes[op.node].ops.remove(&op.id) else { return };
        if coordination.client.is_some() {
            match unknown {
                Some(Unknown::Contention) => self.report.unknown_by_contention += 1,
                Some(Unknown::Deadline) => self.report.unknown_by_deadline += 1,
                None => {}
            }
        }
        if let Some((client, seq)) = coordination.client {
            self.send(Endpoint::Node(op.node), Endpoint::Client(client), Message::Answer { seq, answer });
        }
    }

    // ----- background repair -----

    fn repair(&mut self, node: usize, incarnation: u64) {
        if self.nodes[node].incarnation != incarnation || !self.nodes[node].up {
            return; // a timer of an earlier life; the restart scheduled a new one
        }
        self.schedule(REPAIR_INTERVAL_MS, Event::Repair { node, incarnation });
        if self.nodes[node].paused_until.is_some() || self.config.sabotage == Some(Sabotage::NoRepair) {
            return;
        }
        // Finish proposals left unfinished (their coordinator crashed or gave up).
        let now = self.physical_ms(node);
        let stale: Vec<Key> = self.nodes[node]
            .store
            .iter()
            .filter(|(_, state)| {
                state.accepted.as_ref().is_some_and(|a| a.ballot.time.physical_ms() + STALE_PROPOSAL_MS < now)
            })
            .map(|(&key, _)| key)
            .collect();
        for key in stale {
            let busy = self.nodes[node].ops.values().any(|c| c.client.is_none() && c.key == key);
            if !busy {
                self.coordinate(node, None, key, ClientOp::Read);
            }
        }
        // Anti-entropy with one other replica of one partition this node holds.
        let id = self.nodes[node].id;
        let partitions: Vec<PartitionId> = self.layout.partitions_of(id).collect();
        let keys: Vec<Key> = (0..self.config.keys).collect();
        let held: Vec<PartitionId> = partitions
            .into_iter()
            .filter(|&p| keys.iter().any(|&k| self.layout.partition_of_token(key_token(k)) == p))
            .collect();
        if held.is_empty() {
            return;
        }
        let partition = held[self.rng.below(held.len() as u64) as usize];
        let peers: Vec<NodeId> = self.layout.replicas(partition).iter().copied().filter(|&p| p != id).collect();
        if peers.is_empty() {
            return;
        }
        let pick = self.rng.below(peers.len() as u64) as usize;
        let peer = self.index_of(peers[pick]);
        let versions = self.committed_versions(node, partition);
        self.send(Endpoint::Node(node), Endpoint::Node(peer), Message::Sync { partition, versions, reply: true });
    }

    fn committed_versions(&self, node: usize, partition: PartitionId) -> Vec<(Key, Version<Value>)> {
        self.nodes[node]
            .store
            .iter()
            .filter(|(key, _)| self.layout.partition_of_token(key_token(**key)) == partition)
            .filter_map(|(&key, state)| state.committed.clone().map(|version| (key, version)))
            .collect()
    }

    fn on_sync(
        &mut self,
        node: usize,
        from: Endpoint,
        partition: PartitionId,
        versions: Vec<(Key, Version<Value>)>,
        reply: bool,
    ) {
        for (key, version) in versions {
            if self.nodes[node].acceptor(key).commit(version) {
                self.nodes[node].dirty.insert(key);
            }
        }
        if reply {
            let versions = self.committed_versions(node, partition);
            self.send(Endpoint::Node(node), from, Message::Sync { partition, versions, reply: false });
        }
    }

    // ----- faults -----

    fn inject_fault(&mut self) {
        if self.now >= self.config.load_ms || self.healed {
            return;
        }
        let faults = self.config.faults.clone();
        let kinds: Vec<u64> = [faults.partition_every_ms, faults.crash_every_ms, faults.pause_every_ms]
            .into_iter()
            .filter(|&every| every > 0)
            .collect();
        // Next episode: exponential-ish spacing around the fastest configured rate.
        let mean = kinds.iter().copied().min().unwrap_or(1_000);
        let next = 1 + self.rng.below(2 * mean);
        self.schedule(next, Event::Fault);
        let n = self.nodes.len();
        let choice = self.rng.below(3);
        if choice == 0 && faults.partition_every_ms > 0 && self.rng.chance(mean, faults.partition_every_ms) {
            self.report.partitions += 1;
            let size = 1 + self.rng.below(n as u64 / 2) as usize;
            let mut group = BTreeSet::new();
            while group.len() < size {
                group.insert(self.rng.below(n as u64) as usize);
            }
            let one_way = self.rng.chance(1, 3);
            let duration = 100 + self.rng.below(900);
            for &a in &group {
                for b in (0..n).filter(|b| !group.contains(b)) {
                    for (from, to) in if one_way { vec![(a, b)] } else { vec![(a, b), (b, a)] } {
                        if self.cut.insert((from, to)) {
                            self.schedule(duration, Event::HealLink { from, to });
                        }
                    }
                }
            }
        } else if choice == 1 && faults.crash_every_ms > 0 && self.rng.chance(mean, faults.crash_every_ms) {
            let node = self.rng.below(n as u64) as usize;
            if self.nodes[node].up {
                self.report.crashes += 1;
                self.crash(node);
                let down_for = 50 + self.rng.below(950);
                self.schedule(down_for, Event::NodeUp { node });
            }
        } else if choice == 2 && faults.pause_every_ms > 0 && self.rng.chance(mean, faults.pause_every_ms) {
            let node = self.rng.below(n as u64) as usize;
            if self.nodes[node].up && self.nodes[node].paused_until.is_none() {
                self.report.pauses += 1;
                let until = self.now + 50 + self.rng.below(550);
                self.nodes[node].paused_until = Some(until);
                self.schedule(until - self.now, Event::Resume { node });
            }
        }
    }

    fn crash(&mut self, node: usize) {
        let state = &mut self.nodes[node];
        state.up = false;
        state.paused_until = None;
        state.store = state.durable.clone();
        state.dirty.clear();
        state.ops.clear();
        // The clock survives only as far as physical time carries it: a restarted node's HLC
        // starts from its wall clock (ballots stay unique by node id and persisted promises).
        state.clock = Clock::new();
    }

    fn node_up(&mut self, node: usize) {
        if self.nodes[node].up {
            return;
        }
        let state = &mut self.nodes[node];
        state.up = true;
        state.incarnation += 1;
        let incarnation = state.incarnation;
        let delay = self.rng.below(REPAIR_INTERVAL_MS);
        self.schedule(delay, Event::Repair { node, incarnation });
    }

    fn heal(&mut self) {
        self.healed = true;
        self.cut.clear();
        for node in 0..self.nodes.len() {
            self.nodes[node].paused_until = None;
            self.node_up(node);
        }
        self.schedule(0, Event::CheckConvergence);
    }

    fn check_convergence(&mut self) {
        let heal_started = self.config.load_ms;
        if self.converged() {
            self.report.converged_after_ms = Some(self.now - heal_started);
            self.final_reads();
            return;
        }
        if self.now - heal_started > self.config.heal_bound_ms {
            let mut detail = String::new();
            for key in 0..self.config.keys {
                for replica in self.replicas_of(key) {
                    let state = self.nodes[self.index_of(replica)].store.get(&key);
                    let _ = write!(detail, "\n  key {key} on {replica:?}: {state:?}");
                }
            }
            self.report
                .violations
                .push(format!("replicas did not converge within {} ms of healing:{detail}", self.config.heal_bound_ms));
            self.queue.clear();
            return;
        }
        self.schedule(50, Event::CheckConvergence);
    }

    fn converged(&self) -> bool {
        (0..self.config.keys).all(|key| {
            let states: Vec<Option<&Acceptor<Value>>> = self
                .replicas_of(key)
                .iter()
                .map(|&replica| self.nodes[self.index_of(replica)].store.get(&key))
                .collect();
            let committed = |state: &Option<&Acceptor<Value>>| state.and_then(|s| s.committed.clone());
            states.iter().all(|state| state.is_none_or(|s| s.accepted.is_none()))
                && states.iter().all(|state| committed(state) == committed(&states[0]))
        })
    }

    /// After convergence: one strict read of every key, by extra clients, through random nodes.
    fn final_reads(&mut self) {
        for key in 0..self.config.keys {
            self.final_reads.insert(key);
            let client = self.clients.len();
            self.clients.push(Client { seq: 0, pending: None, seen: BTreeMap::new() });
            let node = self.rng.below(self.nodes.len() as u64) as usize;
            self.issue(client, node, key, ClientOp::Read);
        }
    }

    fn finish(mut self) -> Report {
        for (key, events) in &self.history {
            if let Err(violation) = linearizability::check(None, events) {
                self.report.violations.push(format!("key {key} is not linearizable: {violation}"));
            }
        }
        for key in &self.final_reads {
            let answered = self.history[key].iter().rev().find(|event| event.client >= self.config.clients as u64);
            if answered.is_none_or(|event| event.complete.is_none()) {
                self.report.violations.push(format!("the final strict read of key {key} got no answer"));
            }
        }
        if self.report.converged_after_ms.is_none() && self.report.violations.is_empty() {
            self.report.violations.push("the run ended before convergence was checked".into());
        }
        self.report
    }
}

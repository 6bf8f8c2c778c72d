//! Linearizability checking of single-key histories.
//!
//! **What.** [`check`] decides whether a concurrent history of reads, writes and conditional
//! writes on one key is linearizable (Herlihy and Wing, "Linearizability: a correctness condition
//! for concurrent objects", TOPLAS 1990): whether every operation can be given one instant
//! between its invocation and its completion such that, taken in the order of those instants, the
//! operations are a legal sequential history of a register that starts at the initial state. The
//! simulator records what its clients saw and asks this module whether strict-mode single-item
//! operations behaved as one copy of the data would.
//!
//! **Why one key.** Linearizability is compositional (Herlihy and Wing's locality theorem, and
//! Horn and Kroening's P-compositionality, "Faster linearizability checking via
//! P-compositionality", FORTE 2015): a history over many keys is linearizable exactly when the
//! sub-history of each key is. The caller splits its history by key; this module only knows one
//! register, whose state is `Option<u64>` (`None`: the item is absent).
//!
//! **Real-time order.** Operation `a` precedes `b` when `a` completed strictly before `b` was
//! invoked (`a.complete < b.invoke`). An operation that completes at the instant another is
//! invoked is concurrent with it: simulated clocks tick in whole units and the two may well have
//! overlapped within one.
//!
//! **Indeterminate operations.** A client that times out, or whose coordinator crashes, never
//! learns whether its operation took effect ([`Event::complete`] is `None`). Such an operation may
//! have taken effect at any instant after its invocation, however late — a message can sit in a
//! queue — or never. An indeterminate read constrains nothing and is dropped. An indeterminate
//! write or conditional write is an operation whose completion lies at infinity, so it never
//! precedes anything, and which need not be placed at all: leaving it out is the same as placing
//! it after everything else, where no read can see it.
//!
//! **Algorithm.** The search of Wing and Gong ("Testing and verifying concurrent objects", JPDC
//! 1993) with the memoization of Lowe ("Testing for linearizability", Concurrency and
//! Computation: Practice and Experience, 2017) — the algorithm Knossos and Porcupine implement
//! ("WGL"), written here from the papers. The completed operations' invocations and completions
//! are kept in one list ordered by time, invocations first at equal times. The operations that
//! may be placed next in the linearization are those invoked no later than the earliest
//! completion among the operations not yet placed: in the list, the invocations before the first
//! completion, and the indeterminate operations invoked by then (a second list, by invocation).
//! The search tries them in order: an operation whose output agrees with the register's state is
//! placed (its entries leave the lists, the state advances) and the scan starts again; when no
//! candidate is left, the last placement is undone and the scan resumes after it. Every
//! configuration reached — the placed operations as a bitset, and the state — is remembered, and
//! one seen before is not explored again: what can follow depends on nothing else. Histories of
//! a few hundred operations from a handful of concurrent clients take thousands of
//! configurations, not the exponential number of orders; a budget on configurations bounds the
//! rest ([`Violation::Inconclusive`]).
//!
//! **Reductions.** Each of these skips only configurations that cannot succeed unless one the
//! search does explore succeeds too; a test compares the verdicts with an exhaustive enumeration.
//! - *State-preserving operations first.* A candidate that agrees with the state without changing
//!   it — a completed read, a failed conditional write, one that set the value it expected — can
//!   be moved to the front of any linearization of the rest, so when there is one it is the only
//!   candidate tried. Most operations are reads, so this prunes most of the search.
//! - *Indeterminate operations last, and dominated configurations.* Indeterminate candidates are
//!   tried after completed ones, and a configuration is skipped when one seen before has the same
//!   completed operations placed, the same state, and a subset of its indeterminate operations:
//!   that one can do everything this one can, since an indeterminate operation need not be placed.
//!   For the same reason an indeterminate operation that would not change the state is not placed.
//! - *Interchangeable indeterminate operations* (the same write, or the same conditional write)
//!   are placed in invocation order only.
//! - *Unobservable values merged.* Values that no completed read returned and no conditional
//!   write expects all behave alike, so they are renamed to one. A simulator writes unique values;
//!   this makes its indeterminate writes that nobody read interchangeable.
//!
//! What remains exponential is many indeterminate writes of values that were read: each may have
//! happened at many points. Rejecting a 400-operation history from 8 clients with unique values
//! and one operation in ten indeterminate takes up to about a hundred thousand configurations;
//! with one in five, or with values from a domain of four, some such histories exceed the
//! default budget.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

use onggi_core::rng::Rng;

/// The register's state: the item's value, or `None` when it is absent.
type State = Option<u64>;

/// How many configurations [`check`] explores before it gives up as [`Violation::Inconclusive`].
/// For a history of 400 operations a configuration costs about a hundred bytes and 1 to 2 µs as
/// the workspace builds this crate (opt-level 2, in dev builds too; about five times that
/// unoptimized), the more the more indeterminate operations are pending: the default bounds a
/// check to about 100 MB and 2 s. Accepting such a history from 8 concurrent clients takes a few
/// thousand configurations; rejecting one, which means exhausting the search, up to a few hundred
/// thousand.
pub const DEFAULT_BUDGET_STATES: u64 = 1_000_000;

/// An operation on the register.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// Reads the state.
    Read,
    /// Sets the state unconditionally: a put (`Some`) or a delete (`None`).
    Write(Option<u64>),
    /// Sets the state to `new` if and only if it equals `expected`; otherwise changes nothing.
    Cas {
        /// The state the write requires.
        expected: Option<u64>,
        /// The state after the write when it applies.
        new: Option<u64>,
    },
}

/// What a client learned when its operation completed. Each [`Op`] has its own variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Output {
    /// A [`Op::Read`] returned this state.
    Read(Option<u64>),
    /// A [`Op::Write`] was acknowledged.
    Written,
    /// A [`Op::Cas`] applied (`true`) or its condition failed and the state is unchanged
    /// (`false`).
    Cas(bool),
}

/// One operation of a history, as a client saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The client that issued it; shown in reports, not otherwise used (real-time order already
    /// orders one client's successive operations).
    pub client: u64,
    /// The operation.
    pub op: Op,
    /// Simulated time at which the client invoked it.
    pub invoke: u64,
    /// Simulated time at which the client learned the output, and the output; `None` when the
    /// client never learned it (the operation is indeterminate).
    pub complete: Option<(u64, Output)>,
}

/// A successful check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    /// Configurations the search explored (at most the budget).
    pub states_explored: u64,
    /// A witness: indices into the history, in linearization order. Every completed write and
    /// conditional write and every completed read appears once; an indeterminate operation that
    /// does not appear is taken never to have happened.
    pub linearization: Vec<usize>,
}

/// Why a check did not succeed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// No linearization exists. The boxed report says how far the search got; its `Display`
    /// shows the whole history.
    NotLinearizable(Box<Counterexample>),
    /// The search explored its whole budget without deciding.
    Inconclusive {
        /// The budget, in configurations.
        budget_states: u64,
        /// Operations in the history (indeterminate reads excluded).
        operations: usize,
        /// The most completed operations any partial linearization placed.
        placed_max: usize,
        /// Completed operations in the history.
        completed: usize,
    },
    /// The history cannot be a record of real operations; a bug in whatever recorded it.
    Malformed {
        /// Index of the offending event in the history.
        index: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// The report of a non-linearizable history, for a human debugging a simulator seed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counterexample {
    /// The register's state before the history.
    pub initial: Option<u64>,
    /// The history, as given.
    pub history: Vec<Event>,
    /// Configurations the search explored.
    pub states_explored: u64,
    /// The longest linearizable prefix the search found (the one placing the most completed
    /// operations), as indices into the history, in order.
    pub deepest: Vec<usize>,
    /// The register's state after `deepest`.
    pub state_after_deepest: Option<u64>,
    /// The unplaced completed operation that completes first: nothing invoked after its
    /// completion can be placed before it.
    pub blocking: usize,
    /// The operations that could come next after `deepest`, as indices into the history, with
    /// whether their outputs agree with `state_after_deepest`. When one agrees, every
    /// continuation through it failed further on.
    pub candidates: Vec<(usize, bool)>,
}

/// Decides whether `history`, a history of operations on one register whose state starts at
/// `initial`, is linearizable, within [`DEFAULT_BUDGET_STATES`] configurations. The events may
/// come in any order.
pub fn check(initial: Option<u64>, history: &[Event]) -> Result<Checked, Violation> {
    check_with_budget(initial, history, DEFAULT_BUDGET_STATES)
}

/// [`check`] with an explicit budget: the search gives up as [`Violation::Inconclusive`] after
/// exploring `budget_states` configurations.
pub fn check_with_budget(initial: Option<u64>, history: &[Event], budget_states: u64) -> Result<Checked, Violation> {
    validate(history)?;
    let mut operations: Vec<Operation> = history
        .iter()
        .enumerate()
        .filter(|(_, event)| !(event.op == Op::Read && event.complete.is_none()))
        .map(|(index, event)| Operation {
            index,
            op: event.op,
            invoke: event.invoke,
            complete: event.complete.map(|(time, _)| time),
            output: event.complete.map(|(_, output)| output),
        })
        .collect();
    let merged_initial = merge_unobservable(initial, &mut operations);
    let outcome = Search::new(merged_initial, &operations, budget_states).run();
    outcome
        .map(|(states_explored, order)| Checked {
            states_explored,
            linearization: order.into_iter().map(|position| operations[position].index).collect(),
        })
        .map_err(|failure| match failure {
            Failure::Exhausted { states_explored, deepest } => {
                let deepest = deepest.into_iter().map(|position| operations[position].index).collect();
                Violation::NotLinearizable(Box::new(counterexample(initial, history, states_explored, deepest)))
            }
            Failure::OverBudget { placed_max } => Violation::Inconclusive {
                budget_states,
                operations: operations.len(),
                placed_max,
                completed: operations.iter().filter(|operation| operation.complete.is_some()).count(),
            },
        })
}

/// Gives every unobservable value one name, and returns the initial state under it.
///
/// A value is observable when a completed read returned it or a conditional write expects it.
/// A register holding any other value behaves the same whichever it holds — every read and every
/// condition fails — so renaming all of them to one changes no output, while making more
/// configurations equal. That matters for indeterminate writes: a simulator writes unique values,
/// so the writes whose outcome is unknown and that nobody read become interchangeable (see
/// `Search::twin_before`) instead of multiplying the configurations.
fn merge_unobservable(initial: State, operations: &mut [Operation]) -> State {
    let mut observable = HashSet::new();
    for operation in operations.iter() {
        match (operation.op, operation.output) {
            (Op::Read, Some(Output::Read(seen))) => {
                observable.insert(seen);
            }
            (Op::Cas { expected, .. }, _) => {
                observable.insert(expected);
            }
            _ => {}
        }
    }
    let mut unobservable_name = None;
    let mut rename = |value: State| {
        if observable.contains(&value) { value } else { *unobservable_name.get_or_insert(value) }
    };
    let initial = rename(initial);
    for operation in operations.iter_mut() {
        match &mut operation.op {
            Op::Read => {}
            Op::Write(value) => *value = rename(*value),
            Op::Cas { new, .. } => *new = rename(*new),
        }
    }
    initial
}

/// Rejects events no real client could have recorded.
fn validate(history: &[Event]) -> Result<(), Violation> {
    for (index, event) in history.iter().enumerate() {
        let Some((complete, output)) = event.complete else { continue };
        if complete < event.invoke {
            return Err(Violation::Malformed { index, reason: "completes before it is invoked" });
        }
        let matches = matches!(
            (event.op, output),
            (Op::Read, Output::Read(_)) | (Op::Write(_), Output::Written) | (Op::Cas { .. }, Output::Cas(_))
        );
        if !matches {
            return Err(Violation::Malformed { index, reason: "its output is not one its operation can return" });
        }
    }
    Ok(())
}

/// An operation the search considers: every event but indeterminate reads.
#[derive(Clone, Copy, Debug)]
struct Operation {
    /// Index of the event in the history.
    index: usize,
    op: Op,
    invoke: u64,
    /// `None`: indeterminate.
    complete: Option<u64>,
    /// `None`: indeterminate.
    output: Option<Output>,
}

/// The state after `op` is applied to `state` and returns `output` (`None`: unknown), or `None`
/// when the output contradicts the state.
fn apply(state: State, op: Op, output: Option<Output>) -> Option<State> {
    match (op, output) {
        (Op::Read, Some(Output::Read(seen))) => (seen == state).then_some(state),
        (Op::Write(value), _) => Some(value),
        (Op::Cas { expected, new }, Some(Output::Cas(applied))) => {
            (applied == (state == expected)).then_some(if applied { new } else { state })
        }
        (Op::Cas { expected, new }, None) => Some(if state == expected { new } else { state }),
        // An indeterminate read is never searched; `validate` rejects mismatched outputs.
        (Op::Read, _) | (Op::Cas { .. }, Some(_)) => None,
    }
}

/// An element of the time-ordered lists.
#[derive(Clone, Copy, Debug)]
enum Entry {
    /// Before every other entry of its list.
    Head,
    /// The invocation of an operation (its position in the operations).
    Invoke(usize),
    /// The completion of a completed operation.
    Complete(usize),
    /// After every other entry of its list.
    Tail,
}

/// Why a search ended without a linearization.
enum Failure {
    /// Every configuration was explored.
    Exhausted { states_explored: u64, deepest: Vec<usize> },
    /// The budget ran out.
    OverBudget { placed_max: usize },
}

/// Where the scan for the next operation to place stands.
#[derive(Clone, Copy, Debug)]
enum Cursor {
    /// A configuration was just reached: look for a state-preserving candidate first.
    Fresh,
    /// At this entry of the main list.
    Completed(usize),
    /// At this entry of the indeterminate list; candidates there are invoked no later than
    /// `horizon`, the earliest completion among unplaced operations.
    Indeterminate { entry: usize, horizon: u64 },
}

/// A placed operation.
struct Placement {
    /// Its position in the operations.
    position: usize,
    /// The state before it.
    before: State,
    /// Where the scan resumes when the placement is undone; `Fresh` for a state-preserving
    /// operation, whose configuration fails with it, so that no other candidate is tried there.
    resume: Cursor,
}

/// The WGL search over one history, and its current configuration.
///
/// Completed operations' invocations and completions form the main list; indeterminate
/// operations' invocations form a second list, scanned after the main one's candidates, so that
/// configurations reached without them are explored — and remembered — first.
struct Search<'a> {
    operations: &'a [Operation],
    entries: Vec<Entry>,
    /// The doubly linked lists over `entries`, by index; entries leave and re-enter them in
    /// last-out, first-in order ("dancing links"), so a removed entry remembers its neighbours.
    next: Vec<usize>,
    previous: Vec<usize>,
    /// The indeterminate list's head (the main list's is `HEAD`).
    indeterminate_head: usize,
    /// Each operation's invocation entry.
    invoke_entry: Vec<usize>,
    /// Each operation's completion entry, `None` when indeterminate.
    complete_entry: Vec<Option<usize>>,
    /// Each operation's bit: in `placed_completed` for a completed operation, in
    /// `placed_indeterminate` for an indeterminate one.
    slot: Vec<usize>,
    /// Per indeterminate operation, the indeterminate operation with the same `Op` invoked just
    /// before it. Such twins are interchangeable, so they are placed in invocation order only.
    twin_before: Vec<Option<usize>>,
    /// Each completed operation's random fingerprint key.
    keys: Vec<u64>,

    /// The register's state after the placed operations.
    state: State,
    /// The placed operations, as two bitsets: with `state`, the configuration.
    placed_completed: Vec<u64>,
    placed_indeterminate: Vec<u64>,
    /// The exclusive or of the placed completed operations' keys, kept up to date as they are
    /// placed and unplaced.
    placed_fingerprint: u64,
    /// The placed operations, in order.
    placed: Vec<Placement>,
    /// Every configuration reached so far.
    seen: Seen,
    states_explored: u64,
    budget_states: u64,
    /// Completed operations in the history, and among the placed ones.
    completed: usize,
    completed_placed: usize,
    /// The placements (positions) that placed the most completed operations so far, and how
    /// many.
    deepest: Vec<usize>,
    deepest_completed: usize,
}

/// The main list's head.
const HEAD: usize = 0;

impl<'a> Search<'a> {
    fn new(initial: State, operations: &'a [Operation], budget_states: u64) -> Search<'a> {
        // (time, completion after invocation at equal times, operation): invocations at the
        // instant of a completion stay concurrent with it.
        let mut main: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * operations.len());
        let mut indeterminate: Vec<(u64, usize)> = Vec::new();
        for (position, operation) in operations.iter().enumerate() {
            match operation.complete {
                Some(complete) => {
                    main.push((operation.invoke, false, position));
                    main.push((complete, true, position));
                }
                None => indeterminate.push((operation.invoke, position)),
            }
        }
        main.sort_unstable();
        indeterminate.sort_unstable();

        let mut entries = Vec::with_capacity(main.len() + indeterminate.len() + 4);
        let mut invoke_entry = vec![0; operations.len()];
        let mut complete_entry = vec![None; operations.len()];
        entries.push(Entry::Head);
        for &(_, is_completion, position) in &main {
            if is_completion {
                complete_entry[position] = Some(entries.len());
                entries.push(Entry::Complete(position));
            } else {
                invoke_entry[position] = entries.len();
                entries.push(Entry::Invoke(position));
            }
        }
        entries.push(Entry::Tail);
        let indeterminate_head = entries.len();
        entries.push(Entry::Head);
        for &(_, position) in &indeterminate {
            invoke_entry[position] = entries.len();
            entries.push(Entry::Invoke(position));
        }
        entries.push(Entry::Tail);
        // Each list links its own entries; a tail's `next` and a head's `previous` are never read.
        let next = (1..=entries.len()).collect();
        let previous = (0..entries.len()).map(|index| index.wrapping_sub(1)).collect();

        let mut slot = vec![0; operations.len()];
        let (mut completed, mut indeterminate_count) = (0usize, 0usize);
        for (position, operation) in operations.iter().enumerate() {
            let counter = if operation.complete.is_some() { &mut completed } else { &mut indeterminate_count };
            slot[position] = *counter;
            *counter += 1;
        }
        let mut twin_before = vec![None; operations.len()];
        let mut latest_with_op: HashMap<Op, usize> = HashMap::new();
        for &(_, position) in &indeterminate {
            twin_before[position] = latest_with_op.insert(operations[position].op, position);
        }
        let mut rng = Rng::new(FINGERPRINT_SEED);
        let keys = operations.iter().map(|_| rng.next_u64()).collect();

        let completed_words = completed.div_ceil(64);
        let indeterminate_words = indeterminate_count.div_ceil(64);
        Search {
            operations,
            entries,
            next,
            previous,
            indeterminate_head,
            invoke_entry,
            complete_entry,
            slot,
            twin_before,
            keys,
            state: initial,
            placed_completed: vec![0; completed_words],
            placed_indeterminate: vec![0; indeterminate_words],
            placed_fingerprint: 0,
            placed: Vec::new(),
            seen: Seen::new(completed_words, indeterminate_words),
            states_explored: 0,
            budget_states,
            completed,
            completed_placed: 0,
            deepest: Vec::new(),
            deepest_completed: 0,
        }
    }

    /// Finds a linearization: the number of configurations explored, and the positions of the
    /// placed operations in order.
    fn run(mut self) -> Result<(u64, Vec<usize>), Failure> {
        let mut cursor = Cursor::Fresh;
        while self.completed_placed < self.completed {
            cursor = match cursor {
                Cursor::Fresh => match self.preserving_candidate() {
                    Some(position) => self.place_or_backtrack(position, Cursor::Fresh, Cursor::Fresh)?,
                    None => Cursor::Completed(self.next[HEAD]),
                },
                Cursor::Completed(entry) => match self.entries[entry] {
                    Entry::Invoke(position) => {
                        self.place_or_backtrack(position, cursor, Cursor::Completed(self.next[entry]))?
                    }
                    // The first completion in the list bounds the candidates: its operation has to
                    // be placed before anything invoked after it completed.
                    Entry::Complete(blocking) => {
                        let horizon = self.operations[blocking].complete.unwrap_or(u64::MAX);
                        Cursor::Indeterminate { entry: self.next[self.indeterminate_head], horizon }
                    }
                    // Never reached: while a completed operation is unplaced, its completion is
                    // in the list.
                    Entry::Head | Entry::Tail => self.backtrack()?,
                },
                Cursor::Indeterminate { entry, horizon } => match self.entries[entry] {
                    Entry::Invoke(position) if self.operations[position].invoke <= horizon => {
                        let resume = Cursor::Indeterminate { entry: self.next[entry], horizon };
                        self.place_or_backtrack(position, cursor, resume)?
                    }
                    // No candidate left: the last choice was wrong.
                    _ => self.backtrack()?,
                },
            };
        }
        Ok((self.states_explored, self.placed.iter().map(|placement| placement.position).collect()))
    }

    /// Places the candidate at `position` and returns `Fresh`, or if it cannot be placed returns
    /// `otherwise` — except for a state-preserving candidate (`at` is `Fresh`), whose failure
    /// fails its configuration, so the search backtracks.
    fn place_or_backtrack(&mut self, position: usize, at: Cursor, otherwise: Cursor) -> Result<Cursor, Failure> {
        if self.place(position, at)? {
            Ok(Cursor::Fresh)
        } else if let Cursor::Fresh = at {
            self.backtrack()
        } else {
            Ok(otherwise)
        }
    }

    /// A candidate that agrees with the state and leaves it unchanged: a completed read, a
    /// conditional write that failed, or one that set the value it expected. If the current
    /// configuration can be completed at all, it can be completed with that operation first —
    /// moving it to the front of any linearization keeps every output and every real-time
    /// constraint, since nothing unplaced completed before it was invoked — so it is the only
    /// candidate worth trying. Reads are most operations, so this prunes most of the search.
    fn preserving_candidate(&self) -> Option<usize> {
        let mut entry = self.next[HEAD];
        while let Entry::Invoke(position) = self.entries[entry] {
            let operation = self.operations[position];
            // Not a write, even of the current value: moved to the front, it would no longer set
            // its value where it was.
            let write = matches!(operation.op, Op::Write(_));
            if !write && apply(self.state, operation.op, operation.output) == Some(self.state) {
                return Some(position);
            }
            entry = self.next[entry];
        }
        None
    }

    /// Places a candidate if its output agrees with the state and no configuration reached
    /// before can do all the one after it can; `false` otherwise. `resume` is where the scan
    /// resumes when the placement is undone.
    fn place(&mut self, position: usize, resume: Cursor) -> Result<bool, Failure> {
        let operation = self.operations[position];
        let Some(after) = apply(self.state, operation.op, operation.output) else { return Ok(false) };
        let indeterminate = operation.complete.is_none();
        if indeterminate {
            if after == self.state {
                // Placing it gains nothing: the configuration without it can do all the one with
                // it can, since an indeterminate operation never has to be placed.
                return Ok(false);
            }
            if self.twin_before[position].is_some_and(|twin| !self.is_placed(twin)) {
                return Ok(false);
            }
        }
        self.toggle(position);
        let fingerprint = self.placed_fingerprint ^ state_key(after);
        if !self.seen.insert(fingerprint, &self.placed_completed, &self.placed_indeterminate, after) {
            self.toggle(position);
            return Ok(false);
        }
        self.states_explored += 1;
        if self.states_explored > self.budget_states {
            return Err(Failure::OverBudget { placed_max: self.deepest_completed });
        }
        self.placed.push(Placement { position, before: self.state, resume });
        self.state = after;
        self.lift(position);
        if !indeterminate {
            self.completed_placed += 1;
            // The most completed operations, and among those the fewest indeterminate ones: the
            // prefix a human reads first.
            let deeper = self.completed_placed > self.deepest_completed
                || (self.completed_placed == self.deepest_completed && self.placed.len() < self.deepest.len());
            if deeper {
                self.deepest_completed = self.completed_placed;
                self.deepest = self.placed.iter().map(|placement| placement.position).collect();
            }
        }
        Ok(true)
    }

    /// Undoes placements up to and including the latest one that was a choice among candidates,
    /// and returns where the scan resumes.
    fn backtrack(&mut self) -> Result<Cursor, Failure> {
        loop {
            let Some(placement) = self.placed.pop() else {
                return Err(Failure::Exhausted {
                    states_explored: self.states_explored,
                    deepest: std::mem::take(&mut self.deepest),
                });
            };
            let position = placement.position;
            self.toggle(position);
            self.state = placement.before;
            self.unlift(position);
            if self.operations[position].complete.is_some() {
                self.completed_placed -= 1;
            }
            // The scan resumes after the undone operation, in its list.
            let after = self.next[self.invoke_entry[position]];
            match placement.resume {
                Cursor::Fresh => {}
                Cursor::Completed(_) => return Ok(Cursor::Completed(after)),
                Cursor::Indeterminate { horizon, .. } => return Ok(Cursor::Indeterminate { entry: after, horizon }),
            }
        }
    }

    fn is_placed(&self, position: usize) -> bool {
        let slot = self.slot[position];
        let set = if self.operations[position].complete.is_some() {
            &self.placed_completed
        } else {
            &self.placed_indeterminate
        };
        set[slot / 64] & (1 << (slot % 64)) != 0
    }

    /// Places or unplaces an operation in the bitsets and the fingerprint.
    fn toggle(&mut self, position: usize) {
        let slot = self.slot[position];
        if self.operations[position].complete.is_some() {
            self.placed_completed[slot / 64] ^= 1 << (slot % 64);
            self.placed_fingerprint ^= self.keys[position];
        } else {
            self.placed_indeterminate[slot / 64] ^= 1 << (slot % 64);
        }
    }

    fn unlink(&mut self, entry: usize) {
        let (previous, next) = (self.previous[entry], self.next[entry]);
        self.next[previous] = next;
        self.previous[next] = previous;
    }

    fn relink(&mut self, entry: usize) {
        let (previous, next) = (self.previous[entry], self.next[entry]);
        self.next[previous] = entry;
        self.previous[next] = entry;
    }

    /// Takes a placed operation's entries out of the lists.
    fn lift(&mut self, position: usize) {
        self.unlink(self.invoke_entry[position]);
        if let Some(complete) = self.complete_entry[position] {
            self.unlink(complete);
        }
    }

    /// Undoes the latest `lift`.
    fn unlift(&mut self, position: usize) {
        if let Some(complete) = self.complete_entry[position] {
            self.relink(complete);
        }
        self.relink(self.invoke_entry[position]);
    }
}

/// Seeds the operations' fingerprint keys; any constant does.
const FINGERPRINT_SEED: u64 = 0x0691_11AE_A71B_1E00;

/// A state's part of a configuration's fingerprint.
fn state_key(state: State) -> u64 {
    match state {
        // SplitMix's output function spreads even small values over all 64 bits.
        Some(value) => Rng::new(value).next_u64(),
        None => 0x5EED_AB5E_47AB_5E47,
    }
}

/// The configurations reached so far, keyed by the placed completed operations and the state.
///
/// A configuration is not worth exploring when one reached before has the same completed
/// operations placed, the same state, and a subset of its indeterminate operations placed: that
/// one can do everything this one can (an indeterminate operation never has to be placed), and it
/// has been or is being explored. Without indeterminate operations this is Lowe's memoization.
///
/// Each configuration is stored once, its bitsets in one array, found through a 64-bit
/// fingerprint of its completed operations and state; configurations with equal fingerprints are
/// chained and compared in full, so a collision of fingerprints costs time, never a wrong
/// answer. This is the search's inner loop: a hash set of boxed bitsets spends most of its time
/// hashing and allocating.
struct Seen {
    completed_words: usize,
    indeterminate_words: usize,
    /// Fingerprint to the latest configuration with it.
    latest: HashMap<u64, usize, BuildHasherDefault<FingerprintHasher>>,
    /// Per configuration, by insertion order: its state, and the previous configuration with the
    /// same fingerprint.
    states: Vec<State>,
    same_fingerprint: Vec<Option<usize>>,
    /// Per configuration, by insertion order: its completed then its indeterminate bitset.
    sets: Vec<u64>,
}

impl Seen {
    fn new(completed_words: usize, indeterminate_words: usize) -> Seen {
        Seen {
            completed_words,
            indeterminate_words,
            latest: HashMap::default(),
            states: Vec::new(),
            same_fingerprint: Vec::new(),
            sets: Vec::new(),
        }
    }

    /// Adds a configuration; `false` when one seen before dominates it. Configurations it
    /// dominates leave the chain, and a chain keeps at most `CHAIN_MAX` configurations: forgetting
    /// a configuration only costs exploring again what it would have pruned.
    fn insert(&mut self, fingerprint: u64, completed: &[u64], indeterminate: &[u64], state: State) -> bool {
        debug_assert_eq!((completed.len(), indeterminate.len()), (self.completed_words, self.indeterminate_words));
        let stride = self.completed_words + self.indeterminate_words;
        let latest = self.latest.get(&fingerprint).copied();
        // The chain runs from the latest configuration back; `kept` is the last one kept so far.
        let (mut chained, mut kept, mut length) = (latest, None, 0);
        let mut head = latest;
        while let Some(index) = chained {
            let next = self.same_fingerprint[index];
            let (seen_completed, seen_indeterminate) =
                self.sets[index * stride..(index + 1) * stride].split_at(self.completed_words);
            let same = self.states[index] == state && seen_completed == completed;
            if same && seen_indeterminate.iter().zip(indeterminate).all(|(seen, current)| seen & !current == 0) {
                return false;
            }
            let dominated =
                same && seen_indeterminate.iter().zip(indeterminate).all(|(seen, current)| current & !seen == 0);
            if dominated || length == CHAIN_MAX {
                match kept {
                    Some(previous) => self.same_fingerprint[previous] = next,
                    None => head = next,
                }
            } else {
                kept = Some(index);
                length += 1;
            }
            chained = next;
        }
        self.latest.insert(fingerprint, self.states.len());
        self.states.push(state);
        self.same_fingerprint.push(head);
        self.sets.extend_from_slice(completed);
        self.sets.extend_from_slice(indeterminate);
        true
    }
}

/// The most configurations one chain of [`Seen`] keeps, bounding the time one configuration
/// costs. Chains are longer than one only when indeterminate operations were placed in different
/// ways to reach the same completed operations and state.
const CHAIN_MAX: usize = 32;

/// Hashes a fingerprint to itself: it is already uniformly random.
#[derive(Default)]
struct FingerprintHasher(u64);

impl Hasher for FingerprintHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

/// The report for a history the search exhausted, from the deepest partial linearization
/// (indices into the history). It speaks of the history's own values, not merged ones.
fn counterexample(initial: State, history: &[Event], states_explored: u64, deepest: Vec<usize>) -> Counterexample {
    let mut state = initial;
    let mut is_placed = vec![false; history.len()];
    for &index in &deepest {
        let event = &history[index];
        state = apply(state, event.op, event.complete.map(|(_, output)| output))
            .expect("a linearizable prefix replays on the history's own values");
        is_placed[index] = true;
    }
    // Indeterminate reads were never searched; they are neither blocking nor candidates.
    let unplaced = || {
        (0..history.len())
            .filter(|&index| !is_placed[index])
            .filter(|&index| !(history[index].op == Op::Read && history[index].complete.is_none()))
    };
    let (horizon, blocking) = unplaced()
        .filter_map(|index| history[index].complete.map(|(complete, _)| (complete, index)))
        .min()
        .expect("an exhausted search leaves a completed operation unplaced");
    let candidates = unplaced()
        .filter(|&index| history[index].invoke <= horizon)
        .map(|index| {
            let event = &history[index];
            (index, apply(state, event.op, event.complete.map(|(_, output)| output)).is_some())
        })
        .collect();
    Counterexample {
        initial,
        history: history.to_vec(),
        states_explored,
        deepest,
        state_after_deepest: state,
        blocking,
        candidates,
    }
}

/// A state as reports show it: the value, or `absent`.
struct Value(State);

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(value) => write!(f, "{value}"),
            None => f.write_str("absent"),
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Op::Read => f.write_str("read"),
            Op::Write(Some(value)) => write!(f, "write {value}"),
            Op::Write(None) => f.write_str("delete"),
            Op::Cas { expected, new } => write!(f, "cas(expect {}, set {})", Value(expected), Value(new)),
        }
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Output::Read(seen) => write!(f, "{}", Value(seen)),
            Output::Written => f.write_str("ok"),
            Output::Cas(true) => f.write_str("applied"),
            Output::Cas(false) => f.write_str("not applied"),
        }
    }
}

/// One event as reports show it: `client 3 write 5 -> ok`.
fn describe(event: &Event) -> String {
    match event.complete {
        Some((_, output)) => format!("client {} {} -> {}", event.client, event.op, output),
        None => format!("client {} {} -> indeterminate", event.client, event.op),
    }
}

impl fmt::Display for Counterexample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let completed = self.history.iter().filter(|event| event.complete.is_some()).count();
        let placed_completed = self.deepest.iter().filter(|&&index| self.history[index].complete.is_some()).count();
        let placed_indeterminate = self.deepest.len() - placed_completed;
        writeln!(
            f,
            "not linearizable: {} events on one key, initial state {}, {} configurations explored",
            self.history.len(),
            Value(self.initial),
            self.states_explored
        )?;
        writeln!(
            f,
            "longest linearizable prefix: {placed_completed} of {completed} completed operations, \
             {placed_indeterminate} indeterminate:"
        )?;
        for (place, &index) in self.deepest.iter().enumerate() {
            writeln!(f, "  {:>3}. #{index} {}", place + 1, describe(&self.history[index]))?;
        }
        writeln!(f, "  after it the register holds {}", Value(self.state_after_deepest))?;
        let blocking = &self.history[self.blocking];
        let blocking_complete = blocking.complete.map_or(0, |(time, _)| time);
        writeln!(
            f,
            "the next operation must be #{} (completes at t={blocking_complete}) or one invoked by then; none fits:",
            self.blocking
        )?;
        for &(index, fits) in &self.candidates {
            let verdict = if fits {
                "agrees, but no continuation after it places the rest".to_string()
            } else {
                format!("disagrees with the register ({})", Value(self.state_after_deepest))
            };
            writeln!(f, "  #{index} {}: {verdict}", describe(&self.history[index]))?;
        }
        writeln!(f, "history by invoke time ([n]: n-th in the prefix, *: could come next, !: disagrees):")?;
        let mut order: Vec<usize> = (0..self.history.len()).collect();
        order.sort_by_key(|&index| (self.history[index].invoke, index));
        let index_width = self.history.len().saturating_sub(1).to_string().len() + 1;
        let rows: Vec<(String, String, String)> = order
            .iter()
            .map(|&index| {
                let event = &self.history[index];
                let times = match event.complete {
                    Some((complete, _)) => format!("t={}..{}", event.invoke, complete),
                    None => format!("t={}..never", event.invoke),
                };
                let mark = if let Some(place) = self.deepest.iter().position(|&placed| placed == index) {
                    format!("[{}]", place + 1)
                } else if let Some(&(_, fits)) = self.candidates.iter().find(|&&(candidate, _)| candidate == index) {
                    (if fits { "*" } else { "* !" }).to_string()
                } else {
                    String::new()
                };
                (times, describe(event), mark)
            })
            .collect();
        let times_width = rows.iter().map(|(times, _, _)| times.len()).max().unwrap_or(0);
        let describe_width = rows.iter().map(|(_, description, _)| description.len()).max().unwrap_or(0);
        for (&index, (times, description, mark)) in order.iter().zip(&rows) {
            let label = format!("#{index}");
            writeln!(f, "  {label:<index_width$}  {times:<times_width$}  {description:<describe_width$}  {mark}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::NotLinearizable(counterexample) => counterexample.fmt(f),
            Violation::Inconclusive { budget_states, operations, placed_max, completed } => write!(
                f,
                "linearizability undecided: the search explored its budget of {budget_states} configurations on \
                 {operations} operations; the deepest partial linearization placed {placed_max} of {completed} \
                 completed operations"
            ),
            Violation::Malformed { index, reason } => write!(f, "malformed history: event #{index} {reason}"),
        }
    }
}

impl std::error::Error for Violation {}

#[cfg(test)]
mod tests {
    use super::*;
    use onggi_core::rng::Rng;

    fn read(client: u64, invoke: u64, complete: u64, seen: Option<u64>) -> Event {
        Event { client, op: Op::Read, invoke, complete: Some((complete, Output::Read(seen))) }
    }

    fn write(client: u64, value: Option<u64>, invoke: u64, complete: u64) -> Event {
        Event { client, op: Op::Write(value), invoke, complete: Some((complete, Output::Written)) }
    }

    fn cas(client: u64, expected: Option<u64>, new: Option<u64>, invoke: u64, complete: u64, applied: bool) -> Event {
        Event { client, op: Op::Cas { expected, new }, invoke, complete: Some((complete, Output::Cas(applied))) }
    }

    /// An operation whose client never learned the outcome.
    fn lost(client: u64, op: Op, invoke: u64) -> Event {
        Event { client, op, invoke, complete: None }
    }

    /// Checks a witness without the module's code: each completed event placed once, real-time
    /// order respected, and a sequential register replaying the order returns every output.
    fn verify_witness(initial: State, history: &[Event], order: &[usize]) {
        let mut placed = vec![false; history.len()];
        for &index in order {
            assert!(!placed[index], "#{index} placed twice in {order:?}");
            placed[index] = true;
        }
        for (index, event) in history.iter().enumerate() {
            assert!(placed[index] || event.complete.is_none(), "completed #{index} missing from {order:?}");
        }
        for (earlier, &first) in order.iter().enumerate() {
            for &second in &order[earlier + 1..] {
                if let Some((complete, _)) = history[second].complete {
                    assert!(complete >= history[first].invoke, "#{second} completed before #{first} was invoked");
                }
            }
        }
        let mut state = initial;
        for &index in order {
            let event = &history[index];
            let output = match event.op {
                Op::Read => Output::Read(state),
                Op::Write(value) => {
                    state = value;
                    Output::Written
                }
                Op::Cas { expected, new } => {
                    let applied = state == expected;
                    if applied {
                        state = new;
                    }
                    Output::Cas(applied)
                }
            };
            if let Some((_, recorded)) = event.complete {
                assert_eq!(recorded, output, "#{index} in {order:?}");
            }
        }
    }

    fn assert_linearizable(initial: State, history: &[Event]) -> Checked {
        let checked = check(initial, history).unwrap_or_else(|violation| panic!("{violation}"));
        verify_witness(initial, history, &checked.linearization);
        checked
    }

    fn assert_not_linearizable(initial: State, history: &[Event]) -> Counterexample {
        match check(initial, history) {
            Err(Violation::NotLinearizable(counterexample)) => *counterexample,
            other => panic!("expected a violation, got {other:?}"),
        }
    }

    /// An exhaustive reference: tries every order of every subset that keeps all completed
    /// operations, straight from the definition. Only for a handful of operations.
    fn brute_force(initial: State, history: &[Event]) -> bool {
        fn extend(operations: &[&Event], placed: &mut [bool], state: State) -> bool {
            if operations.iter().zip(placed.iter()).all(|(event, &placed)| placed || event.complete.is_none()) {
                return true;
            }
            for next in 0..operations.len() {
                let event = operations[next];
                let must_precede = operations.iter().zip(placed.iter()).any(|(other, &placed)| {
                    !placed && other.complete.is_some_and(|(complete, _)| complete < event.invoke)
                });
                if placed[next] || must_precede {
                    continue;
                }
                let after = match (event.op, event.complete.map(|(_, output)| output)) {
                    (Op::Read, Some(Output::Read(seen))) if seen == state => state,
                    (Op::Write(value), _) => value,
                    (Op::Cas { expected, new }, Some(Output::Cas(true))) if state == expected => new,
                    (Op::Cas { expected, .. }, Some(Output::Cas(false))) if state != expected => state,
                    (Op::Cas { expected, new }, None) => {
                        if state == expected {
                            new
                        } else {
                            state
                        }
                    }
                    _ => continue,
                };
                placed[next] = true;
                let found = extend(operations, placed, after);
                placed[next] = false;
                if found {
                    return true;
                }
            }
            false
        }
        let operations: Vec<&Event> =
            history.iter().filter(|event| !(event.op == Op::Read && event.complete.is_none())).collect();
        extend(&operations, &mut vec![false; operations.len()], initial)
    }

    /// The shape of a generated history.
    struct Shape {
        clients: u64,
        operations: usize,
        /// Longest pause of a client between two operations.
        gap_max: u64,
        /// Longest time from invocation to linearization point, and from there to completion.
        duration_max: u64,
        /// One operation in this many is indeterminate.
        indeterminate_one_in: u64,
        /// Every write writes a new value, as a simulator's clients do; otherwise values come
        /// from a domain of four, the hard case, where conditional writes often apply and many
        /// orders explain the same reads.
        unique_values: bool,
    }

    /// A state from the small domain.
    fn random_state(rng: &mut Rng) -> State {
        match rng.below(4) {
            0 => None,
            value => Some(value),
        }
    }

    /// An operation; `written` counts the values written so far when they are unique.
    fn random_op(rng: &mut Rng, shape: &Shape, written: &mut u64) -> Op {
        let mut value = |rng: &mut Rng| {
            if shape.unique_values {
                *written += 1;
                Some(*written)
            } else {
                Some(1 + rng.below(3))
            }
        };
        match rng.below(10) {
            0..=3 => Op::Read,
            4 | 5 => Op::Write(value(rng)),
            6 => Op::Write(None),
            _ => {
                // Often replaced by the current state when the operation takes effect, below.
                let new = if rng.chance(1, 8) { None } else { value(rng) };
                let expected = if shape.unique_values { Some(rng.below(*written + 1)) } else { random_state(rng) };
                Op::Cas { expected, new }
            }
        }
    }

    /// A linearizable history by construction: clients run operations one after another against a
    /// sequential register, each taking effect at a random instant strictly between its invocation
    /// and its completion. An indeterminate operation's client gives up after a timeout; the
    /// operation takes effect at a random instant after its invocation, possibly long after, or
    /// never.
    fn linearizable_history(rng: &mut Rng, shape: &Shape) -> (State, Vec<Event>) {
        let initial = random_state(rng);
        let mut free_at = vec![0u64; shape.clients as usize];
        let mut history = Vec::with_capacity(shape.operations);
        let mut effects: Vec<(u64, usize)> = Vec::new();
        let mut written = 0;
        for _ in 0..shape.operations {
            let client = rng.below(shape.clients);
            let invoke = free_at[client as usize] + rng.below(shape.gap_max + 1);
            let op = random_op(rng, shape, &mut written);
            if rng.chance(1, shape.indeterminate_one_in) {
                free_at[client as usize] = invoke + shape.duration_max;
                if rng.chance(2, 3) {
                    effects.push((invoke + 1 + rng.below(20 * shape.duration_max), history.len()));
                }
                history.push(Event { client, op, invoke, complete: None });
            } else {
                let point = invoke + 1 + rng.below(shape.duration_max);
                let complete = point + 1 + rng.below(shape.duration_max);
                free_at[client as usize] = complete;
                effects.push((point, history.len()));
                // The output is known once the effects are applied in order, below.
                history.push(Event { client, op, invoke, complete: Some((complete, Output::Written)) });
            }
        }
        effects.sort_by_key(|&(point, _)| point);
        let mut state = initial;
        for (_, index) in effects {
            let event = &mut history[index];
            if let Op::Cas { expected, .. } = &mut event.op
                && rng.chance(1, 2)
            {
                *expected = state;
            }
            let output = match event.op {
                Op::Read => Output::Read(state),
                Op::Write(value) => {
                    state = value;
                    Output::Written
                }
                Op::Cas { expected, new } => {
                    let applied = state == expected;
                    if applied {
                        state = new;
                    }
                    Output::Cas(applied)
                }
            };
            if let Some((_, recorded)) = &mut event.complete {
                *recorded = output;
            }
        }
        (initial, history)
    }

    /// Makes one completed read return a value nothing wrote; `false` when there is no such read.
    fn corrupt_a_read(rng: &mut Rng, history: &mut [Event]) -> bool {
        let reads: Vec<usize> = (0..history.len())
            .filter(|&index| history[index].op == Op::Read && history[index].complete.is_some())
            .collect();
        if reads.is_empty() {
            return false;
        }
        let index = reads[rng.below(reads.len() as u64) as usize];
        if let Some((_, output)) = &mut history[index].complete {
            *output = Output::Read(Some(1_000_000));
        }
        true
    }

    #[test]
    fn empty_and_sequential_histories_are_linearizable() {
        assert_eq!(assert_linearizable(Some(7), &[]).linearization, Vec::<usize>::new());
        let history = [
            read(1, 0, 1, None),
            write(1, Some(1), 2, 3),
            read(2, 4, 5, Some(1)),
            cas(2, Some(1), Some(2), 6, 7, true),
            cas(1, Some(1), Some(3), 8, 9, false),
            read(1, 10, 11, Some(2)),
            write(2, None, 12, 13),
            read(1, 14, 15, None),
            cas(1, None, Some(4), 16, 17, true),
            read(2, 18, 19, Some(4)),
        ];
        let checked = assert_linearizable(None, &history);
        assert_eq!(checked.linearization, (0..history.len()).collect::<Vec<_>>());
    }

    #[test]
    fn a_read_of_a_value_never_written_is_rejected() {
        let history = [write(1, Some(1), 0, 10), read(2, 5, 15, Some(2))];
        let report = assert_not_linearizable(None, &history);
        assert_eq!(report.candidates, vec![(1, false)]);
    }

    #[test]
    fn a_stale_read_after_a_completed_write_is_rejected() {
        let history = [write(1, Some(1), 0, 10), write(1, Some(2), 20, 30), read(2, 31, 40, Some(1))];
        let report = assert_not_linearizable(None, &history);
        assert_eq!(report.deepest, vec![0, 1]);
        assert_eq!(report.state_after_deepest, Some(2));
        assert_eq!(report.blocking, 2);
        // Overlapping the second write, the same read is fine.
        assert_linearizable(None, &[write(1, Some(1), 0, 10), write(1, Some(2), 20, 30), read(2, 25, 40, Some(1))]);
    }

    #[test]
    fn reads_in_real_time_order_cannot_see_new_then_old() {
        // Both reads overlap the write, but the second starts after the first ended.
        let history = [write(1, Some(2), 0, 100), read(2, 10, 20, Some(2)), read(3, 30, 40, Some(1))];
        assert_not_linearizable(Some(1), &history);
        // When the second starts at the instant the first ends they are concurrent: old, write, new.
        let history = [write(1, Some(2), 0, 100), read(2, 10, 20, Some(2)), read(3, 20, 40, Some(1))];
        assert_eq!(assert_linearizable(Some(1), &history).linearization, vec![2, 0, 1]);
    }

    #[test]
    fn a_conditional_write_needs_its_expected_value_to_be_current() {
        let history = [write(1, Some(1), 0, 10), cas(2, None, Some(5), 20, 30, true)];
        assert_not_linearizable(None, &history);
        // A failed condition must really have been false.
        let history = [write(1, Some(1), 0, 10), cas(2, Some(1), Some(5), 20, 30, false)];
        assert_not_linearizable(None, &history);
        // Overlapping the write, the conditional write can come first.
        let history = [write(1, Some(1), 0, 10), cas(2, None, Some(5), 5, 30, true), read(3, 40, 50, Some(1))];
        assert_eq!(assert_linearizable(None, &history).linearization, vec![1, 0, 2]);
    }

    #[test]
    fn two_conditional_writes_from_the_same_value_cannot_both_apply() {
        let history = [cas(1, Some(0), Some(1), 0, 10, true), cas(2, Some(0), Some(2), 0, 10, true)];
        let report = assert_not_linearizable(Some(0), &history);
        assert_eq!(report.deepest.len(), 1);
        assert_eq!(report.candidates.len(), 1);
        // A concurrent write restoring the value in between makes it a legal history.
        let mut history = history.to_vec();
        history.push(write(3, Some(0), 0, 10));
        assert_linearizable(Some(0), &history);
    }

    #[test]
    fn an_indeterminate_write_can_explain_a_read() {
        let history = [lost(1, Op::Write(Some(5)), 0), read(2, 100, 110, Some(5))];
        assert_eq!(assert_linearizable(None, &history).linearization, vec![0, 1]);
        let history = [write(1, Some(3), 0, 10), lost(1, Op::Write(None), 20), read(2, 100, 110, None)];
        assert_linearizable(Some(3), &history);
        // An indeterminate conditional write, applied.
        let history = [lost(1, Op::Cas { expected: None, new: Some(5) }, 0), read(2, 100, 110, Some(5))];
        assert_linearizable(None, &history);
    }

    #[test]
    fn an_indeterminate_write_may_never_happen_or_happen_late() {
        let history = [lost(1, Op::Write(Some(5)), 0), read(2, 100, 110, None), read(2, 120, 130, None)];
        assert_eq!(assert_linearizable(None, &history).linearization, vec![1, 2]);
        // Much later than the client gave up, after another write completed.
        let history = [
            lost(1, Op::Write(Some(5)), 0),
            write(1, Some(6), 10, 20),
            read(2, 100, 110, Some(6)),
            read(2, 120, 130, Some(5)),
        ];
        assert_linearizable(None, &history);
        // Indeterminate reads say nothing.
        assert_linearizable(None, &[lost(1, Op::Read, 0), read(2, 10, 20, None)]);
    }

    #[test]
    fn an_indeterminate_write_nobody_read_can_explain_a_failed_condition() {
        // The condition can only have failed if the write of 7 — a value no read saw, merged
        // with the other unobservable 8 — came first; then a completed write restored 1.
        let history = [
            lost(1, Op::Write(Some(8)), 0),
            lost(1, Op::Write(Some(7)), 1),
            cas(2, Some(1), Some(2), 10, 20, false),
            write(3, Some(1), 25, 28),
            read(2, 30, 40, Some(1)),
        ];
        let checked = assert_linearizable(Some(1), &history);
        assert_eq!(checked.linearization.len(), 4);
        // Without an indeterminate write there is nothing to explain it.
        assert_not_linearizable(Some(1), &history[2..]);
    }

    #[test]
    fn an_indeterminate_write_happens_at_most_once_and_not_before_its_invocation() {
        let history = [
            lost(1, Op::Write(Some(5)), 0),
            read(2, 100, 110, Some(5)),
            read(2, 120, 130, None),
            read(2, 140, 150, Some(5)),
        ];
        assert_not_linearizable(None, &history);
        let history = [read(2, 0, 10, Some(5)), lost(1, Op::Write(Some(5)), 20)];
        assert_not_linearizable(None, &history);
        // The unknown outcome of a conditional write still follows the state: it cannot apply from
        // a value it did not expect.
        let history = [lost(1, Op::Cas { expected: Some(1), new: Some(5) }, 0), read(2, 100, 110, Some(5))];
        assert_not_linearizable(None, &history);
    }

    #[test]
    fn an_indeterminate_delete_tried_too_early_is_still_available_later() {
        // The search first places the delete right after the first read, then the write of 2,
        // and fails at the last read. Reaching "first read placed, register holds 2" again
        // without the delete is not the same configuration: the delete is still there to explain
        // the last read.
        let history = [
            lost(1, Op::Write(None), 0),
            read(2, 0, 9, Some(1)),
            read(1, 6, 16, Some(2)),
            lost(2, Op::Write(Some(2)), 14),
            read(2, 20, 22, None),
        ];
        assert_eq!(assert_linearizable(Some(1), &history).linearization, vec![1, 3, 2, 0, 4]);
    }

    #[test]
    fn concurrent_operations_linearizable_in_one_order_only() {
        // The writes overlap each other and both reads; the search tries the writes in invocation
        // order first and must backtrack to find the only order that explains both reads.
        let history =
            [write(1, Some(1), 0, 100), write(2, Some(2), 1, 100), read(3, 2, 50, Some(2)), read(3, 60, 100, Some(1))];
        assert_eq!(assert_linearizable(None, &history).linearization, vec![1, 2, 0, 3]);
        let history = [
            cas(1, Some(2), Some(3), 0, 50, true),
            cas(2, Some(1), Some(2), 1, 50, true),
            cas(3, None, Some(1), 2, 50, true),
        ];
        assert_eq!(assert_linearizable(None, &history).linearization, vec![2, 1, 0]);
    }

    #[test]
    fn malformed_events_are_named() {
        let history = [read(1, 0, 5, None), read(1, 10, 5, None)];
        assert_eq!(
            check(None, &history),
            Err(Violation::Malformed { index: 1, reason: "completes before it is invoked" })
        );
        let history = [Event { client: 1, op: Op::Write(Some(1)), invoke: 0, complete: Some((1, Output::Cas(true))) }];
        assert!(matches!(check(None, &history), Err(Violation::Malformed { index: 0, .. })));
    }

    #[test]
    fn the_report_shows_the_prefix_the_candidates_and_the_history() {
        let history = [
            write(1, Some(1), 0, 10),
            lost(3, Op::Write(Some(9)), 5),
            write(1, Some(2), 20, 30),
            read(2, 31, 40, Some(1)),
            cas(3, Some(2), Some(3), 35, 45, true),
        ];
        let text = assert_not_linearizable(None, &history).to_string();
        println!("{text}");
        let expected_prefix = "\
longest linearizable prefix: 3 of 4 completed operations, 0 indeterminate:
    1. #0 client 1 write 1 -> ok
    2. #2 client 1 write 2 -> ok
    3. #4 client 3 cas(expect 2, set 3) -> applied
  after it the register holds 3
";
        assert!(text.contains(expected_prefix), "{text}");
        assert!(text.contains("must be #3 (completes at t=40) or one invoked by then; none fits:"), "{text}");
        assert!(text.contains("  #1 client 3 write 9 -> indeterminate: agrees, but"), "{text}");
        assert!(text.contains("  #3 client 2 read -> 1: disagrees with the register (3)"), "{text}");
        let expected_history = "
  #0  t=0..10     client 1 write 1 -> ok                    [1]
  #1  t=5..never  client 3 write 9 -> indeterminate         *
  #2  t=20..30    client 1 write 2 -> ok                    [2]
  #3  t=31..40    client 2 read -> 1                        * !
  #4  t=35..45    client 3 cas(expect 2, set 3) -> applied  [3]
";
        assert!(text.contains(expected_history), "{text}");
    }

    #[test]
    fn an_exhausted_budget_is_inconclusive() {
        let mut rng = Rng::new(7);
        let shape = Shape {
            clients: 4,
            operations: 40,
            gap_max: 2,
            duration_max: 20,
            indeterminate_one_in: 10,
            unique_values: false,
        };
        let (initial, history) = linearizable_history(&mut rng, &shape);
        let outcome = check_with_budget(initial, &history, 10);
        assert!(matches!(outcome, Err(Violation::Inconclusive { budget_states: 10, .. })), "{outcome:?}");
        assert!(outcome.is_err_and(|violation| violation.to_string().contains("undecided")));
        assert_linearizable(initial, &history);
    }

    #[test]
    fn agrees_with_brute_force_on_small_histories() {
        let mut rng = Rng::new(0x11AE_A61B);
        let (mut accepted, mut rejected) = (0, 0);
        for case in 0..2_000 {
            let shape = Shape {
                clients: 1 + rng.below(4),
                operations: 1 + rng.below(7) as usize,
                gap_max: rng.below(4),
                duration_max: 1 + rng.below(6),
                indeterminate_one_in: 2 + rng.below(3),
                unique_values: rng.chance(1, 4),
            };
            let (initial, mut history) = linearizable_history(&mut rng, &shape);
            // Scramble up to two outputs, and sometimes a time, so that both verdicts occur.
            for _ in 0..rng.below(3) {
                let index = rng.below(history.len() as u64) as usize;
                let event = &mut history[index];
                if let Some((complete, output)) = &mut event.complete {
                    *output = match event.op {
                        Op::Read => Output::Read(random_state(&mut rng)),
                        Op::Write(_) => Output::Written,
                        Op::Cas { .. } => Output::Cas(rng.chance(1, 2)),
                    };
                    if rng.chance(1, 4) {
                        event.invoke = event.invoke.saturating_sub(rng.below(5));
                        *complete = event.invoke + rng.below(10);
                    }
                }
            }
            let expected = brute_force(initial, &history);
            match check(initial, &history) {
                Ok(checked) => {
                    assert!(expected, "case {case}: accepted, brute force disagrees: {history:?}");
                    verify_witness(initial, &history, &checked.linearization);
                    accepted += 1;
                }
                Err(violation) => {
                    assert!(!expected, "case {case}: brute force finds an order: {violation}");
                    assert!(matches!(violation, Violation::NotLinearizable(_)), "{violation}");
                    rejected += 1;
                }
            }
        }
        assert!(accepted > 500 && rejected > 300, "accepted {accepted}, rejected {rejected}");
    }

    #[test]
    fn generated_linearizable_histories_are_accepted_and_a_corrupted_read_is_rejected() {
        let mut rng = Rng::new(0x5EED);
        let mut corrupted = 0;
        for case in 0..300 {
            let shape = Shape {
                clients: 1 + rng.below(6),
                operations: 1 + rng.below(60) as usize,
                gap_max: rng.below(10),
                duration_max: 1 + rng.below(20),
                indeterminate_one_in: 8,
                unique_values: rng.chance(1, 2),
            };
            let (initial, mut history) = linearizable_history(&mut rng, &shape);
            let checked = check(initial, &history).unwrap_or_else(|violation| panic!("case {case}: {violation}"));
            verify_witness(initial, &history, &checked.linearization);
            if corrupt_a_read(&mut rng, &mut history) {
                corrupted += 1;
                let outcome = check(initial, &history);
                assert!(matches!(outcome, Err(Violation::NotLinearizable(_))), "case {case}: {outcome:?}");
            }
        }
        assert!(corrupted > 200, "only {corrupted} histories had a read to corrupt");
    }

    /// Decides a generated 400-operation history, then the same with its last read corrupted —
    /// the costly case, since the search has to exhaust nearly every configuration before it can
    /// reject. Returns the configurations each took.
    fn decide_both(seed: u64, shape: &Shape) -> (u64, u64) {
        let (initial, mut history) = linearizable_history(&mut Rng::new(seed), shape);
        let started = std::time::Instant::now();
        let accepted = assert_linearizable(initial, &history).states_explored;
        let accept_time = started.elapsed();
        let last_read = (0..history.len())
            .filter(|&index| history[index].op == Op::Read && history[index].complete.is_some())
            .max_by_key(|&index| history[index].invoke);
        if let Some(index) = last_read
            && let Some((_, output)) = &mut history[index].complete
        {
            *output = Output::Read(Some(1_000_000));
        }
        let started = std::time::Instant::now();
        let rejected = match check(initial, &history) {
            Err(Violation::NotLinearizable(report)) => report.states_explored,
            other => panic!("seed {seed}: expected a violation, got {other:?}"),
        };
        println!(
            "seed {seed}: accepted in {accept_time:?} ({accepted} configurations), rejected in {:?} ({rejected})",
            started.elapsed()
        );
        (accepted, rejected)
    }

    #[test]
    fn four_hundred_heavily_overlapping_operations_are_decided_quickly() {
        // Eight clients, each operation taking up to 80 time units and the next one starting at
        // most 2 later: every operation overlaps about seven others. Unique values, as the
        // simulator writes, and one operation in ten indeterminate.
        let realistic = Shape {
            clients: 8,
            operations: 400,
            gap_max: 2,
            duration_max: 40,
            indeterminate_one_in: 10,
            unique_values: true,
        };
        let (accepted, rejected) = decide_both(400, &realistic);
        assert!(accepted < 10_000 && rejected < 100_000, "{accepted} {rejected}");
        // Values from a domain of four, where many orders explain the same reads.
        let ambiguous = Shape { indeterminate_one_in: 40, unique_values: false, ..realistic };
        let (accepted, rejected) = decide_both(401, &ambiguous);
        assert!(accepted < 10_000 && rejected < 100_000, "{accepted} {rejected}");
    }
}

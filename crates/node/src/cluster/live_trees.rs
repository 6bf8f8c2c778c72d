//! Live Merkle trees: a partition's tree kept current by the commit path, so that anti-entropy
//! compares replicas that agree without reading their data.
//!
//! Building a partition's tree by a scan for every comparison (what `repair.rs` did alone) made
//! anti-entropy read every replica's data once per sweep, whether or not anything differed: on
//! three nodes holding 100,000 items of 1 KB, the idle cluster spent about half of a core of the
//! machine's two on it. Now a replica keeps, for each partition it holds that is large enough to
//! be worth it (a leaf's worth of entries, [`LIVE_ENTRIES_MIN`]), one tree in memory (`core::merkle` is made for it:
//! a write updates its leaf in O(1), digests are recomputed lazily) — Riak's active anti-entropy,
//! held in memory and rebuilt at start as the core's module docs describe. Comparing two replicas
//! that agree then costs one round trip and no disk read.
//!
//! **Following storage.** The tree must hold exactly the (key, version) pairs of the partition's
//! records. Every commit — consensus commits, hints, repairs, catching up, view changes — goes
//! through `Node::replica_with`, which writes the record under the partition's *commit gate*
//! (shared) and, in the storage completion of that write, tells the tree the version it replaced
//! and the new one ([`LiveTree::replaced`]). Tombstone collection removes records under the gate
//! too ([`LiveTree::removed`]). Anything else that changes a partition's records (dropping a
//! partition given away, a write on the one-node path of a cluster of one) forgets the tree
//! ([`LiveTree::forget`]), which is rebuilt on the next visit.
//!
//! **Building without stopping writes.** A build takes the commit gate exclusively only to mark the
//! slot *building* and open a range scan (a storage snapshot); then it releases the gate and scans.
//! A commit holds the gate from before its write until after its completion ran, so each commit is
//! either wholly before the snapshot (the scan sees it, and no tree existed to tell) or wholly after
//! it (the scan does not see it, and its change is queued on the building slot and applied once the
//! scan is done). A commit whose caller stopped waiting (a cancelled request) may release the gate
//! before its completion runs; such a change can be counted twice, which the tree shows as a leaf
//! that differs from every replica — hence the periodic rebuild ([`REBUILD_AFTER`]).
//!
//! **Shapes.** A live tree's depth is chosen when it is built, from the table's size
//! ([`super::repair`]'s `tree_depth`); it is rebuilt when the table grows or shrinks enough to want
//! a depth two levels away. A comparison asks at the initiator's depth; a responder whose live tree
//! is deeper answers from it folded to that depth ([`MerkleTree::folded`], exact), and one whose
//! tree is shallower, or that keeps none, builds one by a scan as before.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use onggi_core::merkle::{self, MerkleTree};
use onggi_core::paxos::Ballot;

/// A partition of at most this many entries (by the table's size: a leaf's worth) keeps no live
/// tree: scanning it for each comparison costs little, and a node with many small tables keeps no
/// memory for them. Under this crate's unit tests every partition keeps one, so that their small
/// tables exercise live trees.
pub(crate) const LIVE_ENTRIES_MIN: u64 = 16;

/// Whether a partition of about `estimate` entries keeps a live tree.
pub(crate) fn worth_keeping(estimate: u64) -> bool {
    cfg!(test) || estimate > LIVE_ENTRIES_MIN
}

/// A live tree older than this is rebuilt from storage on its next use (with up to a fifth more,
/// drawn per build, so that a node's trees do not all rebuild in the same sweep): it heals any
/// drift between the tree and storage.
pub(crate) const REBUILD_AFTER: Duration = Duration::from_secs(600);

/// Changes queued on a building slot at most; beyond, the build is abandoned (retried next visit).
const PENDING_MAX: usize = 100_000;

/// A change to a partition's records, as the tree needs it: the key and the version stamps.
enum Change {
    Replaced { key: Vec<u8>, old: Option<Ballot>, new: Ballot },
    Removed { key: Vec<u8>, version: Ballot },
}

enum Slot {
    /// No tree: comparisons build one by a scan.
    Absent,
    /// A build's scan runs; changes since its snapshot wait here. `build` tells builds apart, so
    /// that a build whose slot was forgotten (and perhaps rebuilt) meanwhile is discarded.
    Building { build: u64, pending: Vec<Change> },
    /// The tree, current with storage.
    Ready { tree: MerkleTree, rebuild_at: Instant },
}

/// One partition's live tree (kept beside its floors and commit gate, `tombstones.rs`).
pub(crate) struct LiveTree {
    slot: Mutex<Slot>,
}

impl Default for LiveTree {
    fn default() -> Self {
        LiveTree { slot: Mutex::new(Slot::Absent) }
    }
}

fn stamp(ballot: Ballot) -> [u8; merkle::VERSION_STAMP_BYTES] {
    merkle::version_stamp(ballot.time, ballot.node)
}

fn apply(tree: &mut MerkleTree, change: &Change) -> Result<(), merkle::MerkleError> {
    match change {
        Change::Replaced { key, old, new } => {
            tree.replace(key, old.map(stamp).as_ref().map(|old| &old[..]), &stamp(*new))
        }
        Change::Removed { key, version } => tree.remove(key, &stamp(*version)),
    }
}

/// How a build ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Built {
    /// The tree is live.
    Live,
    /// The slot was forgotten or rebuilt meanwhile, or the changes could not be applied.
    Discarded,
}

impl LiveTree {
    fn lock(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn change(&self, change: Change) {
        let mut slot = self.lock();
        match &mut *slot {
            Slot::Absent => {}
            Slot::Building { pending, .. } => {
                if pending.len() >= PENDING_MAX {
                    *slot = Slot::Absent;
                } else {
                    pending.push(change);
                }
            }
            Slot::Ready { tree, .. } => {
                if let Err(error) = apply(tree, &change) {
                    tracing::warn!(%error, "a live Merkle tree drifted from storage; it is rebuilt");
                    *slot = Slot::Absent;
                }
            }
        }
    }

    /// The record at `key` went from version `old` (`None`: no record) to `new`. Called in the
    /// completion of the write, under the partition's commit gate.
    pub(crate) fn replaced(&self, key: &[u8], old: Option<Ballot>, new: Ballot) {
        self.change(Change::Replaced { key: key.to_vec(), old, new });
    }

    /// The record at `key`, of `version`, was removed (tombstone collection, under the gate).
    pub(crate) fn removed(&self, key: &[u8], version: Ballot) {
        self.change(Change::Removed { key: key.to_vec(), version });
    }

    /// The partition's records changed in a way not told to the tree: drop it.
    pub(crate) fn forget(&self) {
        *self.lock() = Slot::Absent;
    }

    /// Marks the slot building and returns the build's number. Call with the commit gate held
    /// exclusively, and open the build's scan before releasing it.
    pub(crate) fn begin_build(&self, build: u64) {
        *self.lock() = Slot::Building { build, pending: Vec::new() };
    }

    /// Ends build `build` with `tree`, the scan of the snapshot opened at [`LiveTree::begin_build`]:
    /// applies the changes made since, and makes it live. `rebuild_after` is when it should be
    /// rebuilt from storage.
    pub(crate) fn finish_build(&self, build: u64, mut tree: MerkleTree, rebuild_after: Duration) -> Built {
        let mut slot = self.lock();
        let pending = match &mut *slot {
            Slot::Building { build: current, pending } if *current == build => std::mem::take(pending),
            _ => return Built::Discarded,
        };
        if pending.iter().any(|change| apply(&mut tree, change).is_err()) {
            *slot = Slot::Absent;
            return Built::Discarded;
        }
        tree.refresh();
        *slot = Slot::Ready { tree, rebuild_at: Instant::now() + rebuild_after };
        Built::Live
    }

    /// Abandons build `build` (its scan failed).
    pub(crate) fn abandon_build(&self, build: u64) {
        let mut slot = self.lock();
        if matches!(&*slot, Slot::Building { build: current, .. } if *current == build) {
            *slot = Slot::Absent;
        }
    }

    /// The live tree's depth, if it has one that is not due for a rebuild.
    pub(crate) fn depth(&self) -> Option<u8> {
        match &*self.lock() {
            Slot::Ready { tree, rebuild_at } if Instant::now() < *rebuild_at => Some(tree.depth()),
            _ => None,
        }
    }

    /// Whether a build is running.
    pub(crate) fn building(&self) -> bool {
        matches!(&*self.lock(), Slot::Building { .. })
    }

    /// A copy of the live tree at `depth` (folded when the tree is deeper), digests refreshed; `None`
    /// when there is no live tree, it is due for a rebuild, or it is shallower than `depth`.
    pub(crate) fn snapshot(&self, depth: u8) -> Option<MerkleTree> {
        let mut slot = self.lock();
        let Slot::Ready { tree, rebuild_at } = &mut *slot else { return None };
        if Instant::now() >= *rebuild_at || tree.depth() < depth {
            return None;
        }
        if tree.depth() == depth {
            tree.refresh();
            return Some(tree.clone());
        }
        tree.folded(depth).ok()
    }

    /// Answers `request` from the live tree when it has the request's shape or can be folded to
    /// it; `None` otherwise.
    pub(crate) fn respond(&self, request: &merkle::Request) -> Option<merkle::Response> {
        let merkle::Request::Hashes { shape, .. } = request;
        let mut slot = self.lock();
        let Slot::Ready { tree, rebuild_at } = &mut *slot else { return None };
        if Instant::now() >= *rebuild_at || tree.shape().first != shape.first || tree.shape().last != shape.last {
            return None;
        }
        if tree.depth() == shape.depth {
            tree.refresh();
            return Some(merkle::respond(tree, request));
        }
        let folded = tree.folded(shape.depth).ok()?;
        Some(merkle::respond(&folded, request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use onggi_core::hlc::Timestamp;
    use onggi_core::layout::NodeId;

    fn key(token: u64) -> Vec<u8> {
        token.to_be_bytes().to_vec()
    }

    fn ballot(time: u64) -> Ballot {
        Ballot { time: Timestamp(time), node: NodeId(1) }
    }

    fn tree_of(entries: &[(u64, u64)]) -> MerkleTree {
        let stamped: Vec<(Vec<u8>, [u8; 16])> = entries.iter().map(|&(k, t)| (key(k), stamp(ballot(t)))).collect();
        MerkleTree::from_entries(0, 1 << 20, 4, stamped).unwrap()
    }

    #[test]
    fn changes_during_a_build_are_applied_after_its_scan() {
        let live = LiveTree::default();
        live.replaced(&key(5), None, ballot(1)); // no tree yet: nothing to tell
        live.begin_build(1);
        live.replaced(&key(7), None, ballot(2));
        live.replaced(&key(5), Some(ballot(1)), ballot(3));
        // The scan saw the snapshot: key 5 at version 1 only.
        assert_eq!(live.finish_build(1, tree_of(&[(5, 1)]), REBUILD_AFTER), Built::Live);
        let expected = tree_of(&[(5, 3), (7, 2)]);
        assert_eq!(live.snapshot(4).unwrap().root(), expected.root());
        live.removed(&key(7), ballot(2));
        assert_eq!(live.snapshot(4).unwrap().root(), tree_of(&[(5, 3)]).root());
        assert_eq!(live.snapshot(2).unwrap().root(), tree_of(&[(5, 3)]).folded(2).unwrap().root());
        assert!(live.snapshot(5).is_none(), "a live tree is never refined");
    }

    #[test]
    fn a_forgotten_or_overtaken_build_is_discarded() {
        let live = LiveTree::default();
        live.begin_build(1);
        live.forget();
        assert_eq!(live.finish_build(1, tree_of(&[]), REBUILD_AFTER), Built::Discarded);
        live.begin_build(2);
        live.begin_build(3);
        assert_eq!(live.finish_build(2, tree_of(&[]), REBUILD_AFTER), Built::Discarded);
        assert_eq!(live.finish_build(3, tree_of(&[]), REBUILD_AFTER), Built::Live);
        assert_eq!(live.depth(), Some(4));
    }

    #[test]
    fn a_tree_that_drifted_or_is_due_is_not_used() {
        let live = LiveTree::default();
        live.begin_build(1);
        assert_eq!(live.finish_build(1, tree_of(&[]), REBUILD_AFTER), Built::Live);
        // Removing what the tree never held from an empty leaf: drift, caught.
        live.removed(&key(9), ballot(4));
        assert!(live.snapshot(4).is_none());
        live.begin_build(2);
        assert_eq!(live.finish_build(2, tree_of(&[]), Duration::ZERO), Built::Live);
        assert_eq!(live.depth(), None, "due for a rebuild");
        assert!(live.snapshot(4).is_none());
    }
}

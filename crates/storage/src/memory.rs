//! The in-memory engine, with crash and fsync-failure simulation.
//!
//! All state sits behind one lock: trees are `BTreeMap`s, so batches are trivially atomic and
//! completions run synchronously on the caller's thread. Each tree's map is shared copy-on-write
//! with open iterators (`Arc<BTreeMap>`): opening a scan is O(1), and the first write to a tree
//! while a scan of it is open copies that tree once. Scans step with one `BTreeMap::range` lookup
//! per item, O(log n).
//!
//! # Crash model
//!
//! Besides the visible state, the engine keeps what a real disk would hold after a power loss:
//! the **durable** state plus a log of **unsynced** batches (those committed with
//! [`Durability::Buffered`]). A `Sync` commit or [`Engine::flush`] moves the whole log into the
//! durable state, like an fsync of a journal. Creating and dropping trees is durable at once, as
//! with the fjall engine.
//!
//! [`MemoryEngine::simulate_crash`] models a power loss: it closes this engine and returns a new
//! one holding only the durable state. [`MemoryEngine::simulate_crash_keeping`] keeps a prefix of
//! the unsynced batches too, because a real OS may have written some of them back before the
//! crash; a simulator can pick the prefix length from its seed. Writes are never reordered.
//!
//! The unsynced log is bounded by [`UNSYNCED_BATCHES_MAX`]: beyond it the oldest batches become
//! durable on their own, as an OS writes back dirty pages.
//!
//! [`MemoryEngine::inject_sync_failure`] makes the next sync fail: the waiting commit gets an
//! error, the engine is poisoned (every later operation fails), and a crash afterwards loses the
//! unsynced batches, as after a real failed fsync.

use crate::engine::{bounds_are_empty, complete, key_is_unstorable, normalize_range};
use crate::limits::UNSYNCED_BATCHES_MAX;
use crate::{
    BoxIter, Completion, Direction, Durability, Engine, EngineId, KeyValue, StorageError, Tree, WriteBatch,
    WriteOperation, validate_tree_name,
};
use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// The contents of one tree.
type TreeData = BTreeMap<Vec<u8>, Vec<u8>>;

/// An in-memory [`Engine`] for tests and the deterministic simulator. See the module docs.
pub struct MemoryEngine {
    /// This instance's identity, recorded in its tree handles.
    id: EngineId,
    /// Everything, behind one lock.
    state: RwLock<MemoryState>,
}

/// The state of a [`MemoryEngine`].
#[derive(Default)]
struct MemoryState {
    /// Set by a simulated crash; every operation then fails with [`StorageError::Closed`].
    closed: bool,
    /// Set by a failed (injected) sync; every operation then fails with [`StorageError::Poisoned`].
    poisoned: Option<String>,
    /// The next sync fails.
    sync_failure_injected: bool,
    /// Visible trees by name.
    trees: BTreeMap<String, LiveTree>,
    /// Trees as they would be found after a power loss, by name.
    durable: BTreeMap<String, DurableTree>,
    /// Batches applied to `trees` but not yet to `durable`, oldest first.
    unsynced: VecDeque<Vec<UnsyncedWrite>>,
    /// Incarnation number for the next created tree.
    next_incarnation: u64,
}

/// A visible tree.
struct LiveTree {
    /// The handle given out for this incarnation.
    handle: Tree,
    /// Distinguishes this incarnation from earlier trees of the same name.
    incarnation: u64,
    /// The contents, shared copy-on-write with open scans.
    data: Arc<TreeData>,
}

/// A tree as it would survive a power loss.
#[derive(Clone)]
struct DurableTree {
    /// Matches the [`LiveTree`] of the same incarnation.
    incarnation: u64,
    /// The durable contents.
    data: TreeData,
}

/// One put or delete of an unsynced batch.
struct UnsyncedWrite {
    /// Name of the tree written.
    tree_name: String,
    /// Incarnation of the tree written; the write is skipped if that incarnation was dropped.
    incarnation: u64,
    /// The key.
    key: Vec<u8>,
    /// The new value, or `None` for a delete.
    value: Option<Vec<u8>>,
}

impl Default for MemoryEngine {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryEngine {
    /// An empty engine.
    pub fn new() -> Self {
        Self::from_state(MemoryState::default())
    }

    /// An engine over `state`, with a fresh identity.
    fn from_state(state: MemoryState) -> Self {
        Self { id: EngineId::new_unique(), state: RwLock::new(state) }
    }

    /// Simulates a power loss: closes this engine (every later call fails with
    /// [`StorageError::Closed`], old tree handles fail on the new engine with
    /// [`StorageError::ForeignTree`]) and returns a new engine holding only what was durable.
    pub fn simulate_crash(&self) -> MemoryEngine {
        self.simulate_crash_keeping(0)
    }

    /// Like [`MemoryEngine::simulate_crash`], but the oldest `unsynced_batches_kept` unsynced
    /// batches survive too (the OS wrote them back before the crash). Values above
    /// [`MemoryEngine::unsynced_batches`] keep everything.
    pub fn simulate_crash_keeping(&self, unsynced_batches_kept: usize) -> MemoryEngine {
        let mut state = self.write_state();
        state.closed = true;
        let mut durable = state.durable.clone();
        for batch in state.unsynced.iter().take(unsynced_batches_kept) {
            apply_to_durable(&mut durable, batch);
        }
        let mut recovered = MemoryState { next_incarnation: state.next_incarnation, ..MemoryState::default() };
        let engine_id = EngineId::new_unique();
        for (name, tree) in &durable {
            let live = LiveTree {
                handle: Tree::new(name, engine_id, Box::new(tree.incarnation)),
                incarnation: tree.incarnation,
                data: Arc::new(tree.data.clone()),
            };
            recovered.trees.insert(name.clone(), live);
        }
        recovered.durable = durable;
        MemoryEngine { id: engine_id, state: RwLock::new(recovered) }
    }

    /// Makes the next sync (a `Sync` commit or [`Engine::flush`]) fail and poison the engine.
    pub fn inject_sync_failure(&self) {
        self.write_state().sync_failure_injected = true;
    }

    /// Number of committed batches that a power loss now would lose.
    pub fn unsynced_batches(&self) -> usize {
        self.read_state().unsynced.len()
    }

    /// Takes the lock for reading. A panic while it was held cannot leave the state half-updated
    /// (every update is built before it is stored, or is a single map operation), so a poisoned
    /// lock is recovered.
    fn read_state(&self) -> RwLockReadGuard<'_, MemoryState> {
        self.state.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes the lock for writing; see [`MemoryEngine::read_state`].
    fn write_state(&self) -> RwLockWriteGuard<'_, MemoryState> {
        self.state.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Applies a validated batch to the visible state and the unsynced log, then syncs if asked.
    fn commit_locked(
        &self,
        state: &mut MemoryState,
        batch: WriteBatch,
        durability: Durability,
    ) -> Result<(), StorageError> {
        state.usable()?;
        batch.validate(self.id)?;
        let mut log = Vec::with_capacity(batch.len());
        for operation in batch.into_operations() {
            let (tree, key, value) = match operation {
                WriteOperation::Put { tree, key, value } => (tree, key, Some(value)),
                WriteOperation::Delete { tree, key } => (tree, key, None),
            };
            // `validate` checked the handle is not dropped, under the same lock as `drop_tree`,
            // so the tree is live and this is its handle.
            let Some(live) = state.trees.get_mut(tree.name()).filter(|live| live.handle == tree) else {
                debug_assert!(false, "a validated handle must name a live tree");
                return Err(StorageError::TreeDropped { name: tree.name().to_owned() });
            };
            let data = Arc::make_mut(&mut live.data);
            match &value {
                Some(value) => data.insert(key.clone(), value.clone()),
                None => data.remove(&key),
            };
            log.push(UnsyncedWrite { tree_name: tree.name().to_owned(), incarnation: live.incarnation, key, value });
        }
        if !log.is_empty() {
            state.unsynced.push_back(log);
        }
        while state.unsynced.len() > UNSYNCED_BATCHES_MAX {
            if let Some(oldest) = state.unsynced.pop_front() {
                apply_to_durable(&mut state.durable, &oldest);
            }
        }
        match durability {
            Durability::Buffered => Ok(()),
            Durability::Sync => state.sync(),
        }
    }
}

impl MemoryState {
    /// Fails if the engine was closed by a crash or poisoned by a failed sync.
    fn usable(&self) -> Result<(), StorageError> {
        if self.closed {
            return Err(StorageError::Closed);
        }
        match &self.poisoned {
            Some(cause) => Err(StorageError::Poisoned { cause: cause.clone() }),
            None => Ok(()),
        }
    }

    /// Makes every unsynced batch durable, or fails and poisons if a failure was injected.
    fn sync(&mut self) -> Result<(), StorageError> {
        if self.sync_failure_injected {
            self.sync_failure_injected = false;
            let error = StorageError::backend("fsync", "injected sync failure");
            self.poisoned = Some(error.to_string());
            return Err(error);
        }
        while let Some(batch) = self.unsynced.pop_front() {
            apply_to_durable(&mut self.durable, &batch);
        }
        Ok(())
    }

    /// The live tree a handle refers to, after checking the handle.
    fn live_tree(&self, engine: EngineId, tree: &Tree) -> Result<&LiveTree, StorageError> {
        self.usable()?;
        tree.check(engine)?;
        self.trees
            .get(tree.name())
            .filter(|live| live.handle == *tree)
            .ok_or_else(|| StorageError::TreeDropped { name: tree.name().to_owned() })
    }
}

/// Applies one unsynced batch to a durable state, skipping writes to dropped incarnations.
fn apply_to_durable(durable: &mut BTreeMap<String, DurableTree>, batch: &[UnsyncedWrite]) {
    for write in batch {
        let Some(tree) = durable.get_mut(&write.tree_name).filter(|tree| tree.incarnation == write.incarnation) else {
            continue;
        };
        match &write.value {
            Some(value) => tree.data.insert(write.key.clone(), value.clone()),
            None => tree.data.remove(&write.key),
        };
    }
}

impl Engine for MemoryEngine {
    fn open_tree(&self, name: &str) -> Result<Tree, StorageError> {
        validate_tree_name(name)?;
        let mut state = self.write_state();
        state.usable()?;
        if let Some(live) = state.trees.get(name) {
            return Ok(live.handle.clone());
        }
        let incarnation = state.next_incarnation;
        state.next_incarnation += 1;
        let handle = Tree::new(name, self.id, Box::new(incarnation));
        let live = LiveTree { handle: handle.clone(), incarnation, data: Arc::default() };
        state.trees.insert(name.to_owned(), live);
        state.durable.insert(name.to_owned(), DurableTree { incarnation, data: TreeData::new() });
        Ok(handle)
    }

    fn drop_tree(&self, name: &str) -> Result<(), StorageError> {
        validate_tree_name(name)?;
        let mut state = self.write_state();
        state.usable()?;
        if let Some(live) = state.trees.remove(name) {
            live.handle.mark_dropped();
        }
        state.durable.remove(name);
        Ok(())
    }

    fn list_trees(&self) -> Result<Vec<String>, StorageError> {
        let state = self.read_state();
        state.usable()?;
        Ok(state.trees.keys().cloned().collect())
    }

    fn get(&self, tree: &Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let state = self.read_state();
        let live = state.live_tree(self.id, tree)?;
        if key_is_unstorable(key) {
            return Ok(None);
        }
        Ok(live.data.get(key).cloned())
    }

    fn range(
        &self,
        tree: &Tree,
        lower: Bound<Vec<u8>>,
        upper: Bound<Vec<u8>>,
        direction: Direction,
    ) -> Result<BoxIter, StorageError> {
        let state = self.read_state();
        let live = state.live_tree(self.id, tree)?;
        let Some((lower, upper)) = normalize_range(lower, upper) else {
            return Ok(Box::new(std::iter::empty()));
        };
        Ok(Box::new(MemoryIter { data: Arc::clone(&live.data), lower, upper, direction }))
    }

    fn commit(&self, batch: WriteBatch, durability: Durability, on_done: Completion) {
        let result = {
            let mut state = self.write_state();
            self.commit_locked(&mut state, batch, durability)
        };
        // Outside the lock: the completion may call back into the engine.
        complete(on_done, result);
    }

    fn flush(&self) -> Result<(), StorageError> {
        let mut state = self.write_state();
        state.usable()?;
        state.sync()
    }
}

/// A scan over a snapshot of one tree. The bounds shrink as items are yielded.
struct MemoryIter {
    /// The snapshot.
    data: Arc<TreeData>,
    /// Lower bound of what is left to yield.
    lower: Bound<Vec<u8>>,
    /// Upper bound of what is left to yield.
    upper: Bound<Vec<u8>>,
    /// Which end to yield from.
    direction: Direction,
}

impl Iterator for MemoryIter {
    type Item = Result<KeyValue, StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        // Also guards `BTreeMap::range`, which panics on inverted bounds.
        if bounds_are_empty(&self.lower, &self.upper) {
            return None;
        }
        let bounds = (self.lower.as_ref().map(Vec::as_slice), self.upper.as_ref().map(Vec::as_slice));
        let mut range = self.data.range::<[u8], _>(bounds);
        let (key, value) = match self.direction {
            Direction::Forward => range.next(),
            Direction::Reverse => range.next_back(),
        }?;
        let item = (key.clone(), value.clone());
        match self.direction {
            Direction::Forward => self.lower = Bound::Excluded(key.clone()),
            Direction::Reverse => self.upper = Bound::Excluded(key.clone()),
        }
        Some(Ok(item))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commit_wait;

    fn put(engine: &MemoryEngine, tree: &Tree, key: &str, durability: Durability) -> Result<(), StorageError> {
        let mut batch = WriteBatch::new();
        batch.put(tree, key.as_bytes().to_vec(), b"v".to_vec());
        commit_wait(engine, batch, durability)
    }

    #[test]
    fn crash_keeps_only_durable_batches() {
        let engine = MemoryEngine::new();
        let tree = engine.open_tree("t").unwrap();
        put(&engine, &tree, "synced", Durability::Sync).unwrap();
        put(&engine, &tree, "buffered-1", Durability::Buffered).unwrap();
        put(&engine, &tree, "buffered-2", Durability::Buffered).unwrap();
        assert_eq!(engine.unsynced_batches(), 2);

        let recovered = engine.simulate_crash_keeping(1);
        assert_eq!(engine.get(&tree, b"synced"), Err(StorageError::Closed));
        assert!(matches!(recovered.get(&tree, b"synced"), Err(StorageError::ForeignTree { .. })));
        let tree = recovered.open_tree("t").unwrap();
        assert!(recovered.get(&tree, b"synced").unwrap().is_some());
        assert!(recovered.get(&tree, b"buffered-1").unwrap().is_some());
        assert!(recovered.get(&tree, b"buffered-2").unwrap().is_none());

        put(&recovered, &tree, "buffered-3", Durability::Buffered).unwrap();
        recovered.flush().unwrap();
        let recovered = recovered.simulate_crash();
        let tree = recovered.open_tree("t").unwrap();
        assert!(recovered.get(&tree, b"buffered-3").unwrap().is_some());
    }

    #[test]
    fn dropped_tree_is_not_resurrected_by_a_later_sync() {
        let engine = MemoryEngine::new();
        let old = engine.open_tree("t").unwrap();
        put(&engine, &old, "old", Durability::Buffered).unwrap();
        engine.drop_tree("t").unwrap();
        let new = engine.open_tree("t").unwrap();
        engine.flush().unwrap();
        let recovered = engine.simulate_crash();
        let tree = recovered.open_tree("t").unwrap();
        assert!(recovered.get(&tree, b"old").unwrap().is_none());
        assert_ne!(old, new);
    }

    #[test]
    fn failed_sync_poisons_and_loses_unsynced_batches() {
        let engine = MemoryEngine::new();
        let tree = engine.open_tree("t").unwrap();
        put(&engine, &tree, "a", Durability::Sync).unwrap();
        engine.inject_sync_failure();
        assert!(matches!(put(&engine, &tree, "b", Durability::Sync), Err(StorageError::Backend { .. })));
        assert!(matches!(engine.get(&tree, b"a"), Err(StorageError::Poisoned { .. })));
        assert!(matches!(put(&engine, &tree, "c", Durability::Buffered), Err(StorageError::Poisoned { .. })));
        assert!(matches!(engine.flush(), Err(StorageError::Poisoned { .. })));

        let recovered = engine.simulate_crash();
        let tree = recovered.open_tree("t").unwrap();
        assert!(recovered.get(&tree, b"a").unwrap().is_some());
        assert!(recovered.get(&tree, b"b").unwrap().is_none());
        put(&recovered, &tree, "d", Durability::Sync).unwrap();
    }

    #[test]
    fn unsynced_log_is_bounded() {
        let engine = MemoryEngine::new();
        let tree = engine.open_tree("t").unwrap();
        for index in 0..UNSYNCED_BATCHES_MAX + 5 {
            put(&engine, &tree, &format!("k{index}"), Durability::Buffered).unwrap();
        }
        assert_eq!(engine.unsynced_batches(), UNSYNCED_BATCHES_MAX);
        let recovered = engine.simulate_crash();
        let tree = recovered.open_tree("t").unwrap();
        assert!(recovered.get(&tree, b"k4").unwrap().is_some());
        assert!(recovered.get(&tree, b"k5").unwrap().is_none());
    }
}

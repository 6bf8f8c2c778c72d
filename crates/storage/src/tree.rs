//! Tree handles and engine identities.
//!
//! A [`Tree`] is a cheap, clonable handle to one *incarnation* of a named tree: after
//! [`crate::Engine::drop_tree`] the old handle stays valid as a value but every operation through it
//! fails with [`StorageError::TreeDropped`], even if a tree of the same name is created again. This
//! way a request that raced with DeleteTable can never write into the table that replaced it.
//!
//! Each handle also records which engine instance made it ([`EngineId`]), so that a handle kept
//! across a simulated crash, or passed to the wrong engine, fails loudly instead of reading the
//! wrong data.

use crate::StorageError;
use crate::limits::TREE_NAME_BYTES_MAX;
use std::any::Any;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Identity of one engine instance within this process. Unique for the life of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EngineId(u64);

impl EngineId {
    /// Returns an identity no other engine instance in this process has.
    pub fn new_unique() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// A handle to one incarnation of a named tree. Cloning is cheap (one reference count).
///
/// Handles compare equal only if they are clones of each other (same incarnation of the same
/// tree of the same engine).
#[derive(Clone)]
pub struct Tree {
    /// State shared by all clones of this handle.
    shared: Arc<TreeShared>,
}

/// What the clones of one tree handle share.
struct TreeShared {
    /// The tree's name.
    name: String,
    /// The engine instance that made the handle.
    engine: EngineId,
    /// Set once, by `drop_tree`; never cleared.
    dropped: AtomicBool,
    /// Engine-specific state (the fjall keyspace, the memory engine's incarnation number).
    backend: Box<dyn Any + Send + Sync>,
}

impl Tree {
    /// Makes a handle. For engine implementations; users get handles from
    /// [`crate::Engine::open_tree`].
    pub fn new(name: &str, engine: EngineId, backend: Box<dyn Any + Send + Sync>) -> Self {
        debug_assert!(validate_tree_name(name).is_ok(), "engines validate names before making handles");
        Self {
            shared: Arc::new(TreeShared { name: name.to_owned(), engine, dropped: AtomicBool::new(false), backend }),
        }
    }

    /// The tree's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The engine instance that made this handle.
    pub fn engine_id(&self) -> EngineId {
        self.shared.engine
    }

    /// True once the tree this handle refers to has been dropped.
    pub fn is_dropped(&self) -> bool {
        self.shared.dropped.load(Ordering::Acquire)
    }

    /// Marks this incarnation dropped. For engine implementations, inside `drop_tree`.
    pub fn mark_dropped(&self) {
        self.shared.dropped.store(true, Ordering::Release);
    }

    /// The engine-specific state, if it has type `T`. For engine implementations.
    pub fn backend<T: Any>(&self) -> Option<&T> {
        self.shared.backend.downcast_ref::<T>()
    }

    /// Checks that the handle was made by `engine` and that its tree was not dropped. For engine
    /// implementations, at the start of every operation.
    pub fn check(&self, engine: EngineId) -> Result<(), StorageError> {
        if self.shared.engine != engine {
            return Err(StorageError::ForeignTree { name: self.shared.name.clone() });
        }
        if self.is_dropped() {
            return Err(StorageError::TreeDropped { name: self.shared.name.clone() });
        }
        Ok(())
    }

    /// Address of the shared state; identifies the incarnation.
    fn identity(&self) -> *const TreeShared {
        Arc::as_ptr(&self.shared)
    }
}

impl fmt::Debug for Tree {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Tree")
            .field("name", &self.shared.name)
            .field("engine", &self.shared.engine)
            .field("dropped", &self.is_dropped())
            .finish()
    }
}

impl PartialEq for Tree {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }
}

impl Eq for Tree {}

impl Hash for Tree {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.identity().hash(state);
    }
}

/// Checks a tree name: 1 to [`TREE_NAME_BYTES_MAX`] characters from `[A-Za-z0-9_.-]`.
///
/// The alphabet keeps names safe as file names and in logs; the node maps table names onto it.
pub fn validate_tree_name(name: &str) -> Result<(), StorageError> {
    let valid = !name.is_empty()
        && name.len() <= TREE_NAME_BYTES_MAX
        && name.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b'-'));
    if valid { Ok(()) } else { Err(StorageError::InvalidTreeName { name: name.to_owned() }) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_names() {
        assert!(validate_tree_name("a").is_ok());
        assert!(validate_tree_name("Table_1.idx-2").is_ok());
        assert!(validate_tree_name(&"x".repeat(TREE_NAME_BYTES_MAX)).is_ok());
        assert!(validate_tree_name(&"x".repeat(TREE_NAME_BYTES_MAX + 1)).is_err());
        for bad in ["", "a b", "a/b", "é", "a\0", "#0"] {
            assert!(validate_tree_name(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn handles_compare_by_incarnation() {
        let engine = EngineId::new_unique();
        let first = Tree::new("t", engine, Box::new(()));
        let again = Tree::new("t", engine, Box::new(()));
        assert_eq!(first, first.clone());
        assert_ne!(first, again);
        first.mark_dropped();
        assert!(again.check(engine).is_ok());
        assert_eq!(first.check(engine), Err(StorageError::TreeDropped { name: "t".into() }));
        assert_eq!(again.check(EngineId::new_unique()), Err(StorageError::ForeignTree { name: "t".into() }));
    }
}

//! Write batches: the unit of atomicity.
//!
//! A [`WriteBatch`] is a list of puts and deletes across any number of trees. It is applied all at
//! once or not at all, both for readers (no reader sees half a batch) and across crashes. Within one
//! batch, a later operation on the same key overrides an earlier one.
//!
//! Building a batch never fails; limits ([`crate::limits`]) are checked when it is committed, by
//! [`WriteBatch::validate`], so that both engines refuse exactly the same batches.

use crate::limits::{BATCH_BYTES_MAX, BATCH_OPERATIONS_MAX, KEY_BYTES_MAX, VALUE_BYTES_MAX};
use crate::{EngineId, StorageError, Tree};

/// One operation of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOperation {
    /// Sets `key` to `value` in `tree`, replacing any previous value.
    Put {
        /// The tree to write.
        tree: Tree,
        /// The key, 1 to [`KEY_BYTES_MAX`] bytes.
        key: Vec<u8>,
        /// The value, up to [`VALUE_BYTES_MAX`] bytes.
        value: Vec<u8>,
    },
    /// Removes `key` from `tree`; removing a missing key is not an error.
    Delete {
        /// The tree to write.
        tree: Tree,
        /// The key, 1 to [`KEY_BYTES_MAX`] bytes.
        key: Vec<u8>,
    },
}

impl WriteOperation {
    /// The tree this operation writes.
    pub fn tree(&self) -> &Tree {
        match self {
            Self::Put { tree, .. } | Self::Delete { tree, .. } => tree,
        }
    }

    /// The key this operation writes.
    pub fn key(&self) -> &[u8] {
        match self {
            Self::Put { key, .. } | Self::Delete { key, .. } => key,
        }
    }
}

/// An atomic group of puts and deletes across any number of trees.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    /// Operations in the order they were added.
    operations: Vec<WriteOperation>,
    /// Sum of key and value lengths, kept up to date as operations are added.
    size_bytes: usize,
}

impl WriteBatch {
    /// An empty batch. Committing an empty batch with [`crate::Durability::Sync`] is a durability
    /// barrier: it completes once everything committed before it is durable.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a put of `value` at `key` in `tree`.
    pub fn put(&mut self, tree: &Tree, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> &mut Self {
        let (key, value) = (key.into(), value.into());
        self.size_bytes = self.size_bytes.saturating_add(key.len()).saturating_add(value.len());
        self.operations.push(WriteOperation::Put { tree: tree.clone(), key, value });
        self
    }

    /// Adds a delete of `key` in `tree`.
    pub fn delete(&mut self, tree: &Tree, key: impl Into<Vec<u8>>) -> &mut Self {
        let key = key.into();
        self.size_bytes = self.size_bytes.saturating_add(key.len());
        self.operations.push(WriteOperation::Delete { tree: tree.clone(), key });
        self
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.operations.len()
    }

    /// True if the batch has no operations.
    pub fn is_empty(&self) -> bool {
        self.operations.is_empty()
    }

    /// Sum of the lengths of all keys and values, in bytes.
    pub fn size_bytes(&self) -> usize {
        self.size_bytes
    }

    /// The operations, in the order they were added.
    pub fn operations(&self) -> &[WriteOperation] {
        &self.operations
    }

    /// Takes the operations out of the batch.
    pub fn into_operations(self) -> Vec<WriteOperation> {
        self.operations
    }

    /// Checks the batch against the limits of [`crate::limits`] and checks that every tree
    /// handle belongs to `engine` and is not dropped. Engines call this before applying anything,
    /// so a refused batch leaves no trace.
    pub fn validate(&self, engine: EngineId) -> Result<(), StorageError> {
        if self.operations.len() > BATCH_OPERATIONS_MAX || self.size_bytes > BATCH_BYTES_MAX {
            return Err(StorageError::BatchTooLarge {
                operations: self.operations.len(),
                batch_bytes: self.size_bytes,
                batch_operations_max: BATCH_OPERATIONS_MAX,
                batch_bytes_max: BATCH_BYTES_MAX,
            });
        }
        for operation in &self.operations {
            operation.tree().check(engine)?;
            let key_bytes = operation.key().len();
            if key_bytes == 0 {
                return Err(StorageError::KeyEmpty);
            }
            if key_bytes > KEY_BYTES_MAX {
                return Err(StorageError::KeyTooLarge { key_bytes, key_bytes_max: KEY_BYTES_MAX });
            }
            if let WriteOperation::Put { value, .. } = operation
                && value.len() > VALUE_BYTES_MAX
            {
                return Err(StorageError::ValueTooLarge { value_bytes: value.len(), value_bytes_max: VALUE_BYTES_MAX });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_and_limits() {
        let engine = EngineId::new_unique();
        let tree = Tree::new("t", engine, Box::new(()));
        let mut batch = WriteBatch::new();
        batch.put(&tree, b"ab".to_vec(), b"cde".to_vec()).delete(&tree, b"f".to_vec());
        assert_eq!((batch.len(), batch.size_bytes()), (2, 6));
        assert!(batch.validate(engine).is_ok());

        batch.put(&tree, Vec::new(), b"v".to_vec());
        assert_eq!(batch.validate(engine), Err(StorageError::KeyEmpty));

        let mut batch = WriteBatch::new();
        batch.put(&tree, vec![1; KEY_BYTES_MAX + 1], b"v".to_vec());
        assert!(matches!(batch.validate(engine), Err(StorageError::KeyTooLarge { .. })));

        let mut batch = WriteBatch::new();
        batch.put(&tree, b"k".to_vec(), vec![0; VALUE_BYTES_MAX + 1]);
        assert!(matches!(batch.validate(engine), Err(StorageError::ValueTooLarge { .. })));

        let mut batch = WriteBatch::new();
        for _ in 0..=BATCH_OPERATIONS_MAX {
            batch.delete(&tree, b"k".to_vec());
        }
        assert!(matches!(batch.validate(engine), Err(StorageError::BatchTooLarge { .. })));
    }
}

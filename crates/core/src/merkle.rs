//! Merkle trees for anti-entropy (to be written).

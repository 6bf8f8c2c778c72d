//! Linearizability checking of single-key histories (to be written).

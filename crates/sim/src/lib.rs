//! The deterministic simulator: runs whole onggi clusters of pure state machines from a seed.

pub mod linearizability;

//! Per-item consensus (to be written).

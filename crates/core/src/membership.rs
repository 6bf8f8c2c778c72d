//! Membership and failure detection (to be written).

//! Counters the node reads (and exports to Prometheus) without locks.

use std::sync::atomic::{AtomicU64, Ordering};

/// Monotonic counters of one transport, plain atomics: read them with
/// `metrics.bytes_sent.load(Ordering::Relaxed)` or take a [`Metrics::snapshot`]. Frames of every
/// kind count as messages, pings and answers included; bytes include the 16-byte headers (not the
/// handshake).
#[derive(Debug, Default)]
pub struct Metrics {
    /// Frames written to sockets.
    pub messages_sent: AtomicU64,
    /// Bytes of frames written to sockets.
    pub bytes_sent: AtomicU64,
    /// Socket flushes; `messages_sent / flushes` is the average batch a writer sent at once.
    pub flushes: AtomicU64,
    /// Frames read from sockets (including those then dropped by the blocked switch).
    pub messages_received: AtomicU64,
    /// Bytes of frames read from sockets.
    pub bytes_received: AtomicU64,
    /// Outgoing connections established (handshake done).
    pub connects: AtomicU64,
    /// Outgoing connection attempts that failed (dial, handshake or refusal).
    pub connect_failures: AtomicU64,
    /// Incoming connections accepted and established.
    pub accepts: AtomicU64,
    /// Handshakes refused or failed, in either direction (version, cluster, node id, garbage).
    pub handshake_failures: AtomicU64,
    /// Connections closed because the peer broke the frame protocol (oversized, unknown kind,
    /// truncated, unexpected frame).
    pub protocol_errors: AtomicU64,
    /// Connections closed for any reason, after their handshake.
    pub connections_closed: AtomicU64,
    /// Sends refused because a connection's outgoing queue was full.
    pub queue_full_drops: AtomicU64,
    /// Requests refused locally because too many were in flight on the connection.
    pub in_flight_limit_drops: AtomicU64,
    /// Incoming requests refused with `Overloaded` because too many were in flight.
    pub overloaded_replies: AtomicU64,
    /// Frames dropped by the fault-injection blocked switch, in either direction.
    pub blocked_drops: AtomicU64,
    /// Requests that timed out.
    pub request_timeouts: AtomicU64,
    /// Answers that arrived for requests no longer waiting (timed out or cancelled).
    pub late_answers: AtomicU64,
    /// Incoming connections closed at once because `inbound_connections_max` was reached.
    pub inbound_rejected: AtomicU64,
}

impl Metrics {
    /// Adds one.
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `amount`.
    pub(crate) fn add(counter: &AtomicU64, amount: usize) {
        counter.fetch_add(amount as u64, Ordering::Relaxed);
    }

    /// A copy of every counter (each read on its own, so the copy is not one instant's).
    pub fn snapshot(&self) -> MetricsSnapshot {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        MetricsSnapshot {
            messages_sent: read(&self.messages_sent),
            bytes_sent: read(&self.bytes_sent),
            flushes: read(&self.flushes),
            messages_received: read(&self.messages_received),
            bytes_received: read(&self.bytes_received),
            connects: read(&self.connects),
            connect_failures: read(&self.connect_failures),
            accepts: read(&self.accepts),
            handshake_failures: read(&self.handshake_failures),
            protocol_errors: read(&self.protocol_errors),
            connections_closed: read(&self.connections_closed),
            queue_full_drops: read(&self.queue_full_drops),
            in_flight_limit_drops: read(&self.in_flight_limit_drops),
            overloaded_replies: read(&self.overloaded_replies),
            blocked_drops: read(&self.blocked_drops),
            request_timeouts: read(&self.request_timeouts),
            late_answers: read(&self.late_answers),
            inbound_rejected: read(&self.inbound_rejected),
        }
    }
}

/// The counters of [`Metrics`] as plain numbers, at one moment.
#[allow(missing_docs)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    pub messages_sent: u64,
    pub bytes_sent: u64,
    pub flushes: u64,
    pub messages_received: u64,
    pub bytes_received: u64,
    pub connects: u64,
    pub connect_failures: u64,
    pub accepts: u64,
    pub handshake_failures: u64,
    pub protocol_errors: u64,
    pub connections_closed: u64,
    pub queue_full_drops: u64,
    pub in_flight_limit_drops: u64,
    pub overloaded_replies: u64,
    pub blocked_drops: u64,
    pub request_timeouts: u64,
    pub late_answers: u64,
    pub inbound_rejected: u64,
}

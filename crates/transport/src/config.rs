//! Configuration: identity, and every limit and timer of the transport in one place.

use std::net::SocketAddr;
use std::time::Duration;

use crate::error::BindError;
use crate::wire::{CLUSTER_NAME_MAX_BYTES, FRAME_HEADER_LEN};

/// Default largest frame payload: 16 MiB, room for an anti-entropy batch of item versions or a
/// 16 MB client batch forwarded whole.
pub const FRAME_BYTES_MAX_DEFAULT: usize = 16 << 20;

/// Hard ceiling on the configurable frame limit (1 GiB), so a misconfiguration cannot let one
/// frame claim most of a node's memory.
pub const FRAME_BYTES_MAX_CEILING: usize = 1 << 30;

/// Configuration of one [`crate::Transport`]. [`Config::new`] gives the defaults below; change
/// fields before calling [`crate::Transport::bind`], which checks them with [`Config::validate`].
#[derive(Clone, Debug)]
pub struct Config {
    /// This node's id, sent in every handshake. Peers refuse a node that claims their own id.
    pub node_id: u64,
    /// The cluster's name (1 to 255 bytes of UTF-8). Nodes of different clusters refuse each
    /// other, so a misdirected address cannot mix two clusters' data.
    pub cluster: String,
    /// The address to listen on. Port 0 picks a free port (tests).
    pub listen: SocketAddr,
    /// The address peers know this node by, announced in the handshake. Default: the bound
    /// listen address (set it when listening on `0.0.0.0` or behind address translation).
    pub advertise: Option<SocketAddr>,

    /// Largest frame payload this node accepts, in bytes (default 16 MiB). Announced in the
    /// handshake; peers never send more, and a frame that claims more closes the connection
    /// before any memory is allocated for it.
    pub frame_bytes_max: usize,
    /// Frames that may wait in one connection's outgoing queue (default 4,096). A full queue
    /// fails the send at once with [`crate::Error::QueueFull`].
    pub queue_frames_max: usize,
    /// Bytes (headers and payloads) that may wait in one connection's outgoing queue (default
    /// 64 MiB). A single frame is always accepted into an empty queue.
    pub queue_bytes_max: usize,
    /// Requests this node may have waiting for answers on one outgoing connection (default
    /// 1,024); more fail at once with [`crate::Error::TooManyInFlight`].
    pub outgoing_in_flight_max: usize,
    /// Requests from one incoming connection whose handlers may run at once (default 1,024);
    /// more are answered at once with an `Overloaded` frame, unprocessed.
    pub incoming_in_flight_max: usize,
    /// Payload bytes of the requests from one incoming connection whose handlers are running
    /// (default 64 MiB); more are answered `Overloaded`. A single request is always accepted
    /// when none is running.
    pub incoming_in_flight_bytes_max: usize,
    /// Incoming connections this node keeps at once, handshaking or established (default
    /// 1,024); more are closed on accept.
    pub inbound_connections_max: usize,
    /// Payloads larger than this many bytes travel on the peer's bulk connection, so that
    /// anti-entropy batches and streamed data do not delay small consensus messages behind them
    /// on one TCP stream (default 64 KiB, Cassandra's large-message threshold).
    pub bulk_threshold_bytes: usize,

    /// How long dialling a peer may take (default 2 s).
    pub connect_timeout: Duration,
    /// How long the handshake may take once connected (default 2 s).
    pub handshake_timeout: Duration,
    /// An outgoing connection with nothing in flight and no traffic for this long is closed
    /// (default 60 s); the next message dials again. Incoming connections close after twice
    /// this, so that the dialling side, which knows when it is done, normally closes first.
    pub idle_timeout: Duration,
    /// While the dialling side expects something back (requests are in flight, or it sent a
    /// frame after the last one it received) and nothing has been received for this long, it
    /// sends a ping (default 1 s). Pings are answered by the peer's reader, not by handlers, so a
    /// slow handler does not look like a dead peer.
    pub ping_interval: Duration,
    /// While the dialling side expects something back and nothing, not even a pong, has been
    /// received for this long, the connection is considered dead and closed (default 5 s). This
    /// catches a peer whose host vanished without a TCP reset, which the operating system reports
    /// only after many minutes.
    pub dead_after: Duration,
    /// First reconnection back-off after a failed connection attempt (default 50 ms). It doubles
    /// with each consecutive failure, up to `backoff_max`, and is jittered to between half and
    /// all of its value so that nodes do not dial a recovering peer in lockstep.
    pub backoff_initial: Duration,
    /// Largest reconnection back-off (default 5 s).
    pub backoff_max: Duration,
}

impl Config {
    /// A configuration with every default, for this node and cluster, listening on `listen`.
    pub fn new(node_id: u64, cluster: impl Into<String>, listen: SocketAddr) -> Config {
        Config {
            node_id,
            cluster: cluster.into(),
            listen,
            advertise: None,
            frame_bytes_max: FRAME_BYTES_MAX_DEFAULT,
            queue_frames_max: 4096,
            queue_bytes_max: 64 << 20,
            outgoing_in_flight_max: 1024,
            incoming_in_flight_max: 1024,
            incoming_in_flight_bytes_max: 64 << 20,
            inbound_connections_max: 1024,
            bulk_threshold_bytes: 64 << 10,
            connect_timeout: Duration::from_secs(2),
            handshake_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(60),
            ping_interval: Duration::from_secs(1),
            dead_after: Duration::from_secs(5),
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_secs(5),
        }
    }

    /// Checks the rules that relate the fields:
    ///
    /// - the cluster name is 1 to 255 bytes;
    /// - `0 < frame_bytes_max <= 1 GiB`, and a whole frame fits in the outgoing queue
    ///   (`frame_bytes_max + 16 <= queue_bytes_max`);
    /// - every count limit is at least 1;
    /// - an incoming connection's queue can hold an answer for every request it lets run
    ///   (`incoming_in_flight_max < queue_frames_max`), so answers never wait for queue space
    ///   behind pings and refusals;
    /// - every timer is non-zero, `ping_interval < dead_after`, `backoff_initial <= backoff_max`.
    pub fn validate(&self) -> Result<(), BindError> {
        let fail = |message: String| Err(BindError::Config(message));
        if self.cluster.is_empty() || self.cluster.len() > CLUSTER_NAME_MAX_BYTES {
            return fail(format!(
                "cluster name must be 1 to {CLUSTER_NAME_MAX_BYTES} bytes, got {}",
                self.cluster.len()
            ));
        }
        if self.frame_bytes_max == 0 || self.frame_bytes_max > FRAME_BYTES_MAX_CEILING {
            return fail(format!(
                "frame_bytes_max must be 1 to {FRAME_BYTES_MAX_CEILING} bytes, got {}",
                self.frame_bytes_max
            ));
        }
        if self.frame_bytes_max + FRAME_HEADER_LEN > self.queue_bytes_max {
            return fail(format!(
                "queue_bytes_max ({}) must hold one whole frame (frame_bytes_max {} + {FRAME_HEADER_LEN})",
                self.queue_bytes_max, self.frame_bytes_max
            ));
        }
        for (name, value) in [
            ("queue_frames_max", self.queue_frames_max),
            ("outgoing_in_flight_max", self.outgoing_in_flight_max),
            ("incoming_in_flight_max", self.incoming_in_flight_max),
            ("incoming_in_flight_bytes_max", self.incoming_in_flight_bytes_max),
            ("inbound_connections_max", self.inbound_connections_max),
        ] {
            if value == 0 {
                return fail(format!("{name} must be at least 1"));
            }
        }
        if self.incoming_in_flight_max >= self.queue_frames_max {
            return fail(format!(
                "incoming_in_flight_max ({}) must be below queue_frames_max ({})",
                self.incoming_in_flight_max, self.queue_frames_max
            ));
        }
        for (name, value) in [
            ("connect_timeout", self.connect_timeout),
            ("handshake_timeout", self.handshake_timeout),
            ("idle_timeout", self.idle_timeout),
            ("ping_interval", self.ping_interval),
            ("dead_after", self.dead_after),
            ("backoff_initial", self.backoff_initial),
        ] {
            if value.is_zero() {
                return fail(format!("{name} must be above zero"));
            }
        }
        if self.ping_interval >= self.dead_after {
            return fail(format!(
                "ping_interval ({:?}) must be shorter than dead_after ({:?})",
                self.ping_interval, self.dead_after
            ));
        }
        if self.backoff_initial > self.backoff_max {
            return fail(format!(
                "backoff_initial ({:?}) must not exceed backoff_max ({:?})",
                self.backoff_initial, self.backoff_max
            ));
        }
        Ok(())
    }

    /// How often a connection checks its idle, ping and dead timers.
    pub(crate) fn housekeeping_interval(&self) -> Duration {
        self.ping_interval.min(self.idle_timeout / 2).max(Duration::from_millis(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::new(1, "test", "127.0.0.1:0".parse().unwrap())
    }

    #[test]
    fn defaults_are_valid() {
        config().validate().unwrap();
    }

    #[test]
    fn each_broken_rule_is_named() {
        type Case = (fn(&mut Config), &'static str);
        let cases: Vec<Case> = vec![
            (|c| c.cluster.clear(), "cluster name must be 1 to 255 bytes, got 0"),
            (|c| c.cluster = "x".repeat(256), "cluster name must be 1 to 255 bytes, got 256"),
            (|c| c.frame_bytes_max = 0, "frame_bytes_max must be 1 to"),
            (|c| c.frame_bytes_max = (1 << 30) + 1, "frame_bytes_max must be 1 to"),
            (|c| c.queue_bytes_max = 16 << 20, "queue_bytes_max (16777216) must hold one whole frame"),
            (|c| c.outgoing_in_flight_max = 0, "outgoing_in_flight_max must be at least 1"),
            (|c| c.incoming_in_flight_max = 4096, "incoming_in_flight_max (4096) must be below queue_frames_max"),
            (|c| c.dead_after = Duration::ZERO, "dead_after must be above zero"),
            (|c| c.ping_interval = Duration::from_secs(5), "ping_interval (5s) must be shorter than dead_after"),
            (|c| c.backoff_max = Duration::from_millis(1), "backoff_initial (50ms) must not exceed backoff_max"),
        ];
        for (change, expected) in cases {
            let mut c = config();
            change(&mut c);
            let message = c.validate().unwrap_err().to_string();
            assert!(message.contains(expected), "{message:?} should contain {expected:?}");
        }
    }
}

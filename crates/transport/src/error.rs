//! What can go wrong, from the caller's point of view.

use std::net::SocketAddr;
use std::time::Duration;

/// Why a request or a one-way send failed.
///
/// The variants answer the question a coordinator asks: may the peer have processed the message
/// ([`Error::outcome_unknown`]), and is it worth trying again or elsewhere.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// No connection could be made (connection refused, no route, connect timeout), or the
    /// connection was lost before the message could be queued. Nothing was sent. During the
    /// back-off after a failed attempt, requests fail with this at once instead of dialling again.
    #[error("peer {peer} is unreachable: {reason}")]
    Unreachable {
        /// The peer's listen address.
        peer: SocketAddr,
        /// What the operating system or the back-off said.
        reason: String,
    },
    /// The peer answered the handshake but one side refused the other: another protocol
    /// version, another cluster name, the same node id, or not an onggi node at all. Nothing was
    /// sent. Retrying does not help until an operator changes something.
    #[error("{reason}")]
    Refused {
        /// The peer's listen address.
        peer: SocketAddr,
        /// The refusal, naming both sides' values (e.g. "peer 127.0.0.1:7001 speaks onggi
        /// cluster protocol 2, this node speaks 1").
        reason: String,
    },
    /// No answer came within the request's timeout. The peer may or may not have processed it.
    #[error("request to peer {peer} timed out after {timeout:?}")]
    Timeout {
        /// The peer's listen address.
        peer: SocketAddr,
        /// The timeout that expired.
        timeout: Duration,
    },
    /// The connection closed after the request was queued and before its answer came. The peer
    /// may or may not have processed it.
    #[error("connection to peer {peer} closed before the answer came")]
    ConnectionClosed {
        /// The peer's listen address.
        peer: SocketAddr,
    },
    /// The peer's handler answered with an error (or panicked, or its answer was too large).
    #[error("peer {peer} answered with an error: {message}")]
    Remote {
        /// The peer's listen address.
        peer: SocketAddr,
        /// The handler's message.
        message: String,
    },
    /// The peer refused the request unprocessed: too many requests from this node were already
    /// in flight there. Safe to retry, preferably elsewhere or after a pause.
    #[error("peer {peer} is overloaded and refused the request unprocessed")]
    Overloaded {
        /// The peer's listen address.
        peer: SocketAddr,
    },
    /// The outgoing queue to the peer is full (frames or bytes); the message was not queued.
    /// This is back-pressure: the peer or the network is slower than this node's producers.
    #[error("outgoing queue to peer {peer} is full ({limit})")]
    QueueFull {
        /// The peer's listen address.
        peer: SocketAddr,
        /// Which limit was reached, e.g. "4096 frames" or "67108864 bytes".
        limit: String,
    },
    /// As many requests as allowed are already waiting for answers on the connection to the
    /// peer; the request was not sent.
    #[error("{limit} requests already in flight to peer {peer}")]
    TooManyInFlight {
        /// The peer's listen address.
        peer: SocketAddr,
        /// The per-connection limit.
        limit: usize,
    },
    /// The payload is larger than the frame limit (this node's, or the peer's announced in the
    /// handshake); nothing was sent.
    #[error("payload of {size} bytes exceeds the frame limit of {limit} bytes toward peer {peer}")]
    FrameTooLarge {
        /// The peer's listen address.
        peer: SocketAddr,
        /// The payload's size.
        size: usize,
        /// The limit it exceeds.
        limit: usize,
    },
    /// The transport has been shut down.
    #[error("the transport is shut down")]
    Shutdown,
}

impl Error {
    /// Whether the peer may have received and processed the message despite the error. When
    /// false, the message certainly had no effect there.
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, Error::Timeout { .. } | Error::ConnectionClosed { .. } | Error::Shutdown)
    }
}

/// Why [`crate::Transport::bind`] failed.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The configuration breaks one of its documented rules.
    #[error("invalid transport configuration: {0}")]
    Config(String),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The configured listen address.
        addr: SocketAddr,
        /// The operating system's error.
        source: std::io::Error,
    },
}

/// An error a [`crate::Handler`] returns for a request. The requester receives the message as
/// [`Error::Remote`]. Messages longer than 4 KiB are cut.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct HandlerError {
    /// What went wrong, for the requester's logs.
    pub message: String,
}

impl HandlerError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> HandlerError {
        HandlerError { message: message.into() }
    }
}

impl From<String> for HandlerError {
    fn from(message: String) -> HandlerError {
        HandlerError { message }
    }
}

impl From<&str> for HandlerError {
    fn from(message: &str) -> HandlerError {
        HandlerError { message: message.to_owned() }
    }
}

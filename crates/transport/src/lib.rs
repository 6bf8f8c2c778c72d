//! Node-to-node transport: requests and one-way messages between the nodes of one onggi cluster,
//! over multiplexed TCP connections.
//!
//! # What it is for
//!
//! Nodes exchange per-item consensus messages (prepare, accept, commit, read) on the hot path —
//! a coordinator sends one request to each of three replicas and proceeds on the first two
//! answers, thousands of times a second — and, in the background, gossip, Merkle hashes and
//! batches of item versions for anti-entropy (up to a few MB), hints and streamed partitions.
//!
//! Payloads are opaque bytes: the node encodes its messages with its own versioned codec and
//! labels each with a `u16` **tag** it dispatches on. The transport knows nothing of membership
//! or of what the messages mean (Garage's split between `net` and `rpc`); it moves frames,
//! matches answers to requests, and enforces bounds.
//!
//! ```no_run
//! use std::time::Duration;
//! use bytes::Bytes;
//! use onggi_transport::{Config, Handler, HandlerError, PeerInfo, Transport};
//!
//! struct Echo;
//! impl Handler for Echo {
//!     async fn request(&self, _from: PeerInfo, _tag: u16, payload: Bytes) -> Result<Bytes, HandlerError> {
//!         Ok(payload)
//!     }
//! }
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let a = Transport::bind(Config::new(1, "prod", "127.0.0.1:7001".parse()?), Echo).await?;
//! let b = Transport::bind(Config::new(2, "prod", "127.0.0.1:7002".parse()?), Echo).await?;
//! let answer = a.request(b.local_addr(), 7, Bytes::from_static(b"hi"), Duration::from_secs(1)).await?;
//! assert_eq!(answer, "hi");
//! a.send(b.local_addr(), 8, Bytes::from_static(b"gossip")).await?; // one-way
//! # Ok(()) }
//! ```
//!
//! # Connections
//!
//! A [`Transport`] listens on one TCP address and dials peers lazily, by address, the first time
//! it sends to them. To each peer it keeps at most two connections, one per [`Lane`]: the
//! **small** lane for messages up to [`Config::bulk_threshold_bytes`] (64 KiB) and the **bulk**
//! lane for larger ones, so that a 10 MB anti-entropy batch never sits in front of a 100-byte
//! consensus message on one TCP stream (Cassandra's small/large connections). Every connection
//! carries any number of requests at once, matched to their answers by request id.
//!
//! The side that dials sends requests and one-way messages; the side that accepts sends only the
//! answers. Two nodes that talk both ways hold a pair of connections each way, which removes any
//! race between two nodes dialling each other at the same moment.
//!
//! A failed dial puts the peer's lane in **back-off**: calls fail at once with the failure
//! ([`Error::Unreachable`] or [`Error::Refused`]) until the back-off has passed, then the next
//! call dials again. The back-off starts at 50 ms, doubles per consecutive failure up to 5 s, and
//! is jittered (uniform between half and all of it) so that a cluster does not dial a recovering
//! peer in lockstep. A connection that breaks is simply dropped; the next call dials again, so a
//! peer that restarts on the same address is reconnected to on the next message.
//!
//! An outgoing connection with nothing in flight and no traffic for 60 s is closed. While the
//! dialling side expects something back (requests wait, or it sent anything since it last
//! received) and nothing arrives for 1 s, it sends a ping, which the peer's reader (not a handler)
//! answers; after 5 s of such silence the connection is declared dead and closed, failing its
//! requests with [`Error::ConnectionClosed`]. This catches a peer whose host vanished without a
//! TCP reset, which the operating system would report only after many minutes. An accepted
//! connection that receives nothing for twice the idle timeout is closed too. `TCP_NODELAY` is set
//! on every socket: frames are batched by the writer instead (below), so Nagle's delay would only
//! add latency.
//!
//! # The handshake
//!
//! Each side sends a greeting as soon as the connection opens, then reads the other's (one round
//! trip). The first 12 bytes never change from one protocol version to the next, so that any two
//! versions can recognise each other and refuse with a clear message:
//!
//! | offset | bytes | field                                                        |
//! |-------:|------:|--------------------------------------------------------------|
//! | 0      | 8     | magic `ONGGINET`                                             |
//! | 8      | 2     | transport protocol version (this build: [`wire::PROTOCOL_VERSION`] = 1) |
//! | 10     | 2     | body length (at most 512)                                    |
//! | 12     | …     | body, in the layout of that version                          |
//!
//! The version-1 body:
//!
//! | bytes   | field                                                                      |
//! |--------:|----------------------------------------------------------------------------|
//! | 8       | sender's node id                                                           |
//! | 4       | sender's frame limit: the largest payload it accepts                       |
//! | 1       | listen address family: 4 or 6                                              |
//! | 4 or 16 | listen IP address                                                          |
//! | 2       | listen port                                                                |
//! | 1       | cluster name length *n* (1–255)                                            |
//! | *n*     | cluster name, UTF-8                                                        |
//!
//! All integers are big-endian. Each side refuses the other — closes the connection, logs the
//! reason and counts it — if the magic is wrong, the **protocol version differs** ("peer
//! 127.0.0.1:7001 speaks onggi cluster protocol 2, this node speaks 1"), the body is malformed,
//! the **cluster name differs** ("peer 127.0.0.1:7001 belongs to cluster \"b\", this node to
//! cluster \"a\""), or the peer claims this node's own id. Since both sides check the same
//! rules, both see the refusal; the dialling side's call fails with [`Error::Refused`] carrying
//! the message. There is no negotiation: nodes of different versions do not talk, so a rolling
//! upgrade that changes the transport protocol has to bridge versions explicitly (a future node
//! may speak two versions). The payloads' own format is the node's business and versioned there.
//!
//! # Frames
//!
//! After the handshake, each direction is a sequence of frames, a 16-byte header then the
//! payload:
//!
//! | offset | bytes | field                                                               |
//! |-------:|------:|---------------------------------------------------------------------|
//! | 0      | 4     | payload length *n*, at most the receiver's frame limit (16 MiB default) |
//! | 4      | 1     | kind: 1 request, 2 response, 3 error response, 4 overloaded, 5 one-way, 6 ping, 7 pong |
//! | 5      | 1     | flags; none defined in version 1, must be 0                         |
//! | 6      | 2     | tag: the node's message type (answers echo the request's)           |
//! | 8      | 8     | request id: matches an answer to its request (0 for one-way)        |
//! | 16     | *n*   | payload                                                             |
//!
//! An error response's payload is the handler's UTF-8 message (at most 4 KiB). The receiver
//! checks the header — known kind, zero flags, length within its limit, a kind that side of the
//! connection may receive — before it allocates anything for the payload; a frame that fails
//! closes that connection (only that one) with a logged warning, and requests waiting on it fail
//! with [`Error::ConnectionClosed`]. The transport never panics on network input.
//!
//! # Bounds and back-pressure
//!
//! Every queue is bounded, and a full one fails fast rather than growing memory (all limits are
//! fields of [`Config`], with their defaults and the rules relating them):
//!
//! - **Frame size**: 16 MiB per payload. A sender checks its own limit and the peer's (announced
//!   in the handshake) before queueing, failing with [`Error::FrameTooLarge`].
//! - **Outgoing queue** per connection: 4,096 frames and 64 MiB. A full queue fails the call with
//!   [`Error::QueueFull`].
//! - **Requests in flight** per outgoing connection: 1,024 waiting for answers; more fail with
//!   [`Error::TooManyInFlight`]. A request that times out or whose future is dropped releases its
//!   slot at once.
//! - **Handlers running** per incoming connection: 1,024 requests or 64 MiB of request payloads;
//!   beyond that a request is answered at once with an `Overloaded` frame ([`Error::Overloaded`]
//!   at the requester), unprocessed, so the coordinator can go to another replica.
//! - **Incoming connections**: 1,024 at once (established or handshaking), then new ones are
//!   closed on accept. The handshake must finish within 2 s.
//!
//! # Concurrency and throughput
//!
//! Each connection has a **reader** and a **writer** task. The writer drains the outgoing queue
//! into a 64 KiB `BufWriter` and flushes only when the queue is empty (or after 1,024 frames),
//! so many small frames leave in one system call — what makes a two-core node fast. Before it
//! flushes, the writer yields to the scheduler once and drains again: the tasks about to send
//! (requesters woken by answers, handlers finishing) usually add their frames to the same batch.
//! On loopback with 64 requests in flight this took an optimized build from about 60–80
//! thousand round trips a second (1.5 frames per flush) to about 300 thousand (22–26 frames per
//! flush) on two loaded cores, and a lone request's round trip did not measurably change (it
//! pays one scheduler pass).
//!
//! The reader parses frames out of one 64 KiB buffer (payloads are slices of it, not copies),
//! completes waiting requests, and starts a **task per incoming request**, so a slow handler
//! never delays another request, even on the same connection (no head-of-line blocking).
//! One-way messages are handed to [`Handler::message`] inline, in order.
//!
//! # Failures as the caller sees them
//!
//! [`Error`] separates what happened: the peer could not be reached ([`Error::Unreachable`],
//! nothing sent), refused this node ([`Error::Refused`]), did not answer in time
//! ([`Error::Timeout`]) or lost the connection while the request was out
//! ([`Error::ConnectionClosed`]) — these two leave the outcome unknown,
//! [`Error::outcome_unknown`] — answered with an error ([`Error::Remote`]) or refused the work
//! ([`Error::Overloaded`]); or this node's own bounds refused the call ([`Error::QueueFull`],
//! [`Error::TooManyInFlight`], [`Error::FrameTooLarge`]).
//!
//! # Observability and fault injection
//!
//! [`Metrics`] holds plain atomic counters (messages and bytes each way, flushes, connects and
//! failures, refusals, protocol errors, queue-full drops, overloads, timeouts) for the node to
//! export. [`Faults`] lets tests cut the link to a peer (frames dropped both ways, as on a silent
//! network) or delay frames to it, without root. Real-fault tests should prefer a TCP proxy or
//! network namespaces; the switch lets Rust integration tests partition nodes cheaply.
//!
//! # Why not a framework
//!
//! No gRPC (tonic) and no QUIC (quinn) for now. tonic needs `protoc` and code generation and adds
//! minutes of compile time on two cores for features we do not need (HTTP/2 stream management,
//! per-call headers); QUIC brings a whole TLS-integrated protocol stack. One long-lived TCP
//! connection per peer with a small binary framing is what Cassandra, ScyllaDB, FoundationDB and
//! Garage (netapp) do, and gives full control of deadlines, back-pressure and batching. Only
//! tokio, bytes, thiserror and tracing are used, all already in the workspace. TLS between nodes
//! (mutual TLS with `tokio-rustls`) will wrap the same stream: the framing is independent of it.

#![warn(missing_docs)]

mod config;
mod connection;
mod error;
mod faults;
mod handler;
mod metrics;
mod transport;
pub mod wire;

use std::sync::{Mutex, MutexGuard, PoisonError};

pub use config::{Config, FRAME_BYTES_MAX_CEILING, FRAME_BYTES_MAX_DEFAULT};
pub use error::{BindError, Error, HandlerError};
pub use faults::Faults;
pub use handler::{Handler, PeerInfo};
pub use metrics::{Metrics, MetricsSnapshot};
pub use transport::Transport;

/// Which of a peer's two connections a message travels on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lane {
    /// Small, latency-sensitive messages (consensus, gossip).
    Small = 0,
    /// Large messages (anti-entropy batches, hints, streamed data), kept off the small lane so
    /// they do not delay it.
    Bulk = 1,
}

impl Lane {
    /// The lane for a payload of `len` bytes: [`Lane::Bulk`] above `bulk_threshold_bytes`.
    pub fn for_payload(len: usize, bulk_threshold_bytes: usize) -> Lane {
        if len > bulk_threshold_bytes { Lane::Bulk } else { Lane::Small }
    }
}

/// Locks a mutex, ignoring poisoning: every critical section in this crate leaves its data
/// consistent at each step, and a panic elsewhere must not take the transport down.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

//! The receiving side's interface: what the node implements to answer its peers.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use bytes::Bytes;

use crate::error::HandlerError;

/// Who sent a message, as established by the connection's handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PeerInfo {
    /// The sender's node id.
    pub node_id: u64,
    /// The sender's listen address (what this node uses to send to it).
    pub addr: SocketAddr,
}

/// Answers the requests and receives the one-way messages that peers send to this node.
///
/// Each request runs in its own task, so handlers may take as long as they need and await
/// anything (storage, other peers through the same [`crate::Transport`]): a slow request never
/// delays the others, even on the same connection. How many run at once per connection is
/// bounded ([`crate::Config::incoming_in_flight_max`]); beyond it the requester gets
/// [`crate::Error::Overloaded`].
///
/// Payloads are slices of the connection's read buffer (64 KiB chunks), shared rather than
/// copied. A handler that keeps a small payload for long (a queue, a cache) should copy it
/// (`Bytes::copy_from_slice`) so as not to pin the whole chunk.
///
/// A handler that holds a clone of the transport keeps it alive (a reference cycle): call
/// [`crate::Transport::shutdown`] to stop it, or hold a `Weak` reference instead.
pub trait Handler: Send + Sync + 'static {
    /// Answers one request. An `Err` reaches the requester as [`crate::Error::Remote`]. If the
    /// future panics, the requester gets a `Remote` error saying so.
    fn request(
        &self,
        from: PeerInfo,
        tag: u16,
        payload: Bytes,
    ) -> impl Future<Output = Result<Bytes, HandlerError>> + Send;

    /// Receives one one-way message. It is called on the connection's reader, in the order the
    /// messages were sent on that connection, so it must return quickly: push the message into a
    /// channel or spawn a task for real work. (Small and bulk messages travel on different
    /// connections, so order holds only among messages of the same lane; see
    /// [`crate::Lane`].) A panic is caught and logged. The default drops the message.
    fn message(&self, from: PeerInfo, tag: u16, payload: Bytes) {
        tracing::debug!(peer = %from.addr, tag, len = payload.len(), "one-way message without a handler dropped");
    }
}

/// The future a handler returns, boxed so that the transport can hold any handler.
pub(crate) type BoxedAnswer<'a> = Pin<Box<dyn Future<Output = Result<Bytes, HandlerError>> + Send + 'a>>;

/// [`Handler`] made object-safe.
pub(crate) trait DynHandler: Send + Sync + 'static {
    fn request_boxed(&self, from: PeerInfo, tag: u16, payload: Bytes) -> BoxedAnswer<'_>;
    fn message_dyn(&self, from: PeerInfo, tag: u16, payload: Bytes);
}

impl<H: Handler> DynHandler for H {
    fn request_boxed(&self, from: PeerInfo, tag: u16, payload: Bytes) -> BoxedAnswer<'_> {
        Box::pin(self.request(from, tag, payload))
    }

    fn message_dyn(&self, from: PeerInfo, tag: u16, payload: Bytes) {
        self.message(from, tag, payload);
    }
}

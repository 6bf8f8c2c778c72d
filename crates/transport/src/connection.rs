//! One established connection: its writer task, its reader, the handshake that precedes them,
//! and the bookkeeping of requests in flight.
//!
//! Connections are one-directional in purpose: the side that dials sends requests, one-way
//! messages and pings; the side that accepts sends only answers (responses, errors, `Overloaded`)
//! and pongs. Two nodes that talk both ways therefore hold two connections (Cassandra does the
//! same), which removes any race between nodes dialling each other at the same moment, and lets
//! the accepting side's reader wait on nothing but the socket.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::MissedTickBehavior;

use crate::error::Error;
use crate::faults::PeerFaults;
use crate::handler::PeerInfo;
use crate::metrics::Metrics;
use crate::transport::Shared;
use crate::wire::{
    FRAME_HEADER_LEN, FrameHeader, FrameKind, HELLO_BODY_MAX_BYTES, HELLO_PREFIX_LEN, Hello, PROTOCOL_VERSION,
    WireError,
};
use crate::{Lane, lock};

/// Capacity of each connection's write buffer: small frames written by one batch are sent in
/// as few `write` system calls as this allows.
const WRITE_BUFFER_BYTES: usize = 64 << 10;

/// Bytes the reader asks the socket for at least, when its buffer runs low.
const READ_BUFFER_BYTES: usize = 64 << 10;

/// The writer flushes after at most this many frames even if more are queued, so that its
/// housekeeping and the close signal are looked at regularly under a constant stream.
const WRITE_BATCH_FRAMES_MAX: usize = 1024;

/// Longest handler error message sent to the requester.
const ERROR_MESSAGE_MAX_BYTES: usize = 4096;

/// Which side of the connection this node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    /// This node dialled: it sends requests and one-way messages.
    Outbound(Lane),
    /// The peer dialled: this node answers.
    Inbound,
}

/// A frame waiting in a connection's outgoing queue.
pub(crate) struct Frame {
    kind: FrameKind,
    tag: u16,
    request_id: u64,
    payload: Bytes,
    /// With an injected delay: not to be written before this instant.
    due: Option<Instant>,
}

impl Frame {
    fn wire_len(&self) -> usize {
        FRAME_HEADER_LEN + self.payload.len()
    }

    fn header(&self) -> [u8; FRAME_HEADER_LEN] {
        // The payload length fits: every payload is checked against a frame limit of at most
        // 1 GiB before it is queued.
        debug_assert!(u32::try_from(self.payload.len()).is_ok());
        FrameHeader {
            payload_len: self.payload.len() as u32,
            kind: self.kind,
            tag: self.tag,
            request_id: self.request_id,
        }
        .encode()
    }
}

/// The part of a connection's state that must change atomically.
struct State {
    /// Set once; no request registers on a closed connection.
    closed: bool,
    /// The next request id (outbound connections).
    next_request_id: u64,
    /// Requests waiting for their answer, by request id (outbound connections).
    waiters: HashMap<u64, oneshot::Sender<Result<Bytes, Error>>>,
}

/// One established connection, shared by the tasks that use it.
pub(crate) struct Conn {
    /// The peer, as its handshake named it (for outbound connections, the address dialled).
    pub(crate) peer: PeerInfo,
    /// The largest payload the peer accepts, from its handshake.
    pub(crate) peer_frame_bytes_max: usize,
    direction: Direction,
    shared: Arc<Shared>,
    faults: Arc<PeerFaults>,
    /// The outgoing queue, drained by the writer task.
    queue: mpsc::Sender<Frame>,
    /// Bytes of the frames in the outgoing queue.
    queued_bytes: AtomicUsize,
    state: Mutex<State>,
    /// Mirrors `state.closed` for lock-free checks.
    closed: AtomicBool,
    /// Tells the reader and the writer to stop.
    closed_signal: watch::Sender<bool>,
    /// When a frame was last received, in milliseconds of the transport's clock.
    last_received_ms: AtomicU64,
    /// When a frame was last queued or received.
    last_activity_ms: AtomicU64,
    /// Outbound: a request or one-way frame was queued after the last frame was received, so a
    /// live peer owes a sign of life (an answer, or a pong to the ping this leads to).
    sent_since_received: AtomicBool,
    /// Inbound: handlers running for this connection, and the bytes of their requests.
    running_requests: AtomicUsize,
    running_request_bytes: AtomicUsize,
}

/// What the writer's periodic check decided.
enum Housekeeping {
    Nothing,
    Ping,
    Close(String),
}

impl Conn {
    /// Wraps an established (handshaken) stream. Returns the connection and the future that
    /// drives it (reader and writer) until it closes; the caller spawns or awaits it.
    pub(crate) fn start(
        shared: Arc<Shared>,
        stream: TcpStream,
        peer: PeerInfo,
        peer_frame_bytes_max: usize,
        direction: Direction,
        faults: Arc<PeerFaults>,
    ) -> (Arc<Conn>, impl Future<Output = ()> + Send + 'static) {
        let (queue, queue_rx) = mpsc::channel(shared.config.queue_frames_max);
        let now_ms = shared.now_ms();
        let conn = Arc::new(Conn {
            peer,
            peer_frame_bytes_max,
            direction,
            faults,
            queue,
            queued_bytes: AtomicUsize::new(0),
            state: Mutex::new(State { closed: false, next_request_id: 1, waiters: HashMap::new() }),
            closed: AtomicBool::new(false),
            closed_signal: watch::Sender::new(false),
            last_received_ms: AtomicU64::new(now_ms),
            last_activity_ms: AtomicU64::new(now_ms),
            sent_since_received: AtomicBool::new(false),
            running_requests: AtomicUsize::new(0),
            running_request_bytes: AtomicUsize::new(0),
            shared,
        });
        let (read_half, write_half) = stream.into_split();
        let driver = conn.clone().run(read_half, write_half, queue_rx);
        (conn, driver)
    }

    /// Whether the connection has closed (it never reopens).
    /// When a frame was last received, in milliseconds of the transport's clock.
    pub(crate) fn last_received_ms(&self) -> u64 {
        self.last_received_ms.load(Ordering::Relaxed)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Closes the connection: fails every waiting request and stops the reader and the writer.
    pub(crate) fn close(&self, reason: &str) {
        let waiters = {
            let mut state = lock(&self.state);
            if state.closed {
                return;
            }
            state.closed = true;
            std::mem::take(&mut state.waiters)
        };
        self.finish_close(waiters, reason);
    }

    fn finish_close(&self, waiters: HashMap<u64, oneshot::Sender<Result<Bytes, Error>>>, reason: &str) {
        self.closed.store(true, Ordering::Release);
        self.closed_signal.send_replace(true);
        Metrics::bump(&self.shared.metrics.connections_closed);
        tracing::debug!(peer = %self.peer.addr, direction = ?self.direction, waiting = waiters.len(), reason, "connection closed");
        for (_, waiter) in waiters {
            let _ = waiter.send(Err(Error::ConnectionClosed { peer: self.peer.addr }));
        }
    }

    // ----- sending side (outbound connections) -----

    /// Registers a request waiting for its answer and gives it an id.
    pub(crate) fn register(self: &Arc<Self>) -> Result<Waiter, Error> {
        let (sender, receiver) = oneshot::channel();
        let mut state = lock(&self.state);
        if state.closed {
            return Err(Error::ConnectionClosed { peer: self.peer.addr });
        }
        let limit = self.shared.config.outgoing_in_flight_max;
        if state.waiters.len() >= limit {
            drop(state);
            Metrics::bump(&self.shared.metrics.in_flight_limit_drops);
            return Err(Error::TooManyInFlight { peer: self.peer.addr, limit });
        }
        let request_id = state.next_request_id;
        state.next_request_id += 1;
        state.waiters.insert(request_id, sender);
        drop(state);
        Ok(Waiter { conn: self.clone(), request_id, receiver, answered: false })
    }

    /// Queues a request or one-way frame, failing at once when the queue is full.
    pub(crate) fn enqueue(&self, kind: FrameKind, tag: u16, request_id: u64, payload: Bytes) -> Result<(), Error> {
        if self.is_closed() {
            return Err(Error::ConnectionClosed { peer: self.peer.addr });
        }
        let frame = Frame { kind, tag, request_id, due: self.due(), payload };
        let size = frame.wire_len();
        let config = &self.shared.config;
        let queued = self.queued_bytes.fetch_add(size, Ordering::AcqRel);
        if queued > 0 && queued + size > config.queue_bytes_max {
            self.queued_bytes.fetch_sub(size, Ordering::AcqRel);
            Metrics::bump(&self.shared.metrics.queue_full_drops);
            return Err(Error::QueueFull { peer: self.peer.addr, limit: format!("{} bytes", config.queue_bytes_max) });
        }
        match self.queue.try_send(frame) {
            Ok(()) => {
                self.last_activity_ms.store(self.shared.now_ms(), Ordering::Relaxed);
                self.sent_since_received.store(true, Ordering::Relaxed);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.queued_bytes.fetch_sub(size, Ordering::AcqRel);
                Metrics::bump(&self.shared.metrics.queue_full_drops);
                Err(Error::QueueFull { peer: self.peer.addr, limit: format!("{} frames", config.queue_frames_max) })
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.queued_bytes.fetch_sub(size, Ordering::AcqRel);
                Err(Error::ConnectionClosed { peer: self.peer.addr })
            }
        }
    }

    /// Queues a small control frame (ping, pong, `Overloaded`). If the queue is full the frame
    /// is dropped: the peer's timers cope with a missing pong or refusal.
    fn enqueue_control(&self, kind: FrameKind, tag: u16, request_id: u64) {
        let frame = Frame { kind, tag, request_id, payload: Bytes::new(), due: self.due() };
        let size = frame.wire_len();
        self.queued_bytes.fetch_add(size, Ordering::AcqRel);
        if self.queue.try_send(frame).is_err() {
            self.queued_bytes.fetch_sub(size, Ordering::AcqRel);
        }
    }

    fn due(&self) -> Option<Instant> {
        self.faults.delay().map(|delay| Instant::now() + delay)
    }

    /// Hands an answer to the request waiting for it.
    fn complete(&self, request_id: u64, answer: Result<Bytes, Error>) {
        let waiter = lock(&self.state).waiters.remove(&request_id);
        match waiter {
            Some(waiter) => {
                let _ = waiter.send(answer);
            }
            None => Metrics::bump(&self.shared.metrics.late_answers),
        }
    }

    // ----- answering side (inbound connections) -----

    /// Starts a handler task for a request, or refuses it if too much is already running.
    fn start_request(self: &Arc<Self>, tag: u16, request_id: u64, payload: Bytes) {
        let config = &self.shared.config;
        let running = self.running_requests.load(Ordering::Acquire);
        let running_bytes = self.running_request_bytes.load(Ordering::Acquire);
        let len = payload.len();
        if running >= config.incoming_in_flight_max
            || (running > 0 && running_bytes + len > config.incoming_in_flight_bytes_max)
        {
            Metrics::bump(&self.shared.metrics.overloaded_replies);
            self.enqueue_control(FrameKind::Overloaded, tag, request_id);
            return;
        }
        // Only this connection's reader adds, so the check above cannot be overtaken.
        self.running_requests.fetch_add(1, Ordering::AcqRel);
        self.running_request_bytes.fetch_add(len, Ordering::AcqRel);
        let responder = Responder { conn: self.clone(), tag, request_id, request_len: len, answered: false };
        let handler = self.shared.handler.clone();
        let from = self.peer;
        tokio::spawn(async move {
            let answer = handler.request_boxed(from, tag, payload).await;
            responder.answer(answer).await;
        });
    }

    // ----- the tasks -----

    /// Runs the connection: the writer in its own task, the reader here, until either stops.
    async fn run(self: Arc<Self>, read_half: OwnedReadHalf, write_half: OwnedWriteHalf, queue: mpsc::Receiver<Frame>) {
        let _alive = self.shared.tasks.enter();
        let writer = tokio::spawn(self.clone().write_loop(write_half, queue));
        let reason = self.read_loop(read_half).await;
        self.close(&reason);
        let _ = writer.await;
    }

    /// Reads frames and dispatches them until the connection ends. Returns why it ended.
    ///
    /// Every complete frame already in the buffer is dispatched before the socket is read
    /// again, so a burst of small frames costs one read and no select per frame.
    async fn read_loop(self: &Arc<Self>, mut half: OwnedReadHalf) -> String {
        let mut buffer = BytesMut::with_capacity(READ_BUFFER_BYTES);
        let mut closed = self.closed_signal.subscribe();
        let mut shutdown = self.shared.shutdown.subscribe();
        let frame_bytes_max = self.shared.config.frame_bytes_max;
        let violation = 'read: loop {
            loop {
                match next_frame(&mut buffer, frame_bytes_max) {
                    Ok(Some((header, payload))) => {
                        if let Err(violation) = self.dispatch(header, payload) {
                            break 'read violation;
                        }
                    }
                    Ok(None) => break,
                    Err(error) => break 'read error.to_string(),
                }
            }
            let read = tokio::select! {
                biased;
                () = until_true(&mut closed) => return "closed".to_owned(),
                () = until_true(&mut shutdown) => return "transport shut down".to_owned(),
                read = half.read_buf(&mut buffer) => read,
            };
            match read {
                Ok(0) if buffer.is_empty() => return "peer closed the connection".to_owned(),
                Ok(0) => break WireError::Truncated.to_string(),
                Ok(_) => {}
                Err(error) => return format!("read failed: {error}"),
            }
        };
        Metrics::bump(&self.shared.metrics.protocol_errors);
        tracing::warn!(peer = %self.peer.addr, node_id = self.peer.node_id, "closing connection: {violation}");
        violation
    }

    /// Acts on one received frame. An `Err` is a protocol violation that closes the connection.
    fn dispatch(self: &Arc<Self>, header: FrameHeader, payload: Bytes) -> Result<(), String> {
        let metrics = &self.shared.metrics;
        let now_ms = self.shared.now_ms();
        self.last_received_ms.store(now_ms, Ordering::Relaxed);
        self.last_activity_ms.store(now_ms, Ordering::Relaxed);
        self.sent_since_received.store(false, Ordering::Relaxed);
        Metrics::bump(&metrics.messages_received);
        Metrics::add(&metrics.bytes_received, FRAME_HEADER_LEN + payload.len());
        if self.faults.is_blocked() {
            Metrics::bump(&metrics.blocked_drops);
            return Ok(());
        }
        let peer = self.peer.addr;
        match (self.direction, header.kind) {
            (Direction::Outbound(_), FrameKind::Response) => self.complete(header.request_id, Ok(payload)),
            (Direction::Outbound(_), FrameKind::ErrorResponse) => {
                let message = String::from_utf8_lossy(&payload).into_owned();
                self.complete(header.request_id, Err(Error::Remote { peer, message }));
            }
            (Direction::Outbound(_), FrameKind::Overloaded) => {
                self.complete(header.request_id, Err(Error::Overloaded { peer }));
            }
            (Direction::Outbound(_), FrameKind::Pong) => {}
            (Direction::Inbound, FrameKind::Request) => self.start_request(header.tag, header.request_id, payload),
            (Direction::Inbound, FrameKind::OneWay) => {
                let handler = &self.shared.handler;
                let delivered =
                    std::panic::catch_unwind(AssertUnwindSafe(|| handler.message_dyn(self.peer, header.tag, payload)));
                if delivered.is_err() {
                    tracing::error!(peer = %peer, tag = header.tag, "one-way message handler panicked");
                }
            }
            (Direction::Inbound, FrameKind::Ping) => self.enqueue_control(FrameKind::Pong, 0, header.request_id),
            (direction, kind) => {
                let side = match direction {
                    Direction::Outbound(_) => "a dialled",
                    Direction::Inbound => "an accepted",
                };
                return Err(format!("unexpected {kind:?} frame on {side} connection"));
            }
        }
        Ok(())
    }

    /// Drains the outgoing queue into the socket, many frames per flush, and runs the periodic
    /// checks (idle, ping, dead peer). Closes the connection when it stops.
    async fn write_loop(self: Arc<Self>, half: OwnedWriteHalf, mut queue: mpsc::Receiver<Frame>) {
        let mut out = BufWriter::with_capacity(WRITE_BUFFER_BYTES, half);
        let mut closed = self.closed_signal.subscribe();
        let period = self.shared.config.housekeeping_interval();
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let reason = loop {
            tokio::select! {
                biased;
                () = until_true(&mut closed) => return,
                // Before the queue, which may never be empty under load: the checks must run.
                _ = ticks.tick() => match self.housekeeping() {
                    Housekeeping::Nothing => {}
                    Housekeeping::Ping => self.enqueue_control(FrameKind::Ping, 0, 0),
                    Housekeeping::Close(reason) => break reason,
                },
                frame = queue.recv() => {
                    // The connection holds the sending side, so the queue cannot end first.
                    let Some(frame) = frame else { return };
                    let batch = self.write_batch(&mut out, frame, &mut queue);
                    tokio::pin!(batch);
                    // The checks also run while a write is stuck (a peer that stopped reading, or
                    // a vanished host), so that a dead connection is still closed.
                    let written = loop {
                        tokio::select! {
                            biased;
                            () = until_true(&mut closed) => return,
                            written = &mut batch => break written,
                            _ = ticks.tick() => match self.housekeeping() {
                                Housekeeping::Nothing => {}
                                Housekeeping::Ping => self.enqueue_control(FrameKind::Ping, 0, 0),
                                Housekeeping::Close(reason) => {
                                    self.close(&reason);
                                    return;
                                }
                            },
                        }
                    };
                    if let Err(error) = written {
                        break format!("write failed: {error}");
                    }
                }
            }
        };
        self.close(&reason);
    }

    /// Writes `first` and whatever else is queued (up to a bound), then flushes once.
    async fn write_batch(
        &self,
        out: &mut BufWriter<OwnedWriteHalf>,
        first: Frame,
        queue: &mut mpsc::Receiver<Frame>,
    ) -> std::io::Result<()> {
        let metrics = &self.shared.metrics;
        let mut frame = first;
        let mut written = 0;
        let mut yielded = false;
        loop {
            if let Some(due) = frame.due
                && due > Instant::now()
            {
                out.flush().await?;
                tokio::time::sleep_until(due.into()).await;
            }
            out.write_all(&frame.header()).await?;
            if !frame.payload.is_empty() {
                out.write_all(&frame.payload).await?;
            }
            let size = frame.wire_len();
            self.queued_bytes.fetch_sub(size, Ordering::AcqRel);
            Metrics::bump(&metrics.messages_sent);
            Metrics::add(&metrics.bytes_sent, size);
            written += 1;
            if written >= WRITE_BATCH_FRAMES_MAX {
                break;
            }
            match queue.try_recv() {
                Ok(next) => frame = next,
                Err(_) if !yielded => {
                    // Let the tasks that are ready to send run first (they are usually
                    // answers and requests one wake-up away), then write them in this batch.
                    yielded = true;
                    tokio::task::yield_now().await;
                    match queue.try_recv() {
                        Ok(next) => frame = next,
                        Err(_) => break,
                    }
                }
                Err(_) => break,
            }
        }
        out.flush().await?;
        Metrics::bump(&metrics.flushes);
        Ok(())
    }

    /// The periodic check: close an idle or dead connection, or probe a silent one.
    fn housekeeping(&self) -> Housekeeping {
        let config = &self.shared.config;
        let now_ms = self.shared.now_ms();
        let silent_ms = now_ms.saturating_sub(self.last_received_ms.load(Ordering::Relaxed));
        let idle_ms = now_ms.saturating_sub(self.last_activity_ms.load(Ordering::Relaxed));
        match self.direction {
            Direction::Outbound(_) => {
                let mut state = lock(&self.state);
                let waiting = state.waiters.len();
                if waiting > 0 || self.sent_since_received.load(Ordering::Relaxed) {
                    if silent_ms >= millis(config.dead_after) {
                        Housekeeping::Close(format!(
                            "nothing received from the peer for {silent_ms} ms ({waiting} requests waiting)"
                        ))
                    } else if silent_ms >= millis(config.ping_interval) {
                        Housekeeping::Ping
                    } else {
                        Housekeeping::Nothing
                    }
                } else {
                    if idle_ms >= millis(config.idle_timeout) && !state.closed {
                        // Closed under the lock, so no request can register on it meanwhile.
                        state.closed = true;
                        drop(state);
                        self.finish_close(HashMap::new(), &format!("idle for {idle_ms} ms"));
                    }
                    Housekeeping::Nothing
                }
            }
            // The dialling side pings while it waits for anything, so a long silence means it is
            // gone or done with this connection.
            Direction::Inbound => {
                let idle_limit_ms = millis(config.idle_timeout).saturating_mul(2);
                if silent_ms >= idle_limit_ms {
                    Housekeeping::Close(format!("nothing received for {silent_ms} ms"))
                } else {
                    Housekeeping::Nothing
                }
            }
        }
    }
}

fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Resolves once the watched flag is true (or its sender is gone).
async fn until_true(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|set| *set).await;
}

/// A request registered on a connection, waiting for its answer. Dropping it (a timeout, or a
/// caller that no longer needs the answer) unregisters it, so an abandoned request holds no
/// memory and the answer, if it comes, is counted as late and dropped.
pub(crate) struct Waiter {
    conn: Arc<Conn>,
    pub(crate) request_id: u64,
    receiver: oneshot::Receiver<Result<Bytes, Error>>,
    answered: bool,
}

impl Waiter {
    /// Waits for the answer.
    pub(crate) async fn answer(mut self) -> Result<Bytes, Error> {
        let answer = (&mut self.receiver).await;
        self.answered = true;
        answer.unwrap_or(Err(Error::ConnectionClosed { peer: self.conn.peer.addr }))
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        if !self.answered {
            lock(&self.conn.state).waiters.remove(&self.request_id);
        }
    }
}

/// Sends the answer to one incoming request, and releases its in-flight slot however the
/// handler ends: if the handler panics (or its task is cancelled), the drop sends an error
/// answer instead, so the requester does not wait for its timeout.
struct Responder {
    conn: Arc<Conn>,
    tag: u16,
    request_id: u64,
    request_len: usize,
    answered: bool,
}

impl Responder {
    async fn answer(mut self, answer: Result<Bytes, crate::HandlerError>) {
        self.answered = true;
        let frame = match answer {
            Ok(payload) if payload.len() <= self.conn.peer_frame_bytes_max => self.frame(FrameKind::Response, payload),
            Ok(payload) => self.error_frame(format!(
                "answer to tag {} of {} bytes exceeds the requester's frame limit of {} bytes",
                self.tag,
                payload.len(),
                self.conn.peer_frame_bytes_max
            )),
            Err(error) => self.error_frame(error.message),
        };
        let conn = &self.conn;
        if conn.faults.is_blocked() {
            Metrics::bump(&conn.shared.metrics.blocked_drops);
            return;
        }
        let size = frame.wire_len();
        conn.queued_bytes.fetch_add(size, Ordering::AcqRel);
        // Waits for queue space rather than dropping an answer: the number of answers pending
        // is bounded by the in-flight limit, which this request's slot is part of until now.
        if conn.queue.send(frame).await.is_err() {
            conn.queued_bytes.fetch_sub(size, Ordering::AcqRel);
        }
    }

    fn frame(&self, kind: FrameKind, payload: Bytes) -> Frame {
        Frame { kind, tag: self.tag, request_id: self.request_id, payload, due: self.conn.due() }
    }

    fn error_frame(&self, mut message: String) -> Frame {
        let limit = ERROR_MESSAGE_MAX_BYTES.min(self.conn.peer_frame_bytes_max);
        if message.len() > limit {
            let mut cut = limit;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        self.frame(FrameKind::ErrorResponse, Bytes::from(message))
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if !self.answered && !self.conn.faults.is_blocked() {
            let frame = self.error_frame(format!("handler for tag {} panicked or was cancelled", self.tag));
            let size = frame.wire_len();
            self.conn.queued_bytes.fetch_add(size, Ordering::AcqRel);
            if self.conn.queue.try_send(frame).is_err() {
                self.conn.queued_bytes.fetch_sub(size, Ordering::AcqRel);
            }
        }
        self.conn.running_requests.fetch_sub(1, Ordering::AcqRel);
        self.conn.running_request_bytes.fetch_sub(self.request_len, Ordering::AcqRel);
    }
}

/// Takes the next complete frame off the front of `buffer`, or returns `Ok(None)` after making
/// room for more bytes. The header is checked (kind, flags, length against `payload_max_bytes`)
/// before the buffer grows to hold the payload, so a claimed length costs no memory unless it
/// is within the limit.
///
/// Frames split off the buffer share its allocation, so small payloads cost no allocation of
/// their own.
fn next_frame(buffer: &mut BytesMut, payload_max_bytes: usize) -> Result<Option<(FrameHeader, Bytes)>, WireError> {
    if buffer.len() >= FRAME_HEADER_LEN {
        let mut header_bytes = [0u8; FRAME_HEADER_LEN];
        header_bytes.copy_from_slice(&buffer[..FRAME_HEADER_LEN]);
        let header = FrameHeader::decode(&header_bytes, payload_max_bytes)?;
        let total = FRAME_HEADER_LEN + header.payload_len as usize;
        if buffer.len() >= total {
            let mut frame = buffer.split_to(total);
            let payload = frame.split_off(FRAME_HEADER_LEN).freeze();
            return Ok(Some((header, payload)));
        }
        // Room for the rest of this frame, allocated only now that its length is checked.
        // Nothing more: growing a buffer that holds most of a large frame would copy it.
        buffer.reserve(total - buffer.len());
    } else if buffer.capacity() - buffer.len() < READ_BUFFER_BYTES / 4 {
        buffer.reserve(READ_BUFFER_BYTES);
    }
    Ok(None)
}

/// Why a handshake failed.
pub(crate) enum HandshakeError {
    /// One side refused the other; the message names both sides' values.
    Refused(String),
    /// The socket failed or closed.
    Io(std::io::Error),
}

impl From<std::io::Error> for HandshakeError {
    fn from(error: std::io::Error) -> HandshakeError {
        HandshakeError::Io(error)
    }
}

/// Exchanges greetings and checks the peer's. Both sides send theirs first and then read, so the
/// handshake costs one round trip; a greeting (under 300 bytes) always fits in the socket
/// buffers, so neither side can block the other. `peer` names the peer in refusals.
pub(crate) async fn handshake(
    stream: &mut TcpStream,
    shared: &Shared,
    peer: SocketAddr,
) -> Result<Hello, HandshakeError> {
    stream.write_all(&shared.hello).await?;
    let mut prefix = [0u8; HELLO_PREFIX_LEN];
    stream.read_exact(&mut prefix).await?;
    let (version, body_len) = Hello::decode_prefix(&prefix).map_err(|error| refused(peer, error))?;
    if version != PROTOCOL_VERSION {
        return Err(HandshakeError::Refused(format!(
            "peer {peer} speaks onggi cluster protocol {version}, this node speaks {PROTOCOL_VERSION}"
        )));
    }
    if body_len > HELLO_BODY_MAX_BYTES {
        return Err(refused(peer, WireError::HelloTooLarge(body_len)));
    }
    let mut body = vec![0u8; body_len];
    stream.read_exact(&mut body).await?;
    let hello = Hello::decode_body(&body).map_err(|error| refused(peer, error))?;
    let config = &shared.config;
    if hello.cluster != config.cluster {
        return Err(HandshakeError::Refused(format!(
            "peer {peer} belongs to cluster {:?}, this node to cluster {:?}",
            hello.cluster, config.cluster
        )));
    }
    if hello.node_id == config.node_id {
        return Err(HandshakeError::Refused(format!(
            "peer {peer} claims node id {}, which is this node's own id",
            hello.node_id
        )));
    }
    if hello.frame_bytes_max == 0 {
        return Err(HandshakeError::Refused(format!("peer {peer} announces a frame limit of 0 bytes")));
    }
    Ok(hello)
}

fn refused(peer: SocketAddr, error: WireError) -> HandshakeError {
    HandshakeError::Refused(format!("peer {peer}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_bytes(kind: FrameKind, request_id: u64, payload: &[u8]) -> Vec<u8> {
        let header = FrameHeader { payload_len: payload.len() as u32, kind, tag: 9, request_id };
        [&header.encode()[..], payload].concat()
    }

    #[test]
    fn frames_are_reassembled_whatever_the_read_boundaries() {
        let payloads: Vec<Vec<u8>> =
            vec![vec![], b"a".to_vec(), vec![5; 300], vec![], vec![7; 70_000], b"end".to_vec()];
        let stream: Vec<u8> = payloads
            .iter()
            .enumerate()
            .flat_map(|(i, payload)| frame_bytes(FrameKind::Request, i as u64 + 1, payload))
            .collect();
        for chunk in [1, 2, 15, 16, 17, 1000, 65_536, stream.len()] {
            let mut buffer = BytesMut::new();
            let mut frames = Vec::new();
            for piece in stream.chunks(chunk) {
                buffer.extend_from_slice(piece);
                while let Some((header, payload)) = next_frame(&mut buffer, 1 << 20).unwrap() {
                    assert_eq!(header.payload_len as usize, payload.len());
                    frames.push((header.request_id, payload));
                }
            }
            assert!(buffer.is_empty());
            let expected: Vec<(u64, Bytes)> =
                payloads.iter().enumerate().map(|(i, p)| (i as u64 + 1, Bytes::from(p.clone()))).collect();
            assert_eq!(frames, expected, "chunks of {chunk}");
        }
    }

    #[test]
    fn a_claimed_length_over_the_limit_is_refused_before_any_allocation() {
        let mut buffer = BytesMut::with_capacity(64);
        let mut header = FrameHeader { payload_len: 0, kind: FrameKind::OneWay, tag: 0, request_id: 0 }.encode();
        header[0..4].copy_from_slice(&u32::MAX.to_be_bytes());
        buffer.extend_from_slice(&header);
        assert_eq!(
            next_frame(&mut buffer, 16 << 20),
            Err(WireError::FrameTooLarge { len: u32::MAX as usize, max: 16 << 20 })
        );
        assert!(buffer.capacity() < 1024, "no room was made for the claimed payload");
    }

    #[test]
    fn room_is_made_for_exactly_the_announced_frame() {
        let mut buffer = BytesMut::new();
        buffer.extend_from_slice(&frame_bytes(FrameKind::Request, 1, &[0; 10])[..FRAME_HEADER_LEN]);
        assert_eq!(next_frame(&mut buffer, 4 << 20).unwrap(), None);
        let mut big = BytesMut::new();
        big.extend_from_slice(
            &FrameHeader { payload_len: 3 << 20, kind: FrameKind::Request, tag: 0, request_id: 1 }.encode(),
        );
        assert_eq!(next_frame(&mut big, 4 << 20).unwrap(), None);
        assert!(big.capacity() >= FRAME_HEADER_LEN + (3 << 20));
    }
}

//! The endpoint: the listener, the connections to each peer, and the public calls.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::connection::{Conn, Direction, HandshakeError, handshake};
use crate::error::{BindError, Error};
use crate::faults::{Faults, PeerFaults};
use crate::handler::{DynHandler, Handler, PeerInfo};
use crate::metrics::Metrics;
use crate::wire::{FrameKind, Hello};
use crate::{Lane, lock};

/// How long [`Transport::shutdown`] waits for connections to finish closing.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// What every task of one transport shares.
pub(crate) struct Shared {
    pub(crate) config: Config,
    /// This node's greeting, encoded once.
    pub(crate) hello: Vec<u8>,
    pub(crate) handler: Arc<dyn DynHandler>,
    pub(crate) metrics: Metrics,
    pub(crate) faults: Faults,
    /// Set to true once, to stop the listener and every connection.
    pub(crate) shutdown: watch::Sender<bool>,
    /// Counts running connections, so that shutdown can wait for them.
    pub(crate) tasks: TaskCounter,
    /// Origin of the millisecond clock connections use for their timers.
    epoch: Instant,
}

impl Shared {
    /// Milliseconds since the transport started.
    pub(crate) fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn is_shut_down(&self) -> bool {
        *self.shutdown.borrow()
    }
}

/// Counts live tasks and wakes a waiter when none is left.
#[derive(Default)]
pub(crate) struct TaskCounter {
    live: AtomicUsize,
    none_left: Notify,
}

/// One live task; dropping it ends the task's count.
pub(crate) struct TaskGuard<'a>(&'a TaskCounter);

impl TaskCounter {
    pub(crate) fn enter(&self) -> TaskGuard<'_> {
        self.live.fetch_add(1, Ordering::AcqRel);
        TaskGuard(self)
    }

    async fn wait_none(&self) {
        loop {
            let notified = self.none_left.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.live.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for TaskGuard<'_> {
    fn drop(&mut self) {
        if self.0.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.none_left.notify_waiters();
        }
    }
}

/// The connections to one peer, one per lane, and their reconnection state.
struct PeerSlot {
    addr: SocketAddr,
    faults: Arc<PeerFaults>,
    lanes: [LaneSlot; 2],
}

/// One lane's connection to a peer.
#[derive(Default)]
struct LaneSlot {
    state: Mutex<LaneState>,
    /// Held while dialling, so that concurrent callers share one attempt.
    dialling: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct LaneState {
    conn: Option<Arc<Conn>>,
    /// Consecutive failed attempts.
    failures: u32,
    /// While in back-off: when the next attempt may be made, and why the last one failed.
    retry: Option<(Instant, Error)>,
}

impl LaneSlot {
    fn live(&self) -> Option<Arc<Conn>> {
        lock(&self.state).conn.as_ref().filter(|conn| !conn.is_closed()).cloned()
    }
}

struct Inner {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    peers: Mutex<HashMap<SocketAddr, Arc<PeerSlot>>>,
    listener: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle is gone: stop the listener and every connection.
        self.shared.shutdown.send_replace(true);
    }
}

/// One node's endpoint in the cluster network: it listens for peers, dials them on demand, and
/// carries requests and one-way messages (opaque byte payloads with a `u16` tag) both ways.
///
/// Cheap to clone (a handle); every clone is the same endpoint. See the crate documentation for
/// the protocol, the bounds and the failure behaviour.
#[derive(Clone)]
pub struct Transport {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("node_id", &self.inner.shared.config.node_id)
            .field("cluster", &self.inner.shared.config.cluster)
            .field("local_addr", &self.inner.local_addr)
            .finish_non_exhaustive()
    }
}

impl Transport {
    /// Validates `config`, binds its listen address, and starts accepting peers, whose
    /// requests and messages go to `handler`. Must be called within a tokio runtime.
    pub async fn bind(config: Config, handler: impl Handler) -> Result<Transport, BindError> {
        config.validate()?;
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| BindError::Listen { addr: config.listen, source })?;
        let bound = listener.local_addr().map_err(|source| BindError::Listen { addr: config.listen, source })?;
        let local_addr = config.advertise.unwrap_or(bound);
        let frame_bytes_max = u32::try_from(config.frame_bytes_max)
            .map_err(|_| BindError::Config("frame_bytes_max does not fit in 32 bits".to_owned()))?;
        let hello =
            Hello { node_id: config.node_id, cluster: config.cluster.clone(), listen: local_addr, frame_bytes_max }
                .encode();
        let inbound_slots = Arc::new(Semaphore::new(config.inbound_connections_max));
        let shared = Arc::new(Shared {
            config,
            hello,
            handler: Arc::new(handler),
            metrics: Metrics::default(),
            faults: Faults::default(),
            shutdown: watch::Sender::new(false),
            tasks: TaskCounter::default(),
            epoch: Instant::now(),
        });
        tracing::info!(node_id = shared.config.node_id, cluster = %shared.config.cluster, %bound, advertised = %local_addr, "transport listening");
        let accept = tokio::spawn(accept_loop(shared.clone(), listener, inbound_slots));
        Ok(Transport {
            inner: Arc::new(Inner {
                shared,
                local_addr,
                peers: Mutex::new(HashMap::new()),
                listener: Mutex::new(Some(accept)),
            }),
        })
    }

    /// The address peers reach this node at (the advertised address, or the bound one).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// This node's id.
    pub fn node_id(&self) -> u64 {
        self.inner.shared.config.node_id
    }

    /// The configuration this transport runs with.
    pub fn config(&self) -> &Config {
        &self.inner.shared.config
    }

    /// The counters, readable at any time.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.shared.metrics
    }

    /// The fault-injection switches (tests).
    pub fn faults(&self) -> &Faults {
        &self.inner.shared.faults
    }

    /// Sends a request to `peer` and waits for its answer, at most `timeout` in all (dialling
    /// included). Payloads over [`Config::bulk_threshold_bytes`] go on the bulk lane, the others
    /// on the small lane.
    ///
    /// Dropping the returned future abandons the request (its answer, if any, is discarded):
    /// a coordinator that needs two answers out of three simply drops the third.
    pub async fn request(&self, peer: SocketAddr, tag: u16, payload: Bytes, timeout: Duration) -> Result<Bytes, Error> {
        let lane = Lane::for_payload(payload.len(), self.inner.shared.config.bulk_threshold_bytes);
        self.request_on(lane, peer, tag, payload, timeout).await
    }

    /// [`Transport::request`] on a chosen lane: e.g. a small request whose answer is large
    /// (a batch of item versions) belongs on [`Lane::Bulk`], because answers travel on the
    /// connection that carried the request.
    pub async fn request_on(
        &self,
        lane: Lane,
        peer: SocketAddr,
        tag: u16,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, Error> {
        match tokio::time::timeout(timeout, self.request_untimed(lane, peer, tag, payload)).await {
            Ok(answer) => answer,
            Err(_) => {
                Metrics::bump(&self.inner.shared.metrics.request_timeouts);
                Err(Error::Timeout { peer, timeout })
            }
        }
    }

    async fn request_untimed(&self, lane: Lane, peer: SocketAddr, tag: u16, payload: Bytes) -> Result<Bytes, Error> {
        self.check_size(peer, payload.len(), self.inner.shared.config.frame_bytes_max)?;
        let slot = self.slot(peer)?;
        if slot.faults.is_blocked() {
            // A cut network: the request vanishes and the caller's timeout fires.
            Metrics::bump(&self.inner.shared.metrics.blocked_drops);
            drop(payload);
            return std::future::pending().await;
        }
        // A connection can close between being looked up and the request registering on it
        // (idle close, peer restart); one retry on a fresh connection covers that.
        let mut attempts = 0;
        let (conn, waiter) = loop {
            let conn = self.connection(&slot, lane).await?;
            self.check_size(peer, payload.len(), conn.peer_frame_bytes_max)?;
            match conn.register() {
                Ok(waiter) => break (conn, waiter),
                Err(Error::ConnectionClosed { .. }) if attempts == 0 => attempts += 1,
                Err(error) => return Err(error),
            }
        };
        conn.enqueue(FrameKind::Request, tag, waiter.request_id, payload)?;
        waiter.answer().await
    }

    /// Sends a one-way message to `peer` (no answer). `Ok` means it was queued for the peer's
    /// connection, not that it arrived: use a request when delivery matters. Dials the peer first
    /// if needed, which can take up to the connect and handshake timeouts.
    pub async fn send(&self, peer: SocketAddr, tag: u16, payload: Bytes) -> Result<(), Error> {
        let lane = Lane::for_payload(payload.len(), self.inner.shared.config.bulk_threshold_bytes);
        self.check_size(peer, payload.len(), self.inner.shared.config.frame_bytes_max)?;
        let slot = self.slot(peer)?;
        if slot.faults.is_blocked() {
            Metrics::bump(&self.inner.shared.metrics.blocked_drops);
            return Ok(());
        }
        let mut attempts = 0;
        loop {
            let conn = self.connection(&slot, lane).await?;
            self.check_size(peer, payload.len(), conn.peer_frame_bytes_max)?;
            match conn.enqueue(FrameKind::OneWay, tag, 0, payload.clone()) {
                Err(Error::ConnectionClosed { .. }) if attempts == 0 => attempts += 1,
                result => return result,
            }
        }
    }

    /// Closes the connections to `peer` (both lanes) and forgets its back-off state; the next
    /// message dials again. Requests waiting on them fail with [`Error::ConnectionClosed`].
    pub fn disconnect(&self, peer: SocketAddr) {
        let slot = lock(&self.inner.peers).remove(&peer);
        for lane in slot.iter().flat_map(|slot| slot.lanes.iter()) {
            if let Some(conn) = lock(&lane.state).conn.take() {
                conn.close("disconnected by this node");
            }
        }
    }

    /// Whether a frame (an answer, a request, a pong) came from `peer` on a connection this node
    /// opened to it within the last `within`: recent evidence that the peer is alive and reachable,
    /// for callers that would rather not hand it work otherwise.
    pub fn heard_from_within(&self, peer: SocketAddr, within: Duration) -> bool {
        let Some(slot) = lock(&self.inner.peers).get(&peer).cloned() else { return false };
        let now = self.inner.shared.now_ms();
        let within = u64::try_from(within.as_millis()).unwrap_or(u64::MAX);
        slot.lanes.iter().filter_map(LaneSlot::live).any(|conn| now.saturating_sub(conn.last_received_ms()) <= within)
    }

    /// Whether an open connection to `peer` exists on `lane`.
    pub fn is_connected(&self, peer: SocketAddr, lane: Lane) -> bool {
        let slot = lock(&self.inner.peers).get(&peer).cloned();
        slot.is_some_and(|slot| slot.lanes[lane as usize].live().is_some())
    }

    /// Stops listening, closes every connection (waiting requests fail with
    /// [`Error::ConnectionClosed`], later calls with [`Error::Shutdown`]) and waits up to five
    /// seconds for the connection tasks to finish, so that the listen address is free again when
    /// it returns. Handlers still running finish on their own; their answers are dropped.
    pub async fn shutdown(&self) {
        let shared = &self.inner.shared;
        shared.shutdown.send_replace(true);
        let listener = lock(&self.inner.listener).take();
        if let Some(listener) = listener {
            let _ = listener.await;
        }
        let slots: Vec<_> = lock(&self.inner.peers).drain().map(|(_, slot)| slot).collect();
        for lane in slots.iter().flat_map(|slot| slot.lanes.iter()) {
            if let Some(conn) = lock(&lane.state).conn.take() {
                conn.close("transport shut down");
            }
        }
        if tokio::time::timeout(SHUTDOWN_WAIT, shared.tasks.wait_none()).await.is_err() {
            tracing::warn!("transport shutdown: connections still closing after {SHUTDOWN_WAIT:?}");
        }
        tracing::info!(node_id = shared.config.node_id, "transport shut down");
    }

    fn check_size(&self, peer: SocketAddr, size: usize, limit: usize) -> Result<(), Error> {
        if size > limit { Err(Error::FrameTooLarge { peer, size, limit }) } else { Ok(()) }
    }

    fn slot(&self, peer: SocketAddr) -> Result<Arc<PeerSlot>, Error> {
        let shared = &self.inner.shared;
        if shared.is_shut_down() {
            return Err(Error::Shutdown);
        }
        let mut peers = lock(&self.inner.peers);
        let slot = peers.entry(peer).or_insert_with(|| {
            Arc::new(PeerSlot { addr: peer, faults: shared.faults.peer(peer), lanes: Default::default() })
        });
        Ok(slot.clone())
    }

    /// The open connection to the peer on `lane`, dialled if there is none. After a failed
    /// attempt, calls fail at once with that attempt's error until the back-off has passed.
    async fn connection(&self, slot: &Arc<PeerSlot>, lane: Lane) -> Result<Arc<Conn>, Error> {
        if let Some(conn) = slot.lanes[lane as usize].live() {
            return Ok(conn);
        }
        // The attempt runs in a task of its own: a caller that gives up (its timeout fires
        // first) does not cancel it, so its outcome, a connection or a back-off, is recorded for
        // the callers that follow instead of every impatient caller dialling anew.
        let attempt = tokio::spawn(connect_lane(self.inner.shared.clone(), slot.clone(), lane));
        match attempt.await {
            Ok(result) => result,
            Err(error) => {
                Err(Error::Unreachable { peer: slot.addr, reason: format!("connection attempt failed: {error}") })
            }
        }
    }
}

/// Returns the lane's open connection, or dials one (one attempt at a time per lane; callers
/// that arrive meanwhile wait for it and share its outcome).
async fn connect_lane(shared: Arc<Shared>, slot: Arc<PeerSlot>, lane: Lane) -> Result<Arc<Conn>, Error> {
    let lane_slot = &slot.lanes[lane as usize];
    let _dialling = lane_slot.dialling.lock().await;
    if let Some(conn) = lane_slot.live() {
        return Ok(conn);
    }
    if shared.is_shut_down() {
        return Err(Error::Shutdown);
    }
    if let Some((retry_at, error)) = &lock(&lane_slot.state).retry {
        let now = Instant::now();
        if now < *retry_at {
            return Err(with_retry_note(error.clone(), *retry_at - now));
        }
    }
    match dial(&shared, &slot, lane).await {
        Ok(conn) => {
            let mut state = lock(&lane_slot.state);
            state.conn = Some(conn.clone());
            state.failures = 0;
            state.retry = None;
            Ok(conn)
        }
        Err(error) => {
            Metrics::bump(&shared.metrics.connect_failures);
            let mut state = lock(&lane_slot.state);
            state.failures = state.failures.saturating_add(1);
            let wait = backoff(&shared.config, state.failures);
            tracing::debug!(peer = %slot.addr, ?lane, failures = state.failures, ?wait, %error, "connection attempt failed");
            state.retry = Some((Instant::now() + wait, error.clone()));
            Err(error)
        }
    }
}

/// Dials `slot`'s peer, handshakes, and starts the connection.
async fn dial(shared: &Arc<Shared>, slot: &PeerSlot, lane: Lane) -> Result<Arc<Conn>, Error> {
    let config = &shared.config;
    let peer = slot.addr;
    let unreachable = |reason: String| Error::Unreachable { peer, reason };
    let mut stream = match tokio::time::timeout(config.connect_timeout, TcpStream::connect(peer)).await {
        Err(_) => return Err(unreachable(format!("connect timed out after {:?}", config.connect_timeout))),
        Ok(Err(error)) => return Err(unreachable(error.to_string())),
        Ok(Ok(stream)) => stream,
    };
    stream.set_nodelay(true).map_err(|error| unreachable(format!("cannot set TCP_NODELAY: {error}")))?;
    let hello = match tokio::time::timeout(config.handshake_timeout, handshake(&mut stream, shared, peer)).await {
        Err(_) => return Err(unreachable(format!("handshake timed out after {:?}", config.handshake_timeout))),
        Ok(Err(HandshakeError::Io(error))) => return Err(unreachable(format!("handshake failed: {error}"))),
        Ok(Err(HandshakeError::Refused(reason))) => {
            Metrics::bump(&shared.metrics.handshake_failures);
            tracing::warn!(%peer, "refusing peer: {reason}");
            return Err(Error::Refused { peer, reason });
        }
        Ok(Ok(hello)) => hello,
    };
    Metrics::bump(&shared.metrics.connects);
    tracing::debug!(%peer, node_id = hello.node_id, ?lane, "connected");
    let info = PeerInfo { node_id: hello.node_id, addr: peer };
    let (conn, driver) = Conn::start(
        shared.clone(),
        stream,
        info,
        hello.frame_bytes_max as usize,
        Direction::Outbound(lane),
        slot.faults.clone(),
    );
    tokio::spawn(driver);
    Ok(conn)
}

/// The back-off before attempt `failures + 1`: `backoff_initial` doubled per consecutive
/// failure, capped at `backoff_max`, then drawn uniformly between half and all of that.
fn backoff(config: &Config, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(20);
    let ceiling = config.backoff_initial.saturating_mul(1 << doublings).min(config.backoff_max);
    let half = ceiling / 2;
    let span_nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX).saturating_add(1);
    // Jitter needs no reproducibility here (this is the I/O shell, not the pure core): std's
    // randomly keyed hasher is enough, and spares a dependency.
    let random = RandomState::new().hash_one(failures);
    half + Duration::from_nanos(random % span_nanos)
}

fn with_retry_note(error: Error, wait: Duration) -> Error {
    match error {
        Error::Unreachable { peer, reason } => {
            Error::Unreachable { peer, reason: format!("{reason} (next attempt in {} ms)", wait.as_millis()) }
        }
        other => other,
    }
}

/// Accepts peers until shutdown. Each accepted socket gets a task that handshakes and then
/// serves the connection.
async fn accept_loop(shared: Arc<Shared>, listener: TcpListener, inbound_slots: Arc<Semaphore>) {
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, remote)) => match inbound_slots.clone().try_acquire_owned() {
                Ok(permit) => {
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        serve_inbound(shared, stream, remote).await;
                        drop(permit);
                    });
                }
                Err(_) => {
                    Metrics::bump(&shared.metrics.inbound_rejected);
                    tracing::warn!(%remote, limit = shared.config.inbound_connections_max, "too many incoming connections; closing a new one");
                }
            },
            Err(error) => {
                // Typically out of file descriptors: pause instead of spinning.
                tracing::warn!("accept failed: {error}");
                tokio::select! {
                    _ = shutdown.wait_for(|stop| *stop) => return,
                    () = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
        }
    }
}

/// Handshakes with a peer that dialled this node, then serves its connection until it closes.
async fn serve_inbound(shared: Arc<Shared>, mut stream: TcpStream, remote: SocketAddr) {
    let config = &shared.config;
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%remote, "cannot set TCP_NODELAY: {error}");
        return;
    }
    let mut shutdown = shared.shutdown.subscribe();
    let greeted = tokio::select! {
        _ = shutdown.wait_for(|stop| *stop) => return,
        greeted = tokio::time::timeout(config.handshake_timeout, handshake(&mut stream, &shared, remote)) => greeted,
    };
    let hello = match greeted {
        Ok(Ok(hello)) => hello,
        Ok(Err(HandshakeError::Refused(reason))) => {
            Metrics::bump(&shared.metrics.handshake_failures);
            tracing::warn!(%remote, "refusing incoming connection: {reason}");
            return;
        }
        Ok(Err(HandshakeError::Io(error))) => {
            Metrics::bump(&shared.metrics.handshake_failures);
            tracing::debug!(%remote, "incoming handshake failed: {error}");
            return;
        }
        Err(_) => {
            Metrics::bump(&shared.metrics.handshake_failures);
            tracing::debug!(%remote, "incoming handshake timed out after {:?}", config.handshake_timeout);
            return;
        }
    };
    Metrics::bump(&shared.metrics.accepts);
    tracing::debug!(%remote, node_id = hello.node_id, listen = %hello.listen, "accepted peer");
    let peer = PeerInfo { node_id: hello.node_id, addr: hello.listen };
    let faults = shared.faults.peer(hello.listen);
    let (_conn, driver) =
        Conn::start(shared.clone(), stream, peer, hello.frame_bytes_max as usize, Direction::Inbound, faults);
    driver.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_is_jittered_within_its_upper_half() {
        let config = Config::new(1, "test", "127.0.0.1:0".parse().unwrap());
        let mut draws = std::collections::HashSet::new();
        for failures in 1..40u32 {
            let ceiling =
                (config.backoff_initial * 2u32.pow(failures.saturating_sub(1).min(20))).min(config.backoff_max);
            for _ in 0..20 {
                let wait = backoff(&config, failures);
                assert!(wait >= ceiling / 2 && wait <= ceiling, "{failures} failures: {wait:?} vs {ceiling:?}");
                draws.insert(wait);
            }
        }
        assert!(draws.len() > 100, "jitter should vary the waits");
        assert!(backoff(&config, u32::MAX) <= config.backoff_max);
    }
}

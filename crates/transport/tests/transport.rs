//! Black-box tests of the transport over loopback TCP: several transports in one process, plus
//! raw sockets that break the protocol on purpose. Every test is bounded in time.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use onggi_transport::wire::{FRAME_HEADER_LEN, FrameHeader, FrameKind, HELLO_PREFIX_LEN, Hello, PROTOCOL_VERSION};
use onggi_transport::{Config, Error, Handler, HandlerError, Lane, PeerInfo, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// Answers with the payload.
const ECHO: u16 = 1;
/// Answers "<own id> from <sender id>".
const WHOAMI: u16 = 2;
/// Sleeps for the number of milliseconds in the payload (u64 BE), then answers "slept".
const SLEEP: u16 = 3;
/// Fails with "bad thing".
const FAIL: u16 = 4;
/// Panics.
const PANIC: u16 = 5;
/// Answers with as many bytes as the payload (u64 BE) says.
const BIG: u16 = 6;

const SECOND: Duration = Duration::from_secs(1);

struct TestHandler {
    node_id: u64,
    messages: mpsc::UnboundedSender<(PeerInfo, u16, Bytes)>,
}

fn number(payload: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&payload[..8]);
    u64::from_be_bytes(bytes)
}

impl Handler for TestHandler {
    async fn request(&self, from: PeerInfo, tag: u16, payload: Bytes) -> Result<Bytes, HandlerError> {
        match tag {
            ECHO => Ok(payload),
            WHOAMI => Ok(Bytes::from(format!("{} from {}", self.node_id, from.node_id))),
            SLEEP => {
                tokio::time::sleep(Duration::from_millis(number(&payload))).await;
                Ok(Bytes::from_static(b"slept"))
            }
            FAIL => Err("bad thing".into()),
            PANIC => panic!("handler panics on purpose"),
            BIG => Ok(Bytes::from(vec![7u8; number(&payload) as usize])),
            _ => Err(HandlerError::new(format!("unknown tag {tag}"))),
        }
    }

    fn message(&self, from: PeerInfo, tag: u16, payload: Bytes) {
        let _ = self.messages.send((from, tag, payload));
    }
}

struct Node {
    transport: Transport,
    messages: mpsc::UnboundedReceiver<(PeerInfo, u16, Bytes)>,
}

impl Node {
    fn addr(&self) -> SocketAddr {
        self.transport.local_addr()
    }
}

fn config(node_id: u64) -> Config {
    Config::new(node_id, "test", "127.0.0.1:0".parse().unwrap())
}

async fn start(config: Config) -> Node {
    let (sender, messages) = mpsc::unbounded_channel();
    let handler = TestHandler { node_id: config.node_id, messages: sender };
    let transport = Transport::bind(config, handler).await.unwrap();
    Node { transport, messages }
}

async fn node(node_id: u64) -> Node {
    start(config(node_id)).await
}

fn millis(ms: u64) -> Bytes {
    Bytes::copy_from_slice(&ms.to_be_bytes())
}

/// Runs a test body, failing it if it takes longer than `limit` instead of hanging the suite.
async fn bounded<T>(limit: Duration, body: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, body).await {
        Ok(value) => value,
        Err(_) => panic!("test did not finish within {limit:?}"),
    }
}

async fn expect_message(node: &mut Node) -> (PeerInfo, u16, Bytes) {
    bounded(5 * SECOND, node.messages.recv()).await.expect("message channel open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_exchange_requests_both_ways() {
    bounded(30 * SECOND, async {
        let nodes = [node(1).await, node(2).await, node(3).await];
        for from in &nodes {
            for to in &nodes {
                if from.transport.node_id() == to.transport.node_id() {
                    continue;
                }
                let answer = from.transport.request(to.addr(), WHOAMI, Bytes::new(), SECOND).await.unwrap();
                let expected = format!("{} from {}", to.transport.node_id(), from.transport.node_id());
                assert_eq!(answer, expected);
            }
        }
        for node in &nodes {
            let metrics = node.transport.metrics().snapshot();
            assert_eq!((metrics.connects, metrics.accepts), (2, 2), "one small-lane connection each way per pair");
            node.transport.shutdown().await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_concurrent_requests_from_sixteen_tasks_get_their_own_answers() {
    bounded(60 * SECOND, async {
        // All 2,000 are in flight at once, so the in-flight limits are raised above the
        // defaults (1,024 per connection) for this test.
        let wide = |id| Config {
            outgoing_in_flight_max: 4096,
            incoming_in_flight_max: 4096,
            queue_frames_max: 8192,
            ..config(id)
        };
        let a = start(wide(1)).await;
        let b = start(wide(2)).await;
        let mut tasks = JoinSet::new();
        for task in 0..16u64 {
            // Half the tasks send from a to b, half from b to a, at the same time.
            let (from, to) =
                if task % 2 == 0 { (a.transport.clone(), b.addr()) } else { (b.transport.clone(), a.addr()) };
            tasks.spawn(async move {
                let mut requests = JoinSet::new();
                for i in 0..125u64 {
                    let from = from.clone();
                    // A distinct payload per request, of varying length (0 to 999 bytes).
                    let mut payload = format!("task {task} request {i} ").into_bytes();
                    payload.resize(((task * 131 + i * 17) % 1000) as usize, b'.');
                    if i % 50 == 0 {
                        payload.clear();
                    }
                    let payload = Bytes::from(payload);
                    requests.spawn(async move {
                        let answer = from.request(to, ECHO, payload.clone(), 10 * SECOND).await.unwrap();
                        assert_eq!(answer, payload, "answer of another request");
                    });
                }
                while let Some(done) = requests.join_next().await {
                    done.unwrap();
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
        let metrics = a.transport.metrics().snapshot();
        println!(
            "node a: {} frames sent in {} flushes, {} received",
            metrics.messages_sent, metrics.flushes, metrics.messages_received
        );
        assert!(metrics.messages_received >= 2000, "1,000 answers and 1,000 requests (and perhaps pongs)");
        assert!(metrics.flushes <= metrics.messages_sent);
        a.transport.shutdown().await;
        b.transport.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_handler_does_not_delay_other_requests_on_the_same_connection() {
    bounded(30 * SECOND, async {
        let a = node(1).await;
        let b = node(2).await;
        let peer = b.addr();
        // Connect first, so that every request below shares one connection.
        a.transport.request(peer, ECHO, Bytes::new(), SECOND).await.unwrap();
        let slow = tokio::spawn({
            let transport = a.transport.clone();
            async move { transport.request(peer, SLEEP, millis(3000), 10 * SECOND).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = Instant::now();
        for i in 0..100u32 {
            let payload = Bytes::from(i.to_string());
            assert_eq!(a.transport.request(peer, ECHO, payload.clone(), SECOND).await.unwrap(), payload);
        }
        let fast_elapsed = started.elapsed();
        assert!(!slow.is_finished(), "the slow request should still be running");
        assert_eq!(a.transport.metrics().snapshot().connects, 1, "one connection carried everything");
        assert_eq!(slow.await.unwrap().unwrap(), "slept");
        println!("100 requests behind a 3 s handler took {fast_elapsed:?}");
        assert!(fast_elapsed < Duration::from_millis(2500));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_way_messages_arrive_in_order() {
    bounded(30 * SECOND, async {
        let a = node(1).await;
        let mut b = node(2).await;
        for i in 0..200u32 {
            a.transport.send(b.addr(), 9, Bytes::from(i.to_string())).await.unwrap();
        }
        for i in 0..200u32 {
            let (from, tag, payload) = expect_message(&mut b).await;
            assert_eq!((from.node_id, from.addr, tag), (1, a.addr(), 9));
            assert_eq!(payload, i.to_string());
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_and_multi_mebibyte_payloads_round_trip() {
    bounded(60 * SECOND, async {
        let a = node(1).await;
        let mut b = node(2).await;
        let peer = b.addr();
        assert_eq!(a.transport.request(peer, ECHO, Bytes::new(), SECOND).await.unwrap(), "");
        let big: Bytes = (0..(6u32 << 20)).map(|i| (i % 251) as u8).collect::<Vec<u8>>().into();
        let answer = a.transport.request(peer, ECHO, big.clone(), 30 * SECOND).await.unwrap();
        assert!(answer == big, "6 MiB echo differs");
        assert!(a.transport.is_connected(peer, Lane::Bulk), "a large payload travels on the bulk lane");
        // A small request whose answer is large: explicitly on the bulk lane.
        let answer = a.transport.request_on(Lane::Bulk, peer, BIG, millis(5 << 20), 30 * SECOND).await.unwrap();
        assert_eq!(answer.len(), 5 << 20);
        a.transport.send(peer, 10, Bytes::new()).await.unwrap();
        a.transport.send(peer, 11, big.clone()).await.unwrap();
        // The two travel on different lanes, so their order is not kept.
        let mut received = [expect_message(&mut b).await, expect_message(&mut b).await];
        received.sort_by_key(|(_, tag, _)| *tag);
        assert_eq!((received[0].1, received[0].2.len()), (10, 0));
        assert_eq!(received[1].1, 11);
        assert!(received[1].2 == big);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_payloads_are_refused_before_they_are_sent() {
    bounded(30 * SECOND, async {
        let a = start(Config { frame_bytes_max: 2 << 20, queue_bytes_max: 4 << 20, ..config(1) }).await;
        let b = start(Config { frame_bytes_max: 1 << 20, queue_bytes_max: 4 << 20, ..config(2) }).await;
        let peer = b.addr();
        // Over this node's own limit: refused without even dialling.
        let error = a.transport.request(peer, ECHO, Bytes::from(vec![0; (2 << 20) + 1]), SECOND).await.unwrap_err();
        assert_eq!(error, Error::FrameTooLarge { peer, size: (2 << 20) + 1, limit: 2 << 20 });
        assert_eq!(a.transport.metrics().snapshot().connects, 0);
        // Within this node's limit but over the peer's, announced in its handshake.
        let error = a.transport.request(peer, ECHO, Bytes::from(vec![0; (1 << 20) + 1]), SECOND).await.unwrap_err();
        assert_eq!(error, Error::FrameTooLarge { peer, size: (1 << 20) + 1, limit: 1 << 20 });
        assert_eq!(
            error.to_string(),
            format!("payload of 1048577 bytes exceeds the frame limit of 1048576 bytes toward peer {peer}")
        );
        // An answer over the requester's limit (b's, 1 MiB) becomes an error answer.
        let error = b.transport.request(a.addr(), BIG, millis((1 << 20) + 1), 5 * SECOND).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "peer {} answered with an error: answer to tag 6 of 1048577 bytes exceeds the requester's \
                 frame limit of 1048576 bytes",
                a.addr()
            )
        );
        // Exactly at the limit is fine, and the connections are unharmed.
        let exact = Bytes::from(vec![1; 1 << 20]);
        assert_eq!(a.transport.request(peer, ECHO, exact.clone(), 5 * SECOND).await.unwrap(), exact);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_errors_and_panics_reach_the_requester() {
    bounded(30 * SECOND, async {
        let a = node(1).await;
        let b = node(2).await;
        let peer = b.addr();
        let error = a.transport.request(peer, FAIL, Bytes::new(), SECOND).await.unwrap_err();
        assert_eq!(error, Error::Remote { peer, message: "bad thing".into() });
        assert!(!error.outcome_unknown());
        let error = a.transport.request(peer, PANIC, Bytes::new(), SECOND).await.unwrap_err();
        assert_eq!(error, Error::Remote { peer, message: "handler for tag 5 panicked or was cancelled".into() });
        // The connection survives both.
        assert_eq!(a.transport.request(peer, ECHO, Bytes::from("ok"), SECOND).await.unwrap(), "ok");
        assert_eq!(a.transport.metrics().snapshot().connects, 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_of_different_clusters_refuse_each_other_on_both_sides() {
    bounded(30 * SECOND, async {
        // A long back-off, so that the second call below runs within it.
        let a = start(Config {
            backoff_initial: 10 * SECOND,
            backoff_max: 10 * SECOND,
            ..Config::new(1, "alpha", "127.0.0.1:0".parse().unwrap())
        })
        .await;
        let b = start(Config::new(2, "beta", "127.0.0.1:0".parse().unwrap())).await;
        let peer = b.addr();
        let error = a.transport.request(peer, ECHO, Bytes::new(), SECOND).await.unwrap_err();
        let expected = format!("peer {peer} belongs to cluster \"beta\", this node to cluster \"alpha\"");
        assert_eq!(error, Error::Refused { peer, reason: expected.clone() });
        assert_eq!(error.to_string(), expected);
        // The back-off remembers the refusal instead of dialling again at once.
        let again = a.transport.request(peer, ECHO, Bytes::new(), SECOND).await.unwrap_err();
        assert_eq!(again, error);
        assert_eq!(a.transport.metrics().snapshot().connect_failures, 1);
        // The accepting side refused too.
        wait_until(|| b.transport.metrics().snapshot().handshake_failures == 1).await;
        assert_eq!(b.transport.metrics().snapshot().accepts, 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_claiming_the_same_id_is_refused() {
    bounded(30 * SECOND, async {
        let a = node(7).await;
        let b = node(7).await;
        let peer = b.addr();
        let error = a.transport.request(peer, ECHO, Bytes::new(), SECOND).await.unwrap_err();
        assert_eq!(
            error,
            Error::Refused { peer, reason: format!("peer {peer} claims node id 7, which is this node's own id") }
        );
    })
    .await;
}

fn hello_bytes(node_id: u64, cluster: &str, listen: SocketAddr) -> Vec<u8> {
    Hello { node_id, cluster: cluster.into(), listen, frame_bytes_max: 1 << 20 }.encode()
}

/// A greeting announcing protocol version 2 (the same body; a version-2 node may lay it out
/// differently, which is why nobody reads past the version).
fn version_2_hello(listen: SocketAddr) -> Vec<u8> {
    let mut hello = hello_bytes(99, "test", listen);
    hello[8..10].copy_from_slice(&2u16.to_be_bytes());
    hello
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_of_another_protocol_version_is_refused_on_both_sides() {
    bounded(30 * SECOND, async {
        assert_eq!(PROTOCOL_VERSION, 1);
        // This node dials a "version 2" peer.
        let fake = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fake_addr = fake.local_addr().unwrap();
        let fake_peer = tokio::spawn(async move {
            let (mut socket, _) = fake.accept().await.unwrap();
            socket.write_all(&version_2_hello(fake_addr)).await.unwrap();
            let mut prefix = [0u8; HELLO_PREFIX_LEN];
            socket.read_exact(&mut prefix).await.unwrap();
            Hello::decode_prefix(&prefix).unwrap()
        });
        let a = node(1).await;
        let error = a.transport.request(fake_addr, ECHO, Bytes::new(), SECOND).await.unwrap_err();
        assert_eq!(error.to_string(), format!("peer {fake_addr} speaks onggi cluster protocol 2, this node speaks 1"));
        assert!(matches!(error, Error::Refused { .. }));
        // It had sent its own greeting, so the other side can say the same.
        let (version, _) = fake_peer.await.unwrap();
        assert_eq!(version, 1);

        // A "version 2" peer dials this node: it receives this node's version and is closed.
        let mut socket = TcpStream::connect(a.addr()).await.unwrap();
        socket.write_all(&version_2_hello("127.0.0.1:1".parse().unwrap())).await.unwrap();
        let mut prefix = [0u8; HELLO_PREFIX_LEN];
        socket.read_exact(&mut prefix).await.unwrap();
        assert_eq!(Hello::decode_prefix(&prefix).unwrap().0, 1);
        assert_closed(&mut socket).await;
        assert_eq!(a.transport.metrics().snapshot().handshake_failures, 2);
        assert_eq!(a.transport.metrics().snapshot().accepts, 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_peer_is_reconnected_automatically() {
    bounded(30 * SECOND, async {
        let a = node(1).await;
        let b = node(2).await;
        let peer = b.addr();
        assert_eq!(a.transport.request(peer, WHOAMI, Bytes::new(), SECOND).await.unwrap(), "2 from 1");
        b.transport.shutdown().await;
        drop(b);
        // The old connection is gone (closed by the peer) and nothing listens.
        let error = a.transport.request(peer, WHOAMI, Bytes::new(), SECOND).await.unwrap_err();
        assert!(matches!(error, Error::Unreachable { .. } | Error::ConnectionClosed { .. }), "unexpected {error:?}");
        // The peer comes back on the same address, as another incarnation (node id 3 here, so
        // the answer shows which one answered).
        let b = start(Config { listen: peer, ..config(3) }).await;
        assert_eq!(b.addr(), peer);
        let started = Instant::now();
        let answer = loop {
            match a.transport.request(peer, WHOAMI, Bytes::new(), SECOND).await {
                Ok(answer) => break answer,
                Err(Error::Unreachable { .. } | Error::ConnectionClosed { .. }) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(other) => panic!("unexpected {other:?}"),
            }
        };
        assert_eq!(answer, "3 from 1");
        println!("reconnected {:?} after the restart", started.elapsed());
        assert!(a.transport.metrics().snapshot().connects >= 2);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_to_a_dead_address_fail_fast_as_unreachable() {
    bounded(30 * SECOND, async {
        let dead = {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            listener.local_addr().unwrap()
        };
        let a = start(Config { backoff_initial: 10 * SECOND, backoff_max: 10 * SECOND, ..config(1) }).await;
        let started = Instant::now();
        let error = a.transport.request(dead, ECHO, Bytes::new(), 10 * SECOND).await.unwrap_err();
        assert!(matches!(&error, Error::Unreachable { peer, .. } if *peer == dead), "{error:?}");
        assert!(error.to_string().starts_with(&format!("peer {dead} is unreachable: ")), "{error}");
        assert!(!error.outcome_unknown());
        // During the back-off the failure is immediate, and says when the next attempt is.
        let error = a.transport.request(dead, ECHO, Bytes::new(), 10 * SECOND).await.unwrap_err();
        assert!(error.to_string().contains("next attempt in"), "{error}");
        let error = a.transport.send(dead, 1, Bytes::new()).await.unwrap_err();
        assert!(matches!(error, Error::Unreachable { .. }));
        let elapsed = started.elapsed();
        println!("three calls to a dead address failed in {elapsed:?}");
        assert!(elapsed < 2 * SECOND);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impatient_callers_share_one_connection_attempt_and_its_back_off() {
    bounded(30 * SECOND, async {
        // A peer that accepts but never greets: every attempt ends in the handshake timeout.
        let mute = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mute_addr = mute.local_addr().unwrap();
        let (accepted_sender, mut accepted) = mpsc::unbounded_channel();
        let mute_peer = tokio::spawn(async move {
            let mut sockets = Vec::new();
            loop {
                let (socket, _) = mute.accept().await.unwrap();
                sockets.push(socket);
                let _ = accepted_sender.send(());
            }
        });
        // A long back-off, so that the check below runs within it.
        let a = start(Config {
            handshake_timeout: Duration::from_millis(500),
            backoff_initial: 10 * SECOND,
            backoff_max: 10 * SECOND,
            ..config(1)
        })
        .await;
        let short = Duration::from_millis(50);
        for _ in 0..5 {
            let error = a.transport.request(mute_addr, ECHO, Bytes::new(), short).await.unwrap_err();
            assert_eq!(error, Error::Timeout { peer: mute_addr, timeout: short });
        }
        // The attempt outlived its callers, failed on its own timeout, and set a back-off.
        wait_until(|| a.transport.metrics().snapshot().connect_failures == 1).await;
        let error = a.transport.request(mute_addr, ECHO, Bytes::new(), SECOND).await.unwrap_err();
        assert!(error.to_string().contains("handshake timed out after 500ms (next attempt in"), "{error}");
        assert_eq!(accepted.recv().await, Some(()));
        assert!(accepted.try_recv().is_err(), "one connection attempt, not one per caller");
        mute_peer.abort();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_fire_and_late_answers_are_dropped() {
    bounded(30 * SECOND, async {
        let a = node(1).await;
        let b = node(2).await;
        let peer = b.addr();
        let started = Instant::now();
        let timeout = Duration::from_millis(100);
        let error = a.transport.request(peer, SLEEP, millis(500), timeout).await.unwrap_err();
        let elapsed = started.elapsed();
        assert_eq!(error, Error::Timeout { peer, timeout });
        assert!(error.outcome_unknown());
        assert!(elapsed >= timeout && elapsed < SECOND, "{elapsed:?}");
        assert_eq!(a.transport.metrics().snapshot().request_timeouts, 1);
        // The answer comes after the caller gave up; it is counted and dropped.
        wait_until(|| a.transport.metrics().snapshot().late_answers == 1).await;
        assert_eq!(a.transport.request(peer, ECHO, Bytes::from("after"), SECOND).await.unwrap(), "after");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_blocked_switch_drops_traffic_both_ways_until_unblocked() {
    bounded(30 * SECOND, async {
        let mut a = node(1).await;
        let mut b = node(2).await;
        let short = Duration::from_millis(200);
        // Connections both ways exist before the cut.
        assert_eq!(a.transport.request(b.addr(), WHOAMI, Bytes::new(), SECOND).await.unwrap(), "2 from 1");
        assert_eq!(b.transport.request(a.addr(), WHOAMI, Bytes::new(), SECOND).await.unwrap(), "1 from 2");

        // Only a blocks b; traffic stops in both directions.
        a.transport.faults().block(b.addr());
        let error = a.transport.request(b.addr(), ECHO, Bytes::new(), short).await.unwrap_err();
        assert!(matches!(error, Error::Timeout { .. }), "{error:?}");
        let error = b.transport.request(a.addr(), ECHO, Bytes::new(), short).await.unwrap_err();
        assert!(matches!(error, Error::Timeout { .. }), "{error:?}");
        a.transport.send(b.addr(), 20, Bytes::from("lost a->b")).await.unwrap();
        b.transport.send(a.addr(), 21, Bytes::from("lost b->a")).await.unwrap();
        tokio::time::sleep(short).await;
        assert!(a.messages.try_recv().is_err());
        assert!(b.messages.try_recv().is_err());
        assert!(a.transport.metrics().snapshot().blocked_drops >= 3);

        a.transport.faults().unblock(b.addr());
        assert_eq!(a.transport.request(b.addr(), WHOAMI, Bytes::new(), SECOND).await.unwrap(), "2 from 1");
        assert_eq!(b.transport.request(a.addr(), WHOAMI, Bytes::new(), SECOND).await.unwrap(), "1 from 2");
        a.transport.send(b.addr(), 22, Bytes::from("found")).await.unwrap();
        let (_, tag, payload) = expect_message(&mut b).await;
        assert_eq!((tag, payload), (22, Bytes::from("found")));
        b.transport.send(a.addr(), 23, Bytes::from("found")).await.unwrap();
        assert_eq!(expect_message(&mut a).await.1, 23);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_delay_switch_holds_frames_back() {
    bounded(30 * SECOND, async {
        let a = node(1).await;
        let b = node(2).await;
        let peer = b.addr();
        a.transport.request(peer, ECHO, Bytes::new(), SECOND).await.unwrap();
        a.transport.faults().set_delay(peer, Duration::from_millis(150));
        let started = Instant::now();
        a.transport.request(peer, ECHO, Bytes::new(), SECOND).await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(150), "{:?}", started.elapsed());
        a.transport.faults().clear();
        let started = Instant::now();
        a.transport.request(peer, ECHO, Bytes::new(), SECOND).await.unwrap();
        println!("round trip without the delay: {:?}", started.elapsed());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_limits_fail_fast_on_both_sides() {
    bounded(30 * SECOND, async {
        let a = start(Config { outgoing_in_flight_max: 3, ..config(1) }).await;
        let b = start(Config { incoming_in_flight_max: 2, ..config(3) }).await;
        let c = node(2).await;
        // The receiver runs at most two handlers for one connection; the third is refused.
        let mut slow = JoinSet::new();
        for _ in 0..2 {
            let transport = c.transport.clone();
            let peer = b.addr();
            slow.spawn(async move { transport.request(peer, SLEEP, millis(1000), 5 * SECOND).await });
        }
        // Both are on the wire (the connection keeps their order) before the third is sent.
        wait_until(|| c.transport.metrics().snapshot().messages_sent >= 2).await;
        let error = c.transport.request(b.addr(), ECHO, Bytes::new(), SECOND).await.unwrap_err();
        assert_eq!(error, Error::Overloaded { peer: b.addr() });
        assert!(!error.outcome_unknown());
        assert_eq!(b.transport.metrics().snapshot().overloaded_replies, 1);
        while let Some(done) = slow.join_next().await {
            assert_eq!(done.unwrap().unwrap(), "slept");
        }
        // The sender keeps at most three requests waiting on one connection.
        let mut waiting = JoinSet::new();
        for _ in 0..3 {
            let transport = a.transport.clone();
            let peer = c.addr();
            waiting.spawn(async move { transport.request(peer, SLEEP, millis(1000), 5 * SECOND).await });
        }
        wait_until(|| a.transport.metrics().snapshot().messages_sent >= 3).await;
        let error = a.transport.request(c.addr(), ECHO, Bytes::new(), SECOND).await.unwrap_err();
        assert_eq!(error, Error::TooManyInFlight { peer: c.addr(), limit: 3 });
        while let Some(done) = waiting.join_next().await {
            assert_eq!(done.unwrap().unwrap(), "slept");
        }
        assert_eq!(a.transport.request(c.addr(), ECHO, Bytes::from("x"), SECOND).await.unwrap(), "x");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_outgoing_queue_fails_fast() {
    bounded(30 * SECOND, async {
        let a = start(Config { queue_frames_max: 4, incoming_in_flight_max: 2, ..config(1) }).await;
        let b = node(2).await;
        let peer = b.addr();
        a.transport.send(peer, 1, Bytes::new()).await.unwrap();
        // The writer holds each frame for a second, so the queue fills up.
        a.transport.faults().set_delay(peer, SECOND);
        let mut outcomes = Vec::new();
        for _ in 0..10 {
            outcomes.push(a.transport.send(peer, 1, Bytes::new()).await);
        }
        let full = outcomes.iter().filter(|outcome| matches!(outcome, Err(Error::QueueFull { .. }))).count();
        assert!(full >= 5, "{outcomes:?}");
        assert!(outcomes.iter().all(|outcome| matches!(outcome, Ok(()) | Err(Error::QueueFull { .. }))));
        assert_eq!(
            outcomes.iter().find_map(|outcome| outcome.clone().err()).unwrap().to_string(),
            format!("outgoing queue to peer {peer} is full (4 frames)")
        );
        assert_eq!(a.transport.metrics().snapshot().queue_full_drops, full as u64);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_close_and_reopen_on_demand() {
    bounded(30 * SECOND, async {
        let a = start(Config { idle_timeout: Duration::from_millis(200), ..config(1) }).await;
        let b = node(2).await;
        let peer = b.addr();
        a.transport.request(peer, ECHO, Bytes::new(), SECOND).await.unwrap();
        assert!(a.transport.is_connected(peer, Lane::Small));
        wait_until(|| !a.transport.is_connected(peer, Lane::Small)).await;
        assert_eq!(a.transport.request(peer, ECHO, Bytes::from("again"), SECOND).await.unwrap(), "again");
        assert_eq!(a.transport.metrics().snapshot().connects, 2);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_is_detected_by_pings_but_a_slow_handler_is_not_mistaken_for_one() {
    bounded(30 * SECOND, async {
        let quick = |id| Config {
            ping_interval: Duration::from_millis(100),
            dead_after: Duration::from_millis(500),
            ..config(id)
        };
        let a = start(quick(1)).await;
        // A slow handler: pings are answered meanwhile, so the connection stays.
        let b = node(2).await;
        assert_eq!(a.transport.request(b.addr(), SLEEP, millis(1200), 5 * SECOND).await.unwrap(), "slept");
        assert_eq!(a.transport.metrics().snapshot().connects, 1);

        // A peer that handshakes and then never sends another byte (its host froze).
        let frozen = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let frozen_addr = frozen.local_addr().unwrap();
        let frozen_peer = tokio::spawn(async move {
            loop {
                let (mut socket, _) = frozen.accept().await.unwrap();
                tokio::spawn(async move {
                    socket.write_all(&hello_bytes(50, "test", frozen_addr)).await.unwrap();
                    let mut sink = vec![0u8; 4096];
                    while socket.read(&mut sink).await.is_ok_and(|n| n > 0) {}
                });
            }
        });
        let started = Instant::now();
        let error = a.transport.request(frozen_addr, ECHO, Bytes::new(), 10 * SECOND).await.unwrap_err();
        assert_eq!(error, Error::ConnectionClosed { peer: frozen_addr });
        println!("silent peer detected after {:?}", started.elapsed());
        assert!(started.elapsed() < 3 * SECOND);
        // One-way messages expect no answer, but a live peer answers the pings they lead to.
        a.transport.send(frozen_addr, 1, Bytes::from("anyone?")).await.unwrap();
        assert!(a.transport.is_connected(frozen_addr, Lane::Small));
        wait_until(|| !a.transport.is_connected(frozen_addr, Lane::Small)).await;
        assert_eq!(a.transport.metrics().snapshot().connects, 3);
        frozen_peer.abort();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_fails_waiting_and_later_calls() {
    bounded(30 * SECOND, async {
        let a = node(1).await;
        let b = node(2).await;
        let waiting = tokio::spawn({
            let transport = a.transport.clone();
            let peer = b.addr();
            async move { transport.request(peer, SLEEP, millis(5000), 10 * SECOND).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        a.transport.shutdown().await;
        assert_eq!(waiting.await.unwrap(), Err(Error::ConnectionClosed { peer: b.addr() }));
        assert_eq!(a.transport.request(b.addr(), ECHO, Bytes::new(), SECOND).await, Err(Error::Shutdown));
        assert_eq!(a.transport.send(b.addr(), 1, Bytes::new()).await, Err(Error::Shutdown));
        // The address is free again.
        TcpListener::bind(a.addr()).await.unwrap();
    })
    .await;
}

/// Waits until the peer closes `socket` (reads end or fail), within five seconds.
async fn assert_closed(socket: &mut TcpStream) {
    let mut sink = vec![0u8; 64 << 10];
    bounded(5 * SECOND, async { while socket.read(&mut sink).await.is_ok_and(|n| n > 0) {} }).await;
}

/// Polls `condition` every 10 ms for up to five seconds.
async fn wait_until(condition: impl Fn() -> bool) {
    bounded(5 * SECOND, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

fn header(payload_len: u32, kind: FrameKind, request_id: u64) -> [u8; FRAME_HEADER_LEN] {
    FrameHeader { payload_len, kind, tag: ECHO, request_id }.encode()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_truncated_and_huge_frames_close_only_their_connection() {
    bounded(60 * SECOND, async {
        let a = node(1).await;
        let b = node(2).await;
        let target = b.addr();
        let me: SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert_eq!(a.transport.request(target, ECHO, Bytes::from("before"), SECOND).await.unwrap(), "before");

        let mut huge_length = header(0, FrameKind::Request, 1);
        huge_length[0..4].copy_from_slice(&u32::MAX.to_be_bytes());
        let mut unknown_kind = header(0, FrameKind::Request, 1);
        unknown_kind[4] = 0;
        let mut flags = header(0, FrameKind::Request, 1);
        flags[5] = 0x80;
        let mut huge_hello = hello_bytes(60, "test", me);
        huge_hello[10..12].copy_from_slice(&u16::MAX.to_be_bytes());
        let mut truncated_hello = hello_bytes(60, "test", me);
        truncated_hello.truncate(HELLO_PREFIX_LEN + 5);
        let mut truncated_frame = header(100, FrameKind::Request, 1).to_vec();
        truncated_frame.extend_from_slice(&[1; 40]);

        // (what to send after connecting, whether to greet first, whether the server must close)
        let cases: Vec<(&str, bool, Vec<u8>)> = vec![
            ("HTTP instead of a greeting", false, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
            ("random bytes instead of a greeting", false, (0..200u32).map(|i| (i * 7919 % 256) as u8).collect()),
            ("a greeting with a 64 KiB body length", false, huge_hello),
            ("a truncated greeting", false, truncated_hello),
            ("a frame claiming 4 GiB", true, huge_length.to_vec()),
            ("a frame of unknown kind", true, unknown_kind.to_vec()),
            ("a frame with unknown flags", true, flags.to_vec()),
            ("a response sent to the accepting side", true, header(0, FrameKind::Response, 1).to_vec()),
            ("a truncated frame", true, truncated_frame),
            ("random bytes after the greeting", true, (0..5000u32).map(|i| (i * 31 % 256) as u8).collect()),
        ];
        for (what, greet, bytes) in cases {
            let mut socket = TcpStream::connect(target).await.unwrap();
            if greet {
                socket.write_all(&hello_bytes(60, "test", me)).await.unwrap();
            }
            socket.write_all(&bytes).await.unwrap();
            // Half-close: a truncated message stays truncated.
            socket.shutdown().await.unwrap();
            println!("sent {what}");
            assert_closed(&mut socket).await;
            // Every other connection is unaffected.
            let answer = a.transport.request(target, ECHO, Bytes::from(what), SECOND).await.unwrap();
            assert_eq!(answer, what);
        }
        // A client that connects and says nothing is dropped after the handshake timeout;
        // meanwhile the listener keeps serving.
        let mut silent = TcpStream::connect(target).await.unwrap();
        assert_eq!(a.transport.request(target, ECHO, Bytes::from("still"), SECOND).await.unwrap(), "still");
        assert_closed(&mut silent).await;

        // A well-formed request from a raw client is answered, after all that.
        let mut socket = TcpStream::connect(target).await.unwrap();
        socket.write_all(&hello_bytes(60, "test", me)).await.unwrap();
        socket.write_all(&header(3, FrameKind::Request, 42)).await.unwrap();
        socket.write_all(b"raw").await.unwrap();
        let mut greeting = vec![0u8; hello_bytes(2, "test", target).len()];
        socket.read_exact(&mut greeting).await.unwrap();
        let mut answer = [0u8; FRAME_HEADER_LEN + 3];
        socket.read_exact(&mut answer).await.unwrap();
        let answer_header = FrameHeader::decode(answer[..FRAME_HEADER_LEN].try_into().unwrap(), 1 << 20).unwrap();
        assert_eq!(answer_header, FrameHeader { payload_len: 3, kind: FrameKind::Response, tag: ECHO, request_id: 42 });
        assert_eq!(&answer[FRAME_HEADER_LEN..], b"raw");

        let metrics = b.transport.metrics().snapshot();
        println!("{metrics:?}");
        assert_eq!(metrics.protocol_errors, 6, "six frame-level violations");
        assert_eq!(metrics.handshake_failures, 5, "four bad greetings and a silent client");
        assert_eq!(b.transport.metrics().accepts.load(Ordering::Relaxed), 8);
    })
    .await;
}

/// Informational: request round trips per second over loopback, one peer, 64 requests in flight.
/// No timing is asserted (debug build, shared machine).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throughput_of_64_concurrent_requests_to_one_peer() {
    bounded(120 * SECOND, async {
        let a = node(1).await;
        let b = node(2).await;
        let peer = b.addr();
        a.transport.request(peer, ECHO, Bytes::new(), SECOND).await.unwrap();
        let sequential = 2000;
        let started = Instant::now();
        for _ in 0..sequential {
            a.transport.request(peer, ECHO, Bytes::from_static(&[0; 100]), SECOND).await.unwrap();
        }
        println!("latency: one request at a time, {:?} per round trip", started.elapsed() / sequential);
        let before = a.transport.metrics().snapshot();
        let per_worker = 1500;
        let workers = 64;
        let started = Instant::now();
        let mut tasks = JoinSet::new();
        for _ in 0..workers {
            let transport = a.transport.clone();
            tasks.spawn(async move {
                let payload = Bytes::from(vec![0u8; 100]);
                for _ in 0..per_worker {
                    transport.request(peer, ECHO, payload.clone(), 10 * SECOND).await.unwrap();
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
        let elapsed = started.elapsed();
        let total = workers * per_worker;
        let metrics = a.transport.metrics().snapshot();
        println!(
            "throughput: {total} round trips of 100 B in {elapsed:?} = {:.0} requests/s; {:.1} frames per flush",
            total as f64 / elapsed.as_secs_f64(),
            (metrics.messages_sent - before.messages_sent) as f64 / (metrics.flushes - before.flushes).max(1) as f64
        );
    })
    .await;
}

//! A fault-injecting TCP proxy for links between cluster nodes.
//!
//! A node listens on its real cluster address, and every member is told (by `--members`) that it
//! is at its proxy's address instead, so every connection *to* a node passes through its proxy.
//! Cutting the proxy stalls those connections where they are — nothing is lost, nothing arrives,
//! as in a network partition that TCP rides out — and new ones are accepted but stall too; the
//! node's own connections to the others are untouched. So a cut node cannot be reached, but can
//! still reach the others and hear their answers: an asymmetric partition. Healing lets the held
//! bytes through, in order.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A proxy in front of one node's cluster address, running until dropped.
pub(crate) struct LinkProxy {
    /// Where the members connect (the node's address in `--members`).
    pub(crate) listen: SocketAddr,
    cut: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl LinkProxy {
    /// Starts a proxy on a free loopback port, forwarding to `target`.
    pub(crate) async fn start(target: SocketAddr) -> LinkProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let listen = listener.local_addr().expect("proxy address");
        let (cut, watching) = watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else { return };
                let watching = watching.clone();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(target).await else { return };
                    let (inbound_read, inbound_write) = inbound.into_split();
                    let (outbound_read, outbound_write) = outbound.into_split();
                    tokio::join!(
                        pump(inbound_read, outbound_write, watching.clone()),
                        pump(outbound_read, inbound_write, watching),
                    );
                });
            }
        });
        LinkProxy { listen, cut, task }
    }

    /// Stalls every connection through the proxy, both ways, until [`LinkProxy::heal`].
    pub(crate) fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Lets the held bytes, and all that follow, through again.
    pub(crate) fn heal(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies `from` to `to`, holding each chunk while the link is cut.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut cut: watch::Receiver<bool>,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        if cut.wait_for(|cut| !*cut).await.is_err() {
            break;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

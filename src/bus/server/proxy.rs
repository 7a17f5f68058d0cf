//! A TCP proxy for link faults: it listens on a free loopback port and joins every connection
//! to one upstream address, copying both ways. [`TcpProxy::cut`] is a WAN link going down:
//! every live connection is dropped and new ones are closed as soon as they are accepted,
//! until [`TcpProxy::restore`]. Killing a server is a different fault; this one leaves both
//! ends running.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Whether the link is up, and how many times it was cut (a connection made before a cut
/// ends when the count moves past the one it started under).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Link {
    up: bool,
    cuts: u64,
}

pub struct TcpProxy {
    addr: SocketAddr,
    link: watch::Sender<Link>,
    accepted: Arc<AtomicU64>,
    listener: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Starts a proxy to `upstream` on a free loopback port, link up. Call inside a tokio
    /// runtime; the proxy and every connection it holds end when it is dropped.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<TcpProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (link, watching) = watch::channel(Link { up: true, cuts: 0 });
        let accepted = Arc::new(AtomicU64::new(0));
        let counted = accepted.clone();
        let listener = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    // Out of descriptors, say: try again shortly rather than spin.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                };
                let now = *watching.borrow();
                if !now.up {
                    // Refused: closed at once, nothing forwarded.
                    drop(client);
                    continue;
                }
                counted.fetch_add(1, Relaxed);
                tokio::spawn(forward(client, upstream, watching.clone(), now.cuts));
            }
        });
        Ok(TcpProxy {
            addr,
            link,
            accepted,
            listener,
        })
    }

    /// Where clients connect instead of the upstream.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops every live connection and refuses new ones until [`TcpProxy::restore`].
    pub fn cut(&self) {
        self.link.send_modify(|l| {
            l.up = false;
            l.cuts += 1;
        });
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.link.send_modify(|l| l.up = true);
    }

    pub fn is_up(&self) -> bool {
        self.link.borrow().up
    }

    /// Connections let through so far (refused ones not counted).
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Relaxed)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.listener.abort();
        // Ends every forwarding task: their watch receivers see the sender gone.
        self.cut();
    }
}

/// Copies between `client` and a new connection to `upstream` until either side closes or
/// the link is cut after `cuts`. `copy_bidirectional` uses a fixed buffer each way, so a peer
/// cannot make this allocate by sending more.
async fn forward(
    mut client: TcpStream,
    upstream: SocketAddr,
    mut link: watch::Receiver<Link>,
    cuts: u64,
) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        _ = link.wait_for(|l| l.cuts != cuts) => {}
    }
    // Both sockets drop here: each peer sees its connection end.
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An upstream that echoes whatever it reads.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = sock.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn round_trip(sock: &mut TcpStream, text: &[u8]) -> std::io::Result<Vec<u8>> {
        sock.write_all(text).await?;
        let mut got = vec![0u8; text.len()];
        tokio::time::timeout(std::time::Duration::from_secs(2), sock.read_exact(&mut got))
            .await
            .map_err(|_| std::io::Error::other("no answer"))??;
        Ok(got)
    }

    /// Whether the peer closed `sock` (end of file or reset) within a second.
    async fn closed(sock: &mut TcpStream) -> bool {
        let mut buf = [0u8; 16];
        matches!(
            tokio::time::timeout(std::time::Duration::from_secs(1), sock.read(&mut buf)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    #[tokio::test]
    async fn a_cut_drops_live_connections_and_refuses_new_ones_until_restored() {
        let proxy = TcpProxy::start(echo().await).await.unwrap();
        let mut live = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut live, b"hello").await.unwrap(), b"hello");

        proxy.cut();
        assert!(!proxy.is_up());
        assert!(closed(&mut live).await, "the live connection was dropped");
        let mut refused = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(
            closed(&mut refused).await,
            "a new connection is closed at once"
        );
        assert_eq!(proxy.accepted(), 1);

        proxy.restore();
        let mut again = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut again, b"back").await.unwrap(), b"back");
        assert_eq!(proxy.accepted(), 2);

        drop(proxy);
        assert!(
            closed(&mut again).await,
            "dropping the proxy ends its connections"
        );
    }
}

//! The HTTPS listener for client configuration: TLS handshakes run in their own tasks (a slow
//! client stalls nobody), bounded in number and time, and the finished streams are handed to
//! axum through a channel. Each stream holds a permit, so open connections are bounded too.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use axum::Router;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Most HTTPS connections open at once (handshaking or served).
const MAX_CONNECTIONS: usize = 1024;
/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A served TLS stream and its place among the [`MAX_CONNECTIONS`].
pub struct Conn {
    tls: TlsStream<TcpStream>,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tls).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tls).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tls).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tls).poll_shutdown(cx)
    }
}

/// What axum accepts from: streams whose handshake is done.
struct Handshaken {
    ready: mpsc::Receiver<(Conn, SocketAddr)>,
    local: SocketAddr,
}

impl axum::serve::Listener for Handshaken {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Conn, SocketAddr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept loop is gone (shutdown): nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// Accepts on `listener`, runs each handshake in its own task and passes the stream on.
async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(Conn, SocketAddr)>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (tcp, peer) = match listener.accept().await {
            Ok(pair) => pair,
            Err(err) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!(%err, "https accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (acceptor, ready) = (acceptor.clone(), ready.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    let conn = Conn {
                        tls,
                        _permit: permit,
                    };
                    let _ = ready.send((conn, peer)).await;
                }
                Ok(Err(err)) => tracing::debug!(%err, %peer, "https handshake failed"),
                Err(_) => tracing::debug!(%peer, "https handshake timed out"),
            }
        });
    }
}

/// Serves `router` over TLS on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
) {
    let local = match listener.local_addr() {
        Ok(local) => local,
        Err(err) => {
            tracing::warn!(%err, "https listener has no address");
            return;
        }
    };
    let (tx, rx) = mpsc::channel(64);
    let accepting = tokio::spawn(accept_loop(listener, acceptor, tx));
    let stop = async move {
        let _ = shutdown.wait_for(|stopping| *stopping).await;
    };
    let handshaken = Handshaken { ready: rx, local };
    if let Err(err) = axum::serve(handshaken, router)
        .with_graceful_shutdown(stop)
        .await
    {
        tracing::warn!(%err, "HTTPS listener stopped");
    }
    accepting.abort();
    tracing::info!(protocol = "https", "listener stopping");
}

//! The HTTPS listener for client configuration: TLS handshakes run in their own tasks (a slow
//! client stalls nobody), bounded in number and time, and the finished streams are handed to
//! axum through a channel. Each stream holds a permit, so open connections are bounded too,
//! and lives at most [`Limits::lifetime`] (axum sets no header timeout; these requests are one
//! short exchange).

use std::future::Future;
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

/// How long a connection may take.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// A client that has not finished its handshake by then is dropped.
    pub handshake: Duration,
    /// A connection is closed this long after it was accepted, busy or not.
    pub lifetime: Duration,
}

pub const LIMITS: Limits = Limits {
    handshake: Duration::from_secs(10),
    lifetime: Duration::from_secs(60),
};

/// A served TLS stream, its place among the [`MAX_CONNECTIONS`] and its end.
pub struct Conn {
    tls: TlsStream<TcpStream>,
    _permit: OwnedSemaphorePermit,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl Conn {
    /// An error once the lifetime is over (polling also wakes an idle reader then).
    fn expired(&mut self, cx: &mut TaskContext<'_>) -> Option<io::Error> {
        self.deadline
            .as_mut()
            .poll(cx)
            .is_ready()
            .then(|| io::Error::new(io::ErrorKind::TimedOut, "https connection lifetime over"))
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(err) = self.expired(cx) {
            return Poll::Ready(Err(err));
        }
        Pin::new(&mut self.tls).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(err) = self.expired(cx) {
            return Poll::Ready(Err(err));
        }
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
    limits: Limits,
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
        let deadline = Box::pin(tokio::time::sleep(limits.lifetime));
        tokio::spawn(async move {
            match tokio::time::timeout(limits.handshake, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    let conn = Conn {
                        tls,
                        _permit: permit,
                        deadline,
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
    shutdown: watch::Receiver<bool>,
) {
    serve_with(listener, acceptor, router, shutdown, LIMITS).await
}

/// [`serve`] with other time limits.
pub async fn serve_with(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
    limits: Limits,
) {
    let local = match listener.local_addr() {
        Ok(local) => local,
        Err(err) => {
            tracing::warn!(%err, "https listener has no address");
            return;
        }
    };
    let (tx, rx) = mpsc::channel(64);
    let accepting = tokio::spawn(accept_loop(listener, acceptor, tx, limits));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::{Certificates, Versions};

    /// A client that never handshakes, and one that makes a request and then idles, are both
    /// closed by the server within the limits (Python's ssl as the client).
    #[tokio::test]
    async fn silent_and_idle_clients_are_closed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (certs, _) =
            Certificates::self_signed(dir.path(), &["localhost".to_string()]).expect("cert");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (_stop, stopping) = watch::channel(false);
        let router = Router::new().route("/", axum::routing::get(|| async { "hi" }));
        let limits = Limits {
            handshake: Duration::from_millis(300),
            lifetime: Duration::from_millis(600),
        };
        tokio::spawn(serve_with(
            listener,
            certs.acceptor(Versions::Tls12And13),
            router,
            stopping,
            limits,
        ));
        let ca = dir.path().join("tls.crt");
        let script = r#"
import socket, ssl, sys, time
port, ca = int(sys.argv[1]), sys.argv[2]
s = socket.create_connection(("127.0.0.1", port)); s.settimeout(10)
start = time.time()
assert s.recv(1) == b""
silent = time.time() - start
ctx = ssl.create_default_context(cafile=ca)
t = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost")
t.settimeout(10)
t.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
answer = t.recv(4096)
assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"hi"), answer
start = time.time()
try:
    rest = t.recv(1)
except (ssl.SSLError, OSError):
    rest = b""
assert rest == b"", rest
print(f"{silent:.2f} {time.time() - start:.2f}")
"#;
        let out = tokio::process::Command::new("python3")
            .args(["-c", script, &port.to_string()])
            .arg(&ca)
            .output()
            .await
            .expect("python3");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let waits: Vec<f64> = text
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        assert_eq!(waits.len(), 2, "{text}");
        assert!(waits.iter().all(|w| *w < 3.0), "closed after {waits:?} s");
    }
}

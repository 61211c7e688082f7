//! The one connection driver every protocol runs under.
//!
//! A protocol is an [`Adapter`]: it is fed bytes and appends reply bytes to an output buffer,
//! answering with a [`Flow`] (go on, start TLS, close). The driver owns everything else: the
//! socket (plain or TLS, and the STARTTLS swap), reading and writing at the same time, the
//! idle/write/session timeouts, shutdown and wake-ups from outside. Protocol code never sees a
//! socket; the driver never knows a command.

mod stream;
mod transport;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info};

pub use stream::Stream;
pub use transport::{Role, Transport};

/// Tells a connection that the server is shutting down, so it can say goodbye (`421`,
/// `* BYE`) instead of being cut off when the grace period runs out.
#[derive(Clone, Debug)]
pub struct Shutdown(Option<watch::Receiver<bool>>);

impl Shutdown {
    pub fn new(receiver: watch::Receiver<bool>) -> Self {
        Self(Some(receiver))
    }

    /// A shutdown that begins when `signal` completes.
    pub fn after(signal: impl Future<Output = ()> + Send + 'static) -> Self {
        let (sender, receiver) = watch::channel(false);
        tokio::spawn(async move {
            signal.await;
            let _ = sender.send(true);
            // Held until every receiver is gone, so a closed channel never reads as shutdown.
            sender.closed().await;
        });
        Self(Some(receiver))
    }

    /// A shutdown that never comes (tests, tools).
    pub fn never() -> Self {
        Self(None)
    }

    /// Completes once shutdown has begun.
    pub async fn wait(self) {
        match self.0 {
            // An error means the server is gone, which is a shutdown too.
            Some(mut receiver) => {
                let _ = receiver.wait_for(|stopping| *stopping).await;
            }
            None => std::future::pending().await,
        }
    }
}

/// What the driver does after the adapter has been fed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Write what was produced and read on.
    Continue,
    /// Write what was produced, then run the TLS handshake. The adapter has dropped any input
    /// it held after the command (CVE-2011-0411: nothing sent in clear text before the
    /// handshake may count after it).
    StartTls,
    /// Write what was produced, then close.
    Close,
}

/// A protocol session as the driver sees it.
#[async_trait::async_trait]
pub trait Adapter: Send {
    /// The greeting, written when the connection opens.
    fn start(&mut self, out: &mut Vec<u8>);
    /// Bytes from the client; replies go to `out`.
    async fn input(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> Flow;
    /// The TLS handshake after [`Flow::StartTls`] succeeded: reset what the RFCs say.
    fn tls_started(&mut self, out: &mut Vec<u8>);
    /// The client was silent too long (or the session lasted too long).
    fn timed_out(&mut self, out: &mut Vec<u8>) -> Flow;
    /// The server is stopping. [`Flow::Continue`] means "not at this point": the driver asks
    /// again after every input until the adapter closes (SMTP finishes a DATA first).
    fn shutting_down(&mut self, out: &mut Vec<u8>) -> Flow;
    /// Whether the client has logged in: the idle timer is short before.
    fn authenticated(&self) -> bool;
    /// Whether output for input already taken is still to come (a long FETCH): the driver
    /// stops reading and calls [`Adapter::resume`] each time what was produced is written.
    fn has_more(&self) -> bool {
        false
    }
    /// The next piece of that output.
    async fn resume(&mut self, _out: &mut Vec<u8>) -> Flow {
        Flow::Continue
    }
    /// Something outside (a new message for IDLE) wants the session's attention.
    fn waker(&self) -> Option<Arc<Notify>> {
        None
    }
    /// Called after [`Adapter::waker`] fired.
    async fn woken(&mut self, _out: &mut Vec<u8>) -> Flow {
        Flow::Continue
    }
}

/// The timers of one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Silence allowed before login.
    pub login_idle: Duration,
    /// Silence allowed after login.
    pub idle: Duration,
    /// How long output may sit unwritten (a client that never reads).
    pub write: Duration,
    /// How long one connection may last in all.
    pub session: Duration,
    /// How long a TLS handshake may take.
    pub handshake: Duration,
}

impl Timeouts {
    /// The defaults: idle as the protocol's RFC asks, one minute before login.
    pub fn new(idle: Duration) -> Self {
        Self {
            login_idle: idle.min(Duration::from_secs(60)),
            idle,
            write: Duration::from_secs(60),
            session: Duration::from_secs(24 * 60 * 60),
            handshake: Duration::from_secs(30),
        }
    }
}

/// Output held before the driver stops reading: a client that pipelines and never reads
/// costs this much memory at most, then the write timeout cuts it.
const MAX_PENDING_OUTPUT: usize = 256 * 1024;

/// One connection's surroundings.
pub struct Connection {
    /// The client's address (after the PROXY header).
    pub peer: SocketAddr,
    pub protocol: &'static str,
    /// Offered for STARTTLS; `None` when the listener has no STARTTLS.
    pub starttls: Option<TlsAcceptor>,
    pub timeouts: Timeouts,
    pub shutdown: Shutdown,
    /// Close on first bytes that look like a PROXY header (from a peer not trusted to send one).
    pub refuse_proxy_header: bool,
}

/// Runs `adapter` on `stream` until it closes, the client leaves or a timer ends it.
pub async fn run(
    mut adapter: impl Adapter,
    stream: Stream,
    conn: Connection,
) -> anyhow::Result<()> {
    let Connection {
        peer,
        protocol,
        mut starttls,
        timeouts,
        shutdown,
        mut refuse_proxy_header,
    } = conn;
    let session_end = Instant::now() + timeouts.session;
    let mut out = Vec::new();
    adapter.start(&mut out);
    let mut flow = Flow::Continue;
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut buf = vec![0u8; SMALL_READ];
    let mut stopping = false;
    let mut shutdown = std::pin::pin!(shutdown.wait());
    let waker = adapter.waker();
    let mut last_write = Instant::now();
    loop {
        match flow {
            Flow::Continue => {}
            Flow::Close => {
                write_all(&mut writer, &out, timeouts.write).await?;
                let _ = tokio::time::timeout(timeouts.write, writer.shutdown()).await;
                return Ok(());
            }
            Flow::StartTls => {
                write_all(&mut writer, &out, timeouts.write).await?;
                out.clear();
                let Some(acceptor) = starttls.take() else {
                    anyhow::bail!("STARTTLS without TLS on this listener");
                };
                let plain = reader.unsplit(writer);
                let tls = plain.start_tls(&acceptor, timeouts.handshake).await?;
                debug!(%peer, protocol, "STARTTLS done");
                (reader, writer) = tokio::io::split(tls);
                adapter.tls_started(&mut out);
                flow = Flow::Continue;
                continue;
            }
        }
        // Asked again after each step: SMTP says `421` once a DATA in progress has ended.
        if stopping && out.is_empty() {
            flow = adapter.shutting_down(&mut out);
            if flow != Flow::Continue {
                continue;
            }
        }
        // Memory stays bounded by one piece of a long answer: the next is made once this one
        // is written.
        if out.is_empty() && adapter.has_more() {
            flow = adapter.resume(&mut out).await;
            continue;
        }
        let idle = if adapter.authenticated() {
            timeouts.idle
        } else {
            timeouts.login_idle
        };
        let read_deadline = (Instant::now() + idle).min(session_end);
        let write_deadline = last_write + timeouts.write;
        let reading = out.len() < MAX_PENDING_OUTPUT && !adapter.has_more();
        tokio::select! {
            biased;
            () = &mut shutdown, if !stopping => {
                stopping = true;
                flow = adapter.shutting_down(&mut out);
            }
            written = write_some(&mut writer, &out), if !out.is_empty() => {
                out.drain(..written?);
                // A large answer (a FETCH of a big message) leaves no big buffer behind.
                if out.is_empty() && out.capacity() > MAX_PENDING_OUTPUT {
                    out = Vec::new();
                }
                last_write = Instant::now();
            }
            () = tokio::time::sleep_until(write_deadline), if !out.is_empty() => {
                info!(%peer, protocol, pending = out.len(), "client stopped reading; closing");
                return Ok(());
            }
            read = reader.read(&mut buf), if reading => {
                let n = read?;
                if n == 0 {
                    // A client may send its last commands and half-close: answer them.
                    debug!(%peer, protocol, "client closed the connection");
                    let _ = write_all(&mut writer, &out, timeouts.write).await;
                    return Ok(());
                }
                if std::mem::take(&mut refuse_proxy_header) && crate::proxy::looks_like_header(&buf[..n]) {
                    info!(%peer, protocol, "PROXY header from an untrusted address; closing");
                    return Ok(());
                }
                if out.is_empty() {
                    last_write = Instant::now();
                }
                flow = adapter.input(&buf[..n], &mut out).await;
                resize_read_buffer(&mut buf, n);
            }
            () = notified(waker.as_deref()) => {
                flow = adapter.woken(&mut out).await;
            }
            () = tokio::time::sleep_until(read_deadline), if out.is_empty() => {
                debug!(%peer, protocol, "connection timed out");
                flow = adapter.timed_out(&mut out);
                if flow == Flow::Continue {
                    flow = Flow::Close;
                }
            }
        }
    }
}

/// Read buffer of a connection that sends little (an IDLE session, a command at a time).
const SMALL_READ: usize = 1024;
/// Read buffer while the client streams (a literal, a DATA body).
const LARGE_READ: usize = 16 * 1024;

/// Grows the read buffer when a read filled it (bulk input) and shrinks it back after a short
/// read, so thousands of quiet connections do not each hold 16 KiB.
fn resize_read_buffer(buf: &mut Vec<u8>, last_read: usize) {
    if last_read == buf.len() && buf.len() < LARGE_READ {
        *buf = vec![0u8; LARGE_READ];
    } else if last_read < SMALL_READ && buf.len() > SMALL_READ {
        *buf = vec![0u8; SMALL_READ];
    }
}

async fn notified(waker: Option<&Notify>) {
    match waker {
        Some(waker) => waker.notified().await,
        None => std::future::pending().await,
    }
}

/// Writes part of `out` and flushes once all of it is out; returns how much was written.
async fn write_some<W: tokio::io::AsyncWrite + Unpin>(
    writer: &mut W,
    out: &[u8],
) -> std::io::Result<usize> {
    let n = writer.write(out).await?;
    if n == 0 {
        return Err(std::io::ErrorKind::WriteZero.into());
    }
    if n == out.len() {
        writer.flush().await?;
    }
    Ok(n)
}

async fn write_all<W: tokio::io::AsyncWrite + Unpin>(
    writer: &mut W,
    out: &[u8],
    limit: Duration,
) -> anyhow::Result<()> {
    tokio::time::timeout(limit, async {
        writer.write_all(out).await?;
        writer.flush().await
    })
    .await
    .map_err(|_| anyhow::anyhow!("client stopped reading"))??;
    Ok(())
}

#[cfg(test)]
mod read_buffer_tests {
    use super::*;

    #[test]
    fn read_buffer_follows_the_input() {
        let mut buf = vec![0u8; SMALL_READ];
        resize_read_buffer(&mut buf, 20);
        assert_eq!(buf.len(), SMALL_READ);
        resize_read_buffer(&mut buf, SMALL_READ);
        assert_eq!(buf.len(), LARGE_READ, "a full read grows it");
        resize_read_buffer(&mut buf, LARGE_READ);
        assert_eq!(buf.len(), LARGE_READ);
        resize_read_buffer(&mut buf, 30);
        assert_eq!(buf.len(), SMALL_READ, "a short read shrinks it back");
    }
}

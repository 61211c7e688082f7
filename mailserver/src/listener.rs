//! Listeners as data, and the accept loop: connection caps (per listener and per client IP),
//! the PROXY header, implicit TLS, then the protocol's adapter under the one driver.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::Context;
use crate::auth::guard::Admission;
use crate::driver::{self, Connection, Shutdown, Stream, Timeouts};
pub use crate::driver::{Role, Transport};
use crate::imap::connection::Imap;
use crate::limits::PerIp;
use crate::pop3::connection::Pop3;
use crate::proxy::{self, Networks};
use crate::smtp::connection::Smtp;

/// The protocol a listener speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Smtp,
    Imap,
    Pop3,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Smtp => "smtp",
            Protocol::Imap => "imap",
            Protocol::Pop3 => "pop3",
        }
    }

    /// Silence allowed after login, as each RFC asks (SMTP has no login: the command timer).
    fn idle(self) -> Duration {
        match self {
            Protocol::Smtp => Duration::from_secs(5 * 60),
            Protocol::Imap => Duration::from_secs(30 * 60),
            Protocol::Pop3 => Duration::from_secs(10 * 60),
        }
    }

    /// What a client over the per-IP cap is told before the connection closes.
    fn busy(self) -> &'static [u8] {
        match self {
            Protocol::Smtp => b"421 4.7.0 Too many connections from your address\r\n",
            Protocol::Imap => b"* BYE Too many connections from your address\r\n",
            Protocol::Pop3 => b"-ERR [SYS/TEMP] Too many connections from your address\r\n",
        }
    }

    /// What a client whose network is banned (too many failed logins) is told before the
    /// connection closes.
    fn banned(self) -> &'static [u8] {
        match self {
            Protocol::Smtp => b"421 4.7.0 Too many failed logins from your address; try later\r\n",
            Protocol::Imap => b"* BYE Too many failed logins from your address; try later\r\n",
            Protocol::Pop3 => {
                b"-ERR [SYS/TEMP] Too many failed logins from your address; try later\r\n"
            }
        }
    }
}

/// How a listener uses TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// Clear text only.
    None,
    /// TLS from the first byte (465, 993, 995).
    Implicit,
    /// Clear text with STARTTLS/STLS offered.
    StartTls,
}

/// One listener, as configuration describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerSpec {
    pub address: SocketAddr,
    pub protocol: Protocol,
    pub tls: TlsMode,
    pub role: Role,
    /// Offer TLS 1.2 beside 1.3 (other MTAs on port 25 still need it).
    pub tls12: bool,
}

impl ListenerSpec {
    pub fn new(protocol: Protocol, address: SocketAddr, tls: TlsMode, role: Role) -> Self {
        Self {
            address,
            protocol,
            tls,
            role,
            tls12: protocol == Protocol::Smtp && role == Role::Mx,
        }
    }

    /// A short name for logs and the start-up lines: `smtp`, `submission`, `imaps`...
    pub fn label(&self) -> &'static str {
        match (self.protocol, self.role, self.tls) {
            (Protocol::Smtp, Role::Mx, _) => "smtp",
            (Protocol::Smtp, Role::Submission, TlsMode::Implicit) => "submissions",
            (Protocol::Smtp, Role::Submission, _) => "submission",
            (Protocol::Imap, _, TlsMode::Implicit) => "imaps",
            (Protocol::Imap, _, _) => "imap",
            (Protocol::Pop3, _, TlsMode::Implicit) => "pop3s",
            (Protocol::Pop3, _, _) => "pop3",
        }
    }
}

/// The TLS configurations a listener picks from.
#[derive(Clone)]
pub struct Acceptors {
    /// TLS 1.3 only.
    pub tls13: TlsAcceptor,
    /// TLS 1.2 and 1.3.
    pub tls12: TlsAcceptor,
}

/// Rules every listener applies to its connections.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Most connections one listener serves at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Most connections from one client address, all listeners together.
    pub max_per_ip: usize,
    /// Peers that must send a PROXY header (v1 or v2); empty: PROXY is off.
    pub proxy_trusted: Networks,
    /// Clear-text logins (IMAP LOGIN, POP3 USER/PASS) from loopback peers before TLS.
    pub plaintext_login_loopback: bool,
    /// Overrides of the per-protocol timers.
    pub login_idle: Option<Duration>,
    pub write_timeout: Option<Duration>,
    pub session_timeout: Option<Duration>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            max_per_ip: 50,
            proxy_trusted: Networks::default(),
            plaintext_login_loopback: true,
            login_idle: None,
            write_timeout: None,
            session_timeout: None,
        }
    }
}

/// Everything one accept loop shares with its connections.
struct Shared {
    spec: ListenerSpec,
    ctx: Arc<Context>,
    acceptor: Option<TlsAcceptor>,
    policy: Arc<Policy>,
    per_ip: Arc<PerIp>,
    shutdown: watch::Receiver<bool>,
}

/// Serves `listener` until `shutdown` turns true, then waits for open connections to end.
pub async fn serve(
    listener: TcpListener,
    spec: ListenerSpec,
    ctx: Arc<Context>,
    acceptors: Option<Acceptors>,
    policy: Arc<Policy>,
    per_ip: Arc<PerIp>,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = match (spec.tls, acceptors) {
        (TlsMode::None, _) | (_, None) => None,
        (_, Some(a)) if spec.tls12 => Some(a.tls12),
        (_, Some(a)) => Some(a.tls13),
    };
    let label = spec.label();
    let permits = Arc::new(Semaphore::new(policy.max_connections));
    let shared = Arc::new(Shared {
        spec,
        ctx,
        acceptor,
        policy,
        per_ip,
        shutdown: shutdown.clone(),
    });
    let mut connections = JoinSet::new();
    let mut backoff = Duration::from_millis(5);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("semaphore is never closed"),
            _ = shutdown.changed() => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => {
                backoff = Duration::from_millis(5);
                pair
            }
            Err(err) => {
                // Out of file descriptors and the like: wait instead of spinning.
                warn!(listener = label, %err, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        connections.spawn(async move {
            if let Err(err) = connection(stream, peer, &shared).await {
                debug!(listener = label, %peer, error = %format!("{err:#}"), "connection ended with error");
            }
            drop(permit);
        });
        // Reap finished tasks so the set does not grow without bound.
        while connections.try_join_next().is_some() {}
    }
    info!(
        listener = label,
        open = connections.len(),
        "listener stopping"
    );
    while connections.join_next().await.is_some() {}
}

/// One accepted connection: PROXY header, per-IP cap, implicit TLS, then the driver.
async fn connection(
    mut tcp: TcpStream,
    socket_peer: SocketAddr,
    shared: &Shared,
) -> anyhow::Result<()> {
    let spec = &shared.spec;
    let policy = &shared.policy;
    let label = spec.label();
    let trusted = policy.proxy_trusted.contains(socket_peer.ip());
    let handshake = Duration::from_secs(30);
    let peer = if trusted {
        match tokio::time::timeout(handshake, proxy::read_header(&mut tcp)).await {
            Ok(Ok(header)) => header.source.unwrap_or(socket_peer),
            Ok(Err(err)) => {
                info!(listener = label, %socket_peer, %err, "no valid PROXY header from a trusted peer; closing");
                return Ok(());
            }
            Err(_) => {
                info!(listener = label, %socket_peer, "no PROXY header in time; closing");
                return Ok(());
            }
        }
    } else {
        socket_peer
    };
    let protocol = spec.protocol;
    let _open = crate::metrics::connection_opened(protocol.name());
    let Some(_slot) = shared.per_ip.acquire(peer.ip(), policy.max_per_ip) else {
        info!(listener = label, %peer, "per-IP connection cap reached; refusing");
        crate::metrics::connection_refused(protocol.name());
        if spec.tls != TlsMode::Implicit {
            let _ =
                tokio::time::timeout(Duration::from_secs(5), tcp.write_all(protocol.busy())).await;
        }
        return Ok(());
    };
    if let Admission::Banned { remaining } = shared.ctx.auth.guard().admit(peer.ip()).await {
        info!(listener = label, %peer, seconds = remaining.as_secs(), "client network banned; refusing");
        crate::metrics::connection_banned(protocol.name());
        // Over implicit TLS a clear-text line would be garbage to the client: just close.
        if spec.tls != TlsMode::Implicit {
            let _ = tokio::time::timeout(Duration::from_secs(5), tcp.write_all(protocol.banned()))
                .await;
        }
        return Ok(());
    }
    debug!(listener = label, %peer, "connection opened");
    let mut stream = Stream::plain(tcp);
    if spec.tls == TlsMode::Implicit {
        let Some(acceptor) = &shared.acceptor else {
            anyhow::bail!("implicit TLS listener without a certificate");
        };
        stream = stream.start_tls(acceptor, handshake).await?;
    }
    let starttls = match spec.tls {
        TlsMode::StartTls => shared.acceptor.clone(),
        TlsMode::None | TlsMode::Implicit => None,
    };
    let transport = Transport {
        peer,
        role: spec.role,
        tls: stream.is_tls(),
        starttls: starttls.is_some(),
        plaintext_login: spec.tls == TlsMode::None
            || (policy.plaintext_login_loopback && peer.ip().is_loopback()),
    };
    let mut timeouts = Timeouts::new(protocol.idle());
    if let Some(t) = policy.login_idle {
        timeouts.login_idle = t;
    }
    if let Some(t) = policy.write_timeout {
        timeouts.write = t;
    }
    if let Some(t) = policy.session_timeout {
        timeouts.session = t;
    }
    let conn = Connection {
        peer,
        protocol: protocol.name(),
        starttls,
        timeouts,
        shutdown: Shutdown::new(shared.shutdown.clone()),
        refuse_proxy_header: !trusted && !policy.proxy_trusted.is_empty(),
    };
    let ctx = shared.ctx.clone();
    match protocol {
        Protocol::Smtp => driver::run(Smtp::new(ctx, transport), stream, conn).await,
        Protocol::Imap => driver::run(Imap::new(ctx, transport), stream, conn).await,
        Protocol::Pop3 => driver::run(Pop3::new(ctx, transport), stream, conn).await,
    }
}

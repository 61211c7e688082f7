//! Binds the listeners and runs them until shut down.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::Context;
use crate::listener::{Protocol, serve};

/// How long shutdown waits for open connections (an IMAP client may idle for hours).
pub const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// Where each protocol listens (port 0 picks a free port).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Addresses {
    pub smtp: SocketAddr,
    pub imap: SocketAddr,
    pub pop3: SocketAddr,
    /// Operations: health, readiness, metrics.
    pub http: SocketAddr,
}

impl Addresses {
    /// Every protocol (HTTP too) on `addr`; with port 0 each gets its own free port (tests, tools).
    pub fn all(addr: SocketAddr) -> Self {
        Self {
            smtp: addr,
            imap: addr,
            pop3: addr,
            http: addr,
        }
    }
}

/// A server whose listeners are bound and accepting.
pub struct RunningServer {
    /// The addresses actually bound (ports resolved).
    pub addresses: Addresses,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl RunningServer {
    /// Binds every listener (failing when one cannot be bound) and starts serving.
    pub async fn start(ctx: Arc<Context>, addresses: Addresses) -> anyhow::Result<Self> {
        let (shutdown, watch) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let mut bound = addresses;
        for (protocol, addr, slot) in [
            (Protocol::Smtp, addresses.smtp, &mut bound.smtp),
            (Protocol::Imap, addresses.imap, &mut bound.imap),
            (Protocol::Pop3, addresses.pop3, &mut bound.pop3),
        ] {
            let listener = TcpListener::bind(addr).await.map_err(|e| {
                anyhow::anyhow!("cannot listen for {} on {addr}: {e}", protocol.name())
            })?;
            *slot = listener.local_addr()?;
            tasks.spawn(serve(listener, protocol, ctx.clone(), watch.clone()));
        }
        let listener = TcpListener::bind(addresses.http)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen for http on {}: {e}", addresses.http))?;
        bound.http = listener.local_addr()?;
        tasks.spawn(crate::http::serve(listener, ctx, watch));
        Ok(Self {
            addresses: bound,
            shutdown,
            tasks,
        })
    }

    /// Stops accepting and waits for open connections to finish, at most [`DRAIN_TIME`];
    /// connections still open then are cut.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        let drain = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(DRAIN_TIME, drain).await.is_err() {
            tracing::warn!("connections still open after {DRAIN_TIME:?}; closing them");
            self.tasks.shutdown().await;
        }
    }

    /// Runs until the listeners stop (they stop only through [`RunningServer::shutdown`]).
    pub async fn wait(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

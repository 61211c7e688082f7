//! Binds the listeners and runs them until shut down, then drains them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::Context;
use crate::limits::PerIp;
use crate::listener::{Acceptors, ListenerSpec, Policy, Protocol, Role, TlsMode, serve};

/// How long shutdown waits for open connections by default (an IMAP client may idle for hours).
pub const DRAIN_TIME: Duration = Duration::from_secs(10);

/// Where the clear-text listener of each protocol is (port 0 picks a free port).
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

/// Everything a server is started with besides its context.
#[derive(Clone)]
pub struct ServerConfig {
    pub listeners: Vec<ListenerSpec>,
    pub http: SocketAddr,
    /// Certificates for the TLS listeners; without them those listeners cannot start.
    pub tls: Option<Acceptors>,
    pub policy: Policy,
    /// How long shutdown waits for open connections before cutting them.
    pub grace: Duration,
}

impl ServerConfig {
    /// Clear-text SMTP, IMAP and POP3 listeners at `addresses` (tests, tools).
    pub fn plain(addresses: Addresses) -> Self {
        Self {
            listeners: vec![
                ListenerSpec::new(Protocol::Smtp, addresses.smtp, TlsMode::None, Role::Mx),
                ListenerSpec::new(Protocol::Imap, addresses.imap, TlsMode::None, Role::Mx),
                ListenerSpec::new(Protocol::Pop3, addresses.pop3, TlsMode::None, Role::Mx),
            ],
            http: addresses.http,
            tls: None,
            policy: Policy::default(),
            grace: DRAIN_TIME,
        }
    }
}

/// A server whose listeners are bound and accepting.
pub struct RunningServer {
    /// The first clear-text listener of each protocol, and HTTP (ports resolved).
    pub addresses: Addresses,
    /// Every listener as bound (ports resolved), in the order configured.
    pub listeners: Vec<ListenerSpec>,
    draining: watch::Sender<bool>,
    stopped: watch::Sender<bool>,
    grace: Duration,
    tasks: JoinSet<()>,
    http: JoinSet<()>,
}

impl RunningServer {
    /// Clear-text SMTP, IMAP and POP3 at `addresses`.
    pub async fn start(ctx: Arc<Context>, addresses: Addresses) -> anyhow::Result<Self> {
        Self::start_with(ctx, ServerConfig::plain(addresses)).await
    }

    /// Binds every listener (failing when one cannot be bound) and starts serving.
    pub async fn start_with(ctx: Arc<Context>, config: ServerConfig) -> anyhow::Result<Self> {
        let (draining, drain_watch) = watch::channel(false);
        let (stopped, stop_watch) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let policy = Arc::new(config.policy);
        let per_ip = Arc::new(PerIp::default());
        let mut bound = Vec::new();
        for spec in config.listeners {
            if spec.tls != TlsMode::None && config.tls.is_none() {
                anyhow::bail!(
                    "listener {} on {} needs a certificate",
                    spec.label(),
                    spec.address
                );
            }
            let listener = TcpListener::bind(spec.address).await.map_err(|e| {
                anyhow::anyhow!(
                    "cannot listen for {} on {}: {e}",
                    spec.label(),
                    spec.address
                )
            })?;
            let mut spec = spec;
            spec.address = listener.local_addr()?;
            bound.push(spec.clone());
            tasks.spawn(serve(
                listener,
                spec,
                ctx.clone(),
                config.tls.clone(),
                policy.clone(),
                per_ip.clone(),
                drain_watch.clone(),
            ));
        }
        let listener = TcpListener::bind(config.http)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen for http on {}: {e}", config.http))?;
        let http_addr = listener.local_addr()?;
        let mut http = JoinSet::new();
        http.spawn(crate::http::serve(listener, ctx, drain_watch, stop_watch));
        let first = |protocol| {
            bound
                .iter()
                .find(|s| s.protocol == protocol && s.tls == TlsMode::None)
                .or_else(|| bound.iter().find(|s| s.protocol == protocol))
                .map_or(http_addr, |s| s.address)
        };
        let addresses = Addresses {
            smtp: first(Protocol::Smtp),
            imap: first(Protocol::Imap),
            pop3: first(Protocol::Pop3),
            http: http_addr,
        };
        Ok(Self {
            addresses,
            listeners: bound,
            draining,
            stopped,
            grace: config.grace,
            tasks,
            http,
        })
    }

    /// The bound address of the first listener labelled `label` (`submission`, `imaps`...).
    pub fn address(&self, label: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|s| s.label() == label)
            .map(|s| s.address)
    }

    /// Drains: `/readyz` turns false, listeners stop accepting, sessions are told goodbye
    /// between commands; connections still open after the grace period are cut.
    pub async fn shutdown(mut self) {
        let _ = self.draining.send(true);
        let drain = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(self.grace, drain).await.is_err() {
            tracing::warn!(
                "connections still open after {:?}; closing them",
                self.grace
            );
            self.tasks.shutdown().await;
        }
        let _ = self.stopped.send(true);
        while self.http.join_next().await.is_some() {}
    }

    /// Runs until the listeners stop (they stop only through [`RunningServer::shutdown`]).
    pub async fn wait(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

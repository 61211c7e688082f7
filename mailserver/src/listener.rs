//! Accept loop: caps concurrent connections, hands each one to its protocol, drains on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::Context;

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

    async fn handle(
        self,
        stream: TcpStream,
        peer: SocketAddr,
        ctx: Arc<Context>,
        shutdown: Shutdown,
    ) -> anyhow::Result<()> {
        match self {
            // IMAP and POP3 clients are cut when the drain time runs out; they reconnect.
            Protocol::Smtp => crate::smtp::handle(stream, peer, ctx, shutdown).await,
            Protocol::Imap => crate::imap::handle(stream, peer, ctx).await,
            Protocol::Pop3 => crate::pop3::handle(stream, peer, ctx).await,
        }
    }
}

/// Tells a connection handler that the server is shutting down, so it can say goodbye
/// (`421` in SMTP) instead of being cut off when the drain time runs out.
#[derive(Clone, Debug)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// Completes once shutdown has begun.
    pub async fn wait(mut self) {
        // An error means the server is gone, which is a shutdown too.
        let _ = self.0.wait_for(|stopping| *stopping).await;
    }
}

/// Most connections one listener serves at once; more wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 4096;

/// Serves `listener` until `shutdown` turns true, then waits for open connections to end.
pub async fn serve(
    listener: TcpListener,
    protocol: Protocol,
    ctx: Arc<Context>,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
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
                warn!(protocol = protocol.name(), %err, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let ctx = ctx.clone();
        let signal = Shutdown(shutdown.clone());
        let open = crate::metrics::connection_opened(protocol.name());
        connections.spawn(async move {
            let _open = open;
            debug!(protocol = protocol.name(), %peer, "connection opened");
            if let Err(err) = protocol.handle(stream, peer, ctx, signal).await {
                debug!(protocol = protocol.name(), %peer, error = %err, "connection ended with error");
            }
            drop(permit);
        });
        // Reap finished tasks so the set does not grow without bound.
        while connections.try_join_next().is_some() {}
    }
    info!(
        protocol = protocol.name(),
        open = connections.len(),
        "listener stopping"
    );
    while connections.join_next().await.is_some() {}
}

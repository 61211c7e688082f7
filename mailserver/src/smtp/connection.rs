//! The thin loop between a socket, the session and the store: read bytes into the session, do
//! its lookups and deliveries, write its replies. Replies to pipelined commands are written
//! together once the session needs more input.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::Limits;
use super::session::{Action, Lookup, Session};
use super::spool::Spool;
use crate::Context;
use crate::store::{Store, normalize_address};

/// Serves one SMTP connection until the client quits, a limit is hit or `shutdown` completes
/// (the session then gets `421`).
pub async fn serve<S>(
    mut stream: S,
    peer: SocketAddr,
    ctx: Arc<Context>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let idle = limits.idle_timeout;
    let session_end = Instant::now() + limits.session_timeout;
    let mut session = Session::new(ctx.settings.hostname.clone(), peer.ip(), limits);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut out = Vec::new();
    let mut spool = Spool::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        while let Some(action) = session.next_action() {
            match action {
                Action::Reply(reply) => reply.write_to(&mut out),
                Action::Lookup(address) => {
                    let found = lookup(&ctx.store, &address).await;
                    session.lookup_done(found);
                }
                Action::Spool(chunk) => spool.write(chunk).await,
                Action::Deliver(mut delivery) => {
                    let result = spool.deliver(&ctx.store, &mut delivery).await;
                    match &result {
                        Ok(copies) => info!(
                            %peer, id = %delivery.id, size = delivery.message.len(),
                            mailboxes = copies.len(), "message delivered"
                        ),
                        Err(error) => warn!(
                            %peer, id = %delivery.id, %error, "delivery failed; client told to retry"
                        ),
                    }
                    session.delivered(result.is_ok());
                }
                Action::Close => {
                    stream.write_all(&out).await?;
                    stream.flush().await?;
                    let _ = stream.shutdown().await;
                    return Ok(());
                }
            }
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
            stream.flush().await?;
            out.clear();
        }
        let deadline = (Instant::now() + idle).min(session_end);
        tokio::select! {
            read = tokio::time::timeout_at(deadline, stream.read(&mut buf)) => match read {
                Ok(Ok(0)) => {
                    debug!(%peer, in_data = session.in_data(), "client closed the connection");
                    return Ok(());
                }
                Ok(Ok(n)) => session.feed(&buf[..n]),
                Ok(Err(error)) => return Err(error.into()),
                Err(_) => {
                    debug!(%peer, "SMTP session timed out");
                    session.timed_out();
                }
            },
            () = &mut shutdown => session.shutting_down(),
        }
    }
}

/// Where `address` delivers: a local mailbox, an unknown user of a hosted domain, or a domain
/// that is not ours (no relaying).
pub async fn lookup(store: &Store, address: &str) -> Lookup {
    match store.resolve_recipient(address).await {
        Ok(Some(recipient)) => Lookup::Local(recipient),
        Ok(None) => {
            let address = normalize_address(address);
            let domain = address.rsplit_once('@').map_or("", |(_, domain)| domain);
            let hosted: Result<bool, sqlx::Error> = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM domains WHERE name = $1 AND deleted_at IS NULL)",
            )
            .bind(domain)
            .fetch_one(store.db())
            .await;
            match hosted {
                Ok(true) => Lookup::UnknownUser,
                Ok(false) => Lookup::NotHosted,
                Err(error) => {
                    warn!(%error, "domain lookup failed");
                    Lookup::Failed
                }
            }
        }
        Err(error) => {
            warn!(%error, "recipient lookup failed");
            Lookup::Failed
        }
    }
}

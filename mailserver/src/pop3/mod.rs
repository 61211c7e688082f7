//! POP3 (RFC 1939) with CAPA (RFC 2449), response codes (RFC 3206) and AUTH PLAIN (RFC 5034).
//! The maildrop is the mailbox's INBOX, snapshotted at login; messages marked with DELE are
//! removed only when the client says QUIT.

mod command;
pub(crate) mod connection;
mod maildrop;
#[cfg(test)]
mod noise;
pub(crate) mod reply;
pub(crate) mod session;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tracing::Instrument;

use crate::Context;

/// Serves one POP3 connection until the client leaves.
pub async fn handle<S>(stream: S, peer: SocketAddr, ctx: Arc<Context>) -> anyhow::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    connection::run(stream, ctx)
        .instrument(tracing::debug_span!("pop3", %peer))
        .await
}

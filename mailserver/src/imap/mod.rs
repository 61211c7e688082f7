//! IMAP4rev1 (RFC 3501): enough for real clients to log in, list and select folders, fetch,
//! search, flag, expunge, append, copy and move.
//!
//! The wire format is `imap-codec`, framing and literals are `imap-next` (sans I/O); the
//! [`session::Session`] state machine runs commands against the store without touching a socket,
//! and [`connection`] is the thin loop that moves bytes between the two.

mod auth;
mod connection;
mod expunge;
pub(crate) mod fetch;
mod flags;
mod mailbox;
mod mime;
#[cfg(test)]
mod noise;
mod parse;
mod reply;
mod search;
mod sequence;
pub mod session;
mod structure;
mod transfer;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::Context;

/// Serves one IMAP connection until the client leaves.
pub async fn handle<S>(stream: S, peer: SocketAddr, ctx: Arc<Context>) -> anyhow::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    connection::serve(stream, peer, ctx).await
}

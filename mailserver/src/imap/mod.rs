//! IMAP4rev1 (RFC 3501): enough for real clients to log in, list and select folders, fetch,
//! search, flag, expunge, append, copy and move.
//!
//! The wire format is `imap-codec`, framing and literals are `imap-next` (sans I/O); the
//! [`session::Session`] state machine runs commands against the store without touching a socket,
//! and [`connection`] is the adapter that runs both under the connection driver.

mod auth;
mod binary;
mod capabilities;
pub mod connection;
mod enable;
mod expunge;
pub(crate) mod extended;
pub(crate) mod fetch;
mod flags;
mod folders;
mod mailbox;
mod mime;
#[cfg(test)]
mod noise;
mod parse;
mod prelogin;
mod quota;
mod reply;
mod search;
mod sequence;
pub mod session;
mod sort;
mod structure;
mod transfer;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::Context;

/// Serves one clear-text IMAP connection on any stream (tests, tools).
pub async fn handle<S>(stream: S, peer: SocketAddr, ctx: Arc<Context>) -> anyhow::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    connection::serve(stream, peer, ctx).await
}

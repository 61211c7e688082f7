//! SMTP: placeholder until the protocol lands.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::Context;

/// Serves one SMTP connection until the client leaves.
pub async fn handle<S>(mut stream: S, _peer: SocketAddr, _ctx: Arc<Context>) -> anyhow::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    stream.write_all(b"not implemented\r\n").await?;
    Ok(())
}

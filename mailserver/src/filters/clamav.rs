//! A clamd client: `zINSTREAM` (4-byte big-endian chunk lengths, a zero length to end) and
//! `zPING`, over TCP or a unix socket, each call bounded by a timeout and guarded by a
//! [`CircuitBreaker`].
//!
//! A body longer than the configured `stream_max_length` (set it to clamd's `StreamMaxLength`)
//! is not sent: it is answered [`ScanOutcome::Error`] with [`ClamdError::TooLarge`], which the
//! [`FailurePolicy`](super::policy::FailurePolicy) turns into a tempfail or a marked accept —
//! never a silent pass. clamd's own "size limit exceeded" answer gives the same.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::breaker::CircuitBreaker;
use crate::metrics;

const FILTER: &str = "clamav";
/// clamd's answers are one short line; anything longer is not clamd.
const MAX_REPLY: usize = 4096;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClamdAddress {
    /// `host:port`.
    Tcp(String),
    Unix(PathBuf),
}

#[derive(Clone, Debug)]
pub struct ClamdConfig {
    pub address: ClamdAddress,
    /// For the whole call: connect, send, answer.
    pub timeout: Duration,
    /// clamd's `StreamMaxLength`: longer bodies are not sent.
    pub stream_max_length: u64,
    pub chunk_size: usize,
    /// Consecutive failures that open the breaker, and for how long.
    pub breaker_threshold: u32,
    pub breaker_open_for: Duration,
}

impl ClamdConfig {
    pub fn new(address: ClamdAddress) -> Self {
        Self {
            address,
            timeout: Duration::from_secs(30),
            stream_max_length: 25 * 1024 * 1024,
            chunk_size: 64 * 1024,
            breaker_threshold: 3,
            breaker_open_for: Duration::from_secs(30),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScanOutcome {
    Clean,
    /// The signature's name, as clamd reports it.
    Infected(String),
    Error(ClamdError),
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClamdError {
    #[error("clamd unreachable: {0}")]
    Connect(String),
    #[error("clamd did not answer within {0:?}")]
    Timeout(Duration),
    #[error("clamd I/O: {0}")]
    Io(String),
    #[error("clamd answered {0:?}")]
    Daemon(String),
    #[error("message of {size} bytes is over the scan limit of {limit}")]
    TooLarge { size: u64, limit: u64 },
    #[error("clamd circuit open after repeated failures")]
    CircuitOpen,
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

#[derive(Debug)]
pub struct ClamdClient {
    config: ClamdConfig,
    breaker: CircuitBreaker,
}

impl ClamdClient {
    pub fn new(config: ClamdConfig) -> Self {
        let breaker = CircuitBreaker::new(config.breaker_threshold, config.breaker_open_for);
        Self { config, breaker }
    }

    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    /// `zPING`: whether clamd answers `PONG` within the timeout.
    pub async fn ping(&self) -> Result<(), ClamdError> {
        let reply = tokio::time::timeout(self.config.timeout, async {
            let mut conn = self.connect().await?;
            write(&mut conn, b"zPING\0").await?;
            read_reply(&mut conn).await
        })
        .await
        .map_err(|_| ClamdError::Timeout(self.config.timeout))??;
        if reply == "PONG" {
            Ok(())
        } else {
            Err(ClamdError::Daemon(reply))
        }
    }

    /// Scans `body` (`size` bytes, known beforehand so an oversized body is never sent).
    pub async fn scan<R: AsyncRead + Unpin>(&self, body: R, size: u64) -> ScanOutcome {
        if size > self.config.stream_max_length {
            metrics::filter_verdict(FILTER, "too_large", 0.0);
            return ScanOutcome::Error(ClamdError::TooLarge {
                size,
                limit: self.config.stream_max_length,
            });
        }
        if !self.breaker.allow() {
            metrics::filter_failure(FILTER);
            return ScanOutcome::Error(ClamdError::CircuitOpen);
        }
        let started = Instant::now();
        let result = tokio::time::timeout(self.config.timeout, self.instream(body))
            .await
            .unwrap_or(Err(ClamdError::Timeout(self.config.timeout)));
        let seconds = started.elapsed().as_secs_f64();
        match result {
            Ok(outcome) => {
                self.breaker.record_success();
                let verdict = match &outcome {
                    ScanOutcome::Clean => "clean",
                    ScanOutcome::Infected(_) => "infected",
                    ScanOutcome::Error(ClamdError::TooLarge { .. }) => "too_large",
                    ScanOutcome::Error(_) => "error",
                };
                metrics::filter_verdict(FILTER, verdict, seconds);
                outcome
            }
            Err(error) => {
                self.breaker.record_failure();
                metrics::filter_failure(FILTER);
                tracing::warn!(%error, "clamd scan failed");
                ScanOutcome::Error(error)
            }
        }
    }

    async fn instream<R: AsyncRead + Unpin>(&self, mut body: R) -> Result<ScanOutcome, ClamdError> {
        let mut conn = self.connect().await?;
        write(&mut conn, b"zINSTREAM\0").await?;
        let mut buf = vec![0u8; self.config.chunk_size.clamp(1024, 1 << 20)];
        let mut sent: u64 = 0;
        loop {
            let n = body
                .read(&mut buf)
                .await
                .map_err(|e| ClamdError::Io(format!("reading the message: {e}")))?;
            if n == 0 {
                break;
            }
            sent += n as u64;
            if sent > self.config.stream_max_length {
                // The caller's size was wrong; the limit still holds.
                return Ok(ScanOutcome::Error(ClamdError::TooLarge {
                    size: sent,
                    limit: self.config.stream_max_length,
                }));
            }
            let len = u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes();
            if let Err(e) = write(&mut conn, &len).await {
                // clamd closes the stream once over its own limit and says why first.
                return interpret(read_reply(&mut conn).await.map_err(|_| e)?, sent, self);
            }
            if let Err(e) = write(&mut conn, &buf[..n]).await {
                return interpret(read_reply(&mut conn).await.map_err(|_| e)?, sent, self);
            }
        }
        write(&mut conn, &0u32.to_be_bytes()).await?;
        let reply = read_reply(&mut conn).await?;
        interpret(reply, sent, self)
    }

    async fn connect(&self) -> Result<Box<dyn Stream>, ClamdError> {
        let err = |e: std::io::Error| ClamdError::Connect(e.to_string());
        Ok(match &self.config.address {
            ClamdAddress::Tcp(addr) => {
                let s = tokio::net::TcpStream::connect(addr).await.map_err(err)?;
                s.set_nodelay(true).map_err(err)?;
                Box::new(s)
            }
            ClamdAddress::Unix(path) => {
                Box::new(tokio::net::UnixStream::connect(path).await.map_err(err)?)
            }
        })
    }
}

/// clamd's INSTREAM answer: `stream: OK`, `stream: <name> FOUND`, `<text> ERROR`.
fn interpret(reply: String, sent: u64, client: &ClamdClient) -> Result<ScanOutcome, ClamdError> {
    if reply == "stream: OK" {
        return Ok(ScanOutcome::Clean);
    }
    if let Some(name) = reply
        .strip_prefix("stream: ")
        .and_then(|r| r.strip_suffix(" FOUND"))
    {
        return Ok(ScanOutcome::Infected(name.to_string()));
    }
    if reply.contains("size limit exceeded") {
        return Ok(ScanOutcome::Error(ClamdError::TooLarge {
            size: sent,
            limit: client.config.stream_max_length,
        }));
    }
    Err(ClamdError::Daemon(reply))
}

async fn write(conn: &mut Box<dyn Stream>, bytes: &[u8]) -> Result<(), ClamdError> {
    conn.write_all(bytes)
        .await
        .map_err(|e| ClamdError::Io(e.to_string()))
}

/// One answer, ended by NUL (the `z` commands) or EOF; at most [`MAX_REPLY`] bytes.
async fn read_reply(conn: &mut Box<dyn Stream>) -> Result<String, ClamdError> {
    let mut reply = Vec::new();
    let mut byte = [0u8; 256];
    loop {
        let n = conn
            .read(&mut byte)
            .await
            .map_err(|e| ClamdError::Io(e.to_string()))?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&byte[..n]);
        if let Some(end) = reply.iter().position(|&b| b == 0) {
            reply.truncate(end);
            break;
        }
        if reply.len() > MAX_REPLY {
            return Err(ClamdError::Daemon("answer too long".into()));
        }
    }
    if reply.is_empty() {
        return Err(ClamdError::Io("connection closed without an answer".into()));
    }
    Ok(String::from_utf8_lossy(&reply).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_interpreted() {
        let c = ClamdClient::new(ClamdConfig::new(ClamdAddress::Tcp("127.0.0.1:1".into())));
        assert_eq!(
            interpret("stream: OK".into(), 1, &c),
            Ok(ScanOutcome::Clean)
        );
        assert_eq!(
            interpret("stream: Eicar-Test-Signature FOUND".into(), 1, &c),
            Ok(ScanOutcome::Infected("Eicar-Test-Signature".into()))
        );
        assert!(matches!(
            interpret("INSTREAM size limit exceeded. ERROR".into(), 9, &c),
            Ok(ScanOutcome::Error(ClamdError::TooLarge { size: 9, .. }))
        ));
        assert!(interpret("UNKNOWN COMMAND".into(), 1, &c).is_err());
    }
}

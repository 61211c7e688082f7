//! An Rspamd client over its HTTP protocol: `POST /checkv2` on the normal worker with the
//! envelope in headers, and the controller's `learnspam`/`learnham`/`stat`.
//!
//! Plain HTTP/1.1 over hyper (already in the tree through axum and the S3 client): Rspamd runs
//! next to the server (a Service in the cluster), so there is no TLS to it. Every call is bounded
//! by a timeout; bodies are streamed from a reader with a known size and a maximum.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Empty, Full, Limited, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::Frame;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::breaker::CircuitBreaker;
use super::policy::header_safe;
use crate::metrics;

const FILTER: &str = "rspamd";
/// Rspamd's answers are a few kilobytes of JSON; more is not Rspamd.
const MAX_ANSWER: usize = 1024 * 1024;

#[derive(Clone, Debug)]
pub struct RspamdConfig {
    /// The normal worker, `host:port`.
    pub scan_address: String,
    /// The controller worker, `host:port` (learning and statistics).
    pub controller_address: String,
    /// The controller's password (read from a file or Secret, see [`read_password`]).
    pub password: Option<String>,
    pub timeout: Duration,
    /// Longer messages are not sent: the caller's policy answers them.
    pub max_size: u64,
    pub breaker_threshold: u32,
    pub breaker_open_for: Duration,
}

impl RspamdConfig {
    pub fn new(scan_address: impl Into<String>, controller_address: impl Into<String>) -> Self {
        Self {
            scan_address: scan_address.into(),
            controller_address: controller_address.into(),
            password: None,
            timeout: Duration::from_secs(20),
            max_size: 25 * 1024 * 1024,
            breaker_threshold: 3,
            breaker_open_for: Duration::from_secs(30),
        }
    }
}

/// The controller password from a file (a mounted Secret): its first line.
pub fn read_password(path: &Path) -> std::io::Result<String> {
    let text = std::fs::read_to_string(path)?;
    Ok(text.lines().next().unwrap_or_default().trim().to_string())
}

/// The envelope and connection facts Rspamd scores with.
#[derive(Clone, Debug, Default)]
pub struct Envelope {
    pub ip: Option<IpAddr>,
    pub helo: Option<String>,
    /// Our host name.
    pub hostname: Option<String>,
    /// The reverse-path (empty for bounces).
    pub from: Option<String>,
    pub rcpt: Vec<String>,
    /// The authenticated user (outbound mail).
    pub user: Option<String>,
    pub queue_id: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Reject,
    SoftReject,
    Greylist,
    AddHeader,
    RewriteSubject,
    NoAction,
}

impl Action {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "reject" => Action::Reject,
            "soft reject" => Action::SoftReject,
            "greylist" => Action::Greylist,
            "add header" => Action::AddHeader,
            "rewrite subject" => Action::RewriteSubject,
            "no action" => Action::NoAction,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Reject => "reject",
            Action::SoftReject => "soft reject",
            Action::Greylist => "greylist",
            Action::AddHeader => "add header",
            Action::RewriteSubject => "rewrite subject",
            Action::NoAction => "no action",
        }
    }

    fn metric_label(self) -> &'static str {
        match self {
            Action::Reject => "reject",
            Action::SoftReject => "soft_reject",
            Action::Greylist => "greylist",
            Action::AddHeader => "add_header",
            Action::RewriteSubject => "rewrite_subject",
            Action::NoAction => "no_action",
        }
    }

    /// The message is spam by this verdict (filed into Junk, `X-Spam-Status: Yes`).
    pub fn is_spam(self) -> bool {
        matches!(
            self,
            Action::Reject | Action::AddHeader | Action::RewriteSubject
        )
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Symbol {
    pub name: String,
    pub score: f64,
    pub options: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct CheckResult {
    pub action: Action,
    pub score: f64,
    pub required_score: f64,
    /// By name (sorted, so rendered headers are stable).
    pub symbols: Vec<Symbol>,
    /// A subject Rspamd wants (`rewrite subject`).
    pub subject: Option<String>,
    /// Rspamd's SMTP message for rejects, if any.
    pub smtp_message: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RspamdError {
    #[error("rspamd unreachable: {0}")]
    Connect(String),
    #[error("rspamd did not answer within {0:?}")]
    Timeout(Duration),
    #[error("rspamd HTTP: {0}")]
    Http(String),
    #[error("rspamd answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("rspamd answer not understood: {0}")]
    Parse(String),
    #[error("message of {size} bytes is over the scan limit of {limit}")]
    TooLarge { size: u64, limit: u64 },
    #[error("rspamd circuit open after repeated failures")]
    CircuitOpen,
    #[error("reading the message: {0}")]
    Body(String),
    #[error("no controller password configured")]
    NoPassword,
}

#[derive(Deserialize)]
struct RawCheck {
    action: String,
    score: f64,
    required_score: f64,
    #[serde(default)]
    symbols: BTreeMap<String, RawSymbol>,
    subject: Option<String>,
    #[serde(default)]
    messages: BTreeMap<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct RawSymbol {
    #[serde(default)]
    score: f64,
    #[serde(default)]
    options: Vec<String>,
}

/// Bayes statistics from the controller's `/stat`.
#[derive(Clone, Debug, Deserialize)]
pub struct Stat {
    /// Messages learned, all classes.
    pub learned: u64,
    #[serde(default)]
    pub scanned: u64,
    #[serde(default)]
    pub statfiles: Vec<Statfile>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Statfile {
    pub symbol: String,
    /// Rspamd's revision of this class (reported 0 by the redis backend: use `learned`).
    #[serde(default)]
    pub revision: u64,
}

type Body = UnsyncBoxBody<Bytes, std::io::Error>;

#[derive(Debug)]
pub struct RspamdClient {
    config: RspamdConfig,
    breaker: CircuitBreaker,
}

impl RspamdClient {
    pub fn new(config: RspamdConfig) -> Self {
        let breaker = CircuitBreaker::new(config.breaker_threshold, config.breaker_open_for);
        Self { config, breaker }
    }

    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    /// Scans a message of `size` bytes read from `body`.
    pub async fn check<R: AsyncRead + Send + Unpin + 'static>(
        &self,
        envelope: &Envelope,
        body: R,
        size: u64,
    ) -> Result<CheckResult, RspamdError> {
        if size > self.config.max_size {
            metrics::filter_verdict(FILTER, "too_large", 0.0);
            return Err(RspamdError::TooLarge {
                size,
                limit: self.config.max_size,
            });
        }
        if !self.breaker.allow() {
            metrics::filter_failure(FILTER);
            return Err(RspamdError::CircuitOpen);
        }
        let started = Instant::now();
        let mut req = Request::builder()
            .method(Method::POST)
            .uri("/checkv2")
            .header("Host", &self.config.scan_address)
            .header("Content-Length", size);
        let headers: [(&str, Option<String>); 6] = [
            ("IP", envelope.ip.map(|ip| ip.to_string())),
            ("Helo", envelope.helo.clone()),
            ("Hostname", envelope.hostname.clone()),
            ("From", envelope.from.clone()),
            ("User", envelope.user.clone()),
            ("Queue-Id", envelope.queue_id.clone()),
        ];
        for (name, value) in headers {
            if let Some(value) = value {
                req = req.header(name, header_safe(&value));
            }
        }
        for rcpt in &envelope.rcpt {
            req = req.header("Rcpt", header_safe(rcpt));
        }
        let req = req
            .body(reader_body(body, size))
            .map_err(|e| RspamdError::Http(e.to_string()))?;
        let result = self
            .send(&self.config.scan_address, req)
            .await
            .and_then(|(status, body)| {
                if status != StatusCode::OK {
                    return Err(status_error(status, &body));
                }
                parse_check(&body)
            });
        match &result {
            Ok(r) => {
                self.breaker.record_success();
                metrics::filter_verdict(
                    FILTER,
                    r.action.metric_label(),
                    started.elapsed().as_secs_f64(),
                );
            }
            Err(RspamdError::Body(_)) => {}
            Err(error) => {
                self.breaker.record_failure();
                metrics::filter_failure(FILTER);
                tracing::warn!(%error, "rspamd check failed");
            }
        }
        result
    }

    /// Teaches Bayes that the message is spam. A message learned before counts as success.
    pub async fn learn_spam(&self, message: Bytes) -> Result<(), RspamdError> {
        self.learn("/learnspam", message).await
    }

    /// Teaches Bayes that the message is ham. A message learned before counts as success.
    pub async fn learn_ham(&self, message: Bytes) -> Result<(), RspamdError> {
        self.learn("/learnham", message).await
    }

    async fn learn(&self, path: &str, message: Bytes) -> Result<(), RspamdError> {
        let password = self
            .config
            .password
            .as_ref()
            .ok_or(RspamdError::NoPassword)?;
        let req = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header("Host", &self.config.controller_address)
            .header("Password", password)
            .body(
                Full::new(message)
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            )
            .map_err(|e| RspamdError::Http(e.to_string()))?;
        let (status, body) = self.send(&self.config.controller_address, req).await?;
        // 208: "has been already learned as ..." — the wanted state holds already.
        if status == StatusCode::OK || status.as_u16() == 208 {
            Ok(())
        } else {
            Err(status_error(status, &body))
        }
    }

    /// The controller's `/stat`: Bayes counts among others.
    pub async fn stat(&self) -> Result<Stat, RspamdError> {
        let password = self
            .config
            .password
            .as_ref()
            .ok_or(RspamdError::NoPassword)?;
        let req = Request::builder()
            .method(Method::GET)
            .uri("/stat")
            .header("Host", &self.config.controller_address)
            .header("Password", password)
            .body(Empty::new().map_err(|never| match never {}).boxed_unsync())
            .map_err(|e| RspamdError::Http(e.to_string()))?;
        let (status, body) = self.send(&self.config.controller_address, req).await?;
        if status != StatusCode::OK {
            return Err(status_error(status, &body));
        }
        serde_json::from_slice(&body).map_err(|e| RspamdError::Parse(e.to_string()))
    }

    /// One request on a fresh connection, the whole exchange within the timeout.
    async fn send(
        &self,
        address: &str,
        req: Request<Body>,
    ) -> Result<(StatusCode, Bytes), RspamdError> {
        let timeout = self.config.timeout;
        tokio::time::timeout(timeout, async {
            let stream = tokio::net::TcpStream::connect(address)
                .await
                .map_err(|e| RspamdError::Connect(e.to_string()))?;
            let _ = stream.set_nodelay(true);
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| RspamdError::Http(e.to_string()))?;
            // Ends with the connection: when the exchange is done or the timeout drops it.
            let conn = tokio::spawn(async move {
                let _ = conn.await;
            });
            let result = async {
                let resp = sender.send_request(req).await.map_err(http_error)?;
                let status = resp.status();
                let body = Limited::new(resp.into_body(), MAX_ANSWER)
                    .collect()
                    .await
                    .map_err(|e| RspamdError::Http(format!("reading the answer: {e}")))?
                    .to_bytes();
                Ok((status, body))
            }
            .await;
            conn.abort();
            result
        })
        .await
        .map_err(|_| RspamdError::Timeout(timeout))?
    }
}

fn http_error(e: hyper::Error) -> RspamdError {
    // A failure reading our own body surfaces here as the body's error.
    let text = e.to_string();
    if let Some(source) = std::error::Error::source(&e)
        && source.is::<BodyReadError>()
    {
        return RspamdError::Body(source.to_string());
    }
    RspamdError::Http(text)
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct BodyReadError(String);

fn status_error(status: StatusCode, body: &[u8]) -> RspamdError {
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
    RspamdError::Status {
        status: status.as_u16(),
        body: text,
    }
}

/// `size` bytes of `reader` as a streamed body; a short reader is an error, not a short body.
fn reader_body<R: AsyncRead + Send + Unpin + 'static>(reader: R, size: u64) -> Body {
    let stream = futures::stream::unfold((reader, size), |(mut reader, left)| async move {
        if left == 0 {
            return None;
        }
        let mut buf = vec![0u8; left.min(64 * 1024) as usize];
        match reader.read(&mut buf).await {
            Ok(0) => Some((
                Err(std::io::Error::other(BodyReadError(format!(
                    "message ended {left} bytes early"
                )))),
                (reader, 0),
            )),
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Frame::data(Bytes::from(buf))), (reader, left - n as u64)))
            }
            Err(e) => Some((
                Err(std::io::Error::other(BodyReadError(e.to_string()))),
                (reader, 0),
            )),
        }
    });
    BodyExt::boxed_unsync(StreamBody::new(stream.boxed()))
}

fn parse_check(body: &[u8]) -> Result<CheckResult, RspamdError> {
    let raw: RawCheck =
        serde_json::from_slice(body).map_err(|e| RspamdError::Parse(e.to_string()))?;
    let action = Action::parse(&raw.action)
        .ok_or_else(|| RspamdError::Parse(format!("unknown action {:?}", raw.action)))?;
    let symbols = raw
        .symbols
        .into_iter()
        .map(|(name, s)| Symbol {
            name,
            score: s.score,
            options: s.options,
        })
        .collect();
    let smtp_message = raw
        .messages
        .get("smtp_message")
        .and_then(|v| v.as_str())
        .map(str::to_string);
    Ok(CheckResult {
        action,
        score: raw.score,
        required_score: raw.required_score,
        symbols,
        subject: raw.subject,
        smtp_message,
    })
}

impl CheckResult {
    /// `X-Spamd-Result`, `X-Spam-Status` and `X-Spam-Score` (name, value; values unfolded and
    /// free of control characters).
    pub fn headers(&self) -> Vec<(String, String)> {
        let spam = self.action.is_spam();
        let mut result = format!(
            "default: {} [{:.2} / {:.2}]",
            if spam { "True" } else { "False" },
            self.score,
            self.required_score
        );
        for s in &self.symbols {
            result.push_str(&format!("; {}({:.2})", s.name, s.score));
            if !s.options.is_empty() {
                let options: Vec<&str> = s.options.iter().take(5).map(String::as_str).collect();
                result.push_str(&format!("[{}]", options.join(",")));
            }
        }
        vec![
            ("X-Spamd-Result".to_string(), header_safe_long(&result)),
            (
                "X-Spam-Status".to_string(),
                format!(
                    "{}, score={:.2} required={:.2}",
                    if spam { "Yes" } else { "No" },
                    self.score,
                    self.required_score
                ),
            ),
            ("X-Spam-Score".to_string(), format!("{:.2}", self.score)),
        ]
    }
}

/// Like [`header_safe`] without its length cut (symbol lists are long), capped at 4 kB.
fn header_safe_long(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(4096)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkv2_answer_is_parsed_and_rendered() {
        let json = br#"{"is_skipped":false,"score":15.5,"required_score":15.0,"action":"reject",
            "symbols":{"GTUBE":{"name":"GTUBE","score":0.0,"options":["x"]},
                       "MIME_GOOD":{"name":"MIME_GOOD","score":-0.1}},
            "messages":{"smtp_message":"Gtube pattern"}}"#;
        let r = parse_check(json).unwrap();
        assert_eq!(r.action, Action::Reject);
        assert_eq!(r.symbols.len(), 2);
        assert_eq!(r.smtp_message.as_deref(), Some("Gtube pattern"));
        let h = r.headers();
        assert_eq!(
            h[0].1,
            "default: True [15.50 / 15.00]; GTUBE(0.00)[x]; MIME_GOOD(-0.10)"
        );
        assert_eq!(h[1].1, "Yes, score=15.50 required=15.00");
        assert_eq!(h[2].1, "15.50");
        assert!(parse_check(br#"{"action":"explode","score":1,"required_score":2}"#).is_err());
        assert!(parse_check(b"not json").is_err());
    }
}

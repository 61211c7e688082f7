//! An SMTP client session (RFC 5321) over TCP, with STARTTLS or implicit TLS and AUTH.
//! Replies from the remote host are bounded in size; every read and write has a deadline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::{Message, Outcome, Rcpt, Status};

/// Most bytes of one reply (all its lines) the client reads before giving up on the host.
const MAX_REPLY: usize = 64 * 1024;

/// How TLS is used with a host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// Never (a loopback relay).
    None,
    /// STARTTLS when offered, else clear text (unless verification is demanded).
    Opportunistic,
    /// STARTTLS, or no transaction.
    StartTls,
    /// TLS from the first byte (port 465).
    Implicit,
}

#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub connect: Duration,
    pub command: Duration,
}

/// A reply: its code and its lines' text joined by spaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    /// The reply as one line: `550 5.1.1 no such user`.
    pub fn text(&self) -> String {
        format!("{} {}", self.code, self.lines.join(" "))
    }

    /// The enhanced status code of the first line, or one made from the basic code.
    pub fn enhanced(&self) -> String {
        let first = self.lines.first().map(String::as_str).unwrap_or("");
        let word = first.split_whitespace().next().unwrap_or("");
        let parts: Vec<&str> = word.split('.').collect();
        let class = (self.code / 100).to_string();
        if parts.len() == 3
            && parts[0] == class
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
        {
            return word.to_string();
        }
        match self.code / 100 {
            2 => "2.0.0".into(),
            4 => "4.0.0".into(),
            _ => "5.0.0".into(),
        }
    }

    fn status(&self, mta: &str) -> Status {
        Status {
            enhanced: self.enhanced(),
            text: self.text(),
            mta: Some(mta.to_string()),
        }
    }

    /// The outcome this reply gives a recipient (2xx delivered or accepted).
    fn outcome(&self, mta: &str) -> Outcome {
        match self.code / 100 {
            2 | 3 => Outcome::Delivered(self.status(mta)),
            4 => Outcome::Temporary(self.status(mta)),
            _ => Outcome::Permanent(self.status(mta)),
        }
    }
}

/// Why a host could not take the transaction.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connecting to {0}: {1}")]
    Connect(SocketAddr, std::io::Error),
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("no answer within {0:?} ({1})")]
    Timeout(Duration, &'static str),
    #[error("bad reply: {0}")]
    Protocol(String),
    #[error("{stage} refused: {}", reply.text())]
    Refused { stage: &'static str, reply: Reply },
    #[error("TLS required but {0}")]
    TlsRequired(String),
    #[error("TLS: {0}")]
    Tls(String),
}

impl ClientError {
    /// The outcome for the recipients when this was the last host tried.
    pub fn into_outcome(self, host: &str) -> Outcome {
        let text = format!("{host}: {self}");
        match self {
            ClientError::Refused { reply, .. } if reply.code >= 500 => Outcome::Permanent(Status {
                enhanced: reply.enhanced(),
                text,
                mta: Some(host.to_string()),
            }),
            ClientError::Refused { reply, .. } => Outcome::Temporary(Status {
                enhanced: reply.enhanced(),
                text,
                mta: Some(host.to_string()),
            }),
            ClientError::TlsRequired(_) | ClientError::Tls(_) => Outcome::temporary("4.7.5", text),
            ClientError::Connect(..) | ClientError::Timeout(..) => {
                Outcome::temporary("4.4.1", text)
            }
            ClientError::Io(_) | ClientError::Protocol(_) => Outcome::temporary("4.4.2", text),
        }
    }
}

/// What the host's EHLO reply offered.
#[derive(Clone, Debug, Default)]
pub struct Extensions {
    pub starttls: bool,
    pub size: Option<u64>,
    pub eightbit: bool,
    pub smtputf8: bool,
    pub dsn: bool,
    pub requiretls: bool,
    pub auth: Vec<String>,
}

impl Extensions {
    pub fn parse(reply: &Reply) -> Self {
        let mut ext = Extensions::default();
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_whitespace();
            let keyword = words.next().unwrap_or("").to_ascii_uppercase();
            match keyword.as_str() {
                "STARTTLS" => ext.starttls = true,
                "SIZE" => ext.size = words.next().and_then(|n| n.parse().ok()).filter(|&n| n > 0),
                "8BITMIME" => ext.eightbit = true,
                "SMTPUTF8" => ext.smtputf8 = true,
                "DSN" => ext.dsn = true,
                "REQUIRETLS" => ext.requiretls = true,
                "AUTH" => ext.auth = words.map(|w| w.to_ascii_uppercase()).collect(),
                _ => {}
            }
        }
        ext
    }
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    Closed,
}

/// One connection to one host.
pub struct Session {
    stream: Stream,
    buf: Vec<u8>,
    host: String,
    timeouts: Timeouts,
    ext: Extensions,
}

impl Session {
    pub async fn connect(
        address: SocketAddr,
        host: &str,
        timeouts: Timeouts,
    ) -> Result<Self, ClientError> {
        let tcp = tokio::time::timeout(timeouts.connect, TcpStream::connect(address))
            .await
            .map_err(|_| ClientError::Timeout(timeouts.connect, "connect"))?
            .map_err(|e| ClientError::Connect(address, e))?;
        tcp.set_nodelay(true)?;
        Ok(Self {
            stream: Stream::Plain(tcp),
            buf: Vec::new(),
            host: host.trim_end_matches('.').to_string(),
            timeouts,
            ext: Extensions::default(),
        })
    }

    pub fn is_tls(&self) -> bool {
        matches!(self.stream, Stream::Tls(_))
    }

    pub fn extensions(&self) -> &Extensions {
        &self.ext
    }

    /// Greeting, EHLO (HELO when EHLO is refused and TLS is not needed), STARTTLS as `tls`
    /// and `verify` ask, and EHLO again over TLS.
    pub async fn hello(
        &mut self,
        me: &str,
        tls: TlsMode,
        verify: bool,
        config: Arc<ClientConfig>,
    ) -> Result<(), ClientError> {
        if tls == TlsMode::Implicit {
            self.handshake(config.clone()).await?;
        }
        let greeting = self.read_reply("greeting").await?;
        if greeting.code != 220 {
            return Err(ClientError::Refused {
                stage: "greeting",
                reply: greeting,
            });
        }
        let ehlo = self.command(&format!("EHLO {me}"), "EHLO").await?;
        if ehlo.code != 250 {
            if verify || tls == TlsMode::StartTls {
                return Err(ClientError::TlsRequired("EHLO was refused".into()));
            }
            let helo = self.command(&format!("HELO {me}"), "HELO").await?;
            if helo.code != 250 {
                return Err(ClientError::Refused {
                    stage: "HELO",
                    reply: helo,
                });
            }
            return Ok(());
        }
        self.ext = Extensions::parse(&ehlo);
        let wants_tls = match tls {
            TlsMode::None | TlsMode::Implicit => false,
            TlsMode::Opportunistic => self.ext.starttls || verify,
            TlsMode::StartTls => true,
        };
        if wants_tls {
            if !self.ext.starttls {
                return Err(ClientError::TlsRequired(format!(
                    "{} does not offer STARTTLS",
                    self.host
                )));
            }
            let reply = self.command("STARTTLS", "STARTTLS").await?;
            if reply.code != 220 {
                return Err(ClientError::TlsRequired(format!(
                    "STARTTLS refused: {}",
                    reply.text()
                )));
            }
            self.handshake(config).await?;
            let ehlo = self.command(&format!("EHLO {me}"), "EHLO").await?;
            if ehlo.code != 250 {
                return Err(ClientError::Refused {
                    stage: "EHLO",
                    reply: ehlo,
                });
            }
            self.ext = Extensions::parse(&ehlo);
        }
        Ok(())
    }

    async fn handshake(&mut self, config: Arc<ClientConfig>) -> Result<(), ClientError> {
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Closed) else {
            return Err(ClientError::Tls("TLS is on already".into()));
        };
        // A name the certificate must carry (checked only by a verifying configuration).
        let name = ServerName::try_from(self.host.clone())
            .map_err(|e| ClientError::Tls(format!("{} is no server name: {e}", self.host)))?;
        let connector = TlsConnector::from(config);
        let tls = tokio::time::timeout(self.timeouts.command, connector.connect(name, tcp))
            .await
            .map_err(|_| ClientError::Timeout(self.timeouts.command, "TLS handshake"))?
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        self.buf.clear();
        self.stream = Stream::Tls(Box::new(tls));
        Ok(())
    }

    /// AUTH PLAIN (or LOGIN when only that is offered); only over TLS or to loopback.
    pub async fn authenticate(&mut self, user: &str, password: &str) -> Result<(), ClientError> {
        let loopback = match &self.stream {
            Stream::Plain(tcp) => tcp
                .peer_addr()
                .map(|a| a.ip().is_loopback())
                .unwrap_or(false),
            _ => true,
        };
        if !loopback {
            return Err(ClientError::TlsRequired(
                "credentials would go in clear text".into(),
            ));
        }
        let reply = if self.ext.auth.iter().any(|m| m == "PLAIN") || self.ext.auth.is_empty() {
            let token = BASE64.encode(format!("\0{user}\0{password}"));
            self.command(&format!("AUTH PLAIN {token}"), "AUTH").await?
        } else if self.ext.auth.iter().any(|m| m == "LOGIN") {
            let first = self.command("AUTH LOGIN", "AUTH").await?;
            if first.code != 334 {
                return Err(ClientError::Refused {
                    stage: "AUTH",
                    reply: first,
                });
            }
            let second = self.command(&BASE64.encode(user), "AUTH").await?;
            if second.code != 334 {
                return Err(ClientError::Refused {
                    stage: "AUTH",
                    reply: second,
                });
            }
            self.command(&BASE64.encode(password), "AUTH").await?
        } else {
            return Err(ClientError::Protocol(format!(
                "no usable AUTH mechanism among {:?}",
                self.ext.auth
            )));
        };
        if reply.code != 235 {
            return Err(ClientError::Refused {
                stage: "AUTH",
                reply,
            });
        }
        Ok(())
    }

    /// MAIL, RCPT for each recipient, DATA: one outcome per recipient. Errors are for a
    /// connection that broke; refusals are outcomes.
    pub async fn send(
        &mut self,
        message: &Message,
        rcpts: &[Rcpt],
    ) -> Result<Vec<Outcome>, ClientError> {
        let host = self.host.clone();
        let all = |outcome: Outcome| Ok(vec![outcome; rcpts.len()]);
        let size = message.data.len() as u64;
        if let Some(limit) = self.ext.size
            && size > limit
        {
            return all(Outcome::permanent(
                "5.3.4",
                format!("{host} takes at most {limit} bytes, the message has {size}"),
            ));
        }
        let utf8 = message.needs_smtputf8(rcpts);
        if utf8 && !self.ext.smtputf8 {
            return all(Outcome::permanent(
                "5.6.7",
                format!("{host} does not support SMTPUTF8, which the addresses need"),
            ));
        }
        let eightbit = message.is_8bit();
        if eightbit && !self.ext.eightbit && !utf8 {
            return all(Outcome::permanent(
                "5.6.3",
                format!("{host} does not support 8BITMIME, which the message needs"),
            ));
        }
        if message.requiretls && !(self.is_tls() && self.ext.requiretls) {
            return all(Outcome::permanent(
                "5.7.10",
                format!("{host} does not support REQUIRETLS, which the sender asked for"),
            ));
        }
        let mut mail = format!("MAIL FROM:<{}>", message.from);
        if self.ext.size.is_some() {
            mail.push_str(&format!(" SIZE={size}"));
        }
        if eightbit && self.ext.eightbit {
            mail.push_str(" BODY=8BITMIME");
        }
        if utf8 {
            mail.push_str(" SMTPUTF8");
        }
        if self.ext.dsn {
            if let Some(ret) = message.ret {
                mail.push_str(&format!(" RET={}", ret.as_str().to_ascii_uppercase()));
            }
            if let Some(envid) = &message.env_id {
                mail.push_str(&format!(" ENVID={}", xtext(envid)));
            }
        }
        if message.requiretls {
            mail.push_str(" REQUIRETLS");
        }
        let reply = self.command(&mail, "MAIL").await?;
        if reply.code != 250 {
            return all(reply.outcome(&host));
        }
        let mut outcomes = Vec::with_capacity(rcpts.len());
        for rcpt in rcpts {
            let mut line = format!("RCPT TO:<{}>", rcpt.address);
            if self.ext.dsn {
                if let Some(notify) = &rcpt.notify {
                    line.push_str(&format!(" NOTIFY={notify}"));
                }
                if let Some(orcpt) = &rcpt.orcpt {
                    // `type;address`, the address xtext-encoded again for the wire.
                    let (kind, address) = orcpt.split_once(';').unwrap_or(("rfc822", orcpt));
                    line.push_str(&format!(" ORCPT={};{}", kind.trim(), xtext(address.trim())));
                }
            }
            let reply = self.command(&line, "RCPT").await?;
            outcomes.push(match reply.code {
                250 | 251 => None,
                _ => Some(reply.outcome(&host)),
            });
        }
        if outcomes.iter().all(Option::is_some) {
            let _ = self.command("RSET", "RSET").await;
            return Ok(outcomes.into_iter().flatten().collect());
        }
        let reply = self.command("DATA", "DATA").await?;
        let final_reply = if reply.code == 354 {
            self.write_data(&message.data).await?;
            self.read_reply("end of data").await?
        } else {
            reply
        };
        Ok(outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| final_reply.outcome(&host)))
            .collect())
    }

    pub async fn quit(&mut self) {
        let _ = self.command("QUIT", "QUIT").await;
    }

    /// The message with every line end made CRLF, leading dots doubled, and the final dot.
    async fn write_data(&mut self, data: &[u8]) -> Result<(), ClientError> {
        let mut out = Vec::with_capacity(64 * 1024 + 1024);
        let mut at_line_start = true;
        let mut prev = 0u8;
        for &b in data {
            if at_line_start && b == b'.' {
                out.push(b'.');
            }
            if b == b'\n' && prev != b'\r' {
                out.push(b'\r');
            }
            if prev == b'\r' && b != b'\n' {
                // A bare CR becomes a line end too, so nothing is smuggled past the dot.
                out.push(b'\n');
                if b == b'.' {
                    out.push(b'.');
                }
            }
            out.push(b);
            at_line_start = b == b'\n';
            prev = b;
            if out.len() >= 64 * 1024 {
                self.write(&out).await?;
                out.clear();
            }
        }
        if prev == b'\r' {
            out.push(b'\n');
        } else if !data.is_empty() && prev != b'\n' {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        self.write(&out).await
    }

    async fn command(&mut self, line: &str, stage: &'static str) -> Result<Reply, ClientError> {
        let mut bytes = Vec::with_capacity(line.len() + 2);
        bytes.extend_from_slice(line.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        self.write(&bytes).await?;
        self.read_reply(stage).await
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        let deadline = self.timeouts.command;
        let io = async {
            match &mut self.stream {
                Stream::Plain(s) => s.write_all(bytes).await?,
                Stream::Tls(s) => s.write_all(bytes).await?,
                Stream::Closed => return Err(std::io::Error::other("closed")),
            }
            match &mut self.stream {
                Stream::Plain(s) => s.flush().await,
                Stream::Tls(s) => s.flush().await,
                Stream::Closed => Ok(()),
            }
        };
        tokio::time::timeout(deadline, io)
            .await
            .map_err(|_| ClientError::Timeout(deadline, "write"))?
            .map_err(ClientError::Io)
    }

    async fn read_reply(&mut self, stage: &'static str) -> Result<Reply, ClientError> {
        let deadline = self.timeouts.command;
        tokio::time::timeout(deadline, self.read_reply_inner())
            .await
            .map_err(|_| ClientError::Timeout(deadline, stage))?
    }

    async fn read_reply_inner(&mut self) -> Result<Reply, ClientError> {
        let mut lines = Vec::new();
        let mut code = 0u16;
        let mut consumed = 0usize;
        loop {
            let Some(end) = self.buf[consumed..].iter().position(|&b| b == b'\n') else {
                if self.buf.len() > MAX_REPLY {
                    return Err(ClientError::Protocol("reply longer than 64 KiB".into()));
                }
                let mut chunk = [0u8; 4096];
                let n = match &mut self.stream {
                    Stream::Plain(s) => s.read(&mut chunk).await?,
                    Stream::Tls(s) => s.read(&mut chunk).await?,
                    Stream::Closed => 0,
                };
                if n == 0 {
                    return Err(ClientError::Protocol("connection closed".into()));
                }
                self.buf.extend_from_slice(&chunk[..n]);
                continue;
            };
            let line = &self.buf[consumed..consumed + end];
            consumed += end + 1;
            let line =
                String::from_utf8_lossy(line.strip_suffix(b"\r").unwrap_or(line)).into_owned();
            let (this_code, more, text) = parse_line(&line)?;
            if code != 0 && this_code != code {
                return Err(ClientError::Protocol(format!(
                    "mixed codes in one reply: {line}"
                )));
            }
            code = this_code;
            lines.push(text);
            if !more {
                self.buf.drain(..consumed);
                return Ok(Reply { code, lines });
            }
        }
    }
}

/// RFC 3461 §4 xtext: `+`, `=`, controls, space and non-ASCII as `+XX`.
pub fn xtext(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'!'..=b'~' if b != b'+' && b != b'=' => out.push(char::from(b)),
            _ => out.push_str(&format!("+{b:02X}")),
        }
    }
    out
}

/// `250-text`, `250 text` or `250` → (code, whether more lines follow, text).
fn parse_line(line: &str) -> Result<(u16, bool, String), ClientError> {
    let bad = || ClientError::Protocol(format!("not a reply line: {line:.80}"));
    let code = line.get(..3).ok_or_else(bad)?;
    if !code.bytes().all(|b| b.is_ascii_digit()) || !(b'2'..=b'5').contains(&code.as_bytes()[0]) {
        return Err(bad());
    }
    let code: u16 = code.parse().map_err(|_| bad())?;
    match line.as_bytes().get(3) {
        None => Ok((code, false, String::new())),
        Some(b'-') => Ok((code, true, line[4..].to_string())),
        Some(b' ') => Ok((code, false, line[4..].to_string())),
        Some(_) => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_lines() {
        for (line, want) in [
            ("250-SIZE 100", Some((250, true, "SIZE 100"))),
            ("250 ok", Some((250, false, "ok"))),
            ("421", Some((421, false, ""))),
            ("25", None),
            ("abc ok", None),
            ("650 x", None),
            ("250_x", None),
        ] {
            let got = parse_line(line).ok();
            assert_eq!(
                got.as_ref().map(|(c, m, t)| (*c, *m, t.as_str())),
                want,
                "{line}"
            );
        }
    }

    #[test]
    fn xtext_encodes() {
        assert_eq!(xtext("a+b=c d@é"), "a+2Bb+3Dc+20d@+C3+A9");
        assert_eq!(xtext("plain<id>"), "plain<id>");
    }

    #[test]
    fn enhanced_codes() {
        for (code, text, want) in [
            (550, "5.1.1 no such user", "5.1.1"),
            (451, "4.7.1 greylisted", "4.7.1"),
            (550, "no such user", "5.0.0"),
            (450, "5.1.1 wrong class", "4.0.0"),
            (250, "ok", "2.0.0"),
        ] {
            let reply = Reply {
                code,
                lines: vec![text.to_string()],
            };
            assert_eq!(reply.enhanced(), want, "{code} {text}");
        }
    }

    #[test]
    fn extensions() {
        let reply = Reply {
            code: 250,
            lines: [
                "mx.test",
                "SIZE 1000",
                "STARTTLS",
                "8BITMIME",
                "AUTH PLAIN login",
                "DSN",
            ]
            .map(String::from)
            .to_vec(),
        };
        let ext = Extensions::parse(&reply);
        assert!(ext.starttls && ext.eightbit && ext.dsn && !ext.smtputf8 && !ext.requiretls);
        assert_eq!(ext.size, Some(1000));
        assert_eq!(ext.auth, vec!["PLAIN", "LOGIN"]);
    }
}

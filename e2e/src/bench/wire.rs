//! Minimal SMTP, IMAP and POP3 clients for the benchmark programs: one command at a time, every
//! wait bounded, bodies counted rather than kept.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// The longest any single reply may take before the client gives up.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(300);

/// A line-oriented connection.
pub struct Conn {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        Self::from_stream(connect_from(addr, None).await?)
    }

    pub fn from_stream(stream: TcpStream) -> anyhow::Result<Self> {
        let _ = stream.set_nodelay(true);
        let (read, writer) = stream.into_split();
        Ok(Self {
            reader: BufReader::with_capacity(64 * 1024, read),
            writer,
        })
    }

    pub async fn write(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        tokio::time::timeout(REPLY_TIMEOUT, self.writer.write_all(bytes))
            .await
            .context("write timed out")??;
        Ok(())
    }

    /// One line with its line end; an error when the server closed the connection.
    pub async fn line(&mut self) -> anyhow::Result<String> {
        let mut line = Vec::new();
        let n = tokio::time::timeout(REPLY_TIMEOUT, self.reader.read_until(b'\n', &mut line))
            .await
            .context("reply timed out")??;
        if n == 0 {
            bail!("connection closed by the server");
        }
        Ok(String::from_utf8_lossy(&line).into_owned())
    }

    /// Reads and drops exactly `n` bytes.
    pub async fn skip(&mut self, n: u64) -> anyhow::Result<()> {
        let mut take = (&mut self.reader).take(n);
        let copied = tokio::time::timeout(
            REPLY_TIMEOUT,
            tokio::io::copy(&mut take, &mut tokio::io::sink()),
        )
        .await
        .context("literal timed out")??;
        if copied != n {
            bail!("connection closed inside a literal");
        }
        Ok(())
    }
}

/// Connects to `addr`, from the loopback address `from` when given (so that load from several
/// "clients" on one machine is told apart by per-address rules).
pub async fn connect_from(
    addr: SocketAddr,
    from: Option<std::net::IpAddr>,
) -> anyhow::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    if let Some(ip) = from {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = tokio::time::timeout(REPLY_TIMEOUT, socket.connect(addr))
        .await
        .context("connect timed out")??;
    Ok(stream)
}

/// An SMTP client.
pub struct Smtp(Conn);

impl Smtp {
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let mut smtp = Self(Conn::connect(addr).await?);
        smtp.expect(220).await?;
        smtp.command("EHLO bench.client", 250).await?;
        Ok(smtp)
    }

    /// The code of a whole (multi-line) reply, and its last line.
    pub async fn reply(&mut self) -> anyhow::Result<(u16, String)> {
        loop {
            let line = self.0.line().await?;
            if line.as_bytes().get(3) != Some(&b'-') {
                let code = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
                return Ok((code, line.trim_end().to_string()));
            }
        }
    }

    pub async fn expect(&mut self, code: u16) -> anyhow::Result<()> {
        let (got, line) = self.reply().await?;
        if got != code {
            bail!("expected {code}, got {line:?}");
        }
        Ok(())
    }

    pub async fn command(&mut self, command: &str, code: u16) -> anyhow::Result<()> {
        self.0.write(format!("{command}\r\n").as_bytes()).await?;
        self.expect(code).await
    }

    /// One transaction; the message must not contain a line with a lone dot.
    pub async fn send(&mut self, from: &str, to: &str, message: &[u8]) -> anyhow::Result<()> {
        self.command(&format!("MAIL FROM:<{from}>"), 250).await?;
        self.command(&format!("RCPT TO:<{to}>"), 250).await?;
        self.command("DATA", 354).await?;
        self.0.write(message).await?;
        self.0.write(b".\r\n").await?;
        self.expect(250).await
    }

    pub async fn quit(mut self) -> anyhow::Result<()> {
        self.command("QUIT", 221).await
    }
}

/// What an IMAP command returned: the text of its lines (literals left out), how many literal
/// bytes came, and the tagged status line.
#[derive(Debug, Default)]
pub struct ImapReply {
    pub text: String,
    pub literal_bytes: u64,
    pub status: String,
}

impl ImapReply {
    pub fn ok(&self) -> bool {
        self.status.split_whitespace().nth(1) == Some("OK")
    }
}

/// An IMAP client.
pub struct Imap {
    conn: Conn,
    next_tag: u64,
}

impl Imap {
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let mut conn = Conn::connect(addr).await?;
        let greeting = conn.line().await?;
        if !greeting.starts_with("* OK") {
            bail!("IMAP greeting {greeting:?}");
        }
        Ok(Self { conn, next_tag: 1 })
    }

    /// Sends `command` under a fresh tag and reads up to its tagged status.
    pub async fn command(&mut self, command: &str) -> anyhow::Result<ImapReply> {
        let tag = format!("b{}", self.next_tag);
        self.next_tag += 1;
        self.conn
            .write(format!("{tag} {command}\r\n").as_bytes())
            .await?;
        let mut reply = ImapReply::default();
        loop {
            let line = self.conn.line().await?;
            if let Some(n) = literal_length(&line) {
                self.conn.skip(n).await?;
                reply.literal_bytes += n;
                reply.text.push_str(&line);
                continue;
            }
            if line.starts_with(&format!("{tag} ")) {
                reply.status = line.trim_end().to_string();
                return Ok(reply);
            }
            reply.text.push_str(&line);
        }
    }

    pub async fn login(addr: SocketAddr, user: &str, password: &str) -> anyhow::Result<Self> {
        let mut imap = Self::connect(addr).await?;
        let reply = imap
            .command(&format!("LOGIN \"{user}\" \"{password}\""))
            .await?;
        if !reply.ok() {
            bail!("LOGIN {user}: {}", reply.status);
        }
        Ok(imap)
    }

    pub async fn logout(mut self) -> anyhow::Result<()> {
        self.command("LOGOUT").await.map(|_| ())
    }
}

/// `{N}` (or `{N+}`) at the end of a response line: a literal of N bytes follows.
fn literal_length(line: &str) -> Option<u64> {
    let body = line.trim_end_matches(['\r', '\n']).strip_suffix('}')?;
    let open = body.rfind('{')?;
    body[open + 1..].trim_end_matches('+').parse().ok()
}

/// A POP3 client.
pub struct Pop3(Conn);

impl Pop3 {
    pub async fn login(addr: SocketAddr, user: &str, password: &str) -> anyhow::Result<Self> {
        let mut pop = Self(Conn::connect(addr).await?);
        pop.status().await?;
        pop.command(&format!("USER {user}")).await?;
        pop.command(&format!("PASS {password}")).await?;
        Ok(pop)
    }

    async fn status(&mut self) -> anyhow::Result<String> {
        let line = self.0.line().await?;
        if !line.starts_with("+OK") {
            bail!("POP3: {}", line.trim_end());
        }
        Ok(line)
    }

    pub async fn command(&mut self, command: &str) -> anyhow::Result<String> {
        self.0.write(format!("{command}\r\n").as_bytes()).await?;
        self.status().await
    }

    /// RETR: the number of bytes of the message as sent (dot-stuffed, up to the final dot).
    pub async fn retr(&mut self, n: u32) -> anyhow::Result<u64> {
        self.command(&format!("RETR {n}")).await?;
        let mut bytes = 0;
        loop {
            let line = self.0.line().await?;
            if line == ".\r\n" {
                return Ok(bytes);
            }
            bytes += line.len() as u64;
        }
    }

    pub async fn quit(mut self) -> anyhow::Result<()> {
        self.command("QUIT").await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_lengths() {
        assert_eq!(literal_length("* 1 FETCH (BODY[] {1234}\r\n"), Some(1234));
        assert_eq!(literal_length("* 1 FETCH (BODY[] {12+}\r\n"), Some(12));
        assert_eq!(literal_length("* OK done\r\n"), None);
        assert_eq!(literal_length("* OK {x}\r\n"), None);
    }
}

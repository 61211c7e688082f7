//! What the POP3 test binaries share: a server with alice's maildrop, a second `mailserver`
//! process on the same database and blob store (another pod), and a raw POP3 client.

// Each test binary uses only part of it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::process::{Child, Command};

use crate::common::TestServer;

pub const USER: &str = "alice@example.test";
pub const PASSWORD: &str = "s3cret pass";
pub const UID_VALIDITY: i64 = 777;
pub const IN_USE: &str = "-ERR [IN-USE] maildrop already locked";
/// Lease time of the second server process: what a killed process leaves behind lasts this.
pub const CHILD_TTL: Duration = Duration::from_secs(2);

pub async fn start() -> TestServer {
    TestServer::builder()
        .hostname("mx.example.test")
        .uid_validity(UID_VALIDITY)
        .domain("example.test")
        .mailbox(USER, Some(PASSWORD))
        .start()
        .await
}

/// A second `mailserver` process on the same database and blob store (another pod).
pub struct Process {
    pub child: Child,
    pub pop3: SocketAddr,
    pub http: SocketAddr,
    _data: tempfile::TempDir,
}

pub async fn spawn(world: &TestServer) -> Process {
    spawn_with_ttl(world, CHILD_TTL).await
}

pub async fn spawn_with_ttl(world: &TestServer, ttl: Duration) -> Process {
    let opts = world.pool().connect_options();
    let url = format!(
        "postgres://postgres@{}:{}/{}",
        opts.get_host(),
        opts.get_port(),
        opts.get_database().expect("database name")
    );
    let data = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_mailserver"))
        .args(["--database-url", &url, "--blob-dir"])
        .arg(world.blob_dir())
        .arg("--data-dir")
        .arg(data.path())
        .args([
            "--listen",
            "pop3=127.0.0.1:0,tls=none",
            "--http-listen",
            "127.0.0.1:0",
            "--hostname",
            "mx2.example.test",
            "--pop3-lock-ttl",
            &ttl.as_secs().to_string(),
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("mailserver starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut found: HashMap<String, SocketAddr> = HashMap::new();
    while let Some(line) = lines.next_line().await.expect("stdout") {
        if line == "ready" {
            break;
        }
        if let Some((name, addr)) = line.split_once(" listening on ") {
            let addr = addr.split(' ').next().expect("address");
            found.insert(name.to_string(), addr.parse().expect("address"));
        }
    }
    // Keep reading stdout so the process never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Process {
        child,
        pop3: found["POP3"],
        http: found["HTTP"],
        _data: data,
    }
}

impl Process {
    /// The value of one series on the process's `/metrics`.
    pub async fn metric(&self, series: &str) -> f64 {
        let mut stream = TcpStream::connect(self.http).await.expect("connect http");
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: test\r\n\r\n")
            .await
            .expect("request");
        let mut body = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut body)
            .await
            .expect("response");
        body.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {series} in {body}"))
            .trim()
            .parse()
            .expect("number")
    }
}

/// A raw POP3 client.
pub struct Pop {
    pub reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Pop {
    pub async fn connect(addr: SocketAddr) -> Self {
        let (read, writer) = TcpStream::connect(addr)
            .await
            .expect("connect")
            .into_split();
        let mut pop = Self {
            reader: BufReader::new(read),
            writer,
        };
        let greeting = pop.read_line().await;
        assert!(greeting.starts_with("+OK "), "{greeting}");
        pop
    }

    pub async fn read_line(&mut self) -> String {
        let mut line = String::new();
        tokio::time::timeout(Duration::from_secs(20), self.reader.read_line(&mut line))
            .await
            .expect("reply in time")
            .expect("read");
        line.trim_end().to_string()
    }

    /// Sends one command and returns its status line.
    pub async fn cmd(&mut self, line: &str) -> String {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .expect("write");
        self.read_line().await
    }

    /// Reads the lines of a multi-line reply up to the final `.`.
    pub async fn lines(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let line = self.read_line().await;
            if line == "." {
                return lines;
            }
            lines.push(line);
        }
    }

    /// USER and PASS; the reply to PASS.
    pub async fn login(&mut self) -> String {
        assert_eq!(self.cmd(&format!("USER {USER}")).await, "+OK send PASS");
        self.cmd(&format!("PASS {PASSWORD}")).await
    }

    pub async fn uidl(&mut self) -> Vec<String> {
        assert!(self.cmd("UIDL").await.starts_with("+OK"));
        self.lines().await
    }
}

/// A new session logged in on `addr`, or the refusal it got.
pub async fn session(addr: SocketAddr) -> Result<Pop, String> {
    let mut pop = Pop::connect(addr).await;
    let reply = pop.login().await;
    if reply.starts_with("+OK") {
        Ok(pop)
    } else {
        Err(reply)
    }
}

/// Logs in on `addr` until it works (the lock freed), failing after `limit`; returns the
/// session and how many logins were refused with `[IN-USE]` before.
pub async fn session_within(addr: SocketAddr, limit: Duration) -> (Pop, u32) {
    let deadline = Instant::now() + limit;
    let mut refused = 0;
    loop {
        match session(addr).await {
            Ok(pop) => return (pop, refused),
            Err(reply) => {
                assert_eq!(reply, IN_USE);
                refused += 1;
                assert!(
                    Instant::now() < deadline,
                    "maildrop still locked after {limit:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

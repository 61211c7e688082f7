//! What the IMAP change-feed tests share: alice's server (process 1, in this test binary), a
//! second `mailserver` process on the same database and blob store (process 2, another pod),
//! and an interactive Python client (`imaplib`, `smtplib`) that can pause for the test to act.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::common::TestServer;

pub const USER: &str = "alice@example.test";
pub const PASSWORD: &str = "s3cret pass";

pub async fn start() -> TestServer {
    TestServer::builder()
        .hostname("mx.example.test")
        .uid_validity(4242)
        .domain("example.test")
        .mailbox(USER, Some(PASSWORD))
        .start()
        .await
}

/// A second `mailserver` process (IMAP only) on the same database and blob store.
pub struct Process {
    pub child: Child,
    pub imap: SocketAddr,
    _data: tempfile::TempDir,
}

pub async fn spawn(world: &TestServer) -> Process {
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
            "imap=127.0.0.1:0,tls=none",
            "--http-listen",
            "127.0.0.1:0",
            "--hostname",
            "mx2.example.test",
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
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Process {
        child,
        imap: found["IMAP"],
        _data: data,
    }
}

/// Python helpers every script gets: `login(port)`, `run(c, command)` (all lines up to the
/// tagged reply), `idle(c)`, `wait_for(c, regex)` (lines up to the match, and seconds),
/// `done(c, tag)`, `send(subject)` over SMTP to process 1, and `pause(name)`, which waits
/// until the test answers [`Client::resume`].
const PRELUDE: &str = r#"
import imaplib, smtplib, json, re, sys, time
def login(port):
    c = imaplib.IMAP4('127.0.0.1', port, timeout=20)
    c.login(user, password)
    return c
def run(c, command):
    tag = c._new_tag().decode()
    c.send(f'{tag} {command}\r\n'.encode())
    lines = []
    while True:
        line = c.readline().decode().rstrip('\r\n')
        lines.append(line)
        if line.startswith(tag + ' '):
            return lines
def idle(c):
    tag = c._new_tag().decode()
    c.send(f'{tag} IDLE\r\n'.encode())
    line = c.readline().decode()
    assert line.startswith('+'), line
    return tag
def wait_for(c, pattern, limit=10.0):
    start = time.perf_counter()
    lines = []
    while True:
        left = limit - (time.perf_counter() - start)
        assert left > 0, f'no {pattern} within {limit} s: {lines}'
        c.sock.settimeout(left)
        line = c.readline().decode().rstrip('\r\n')
        lines.append(line)
        if re.search(pattern, line):
            c.sock.settimeout(20)
            return lines, time.perf_counter() - start
def done(c, tag):
    c.send(b'DONE\r\n')
    lines = []
    while True:
        line = c.readline().decode().rstrip('\r\n')
        lines.append(line)
        if line.startswith(tag + ' '):
            return lines
def send(subject):
    s = smtplib.SMTP('127.0.0.1', smtp, timeout=20)
    s.sendmail('bob@example.test', [user], f'Subject: {subject}\r\n\r\n{subject}\r\n'.encode())
    s.quit()
def pause(name):
    print(json.dumps({'pause': name}), flush=True)
    assert sys.stdin.readline().strip() == 'go'
def report(**values):
    print(json.dumps(values), flush=True)
"#;

/// A running Python client script.
pub struct Client {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Client {
    /// Starts `script` with `smtp` (process 1), `imap1`, `imap2`, `user`, `password` defined.
    pub fn start(world: &TestServer, other: &Process, script: &str) -> Self {
        let program = format!(
            "smtp, imap1, imap2 = {smtp}, {imap1}, {imap2}\nuser, password = {USER:?}, {PASSWORD:?}\n{PRELUDE}\n{script}\n",
            smtp = world.addresses().smtp.port(),
            imap1 = world.addresses().imap.port(),
            imap2 = other.imap.port(),
        );
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(program)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 runs");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        Self {
            child,
            stdin,
            stdout,
        }
    }

    /// The next JSON line the script printed (a `report` or a `pause`).
    pub async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(60), self.stdout.next_line())
            .await
            .expect("script answers in time")
            .expect("read")
            .unwrap_or_else(|| panic!("script ended early (see its stderr)"));
        serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"))
    }

    pub async fn resume(&mut self) {
        self.stdin.write_all(b"go\n").await.expect("write");
        self.stdin.flush().await.expect("flush");
    }

    /// Waits for the script to exit successfully.
    pub async fn finish(mut self) {
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .expect("script ends")
            .expect("wait");
        assert!(status.success(), "script failed (see its stderr)");
    }
}

/// Backends `LISTEN`ing on the change feed (the queue runner listens on a channel of its own).
pub async fn listeners(world: &TestServer) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE 'LISTEN%mail_changes%'")
        .fetch_one(world.pool())
        .await
        .expect("pg_stat_activity")
}

/// Kills every `LISTEN` connection (as a failover or network cut would) and waits until
/// `expected` are back.
pub async fn kill_listeners(world: &TestServer, expected: i64) {
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE 'LISTEN%mail_changes%'",
    )
    .fetch_all(world.pool())
    .await
    .expect("terminate");
    assert_eq!(killed.len() as i64, expected, "one LISTEN per process");
    let deadline = Instant::now() + Duration::from_secs(10);
    while listeners(world).await < expected {
        assert!(Instant::now() < deadline, "LISTEN not re-established");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

//! Hostile clients against a real server (PostgreSQL from the harness, filesystem bodies):
//! what they send never forges a log line, and password checks are capped however many
//! clients ask at once.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use base64::Engine;
use common::TestServer;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const USER: &str = "alice@example.test";
const PASSWORD: &str = "right password";

/// Everything the server logged in this test process.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs (once) a subscriber that logs as the binary does, into a buffer.
fn logs() -> Logs {
    static LOGS: OnceLock<Logs> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Logs::default();
        let writer = logs.clone();
        tracing_subscriber::fmt()
            .with_env_filter("info")
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .init();
        logs
    })
    .clone()
}

async fn start() -> TestServer {
    TestServer::builder()
        .domain("example.test")
        .mailbox(USER, Some(PASSWORD))
        .start()
        .await
}

/// Sends POP3 lines one at a time and returns the replies' first lines.
async fn pop3(world: &TestServer, lines: &[String]) -> Vec<String> {
    let stream = tokio::net::TcpStream::connect(world.addresses().pop3)
        .await
        .expect("connect");
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut replies = Vec::new();
    let mut reply = String::new();
    read.read_line(&mut reply).await.expect("greeting");
    for line in lines {
        write
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .expect("send");
        reply.clear();
        read.read_line(&mut reply).await.expect("reply");
        replies.push(reply.trim_end().to_string());
    }
    replies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pop3_auth_user_names_cannot_forge_log_lines() {
    let logs = logs();
    let world = start().await;
    let forged = "mallory\n2026-01-01T00:00:00Z  INFO FORGED: admin logged in\r\x1b[2K";
    let response =
        base64::engine::general_purpose::STANDARD.encode(format!("\0{forged}\0wrong password"));
    let replies = pop3(
        &world,
        &[format!("AUTH PLAIN {response}"), "QUIT".to_string()],
    )
    .await;
    assert!(replies[0].starts_with("-ERR [AUTH]"), "{replies:?}");
    world.stop().await;

    let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    let line = text
        .lines()
        .find(|line| line.contains("pop3 login failed") && line.contains("mallory"))
        .unwrap_or_else(|| panic!("the failed login is logged:\n{text}"));
    assert!(
        !text.lines().any(|line| line.starts_with("2026-01-01")),
        "a client forged a log line:\n{text}"
    );
    assert!(!text.contains('\r') && !text.contains('\x1b'), "{text:?}");
    assert!(
        line.contains(r"mallory\n2026"),
        "escaped as written: {line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_checks_are_capped_at_the_cores() {
    let world = start().await;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Many clients logging in at once, right and wrong passwords and unknown users alike.
    let count = 8 * cores + 8;
    let logins = (0..count).map(|i| {
        let auth = world.ctx().auth.clone();
        tokio::spawn(async move {
            let (user, password) = match i % 3 {
                0 => (USER, PASSWORD),
                1 => (USER, "wrong"),
                _ => ("nobody@example.test", "x"),
            };
            (i % 3, auth.verify(user, password).await.expect("checked"))
        })
    });
    for login in logins.collect::<Vec<_>>() {
        let (kind, account) = login.await.expect("task");
        assert_eq!(account.is_some(), kind == 0);
    }
    // An unknown user costs a (dummy) verification like a known one.
    assert_eq!(world.ctx().auth.checks_run(), count);
    let peak = world.ctx().auth.peak_concurrent_checks();
    assert!(peak >= 1, "no check was counted");
    assert!(peak <= cores, "{peak} checks ran at once on {cores} cores");
    world.stop().await;
}

//! Rolling restart: two `mailserver` processes on one PostgreSQL and one blob store, SMTP load
//! and IMAP sessions on both; one gets SIGTERM. Every message that got `250` is stored exactly
//! once, its IMAP clients get `* BYE`, `/readyz` turned false first, and it exits within its
//! grace period.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::TestServer;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader, Lines};
use tokio::net::TcpStream;
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::Mutex;

const GRACE: Duration = Duration::from_secs(5);

/// One server process and where it listens.
struct Process {
    child: Child,
    smtp: SocketAddr,
    imap: SocketAddr,
    http: SocketAddr,
    _stdout: Lines<BufReader<ChildStdout>>,
}

async fn spawn(url: &str, blobs: &std::path::Path, data: &std::path::Path) -> Process {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mailserver"))
        .args(["--database-url", url, "--blob-dir"])
        .arg(blobs)
        .arg("--data-dir")
        .arg(data)
        .args([
            "--listen",
            "smtp=127.0.0.1:0,tls=none",
            "--listen",
            "imap=127.0.0.1:0,tls=none",
            "--http-listen",
            "127.0.0.1:0",
            "--grace-period",
            &GRACE.as_secs().to_string(),
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("mailserver starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut found: HashMap<String, SocketAddr> = HashMap::new();
    while let Some(line) = lines.next_line().await.unwrap() {
        if line == "ready" {
            break;
        }
        if let Some((name, addr)) = line.split_once(" listening on ") {
            found.insert(
                name.to_string(),
                addr.split(' ').next().unwrap().parse().unwrap(),
            );
        }
    }
    Process {
        child,
        smtp: found["SMTP"],
        imap: found["IMAP"],
        http: found["HTTP"],
        _stdout: lines,
    }
}

async fn reply<R: AsyncRead + Unpin>(reader: &mut BufReader<R>) -> Option<String> {
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        if line.as_bytes().get(3) != Some(&b'-') {
            return Some(line);
        }
    }
}

/// Sends one message with subject `id` over a new connection; true once it got `250`.
async fn send(addr: SocketAddr, id: &str) -> bool {
    let Ok(stream) = TcpStream::connect(addr).await else {
        return false;
    };
    let mut r = BufReader::new(stream);
    if !reply(&mut r).await.is_some_and(|l| l.starts_with("220")) {
        return false;
    }
    let body = format!("Subject: {id}\r\n\r\nload\r\n.\r\n");
    for (command, want) in [
        ("EHLO load.test\r\n", "250"),
        ("MAIL FROM:<load@else.test>\r\n", "250"),
        ("RCPT TO:<alice@example.test>\r\n", "250"),
        ("DATA\r\n", "354"),
        (body.as_str(), "250"),
    ] {
        if r.get_mut().write_all(command.as_bytes()).await.is_err() {
            return false;
        }
        match reply(&mut r).await {
            Some(line) if line.starts_with(want) => {}
            _ => return false,
        }
    }
    let _ = r.get_mut().write_all(b"QUIT\r\n").await;
    true
}

/// A logged-in IMAP session with INBOX selected.
async fn imap_session(addr: SocketAddr) -> BufReader<TcpStream> {
    let mut r = BufReader::new(TcpStream::connect(addr).await.unwrap());
    let mut line = String::new();
    r.read_line(&mut line).await.unwrap();
    r.get_mut()
        .write_all(b"a LOGIN alice@example.test secret\r\nb SELECT INBOX\r\n")
        .await
        .unwrap();
    loop {
        line.clear();
        r.read_line(&mut line).await.unwrap();
        assert!(!line.is_empty() && !line.starts_with("a NO"), "{line}");
        if line.starts_with("b OK") {
            return r;
        }
    }
}

async fn readyz(addr: SocketAddr) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    stream
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut r = BufReader::new(stream);
    let mut status = String::new();
    r.read_line(&mut status).await.ok()?;
    status.split(' ').nth(1)?.parse().ok()
}

/// A server (and database) with alice, password `secret`.
async fn alice() -> TestServer {
    TestServer::builder()
        .domain("example.test")
        .mailbox("alice@example.test", Some("secret"))
        .start()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_loses_and_duplicates_nothing() {
    let world = alice().await;
    let opts = world.pool().connect_options();
    let url = format!(
        "postgres://postgres@{}:{}/{}",
        opts.get_host(),
        opts.get_port(),
        opts.get_database().unwrap()
    );
    let (data_a, data_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = spawn(&url, world.blob_dir(), data_a.path()).await;
    let b = spawn(&url, world.blob_dir(), data_b.path()).await;
    assert_eq!(readyz(a.http).await, Some(200));

    // Load: eight senders alternating between the two servers until told to stop.
    let accepted = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    for n in 0..8 {
        let (accepted, stop) = (accepted.clone(), stop.clone());
        let targets = [a.smtp, b.smtp];
        senders.push(tokio::spawn(async move {
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let id = format!("m-{n}-{i}");
                if send(targets[i % 2], &id).await {
                    accepted.lock().await.push(id);
                }
                i += 1;
            }
        }));
    }
    let mut on_a = imap_session(a.imap).await;
    let mut on_b = imap_session(b.imap).await;
    // Some mail goes through both before the restart.
    while accepted.lock().await.len() < 20 {
        tokio::task::yield_now().await;
    }

    let term = Instant::now();
    let pid = a.child.id().expect("running").to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(status.success());
    // The IMAP client on A hears BYE.
    let mut said = String::new();
    loop {
        let mut line = String::new();
        if on_a.read_line(&mut line).await.unwrap() == 0 {
            break;
        }
        said.push_str(&line);
    }
    assert!(
        said.contains("* BYE"),
        "IMAP on the stopping server: {said:?}"
    );
    let exit = a.child.wait().await.unwrap();
    let took = term.elapsed();
    assert!(exit.success(), "{exit}");
    assert!(
        took < GRACE + Duration::from_secs(5),
        "exit took {took:?}, grace {GRACE:?}"
    );
    assert_ne!(readyz(a.http).await, Some(200), "gone");

    // B carries on: more mail after A is gone, and its IMAP session still answers.
    let before = accepted.lock().await.len();
    while accepted.lock().await.len() < before + 10 {
        tokio::task::yield_now().await;
    }
    stop.store(true, Ordering::Relaxed);
    for sender in senders {
        sender.await.unwrap();
    }
    on_b.get_mut().write_all(b"c NOOP\r\n").await.unwrap();
    let mut line = String::new();
    loop {
        line.clear();
        on_b.read_line(&mut line).await.unwrap();
        if line.starts_with("c ") {
            break;
        }
    }
    assert!(line.starts_with("c OK"), "{line}");

    let mut stored: HashMap<String, usize> = HashMap::new();
    for (_, body) in world.inbox("alice@example.test").await {
        let text = String::from_utf8_lossy(&body);
        let subject = text
            .lines()
            .find_map(|l| l.strip_prefix("Subject: "))
            .unwrap_or_default()
            .to_string();
        *stored.entry(subject).or_default() += 1;
    }
    let accepted = accepted.lock().await;
    for id in accepted.iter() {
        assert_eq!(
            stored.get(id),
            Some(&1),
            "{id} got 250: stored exactly once"
        );
    }
    println!(
        "{} messages accepted, A exited {took:?} after SIGTERM",
        accepted.len()
    );
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_finishes_data_then_421_with_readyz_false_first() {
    let world = alice().await;
    let addresses = world.addresses();
    // An SMTP client in the middle of DATA, an idle IMAP client and a POP3 client that
    // marked a message deleted.
    world
        .deliver("alice@example.test", b"Subject: keep me\r\n\r\nx\r\n")
        .await;
    let mut smtp = BufReader::new(TcpStream::connect(addresses.smtp).await.unwrap());
    reply(&mut smtp).await.unwrap();
    for command in [
        "EHLO c.test\r\n",
        "MAIL FROM:<x@else.test>\r\n",
        "RCPT TO:<alice@example.test>\r\n",
        "DATA\r\n",
    ] {
        smtp.get_mut().write_all(command.as_bytes()).await.unwrap();
        reply(&mut smtp).await.unwrap();
    }
    smtp.get_mut()
        .write_all(b"Subject: in flight\r\n\r\nfirst half\r\n")
        .await
        .unwrap();
    let mut imap = imap_session(addresses.imap).await;
    let mut pop3 = BufReader::new(TcpStream::connect(addresses.pop3).await.unwrap());
    let mut line = String::new();
    pop3.read_line(&mut line).await.unwrap();
    pop3.get_mut()
        .write_all(b"USER alice@example.test\r\nPASS secret\r\nDELE 1\r\n")
        .await
        .unwrap();
    for _ in 0..3 {
        line.clear();
        pop3.read_line(&mut line).await.unwrap();
        assert!(line.starts_with("+OK"), "{line}");
    }

    let http = addresses.http;
    let stopping = tokio::spawn(world.drain());
    // Not ready while draining (the SMTP client in DATA holds the server open).
    let mut status = readyz(http).await;
    while status == Some(200) {
        tokio::task::yield_now().await;
        status = readyz(http).await;
    }
    assert_eq!(status, Some(503));
    let mut bye = String::new();
    imap.read_line(&mut bye).await.unwrap();
    assert!(bye.starts_with("* BYE"), "{bye}");
    line.clear();
    pop3.read_line(&mut line).await.unwrap();
    assert!(
        line.starts_with("-ERR"),
        "POP3 is closed without UPDATE: {line}"
    );

    // The message in flight is finished and stored, then the 421.
    smtp.get_mut()
        .write_all(b"second half\r\n.\r\n")
        .await
        .unwrap();
    let done = reply(&mut smtp).await.unwrap();
    assert!(done.starts_with("250 "), "{done}");
    let closing = reply(&mut smtp).await.unwrap();
    assert!(closing.starts_with("421 "), "{closing}");
    let world = stopping.await.unwrap();
    let subjects: Vec<String> = world
        .inbox("alice@example.test")
        .await
        .into_iter()
        .map(|(_, body)| String::from_utf8_lossy(&body).into_owned())
        .collect();
    assert!(
        subjects.iter().any(|s| s.contains("keep me")),
        "DELE not committed: {subjects:?}"
    );
    assert!(
        subjects.iter().any(|s| s.contains("in flight")),
        "{subjects:?}"
    );
}

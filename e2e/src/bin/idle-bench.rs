//! IMAP IDLE at scale (issue 14): `--sessions` authenticated sessions of one account, each with
//! INBOX selected and in IDLE, on the real `mailserver` binary (embedded mode). Prints the
//! server's memory per session (PSS from `/proc/<pid>/smaps_rollup`, before and after), the
//! share of sessions told `* n EXISTS` after one SMTP delivery, and p50/p99 from the end of the
//! delivery's DATA to each `EXISTS`. Figures only, no assertions.
//!
//!     ulimit -n 65536
//!     cargo build --release -p mailserver -p mail-e2e && target/release/idle-bench
//!
//! Sessions connect from 127.0.1.x and up ([`client_address`]), so the per-address connection
//! cap holds as on the internet; the client side keeps a 512-byte buffer per session.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use mail_e2e::bench::process::ServerProcess;
use mail_e2e::bench::stats::percentile;
use mail_e2e::bench::users::{self, User};
use mail_e2e::bench::wire::{Smtp, client_address, connect_from};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

#[derive(Parser, Debug)]
struct Args {
    /// IDLE sessions held open at once.
    #[arg(long, default_value_t = 10_000)]
    sessions: usize,
    /// Logins in flight at a time while the sessions are opened.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// How long to wait for every `EXISTS` after the delivery.
    #[arg(long, default_value_t = 30)]
    wait_seconds: u64,
}

/// Proportional set size of `pid` in KiB (shared pages split among their users).
fn pss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

async fn read_line(reader: &mut BufReader<TcpStream>) -> anyhow::Result<String> {
    let mut line = String::new();
    let n = tokio::time::timeout(Duration::from_secs(120), reader.read_line(&mut line))
        .await
        .context("reply timed out")??;
    if n == 0 {
        bail!("connection closed by the server");
    }
    Ok(line)
}

/// Logs in, selects INBOX and enters IDLE; returns the connection once `+ idling` came.
async fn open_idle(
    imap: SocketAddr,
    n: usize,
    password: &str,
) -> anyhow::Result<BufReader<TcpStream>> {
    let stream = connect_from(imap, client_address(n)).await?;
    let mut conn = BufReader::with_capacity(512, stream);
    read_line(&mut conn).await?;
    let commands = [
        format!("a LOGIN \"idle@{}\" \"{password}\"\r\n", users::DOMAIN),
        "b SELECT INBOX\r\n".to_string(),
    ];
    for (command, tag) in commands.iter().zip(["a ", "b "]) {
        conn.get_mut().write_all(command.as_bytes()).await?;
        loop {
            let line = read_line(&mut conn).await?;
            if line.starts_with(tag) {
                if !line.starts_with(&format!("{tag}OK")) {
                    bail!("{}: {line}", command.trim());
                }
                break;
            }
        }
    }
    conn.get_mut().write_all(b"c IDLE\r\n").await?;
    let line = read_line(&mut conn).await?;
    if !line.starts_with('+') {
        bail!("IDLE refused: {line}");
    }
    Ok(conn)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    users::write(
        dir.path(),
        &[User {
            local: "idle",
            quota: "1Gi",
        }],
    )?;
    let cap = (args.sessions / 200 + 10).to_string();
    let server = ServerProcess::start(dir.path(), &["--max-connections-per-ip".to_string(), cap])?;
    let pid = server.pid();
    let imap = server.addr("imap")?;
    let smtp = server.addr("smtp")?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = pss_kib(pid);
    println!(
        "idle-bench: mailserver pid {pid}, {} sessions",
        args.sessions
    );
    println!("  PSS before: {:.1} MiB", before as f64 / 1024.0);

    // Open every session, `concurrency` logins at a time; each then waits for one EXISTS.
    let password = users::password("idle");
    let gate = Arc::new(Semaphore::new(args.concurrency));
    let (opened_tx, mut opened_rx) = tokio::sync::mpsc::channel::<bool>(1024);
    let (sent_tx, sent_rx) = watch::channel(None::<Instant>);
    let wait = Duration::from_secs(args.wait_seconds);
    let started = Instant::now();
    let mut sessions = JoinSet::new();
    for n in 0..args.sessions {
        let gate = gate.clone();
        let password = password.clone();
        let opened_tx = opened_tx.clone();
        let mut sent_rx = sent_rx.clone();
        sessions.spawn(async move {
            let permit = gate.acquire_owned().await.ok();
            let conn = open_idle(imap, n, &password).await;
            drop(permit);
            let _ = opened_tx.send(conn.is_ok()).await;
            let mut conn = conn?;
            let _ = sent_rx.wait_for(|sent| sent.is_some()).await;
            let deadline = Instant::now() + wait;
            loop {
                let line = tokio::time::timeout_at(deadline.into(), read_line(&mut conn))
                    .await
                    .context("no EXISTS in time")??;
                if line.ends_with("EXISTS\r\n") {
                    return anyhow::Ok(Instant::now());
                }
            }
        });
    }
    drop(opened_tx);
    let (mut ok, mut failed) = (0usize, 0usize);
    while ok + failed < args.sessions {
        match opened_rx.recv().await {
            Some(true) => ok += 1,
            Some(false) => failed += 1,
            None => break,
        }
    }
    let opening = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = pss_kib(pid);
    println!(
        "  {ok} sessions in IDLE ({failed} failed to open) in {:.1} s",
        opening.as_secs_f64()
    );
    println!(
        "  PSS after: {:.1} MiB; {:.1} KiB per IDLE session",
        after as f64 / 1024.0,
        after.saturating_sub(before) as f64 / ok.max(1) as f64
    );

    // One delivery; the clock starts as DATA begins (the message is a few hundred bytes).
    let mut client = Smtp::connect(smtp).await?;
    let t0 = Instant::now();
    client
        .send(
            "sender@remote.test",
            &format!("idle@{}", users::DOMAIN),
            b"Subject: wake up\r\n\r\nnew mail\r\n",
        )
        .await?;
    let data_done = t0.elapsed();
    let _ = sent_tx.send(Some(t0));
    client.quit().await?;
    let mut latencies = Vec::new();
    let mut missed = 0usize;
    while let Some(done) = sessions.join_next().await {
        match done {
            Ok(Ok(at)) => latencies.push(at.saturating_duration_since(t0)),
            _ => missed += 1,
        }
    }
    latencies.sort_unstable();
    let told = latencies.len();
    println!(
        "  one delivery (DATA accepted after {:.1} ms): {told} of {ok} IDLE sessions told EXISTS \
         ({:.1} %), {missed} not",
        data_done.as_secs_f64() * 1000.0,
        told as f64 * 100.0 / ok.max(1) as f64
    );
    if told > 0 {
        println!(
            "  delivery -> EXISTS: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            percentile(&latencies, 0.50).as_secs_f64() * 1000.0,
            percentile(&latencies, 0.99).as_secs_f64() * 1000.0,
            latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        );
    }
    server.stop(Duration::from_secs(30))?;
    Ok(())
}

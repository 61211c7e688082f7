//! Login burst: N IMAP logins (LOGIN, then LOGOUT), C at a time, against a running mail
//! server; prints the server's RSS before, at its peak and after the burst, and the logins
//! per second. Either point it at a server (`--imap ADDR --pid PID`) or let it start the
//! embedded default itself (`--server target/release/mailserver`).
//!
//!     cargo build --release -p mailserver -p mail-e2e
//!     target/release/login-burst --server target/release/mailserver --logins 2000 \
//!         --concurrency 50

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader as AsyncBufReader};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

#[derive(Parser, Debug)]
struct Args {
    /// The mailserver binary to start (embedded default, `--ephemeral`, examples applied).
    #[arg(long, conflicts_with_all = ["imap", "pid"])]
    server: Option<PathBuf>,
    /// IMAP address of a running server.
    #[arg(long, requires = "pid")]
    imap: Option<SocketAddr>,
    /// Process id of that server, to read its RSS.
    #[arg(long)]
    pid: Option<u32>,
    #[arg(long, default_value = "alice@example.test")]
    user: String,
    #[arg(long, default_value = "alice-example-pw")]
    password: String,
    /// Logins in all.
    #[arg(long, default_value_t = 2000)]
    logins: usize,
    /// Logins at the same time.
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
    /// How long to wait after the burst before the last RSS reading.
    #[arg(long, default_value_t = 5)]
    settle_seconds: u64,
}

/// Kills a server we started.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the embedded default on free ports; returns it and its IMAP address.
fn start(binary: &PathBuf) -> anyhow::Result<(Server, SocketAddr)> {
    let mut child = Command::new(binary)
        .args(["--ephemeral", "--manifests", "examples"])
        .args([
            "--smtp-listen",
            "127.0.0.1:0",
            "--imap-listen",
            "127.0.0.1:0",
        ])
        .args([
            "--pop3-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let stdout = child.stdout.take().context("stdout")?;
    let server = Server(child);
    let mut imap = None;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if let Some(addr) = line.strip_prefix("IMAP listening on ") {
            imap = Some(addr.parse()?);
        } else if line == "ready" {
            return Ok((server, imap.context("no IMAP line")?));
        }
    }
    bail!("the server exited before it was ready")
}

/// Resident set size of `pid` in KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")
}

async fn login(addr: SocketAddr, user: &str, password: &str) -> anyhow::Result<()> {
    let (read, mut write) = TcpStream::connect(addr).await?.into_split();
    let mut read = AsyncBufReader::new(read);
    let mut line = String::new();
    read.read_line(&mut line).await?;
    write
        .write_all(format!("a LOGIN \"{user}\" \"{password}\"\r\nb LOGOUT\r\n").as_bytes())
        .await?;
    let mut ok = false;
    loop {
        line.clear();
        if read.read_line(&mut line).await? == 0 {
            break;
        }
        ok |= line.starts_with("a OK");
        if line.starts_with("b ") {
            break;
        }
    }
    if !ok {
        bail!("login refused: {}", line.trim_end());
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (_server, addr, pid) = match (&args.server, args.imap, args.pid) {
        (Some(binary), _, _) => {
            let (server, addr) = start(binary)?;
            let pid = server.0.id();
            (Some(server), addr, pid)
        }
        (None, Some(addr), Some(pid)) => (None, addr, pid),
        _ => bail!("give --server, or --imap and --pid"),
    };
    let before = rss_kib(pid)?;
    let peak = Arc::new(AtomicU64::new(before));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                if let Ok(rss) = rss_kib(pid) {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    let started = Instant::now();
    let permits = Arc::new(Semaphore::new(args.concurrency));
    let mut tasks = Vec::with_capacity(args.logins);
    for _ in 0..args.logins {
        let permit = permits.clone().acquire_owned().await?;
        let (user, password) = (args.user.clone(), args.password.clone());
        tasks.push(tokio::spawn(async move {
            let result = login(addr, &user, &password).await;
            drop(permit);
            result
        }));
    }
    let mut failed = 0;
    for task in tasks {
        if task.await?.is_err() {
            failed += 1;
        }
    }
    let elapsed = started.elapsed();
    tokio::time::sleep(Duration::from_secs(args.settle_seconds)).await;
    sampler.abort();
    let after = rss_kib(pid)?;
    let peak = peak.load(Ordering::Relaxed);
    println!(
        "{} logins, {} at a time: {:.1} s, {:.0} logins/s, {failed} failed",
        args.logins,
        args.concurrency,
        elapsed.as_secs_f64(),
        args.logins as f64 / elapsed.as_secs_f64()
    );
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "server RSS: before {:.1} MiB, peak {:.1} MiB, after {:.1} MiB ({}s later; {:.2}x before)",
        mib(before),
        mib(peak),
        mib(after),
        args.settle_seconds,
        after as f64 / before as f64
    );
    Ok(())
}

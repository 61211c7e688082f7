//! SMTP load: N messages of S bytes over C concurrent sessions into local mailboxes, on the
//! whole stack (test-harness PostgreSQL, Garage or the filesystem store, `examples/` applied,
//! the mail server in this process). Verifies that every message arrived and prints messages
//! per second and per-message latency (MAIL FROM to the `250` after DATA).
//!
//!     cargo run --release -p mail-e2e --bin smtp-load -- --messages 10000 --size 10240 \
//!         --concurrency 50 --blobs garage

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, bail};
use clap::{Parser, ValueEnum};
use mail_blobstore::{BlobStore, FsBlobStore, S3BlobStore};
use mail_e2e::bench::stats::{message, percentile};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

#[derive(Parser, Debug)]
struct Args {
    /// Messages to send in all.
    #[arg(long, default_value_t = 10_000)]
    messages: usize,
    /// Size of each message in bytes (headers included).
    #[arg(long, default_value_t = 10 * 1024)]
    size: usize,
    /// Concurrent SMTP sessions.
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
    /// Where message bodies go.
    #[arg(long, value_enum, default_value_t = Blobs::Garage)]
    blobs: Blobs,
    /// SPF, DKIM, ARC and DMARC on every message, against a local BIND serving the sender's
    /// SPF and DMARC records.
    #[arg(long)]
    sender_auth: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Blobs {
    Garage,
    Filesystem,
}

/// A minimal SMTP client for load: one reply per command, no pipelining.
struct Client {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    line: String,
}

impl Client {
    async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let (read, writer) = TcpStream::connect(addr).await?.into_split();
        let mut client = Self {
            reader: BufReader::new(read),
            writer,
            line: String::new(),
        };
        client.expect(220).await?;
        client.command(b"EHLO load.test\r\n", 250).await?;
        Ok(client)
    }

    /// Reads a whole (multi-line) reply and checks its code.
    async fn expect(&mut self, code: u16) -> anyhow::Result<()> {
        loop {
            self.line.clear();
            if self.reader.read_line(&mut self.line).await? == 0 {
                bail!("connection closed while waiting for {code}");
            }
            if self.line.as_bytes().get(3) != Some(&b'-') {
                break;
            }
        }
        if !self.line.starts_with(&code.to_string()) {
            bail!("expected {code}, got {:?}", self.line.trim_end());
        }
        Ok(())
    }

    async fn command(&mut self, bytes: &[u8], code: u16) -> anyhow::Result<()> {
        self.writer.write_all(bytes).await?;
        self.expect(code).await
    }

    async fn send(&mut self, rcpt: &str, message: &[u8]) -> anyhow::Result<()> {
        self.command(b"MAIL FROM:<load@sender.test>\r\n", 250)
            .await?;
        self.command(format!("RCPT TO:<{rcpt}>\r\n").as_bytes(), 250)
            .await?;
        self.command(b"DATA\r\n", 354).await?;
        self.writer.write_all(message).await?;
        self.command(b".\r\n", 250).await
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let blobs: Arc<dyn BlobStore> = match args.blobs {
        Blobs::Garage => {
            let config = tokio::task::spawn_blocking(|| mail_testkit::garage().s3_config())
                .await
                .context("garage")?;
            Arc::new(S3BlobStore::new(&config))
        }
        Blobs::Filesystem => {
            let dir = tempfile::tempdir()?.keep();
            Arc::new(FsBlobStore::new(dir))
        }
    };
    // Kept alive for the run: the checks query it.
    let mut dns = None;
    let mut settings = mailserver::context::Settings::default();
    if args.sender_auth {
        let named = tokio::task::spawn_blocking(|| {
            mail_testkit::Named::start(&[(
                "sender.test",
                "@ IN TXT \"v=spf1 ip4:127.0.0.1 -all\"\n_dmarc IN TXT \"v=DMARC1; p=none\"\n",
            )])
        })
        .await
        .context("named")?;
        settings.pipeline.authentication = true;
        settings.pipeline.dns_server = Some(named.address());
        dns = Some(named);
    }
    let any = "127.0.0.1:0".parse()?;
    let config = mailserver::server::ServerConfig::plain(mailserver::Addresses::all(any));
    let stack = mail_e2e::start_with_settings(blobs, config, settings).await;
    let smtp = stack.server.addresses.smtp;
    let rcpts = ["alice@example.test", "bob@example.test"];

    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut sessions = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency.max(1) {
        let next = next.clone();
        let (total, size) = (args.messages, args.size);
        sessions.spawn(async move {
            let mut client = Client::connect(smtp).await?;
            let mut latencies = Vec::new();
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= total {
                    break;
                }
                let body = message(size, rcpts[n % rcpts.len()], &format!("load-{n}"));
                let sent = Instant::now();
                client.send(rcpts[n % rcpts.len()], &body).await?;
                latencies.push(sent.elapsed());
            }
            client.command(b"QUIT\r\n", 221).await?;
            anyhow::Ok(latencies)
        });
    }
    let mut latencies = Vec::with_capacity(args.messages);
    while let Some(done) = sessions.join_next().await {
        latencies.extend(done??);
    }
    let elapsed = started.elapsed();

    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM messages")
        .fetch_one(&stack.pool)
        .await?;
    latencies.sort_unstable();
    println!(
        "smtp-load: {} messages of {} bytes over {} sessions, bodies on {:?}, sender checks {}",
        args.messages,
        args.size,
        args.concurrency,
        args.blobs,
        if dns.is_some() { "on" } else { "off" }
    );
    println!(
        "  {:.1} s, {:.0} messages/s; latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        elapsed.as_secs_f64(),
        args.messages as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.50).as_secs_f64() * 1000.0,
        percentile(&latencies, 0.99).as_secs_f64() * 1000.0,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1000.0,
    );
    println!("  stored {stored} of {} messages", args.messages);
    stack.server.shutdown().await;
    if stored != args.messages as i64 {
        bail!(
            "{} messages were acknowledged but {stored} stored",
            args.messages
        );
    }
    Ok(())
}

//! Outbound rate: N messages of S bytes enqueued through the queue's API, then delivered by one
//! queue runner (MX lookups against a local named, one SMTP transaction per message) into a
//! small Rust SMTP sink on loopback. Prints the enqueue rate, the delivery rate and checks the
//! sink got every message exactly once.
//!
//!     cargo run --release -p mail-e2e --bin queue-out -- --messages 5000 --size 10240

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use bytes::Bytes;
use clap::Parser;
use mail_blobstore::{BlobSource, BlobStore, FsBlobStore};
use mail_e2e::bench::stats::message;
use mailserver::outbound::{Outbound, OutboundConfig};
use mailserver::queue::runner::{Runner, RunnerSettings};
use mailserver::queue::{Body, Envelope, Queue, QueueSettings, QueuedRecipient};
use mailserver::store::Store;
use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

#[derive(Parser, Debug)]
struct Args {
    /// Messages to deliver in all (one recipient each).
    #[arg(long, default_value_t = 5_000)]
    messages: usize,
    /// Size of each message in bytes.
    #[arg(long, default_value_t = 10 * 1024)]
    size: usize,
    /// Messages the runner delivers at the same time.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Concurrent enqueuers.
    #[arg(long, default_value_t = 16)]
    enqueuers: usize,
}

/// Accepts every message; records each recipient.
async fn sink(listener: TcpListener, seen: Arc<Mutex<Vec<String>>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let seen = seen.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut reader = BufReader::new(read);
            let _ = write.write_all(b"220 sink ESMTP\r\n").await;
            let mut line = String::new();
            let mut rcpts = Vec::new();
            loop {
                line.clear();
                if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                let upper = line.to_ascii_uppercase();
                let reply: &[u8] = if upper.starts_with("EHLO") {
                    b"250-sink\r\n250-8BITMIME\r\n250 SIZE 100000000\r\n"
                } else if upper.starts_with("RCPT TO:") {
                    rcpts.push(line[8..].trim().trim_matches(['<', '>']).to_string());
                    b"250 ok\r\n"
                } else if upper.starts_with("DATA") {
                    let _ = write.write_all(b"354 go\r\n").await;
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if line == ".\r\n" {
                            break;
                        }
                    }
                    if let Ok(mut seen) = seen.lock() {
                        seen.append(&mut rcpts);
                    }
                    b"250 queued\r\n"
                } else if upper.starts_with("QUIT") {
                    let _ = write.write_all(b"221 bye\r\n").await;
                    return;
                } else {
                    b"250 ok\r\n"
                };
                if write.write_all(reply).await.is_err() {
                    return;
                }
            }
        });
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dns = tokio::task::spawn_blocking(|| {
        mail_testkit::Named::start(&[(
            "sink.test",
            "@ IN MX 10 mx.sink.test.\nmx IN A 127.0.0.1\n",
        )])
    })
    .await?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    tokio::spawn(sink(listener, seen.clone()));

    let url = tokio::task::spawn_blocking(mail_testkit::fresh_database).await?;
    let pool = PgPool::connect(&url).await?;
    mail_provision::migrate(&pool).await?;
    sqlx::query("INSERT INTO domains (name, bucket) VALUES ('example.test', 'example-test')")
        .execute(&pool)
        .await?;
    let dir = tempfile::tempdir()?;
    let blobs = Arc::new(FsBlobStore::new(dir.path()));
    blobs.create_bucket("example-test").await?;
    let store = Store::new(pool.clone(), blobs);
    let settings = QueueSettings {
        hostname: "bench.example.test".into(),
        ..QueueSettings::default()
    };
    let queue = Queue::new(store.clone(), settings);

    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut enqueuers = tokio::task::JoinSet::new();
    for _ in 0..args.enqueuers.max(1) {
        let (queue, next) = (queue.clone(), next.clone());
        let (total, size) = (args.messages, args.size);
        enqueuers.spawn(async move {
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= total {
                    return anyhow::Ok(());
                }
                let to = format!("r{n}@sink.test");
                let raw = message(size, &to, &format!("out-{n}"));
                queue
                    .enqueue(
                        Envelope {
                            from: "load@example.test".into(),
                            rcpts: vec![QueuedRecipient::new(&to)],
                            ..Envelope::default()
                        },
                        Body::Source {
                            bucket: None,
                            source: BlobSource::Bytes(Bytes::from(raw)),
                        },
                    )
                    .await?;
            }
        });
    }
    while let Some(done) = enqueuers.join_next().await {
        done??;
    }
    let enqueue_time = started.elapsed();

    let outbound = Outbound::new(OutboundConfig {
        hostname: "bench.example.test".into(),
        dns_server: Some(dns.address()),
        smtp_port: port,
        ..OutboundConfig::default()
    })?;
    let runner = Arc::new(Runner::new(
        queue,
        Arc::new(outbound),
        RunnerSettings {
            concurrency: args.concurrency,
            poll: Duration::from_millis(20),
            ..RunnerSettings::default()
        },
    ));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let task = runner.spawn(stopped);
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM queue")
            .fetch_one(&pool)
            .await?;
        if left == 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!("{left} messages still queued after 600 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deliver_time = started.elapsed();
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;

    let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    let distinct: HashSet<&String> = seen.iter().collect();
    if seen.len() != args.messages || distinct.len() != args.messages {
        bail!(
            "sink got {} messages for {} recipients, {} expected",
            seen.len(),
            distinct.len(),
            args.messages
        );
    }
    let n = args.messages as f64;
    println!(
        "enqueued {} x {} B with {} enqueuers in {:.2} s: {:.0} msg/s",
        args.messages,
        args.size,
        args.enqueuers,
        enqueue_time.as_secs_f64(),
        n / enqueue_time.as_secs_f64()
    );
    println!(
        "delivered {} to the sink (one SMTP transaction each, concurrency {}) in {:.2} s: {:.0} msg/s",
        args.messages,
        args.concurrency,
        deliver_time.as_secs_f64(),
        n / deliver_time.as_secs_f64()
    );
    println!("every message arrived exactly once");
    drop(dns);
    Ok(())
}

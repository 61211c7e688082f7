//! Memory under load: the figures issue 10 asks for, on the real `mailserver` binary (embedded
//! mode: its own PostgreSQL, filesystem blobs), measured from `/proc/<pid>/status`.
//!
//! 1. idle RSS of a started server;
//! 2. `--sessions` concurrent SMTP sessions each sending one `--size` message: peak RSS;
//! 3. `FETCH 1:* BODY.PEEK[]` of a folder holding `--fetch-mib`: peak RSS above idle;
//! 4. `--logins` IMAP logins, `--login-concurrency` at a time: peak, and RSS once they logged out;
//! 5. RSS after all of it against the idle figure.
//!
//!     cargo build --release -p mailserver -p mail-e2e && target/release/memory
//!
//! (with `CARGO_TARGET_DIR` set, the binaries are under that directory's `release/`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use mail_e2e::bench::process::{PeakSampler, ServerProcess};
use mail_e2e::bench::users::{self, User};
use mail_e2e::bench::wire::{Imap, Smtp, client_address};
use tokio::task::JoinSet;

#[derive(Parser, Debug)]
struct Args {
    /// Concurrent SMTP sessions, one message each.
    #[arg(long, default_value_t = 200)]
    sessions: usize,
    /// Size of each SMTP message, in MiB.
    #[arg(long, default_value_t = 20)]
    size_mib: usize,
    /// How much of that mail goes into the folder that is then fetched whole, in MiB.
    #[arg(long, default_value_t = 500)]
    fetch_mib: usize,
    /// IMAP logins in all.
    #[arg(long, default_value_t = 2000)]
    logins: usize,
    /// IMAP logins at a time.
    #[arg(long, default_value_t = 50)]
    login_concurrency: usize,
}

const SINKS: usize = 8;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let sinks: Vec<String> = (0..SINKS).map(|i| format!("sink{i}")).collect();
    let mut accounts = vec![
        User {
            local: "fetch",
            quota: "100Gi",
        },
        User {
            local: "login",
            quota: "1Gi",
        },
    ];
    accounts.extend(sinks.iter().map(|local| User {
        local,
        quota: "100Gi",
    }));
    users::write(dir.path(), &accounts)?;

    let mut server = ServerProcess::start(dir.path(), &[])?;
    let memory = server.memory();
    let smtp = server.addr("smtp")?;
    let imap = server.addr("imap")?;
    let idle = memory.settled_rss_mib(Duration::from_secs(20));
    println!(
        "memory: mailserver pid {} (embedded mode, filesystem blobs)",
        server.pid()
    );
    println!("  idle RSS after start: {idle:.1} MiB");

    // 2. Many large messages at once.
    let size = args.size_mib << 20;
    let to_fetch = (args.fetch_mib / args.size_mib.max(1)).min(args.sessions);
    let body = Arc::new(mail_e2e::bench::stats::message(
        size,
        "bench@bench.test",
        "body",
    ));
    memory.reset_peak();
    let sampler = PeakSampler::start(memory);
    let started = Instant::now();
    let mut sessions = JoinSet::new();
    for n in 0..args.sessions {
        let body = body.clone();
        let rcpt = if n < to_fetch {
            "fetch@bench.test".to_string()
        } else {
            format!("{}@{}", sinks[n % SINKS], users::DOMAIN)
        };
        sessions.spawn(async move {
            let mut client = Smtp::connect_from(smtp, client_address(n)).await?;
            // A distinct header per message, so no two bodies share a content key.
            let header = format!("X-Bench-Message: {n}\r\n");
            let mut message = Vec::with_capacity(header.len() + body.len());
            message.extend_from_slice(header.as_bytes());
            message.extend_from_slice(&body);
            client.send("bench@sender.test", &rcpt, &message).await?;
            drop(message);
            client.quit().await
        });
    }
    let mut failed = 0;
    while let Some(done) = sessions.join_next().await {
        if let Err(err) = done.context("session task")? {
            failed += 1;
            eprintln!("  smtp session failed: {err:#}");
        }
    }
    let smtp_peak = sampler.finish().max(memory.peak_mib());
    let smtp_after = memory.settled_rss_mib(Duration::from_secs(20));
    println!(
        "  {} SMTP sessions x {} MiB at once: {:.1} s, {} failed; peak RSS {smtp_peak:.1} MiB \
         (target < 300), after {smtp_after:.1} MiB",
        args.sessions,
        args.size_mib,
        started.elapsed().as_secs_f64(),
        failed
    );

    // 3. One folder fetched whole.
    let mut client = Imap::login(imap, "fetch@bench.test", &users::password("fetch")).await?;
    let selected = client.command("SELECT INBOX").await?;
    memory.reset_peak();
    let sampler = PeakSampler::start(memory);
    let started = Instant::now();
    let fetched = client.command("FETCH 1:* BODY.PEEK[]").await?;
    let fetch_peak = sampler.finish().max(memory.peak_mib());
    client.logout().await?;
    if !fetched.ok() {
        bail!("FETCH failed: {} ({})", fetched.status, selected.status);
    }
    println!(
        "  FETCH 1:* BODY.PEEK[] of {:.0} MiB in {:.1} s: peak RSS {fetch_peak:.1} MiB, \
         {:.1} MiB above idle (target < 100)",
        fetched.literal_bytes as f64 / 1048576.0,
        started.elapsed().as_secs_f64(),
        fetch_peak - idle
    );

    // 4. A morning's logins.
    memory.reset_peak();
    let sampler = PeakSampler::start(memory);
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = JoinSet::new();
    for worker in 0..args.login_concurrency.max(1) {
        let next = next.clone();
        let total = args.logins;
        workers.spawn(async move {
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < total {
                let from = client_address(worker);
                Imap::login_from(imap, from, "login@bench.test", &users::password("login"))
                    .await?
                    .logout()
                    .await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = workers.join_next().await {
        done??;
    }
    let login_peak = sampler.finish().max(memory.peak_mib());
    let login_after = memory.settled_rss_mib(Duration::from_secs(20));
    println!(
        "  {} IMAP logins {} at a time: {:.1} s ({:.0}/s); peak RSS {login_peak:.1} MiB, after \
         {login_after:.1} MiB = {:.2}x idle (target < 2x)",
        args.logins,
        args.login_concurrency,
        started.elapsed().as_secs_f64(),
        args.logins as f64 / started.elapsed().as_secs_f64(),
        login_after / idle
    );

    let last = memory.settled_rss_mib(Duration::from_secs(20));
    println!(
        "  RSS after all bursts: {last:.1} MiB = {:.2}x idle (target < 2x)",
        last / idle
    );
    if !server.alive() {
        bail!("the server died during the run");
    }
    server.stop(Duration::from_secs(30))?;
    Ok(())
}

//! auth-bench: IMAP logins per second through LDAP (password cache off and on) and through the
//! local argon2 hash, then the CPU a flood of bad logins holds while one good client keeps
//! logging in (its latency). In-process server on real PostgreSQL and real slapd from the test
//! harness; prints figures, asserts nothing.
//!
//!     cargo run --release -p mail-e2e --bin auth-bench -- --logins 400 --concurrency 8

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, SaltString, rand_core::OsRng};
use clap::Parser;
use mail_blobstore::FsBlobStore;
use mail_e2e::bench::stats::summary;
use mail_e2e::bench::wire::{Conn, client_address, connect_from};
use mail_testkit::Slapd;
use mailserver::auth::Authenticator;
use mailserver::auth::ldap::Directories;
use mailserver::auth::ldap::settings::{self, DirectorySettings};
use mailserver::context::Settings;
use mailserver::server::ServerConfig;
use mailserver::store::Store;
use mailserver::{Addresses, Context, RunningServer};
use sqlx::PgPool;

#[derive(Parser, Debug)]
struct Args {
    /// Logins per measured run.
    #[arg(long, default_value_t = 400)]
    logins: usize,
    /// Clients logging in at the same time (each its own user and loopback address).
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Clients sending wrong passwords in the flood.
    #[arg(long, default_value_t = 32)]
    flood_clients: usize,
    #[arg(long, default_value_t = 10)]
    flood_seconds: u64,
}

const PASSWORD: &str = "bench-password";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let users = args.concurrency.max(1);
    let slapd = tokio::task::spawn_blocking(move || {
        let slapd = Slapd::start(false);
        let ldif: Vec<String> = (0..users)
            .map(|i| {
                Slapd::person(
                    &format!("u{i}"),
                    &[&format!("u{i}@corp.test")],
                    PASSWORD,
                    &[],
                )
            })
            .collect();
        slapd.add(&ldif.join("\n"));
        slapd
    })
    .await?;
    let url = tokio::task::spawn_blocking(mail_testkit::fresh_database).await?;
    let pool = PgPool::connect(&url).await?;
    mail_provision::migrate(&pool).await?;
    let blobs = tempfile::tempdir()?;
    sqlx::query(
        "INSERT INTO domains (name, bucket, directory) VALUES ('corp.test', 'corp', 'corp'),
                                                              ('local.test', 'local', NULL)",
    )
    .execute(&pool)
    .await?;
    let hash = Argon2::default()
        .hash_password(PASSWORD.as_bytes(), &SaltString::generate(&mut OsRng))
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .to_string();
    for i in 0..users {
        sqlx::query(
            "INSERT INTO mailboxes (domain_id, address, quota_bytes, password_hash)
             SELECT id, $1, 1000000, $2 FROM domains WHERE name = 'local.test'",
        )
        .bind(format!("l{i}@local.test"))
        .bind(&hash)
        .execute(&pool)
        .await?;
    }
    println!(
        "auth-bench: {} logins per run, {} at a time, {} cores",
        args.logins,
        users,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );

    for (label, cache_ttl, domain) in [
        ("LDAP, cache off", 0, "corp.test"),
        ("LDAP, cache on ", 60, "corp.test"),
        ("local argon2id ", 0, "local.test"),
    ] {
        let server = start(&pool, blobs.path(), &slapd, cache_ttl).await?;
        let prefix = if domain == "corp.test" { "u" } else { "l" };
        let names: Vec<String> = (0..users)
            .map(|i| format!("{prefix}{i}@{domain}"))
            .collect();
        // One round first so pools, caches and the database are warm.
        run_logins(server.addresses.imap, &names, users, users).await?;
        let cpu = Cpu::start();
        let started = Instant::now();
        let mut latencies = run_logins(server.addresses.imap, &names, args.logins, users).await?;
        let elapsed = started.elapsed();
        println!(
            "{label}: {:.0} logins/s, {:.2} cores busy; {}",
            args.logins as f64 / elapsed.as_secs_f64(),
            cpu.cores(),
            summary(&mut latencies)
        );
        server.shutdown().await;
    }

    // The flood: wrong passwords for local users from many addresses; one good client.
    let server = start(&pool, blobs.path(), &slapd, 60).await?;
    let imap = server.addresses.imap;
    let stop = Arc::new(AtomicBool::new(false));
    let bad = Arc::new(AtomicU64::new(0));
    let mut flood = Vec::new();
    for n in 0..args.flood_clients {
        let (stop, bad) = (stop.clone(), bad.clone());
        let user = format!("l{}@local.test", n % users);
        flood.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if login(imap, n + 1000, &user, "wrong-password").await.is_ok() {
                    bad.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let cpu = Cpu::start();
    let deadline = Instant::now() + Duration::from_secs(args.flood_seconds);
    let mut good = Vec::new();
    while Instant::now() < deadline {
        let started = Instant::now();
        if login(imap, 0, "l0@local.test", PASSWORD).await? {
            good.push(started.elapsed());
        } else {
            bail!("the good login was refused during the flood");
        }
    }
    let cores = cpu.cores();
    stop.store(true, Ordering::Relaxed);
    for task in flood {
        let _ = task.await;
    }
    println!(
        "flood of {} bad clients: {:.0} bad logins/s answered, {:.2} cores busy; good client {}",
        args.flood_clients,
        bad.load(Ordering::Relaxed) as f64 / args.flood_seconds as f64,
        cores,
        summary(&mut good)
    );
    server.shutdown().await;
    drop(slapd);
    Ok(())
}

async fn start(
    pool: &PgPool,
    blobs: &std::path::Path,
    slapd: &Slapd,
    cache_ttl: u64,
) -> anyhow::Result<RunningServer> {
    let yaml = format!(
        "name: corp\nurls: [{}]\nbindDn: \"{}\"\nbindPasswordFile: {}\nbase: \"{}\"\n\
         cacheTtlSeconds: {cache_ttl}\npoolSize: 8\n",
        slapd.url(),
        Slapd::ADMIN_DN,
        slapd.admin_password_file().display(),
        Slapd::PEOPLE
    );
    let parsed: DirectorySettings = serde_yaml::from_str(&yaml)?;
    let directories = Arc::new(Directories::new(vec![
        settings::resolve(parsed).map_err(anyhow::Error::msg)?,
    ]));
    let ctx = Arc::new(Context {
        store: Store::new(pool.clone(), Arc::new(FsBlobStore::new(blobs)))
            .with_directories(directories.clone()),
        auth: Authenticator::new(pool.clone()).with_directories(directories),
        settings: Settings::default(),
    });
    let any: SocketAddr = "127.0.0.1:0".parse()?;
    let mut config = ServerConfig::plain(Addresses::all(any));
    config.policy.max_per_ip = 10_000;
    RunningServer::start_with(ctx, config).await
}

/// `logins` logins, `concurrency` at a time, user `i % users.len()` from address `i`; the
/// latency of each.
async fn run_logins(
    imap: SocketAddr,
    users: &[String],
    logins: usize,
    concurrency: usize,
) -> anyhow::Result<Vec<Duration>> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let (next, users) = (next.clone(), users.to_vec());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= logins {
                    return anyhow::Ok(latencies);
                }
                let started = Instant::now();
                if !login(imap, worker, &users[worker % users.len()], PASSWORD).await? {
                    bail!("login of {} refused", users[worker % users.len()]);
                }
                latencies.push(started.elapsed());
            }
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    Ok(all)
}

/// One IMAP LOGIN and LOGOUT on a new connection from client address `n`; whether it was OK.
async fn login(imap: SocketAddr, n: usize, user: &str, password: &str) -> anyhow::Result<bool> {
    let mut conn = Conn::from_stream(connect_from(imap, client_address(n)).await?)?;
    let greeting = conn.line().await?;
    if !greeting.starts_with("* OK") {
        bail!("greeting: {greeting}");
    }
    conn.write(format!("a LOGIN \"{user}\" \"{password}\"\r\n").as_bytes())
        .await?;
    let ok = loop {
        let line = conn.line().await.context("LOGIN reply")?;
        if let Some(rest) = line.strip_prefix("a ") {
            break rest.starts_with("OK");
        }
    };
    conn.write(b"b LOGOUT\r\n").await?;
    Ok(ok)
}

/// CPU time of this process (server and clients together) over a stretch of wall time.
struct Cpu {
    wall: Instant,
    ticks: u64,
}

impl Cpu {
    fn start() -> Self {
        Self {
            wall: Instant::now(),
            ticks: process_ticks(),
        }
    }

    /// Cores kept busy on average since the start.
    fn cores(&self) -> f64 {
        let ticks = process_ticks().saturating_sub(self.ticks) as f64 / 100.0;
        ticks / self.wall.elapsed().as_secs_f64()
    }
}

/// utime + stime of this process in clock ticks (100 per second on Linux).
fn process_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // After the command name: state is field 0, utime 11, stime 12.
    field(11) + field(12)
}

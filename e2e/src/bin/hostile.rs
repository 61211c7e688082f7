//! The hostile client: every attack of issue 10 at once against the real `mailserver` binary,
//! while a well-behaved client keeps sending and reading mail. Prints the good client's latency
//! without and with the attacks, what each attack got, the server's peak RSS, and whether the
//! server process survived (it must never restart).
//!
//!     cargo build --release -p mailserver -p mail-e2e && target/release/hostile --seconds 30
//!
//! Attackers connect from 127.0.0.2 and up, the good client from 127.0.0.1, so per-address
//! limits hit the attackers only — as they would on the internet. Everything stays on loopback
//! and stops by itself after `--seconds`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Parser;
use mail_e2e::bench::process::{PeakSampler, ServerProcess};
use mail_e2e::bench::stats::{message, summary};
use mail_e2e::bench::users::{self, User};
use mail_e2e::bench::wire::{Conn, Imap, Pop3, Smtp, connect_from};
use tokio::io::AsyncWriteExt;
use tokio::task::JoinSet;

#[derive(Parser, Debug)]
struct Args {
    /// How long the quiet baseline and then the attack each last.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Connections the flood tries to hold open at once.
    #[arg(long, default_value_t = 2000)]
    flood: usize,
}

/// Counters of one attack: tries, and what the server did that it should not have.
#[derive(Default)]
struct Tally {
    tries: AtomicU64,
    /// Server answers that show the attack worked (a `+` for a huge pre-login literal...).
    bad: AtomicU64,
    /// Connections the server refused or cut (expected for most attacks).
    cut: AtomicU64,
}

impl Tally {
    fn line(&self, name: &str, bad_means: &str) -> String {
        format!(
            "  {name:<28} {:>7} tries, {:>6} cut/refused, {:>5} {bad_means}",
            self.tries.load(Ordering::Relaxed),
            self.cut.load(Ordering::Relaxed),
            self.bad.load(Ordering::Relaxed)
        )
    }
}

fn attacker(n: usize) -> Option<IpAddr> {
    Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (n % 200) as u8)))
}

/// 3.2 MB of nested `message/rfc822` parts: the message that crashed every pod.
fn poison() -> Vec<u8> {
    let mut m = b"From: x@evil.test\r\nTo: victim@bench.test\r\nSubject: x\r\n\
                  Content-Type: message/rfc822\r\n\r\n"
        .to_vec();
    for _ in 0..100_000 {
        m.extend_from_slice(b"Content-Type: message/rfc822\r\n\r\n");
    }
    m.extend_from_slice(b"x\r\n");
    m
}

/// One round of the good client: a message in over SMTP, then read back over IMAP.
async fn good_round(smtp: SocketAddr, imap: &mut Imap, n: u64) -> anyhow::Result<()> {
    let mut client = Smtp::connect(smtp).await?;
    let subject = format!("good-{n}");
    client
        .send(
            "friend@sender.test",
            "good@bench.test",
            &message(4096, "good@bench.test", &subject),
        )
        .await?;
    client.quit().await?;
    // Re-selecting is how a simple client sees new mail: `* N EXISTS`.
    let selected = imap.command("SELECT INBOX").await?;
    let count: u64 = selected
        .text
        .lines()
        .find_map(|line| {
            line.strip_prefix("* ")?
                .strip_suffix(" EXISTS")?
                .parse()
                .ok()
        })
        .unwrap_or(0);
    let fetched = imap.command(&format!("FETCH {count} BODY.PEEK[]")).await?;
    if !fetched.ok() || fetched.literal_bytes < 4096 {
        bail!("could not read back message {n}: {}", fetched.status);
    }
    Ok(())
}

/// Runs the good client until `stop`; its round latencies and failures.
async fn good_client(
    smtp: SocketAddr,
    imap: SocketAddr,
    stop: Arc<AtomicBool>,
) -> (Vec<Duration>, u64) {
    let mut latencies = Vec::new();
    let mut failures = 0;
    let mut session = None;
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        if session.is_none() {
            match Imap::login(imap, "good@bench.test", &users::password("good")).await {
                Ok(s) => session = Some(s),
                Err(err) => {
                    if failures < 3 {
                        eprintln!("good client: IMAP login failed: {err:#}");
                    }
                    failures += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
        }
        let started = Instant::now();
        let Some(imap_session) = session.as_mut() else {
            continue;
        };
        match good_round(smtp, imap_session, n).await {
            Ok(()) => latencies.push(started.elapsed()),
            Err(err) => {
                if failures < 3 {
                    eprintln!("good client: round {n} failed: {err:#}");
                }
                failures += 1;
                session = None;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (latencies, failures)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    users::write(
        dir.path(),
        &[
            User {
                local: "good",
                quota: "10Gi",
            },
            User {
                local: "victim",
                quota: "10Gi",
            },
            User {
                local: "attacker",
                quota: "10Gi",
            },
        ],
    )?;
    let mut server = ServerProcess::start(dir.path(), &[])?;
    let pid = server.pid();
    let memory = server.memory();
    let (smtp, imap, pop3) = (
        server.addr("smtp")?,
        server.addr("imap")?,
        server.addr("pop3")?,
    );
    let idle = memory.settled_rss_mib(Duration::from_secs(20));
    println!("hostile: mailserver pid {pid}, idle RSS {idle:.1} MiB");

    // The poisoned message sits in the victim's mailbox before anything else happens.
    let mut client = Smtp::connect(smtp).await?;
    match client
        .send("x@evil.test", "victim@bench.test", &poison())
        .await
    {
        Ok(()) => println!("  poison message accepted (it must be stored and served as bytes)"),
        Err(err) => println!("  poison message refused at SMTP: {err:#}"),
    }
    let _ = client.quit().await;

    // Baseline.
    let stop = Arc::new(AtomicBool::new(false));
    let good = tokio::spawn(good_client(smtp, imap, stop.clone()));
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut quiet, quiet_failures) = good.await?;

    // Under attack.
    memory.reset_peak();
    let sampler = PeakSampler::start(memory);
    let stop = Arc::new(AtomicBool::new(false));
    let good = tokio::spawn(good_client(smtp, imap, stop.clone()));
    let tallies: Vec<(&str, &str, Arc<Tally>)> = [
        ("poison: SEARCH/FETCH/RETR", "no answer"),
        ("LIST 10,000 wildcards", "no answer"),
        ("pre-login 50 MiB literal", "got '+'"),
        ("pipelines, never reads", "still open"),
        ("connection flood", "held"),
        ("wrong-password LOGINs", "logged in"),
        ("FETCH 1,1,1,... (1 MB line)", "no answer"),
        ("SMTP one byte a second", "-"),
    ]
    .into_iter()
    .map(|(name, bad)| (name, bad, Arc::new(Tally::default())))
    .collect();
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let mut attacks = JoinSet::new();
    let t = |i: usize| tallies[i].2.clone();
    attacks.spawn(poison_reader(imap, pop3, t(0), deadline));
    attacks.spawn(list_bomb(imap, t(1), deadline));
    attacks.spawn(prelogin_literal(imap, t(2), deadline));
    for k in 0..20 {
        attacks.spawn(never_reads(imap, k, t(3), deadline));
    }
    attacks.spawn(flood(imap, args.flood, t(4), deadline));
    for k in 0..10 {
        attacks.spawn(login_guessing(imap, k, t(5), deadline));
    }
    attacks.spawn(huge_sequence(imap, t(6), deadline));
    for k in 0..50 {
        attacks.spawn(slow_smtp(smtp, k, t(7), deadline));
    }
    // Watch the server while the attacks run: a dead server ends the run at once.
    while Instant::now() < deadline && server.alive() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let (mut loud, loud_failures) = good.await?;
    if !server.alive() {
        attacks.shutdown().await;
        println!(
            "  good client, quiet:        {} ({quiet_failures} failed)",
            summary(&mut quiet)
        );
        bail!("the server (pid {pid}) DIED under attack");
    }
    // Attacks end by themselves at the deadline; give stragglers a moment, then drop them.
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        while attacks.join_next().await.is_some() {}
    })
    .await;
    attacks.shutdown().await;
    let peak = sampler.finish().max(memory.peak_mib());
    let after = memory.settled_rss_mib(Duration::from_secs(20));

    println!(
        "  good client, quiet:        {} ({quiet_failures} failed)",
        summary(&mut quiet)
    );
    println!(
        "  good client, under attack: {} ({loud_failures} failed)",
        summary(&mut loud)
    );
    println!("  attacks over {} s:", args.seconds);
    for (name, bad, tally) in &tallies {
        println!("{}", tally.line(name, bad));
    }
    println!("  server peak RSS under attack {peak:.1} MiB; {after:.1} MiB after");
    let alive = server.alive();
    println!(
        "  server pid {pid} {}",
        if alive {
            "still running: it never restarted"
        } else {
            "DIED"
        }
    );
    if !alive {
        bail!("the server died under attack");
    }
    server.stop(Duration::from_secs(30))?;
    Ok(())
}

/// The victim reads the poisoned message every way there is.
async fn poison_reader(imap: SocketAddr, pop3: SocketAddr, tally: Arc<Tally>, deadline: Instant) {
    while Instant::now() < deadline {
        tally.tries.fetch_add(1, Ordering::Relaxed);
        let result = async {
            let mut s = Imap::login(imap, "victim@bench.test", &users::password("victim")).await?;
            s.command("SELECT INBOX").await?;
            for command in [
                "SEARCH SUBJECT x",
                "FETCH 1 BODYSTRUCTURE",
                "FETCH 1 ENVELOPE",
                "FETCH 1 BODY[]",
            ] {
                s.command(command).await?;
            }
            s.logout().await?;
            let mut pop =
                Pop3::login(pop3, "victim@bench.test", &users::password("victim")).await?;
            pop.retr(1).await?;
            pop.quit().await
        }
        .await;
        if result.is_err() {
            tally.bad.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn list_bomb(imap: SocketAddr, tally: Arc<Tally>, deadline: Instant) {
    let pattern = format!("LIST \"\" \"{}z\"", "*".repeat(10_000));
    while Instant::now() < deadline {
        tally.tries.fetch_add(1, Ordering::Relaxed);
        let result = async {
            let mut s =
                Imap::login(imap, "attacker@bench.test", &users::password("attacker")).await?;
            s.command(&pattern).await?;
            s.logout().await
        };
        if tokio::time::timeout(Duration::from_secs(10), result)
            .await
            .is_err()
        {
            tally.bad.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn prelogin_literal(imap: SocketAddr, tally: Arc<Tally>, deadline: Instant) {
    let mut k = 0;
    while Instant::now() < deadline {
        k += 1;
        tally.tries.fetch_add(1, Ordering::Relaxed);
        let Ok(stream) = connect_from(imap, attacker(k)).await else {
            tally.cut.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let Ok(mut conn) = Conn::from_stream(stream) else {
            continue;
        };
        let answer = async {
            conn.line().await?;
            conn.write(b"a LOGIN {52428800}\r\n").await?;
            conn.line().await
        };
        match tokio::time::timeout(Duration::from_secs(5), answer).await {
            Ok(Ok(line)) if line.starts_with('+') => {
                tally.bad.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Ok(_)) => {}
            _ => {
                tally.cut.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Logs in, then pipelines NOOPs without ever reading a reply.
async fn never_reads(imap: SocketAddr, k: usize, tally: Arc<Tally>, deadline: Instant) {
    tally.tries.fetch_add(1, Ordering::Relaxed);
    let Ok(mut stream) = connect_from(imap, attacker(k)).await else {
        tally.cut.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let login = format!(
        "a LOGIN attacker@bench.test {}\r\n",
        users::password("attacker")
    );
    let noops = b"n NOOP\r\n".repeat(8192);
    let mut result = stream.write_all(login.as_bytes()).await;
    while result.is_ok() && Instant::now() < deadline {
        result = match tokio::time::timeout_at(deadline.into(), stream.write_all(&noops)).await {
            Ok(r) => r,
            Err(_) => break,
        };
    }
    if result.is_err() {
        tally.cut.fetch_add(1, Ordering::Relaxed);
    } else {
        tally.bad.fetch_add(1, Ordering::Relaxed);
    }
}

/// Opens as many connections as it can from a few addresses and holds them until the deadline.
async fn flood(imap: SocketAddr, count: usize, tally: Arc<Tally>, deadline: Instant) {
    let mut held = Vec::new();
    for k in 0..count {
        if Instant::now() >= deadline {
            break;
        }
        tally.tries.fetch_add(1, Ordering::Relaxed);
        match tokio::time::timeout(Duration::from_secs(2), connect_from(imap, attacker(k % 4)))
            .await
        {
            Ok(Ok(stream)) => held.push(stream),
            _ => {
                tally.cut.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    // Held means greeted; over the per-address cap the server says goodbye and closes.
    let mut open = 0;
    for stream in held {
        let Ok(mut conn) = Conn::from_stream(stream) else {
            continue;
        };
        match tokio::time::timeout(Duration::from_secs(2), conn.line()).await {
            Ok(Ok(line)) if line.starts_with("* OK") => open += 1,
            _ => {
                tally.cut.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    tally.bad.fetch_add(open, Ordering::Relaxed);
    tokio::time::sleep_until(deadline.into()).await;
}

/// Pipelines wrong-password LOGINs (password guessing, and CPU for the hashes).
async fn login_guessing(imap: SocketAddr, k: usize, tally: Arc<Tally>, deadline: Instant) {
    let mut round = 0u64;
    while Instant::now() < deadline {
        round += 1;
        let Ok(stream) = connect_from(imap, attacker(100 + k)).await else {
            tally.cut.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let Ok(mut conn) = Conn::from_stream(stream) else {
            continue;
        };
        let mut batch = Vec::new();
        for i in 0..20 {
            batch.extend_from_slice(
                format!("g{i} LOGIN victim@bench.test guess-{round}-{i}\r\n").as_bytes(),
            );
        }
        tally.tries.fetch_add(20, Ordering::Relaxed);
        let outcome = async {
            conn.line().await?;
            conn.write(&batch).await?;
            loop {
                let line = conn.line().await?;
                if line.starts_with("g") && line.contains(" OK") {
                    tally.bad.fetch_add(1, Ordering::Relaxed);
                }
                if line.starts_with("g19 ") {
                    return anyhow::Ok(());
                }
            }
        };
        if !matches!(
            tokio::time::timeout_at(deadline.into(), outcome).await,
            Ok(Ok(()))
        ) {
            tally.cut.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn huge_sequence(imap: SocketAddr, tally: Arc<Tally>, deadline: Instant) {
    let set = vec!["1"; 500_000].join(",");
    while Instant::now() < deadline {
        tally.tries.fetch_add(1, Ordering::Relaxed);
        let result = async {
            let mut s =
                Imap::login(imap, "attacker@bench.test", &users::password("attacker")).await?;
            s.command("SELECT INBOX").await?;
            s.command(&format!("FETCH {set} FLAGS")).await?;
            s.logout().await
        };
        match tokio::time::timeout(Duration::from_secs(10), result).await {
            Err(_) => {
                tally.bad.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Err(_)) => {
                tally.cut.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Ok(())) => {}
        }
    }
}

/// Slowloris over SMTP: one byte of a command a second.
async fn slow_smtp(smtp: SocketAddr, k: usize, tally: Arc<Tally>, deadline: Instant) {
    tally.tries.fetch_add(1, Ordering::Relaxed);
    let Ok(mut stream) = connect_from(smtp, attacker(50 + k)).await else {
        tally.cut.fetch_add(1, Ordering::Relaxed);
        return;
    };
    for byte in b"EHLO slow.example.test".iter().cycle() {
        if Instant::now() >= deadline {
            return;
        }
        if stream.write_all(&[*byte]).await.is_err() {
            tally.cut.fetch_add(1, Ordering::Relaxed);
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

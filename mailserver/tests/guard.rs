//! The login guard against password guessing, with real clients (Python's poplib, imaplib and
//! smtplib bound to chosen loopback source addresses), a real PostgreSQL and two servers on it:
//! one in this process, one a `mailserver` process. A network that fails too often is refused
//! on SMTP, IMAP and POP3 by both, other addresses are not, an allow-listed one never is; the
//! ban ends by itself, grows for a repeat offender, and `mail-operator bans` / the HTTP port
//! list and lift it on both.

mod common;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::TestServer;
use mailserver::auth::AuthSettings;
use mailserver::auth::guard::{Admission, GuardSettings};
use mailserver::proxy::Networks;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::{TcpSocket, TcpStream};
use tokio::process::{Child, ChildStdout, Command};

const ATTACKER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const BYSTANDER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
const ALLOWED: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 4);
const CLIENTS: &str = include_str!("clients/guard_clients.py");

/// The settings of both servers; the process gets them as flags (see [`flags`]).
fn settings() -> GuardSettings {
    GuardSettings {
        network_failures: 20,
        account_failures: 20,
        ban_time: Duration::from_secs(4),
        ban_factor: 4,
        ban_max: Duration::from_secs(60),
        account_delay: Duration::from_millis(300),
        account_delay_max: Duration::from_secs(1),
        allow: "127.0.0.4".parse::<Networks>().unwrap(),
        logins_per_second: 0,
        // Long: a ban reaching the other server in time is the notification's doing.
        refresh: Duration::from_secs(30),
        ..GuardSettings::default()
    }
}

fn no_failure_delay() -> AuthSettings {
    AuthSettings {
        failure_delay: Duration::ZERO,
        ..AuthSettings::default()
    }
}

fn flags() -> Vec<String> {
    [
        "--guard-network-failures=20",
        "--guard-account-failures=20",
        "--guard-ban-time=4",
        "--guard-ban-factor=4",
        "--guard-ban-max=60",
        "--guard-account-delay-ms=300",
        "--guard-account-delay-max-ms=1000",
        "--guard-allow=127.0.0.4",
        "--guard-logins-per-second=0",
        "--guard-refresh-ms=30000",
        // The login service's fixed answer delay for failures, off to keep the test short.
        "--login-failure-delay-ms=0",
    ]
    .map(String::from)
    .to_vec()
}

/// The second server: a `mailserver` process on the same database and blob directory.
struct Process {
    _child: Child,
    at: HashMap<String, SocketAddr>,
    _stdout: Lines<BufReader<ChildStdout>>,
}

impl Process {
    async fn spawn(url: &str, blobs: &Path, data: &Path) -> Self {
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
                "--listen",
                "pop3=127.0.0.1:0,tls=none",
                "--http-listen",
                "127.0.0.1:0",
            ])
            .args(flags())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("mailserver starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut at = HashMap::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            if line == "ready" {
                break;
            }
            if let Some((name, addr)) = line.split_once(" listening on ") {
                at.insert(name.to_lowercase(), addr.parse().unwrap());
            }
        }
        assert_eq!(at.len(), 4, "listeners: {at:?}");
        Self {
            _child: child,
            at,
            _stdout: lines,
        }
    }

    fn servers(&self) -> Servers {
        Servers {
            smtp: self.at["smtp"],
            imap: self.at["imap"],
            pop3: self.at["pop3"],
            http: self.at["http"],
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Servers {
    smtp: SocketAddr,
    imap: SocketAddr,
    pop3: SocketAddr,
    http: SocketAddr,
}

fn servers_of(world: &TestServer) -> Servers {
    let a = world.addresses();
    Servers {
        smtp: a.smtp,
        imap: a.imap,
        pop3: a.pop3,
        http: a.http,
    }
}

/// The first line a server says to a client connecting from `source`.
async fn greeting(server: SocketAddr, source: Ipv4Addr) -> String {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source.into(), 0)).unwrap();
    let stream = socket.connect(server).await.unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line))
        .await
        .expect("greeting in time")
        .unwrap();
    line
}

/// The three greetings (SMTP, IMAP, POP3) `source` gets.
async fn greetings(servers: Servers, source: Ipv4Addr) -> [String; 3] {
    [
        greeting(servers.smtp, source).await,
        greeting(servers.imap, source).await,
        greeting(servers.pop3, source).await,
    ]
}

fn refused(greetings: &[String; 3]) -> bool {
    greetings[0].starts_with("421 4.7.0 ")
        && greetings[1].starts_with("* BYE ")
        && greetings[2].starts_with("-ERR ")
}

fn welcomed(greetings: &[String; 3]) -> bool {
    greetings[0].starts_with("220 ")
        && greetings[1].starts_with("* OK")
        && greetings[2].starts_with("+OK")
}

/// Polls until `source` gets the greetings `want` asks for from every server, or panics
/// after `deadline`; returns how long it took.
async fn wait_until(
    servers: &[Servers],
    source: Ipv4Addr,
    deadline: Duration,
    want: fn(&[String; 3]) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        let mut all = true;
        let mut seen = Vec::new();
        for s in servers {
            let got = greetings(*s, source).await;
            all &= want(&got);
            seen.push(got);
        }
        if all {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < deadline,
            "{source} after {deadline:?}: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `count` login attempts by a Python client of `proto` from `source`: (outcome, seconds).
async fn logins(
    proto: &str,
    server: SocketAddr,
    source: Ipv4Addr,
    user: &str,
    password: &str,
    count: usize,
) -> Vec<(String, f64)> {
    let out = common::python(
        CLIENTS,
        &[
            proto,
            &server.to_string(),
            &source.to_string(),
            user,
            password,
            &count.to_string(),
        ],
    )
    .await;
    let parsed: Vec<(String, f64)> = serde_json::from_str(&out).expect("client output");
    assert_eq!(parsed.len(), count, "{out}");
    parsed
}

async fn http(server: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(server).await.unwrap();
    let request = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response.split_once("\r\n\r\n").unwrap().1.to_string();
    (status, body)
}

/// `mail-operator`, built beside this test's binary (`cargo test --workspace` builds it; alone:
/// `cargo build -p mail-operator` first).
fn operator_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("mail-operator");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build -p mail-operator` (same target dir) first",
        path.display()
    );
    path
}

async fn operator(url: &str, args: &[&str]) -> String {
    let output = Command::new(operator_binary())
        .arg("bans")
        .args(args)
        .env("DATABASE_URL", url)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "mail-operator bans {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

async fn world() -> TestServer {
    TestServer::builder()
        .domain("example.test")
        .mailbox("alice@example.test", Some("secret"))
        .mailbox("bob@example.test", Some("secret"))
        .auth(no_failure_delay())
        .guard(settings())
        .start()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_guessing_is_banned_on_every_server() {
    let world = world().await;
    let url = world.database_url();
    let data = tempfile::tempdir().unwrap();
    let b = Process::spawn(&url, world.blob_dir(), data.path()).await;
    let (a, b) = (servers_of(&world), b.servers());
    assert!(welcomed(&greetings(a, ATTACKER).await));
    assert!(welcomed(&greetings(b, ATTACKER).await));

    // 20 wrong passwords from the attacker's address, over POP3 on server A: each answered.
    let tries = logins("pop3", a.pop3, ATTACKER, "alice@example.test", "guess", 20).await;
    for (i, (outcome, _)) in tries.iter().enumerate() {
        assert!(outcome.starts_with("failed: "), "try {i}: {outcome}");
    }
    let spent: f64 = tries.iter().map(|(_, s)| s).sum();
    println!("20 failed POP3 logins took {spent:.2}s");
    let banned_at = Instant::now();
    // Refused at once by A, before any greeting, on every protocol...
    let on_a = greetings(a, ATTACKER).await;
    assert!(refused(&on_a), "{on_a:?}");
    assert!(on_a[0].contains("Too many failed logins"), "{on_a:?}");
    // ...and by B within about a second (B reloads only every 30 s on its own: the NOTIFY).
    let took = wait_until(&[b], ATTACKER, Duration::from_millis(1500), refused).await;
    println!("ban reached the other server in {took:?}");
    // Real clients see the refusal too.
    for proto in ["pop3", "imap", "smtp"] {
        let server = match proto {
            "pop3" => b.pop3,
            "imap" => b.imap,
            _ => b.smtp,
        };
        let got = logins(proto, server, ATTACKER, "alice@example.test", "secret", 1).await;
        assert!(got[0].0.starts_with("refused: "), "{proto}: {got:?}");
        assert!(
            got[0].0.contains("Too many failed logins"),
            "{proto}: {got:?}"
        );
    }

    // Another address is not affected, and the attacked account's owner logs in from it,
    // slowed (20 failures on the account) but not locked out.
    assert!(welcomed(&greetings(a, BYSTANDER).await));
    assert!(welcomed(&greetings(b, BYSTANDER).await));
    for (proto, server) in [("pop3", b.pop3), ("imap", a.imap)] {
        let got = logins(proto, server, BYSTANDER, "alice@example.test", "secret", 1).await;
        assert_eq!(got[0].0, "ok", "{proto}");
        assert!(
            got[0].1 >= 0.3,
            "{proto}: slowed by the account delay: {got:?}"
        );
    }

    // The ban (4 s) ends by itself on both servers.
    let took = wait_until(&[a, b], ATTACKER, Duration::from_secs(8), welcomed).await;
    let lasted = banned_at.elapsed();
    assert!(
        lasted >= Duration::from_secs(3),
        "ban lasted {lasted:?} ({took:?} polling)"
    );
    // Ended but remembered: the next run of failures (at a name that does not exist: it counts
    // the same) bans for 4 s × 4.
    let tries = logins("pop3", b.pop3, ATTACKER, "nobody@example.test", "guess", 20).await;
    assert!(
        tries.iter().all(|(o, _)| o.starts_with("failed: ")),
        "{tries:?}"
    );
    assert!(refused(&greetings(b, ATTACKER).await));
    wait_until(&[a], ATTACKER, Duration::from_millis(1500), refused).await;

    // Listed by the operator's CLI and by the HTTP port, with the repeat count.
    let listed = operator(&url, &["list"]).await;
    let line = listed
        .lines()
        .find(|l| l.starts_with("127.0.0.2/32 "))
        .unwrap_or_else(|| panic!("no ban listed:\n{listed}"));
    let columns: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(columns[2], "2", "second ban: {line}");
    let remaining: u64 = columns[1].trim_end_matches('s').parse().unwrap();
    assert!((10..=16).contains(&remaining), "{line}");
    assert!(
        listed.lines().any(|l| l.starts_with("alice@example.test ")),
        "the attacked account is listed:\n{listed}"
    );
    let (status, body) = http(a.http, "GET", "/bans").await;
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["bans"][0]["network"], "127.0.0.2/32", "{json}");
    assert_eq!(json["bans"][0]["repeats"], 2, "{json}");
    assert_eq!(
        json["accounts"][0]["account"], "alice@example.test",
        "{json}"
    );
    assert_eq!(json["accounts"][0]["failures"], 20, "{json}");
    assert_eq!(
        json["accounts"][1]["account"], "nobody@example.test",
        "{json}"
    );

    // Lifted by the operator: both servers admit the address long before the 16 s are up.
    let lifted = operator(&url, &["lift", "127.0.0.2"]).await;
    assert!(lifted.contains("lifted 1 ban(s)"), "{lifted}");
    let took = wait_until(&[a, b], ATTACKER, Duration::from_millis(1500), welcomed).await;
    println!("lift reached both servers in {took:?}");
    let (_, body) = http(b.http, "GET", "/bans").await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["bans"],
        serde_json::json!([])
    );
    // The account's failures are forgotten by lifting the account: no more delay.
    let lifted = operator(&url, &["lift", "alice@example.test"]).await;
    assert!(lifted.contains("forgot 20 failed login(s)"), "{lifted}");
    let got = logins("pop3", a.pop3, BYSTANDER, "alice@example.test", "secret", 1).await;
    assert_eq!(got[0].0, "ok");
    assert!(got[0].1 < 0.3, "no longer slowed: {got:?}");

    // An allow-listed address (the load balancer's, say) is never banned.
    let tries = logins("pop3", a.pop3, ALLOWED, "bob@example.test", "guess", 21).await;
    assert!(
        tries.iter().all(|(o, _)| o.starts_with("failed: ")),
        "{tries:?}"
    );
    assert!(welcomed(&greetings(a, ALLOWED).await));
    assert!(welcomed(&greetings(b, ALLOWED).await));
    let got = logins("imap", b.imap, ALLOWED, "bob@example.test", "secret", 1).await;
    assert_eq!(got[0].0, "ok");
    world.stop().await;
}

/// Lifting over the HTTP port; an IPv6 client is banned by its /64.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_lifts_and_ipv6_counts_per_64() {
    let world = TestServer::builder()
        .domain("example.test")
        .mailbox("alice@example.test", Some("secret"))
        .auth(no_failure_delay())
        .guard(GuardSettings {
            network_failures: 3,
            ban_time: Duration::from_secs(600),
            ban_max: Duration::from_secs(3600),
            ..settings()
        })
        .start()
        .await;
    let a = servers_of(&world);
    let source = Ipv4Addr::new(127, 0, 0, 5);
    let tries = logins("pop3", a.pop3, source, "alice@example.test", "guess", 3).await;
    assert!(
        tries.iter().all(|(o, _)| o.starts_with("failed: ")),
        "{tries:?}"
    );
    assert!(refused(&greetings(a, source).await));
    // Counted per protocol (the registry is per process: other tests may add to it).
    let (_, metrics) = http(a.http, "GET", "/metrics").await;
    for proto in ["smtp", "imap", "pop3"] {
        let series = format!("mailserver_connections_banned_total{{protocol=\"{proto}\"}} ");
        let count: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .unwrap_or_else(|| panic!("no {series} in\n{metrics}"))
            .parse()
            .unwrap();
        assert!(count >= 1, "{series}{count}");
    }
    let (status, body) = http(a.http, "DELETE", "/bans/127.0.0.5").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""bans":1"#), "{body}");
    assert!(welcomed(&greetings(a, source).await), "lifted at once");
    let (status, _) = http(a.http, "DELETE", "/bans/10.0.0.0%2F99").await;
    assert_eq!(status, 400);

    // IPv6: the guard itself, as the login path calls it.
    let guard = world.ctx().auth.guard();
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    for _ in 0..3 {
        guard
            .failed(ip("2001:db8:1:2::1"), "alice@example.test")
            .await;
    }
    assert!(matches!(
        guard.admit(ip("2001:db8:1:2:ffff::9")).await,
        Admission::Banned { remaining } if remaining > Duration::from_secs(590)
    ));
    assert_eq!(guard.admit(ip("2001:db8:1:3::1")).await, Admission::Allowed);
    let (_, body) = http(a.http, "DELETE", "/bans/2001:db8:1:2::/64").await;
    assert!(body.contains(r#""bans":1"#), "{body}");
    assert_eq!(guard.admit(ip("2001:db8:1:2::1")).await, Admission::Allowed);
    world.stop().await;
}

/// Failures older than the window do not count; a ban clears the network's failures.
#[tokio::test]
async fn the_window_slides() {
    let world = TestServer::builder()
        .domain("example.test")
        .auth(no_failure_delay())
        .guard(GuardSettings {
            network_failures: 3,
            window: Duration::from_secs(60),
            ..settings()
        })
        .start()
        .await;
    let guard = world.ctx().auth.guard();
    let client: IpAddr = "192.0.2.9".parse().unwrap();
    // Five failures from just before the window.
    sqlx::query(
        "INSERT INTO login_failures (kind, subject, at)
         SELECT 'network', '192.0.2.9/32', now() - interval '61 seconds' FROM generate_series(1, 5)",
    )
    .execute(world.pool())
    .await
    .unwrap();
    guard.failed(client, "a@example.test").await;
    guard.failed(client, "b@example.test").await;
    assert_eq!(
        guard.admit(client).await,
        Admission::Allowed,
        "2 in the window"
    );
    guard.failed(client, "c@example.test").await;
    assert!(matches!(
        guard.admit(client).await,
        Admission::Banned { .. }
    ));
    let left: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM login_failures WHERE kind = 'network' AND subject = '192.0.2.9/32'",
    )
    .fetch_one(world.pool())
    .await
    .unwrap();
    assert_eq!(left, 0, "the ban starts the count over");
    world.stop().await;
}

/// The pace of logins per network and the hourly allowance of a sender, on the real tables.
#[tokio::test]
async fn login_pace_and_sender_allowance() {
    let world = TestServer::builder()
        .domain("example.test")
        .auth(no_failure_delay())
        .guard(GuardSettings {
            logins_per_second: 2,
            login_burst: 2,
            messages_per_hour: 3,
            ..settings()
        })
        .start()
        .await;
    let guard = world.ctx().auth.guard();
    let client: IpAddr = "192.0.2.1".parse().unwrap();
    let mut waits = Vec::new();
    for _ in 0..4 {
        waits.push(guard.delay(client, "nobody@example.test").await);
    }
    assert_eq!(waits[..2], [Duration::ZERO, Duration::ZERO], "{waits:?}");
    assert!(waits[2] > Duration::from_millis(400), "{waits:?}");
    assert!(waits[3] > Duration::from_millis(900), "{waits:?}");
    let other: IpAddr = "192.0.2.2".parse().unwrap();
    assert_eq!(
        guard.delay(other, "nobody@example.test").await,
        Duration::ZERO
    );
    // Allow-listed: never paced.
    let allowed: IpAddr = "127.0.0.4".parse().unwrap();
    for _ in 0..5 {
        assert_eq!(guard.delay(allowed, "x@example.test").await, Duration::ZERO);
    }

    let sent: Vec<bool> = futures_sent(guard, "alice@example.test", 5).await;
    assert_eq!(sent, [true, true, true, false, false]);
    assert!(guard.message_sent("Bob@Example.test").await, "per sender");
    let counted: i64 = sqlx::query_scalar(
        "SELECT sum(messages)::int8 FROM sender_counts WHERE account = 'alice@example.test'",
    )
    .fetch_one(world.pool())
    .await
    .unwrap();
    assert_eq!(counted, 3, "refused messages are not counted");
    world.stop().await;
}

async fn futures_sent(
    guard: &mailserver::auth::guard::Guard,
    account: &str,
    n: usize,
) -> Vec<bool> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(guard.message_sent(account).await);
    }
    out
}

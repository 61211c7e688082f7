//! The embedded default as `scripts/run.sh` starts it: the real binary, its own PostgreSQL from
//! the system's binaries, the filesystem blob store, `examples/` applied. Real clients (Python's
//! smtplib, imaplib, poplib) use the logins it prints.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kills the server if the test fails half-way.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `GET http://addr/path` with Python's urllib (a real HTTP client): status and body.
fn http_get(addr: &str, path: &str) -> (u16, String) {
    const SCRIPT: &str = "import sys, urllib.request, urllib.error
try:
    r = urllib.request.urlopen(sys.argv[1], timeout=10)
    status, body = r.status, r.read()
except urllib.error.HTTPError as e:
    status, body = e.code, e.read()
print(status)
sys.stdout.write(body.decode())
";
    let output = Command::new("python3")
        .args(["-c", SCRIPT, &format!("http://{addr}{path}")])
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "GET {path} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("UTF-8 answer");
    let (status, body) = text.split_once('\n').expect("status line");
    (status.parse().expect("a status code"), body.to_string())
}

#[test]
fn embedded_default_serves_the_examples() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mailserver"))
        .current_dir(repo())
        .args([
            "--ephemeral",
            "--manifests",
            "examples",
            "--listen",
            "smtp=127.0.0.1:0",
            "--listen",
            "imap=127.0.0.1:0",
            "--listen",
            "pop3=127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("mailserver binary starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut server = Server(child);

    let (mut smtp, mut imap, mut pop3, mut http) = (None, None, None, None);
    let mut logins = Vec::new();
    let mut ready = false;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("utf-8 stdout");
        if let Some(addr) = line.strip_prefix("SMTP listening on ") {
            smtp = Some(addr.to_string());
        } else if let Some(addr) = line.strip_prefix("IMAP listening on ") {
            imap = Some(addr.to_string());
        } else if let Some(addr) = line.strip_prefix("POP3 listening on ") {
            pop3 = Some(addr.to_string());
        } else if let Some(addr) = line.strip_prefix("HTTP listening on ") {
            http = Some(addr.to_string());
        } else if let Some(rest) = line.strip_prefix("login: ") {
            let (user, password) = rest.split_once(" password: ").expect("login line");
            logins.push((user.to_string(), password.to_string()));
        } else if line == "ready" {
            ready = true;
            break;
        }
    }
    assert!(ready, "the server exited before it printed `ready`");
    let (smtp, imap, pop3, http) = (
        smtp.expect("SMTP line"),
        imap.expect("IMAP line"),
        pop3.expect("POP3 line"),
        http.expect("HTTP line"),
    );
    let (status, _) = http_get(&http, "/healthz");
    assert_eq!(status, 200, "/healthz");
    let (status, body) = http_get(&http, "/readyz");
    assert_eq!(status, 200, "/readyz: {body}");
    let alice = logins
        .iter()
        .find(|(user, _)| user == "alice@example.test")
        .expect("alice's login is printed");
    assert!(
        logins.iter().any(|(user, _)| user == "bob@example.test"),
        "bob's login is printed: {logins:?}"
    );

    let output = Command::new("python3")
        .arg(repo().join("e2e/clients/roundtrip.py"))
        .args(["--smtp", &smtp, "--imap", &imap, "--pop3", &pop3])
        .args(["--user", &alice.0, "--password", &alice.1])
        .args(["--unknown", "nobody@example.test"])
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "roundtrip failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    // The round trip stored a message, and Prometheus would see it.
    let (status, metrics) = http_get(&http, "/metrics");
    assert_eq!(status, 200, "/metrics");
    let delivered = metrics
        .lines()
        .find_map(|line| line.strip_prefix("mailserver_deliveries_total{result=\"ok\"} "))
        .and_then(|value| value.trim().parse::<f64>().ok());
    assert!(
        delivered.is_some_and(|n| n >= 1.0),
        "deliveries after the round trip: {delivered:?} in\n{metrics}"
    );

    // A clean stop on SIGTERM, as Kubernetes sends it.
    let pid = server.0.id().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = server.0.try_wait().expect("status") {
            assert!(status.success(), "exit status after SIGTERM: {status}");
            break;
        }
        assert!(Instant::now() < deadline, "no exit within 30 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    }
}

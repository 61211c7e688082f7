//! The one login service seen by real clients: SMTP AUTH on submission (smtplib, swaks) after
//! STARTTLS and on implicit TLS and nowhere else; IMAP AUTHENTICATE with SASL-IR and LOGIN
//! (imaplib); POP3 AUTH (poplib); SCRAM-SHA-256 with a client written from the RFC; every
//! Dovecot scheme from `doveadm pw` verified over IMAP and rehashed; the same time for an
//! unknown user and a wrong password.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::TestServer;
use mailserver::auth::AuthSettings;
use mailserver::listener::{Acceptors, ListenerSpec, Policy, Protocol, Role, TlsMode};
use mailserver::server::{DRAIN_TIME, ServerConfig};
use mailserver::tls::{Certificates, Versions};
use serde_json::Value;

const USER: &str = "alice@example.test";
const PASSWORD: &str = "correct horse";
/// Short, so the tests stay quick, and long enough to be measured.
const FAILURE_DELAY: Duration = Duration::from_millis(200);

/// Every kind of listener, TLS from `certs`. Clear-text logins are allowed from loopback
/// (the default) except on one extra submission listener, which behaves like a remote client
/// before STARTTLS.
fn listeners(certs: &Arc<Certificates>) -> ServerConfig {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let l = |protocol, tls, role| ListenerSpec::new(protocol, any, tls, role);
    ServerConfig {
        listeners: vec![
            l(Protocol::Smtp, TlsMode::StartTls, Role::Mx),
            l(Protocol::Smtp, TlsMode::StartTls, Role::Submission),
            l(Protocol::Smtp, TlsMode::Implicit, Role::Submission),
            l(Protocol::Imap, TlsMode::Implicit, Role::Mx),
            l(Protocol::Pop3, TlsMode::Implicit, Role::Mx),
        ],
        http: any,
        tls: Some(Acceptors {
            tls13: certs.acceptor(Versions::Tls13Only),
            tls12: certs.acceptor(Versions::Tls12And13),
        }),
        policy: Policy::default(),
        grace: DRAIN_TIME,
    }
}

struct World {
    server: TestServer,
    /// A second server on the same database whose listeners refuse clear-text logins.
    strict: mailserver::RunningServer,
    cafile: String,
    _dir: tempfile::TempDir,
}

impl World {
    async fn start(settings: AuthSettings) -> World {
        let dir = tempfile::tempdir().unwrap();
        let (certs, _) =
            Certificates::self_signed(dir.path(), &["localhost".to_string()]).expect("cert");
        let server = TestServer::builder()
            .domain("example.test")
            .mailbox(USER, Some(PASSWORD))
            .auth(settings)
            .server(listeners(&certs))
            .start()
            .await;
        let mut strict = listeners(&certs);
        strict.policy = Policy {
            plaintext_login_loopback: false,
            ..Policy::default()
        };
        let strict = mailserver::RunningServer::start_with(server.ctx().clone(), strict)
            .await
            .expect("second server");
        World {
            server,
            strict,
            cafile: dir.path().join("tls.crt").to_string_lossy().into_owned(),
            _dir: dir,
        }
    }

    /// `localhost:PORT` of a listener, the name the certificate is for.
    fn host(&self, label: &str) -> String {
        format!("localhost:{}", self.server.listener(label).port())
    }

    fn strict_host(&self, label: &str) -> String {
        let spec = self.strict.listeners.iter().find(|l| l.label() == label);
        format!("localhost:{}", spec.expect("listener").address.port())
    }

    async fn clients(&self, mode: &str, args: &[&str]) -> Value {
        let mut all = vec![self.cafile.as_str(), mode];
        all.extend_from_slice(args);
        let out = common::python(include_str!("clients/auth_clients.py"), &all).await;
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    }

    async fn password_hash(&self, address: &str) -> Option<String> {
        sqlx::query_scalar("SELECT password_hash FROM mailboxes WHERE address = $1")
            .bind(address)
            .fetch_one(self.server.pool())
            .await
            .expect("mailbox")
    }

    async fn stop(self) {
        self.strict.shutdown().await;
        self.server.stop().await;
    }
}

fn settings() -> AuthSettings {
    AuthSettings {
        failure_delay: FAILURE_DELAY,
        ..AuthSettings::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_auth_on_submission_only_with_smtplib_and_swaks() {
    let world = World::start(settings()).await;
    let out = world
        .clients(
            "smtp",
            &[
                &world.host("submission"),
                &world.host("submissions"),
                &world.host("smtp"),
                &world.strict_host("submission"),
                USER,
                PASSWORD,
            ],
        )
        .await;
    let ok = |key: &str, code: u64, text: &str| {
        assert_eq!(out[key][0], code, "{key}: {out}");
        assert!(
            out[key][1].as_str().unwrap_or("").starts_with(text),
            "{key}: {out}"
        );
    };
    assert_eq!(
        out["auth_after_tls"].as_str().map(str::trim),
        Some("PLAIN LOGIN SCRAM-SHA-256"),
        "{out}"
    );
    ok("mail_before_auth", 530, "5.7.0 Authentication required");
    ok(
        "wrong_password",
        535,
        "5.7.8 Authentication credentials invalid",
    );
    ok(
        "unknown_user",
        535,
        "5.7.8 Authentication credentials invalid",
    );
    for key in ["wrong_password", "unknown_user"] {
        let seconds = out[key][2].as_f64().unwrap();
        assert!(
            seconds >= FAILURE_DELAY.as_secs_f64() * 0.95,
            "a failure is answered after the delay: {key} {seconds}"
        );
    }
    ok("plain", 235, "2.7.0 Authentication successful");
    ok("auth_again", 503, "5.5.1");
    assert_eq!(out["plain_sent"], true);
    ok("login", 235, "2.7.0 Authentication successful");
    assert_eq!(out["login_sent"], true);
    ok("cancel_challenge", 334, "VXNlcm5hbWU6");
    ok("cancel", 501, "5.0.0 Authentication cancelled");
    ok(
        "unknown_mechanism",
        504,
        "5.5.4 Unrecognized authentication type",
    );
    ok("bad_base64", 501, "5.5.2 invalid base64");
    assert_eq!(out["mx_advertises"], false, "{out}");
    ok("mx_auth", 502, "5.5.1 AUTH not implemented");
    assert_eq!(out["strict_advertises_before_tls"], false, "{out}");
    ok("strict_auth_before_tls", 538, "5.7.11 Encryption required");

    // swaks: AUTH PLAIN and LOGIN after STARTTLS on 587 and on implicit TLS on 465.
    for (label, tls, mechanism) in [
        ("submission", "--tls", "PLAIN"),
        ("submissions", "--tls-on-connect", "LOGIN"),
        ("submission", "--tls", "LOGIN"),
    ] {
        let port = world.server.listener(label).port().to_string();
        let output = tokio::process::Command::new("swaks")
            .args(["--server", "127.0.0.1", "--port", &port, tls])
            .args(["--auth", mechanism, "--auth-user", USER, "--auth-password"])
            .arg(PASSWORD)
            .args(["--from", USER, "--to", USER, "--header", "Subject: swaks"])
            .output()
            .await
            .expect("swaks runs");
        let transcript = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{label} {mechanism}: {transcript}");
        assert!(transcript.contains("<~  235 2.7.0"), "{transcript}");
    }
    // A wrong password with swaks fails (exit code 28: authentication failed).
    let port = world.server.listener("submission").port().to_string();
    let output = tokio::process::Command::new("swaks")
        .args(["--server", "127.0.0.1", "--port", &port, "--tls"])
        .args([
            "--auth",
            "PLAIN",
            "--auth-user",
            USER,
            "--auth-password",
            "nope",
        ])
        .args(["--from", USER, "--to", USER])
        .output()
        .await
        .expect("swaks runs");
    let transcript = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{transcript}");
    assert!(transcript.contains("<~* 535 5.7.8"), "{transcript}");

    // Two smtplib messages and three swaks messages, delivered locally as before.
    let inbox = world.server.inbox(USER).await;
    assert_eq!(inbox.len(), 5, "messages delivered after AUTH");
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_and_pop3_logins_with_imaplib_and_poplib() {
    let world = World::start(settings()).await;
    world
        .server
        .deliver(USER, b"Subject: one\r\n\r\nbody\r\n")
        .await;
    let out = world
        .clients("imap", &[&world.host("imaps"), USER, PASSWORD])
        .await;
    let caps: Vec<&str> = out["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for cap in ["AUTH=PLAIN", "AUTH=LOGIN", "AUTH=SCRAM-SHA-256", "SASL-IR"] {
        assert!(caps.contains(&cap), "{cap}: {out}");
    }
    assert_eq!(out["sasl_ir"][0], "OK", "{out}");
    assert!(
        out["wrong_login"]
            .as_str()
            .unwrap()
            .contains("AUTHENTICATIONFAILED"),
        "{out}"
    );
    assert_eq!(out["login"], "OK", "{out}");
    assert_eq!(out["select"], "OK", "{out}");
    assert_eq!(out["authenticate_login"], "OK", "{out}");

    let out = world
        .clients("pop3", &[&world.host("pop3s"), USER, PASSWORD])
        .await;
    assert_eq!(
        out["capa_sasl"],
        serde_json::json!(["PLAIN", "LOGIN", "SCRAM-SHA-256"]),
        "{out}"
    );
    assert_eq!(
        out["wrong"], "-ERR [AUTH] invalid user name or password",
        "{out}"
    );
    assert!(
        out["auth_plain"].as_str().unwrap().starts_with("+OK"),
        "{out}"
    );
    assert_eq!(out["stat"][0], 1, "{out}");
    assert!(
        out["user_pass"].as_str().unwrap().starts_with("+OK"),
        "{out}"
    );
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_sha_256_after_a_password_login() {
    let world = World::start(settings()).await;
    let scram_row = || async {
        sqlx::query_scalar::<_, Option<String>>(
            "SELECT scram_sha256 FROM mailboxes WHERE address = $1",
        )
        .bind(USER)
        .fetch_one(world.server.pool())
        .await
        .expect("row")
    };
    assert_eq!(scram_row().await, None, "no keys before a password login");
    let args = [
        world.host("submissions"),
        world.host("imaps"),
        world.host("pop3s"),
        USER.to_string(),
        PASSWORD.to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // Without keys SCRAM fails like a wrong password.
    let before = world.clients("scram", &args).await;
    assert!(
        before["imap"]
            .as_str()
            .unwrap()
            .contains("AUTHENTICATIONFAILED"),
        "{before}"
    );
    assert_eq!(before["smtp"][0], 535, "{before}");
    assert_eq!(
        before["pop3"], "-ERR [AUTH] invalid user name or password",
        "{before}"
    );
    // One password login writes the keys; then SCRAM works on all three protocols.
    let login = world
        .clients("pop3", &[&world.host("pop3s"), USER, PASSWORD])
        .await;
    assert!(login["user_pass"].as_str().unwrap().starts_with("+OK"));
    assert!(scram_row().await.is_some(), "keys written at the login");
    let out = world.clients("scram", &args).await;
    assert!(
        out["imap_wrong"]
            .as_str()
            .unwrap()
            .contains("AUTHENTICATIONFAILED"),
        "{out}"
    );
    assert!(
        out["imap_unknown"]
            .as_str()
            .unwrap()
            .contains("AUTHENTICATIONFAILED"),
        "{out}"
    );
    assert_eq!(out["imap"], "OK", "{out}");
    assert_eq!(out["imap_server_verified"], true, "{out}");
    assert_eq!(out["imap_select"], "OK", "{out}");
    assert_eq!(out["smtp"][0], 235, "{out}");
    assert_eq!(out["smtp_server_verified"], true, "{out}");
    assert!(out["pop3"].as_str().unwrap().starts_with("+OK"), "{out}");
    assert_eq!(out["pop3_server_verified"], true, "{out}");
    world.stop().await;
}

/// Runs `doveadm pw -s SCHEME -p PASSWORD` (Dovecot's own tool) and returns the hash.
async fn doveadm(scheme: &str, password: &str) -> String {
    let output = tokio::process::Command::new("doveadm")
        .args(["pw", "-s", scheme, "-p", password])
        .output()
        .await
        .expect("doveadm runs (Debian dovecot-core; scripts/deps.sh installs it)");
    assert!(
        output.status.success(),
        "doveadm pw -s {scheme}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

/// Logs in over IMAP with `imaplib`; "OK" or the error text.
async fn imap_login(world: &World, user: &str, password: &str) -> String {
    let script = r#"
import imaplib, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
host, port = sys.argv[2].rsplit(":", 1)
m = imaplib.IMAP4_SSL(host, int(port), ssl_context=ctx)
try:
    print(m.login(sys.argv[3], sys.argv[4])[0])
except imaplib.IMAP4.error as e:
    print(e)
m.shutdown()
"#;
    let host = world.host("imaps");
    common::python(script, &[&world.cafile, &host, user, password])
        .await
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dovecot_schemes_verify_over_imap_and_are_rehashed() {
    let world = World::start(AuthSettings {
        failure_delay: Duration::ZERO,
        ..AuthSettings::default()
    })
    .await;
    let schemes = [
        "ARGON2ID",
        "ARGON2I",
        "SHA512-CRYPT",
        "SHA256-CRYPT",
        "BLF-CRYPT",
        "SSHA512",
        "SSHA256",
        "SSHA",
        "SHA512",
        "SHA256",
        "PLAIN",
        "CLEAR",
    ];
    let password = "imported pass";
    for scheme in schemes {
        let hash = doveadm(scheme, password).await;
        let address = format!("{}@example.test", scheme.to_lowercase());
        sqlx::query(
            "INSERT INTO mailboxes (domain_id, address, quota_bytes, password_hash)
             SELECT id, $1, 1000000, $2 FROM domains WHERE name = 'example.test'",
        )
        .bind(&address)
        .bind(&hash)
        .execute(world.server.pool())
        .await
        .expect("imported mailbox");
        // Bare crypt(3) forms too (Postfix/Dovecot tables without the prefix).
        if let Some(bare) = hash.strip_prefix("{SHA512-CRYPT}") {
            sqlx::query(
                "INSERT INTO mailboxes (domain_id, address, quota_bytes, password_hash)
                 SELECT id, 'bare-sha512@example.test', 1000000, $1 FROM domains
                  WHERE name = 'example.test'",
            )
            .bind(bare)
            .execute(world.server.pool())
            .await
            .expect("bare mailbox");
        }
    }
    for scheme in schemes {
        let address = format!("{}@example.test", scheme.to_lowercase());
        let before = world.password_hash(&address).await.unwrap();
        let wrong = imap_login(&world, &address, "imported pasS").await;
        assert!(wrong.contains("AUTHENTICATIONFAILED"), "{scheme}: {wrong}");
        let right = imap_login(&world, &address, password).await;
        if matches!(scheme, "PLAIN" | "CLEAR") {
            // Plain-text stored passwords are refused unless allowed, and left alone.
            assert!(right.contains("AUTHENTICATIONFAILED"), "{scheme}: {right}");
            assert_eq!(world.password_hash(&address).await.unwrap(), before);
            continue;
        }
        assert_eq!(right, "OK", "{scheme} ({before})");
        let after = world.password_hash(&address).await.unwrap();
        assert!(
            after.starts_with("$argon2id$"),
            "{scheme} rehashed: {after}"
        );
        assert_ne!(after, before, "{scheme}");
        assert_eq!(
            imap_login(&world, &address, password).await,
            "OK",
            "{scheme} after the rehash"
        );
    }
    assert_eq!(
        imap_login(&world, "bare-sha512@example.test", password).await,
        "OK"
    );
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_user_and_wrong_password_take_the_same_time() {
    // No failure delay: what is measured is the verification itself (the dummy hash).
    let world = World::start(AuthSettings {
        failure_delay: Duration::ZERO,
        ..AuthSettings::default()
    })
    .await;
    let script = r#"
import imaplib, json, ssl, statistics, sys, time
ctx = ssl.create_default_context(cafile=sys.argv[1])
host, port = sys.argv[2].rsplit(":", 1)
m = imaplib.IMAP4_SSL(host, int(port), ssl_context=ctx)
times = {"wrong": [], "unknown": []}
for i in range(80):
    kind = "wrong" if i % 2 == 0 else "unknown"
    user = sys.argv[3] if kind == "wrong" else "nobody%d@example.test" % i
    started = time.perf_counter()
    try:
        m.login(user, "not the password")
        raise SystemExit("logged in")
    except imaplib.IMAP4.error:
        pass
    times[kind].append(time.perf_counter() - started)
print(json.dumps({k: statistics.median(v) for k, v in times.items()}))
"#;
    let host = world.host("imaps");
    let out: Value =
        serde_json::from_str(&common::python(script, &[&world.cafile, &host, USER]).await).unwrap();
    let wrong = out["wrong"].as_f64().unwrap();
    let unknown = out["unknown"].as_f64().unwrap();
    println!(
        "median failed login over IMAP: wrong password {:.1} ms, unknown user {:.1} ms",
        wrong * 1000.0,
        unknown * 1000.0
    );
    let bound = (0.25 * wrong.max(unknown)).max(0.020);
    assert!(
        (wrong - unknown).abs() <= bound,
        "wrong password {wrong:.4}s vs unknown user {unknown:.4}s"
    );
    // Both paid for a real argon2 verification: 40 wrong + 40 unknown.
    assert!(world.server.ctx().auth.checks_run() >= 80);
    world.stop().await;
}

//! The one login service seen by real clients: SMTP AUTH on submission (smtplib, swaks) after
//! STARTTLS and on implicit TLS and nowhere else; IMAP AUTHENTICATE with SASL-IR and LOGIN
//! (imaplib); POP3 AUTH (poplib); SCRAM-SHA-256 with a client written from the RFC; every
//! Dovecot scheme from `doveadm pw` verified over IMAP and rehashed; the same time for an
//! unknown user and a wrong password; the chain of credential sources by `auth_source`.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::TestServer;
use mailserver::auth::source::{CredentialSource, Identity, Lookup, SourceFuture, Verdict};
use mailserver::auth::{Attempt, AuthSettings, Authenticator, Login};
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

/// Logs in over IMAP with `imaplib`, one connection per `(user, password)`, in one Python
/// process; "OK" or the error text for each.
async fn imap_logins(world: &World, logins: &[(&str, &str)]) -> Vec<String> {
    let script = r#"
import imaplib, json, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
host, port = sys.argv[2].rsplit(":", 1)
results = []
for user, password in json.loads(sys.argv[3]):
    m = imaplib.IMAP4_SSL(host, int(port), ssl_context=ctx)
    try:
        results.append(m.login(user, password)[0])
    except imaplib.IMAP4.error as e:
        results.append(str(e))
    m.shutdown()
print(json.dumps(results))
"#;
    let host = world.host("imaps");
    let logins = serde_json::to_string(logins).unwrap();
    let out = common::python(script, &[&world.cafile, &host, &logins]).await;
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
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
    let addresses: Vec<String> = schemes
        .iter()
        .map(|scheme| format!("{}@example.test", scheme.to_lowercase()))
        .collect();
    let mut before = Vec::new();
    for address in &addresses {
        before.push(world.password_hash(address).await.unwrap());
    }
    // A wrong password, then the right one, for every imported user.
    let mut logins = Vec::new();
    for address in &addresses {
        logins.push((address.as_str(), "imported pasS"));
        logins.push((address.as_str(), password));
    }
    logins.push(("bare-sha512@example.test", password));
    let results = imap_logins(&world, &logins).await;
    assert_eq!(results.last().map(String::as_str), Some("OK"), "bare $6$");
    let mut again = Vec::new();
    for (i, scheme) in schemes.iter().enumerate() {
        let (wrong, right) = (&results[2 * i], &results[2 * i + 1]);
        assert!(wrong.contains("AUTHENTICATIONFAILED"), "{scheme}: {wrong}");
        let after = world.password_hash(&addresses[i]).await.unwrap();
        if matches!(*scheme, "PLAIN" | "CLEAR") {
            // Plain-text stored passwords are refused unless allowed, and left alone.
            assert!(right.contains("AUTHENTICATIONFAILED"), "{scheme}: {right}");
            assert_eq!(after, before[i], "{scheme}");
            continue;
        }
        assert_eq!(right, "OK", "{scheme} ({})", before[i]);
        assert!(
            after.starts_with("$argon2id$"),
            "{scheme} rehashed: {after}"
        );
        assert_ne!(after, before[i], "{scheme}");
        again.push((addresses[i].as_str(), password));
    }
    // The rehashed passwords still log in.
    let results = imap_logins(&world, &again).await;
    for ((address, _), result) in again.iter().zip(&results) {
        assert_eq!(result, "OK", "{address} after the rehash");
    }
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

/// A directory that answers from a table, standing in for LDAP (whose source is another
/// branch) to check the chain's rule, and counts how often it was asked.
struct Directory {
    answers: Vec<(&'static str, Verdict)>,
    asked: AtomicUsize,
}

impl CredentialSource for Directory {
    fn name(&self) -> &'static str {
        "directory"
    }

    fn verify<'a>(&'a self, login: &'a str, _password: &'a str) -> SourceFuture<'a, Verdict> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        let verdict = self
            .answers
            .iter()
            .find(|(user, _)| *user == login)
            .map_or(Verdict::Unknown, |(_, verdict)| verdict.clone());
        Box::pin(async move { verdict })
    }

    fn lookup<'a>(&'a self, _address: &'a str) -> SourceFuture<'a, Lookup> {
        Box::pin(async { Lookup::NotFound })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_are_chained_by_auth_source() {
    let world = TestServer::builder()
        .domain("example.test")
        .mailbox("verified@example.test", Some("local pw"))
        .mailbox("rejected@example.test", Some("local pw"))
        .mailbox("unknown@example.test", Some("local pw"))
        .mailbox("down@example.test", Some("local pw"))
        .mailbox("local@example.test", Some("local pw"))
        .start()
        .await;
    sqlx::query("UPDATE mailboxes SET auth_source = 'ldap' WHERE address <> 'local@example.test'")
        .execute(world.pool())
        .await
        .unwrap();
    let identity = |address: &str| {
        Verdict::Verified(Identity {
            address: address.to_string(),
            ..Identity::default()
        })
    };
    let directory = Arc::new(Directory {
        answers: vec![
            ("verified@example.test", identity("verified@example.test")),
            ("rejected@example.test", Verdict::Rejected),
            ("down@example.test", Verdict::Unavailable("timeout".into())),
            ("gone@example.test", Verdict::Unavailable("timeout".into())),
            // Would log in, were it asked: a `local` mailbox never asks the directory.
            ("local@example.test", identity("local@example.test")),
        ],
        asked: AtomicUsize::new(0),
    });
    let auth = Authenticator::with_settings(
        world.pool().clone(),
        AuthSettings {
            failure_delay: Duration::ZERO,
            ..AuthSettings::default()
        },
    )
    .with_source(directory.clone());
    let login = |user: &'static str, password: &'static str| {
        let auth = auth.clone();
        async move {
            auth.login(Attempt {
                ip: "127.0.0.1".parse().unwrap(),
                protocol: "imap",
                login: user,
                password,
            })
            .await
        }
    };
    let ok = |login: Login| matches!(login, Login::Ok(_));
    // The directory decides for users it knows: its yes needs no local password...
    assert!(ok(login("verified@example.test", "directory pw").await));
    // ...and its no is final, even with the right local password.
    assert_eq!(
        login("rejected@example.test", "local pw").await,
        Login::Failed
    );
    // Not in the directory, or the directory down: the local hash decides.
    assert!(ok(login("unknown@example.test", "local pw").await));
    assert_eq!(login("unknown@example.test", "wrong").await, Login::Failed);
    assert!(ok(login("down@example.test", "local pw").await));
    assert_eq!(login("down@example.test", "wrong").await, Login::Failed);
    // Nobody knows the user and the directory is down: a temporary failure.
    assert_eq!(login("gone@example.test", "x").await, Login::Unavailable);
    let asked = directory.asked.load(Ordering::SeqCst);
    assert_eq!(asked, 7);
    // `auth_source = 'local'`: the local hash only.
    assert!(ok(login("local@example.test", "local pw").await));
    assert_eq!(
        login("local@example.test", "directory pw").await,
        Login::Failed
    );
    assert_eq!(directory.asked.load(Ordering::SeqCst), asked);
    world.stop().await;
}

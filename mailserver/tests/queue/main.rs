//! The outbound queue end to end: enqueue through the in-process API, a queue runner delivering
//! over SMTP to aiosmtpd sinks found through a real DNS server (named), DKIM checked by dkimpy,
//! DSNs parsed by Python's `email` package, MTA-STS policies from a local HTTPS server, a
//! smarthost with AUTH, and two server processes sharing one queue.

#[path = "../common/mod.rs"]
mod common;
mod world;

use std::collections::HashMap;
use std::ffi::OsString;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::TestServer;
use mail_blobstore::{BlobSource, BlobStore, FsBlobStore};
use mailserver::outbound::Smarthost;
use mailserver::outbound::client::TlsMode;
use mailserver::queue::{Body, Envelope, Queue, QueueSettings, QueuedRecipient, Ret};
use mailserver::store::Store;
use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use world::{PYTHON, PyServer, Remote, Sink, eventually, quick_settings, start_runner};

const WAIT: Duration = Duration::from_secs(30);

/// An RSA-2048 key made by openssl: (PKCS#8 PEM, zone-file TXT data of its DKIM record).
fn rsa_key() -> (String, String) {
    let pem = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ])
        .output()
        .expect("openssl genpkey");
    assert!(pem.status.success());
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("k.pem");
    std::fs::write(&key_file, &pem.stdout).expect("key file");
    let public = std::process::Command::new("openssl")
        .args(["pkey", "-pubout", "-outform", "DER", "-in"])
        .arg(&key_file)
        .output()
        .expect("openssl pkey");
    assert!(public.status.success());
    use base64::Engine as _;
    let p = base64::engine::general_purpose::STANDARD.encode(public.stdout);
    let record = format!("v=DKIM1; k=rsa; p={p}");
    // TXT strings are at most 255 bytes: split into quoted pieces.
    let txt = record
        .as_bytes()
        .chunks(200)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect::<Vec<_>>()
        .join(" ");
    (String::from_utf8(pem.stdout).expect("pem"), txt)
}

/// A local world: example.test hosted with alice's mailbox and a DKIM key, plus the remote side.
async fn setup() -> (TestServer, Remote) {
    let (pem, txt) = rsa_key();
    let remote = tokio::task::spawn_blocking(move || Remote::start(&txt))
        .await
        .expect("remote");
    let server = TestServer::builder()
        .hostname("mail.example.test")
        .domain("example.test")
        .mailbox("alice@example.test", None)
        .start()
        .await;
    sqlx::query(
        "INSERT INTO dkim_keys (domain_id, selector, algorithm, private_key_pem, public_key)
         SELECT id, 'sel', 'rsa2048', $1, 'unused' FROM domains WHERE name = 'example.test'",
    )
    .bind(pem)
    .execute(server.pool())
    .await
    .expect("dkim key");
    (server, remote)
}

fn message(to: &str, subject: &str) -> Vec<u8> {
    format!(
        "From: Alice <alice@example.test>\r\nTo: <{to}>\r\nSubject: {subject}\r\n\
         Message-ID: <{subject}@example.test>\r\nDate: Wed, 02 Dec 2026 12:00:00 +0000\r\n\r\n\
         Hello {to},\r\n.leading dot line\r\n\r\nbye\r\n"
    )
    .into_bytes()
}

async fn enqueue(queue: &Queue, from: &str, rcpts: &[&str], raw: Vec<u8>) -> i64 {
    queue
        .enqueue(
            Envelope {
                from: from.to_string(),
                rcpts: rcpts.iter().map(|r| QueuedRecipient::new(r)).collect(),
                authenticated_as: Some(from.to_string()),
                ..Envelope::default()
            },
            Body::Source {
                bucket: None,
                source: BlobSource::Bytes(Bytes::from(raw)),
            },
        )
        .await
        .expect("enqueue")
}

async fn queue_len(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM queue")
        .fetch_one(pool)
        .await
        .expect("count")
}

async fn wait_empty(pool: &PgPool) {
    eventually(WAIT, "the queue to empty", || async move {
        (queue_len(pool).await == 0).then_some(())
    })
    .await;
}

/// Runs `script` with the system Python, `input` on stdin; fails the test unless it exits 0.
async fn py(script: &str, args: &[&str], input: &[u8]) -> String {
    let mut child = tokio::process::Command::new(PYTHON)
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input).await.expect("write");
    drop(stdin);
    let out = child.wait_with_output().await.expect("python");
    assert!(
        out.status.success(),
        "python failed:\n{script}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Prints `From`, `To`, and per recipient `rcpt|action|status` of an RFC 3464 report, after
/// checking its structure with Python's `email` package.
const PARSE_DSN: &str = r#"
import sys, email
msg = email.message_from_bytes(sys.stdin.buffer.read())
assert msg.get_content_type() == "multipart/report", msg.get_content_type()
assert msg.get_param("report-type") == "delivery-status", msg.get_param("report-type")
parts = msg.get_payload()
status = [p for p in parts if p.get_content_type() == "message/delivery-status"]
assert len(status) == 1, [p.get_content_type() for p in parts]
blocks = status[0].get_payload()
assert blocks[0]["Reporting-MTA"] == "dns; mail.example.test", blocks[0]["Reporting-MTA"]
original = [p for p in parts if p.get_content_type() in ("text/rfc822-headers", "message/rfc822")]
assert len(original) == 1
print(msg["From"])
print(msg["To"])
print(original[0].get_content_type())
for b in blocks[1:]:
    print("%s|%s|%s" % (b["Final-Recipient"], b["Action"], b["Status"]))
"#;

/// The messages in alice's INBOX, as bytes.
async fn alice_inbox(server: &TestServer) -> Vec<Vec<u8>> {
    server
        .inbox("alice@example.test")
        .await
        .into_iter()
        .map(|(_, body)| body)
        .collect()
}

fn bytes_of(received: &world::Received) -> Vec<u8> {
    received.data.chars().map(|c| c as u32 as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_to_the_mx_dkim_signed_and_verified_by_dkimpy() {
    let (server, remote) = setup().await;
    let _runner = start_runner(&server.ctx().store, quick_settings(), remote.outbound());
    let queue = Queue::new(server.ctx().store.clone(), quick_settings());
    let id = enqueue(
        &queue,
        "alice@example.test",
        &["bob@remote.test"],
        message("bob@remote.test", "signed"),
    )
    .await;
    assert!(id > 0);
    let mx = &remote.mx;
    let got = eventually(WAIT, "delivery to the sink", || async move {
        mx.received_for("bob@remote.test").pop()
    })
    .await;
    assert_eq!(got.mail_from, "alice@example.test");
    assert!(
        got.tls,
        "opportunistic STARTTLS was offered and should be used"
    );
    let data = bytes_of(&got);
    assert!(
        data.starts_with(b"DKIM-Signature: v=1; a=rsa-sha256;"),
        "{}",
        got.data
    );
    assert!(
        got.data.contains("\r\n.leading dot line\r\n"),
        "dot-stuffing undone: {}",
        got.data
    );
    let dns = remote.dns.address();
    let verdict = py(
        r#"
import sys, dkim, dns.resolver
resolver = dns.resolver.Resolver(configure=False)
resolver.nameservers = [sys.argv[1]]
resolver.port = int(sys.argv[2])
def dnsfunc(name, timeout=5):
    name = name.decode() if isinstance(name, bytes) else name
    answer = resolver.resolve(name, "TXT", lifetime=timeout)
    return b"".join(b"".join(r.strings) for r in answer)
data = sys.stdin.buffer.read()
print("pass" if dkim.verify(data, dnsfunc=dnsfunc) else "fail")
tampered = data.replace(b"bye", b"BYE")
print("pass" if dkim.verify(tampered, dnsfunc=dnsfunc) else "fail")
"#,
        &[&dns.ip().to_string(), &dns.port().to_string()],
        &data,
    )
    .await;
    assert_eq!(
        verdict, "pass\nfail\n",
        "dkimpy verdicts (original, tampered)"
    );
    wait_empty(server.pool()).await;
    // The body's reference was dropped with the queue row.
    let refs: i64 = sqlx::query_scalar("SELECT COALESCE(sum(refcount), 0)::bigint FROM blobs")
        .fetch_one(server.pool())
        .await
        .expect("refs");
    assert_eq!(refs, 0);
    assert_eq!(remote.mx.received_for("bob@remote.test").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_failures_then_success_deliver_exactly_once() {
    let (server, remote) = setup().await;
    let _runner = start_runner(&server.ctx().store, quick_settings(), remote.outbound());
    let queue = Queue::new(server.ctx().store.clone(), quick_settings());
    enqueue(
        &queue,
        "alice@example.test",
        &["temp2-carol@remote.test"],
        message("carol", "retry"),
    )
    .await;
    wait_empty(server.pool()).await;
    let got = remote.mx.received_for("temp2-carol@remote.test");
    assert_eq!(got.len(), 1, "delivered exactly once after two 451s");
    assert!(
        alice_inbox(&server).await.is_empty(),
        "no DSN for a delivered message"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_failure_gives_exactly_one_rfc3464_dsn() {
    let (server, remote) = setup().await;
    let _runner = start_runner(&server.ctx().store, quick_settings(), remote.outbound());
    let queue = Queue::new(server.ctx().store.clone(), quick_settings());
    enqueue(
        &queue,
        "alice@example.test",
        &[
            "perm-dave@remote.test",
            "perm-erin@remote.test",
            "frank@remote.test",
        ],
        message("dave", "bounce"),
    )
    .await;
    wait_empty(server.pool()).await;
    assert_eq!(remote.mx.received_for("frank@remote.test").len(), 1);
    let inbox = alice_inbox(&server).await;
    assert_eq!(inbox.len(), 1, "one DSN for both failed recipients");
    let parsed = py(PARSE_DSN, &[], &inbox[0]).await;
    let lines: Vec<&str> = parsed.lines().collect();
    assert_eq!(
        lines[0],
        "Mail Delivery System <MAILER-DAEMON@mail.example.test>"
    );
    assert_eq!(lines[1], "<alice@example.test>");
    assert_eq!(lines[2], "text/rfc822-headers");
    assert_eq!(
        &lines[3..],
        [
            "rfc822; perm-dave@remote.test|failed|5.1.1",
            "rfc822; perm-erin@remote.test|failed|5.1.1"
        ]
    );
    let text = String::from_utf8_lossy(&inbox[0]);
    assert!(text.contains("550 5.1.1 no such user here"), "{text}");
    assert!(
        text.contains("Subject: bounce"),
        "original header included: {text}"
    );
    assert!(
        !text.contains(".leading dot line"),
        "only the header without RET=FULL"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_bounces_and_ret_full_returns_the_message() {
    let (server, remote) = setup().await;
    let settings = QueueSettings {
        lifetime: Duration::from_secs(2),
        ..quick_settings()
    };
    let _runner = start_runner(&server.ctx().store, settings.clone(), remote.outbound());
    let queue = Queue::new(server.ctx().store.clone(), settings);
    queue
        .enqueue(
            Envelope {
                from: "alice@example.test".into(),
                rcpts: vec![QueuedRecipient {
                    address: "temp999-gina@remote.test".into(),
                    notify: Some("FAILURE".into()),
                    orcpt: Some("rfc822;Gina@remote.test".into()),
                }],
                env_id: Some("ENV42".into()),
                ret: Some(Ret::Full),
                ..Envelope::default()
            },
            Body::Source {
                bucket: None,
                source: BlobSource::Bytes(Bytes::from(message("gina", "expiring"))),
            },
        )
        .await
        .expect("enqueue");
    wait_empty(server.pool()).await;
    assert!(
        remote
            .mx
            .received_for("temp999-gina@remote.test")
            .is_empty()
    );
    let inbox = alice_inbox(&server).await;
    assert_eq!(inbox.len(), 1, "one bounce at expiry");
    let parsed = py(PARSE_DSN, &[], &inbox[0]).await;
    let lines: Vec<&str> = parsed.lines().collect();
    assert_eq!(
        lines[2], "message/rfc822",
        "RET=FULL returns the whole message"
    );
    assert_eq!(lines[3], "rfc822; temp999-gina@remote.test|failed|4.4.7");
    let text = String::from_utf8_lossy(&inbox[0]);
    assert!(text.contains("Original-Envelope-Id: ENV42"), "{text}");
    assert!(
        text.contains("Original-Recipient: rfc822; Gina@remote.test"),
        "{text}"
    );
    assert!(
        text.contains(".leading dot line"),
        "the body is returned: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn null_sender_never_gets_a_bounce_and_null_mx_fails() {
    let (server, remote) = setup().await;
    let _runner = start_runner(&server.ctx().store, quick_settings(), remote.outbound());
    let queue = Queue::new(server.ctx().store.clone(), quick_settings());
    // A bounce (null sender) that fails: dropped, never bounced.
    enqueue(
        &queue,
        "",
        &["perm-hank@remote.test"],
        message("hank", "bounce-of-bounce"),
    )
    .await;
    // Null MX: fails at once, bounced to alice with 5.1.10; the implicit MX is used.
    enqueue(
        &queue,
        "alice@example.test",
        &["ivan@nullmx.test", "judy@implicit.test"],
        message("ivan", "nullmx"),
    )
    .await;
    wait_empty(server.pool()).await;
    assert_eq!(
        remote.mx.received_for("judy@implicit.test").len(),
        1,
        "implicit MX (A record)"
    );
    let inbox = alice_inbox(&server).await;
    assert_eq!(
        inbox.len(),
        1,
        "only the null-MX bounce, none for the null sender"
    );
    let parsed = py(PARSE_DSN, &[], &inbox[0]).await;
    assert!(
        parsed.contains("rfc822; ivan@nullmx.test|failed|5.1.10"),
        "{parsed}"
    );
    assert!(!parsed.contains("hank"), "{parsed}");
    let received: usize = remote.mx.received().len();
    assert_eq!(
        received,
        1,
        "nothing else went out: {:?}",
        remote.mx.received()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mta_sts_enforce_allows_only_matching_mx_with_verified_tls() {
    let (server, remote) = setup().await;
    let policies = remote.dir.path().join("policies");
    std::fs::create_dir(&policies).expect("dir");
    std::fs::write(
        policies.join("mta-sts.sts-ok.test.txt"),
        "version: STSv1\nmode: enforce\nmx: mx.sts-ok.test\nmax_age: 86400\n",
    )
    .expect("policy");
    std::fs::write(
        policies.join("mta-sts.sts-bad.test.txt"),
        "version: STSv1\nmode: enforce\nmx: other.sts-bad.test\nmax_age: 86400\n",
    )
    .expect("policy");
    let args: Vec<OsString> = vec![
        policies.into(),
        remote.certs.cert_file.clone().into(),
        remote.certs.key_file.clone().into(),
    ];
    let dir = remote.dir.path().to_path_buf();
    let https = tokio::task::spawn_blocking(move || {
        PyServer::start(&dir, "mta-sts", "mta_sts_server.py", &args)
    })
    .await
    .expect("https");
    let mut outbound = remote.outbound();
    outbound.https_port = https.port;
    let _runner = start_runner(&server.ctx().store, quick_settings(), outbound);
    let queue = Queue::new(server.ctx().store.clone(), quick_settings());
    let id = enqueue(
        &queue,
        "alice@example.test",
        &["kim@sts-ok.test", "leo@sts-bad.test"],
        message("kim", "sts"),
    )
    .await;
    let mx = &remote.mx;
    let got = eventually(WAIT, "delivery under the matching policy", || async move {
        mx.received_for("kim@sts-ok.test").pop()
    })
    .await;
    assert!(got.tls, "enforce delivers over (verified) TLS only");
    let pool = server.pool();
    let status: String = eventually(WAIT, "the excluded MX to be refused", || async move {
        sqlx::query_scalar::<_, Option<String>>(
            "SELECT last_status FROM queue_recipients WHERE queue_id = $1 AND recipient = $2 AND attempts > 0",
        )
        .bind(id)
        .bind("leo@sts-bad.test")
        .fetch_optional(pool)
        .await
        .expect("row")
        .flatten()
    })
    .await;
    assert_eq!(status, "4.7.5", "deferred: no MX matches the policy");
    assert!(remote.mx.received_for("leo@sts-bad.test").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smarthost_relays_everything_with_auth_over_tls() {
    let (server, remote) = setup().await;
    let dir = remote.dir.path().to_path_buf();
    let args: Vec<OsString> = vec![
        "--tls".into(),
        remote.certs.cert_file.clone().into(),
        remote.certs.key_file.clone().into(),
        "--auth".into(),
        "relayuser:relay-secret".into(),
    ];
    let relay = tokio::task::spawn_blocking(move || Sink::start(&dir, "relay", &args))
        .await
        .expect("relay");
    let mut outbound = remote.outbound();
    outbound.smarthost = Some(Smarthost {
        host: "relay.test".into(),
        port: relay.server.port,
        tls: TlsMode::StartTls,
        username: Some("relayuser".into()),
        password: Some("relay-secret".into()),
    });
    let _runner = start_runner(&server.ctx().store, quick_settings(), outbound);
    let queue = Queue::new(server.ctx().store.clone(), quick_settings());
    // Even a domain with a null MX goes to the relay, which decides.
    enqueue(
        &queue,
        "alice@example.test",
        &["max@nullmx.test"],
        message("max", "relayed"),
    )
    .await;
    wait_empty(server.pool()).await;
    let got = relay.received_for("max@nullmx.test");
    assert_eq!(got.len(), 1);
    assert!(got[0].tls && got[0].auth, "STARTTLS and AUTH: {:?}", got[0]);
    assert!(remote.mx.received().is_empty(), "nothing went to an MX");
    assert!(alice_inbox(&server).await.is_empty());
}

/// Speaks HTTP/1.1 to the server's HTTP port; (status, body).
async fn http(addr: std::net::SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(
            format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_inspection_over_http_lists_retries_and_deletes() {
    let server = TestServer::builder()
        .domain("example.test")
        .mailbox("alice@example.test", None)
        .start()
        .await;
    // No runner: the message stays queued.
    let queue = Queue::new(server.ctx().store.clone(), quick_settings());
    let id = enqueue(
        &queue,
        "alice@example.test",
        &["nina@remote.test"],
        message("nina", "held"),
    )
    .await;
    let addr = server.addresses().http;
    let (status, body) = http(addr, "GET", "/queue").await;
    assert_eq!(status, 200, "{body}");
    let listed: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(listed[0]["id"], id);
    assert_eq!(listed[0]["sender"], "alice@example.test");
    assert_eq!(listed[0]["recipients"][0]["address"], "nina@remote.test");
    assert_eq!(listed[0]["recipients"][0]["status"], "pending");
    sqlx::query("UPDATE queue_recipients SET next_attempt_at = now() + interval '1 hour'")
        .execute(server.pool())
        .await
        .expect("push back");
    assert_eq!(
        http(addr, "POST", &format!("/queue/{id}/retry")).await.0,
        200
    );
    let due: bool =
        sqlx::query_scalar("SELECT bool_and(next_attempt_at <= now()) FROM queue_recipients")
            .fetch_one(server.pool())
            .await
            .expect("due");
    assert!(due, "retry makes it due now");
    assert_eq!(http(addr, "POST", "/queue/999999/retry").await.0, 404);
    assert_eq!(http(addr, "DELETE", &format!("/queue/{id}")).await.0, 200);
    assert_eq!(http(addr, "DELETE", &format!("/queue/{id}")).await.0, 404);
    assert_eq!(queue_len(server.pool()).await, 0);
    let refs: i64 = sqlx::query_scalar("SELECT COALESCE(sum(refcount), 0)::bigint FROM blobs")
        .fetch_one(server.pool())
        .await
        .expect("refs");
    assert_eq!(refs, 0, "deleting released the body");
    let (status, metrics) = http(addr, "GET", "/metrics").await;
    assert_eq!(status, 200);
    for series in [
        "mailserver_queue_messages",
        "mailserver_queue_oldest_seconds",
        "mailserver_queue_delivery_attempts_total",
    ] {
        assert!(metrics.contains(series), "{series} missing");
    }
}

/// One `mailserver` process running a queue runner on a shared database.
struct Process {
    _child: tokio::process::Child,
    http: std::net::SocketAddr,
    _stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

async fn spawn_runner_process(url: &str, blobs: &std::path::Path, remote: &Remote) -> Process {
    let data = remote
        .dir
        .path()
        .join(format!("data-{}", rand::random::<u32>()));
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mailserver"))
        .args(["--database-url", url, "--blob-dir"])
        .arg(blobs)
        .arg("--data-dir")
        .arg(&data)
        .args([
            "--listen",
            "smtp=127.0.0.1:0,tls=none",
            "--http-listen",
            "127.0.0.1:0",
            "--hostname",
            "mail.example.test",
            "--dns-server",
            &remote.dns.address().to_string(),
            "--outbound-smtp-port",
            &remote.mx.server.port.to_string(),
            "--queue-poll-ms",
            "50",
            "--queue-concurrency",
            "8",
        ])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("mailserver starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut http = None;
    while let Some(line) = lines.next_line().await.expect("stdout") {
        if line == "ready" {
            break;
        }
        if let Some(addr) = line.strip_prefix("HTTP listening on ") {
            http = addr.parse().ok();
        }
    }
    Process {
        _child: child,
        http: http.expect("HTTP address printed"),
        _stdout: lines,
    }
}

fn delivered_count(metrics: &str) -> f64 {
    mailserver::metrics::sample(
        metrics,
        "mailserver_queue_delivery_attempts_total{result=\"delivered\"}",
    )
    .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runner_processes_never_deliver_a_recipient_twice() {
    const MESSAGES: usize = 300;
    let remote = tokio::task::spawn_blocking(|| Remote::start("\"v=DKIM1; p=\""))
        .await
        .expect("remote");
    let url = tokio::task::spawn_blocking(mail_testkit::fresh_database)
        .await
        .expect("db");
    let pool = PgPool::connect(&url).await.expect("connect");
    mail_provision::migrate(&pool).await.expect("migrate");
    sqlx::query("INSERT INTO domains (name, bucket) VALUES ('example.test', 'example-test')")
        .execute(&pool)
        .await
        .expect("domain");
    let blobs = tempfile::tempdir().expect("blobs");
    let blob_store = Arc::new(FsBlobStore::new(blobs.path()));
    blob_store
        .create_bucket("example-test")
        .await
        .expect("bucket");
    let store = Store::new(pool.clone(), blob_store);
    let a = spawn_runner_process(&url, blobs.path(), &remote).await;
    let b = spawn_runner_process(&url, blobs.path(), &remote).await;
    let queue = Queue::new(store, quick_settings());
    for i in 0..MESSAGES {
        let to = format!("dup{i}@remote.test");
        enqueue(
            &queue,
            "alice@example.test",
            &[&to],
            message(&to, &format!("dup{i}")),
        )
        .await;
    }
    wait_empty(&pool).await;
    let mut per_rcpt: HashMap<String, usize> = HashMap::new();
    for got in remote.mx.received() {
        for rcpt in got.rcpt_tos {
            *per_rcpt.entry(rcpt).or_default() += 1;
        }
    }
    assert_eq!(per_rcpt.len(), MESSAGES, "every recipient got its message");
    let twice: Vec<_> = per_rcpt.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    let done_a = delivered_count(&http(a.http, "GET", "/metrics").await.1);
    let done_b = delivered_count(&http(b.http, "GET", "/metrics").await.1);
    eprintln!("runner a delivered {done_a}, runner b {done_b}");
    assert_eq!(done_a + done_b, MESSAGES as f64);
    assert!(
        done_a > 0.0 && done_b > 0.0,
        "both runners took work: {done_a} + {done_b}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_notice_then_delivery_and_requiretls_refused_by_a_host_without_it() {
    let (server, remote) = setup().await;
    let settings = QueueSettings {
        delay_notice: Duration::ZERO,
        ..quick_settings()
    };
    let _runner = start_runner(&server.ctx().store, settings.clone(), remote.outbound());
    let queue = Queue::new(server.ctx().store.clone(), settings);
    enqueue(
        &queue,
        "alice@example.test",
        &["temp3-olga@remote.test"],
        message("olga", "slow"),
    )
    .await;
    queue
        .enqueue(
            Envelope {
                from: "alice@example.test".into(),
                rcpts: vec![QueuedRecipient::new("pete@remote.test")],
                requiretls: true,
                ..Envelope::default()
            },
            Body::Source {
                bucket: None,
                source: BlobSource::Bytes(Bytes::from(message("pete", "requiretls"))),
            },
        )
        .await
        .expect("enqueue");
    wait_empty(server.pool()).await;
    assert_eq!(remote.mx.received_for("temp3-olga@remote.test").len(), 1);
    assert!(
        remote.mx.received_for("pete@remote.test").is_empty(),
        "aiosmtpd offers no REQUIRETLS, so the message must not go there"
    );
    let mut reports = Vec::new();
    for dsn in alice_inbox(&server).await {
        reports.push(
            py(PARSE_DSN, &[], &dsn)
                .await
                .lines()
                .skip(3)
                .collect::<Vec<_>>()
                .join(","),
        );
    }
    reports.sort();
    assert_eq!(
        reports,
        [
            "rfc822; pete@remote.test|failed|5.7.10",
            "rfc822; temp3-olga@remote.test|delayed|4.3.0"
        ],
        "one delay notice (not one per retry) and one REQUIRETLS bounce"
    );
}

#[tokio::test]
async fn ed25519_signature_verifies_with_dkimpy() {
    use base64::Engine as _;
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("key");
    let key =
        mailserver::dkim::DkimKey::from_pem("example.test", "ed", "ed25519", &pair.serialize_pem())
            .expect("key");
    let raw = message("zoe@remote.test", "ed25519");
    let header = key.sign(&raw, 1_764_000_000).expect("sign");
    let mut signed = header.into_bytes();
    signed.extend_from_slice(&raw);
    let public = base64::engine::general_purpose::STANDARD.encode(pair.public_key_raw());
    let verdict = py(
        r#"
import sys, dkim
record = ("v=DKIM1; k=ed25519; p=" + sys.argv[1]).encode()
def dnsfunc(name, timeout=5):
    name = name.decode() if isinstance(name, bytes) else name
    return record if name.rstrip(".") == "ed._domainkey.example.test" else b""
data = sys.stdin.buffer.read()
print("pass" if dkim.verify(data, dnsfunc=dnsfunc) else "fail")
print("pass" if dkim.verify(data.replace(b"Subject: ed25519", b"Subject: changed"), dnsfunc=dnsfunc) else "fail")
"#,
        &[&public],
        &signed,
    )
    .await;
    assert_eq!(
        verdict, "pass\nfail\n",
        "dkimpy verdicts (original, tampered header)"
    );
}

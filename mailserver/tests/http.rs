//! The HTTP port for operations, over real TCP: liveness, readiness against a real and an
//! unreachable PostgreSQL, Prometheus metrics that move with deliveries, logins and connections.
//!
//! The metrics are process-wide, so only `metrics_follow_what_the_server_does` in this test
//! binary delivers, logs in or opens mail connections; the exact deltas it asserts rely on that.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::TestServer;
use mailserver::metrics::sample;
use mailserver::{Addresses, RunningServer};
use sqlx::postgres::PgPoolOptions;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A response: status code, headers (lower-case names), body.
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `GET path` over a fresh HTTP/1.1 connection that the server closes after answering.
async fn get(addr: SocketAddr, path: &str) -> Response {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("the server answers and closes")
        .expect("read");
    let raw = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("head and body");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("status line: {status_line:?}"));
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect::<Vec<_>>();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Response {
        status,
        headers,
        body,
    }
}

/// The body of a chunked transfer encoding.
fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").expect("chunk size line");
        let size = usize::from_str_radix(size.trim(), 16).expect("hex chunk size");
        if size == 0 {
            return out;
        }
        out.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
}

async fn metric(addr: SocketAddr, series: &str) -> f64 {
    let response = get(addr, "/metrics").await;
    assert_eq!(response.status, 200);
    sample(&response.body, series).unwrap_or_else(|| panic!("{series} in:\n{}", response.body))
}

async fn start() -> TestServer {
    TestServer::builder()
        .domain("example.test")
        .unbucketed_domain("broken.test")
        .mailbox("alice@example.test", Some("secret"))
        .mailbox("eve@broken.test", None)
        .start()
        .await
}

#[tokio::test]
async fn healthz_answers_ok() {
    let world = start().await;
    let response = get(world.addresses().http, "/healthz").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.body, "ok\n");
    world.stop().await;
}

#[tokio::test]
async fn readyz_is_200_with_the_database() {
    let world = start().await;
    let response = get(world.addresses().http, "/readyz").await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.body, "ok\n");
    world.stop().await;
}

#[tokio::test]
async fn readyz_is_503_without_the_database_but_healthz_stays_200() {
    // Port 1 on loopback refuses connections, as a database that went away does.
    let pool = PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(1))
        .connect_lazy("postgres://nobody@127.0.0.1:1/none")
        .expect("a valid URL");
    let blobs = tempfile::tempdir().expect("temp dir");
    let ctx = common::context(pool, blobs.path(), "mx.test");
    let any = "127.0.0.1:0".parse().expect("address");
    let server = RunningServer::start(ctx, Addresses::all(any))
        .await
        .expect("server starts");
    let http = server.addresses.http;

    let started = Instant::now();
    let response = get(http, "/readyz").await;
    assert_eq!(response.status, 503, "{}", response.body);
    assert!(
        response.body.starts_with("database: "),
        "reason: {:?}",
        response.body
    );
    assert_eq!(
        response.body.lines().count(),
        1,
        "one line: {:?}",
        response.body
    );
    // The answer comes within the readiness timeout (plus slack), not after the driver's own.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    let response = get(http, "/healthz").await;
    assert_eq!(response.status, 200);
    server.shutdown().await;
}

#[tokio::test]
async fn unknown_paths_are_404() {
    let world = start().await;
    let http = world.addresses().http;
    for path in ["/", "/metricsx", "/healthz/more", "/nowhere"] {
        assert_eq!(get(http, path).await.status, 404, "{path}");
    }
    world.stop().await;
}

#[tokio::test]
async fn metrics_follow_what_the_server_does() {
    let world = start().await;
    let http = world.addresses().http;

    let response = get(http, "/metrics").await;
    assert_eq!(response.status, 200);
    assert!(
        response
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/openmetrics-text")),
        "content type: {:?}",
        response.header("content-type")
    );
    assert!(response.body.ends_with("# EOF\n"), "{}", response.body);

    const OK: &str = "mailserver_deliveries_total{result=\"ok\"}";
    const ERROR: &str = "mailserver_deliveries_total{result=\"error\"}";
    const BYTES: &str = "mailserver_delivered_bytes_total";
    const LOGIN_OK: &str = "mailserver_logins_total{result=\"ok\"}";
    const LOGIN_FAILED: &str = "mailserver_logins_total{result=\"failed\"}";
    const SMTP: &str = "mailserver_connections_total{protocol=\"smtp\"}";
    const SMTP_OPEN: &str = "mailserver_connections_open{protocol=\"smtp\"}";

    // A delivery: ok +1, bytes + the message's size.
    let message = b"Subject: metrics\r\n\r\ncounted\r\n";
    let (ok, bytes) = (metric(http, OK).await, metric(http, BYTES).await);
    world.deliver("alice@example.test", message).await;
    assert_eq!(metric(http, OK).await, ok + 1.0);
    assert_eq!(metric(http, BYTES).await, bytes + message.len() as f64);

    // A delivery that fails (its bucket does not exist): error +1, no bytes.
    let error = metric(http, ERROR).await;
    let store = &world.ctx().store;
    let eve = store
        .resolve_recipient("eve@broken.test")
        .await
        .expect("resolve")
        .expect("eve exists");
    assert!(store.deliver(message, &[eve]).await.is_err());
    assert_eq!(metric(http, ERROR).await, error + 1.0);
    assert_eq!(metric(http, OK).await, ok + 1.0);
    assert_eq!(metric(http, BYTES).await, bytes + message.len() as f64);

    // A wrong password, then the right one.
    let (good, failed) = (
        metric(http, LOGIN_OK).await,
        metric(http, LOGIN_FAILED).await,
    );
    let auth = &world.ctx().auth;
    let wrong = auth.verify("alice@example.test", "wrong").await;
    assert!(matches!(wrong, Ok(None)), "{wrong:?}");
    assert_eq!(metric(http, LOGIN_FAILED).await, failed + 1.0);
    assert_eq!(metric(http, LOGIN_OK).await, good);
    let right = auth.verify("alice@example.test", "secret").await;
    assert!(matches!(right, Ok(Some(_))), "{right:?}");
    assert_eq!(metric(http, LOGIN_OK).await, good + 1.0);
    assert_eq!(metric(http, LOGIN_FAILED).await, failed + 1.0);

    // An SMTP connection: counted when accepted, open until it closes.
    let (total, open) = (metric(http, SMTP).await, metric(http, SMTP_OPEN).await);
    let smtp = TcpStream::connect(world.addresses().smtp)
        .await
        .expect("connect");
    let mut smtp = BufReader::new(smtp);
    let mut greeting = String::new();
    smtp.read_line(&mut greeting).await.expect("greeting");
    assert!(greeting.starts_with("220"), "{greeting:?}");
    assert_eq!(metric(http, SMTP).await, total + 1.0);
    assert_eq!(metric(http, SMTP_OPEN).await, open + 1.0);
    smtp.get_mut().write_all(b"QUIT\r\n").await.expect("quit");
    let mut rest = Vec::new();
    smtp.read_to_end(&mut rest).await.expect("server closes");
    // The handler's task ends just after the socket closes.
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(http, SMTP_OPEN).await != open {
        assert!(
            Instant::now() < deadline,
            "the SMTP connection still counts as open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(metric(http, SMTP).await, total + 1.0);

    world.stop().await;
}

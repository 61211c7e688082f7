//! The SMTP connection loop over an in-memory stream: pipelined replies on the wire, timeouts,
//! shutdown, and a database that cannot be reached. No PostgreSQL is needed: the pool points at
//! a closed port, which is exactly the "store down" case.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mailserver::Context;
use mailserver::smtp::{Limits, connection};
use sqlx::postgres::PgPoolOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::oneshot;

fn context(blobs: &tempfile::TempDir) -> Arc<Context> {
    // Port 1 on loopback refuses connections: every query fails quickly.
    let pool = PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(2))
        .connect_lazy("postgres://nobody@127.0.0.1:1/none")
        .expect("a valid URL");
    common::context(pool, blobs.path(), "mx.test")
}

fn peer() -> SocketAddr {
    "127.0.0.1:40000".parse().expect("an address")
}

/// Starts a session on one end of a pipe; returns the client end and a shutdown trigger.
fn start(limits: Limits) -> (DuplexStream, oneshot::Sender<()>, tempfile::TempDir) {
    let blobs = tempfile::tempdir().expect("temp dir");
    let ctx = context(&blobs);
    let (client, server) = tokio::io::duplex(64 * 1024);
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.await;
        };
        connection::serve(server, peer(), ctx, limits, shutdown).await
    });
    (client, stop, blobs)
}

/// Everything the server writes until it closes the stream (bounded by a generous timeout).
async fn read_to_close(client: &mut DuplexStream) -> String {
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), client.read_to_end(&mut all))
        .await
        .expect("server closes the stream")
        .expect("read");
    String::from_utf8(all).expect("replies are UTF-8")
}

const EHLO: &str = "250-mx.test greets c.test\r\n250-PIPELINING\r\n250-SIZE 52428800\r\n\
                    250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n250-DSN\r\n250 CHUNKING\r\n";

#[tokio::test]
async fn pipelined_commands_get_replies_in_order() {
    let (mut client, _stop, _blobs) = start(Limits::default());
    client
        .write_all(b"EHLO c.test\r\nNOOP\r\nMAIL FROM:<a@x.test>\r\nRSET\r\nVRFY x\r\nQUIT\r\n")
        .await
        .expect("write");
    assert_eq!(
        read_to_close(&mut client).await,
        format!(
            "220 mx.test ESMTP ready\r\n{EHLO}250 2.0.0 Ok\r\n250 2.1.0 Ok\r\n250 2.0.0 Ok\r\n\
             252 2.0.0 cannot VRFY user, but will accept message and attempt delivery\r\n\
             221 2.0.0 mx.test closing connection\r\n"
        )
    );
}

#[tokio::test]
async fn unreachable_database_is_a_temporary_failure() {
    let (mut client, _stop, _blobs) = start(Limits::default());
    client
        .write_all(b"EHLO c.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\nQUIT\r\n")
        .await
        .expect("write");
    assert_eq!(
        read_to_close(&mut client).await,
        format!(
            "220 mx.test ESMTP ready\r\n{EHLO}250 2.1.0 Ok\r\n\
             451 4.3.0 recipient lookup failed, try again later\r\n\
             554 5.5.1 no valid recipients\r\n221 2.0.0 mx.test closing connection\r\n"
        )
    );
}

#[tokio::test]
async fn idle_client_gets_421() {
    let limits = Limits {
        idle_timeout: Duration::from_millis(200),
        ..Limits::default()
    };
    let (mut client, _stop, _blobs) = start(limits);
    client.write_all(b"EHLO c.test\r\n").await.expect("write");
    assert_eq!(
        read_to_close(&mut client).await,
        format!(
            "220 mx.test ESMTP ready\r\n{EHLO}421 4.4.2 timeout exceeded, closing connection\r\n"
        )
    );
}

#[tokio::test]
async fn busy_client_still_meets_the_session_cap() {
    let limits = Limits {
        idle_timeout: Duration::from_secs(60),
        session_timeout: Duration::from_millis(500),
        ..Limits::default()
    };
    let (client, _stop, _blobs) = start(limits);
    let (mut reader, mut writer) = tokio::io::split(client);
    let chatter = tokio::spawn(async move {
        // NOOP every 50 ms: never idle, until the server hangs up.
        while writer.write_all(b"NOOP\r\n").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), reader.read_to_end(&mut all))
        .await
        .expect("server closes the stream")
        .expect("read");
    let text = String::from_utf8(all).expect("UTF-8");
    assert!(text.contains("250 2.0.0 Ok\r\n"), "{text}");
    assert!(
        text.ends_with("421 4.4.2 timeout exceeded, closing connection\r\n"),
        "{text}"
    );
    chatter.abort();
}

#[tokio::test]
async fn shutdown_says_421() {
    let (mut client, stop, _blobs) = start(Limits::default());
    client.write_all(b"EHLO c.test\r\n").await.expect("write");
    let mut greeting = [0u8; 25];
    client.read_exact(&mut greeting).await.expect("greeting");
    assert_eq!(&greeting, b"220 mx.test ESMTP ready\r\n");
    stop.send(()).expect("server running");
    let rest = read_to_close(&mut client).await;
    assert!(
        rest.ends_with("421 4.3.2 service shutting down\r\n"),
        "{rest}"
    );
}

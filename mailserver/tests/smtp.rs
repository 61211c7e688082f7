//! Inbound SMTP end to end: a real PostgreSQL (mail-testkit), a filesystem blob store, the
//! server on a free port, and clients speaking SMTP over TCP (our own and Python's smtplib).
//! Stored messages must be exactly the trace headers plus what the client sent.

mod common;

use std::net::SocketAddr;

use chrono::DateTime;
use common::TestServer;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// `example.test` (alice, bob, small with a 600-byte quota) and `broken.test` (zed), whose
/// bucket was never created so that storing there fails.
async fn start() -> TestServer {
    TestServer::builder()
        .hostname("mx.test")
        .domain("example.test")
        .unbucketed_domain("broken.test")
        .mailbox("alice@example.test", None)
        .mailbox("bob@example.test", None)
        .mailbox_with_quota("small@example.test", 600)
        .mailbox("zed@broken.test", None)
        .start()
        .await
}

/// A minimal SMTP client: write raw bytes, read whole (multi-line) replies.
struct Client {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Self {
        let (read, writer) = TcpStream::connect(addr)
            .await
            .expect("connect")
            .into_split();
        Self {
            reader: BufReader::new(read),
            writer,
        }
    }

    async fn send(&mut self, bytes: &str) {
        self.writer
            .write_all(bytes.as_bytes())
            .await
            .expect("write");
    }

    /// One reply, all its lines.
    async fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            let n = self.reader.read_line(&mut line).await.expect("read");
            assert!(n > 0, "connection closed after {all:?}");
            all.push_str(&line);
            if line.as_bytes().get(3) == Some(&b' ') {
                return all;
            }
        }
    }

    async fn expect(&mut self, want: &str) {
        assert_eq!(self.reply().await, format!("{want}\r\n"));
    }
}

/// Checks `stored` is `Return-Path`, `Received` (with `id` and a valid date), then `sent`.
fn assert_stored(stored: &[u8], sender: &str, helo: &str, protocol: &str, id: &str, sent: &str) {
    let text = String::from_utf8(stored.to_vec()).expect("UTF-8");
    let head = format!(
        "Return-Path: <{sender}>\r\nReceived: from {helo} ([127.0.0.1])\r\n\
         \tby mx.test with {protocol} id {id};\r\n\t"
    );
    let rest = text
        .strip_prefix(&head)
        .unwrap_or_else(|| panic!("{text:?}"));
    let (date, body) = rest.split_once("\r\n").expect("date line");
    DateTime::parse_from_rfc2822(date).unwrap_or_else(|e| panic!("date {date:?}: {e}"));
    assert_eq!(body, sent);
}

fn queued_id(reply: &str) -> String {
    reply
        .strip_prefix("250 2.0.0 Ok: queued as ")
        .and_then(|rest| rest.strip_suffix("\r\n"))
        .unwrap_or_else(|| panic!("not a queued reply: {reply:?}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn one_message_to_several_mailboxes_is_stored_once() {
    let fx = start().await;
    let mut c = Client::connect(fx.addresses().smtp).await;
    c.expect("220 mx.test ESMTP ready").await;
    // The whole envelope pipelined in one write.
    c.send(
        "EHLO client.test\r\nMAIL FROM:<sender@remote.test> BODY=8BITMIME\r\n\
         RCPT TO:<alice@example.test>\r\nRCPT TO:<Bob@Example.TEST>\r\n\
         RCPT TO:<nobody@example.test>\r\nRCPT TO:<x@elsewhere.test>\r\nDATA\r\n",
    )
    .await;
    let ehlo = c.reply().await;
    assert!(
        ehlo.starts_with("250-mx.test greets client.test\r\n"),
        "{ehlo}"
    );
    assert!(ehlo.contains("250-PIPELINING\r\n") && ehlo.contains("250-SIZE 52428800\r\n"));
    c.expect("250 2.1.0 Ok").await;
    c.expect("250 2.1.5 Ok").await;
    c.expect("250 2.1.5 Ok").await;
    c.expect("550 5.1.1 <nobody@example.test>: mailbox unavailable")
        .await;
    c.expect("550 5.7.1 <x@elsewhere.test>: relaying denied")
        .await;
    c.expect("354 End data with <CR><LF>.<CR><LF>").await;
    c.send("Subject: hello\r\n\r\n..leading dot\r\nline two\r\n.\r\n")
        .await;
    let id = queued_id(&c.reply().await);
    c.send("QUIT\r\n").await;
    c.expect("221 2.0.0 mx.test closing connection").await;

    let sent = "Subject: hello\r\n\r\n.leading dot\r\nline two\r\n";
    let mut keys = Vec::new();
    for address in ["alice@example.test", "bob@example.test"] {
        let inbox = fx.inbox(address).await;
        assert_eq!(inbox.len(), 1, "{address}");
        let (meta, body) = &inbox[0];
        assert_stored(
            body,
            "sender@remote.test",
            "client.test",
            "ESMTP",
            &id,
            sent,
        );
        assert_eq!(meta.size, body.len() as i64);
        assert_eq!(fx.used_bytes(address).await, meta.size);
        keys.push((meta.bucket.clone(), meta.blob_key.clone()));
    }
    assert_eq!(keys[0], keys[1], "one body for both mailboxes");
    let (blobs, refcount): (i64, i64) =
        sqlx::query_as("SELECT count(*), sum(refcount)::bigint FROM blobs")
            .fetch_one(fx.pool())
            .await
            .expect("blobs");
    assert_eq!((blobs, refcount), (1, 2));
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_store_answers_451_and_delivers_nothing() {
    let fx = start().await;
    let mut c = Client::connect(fx.addresses().smtp).await;
    c.expect("220 mx.test ESMTP ready").await;
    c.send(
        "HELO client.test\r\nMAIL FROM:<>\r\nRCPT TO:<alice@example.test>\r\n\
         RCPT TO:<zed@broken.test>\r\nDATA\r\n",
    )
    .await;
    c.expect("250 mx.test").await;
    c.expect("250 2.1.0 Ok").await;
    c.expect("250 2.1.5 Ok").await;
    c.expect("250 2.1.5 Ok").await;
    c.expect("354 End data with <CR><LF>.<CR><LF>").await;
    c.send("Subject: lost?\r\n\r\nbody\r\n.\r\n").await;
    // broken.test's bucket is missing: nothing is delivered, not even alice's copy.
    c.expect("451 4.3.0 message not stored, try again later")
        .await;
    assert!(fx.inbox("alice@example.test").await.is_empty());
    assert_eq!(fx.used_bytes("alice@example.test").await, 0);

    // The session goes on: the same message to alice alone is stored.
    c.send("MAIL FROM:<>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
        .await;
    c.expect("250 2.1.0 Ok").await;
    c.expect("250 2.1.5 Ok").await;
    c.expect("354 End data with <CR><LF>.<CR><LF>").await;
    c.send("Subject: lost?\r\n\r\nbody\r\n.\r\nQUIT\r\n").await;
    let id = queued_id(&c.reply().await);
    c.expect("221 2.0.0 mx.test closing connection").await;
    let inbox = fx.inbox("alice@example.test").await;
    assert_eq!(inbox.len(), 1);
    assert_stored(
        &inbox[0].1,
        "",
        "client.test",
        "SMTP",
        &id,
        "Subject: lost?\r\n\r\nbody\r\n",
    );
    fx.stop().await;
}

/// Offers small@ a message of `declared` bytes at RCPT (SIZE=) and then, without SIZE=, one
/// with a body of `body` bytes; both must be refused with `reply`.
async fn refused_both_ways(fx: &TestServer, declared: usize, body: usize, reply: &str) {
    let mut c = Client::connect(fx.addresses().smtp).await;
    c.expect("220 mx.test ESMTP ready").await;
    c.send(&format!(
        "EHLO client.test\r\nMAIL FROM:<s@remote.test> SIZE={declared}\r\n\
         RCPT TO:<small@example.test>\r\nRSET\r\n"
    ))
    .await;
    c.reply().await;
    c.expect("250 2.1.0 Ok").await;
    c.expect(reply).await;
    c.expect("250 2.0.0 Ok").await;
    // Without SIZE= the message is refused once its real size is known.
    c.send("MAIL FROM:<s@remote.test>\r\nRCPT TO:<small@example.test>\r\nDATA\r\n")
        .await;
    c.expect("250 2.1.0 Ok").await;
    c.expect("250 2.1.5 Ok").await;
    c.expect("354 End data with <CR><LF>.<CR><LF>").await;
    c.send(&format!(
        "Subject: big\r\n\r\n{}\r\n.\r\nQUIT\r\n",
        "x".repeat(body)
    ))
    .await;
    c.expect(reply).await;
    c.expect("221 2.0.0 mx.test closing connection").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn quota_is_checked_at_rcpt_and_after_data() {
    let fx = start().await;
    // Larger than the whole quota: permanent.
    let too_big = "552 5.2.2 <small@example.test>: message exceeds the mailbox quota";
    refused_both_ways(&fx, 601, 500, too_big).await;
    assert!(fx.inbox("small@example.test").await.is_empty());

    // Once the mailbox is partly full, a message that would fit an empty one is refused for
    // now (452 4.2.2, RFC 3463): the sender retries after the user made room.
    fx.deliver("small@example.test", &[b'x'; 400]).await;
    let full = "452 4.2.2 <small@example.test>: mailbox full, try again later";
    refused_both_ways(&fx, 300, 100, full).await;
    assert_eq!(fx.inbox("small@example.test").await.len(), 1);
    fx.stop().await;
}

/// Python's smtplib as an independent client: dot-stuffing, 8-bit content, refusals.
#[tokio::test(flavor = "multi_thread")]
async fn python_smtplib_delivers() {
    let fx = start().await;
    let port = fx.addresses().smtp.port();
    let script = r#"
import smtplib, sys
msg = b"Subject: from python\r\n\r\n.starts with a dot\r\n..two\r\n\xc3\xa9t\xc3\xa9\r\n.\r\nend\r\n"
with smtplib.SMTP("127.0.0.1", int(sys.argv[1]), local_hostname="py.test") as s:
    refused = s.sendmail("py@remote.test", ["alice@example.test", "nobody@example.test"], msg)
    assert list(refused) == ["nobody@example.test"], refused
    assert refused["nobody@example.test"][0] == 550, refused
    try:
        s.sendmail("py@remote.test", ["x@elsewhere.test"], msg)
        sys.exit("relaying was allowed")
    except smtplib.SMTPRecipientsRefused as e:
        assert e.recipients["x@elsewhere.test"][0] == 550, e.recipients
print("ok")
"#;
    common::python(script, &[&port.to_string()]).await;
    let inbox = fx.inbox("alice@example.test").await;
    assert_eq!(inbox.len(), 1);
    let stored = String::from_utf8(inbox[0].1.clone()).expect("UTF-8");
    let id = stored
        .split(" id ")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .expect("id in Received")
        .to_string();
    assert_stored(
        &inbox[0].1,
        "py@remote.test",
        "py.test",
        "ESMTP",
        &id,
        "Subject: from python\r\n\r\n.starts with a dot\r\n..two\r\nété\r\n.\r\nend\r\n",
    );
    fx.stop().await;
}

//! A message past the spool threshold (1 MiB) travels through a temporary file and is
//! stored byte for byte: Python's smtplib sends 3 MiB with dot-stuffed lines.

mod common;

use common::{TestServer, python};

const SEND: &str = r#"
import smtplib, sys
lines = b"".join(b".%07d stuffed line of a large message\r\n" % i for i in range(75000))
msg = b"Subject: big\r\n\r\n" + lines
with smtplib.SMTP("127.0.0.1", int(sys.argv[1])) as s:
    s.sendmail("bob@remote.test", ["alice@example.test"], msg)
print(len(msg))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_message_is_spooled_and_stored_whole() {
    let world = TestServer::builder()
        .domain("example.test")
        .mailbox("alice@example.test", None)
        .start()
        .await;
    let port = world.addresses().smtp.port().to_string();
    let sent: usize = python(SEND, &[&port]).await.trim().parse().unwrap();
    assert!(sent > 3 * 1024 * 1024 - 200_000, "{sent}");
    let inbox = world.inbox("alice@example.test").await;
    assert_eq!(inbox.len(), 1);
    let (meta, body) = &inbox[0];
    let text = String::from_utf8_lossy(body);
    // Trace headers first, then the message with each leading dot restored by unstuffing.
    assert!(text.starts_with("Return-Path: <bob@remote.test>\r\nReceived: from "));
    let start = text
        .find("Subject: big\r\n\r\n")
        .expect("message after the trace headers");
    assert_eq!(body.len() - start, sent);
    assert!(text.ends_with("\r\n.0074999 stuffed line of a large message\r\n"));
    assert_eq!(meta.size, body.len() as i64);
    world.stop().await;
}

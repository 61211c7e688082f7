//! Addressing and relaying end to end, with Python's smtplib as the client: no open relay (the
//! usual tricks, in one table), sub-addressing into folders, catch-all, case-insensitive local
//! parts, the bare `postmaster`, forwarding aliases handed to the outbound queue with an SRS
//! sender, and a UTF-8 envelope and header read back over IMAP.
//!
//! The outbound queue is another module's; here a recording [`Outbound`] stands in for it, so
//! the test can count what would have been relayed.

mod common;

use std::sync::{Arc, Mutex};

use common::{TestServer, python};
use mail_blobstore::BlobSource;
use mailserver::Addresses;
use mailserver::listener::{ListenerSpec, Protocol, Role, TlsMode};
use mailserver::pipeline::router::OutboundRcpt;
use mailserver::pipeline::{IncomingMessage, Outbound, OutboundError, PipelineSettings};
use mailserver::server::ServerConfig;
use mailserver::store::Addressing;

/// What reached the outbound queue: (envelope sender, recipients).
#[derive(Default)]
struct Recorder(Mutex<Vec<(String, Vec<String>)>>);

#[async_trait::async_trait]
impl Outbound for Recorder {
    async fn enqueue(
        &self,
        _message: &IncomingMessage,
        _body: &BlobSource,
        sender: &str,
        recipients: &[OutboundRcpt],
    ) -> Result<(), OutboundError> {
        let rcpts = recipients.iter().map(|r| r.address.clone()).collect();
        self.0.lock().unwrap().push((sender.to_string(), rcpts));
        Ok(())
    }
}

const SECRET: &[u8] = b"srs-test-secret";

async fn start(recorder: Arc<Recorder>) -> TestServer {
    let any = "127.0.0.1:0".parse().unwrap();
    let mut config = ServerConfig::plain(Addresses::all(any));
    config.listeners.push(ListenerSpec::new(
        Protocol::Smtp,
        any,
        TlsMode::None,
        Role::Submission,
    ));
    let world = TestServer::builder()
        .hostname("mx.example.test")
        .domain("example.test")
        .domain("catch.test")
        .mailbox("alice@example.test", Some("secret"))
        .mailbox("postmaster@example.test", None)
        .mailbox("carol@catch.test", None)
        .folder("alice@example.test", "Work", None)
        .server(config)
        .pipeline(PipelineSettings {
            srs_secret: Some(SECRET.to_vec()),
            outbound: Some(recorder),
            ..PipelineSettings::default()
        })
        .addressing(Addressing {
            srs_secret: Some(SECRET.to_vec()),
            ..Addressing::default()
        })
        .start()
        .await;
    let pool = world.pool();
    for statement in [
        "UPDATE domains SET catch_all = 'carol@catch.test' WHERE name = 'catch.test'",
        "INSERT INTO aliases (address, domain_id, mailbox_id)
         SELECT 'ünï@example.test', d.id, m.id FROM domains d, mailboxes m
          WHERE d.name = 'example.test' AND m.address = 'alice@example.test'",
        "INSERT INTO alias_forwards (address, domain_id, target)
         SELECT 'list@example.test', id, 'ext@remote.test' FROM domains WHERE name = 'example.test'",
    ] {
        sqlx::query(statement).execute(pool).await.expect(statement);
    }
    world
}

/// For each recipient argument: one session, MAIL FROM:<sender.test> and RCPT; on 250 the
/// message `Subject: <n>` follows. Prints `<rcpt code> <data code or ->` a line.
const RCPTS: &str = r#"
import smtplib, sys
host, port = sys.argv[1], int(sys.argv[2])
for n, rcpt in enumerate(sys.argv[3:]):
    s = smtplib.SMTP(host, port)
    s.ehlo('client.test')
    s.mail('someone@sender.test')
    code, _ = s.rcpt(rcpt)
    data = '-'
    if code == 250:
        data, _ = s.data(('Subject: case %d\r\n\r\nbody\r\n' % n).encode())
    print(code, data)
    s.quit()
"#;

#[tokio::test]
async fn no_open_relay_and_addressing() {
    let recorder = Arc::new(Recorder::default());
    let world = start(recorder.clone()).await;
    let smtp = world.addresses().smtp;

    // (recipient, RCPT reply code wanted): every trick is refused or lands locally.
    let table: &[(&str, u16)] = &[
        ("x@elsewhere.test", 550),
        ("x@ELSEWHERE.TEST", 550),
        ("x@elsewhere.test.", 550),
        ("alice%elsewhere.test@example.test", 550),
        ("<@a.test,@b.test:x@elsewhere.test>", 550),
        ("\"x@elsewhere.test\"@example.test", 550),
        ("x@elsewhere.test@example.test", 501),
        ("x@[192.0.2.1]", 550),
        ("x@[127.0.0.1]", 550),
        ("x@[IPv6:::1]", 550),
        ("alice@example.test.", 550),
        // Legal and local: delivered here, never relayed.
        ("ALICE@Example.TEST", 250),
        ("user%elsewhere.test@catch.test", 250),
    ];
    let mut args = vec![smtp.ip().to_string(), smtp.port().to_string()];
    args.extend(table.iter().map(|(rcpt, _)| rcpt.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = python(RCPTS, &args).await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), table.len(), "{out}");
    for ((rcpt, want), line) in table.iter().zip(&lines) {
        let (code, data) = line.split_once(' ').unwrap();
        let code: u16 = code.parse().unwrap();
        // Source routes may be refused as syntax (501) or as relaying (550): both refuse.
        let refused_either_way = *want == 550 && code == 501;
        assert!(code == *want || refused_either_way, "{rcpt}: got {line}");
        if code == 250 {
            assert_eq!(data, "250", "{rcpt}: DATA {line}");
        }
    }
    assert_eq!(
        world.inbox("alice@example.test").await.len(),
        1,
        "ALICE@ lands in alice's INBOX"
    );
    let carol = world.inbox("carol@catch.test").await;
    assert_eq!(
        carol.len(),
        1,
        "the %-hack at a catch-all domain stays local"
    );
    assert!(recorder.0.lock().unwrap().is_empty(), "nothing relayed");

    // An unauthenticated session on the submission port cannot send at all.
    let submission = world.listener("submission");
    let out = python(
        r#"
import smtplib, sys
s = smtplib.SMTP(sys.argv[1], int(sys.argv[2]))
s.ehlo('client.test')
print(s.mail('alice@example.test')[0])
"#,
        &[&submission.ip().to_string(), &submission.port().to_string()],
    )
    .await;
    assert_eq!(out.trim(), "530", "submission without TLS and AUTH");

    // Sub-addressing, the bare postmaster, forwarding, and a UTF-8 envelope and header.
    let out = python(
        r#"
import smtplib, sys
s = smtplib.SMTP(sys.argv[1], int(sys.argv[2]))
s.sendmail('someone@sender.test', ['alice+work@example.test'], b'Subject: tagged\r\n\r\nx\r\n')
s.sendmail('someone@sender.test', ['Alice+NoSuchFolder@example.test'], b'Subject: untagged\r\n\r\nx\r\n')
s.sendmail('someone@sender.test', ['postmaster'], b'Subject: to postmaster\r\n\r\nx\r\n')
s.sendmail('Bob@sender.test', ['list@example.test'], b'Subject: forwarded\r\n\r\nx\r\n')
s.sendmail('jörg@sender.test', ['ünï@example.test'],
           'Subject: Grüße\r\nFrom: Jörg <jörg@sender.test>\r\n\r\nhällo\r\n'.encode(),
           mail_options=['SMTPUTF8'])
s.quit()
print('sent')
"#,
        &[&smtp.ip().to_string(), &smtp.port().to_string()],
    )
    .await;
    assert_eq!(out.trim(), "sent");
    let work = world.folder_messages("alice@example.test", "Work").await;
    assert_eq!(work.len(), 1, "alice+work@ files into Work");
    assert!(String::from_utf8_lossy(&work[0].1).contains("Subject: tagged"));
    let inbox = world.inbox("alice@example.test").await;
    let subjects: Vec<String> = inbox
        .iter()
        .map(|(_, body)| String::from_utf8_lossy(body).into_owned())
        .collect();
    assert!(
        subjects.iter().any(|m| m.contains("Subject: untagged")),
        "{subjects:?}"
    );
    let postmaster = world.inbox("postmaster@example.test").await;
    assert_eq!(
        postmaster.len(),
        1,
        "bare postmaster delivers to the primary domain's"
    );
    let queued = recorder.0.lock().unwrap().clone();
    assert_eq!(queued.len(), 1, "{queued:?}");
    let (sender, rcpts) = &queued[0];
    assert_eq!(rcpts, &["ext@remote.test".to_string()]);
    assert!(
        sender.starts_with("SRS0=") && sender.ends_with("=sender.test=Bob@example.test"),
        "forwarded under an SRS sender: {sender}"
    );
    // A bounce to the SRS address routes back to the original sender (lower-cased).
    let back = world.ctx().store.route(sender).await.expect("route");
    assert_eq!(
        back,
        mailserver::store::Route::Remote(vec!["bob@sender.test".into()])
    );

    // BDAT (CHUNKING) over a raw socket: two chunks, the second past the spool threshold.
    let out = python(
        r#"
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
f = s.makefile('rb')
def reply():
    while True:
        line = f.readline().decode()
        if line[3:4] != '-':
            return line.strip()
reply()
s.sendall(b'EHLO client.test\r\n'); ehlo = reply()
first = b'Subject: chunked\r\n\r\n'
second = b'.' + b'y' * 300000 + b'\r\n'
s.sendall(b'MAIL FROM:<someone@sender.test>\r\nRCPT TO:<bob+x@catch.test>\r\n')
print(reply(), reply())
s.sendall(b'BDAT %d\r\n' % len(first) + first)
print(reply())
s.sendall(b'BDAT %d LAST\r\n' % len(second) + second)
print(reply())
s.sendall(b'QUIT\r\n'); reply()
"#,
        &[&smtp.ip().to_string(), &smtp.port().to_string()],
    )
    .await;
    let replies: Vec<&str> = out.lines().collect();
    assert_eq!(replies.len(), 3, "{out}");
    assert!(replies[1].starts_with("250 2.0.0 20 octets"), "{out}");
    assert!(replies[2].starts_with("250 2.0.0 Ok: queued"), "{out}");
    let carol = world.inbox("carol@catch.test").await;
    let chunked = carol
        .iter()
        .map(|(_, body)| body)
        .find(|body| String::from_utf8_lossy(body).contains("Subject: chunked"))
        .expect("the BDAT message reached the catch-all");
    assert!(chunked.ends_with(&[b".".as_slice(), &[b'y'; 300000], b"\r\n"].concat()));

    // SMTPUTF8 end to end: read back over IMAP, bytes intact.
    let imap = world.addresses().imap;
    let fetched = python(
        r#"
import imaplib, sys
m = imaplib.IMAP4(sys.argv[1], int(sys.argv[2]))
m.login('alice@example.test', 'secret')
m.select('INBOX')
typ, data = m.search(None, 'ALL')
for num in data[0].split():
    typ, msg = m.fetch(num, '(RFC822)')
    raw = msg[0][1]
    if 'Grüße'.encode() in raw:
        sys.stdout.buffer.write(raw)
m.logout()
"#,
        &[&imap.ip().to_string(), &imap.port().to_string()],
    )
    .await;
    assert!(
        fetched.contains("Return-Path: <jörg@sender.test>"),
        "{fetched}"
    );
    assert!(fetched.contains("with UTF8SMTP"), "{fetched}");
    assert!(
        fetched.contains("Subject: Grüße\r\nFrom: Jörg <jörg@sender.test>"),
        "{fetched}"
    );
    assert!(fetched.contains("hällo"), "{fetched}");
    world.stop().await;
}

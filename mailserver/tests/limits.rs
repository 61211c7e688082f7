//! Connection-level limits: no `+` for a big literal before login, a client that pipelines
//! and never reads is cut after the write timeout, and the per-IP connection cap.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::TestServer;
use mailserver::listener::{ListenerSpec, Policy, Protocol, Role, TlsMode};
use mailserver::server::{DRAIN_TIME, ServerConfig};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Clear-text SMTP, IMAP and POP3 with a one-second write timeout and three connections per
/// client address.
async fn start() -> TestServer {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let l = |protocol| ListenerSpec::new(protocol, any, TlsMode::None, Role::Mx);
    TestServer::builder()
        .domain("example.test")
        .mailbox("alice@example.test", Some("secret"))
        .server(ServerConfig {
            listeners: vec![l(Protocol::Smtp), l(Protocol::Imap), l(Protocol::Pop3)],
            http: any,
            tls: None,
            policy: Policy {
                max_per_ip: 3,
                write_timeout: Some(Duration::from_secs(1)),
                ..Policy::default()
            },
            grace: DRAIN_TIME,
        })
        .start()
        .await
}

async fn greeted(addr: SocketAddr) -> BufReader<TcpStream> {
    let mut reader = BufReader::new(TcpStream::connect(addr).await.unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).await.unwrap();
    assert!(
        line.starts_with("* OK") || line.starts_with("220 ") || line.starts_with("+OK"),
        "{line}"
    );
    reader
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits() {
    let server = start().await;
    let imap = server.listener("imap");

    // A 50 MiB literal before login: BYE, never `+`.
    let mut client = greeted(imap).await;
    client
        .get_mut()
        .write_all(b"a LOGIN {52428800}\r\n")
        .await
        .unwrap();
    let mut rest = String::new();
    client.read_to_string(&mut rest).await.unwrap();
    assert!(!rest.starts_with('+'), "{rest}");
    assert_eq!(rest, "* BYE Literal too large before login\r\n");

    // After login the same literal size is fine (APPEND needs it).
    let mut client = greeted(imap).await;
    client
        .get_mut()
        .write_all(b"a LOGIN alice@example.test secret\r\nb APPEND INBOX {52428800}\r\n")
        .await
        .unwrap();
    let mut lines = String::new();
    loop {
        let mut line = String::new();
        client.read_line(&mut line).await.unwrap();
        assert!(!line.is_empty(), "closed after {lines}");
        lines.push_str(&line);
        if line.starts_with('+') || line.starts_with("b ") {
            break;
        }
    }
    assert!(lines.ends_with("+ Ready for literal data\r\n"), "{lines}");
    drop(client);

    // After login a command line outside literals stays short: a 1 MB `FETCH 1,1,1,...`
    // would be decoded whole (hundreds of bytes of memory per byte sent) before any of the
    // session's own bounds see it. The client is told and closed.
    let mut client = greeted(imap).await;
    let set = vec!["1"; 500_000].join(",");
    let command =
        format!("a LOGIN alice@example.test secret\r\nb SELECT INBOX\r\nc FETCH {set} FLAGS\r\n");
    client
        .get_mut()
        .write_all(command.as_bytes())
        .await
        .unwrap();
    let mut rest = String::new();
    client.read_to_string(&mut rest).await.unwrap();
    assert!(rest.contains("a OK"), "{rest}");
    assert!(rest.ends_with("* BYE Command line too long\r\n"), "{rest}");

    // Pipelining without reading: the output backs up, the write timeout cuts the client,
    // and its slot comes back.
    for (label, command) in [
        ("smtp", &b"NOOP\r\n"[..]),
        ("imap", b"a NOOP\r\n"),
        ("pop3", b"CAPA\r\n"),
    ] {
        let mut stream = TcpStream::connect(server.listener(label)).await.unwrap();
        let chunk = command.repeat(4096);
        let mut sent = 0usize;
        let cut = loop {
            match stream.write_all(&chunk).await {
                Ok(()) => sent += chunk.len(),
                Err(err) => break err,
            }
            assert!(
                sent < 1 << 30,
                "{label}: a GiB went in and the server never cut us"
            );
        };
        assert!(
            matches!(
                cut.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ),
            "{label}: {cut}"
        );
    }

    // Three connections per address; the fourth is told and closed; one leaving frees a slot.
    let smtp = server.listener("smtp");
    let first = greeted(smtp).await;
    let _second = greeted(imap).await;
    let _third = greeted(server.listener("pop3")).await;
    let mut fourth = TcpStream::connect(smtp).await.unwrap();
    let mut refused = String::new();
    fourth.read_to_string(&mut refused).await.unwrap();
    assert_eq!(
        refused,
        "421 4.7.0 Too many connections from your address\r\n"
    );
    let mut first = first.into_inner();
    first.write_all(b"QUIT\r\n").await.unwrap();
    let mut bye = Vec::new();
    first.read_to_end(&mut bye).await.unwrap();
    // The server closes its end once QUIT is answered; the slot is free again after that.
    let mut again = None;
    for _ in 0..100 {
        let mut reader = BufReader::new(TcpStream::connect(smtp).await.unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).await.unwrap();
        if line.starts_with("220 ") {
            again = Some(line);
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(again.is_some(), "a slot came back after QUIT");
    server.stop().await;
}

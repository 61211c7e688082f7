//! PROXY protocol v1 and v2 from a trusted network set the client address that SMTP's
//! `Received` shows; a header from elsewhere, or none from a trusted peer, closes the
//! connection; a v2 header split across TCP segments works.

mod common;

use std::net::SocketAddr;

use common::TestServer;
use mailserver::listener::{ListenerSpec, Policy, Protocol, Role, TlsMode};
use mailserver::server::{DRAIN_TIME, ServerConfig};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};

/// Clear-text SMTP and IMAP that trust 127.0.0.1 (only) to send PROXY headers.
async fn start() -> TestServer {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    TestServer::builder()
        .domain("example.test")
        .mailbox("alice@example.test", None)
        .server(ServerConfig {
            listeners: vec![
                ListenerSpec::new(Protocol::Smtp, any, TlsMode::None, Role::Mx),
                ListenerSpec::new(Protocol::Imap, any, TlsMode::None, Role::Mx),
            ],
            http: any,
            tls: None,
            policy: Policy {
                proxy_trusted: "127.0.0.1/32".parse().unwrap(),
                ..Policy::default()
            },
            grace: DRAIN_TIME,
        })
        .start()
        .await
}

/// A connection from `from` (a loopback address) to `to`.
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let stream = socket.connect(to).await.unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// Sends one message through an SMTP connection whose PROXY header is already written.
async fn send_message(stream: TcpStream, subject: &str) -> String {
    let mut reader = BufReader::new(stream);
    let mut transcript = String::new();
    for command in [
        "",
        "EHLO relay.test\r\n",
        "MAIL FROM:<x@else.test>\r\n",
        "RCPT TO:<alice@example.test>\r\n",
        "DATA\r\n",
    ] {
        reader
            .get_mut()
            .write_all(command.as_bytes())
            .await
            .unwrap();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).await.unwrap();
            assert!(!line.is_empty(), "closed; so far {transcript}");
            transcript.push_str(&line);
            if line.as_bytes().get(3) == Some(&b' ') {
                break;
            }
        }
    }
    let body = format!("Subject: {subject}\r\n\r\nhi\r\n.\r\nQUIT\r\n");
    reader.get_mut().write_all(body.as_bytes()).await.unwrap();
    let mut rest = String::new();
    reader.read_to_string(&mut rest).await.unwrap();
    transcript + &rest
}

/// What the server sent until it closed (a reset counts as closed: it left bytes unread).
async fn closed(stream: &mut TcpStream) -> String {
    let mut all = Vec::new();
    if let Err(err) = stream.read_to_end(&mut all).await {
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
    }
    String::from_utf8_lossy(&all).into_owned()
}

fn v2_header(client: [u8; 4], port: u16) -> Vec<u8> {
    let mut header = mailserver::proxy::V2_SIGNATURE.to_vec();
    header.extend([0x21, 0x11, 0, 12]);
    header.extend(client);
    header.extend([127, 0, 0, 1]);
    header.extend(port.to_be_bytes());
    header.extend(25u16.to_be_bytes());
    header
}

/// The stored message whose subject is `subject`, as text.
async fn stored(server: &TestServer, subject: &str) -> String {
    server
        .inbox("alice@example.test")
        .await
        .into_iter()
        .map(|(_, body)| String::from_utf8_lossy(&body).into_owned())
        .find(|text| text.contains(&format!("Subject: {subject}")))
        .unwrap_or_else(|| panic!("no message {subject:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_headers() {
    let server = start().await;
    let smtp = server.listener("smtp");

    // v1 from the trusted address.
    let mut stream = connect_from("127.0.0.1", smtp).await;
    stream
        .write_all(b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 25\r\n")
        .await
        .unwrap();
    let transcript = send_message(stream, "v1").await;
    assert!(transcript.contains("250 2.0.0 Ok: queued"), "{transcript}");
    let text = stored(&server, "v1").await;
    assert!(
        text.contains("203.0.113.7"),
        "Received shows the real client:\n{text}"
    );
    assert!(
        !text.contains("[127.0.0.1]"),
        "not the load balancer:\n{text}"
    );

    // v2, split in three writes across the signature and the address block.
    let mut stream = connect_from("127.0.0.1", smtp).await;
    let header = v2_header([198, 51, 100, 23], 51000);
    for piece in [&header[..5], &header[5..17], &header[17..]] {
        stream.write_all(piece).await.unwrap();
        stream.flush().await.unwrap();
    }
    let transcript = send_message(stream, "v2").await;
    assert!(transcript.contains("250 2.0.0 Ok: queued"), "{transcript}");
    let text = stored(&server, "v2").await;
    assert!(text.contains("198.51.100.23"), "{text}");

    // A trusted peer that sends no header is closed without a greeting.
    let mut stream = connect_from("127.0.0.1", smtp).await;
    stream.write_all(b"EHLO sneaky.test\r\n").await.unwrap();
    assert_eq!(closed(&mut stream).await, "", "no greeting, no reply");

    // An untrusted peer (127.0.0.2) that sends a header is closed after the greeting, with
    // nothing answered.
    for (label, header) in [
        (
            "smtp",
            b"PROXY TCP4 192.0.2.1 127.0.0.1 1 25\r\nEHLO x\r\n".to_vec(),
        ),
        (
            "imap",
            [v2_header([192, 0, 2, 1], 1), b"a NOOP\r\n".to_vec()].concat(),
        ),
    ] {
        let stream = connect_from("127.0.0.2", server.listener(label)).await;
        let mut reader = BufReader::new(stream);
        let mut greeting = String::new();
        reader.read_line(&mut greeting).await.unwrap();
        assert!(
            greeting.starts_with("220 ") || greeting.starts_with("* OK"),
            "{greeting}"
        );
        reader.get_mut().write_all(&header).await.unwrap();
        assert!(reader.buffer().is_empty());
        let rest = closed(reader.get_mut()).await;
        assert_eq!(rest, "", "{label}: closed, nothing answered");
    }

    // Without PROXY, an untrusted peer is served as itself.
    let stream = connect_from("127.0.0.2", smtp).await;
    let transcript = send_message(stream, "direct").await;
    assert!(transcript.contains("250 2.0.0 Ok: queued"), "{transcript}");
    assert!(stored(&server, "direct").await.contains("127.0.0.2"));
    server.stop().await;
}

//! TLS on every listener, seen by real clients: Python's smtplib/imaplib/poplib (STARTTLS and
//! implicit TLS), `openssl s_client`, curl and swaks; the STARTTLS injection (CVE-2011-0411)
//! for the three protocols; a certificate reload seen by new connections only.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use common::TestServer;
use mailserver::listener::{Acceptors, ListenerSpec, Policy, Protocol, Role, TlsMode};
use mailserver::server::{DRAIN_TIME, ServerConfig};
use mailserver::tls::{Certificates, Versions};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

/// The seven standard listeners on free ports, TLS from `certs`; clear-text logins refused
/// even from loopback, so LOGINDISABLED and the POP3 refusal show.
pub fn seven_listeners(certs: &Arc<Certificates>) -> ServerConfig {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let l = |protocol, tls, role| ListenerSpec::new(protocol, any, tls, role);
    ServerConfig {
        listeners: vec![
            l(Protocol::Smtp, TlsMode::StartTls, Role::Mx),
            l(Protocol::Smtp, TlsMode::StartTls, Role::Submission),
            l(Protocol::Smtp, TlsMode::Implicit, Role::Submission),
            l(Protocol::Imap, TlsMode::StartTls, Role::Mx),
            l(Protocol::Imap, TlsMode::Implicit, Role::Mx),
            l(Protocol::Pop3, TlsMode::StartTls, Role::Mx),
            l(Protocol::Pop3, TlsMode::Implicit, Role::Mx),
        ],
        http: any,
        tls: Some(Acceptors {
            tls13: certs.acceptor(Versions::Tls13Only),
            tls12: certs.acceptor(Versions::Tls12And13),
        }),
        policy: Policy {
            plaintext_login_loopback: false,
            ..Policy::default()
        },
        grace: DRAIN_TIME,
    }
}

async fn start(dir: &Path) -> (TestServer, Arc<Certificates>) {
    let names = vec!["localhost".to_string()];
    let (certs, _) = Certificates::self_signed(dir, &names).expect("certificate");
    let server = TestServer::builder()
        .domain("example.test")
        .mailbox("alice@example.test", Some("secret"))
        .server(seven_listeners(&certs))
        .start()
        .await;
    (server, certs)
}

/// `localhost:PORT` of a listener, the name the certificate is for.
fn host(server: &TestServer, label: &str) -> String {
    format!("localhost:{}", server.listener(label).port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_clients_over_starttls_and_implicit_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _certs) = start(dir.path()).await;
    let cafile = dir.path().join("tls.crt");
    let mut args = vec![cafile.to_str().unwrap().to_string()];
    for label in [
        "smtp",
        "submission",
        "submissions",
        "imap",
        "imaps",
        "pop3",
        "pop3s",
    ] {
        args.push(host(&server, label));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let script = include_str!("clients/tls_clients.py");
    let out: serde_json::Value =
        serde_json::from_str(&common::python(script, &args).await).expect("json");

    assert_eq!(out["smtp_offers_starttls"], true, "{out}");
    assert_eq!(
        out["smtp_starttls_after"], false,
        "not offered twice: {out}"
    );
    assert_eq!(out["smtp_sent"], true);
    assert_eq!(
        out["submission_plain_mail"],
        serde_json::json!([530, "5.7.0 Must issue a STARTTLS command first"])
    );
    assert_eq!(
        out["submission_tls_mail"],
        serde_json::json!([530, "5.7.0 Authentication required"])
    );
    assert_eq!(out["submissions_version"], "TLSv1.3");
    assert_eq!(
        out["submissions_mail"],
        serde_json::json!([530, "5.7.0 Authentication required"])
    );
    let caps_before = out["imap_caps_before"].to_string();
    assert!(
        caps_before.contains("LOGINDISABLED") && caps_before.contains("STARTTLS"),
        "{caps_before}"
    );
    assert!(!caps_before.contains("AUTH=PLAIN"), "{caps_before}");
    assert!(
        out["imap_plain_login"]
            .as_str()
            .unwrap()
            .contains("PRIVACYREQUIRED"),
        "{out}"
    );
    let caps_after = out["imap_caps_after"].to_string();
    assert!(
        !caps_after.contains("LOGINDISABLED") && !caps_after.contains("STARTTLS"),
        "{caps_after}"
    );
    assert!(caps_after.contains("AUTH=PLAIN"), "{caps_after}");
    assert_eq!(out["imap_select"], serde_json::json!(["OK", "1"]));
    assert_eq!(out["imaps_version"], "TLSv1.3");
    assert_eq!(out["imaps_select"], serde_json::json!(["OK", "1"]));
    assert_eq!(out["imaps_subject"], "Subject: over tls");
    let capa_before = out["pop3_capa_before"].to_string();
    assert!(
        capa_before.contains("STLS") && !capa_before.contains("USER"),
        "{capa_before}"
    );
    assert!(
        out["pop3_plain_user"]
            .as_str()
            .unwrap()
            .starts_with("b'-ERR"),
        "{out}"
    );
    let capa_after = out["pop3_capa_after"].to_string();
    assert!(
        !capa_after.contains("STLS") && capa_after.contains("USER"),
        "{capa_after}"
    );
    assert_eq!(out["pop3_stat"][0], 1);
    assert_eq!(out["pop3s_stat"][0], 1);
    // The message that went in over STARTTLS is stored once.
    assert_eq!(server.uids("alice@example.test").await.len(), 1);
    server.stop().await;
}

/// Runs a command, returning (success, stdout + stderr).
async fn run(program: &str, args: &[&str], stdin: &[u8]) -> (bool, String) {
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} runs: {e}"));
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).await.unwrap();
    drop(input);
    let output = child.wait_with_output().await.unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_curl_and_swaks() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _certs) = start(dir.path()).await;
    let ca = dir.path().join("tls.crt");
    let ca = ca.to_str().unwrap();
    let s_client = |addr: String, extra: &[&str]| {
        let mut args = vec![
            "s_client".to_string(),
            "-connect".into(),
            addr,
            "-CAfile".into(),
            ca.to_string(),
            "-verify_return_error".into(),
            "-servername".into(),
            "localhost".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    // STARTTLS on all three; port 25's listener takes TLS 1.2 as well.
    for (label, proto, extra, quit) in [
        ("smtp", "smtp", vec!["-tls1_2"], "QUIT\r\n"),
        ("smtp", "smtp", vec![], "QUIT\r\n"),
        ("imap", "imap", vec![], "z LOGOUT\r\n"),
        ("pop3", "pop3", vec![], "QUIT\r\n"),
    ] {
        let mut args = s_client(host(&server, label), &extra);
        args.extend(["-starttls".to_string(), proto.to_string()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, text) = run("openssl", &args, quit.as_bytes()).await;
        assert!(ok, "s_client -starttls {proto} {extra:?}:\n{text}");
        assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
        let want = if extra.is_empty() {
            "TLSv1.3"
        } else {
            "TLSv1.2"
        };
        assert!(
            text.contains(&format!("Protocol  : {want}")) || text.contains(&format!("New, {want}")),
            "{text}"
        );
    }
    // TLS 1.2 is refused on the implicit ports and on submission; 1.3 works there.
    for label in ["imaps", "pop3s", "submissions"] {
        let args = s_client(host(&server, label), &["-tls1_2"]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, text) = run("openssl", &args, b"").await;
        assert!(!ok, "{label} accepted TLS 1.2:\n{text}");
        let args = s_client(host(&server, label), &["-tls1_3"]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, text) = run("openssl", &args, b"").await;
        assert!(ok && text.contains("TLSv1.3"), "{label}:\n{text}");
    }
    // curl over imaps and pop3s: list the INBOX, read message 1.
    server
        .deliver("alice@example.test", b"Subject: for curl\r\n\r\nbody\r\n")
        .await;
    let url = |scheme: &str, label: &str, path: &str| {
        format!("{scheme}://{}/{path}", host(&server, label))
    };
    for (url, want) in [
        (url("imaps", "imaps", "INBOX;UID=1"), "Subject: for curl"),
        (url("pop3s", "pop3s", "1"), "Subject: for curl"),
    ] {
        let (ok, text) = run(
            "curl",
            &[
                "-sS",
                "--cacert",
                ca,
                "--user",
                "alice@example.test:secret",
                &url,
            ],
            b"",
        )
        .await;
        assert!(ok && text.contains(want), "curl {url}:\n{text}");
    }
    // curl over smtps: the submission port wants authentication first.
    let (ok, text) = run(
        "curl",
        &[
            "-sS",
            "--cacert",
            ca,
            "--mail-from",
            "alice@example.test",
            "--mail-rcpt",
            "alice@example.test",
            "-T",
            "-",
            &url("smtps", "submissions", ""),
        ],
        b"Subject: x\r\n\r\nx\r\n",
    )
    .await;
    assert!(!ok && text.contains("530"), "curl smtps:\n{text}");
    // swaks: --tls (STARTTLS) to the MX delivers; --tlsc (implicit) to 465 meets the 530.
    let swaks = |label: &str, from: &str, mode: &str| {
        let port = server.listener(label).port().to_string();
        let args: Vec<String> = [
            "--server",
            "localhost",
            "--port",
            &port,
            "--to",
            "alice@example.test",
            "--from",
            from,
            mode,
            "--tls-verify",
            "--tls-ca-path",
            ca,
            "--helo",
            "client.test",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run("swaks", &args, b"").await
        }
    };
    let (ok, text) = swaks("smtp", "bob@else.test", "--tls").await;
    assert!(
        ok && text.contains("250 2.0.0 Ok: queued"),
        "swaks --tls:\n{text}"
    );
    let (ok, text) = swaks("submissions", "alice@example.test", "--tlsc").await;
    assert!(
        !ok && text.contains("530 5.7.0 Authentication required"),
        "swaks --tlsc:\n{text}"
    );
    assert_eq!(server.uids("alice@example.test").await.len(), 2);
    server.stop().await;
}

fn connector(cert_files: &[&Path]) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    for file in cert_files {
        for cert in CertificateDer::pem_file_iter(file).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    // A resumed session would show the certificate of the first handshake.
    config.resumption = rustls::client::Resumption::disabled();
    TlsConnector::from(Arc::new(config))
}

/// Reads one line (CRLF included).
async fn line<R: AsyncRead + Unpin>(reader: &mut BufReader<R>) -> String {
    let mut line = String::new();
    reader.read_line(&mut line).await.expect("read");
    line
}

/// Reads lines until one starts with `prefix`; returns them all.
async fn until<R: AsyncRead + Unpin>(reader: &mut BufReader<R>, prefix: &str) -> String {
    let mut all = String::new();
    loop {
        let l = line(reader).await;
        assert!(!l.is_empty(), "closed before {prefix:?}; got {all:?}");
        all.push_str(&l);
        if l.starts_with(prefix) {
            return all;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_injection_is_never_answered() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _certs) = start(dir.path()).await;
    let tls = connector(&[&dir.path().join("tls.crt")]);
    // (listener, greeting/ready, injected packet, reply to STARTTLS, probe after TLS, its reply)
    let cases = [
        (
            "smtp",
            "220 ",
            "EHLO c\r\n",
            "STARTTLS\r\nNOOP\r\n",
            "220 2.0.0",
            "QUIT\r\n",
            "221 ",
        ),
        (
            "imap",
            "* OK",
            "",
            "a STARTTLS\r\nb NOOP\r\n",
            "a OK",
            "c LOGOUT\r\n",
            "* BYE",
        ),
        (
            "pop3",
            "+OK",
            "",
            "STLS\r\nNOOP\r\n",
            "+OK",
            "QUIT\r\n",
            "+OK",
        ),
    ];
    for (label, ready, hello, inject, go, probe, probe_reply) in cases {
        let tcp = TcpStream::connect(server.listener(label)).await.unwrap();
        let mut reader = BufReader::new(tcp);
        until(&mut reader, ready).await;
        if !hello.is_empty() {
            reader.get_mut().write_all(hello.as_bytes()).await.unwrap();
            until(&mut reader, "250 ").await;
        }
        // One packet: the command and what an attacker appended.
        reader.get_mut().write_all(inject.as_bytes()).await.unwrap();
        until(&mut reader, go).await;
        assert!(
            reader.buffer().is_empty(),
            "{label}: nothing after the go-ahead in clear text"
        );
        let tcp = reader.into_inner();
        let name = ServerName::try_from("localhost").unwrap();
        let stream = tls.connect(name, tcp).await.expect("handshake");
        let mut reader = BufReader::new(stream);
        reader.get_mut().write_all(probe.as_bytes()).await.unwrap();
        let first = line(&mut reader).await;
        assert!(
            first.starts_with(probe_reply),
            "{label}: the first reply after the handshake must answer the probe, not the \
             injected NOOP: {first:?}"
        );
        if label == "imap" {
            let rest = until(&mut reader, "c OK").await;
            assert!(
                !rest.contains("b OK") && !rest.contains("b BAD"),
                "{label}: {rest}"
            );
        }
    }
    server.stop().await;
}

/// The end-entity certificate a fresh TLS connection to `addr` is shown.
async fn presented(tls: &TlsConnector, addr: SocketAddr) -> Vec<u8> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let stream = tls
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("handshake");
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloaded_certificate_reaches_new_connections_only() {
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let (server, certs) = start(dir.path()).await;
    let names = vec!["localhost".to_string()];
    Certificates::self_signed(other.path(), &names).expect("a second certificate");
    let tls = connector(&[&dir.path().join("tls.crt"), &other.path().join("tls.crt")]);
    let imaps = server.listener("imaps");
    let old_cert = presented(&tls, imaps).await;

    // A session open across the swap.
    let tcp = TcpStream::connect(imaps).await.unwrap();
    let session = tls
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let mut session = BufReader::new(session);
    until(&mut session, "* OK").await;

    for file in ["tls.key", "tls.crt"] {
        std::fs::copy(other.path().join(file), dir.path().join(file)).unwrap();
    }
    assert!(certs.reload().expect("reload"), "the files changed");
    let new_cert = presented(&tls, imaps).await;
    assert_ne!(
        old_cert, new_cert,
        "a new connection sees the new certificate"
    );
    assert_eq!(
        new_cert,
        presented(&tls, server.listener("submissions")).await
    );

    session.get_mut().write_all(b"a NOOP\r\n").await.unwrap();
    let reply = until(&mut session, "a ").await;
    assert!(
        reply.contains("a OK"),
        "the old session is untouched: {reply}"
    );
    assert_eq!(
        session.get_ref().get_ref().1.peer_certificates().unwrap()[0].to_vec(),
        old_cert
    );
    server.stop().await;
}

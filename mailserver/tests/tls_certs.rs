//! The TLS module against real clients over loopback: tokio-rustls and `openssl s_client`
//! handshake with acceptors built from PEM files, self-signed, chosen by SNI and reloaded.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use mailserver::tls::{CertKeyPaths, Certificates, Versions, fingerprint};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// An echo server: each connection is handshaken with `acceptor`, then every line comes back.
async fn serve(acceptor: tokio_rustls::TlsAcceptor) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let (read, mut write) = tokio::io::split(tls);
                let mut lines = BufReader::new(read).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if write
                        .write_all(format!("{line}\n").as_bytes())
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A client trusting exactly `roots`, offering `versions`, asking for `sni`.
async fn connect(
    addr: SocketAddr,
    sni: &str,
    roots: &[CertificateDer<'static>],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> std::io::Result<TlsStream<TcpStream>> {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(sni.to_string()).unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
}

/// The fingerprint of the certificate the server presented.
fn presented(stream: &TlsStream<TcpStream>) -> String {
    fingerprint(&stream.get_ref().1.peer_certificates().unwrap()[0])
}

/// Sends one line and reads it back.
async fn echo(stream: &mut TlsStream<TcpStream>, line: &str) -> String {
    stream
        .write_all(format!("{line}\n").as_bytes())
        .await
        .unwrap();
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while reply.last() != Some(&b'\n') {
        tokio::io::AsyncReadExt::read_exact(stream, &mut byte)
            .await
            .unwrap();
        reply.push(byte[0]);
    }
    String::from_utf8(reply).unwrap()
}

fn cert_der(path: &Path) -> CertificateDer<'static> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_file(path).unwrap()
}

const BOTH: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

#[tokio::test]
async fn self_signed_is_created_once_then_reused_and_serves_a_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let names = vec!["localhost".to_string(), "mail.example.test".to_string()];
    let (certs, first) = Certificates::self_signed(dir.path(), &names).unwrap();
    let (_, again) = Certificates::self_signed(dir.path(), &names).unwrap();
    assert_eq!(first, again, "the second start must reuse the certificate");
    assert_eq!(first.len(), 32 * 3 - 1);

    let openssl = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(dir.path().join("tls.crt"))
        .output()
        .unwrap();
    let printed = String::from_utf8(openssl.stdout).unwrap();
    assert_eq!(printed.trim().rsplit('=').next(), Some(first.as_str()));

    let addr = serve(certs.acceptor(Versions::Tls13Only)).await;
    let root = cert_der(&dir.path().join("tls.crt"));
    let mut client = connect(addr, "mail.example.test", &[root], BOTH)
        .await
        .unwrap();
    assert_eq!(presented(&client), first);
    assert_eq!(echo(&mut client, "hello").await, "hello\n");
}

#[test]
fn load_names_the_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let err = Certificates::load(&[CertKeyPaths::in_dir(dir.path())]).unwrap_err();
    let message = format!("{err:#}");
    assert!(
        message.contains(&dir.path().join("tls.crt").display().to_string()),
        "{message}"
    );
}

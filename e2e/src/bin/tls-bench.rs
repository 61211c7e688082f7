//! TLS cost on the whole stack (test-harness PostgreSQL, filesystem bodies, `examples/`
//! applied, the mail server in this process with a self-signed certificate): TLS 1.3
//! handshakes per second on the IMAPS listener, and SMTP ingest of N messages of S bytes over C
//! sessions in clear text and over STARTTLS. Prints figures; checks every acknowledged message
//! is stored.
//!
//!     cargo run --release -p mail-e2e --bin tls-bench -- --handshakes 2000 --messages 5000 \
//!         --size 10240 --concurrency 20

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context as _, bail};
use clap::Parser;
use mail_blobstore::FsBlobStore;
use mailserver::listener::{Acceptors, ListenerSpec, Policy, Protocol, Role, TlsMode};
use mailserver::server::{DRAIN_TIME, ServerConfig};
use mailserver::tls::{Certificates, Versions};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

#[derive(Parser, Debug)]
struct Args {
    /// TLS handshakes (connect, handshake, greeting, close) to time.
    #[arg(long, default_value_t = 2000)]
    handshakes: usize,
    /// Messages per ingest run (one run in clear text, one over STARTTLS).
    #[arg(long, default_value_t = 5000)]
    messages: usize,
    /// Size of each message in bytes.
    #[arg(long, default_value_t = 10 * 1024)]
    size: usize,
    /// Concurrent connections.
    #[arg(long, default_value_t = 20)]
    concurrency: usize,
}

/// Reads one whole reply and checks its code.
async fn expect<R: AsyncRead + Unpin>(reader: &mut BufReader<R>, code: &str) -> anyhow::Result<()> {
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            bail!("closed while waiting for {code}");
        }
        if line.as_bytes().get(3) != Some(&b'-') {
            break;
        }
    }
    if !line.starts_with(code) {
        bail!("expected {code}, got {:?}", line.trim_end());
    }
    Ok(())
}

/// Sends messages on one session, MAIL/RCPT/DATA pipelined (RFC 2920), until the shared
/// counter reaches `total`; returns how many got `250`.
async fn ingest<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut BufReader<S>,
    next: &AtomicUsize,
    total: usize,
    body: &[u8],
) -> anyhow::Result<usize> {
    let mut sent = 0;
    while next.fetch_add(1, Ordering::Relaxed) < total {
        stream
            .get_mut()
            .write_all(b"MAIL FROM:<bench@sender.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
            .await?;
        expect(stream, "250").await?;
        expect(stream, "250").await?;
        expect(stream, "354").await?;
        stream.get_mut().write_all(body).await?;
        stream.get_mut().write_all(b".\r\n").await?;
        expect(stream, "250").await?;
        sent += 1;
    }
    stream.get_mut().write_all(b"QUIT\r\n").await?;
    Ok(sent)
}

/// One ingest run; returns (seconds, messages acknowledged).
async fn run_ingest(
    smtp: SocketAddr,
    tls: Option<TlsConnector>,
    args: &Args,
    body: Arc<Vec<u8>>,
) -> anyhow::Result<(f64, usize)> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut sessions = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency.max(1) {
        let (next, body, tls, total) = (next.clone(), body.clone(), tls.clone(), args.messages);
        sessions.spawn(async move {
            let mut plain = BufReader::new(TcpStream::connect(smtp).await?);
            expect(&mut plain, "220").await?;
            plain.get_mut().write_all(b"EHLO bench.test\r\n").await?;
            expect(&mut plain, "250").await?;
            let Some(tls) = tls else {
                return ingest(&mut plain, &next, total, &body).await;
            };
            plain.get_mut().write_all(b"STARTTLS\r\n").await?;
            expect(&mut plain, "220").await?;
            let name = ServerName::try_from("localhost")?;
            let stream = tls.connect(name, plain.into_inner()).await?;
            let mut secure = BufReader::new(stream);
            secure.get_mut().write_all(b"EHLO bench.test\r\n").await?;
            expect(&mut secure, "250").await?;
            ingest(&mut secure, &next, total, &body).await
        });
    }
    let mut sent = 0;
    while let Some(done) = sessions.join_next().await {
        sent += done??;
    }
    Ok((started.elapsed().as_secs_f64(), sent))
}

/// A message of `size` bytes: headers and 76-character lines.
fn message(size: usize) -> Vec<u8> {
    let mut out = b"From: bench@sender.test\r\nSubject: tls bench\r\n\r\n".to_vec();
    while out.len() + 78 <= size {
        out.extend_from_slice(&[b'x'; 76]);
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let (certs, _) =
        Certificates::self_signed(&dir.path().join("tls"), &["localhost".to_string()])?;
    let any: SocketAddr = "127.0.0.1:0".parse()?;
    let config = ServerConfig {
        listeners: vec![
            ListenerSpec::new(Protocol::Smtp, any, TlsMode::StartTls, Role::Mx),
            ListenerSpec::new(Protocol::Imap, any, TlsMode::Implicit, Role::Mx),
        ],
        http: any,
        tls: Some(Acceptors {
            tls13: certs.acceptor(Versions::Tls13Only),
            tls12: certs.acceptor(Versions::Tls12And13),
        }),
        policy: Policy {
            max_per_ip: usize::MAX,
            ..Policy::default()
        },
        grace: DRAIN_TIME,
    };
    let blobs = Arc::new(FsBlobStore::new(dir.path().join("blobs")));
    let stack = mail_e2e::start_with(blobs, config).await;
    let smtp = stack.server.address("smtp").context("smtp listener")?;
    let imaps = stack.server.address("imaps").context("imaps listener")?;

    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(dir.path().join("tls/tls.crt"))? {
        roots.add(cert?)?;
    }
    let mut client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    // Every handshake a full one, as from many different clients.
    client.resumption = rustls::client::Resumption::disabled();
    let tls = TlsConnector::from(Arc::new(client));

    // Handshakes: connect, TLS 1.3, read the greeting, close.
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency.max(1) {
        let (next, tls, total) = (next.clone(), tls.clone(), args.handshakes);
        tasks.spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let tcp = TcpStream::connect(imaps).await?;
                let stream = tls.connect(ServerName::try_from("localhost")?, tcp).await?;
                let mut reader = BufReader::new(stream);
                let mut greeting = String::new();
                reader.read_line(&mut greeting).await?;
                if !greeting.starts_with("* OK") {
                    bail!("greeting {greeting:?}");
                }
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "tls-bench: {} TLS 1.3 handshakes (IMAPS, greeting read) over {} connections at a time",
        args.handshakes, args.concurrency
    );
    println!(
        "  {secs:.2} s, {:.0} handshakes/s",
        args.handshakes as f64 / secs
    );

    let body = Arc::new(message(args.size));
    let mut total = 0;
    for (label, connector) in [("plain", None), ("STARTTLS", Some(tls.clone()))] {
        let (secs, sent) = run_ingest(smtp, connector, &args, body.clone()).await?;
        total += sent;
        println!(
            "  SMTP ingest {label:>8}: {sent} × {} bytes over {} sessions in {secs:.2} s: {:.0} messages/s, {:.1} MB/s",
            body.len(),
            args.concurrency,
            sent as f64 / secs,
            (sent * body.len()) as f64 / secs / 1e6,
        );
    }
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM messages")
        .fetch_one(&stack.pool)
        .await?;
    println!("  stored {stored} of {total} acknowledged");
    stack.server.shutdown().await;
    if stored != total as i64 {
        bail!("{total} acknowledged, {stored} stored");
    }
    Ok(())
}

//! TLS handshakes per second against the mail server's TLS module, over loopback: a fresh
//! TCP connection and a full handshake each (no session resumption), for an ECDSA P-256 and an
//! RSA-2048 certificate. Client and server share this process, so the figure is what one
//! machine does playing both sides; it prints handshakes per second and latency percentiles.
//!
//!     cargo run --release -p mail-e2e --bin tls-handshakes -- --handshakes 2000 --concurrency 4

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use mailserver::tls::{CertKeyPaths, Certificates, Versions};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

#[derive(Parser, Debug)]
struct Args {
    /// Handshakes per key type.
    #[arg(long, default_value_t = 2000)]
    handshakes: usize,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Key types to measure (default: both).
    #[arg(long, value_enum)]
    key: Vec<Key>,
    /// Key exchange the client offers: the rustls default (X25519MLKEM768 first) or X25519
    /// alone, as most mail clients today.
    #[arg(long, value_enum, default_value_t = Kx::Default)]
    kx: Kx,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Key {
    EcdsaP256,
    Rsa2048,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Kx {
    Default,
    X25519,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let keys = if args.key.is_empty() {
        vec![Key::EcdsaP256, Key::Rsa2048]
    } else {
        args.key.clone()
    };
    println!(
        "TLS 1.3 full handshakes over loopback: {} per key, {} in flight, client key exchange {:?}",
        args.handshakes, args.concurrency, args.kx
    );
    for key in keys {
        let dir = tempfile::tempdir()?;
        let root = write_pair(dir.path(), key)?;
        let certs = Certificates::load(&[CertKeyPaths::in_dir(dir.path())])?;
        let addr = serve(certs.acceptor(Versions::Tls13Only)).await?;
        let connector = connector(root, args.kx)?;
        // One untimed handshake so the first figure does not carry the lazy set-up.
        handshake(addr, &connector).await?;
        let cpu_before = cpu_time()?;
        let (elapsed, mut latencies) =
            run(addr, &connector, args.handshakes, args.concurrency).await?;
        let cpu = cpu_time()? - cpu_before;
        latencies.sort();
        let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
        println!(
            "{key:?}: {} handshakes in {:.2} s = {:.0}/s; CPU {:.2} ms per handshake (both sides) \
             = {:.0}/s per core; latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            latencies.len(),
            elapsed.as_secs_f64(),
            latencies.len() as f64 / elapsed.as_secs_f64(),
            ms(cpu) / latencies.len() as f64,
            latencies.len() as f64 / cpu.as_secs_f64(),
            ms(at(0.5)),
            ms(at(0.99)),
            ms(at(1.0)),
        );
    }
    Ok(())
}

/// CPU time this process has used, user and system, all threads (Linux `/proc`, in the
/// kernel's fixed 100 Hz `USER_HZ` ticks): unlike wall time it holds on a busy machine.
fn cpu_time() -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = stat.rsplit_once(')').context("/proc/self/stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    Ok(Duration::from_millis(ticks * 10))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A self-signed certificate for `localhost` with `key`, as `tls.crt`/`tls.key` in `dir`.
fn write_pair(dir: &std::path::Path, key: Key) -> anyhow::Result<CertificateDer<'static>> {
    let signing_key = match key {
        Key::EcdsaP256 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?,
        Key::Rsa2048 => {
            rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)?
        }
    };
    let cert =
        rcgen::CertificateParams::new(vec!["localhost".to_string()])?.self_signed(&signing_key)?;
    std::fs::write(dir.join("tls.crt"), cert.pem())?;
    std::fs::write(dir.join("tls.key"), signing_key.serialize_pem())?;
    Ok(cert.der().clone())
}

/// Accepts, handshakes, sends one byte (so the client knows the server finished), closes.
async fn serve(acceptor: TlsAcceptor) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let _ = tls.write_all(b"+").await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    Ok(addr)
}

fn connector(root: CertificateDer<'static>, kx: Kx) -> anyhow::Result<TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root)?;
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    if let Kx::X25519 = kx {
        provider.kx_groups = vec![rustls::crypto::aws_lc_rs::kx_group::X25519];
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// One connection: TCP connect, full handshake, the server's byte.
async fn handshake(addr: SocketAddr, connector: &TlsConnector) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost")?;
    let mut tls = connector.connect(name, tcp).await.context("handshake")?;
    let mut byte = [0u8; 1];
    tls.read_exact(&mut byte).await.context("server's byte")?;
    Ok(start.elapsed())
}

/// `total` handshakes, `concurrency` at a time; wall time and each handshake's latency.
async fn run(
    addr: SocketAddr,
    connector: &TlsConnector,
    total: usize,
    concurrency: usize,
) -> anyhow::Result<(Duration, Vec<Duration>)> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (next, connector) = (next.clone(), connector.clone());
        workers.spawn(async move {
            let mut latencies = Vec::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < total {
                latencies.push(handshake(addr, &connector).await?);
            }
            anyhow::Ok(latencies)
        });
    }
    let mut latencies = Vec::with_capacity(total);
    while let Some(worker) = workers.join_next().await {
        latencies.extend(worker??);
    }
    Ok((start.elapsed(), latencies))
}

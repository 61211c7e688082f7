//! `mailserver`: configuration in, listeners out.

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use mailserver::RunningServer;
use mailserver::auth::Authenticator;
use mailserver::bootstrap::Backends;
use mailserver::config::Config;
use mailserver::context::{Context, Settings};
use mailserver::listener::{Acceptors, TlsMode};
use mailserver::server::ServerConfig;
use mailserver::store::Store;
use mailserver::tls::{CertKeyPaths, Certificates, Versions};
use tracing_subscriber::EnvFilter;

// jemalloc gives freed memory back to the system; glibc kept what bursts of logins and large
// messages had used (RSS 2x idle and more, for good).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(err) = run(Config::parse()).await {
        eprintln!("mailserver: {err:#}");
        std::process::exit(1);
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let listeners = config.listeners();
    let https = config.https_listeners();
    // `--ephemeral` keeps nothing, the self-signed certificate included.
    let scratch = match config.ephemeral {
        true => Some(
            tempfile::Builder::new()
                .prefix("mailserver-tls-")
                .tempdir()?,
        ),
        false => None,
    };
    let tls_dir = scratch.as_ref().map_or_else(
        || config.data_dir.join("tls"),
        |dir| dir.path().to_path_buf(),
    );
    let certificates = certificates(&config, &listeners, !https.is_empty(), &tls_dir)?;
    let backends = Backends::open(&config).await?;
    let ctx = Arc::new(Context {
        store: Store::new(backends.pool.clone(), backends.blobs.clone())
            .with_maildrop_lock_ttl(Duration::from_secs(config.pop3_lock_ttl)),
        auth: Authenticator::with_settings(backends.pool.clone(), config.auth_settings()),
        settings: Settings {
            hostname: config.hostname.clone(),
            max_message_size: config.max_message_size,
            max_recipients: config.max_recipients,
        },
    });
    let _collector = ctx.store.spawn_collector();
    let https_ctx = ctx.clone();
    let maildrop_locks = ctx.store.maildrop_locks().clone();
    let tls = certificates.as_ref().map(|(certs, _)| Acceptors {
        tls13: certs.acceptor(Versions::Tls13Only),
        tls12: certs.acceptor(Versions::Tls12And13),
    });
    let _reloader = certificates
        .as_ref()
        .map(|(certs, _)| certs.spawn_reloader());
    let server = RunningServer::start_with(
        ctx,
        ServerConfig {
            listeners,
            http: config.http_listen,
            tls,
            policy: config.policy(),
            grace: Duration::from_secs(config.grace_period),
        },
    )
    .await?;
    // Plain stdout lines, so people and scripts (the tests) can read where we listen.
    for spec in &server.listeners {
        println!(
            "{} listening on {}",
            spec.label().to_uppercase(),
            spec.address
        );
    }
    println!("HTTP listening on {}", server.addresses.http);
    let (https_stop, https_stopping) = tokio::sync::watch::channel(false);
    let mut https_tasks = tokio::task::JoinSet::new();
    for address in https {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen for https on {address}: {e}"))?;
        println!("HTTPS listening on {}", listener.local_addr()?);
        let acceptor = certificates
            .as_ref()
            .map(|(certs, _)| certs.acceptor(Versions::Tls12And13))
            .ok_or_else(|| anyhow::anyhow!("https on {address} needs a certificate"))?;
        https_tasks.spawn(mailserver::clientconfig::serve_https(
            listener,
            acceptor,
            mailserver::clientconfig::router(https_ctx.clone()),
            https_stopping.clone(),
        ));
    }
    if let Some((_, fingerprint)) = &certificates {
        println!("TLS certificate SHA-256 fingerprint: {fingerprint}");
    }
    for (address, password) in &backends.example_logins {
        println!("login: {address} password: {password}");
    }
    println!("ready");

    shutdown_signal().await;
    tracing::info!("shutting down");
    server.shutdown().await;
    let _ = https_stop.send(true);
    while https_tasks.join_next().await.is_some() {}
    // Every connection is closed: leases a dropped session had no time to release go now.
    if let Err(error) = maildrop_locks.release_all().await {
        tracing::warn!(%error, "POP3 maildrop locks not released; they expire");
    }
    backends.close().await;
    drop(scratch);
    Ok(())
}

/// The configured certificate, or a self-signed one under the data directory; none when no
/// listener uses TLS (HTTPS always does).
fn certificates(
    config: &Config,
    listeners: &[mailserver::listener::ListenerSpec],
    https: bool,
    self_signed_dir: &std::path::Path,
) -> anyhow::Result<Option<(Arc<Certificates>, String)>> {
    if !https && listeners.iter().all(|l| l.tls == TlsMode::None) {
        return Ok(None);
    }
    if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) {
        let certs = Certificates::load(&[CertKeyPaths {
            cert: cert.clone(),
            key: key.clone(),
        }])?;
        let fingerprint = certs.fingerprint();
        return Ok(Some((certs, fingerprint)));
    }
    let names = mailserver::tls::embedded_names(&config.hostname);
    Certificates::self_signed(self_signed_dir, &names).map(Some)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

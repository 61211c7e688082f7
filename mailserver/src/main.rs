//! `mailserver`: configuration in, listeners out.

use std::sync::Arc;

use clap::Parser;
use mailserver::auth::Authenticator;
use mailserver::bootstrap::Backends;
use mailserver::config::Config;
use mailserver::context::{Context, Settings};
use mailserver::store::Store;
use mailserver::{Addresses, RunningServer};
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
    let backends = Backends::open(&config).await?;
    let ctx = Arc::new(Context {
        store: Store::new(backends.pool.clone(), backends.blobs.clone()),
        auth: Authenticator::new(backends.pool.clone()),
        settings: Settings {
            hostname: config.hostname.clone(),
            max_message_size: config.max_message_size,
            max_recipients: config.max_recipients,
        },
    });
    let _collector = ctx.store.spawn_collector();
    let server = RunningServer::start(
        ctx,
        Addresses {
            smtp: config.smtp_listen,
            imap: config.imap_listen,
            pop3: config.pop3_listen,
            http: config.http_listen,
        },
    )
    .await?;
    let a = server.addresses;
    // Plain stdout lines, so people and scripts (the tests) can read where we listen.
    println!("SMTP listening on {}", a.smtp);
    println!("IMAP listening on {}", a.imap);
    println!("POP3 listening on {}", a.pop3);
    println!("HTTP listening on {}", a.http);
    for (address, password) in &backends.example_logins {
        println!("login: {address} password: {password}");
    }
    println!("ready");

    shutdown_signal().await;
    tracing::info!("shutting down");
    server.shutdown().await;
    backends.close().await;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

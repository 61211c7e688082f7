//! Helpers for the end-to-end tests and load tools: run the real Python mail clients in
//! `e2e/clients/` against a running server.
#![forbid(unsafe_code)]

pub mod bench;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use mail_blobstore::BlobStore;
use mailserver::auth::Authenticator;
use mailserver::context::{Context, Settings};
use mailserver::server::ServerConfig;
use mailserver::store::Store;
use mailserver::{Addresses, RunningServer};
use sqlx::PgPool;

/// The repository's `examples/` folder, which the embedded default applies.
pub fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// A script of `e2e/clients/`.
pub fn client_script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("clients")
        .join(name)
}

/// Runs a Python client script with arguments; its stdout when it exits 0, else an error
/// carrying everything it printed.
pub fn run_python(script: &str, args: &[String]) -> anyhow::Result<String> {
    let path = client_script(script);
    let output = Command::new("python3")
        .arg(&path)
        .args(args)
        .output()
        .with_context(|| format!("cannot run python3 {}", path.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        bail!(
            "{script} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
            output.status
        );
    }
    Ok(stdout)
}

/// The arguments that point a client script at a server's listeners.
pub fn listener_args(addresses: &Addresses) -> Vec<String> {
    vec![
        "--smtp".into(),
        addresses.smtp.to_string(),
        "--imap".into(),
        addresses.imap.to_string(),
        "--pop3".into(),
        addresses.pop3.to_string(),
    ]
}

/// The whole stack on real servers: a fresh database from the test harness's PostgreSQL,
/// `examples/` applied by the reconcile core (local mode), and the mail server on free ports.
pub struct Stack {
    pub pool: PgPool,
    pub server: RunningServer,
    /// Prefix of the bucket names, unique to this stack.
    pub bucket_prefix: String,
}

/// Starts a [`Stack`] whose message bodies go to `blobs`.
pub async fn start(blobs: Arc<dyn BlobStore>) -> Stack {
    let any = "127.0.0.1:0".parse().expect("address");
    start_with(blobs, ServerConfig::plain(Addresses::all(any))).await
}

/// Starts a [`Stack`] with these listeners and rules.
pub async fn start_with(blobs: Arc<dyn BlobStore>, config: ServerConfig) -> Stack {
    start_with_settings(blobs, config, Settings::default()).await
}

/// Starts a [`Stack`] with these listeners, rules and protocol settings.
pub async fn start_with_settings(
    blobs: Arc<dyn BlobStore>,
    config: ServerConfig,
    settings: Settings,
) -> Stack {
    let url = tokio::task::spawn_blocking(mail_testkit::fresh_database)
        .await
        .expect("test harness");
    let pool = PgPool::connect(&url)
        .await
        .expect("connect to the test database");
    mail_provision::migrate(&pool).await.expect("migrations");
    let loaded = mail_provision::manifests::load_dir(&examples_dir()).expect("examples load");
    let bucket_prefix = mail_testkit::unique_prefix();
    let options = mail_provision::Options {
        bucket_prefix: bucket_prefix.clone(),
    };
    mail_provision::sync(&pool, blobs.as_ref(), &loaded.desired, &options)
        .await
        .expect("examples apply");
    let ctx = Arc::new(Context {
        store: Store::new(pool.clone(), blobs),
        auth: Authenticator::new(pool.clone()),
        settings,
    });
    let server = RunningServer::start_with(ctx, config)
        .await
        .expect("server starts");
    Stack {
        pool,
        server,
        bucket_prefix,
    }
}

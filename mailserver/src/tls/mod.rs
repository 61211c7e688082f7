//! TLS for every listener: certificate chains from PEM files (a mounted Kubernetes Secret),
//! chosen by SNI, swapped at run time when the files change, and a self-signed fallback for the
//! embedded default. The connection driver asks for a [`TlsAcceptor`] per listener.
//!
//! Reloading replaces the certificates that *new* handshakes see; a session already established
//! keeps the key it negotiated with.

mod pem;
mod resolver;
mod self_signed;
mod validity;

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::bail;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

pub use pem::{CertKeyPaths, fingerprint};
pub use validity::{EXPIRY_WARNING, expiry_warning};

/// The names the embedded default's self-signed certificate covers: the server's own name,
/// `localhost`, the example domain, and the loopback addresses (clients on the same machine
/// often connect by address).
pub fn embedded_names(hostname: &str) -> Vec<String> {
    let mut names = vec![hostname.to_string()];
    for name in ["localhost", "example.test", "127.0.0.1", "::1"] {
        if !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
    }
    names
}

/// How often the reloader looks at the files. Kubernetes itself takes up to a minute to
/// propagate a changed Secret, so a few seconds more is invisible.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(5);

/// Which protocol versions a listener offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Versions {
    /// Implicit TLS and submission ports (RFC 8314 clients are modern).
    Tls13Only,
    /// Port 25: other MTAs still speak TLS 1.2.
    Tls12And13,
}

impl Versions {
    fn protocol_versions(self) -> &'static [&'static rustls::SupportedProtocolVersion] {
        static TLS13_ONLY: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
        static TLS12_AND_13: [&rustls::SupportedProtocolVersion; 2] =
            [&rustls::version::TLS13, &rustls::version::TLS12];
        match self {
            Versions::Tls13Only => &TLS13_ONLY,
            Versions::Tls12And13 => &TLS12_AND_13,
        }
    }
}

/// The server's certificates: one pair per mounted Secret, the first being the default when
/// the client sends no SNI name or one that no certificate covers. Thread-safe; reloadable.
pub struct Certificates {
    provider: Arc<CryptoProvider>,
    /// What handshakes read: swapped whole on reload.
    current: RwLock<Arc<[Arc<CertifiedKey>]>>,
    /// What reloads compare against; the mutex also keeps two reloads from interleaving.
    files: Mutex<Vec<Watched>>,
    generation: watch::Sender<u64>,
}

struct Watched {
    paths: CertKeyPaths,
    /// Digest of the files now in use.
    loaded: [u8; 32],
}

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificates")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

impl Certificates {
    /// Loads every pair; the first is the default. Fails, naming the file, if any pair is
    /// missing, malformed or has a key that does not match its certificate.
    pub fn load(pairs: &[CertKeyPaths]) -> anyhow::Result<Arc<Self>> {
        if pairs.is_empty() {
            bail!("no TLS certificate configured");
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut keys = Vec::with_capacity(pairs.len());
        let mut files = Vec::with_capacity(pairs.len());
        for paths in pairs {
            let contents = pem::Contents::read(paths)?;
            let key = contents.parse(paths, &provider)?;
            announce(paths, &key, "loaded");
            keys.push(key);
            files.push(Watched {
                paths: paths.clone(),
                loaded: contents.digest(),
            });
        }
        Ok(Arc::new(Self {
            provider,
            current: RwLock::new(keys.into()),
            files: Mutex::new(files),
            generation: watch::Sender::new(0),
        }))
    }

    /// An acceptor for one listener. Every handshake picks from the current certificates, so
    /// one acceptor serves across reloads.
    pub fn acceptor(self: &Arc<Self>, versions: Versions) -> TlsAcceptor {
        let config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(versions.protocol_versions())
            .expect("the aws-lc-rs provider has cipher suites for TLS 1.2 and 1.3")
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(resolver::BySni(self.clone())));
        TlsAcceptor::from(Arc::new(config))
    }

    /// SHA-256 fingerprint of the default certificate, `AB:CD:...`.
    pub fn fingerprint(&self) -> String {
        match self.current()[0].end_entity_cert() {
            Ok(cert) => fingerprint(cert),
            Err(_) => String::new(),
        }
    }

    /// Rereads the files and swaps in the pairs whose contents changed. `Ok(true)` if anything
    /// was swapped. A pair that fails to load keeps its previous certificate and makes this
    /// return the error (every time, until the files are fixed); good pairs beside it still swap.
    pub fn reload(&self) -> anyhow::Result<bool> {
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        let mut keys = self.current().to_vec();
        let mut changed = false;
        let mut errors = Vec::new();
        for (watched, key) in files.iter_mut().zip(keys.iter_mut()) {
            let loaded = pem::Contents::read(&watched.paths).and_then(|contents| {
                let digest = contents.digest();
                if digest == watched.loaded {
                    return Ok(None);
                }
                Ok(Some((
                    digest,
                    contents.parse(&watched.paths, &self.provider)?,
                )))
            });
            match loaded {
                Ok(None) => {}
                Ok(Some((digest, new))) => {
                    announce(&watched.paths, &new, "reloaded");
                    *key = new;
                    watched.loaded = digest;
                    changed = true;
                }
                Err(e) => errors.push(format!("{e:#}")),
            }
        }
        if changed {
            *self.current.write().unwrap_or_else(|e| e.into_inner()) = keys.into();
            self.generation.send_modify(|g| *g += 1);
        }
        if !errors.is_empty() {
            bail!(
                "keeping the previous TLS certificate: {}",
                errors.join("; ")
            );
        }
        Ok(changed)
    }

    /// Watches the files (polling, which also sees Kubernetes' `..data` symlink swap) and
    /// reloads them, logging what happened. Ends when the certificates are dropped.
    pub fn spawn_reloader(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        self.spawn_reloader_every(RELOAD_INTERVAL)
    }

    /// [`Self::spawn_reloader`], looking every `period` instead of [`RELOAD_INTERVAL`].
    pub fn spawn_reloader_every(self: &Arc<Self>, period: Duration) -> tokio::task::JoinHandle<()> {
        let this = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            // A bad or missing file is logged when it appears, not at every poll.
            let mut failing: Option<String> = None;
            loop {
                tick.tick().await;
                let Some(this) = this.upgrade() else { return };
                // File reads block; a slow volume must not stall a runtime worker.
                let reloaded = tokio::task::spawn_blocking(move || this.reload()).await;
                match reloaded.unwrap_or_else(|e| Err(anyhow::anyhow!("TLS reload failed: {e}"))) {
                    Ok(changed) => {
                        if failing.take().is_some() && !changed {
                            tracing::info!("TLS certificate files are good again, unchanged");
                        }
                    }
                    Err(e) => {
                        let message = format!("{e:#}");
                        if failing.as_ref() != Some(&message) {
                            tracing::error!("{message}");
                            failing = Some(message);
                        }
                    }
                }
            }
        })
    }

    /// Counts successful reloads; `changed()` on the receiver waits for the next one.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    fn current(&self) -> Arc<[Arc<CertifiedKey>]> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Logs which names a certificate serves, so an operator can check SNI coverage, and warns
/// when it is expired or close to it.
fn announce(paths: &CertKeyPaths, key: &CertifiedKey, what: &str) {
    let Ok(cert) = key.end_entity_cert() else {
        return;
    };
    tracing::info!(
        cert = %paths.cert.display(),
        names = ?resolver::names(key),
        fingerprint = %fingerprint(cert),
        "TLS certificate {what}"
    );
    if let Some(warning) = expiry_warning(cert, std::time::SystemTime::now()) {
        tracing::warn!(cert = %paths.cert.display(), "TLS certificate {warning}");
    }
}

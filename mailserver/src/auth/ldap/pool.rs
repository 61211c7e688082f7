//! Connections to one directory: failover across its URLs (in order, starting with the last
//! one that answered), short timeouts, and a bounded set of open connections kept for reuse.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings};
use tokio::sync::{Semaphore, SemaphorePermit};

use super::settings::{Resolved, TlsSetting};

/// Opens connections, trying the URLs in order from the last good one.
pub struct Connector {
    urls: Vec<String>,
    current: AtomicUsize,
    settings: LdapConnSettings,
    connect_timeout: Duration,
}

impl Connector {
    pub fn new(resolved: &Resolved) -> Self {
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(resolved.connect_timeout())
            .set_starttls(resolved.settings.tls == TlsSetting::StartTls);
        if let Some(tls) = &resolved.tls {
            settings = settings.set_config(tls.clone());
        }
        Self {
            urls: resolved.settings.urls.clone(),
            current: AtomicUsize::new(0),
            settings,
            connect_timeout: resolved.connect_timeout(),
        }
    }

    /// A connection to the first URL that answers; the reason of each failure otherwise.
    pub async fn connect(&self) -> Result<Ldap, String> {
        let start = self.current.load(Ordering::Relaxed);
        let mut failures = Vec::new();
        for i in 0..self.urls.len() {
            let index = (start + i) % self.urls.len();
            let url = &self.urls[index];
            // The TLS handshake is inside with_settings: one deadline covers it too.
            let attempt = tokio::time::timeout(
                self.connect_timeout,
                LdapConnAsync::with_settings(self.settings.clone(), url),
            )
            .await;
            match attempt {
                Ok(Ok((conn, ldap))) => {
                    tokio::spawn(async move {
                        if let Err(error) = conn.drive().await {
                            tracing::debug!(%error, "LDAP connection ended");
                        }
                    });
                    if index != start {
                        tracing::warn!(url, "LDAP failover: now using this server");
                    }
                    self.current.store(index, Ordering::Relaxed);
                    return Ok(ldap);
                }
                Ok(Err(error)) => failures.push(format!("{url}: {error}")),
                Err(_) => failures.push(format!("{url}: connect timed out")),
            }
        }
        Err(failures.join("; "))
    }
}

/// Up to `size` connections in use at once; idle ones are kept for the next user.
pub struct Pool {
    idle: Mutex<Vec<Ldap>>,
    permits: Semaphore,
    wait: Duration,
}

/// A connection taken from a [`Pool`]: give it back with [`Pooled::keep`] when it is still
/// good; dropped otherwise.
pub struct Pooled<'a> {
    pub ldap: Ldap,
    /// Whether it came from the idle list (it may have been closed by the server since).
    pub reused: bool,
    pool: &'a Pool,
    _permit: SemaphorePermit<'a>,
}

impl Pooled<'_> {
    pub fn keep(self) {
        if let Ok(mut idle) = self.pool.idle.lock() {
            idle.push(self.ldap);
        }
    }
}

pub enum Taken<'a> {
    /// An idle connection, or none (the caller opens one and sets `ldap`).
    Ready(Pooled<'a>),
    Empty(SemaphorePermit<'a>),
}

impl Pool {
    /// A pool of `size` slots; a caller waits at most `wait` for one.
    pub fn new(size: usize, wait: Duration) -> Self {
        Self {
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(size),
            wait,
        }
    }

    /// A slot, with an idle connection when there is one; `None` when every slot stayed busy
    /// for the whole wait.
    pub async fn take(&self) -> Option<Taken<'_>> {
        let permit = tokio::time::timeout(self.wait, self.permits.acquire())
            .await
            .ok()?
            .ok()?;
        let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        Some(match idle {
            Some(mut ldap) => {
                if ldap.is_closed() {
                    Taken::Empty(permit)
                } else {
                    Taken::Ready(Pooled {
                        ldap,
                        reused: true,
                        pool: self,
                        _permit: permit,
                    })
                }
            }
            None => Taken::Empty(permit),
        })
    }

    /// Wraps a freshly opened connection into the slot `permit`.
    pub fn fill<'a>(&'a self, permit: SemaphorePermit<'a>, ldap: Ldap) -> Pooled<'a> {
        Pooled {
            ldap,
            reused: false,
            pool: self,
            _permit: permit,
        }
    }
}

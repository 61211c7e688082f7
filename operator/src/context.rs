//! What every reconcile shares: the clients, the stores, the settings, the event recorder,
//! the metrics and the per-object failure counts that drive the retry backoff.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::runtime::controller::Action;
use kube::runtime::events::{Recorder, Reporter};
use mail_blobstore::BlobStore;
use mail_provision::Options;
use mail_provision::dns::DnsSettings;
use sqlx::PgPool;

use crate::error::Error;
use crate::maildomain::DnsChecker;
use crate::metrics::Metrics;

/// The one field manager of every write this operator makes.
pub const FIELD_MANAGER: &str = "mail-operator";

/// How often a Ready object is looked at again even when nothing changed.
pub const RESYNC: Duration = Duration::from_secs(3600);
/// How soon an object that is not Ready for a reason the user must fix is looked at again
/// (watches usually bring it back sooner).
pub const NOT_READY_RETRY: Duration = Duration::from_secs(300);
const BACKOFF_FIRST: Duration = Duration::from_secs(5);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

pub struct Context {
    pub client: Client,
    pub pool: PgPool,
    pub blobs: Arc<dyn BlobStore>,
    pub options: Options,
    pub dns: DnsSettings,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// Checks that DNS serves each MailDomain's records; `None` checks nothing.
    pub dns_check: Option<DnsChecker>,
    /// The time, as key rotation sees it (tests move it by days without waiting).
    pub clock: Clock,
    failures: Mutex<HashMap<String, u32>>,
}

/// A source of the current time.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

impl Context {
    pub fn new(
        client: Client,
        pool: PgPool,
        blobs: Arc<dyn BlobStore>,
        options: Options,
        dns: DnsSettings,
        metrics: Arc<Metrics>,
    ) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.to_string(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            pool,
            blobs,
            options,
            dns,
            metrics,
            dns_check: None,
            clock: Arc::new(Timestamp::now),
            failures: Mutex::default(),
        }
    }

    /// Now, by [`Context::clock`].
    pub fn now(&self) -> Timestamp {
        (self.clock)()
    }

    /// The same context, checking DNS with `checker`.
    pub fn with_dns_check(self, checker: DnsChecker) -> Self {
        Self {
            dns_check: Some(checker),
            ..self
        }
    }

    /// Logs and counts a failed reconcile of `kind` `key` and says when to retry: 5 s, doubling
    /// per consecutive failure, at most 5 minutes.
    pub fn error_policy(&self, kind: &'static str, key: &str, error: &Error) -> Action {
        tracing::warn!(kind, object = key, error = %error, "reconcile failed; will retry");
        self.metrics.error(kind, error.label());
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = failures.entry(format!("{kind}/{key}")).or_insert(0);
        let delay = BACKOFF_FIRST
            .saturating_mul(1u32 << (*n).min(10))
            .min(BACKOFF_MAX);
        *n = n.saturating_add(1);
        Action::requeue(delay)
    }

    /// Forgets the failures of an object that reconciled.
    pub fn succeeded(&self, kind: &'static str, key: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.remove(&format!("{kind}/{key}"));
    }
}

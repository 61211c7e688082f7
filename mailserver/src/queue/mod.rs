//! The durable outbound queue: messages for remote recipients, in PostgreSQL, delivered by a
//! runner that every pod may run at once.
//!
//! # Enqueueing (the pipeline's interface)
//!
//! ```ignore
//! let queue = Queue::from_context(&ctx); // settings from the command line (`--queue-*`)
//! let id = queue
//!     .enqueue(
//!         Envelope {
//!             from: "alice@example.test".into(),          // "" for the null sender
//!             rcpts: vec![QueuedRecipient::new("bob@remote.test")],
//!             env_id: None,                                // MAIL ... ENVID=
//!             ret: None,                                   // MAIL ... RET=FULL|HDRS
//!             requiretls: false,                           // MAIL ... REQUIRETLS
//!             authenticated_as: Some("alice@example.test".into()),
//!         },
//!         Body::Source { bucket: None, source },           // or Body::Blob { blob_id }
//!     )
//!     .await?;
//! // Only now answer 250: the rows and the body are committed.
//! ```
//!
//! `enqueue` DKIM-signs the message with the active key of the `From:` domain (else of the
//! envelope sender's domain; unsigned, with a log line, when neither has a private key), puts
//! the body in the blob store (a spooled [`Body::Source`]; into the bucket given, or the sender
//! domain's, or the first domain's) or takes a reference on an existing blob
//! ([`Body::Blob`], e.g. the body already stored for the local recipients of the same
//! message), and commits the `queue` row, one `queue_recipients` row per recipient and the
//! blob's reference count in one transaction. The reference keeps the body from the blob
//! collector until the message leaves the queue. Each recipient carries its RFC 3461 NOTIFY
//! and ORCPT; the envelope its ENVID, RET and REQUIRETLS, all honoured on the way out and in
//! the DSNs.
//!
//! # Delivery
//!
//! [`runner::Runner`] claims due recipients with a lease (`lease_owner`, `lease_until`, taken
//! with `FOR UPDATE SKIP LOCKED`), so pods never hold one recipient at once; an attempt is
//! cut off well before its lease ends, and a pod that dies leaves leases that expire. Each
//! message's claimed recipients are delivered by [`crate::outbound`] per destination domain
//! (one SMTP transaction each), then recorded: delivered, deferred (exponential backoff, capped
//! by the message's lifetime) or failed. Failures of one pass become one DSN per message
//! ([`dsn`]), delay notices likewise; none is ever sent to the null sender.

pub mod dsn;
pub mod flags;
pub mod http;
pub mod runner;
pub mod store;

use std::time::Duration;

use mail_blobstore::BlobSource;
use tracing::{info, warn};

use crate::dkim::{self, DkimKey};
use crate::store::{Store, StoreError};

/// The id of a queued message (`queue.id`).
pub type QueueId = i64;

/// One recipient with its RFC 3461 parameters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueuedRecipient {
    pub address: String,
    /// NOTIFY as given (`NEVER`, or a comma list of `SUCCESS`, `FAILURE`, `DELAY`); `None`:
    /// the default (failures and delays are reported).
    pub notify: Option<String>,
    /// ORCPT xtext-decoded, `type;address`, e.g. `rfc822;bob@remote.test`.
    pub orcpt: Option<String>,
}

impl QueuedRecipient {
    pub fn new(address: &str) -> Self {
        Self {
            address: address.to_string(),
            ..Self::default()
        }
    }
}

/// RFC 3461 RET: what a failure DSN carries of the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ret {
    Full,
    Hdrs,
}

impl Ret {
    pub fn as_str(self) -> &'static str {
        match self {
            Ret::Full => "full",
            Ret::Hdrs => "hdrs",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "full" => Some(Ret::Full),
            "hdrs" => Some(Ret::Hdrs),
            _ => None,
        }
    }
}

/// The SMTP envelope of a queued message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Envelope {
    /// Envelope sender; empty for the null sender (`MAIL FROM:<>`).
    pub from: String,
    pub rcpts: Vec<QueuedRecipient>,
    /// ENVID, xtext-decoded.
    pub env_id: Option<String>,
    pub ret: Option<Ret>,
    pub requiretls: bool,
    /// The user who submitted it (SMTP AUTH), for the logs and inspection.
    pub authenticated_as: Option<String>,
}

/// Where the message's bytes are.
#[derive(Clone, Debug)]
pub enum Body {
    /// Bytes in memory or spooled to a file; stored into `bucket` (`None`: the sender's
    /// domain's bucket, else the first domain's).
    Source {
        bucket: Option<String>,
        source: BlobSource,
    },
    /// A blob already stored and referenced by a committed row (`blobs.id`).
    Blob { blob_id: i64 },
}

/// Queue behaviour, from the command line.
#[derive(Clone, Debug)]
pub struct QueueSettings {
    /// How long a message is retried before it bounces (RFC 5321 §4.5.4.1: 4-5 days).
    pub lifetime: Duration,
    /// When a still-undelivered recipient gets a delay notice.
    pub delay_notice: Duration,
    /// First retry interval; each next one doubles, up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// This server's name: DSNs come from `MAILER-DAEMON@<hostname>`.
    pub hostname: String,
    /// Whether to DKIM-sign at enqueue.
    pub sign: bool,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            lifetime: Duration::from_secs(5 * 24 * 3600),
            delay_notice: Duration::from_secs(4 * 3600),
            retry_base: Duration::from_secs(60),
            retry_max: Duration::from_secs(3600),
            hostname: "localhost".to_string(),
            sign: true,
        }
    }
}

/// Why a message could not be queued: all temporary for the SMTP client (4xx) except
/// [`QueueError::NoRecipients`], which is the caller's mistake.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("reading the message: {0}")]
    Io(#[from] std::io::Error),
    #[error("no recipients")]
    NoRecipients,
    #[error("no domain is hosted here, so no bucket can hold the message")]
    NoBucket,
    #[error("blob {0} does not exist")]
    NoSuchBlob(i64),
}

/// The handle the pipeline enqueues through; cheap to clone.
#[derive(Clone)]
pub struct Queue {
    store: Store,
    settings: QueueSettings,
}

impl Queue {
    pub fn new(store: Store, settings: QueueSettings) -> Self {
        Self { store, settings }
    }

    /// The queue of a server, with the settings it was started with (cheap: the pipeline may
    /// make one per message).
    pub fn from_context(ctx: &crate::Context) -> Self {
        Self::new(ctx.store.clone(), ctx.settings.queue.clone())
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn settings(&self) -> &QueueSettings {
        &self.settings
    }

    /// Queues a message durably (see the module doc); when this returns `Ok`, the message will
    /// be delivered or bounced even if this process dies now.
    pub async fn enqueue(&self, envelope: Envelope, body: Body) -> Result<QueueId, QueueError> {
        self.enqueue_marked(envelope, body, store::Marks::default())
            .await?
            .ok_or(QueueError::Store(StoreError::Contended))
    }

    /// [`Queue::enqueue`], also marking queue rows in the same transaction (a DSN and the
    /// rows it reports); `None` when they were marked already (by another runner).
    pub(crate) async fn enqueue_marked(
        &self,
        envelope: Envelope,
        body: Body,
        marks: store::Marks<'_>,
    ) -> Result<Option<QueueId>, QueueError> {
        if envelope.rcpts.is_empty() {
            return Err(QueueError::NoRecipients);
        }
        let (raw, body) = match body {
            Body::Source { bucket, source } => {
                let raw = read_source(&source).await?;
                let bucket = match bucket {
                    Some(bucket) => bucket,
                    None => store::bucket_for(self.store.db(), &envelope.from)
                        .await?
                        .ok_or(QueueError::NoBucket)?,
                };
                (raw, store::NewBody::Source { bucket, source })
            }
            Body::Blob { blob_id } => {
                let raw = store::read_blob(&self.store, blob_id).await?;
                (raw, store::NewBody::Blob { blob_id })
            }
        };
        let dkim_header = match self.settings.sign {
            true => self.signature(&envelope.from, raw).await,
            false => None,
        };
        let Some(id) = store::insert_marking(
            &self.store,
            &envelope,
            body,
            dkim_header,
            &self.settings,
            marks,
        )
        .await?
        else {
            return Ok(None);
        };
        info!(
            queue_id = id,
            from = %envelope.from,
            recipients = envelope.rcpts.len(),
            "queued"
        );
        Ok(Some(id))
    }

    /// The DKIM-Signature header for `raw`, or `None` (logged) when no key can sign it.
    async fn signature(&self, sender: &str, raw: Vec<u8>) -> Option<String> {
        let mut domains: Vec<String> = dkim::from_domain(&raw).into_iter().collect();
        if let Some((_, domain)) = sender.rsplit_once('@') {
            let domain = domain.to_lowercase();
            if !domains.contains(&domain) {
                domains.push(domain);
            }
        }
        for domain in &domains {
            match DkimKey::for_domain(self.store.db(), domain).await {
                Ok(Some(key)) => {
                    let now = chrono::Utc::now().timestamp().max(0) as u64;
                    let signed = tokio::task::spawn_blocking(move || key.sign(&raw, now)).await;
                    return match signed {
                        Ok(Ok(header)) => Some(header),
                        Ok(Err(error)) => {
                            warn!(%error, %domain, "DKIM signing failed; sent unsigned");
                            None
                        }
                        Err(error) => {
                            warn!(%error, "DKIM signing task failed; sent unsigned");
                            None
                        }
                    };
                }
                Ok(None) => {}
                Err(error) => warn!(%error, %domain, "DKIM key unusable"),
            }
        }
        info!(domains = ?domains, "no DKIM key with a private key; message queued unsigned");
        None
    }
}

/// The whole message (bounded by the SMTP size limit), read on a blocking thread.
async fn read_source(source: &BlobSource) -> Result<Vec<u8>, QueueError> {
    match source {
        BlobSource::Bytes(bytes) => Ok(bytes.to_vec()),
        BlobSource::File { path, .. } => Ok(tokio::fs::read(path).await?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ret_parses() {
        assert_eq!(Ret::parse("FULL"), Some(Ret::Full));
        assert_eq!(Ret::parse("hdrs"), Some(Ret::Hdrs));
        assert_eq!(Ret::parse("x"), None);
        assert_eq!(Ret::Full.as_str(), "full");
    }
}

//! The queue's rows: inserting a message, claiming due recipients under a lease, recording
//! what an attempt gave, and removing a message once every recipient is done and reported.

use std::time::Duration;

use chrono::{DateTime, Utc};
use mail_blobstore::BlobSource;
use serde::Serialize;
use sqlx::{PgPool, Postgres, Transaction};

use super::{Envelope, QueueError, QueueId, QueueSettings, Ret};
use crate::store::{Staged, Store, StoreError, change_refs, confirm, source_key, stage};

/// Times an insert stages its body again after the collector took it meanwhile.
const ATTEMPTS: usize = 3;

/// The body of a message being inserted.
pub(crate) enum NewBody {
    Source { bucket: String, source: BlobSource },
    Blob { blob_id: i64 },
}

/// Rows marked in the inserting transaction: the DSN that reports them is queued if and only
/// if they are marked, so a report goes out once even when two runners race or one dies.
#[derive(Default)]
pub(crate) struct Marks<'a> {
    pub reported: &'a [i64],
    pub delay_notified: &'a [i64],
}

/// The bucket of the sender's domain, else of the first hosted domain.
pub(crate) async fn bucket_for(db: &PgPool, sender: &str) -> Result<Option<String>, sqlx::Error> {
    let domain = sender
        .rsplit_once('@')
        .map(|(_, d)| d.to_lowercase())
        .unwrap_or_default();
    sqlx::query_scalar(
        "SELECT bucket FROM domains WHERE deleted_at IS NULL
          ORDER BY (name = $1) DESC, id LIMIT 1",
    )
    .bind(domain)
    .fetch_optional(db)
    .await
}

/// The bytes of blob `blob_id`.
pub(crate) async fn read_blob(store: &Store, blob_id: i64) -> Result<Vec<u8>, QueueError> {
    let row: Option<(String, String)> =
        sqlx::query_as("SELECT bucket, key FROM blobs WHERE id = $1")
            .bind(blob_id)
            .fetch_optional(store.db())
            .await?;
    let (bucket, key) = row.ok_or(QueueError::NoSuchBlob(blob_id))?;
    read_object(store, &bucket, &key).await
}

pub(crate) async fn read_object(
    store: &Store,
    bucket: &str,
    key: &str,
) -> Result<Vec<u8>, QueueError> {
    let body = store
        .blobs()
        .get(bucket, key)
        .await
        .map_err(StoreError::from)?;
    body.ok_or_else(|| {
        QueueError::Store(StoreError::MissingBlob {
            bucket: bucket.to_string(),
            key: key.to_string(),
        })
    })
}

/// Inserts a message with its recipients and a reference on its body, in one transaction,
/// also marking `marks` in the same transaction; `Ok(None)` (nothing written) when
/// one of the marked rows was marked already.
pub(crate) async fn insert_marking(
    store: &Store,
    envelope: &Envelope,
    body: NewBody,
    dkim_header: Option<String>,
    settings: &QueueSettings,
    marks: Marks<'_>,
) -> Result<Option<QueueId>, QueueError> {
    match body {
        NewBody::Blob { blob_id } => {
            let staged = Staged { id: blob_id };
            let size: i64 = sqlx::query_scalar("SELECT size FROM blobs WHERE id = $1")
                .bind(blob_id)
                .fetch_optional(store.db())
                .await?
                .ok_or(QueueError::NoSuchBlob(blob_id))?;
            let row = Row {
                envelope,
                blob: staged,
                size,
                dkim_header: dkim_header.as_deref(),
                settings,
            };
            match write(store, &row, &marks).await? {
                Written::Yes(id) => Ok(Some(id)),
                Written::MarkedAlready => Ok(None),
                Written::BlobGone => Err(QueueError::NoSuchBlob(blob_id)),
            }
        }
        NewBody::Source { bucket, source } => {
            let key = source_key(&source).await?;
            let size = i64::try_from(source.len()).unwrap_or(i64::MAX);
            for _ in 0..ATTEMPTS {
                let staged = stage(store, &bucket, &key, &source).await?;
                let row = Row {
                    envelope,
                    blob: staged,
                    size,
                    dkim_header: dkim_header.as_deref(),
                    settings,
                };
                match write(store, &row, &marks).await? {
                    Written::Yes(id) => return Ok(Some(id)),
                    Written::MarkedAlready => return Ok(None),
                    Written::BlobGone => {}
                }
            }
            Err(QueueError::Store(StoreError::Contended))
        }
    }
}

struct Row<'a> {
    envelope: &'a Envelope,
    blob: Staged,
    size: i64,
    dkim_header: Option<&'a str>,
    settings: &'a QueueSettings,
}

enum Written {
    Yes(QueueId),
    BlobGone,
    MarkedAlready,
}

async fn write(store: &Store, row: &Row<'_>, marks: &Marks<'_>) -> Result<Written, QueueError> {
    let mut tx = store.db().begin().await?;
    if !marks.reported.is_empty() || !marks.delay_notified.is_empty() {
        // Recipient rows before blobs: the lock order of the runner's updates.
        let reported: Vec<i64> = sqlx::query_scalar(
            "UPDATE queue_recipients SET reported = true, updated_at = now()
              WHERE id = ANY($1) AND NOT reported RETURNING id",
        )
        .bind(marks.reported)
        .fetch_all(&mut *tx)
        .await?;
        let delayed: Vec<i64> = sqlx::query_scalar(
            "UPDATE queue_recipients SET delay_notified = true, updated_at = now()
              WHERE id = ANY($1) AND NOT delay_notified RETURNING id",
        )
        .bind(marks.delay_notified)
        .fetch_all(&mut *tx)
        .await?;
        if reported.len() != marks.reported.len() || delayed.len() != marks.delay_notified.len() {
            return Ok(Written::MarkedAlready);
        }
    }
    if !confirm(&mut tx, &[row.blob]).await? {
        return Ok(Written::BlobGone);
    }
    let envelope = row.envelope;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO queue (blob_id, sender, expires_at, env_id, ret, requiretls,
                            authenticated_as, dkim_header, size)
         VALUES ($1, $2, now() + make_interval(secs => $3), $4, $5, $6, $7, $8, $9)
         RETURNING id",
    )
    .bind(row.blob.id)
    .bind(&envelope.from)
    .bind(row.settings.lifetime.as_secs_f64())
    .bind(&envelope.env_id)
    .bind(envelope.ret.map(Ret::as_str))
    .bind(envelope.requiretls)
    .bind(&envelope.authenticated_as)
    .bind(row.dkim_header)
    .bind(row.size)
    .fetch_one(&mut *tx)
    .await?;
    let addresses: Vec<&str> = envelope.rcpts.iter().map(|r| r.address.as_str()).collect();
    let notify: Vec<Option<&str>> = envelope.rcpts.iter().map(|r| r.notify.as_deref()).collect();
    let orcpt: Vec<Option<&str>> = envelope.rcpts.iter().map(|r| r.orcpt.as_deref()).collect();
    sqlx::query(
        "INSERT INTO queue_recipients (queue_id, recipient, notify, orcpt)
         SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[])",
    )
    .bind(id)
    .bind(&addresses)
    .bind(&notify)
    .bind(&orcpt)
    .execute(&mut *tx)
    .await?;
    change_refs(&mut tx, [row.blob.id], 1).await?;
    sqlx::query("SELECT pg_notify('queue_added', $1)")
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Written::Yes(id))
}

/// A recipient claimed for one attempt, with its message.
#[derive(Clone, Debug)]
pub struct Claimed {
    pub id: i64,
    pub queue_id: QueueId,
    pub recipient: String,
    pub notify: Option<String>,
    pub orcpt: Option<String>,
    pub attempts: i32,
    pub delay_notified: bool,
}

/// A queued message as the runner needs it.
#[derive(Clone, Debug)]
pub struct QueuedMessage {
    pub id: QueueId,
    pub sender: String,
    pub bucket: String,
    pub key: String,
    pub env_id: Option<String>,
    pub ret: Option<Ret>,
    pub requiretls: bool,
    pub dkim_header: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// Leases up to `limit` due recipients to `owner` for `lease`, counting the attempt.
pub async fn claim(
    db: &PgPool,
    owner: &str,
    lease: Duration,
    limit: i64,
) -> Result<Vec<Claimed>, sqlx::Error> {
    type ClaimRow = (i64, i64, String, Option<String>, Option<String>, i32, bool);
    let rows: Vec<ClaimRow> = sqlx::query_as(
        "WITH due AS (
                SELECT id FROM queue_recipients
                 WHERE status = 'pending' AND next_attempt_at <= now()
                   AND (lease_until IS NULL OR lease_until < now())
                 ORDER BY next_attempt_at, id
                 LIMIT $3
                 FOR UPDATE SKIP LOCKED)
             UPDATE queue_recipients r
                SET lease_owner = $1, lease_until = now() + make_interval(secs => $2),
                    attempts = r.attempts + 1, updated_at = now()
               FROM due WHERE r.id = due.id
             RETURNING r.id, r.queue_id, r.recipient, r.notify, r.orcpt, r.attempts,
                       r.delay_notified",
    )
    .bind(owner)
    .bind(lease.as_secs_f64())
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(id, queue_id, recipient, notify, orcpt, attempts, delay_notified)| Claimed {
                id,
                queue_id,
                recipient,
                notify,
                orcpt,
                attempts,
                delay_notified,
            },
        )
        .collect())
}

/// The messages `ids`.
pub async fn messages(db: &PgPool, ids: &[QueueId]) -> Result<Vec<QueuedMessage>, sqlx::Error> {
    type MessageRow = (
        i64,
        String,
        String,
        String,
        Option<String>,
        Option<String>,
        bool,
        Option<String>,
        DateTime<Utc>,
        DateTime<Utc>,
    );
    let rows: Vec<MessageRow> = sqlx::query_as(
        "SELECT q.id, q.sender, b.bucket, b.key, q.env_id, q.ret, q.requiretls, q.dkim_header,
                q.created_at, q.expires_at
           FROM queue q JOIN blobs b ON b.id = q.blob_id
          WHERE q.id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| QueuedMessage {
            id: r.0,
            sender: r.1,
            bucket: r.2,
            key: r.3,
            env_id: r.4,
            ret: r.5.as_deref().and_then(Ret::parse),
            requiretls: r.6,
            dkim_header: r.7,
            created_at: r.8,
            expires_at: r.9,
        })
        .collect())
}

/// The state an attempt leaves a recipient in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NewState {
    Delivered,
    /// Retry at this time.
    Deferred(DateTime<Utc>),
    Failed,
}

/// Records the result of an attempt if `owner` still holds the lease; `false` when it does
/// not (the row is someone else's now). `reported` is set at once when no DSN is due.
pub async fn record(
    db: &PgPool,
    owner: &str,
    id: i64,
    state: &NewState,
    status: &crate::outbound::Status,
    reported: bool,
) -> Result<bool, sqlx::Error> {
    let (text, next) = match state {
        NewState::Delivered => ("delivered", None),
        NewState::Deferred(at) => ("pending", Some(*at)),
        NewState::Failed => ("failed", None),
    };
    let done = sqlx::query(
        "UPDATE queue_recipients
            SET status = $3, next_attempt_at = COALESCE($4, next_attempt_at),
                last_error = $5, last_status = $6, remote_mta = $7, reported = $8,
                lease_owner = NULL, lease_until = NULL, updated_at = now()
          WHERE id = $1 AND lease_owner = $2",
    )
    .bind(id)
    .bind(owner)
    .bind(text)
    .bind(next)
    .bind(&status.text)
    .bind(&status.enhanced)
    .bind(&status.mta)
    .bind(reported)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A recipient whose state a DSN reports.
#[derive(Clone, Debug)]
pub struct Reportable {
    pub id: i64,
    pub recipient: String,
    pub orcpt: Option<String>,
    pub status: String,
    /// The enhanced status code (`5.1.1`).
    pub last_status: Option<String>,
    /// The reply or reason in words.
    pub last_error: Option<String>,
    pub remote_mta: Option<String>,
}

/// Recipients of `queue_id` in a final state whose DSN is still due.
pub async fn unreported(db: &PgPool, queue_id: QueueId) -> Result<Vec<Reportable>, sqlx::Error> {
    type ReportRow = (
        i64,
        String,
        Option<String>,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let rows: Vec<ReportRow> = sqlx::query_as(
        "SELECT id, recipient, orcpt, status, last_status, last_error, remote_mta
               FROM queue_recipients
              WHERE queue_id = $1 AND status <> 'pending' AND NOT reported ORDER BY id",
    )
    .bind(queue_id)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(id, recipient, orcpt, status, last_status, last_error, remote_mta)| Reportable {
                id,
                recipient,
                orcpt,
                status,
                last_status,
                last_error,
                remote_mta,
            },
        )
        .collect())
}

/// Marks rows reported without a DSN (null sender, NOTIFY=NEVER).
pub async fn mark_reported(db: &PgPool, ids: &[i64]) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE queue_recipients SET reported = true WHERE id = ANY($1)")
        .bind(ids)
        .execute(db)
        .await?;
    Ok(())
}

/// Removes `queue_id` when every recipient is final and reported, dropping its reference on
/// the body; `true` when it was removed.
pub async fn finish(store: &Store, queue_id: QueueId) -> Result<bool, StoreError> {
    let mut tx = store.db().begin().await?;
    let blob: Option<i64> = sqlx::query_scalar(
        "DELETE FROM queue q WHERE q.id = $1
            AND NOT EXISTS (SELECT 1 FROM queue_recipients r
                             WHERE r.queue_id = q.id AND (r.status = 'pending' OR NOT r.reported))
         RETURNING blob_id",
    )
    .bind(queue_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(blob) = blob else {
        return Ok(false);
    };
    change_refs(&mut tx, [blob], -1).await?;
    tx.commit().await?;
    Ok(true)
}

/// One message as `GET /queue` lists it.
#[derive(Clone, Debug, Serialize)]
pub struct Listed {
    pub id: QueueId,
    pub sender: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub size: i64,
    pub recipients: Vec<ListedRecipient>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ListedRecipient {
    pub address: String,
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub lease_owner: Option<String>,
}

/// Every queued message, oldest first (at most `limit`).
pub async fn list(db: &PgPool, limit: i64) -> Result<Vec<Listed>, sqlx::Error> {
    type MessageRow = (i64, String, DateTime<Utc>, DateTime<Utc>, i64);
    let messages: Vec<MessageRow> = sqlx::query_as(
        "SELECT id, sender, created_at, expires_at, size FROM queue ORDER BY created_at, id LIMIT $1",
    )
    .bind(limit)
    .fetch_all(db)
    .await?;
    let ids: Vec<i64> = messages.iter().map(|m| m.0).collect();
    type RecipientRow = (
        i64,
        String,
        String,
        i32,
        DateTime<Utc>,
        Option<String>,
        Option<String>,
    );
    let rows: Vec<RecipientRow> = sqlx::query_as(
        "SELECT queue_id, recipient, status, attempts, next_attempt_at, last_error, lease_owner
           FROM queue_recipients WHERE queue_id = ANY($1) ORDER BY id",
    )
    .bind(&ids)
    .fetch_all(db)
    .await?;
    Ok(messages
        .into_iter()
        .map(|(id, sender, created_at, expires_at, size)| Listed {
            id,
            sender,
            created_at,
            expires_at,
            size,
            recipients: rows
                .iter()
                .filter(|r| r.0 == id)
                .map(|r| ListedRecipient {
                    address: r.1.clone(),
                    status: r.2.clone(),
                    attempts: r.3,
                    next_attempt_at: r.4,
                    last_error: r.5.clone(),
                    lease_owner: r.6.clone(),
                })
                .collect(),
        })
        .collect())
}

/// Makes the pending recipients of `queue_id` due now; `false` when there is no such message.
pub async fn retry(db: &PgPool, queue_id: QueueId) -> Result<bool, sqlx::Error> {
    let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM queue WHERE id = $1")
        .bind(queue_id)
        .fetch_optional(db)
        .await?;
    if exists.is_none() {
        return Ok(false);
    }
    sqlx::query(
        "UPDATE queue_recipients SET next_attempt_at = now()
          WHERE queue_id = $1 AND status = 'pending'",
    )
    .bind(queue_id)
    .execute(db)
    .await?;
    sqlx::query("SELECT pg_notify('queue_added', $1)")
        .bind(queue_id.to_string())
        .execute(db)
        .await?;
    Ok(true)
}

/// Drops `queue_id` without delivering or bouncing it; `false` when there is no such message.
pub async fn delete(store: &Store, queue_id: QueueId) -> Result<bool, StoreError> {
    let mut tx: Transaction<'_, Postgres> = store.db().begin().await?;
    let blob: Option<i64> = sqlx::query_scalar("DELETE FROM queue WHERE id = $1 RETURNING blob_id")
        .bind(queue_id)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(blob) = blob else {
        return Ok(false);
    };
    change_refs(&mut tx, [blob], -1).await?;
    tx.commit().await?;
    Ok(true)
}

/// How many messages are queued and the age of the oldest, in seconds.
pub async fn gauge(db: &PgPool) -> Result<(i64, f64), sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(created_at))::float8, 0)
           FROM queue",
    )
    .fetch_one(db)
    .await
}

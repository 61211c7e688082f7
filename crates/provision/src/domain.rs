//! MailDomain → a `domains` row and a bucket.

use mail_blobstore::BlobStore;
use mail_resources::{MailDomainSpec, parse_quantity};
use sqlx::PgPool;

use crate::error::{Error, Outcome};
use crate::names::{bucket_name, check_address, check_bucket_prefix, check_domain};

/// How resources map onto the stores.
#[derive(Debug, Clone)]
pub struct Options {
    /// Buckets are named `<bucket_prefix>-<domain with dashes>`.
    pub bucket_prefix: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            bucket_prefix: "mail".to_string(),
        }
    }
}

/// Quota of a directory user's mailbox when neither the domain nor the directory says (1 GiB).
pub const DEFAULT_DIRECTORY_QUOTA: i64 = 1 << 30;

/// Creates or updates the domain's row (reviving it if it was deleted under Retain) and makes
/// sure its bucket exists. A domain keeps the bucket it was created with.
pub async fn apply_domain(
    pool: &PgPool,
    blobs: &dyn BlobStore,
    spec: &MailDomainSpec,
    options: &Options,
) -> Result<Outcome, Error> {
    let name = spec.domain.as_str();
    check_domain(name).map_err(|e| Error::invalid(format!("domain {name:?} {e}")))?;
    check_bucket_prefix(&options.bucket_prefix).map_err(Error::invalid)?;
    let catch_all = spec.catch_all.as_deref().map(str::to_ascii_lowercase);
    if let Some(address) = &catch_all {
        match check_address(address) {
            Ok((_, domain)) if domain == name => {}
            Ok(_) => {
                return Err(Error::invalid(format!(
                    "catch-all {address} of {name} must be an address in {name}"
                )));
            }
            Err(e) => return Err(Error::invalid(format!("catch-all {address:?} {e}"))),
        }
    }

    let directory = spec.directory.as_ref().map(|d| d.name.clone());
    let directory_quota = match &spec.directory {
        None => DEFAULT_DIRECTORY_QUOTA,
        Some(d) => parse_quantity(&d.default_quota)
            .ok()
            .and_then(|q| i64::try_from(q).ok())
            .ok_or_else(|| {
                Error::invalid(format!(
                    "{name}: directory defaultQuota {:?} is not valid",
                    d.default_quota
                ))
            })?,
    };

    let existing: Option<String> = sqlx::query_scalar("SELECT bucket FROM domains WHERE name = $1")
        .bind(name)
        .fetch_optional(pool)
        .await?;
    let bucket = existing.unwrap_or_else(|| bucket_name(&options.bucket_prefix, name));
    let owner: Option<String> =
        sqlx::query_scalar("SELECT name FROM domains WHERE bucket = $1 AND name <> $2")
            .bind(&bucket)
            .bind(name)
            .fetch_optional(pool)
            .await?;
    if let Some(owner) = owner {
        return Err(Error::Conflict(format!(
            "domain {name} would use bucket {bucket}, which belongs to domain {owner}"
        )));
    }
    // The bucket first: a row whose bucket is missing would make deliveries fail.
    blobs.create_bucket(&bucket).await?;

    let inserted: Option<bool> = sqlx::query_scalar(
        "INSERT INTO domains (name, bucket, catch_all, reclaim_policy, directory,
                              directory_quota_bytes)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (name) DO UPDATE SET catch_all = EXCLUDED.catch_all,
             reclaim_policy = EXCLUDED.reclaim_policy, directory = EXCLUDED.directory,
             directory_quota_bytes = EXCLUDED.directory_quota_bytes,
             deleted_at = NULL, updated_at = now()
         WHERE (domains.catch_all, domains.reclaim_policy, domains.directory,
                domains.directory_quota_bytes, domains.deleted_at)
             IS DISTINCT FROM (EXCLUDED.catch_all, EXCLUDED.reclaim_policy, EXCLUDED.directory,
                EXCLUDED.directory_quota_bytes, NULL::timestamptz)
         RETURNING (xmax = 0)",
    )
    .bind(name)
    .bind(&bucket)
    .bind(&catch_all)
    .bind(spec.reclaim_policy.as_str())
    .bind(&directory)
    .bind(directory_quota)
    .fetch_optional(pool)
    .await?;
    Ok(Outcome::of_upsert(inserted))
}

/// Deletes a domain as its reclaim policy says. Retain: the domain, its mailboxes are marked
/// deleted and the aliases into or out of it are dropped; messages and the bucket stay.
/// Delete: the rows go (mailboxes, messages, keys by cascade, then the domain's blobs and the
/// queue entries that point at them), then the bucket is emptied and deleted.
pub async fn delete_domain(
    pool: &PgPool,
    blobs: &dyn BlobStore,
    name: &str,
) -> Result<Outcome, Error> {
    let mut tx = pool.begin().await?;
    let row: Option<(i64, String, String, bool)> = sqlx::query_as(
        "SELECT id, bucket, reclaim_policy, deleted_at IS NOT NULL FROM domains
         WHERE name = $1 FOR UPDATE",
    )
    .bind(name)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((id, bucket, policy, deleted)) = row else {
        return Ok(Outcome::Absent);
    };
    if policy == "Retain" {
        if deleted {
            return Ok(Outcome::Unchanged);
        }
        sqlx::query("UPDATE domains SET deleted_at = now(), updated_at = now() WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE mailboxes SET deleted_at = now(), updated_at = now()
             WHERE domain_id = $1 AND deleted_at IS NULL",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM aliases WHERE domain_id = $1
                OR mailbox_id IN (SELECT id FROM mailboxes WHERE domain_id = $1)",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        return Ok(Outcome::Removed);
    }

    release_blobs_of_domain(&mut tx, id).await?;
    sqlx::query("DELETE FROM queue WHERE blob_id IN (SELECT id FROM blobs WHERE bucket = $1)")
        .bind(&bucket)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM domains WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM blobs WHERE bucket = $1")
        .bind(&bucket)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    // After the commit: a failed commit must not lose the mail.
    blobs.delete_bucket(&bucket).await?;
    Ok(Outcome::Removed)
}

/// Drops the references the messages of a domain's mailboxes hold on blobs (of any bucket),
/// before the messages go by cascade, so the blobs' refcounts stay true.
async fn release_blobs_of_domain(
    tx: &mut sqlx::PgConnection,
    domain_id: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE blobs SET refcount = blobs.refcount - m.n
         FROM (SELECT blob_id, count(*) AS n FROM messages
               WHERE mailbox_id IN (SELECT id FROM mailboxes WHERE domain_id = $1)
               GROUP BY blob_id) m
         WHERE blobs.id = m.blob_id",
    )
    .bind(domain_id)
    .execute(tx)
    .await?;
    Ok(())
}

//! Putting a message into mailboxes: body to the blob store, then rows in one transaction.

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use mail_blobstore::BlobSource;
use sha2::{Digest, Sha256};
use sqlx::{Postgres, Transaction};

use super::blobs::{Staged, change_refs, confirm, stage};
use super::{Recipient, Store, StoreError, lock_mailboxes, notify_changed};

/// Where one copy of a delivered message landed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivered {
    pub mailbox_id: i64,
    pub folder_id: i64,
    pub uid: i64,
}

/// Times a write stages its body again after the collector took it meanwhile.
pub(super) const ATTEMPTS: usize = 3;

/// The blob key of a body: its SHA-256, so equal bodies share one object.
pub fn blob_key(raw: &[u8]) -> String {
    hex::encode(Sha256::digest(raw))
}

/// [`blob_key`] of a source, read in chunks on a blocking thread (a spooled body is never
/// loaded whole).
pub async fn source_key(source: &BlobSource) -> std::io::Result<String> {
    use std::io::Read;
    let source = source.clone();
    let hash = move || -> std::io::Result<String> {
        match &source {
            BlobSource::Bytes(bytes) => Ok(blob_key(bytes)),
            BlobSource::File { path, len } => {
                let mut file = std::fs::File::open(path)?.take(*len);
                let mut hasher = Sha256::new();
                let mut buf = vec![0; 64 * 1024];
                let mut seen = 0;
                loop {
                    let n = file.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                    seen += n as u64;
                }
                if seen != *len {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("{} holds {seen} bytes, {len} expected", path.display()),
                    ));
                }
                Ok(hex::encode(hasher.finalize()))
            }
        }
    };
    tokio::task::spawn_blocking(hash)
        .await
        .map_err(std::io::Error::other)?
}

impl Recipient {
    /// Whether a message of `size` bytes still fits under the quota.
    pub fn fits(&self, size: u64) -> bool {
        i64::try_from(size)
            .ok()
            .and_then(|size| self.used_bytes.checked_add(size))
            .is_some_and(|total| total <= self.quota_bytes)
    }
}

impl Store {
    /// Stores `raw` once per bucket and files it into the INBOX of every recipient; see
    /// [`Store::deliver_source`].
    pub async fn deliver(
        &self,
        raw: &[u8],
        recipients: &[Recipient],
    ) -> Result<Vec<Delivered>, StoreError> {
        let source = BlobSource::Bytes(Bytes::copy_from_slice(raw));
        self.deliver_source(&source, recipients).await
    }

    /// Stores the body once per bucket (streamed from a file when spooled) and files it into
    /// the INBOX of every recipient (duplicates of a mailbox count once). When this returns
    /// `Ok`, the message is durable everywhere; on `Err`, no message row was written (a body
    /// already put is staged, and collected later). A recipient the message would take over
    /// quota fails the whole delivery with [`StoreError::QuotaExceeded`]; callers check
    /// [`Recipient::fits`] first, so this only happens when concurrent deliveries race for the
    /// last bytes.
    pub async fn deliver_source(
        &self,
        source: &BlobSource,
        recipients: &[Recipient],
    ) -> Result<Vec<Delivered>, StoreError> {
        self.deliver_placed(source, recipients, false).await
    }

    /// [`Store::deliver_source`], filing each copy into the recipient's `+tag` folder when it
    /// exists, or into the Junk folder for every recipient when `junk` (a quarantined message;
    /// the INBOX when a mailbox has no Junk folder).
    pub async fn deliver_placed(
        &self,
        source: &BlobSource,
        recipients: &[Recipient],
        junk: bool,
    ) -> Result<Vec<Delivered>, StoreError> {
        let result = self.store_message(source, recipients, junk).await;
        crate::metrics::delivery(result.is_ok(), source.len() as usize);
        result
    }

    async fn store_message(
        &self,
        source: &BlobSource,
        recipients: &[Recipient],
        junk: bool,
    ) -> Result<Vec<Delivered>, StoreError> {
        let key = source_key(source)
            .await
            .map_err(mail_blobstore::BlobError::from)?;
        let size = i64::try_from(source.len()).unwrap_or(i64::MAX);
        // bucket -> distinct mailboxes in it, each with the folder its first address asked for
        let mut by_bucket: BTreeMap<&str, Vec<(i64, Placement)>> = BTreeMap::new();
        for r in recipients {
            let ids = by_bucket.entry(r.bucket.as_str()).or_default();
            if !ids.iter().any(|(m, _)| *m == r.mailbox_id) {
                let placement = match (&r.folder, junk) {
                    (_, true) => Placement::Junk,
                    (Some(name), false) => Placement::Named(name.clone()),
                    (None, false) => Placement::Inbox,
                };
                ids.push((r.mailbox_id, placement));
            }
        }
        for _ in 0..ATTEMPTS {
            // (mailbox, blob) in mailbox order: the lock order.
            let mut targets = Vec::new();
            let mut staged = Vec::new();
            for (bucket, mailboxes) in &by_bucket {
                let blob = stage(self, bucket, &key, source).await?;
                staged.push(blob);
                targets.extend(mailboxes.iter().map(|(m, p)| (*m, p.clone(), blob)));
            }
            targets.sort_unstable_by_key(|(mailbox, _, _)| *mailbox);
            if let Some(delivered) = self.file_into_inboxes(&staged, &targets, size).await? {
                return Ok(delivered);
            }
        }
        Err(StoreError::Contended)
    }

    /// The delivery's transaction; `None` when a staged blob was collected meanwhile.
    async fn file_into_inboxes(
        &self,
        staged: &[Staged],
        targets: &[(i64, Placement, Staged)],
        size: i64,
    ) -> Result<Option<Vec<Delivered>>, StoreError> {
        let mut tx = self.db.begin().await?;
        if !confirm(&mut tx, staged).await? {
            return Ok(None);
        }
        let mailbox_ids: Vec<i64> = targets.iter().map(|(m, _, _)| *m).collect();
        lock_mailboxes(&mut tx, &mailbox_ids).await?;
        let mut delivered = Vec::new();
        for (mailbox_id, placement, blob) in targets {
            let (mailbox_id, blob) = (*mailbox_id, *blob);
            charge_quota(&mut tx, mailbox_id, size).await?;
            let folder = placement.folder_id(&mut tx, mailbox_id).await?;
            let taken = take_uids(&mut tx, mailbox_id, folder, 1)
                .await?
                .ok_or(StoreError::NoSuchFolder { mailbox_id })?;
            let row = NewMessage {
                mailbox_id,
                folder_id: taken.folder_id,
                uid: taken.first_uid,
                modseq: taken.modseq,
                blob_id: blob.id,
                size,
                flags: &[],
                internal_date: None,
            };
            insert_message(&mut tx, &row).await?;
            notify_changed(&mut tx, mailbox_id).await?;
            delivered.push(Delivered {
                mailbox_id,
                folder_id: taken.folder_id,
                uid: taken.first_uid,
            });
        }
        change_refs(&mut tx, targets.iter().map(|(_, _, blob)| blob.id), 1).await?;
        tx.commit().await?;
        Ok(Some(delivered))
    }
}

/// Which folder of a mailbox a delivered copy goes into.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Placement {
    Inbox,
    /// The special-use Junk folder (a quarantined message).
    Junk,
    /// A folder named by a `+tag` (compared without case: addresses are lower-cased).
    Named(String),
}

impl Placement {
    /// The folder's id, `None` for the INBOX (also when the folder asked for does not exist).
    /// A plain read: the row lock comes with [`take_uids`], after the mailbox's (lock order).
    async fn folder_id(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        mailbox_id: i64,
    ) -> Result<Option<i64>, sqlx::Error> {
        let (junk, name) = match self {
            Placement::Inbox => return Ok(None),
            Placement::Junk => (true, ""),
            Placement::Named(name) => (false, name.as_str()),
        };
        sqlx::query_scalar(
            "SELECT id FROM folders WHERE mailbox_id = $1
               AND CASE WHEN $2 THEN special_use = 'junk' ELSE lower(name) = lower($3) END
             ORDER BY id LIMIT 1",
        )
        .bind(mailbox_id)
        .bind(junk)
        .bind(name)
        .fetch_optional(&mut **tx)
        .await
    }
}

/// UIDs reserved in a folder by [`take_uids`].
pub(super) struct TakenUids {
    pub folder_id: i64,
    pub uid_validity: i64,
    /// The first of `count` consecutive UIDs.
    pub first_uid: i64,
    /// The folder's new highest modseq, for the rows written now.
    pub modseq: i64,
}

/// A message row about to be written.
pub(super) struct NewMessage<'a> {
    pub mailbox_id: i64,
    pub folder_id: i64,
    pub uid: i64,
    pub modseq: i64,
    pub blob_id: i64,
    pub size: i64,
    pub flags: &'a [String],
    /// `None` is now.
    pub internal_date: Option<DateTime<Utc>>,
}

/// Reserves `count` UIDs in a folder of `mailbox_id` (`folder_id`, or the INBOX when `None`).
/// Bumping uid_next under the row lock gives concurrent writers distinct, increasing UIDs.
/// `None` when the mailbox has no such folder, so nobody can write into another's folder.
pub(super) async fn take_uids(
    tx: &mut Transaction<'_, Postgres>,
    mailbox_id: i64,
    folder_id: Option<i64>,
    count: i64,
) -> Result<Option<TakenUids>, StoreError> {
    let row: Option<(i64, i64, i64, i64)> = sqlx::query_as(
        "UPDATE folders SET uid_next = uid_next + $3, highest_modseq = highest_modseq + 1
          WHERE mailbox_id = $1
            AND CASE WHEN $2::bigint IS NULL THEN special_use = 'inbox' ELSE id = $2 END
          RETURNING id, uid_validity, uid_next - $3, highest_modseq",
    )
    .bind(mailbox_id)
    .bind(folder_id)
    .bind(count)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(
        row.map(|(folder_id, uid_validity, first_uid, modseq)| TakenUids {
            folder_id,
            uid_validity,
            first_uid,
            modseq,
        }),
    )
}

pub(super) async fn insert_message(
    tx: &mut Transaction<'_, Postgres>,
    row: &NewMessage<'_>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO messages (mailbox_id, folder_id, uid, modseq, blob_id, size, flags, internal_date)
         VALUES ($1, $2, $3, $4, $5, $6, $7, COALESCE($8, now()))",
    )
    .bind(row.mailbox_id)
    .bind(row.folder_id)
    .bind(row.uid)
    .bind(row.modseq)
    .bind(row.blob_id)
    .bind(row.size)
    .bind(row.flags)
    .bind(row.internal_date)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Counts `size` more bytes against the mailbox's quota, or fails with
/// [`StoreError::QuotaExceeded`] (the caller's transaction then rolls back). The row lock
/// serializes writers to one mailbox, so the quota holds under concurrency.
pub(super) async fn charge_quota(
    tx: &mut Transaction<'_, Postgres>,
    mailbox_id: i64,
    size: i64,
) -> Result<(), StoreError> {
    let fits: Option<i64> = sqlx::query_scalar(
        "UPDATE mailboxes SET used_bytes = used_bytes + $2
          WHERE id = $1 AND used_bytes + $2 <= quota_bytes
          RETURNING id",
    )
    .bind(mailbox_id)
    .bind(size)
    .fetch_optional(&mut **tx)
    .await?;
    match fits {
        Some(_) => Ok(()),
        None => Err(StoreError::QuotaExceeded { mailbox_id }),
    }
}

//! Putting a message into mailboxes: body to the blob store, then rows in one transaction.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use super::{Recipient, Store, StoreError, notify_changed};

/// Where one copy of a delivered message landed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivered {
    pub mailbox_id: i64,
    pub folder_id: i64,
    pub uid: i64,
}

/// The blob key of a body: its SHA-256, so equal bodies share one object.
pub fn blob_key(raw: &[u8]) -> String {
    hex::encode(Sha256::digest(raw))
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
    /// Stores `raw` once per bucket and files it into the INBOX of every recipient (duplicates
    /// of a mailbox count once). When this returns `Ok`, the message is durable everywhere;
    /// on `Err`, no row was written (a body already put stays unreferenced until collected).
    /// A recipient the message would take over quota fails the whole delivery with
    /// [`StoreError::QuotaExceeded`]; callers check [`Recipient::fits`] first, so this only
    /// happens when concurrent deliveries race for the last bytes.
    pub async fn deliver(
        &self,
        raw: &[u8],
        recipients: &[Recipient],
    ) -> Result<Vec<Delivered>, StoreError> {
        let result = self.store_message(raw, recipients).await;
        crate::metrics::delivery(result.is_ok(), raw.len());
        result
    }

    async fn store_message(
        &self,
        raw: &[u8],
        recipients: &[Recipient],
    ) -> Result<Vec<Delivered>, StoreError> {
        let key = blob_key(raw);
        let size = i64::try_from(raw.len()).unwrap_or(i64::MAX);
        // bucket -> distinct mailboxes in it
        let mut by_bucket: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
        for r in recipients {
            let ids = by_bucket.entry(r.bucket.as_str()).or_default();
            if !ids.contains(&r.mailbox_id) {
                ids.push(r.mailbox_id);
            }
        }
        // One lock order for every delivery, so concurrent ones cannot deadlock.
        for ids in by_bucket.values_mut() {
            ids.sort_unstable();
        }
        for bucket in by_bucket.keys() {
            self.blobs.put(bucket, &key, raw).await?;
        }

        let mut tx = self.db.begin().await?;
        let mut delivered = Vec::new();
        for (bucket, mailboxes) in &by_bucket {
            let blob_id: i64 = sqlx::query_scalar(
                "INSERT INTO blobs (bucket, key, size, refcount) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (bucket, key) DO UPDATE SET refcount = blobs.refcount + EXCLUDED.refcount
                 RETURNING id",
            )
            .bind(bucket)
            .bind(&key)
            .bind(size)
            .bind(mailboxes.len() as i64)
            .fetch_one(&mut *tx)
            .await?;
            for &mailbox_id in mailboxes {
                // Taking the UID bumps uid_next under the row lock, so concurrent deliveries
                // to one folder get distinct, increasing UIDs.
                let (folder_id, uid, modseq): (i64, i64, i64) = sqlx::query_as(
                    "UPDATE folders SET uid_next = uid_next + 1, highest_modseq = highest_modseq + 1
                      WHERE mailbox_id = $1 AND special_use = 'inbox'
                      RETURNING id, uid_next - 1, highest_modseq",
                )
                .bind(mailbox_id)
                .fetch_one(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO messages (mailbox_id, folder_id, uid, modseq, blob_id, size)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(mailbox_id)
                .bind(folder_id)
                .bind(uid)
                .bind(modseq)
                .bind(blob_id)
                .bind(size)
                .execute(&mut *tx)
                .await?;
                // The quota holds under concurrency: the row lock serializes deliveries to one
                // mailbox, and a message that no longer fits rolls the whole delivery back.
                let fits: Option<i64> = sqlx::query_scalar(
                    "UPDATE mailboxes SET used_bytes = used_bytes + $2
                      WHERE id = $1 AND used_bytes + $2 <= quota_bytes
                      RETURNING id",
                )
                .bind(mailbox_id)
                .bind(size)
                .fetch_optional(&mut *tx)
                .await?;
                if fits.is_none() {
                    return Err(StoreError::QuotaExceeded { mailbox_id });
                }
                notify_changed(&mut tx, mailbox_id).await?;
                delivered.push(Delivered {
                    mailbox_id,
                    folder_id,
                    uid,
                });
            }
        }
        tx.commit().await?;
        Ok(delivered)
    }
}

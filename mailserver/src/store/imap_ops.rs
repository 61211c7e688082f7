//! What IMAP writes besides flags: APPEND, COPY and MOVE (RFC 3501, RFC 4315, RFC 6851).
//!
//! They share delivery's steps (blob references, UIDs under the folder's row lock, quota in
//! the transaction), so the same invariants hold whoever writes a message.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use mail_blobstore::BlobSource;

use super::blobs::{change_refs, confirm, stage};
use super::delivery::{ATTEMPTS, NewMessage, blob_key, charge_quota, insert_message, take_uids};
use super::{Store, StoreError, junk, lock_folder, notify_changed};

/// A message row of the source folder, as COPY and MOVE need it.
#[derive(sqlx::FromRow)]
struct Source {
    id: i64,
    uid: i64,
    blob_id: i64,
    size: i64,
    flags: Vec<String>,
    internal_date: DateTime<Utc>,
}

impl Store {
    /// Files `raw` into `folder_id` of `mailbox_id` with the given flags and internal date
    /// (`None` is now) and returns the folder's UIDVALIDITY and the new UID.
    /// Fails with [`StoreError::NoSuchFolder`] when the folder is not the mailbox's and with
    /// [`StoreError::QuotaExceeded`] when the message does not fit; then no row was written.
    pub async fn append(
        &self,
        mailbox_id: i64,
        folder_id: i64,
        raw: &[u8],
        flags: &[String],
        internal_date: Option<DateTime<Utc>>,
    ) -> Result<(i64, i64), StoreError> {
        // Both checks come before anything is written: a foreign folder's body, or one over
        // quota, never reaches the blob store.
        let row: Option<(String, bool)> = sqlx::query_as(
            "SELECT d.bucket, m.used_bytes + $3 <= m.quota_bytes FROM folders f
               JOIN mailboxes m ON m.id = f.mailbox_id
               JOIN domains d ON d.id = m.domain_id
              WHERE f.id = $2 AND f.mailbox_id = $1",
        )
        .bind(mailbox_id)
        .bind(folder_id)
        .bind(i64::try_from(raw.len()).unwrap_or(i64::MAX))
        .fetch_optional(&self.db)
        .await?;
        let (bucket, fits) = row.ok_or(StoreError::NoSuchFolder { mailbox_id })?;
        if !fits {
            return Err(StoreError::QuotaExceeded { mailbox_id });
        }
        let key = blob_key(raw);
        let size = i64::try_from(raw.len()).unwrap_or(i64::MAX);
        // Kept like STORE keeps them: each flag once, in one order.
        let mut flags = flags.to_vec();
        flags.sort_unstable();
        flags.dedup();
        let source = BlobSource::Bytes(Bytes::copy_from_slice(raw));
        for _ in 0..ATTEMPTS {
            let blob = stage(self, &bucket, &key, &source).await?;
            let mut tx = self.db.begin().await?;
            if !confirm(&mut tx, &[blob]).await? {
                continue;
            }
            lock_folder(&mut tx, &[folder_id]).await?;
            charge_quota(&mut tx, mailbox_id, size).await?;
            let taken = take_uids(&mut tx, mailbox_id, Some(folder_id), 1)
                .await?
                .ok_or(StoreError::NoSuchFolder { mailbox_id })?;
            let row = NewMessage {
                mailbox_id,
                folder_id,
                uid: taken.first_uid,
                modseq: taken.modseq,
                blob_id: blob.id,
                size,
                flags: &flags,
                internal_date,
            };
            insert_message(&mut tx, &row).await?;
            junk::record_transfer(&mut tx, None, folder_id, &[taken.first_uid]).await?;
            change_refs(&mut tx, [blob.id], 1).await?;
            notify_changed(&mut tx, mailbox_id).await?;
            tx.commit().await?;
            return Ok((taken.uid_validity, taken.first_uid));
        }
        Err(StoreError::Contended)
    }

    /// Copies the messages `uids` of `from_folder` into `to_folder` of the same mailbox: the
    /// same blob (one more reference each), flags and internal date kept, new UIDs in
    /// ascending source order. Returns `(source UID, new UID)` for every message that was
    /// there. The copies count against the quota ([`StoreError::QuotaExceeded`], nothing
    /// copied); a folder of another mailbox is [`StoreError::NoSuchFolder`].
    pub async fn copy_messages(
        &self,
        from_folder: i64,
        to_folder: i64,
        uids: &[i64],
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        self.transfer(from_folder, to_folder, uids, false).await
    }

    /// Moves the messages `uids` of `from_folder` into `to_folder` of the same mailbox in one
    /// transaction: afterwards they are in the target under new UIDs and gone from the
    /// source, or nothing changed. Blob references and quota stay as they were (the same
    /// bytes are stored once either way). Returns `(source UID, new UID)` pairs, ascending.
    pub async fn move_messages(
        &self,
        from_folder: i64,
        to_folder: i64,
        uids: &[i64],
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        self.transfer(from_folder, to_folder, uids, true).await
    }

    async fn transfer(
        &self,
        from_folder: i64,
        to_folder: i64,
        uids: &[i64],
        remove_source: bool,
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        if uids.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.db.begin().await?;
        let mailbox_id = lock_folder(&mut tx, &[from_folder, to_folder]).await?;
        // Locked, so a concurrent EXPUNGE or MOVE of the same messages waits for this one.
        let sources: Vec<Source> = sqlx::query_as(
            "SELECT id, uid, blob_id, size, flags, internal_date
               FROM messages WHERE folder_id = $1 AND uid = ANY($2)
              ORDER BY uid FOR UPDATE",
        )
        .bind(from_folder)
        .bind(uids)
        .fetch_all(&mut *tx)
        .await?;
        if sources.is_empty() {
            return Ok(Vec::new());
        }
        let count = i64::try_from(sources.len()).unwrap_or(i64::MAX);
        let taken = take_uids(&mut tx, mailbox_id, Some(to_folder), count)
            .await?
            .ok_or(StoreError::NoSuchFolder { mailbox_id })?;
        let mut pairs = Vec::with_capacity(sources.len());
        for (offset, source) in (0..).zip(&sources) {
            let uid = taken.first_uid + offset;
            if remove_source {
                sqlx::query(
                    "UPDATE messages SET folder_id = $2, uid = $3, modseq = $4 WHERE id = $1",
                )
                .bind(source.id)
                .bind(to_folder)
                .bind(uid)
                .bind(taken.modseq)
                .execute(&mut *tx)
                .await?;
            } else {
                let row = NewMessage {
                    mailbox_id,
                    folder_id: to_folder,
                    uid,
                    modseq: taken.modseq,
                    blob_id: source.blob_id,
                    size: source.size,
                    flags: &source.flags,
                    internal_date: Some(source.internal_date),
                };
                insert_message(&mut tx, &row).await?;
            }
            pairs.push((source.uid, uid));
        }
        let new_uids: Vec<i64> = pairs.iter().map(|(_, uid)| *uid).collect();
        junk::record_transfer(&mut tx, Some(from_folder), to_folder, &new_uids).await?;
        if remove_source {
            sqlx::query("UPDATE folders SET highest_modseq = highest_modseq + 1 WHERE id = $1")
                .bind(from_folder)
                .execute(&mut *tx)
                .await?;
        } else {
            let total = sources.iter().map(|s| s.size).sum();
            charge_quota(&mut tx, mailbox_id, total).await?;
            change_refs(&mut tx, sources.iter().map(|s| s.blob_id), 1).await?;
        }
        notify_changed(&mut tx, mailbox_id).await?;
        tx.commit().await?;
        Ok(pairs)
    }
}

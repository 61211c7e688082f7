//! Folders and the messages in them: what IMAP and POP3 read and change.

use std::ops::Range;

use chrono::{DateTime, Utc};
use mail_blobstore::BlobReader;

use super::blobs::change_refs;
use super::{Store, StoreError, lock_folder, notify_changed};

/// An IMAP folder of a mailbox.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Folder {
    pub id: i64,
    pub mailbox_id: i64,
    pub name: String,
    /// `inbox`, `sent`, `drafts`, `trash`, `junk`, `archive`
    pub special_use: Option<String>,
    pub uid_validity: i64,
    pub uid_next: i64,
    pub highest_modseq: i64,
    pub subscribed: bool,
}

/// A message's metadata; the body is read with [`Store::read_body`].
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct MessageMeta {
    pub id: i64,
    pub folder_id: i64,
    pub uid: i64,
    pub modseq: i64,
    pub size: i64,
    pub internal_date: DateTime<Utc>,
    pub flags: Vec<String>,
    pub bucket: String,
    pub blob_key: String,
}

fn missing(message: &MessageMeta) -> StoreError {
    StoreError::MissingBlob {
        bucket: message.bucket.clone(),
        key: message.blob_key.clone(),
    }
}

/// How STORE changes flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlagMode {
    Replace,
    Add,
    Remove,
}

pub(super) const FOLDER_COLUMNS: &str =
    "id, mailbox_id, name, special_use, uid_validity, uid_next, highest_modseq, subscribed";

impl Store {
    /// Every folder of the mailbox, INBOX first, then by name.
    pub async fn folders(&self, mailbox_id: i64) -> Result<Vec<Folder>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {FOLDER_COLUMNS} FROM folders WHERE mailbox_id = $1
              ORDER BY special_use IS DISTINCT FROM 'inbox', name"
        ))
        .bind(mailbox_id)
        .fetch_all(&self.db)
        .await?)
    }

    /// The folder called `name`; `INBOX` matches in any case, as IMAP requires.
    pub async fn folder(&self, mailbox_id: i64, name: &str) -> Result<Option<Folder>, StoreError> {
        let query = if name.eq_ignore_ascii_case("INBOX") {
            format!(
                "SELECT {FOLDER_COLUMNS} FROM folders WHERE mailbox_id = $1 AND special_use = 'inbox'"
            )
        } else {
            format!("SELECT {FOLDER_COLUMNS} FROM folders WHERE mailbox_id = $1 AND name = $2")
        };
        Ok(sqlx::query_as(&query)
            .bind(mailbox_id)
            .bind(name)
            .fetch_optional(&self.db)
            .await?)
    }

    /// The messages of a folder in UID order.
    pub async fn messages(&self, folder_id: i64) -> Result<Vec<MessageMeta>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT m.id, m.folder_id, m.uid, m.modseq, m.size, m.internal_date, m.flags,
                    b.bucket, b.key AS blob_key
               FROM messages m JOIN blobs b ON b.id = m.blob_id
              WHERE m.folder_id = $1 ORDER BY m.uid",
        )
        .bind(folder_id)
        .fetch_all(&self.db)
        .await?)
    }

    /// The message's bytes exactly as they were delivered.
    pub async fn read_body(&self, message: &MessageMeta) -> Result<Vec<u8>, StoreError> {
        let body = self.blobs.get(&message.bucket, &message.blob_key).await?;
        body.ok_or_else(|| missing(message))
    }

    /// The message's bytes as a stream: a large body is written out without being held.
    pub async fn open_body(&self, message: &MessageMeta) -> Result<BlobReader, StoreError> {
        let body = self.blobs.open(&message.bucket, &message.blob_key).await?;
        body.ok_or_else(|| missing(message))
    }

    /// The bytes `range` of the message (cut at its end), e.g. for `BODY[]<start.length>`.
    pub async fn read_body_range(
        &self,
        message: &MessageMeta,
        range: Range<u64>,
    ) -> Result<Vec<u8>, StoreError> {
        let body = self
            .blobs
            .get_range(&message.bucket, &message.blob_key, range)
            .await?;
        body.ok_or_else(|| missing(message))
    }

    /// Changes the flags of the given UIDs of a folder and returns each changed message's UID
    /// with its new flags. Flags are kept as IMAP writes them (`\Seen`, `$Forwarded`).
    pub async fn store_flags(
        &self,
        folder_id: i64,
        uids: &[i64],
        mode: FlagMode,
        flags: &[String],
    ) -> Result<Vec<(i64, Vec<String>)>, StoreError> {
        let new_flags = match mode {
            FlagMode::Replace => "ARRAY(SELECT DISTINCT unnest($3::text[]) ORDER BY 1)",
            FlagMode::Add => "ARRAY(SELECT DISTINCT unnest(flags || $3::text[]) ORDER BY 1)",
            FlagMode::Remove => {
                "ARRAY(SELECT unnest(flags) EXCEPT SELECT unnest($3::text[]) ORDER BY 1)"
            }
        };
        let mut tx = self.db.begin().await?;
        match lock_folder(&mut tx, &[folder_id]).await {
            Err(StoreError::NoSuchFolder { .. }) => return Ok(Vec::new()),
            other => other?,
        };
        let modseq: i64 = sqlx::query_scalar(
            "UPDATE folders SET highest_modseq = highest_modseq + 1 WHERE id = $1 RETURNING highest_modseq",
        )
        .bind(folder_id)
        .fetch_one(&mut *tx)
        .await?;
        let rows: Vec<(i64, Vec<String>)> = sqlx::query_as(&format!(
            "UPDATE messages SET flags = {new_flags}, modseq = $4
              WHERE folder_id = $1 AND uid = ANY($2)
              RETURNING uid, flags"
        ))
        .bind(folder_id)
        .bind(uids)
        .bind(flags)
        .bind(modseq)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut rows = rows;
        rows.sort_by_key(|(uid, _)| *uid);
        Ok(rows)
    }

    /// Removes the folder's messages flagged `\Deleted` (only those among `uids` when given) and
    /// returns their UIDs in ascending order. The flag is read inside the transaction, under
    /// the mailbox's lock, so a message whose flag a STORE just removed stays.
    pub async fn expunge(
        &self,
        folder_id: i64,
        uids: Option<&[i64]>,
    ) -> Result<Vec<i64>, StoreError> {
        self.remove(folder_id, uids, true).await
    }

    /// Removes the given messages of a folder whatever their flags (POP3 `DELE` at `QUIT`) and
    /// returns the UIDs that were there, ascending. Quota and blob references shrink with them.
    pub async fn delete_messages(
        &self,
        folder_id: i64,
        uids: &[i64],
    ) -> Result<Vec<i64>, StoreError> {
        if uids.is_empty() {
            return Ok(Vec::new());
        }
        self.remove(folder_id, Some(uids), false).await
    }

    async fn remove(
        &self,
        folder_id: i64,
        uids: Option<&[i64]>,
        only_deleted: bool,
    ) -> Result<Vec<i64>, StoreError> {
        let mut tx = self.db.begin().await?;
        let mailbox_id = match lock_folder(&mut tx, &[folder_id]).await {
            Err(StoreError::NoSuchFolder { .. }) => return Ok(Vec::new()),
            other => other?,
        };
        let removed: Vec<(i64, i64, i64)> = sqlx::query_as(
            "DELETE FROM messages
              WHERE folder_id = $1
                AND ($2::bigint[] IS NULL OR uid = ANY($2))
                AND (NOT $3 OR '\\Deleted' = ANY(flags))
              RETURNING uid, blob_id, size",
        )
        .bind(folder_id)
        .bind(uids)
        .bind(only_deleted)
        .fetch_all(&mut *tx)
        .await?;
        if removed.is_empty() {
            return Ok(Vec::new());
        }
        let size: i64 = removed.iter().map(|(_, _, size)| size).sum();
        sqlx::query("UPDATE mailboxes SET used_bytes = GREATEST(used_bytes - $2, 0) WHERE id = $1")
            .bind(mailbox_id)
            .bind(size)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE folders SET highest_modseq = highest_modseq + 1 WHERE id = $1")
            .bind(folder_id)
            .execute(&mut *tx)
            .await?;
        change_refs(&mut tx, removed.iter().map(|(_, blob, _)| *blob), -1).await?;
        notify_changed(&mut tx, mailbox_id).await?;
        tx.commit().await?;
        let mut uids: Vec<i64> = removed.into_iter().map(|(uid, ..)| uid).collect();
        uids.sort_unstable();
        Ok(uids)
    }
}

//! What a mailbox uses of its quota (IMAP QUOTA, RFC 9208).

use super::{Store, StoreError};

/// A mailbox's storage use and limit, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    pub used_bytes: i64,
    pub quota_bytes: i64,
}

impl Store {
    /// The mailbox's usage, `None` when it does not exist.
    pub async fn usage(&self, mailbox_id: i64) -> Result<Option<Usage>, StoreError> {
        let row: Option<(i64, i64)> =
            sqlx::query_as("SELECT used_bytes, quota_bytes FROM mailboxes WHERE id = $1")
                .bind(mailbox_id)
                .fetch_optional(&self.db)
                .await?;
        Ok(row.map(|(used_bytes, quota_bytes)| Usage {
            used_bytes,
            quota_bytes,
        }))
    }
}

//! The mailbox an address names, and the normalized form addresses are stored in.

use super::{Route, Store, StoreError};

/// A mailbox that accepts mail, as found from an address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipient {
    pub mailbox_id: i64,
    /// The mailbox's own address (not the alias that led here).
    pub address: String,
    /// The bucket of the mailbox's domain, where its message bodies go.
    pub bucket: String,
    pub quota_bytes: i64,
    pub used_bytes: i64,
    /// The folder a `+tag` asked for (filed into the INBOX when it does not exist).
    pub folder: Option<String>,
}

/// Lower-cases an address and trims the angle brackets and blanks a client may leave around it.
pub fn normalize_address(address: &str) -> String {
    address
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_lowercase()
}

impl Store {
    /// The mailbox `address` delivers into, or `None` when it delivers nowhere here; see
    /// [`Store::route`].
    pub async fn resolve_recipient(&self, address: &str) -> Result<Option<Recipient>, StoreError> {
        match self.route(address).await? {
            Route::Local(recipient) => Ok(Some(recipient)),
            Route::UnknownUser | Route::NotHosted | Route::Remote(_) => Ok(None),
        }
    }

    pub(super) async fn lookup_exact(
        &self,
        address: &str,
    ) -> Result<Option<Recipient>, StoreError> {
        let row: Option<(i64, String, String, i64, i64)> = sqlx::query_as(
            "SELECT m.id, m.address, d.bucket, m.quota_bytes, m.used_bytes
               FROM mailboxes m JOIN domains d ON d.id = m.domain_id
              WHERE m.deleted_at IS NULL AND d.deleted_at IS NULL
                AND (m.address = $1
                     OR m.id = (SELECT mailbox_id FROM aliases WHERE address = $1))
              ORDER BY (m.address = $1) DESC
              LIMIT 1",
        )
        .bind(address)
        .fetch_optional(&self.db)
        .await?;
        Ok(row.map(
            |(mailbox_id, address, bucket, quota_bytes, used_bytes)| Recipient {
                mailbox_id,
                address,
                bucket,
                quota_bytes,
                used_bytes,
                folder: None,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize() {
        for (input, want) in [
            ("Alice@Example.TEST", "alice@example.test"),
            ("<bob@example.test>", "bob@example.test"),
            ("  carol@x.y ", "carol@x.y"),
        ] {
            assert_eq!(normalize_address(input), want);
        }
    }
}

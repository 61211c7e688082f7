//! Which mailbox an address delivers into: the mailbox itself, an alias, a `+tag`, or the
//! domain's catch-all.

use super::{Store, StoreError};
use crate::auth::ldap::Directories;
use crate::auth::ldap::directories::directory_mailbox;
use crate::auth::source::Lookup;

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
    /// The mailbox `address` delivers into, or `None` when it delivers nowhere. Tried in order:
    /// the mailbox, an alias, the address without its `+tag`, the domain's catch-all.
    pub async fn resolve_recipient(&self, address: &str) -> Result<Option<Recipient>, StoreError> {
        let address = normalize_address(address);
        let Some((local, domain)) = address.rsplit_once('@') else {
            return Ok(None);
        };
        if let Some(found) = self.lookup_exact(&address).await? {
            return Ok(Some(found));
        }
        if let Some((base, _tag)) = local.split_once('+')
            && let Some(found) = self.lookup_exact(&format!("{base}@{domain}")).await?
        {
            return Ok(Some(found));
        }
        let row: Option<(Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT catch_all, directory FROM domains WHERE name = $1 AND deleted_at IS NULL",
        )
        .bind(domain)
        .fetch_optional(&self.db)
        .await?;
        let (catch_all, directory) = row.unwrap_or_default();
        if let (Some(directory), Some(directories)) = (directory, &self.directories)
            && let Some(found) = self
                .directory_user(directories, &directory, &address)
                .await?
        {
            return Ok(Some(found));
        }
        match catch_all {
            Some(target) => self.lookup_exact(&normalize_address(&target)).await,
            None => Ok(None),
        }
    }

    /// The mailbox of the directory user who owns `address` (or, for `local+tag`, `local`),
    /// created on this first delivery when missing.
    async fn directory_user(
        &self,
        directories: &Directories,
        directory: &str,
        address: &str,
    ) -> Result<Option<Recipient>, StoreError> {
        let mut candidates = vec![address.to_string()];
        if let Some((local, domain)) = address.rsplit_once('@')
            && let Some((base, _tag)) = local.split_once('+')
        {
            candidates.push(format!("{base}@{domain}"));
        }
        for candidate in candidates {
            match directories.lookup(directory, &candidate).await {
                Lookup::Found(identity) => {
                    let created = directory_mailbox(&self.db, directory, &identity).await?;
                    if let Some((_, address)) = created {
                        return self.lookup_exact(&address).await;
                    }
                }
                Lookup::NotFound => {}
                Lookup::Unavailable(reason) => {
                    return Err(StoreError::DirectoryUnavailable {
                        directory: directory.to_string(),
                        reason,
                    });
                }
            }
        }
        Ok(None)
    }

    async fn lookup_exact(&self, address: &str) -> Result<Option<Recipient>, StoreError> {
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

//! Mailbox → a `mailboxes` row, its aliases and its standard folders.

use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};

use mail_resources::{MailboxSpec, parse_quantity};
use sqlx::{PgConnection, PgPool};

use crate::error::{Error, Outcome};
use crate::names::check_address;

/// The folders every mailbox has: (name, special use).
pub const STANDARD_FOLDERS: [(&str, &str); 6] = [
    ("INBOX", "inbox"),
    ("Sent", "sent"),
    ("Drafts", "drafts"),
    ("Trash", "trash"),
    ("Junk", "junk"),
    ("Archive", "archive"),
];

/// Creates or updates the mailbox (reviving it if it was deleted under Retain), sets its
/// aliases to exactly `spec.aliases` and creates missing standard folders. `password` is the
/// Secret value `spec.passwordSecretRef` points at; `None` stores no local password.
pub async fn apply_mailbox(
    pool: &PgPool,
    spec: &MailboxSpec,
    password: Option<&[u8]>,
) -> Result<Outcome, Error> {
    let address = spec.address.to_ascii_lowercase();
    let (_, domain) =
        check_address(&address).map_err(|e| Error::invalid(format!("address {address:?} {e}")))?;
    let quota = parse_quantity(&spec.quota)
        .ok()
        .and_then(|q| i64::try_from(q).ok())
        .ok_or_else(|| Error::invalid(format!("{address}: quota {:?} is not valid", spec.quota)))?;
    let mut aliases = BTreeSet::new();
    for alias in &spec.aliases {
        let alias = alias.to_ascii_lowercase();
        let (_, alias_domain) =
            check_address(&alias).map_err(|e| Error::invalid(format!("alias {alias:?} {e}")))?;
        if alias == address {
            return Err(Error::invalid(format!(
                "{address} lists itself as an alias"
            )));
        }
        aliases.insert((alias_domain.to_string(), alias));
    }

    let mut tx = pool.begin().await?;
    let domain_id = active_domain(&mut tx, domain).await?;
    let mut alias_rows = Vec::new();
    for (alias_domain, alias) in &aliases {
        alias_rows.push((active_domain(&mut tx, alias_domain).await?, alias.as_str()));
    }
    let alias_list: Vec<&str> = alias_rows.iter().map(|(_, a)| *a).collect();

    // Who holds the addresses now, other than this mailbox?
    let taken: Option<(String, String)> = sqlx::query_as(
        "SELECT a.address, m.address FROM aliases a JOIN mailboxes m ON m.id = a.mailbox_id
         WHERE a.address = $1 AND m.address <> $1
         UNION ALL
         SELECT a.address, m.address FROM aliases a JOIN mailboxes m ON m.id = a.mailbox_id
         WHERE a.address = ANY($2) AND m.address <> $1
         UNION ALL
         SELECT address, address FROM mailboxes
         WHERE address = ANY($2) AND deleted_at IS NULL
         LIMIT 1",
    )
    .bind(&address)
    .bind(&alias_list)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some((wanted, owner)) = taken {
        let what = if wanted == owner {
            "is a mailbox"
        } else {
            "is an alias of"
        };
        let owner = if wanted == owner {
            String::new()
        } else {
            format!(" {owner}")
        };
        return Err(Error::Conflict(format!(
            "{address}: {wanted} {what}{owner}; an address belongs to one mailbox"
        )));
    }

    let existing: Option<Option<String>> =
        sqlx::query_scalar("SELECT password_hash FROM mailboxes WHERE address = $1 FOR UPDATE")
            .bind(&address)
            .fetch_optional(&mut *tx)
            .await?;
    let password_hash = match password {
        None => None,
        Some(value) => {
            let value = value.to_vec();
            let existing = existing.flatten();
            let hash = tokio::task::spawn_blocking(move || {
                crate::password::hash_for(&value, existing.as_deref())
            })
            .await
            .map_err(|e| Error::Conflict(format!("password hashing stopped: {e}")))?;
            Some(hash.map_err(|e| Error::invalid(format!("{address}: password {e}")))?)
        }
    };

    let upserted: Option<(i64, bool)> = sqlx::query_as(
        "INSERT INTO mailboxes (domain_id, address, display_name, quota_bytes, auth_source,
                                password_hash)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (address) DO UPDATE SET display_name = EXCLUDED.display_name,
             quota_bytes = EXCLUDED.quota_bytes, auth_source = EXCLUDED.auth_source,
             password_hash = EXCLUDED.password_hash, deleted_at = NULL, updated_at = now(),
             -- SCRAM keys belong to the old password: gone with it (the server writes new
             -- ones at the next password login).
             scram_sha256 = CASE WHEN mailboxes.password_hash IS DISTINCT FROM
                 EXCLUDED.password_hash THEN NULL ELSE mailboxes.scram_sha256 END
         WHERE (mailboxes.display_name, mailboxes.quota_bytes, mailboxes.auth_source,
                mailboxes.password_hash, mailboxes.deleted_at)
             IS DISTINCT FROM (EXCLUDED.display_name, EXCLUDED.quota_bytes,
                EXCLUDED.auth_source, EXCLUDED.password_hash, NULL::timestamptz)
         RETURNING id, (xmax = 0)",
    )
    .bind(domain_id)
    .bind(&address)
    .bind(&spec.display_name)
    .bind(quota)
    .bind(spec.auth_source.as_str())
    .bind(&password_hash)
    .fetch_optional(&mut *tx)
    .await?;
    let (id, mut outcome) = match upserted {
        Some((id, true)) => (id, Outcome::Created),
        Some((id, false)) => (id, Outcome::Updated),
        None => {
            let id = sqlx::query_scalar("SELECT id FROM mailboxes WHERE address = $1")
                .bind(&address)
                .fetch_one(&mut *tx)
                .await?;
            (id, Outcome::Unchanged)
        }
    };

    let mut changed =
        sqlx::query("DELETE FROM aliases WHERE mailbox_id = $1 AND address <> ALL($2)")
            .bind(id)
            .bind(&alias_list)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    for (alias_domain_id, alias) in &alias_rows {
        changed += sqlx::query(
            "INSERT INTO aliases (address, domain_id, mailbox_id) VALUES ($1, $2, $3)
             ON CONFLICT (address) DO NOTHING",
        )
        .bind(alias)
        .bind(alias_domain_id)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    changed += ensure_folders(&mut tx, id).await?;
    tx.commit().await?;
    if changed > 0 && outcome == Outcome::Unchanged {
        outcome = Outcome::Updated;
    }
    Ok(outcome)
}

/// The id of a hosted, not deleted domain; otherwise a conflict saying which is missing.
async fn active_domain(tx: &mut PgConnection, domain: &str) -> Result<i64, Error> {
    let row: Option<(i64, bool)> =
        sqlx::query_as("SELECT id, deleted_at IS NOT NULL FROM domains WHERE name = $1")
            .bind(domain)
            .fetch_optional(&mut *tx)
            .await?;
    match row {
        Some((id, false)) => Ok(id),
        Some((_, true)) => Err(Error::Conflict(format!(
            "domain {domain} was deleted; apply its MailDomain again first"
        ))),
        None => Err(Error::Conflict(format!(
            "domain {domain} is not hosted; apply a MailDomain for it first"
        ))),
    }
}

/// Creates the standard folders that are missing; returns how many it created. A folder that
/// exists under the name, or another folder with the special use, is left alone.
async fn ensure_folders(tx: &mut PgConnection, mailbox_id: i64) -> Result<u64, sqlx::Error> {
    let mut created = 0;
    for (name, special_use) in STANDARD_FOLDERS {
        created += sqlx::query(
            "INSERT INTO folders (mailbox_id, name, special_use, uid_validity)
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(mailbox_id)
        .bind(name)
        .bind(special_use)
        .bind(uid_validity())
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    Ok(created)
}

/// A UIDVALIDITY for a new folder: the clock in seconds, within 1..2^32-1 as IMAP needs.
fn uid_validity() -> i64 {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(1);
    i64::try_from(seconds % u64::from(u32::MAX))
        .unwrap_or(1)
        .max(1)
}

/// Deletes a mailbox as its domain's reclaim policy says: Retain marks it deleted (messages
/// stay; applying it again revives it) and drops its aliases; Delete removes the row, its
/// folders and messages.
pub async fn delete_mailbox(pool: &PgPool, address: &str) -> Result<Outcome, Error> {
    let address = address.to_ascii_lowercase();
    let mut tx = pool.begin().await?;
    let row: Option<(i64, String, bool)> = sqlx::query_as(
        "SELECT m.id, d.reclaim_policy, m.deleted_at IS NOT NULL
         FROM mailboxes m JOIN domains d ON d.id = m.domain_id
         WHERE m.address = $1 FOR UPDATE OF m",
    )
    .bind(&address)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((id, policy, deleted)) = row else {
        return Ok(Outcome::Absent);
    };
    if policy == "Retain" {
        if deleted {
            return Ok(Outcome::Unchanged);
        }
        sqlx::query("UPDATE mailboxes SET deleted_at = now(), updated_at = now() WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM aliases WHERE mailbox_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
    } else {
        // Messages go by cascade; their blobs lose one reference each.
        sqlx::query(
            "UPDATE blobs SET refcount = blobs.refcount - m.n
             FROM (SELECT blob_id, count(*) AS n FROM messages WHERE mailbox_id = $1
                   GROUP BY blob_id) m
             WHERE blobs.id = m.blob_id",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM mailboxes WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(Outcome::Removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_validity_is_in_range() {
        let v = uid_validity();
        assert!((1..=i64::from(u32::MAX)).contains(&v), "{v}");
    }
}

//! What changed in a folder since a MODSEQ: the store side of the change feed.
//!
//! Every write to a folder (delivery, APPEND, STORE, EXPUNGE, MOVE) bumps the folder's
//! `highest_modseq` in its transaction, stamps the rows it wrote with it, records expunged
//! UIDs in `expunged`, and sends a tiny `pg_notify` (see [`notify_folder`]) that PostgreSQL
//! delivers at commit. Readers then ask [`Store::changes_since`] instead of reloading a folder.

use std::time::Duration;

use sqlx::{Postgres, Transaction};

use super::{FlagMode, MessageMeta, Store, StoreError, lock_folder};

/// The `LISTEN` channel of the change feed.
pub const CHANNEL: &str = "mail_changes";

/// How long expunged UIDs are remembered for QRESYNC; an older resync gets a full answer.
pub const EXPUNGED_RETENTION: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// Tells every process that `folder_id` reached `modseq` (payload `"<folder> <modseq>"`).
/// PostgreSQL delivers it when the transaction commits and drops it when it rolls back.
pub(crate) async fn notify_folder(
    tx: &mut Transaction<'_, Postgres>,
    folder_id: i64,
    modseq: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(format!("{folder_id} {modseq}"))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Parses a notification payload of [`notify_folder`].
pub fn parse_payload(payload: &str) -> Option<(i64, i64)> {
    let (folder, modseq) = payload.split_once(' ')?;
    Some((folder.parse().ok()?, modseq.parse().ok()?))
}

/// Bumps the folder's MODSEQ (the caller holds its row lock) and returns the new value.
pub(crate) async fn bump_modseq(
    tx: &mut Transaction<'_, Postgres>,
    folder_id: i64,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE folders SET highest_modseq = highest_modseq + 1 WHERE id = $1
          RETURNING highest_modseq",
    )
    .bind(folder_id)
    .fetch_one(&mut **tx)
    .await
}

/// Records `uids` of `folder_id` as expunged at `modseq`.
pub(crate) async fn record_expunged(
    tx: &mut Transaction<'_, Postgres>,
    folder_id: i64,
    uids: &[i64],
    modseq: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO expunged (folder_id, uid, modseq)
         SELECT $1, uid, $3 FROM unnest($2::bigint[]) AS uid
         ON CONFLICT (folder_id, uid) DO UPDATE SET modseq = EXCLUDED.modseq, expunged_at = now()",
    )
    .bind(folder_id)
    .bind(uids)
    .bind(modseq)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A folder's changes after some MODSEQ, read in one snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// The folder's MODSEQ the answer is complete up to.
    pub highest_modseq: i64,
    pub uid_next: i64,
    /// Messages added or changed (flags, moved in), in UID order.
    pub changed: Vec<MessageMeta>,
    /// UIDs expunged, ascending. Complete only when `exact`.
    pub expunged: Vec<i64>,
    /// Whether `expunged` is the whole truth: false when the record was pruned past the
    /// MODSEQ asked about (then the caller must compare UIDs itself).
    pub exact: bool,
}

impl Store {
    /// What changed in `folder_id` after `modseq`; `None` when the folder is gone.
    pub async fn changes_since(
        &self,
        folder_id: i64,
        modseq: i64,
    ) -> Result<Option<Changes>, StoreError> {
        let mut tx = self.db.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        let folder: Option<(i64, i64, i64)> = sqlx::query_as(
            "SELECT highest_modseq, uid_next, expunged_from FROM folders WHERE id = $1",
        )
        .bind(folder_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((highest_modseq, uid_next, expunged_from)) = folder else {
            return Ok(None);
        };
        if highest_modseq <= modseq {
            return Ok(Some(Changes {
                highest_modseq,
                uid_next,
                exact: true,
                ..Changes::default()
            }));
        }
        let changed: Vec<MessageMeta> = sqlx::query_as(
            "SELECT m.id, m.folder_id, m.uid, m.modseq, m.size, m.internal_date, m.flags,
                    b.bucket, b.key AS blob_key
               FROM messages m JOIN blobs b ON b.id = m.blob_id
              WHERE m.folder_id = $1 AND m.modseq > $2 ORDER BY m.uid",
        )
        .bind(folder_id)
        .bind(modseq)
        .fetch_all(&mut *tx)
        .await?;
        let expunged: Vec<i64> = sqlx::query_scalar(
            "SELECT uid FROM expunged WHERE folder_id = $1 AND modseq > $2 ORDER BY uid",
        )
        .bind(folder_id)
        .bind(modseq)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(Changes {
            highest_modseq,
            uid_next,
            changed,
            expunged,
            exact: modseq >= expunged_from,
        }))
    }

    /// STORE for CONDSTORE (RFC 7162 §3.1.3): changes the flags of `uids` whose MODSEQ is not
    /// above `unchanged_since` (all of them when `None`), in one transaction under the folder's
    /// lock. Returns `(uid, flags, modseq)` of each changed message and the UIDs refused
    /// because they changed after `unchanged_since`, both ascending.
    pub async fn store_flags_since(
        &self,
        folder_id: i64,
        uids: &[i64],
        mode: FlagMode,
        flags: &[String],
        unchanged_since: Option<i64>,
    ) -> Result<(Vec<(i64, Vec<String>, i64)>, Vec<i64>), StoreError> {
        let new_flags = match mode {
            FlagMode::Replace => "ARRAY(SELECT DISTINCT unnest($3::text[]) ORDER BY 1)",
            FlagMode::Add => "ARRAY(SELECT DISTINCT unnest(flags || $3::text[]) ORDER BY 1)",
            FlagMode::Remove => {
                "ARRAY(SELECT unnest(flags) EXCEPT SELECT unnest($3::text[]) ORDER BY 1)"
            }
        };
        let mut tx = self.db.begin().await?;
        match lock_folder(&mut tx, &[folder_id]).await {
            Err(StoreError::NoSuchFolder { .. }) => return Ok((Vec::new(), Vec::new())),
            other => other?,
        };
        let modified: Vec<i64> = match unchanged_since {
            Some(since) => {
                sqlx::query_scalar(
                    "SELECT uid FROM messages WHERE folder_id = $1 AND uid = ANY($2)
                        AND modseq > $3 ORDER BY uid",
                )
                .bind(folder_id)
                .bind(uids)
                .bind(since)
                .fetch_all(&mut *tx)
                .await?
            }
            None => Vec::new(),
        };
        let modseq = bump_modseq(&mut tx, folder_id).await?;
        let mut rows: Vec<(i64, Vec<String>, i64)> = sqlx::query_as(&format!(
            "UPDATE messages SET flags = {new_flags}, modseq = $4
              WHERE folder_id = $1 AND uid = ANY($2) AND ($5::bigint IS NULL OR modseq <= $5)
              RETURNING uid, flags, modseq"
        ))
        .bind(folder_id)
        .bind(uids)
        .bind(flags)
        .bind(modseq)
        .bind(unchanged_since)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            tx.rollback().await?;
            return Ok((Vec::new(), modified));
        }
        notify_folder(&mut tx, folder_id, modseq).await?;
        tx.commit().await?;
        rows.sort_by_key(|(uid, ..)| *uid);
        Ok((rows, modified))
    }

    /// The UIDs now in the folder, ascending (for a resync the expunged record cannot answer).
    pub async fn uids(&self, folder_id: i64) -> Result<Vec<i64>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT uid FROM messages WHERE folder_id = $1 ORDER BY uid")
                .bind(folder_id)
                .fetch_all(&self.db)
                .await?,
        )
    }

    /// Forgets expunged UIDs older than `retention`; returns how many rows went. Folders whose
    /// record lost rows remember from which MODSEQ it is complete again.
    pub async fn prune_expunged(&self, retention: Duration) -> Result<u64, StoreError> {
        let seconds = i64::try_from(retention.as_secs()).unwrap_or(i64::MAX);
        let rows = sqlx::query_scalar::<_, i64>(
            "WITH gone AS (
                DELETE FROM expunged WHERE expunged_at < now() - make_interval(secs => $1)
                RETURNING folder_id, modseq
             ), per_folder AS (
                SELECT folder_id, max(modseq) AS modseq, count(*) AS n FROM gone GROUP BY folder_id
             ), raised AS (
                UPDATE folders f SET expunged_from = GREATEST(f.expunged_from, p.modseq)
                  FROM per_folder p WHERE f.id = p.folder_id
             )
             SELECT COALESCE(sum(n), 0)::bigint FROM per_folder",
        )
        .bind(seconds as f64)
        .fetch_one(&self.db)
        .await?;
        Ok(u64::try_from(rows).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads() {
        assert_eq!(parse_payload("12 345"), Some((12, 345)));
        assert_eq!(parse_payload("12"), None);
        assert_eq!(parse_payload("x 1"), None);
        assert_eq!(parse_payload(""), None);
    }
}

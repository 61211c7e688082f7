//! Changing a mailbox's folders: create (with missing parents), delete, rename (children move
//! along; the inbox's rule), subscribe.
//!
//! Names are paths with `/` between levels. Every change takes the mailbox row first and then
//! the folder rows it touches, ascending id (steps 1 and 2 of the lock order in [`super`]).

use sqlx::{Postgres, Transaction};

use super::blobs::change_refs;
use super::delivery::take_uids;
use super::messages::{FOLDER_COLUMNS, Folder};
use super::{Store, StoreError, lock_mailboxes, notify_changed};

/// The hierarchy delimiter of folder names.
pub const FOLDER_DELIMITER: char = '/';

/// Longest folder name accepted, in bytes (clients show paths; this is generous).
const MAX_NAME: usize = 512;
/// Most levels a folder name may have.
const MAX_DEPTH: usize = 32;
/// Most folders one mailbox may have: each LIST costs time linear in them.
const MAX_FOLDERS: i64 = 10_000;

/// Why a folder change was refused; [`FolderError::Store`] is the only temporary one.
#[derive(Debug, thiserror::Error)]
pub enum FolderError {
    #[error("a folder with that name exists")]
    Exists,
    #[error("no such folder")]
    NotFound,
    #[error("the folder has subfolders; delete them first")]
    HasChildren,
    #[error("the inbox cannot be deleted")]
    Inbox,
    #[error("another folder already has that special use")]
    SpecialUseTaken,
    #[error("the mailbox has too many folders")]
    TooMany,
    #[error("{0}")]
    InvalidName(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for FolderError {
    fn from(err: sqlx::Error) -> Self {
        Self::Store(StoreError::Database(err))
    }
}

/// Checks a folder name a client wants to create: no empty levels, no wildcard characters
/// (they could never be listed by name), bounded length and depth.
pub fn check_folder_name(name: &str) -> Result<(), FolderError> {
    if name.is_empty() {
        return Err(FolderError::InvalidName("The folder name is empty"));
    }
    if name.len() > MAX_NAME {
        return Err(FolderError::InvalidName("The folder name is too long"));
    }
    if name
        .chars()
        .any(|c| matches!(c, '*' | '%') || c.is_control())
    {
        return Err(FolderError::InvalidName(
            "Folder names cannot contain *, % or control characters",
        ));
    }
    let levels: Vec<&str> = name.split(FOLDER_DELIMITER).collect();
    if levels.iter().any(|level| level.is_empty()) {
        return Err(FolderError::InvalidName(
            "Folder names cannot have empty levels",
        ));
    }
    if levels.len() > MAX_DEPTH {
        return Err(FolderError::InvalidName("The folder name is too deep"));
    }
    if levels.len() > 1 && levels[0].eq_ignore_ascii_case("INBOX") && levels[0] != "INBOX" {
        // `inbox/x` would not be found under `INBOX` by a case-insensitive client.
        return Err(FolderError::InvalidName(
            "Write INBOX in capitals for its subfolders",
        ));
    }
    Ok(())
}

/// The names of `name`'s ancestors, outermost first (`a/b/c` → `a`, `a/b`).
fn ancestors(name: &str) -> Vec<&str> {
    name.match_indices(FOLDER_DELIMITER)
        .map(|(at, _)| &name[..at])
        .collect()
}

/// A UIDVALIDITY for a new folder: the clock in seconds, but above every one the mailbox has
/// used, so a folder deleted and created again under the same name never repeats one.
async fn next_uid_validity(
    tx: &mut Transaction<'_, Postgres>,
    mailbox_id: i64,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT LEAST(GREATEST(extract(epoch FROM now())::bigint % 4294967295,
                               COALESCE(MAX(uid_validity), 0) + 1), 4294967295)
           FROM folders WHERE mailbox_id = $1",
    )
    .bind(mailbox_id)
    .fetch_one(&mut **tx)
    .await
}

/// Inserts one folder row (the mailbox row is locked by the caller).
async fn insert_folder(
    tx: &mut Transaction<'_, Postgres>,
    mailbox_id: i64,
    name: &str,
    special_use: Option<&str>,
) -> Result<Folder, FolderError> {
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM folders WHERE mailbox_id = $1")
        .bind(mailbox_id)
        .fetch_one(&mut **tx)
        .await?;
    if count >= MAX_FOLDERS {
        return Err(FolderError::TooMany);
    }
    let validity = next_uid_validity(tx, mailbox_id).await?;
    let inserted: Result<Folder, sqlx::Error> = sqlx::query_as(&format!(
        "INSERT INTO folders (mailbox_id, name, special_use, uid_validity)
         VALUES ($1, $2, $3, $4) RETURNING {FOLDER_COLUMNS}"
    ))
    .bind(mailbox_id)
    .bind(name)
    .bind(special_use)
    .bind(validity)
    .fetch_one(&mut **tx)
    .await;
    match inserted {
        Ok(folder) => Ok(folder),
        Err(sqlx::Error::Database(db)) if db.is_unique_violation() => Err(match db.constraint() {
            Some("folders_one_per_special_use") => FolderError::SpecialUseTaken,
            _ => FolderError::Exists,
        }),
        Err(other) => Err(other.into()),
    }
}

/// Creates the missing ancestors of `name` (plain folders, subscribed).
async fn create_ancestors(
    tx: &mut Transaction<'_, Postgres>,
    mailbox_id: i64,
    name: &str,
) -> Result<(), FolderError> {
    for parent in ancestors(name) {
        let exists: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM folders WHERE mailbox_id = $1
               AND (name = $2 OR ($2 = 'INBOX' AND special_use = 'inbox'))",
        )
        .bind(mailbox_id)
        .bind(parent)
        .fetch_optional(&mut **tx)
        .await?;
        if exists.is_none() {
            insert_folder(tx, mailbox_id, parent, None).await?;
        }
    }
    Ok(())
}

/// Locks the mailbox row (step 1) or fails with [`FolderError::NotFound`].
async fn lock_mailbox(
    tx: &mut Transaction<'_, Postgres>,
    mailbox_id: i64,
) -> Result<(), FolderError> {
    if lock_mailboxes(tx, &[mailbox_id]).await?.is_empty() {
        return Err(FolderError::NotFound);
    }
    Ok(())
}

/// The folder called `name` (INBOX in any case), locked (step 2).
async fn lock_named(
    tx: &mut Transaction<'_, Postgres>,
    mailbox_id: i64,
    name: &str,
) -> Result<Folder, FolderError> {
    let found: Option<Folder> = sqlx::query_as(&format!(
        "SELECT {FOLDER_COLUMNS} FROM folders WHERE mailbox_id = $1
           AND CASE WHEN upper($2) = 'INBOX' THEN special_use = 'inbox' ELSE name = $2 END
         FOR NO KEY UPDATE"
    ))
    .bind(mailbox_id)
    .bind(name)
    .fetch_optional(&mut **tx)
    .await?;
    found.ok_or(FolderError::NotFound)
}

/// `LIKE` pattern for the descendants of `name`.
fn children_pattern(name: &str) -> String {
    let escaped = name
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("{escaped}{FOLDER_DELIMITER}%")
}

impl Store {
    /// Creates the folder `name` and any missing parents; `special_use` (`archive`, ...) marks
    /// it as RFC 6154 wants. Creating an existing name is [`FolderError::Exists`], even when
    /// it exists only as a parent.
    pub async fn create_folder(
        &self,
        mailbox_id: i64,
        name: &str,
        special_use: Option<&str>,
    ) -> Result<Folder, FolderError> {
        let name = name.strip_suffix(FOLDER_DELIMITER).unwrap_or(name);
        check_folder_name(name)?;
        if name.eq_ignore_ascii_case("INBOX") {
            return Err(FolderError::Exists);
        }
        let mut tx = self.db.begin().await?;
        lock_mailbox(&mut tx, mailbox_id).await?;
        create_ancestors(&mut tx, mailbox_id, name).await?;
        let folder = insert_folder(&mut tx, mailbox_id, name, special_use).await?;
        notify_changed(&mut tx, mailbox_id).await?;
        tx.commit().await?;
        Ok(folder)
    }

    /// Deletes a folder and its messages (their bytes leave the quota; their blobs lose a
    /// reference, for the collector). The inbox and folders with subfolders stay: RFC 3501
    /// lets a server refuse the latter, which keeps every listed folder selectable.
    pub async fn delete_folder(&self, mailbox_id: i64, name: &str) -> Result<(), FolderError> {
        if name.eq_ignore_ascii_case("INBOX") {
            return Err(FolderError::Inbox);
        }
        let mut tx = self.db.begin().await?;
        lock_mailbox(&mut tx, mailbox_id).await?;
        let folder = lock_named(&mut tx, mailbox_id, name).await?;
        let child: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM folders WHERE mailbox_id = $1 AND name LIKE $2 LIMIT 1",
        )
        .bind(mailbox_id)
        .bind(children_pattern(&folder.name))
        .fetch_optional(&mut *tx)
        .await?;
        if child.is_some() {
            return Err(FolderError::HasChildren);
        }
        let removed: Vec<(i64, i64)> =
            sqlx::query_as("DELETE FROM messages WHERE folder_id = $1 RETURNING blob_id, size")
                .bind(folder.id)
                .fetch_all(&mut *tx)
                .await?;
        let size: i64 = removed.iter().map(|(_, size)| size).sum();
        sqlx::query("UPDATE mailboxes SET used_bytes = GREATEST(used_bytes - $2, 0) WHERE id = $1")
            .bind(mailbox_id)
            .bind(size)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM folders WHERE id = $1")
            .bind(folder.id)
            .execute(&mut *tx)
            .await?;
        change_refs(&mut tx, removed.iter().map(|(blob, _)| *blob), -1).await?;
        notify_changed(&mut tx, mailbox_id).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Renames a folder and its subfolders, creating missing parents of the new name. The
    /// inbox is special (RFC 3501 §6.3.5): its messages move into a new folder `to` and the
    /// inbox stays, empty. UIDVALIDITY is kept, so clients keep their caches.
    pub async fn rename_folder(
        &self,
        mailbox_id: i64,
        from: &str,
        to: &str,
    ) -> Result<Folder, FolderError> {
        let to = to.strip_suffix(FOLDER_DELIMITER).unwrap_or(to);
        check_folder_name(to)?;
        if to.eq_ignore_ascii_case("INBOX") {
            return Err(FolderError::Exists);
        }
        let mut tx = self.db.begin().await?;
        lock_mailbox(&mut tx, mailbox_id).await?;
        let folder = lock_named(&mut tx, mailbox_id, from).await?;
        let inbox = folder.special_use.as_deref() == Some("inbox");
        if !inbox && (to == folder.name || to.starts_with(&format!("{}/", folder.name))) {
            return Err(FolderError::InvalidName("A folder cannot move into itself"));
        }
        create_ancestors(&mut tx, mailbox_id, to).await?;
        let renamed = if inbox {
            let target = insert_folder(&mut tx, mailbox_id, to, None).await?;
            move_all(&mut tx, mailbox_id, folder.id, target.id).await?;
            lock_named(&mut tx, mailbox_id, to).await?
        } else {
            let taken: Option<i64> =
                sqlx::query_scalar("SELECT id FROM folders WHERE mailbox_id = $1 AND name = $2")
                    .bind(mailbox_id)
                    .bind(to)
                    .fetch_optional(&mut *tx)
                    .await?;
            if taken.is_some() {
                return Err(FolderError::Exists);
            }
            // The folder and its subfolders in one statement; a name a subfolder would take
            // is a unique violation, reported as Exists.
            let moved = sqlx::query(
                "UPDATE folders SET name = $3 || substr(name, char_length($2) + 1)
                  WHERE mailbox_id = $1 AND (name = $2 OR name LIKE $4)",
            )
            .bind(mailbox_id)
            .bind(&folder.name)
            .bind(to)
            .bind(children_pattern(&folder.name))
            .execute(&mut *tx)
            .await;
            match moved {
                Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                    return Err(FolderError::Exists);
                }
                other => other?,
            };
            lock_named(&mut tx, mailbox_id, to).await?
        };
        notify_changed(&mut tx, mailbox_id).await?;
        tx.commit().await?;
        Ok(renamed)
    }

    /// Sets whether a folder is subscribed; `false` when there is no such folder.
    pub async fn set_subscribed(
        &self,
        mailbox_id: i64,
        name: &str,
        subscribed: bool,
    ) -> Result<bool, StoreError> {
        let changed = sqlx::query(
            "UPDATE folders SET subscribed = $3 WHERE mailbox_id = $1
               AND CASE WHEN upper($2) = 'INBOX' THEN special_use = 'inbox' ELSE name = $2 END",
        )
        .bind(mailbox_id)
        .bind(name)
        .bind(subscribed)
        .execute(&self.db)
        .await?;
        Ok(changed.rows_affected() > 0)
    }
}

/// Moves every message of `from` into `to` (same mailbox, both locked) under new UIDs in
/// ascending order; blobs and quota do not change.
async fn move_all(
    tx: &mut Transaction<'_, Postgres>,
    mailbox_id: i64,
    from: i64,
    to: i64,
) -> Result<(), FolderError> {
    let ids: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM messages WHERE folder_id = $1 ORDER BY uid FOR UPDATE")
            .bind(from)
            .fetch_all(&mut **tx)
            .await?;
    if ids.is_empty() {
        return Ok(());
    }
    let count = i64::try_from(ids.len()).unwrap_or(i64::MAX);
    let taken = take_uids(tx, mailbox_id, Some(to), count)
        .await?
        .ok_or(FolderError::NotFound)?;
    sqlx::query(
        "UPDATE messages m SET folder_id = $2, uid = $3 + n.ord - 1, modseq = $4
           FROM unnest($1::bigint[]) WITH ORDINALITY AS n(id, ord)
          WHERE m.id = n.id",
    )
    .bind(&ids)
    .bind(to)
    .bind(taken.first_uid)
    .bind(taken.modseq)
    .execute(&mut **tx)
    .await?;
    sqlx::query("UPDATE folders SET highest_modseq = highest_modseq + 1 WHERE id = $1")
        .bind(from)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_names() {
        for ok in ["Work", "Work/2024", "INBOX/Sub", "Ünïcode &AOQ-", "a b"] {
            assert!(check_folder_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a//b", "/a", "a*", "b%", "inbox/x", "x\ny"] {
            assert!(check_folder_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_folder_name("a/".repeat(40).trim_end_matches('/')).is_err());
        assert!(check_folder_name(&"x".repeat(600)).is_err());
    }

    #[test]
    fn ancestors_outermost_first() {
        assert_eq!(ancestors("a/b/c"), vec!["a", "a/b"]);
        assert!(ancestors("a").is_empty());
        assert_eq!(children_pattern("a_b%"), "a\\_b\\%/%");
    }
}

//! The record of messages a user moved into or out of Junk, for the spam filter's training
//! (table `junk_events`, migration 0007). Written in the transaction that files the message,
//! so an event exists exactly when the move happened, on whichever pod it ran.

use chrono::{DateTime, Utc};
use sqlx::{Postgres, Transaction};

use super::{Store, StoreError};

/// Which way a message crossed the Junk folder's boundary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JunkDirection {
    /// Into Junk: the user says it is spam.
    In,
    /// Out of Junk: the user says it is not.
    Out,
}

impl JunkDirection {
    fn as_str(self) -> &'static str {
        match self {
            Self::In => "in",
            Self::Out => "out",
        }
    }

    /// The direction of a transfer from `from` to `to` (special uses), if it crosses Junk.
    pub fn of_transfer(from: Option<&str>, to: Option<&str>) -> Option<Self> {
        match (from == Some("junk"), to == Some("junk")) {
            (false, true) => Some(Self::In),
            (true, false) => Some(Self::Out),
            _ => None,
        }
    }
}

/// One recorded move.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JunkEvent {
    pub id: i64,
    pub mailbox_id: i64,
    /// The message as it is filed now (in Junk for `In`, outside it for `Out`).
    pub message_id: i64,
    pub direction: JunkDirection,
    pub at: DateTime<Utc>,
}

/// Records that the messages `uids` now in `folder_id` crossed Junk in `direction`.
pub(super) async fn record(
    tx: &mut Transaction<'_, Postgres>,
    folder_id: i64,
    uids: &[i64],
    direction: JunkDirection,
) -> Result<(), sqlx::Error> {
    if uids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO junk_events (mailbox_id, message_id, direction)
         SELECT mailbox_id, id, $3 FROM messages WHERE folder_id = $1 AND uid = ANY($2)
          ORDER BY uid",
    )
    .bind(folder_id)
    .bind(uids)
    .bind(direction.as_str())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Records a transfer of `uids` (their UIDs in `to`) from folder `from` when it crosses Junk.
pub(super) async fn record_transfer(
    tx: &mut Transaction<'_, Postgres>,
    from: Option<i64>,
    to: i64,
    uids: &[i64],
) -> Result<(), sqlx::Error> {
    let from_use = match from {
        Some(id) => special_use(tx, id).await?,
        None => None,
    };
    let to_use = special_use(tx, to).await?;
    match JunkDirection::of_transfer(from_use.as_deref(), to_use.as_deref()) {
        Some(direction) => record(tx, to, uids, direction).await,
        None => Ok(()),
    }
}

/// The special use of a folder, read inside the transaction that holds its lock.
pub(super) async fn special_use(
    tx: &mut Transaction<'_, Postgres>,
    folder_id: i64,
) -> Result<Option<String>, sqlx::Error> {
    Ok(
        sqlx::query_scalar::<_, Option<String>>("SELECT special_use FROM folders WHERE id = $1")
            .bind(folder_id)
            .fetch_optional(&mut **tx)
            .await?
            .flatten(),
    )
}

impl Store {
    /// Up to `limit` events after event id `after`, oldest first: what a trainer reads.
    pub async fn junk_events(&self, after: i64, limit: i64) -> Result<Vec<JunkEvent>, StoreError> {
        let rows: Vec<(i64, i64, i64, String, DateTime<Utc>)> = sqlx::query_as(
            "SELECT id, mailbox_id, message_id, direction, created_at FROM junk_events
              WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.db)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, mailbox_id, message_id, direction, at)| JunkEvent {
                id,
                mailbox_id,
                message_id,
                direction: if direction == "in" {
                    JunkDirection::In
                } else {
                    JunkDirection::Out
                },
                at,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directions() {
        let of = JunkDirection::of_transfer;
        assert_eq!(of(Some("inbox"), Some("junk")), Some(JunkDirection::In));
        assert_eq!(of(None, Some("junk")), Some(JunkDirection::In));
        assert_eq!(of(Some("junk"), None), Some(JunkDirection::Out));
        assert_eq!(of(Some("junk"), Some("trash")), Some(JunkDirection::Out));
        assert_eq!(of(Some("junk"), Some("junk")), None);
        assert_eq!(of(None, Some("sent")), None);
    }
}

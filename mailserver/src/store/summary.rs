//! Cached header summaries: the fields SEARCH reads most, kept per message in the `envelope`
//! column so a later SEARCH needs no body. Filled lazily by the first SEARCH that reads a
//! message (delivery writes nothing here); a value of another shape is never misread.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use sqlx::types::Json;

use super::{Store, StoreError};

/// What marks a summary of this shape in the column.
pub const SUMMARY_KIND: &str = "headers-v1";

/// Header fields of a message's top-level header.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderSummary {
    /// Always [`SUMMARY_KIND`].
    pub kind: String,
    /// The raw values (folding kept) of each field, by lower-case field name.
    pub fields: BTreeMap<String, Vec<String>>,
    /// The Date header as a Unix time, when it parses.
    pub sent: Option<i64>,
}

impl Store {
    /// The summaries cached for messages of a folder, by message id.
    pub async fn header_summaries(
        &self,
        folder_id: i64,
    ) -> Result<HashMap<i64, HeaderSummary>, StoreError> {
        let rows: Vec<(i64, Json<serde_json::Value>)> = sqlx::query_as(
            "SELECT id, envelope FROM messages WHERE folder_id = $1 AND envelope->>'kind' = $2",
        )
        .bind(folder_id)
        .bind(SUMMARY_KIND)
        .fetch_all(&self.db)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, Json(value))| Some((id, serde_json::from_value(value).ok()?)))
            .collect())
    }

    /// Caches a message's summary unless the column already holds something.
    pub async fn save_header_summary(
        &self,
        message_id: i64,
        summary: &HeaderSummary,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE messages SET envelope = $2 WHERE id = $1 AND envelope IS NULL")
            .bind(message_id)
            .bind(Json(summary))
            .execute(&self.db)
            .await?;
        Ok(())
    }
}

//! The life of a body in the blob store: staged, referenced, released, collected.
//!
//! Bodies are content-addressed, so a delivery may re-use the object of a blob that the
//! collector is about to delete. The protocol that keeps them apart:
//!
//! 1. **Stage** ([`stage`]): before its object is written, the blob's row exists (refcount
//!    unchanged, `zero_since` restarted when unreferenced). A put that fails, or a delivery
//!    whose transaction fails, leaves a row with refcount 0: an orphan that will be collected,
//!    never an object that nothing knows about.
//! 2. **Confirm** ([`confirm`]): the delivering transaction first takes a `KEY SHARE` lock on
//!    the staged rows; a row that is gone was collected meanwhile (maybe after our put), so the
//!    delivery stages and puts again.
//! 3. **Collect** ([`Store::collect_garbage`]): rows with refcount 0 unreferenced for longer than
//!    the grace period are locked (`FOR UPDATE SKIP LOCKED`: it never waits, so it is in no lock
//!    cycle), deleted, their objects deleted, and only then committed. While it holds a row, a
//!    delivery can neither confirm it nor re-stage it; once it committed, the row is gone and a
//!    delivery stages a new one and puts the object again.
//!
//! One gap is left: when the collector's COMMIT itself fails after its object deletions
//! succeeded, the rows stay without their objects, and a delivery that staged and put one of
//! those bodies before the run would then confirm the row and point at a missing object. It
//! takes a lost COMMIT right after successful deletes (both happen within one batch).

use std::collections::BTreeMap;
use std::time::Duration;

use mail_blobstore::{BlobError, BlobSource};
use sqlx::{Postgres, Transaction};
use tracing::{info, warn};

use super::{Store, StoreError};

/// A blob row made ready for a delivery by [`stage`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Staged {
    pub id: i64,
}

/// Records that `bucket/key` is about to be written and writes its object unless a committed
/// reference proves it is there already.
pub(crate) async fn stage(
    store: &Store,
    bucket: &str,
    key: &str,
    source: &BlobSource,
) -> Result<Staged, StoreError> {
    let size = i64::try_from(source.len()).unwrap_or(i64::MAX);
    let (id, refcount): (i64, i64) = sqlx::query_as(
        "INSERT INTO blobs (bucket, key, size, refcount) VALUES ($1, $2, $3, 0)
         ON CONFLICT (bucket, key) DO UPDATE SET zero_since = now()
         RETURNING id, refcount",
    )
    .bind(bucket)
    .bind(key)
    .bind(size)
    .fetch_one(&store.db)
    .await?;
    // A reference was committed, so its object was durable; [`confirm`] makes sure the row
    // (and so the object) is still there when ours is added.
    if refcount == 0 {
        store.blobs.put_source(bucket, key, source).await?;
    }
    Ok(Staged { id })
}

/// Locks the staged rows against the collector for the rest of the transaction; `false` when
/// one of them was collected since it was staged (the caller stages again).
pub(crate) async fn confirm(
    tx: &mut Transaction<'_, Postgres>,
    staged: &[Staged],
) -> Result<bool, StoreError> {
    let mut ids: Vec<i64> = staged.iter().map(|s| s.id).collect();
    ids.sort_unstable();
    ids.dedup();
    let found: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM blobs WHERE id = ANY($1) ORDER BY id FOR KEY SHARE")
            .bind(&ids)
            .fetch_all(&mut **tx)
            .await?;
    Ok(found.len() == ids.len())
}

/// Adds (`sign` 1) or drops (`sign` -1) one reference per occurrence of a blob id, locking the
/// rows in ascending id order: blobs are the last locks of the store's lock order.
pub(crate) async fn change_refs(
    tx: &mut Transaction<'_, Postgres>,
    blob_ids: impl IntoIterator<Item = i64>,
    sign: i64,
) -> Result<(), StoreError> {
    let mut counts: BTreeMap<i64, i64> = BTreeMap::new();
    for id in blob_ids {
        *counts.entry(id).or_default() += sign;
    }
    if counts.is_empty() {
        return Ok(());
    }
    let (ids, deltas): (Vec<i64>, Vec<i64>) = counts.into_iter().unzip();
    sqlx::query("SELECT id FROM blobs WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE")
        .bind(&ids)
        .execute(&mut **tx)
        .await?;
    sqlx::query(
        "UPDATE blobs SET refcount = blobs.refcount + d.delta
           FROM unnest($1::bigint[], $2::bigint[]) AS d(id, delta)
          WHERE blobs.id = d.id",
    )
    .bind(&ids)
    .bind(&deltas)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// What one run of the collector removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Collected {
    pub blobs: u64,
    pub bytes: u64,
}

/// How often each process runs the collector.
pub const COLLECT_EVERY: Duration = Duration::from_secs(5 * 60);
/// How long a blob stays unreferenced (or staged) before it is collected. Safety does not
/// depend on it (see the module's protocol); it spares re-uploads of bodies staged by
/// deliveries still in flight, and leaves time to notice a mistake.
pub const COLLECT_GRACE: Duration = Duration::from_secs(15 * 60);

/// Rows the collector takes in one transaction.
const BATCH: i64 = 100;

impl Store {
    /// Deletes the objects and rows of blobs unreferenced for at least `grace`, in batches,
    /// until none is left. Safe against deliveries re-using a key at the same moment (see the
    /// module's protocol); a batch whose object deletion fails is rolled back and retried on
    /// the next run.
    pub async fn collect_garbage(&self, grace: Duration) -> Result<Collected, StoreError> {
        let mut total = Collected::default();
        // One cutoff for the whole run: a body staged after the run began is never taken by
        // it, so a delivery loses its staged body to one run at most once.
        let cutoff: chrono::DateTime<chrono::Utc> =
            sqlx::query_scalar("SELECT now() - make_interval(secs => $1)")
                .bind(grace.as_secs_f64())
                .fetch_one(&self.db)
                .await?;
        loop {
            let mut tx = self.db.begin().await?;
            let rows: Vec<(i64, String, String, i64)> = sqlx::query_as(
                "SELECT id, bucket, key, size FROM blobs
                  WHERE refcount = 0
                    AND zero_since <= $1
                  ORDER BY zero_since
                  LIMIT $2
                  FOR UPDATE SKIP LOCKED",
            )
            .bind(cutoff)
            .bind(BATCH)
            .fetch_all(&mut *tx)
            .await?;
            if rows.is_empty() {
                return Ok(total);
            }
            let ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
            // The row first, the object next, the commit last: the lock is held throughout.
            sqlx::query("DELETE FROM blobs WHERE id = ANY($1) AND refcount = 0")
                .bind(&ids)
                .execute(&mut *tx)
                .await?;
            for (_, bucket, key, size) in &rows {
                match self.blobs.delete(bucket, key).await {
                    // The domain was deleted with its bucket: the object is gone already.
                    Ok(()) | Err(BlobError::NoSuchBucket(_)) => {}
                    Err(error) => return Err(error.into()),
                }
                total.blobs += 1;
                total.bytes += u64::try_from(*size).unwrap_or(0);
            }
            tx.commit().await?;
        }
    }

    /// Runs [`Store::collect_garbage`] every [`COLLECT_EVERY`] with [`COLLECT_GRACE`], for as
    /// long as the process lives. Every pod may run one: they skip each other's rows.
    pub fn spawn_collector(&self) -> tokio::task::JoinHandle<()> {
        let (every, grace) = (COLLECT_EVERY, COLLECT_GRACE);
        let store = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                match store.collect_garbage(grace).await {
                    Ok(done) if done.blobs > 0 => {
                        info!(
                            blobs = done.blobs,
                            bytes = done.bytes,
                            "unreferenced blobs collected"
                        );
                    }
                    Ok(_) => {}
                    Err(error) => warn!(%error, "blob collection failed; retried next run"),
                }
            }
        })
    }
}

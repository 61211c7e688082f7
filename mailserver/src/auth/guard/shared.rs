//! The guard's state shared by every pod, in PostgreSQL (`migrations/0004_login_guard.sql`).
//! Times are the database's (`now()`), so pods with skewed clocks agree.

use std::time::Duration;

use sqlx::PgPool;

use super::policy::GuardSettings;

/// Records one failed login and returns the failures in the window, this one included: of the
/// client network and of the account (each when it is counted).
pub async fn record_failure(
    db: &PgPool,
    network: Option<&str>,
    account: Option<&str>,
    window: Duration,
) -> Result<(u64, u64), sqlx::Error> {
    // The counts read the table as it was before this statement's insert: add this one.
    let (by_network, by_account): (i64, i64) = sqlx::query_as(
        "WITH added AS (
             INSERT INTO login_failures (kind, subject)
             SELECT kind, subject FROM (VALUES ('network', $1::text), ('account', $2::text))
                 AS v(kind, subject)
              WHERE subject IS NOT NULL
         )
         SELECT (SELECT count(*) FROM login_failures
                  WHERE kind = 'network' AND subject = $1
                    AND at > now() - make_interval(secs => $3)),
                (SELECT count(*) FROM login_failures
                  WHERE kind = 'account' AND subject = $2
                    AND at > now() - make_interval(secs => $3))",
    )
    .bind(network)
    .bind(account)
    .bind(window.as_secs_f64())
    .fetch_one(db)
    .await?;
    let network_count = match network {
        Some(_) => by_network as u64 + 1,
        None => 0,
    };
    let account_count = match account {
        Some(_) => by_account as u64 + 1,
        None => 0,
    };
    Ok((network_count, account_count))
}

/// Failed logins for `account` in the window.
pub async fn account_failures(
    db: &PgPool,
    account: &str,
    window: Duration,
) -> Result<u64, sqlx::Error> {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM login_failures
          WHERE kind = 'account' AND subject = $1 AND at > now() - make_interval(secs => $2)",
    )
    .bind(account)
    .bind(window.as_secs_f64())
    .fetch_one(db)
    .await?;
    Ok(n as u64)
}

/// A ban written (or found in force).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Banned {
    pub left: Duration,
    /// Which ban of this network it is (1 for the first).
    pub repeats: u32,
}

/// Bans `network`: the next ban of a repeat offender (its last ban still remembered) is
/// longer. A ban already in force is left as it is. Its failures are forgotten, so after the
/// ban a fresh run of failures is needed for the next one.
pub async fn ban(
    db: &PgPool,
    network: &str,
    settings: &GuardSettings,
    reason: &str,
) -> Result<Banned, sqlx::Error> {
    let mut tx = db.begin().await?;
    let current: Option<(i32, f64)> = sqlx::query_as(
        "SELECT repeats, EXTRACT(EPOCH FROM until - now())::float8
           FROM login_bans WHERE network = $1::cidr FOR UPDATE",
    )
    .bind(network)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some((repeats, left)) = current
        && left > 0.0
    {
        tx.commit().await?;
        return Ok(Banned {
            left: Duration::from_secs_f64(left),
            repeats: repeats.max(1) as u32,
        });
    }
    let repeats = current.map_or(1, |(r, _)| r.max(0) as u32 + 1);
    let left = settings.ban_duration(repeats);
    sqlx::query(
        "INSERT INTO login_bans (network, until, repeats, reason, banned_at)
         VALUES ($1::cidr, now() + make_interval(secs => $2), $3, $4, now())
         ON CONFLICT (network) DO UPDATE
            SET until = EXCLUDED.until, repeats = EXCLUDED.repeats,
                reason = EXCLUDED.reason, banned_at = EXCLUDED.banned_at",
    )
    .bind(network)
    .bind(left.as_secs_f64())
    .bind(repeats as i32)
    .bind(reason)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM login_failures WHERE kind = 'network' AND subject = $1")
        .bind(network)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Banned { left, repeats })
}

/// The bans in force: network and time left.
pub async fn active_bans(db: &PgPool) -> Result<Vec<(String, Duration)>, sqlx::Error> {
    let rows: Vec<(String, f64)> = sqlx::query_as(
        "SELECT network::text, EXTRACT(EPOCH FROM until - now())::float8
           FROM login_bans WHERE until > now()",
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(network, left)| (network, Duration::from_secs_f64(left.max(0.0))))
        .collect())
}

/// Deletes what no longer counts: failures older than the window, bans ended longer ago than
/// the longest ban (their repeat count is forgotten), sender counts older than an hour.
pub async fn clean_up(db: &PgPool, settings: &GuardSettings) -> Result<u64, sqlx::Error> {
    let failures =
        sqlx::query("DELETE FROM login_failures WHERE at < now() - make_interval(secs => $1)")
            .bind(settings.window.as_secs_f64())
            .execute(db)
            .await?
            .rows_affected();
    let bans =
        sqlx::query("DELETE FROM login_bans WHERE until < now() - make_interval(secs => $1)")
            .bind(settings.ban_max.as_secs_f64())
            .execute(db)
            .await?
            .rows_affected();
    let senders = sqlx::query(
        "DELETE FROM sender_counts WHERE minute < date_trunc('minute', now()) - interval '1 hour'",
    )
    .execute(db)
    .await?
    .rows_affected();
    Ok(failures + bans + senders)
}

/// Counts one message from `account` unless it already sent `limit` in the last hour (60
/// one-minute buckets); true when the message may go. Pods racing may overshoot by a few.
pub async fn count_message(db: &PgPool, account: &str, limit: u32) -> Result<bool, sqlx::Error> {
    let (_, counted): (i64, bool) = sqlx::query_as(
        "WITH used AS (
             SELECT COALESCE(sum(messages), 0)::int8 AS n FROM sender_counts
              WHERE account = $1 AND minute > date_trunc('minute', now()) - interval '1 hour'
         ), added AS (
             INSERT INTO sender_counts (account, minute, messages)
             SELECT $1, date_trunc('minute', now()), 1 WHERE (SELECT n FROM used) < $2
             ON CONFLICT (account, minute)
                 DO UPDATE SET messages = sender_counts.messages + 1
             RETURNING 1
         )
         SELECT (SELECT n FROM used), EXISTS (SELECT 1 FROM added)",
    )
    .bind(account)
    .bind(i64::from(limit))
    .fetch_one(db)
    .await?;
    Ok(counted)
}

//! The configured directories by name, what the rest of the server asks of them (who owns an
//! address, a mailbox row for a directory user), and the sweep that disables the mailboxes of
//! users who left their directory.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;

use super::LdapDirectory;
use super::cache::LookupCache;
use super::settings::Resolved;
use crate::auth::source::{CredentialSource, Identity, Lookup};

/// Key of the PostgreSQL advisory lock that lets one pod at a time sweep.
const SWEEP_LOCK: i64 = 0x6c64_6170_7377; // "ldapsw"

/// Every configured directory.
pub struct Directories {
    by_name: HashMap<String, Arc<LdapDirectory>>,
    lookups: LookupCache,
}

/// What one sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    /// Directory mailboxes looked up.
    pub checked: usize,
    /// Mailboxes disabled (or deleted, under reclaimPolicy Delete) because their user is gone.
    pub disabled: Vec<String>,
    /// False when another pod held the sweep lock.
    pub ran: bool,
}

impl Directories {
    pub fn new(directories: Vec<Resolved>) -> Self {
        let ttl = directories
            .iter()
            .map(|d| d.settings.lookup_cache_seconds)
            .min()
            .unwrap_or(30);
        Self {
            by_name: directories
                .into_iter()
                .map(|r| (r.settings.name.clone(), Arc::new(LdapDirectory::new(r))))
                .collect(),
            lookups: LookupCache::new(Duration::from_secs(ttl), 10_000),
        }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<LdapDirectory>> {
        self.by_name.get(name)
    }

    /// The directory for a mailbox whose `auth_source` is `ldap` but whose domain names none:
    /// the only one configured.
    pub fn only(&self) -> Option<&Arc<LdapDirectory>> {
        match self.by_name.len() {
            1 => self.by_name.values().next(),
            _ => None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Who owns `address` in the directory `name`, answered from a short cache when asked
    /// lately (an outage is never cached).
    pub async fn lookup(&self, name: &str, address: &str) -> Lookup {
        let Some(directory) = self.get(name) else {
            return Lookup::Unavailable(format!("directory {name:?} is not configured"));
        };
        let key = format!("{name}\0{address}");
        if let Some(answer) = self.lookups.get(&key) {
            return answer.map_or(Lookup::NotFound, Lookup::Found);
        }
        let answer = directory.lookup(address).await;
        match &answer {
            Lookup::Found(identity) => self.lookups.put(&key, Some(identity.clone())),
            Lookup::NotFound => self.lookups.put(&key, None),
            Lookup::Unavailable(_) => {}
        }
        answer
    }

    /// Checks every active directory mailbox against its directory and disables those whose
    /// user is gone, as their domain's reclaimPolicy says. One pod at a time (an advisory
    /// lock); a directory that cannot be reached disables nothing.
    pub async fn sweep(&self, pool: &PgPool) -> Result<SweepReport, sqlx::Error> {
        let mut conn = pool.acquire().await?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(SWEEP_LOCK)
            .fetch_one(&mut *conn)
            .await?;
        let mut report = SweepReport::default();
        if !locked {
            return Ok(report);
        }
        report.ran = true;
        let result = self.sweep_locked(pool, &mut report).await;
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(SWEEP_LOCK)
            .execute(&mut *conn)
            .await?;
        result.map(|()| report)
    }

    async fn sweep_locked(
        &self,
        pool: &PgPool,
        report: &mut SweepReport,
    ) -> Result<(), sqlx::Error> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT m.address, m.directory FROM mailboxes m JOIN domains d ON d.id = m.domain_id
              WHERE m.directory IS NOT NULL AND m.deleted_at IS NULL AND d.deleted_at IS NULL
              ORDER BY m.id",
        )
        .fetch_all(pool)
        .await?;
        for (address, name) in rows {
            let Some(directory) = self.get(&name) else {
                continue;
            };
            report.checked += 1;
            match directory.lookup(&address).await {
                Lookup::Found(_) => {}
                Lookup::NotFound => {
                    if disable_mailbox(pool, &address).await? {
                        report.disabled.push(address);
                    }
                }
                Lookup::Unavailable(why) => {
                    tracing::warn!(
                        directory = name,
                        why,
                        "directory sweep stopped: unavailable"
                    );
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Sweeps every `interval` until the returned task is aborted.
    pub fn spawn_sweeper(self: Arc<Self>, pool: PgPool, interval: Duration) -> SweeperTask {
        SweeperTask(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                match self.sweep(&pool).await {
                    Ok(report) if !report.disabled.is_empty() => {
                        tracing::info!(disabled = ?report.disabled, "directory users gone: mailboxes disabled");
                    }
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "directory sweep failed"),
                }
            }
        }))
    }
}

/// The sweeper; stops when dropped.
pub struct SweeperTask(tokio::task::JoinHandle<()>);

impl Drop for SweeperTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Disables a mailbox a directory created, as its domain's reclaimPolicy says; false when it
/// was not an active directory mailbox (a Mailbox resource took it over meanwhile).
pub async fn disable_mailbox(pool: &PgPool, address: &str) -> Result<bool, sqlx::Error> {
    let directory_row: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM mailboxes
                         WHERE address = $1 AND directory IS NOT NULL AND deleted_at IS NULL)",
    )
    .bind(address)
    .fetch_one(pool)
    .await?;
    if !directory_row {
        return Ok(false);
    }
    match mail_provision::delete_mailbox(pool, address).await {
        Ok(_) => Ok(true),
        Err(mail_provision::Error::Database(e)) => Err(e),
        Err(other) => {
            tracing::warn!(address, error = %other, "disabling a directory mailbox failed");
            Ok(false)
        }
    }
}

/// A mailbox for a directory user, created (with its standard folders) when missing in a
/// domain the directory `directory` backs: `(mailbox id, address)`. A mailbox of the same
/// address from a Mailbox resource wins and is returned as it is. `None` when the user's
/// address is in no domain this directory backs, or the mailbox was disabled by its resource.
pub async fn directory_mailbox(
    pool: &PgPool,
    directory: &str,
    identity: &Identity,
) -> Result<Option<(i64, String)>, sqlx::Error> {
    let address = identity.address.to_lowercase();
    let Some((_, domain)) = address.rsplit_once('@') else {
        return Ok(None);
    };
    let mut tx = pool.begin().await?;
    let existing: Option<(i64, bool, bool)> = sqlx::query_as(
        "SELECT id, directory IS NULL, deleted_at IS NOT NULL FROM mailboxes
          WHERE address = $1 FOR UPDATE",
    )
    .bind(&address)
    .fetch_optional(&mut *tx)
    .await?;
    let id = match existing {
        // A Mailbox resource's row: served as it is, or not at all when deleted.
        Some((id, true, false)) => return Ok(Some((id, address))),
        Some((_, true, true)) => return Ok(None),
        Some((id, false, deleted)) => {
            // Ours: keep the directory's quota and name current; revive a returning user.
            let updated: Option<i64> = sqlx::query_scalar(
                "UPDATE mailboxes m SET display_name = $2,
                        quota_bytes = COALESCE($3, d.directory_quota_bytes),
                        deleted_at = NULL, updated_at = now()
                   FROM domains d
                  WHERE m.id = $1 AND d.id = m.domain_id AND d.directory = $4
                    AND d.deleted_at IS NULL
                    AND (m.deleted_at IS NOT NULL OR m.display_name IS DISTINCT FROM $2
                         OR m.quota_bytes <> COALESCE($3, d.directory_quota_bytes))
                  RETURNING m.id",
            )
            .bind(id)
            .bind(&identity.display_name)
            .bind(identity.quota_bytes)
            .bind(directory)
            .fetch_optional(&mut *tx)
            .await?;
            if deleted && updated.is_none() {
                return Ok(None);
            }
            id
        }
        None => {
            let inserted: Option<i64> = sqlx::query_scalar(
                "INSERT INTO mailboxes (domain_id, address, display_name, quota_bytes,
                                        auth_source, directory)
                 SELECT id, $1, $2, COALESCE($3, directory_quota_bytes), 'ldap', directory
                   FROM domains WHERE name = $4 AND directory = $5 AND deleted_at IS NULL
                 ON CONFLICT (address) DO NOTHING
                 RETURNING id",
            )
            .bind(&address)
            .bind(&identity.display_name)
            .bind(identity.quota_bytes)
            .bind(domain)
            .bind(directory)
            .fetch_optional(&mut *tx)
            .await?;
            match inserted {
                Some(id) => id,
                // Not a domain of this directory, or a first delivery and a first login
                // racing: the other one's row is committed by now.
                None => {
                    let raced: Option<i64> = sqlx::query_scalar(
                        "SELECT id FROM mailboxes WHERE address = $1 AND deleted_at IS NULL",
                    )
                    .bind(&address)
                    .fetch_optional(&mut *tx)
                    .await?;
                    return Ok(raced.map(|id| (id, address)));
                }
            }
        }
    };
    mail_provision::ensure_folders(&mut tx, id).await?;
    tx.commit().await?;
    Ok(Some((id, address)))
}

//! The local credential source: the password hash in the mailbox's PostgreSQL row, in any
//! scheme `schemes.rs` verifies. A right password with an old scheme is rehashed to argon2id,
//! and the SCRAM-SHA-256 keys are written the first time, so SCRAM works from then on.

use std::sync::Arc;

use sqlx::PgPool;
use tracing::{info, warn};

use super::hasher::Hasher;
use super::sasl::ScramKeys;
use super::schemes;
use super::source::{CredentialSource, Identity, Lookup, SourceFuture, Verdict};
use crate::store::normalize_address;

/// Verified against when the user is unknown or has no local password, so that an unknown
/// user costs as much time as a wrong password and logins cannot be used to probe for
/// addresses. (The same parameters as new hashes.)
pub(super) const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$8gTcVbr6PM4Tx0FKnhGdCikhp3o5yNvDTV3AvEMe+cY";

/// What this source may do besides checking.
#[derive(Clone, Copy, Debug)]
pub struct LocalOptions {
    /// `{PLAIN}`/`{CLEAR}` hashes match (off: they never do).
    pub allow_plaintext_hashes: bool,
    /// Rewrite a right password's hash as argon2id when it is in another scheme.
    pub rehash: bool,
}

/// The password hashes in `mailboxes`.
pub struct LocalSource {
    db: PgPool,
    hasher: Arc<Hasher>,
    options: LocalOptions,
}

/// A mailbox row as the check reads it: id, address, password hash, SCRAM keys.
type Row = (i64, String, Option<String>, Option<String>);

/// What the pool answers for one check.
struct Checked {
    ok: bool,
    /// A new argon2id hash to store (rehash).
    rehashed: Option<String>,
    /// SCRAM keys to store (none were there).
    scram: Option<String>,
}

impl LocalSource {
    pub(super) fn new(db: PgPool, hasher: Arc<Hasher>, options: LocalOptions) -> Self {
        Self {
            db,
            hasher,
            options,
        }
    }

    async fn check(&self, login: &str, password: &str) -> Verdict {
        let address = normalize_address(login);
        let row: Result<Option<Row>, _> = sqlx::query_as(
            "SELECT m.id, m.address, m.password_hash, m.scram_sha256
                   FROM mailboxes m JOIN domains d ON d.id = m.domain_id
                  WHERE m.address = $1 AND m.deleted_at IS NULL AND d.deleted_at IS NULL",
        )
        .bind(&address)
        .fetch_optional(&self.db)
        .await;
        let row = match row {
            Ok(row) => row,
            Err(err) => return Verdict::Unavailable(format!("database: {err}")),
        };
        let (known, hash, has_scram) = match &row {
            Some((_, _, Some(hash), scram)) => (true, hash.clone(), scram.is_some()),
            _ => (false, DUMMY_HASH.to_string(), true),
        };
        let options = self.options;
        let password = password.to_string();
        let stored = hash.clone();
        // Verification, and the rehash after it, take tens of milliseconds of CPU: on the
        // capped pool, never on the async workers.
        let checked = self
            .hasher
            .run(move |memory| {
                let ok =
                    schemes::verify(&stored, &password, options.allow_plaintext_hashes, memory);
                let rehashed = (ok && known && options.rehash && !schemes::is_current(&stored))
                    .then(|| schemes::hash_argon2id(&password))
                    .flatten();
                let scram =
                    (ok && known && !has_scram).then(|| ScramKeys::generate(&password).to_stored());
                Checked {
                    ok,
                    rehashed,
                    scram,
                }
            })
            .await;
        let Some(checked) = checked else {
            return Verdict::Unavailable("password pool stopped".to_string());
        };
        let Some((id, address, _, _)) = row.filter(|_| known) else {
            return Verdict::Unknown;
        };
        if !checked.ok {
            return Verdict::Rejected;
        }
        if checked.rehashed.is_some() || checked.scram.is_some() {
            self.upgrade(id, &address, &hash, checked).await;
        }
        Verdict::Verified(Identity {
            address,
            ..Identity::default()
        })
    }

    /// Stores the rehash and the SCRAM keys, unless the hash changed meanwhile (a new password
    /// provisioned since). Best effort: the login goes on either way.
    async fn upgrade(&self, id: i64, address: &str, old_hash: &str, checked: Checked) {
        let result = sqlx::query(
            "UPDATE mailboxes
                SET password_hash = COALESCE($3, password_hash),
                    scram_sha256 = COALESCE($4, scram_sha256)
              WHERE id = $1 AND password_hash = $2",
        )
        .bind(id)
        .bind(old_hash)
        .bind(&checked.rehashed)
        .bind(&checked.scram)
        .execute(&self.db)
        .await;
        match result {
            Ok(_) if checked.rehashed.is_some() => {
                info!(user = ?address, "password rehashed to argon2id");
            }
            Ok(_) => {}
            Err(err) => warn!(user = ?address, %err, "cannot store the upgraded password hash"),
        }
    }

    /// The stored SCRAM-SHA-256 keys of `login`; `None` for an unknown user or one without
    /// keys (or with unusable ones).
    pub(super) async fn scram_keys(&self, login: &str) -> Result<Option<ScramKeys>, sqlx::Error> {
        let keys: Option<Option<String>> = sqlx::query_scalar(
            "SELECT m.scram_sha256
               FROM mailboxes m JOIN domains d ON d.id = m.domain_id
              WHERE m.address = $1 AND m.deleted_at IS NULL AND d.deleted_at IS NULL
                AND m.password_hash IS NOT NULL",
        )
        .bind(normalize_address(login))
        .fetch_optional(&self.db)
        .await?;
        Ok(keys
            .flatten()
            .and_then(|text| ScramKeys::from_stored(&text)))
    }
}

impl CredentialSource for LocalSource {
    fn name(&self) -> &'static str {
        "local"
    }

    fn verify<'a>(&'a self, login: &'a str, password: &'a str) -> SourceFuture<'a, Verdict> {
        Box::pin(self.check(login, password))
    }

    fn lookup<'a>(&'a self, address: &'a str) -> SourceFuture<'a, Lookup> {
        Box::pin(async move {
            let found: Result<Option<String>, _> = sqlx::query_scalar(
                "SELECT m.address FROM mailboxes m JOIN domains d ON d.id = m.domain_id
                  WHERE m.address = $1 AND m.deleted_at IS NULL AND d.deleted_at IS NULL",
            )
            .bind(normalize_address(address))
            .fetch_optional(&self.db)
            .await;
            match found {
                Ok(Some(address)) => Lookup::Found(Identity {
                    address,
                    ..Identity::default()
                }),
                Ok(None) => Lookup::NotFound,
                Err(err) => Lookup::Unavailable(format!("database: {err}")),
            }
        })
    }
}

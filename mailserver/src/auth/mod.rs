//! Who may log in: the argon2id password hash kept in PostgreSQL. (LDAP comes first in front
//! of it once the directory is wired in; this is the local source and the fallback.)

pub mod guard;
mod hasher;
pub mod ldap;
pub mod source;

use std::sync::Arc;

use sqlx::PgPool;

use self::hasher::Hasher;
use crate::metrics::{self, LoginResult};
use crate::store::normalize_address;

/// A logged-in user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub mailbox_id: i64,
    /// The mailbox's address, which is also its login name.
    pub address: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("password check did not finish")]
    Unfinished,
}

/// Checks passwords against the local hashes.
#[derive(Clone)]
pub struct Authenticator {
    db: PgPool,
    hasher: Arc<Hasher>,
    /// LDAP directories asked before the local hash (see [`ldap::chain`]).
    directories: Option<Arc<ldap::Directories>>,
}

/// Verified against when the user is unknown, so that an unknown user costs as much time as a
/// wrong password and logins cannot be used to probe for addresses.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$8gTcVbr6PM4Tx0FKnhGdCikhp3o5yNvDTV3AvEMe+cY";

impl Authenticator {
    pub fn new(db: PgPool) -> Self {
        Self {
            db,
            hasher: Arc::new(Hasher::new()),
            directories: None,
        }
    }

    /// Asks these directories first, for directory-backed domains and `ldap` mailboxes.
    pub fn with_directories(mut self, directories: Arc<ldap::Directories>) -> Self {
        self.directories = Some(directories);
        self
    }

    /// The most password checks that ever ran at the same moment.
    pub fn peak_concurrent_checks(&self) -> usize {
        self.hasher.peak()
    }

    /// How many password checks have run (unknown users included: they cost one too).
    pub fn checks_run(&self) -> usize {
        self.hasher.total()
    }

    /// The account when `password` is right for `username` (an address, any case), `None` when
    /// the user is unknown, has no local password, or the password is wrong.
    pub async fn verify(
        &self,
        username: &str,
        password: &str,
    ) -> Result<Option<Account>, AuthError> {
        let result = self.check(username, password).await;
        metrics::login(match &result {
            Ok(Some(_)) => LoginResult::Ok,
            Ok(None) => LoginResult::Failed,
            Err(_) => LoginResult::Error,
        });
        result
    }

    async fn check(&self, username: &str, password: &str) -> Result<Option<Account>, AuthError> {
        let address = normalize_address(username);
        if let Some(directories) = &self.directories {
            use ldap::chain::{Step, ldap_first};
            match ldap_first(directories, &self.db, &address, password).await? {
                Step::Verified(account) => return Ok(Some(account)),
                // A wrong directory password costs a hash check too, like an unknown user.
                Step::Rejected => {
                    let _ = self.run_hash(DUMMY_HASH.to_string(), password).await?;
                    return Ok(None);
                }
                Step::PassOn => {}
            }
        }
        let row: Option<(i64, String, Option<String>)> = sqlx::query_as(
            "SELECT m.id, m.address, m.password_hash
               FROM mailboxes m JOIN domains d ON d.id = m.domain_id
              WHERE m.address = $1 AND m.deleted_at IS NULL AND d.deleted_at IS NULL",
        )
        .bind(&address)
        .fetch_optional(&self.db)
        .await?;
        let (account, hash) = match row {
            Some((mailbox_id, address, Some(hash))) => (
                Some(Account {
                    mailbox_id,
                    address,
                }),
                hash,
            ),
            _ => (None, DUMMY_HASH.to_string()),
        };
        let ok = self.run_hash(hash, password).await?;
        Ok(if ok { account } else { None })
    }

    async fn run_hash(&self, hash: String, password: &str) -> Result<bool, AuthError> {
        let password = password.to_string();
        // argon2 takes tens of milliseconds of CPU and 19 MiB: on the capped pool, never on
        // the async workers.
        self.hasher
            .run(move |memory| hasher::verify_in(&hash, &password, memory))
            .await
            .ok_or(AuthError::Unfinished)
    }
}

/// Whether `password` matches the PHC-format hash; a malformed hash never matches.
pub fn verify_hash(hash: &str, password: &str) -> bool {
    hasher::verify_in(hash, password, &mut Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::Argon2;
    use argon2::password_hash::{
        PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core::OsRng,
    };

    #[test]
    fn hashes() {
        let salt = SaltString::generate(&mut OsRng);
        let hash = Argon2::default()
            .hash_password(b"s3cret", &salt)
            .unwrap()
            .to_string();
        assert!(verify_hash(&hash, "s3cret"));
        assert!(!verify_hash(&hash, "s3cret "));
        assert!(!verify_hash(&hash, ""));
        assert!(!verify_hash("not a hash", "s3cret"));
        // The dummy hash parses, so an unknown user pays for a real verification.
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
    }

    /// Hashing into kept memory agrees with argon2's own verification, whatever the
    /// parameters of the hash before, and refuses hashes that would take unbounded memory.
    #[test]
    fn kept_memory_agrees_with_argon2() {
        use argon2::{Algorithm, Params, Version};
        let mut memory = Vec::new();
        let kinds = [
            (
                Algorithm::Argon2id,
                Version::V0x13,
                Params::new(64, 1, 2, None),
            ),
            (
                Algorithm::Argon2id,
                Version::V0x13,
                Params::new(19456, 2, 1, None),
            ),
            (
                Algorithm::Argon2i,
                Version::V0x10,
                Params::new(32, 3, 1, Some(16)),
            ),
            (
                Algorithm::Argon2d,
                Version::V0x13,
                Params::new(128, 1, 4, Some(64)),
            ),
        ];
        for (algorithm, version, params) in kinds {
            let argon2 = Argon2::new(algorithm, version, params.unwrap());
            let salt = SaltString::generate(&mut OsRng);
            let hash = argon2.hash_password(b"pw", &salt).unwrap().to_string();
            let parsed = PasswordHash::new(&hash).unwrap();
            for password in ["pw", "pw ", ""] {
                let theirs = argon2.verify_password(password.as_bytes(), &parsed).is_ok();
                let ours = hasher::verify_in(&hash, password, &mut memory);
                assert_eq!(ours, theirs, "{hash} {password:?}");
                assert_eq!(ours, password == "pw");
            }
        }
        let huge = DUMMY_HASH.replace("m=19456", "m=4194304");
        assert!(PasswordHash::new(&huge).is_ok());
        assert!(!hasher::verify_in(&huge, "x", &mut memory));
        assert!(memory.len() <= 19456, "{} blocks kept", memory.len());
    }
}

//! THE login service of every protocol: [`Authenticator::login`] for a user name and password
//! (SMTP AUTH PLAIN/LOGIN, IMAP LOGIN, POP3 USER/PASS) and [`Authenticator::sasl_step`] for
//! SASL exchanges (SCRAM-SHA-256 included), with one policy: the [`Guard`] admits or refuses
//! the client first, a failed login is answered a fixed delay after it began (so "no such
//! user" and "wrong password" look alike), and the credential sources are chained by the
//! mailbox's `auth_source` (see [`source`]).

pub mod guard;
mod hasher;
pub mod local;
pub mod sasl;
mod sasl_login;
pub mod schemes;
pub mod source;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::time::Instant;
use tracing::{info, warn};

use self::guard::{Admission, Guard};
use self::hasher::Hasher;
use self::local::{LocalOptions, LocalSource};
pub use self::sasl::Mechanism;
pub use self::sasl_login::{SaslInput, SaslLogin, SaslReply};
use self::source::{CredentialSource, Verdict};
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
    /// No source knew the user and at least one could not be asked.
    #[error("credential source unavailable: {0}")]
    Unavailable(String),
}

/// One login attempt with a password.
#[derive(Clone, Copy)]
pub struct Attempt<'a> {
    pub ip: IpAddr,
    /// `smtp`, `imap`, `pop3`: for logs.
    pub protocol: &'static str,
    pub login: &'a str,
    pub password: &'a str,
}

/// How a login ended; every protocol maps these four to its wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Login {
    Ok(Account),
    /// Unknown user or wrong password (the same answer, in the same time).
    Failed,
    /// The client is banned (SMTP `421 4.7.0`, IMAP `BYE`, POP3 `-ERR`, then close).
    Refused {
        remaining: Duration,
    },
    /// No source could answer: a temporary failure.
    Unavailable,
}

/// The login policy's settings.
#[derive(Clone, Copy, Debug)]
pub struct AuthSettings {
    /// A failed login is answered this long after it began (verification included).
    pub failure_delay: Duration,
    /// `{PLAIN}` / `{CLEAR}` stored passwords match (off by default).
    pub allow_plaintext_hashes: bool,
    /// A right password in an older scheme is rehashed to argon2id.
    pub rehash: bool,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            failure_delay: Duration::from_millis(500),
            allow_plaintext_hashes: false,
            rehash: true,
        }
    }
}

/// The login service. Cheap to clone.
#[derive(Clone)]
pub struct Authenticator {
    db: PgPool,
    hasher: Arc<Hasher>,
    local: Arc<LocalSource>,
    /// Sources asked before the local hash for mailboxes whose `auth_source` is not `local`
    /// (LDAP). Empty: the local hash alone, as before any directory was configured.
    sources: Vec<Arc<dyn CredentialSource>>,
    guard: Guard,
    settings: AuthSettings,
    /// The key fake SCRAM salts of unknown users are derived with (kept in the database, so
    /// every pod answers an unknown user the same way).
    fake_key: Arc<tokio::sync::OnceCell<Vec<u8>>>,
}

impl Authenticator {
    pub fn new(db: PgPool) -> Self {
        Self::with_settings(db, AuthSettings::default())
    }

    pub fn with_settings(db: PgPool, settings: AuthSettings) -> Self {
        let hasher = Arc::new(Hasher::new());
        let local = LocalSource::new(
            db.clone(),
            hasher.clone(),
            LocalOptions {
                allow_plaintext_hashes: settings.allow_plaintext_hashes,
                rehash: settings.rehash,
            },
        );
        Self {
            db,
            hasher,
            local: Arc::new(local),
            sources: Vec::new(),
            guard: Guard::disabled(),
            settings,
            fake_key: Arc::default(),
        }
    }

    /// Adds a source asked before the local hash (in the order added) for mailboxes that are
    /// not `auth_source = 'local'`, and for addresses without a mailbox row.
    pub fn with_source(mut self, source: Arc<dyn CredentialSource>) -> Self {
        self.sources.push(source);
        self
    }

    /// Uses `guard` for bans, delays and counting.
    pub fn with_guard(mut self, guard: Guard) -> Self {
        self.guard = guard;
        self
    }

    pub fn guard(&self) -> &Guard {
        &self.guard
    }

    pub fn settings(&self) -> &AuthSettings {
        &self.settings
    }

    /// The most password checks that ever ran at the same moment.
    pub fn peak_concurrent_checks(&self) -> usize {
        self.hasher.peak()
    }

    /// How many password checks have run (unknown users included: they cost one too).
    pub fn checks_run(&self) -> usize {
        self.hasher.total()
    }

    /// A login with a password, under the whole policy: refused when banned, held while the
    /// account is under attack, failures answered after the fixed delay, counted.
    pub async fn login(&self, attempt: Attempt<'_>) -> Login {
        let started = Instant::now();
        if let Some(refused) = self.admit(attempt.ip, attempt.login).await {
            return refused;
        }
        let result = self.check(attempt.login, attempt.password).await;
        self.conclude(attempt.ip, attempt.protocol, attempt.login, result, started)
            .await
    }

    /// Asks the guard before a check; `Some` when the client is refused. Waits the delay the
    /// guard asks for an account under attack.
    async fn admit(&self, ip: IpAddr, login: &str) -> Option<Login> {
        if let Admission::Banned { remaining } = self.guard.admit(ip).await {
            info!(%ip, user = login, "login refused: address banned");
            return Some(Login::Refused { remaining });
        }
        let hold = self.guard.delay(ip, login).await;
        if !hold.is_zero() {
            tokio::time::sleep(hold).await;
        }
        None
    }

    /// Counts, logs and times the end of a login.
    async fn conclude(
        &self,
        ip: IpAddr,
        protocol: &'static str,
        login: &str,
        result: Result<Option<Account>, AuthError>,
        started: Instant,
    ) -> Login {
        match result {
            Ok(Some(account)) => {
                metrics::login(LoginResult::Ok);
                self.guard.succeeded(ip, &account.address).await;
                info!(%ip, protocol, user = ?account.address, "{protocol} login");
                Login::Ok(account)
            }
            Ok(None) => {
                metrics::login(LoginResult::Failed);
                let account = normalize_address(login);
                self.guard.failed(ip, &account).await;
                warn!(%ip, user = ?account, "{protocol} login failed");
                // One place, one delay: the answer leaves at the same moment whatever failed.
                tokio::time::sleep_until(started + self.settings.failure_delay).await;
                Login::Failed
            }
            Err(err) => {
                metrics::login(LoginResult::Error);
                warn!(%ip, protocol, user = login, %err, "{protocol} login could not be checked");
                Login::Unavailable
            }
        }
    }

    /// Checks `password` for `username` through the chain of sources, without the policy
    /// (no guard, no delay; counted in the login metrics): the account when it is right,
    /// `None` when the user is unknown or the password wrong.
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

    /// The chain of sources for one password.
    async fn check(&self, username: &str, password: &str) -> Result<Option<Account>, AuthError> {
        let mut unavailable = None;
        for source in self.chain(username).await? {
            match source.verify(username, password).await {
                Verdict::Verified(identity) => {
                    let address = if identity.address.is_empty() {
                        normalize_address(username)
                    } else {
                        identity.address
                    };
                    return self.account(&address, source.name()).await;
                }
                // The source knows the user: final, no fallback.
                Verdict::Rejected => return Ok(None),
                Verdict::Unknown => {}
                Verdict::Unavailable(why) => {
                    warn!(source = source.name(), user = username, %why, "credential source unavailable");
                    unavailable = Some(why);
                }
            }
        }
        match unavailable {
            Some(why) => Err(AuthError::Unavailable(why)),
            None => Ok(None),
        }
    }

    /// The sources to ask for `username`, in order: the directory sources first unless the
    /// mailbox is `auth_source = 'local'`, the local hash last.
    async fn chain(&self, username: &str) -> Result<Vec<Arc<dyn CredentialSource>>, AuthError> {
        let local: Arc<dyn CredentialSource> = self.local.clone();
        if self.sources.is_empty() {
            return Ok(vec![local]);
        }
        let auth_source: Option<String> = sqlx::query_scalar(
            "SELECT auth_source FROM mailboxes WHERE address = $1 AND deleted_at IS NULL",
        )
        .bind(normalize_address(username))
        .fetch_optional(&self.db)
        .await?;
        let mut chain = Vec::with_capacity(self.sources.len() + 1);
        if auth_source.as_deref() != Some("local") {
            chain.extend(self.sources.iter().cloned());
        }
        chain.push(local);
        Ok(chain)
    }

    /// The mailbox a verified identity logs into.
    async fn account(&self, address: &str, source: &str) -> Result<Option<Account>, AuthError> {
        let row: Option<(i64, String)> = sqlx::query_as(
            "SELECT m.id, m.address
               FROM mailboxes m JOIN domains d ON d.id = m.domain_id
              WHERE m.address = $1 AND m.deleted_at IS NULL AND d.deleted_at IS NULL",
        )
        .bind(normalize_address(address))
        .fetch_optional(&self.db)
        .await?;
        if row.is_none() {
            warn!(
                user = address,
                source, "password verified but no mailbox for the address"
            );
        }
        Ok(row.map(|(mailbox_id, address)| Account {
            mailbox_id,
            address,
        }))
    }

    /// The key fake SCRAM salts are derived with, made once per database.
    async fn fake_key(&self) -> Result<&[u8], AuthError> {
        let key = self
            .fake_key
            .get_or_try_init(|| async {
                use argon2::password_hash::rand_core::{OsRng, RngCore};
                let mut fresh = vec![0u8; 32];
                OsRng.fill_bytes(&mut fresh);
                sqlx::query(
                    "INSERT INTO auth_secrets (name, value) VALUES ('scram-fake-salt', $1)
                     ON CONFLICT (name) DO NOTHING",
                )
                .bind(&fresh)
                .execute(&self.db)
                .await?;
                sqlx::query_scalar::<_, Vec<u8>>(
                    "SELECT value FROM auth_secrets WHERE name = 'scram-fake-salt'",
                )
                .fetch_one(&self.db)
                .await
            })
            .await?;
        Ok(key)
    }
}

/// Whether `password` matches the hash, in any scheme `schemes` knows (plain-text stored
/// passwords refused); a malformed hash never matches.
pub fn verify_hash(hash: &str, password: &str) -> bool {
    schemes::verify(hash, password, false, &mut Vec::new())
}

#[cfg(test)]
mod tests {
    use super::local::DUMMY_HASH;
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

//! Where passwords are checked: one trait for every credential source (the local PostgreSQL
//! hash, an LDAP directory), chained by the mailbox's `auth_source`.
//!
//! The chain's rule: a source that *knows* the user decides (right or wrong password — a wrong
//! LDAP password is never retried against the local hash); a source that does not know the
//! user, or cannot be reached, passes to the next.

use std::future::Future;
use std::pin::Pin;

/// A boxed future, so sources can sit behind `dyn CredentialSource`.
pub type SourceFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a source knows about a user whose password it verified (or whose address it found).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// The primary address, lower-cased domain.
    pub address: String,
    /// Other addresses the user receives mail for (directory `mail` values beyond the first).
    pub aliases: Vec<String>,
    pub display_name: Option<String>,
    /// Quota in bytes, when the source has one (a directory's quota attribute).
    pub quota_bytes: Option<i64>,
}

/// A source's answer to a password check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The password is right.
    Verified(Identity),
    /// The user is known here and the password is wrong: final, no fallback.
    Rejected,
    /// This source does not know the user: ask the next.
    Unknown,
    /// This source could not answer (connection refused, timeout, server busy): ask the next,
    /// and say why in the log.
    Unavailable(String),
}

/// A source's answer to "does this address exist" (delivery to directory users).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    Found(Identity),
    NotFound,
    Unavailable(String),
}

/// A place that can check a user's password.
pub trait CredentialSource: Send + Sync {
    /// A short name for logs and metrics: `ldap`, `local`.
    fn name(&self) -> &'static str;

    /// Checks `password` for the login name `login` (an address or a directory uid).
    fn verify<'a>(&'a self, login: &'a str, password: &'a str) -> SourceFuture<'a, Verdict>;

    /// Finds a user by address without a password.
    fn lookup<'a>(&'a self, address: &'a str) -> SourceFuture<'a, Lookup>;
}

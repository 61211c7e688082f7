//! The login guard's bans as the operators see them: listed and lifted by
//! `mail-operator bans` and by the mail server's HTTP port, through the tables of
//! `migrations/0004_login_guard.sql`. Every change reaches the pods by the table's trigger
//! (`NOTIFY login_bans`), so a lift applies on every pod within a moment.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

/// The channel the pods LISTEN on; the trigger on `login_bans` notifies it.
pub const CHANNEL: &str = "login_bans";

/// The network a client address is counted and banned as: an IPv4 address alone, an IPv6
/// address by its /64 (one customer's LAN; an attacker holds a whole /64 as easily as one
/// address). An IPv4 address seen through an IPv6 socket counts as itself. The text is
/// PostgreSQL's `cidr` form, e.g. `192.0.2.7/32`, `2001:db8:1:2::/64`.
pub fn network_of(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}/32"),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => format!("{v4}/32"),
            None => {
                let masked = u128::from(v6) & (u128::MAX << 64);
                format!("{}/64", std::net::Ipv6Addr::from(masked))
            }
        },
    }
}

/// One ban, as listed.
#[derive(Clone, Debug, PartialEq, Serialize, sqlx::FromRow)]
pub struct Ban {
    /// The banned network (`cidr` text).
    pub network: String,
    pub until: DateTime<Utc>,
    /// Seconds left; 0 for a ban that ended (kept to lengthen the next one).
    pub remaining_seconds: f64,
    /// How many bans this network has had while remembered (1 for the first).
    pub repeats: i32,
    pub reason: String,
    pub banned_at: DateTime<Utc>,
}

/// An account with failed logins in the counting window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AccountFailures {
    pub account: String,
    pub failures: i64,
}

/// Bans in force (and, with `ended`, the ended ones still remembered), longest first.
pub async fn list(pool: &PgPool, ended: bool) -> Result<Vec<Ban>, sqlx::Error> {
    sqlx::query_as(
        "SELECT network::text AS network, until,
                GREATEST(EXTRACT(EPOCH FROM until - now()), 0)::float8 AS remaining_seconds,
                repeats, reason, banned_at
           FROM login_bans
          WHERE until > now() OR $1
          ORDER BY until DESC, network",
    )
    .bind(ended)
    .fetch_all(pool)
    .await
}

/// Accounts with failed logins within the last `window`, most first.
pub async fn accounts(
    pool: &PgPool,
    window: std::time::Duration,
    limit: i64,
) -> Result<Vec<AccountFailures>, sqlx::Error> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT subject, count(*) FROM login_failures
          WHERE kind = 'account' AND at > now() - make_interval(secs => $1)
          GROUP BY subject ORDER BY count(*) DESC, subject LIMIT $2",
    )
    .bind(window.as_secs_f64())
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(account, failures)| AccountFailures { account, failures })
        .collect())
}

/// What `lift` is given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// An address or a network (`cidr` text): every ban overlapping it.
    Network(String),
    /// An account: its failures are forgotten, so it is no longer slowed.
    Account(String),
}

impl Target {
    /// An IP address (`192.0.2.7`, `2001:db8::1`), a network (`192.0.2.0/24`) or an account
    /// (anything else, e.g. `alice@example.test`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("empty target: give an address, a network or an account".into());
        }
        if let Ok(ip) = text.parse::<IpAddr>() {
            let bits = if ip.is_ipv4() { 32 } else { 128 };
            return Ok(Target::Network(format!("{ip}/{bits}")));
        }
        if let Some((addr, bits)) = text.split_once('/')
            && let Ok(ip) = addr.parse::<IpAddr>()
        {
            let max = if ip.is_ipv4() { 32 } else { 128 };
            return match bits.parse::<u8>() {
                Ok(b) if b <= max => Ok(Target::Network(format!("{ip}/{b}"))),
                _ => Err(format!("bad prefix length in {text:?}")),
            };
        }
        Ok(Target::Account(text.to_lowercase()))
    }
}

/// What a lift removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Lifted {
    /// Ban rows removed (ended ones too: the network starts over as a first offender).
    pub bans: u64,
    /// Failed-login rows forgotten.
    pub failures: u64,
}

/// Lifts the bans of a network (and forgets its failures, so the next failure does not ban it
/// again at once), or forgets an account's failures.
pub async fn lift(pool: &PgPool, target: &Target) -> Result<Lifted, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let lifted = match target {
        Target::Network(network) => {
            // `inet` so a host address (`/32` of a network that is not one) is accepted too.
            let bans = sqlx::query("DELETE FROM login_bans WHERE network && $1::inet")
                .bind(network)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            let failures = sqlx::query(
                "DELETE FROM login_failures
                  WHERE kind = 'network' AND subject::cidr && $1::inet",
            )
            .bind(network)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            Lifted { bans, failures }
        }
        Target::Account(account) => {
            let failures =
                sqlx::query("DELETE FROM login_failures WHERE kind = 'account' AND subject = $1")
                    .bind(account)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            Lifted { bans: 0, failures }
        }
    };
    tx.commit().await?;
    Ok(lifted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_of_addresses() {
        for (ip, want) in [
            ("192.0.2.7", "192.0.2.7/32"),
            ("::ffff:192.0.2.7", "192.0.2.7/32"),
            ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
            ("2001:db8:1:2::", "2001:db8:1:2::/64"),
            ("::1", "::/64"),
        ] {
            assert_eq!(network_of(ip.parse().unwrap()), want, "{ip}");
        }
    }

    #[test]
    fn targets() {
        let net = |s: &str| Ok(Target::Network(s.to_string()));
        for (text, want) in [
            ("127.0.0.2", net("127.0.0.2/32")),
            (" 10.0.0.0/8 ", net("10.0.0.0/8")),
            ("2001:db8::1", net("2001:db8::1/128")),
            ("2001:db8::/64", net("2001:db8::/64")),
            (
                "Alice@Example.TEST",
                Ok(Target::Account("alice@example.test".into())),
            ),
            ("10.0.0.0/33", Err(())),
            ("", Err(())),
        ] {
            assert_eq!(Target::parse(text).map_err(|_| ()), want, "{text:?}");
        }
    }
}

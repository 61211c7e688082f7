//! The login policy every protocol shares: failed logins counted per client network and per
//! account, bans for repeat offenders, an allow-list, and limits on the pace of logins and of
//! submitted messages.
//!
//! Failures, bans and sender counts live in PostgreSQL so every pod of the fleet sees the same
//! ones; each process keeps a view of the bans in force (reloaded on `NOTIFY login_bans`), so
//! admitting a connection costs no query. Pacing logins per network is in process.

mod pace;
mod policy;
mod shared;
mod sync;
mod view;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mail_provision::bans::{self, AccountFailures, Ban, Lifted, Target, network_of};
use sqlx::PgPool;
use tracing::{info, warn};

use self::pace::LoginPace;
pub use self::policy::GuardSettings;
use self::view::BanView;
use crate::metrics;
use crate::store::normalize_address;

/// Longest account name counted; longer ones are cut (they are never real accounts).
const MAX_ACCOUNT: usize = 320;

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
pub struct Guard {
    /// `None`: disabled (counts nothing, refuses no one).
    inner: Option<Arc<Inner>>,
}

#[derive(Debug)]
struct Inner {
    db: PgPool,
    settings: GuardSettings,
    view: BanView,
    pace: LoginPace,
}

impl Guard {
    /// A guard that counts nothing and refuses no one.
    pub fn disabled() -> Self {
        Self::default()
    }

    /// A guard on the shared tables of `db`: loads the bans in force, then keeps them current
    /// from a `LISTEN` connection and a periodic reload in a task that ends with the last clone.
    pub async fn start(db: PgPool, settings: GuardSettings) -> Self {
        let inner = Arc::new(Inner {
            pace: LoginPace::new(settings.logins_per_second, settings.login_burst),
            db,
            settings,
            view: BanView::default(),
        });
        // LISTEN before the first load, so no ban falls between the two.
        let listener = sync::listen(&inner.db).await;
        sync::reload(&inner).await;
        sync::spawn(&inner, listener);
        Self { inner: Some(inner) }
    }

    /// The settings in force (the defaults when disabled).
    pub fn settings(&self) -> GuardSettings {
        self.inner
            .as_ref()
            .map_or_else(GuardSettings::default, |i| i.settings.clone())
    }

    /// Asked when a connection opens (and again before each login). No query: the view.
    pub async fn admit(&self, ip: IpAddr) -> Admission {
        self.admit_now(ip)
    }

    /// [`Guard::admit`] without the `async` (the view needs none).
    pub fn admit_now(&self, ip: IpAddr) -> Admission {
        let Some(inner) = &self.inner else {
            return Admission::Allowed;
        };
        if inner.settings.allow.contains(ip) {
            return Admission::Allowed;
        }
        match inner.view.remaining(&network_of(ip), Instant::now()) {
            Some(remaining) => Admission::Banned { remaining },
            None => Admission::Allowed,
        }
    }

    /// How long to hold a login attempt for `account` from `ip` before checking it: the
    /// network's turn at the login pace, plus, while the account is under attack, a delay that
    /// grows with the attack (the owner's other addresses are slowed, never locked out).
    pub async fn delay(&self, ip: IpAddr, account: &str) -> Duration {
        let Some(inner) = &self.inner else {
            return Duration::ZERO;
        };
        let pace = if inner.settings.allow.contains(ip) {
            Duration::ZERO
        } else {
            inner.pace.reserve(&network_of(ip), Instant::now())
        };
        let account = account_key(account);
        if account.is_empty() || inner.settings.account_failures == 0 {
            return pace;
        }
        let slowed =
            match shared::account_failures(&inner.db, &account, inner.settings.window).await {
                Ok(failures) => inner.settings.account_delay(failures),
                Err(err) => {
                    warn!(%err, "login guard: cannot count the account's failures");
                    Duration::ZERO
                }
            };
        if !slowed.is_zero() {
            metrics::login_slowed();
        }
        pace + slowed
    }

    /// A failed login from `ip` for `account` (unknown users included): counted for the
    /// account, and for the client network unless allow-listed; the network is banned when it
    /// reaches the threshold.
    pub async fn failed(&self, ip: IpAddr, account: &str) {
        let Some(inner) = &self.inner else {
            return;
        };
        let settings = &inner.settings;
        let network = (!settings.allow.contains(ip)).then(|| network_of(ip));
        let account = account_key(account);
        // A login without a name (a malformed SASL response) counts for the network only.
        let named = (!account.is_empty()).then_some(account.as_str());
        let counts =
            shared::record_failure(&inner.db, network.as_deref(), named, settings.window).await;
        let (by_network, _) = match counts {
            Ok(counts) => counts,
            Err(err) => {
                warn!(%err, %ip, "login guard: cannot count a failed login");
                return;
            }
        };
        let Some(network) = network.filter(|_| settings.bans(by_network)) else {
            return;
        };
        let reason = format!(
            "{by_network} failed logins within {}s (last for {account:?})",
            settings.window.as_secs()
        );
        match shared::ban(&inner.db, &network, settings, &reason).await {
            Ok(banned) => {
                inner
                    .view
                    .insert(network.clone(), Instant::now() + banned.left);
                metrics::ban_made();
                warn!(
                    %network,
                    seconds = banned.left.as_secs(),
                    repeats = banned.repeats,
                    %reason,
                    "login guard: network banned"
                );
            }
            Err(err) => warn!(%err, %network, "login guard: cannot write a ban"),
        }
    }

    /// A successful login. It clears no count on purpose: someone who owns one account must
    /// not reset the count of the network they guess other accounts' passwords from, and the
    /// owner's success must not reset the count of an account under attack.
    pub async fn succeeded(&self, _ip: IpAddr, _account: &str) {}

    /// Counts one message submitted by `account` (an authenticated sender); false when it
    /// already sent its hourly allowance, fleet-wide (PostgreSQL, one-minute buckets). When
    /// the count cannot be read the message is allowed: its storage needs the database too.
    pub async fn message_sent(&self, account: &str) -> bool {
        let Some(inner) = &self.inner else {
            return true;
        };
        let limit = inner.settings.messages_per_hour;
        if limit == 0 {
            return true;
        }
        match shared::count_message(&inner.db, &account_key(account), limit).await {
            Ok(true) => true,
            Ok(false) => {
                metrics::sender_limited();
                info!(account, limit, "login guard: sender over its hourly limit");
                false
            }
            Err(err) => {
                warn!(%err, account, "login guard: cannot count a sent message; allowing it");
                true
            }
        }
    }

    /// The bans in force (and the ended ones still remembered, with `ended`).
    pub async fn bans(&self, ended: bool) -> Result<Vec<Ban>, sqlx::Error> {
        match &self.inner {
            Some(inner) => bans::list(&inner.db, ended).await,
            None => Ok(Vec::new()),
        }
    }

    /// The accounts with failed logins in the window, most first.
    pub async fn accounts(&self, limit: i64) -> Result<Vec<AccountFailures>, sqlx::Error> {
        match &self.inner {
            Some(inner) => bans::accounts(&inner.db, inner.settings.window, limit).await,
            None => Ok(Vec::new()),
        }
    }

    /// Lifts the bans of a network or forgets an account's failures, on every pod: here at
    /// once, elsewhere by the table's notification.
    pub async fn lift(&self, target: &Target) -> Result<Lifted, sqlx::Error> {
        let Some(inner) = &self.inner else {
            return Ok(Lifted::default());
        };
        let lifted = bans::lift(&inner.db, target).await?;
        sync::reload(inner).await;
        info!(?target, ?lifted, "login guard: lifted");
        Ok(lifted)
    }

    /// Bans in force in this process's view.
    pub fn bans_in_view(&self) -> usize {
        self.inner
            .as_ref()
            .map_or(0, |i| i.view.len(Instant::now()))
    }
}

/// The account as counted: its normalized address, bounded.
fn account_key(account: &str) -> String {
    let mut key = normalize_address(account);
    if key.len() > MAX_ACCOUNT {
        let mut end = MAX_ACCOUNT;
        while !key.is_char_boundary(end) {
            end -= 1;
        }
        key.truncate(end);
    }
    key
}

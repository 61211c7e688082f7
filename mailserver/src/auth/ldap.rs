//! LDAP as a credential source: search for the user with a service account, then bind as the
//! entry found with the user's password. A bind that says `invalidCredentials` is a wrong
//! password (final); no entry is an unknown user; a server that cannot be reached in time is
//! unavailable (the chain falls back to the local hash).

mod cache;
pub mod chain;
pub mod directories;
mod filter;
mod pool;
pub mod settings;

pub use directories::Directories;
pub use filter::{escape as escape_filter_value, expand as expand_filter};

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ldap3::{Ldap, LdapError, Scope, SearchEntry, SearchOptions};

use self::cache::PositiveCache;
use self::pool::{Connector, Pool, Pooled, Taken};
use self::settings::Resolved;
use super::source::{CredentialSource, Identity, Lookup, SourceFuture, Verdict};

/// LDAP result code of a bind with a wrong password (RFC 4511).
const INVALID_CREDENTIALS: u32 = 49;
/// `sizeLimitExceeded`: more entries matched than asked for (ambiguous filter).
const SIZE_LIMIT_EXCEEDED: u32 = 4;
/// Logins longer than this are refused before any LDAP call.
const MAX_LOGIN: usize = 320;

/// One configured directory.
pub struct LdapDirectory {
    resolved: Resolved,
    connector: Connector,
    /// Service connections, bound as the service account, for searches.
    searchers: Pool,
    /// Connections for user binds (each bind replaces the previous identity).
    binders: Pool,
    cache: PositiveCache,
    user_binds: AtomicU64,
}

/// Why a search gave no entry to bind as.
enum SearchFailure {
    Unavailable(String),
    Ambiguous,
}

impl LdapDirectory {
    pub fn new(resolved: Resolved) -> Self {
        let s = &resolved.settings;
        // A caller waits for a free connection no longer than an operation may take.
        let wait = resolved.operation_timeout();
        Self {
            connector: Connector::new(&resolved),
            searchers: Pool::new(s.pool_size, wait),
            binders: Pool::new(s.pool_size, wait),
            cache: PositiveCache::new(Duration::from_secs(s.cache_ttl_seconds), s.cache_size),
            user_binds: AtomicU64::new(0),
            resolved,
        }
    }

    pub fn name(&self) -> &str {
        &self.resolved.settings.name
    }

    /// User binds sent to the directory so far (cache hits send none).
    pub fn user_binds(&self) -> u64 {
        self.user_binds.load(Ordering::Relaxed)
    }

    fn attributes(&self) -> Vec<String> {
        let a = &self.resolved.settings.attributes;
        let mut list = vec![a.address.clone()];
        list.extend(a.aliases.iter().cloned());
        list.extend(a.display_name.iter().cloned());
        list.extend(a.quota.iter().cloned());
        list
    }

    /// A service connection: an idle one, or a new one bound as the service account.
    async fn searcher(&self) -> Result<Pooled<'_>, String> {
        match self.searchers.take().await {
            None => Err("every LDAP service connection stayed busy".into()),
            Some(Taken::Ready(pooled)) => Ok(pooled),
            Some(Taken::Empty(permit)) => {
                let mut ldap = self.connector.connect().await?;
                let s = &self.resolved.settings;
                let bound = ldap
                    .with_timeout(self.resolved.operation_timeout())
                    .simple_bind(&s.bind_dn, &self.resolved.bind_password)
                    .await
                    .and_then(|r| r.success());
                match bound {
                    Ok(_) => Ok(self.searchers.fill(permit, ldap)),
                    Err(error) => Err(format!("service bind as {}: {error}", s.bind_dn)),
                }
            }
        }
    }

    /// The one entry `template` finds for `login`: its DN and identity.
    async fn find(
        &self,
        template: &str,
        login: &str,
    ) -> Result<Option<(String, Identity)>, SearchFailure> {
        let filter = filter::expand(template, login);
        // A reused connection may have been closed by the server meanwhile: one retry on a
        // fresh one before calling the directory unavailable.
        for attempt in 0..2 {
            let mut conn = self.searcher().await.map_err(SearchFailure::Unavailable)?;
            let reused = conn.reused;
            match self.search(&mut conn.ldap, &filter).await {
                Ok(found) => {
                    conn.keep();
                    return found;
                }
                Err(error) if reused && attempt == 0 => {
                    tracing::debug!(%error, "LDAP search on a kept connection failed; retrying");
                }
                Err(error) => return Err(SearchFailure::Unavailable(error)),
            }
        }
        Err(SearchFailure::Unavailable("LDAP search failed".into()))
    }

    /// `Err` is a connection-level failure (the connection is not kept).
    async fn search(
        &self,
        ldap: &mut Ldap,
        filter: &str,
    ) -> Result<Result<Option<(String, Identity)>, SearchFailure>, String> {
        let s = &self.resolved.settings;
        let result = ldap
            .with_search_options(SearchOptions::new().sizelimit(2))
            .with_timeout(self.resolved.operation_timeout())
            .search(&s.base, Scope::Subtree, filter, self.attributes())
            .await
            .map_err(|e| format!("search: {e}"))?;
        let (entries, status) = (result.0, result.1);
        if status.rc == SIZE_LIMIT_EXCEEDED || entries.len() > 1 {
            tracing::warn!(
                directory = self.name(),
                filter,
                "LDAP filter matched more than one entry"
            );
            return Ok(Err(SearchFailure::Ambiguous));
        }
        if status.rc != 0 {
            return Ok(Err(SearchFailure::Unavailable(format!(
                "search under {}: {status}",
                s.base
            ))));
        }
        Ok(Ok(entries.into_iter().next().map(|entry| {
            let entry = SearchEntry::construct(entry);
            let identity = self.identity(&entry);
            (entry.dn, identity)
        })))
    }

    /// What an entry says about its user.
    fn identity(&self, entry: &SearchEntry) -> Identity {
        let a = &self.resolved.settings.attributes;
        let values = |name: &str| -> Vec<String> {
            entry
                .attrs
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(name))
                .map(|(_, values)| values.clone())
                .unwrap_or_default()
        };
        let mut addresses: Vec<String> = values(&a.address)
            .into_iter()
            .map(|v| v.trim().to_lowercase())
            .filter(|v| v.contains('@'))
            .collect();
        let address = if addresses.is_empty() {
            String::new()
        } else {
            addresses.remove(0)
        };
        if let Some(aliases) = &a.aliases {
            addresses.extend(values(aliases).into_iter().map(|v| v.trim().to_lowercase()));
        }
        addresses.retain(|v| v.contains('@') && *v != address);
        addresses.dedup();
        Identity {
            address,
            aliases: addresses,
            display_name: a
                .display_name
                .iter()
                .find_map(|name| values(name).into_iter().next()),
            quota_bytes: a
                .quota
                .as_ref()
                .and_then(|name| values(name).into_iter().next())
                .and_then(|v| v.trim().parse::<i64>().ok())
                .filter(|q| *q >= 0),
        }
    }

    /// Binds as `dn` with `password`: `Ok(true)` accepted, `Ok(false)` wrong password.
    async fn bind_user(&self, dn: &str, password: &str) -> Result<bool, String> {
        for attempt in 0..2 {
            let mut conn = match self.binders.take().await {
                None => return Err("every LDAP bind connection stayed busy".into()),
                Some(Taken::Ready(pooled)) => pooled,
                Some(Taken::Empty(permit)) => {
                    let ldap = self.connector.connect().await?;
                    self.binders.fill(permit, ldap)
                }
            };
            self.user_binds.fetch_add(1, Ordering::Relaxed);
            let bound = conn
                .ldap
                .with_timeout(self.resolved.operation_timeout())
                .simple_bind(dn, password)
                .await;
            match bound {
                Ok(result) if result.rc == 0 => {
                    conn.keep();
                    return Ok(true);
                }
                Ok(result) if result.rc == INVALID_CREDENTIALS => {
                    conn.keep();
                    return Ok(false);
                }
                Ok(result) => return Err(format!("bind as {dn}: {result}")),
                Err(LdapError::LdapResult { result }) if result.rc == INVALID_CREDENTIALS => {
                    conn.keep();
                    return Ok(false);
                }
                Err(error) if conn.reused && attempt == 0 => {
                    tracing::debug!(%error, "LDAP bind on a kept connection failed; retrying");
                }
                Err(error) => return Err(format!("bind as {dn}: {error}")),
            }
        }
        Err("LDAP bind failed".into())
    }

    async fn verify_login(&self, login: &str, password: &str) -> Verdict {
        // Never an unauthenticated bind (RFC 4513 §5.1.2: an empty password "succeeds").
        if password.is_empty()
            || login.is_empty()
            || login.len() > MAX_LOGIN
            || login.contains('\0')
        {
            return Verdict::Rejected;
        }
        let key = login.to_lowercase();
        if let Some(identity) = self.cache.get(&key, password) {
            return Verdict::Verified(identity);
        }
        let template = self.resolved.settings.filter.clone();
        let (dn, identity) = match self.find(&template, login).await {
            Ok(Some(found)) => found,
            Ok(None) => return Verdict::Unknown,
            Err(SearchFailure::Ambiguous) => return Verdict::Rejected,
            Err(SearchFailure::Unavailable(why)) => return Verdict::Unavailable(why),
        };
        match self.bind_user(&dn, password).await {
            Ok(true) => {
                self.cache.put(&key, password, &identity);
                Verdict::Verified(identity)
            }
            Ok(false) => {
                self.cache.forget(&key);
                Verdict::Rejected
            }
            Err(why) => Verdict::Unavailable(why),
        }
    }

    async fn lookup_address(&self, address: &str) -> Lookup {
        if address.is_empty() || address.len() > MAX_LOGIN || address.contains('\0') {
            return Lookup::NotFound;
        }
        let template = self.resolved.settings.lookup_filter.clone();
        match self.find(&template, address).await {
            Ok(Some((_, identity))) if !identity.address.is_empty() => Lookup::Found(identity),
            Ok(_) | Err(SearchFailure::Ambiguous) => Lookup::NotFound,
            Err(SearchFailure::Unavailable(why)) => Lookup::Unavailable(why),
        }
    }
}

impl CredentialSource for LdapDirectory {
    fn name(&self) -> &'static str {
        "ldap"
    }

    fn verify<'a>(&'a self, login: &'a str, password: &'a str) -> SourceFuture<'a, Verdict> {
        Box::pin(self.verify_login(login, password))
    }

    fn lookup<'a>(&'a self, address: &'a str) -> SourceFuture<'a, Lookup> {
        Box::pin(self.lookup_address(address))
    }
}

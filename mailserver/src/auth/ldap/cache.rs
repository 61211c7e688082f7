//! Small caches in front of the directory: verified passwords (so a client polling every
//! minute does not bind each time) and address lookups (so a burst of mail for one user asks
//! once). Both bounded in size and time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::auth::source::Identity;

/// Logins whose password the directory accepted lately: the login maps to SHA-256(salt ‖
/// password), never the password itself; the salt is random per process.
pub struct PositiveCache {
    salt: String,
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<String, Verified>>,
}

struct Verified {
    until: Instant,
    digest: [u8; 32],
    identity: Identity,
}

impl PositiveCache {
    /// A cache keeping each entry `ttl`, at most `capacity` entries; `ttl` zero keeps nothing.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        use argon2::password_hash::{SaltString, rand_core::OsRng};
        Self {
            salt: SaltString::generate(&mut OsRng).as_str().to_string(),
            ttl,
            capacity,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn digest(&self, password: &str) -> [u8; 32] {
        let mut hash = Sha256::new();
        hash.update(self.salt.as_bytes());
        hash.update(password.as_bytes());
        hash.finalize().into()
    }

    /// The identity verified for `login` with this very password, while fresh.
    pub fn get(&self, login: &str, password: &str) -> Option<Identity> {
        if self.ttl.is_zero() {
            return None;
        }
        let digest = self.digest(password);
        let entries = self.entries.lock().ok()?;
        let entry = entries.get(login)?;
        (entry.until > Instant::now() && entry.digest == digest).then(|| entry.identity.clone())
    }

    pub fn put(&self, login: &str, password: &str, identity: &Identity) {
        if self.ttl.is_zero() || self.capacity == 0 {
            return;
        }
        let digest = self.digest(password);
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        let now = Instant::now();
        if entries.len() >= self.capacity && !entries.contains_key(login) {
            entries.retain(|_, e| e.until > now);
            if entries.len() >= self.capacity {
                return;
            }
        }
        entries.insert(
            login.to_string(),
            Verified {
                until: now + self.ttl,
                digest,
                identity: identity.clone(),
            },
        );
    }

    /// Drops what is known about `login` (its password was refused: it may have changed).
    pub fn forget(&self, login: &str) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(login);
        }
    }
}

/// Answers of address lookups, found or not, for a short time.
pub struct LookupCache {
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<String, (Instant, Option<Identity>)>>,
}

impl LookupCache {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(answer)` while a fresh answer is kept (`answer` `None`: not in the directory).
    pub fn get(&self, key: &str) -> Option<Option<Identity>> {
        let entries = self.entries.lock().ok()?;
        let (until, answer) = entries.get(key)?;
        (*until > Instant::now()).then(|| answer.clone())
    }

    pub fn put(&self, key: &str, answer: Option<Identity>) {
        if self.ttl.is_zero() {
            return;
        }
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        let now = Instant::now();
        if entries.len() >= self.capacity {
            entries.retain(|_, (until, _)| *until > now);
            if entries.len() >= self.capacity {
                return;
            }
        }
        entries.insert(key.to_string(), (now + self.ttl, answer));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn carol() -> Identity {
        Identity {
            address: "carol@corp.test".into(),
            ..Identity::default()
        }
    }

    #[test]
    fn positive_cache_matches_only_the_same_password() {
        let cache = PositiveCache::new(Duration::from_secs(60), 2);
        assert_eq!(cache.get("carol", "pw"), None);
        cache.put("carol", "pw", &carol());
        assert_eq!(cache.get("carol", "pw"), Some(carol()));
        assert_eq!(cache.get("carol", "pw2"), None);
        assert_eq!(cache.get("dave", "pw"), None);
        cache.put("dave", "x", &carol());
        cache.put("erin", "x", &carol()); // full: not kept
        assert_eq!(cache.get("erin", "x"), None);
        cache.forget("carol");
        assert_eq!(cache.get("carol", "pw"), None);
    }

    #[test]
    fn caches_expire_and_zero_keeps_nothing() {
        let cache = PositiveCache::new(Duration::ZERO, 10);
        cache.put("carol", "pw", &carol());
        assert_eq!(cache.get("carol", "pw"), None);
        let cache = PositiveCache::new(Duration::from_millis(1), 10);
        cache.put("carol", "pw", &carol());
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(cache.get("carol", "pw"), None);

        let lookups = LookupCache::new(Duration::from_secs(60), 10);
        lookups.put("a@x", None);
        lookups.put("b@x", Some(carol()));
        assert_eq!(lookups.get("a@x"), Some(None));
        assert_eq!(lookups.get("b@x"), Some(Some(carol())));
        assert_eq!(lookups.get("c@x"), None);
    }
}

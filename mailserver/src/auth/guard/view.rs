//! This process's copy of the bans in force, so that a connection is admitted or refused
//! without a query. Reloaded from PostgreSQL on every `NOTIFY login_bans` and periodically;
//! a ban this process makes is entered at once.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub struct BanView {
    /// Banned network (`cidr` text, as `mail_provision::bans::network_of` writes it) → end.
    until: RwLock<HashMap<String, Instant>>,
}

impl BanView {
    /// Time left of the ban on `network` at `now`, if one is in force.
    pub fn remaining(&self, network: &str, now: Instant) -> Option<Duration> {
        let until = self.until.read().unwrap_or_else(|e| e.into_inner());
        until
            .get(network)
            .map(|end| end.saturating_duration_since(now))
            .filter(|left| !left.is_zero())
    }

    /// Replaces the view with what the database holds: `(network, seconds left)` at `now`.
    pub fn replace(&self, bans: impl IntoIterator<Item = (String, Duration)>, now: Instant) {
        let fresh: HashMap<String, Instant> = bans
            .into_iter()
            .map(|(network, left)| (network, now + left))
            .collect();
        *self.until.write().unwrap_or_else(|e| e.into_inner()) = fresh;
    }

    /// A ban made here, in force before the notification comes back.
    pub fn insert(&self, network: String, end: Instant) {
        self.until
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(network, end);
    }

    /// Bans in force at `now`.
    pub fn len(&self, now: Instant) -> usize {
        let until = self.until.read().unwrap_or_else(|e| e.into_inner());
        until.values().filter(|end| **end > now).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bans_end_by_themselves_and_reloads_replace() {
        let view = BanView::default();
        let t0 = Instant::now();
        let s = Duration::from_secs;
        view.replace([("192.0.2.1/32".to_string(), s(2))], t0);
        assert_eq!(view.remaining("192.0.2.1/32", t0), Some(s(2)));
        assert_eq!(view.remaining("192.0.2.1/32", t0 + s(1)), Some(s(1)));
        assert_eq!(view.remaining("192.0.2.1/32", t0 + s(2)), None, "ended");
        assert_eq!(view.remaining("192.0.2.2/32", t0), None);
        view.insert("192.0.2.2/32".into(), t0 + s(5));
        assert_eq!(view.len(t0), 2);
        assert_eq!(view.len(t0 + s(3)), 1);
        // A lift elsewhere: the reload no longer has it.
        view.replace([], t0);
        assert_eq!(view.remaining("192.0.2.2/32", t0), None);
    }
}

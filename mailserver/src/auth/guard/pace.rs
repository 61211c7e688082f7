//! Logins per second per client network, in process (each pod paces what it sees; a client
//! spread over pods by the load balancer gets at most pods × the rate, which the fleet-wide
//! failure count bounds anyway).
//!
//! A generic cell rate: each login reserves the next slot of the network's schedule; the first
//! `burst` logins are free, after that each waits its turn. Waiting instead of refusing keeps
//! a mail client that logs in several folders at once working; the per-IP connection cap
//! bounds how many can wait.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most networks remembered; past that new ones are not paced until old entries lapse.
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug)]
pub struct LoginPace {
    /// Time between logins at the steady rate; zero: unlimited.
    interval: Duration,
    /// How far ahead of now a schedule may run before logins wait.
    tolerance: Duration,
    /// Per network: when its schedule's next free slot is (the theoretical arrival time).
    next: Mutex<HashMap<String, Instant>>,
}

impl LoginPace {
    pub fn new(per_second: u32, burst: u32) -> Self {
        let interval = match per_second {
            0 => Duration::ZERO,
            n => Duration::from_secs(1) / n,
        };
        Self {
            interval,
            tolerance: interval.saturating_mul(burst.max(1) - 1),
            next: Mutex::new(HashMap::new()),
        }
    }

    /// Reserves a login for `network` at `now`: how long it must wait first.
    pub fn reserve(&self, network: &str, now: Instant) -> Duration {
        if self.interval.is_zero() {
            return Duration::ZERO;
        }
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        if next.len() >= MAX_ENTRIES && !next.contains_key(network) {
            next.retain(|_, at| *at > now);
            if next.len() >= MAX_ENTRIES {
                return Duration::ZERO;
            }
        }
        let slot = next.entry(network.to_string()).or_insert(now);
        let start = (*slot).max(now);
        let wait = start.saturating_duration_since(now + self.tolerance);
        *slot = start + self.interval;
        wait
    }

    /// Forgets networks whose schedule has caught up with `now` (they start fresh anyway).
    pub fn prune(&self, now: Instant) {
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        next.retain(|_, at| *at > now);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.next.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn burst_then_the_steady_rate() {
        let pace = LoginPace::new(5, 3);
        let t0 = Instant::now();
        let waits: Vec<Duration> = (0..6).map(|_| pace.reserve("a", t0)).collect();
        // Three free, then one every 200 ms, each reserving the slot after the last.
        assert_eq!(waits, [0, 0, 0, 200, 400, 600].map(ms));
        // Another network is not affected.
        assert_eq!(pace.reserve("b", t0), Duration::ZERO);
        // A second later the schedule (t0 + 1.2 s) is 200 ms ahead, within the tolerance
        // (two intervals) again: two more go at once, the next waits.
        assert_eq!(pace.reserve("a", t0 + ms(1000)), Duration::ZERO);
        assert_eq!(pace.reserve("a", t0 + ms(1000)), Duration::ZERO);
        assert_eq!(pace.reserve("a", t0 + ms(1000)), ms(200));
    }

    #[test]
    fn a_steady_client_never_waits() {
        let pace = LoginPace::new(5, 1);
        let t0 = Instant::now();
        for i in 0..50 {
            assert_eq!(pace.reserve("a", t0 + ms(200 * i)), Duration::ZERO, "{i}");
        }
        assert_eq!(pace.reserve("a", t0 + ms(200 * 49 + 100)), ms(100));
    }

    #[test]
    fn unlimited_and_pruned() {
        let off = LoginPace::new(0, 0);
        let t0 = Instant::now();
        assert!((0..100).all(|_| off.reserve("a", t0).is_zero()));
        assert_eq!(off.len(), 0);
        let pace = LoginPace::new(10, 1);
        pace.reserve("a", t0);
        pace.reserve("b", t0 + ms(500));
        pace.prune(t0 + ms(200));
        assert_eq!(pace.len(), 1, "a's schedule lapsed, b's not");
    }
}

//! A circuit breaker: after `threshold` consecutive failures the filter is not called for
//! `open_for`, so a dead daemon costs each message nothing instead of a timeout. After that one
//! call is let through (half open); its success closes the breaker, its failure opens it again.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct CircuitBreaker {
    threshold: u32,
    open_for: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    failures: u32,
    open_until: Option<Instant>,
    /// A half-open trial call is under way: others stay out until it ends.
    trial: bool,
}

impl CircuitBreaker {
    pub fn new(threshold: u32, open_for: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            open_for,
            state: Mutex::new(State::default()),
        }
    }

    /// Whether a call may be made now. `false` while open (and during a half-open trial).
    pub fn allow(&self) -> bool {
        let mut s = self.lock();
        match s.open_until {
            None => true,
            Some(until) if Instant::now() < until => false,
            Some(_) if s.trial => false,
            Some(_) => {
                s.trial = true;
                true
            }
        }
    }

    pub fn record_success(&self) {
        *self.lock() = State::default();
    }

    pub fn record_failure(&self) {
        let mut s = self.lock();
        s.failures = s.failures.saturating_add(1);
        s.trial = false;
        if s.failures >= self.threshold {
            s.open_until = Some(Instant::now() + self.open_for);
        }
    }

    /// Open now: calls are refused without trying.
    pub fn is_open(&self) -> bool {
        let s = self.lock();
        matches!(s.open_until, Some(until) if Instant::now() < until)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a few plain fields: a panic elsewhere cannot leave it inconsistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_and_half_opens_after_the_pause() {
        let b = CircuitBreaker::new(2, Duration::from_millis(50));
        assert!(b.allow());
        b.record_failure();
        assert!(!b.is_open() && b.allow());
        b.record_failure();
        assert!(b.is_open() && !b.allow());
        std::thread::sleep(Duration::from_millis(60));
        assert!(b.allow(), "one trial after the pause");
        assert!(!b.allow(), "only one trial at a time");
        b.record_failure();
        assert!(b.is_open());
        std::thread::sleep(Duration::from_millis(60));
        assert!(b.allow());
        b.record_success();
        assert!(!b.is_open() && b.allow() && b.allow());
    }
}

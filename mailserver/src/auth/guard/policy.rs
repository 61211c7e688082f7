//! The guard's settings and the arithmetic on them, free of any clock or database so it can be
//! tested with made-up times.

use std::time::Duration;

use crate::proxy::Networks;

/// How the guard counts and punishes; see the "Protection" section of `docs/architecture.md`.
#[derive(Clone, Debug)]
pub struct GuardSettings {
    /// Failed logins from one client network within `window` that ban it; 0: never ban.
    pub network_failures: u32,
    /// Failed logins for one account within `window` after which its logins are slowed;
    /// 0: never slow.
    pub account_failures: u32,
    /// The sliding window failures are counted in.
    pub window: Duration,
    /// The first ban of a network.
    pub ban_time: Duration,
    /// Each further ban (while the last one is remembered) is this many times longer...
    pub ban_factor: u32,
    /// ...up to this. An ended ban is remembered this long too.
    pub ban_max: Duration,
    /// The delay of a login to an account under attack; it doubles with every further
    /// `account_failures` failures...
    pub account_delay: Duration,
    /// ...up to this.
    pub account_delay_max: Duration,
    /// Networks never banned (the load balancer's own addresses when it does not send PROXY
    /// headers, monitoring). Their failures still count against the account.
    pub allow: Networks,
    /// Logins per second one client network may start; 0: unlimited.
    pub logins_per_second: u32,
    /// Logins a network may start at once before the pace applies.
    pub login_burst: u32,
    /// Messages one authenticated sender may submit per hour, all pods together; 0: unlimited.
    pub messages_per_hour: u32,
    /// How often each pod reloads the bans even without a notification (a safety net).
    pub refresh: Duration,
}

impl Default for GuardSettings {
    fn default() -> Self {
        Self {
            network_failures: 10,
            account_failures: 20,
            window: Duration::from_secs(10 * 60),
            ban_time: Duration::from_secs(15 * 60),
            ban_factor: 4,
            ban_max: Duration::from_secs(24 * 60 * 60),
            account_delay: Duration::from_secs(1),
            account_delay_max: Duration::from_secs(15),
            allow: Networks::default(),
            logins_per_second: 5,
            login_burst: 10,
            messages_per_hour: 1000,
            refresh: Duration::from_secs(10),
        }
    }
}

impl GuardSettings {
    /// How long the `repeats`-th ban of a network lasts (1 for the first):
    /// `ban_time × ban_factor^(repeats-1)`, at most `ban_max`.
    pub fn ban_duration(&self, repeats: u32) -> Duration {
        let mut duration = self.ban_time;
        for _ in 1..repeats.max(1) {
            if duration >= self.ban_max {
                break;
            }
            duration = duration.saturating_mul(self.ban_factor.max(1));
        }
        duration.min(self.ban_max)
    }

    /// Whether `failures` within the window (the one just made included) ban the network.
    pub fn bans(&self, failures: u64) -> bool {
        self.network_failures > 0 && failures >= u64::from(self.network_failures)
    }

    /// How long a login to an account with `failures` in the window waits: nothing below the
    /// threshold, then `account_delay`, doubling with every further threshold's worth.
    pub fn account_delay(&self, failures: u64) -> Duration {
        let threshold = u64::from(self.account_failures);
        if threshold == 0 || failures < threshold {
            return Duration::ZERO;
        }
        let doublings = ((failures - threshold) / threshold).min(31) as u32;
        self.account_delay
            .saturating_mul(1u32 << doublings)
            .min(self.account_delay_max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mins(m: u64) -> Duration {
        Duration::from_secs(60 * m)
    }

    #[test]
    fn ban_time_grows_for_repeat_offenders_up_to_the_cap() {
        let s = GuardSettings::default();
        let got: Vec<Duration> = (0..=6).map(|n| s.ban_duration(n)).collect();
        assert_eq!(
            got,
            vec![
                mins(15),
                mins(15),
                mins(60),
                mins(240),
                mins(960),
                mins(24 * 60),
                mins(24 * 60)
            ]
        );
        assert_eq!(s.ban_duration(u32::MAX), mins(24 * 60), "no overflow");
        let flat = GuardSettings {
            ban_factor: 1,
            ..GuardSettings::default()
        };
        assert_eq!(flat.ban_duration(9), mins(15));
        let short = GuardSettings {
            ban_time: Duration::from_secs(2),
            ban_max: Duration::from_secs(10),
            ..GuardSettings::default()
        };
        let got: Vec<u64> = (1..=4).map(|n| short.ban_duration(n).as_secs()).collect();
        assert_eq!(got, vec![2, 8, 10, 10]);
    }

    #[test]
    fn threshold_bans() {
        let s = GuardSettings::default();
        assert!(!s.bans(9));
        assert!(s.bans(10));
        assert!(s.bans(11));
        let off = GuardSettings {
            network_failures: 0,
            ..GuardSettings::default()
        };
        assert!(!off.bans(1_000_000));
    }

    #[test]
    fn account_delay_doubles_with_the_attack() {
        let s = GuardSettings::default();
        let secs = |n| s.account_delay(n).as_secs();
        assert_eq!(
            [0, 19, 20, 39, 40, 60, 80, 100, 1 << 40].map(secs),
            [0, 0, 1, 1, 2, 4, 8, 15, 15]
        );
        let off = GuardSettings {
            account_failures: 0,
            ..GuardSettings::default()
        };
        assert_eq!(off.account_delay(1_000_000), Duration::ZERO);
    }
}

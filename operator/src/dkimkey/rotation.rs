//! Key rotation as pure steps over a DkimKey's key versions and the time: when the active key is
//! older than `rotateAfter` a successor is started (`Pending`, published but not signing); once
//! DNS serves it, it is promoted (`Active`) and the old one starts `Retiring`; after `overlap`
//! the retired one goes. The controller does the I/O each step asks for.

use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use mail_resources::{DkimKey, DkimKeySpec, DkimKeyVersion, KeyState, parse_duration};

/// How long a replaced key stays published when `overlap` is not given.
pub const DEFAULT_OVERLAP: Duration = Duration::from_secs(7 * 86_400);
/// How often a pending key's record is looked up while DNS does not serve it yet.
pub const PENDING_RECHECK: Duration = Duration::from_secs(60);
/// Selectors are DNS labels.
const SELECTOR_MAX: usize = 63;

/// `rotateAfter` and `overlap`, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    pub rotate_after: Option<Duration>,
    pub overlap: Duration,
}

impl Schedule {
    pub fn of(spec: &DkimKeySpec) -> Result<Self, String> {
        let rotate_after = spec
            .rotate_after
            .as_deref()
            .map(parse_duration)
            .transpose()
            .map_err(|e| format!("rotateAfter {e}"))?;
        let overlap = spec
            .overlap
            .as_deref()
            .map(parse_duration)
            .transpose()
            .map_err(|e| format!("overlap {e}"))?
            .unwrap_or(DEFAULT_OVERLAP);
        Ok(Self {
            rotate_after,
            overlap,
        })
    }
}

/// The Secret of key version `number`: the first keeps the name it always had.
pub fn secret_of(key_name: &str, number: u32) -> String {
    match number {
        1 => format!("{key_name}-dkim"),
        n => format!("{key_name}-dkim-{n}"),
    }
}

/// The selector of key version `number`: `spec.selector`, then `<selector>-<n>` (the base
/// shortened, if need be, to stay a 63-byte DNS label).
pub fn selector_of(base: &str, number: u32) -> String {
    if number == 1 {
        return base.to_string();
    }
    let suffix = format!("-{number}");
    let keep = base.len().min(SELECTOR_MAX - suffix.len());
    format!("{}{suffix}", base[..keep].trim_end_matches('-'))
}

fn time(text: &str) -> Option<Timestamp> {
    text.parse().ok()
}

fn plus(at: Timestamp, duration: Duration) -> Timestamp {
    SignedDuration::try_from(duration)
        .ok()
        .and_then(|d| at.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

/// The first version, for a DkimKey that has none in its status: its key pair was made at
/// `created_at` (the Secret's creation time when it exists).
pub fn first(key: &DkimKey, key_name: &str, created_at: Timestamp) -> DkimKeyVersion {
    DkimKeyVersion {
        number: 1,
        selector: key.spec.selector.clone(),
        secret_name: secret_of(key_name, 1),
        state: KeyState::Active,
        created_at: created_at.to_string(),
        active_since: Some(created_at.to_string()),
        retire_at: None,
    }
}

/// The retiring versions whose overlap is over.
pub fn expired(versions: &[DkimKeyVersion], now: Timestamp) -> Vec<usize> {
    versions
        .iter()
        .enumerate()
        .filter(|(_, v)| v.state == KeyState::Retiring)
        .filter(|(_, v)| {
            v.retire_at
                .as_deref()
                .and_then(time)
                .is_none_or(|t| t <= now)
        })
        .map(|(i, _)| i)
        .collect()
}

/// The version waiting for DNS, if any.
pub fn pending(versions: &[DkimKeyVersion]) -> Option<usize> {
    versions.iter().position(|v| v.state == KeyState::Pending)
}

/// When the active key is due to be replaced (none: no rotation, or one is under way).
pub fn rotation_due_at(versions: &[DkimKeyVersion], schedule: &Schedule) -> Option<Timestamp> {
    let after = schedule.rotate_after?;
    if pending(versions).is_some() {
        return None;
    }
    let active = versions.iter().find(|v| v.state == KeyState::Active)?;
    Some(plus(time(&active.created_at)?, after))
}

/// A new `Pending` version after the newest one.
pub fn successor(
    versions: &[DkimKeyVersion],
    base_selector: &str,
    key_name: &str,
    now: Timestamp,
) -> DkimKeyVersion {
    let number = versions.iter().map(|v| v.number).max().unwrap_or(0) + 1;
    DkimKeyVersion {
        number,
        selector: selector_of(base_selector, number),
        secret_name: secret_of(key_name, number),
        state: KeyState::Pending,
        created_at: now.to_string(),
        active_since: None,
        retire_at: None,
    }
}

/// DNS serves version `index`: it becomes the active one, the active one starts retiring.
pub fn promote(versions: &mut [DkimKeyVersion], index: usize, now: Timestamp, overlap: Duration) {
    for (i, v) in versions.iter_mut().enumerate() {
        if i == index {
            v.state = KeyState::Active;
            v.active_since = Some(now.to_string());
        } else if v.state == KeyState::Active {
            v.state = KeyState::Retiring;
            v.retire_at = Some(plus(now, overlap).to_string());
        }
    }
}

/// How soon something is due: a pending key's next DNS look, a retirement or a rotation.
pub fn next_wake(
    versions: &[DkimKeyVersion],
    schedule: &Schedule,
    now: Timestamp,
) -> Option<Duration> {
    if pending(versions).is_some() {
        return Some(PENDING_RECHECK);
    }
    let retirements = versions
        .iter()
        .filter_map(|v| v.retire_at.as_deref().and_then(time));
    retirements
        .chain(rotation_due_at(versions, schedule))
        .map(|at| {
            Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO)
                + Duration::from_secs(1)
        })
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(day: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + day * 86_400).expect("a time")
    }

    fn version(number: u32, state: KeyState, created_day: i64) -> DkimKeyVersion {
        DkimKeyVersion {
            number,
            selector: selector_of("s1", number),
            secret_name: secret_of("k", number),
            state,
            created_at: at(created_day).to_string(),
            active_since: None,
            retire_at: None,
        }
    }

    fn schedule(days: u64) -> Schedule {
        Schedule {
            rotate_after: Some(Duration::from_secs(days * 86_400)),
            overlap: DEFAULT_OVERLAP,
        }
    }

    #[test]
    fn names_of_later_versions() {
        assert_eq!(selector_of("s1", 1), "s1");
        assert_eq!(selector_of("s1", 2), "s1-2");
        let long = "a".repeat(63);
        assert_eq!(selector_of(&long, 12).len(), 63);
        assert!(selector_of(&long, 12).ends_with("a-12"));
        // Never a hyphen before the suffix's own.
        let hyphen_at_cut = format!("{}-bc", "a".repeat(60));
        assert_eq!(
            selector_of(&hyphen_at_cut, 2),
            format!("{}-2", "a".repeat(60))
        );
        assert_eq!(secret_of("k", 1), "k-dkim");
        assert_eq!(secret_of("k", 3), "k-dkim-3");
    }

    #[test]
    fn a_rotation_from_start_to_retirement() {
        let s = schedule(30);
        let mut versions = vec![version(1, KeyState::Active, 0)];
        // Young key: nothing due until day 30.
        assert_eq!(rotation_due_at(&versions, &s), Some(at(30)));
        let wake = next_wake(&versions, &s, at(10)).expect("a wake-up");
        assert_eq!(wake.as_secs(), 20 * 86_400 + 1);
        // Day 31: a successor, pending.
        versions.push(successor(&versions, "s1", "k", at(31)));
        assert_eq!(versions[1].selector, "s1-2");
        assert_eq!(versions[1].state, KeyState::Pending);
        assert_eq!(pending(&versions), Some(1));
        assert_eq!(
            rotation_due_at(&versions, &s),
            None,
            "one rotation at a time"
        );
        assert_eq!(next_wake(&versions, &s, at(31)), Some(PENDING_RECHECK));
        // DNS serves it on day 32: promoted, the old one retires a week later.
        promote(&mut versions, 1, at(32), s.overlap);
        assert_eq!(
            versions.iter().map(|v| v.state).collect::<Vec<_>>(),
            [KeyState::Retiring, KeyState::Active]
        );
        assert_eq!(versions[0].retire_at, Some(at(39).to_string()));
        assert!(expired(&versions, at(38)).is_empty());
        assert_eq!(expired(&versions, at(39)), [0]);
        // The next rotation counts from the new key's creation.
        versions.remove(0);
        assert_eq!(rotation_due_at(&versions, &s), Some(at(61)));
        assert_eq!(successor(&versions, "s1", "k", at(61)).selector, "s1-3");
    }

    #[test]
    fn without_rotate_after_nothing_is_due() {
        let s = Schedule {
            rotate_after: None,
            overlap: DEFAULT_OVERLAP,
        };
        let versions = vec![version(1, KeyState::Active, 0)];
        assert_eq!(rotation_due_at(&versions, &s), None);
        assert_eq!(next_wake(&versions, &s, at(1000)), None);
    }

    #[test]
    fn schedules_parse_or_say_what_is_wrong() {
        let mut spec = DkimKeySpec {
            domain: "example.test".into(),
            selector: "s1".into(),
            algorithm: Default::default(),
            active: true,
            rotate_after: Some("90d".into()),
            overlap: Some("36h".into()),
        };
        assert_eq!(
            Schedule::of(&spec),
            Ok(Schedule {
                rotate_after: Some(Duration::from_secs(90 * 86_400)),
                overlap: Duration::from_secs(36 * 3600),
            })
        );
        spec.overlap = None;
        assert_eq!(Schedule::of(&spec).map(|s| s.overlap), Ok(DEFAULT_OVERLAP));
        spec.rotate_after = Some("3 weeks".into());
        assert!(Schedule::of(&spec).unwrap_err().contains("rotateAfter"));
    }
}

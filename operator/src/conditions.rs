//! The `Ready` condition: what a reconcile concluded, with `lastTransitionTime` kept while the
//! status stays the same, so that an unchanged object writes an unchanged status.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub const READY: &str = "Ready";

/// What a reconcile concluded about one object: ready, or why not (the reason is a
/// CamelCase word the user can look up, the message says what to fix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub ready: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Verdict {
    pub fn ready(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            ready: true,
            reason,
            message: message.into(),
        }
    }

    pub fn not_ready(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            ready: false,
            reason,
            message: message.into(),
        }
    }

    /// The verdict for a user-fixable error of the reconcile core, or `None` when a retry
    /// may fix it (the database or the bucket was unreachable).
    pub fn of_store_error(e: &mail_provision::Error) -> Option<Self> {
        match e {
            mail_provision::Error::Invalid(problems) => {
                Some(Self::not_ready("Invalid", problems.0.join("; ")))
            }
            mail_provision::Error::Conflict(message) => {
                Some(Self::not_ready("Conflict", message.clone()))
            }
            _ => None,
        }
    }
}

/// The Ready condition for `verdict`, keeping the previous transition time when the status did
/// not change.
pub fn ready(
    previous: &[Condition],
    verdict: &Verdict,
    generation: Option<i64>,
    now: Time,
) -> Condition {
    let status = if verdict.ready { "True" } else { "False" };
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == READY && c.status == status)
        .map_or(now, |c| c.last_transition_time.clone());
    Condition {
        type_: READY.to_string(),
        status: status.to_string(),
        reason: verdict.reason.to_string(),
        message: verdict.message.clone(),
        observed_generation: generation,
        last_transition_time,
    }
}

/// Whether going from `previous` to `next` changes the Ready status or its reason: the moments
/// worth an Event.
pub fn is_transition(previous: &[Condition], next: &Condition) -> bool {
    !previous
        .iter()
        .any(|c| c.type_ == READY && c.status == next.status && c.reason == next.reason)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).expect("timestamp"))
    }

    #[test]
    fn transition_time_is_kept_until_the_status_changes() {
        let missing = Verdict::not_ready("SecretMissing", "no secret");
        let first = ready(&[], &missing, Some(1), at(100));
        assert_eq!(first.last_transition_time, at(100));
        assert!(is_transition(&[], &first));

        // Same status, other reason: time kept, but an Event is due.
        let no_domain = Verdict::not_ready("DomainNotFound", "no domain");
        let second = ready(std::slice::from_ref(&first), &no_domain, Some(2), at(200));
        assert_eq!(second.last_transition_time, at(100));
        assert_eq!(second.observed_generation, Some(2));
        assert!(is_transition(std::slice::from_ref(&first), &second));

        // Same status and reason: no Event.
        let again = ready(std::slice::from_ref(&second), &no_domain, Some(2), at(300));
        assert_eq!(again, second);
        assert!(!is_transition(std::slice::from_ref(&second), &again));

        // Ready: a new transition time.
        let ok = Verdict::ready("Provisioned", "ok");
        let third = ready(std::slice::from_ref(&again), &ok, Some(2), at(400));
        assert_eq!(
            (third.status.as_str(), third.last_transition_time.clone()),
            ("True", at(400))
        );
    }
}

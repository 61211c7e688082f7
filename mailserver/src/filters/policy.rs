//! What the pipeline does when a filter gives no answer (down, slow, circuit open, message over
//! its size limit): never a silent pass.

use std::str::FromStr;

/// The configured answer to a filter failure.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FailurePolicy {
    /// `451 4.7.1`: the client keeps the message and retries later.
    #[default]
    Tempfail,
    /// Accept, marked with a header saying which filter did not look at it.
    AcceptWithHeader,
}

/// The policy's decision for one failed check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailureDecision {
    Tempfail,
    /// Accept and add this header line (name, value).
    Accept {
        header: (String, String),
    },
}

impl FailurePolicy {
    /// The decision for `filter` (`rspamd`, `clamav`) having failed with `reason`.
    pub fn decide(self, filter: &str, reason: &str) -> FailureDecision {
        match self {
            FailurePolicy::Tempfail => FailureDecision::Tempfail,
            FailurePolicy::AcceptWithHeader => FailureDecision::Accept {
                header: (
                    "X-Filter-Skipped".to_string(),
                    format!("{filter}; {}", header_safe(reason)),
                ),
            },
        }
    }
}

impl FromStr for FailurePolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tempfail" => Ok(FailurePolicy::Tempfail),
            "accept-with-header" | "accept" => Ok(FailurePolicy::AcceptWithHeader),
            other => Err(format!(
                "unknown filter failure policy {other:?} (tempfail, accept-with-header)"
            )),
        }
    }
}

/// `s` with control characters (CR, LF, ...) replaced, so it cannot break a header.
pub fn header_safe(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_and_decide() {
        assert_eq!("tempfail".parse(), Ok(FailurePolicy::Tempfail));
        assert_eq!(
            "accept-with-header".parse(),
            Ok(FailurePolicy::AcceptWithHeader)
        );
        assert!("pass".parse::<FailurePolicy>().is_err());
        assert_eq!(
            FailurePolicy::default().decide("clamav", "down"),
            FailureDecision::Tempfail
        );
        assert_eq!(
            FailurePolicy::AcceptWithHeader.decide("clamav", "timed out\r\nX-Evil: 1"),
            FailureDecision::Accept {
                header: (
                    "X-Filter-Skipped".into(),
                    "clamav; timed out  X-Evil: 1".into()
                )
            }
        );
    }
}

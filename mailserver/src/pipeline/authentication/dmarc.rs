//! DMARC (RFC 7489): is the `From:` domain aligned with a passing SPF or DKIM identity, and
//! what does its policy ask for when not.

use mail_auth::dmarc::Policy;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::{AuthenticatedMessage, DkimOutput, DmarcOutput, DmarcResult, MessageAuthenticator};

use super::spf::Spf;
use crate::pipeline::Envelope;

/// The DMARC evaluation of one message.
pub struct Dmarc {
    pub output: DmarcOutput,
}

/// The result as `Authentication-Results` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail,
    TempError,
    PermError,
    None,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::TempError => "temperror",
            Outcome::PermError => "permerror",
            Outcome::None => "none",
        }
    }
}

pub async fn verify(
    auth: &MessageAuthenticator,
    message: &AuthenticatedMessage<'_>,
    dkim: &[DkimOutput<'_>],
    _envelope: &Envelope,
    spf: &Spf,
) -> Dmarc {
    let output = auth
        .verify_dmarc(DmarcParameters::new(
            message,
            dkim,
            &spf.mail_from_domain,
            &spf.mail_from,
        ))
        .await;
    Dmarc { output }
}

impl Dmarc {
    pub fn has_record(&self) -> bool {
        self.output.dmarc_record().is_some()
    }

    pub fn outcome(&self) -> Outcome {
        let (spf, dkim) = (self.output.spf_result(), self.output.dkim_result());
        if *spf == DmarcResult::Pass || *dkim == DmarcResult::Pass {
            return Outcome::Pass;
        }
        for result in [spf, dkim] {
            match result {
                DmarcResult::TempError(_) => return Outcome::TempError,
                DmarcResult::PermError(_) => return Outcome::PermError,
                DmarcResult::Pass | DmarcResult::Fail(_) | DmarcResult::None => {}
            }
        }
        // A record and no aligned pass is a failure, whether or not anything passed unaligned.
        if self.has_record() {
            Outcome::Fail
        } else {
            Outcome::None
        }
    }

    /// The policy to apply: `Some` only for a real failure under `p=quarantine` or `p=reject`
    /// (never for a temporary DNS error).
    pub fn failed_policy(&self) -> Option<Policy> {
        match (self.outcome(), self.output.policy()) {
            (Outcome::Fail, policy @ (Policy::Reject | Policy::Quarantine)) => Some(policy),
            _ => None,
        }
    }
}

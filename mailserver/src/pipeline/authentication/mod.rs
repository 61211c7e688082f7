//! Sender authentication on MX listeners: SPF ([`spf`]), DKIM ([`dkim`]), ARC ([`arc`]) and
//! DMARC ([`dmarc`]) with mail-auth, recorded in an `Authentication-Results` header
//! ([`results`]). A DMARC failure under the sender's `p=reject` or `p=quarantine` rejects or
//! quarantines as configured; DNS trouble only ever gives `temperror`, never a refusal.
//! Authenticated submission skips all of it (and its DNS queries).

pub mod arc;
pub mod dkim;
pub mod dmarc;
pub mod results;
pub mod spf;

use mail_auth::AuthenticatedMessage;

use super::settings::{OnFail, PipelineSettings};
use super::{Check, CheckInput, Disposition, IncomingMessage, Verdict};
use crate::smtp::Reply;

/// The SPF/DKIM/ARC/DMARC check.
pub struct SenderAuthentication {
    settings: PipelineSettings,
    dmarc_reject: OnFail,
    dmarc_quarantine: OnFail,
    spf_fail: OnFail,
}

impl SenderAuthentication {
    pub fn new(settings: &PipelineSettings) -> Self {
        Self {
            settings: settings.clone(),
            dmarc_reject: settings.dmarc_reject,
            dmarc_quarantine: settings.dmarc_quarantine,
            spf_fail: settings.spf_fail,
        }
    }
}

/// What a failure configured as `on_fail` does.
fn act(on_fail: OnFail, reason: &str) -> Disposition {
    match on_fail {
        OnFail::Accept => Disposition::Accept,
        OnFail::Quarantine => Disposition::Quarantine(reason.to_string()),
        OnFail::Reject => Disposition::Reject(Reply::new(
            550,
            Some([5, 7, 1]),
            format!("message refused: {reason}"),
        )),
    }
}

#[async_trait::async_trait]
impl Check for SenderAuthentication {
    fn name(&self) -> &'static str {
        "sender-authentication"
    }

    fn applies(&self, message: &IncomingMessage) -> bool {
        let envelope = &message.envelope;
        !envelope.submission && envelope.authenticated.is_none()
    }

    async fn check(&self, input: &CheckInput<'_>) -> Verdict {
        let envelope = &input.message.envelope;
        let authenticator = super::dns::authenticator(&self.settings);
        let Some(auth) = authenticator else {
            return Verdict {
                disposition: Disposition::Accept,
                headers: vec![results::unavailable(input.hostname)],
            };
        };
        let spf = spf::verify(&auth, envelope, input.hostname).await;
        let Some(message) = AuthenticatedMessage::parse(input.raw) else {
            // Not a message mail-auth can read (no header at all): SPF alone is recorded.
            let mut found = results::Results::new(input.hostname, envelope);
            found.spf(&spf);
            return Verdict {
                disposition: spf::disposition(&spf, self.spf_fail),
                headers: vec![found.header()],
            };
        };
        let dkim = dkim::verify(&auth, &message).await;
        let arc = arc::verify(&auth, &message).await;
        let dmarc = dmarc::verify(&auth, &message, &dkim, envelope, &spf).await;
        let mut found = results::Results::new(input.hostname, envelope);
        found.spf(&spf);
        found.dkim(&dkim, &message);
        found.arc(&arc);
        found.dmarc(&dmarc);
        let disposition = match dmarc.failed_policy() {
            Some(mail_auth::dmarc::Policy::Reject) => act(self.dmarc_reject, "DMARC policy"),
            Some(_) => act(self.dmarc_quarantine, "DMARC policy"),
            // DMARC has the last word when the domain has a record; else SPF's fail counts.
            None if dmarc.has_record() => Disposition::Accept,
            None => spf::disposition(&spf, self.spf_fail),
        };
        Verdict {
            disposition,
            headers: vec![found.header()],
        }
    }
}

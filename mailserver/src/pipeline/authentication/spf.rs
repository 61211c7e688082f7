//! SPF (RFC 7208) for the HELO identity and the MAIL FROM identity (the HELO's
//! `postmaster@` for the null sender).

use mail_auth::spf::verify::SpfParameters;
use mail_auth::{MessageAuthenticator, SpfOutput, SpfResult};

use super::act;
use crate::pipeline::settings::OnFail;
use crate::pipeline::{Disposition, Envelope};

/// Both SPF results of a transaction.
pub struct Spf {
    pub helo: SpfOutput,
    pub mail_from: SpfOutput,
    /// The domain of the MAIL FROM identity (the HELO name for the null sender).
    pub mail_from_domain: String,
}

pub async fn verify(auth: &MessageAuthenticator, envelope: &Envelope, hostname: &str) -> Spf {
    let helo_domain = envelope.helo.as_str();
    let helo = auth
        .verify_spf(SpfParameters::verify_ehlo(
            envelope.client_ip,
            helo_domain,
            hostname,
        ))
        .await;
    let sender = match envelope.sender.as_str() {
        "" => format!("postmaster@{helo_domain}"),
        sender => sender.to_string(),
    };
    let mail_from_domain = sender
        .rsplit_once('@')
        .map_or(helo_domain, |(_, domain)| domain)
        .to_lowercase();
    let mail_from = auth
        .verify_spf(SpfParameters::verify_mail_from(
            envelope.client_ip,
            helo_domain,
            hostname,
            &sender,
        ))
        .await;
    Spf {
        helo,
        mail_from,
        mail_from_domain,
    }
}

/// What SPF alone decides: only a hard `fail` counts, as configured.
pub fn disposition(spf: &Spf, on_fail: OnFail) -> Disposition {
    match spf.mail_from.result() {
        SpfResult::Fail => act(on_fail, "SPF fail"),
        _ => Disposition::Accept,
    }
}

//! Whether a certificate is expired or about to be: worth a warning at load, not a refusal
//! (an expired certificate on port 25 still encrypts for MTAs that do not verify).

use std::time::{Duration, SystemTime};

use rustls_pki_types::{CertificateDer, UnixTime};

/// How far ahead an approaching expiry is worth a warning; cert-manager renews at two thirds
/// of a 90-day lifetime, so a certificate this close to its end means renewal is failing.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// A sentence for the log if `cert` is not valid at `now` or will not be within
/// [`EXPIRY_WARNING`]; `None` when it is fine (or cannot be parsed, which loading reports).
pub fn expiry_warning(cert: &CertificateDer<'_>, now: SystemTime) -> Option<String> {
    let since_epoch = now.duration_since(SystemTime::UNIX_EPOCH).ok()?;
    let problem = |at: Duration| {
        let cert = webpki::EndEntityCert::try_from(cert).ok()?;
        // With no trust anchors, webpki checks the validity dates first and then fails for
        // want of an issuer: the dates are all this asks about.
        let at = UnixTime::since_unix_epoch(at);
        let usage = webpki::KeyUsage::server_auth();
        match cert.verify_for_usage(&[], &[], &[], at, usage, None, None) {
            Err(
                e @ (webpki::Error::CertExpired { .. } | webpki::Error::CertNotValidYet { .. }),
            ) => Some(e),
            _ => None,
        }
    };
    let message = match problem(since_epoch).or_else(|| problem(since_epoch + EXPIRY_WARNING))? {
        webpki::Error::CertExpired { not_after, .. } if now_is_past(not_after, since_epoch) => {
            format!("expired on {}", date(not_after))
        }
        webpki::Error::CertExpired { not_after, .. } => format!("expires on {}", date(not_after)),
        webpki::Error::CertNotValidYet { not_before, .. } => {
            format!("not valid before {}", date(not_before))
        }
        _ => return None,
    };
    Some(message)
}

fn now_is_past(time: UnixTime, now: Duration) -> bool {
    Duration::from_secs(time.as_secs()) < now
}

fn date(time: UnixTime) -> String {
    let secs = i64::try_from(time.as_secs()).unwrap_or(i64::MAX);
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| format!("{secs} s after 1970"))
}

//! The `Authentication-Results` header (RFC 8601) with our hostname as authserv-id, and the
//! removal of such headers a sender forged with our authserv-id (section 5: they would be
//! trusted downstream).

use std::fmt::Write;

use mail_auth::{ArcOutput, AuthenticatedMessage, AuthenticationResults, DkimOutput, DkimResult};

use super::dmarc::Dmarc;
use super::spf::Spf;
use crate::pipeline::Envelope;

/// The header being built.
pub struct Results<'a> {
    hostname: &'a str,
    envelope: &'a Envelope,
    text: String,
}

impl<'a> Results<'a> {
    pub fn new(hostname: &'a str, envelope: &'a Envelope) -> Self {
        Self {
            hostname,
            envelope,
            text: String::new(),
        }
    }

    /// Appends the part mail-auth formatted after its authserv-id.
    fn push(&mut self, formatted: AuthenticationResults<'_>) {
        let formatted = formatted.to_string();
        if let Some(rest) = formatted.strip_prefix(self.hostname) {
            self.text.push_str(rest);
        }
    }

    pub fn spf(&mut self, spf: &Spf) {
        let envelope = self.envelope;
        let part = AuthenticationResults::new(self.hostname)
            .with_spf_mailfrom_result(
                &spf.mail_from,
                envelope.client_ip,
                &envelope.sender,
                &envelope.helo,
            )
            .with_spf_ehlo_result(&spf.helo, envelope.client_ip, &envelope.helo);
        self.push(part);
    }

    pub fn dkim(&mut self, dkim: &[DkimOutput<'_>], message: &AuthenticatedMessage<'_>) {
        if dkim.is_empty() || dkim.iter().all(|d| *d.result() == DkimResult::None) {
            self.text.push_str(";\r\n\tdkim=none");
            return;
        }
        let from = message.from.first().map(String::as_str).unwrap_or_default();
        let part = AuthenticationResults::new(self.hostname).with_dkim_results(dkim, from);
        let mut part = part.to_string();
        // mail-auth calls a body hash mismatch `neutral`; RFC 6376 section 6.1.3 makes it a
        // verification failure (PERMFAIL), which RFC 8601 section 2.7.1 records as `fail`.
        part = part.replace(
            "dkim=neutral (body hash did not verify)",
            "dkim=fail (body hash did not verify)",
        );
        if let Some(rest) = part.strip_prefix(self.hostname) {
            self.text.push_str(rest);
        }
    }

    pub fn arc(&mut self, arc: &ArcOutput<'_>) {
        let part =
            AuthenticationResults::new(self.hostname).with_arc_result(arc, self.envelope.client_ip);
        self.push(part);
    }

    pub fn dmarc(&mut self, dmarc: &Dmarc) {
        let _ = write!(
            self.text,
            ";\r\n\tdmarc={} header.from={} policy.dmarc={}",
            dmarc.outcome().as_str(),
            dmarc.output.domain(),
            dmarc.output.policy()
        );
    }

    /// The complete header field, ending in CRLF.
    pub fn header(&self) -> String {
        format!("Authentication-Results: {}{}\r\n", self.hostname, self.text)
    }
}

/// The header when no resolver could be built at all: every method is a temporary error.
pub fn unavailable(hostname: &str) -> String {
    format!(
        "Authentication-Results: {hostname};\r\n\tspf=temperror;\r\n\tdkim=temperror;\r\n\
         \tdmarc=temperror\r\n"
    )
}

/// `raw` without the `Authentication-Results` fields of its header section whose authserv-id
/// is `hostname` (compared without case); `None` when there are none (nothing to copy).
pub fn strip_forged(raw: &[u8], hostname: &str) -> Option<Vec<u8>> {
    let header_end = find(raw, b"\r\n\r\n").map_or(raw.len(), |i| i + 2);
    let mut fields = Vec::new();
    let mut start = 0;
    let mut pos = 0;
    while pos < header_end {
        let line_end = find(&raw[pos..header_end], b"\r\n").map_or(header_end, |i| pos + i + 2);
        let next_folds =
            raw.get(line_end).is_some_and(|b| *b == b' ' || *b == b'\t') && line_end < header_end;
        if !next_folds {
            fields.push(start..line_end);
            start = line_end;
        }
        pos = line_end;
    }
    let forged: Vec<_> = fields
        .into_iter()
        .filter(|range| claims(&raw[range.clone()], hostname))
        .collect();
    if forged.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut at = 0;
    for range in forged {
        out.extend_from_slice(&raw[at..range.start]);
        at = range.end;
    }
    out.extend_from_slice(&raw[at..]);
    Some(out)
}

/// Whether a header field is an `Authentication-Results` naming `hostname` as authserv-id.
fn claims(field: &[u8], hostname: &str) -> bool {
    let Some(colon) = field.iter().position(|&b| b == b':') else {
        return false;
    };
    let name = String::from_utf8_lossy(&field[..colon]);
    if !name.trim().eq_ignore_ascii_case("Authentication-Results") {
        return false;
    }
    let value = String::from_utf8_lossy(&field[colon + 1..]);
    // Comments before the id are rare; the id ends at blank or `;` (a version may follow).
    let id = value
        .trim_start()
        .split(|c: char| c == ';' || c.is_whitespace())
        .next()
        .unwrap_or_default();
    id.eq_ignore_ascii_case(hostname)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forged_results_are_removed() {
        let raw = b"Received: x\r\nAuthentication-Results: MX.Test;\r\n\tdkim=pass\r\n\
                    Subject: hi\r\nAuthentication-Results: other.test; spf=pass\r\n\
                    authentication-results:mx.test 1; dmarc=pass\r\n\r\n\
                    Authentication-Results: mx.test; in the body\r\n";
        let stripped = strip_forged(raw, "mx.test").unwrap();
        assert_eq!(
            String::from_utf8(stripped).unwrap(),
            "Received: x\r\nSubject: hi\r\nAuthentication-Results: other.test; spf=pass\r\n\r\n\
             Authentication-Results: mx.test; in the body\r\n"
        );
        assert_eq!(strip_forged(b"Subject: x\r\n\r\nbody\r\n", "mx.test"), None);
        assert_eq!(
            strip_forged(
                b"Authentication-Results: mx.test.evil; x\r\n\r\n",
                "mx.test"
            ),
            None
        );
    }
}

//! The delivery pipeline: what happens to a message between the end of DATA and the `250`.
//!
//! SMTP ends a transaction with one [`IncomingMessage`] (the envelope and the spooled body).
//! An ordered list of [`Check`]s, one file each, look at it and return a [`Verdict`]: accept,
//! reject with a code, fail temporarily, quarantine into Junk, and headers to add. Whether a
//! failed check rejects or quarantines is configuration ([`OnFail`]), not code. Then the
//! [`router`] files each recipient locally or hands it to the outbound queue ([`Outbound`]).
//!
//! - [`authentication`]: SPF, DKIM, ARC and DMARC (mail-auth) and the `Authentication-Results`
//!   header, on MX listeners only.
//! - [`router`]: local delivery or the outbound queue, SRS for forwarded mail ([`srs`]).
//!
//! Later filters (Rspamd, ClamAV, Sieve) are one more file each implementing [`Check`].

pub mod authentication;
pub mod dns;
pub mod envelope;
pub mod router;
pub mod settings;
pub mod srs;

use std::sync::Arc;

pub use envelope::{BodyType, Dsn, Envelope, MailParams, Notify, Rcpt, Ret, Target};
pub use router::{Outbound, OutboundError};
pub use settings::{OnFail, PipelineSettings};

use crate::smtp::Reply;
use crate::smtp::session::Body;

/// A message at the end of its SMTP transaction.
#[derive(Debug)]
pub struct IncomingMessage {
    /// The transaction id (`Received`, logs, the `250`).
    pub id: String,
    pub envelope: Envelope,
    /// The received message, trace headers first.
    pub body: Body,
}

/// What one check decided about a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Disposition {
    Accept,
    /// File into every recipient's Junk folder; the reason goes into the logs.
    Quarantine(String),
    /// Refuse with this (5xx) reply.
    Reject(Reply),
    /// Refuse with this (4xx) reply: the client tries again later.
    TempFail(Reply),
}

/// A check's answer: what to do and the header fields to prepend (each ending in CRLF).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub disposition: Disposition,
    pub headers: Vec<String>,
}

impl Verdict {
    pub fn accept() -> Self {
        Self {
            disposition: Disposition::Accept,
            headers: Vec::new(),
        }
    }
}

/// What a check sees: the message, and its whole text when it asked for it.
pub struct CheckInput<'a> {
    pub message: &'a IncomingMessage,
    /// The message's bytes (trace headers first), loaded once for all checks that need them.
    pub raw: &'a [u8],
    /// This server's name (the authserv-id of `Authentication-Results`).
    pub hostname: &'a str,
}

/// One step of the pipeline.
#[async_trait::async_trait]
pub trait Check: Send + Sync {
    /// For logs and metrics.
    fn name(&self) -> &'static str;
    /// Whether the check runs for this message at all (most skip authenticated submission).
    fn applies(&self, message: &IncomingMessage) -> bool;
    async fn check(&self, input: &CheckInput<'_>) -> Verdict;
}

/// The outcome of every check together.
#[derive(Debug, PartialEq, Eq)]
pub struct Decision {
    pub disposition: Disposition,
    /// Header fields to prepend, in order.
    pub headers: Vec<String>,
}

/// The ordered checks of one server.
#[derive(Clone, Default)]
pub struct Pipeline {
    checks: Vec<Arc<dyn Check>>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self.checks.iter().map(|c| c.name()).collect();
        f.debug_struct("Pipeline").field("checks", &names).finish()
    }
}

impl Pipeline {
    /// The checks `settings` turn on, in order.
    pub fn from_settings(settings: &PipelineSettings) -> Self {
        let mut pipeline = Self::default();
        if settings.authentication {
            pipeline = pipeline.with(authentication::SenderAuthentication::new(settings));
        }
        pipeline
    }

    pub fn with(mut self, check: impl Check + 'static) -> Self {
        self.checks.push(Arc::new(check));
        self
    }

    /// Whether any check runs for `message` (when none does, its body is never loaded).
    pub fn applies(&self, message: &IncomingMessage) -> bool {
        self.checks.iter().any(|c| c.applies(message))
    }

    /// Runs the checks that apply in order; the first reject or tempfail ends the run.
    pub async fn run(&self, message: &IncomingMessage, raw: &[u8], hostname: &str) -> Decision {
        let input = CheckInput {
            message,
            raw,
            hostname,
        };
        let mut decision = Decision {
            disposition: Disposition::Accept,
            headers: Vec::new(),
        };
        for check in self.checks.iter().filter(|c| c.applies(message)) {
            let verdict = check.check(&input).await;
            decision.headers.extend(verdict.headers);
            match verdict.disposition {
                Disposition::Accept => {}
                Disposition::Quarantine(reason) => {
                    tracing::info!(id = %message.id, check = check.name(), %reason, "quarantined");
                    decision.disposition = Disposition::Quarantine(reason);
                }
                refusal @ (Disposition::Reject(_) | Disposition::TempFail(_)) => {
                    tracing::info!(id = %message.id, check = check.name(), ?refusal, "refused");
                    decision.disposition = refusal;
                    return decision;
                }
            }
        }
        decision
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(&'static str, Disposition, bool);

    #[async_trait::async_trait]
    impl Check for Fixed {
        fn name(&self) -> &'static str {
            self.0
        }
        fn applies(&self, _: &IncomingMessage) -> bool {
            self.2
        }
        async fn check(&self, _: &CheckInput<'_>) -> Verdict {
            Verdict {
                disposition: self.1.clone(),
                headers: vec![format!("X-{}: yes\r\n", self.0)],
            }
        }
    }

    fn message() -> IncomingMessage {
        IncomingMessage {
            id: "ID".into(),
            envelope: Envelope::test("a@x.test"),
            body: Body::Memory(b"Subject: x\r\n\r\nhi\r\n".to_vec()),
        }
    }

    #[tokio::test]
    async fn checks_run_in_order_and_the_first_refusal_wins() {
        let reject = Reply::new(550, Some([5, 7, 1]), "no");
        let junk = Disposition::Quarantine("spam".into());
        for (checks, want, headers) in [
            (vec![], Disposition::Accept, vec![]),
            (
                vec![
                    Fixed("a", Disposition::Accept, true),
                    Fixed("b", junk.clone(), true),
                ],
                junk.clone(),
                vec!["X-a: yes\r\n", "X-b: yes\r\n"],
            ),
            (
                vec![
                    Fixed("a", Disposition::Reject(reject.clone()), true),
                    Fixed("b", junk.clone(), true),
                ],
                Disposition::Reject(reject.clone()),
                vec!["X-a: yes\r\n"],
            ),
            (
                vec![
                    Fixed("a", Disposition::Reject(reject.clone()), false),
                    Fixed("b", Disposition::Accept, true),
                ],
                Disposition::Accept,
                vec!["X-b: yes\r\n"],
            ),
        ] {
            let pipeline = checks
                .into_iter()
                .fold(Pipeline::default(), |p, c| p.with(c));
            let m = message();
            let decision = pipeline.run(&m, b"", "mx.test").await;
            assert_eq!(decision.disposition, want);
            assert_eq!(decision.headers, headers);
        }
    }
}

//! What the pipeline does, from the command line (`--dns-server`, `--dmarc-reject` ...).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::Outbound;
use super::dns::ResolverSlot;

/// What a failed check leads to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OnFail {
    /// Refuse the message (`550 5.7.1`).
    Reject,
    /// Accept it into the recipients' Junk folders.
    Quarantine,
    /// Accept it; the result is only recorded in `Authentication-Results`.
    Accept,
}

/// The pipeline's configuration.
#[derive(Clone)]
pub struct PipelineSettings {
    /// SPF, DKIM, ARC and DMARC on MX listeners. Off in [`Default`] (tests and tools that
    /// set up no DNS); the command line turns it on unless `--sender-auth false`.
    pub authentication: bool,
    /// The DNS resolver (UDP and TCP); the system's (`/etc/resolv.conf`) when `None`.
    pub dns_server: Option<SocketAddr>,
    /// How long one DNS query may take before the check records `temperror`.
    pub dns_timeout: Duration,
    /// A DMARC failure under `p=reject`.
    pub dmarc_reject: OnFail,
    /// A DMARC failure under `p=quarantine`.
    pub dmarc_quarantine: OnFail,
    /// An SPF `fail` (without DMARC deciding otherwise).
    pub spf_fail: OnFail,
    /// The key of SRS addresses for forwarded mail (`--srs-secret-file`); forwarding keeps
    /// the original sender without one.
    pub srs_secret: Option<Vec<u8>>,
    /// The outbound queue, for relayed and forwarded recipients; without it, remote
    /// recipients are refused at RCPT.
    pub outbound: Option<Arc<dyn Outbound>>,
    /// The resolver, built on first use and shared by the clones of these settings.
    pub resolver: ResolverSlot,
}

impl Default for PipelineSettings {
    fn default() -> Self {
        Self {
            authentication: false,
            dns_server: None,
            dns_timeout: Duration::from_secs(5),
            dmarc_reject: OnFail::Reject,
            dmarc_quarantine: OnFail::Quarantine,
            spf_fail: OnFail::Accept,
            srs_secret: None,
            outbound: None,
            resolver: ResolverSlot::default(),
        }
    }
}

impl std::fmt::Debug for PipelineSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineSettings")
            .field("authentication", &self.authentication)
            .field("dns_server", &self.dns_server)
            .field("dns_timeout", &self.dns_timeout)
            .field("dmarc_reject", &self.dmarc_reject)
            .field("dmarc_quarantine", &self.dmarc_quarantine)
            .field("spf_fail", &self.spf_fail)
            .field("srs_secret", &self.srs_secret.is_some())
            .field("outbound", &self.outbound.is_some())
            .finish()
    }
}

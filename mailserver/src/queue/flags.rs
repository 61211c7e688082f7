//! The command-line settings of the outbound queue and delivery (flattened into
//! [`crate::config::Config`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::QueueSettings;
use super::runner::{RunnerSettings, random_suffix};
use crate::outbound::client::TlsMode;
use crate::outbound::{OutboundConfig, Smarthost};

#[derive(Args, Debug, Clone)]
pub struct QueueFlags {
    /// DNS server for MX, A/AAAA and MTA-STS lookups, `IP:PORT`. Unset: the system's resolver.
    #[arg(long, env = "MAIL_DNS_SERVER")]
    pub dns_server: Option<SocketAddr>,

    /// Run a queue runner in this process (every pod may; leases keep them apart).
    #[arg(long, env = "MAIL_QUEUE_RUNNER", default_value_t = true, action = clap::ArgAction::Set)]
    pub queue_runner: bool,

    /// Seconds a queued message is retried before it bounces (default 5 days).
    #[arg(long, env = "MAIL_QUEUE_LIFETIME", default_value_t = 5 * 24 * 3600)]
    pub queue_lifetime: u64,

    /// Seconds after which an undelivered recipient gets a delay notice (default 4 hours).
    #[arg(long, env = "MAIL_QUEUE_DELAY_NOTICE", default_value_t = 4 * 3600)]
    pub queue_delay_notice: u64,

    /// Seconds before the first retry; each next one waits twice as long.
    #[arg(long, env = "MAIL_QUEUE_RETRY_BASE", default_value_t = 60)]
    pub queue_retry_base: u64,

    /// Most seconds between two retries.
    #[arg(long, env = "MAIL_QUEUE_RETRY_MAX", default_value_t = 3600)]
    pub queue_retry_max: u64,

    /// Milliseconds between looks for due work when no enqueue was announced.
    #[arg(long, env = "MAIL_QUEUE_POLL_MS", default_value_t = 5000)]
    pub queue_poll_ms: u64,

    /// Messages one runner delivers at the same time.
    #[arg(long, env = "MAIL_QUEUE_CONCURRENCY", default_value_t = 32)]
    pub queue_concurrency: usize,

    /// Port of remote MX hosts (25; a test sink elsewhere).
    #[arg(long, env = "MAIL_OUTBOUND_SMTP_PORT", default_value_t = 25)]
    pub outbound_smtp_port: u16,

    /// Port of MTA-STS policy hosts (443; a test server elsewhere).
    #[arg(long, env = "MAIL_OUTBOUND_HTTPS_PORT", default_value_t = 443)]
    pub outbound_https_port: u16,

    /// Extra CA certificates (PEM) trusted for verified outbound TLS, e.g. a test CA.
    #[arg(long, env = "MAIL_OUTBOUND_CA_FILE")]
    pub outbound_ca_file: Option<PathBuf>,

    /// Send all outbound mail through this relay, `HOST:PORT`.
    #[arg(long, env = "MAIL_SMARTHOST")]
    pub smarthost: Option<String>,

    /// TLS with the smarthost: `starttls`, `implicit` or `none` (loopback relays only).
    #[arg(long, env = "MAIL_SMARTHOST_TLS", default_value = "starttls", value_parser = parse_tls)]
    pub smarthost_tls: TlsMode,

    /// User name for AUTH at the smarthost.
    #[arg(long, env = "MAIL_SMARTHOST_USER")]
    pub smarthost_user: Option<String>,

    /// File holding the smarthost password (a mounted Secret).
    #[arg(long, env = "MAIL_SMARTHOST_PASSWORD_FILE")]
    pub smarthost_password_file: Option<PathBuf>,
}

fn parse_tls(text: &str) -> Result<TlsMode, String> {
    match text {
        "starttls" => Ok(TlsMode::StartTls),
        "implicit" => Ok(TlsMode::Implicit),
        "none" => Ok(TlsMode::None),
        other => Err(format!("{other:?}: expected starttls, implicit or none")),
    }
}

impl QueueFlags {
    pub fn queue_settings(&self, hostname: &str) -> QueueSettings {
        QueueSettings {
            lifetime: Duration::from_secs(self.queue_lifetime),
            delay_notice: Duration::from_secs(self.queue_delay_notice),
            retry_base: Duration::from_secs(self.queue_retry_base),
            retry_max: Duration::from_secs(self.queue_retry_max),
            hostname: hostname.to_string(),
            sign: true,
        }
    }

    pub fn runner_settings(&self, hostname: &str) -> RunnerSettings {
        RunnerSettings {
            owner: format!("{hostname}-{}-{}", std::process::id(), random_suffix()),
            poll: Duration::from_millis(self.queue_poll_ms.max(10)),
            concurrency: self.queue_concurrency.max(1),
            ..RunnerSettings::default()
        }
    }

    /// The outbound configuration; reads the CA and password files.
    pub fn outbound(&self, hostname: &str) -> anyhow::Result<OutboundConfig> {
        let extra_ca = match &self.outbound_ca_file {
            Some(path) => {
                let certs: Result<Vec<CertificateDer<'static>>, _> =
                    CertificateDer::pem_file_iter(path)
                        .with_context(|| format!("reading {}", path.display()))?
                        .collect();
                certs.with_context(|| format!("certificates in {}", path.display()))?
            }
            None => Vec::new(),
        };
        let smarthost = match &self.smarthost {
            Some(spec) => {
                let (host, port) = spec
                    .rsplit_once(':')
                    .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse().ok()?)))
                    .with_context(|| format!("--smarthost {spec:?}: expected HOST:PORT"))?;
                let password = match &self.smarthost_password_file {
                    Some(path) => Some(
                        std::fs::read_to_string(path)
                            .with_context(|| format!("reading {}", path.display()))?
                            .trim_end_matches(['\r', '\n'])
                            .to_string(),
                    ),
                    None => None,
                };
                Some(Smarthost {
                    host: host.to_string(),
                    port,
                    tls: self.smarthost_tls,
                    username: self.smarthost_user.clone(),
                    password,
                })
            }
            None => None,
        };
        Ok(OutboundConfig {
            hostname: hostname.to_string(),
            dns_server: self.dns_server,
            smtp_port: self.outbound_smtp_port,
            https_port: self.outbound_https_port,
            extra_ca,
            smarthost,
            ..OutboundConfig::default()
        })
    }
}

//! Delivery to remote hosts: the SMTP client side of the queue.
//!
//! [`Outbound::deliver`] takes one message and the recipients of one destination domain and
//! returns one [`Outcome`] per recipient. Directly: MX lookup (the implicit MX when there is
//! none, a null MX fails at once), the domain's MTA-STS policy ([`mta_sts`]), then each MX in
//! preference order until one takes the transaction: EHLO, STARTTLS when offered
//! (certificates checked only when MTA-STS `enforce` or REQUIRETLS asks for it), SIZE,
//! 8BITMIME and SMTPUTF8 checks, MAIL, RCPT per recipient, DATA. Through a smarthost: every
//! domain goes to the one relay, over TLS, with AUTH PLAIN or LOGIN.

pub mod client;
pub mod dns;
pub mod mta_sts;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, info};

use client::{ClientError, Session, TlsMode};
use dns::{Destination, Resolver};

/// Where and how outbound mail goes; from the command line.
#[derive(Clone, Debug)]
pub struct OutboundConfig {
    /// The name given in EHLO.
    pub hostname: String,
    /// The DNS server to ask (`None`: the system's resolver).
    pub dns_server: Option<SocketAddr>,
    /// Port of remote MX hosts (25; tests point it at a local sink).
    pub smtp_port: u16,
    /// Port of MTA-STS policy hosts (443; tests point it at a local HTTPS server).
    pub https_port: u16,
    /// Extra trusted CA certificates (PEM) besides the system's, e.g. a test CA.
    pub extra_ca: Vec<rustls_pki_types::CertificateDer<'static>>,
    pub smarthost: Option<Smarthost>,
    pub connect_timeout: Duration,
    /// Per command; RFC 5321 §4.5.3.2 asks for minutes, a stuck peer costs one lease.
    pub command_timeout: Duration,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        Self {
            hostname: "localhost".to_string(),
            dns_server: None,
            smtp_port: 25,
            https_port: 443,
            extra_ca: Vec::new(),
            smarthost: None,
            connect_timeout: Duration::from_secs(30),
            command_timeout: Duration::from_secs(120),
        }
    }
}

/// A relay that takes all outbound mail.
#[derive(Clone, Debug)]
pub struct Smarthost {
    pub host: String,
    pub port: u16,
    /// `Implicit` (port 465), `StartTls` (587) or `None` (loopback relays only).
    pub tls: TlsMode,
    pub username: Option<String>,
    pub password: Option<String>,
}

/// One recipient of a transaction with its RFC 3461 parameters.
#[derive(Clone, Debug)]
pub struct Rcpt {
    pub address: String,
    pub notify: Option<String>,
    pub orcpt: Option<String>,
}

/// A message on its way out: the bytes as sent (DKIM header first, CRLF line ends).
#[derive(Clone, Debug)]
pub struct Message {
    pub from: String,
    pub data: Arc<Vec<u8>>,
    pub env_id: Option<String>,
    pub ret: Option<crate::queue::Ret>,
    pub requiretls: bool,
}

impl Message {
    /// Whether the envelope needs SMTPUTF8 (non-ASCII addresses).
    pub fn needs_smtputf8(&self, rcpts: &[Rcpt]) -> bool {
        !self.from.is_ascii() || rcpts.iter().any(|r| !r.address.is_ascii())
    }

    /// Whether the content has 8-bit bytes (needs 8BITMIME).
    pub fn is_8bit(&self) -> bool {
        !self.data.is_ascii()
    }
}

/// What a remote host (or we) said about a recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// `2.0.0`, `4.4.1`, `5.1.1`...
    pub enhanced: String,
    /// The reply (`550 5.1.1 no such user`) or our own reason.
    pub text: String,
    /// The host that answered, when one did.
    pub mta: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Delivered(Status),
    Temporary(Status),
    Permanent(Status),
}

impl Outcome {
    pub fn temporary(enhanced: &str, text: impl Into<String>) -> Self {
        Outcome::Temporary(Status {
            enhanced: enhanced.to_string(),
            text: text.into(),
            mta: None,
        })
    }

    pub fn permanent(enhanced: &str, text: impl Into<String>) -> Self {
        Outcome::Permanent(Status {
            enhanced: enhanced.to_string(),
            text: text.into(),
            mta: None,
        })
    }

    pub fn status(&self) -> &Status {
        match self {
            Outcome::Delivered(s) | Outcome::Temporary(s) | Outcome::Permanent(s) => s,
        }
    }
}

/// The outbound side: resolver, TLS configurations and the MTA-STS cache.
pub struct Outbound {
    config: OutboundConfig,
    resolver: Resolver,
    tls: tls::Clients,
    sts: mta_sts::Cache,
}

/// What one host did with the transaction: results, or why it was not tried further.
enum HostResult {
    Done(Vec<Outcome>),
    Failed(Outcome),
}

impl Outbound {
    pub fn new(config: OutboundConfig) -> anyhow::Result<Self> {
        let resolver = Resolver::new(config.dns_server)?;
        let tls = tls::Clients::new(&config.extra_ca)?;
        Ok(Self {
            config,
            resolver,
            tls,
            sts: mta_sts::Cache::default(),
        })
    }

    pub fn config(&self) -> &OutboundConfig {
        &self.config
    }

    /// Delivers `message` to `rcpts`, all at `domain`; one outcome per recipient, in order.
    pub async fn deliver(&self, domain: &str, message: &Message, rcpts: &[Rcpt]) -> Vec<Outcome> {
        let all = |outcome: Outcome| vec![outcome; rcpts.len()];
        if let Some(relay) = &self.config.smarthost {
            return match self.via_smarthost(relay, message, rcpts).await {
                HostResult::Done(outcomes) => outcomes,
                HostResult::Failed(outcome) => all(outcome),
            };
        }
        let policy = self
            .sts
            .policy(&self.resolver, &self.tls, domain, self.config.https_port)
            .await;
        let hosts = match self.resolver.destinations(domain).await {
            Ok(Destination::Hosts(hosts)) => hosts,
            Ok(Destination::NullMx) => {
                return all(Outcome::permanent(
                    "5.1.10",
                    format!("{domain} accepts no mail (null MX, RFC 7505)"),
                ));
            }
            Ok(Destination::NoDomain) => {
                return all(Outcome::permanent(
                    "5.1.2",
                    format!("{domain} does not exist in DNS"),
                ));
            }
            Err(error) => {
                return all(Outcome::temporary(
                    "4.4.3",
                    format!("DNS lookup for {domain} failed: {error}"),
                ));
            }
        };
        let enforce = policy.as_ref().filter(|p| p.enforces());
        let hosts: Vec<String> = match enforce {
            Some(policy) => hosts.into_iter().filter(|h| policy.allows(h)).collect(),
            None => hosts,
        };
        if hosts.is_empty() {
            return all(Outcome::temporary(
                "4.7.5",
                format!("no MX host of {domain} matches its MTA-STS policy"),
            ));
        }
        let verify = enforce.is_some() || message.requiretls;
        let mut last = Outcome::temporary("4.4.1", format!("no MX host of {domain} answered"));
        for host in &hosts {
            let addresses = match self.resolver.addresses(host).await {
                Ok(addresses) if !addresses.is_empty() => addresses,
                Ok(_) | Err(_) => {
                    last = Outcome::temporary("4.4.3", format!("MX host {host} has no address"));
                    continue;
                }
            };
            for ip in addresses {
                let address = SocketAddr::new(ip, self.config.smtp_port);
                let target = Target {
                    host,
                    address,
                    tls: TlsMode::Opportunistic,
                    verify,
                    auth: None,
                };
                match self.try_host(&target, message, rcpts).await {
                    HostResult::Done(outcomes) => return outcomes,
                    HostResult::Failed(outcome) => {
                        debug!(%host, %address, reason = %outcome.status().text, "MX host failed");
                        last = outcome;
                    }
                }
            }
        }
        vec![last; rcpts.len()]
    }

    async fn via_smarthost(
        &self,
        relay: &Smarthost,
        message: &Message,
        rcpts: &[Rcpt],
    ) -> HostResult {
        let addresses = match relay.host.parse::<std::net::IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => match self.resolver.addresses(&relay.host).await {
                Ok(addresses) if !addresses.is_empty() => addresses,
                _ => {
                    return HostResult::Failed(Outcome::temporary(
                        "4.4.3",
                        format!("smarthost {} has no address", relay.host),
                    ));
                }
            },
        };
        let auth = match (&relay.username, &relay.password) {
            (Some(user), Some(password)) => Some((user.as_str(), password.as_str())),
            _ => None,
        };
        let mut last = HostResult::Failed(Outcome::temporary("4.4.1", "smarthost unreachable"));
        for ip in addresses {
            let target = Target {
                host: &relay.host,
                address: SocketAddr::new(ip, relay.port),
                tls: relay.tls,
                verify: true,
                auth,
            };
            last = self.try_host(&target, message, rcpts).await;
            if let HostResult::Done(_) = last {
                break;
            }
        }
        last
    }

    async fn try_host(&self, target: &Target<'_>, message: &Message, rcpts: &[Rcpt]) -> HostResult {
        let result = self.transaction(target, message, rcpts).await;
        crate::metrics::outbound_connection(result.is_ok());
        match result {
            Ok(outcomes) => HostResult::Done(outcomes),
            Err(error) => HostResult::Failed(error.into_outcome(target.host)),
        }
    }

    async fn transaction(
        &self,
        target: &Target<'_>,
        message: &Message,
        rcpts: &[Rcpt],
    ) -> Result<Vec<Outcome>, ClientError> {
        let timeouts = client::Timeouts {
            connect: self.config.connect_timeout,
            command: self.config.command_timeout,
        };
        let tls_config = match target.verify {
            true => self.tls.verifying.clone(),
            false => self.tls.any.clone(),
        };
        let mut session = Session::connect(target.address, target.host, timeouts).await?;
        session
            .hello(&self.config.hostname, target.tls, target.verify, tls_config)
            .await?;
        if let Some((user, password)) = target.auth {
            session.authenticate(user, password).await?;
        }
        let outcomes = session.send(message, rcpts).await?;
        session.quit().await;
        info!(
            host = target.host,
            address = %target.address,
            tls = session.is_tls(),
            delivered = outcomes.iter().filter(|o| matches!(o, Outcome::Delivered(_))).count(),
            "transaction done"
        );
        Ok(outcomes)
    }
}

struct Target<'a> {
    host: &'a str,
    address: SocketAddr,
    tls: TlsMode,
    /// Whether TLS is required with a verified certificate for `host`.
    verify: bool,
    auth: Option<(&'a str, &'a str)>,
}

//! The DNS resolver of the authentication checks: built on first use and shared by every
//! connection of one server (the clones of its [`PipelineSettings`]), so its cache serves them
//! all. Not process-wide: a resolver's sockets belong to the runtime that opened them.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use mail_auth::MessageAuthenticator;
use mail_auth::hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
use mail_auth::hickory_resolver::system_conf::read_system_conf;

use super::PipelineSettings;

/// The resolver slot of one server's settings; a fresh one per [`Default`].
#[derive(Clone, Default)]
pub struct ResolverSlot(Arc<OnceLock<Option<MessageAuthenticator>>>);

/// The authenticator for `settings`; `None` when the system configuration cannot be read (the
/// checks then record `temperror`).
pub fn authenticator(settings: &PipelineSettings) -> Option<MessageAuthenticator> {
    settings
        .resolver
        .0
        .get_or_init(|| build(settings.dns_server, settings.dns_timeout))
        .clone()
}

fn build(server: Option<SocketAddr>, timeout: Duration) -> Option<MessageAuthenticator> {
    let (config, mut opts) = match server {
        Some(server) => (
            ResolverConfig::from_parts(
                None,
                vec![],
                NameServerConfigGroup::from_ips_clear(&[server.ip()], server.port(), true),
            ),
            ResolverOpts::default(),
        ),
        None => match read_system_conf() {
            Ok(conf) => conf,
            Err(error) => {
                tracing::warn!(%error, "cannot read the system DNS configuration");
                return None;
            }
        },
    };
    opts.timeout = timeout;
    opts.attempts = 1;
    match MessageAuthenticator::new(config, opts) {
        Ok(built) => Some(built),
        Err(error) => {
            tracing::warn!(%error, "cannot build the DNS resolver");
            None
        }
    }
}

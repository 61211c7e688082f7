//! The DNS resolver of the authentication checks: one per configured server and timeout for
//! the whole process, so its cache serves every connection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use mail_auth::MessageAuthenticator;
use mail_auth::hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
use mail_auth::hickory_resolver::system_conf::read_system_conf;

type Key = (Option<SocketAddr>, Duration);

/// The authenticator for `server` (the system's resolver when `None`); `None` when the system
/// configuration cannot be read (the checks then record `temperror`).
pub fn authenticator(
    server: Option<SocketAddr>,
    timeout: Duration,
) -> Option<MessageAuthenticator> {
    static ALL: OnceLock<Mutex<HashMap<Key, MessageAuthenticator>>> = OnceLock::new();
    let all = ALL.get_or_init(Default::default);
    let mut all = all.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(found) = all.get(&(server, timeout)) {
        return Some(found.clone());
    }
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
    let built = match MessageAuthenticator::new(config, opts) {
        Ok(built) => built,
        Err(error) => {
            tracing::warn!(%error, "cannot build the DNS resolver");
            return None;
        }
    };
    all.insert((server, timeout), built.clone());
    Some(built)
}

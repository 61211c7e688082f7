//! Picks the certificate for a handshake by the client's SNI name.

use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::ServerName;

use super::Certificates;

/// The first current certificate whose SAN covers the SNI name (wildcards as webpki matches
/// them; the subject CN is ignored, as by browsers), else the default one. Clients that send
/// no SNI, or connect by IP address, get the default.
#[derive(Debug)]
pub(super) struct BySni(pub(super) Arc<Certificates>);

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let keys = self.0.current();
        let name = hello
            .server_name()
            .and_then(|n| ServerName::try_from(n).ok());
        name.and_then(|name| keys.iter().find(|key| covers(key, &name)))
            .or_else(|| keys.first())
            .cloned()
    }
}

fn covers(key: &CertifiedKey, name: &ServerName<'_>) -> bool {
    key.end_entity_cert()
        .ok()
        .and_then(|der| webpki::EndEntityCert::try_from(der).ok())
        .is_some_and(|cert| cert.verify_is_valid_for_subject_name(name).is_ok())
}

/// The DNS names in the certificate's SAN, for logs (matching goes through [`covers`]).
pub(super) fn names(key: &CertifiedKey) -> Vec<String> {
    key.end_entity_cert()
        .ok()
        .and_then(|der| webpki::EndEntityCert::try_from(der).ok())
        .map(|cert| cert.valid_dns_names().map(str::to_string).collect())
        .unwrap_or_default()
}

//! Where mail for a domain goes (RFC 5321 §5.1): its MX hosts by preference, the domain itself
//! when it has no MX (the implicit MX), nowhere for a null MX (RFC 7505).

use std::net::{IpAddr, SocketAddr};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::rr::RecordType;

/// The answer for a destination domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// Host names to try, in order (lowest preference first, the implicit MX alone).
    Hosts(Vec<String>),
    NullMx,
    NoDomain,
}

pub struct Resolver {
    inner: TokioResolver,
}

impl Resolver {
    /// A resolver asking `server` only, or the system's when `None`.
    pub fn new(server: Option<SocketAddr>) -> anyhow::Result<Self> {
        let inner = match server {
            Some(server) => {
                let servers =
                    NameServerConfigGroup::from_ips_clear(&[server.ip()], server.port(), true);
                let config = ResolverConfig::from_parts(None, vec![], servers);
                let mut builder =
                    TokioResolver::builder_with_config(config, TokioConnectionProvider::default());
                // Tests change their zones between lookups; a real resolver caches anyway.
                builder.options_mut().cache_size = 0;
                builder.build()
            }
            None => TokioResolver::builder_tokio()?.build(),
        };
        Ok(Self { inner })
    }

    pub async fn destinations(&self, domain: &str) -> anyhow::Result<Destination> {
        let name = absolute(domain);
        match self.inner.mx_lookup(name.as_str()).await {
            Ok(lookup) => {
                let mut mx: Vec<(u16, String)> = lookup
                    .iter()
                    .map(|mx| (mx.preference(), mx.exchange().to_ascii()))
                    .collect();
                if mx.len() == 1 && mx[0].1.trim_end_matches('.').is_empty() {
                    return Ok(Destination::NullMx);
                }
                mx.retain(|(_, host)| !host.trim_end_matches('.').is_empty());
                mx.sort();
                mx.dedup_by(|a, b| a.1 == b.1);
                if mx.is_empty() {
                    return Ok(Destination::NullMx);
                }
                Ok(Destination::Hosts(
                    mx.into_iter()
                        .map(|(_, h)| h.trim_end_matches('.').to_lowercase())
                        .collect(),
                ))
            }
            Err(error) if error.is_nx_domain() => Ok(Destination::NoDomain),
            Err(error) if error.is_no_records_found() => Ok(Destination::Hosts(vec![
                domain.trim_end_matches('.').to_lowercase(),
            ])),
            Err(error) => Err(error.into()),
        }
    }

    /// The IPv4 then IPv6 addresses of `host`.
    pub async fn addresses(&self, host: &str) -> anyhow::Result<Vec<IpAddr>> {
        let name = absolute(host);
        let mut out = Vec::new();
        for record_type in [RecordType::A, RecordType::AAAA] {
            match self.inner.lookup(name.as_str(), record_type).await {
                Ok(lookup) => out.extend(lookup.record_iter().filter_map(|r| r.data().ip_addr())),
                Err(error) if error.is_no_records_found() || error.is_nx_domain() => {}
                Err(error) if out.is_empty() => return Err(error.into()),
                Err(_) => {}
            }
        }
        Ok(out)
    }

    /// The TXT strings at `name`, each record's strings joined; empty when there are none.
    pub async fn txt(&self, name: &str) -> anyhow::Result<Vec<String>> {
        match self.inner.txt_lookup(absolute(name).as_str()).await {
            Ok(lookup) => Ok(lookup
                .iter()
                .map(|txt| {
                    txt.txt_data()
                        .iter()
                        .map(|s| String::from_utf8_lossy(s).into_owned())
                        .collect()
                })
                .collect()),
            Err(error) if error.is_no_records_found() || error.is_nx_domain() => Ok(Vec::new()),
            Err(error) => Err(error.into()),
        }
    }
}

/// `name.` so no search domain is appended.
fn absolute(name: &str) -> String {
    let name = name.trim_end_matches('.');
    format!("{name}.")
}

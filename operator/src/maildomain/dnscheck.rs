//! Does DNS serve the records a MailDomain lists? The lookups are I/O; comparing what was
//! served with what is listed is pure.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use mail_provision::dns::txt_text;
use mail_resources::DnsRecord;

/// What DNS serves, by (owner name, type): each record's data in the form the status lists it
/// (TXT as its joined text, the rest as zone data), lower-cased but for TXT.
pub type Served = BTreeMap<(String, String), Vec<String>>;

pub struct DnsChecker {
    resolver: TokioResolver,
}

impl DnsChecker {
    /// The system's resolver (in a pod: the cluster's DNS).
    pub fn system() -> anyhow::Result<Self> {
        let mut builder = TokioResolver::builder_tokio()?;
        builder.options_mut().cache_size = 0;
        Ok(Self {
            resolver: builder.build(),
        })
    }

    /// A resolver that asks `server` only.
    pub fn at(server: SocketAddr) -> Self {
        let servers = NameServerConfigGroup::from_ips_clear(&[server.ip()], server.port(), true);
        let config = ResolverConfig::from_parts(None, vec![], servers);
        let mut builder =
            TokioResolver::builder_with_config(config, TokioConnectionProvider::default());
        // Each check asks afresh: a cached "no such name" would hide a record just published.
        builder.options_mut().cache_size = 0;
        Self {
            resolver: builder.build(),
        }
    }

    /// Looks up every (name, type) of `records`; a failed lookup serves nothing.
    pub async fn served(&self, records: &[DnsRecord]) -> Served {
        let mut served = Served::new();
        for record in records {
            let key = (record.name.clone(), record.record_type.clone());
            if served.contains_key(&key) {
                continue;
            }
            let Ok(record_type) = record.record_type.parse::<RecordType>() else {
                continue;
            };
            let values = match self
                .resolver
                .lookup(record.name.as_str(), record_type)
                .await
            {
                Ok(lookup) => lookup
                    .record_iter()
                    .filter_map(|r| value(r.data()))
                    .collect(),
                Err(_) => Vec::new(),
            };
            served.insert(key, values);
        }
        served
    }
}

impl DnsChecker {
    /// Whether DNS serves every one of `records`.
    pub async fn serves(&self, records: &[DnsRecord]) -> bool {
        missing(records, &self.served(records).await).is_empty()
    }
}

fn value(data: &RData) -> Option<String> {
    match data {
        RData::TXT(txt) => Some(
            txt.txt_data()
                .iter()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect(),
        ),
        RData::MX(_) | RData::SRV(_) | RData::CNAME(_) => {
            Some(data.to_string().to_ascii_lowercase())
        }
        _ => None,
    }
}

/// The listed records DNS does not serve, as `TYPE name` (pure).
pub fn missing(records: &[DnsRecord], served: &Served) -> Vec<String> {
    records
        .iter()
        .filter(|record| {
            let want = if record.record_type == "TXT" {
                txt_text(&record.value)
            } else {
                record.value.to_ascii_lowercase()
            };
            !served
                .get(&(record.name.clone(), record.record_type.clone()))
                .is_some_and(|values| values.contains(&want))
        })
        .map(|record| format!("{} {}", record.record_type, record.name))
        .collect()
}

#[cfg(test)]
mod tests {
    use mail_provision::dns::{self, DkimPublicKey, DnsSettings};
    use mail_resources::DkimAlgorithm;

    use super::*;

    /// BIND's named serving `snippet` as the example.test zone.
    fn named(snippet: &str) -> mail_testkit::Named {
        mail_testkit::Named::start(&[("example.test", snippet)])
    }

    fn records() -> Vec<DnsRecord> {
        let settings = DnsSettings {
            mail_host: "mail.example.net".to_string(),
            ttl: 300,
        };
        let key = DkimPublicKey {
            selector: "s1".to_string(),
            algorithm: DkimAlgorithm::Rsa2048,
            public_key: "A".repeat(392),
        };
        dns::records("example.test", &settings, &[key])
    }

    /// Asks until named answers the SOA: it loads the zone just after it starts.
    async fn ready(checker: &DnsChecker) {
        for _ in 0..100 {
            if checker
                .resolver
                .lookup("example.test.", RecordType::SOA)
                .await
                .is_ok()
            {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("named did not answer");
    }

    #[tokio::test]
    async fn published_records_are_found_and_others_reported() {
        let records = records();
        let server = named(&dns::zone_snippet(&records, 300));
        let checker = DnsChecker::at(server.address());
        ready(&checker).await;

        let served = checker.served(&records).await;
        assert_eq!(missing(&records, &served), Vec::<String>::new());

        // Another mail host: everything pointing at it is reported, TXT policy records are not.
        let elsewhere = dns::records(
            "example.test",
            &DnsSettings {
                mail_host: "mx.other.example".to_string(),
                ttl: 300,
            },
            &[],
        );
        let served = checker.served(&elsewhere).await;
        let gaps = missing(&elsewhere, &served);
        assert!(gaps.contains(&"MX example.test.".to_string()), "{gaps:?}");
        assert!(
            gaps.contains(&"SRV _imaps._tcp.example.test.".to_string()),
            "{gaps:?}"
        );
        assert!(
            !gaps.iter().any(|g| g == "TXT _dmarc.example.test."),
            "{gaps:?}"
        );
    }

    /// The controller with a DNS check: DnsPublished follows what named serves.
    #[tokio::test]
    async fn the_domain_says_whether_dns_serves_its_records() {
        use mail_resources::{MailDomain, MailDomainSpec, MailDomainStatus};

        use crate::fixtures::{self, answers, applied_status, ready_of, run};

        let settings = DnsSettings {
            mail_host: "mail.example.net".to_string(),
            ttl: 3600,
        };
        // named serves the records of another mail host: MX and SRV do not match.
        let wrong = dns::records(
            "example.test",
            &DnsSettings {
                mail_host: "old.example.net".to_string(),
                ..settings.clone()
            },
            &[],
        );
        let server = named(&dns::zone_snippet(&wrong, 300));
        let checker = DnsChecker::at(server.address());
        ready(&checker).await;
        let (ctx, mut api, _blobs) = fixtures::context_checking_dns(checker).await;
        assert_eq!(ctx.dns, settings);

        let mut domain = MailDomain::new(
            "example",
            MailDomainSpec {
                domain: "example.test".to_string(),
                reclaim_policy: Default::default(),
                catch_all: None,
                dns: Default::default(),
            },
        );
        domain.metadata.namespace = Some("default".to_string());
        domain.metadata.finalizers = Some(vec![super::super::FINALIZER.to_string()]);
        let object = serde_json::to_value(&domain).expect("JSON");
        let (action, seen) = run(&mut api, &ctx, &domain, answers(object, vec![])).await;
        let status: MailDomainStatus = applied_status(
            &seen,
            "/apis/mail.kubemail.io/v1alpha1/namespaces/default/maildomains/example/status?&force=true&fieldManager=mail-operator",
        );
        assert_eq!(
            ready_of(&status.conditions),
            ("True".into(), "Provisioned".into())
        );
        let published = &status.conditions[1];
        assert_eq!(
            (
                published.type_.as_str(),
                published.status.as_str(),
                published.reason.as_str()
            ),
            ("DnsPublished", "False", "DnsNotPublished")
        );
        assert!(
            published.message.contains("MX example.test."),
            "{}",
            published.message
        );
        assert_eq!(
            action.expect("reconcile"),
            kube::runtime::controller::Action::requeue(crate::context::NOT_READY_RETRY)
        );
    }
}

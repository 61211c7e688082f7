//! `spec.dns.externalDNS`: the domain's records as an ExternalDNS `DNSEndpoint` the MailDomain
//! owns (so it goes with it), applied by server-side apply; removed when the option is turned
//! off. Building the object is pure.

use std::collections::BTreeMap;

use kube::api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use mail_resources::{DnsRecord, MailDomain};
use serde_json::{Value, json};

use crate::context::{Context, FIELD_MANAGER};

pub fn api_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "externaldns.k8s.io",
        "v1alpha1",
        "DNSEndpoint",
    ))
}

/// The DNSEndpoint's name for a MailDomain.
pub fn name(domain: &MailDomain) -> String {
    format!("{}-mail", domain.name_any())
}

/// The DNSEndpoint for `records`: one endpoint per (name, type), names without the final dot.
pub fn build(domain: &MailDomain, records: &[DnsRecord], ttl: u32) -> Value {
    let mut endpoints: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for record in records {
        let target = if record.record_type == "TXT" {
            // One string: ExternalDNS splits long values where the provider needs it.
            mail_provision::dns::txt_text(&record.value)
        } else {
            record.value.trim_end_matches('.').to_string()
        };
        endpoints
            .entry((
                record.name.trim_end_matches('.').to_string(),
                record.record_type.clone(),
            ))
            .or_default()
            .push(target);
    }
    let endpoints: Vec<Value> = endpoints
        .into_iter()
        .map(|((dns_name, record_type), targets)| {
            json!({"dnsName": dns_name, "recordType": record_type, "recordTTL": ttl, "targets": targets})
        })
        .collect();
    json!({
        "apiVersion": "externaldns.k8s.io/v1alpha1",
        "kind": "DNSEndpoint",
        "metadata": {
            "name": name(domain),
            "labels": {"app.kubernetes.io/managed-by": FIELD_MANAGER},
            "ownerReferences": domain.controller_owner_ref(&()).map(|r| vec![r]),
        },
        "spec": {"endpoints": endpoints},
    })
}

/// Writes or removes the DNSEndpoint as the spec says; returns the name it now holds.
pub async fn publish(
    ctx: &Context,
    domain: &MailDomain,
    records: &[DnsRecord],
) -> Result<Option<String>, kube::Error> {
    let namespace = domain.namespace().unwrap_or_else(|| "default".to_string());
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), &namespace, &api_resource());
    let name = name(domain);
    if domain.spec.dns.external_dns {
        let object = build(domain, records, ctx.dns.ttl);
        api.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&object),
        )
        .await?;
        return Ok(Some(name));
    }
    let published = domain.status.as_ref().and_then(|s| s.dns_endpoint.as_ref());
    if published.is_some() {
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_endpoint_per_name_and_type_with_txt_joined_and_dots_dropped() {
        let mut domain = MailDomain::new(
            "example",
            mail_resources::MailDomainSpec {
                domain: "example.test".to_string(),
                reclaim_policy: Default::default(),
                catch_all: None,
                dns: Default::default(),
                directory: None,
            },
        );
        domain.metadata.uid = Some("u".to_string());
        let record = |name: &str, t: &str, value: &str| DnsRecord {
            name: name.to_string(),
            record_type: t.to_string(),
            value: value.to_string(),
        };
        let records = [
            record("example.test.", "MX", "10 mail.example.net."),
            record("example.test.", "TXT", "\"v=spf1 mx -all\""),
            record(
                "s._domainkey.example.test.",
                "TXT",
                "\"v=DKIM1; p=AB\" \"CD\"",
            ),
            record(
                "_imaps._tcp.example.test.",
                "SRV",
                "0 1 993 mail.example.net.",
            ),
        ];
        let object = build(&domain, &records, 300);
        assert_eq!(object["metadata"]["name"], "example-mail");
        assert_eq!(object["metadata"]["ownerReferences"][0]["uid"], "u");
        let endpoints = object["spec"]["endpoints"].as_array().expect("endpoints");
        let find = |name: &str, t: &str| {
            endpoints
                .iter()
                .find(|e| e["dnsName"] == name && e["recordType"] == t)
                .unwrap_or_else(|| panic!("{name} {t}"))["targets"]
                .clone()
        };
        assert_eq!(find("example.test", "MX"), json!(["10 mail.example.net"]));
        assert_eq!(find("example.test", "TXT"), json!(["v=spf1 mx -all"]));
        assert_eq!(
            find("s._domainkey.example.test", "TXT"),
            json!(["v=DKIM1; p=ABCD"])
        );
        assert_eq!(
            find("_imaps._tcp.example.test", "SRV"),
            json!(["0 1 993 mail.example.net"])
        );
        assert_eq!(endpoints[0]["recordTTL"], 300);
    }
}

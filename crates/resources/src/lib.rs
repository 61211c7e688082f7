//! The custom resources a platform team applies: [`MailDomain`], [`Mailbox`] and [`DkimKey`].
//!
//! The Rust types are the source of truth; `crds/*.yaml` is generated from them by
//! `mail-operator crdgen` and a test keeps the files current. Doc comments become the schema
//! descriptions that `kubectl explain` shows.
#![forbid(unsafe_code)]

mod dkimkey;
mod mailbox;
mod maildomain;
mod quantity;

pub use dkimkey::{
    DkimAlgorithm, DkimKey, DkimKeySpec, DkimKeyStatus, DkimKeyVersion, KeyState, parse_duration,
};
pub use mailbox::{AuthSource, Mailbox, MailboxSpec, MailboxStatus, SecretKeyRef};
pub use maildomain::{
    DnsOptions, DnsRecord, MailDomain, MailDomainSpec, MailDomainStatus, ReclaimPolicy,
};
pub use quantity::{QuantityError, parse_quantity};

pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

/// The API group of every resource here.
pub const GROUP: &str = "mail.kubemail.io";
/// The API version of every resource here.
pub const VERSION: &str = "v1alpha1";

/// Every CRD as `(file name, YAML)`, in a stable order: what `crds/` must hold.
pub fn crd_files() -> Vec<(&'static str, String)> {
    use kube::CustomResourceExt;
    let yaml = |crd| serde_yaml::to_string(&crd).expect("a CRD always serializes");
    vec![
        ("maildomain.yaml", yaml(MailDomain::crd())),
        ("mailbox.yaml", yaml(Mailbox::crd())),
        ("dkimkey.yaml", yaml(DkimKey::crd())),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_crd_is_in_our_group_and_version() {
        for (name, yaml) in crd_files() {
            assert!(yaml.contains(&format!("group: {GROUP}")), "{name}");
            assert!(yaml.contains(&format!("name: {VERSION}")), "{name}");
        }
    }

    #[test]
    fn cross_field_rules_are_in_the_schema_for_the_api_server() {
        let files = crd_files();
        let rules = |i: usize| {
            let crd: serde_yaml::Value = serde_yaml::from_str(&files[i].1).expect("YAML");
            let spec =
                &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
            serde_json::to_string(spec).expect("JSON")
        };
        assert!(rules(0).contains("self.catchAll.lowerAscii().endsWith('@' + self.domain)"));
        assert!(rules(0).contains("domain is immutable"));
        assert!(rules(1).contains("!self.aliases.exists(a"));
        assert!(rules(2).contains("selector is immutable"));
    }

    #[test]
    fn doc_comments_become_descriptions() {
        let files = crd_files();
        let (_, domain) = &files[0];
        assert!(domain.contains("The DNS domain this resource hosts mail for"));
    }
}

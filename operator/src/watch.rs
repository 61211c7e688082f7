//! Which objects a change of another object concerns: a Secret its Mailboxes, a MailDomain the
//! Mailboxes in its domain, a DkimKey its MailDomain. Pure, over the controllers' caches.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use mail_resources::{MailDomain, Mailbox};

/// The Mailboxes whose `passwordSecretRef` names `secret`.
pub fn mailboxes_of_secret(mailboxes: &[Arc<Mailbox>], secret: &Secret) -> Vec<ObjectRef<Mailbox>> {
    mailboxes
        .iter()
        .filter(|m| m.namespace() == secret.namespace())
        .filter(|m| {
            m.spec
                .password_secret_ref
                .as_ref()
                .is_some_and(|r| r.name == secret.name_any())
        })
        .map(|m| ObjectRef::from_obj(m.as_ref()))
        .collect()
}

/// The Mailboxes whose address is in `domain` (any namespace: domains are global in the store).
pub fn mailboxes_of_domain(mailboxes: &[Arc<Mailbox>], domain: &str) -> Vec<ObjectRef<Mailbox>> {
    let suffix = format!("@{}", domain.to_ascii_lowercase());
    mailboxes
        .iter()
        .filter(|m| m.spec.address.to_ascii_lowercase().ends_with(&suffix))
        .map(|m| ObjectRef::from_obj(m.as_ref()))
        .collect()
}

/// The MailDomains that host `domain`.
pub fn domains_named(domains: &[Arc<MailDomain>], domain: &str) -> Vec<ObjectRef<MailDomain>> {
    domains
        .iter()
        .filter(|d| d.spec.domain.eq_ignore_ascii_case(domain))
        .map(|d| ObjectRef::from_obj(d.as_ref()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_resources::{AuthSource, MailboxSpec, SecretKeyRef};

    fn mailbox(name: &str, namespace: &str, address: &str, secret: Option<&str>) -> Arc<Mailbox> {
        let mut m = Mailbox::new(
            name,
            MailboxSpec {
                address: address.to_string(),
                display_name: None,
                quota: "1Gi".to_string(),
                aliases: vec![],
                auth_source: AuthSource::Local,
                password_secret_ref: secret.map(|s| SecretKeyRef {
                    name: s.to_string(),
                    key: "password".to_string(),
                }),
            },
        );
        m.metadata.namespace = Some(namespace.to_string());
        Arc::new(m)
    }

    #[test]
    fn a_secret_concerns_the_mailboxes_that_name_it_in_its_namespace() {
        let boxes = [
            mailbox("a", "mail", "a@x.test", Some("pw")),
            mailbox("b", "other", "b@x.test", Some("pw")),
            mailbox("c", "mail", "c@x.test", Some("other")),
            mailbox("d", "mail", "d@x.test", None),
        ];
        let mut secret = Secret::default();
        secret.metadata.name = Some("pw".to_string());
        secret.metadata.namespace = Some("mail".to_string());
        let names: Vec<String> = mailboxes_of_secret(&boxes, &secret)
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(names, ["a"]);
    }

    #[test]
    fn a_domain_concerns_the_mailboxes_in_it_whatever_the_case() {
        let boxes = [
            mailbox("a", "mail", "A@X.test", None),
            mailbox("b", "mail", "b@sub.x.test", None),
            mailbox("c", "mail", "c@notx.test", None),
        ];
        let names: Vec<String> = mailboxes_of_domain(&boxes, "x.TEST")
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(names, ["a"]);
    }
}

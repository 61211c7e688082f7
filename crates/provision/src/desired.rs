//! The desired state: what the resources ask for, as local mode loads it from manifests and
//! the Kubernetes controller reads it from the API.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use mail_resources::{DkimKey, MailDomain, Mailbox};

/// The namespace of an object that names none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// The data of a `v1` Secret, key to bytes.
pub type SecretData = BTreeMap<String, Vec<u8>>;

/// Every resource that should exist, and the Secrets they may reference.
#[derive(Clone, Debug, Default)]
pub struct Desired {
    pub domains: Vec<MailDomain>,
    pub mailboxes: Vec<Mailbox>,
    pub dkim_keys: Vec<DkimKey>,
    /// Keyed by (namespace, name).
    pub secrets: BTreeMap<(String, String), SecretData>,
}

/// `namespace/name` of an object, for messages.
pub fn object_id(meta: &ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE),
        meta.name.as_deref().unwrap_or("<unnamed>")
    )
}

/// The object's namespace, `default` when unset.
pub fn namespace_of(meta: &ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE)
}

impl Desired {
    /// The password bytes a Mailbox references, if it references one and the Secret holds it.
    pub fn password_of(&self, mailbox: &Mailbox) -> Option<&[u8]> {
        let reference = mailbox.spec.password_secret_ref.as_ref()?;
        let key = (
            namespace_of(&mailbox.metadata).to_string(),
            reference.name.clone(),
        );
        self.secrets
            .get(&key)?
            .get(&reference.key)
            .map(Vec::as_slice)
    }
}

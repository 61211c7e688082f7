use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A user's mailbox: an address that receives mail, with a quota, aliases and a way to log in.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new(
    "!has(self.aliases) || !self.aliases.exists(a, a.lowerAscii() == self.address.lowerAscii())"
).message("a mailbox cannot list its own address as an alias"))]
#[kube(
    group = "mail.kubemail.io",
    version = "v1alpha1",
    kind = "Mailbox",
    namespaced,
    shortname = "mbx",
    status = "MailboxStatus",
    printcolumn = r#"{"name":"Address","type":"string","jsonPath":".spec.address"}"#,
    printcolumn = r#"{"name":"Quota","type":"string","jsonPath":".spec.quota"}"#,
    printcolumn = r#"{"name":"Used","type":"integer","format":"int64","jsonPath":".status.usedBytes"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Auth","type":"string","jsonPath":".spec.authSource","priority":1}"#
)]
#[serde(rename_all = "camelCase")]
pub struct MailboxSpec {
    /// The mailbox's address, `local-part@domain`. The domain must be hosted by a MailDomain.
    /// Local parts are matched case-insensitively; this is also the login name.
    #[schemars(
        length(max = 254),
        regex(pattern = r"^[^@\s]{1,64}@[A-Za-z0-9.-]{1,253}$")
    )]
    pub address: String,

    /// A human name for the mailbox owner, used in generated mail such as bounces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,

    /// Storage quota as a Kubernetes quantity (`1Gi`, `500Mi`, `2G`). Default `1Gi`.
    #[serde(default = "default_quota")]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$"))]
    pub quota: String,

    /// Other addresses that deliver into this mailbox, in any hosted domain.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub aliases: Vec<String>,

    /// Where the password is checked: `local` (the hash from `passwordSecretRef`, kept in
    /// PostgreSQL) or `ldap` (the directory; the local hash, if any, is the fallback).
    #[serde(default)]
    pub auth_source: AuthSource,

    /// The Secret (same namespace) holding the password: either the plain password, which the
    /// operator hashes with argon2id, or an argon2 PHC hash (`$argon2id$...`) stored as it is.
    /// A plain password is never written into the spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeyRef>,
}

fn default_quota() -> String {
    "1Gi".to_string()
}

/// Which directory checks a mailbox's password.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AuthSource {
    /// The argon2id hash kept in PostgreSQL.
    #[default]
    Local,
    /// The LDAP directory, with the PostgreSQL hash as fallback.
    Ldap,
}

impl AuthSource {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthSource::Local => "local",
            AuthSource::Ldap => "ldap",
        }
    }
}

/// A key of a Secret in the resource's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// The Secret's name.
    pub name: String,
    /// The key inside the Secret's data. Default `password`.
    #[serde(default = "default_password_key")]
    pub key: String,
}

fn default_password_key() -> String {
    "password".to_string()
}

/// What the operator observed and did for a Mailbox.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MailboxStatus {
    /// Standard conditions; `Ready` is true once the mailbox can receive mail.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The bytes the mailbox's messages take, as of the last reconcile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_bytes: Option<i64>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

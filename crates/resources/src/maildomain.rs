use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A mail domain the platform hosts: mail for `@<domain>` is accepted, stored and served.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new(
    "!has(self.catchAll) || self.catchAll.lowerAscii().endsWith('@' + self.domain)"
).message("catchAll must be an address in the domain itself"))]
#[kube(
    group = "mail.kubemail.io",
    version = "v1alpha1",
    kind = "MailDomain",
    namespaced,
    shortname = "md",
    status = "MailDomainStatus",
    printcolumn = r#"{"name":"Domain","type":"string","jsonPath":".spec.domain"}"#,
    printcolumn = r#"{"name":"Mailboxes","type":"integer","jsonPath":".status.mailboxes"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Reclaim","type":"string","jsonPath":".spec.reclaimPolicy","priority":1}"#
)]
#[serde(rename_all = "camelCase")]
pub struct MailDomainSpec {
    /// The DNS domain this resource hosts mail for, e.g. `example.com`. Lower case; an
    /// internationalized domain is written in its A-label (punycode) form. Immutable.
    #[schemars(
        length(max = 253),
        regex(
            pattern = r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]([a-z0-9-]{0,61}[a-z0-9])?$"
        )
    )]
    #[x_kube(validation = Rule::new("self == oldSelf").message("domain is immutable; create another MailDomain"))]
    pub domain: String,

    /// What happens to the domain's stored mail when this resource is deleted. `Retain` (the
    /// default) keeps mailboxes, messages and the bucket but stops serving them; re-creating the
    /// resource brings them back. `Delete` removes the rows and empties and deletes the bucket.
    #[serde(default)]
    pub reclaim_policy: ReclaimPolicy,

    /// Deliver mail for unknown local parts of this domain to this mailbox (a full address of a
    /// Mailbox in this domain). Unset: unknown recipients are rejected with `550 5.1.1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch_all: Option<String>,

    /// How the domain's DNS records are published. By default they are only listed in the
    /// status (`dnsRecords`, `zone`) for someone to publish.
    #[serde(default)]
    pub dns: DnsOptions,

    /// Serve every user of this LDAP directory whose address is in the domain, without a
    /// Mailbox resource each: their mailbox appears on first delivery or login. A Mailbox
    /// resource for the same address overrides the directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory: Option<DirectoryRef>,
}

/// Which configured LDAP directory backs a MailDomain.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DirectoryRef {
    /// The name of a directory in the mail server's directory configuration
    /// (`--directory-config`), which holds its URLs, TLS settings and bind Secret.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
    )]
    pub name: String,

    /// Quota of a directory user's mailbox when the directory has no quota attribute for
    /// them, as a Kubernetes quantity. Default `1Gi`.
    #[serde(default = "default_directory_quota")]
    pub default_quota: String,
}

fn default_directory_quota() -> String {
    "1Gi".to_string()
}

/// How a MailDomain's DNS records are published.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct DnsOptions {
    /// Write the records into an ExternalDNS `DNSEndpoint` (externaldns.k8s.io/v1alpha1) named
    /// `<name>-mail`, owned by this MailDomain, for ExternalDNS to publish.
    #[serde(default, rename = "externalDNS")]
    pub external_dns: bool,
}

/// What deleting a MailDomain does to the mail it holds.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ReclaimPolicy {
    /// Keep mailboxes, messages and the bucket; stop serving the domain.
    #[default]
    Retain,
    /// Delete mailboxes, messages and the bucket.
    Delete,
}

impl ReclaimPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            ReclaimPolicy::Retain => "Retain",
            ReclaimPolicy::Delete => "Delete",
        }
    }
}

/// What the operator observed and did for a MailDomain.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MailDomainStatus {
    /// Standard conditions; `Ready` is true once the domain's rows and bucket exist.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// How many mailboxes the domain serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mailboxes: Option<i64>,
    /// The S3 bucket that holds this domain's message bodies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// DNS records to publish for this domain (MX, SPF, DMARC, DKIM, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_records: Vec<DnsRecord>,
    /// The ExternalDNS `DNSEndpoint` the records were written to, when `spec.dns.externalDNS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_endpoint: Option<String>,
    /// The same records as zone file lines, ready to paste into the domain's zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// One DNS record to publish.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DnsRecord {
    /// Fully qualified owner name, e.g. `example.com.` or `sel._domainkey.example.com.`.
    pub name: String,
    /// Record type: MX, TXT, SRV, CNAME.
    #[serde(rename = "type")]
    pub record_type: String,
    /// Record data as a zone file writes it.
    pub value: String,
}

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A DKIM signing key of a hosted domain. The operator generates the key pair into a Secret and
/// publishes the public half in the domain's DNS suggestions; the mail server signs outgoing
/// mail with the domain's active key.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "mail.kubemail.io",
    version = "v1alpha1",
    kind = "DkimKey",
    namespaced,
    shortname = "dkim",
    status = "DkimKeyStatus",
    printcolumn = r#"{"name":"Domain","type":"string","jsonPath":".spec.domain"}"#,
    printcolumn = r#"{"name":"Selector","type":"string","jsonPath":".spec.selector"}"#,
    printcolumn = r#"{"name":"Algorithm","type":"string","jsonPath":".spec.algorithm"}"#,
    printcolumn = r#"{"name":"Active","type":"boolean","jsonPath":".spec.active"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct DkimKeySpec {
    /// The hosted domain this key signs for; a MailDomain must host it. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("domain is immutable"))]
    pub domain: String,

    /// The DKIM selector: the public key is published at `<selector>._domainkey.<domain>`.
    /// Immutable: a new selector is a new DkimKey.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
    )]
    #[x_kube(validation = Rule::new("self == oldSelf").message("selector is immutable; create another DkimKey"))]
    pub selector: String,

    /// The key algorithm: `rsa2048` (the default, understood by every verifier) or `ed25519`.
    #[serde(default)]
    pub algorithm: DkimAlgorithm,

    /// Whether the mail server signs with this key. Keep one active key per domain; an inactive
    /// key stays published so that mail signed before a rotation still verifies.
    #[serde(default = "default_active")]
    pub active: bool,

    /// Rotate the key when the active one is older than this (`<n>d`, `<n>h` or `<n>m`, e.g.
    /// `90d`): a new key pair with the next selector (`<selector>-2`, `-3`...) goes into its
    /// own Secret and the domain's DNS records, becomes active once DNS serves its TXT
    /// record, and the replaced one stays published for `overlap`. Unset: no rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[1-9][0-9]{0,5}[dhm]$"))]
    pub rotate_after: Option<String>,

    /// How long a replaced key stays published after its successor became active, so mail
    /// signed just before still verifies (`<n>d`, `<n>h` or `<n>m`; default `7d`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[1-9][0-9]{0,5}[dhm]$"))]
    pub overlap: Option<String>,
}

/// A duration as `rotateAfter` and `overlap` write it: `<n>d`, `<n>h` or `<n>m`.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("{text:?}: expected a number and d, h or m (e.g. 90d)");
    let (number, unit) = text.split_at(text.len().saturating_sub(1));
    let n: u64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "d" => 86_400,
        "h" => 3_600,
        "m" => 60,
        _ => return Err(bad()),
    };
    if n == 0 {
        return Err(bad());
    }
    Ok(std::time::Duration::from_secs(n.saturating_mul(seconds)))
}

fn default_active() -> bool {
    true
}

/// A DKIM key algorithm.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DkimAlgorithm {
    /// RSA with a 2048-bit modulus, `rsa-sha256`.
    #[default]
    Rsa2048,
    /// Ed25519, `ed25519-sha256` (RFC 8463).
    Ed25519,
}

impl DkimAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            DkimAlgorithm::Rsa2048 => "rsa2048",
            DkimAlgorithm::Ed25519 => "ed25519",
        }
    }
}

/// What the operator observed and did for a DkimKey.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DkimKeyStatus {
    /// Standard conditions; `Ready` is true once the key pair exists.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The DNS TXT record value to publish at `<selector>._domainkey.<domain>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_txt: Option<String>,
    /// The owner name of the TXT record, `<selector>._domainkey.<domain>.`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_name: Option<String>,
    /// The public key, base64 (the `p=` of the record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// The Secret (same namespace, owned by this DkimKey) holding the private key as PKCS#8 PEM
    /// under `private.pem`. An existing key there is never overwritten.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The selector the mail server signs with (the others are published only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_selector: Option<String>,
    /// Every key pair of this DkimKey that is still published, oldest first: one, or during a
    /// rotation the new one (`Pending` until DNS serves it) and the replaced one (`Retiring`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<DkimKeyVersion>,
}

/// One key pair of a DkimKey, under its own selector and Secret.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DkimKeyVersion {
    /// 1 for `spec.selector`, then one more per rotation.
    pub number: u32,
    pub selector: String,
    /// The Secret holding its private key under `private.pem`.
    pub secret_name: String,
    /// `Pending` (published, not yet served by DNS), `Active` (signs) or `Retiring`
    /// (published until `retireAt`).
    pub state: KeyState,
    /// When the key pair was made (RFC 3339).
    pub created_at: String,
    /// When it became active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_since: Option<String>,
    /// When a retiring key is unpublished and its Secret deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retire_at: Option<String>,
}

/// Where a key is in its rotation.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum KeyState {
    #[default]
    Pending,
    Active,
    Retiring,
}

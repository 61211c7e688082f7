//! DKIM signing (RFC 6376, `rsa-sha256`; RFC 8463, `ed25519-sha256`) of outbound mail with the
//! sending domain's active key from `dkim_keys`.
//!
//! The signature is made at enqueue time and stored with the queue row ([`crate::queue`]):
//! the body never changes while queued, so one signature serves every attempt and every
//! destination; the key that was active when the user sent is the one that signs (a rotation
//! keeps the old selector in DNS for a while); and the SMTP client stays free of database
//! reads and CPU-heavy work per attempt.
//!
//! The private key is used through rustls's aws-lc-rs signing keys (PKCS#8 as the operator
//! writes it), so signing adds no crypto library; canonicalization is `relaxed/relaxed`.

mod canon;

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rustls::SignatureScheme;
use rustls::sign::SigningKey;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

pub use canon::{relaxed_body, relaxed_header, split_message};

/// Header fields signed when present (`From` always), in this order.
const SIGNED: [&str; 13] = [
    "from",
    "sender",
    "reply-to",
    "subject",
    "date",
    "message-id",
    "to",
    "cc",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "in-reply-to",
    "references",
];

/// The two key types `dkim_keys` holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    Rsa,
    Ed25519,
}

impl Algorithm {
    fn tag(self) -> &'static str {
        match self {
            Algorithm::Rsa => "rsa-sha256",
            Algorithm::Ed25519 => "ed25519-sha256",
        }
    }
}

/// Why a message was not signed.
#[derive(Debug, thiserror::Error)]
pub enum DkimError {
    #[error("private key of {domain} selector {selector}: {reason}")]
    BadKey {
        domain: String,
        selector: String,
        reason: String,
    },
    #[error("the message has no header section")]
    NoHeader,
    #[error("signing failed: {0}")]
    Sign(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// A domain's signing key, ready to use.
#[derive(Clone)]
pub struct DkimKey {
    pub domain: String,
    pub selector: String,
    pub algorithm: Algorithm,
    key: Arc<dyn SigningKey>,
}

impl std::fmt::Debug for DkimKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DkimKey")
            .field("domain", &self.domain)
            .field("selector", &self.selector)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl DkimKey {
    /// A key from its PKCS#8 PEM (`algorithm` as the `dkim_keys` column spells it).
    pub fn from_pem(
        domain: &str,
        selector: &str,
        algorithm: &str,
        pem: &str,
    ) -> Result<Self, DkimError> {
        let bad = |reason: String| DkimError::BadKey {
            domain: domain.to_string(),
            selector: selector.to_string(),
            reason,
        };
        let algorithm = match algorithm {
            "rsa2048" => Algorithm::Rsa,
            "ed25519" => Algorithm::Ed25519,
            other => return Err(bad(format!("unknown algorithm {other}"))),
        };
        let der = PrivateKeyDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| bad(format!("not a PEM private key: {e}")))?;
        let key = rustls::crypto::aws_lc_rs::sign::any_supported_type(&der)
            .map_err(|e| bad(e.to_string()))?;
        let wanted = match algorithm {
            Algorithm::Rsa => rustls::SignatureAlgorithm::RSA,
            Algorithm::Ed25519 => rustls::SignatureAlgorithm::ED25519,
        };
        if key.algorithm() != wanted {
            return Err(bad(format!("the key is {:?}", key.algorithm())));
        }
        Ok(Self {
            domain: domain.to_lowercase(),
            selector: selector.to_string(),
            algorithm,
            key,
        })
    }

    /// The active key of `domain` that has a private key, if any (the newest when several).
    pub async fn for_domain(db: &PgPool, domain: &str) -> Result<Option<Self>, DkimError> {
        let row: Option<(String, String, String)> = sqlx::query_as(
            "SELECT k.selector, k.algorithm, k.private_key_pem
               FROM dkim_keys k JOIN domains d ON d.id = k.domain_id
              WHERE d.name = $1 AND d.deleted_at IS NULL AND k.active
                AND k.private_key_pem IS NOT NULL
              ORDER BY k.updated_at DESC, k.id DESC
              LIMIT 1",
        )
        .bind(domain.to_lowercase())
        .fetch_optional(db)
        .await?;
        row.map(|(selector, algorithm, pem)| Self::from_pem(domain, &selector, &algorithm, &pem))
            .transpose()
    }

    /// The `DKIM-Signature` header field (folded, ending in CRLF) for `message` at `timestamp`
    /// (seconds since the epoch). CPU work: callers on async workers use `spawn_blocking`.
    pub fn sign(&self, message: &[u8], timestamp: u64) -> Result<String, DkimError> {
        let (header, body) = split_message(message).ok_or(DkimError::NoHeader)?;
        let fields = canon::fields(header);
        let body_hash = BASE64.encode(Sha256::digest(relaxed_body(body)));
        // Each present name once, taking the last instance (RFC 6376 §5.4.2).
        let mut names = Vec::new();
        let mut signed = Vec::new();
        for name in SIGNED {
            if let Some(field) = fields.iter().rev().find(|f| f.name_is(name)) {
                names.push(name);
                signed.extend_from_slice(relaxed_header(field.raw).as_bytes());
            }
        }
        if !names.contains(&"from") {
            // A From-less message still gets the required h=from (it then signs its absence).
            names.insert(0, "from");
        }
        let unsigned = format!(
            "DKIM-Signature: v=1; a={}; c=relaxed/relaxed; d={}; s={};\r\n\tt={timestamp}; h={};\r\n\tbh={body_hash};\r\n\tb=",
            self.algorithm.tag(),
            self.domain,
            self.selector,
            names.join(":"),
        );
        let canonical = relaxed_header(&unsigned);
        // The header being signed goes in without its trailing CRLF (RFC 6376 §3.7).
        signed.extend_from_slice(canonical.trim_end_matches("\r\n").as_bytes());
        let signature = self.raw_sign(&signed)?;
        let mut out = unsigned;
        let b = BASE64.encode(signature);
        for (i, chunk) in b.as_bytes().chunks(72).enumerate() {
            if i > 0 {
                out.push_str("\r\n\t ");
            }
            out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        }
        out.push_str("\r\n");
        Ok(out)
    }

    fn raw_sign(&self, data: &[u8]) -> Result<Vec<u8>, DkimError> {
        let (scheme, input) = match self.algorithm {
            Algorithm::Rsa => (SignatureScheme::RSA_PKCS1_SHA256, data.to_vec()),
            // RFC 8463: Ed25519 signs the SHA-256 of the data (PureEdDSA over the hash).
            Algorithm::Ed25519 => (SignatureScheme::ED25519, Sha256::digest(data).to_vec()),
        };
        let signer = self
            .key
            .choose_scheme(&[scheme])
            .ok_or_else(|| DkimError::Sign(format!("key cannot sign {scheme:?}")))?;
        signer
            .sign(&input)
            .map_err(|e| DkimError::Sign(e.to_string()))
    }
}

/// The domain of the first address in the `From:` header field, lower case.
pub fn from_domain(message: &[u8]) -> Option<String> {
    let (header, _) = split_message(message)?;
    let fields = canon::fields(header);
    let from = fields.iter().find(|f| f.name_is("from"))?;
    let value = from.raw.split_once(':')?.1;
    // The address is inside <...> when a display name is there, else the whole value.
    let address = match (value.rfind('<'), value.rfind('>')) {
        (Some(start), Some(end)) if start < end => &value[start + 1..end],
        _ => value,
    };
    let domain = address.trim().rsplit_once('@')?.1.trim();
    let domain = domain.trim_end_matches(|c: char| c == ',' || c.is_whitespace());
    (!domain.is_empty()).then(|| domain.to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_domains() {
        for (message, want) in [
            (&b"From: a@Example.COM\r\n\r\nx"[..], Some("example.com")),
            (
                b"Subject: x\r\nFrom: \"A, B\" <a@b.test>\r\n\r\n",
                Some("b.test"),
            ),
            (b"Subject: x\r\n\r\n", None),
            (b"From: nobody\r\n\r\n", None),
        ] {
            assert_eq!(from_domain(message).as_deref(), want);
        }
    }

    #[test]
    fn bad_keys_are_errors() {
        for (algorithm, pem) in [
            ("rsa2048", "not pem"),
            (
                "dsa",
                "-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----\n",
            ),
        ] {
            assert!(DkimKey::from_pem("x.test", "s", algorithm, pem).is_err());
        }
    }

    #[test]
    fn ed25519_signs_a_well_formed_header() {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("key");
        let key = DkimKey::from_pem("Example.test", "sel", "ed25519", &pair.serialize_pem())
            .expect("key");
        let header = key
            .sign(
                b"From: a@example.test\r\nSubject: hi\r\n\r\nbody\r\n",
                1700000000,
            )
            .expect("sign");
        assert!(
            header.starts_with("DKIM-Signature: v=1; a=ed25519-sha256;"),
            "{header}"
        );
        assert!(header.contains("d=example.test; s=sel;"), "{header}");
        assert!(header.contains("h=from:subject;"), "{header}");
        assert!(header.ends_with("\r\n"));
        // A key of the other type is refused.
        assert!(DkimKey::from_pem("x.test", "s", "rsa2048", &pair.serialize_pem()).is_err());
    }
}

//! DKIM key pairs: generated (RSA-2048 or Ed25519) as PKCS#8 PEM, and the public half read back
//! from a PEM that a Secret already holds. Pure but for the random numbers. The operator keeps
//! the private key in a Secret; both it and local mode store the pair in the `dkim_keys` row.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use mail_resources::DkimAlgorithm;

/// A private key and the `p=` of its DNS record.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyPair {
    /// PKCS#8 PEM.
    pub private_pem: String,
    /// RSA: base64 of the DER SubjectPublicKeyInfo; Ed25519: base64 of the 32 raw bytes
    /// (RFC 8463 §4.2).
    pub public_key: String,
}

// Keeps private keys out of logs.
impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("public_key", &self.public_key)
            .finish_non_exhaustive()
    }
}

/// A new key pair. RSA generation takes a noticeable fraction of a second: call it off the
/// async workers.
pub fn generate(algorithm: DkimAlgorithm) -> Result<KeyPair, String> {
    let mut rng = rand::rngs::OsRng;
    let pem = match algorithm {
        DkimAlgorithm::Rsa2048 => {
            use rsa::pkcs8::{EncodePrivateKey, LineEnding};
            rsa::RsaPrivateKey::new(&mut rng, 2048)
                .map_err(|e| e.to_string())?
                .to_pkcs8_pem(LineEnding::LF)
                .map_err(|e| e.to_string())?
        }
        DkimAlgorithm::Ed25519 => {
            use ed25519_dalek::pkcs8::{EncodePrivateKey, spki::der::pem::LineEnding};
            ed25519_dalek::SigningKey::generate(&mut rng)
                .to_pkcs8_pem(LineEnding::LF)
                .map_err(|e| e.to_string())?
        }
    };
    from_pem(algorithm, &pem)
}

/// The key pair of an existing PEM, which must be a key of `algorithm`.
pub fn from_pem(algorithm: DkimAlgorithm, pem: &str) -> Result<KeyPair, String> {
    let public_key = match algorithm {
        DkimAlgorithm::Rsa2048 => {
            use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey};
            let key = rsa::RsaPrivateKey::from_pkcs8_pem(pem)
                .map_err(|e| format!("not an RSA PKCS#8 key: {e}"))?;
            let der = key
                .to_public_key()
                .to_public_key_der()
                .map_err(|e| e.to_string())?;
            STANDARD.encode(der.as_bytes())
        }
        DkimAlgorithm::Ed25519 => {
            use ed25519_dalek::pkcs8::DecodePrivateKey;
            let key = ed25519_dalek::SigningKey::from_pkcs8_pem(pem)
                .map_err(|e| format!("not an Ed25519 PKCS#8 key: {e}"))?;
            STANDARD.encode(key.verifying_key().as_bytes())
        }
    };
    Ok(KeyPair {
        private_pem: pem.to_string(),
        public_key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_reads_back_the_same_and_has_the_right_size() {
        for (algorithm, public_len) in [(DkimAlgorithm::Ed25519, 32), (DkimAlgorithm::Rsa2048, 294)]
        {
            let pair = generate(algorithm).expect("generate");
            assert!(pair.private_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
            assert_eq!(from_pem(algorithm, &pair.private_pem).expect("read"), pair);
            let public = STANDARD.decode(&pair.public_key).expect("base64");
            assert_eq!(public.len(), public_len, "{algorithm:?}");
            assert!(!format!("{pair:?}").contains("PRIVATE"));
        }
    }

    #[test]
    fn a_key_of_the_other_algorithm_or_garbage_is_refused() {
        let ed = generate(DkimAlgorithm::Ed25519).expect("generate");
        assert!(from_pem(DkimAlgorithm::Rsa2048, &ed.private_pem).is_err());
        assert!(from_pem(DkimAlgorithm::Ed25519, "not a key").is_err());
    }
}

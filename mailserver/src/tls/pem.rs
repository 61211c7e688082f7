//! One certificate chain and its key, read from PEM files (a mounted Secret's `tls.crt` and
//! `tls.key`), with errors that name the file and say what is wrong with it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, anyhow, bail};
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

/// Where one certificate chain and its private key live, e.g. a mounted Kubernetes Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertKeyPaths {
    /// PEM certificate chain, end-entity certificate first (`tls.crt`).
    pub cert: PathBuf,
    /// PEM private key: PKCS#8, PKCS#1 or SEC1 (`tls.key`).
    pub key: PathBuf,
}

impl CertKeyPaths {
    /// `tls.crt` and `tls.key` in `dir`, the file names of a `kubernetes.io/tls` Secret.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
        }
    }
}

/// The raw contents of both files: what a reload compares to decide whether anything changed.
pub(crate) struct Contents {
    cert: Vec<u8>,
    key: Vec<u8>,
}

impl Contents {
    pub(crate) fn read(paths: &CertKeyPaths) -> anyhow::Result<Self> {
        Ok(Self {
            cert: read(&paths.cert, "certificate chain")?,
            key: read(&paths.key, "private key")?,
        })
    }

    /// A digest of both files, kept instead of the key material itself.
    pub(crate) fn digest(&self) -> [u8; 32] {
        let mut hash = Sha256::new();
        hash.update((self.cert.len() as u64).to_be_bytes());
        hash.update(&self.cert);
        hash.update(&self.key);
        hash.finalize().into()
    }

    /// Parses both files and checks that the key belongs to the first certificate.
    pub(crate) fn parse(
        &self,
        paths: &CertKeyPaths,
        provider: &CryptoProvider,
    ) -> anyhow::Result<Arc<CertifiedKey>> {
        let chain = certificates(&self.cert, &paths.cert)?;
        let key = private_key(&self.key, &paths.key)?;
        webpki::EndEntityCert::try_from(&chain[0]).map_err(|e| {
            anyhow!(
                "{}: the first certificate is not a valid X.509 certificate ({e})",
                paths.cert.display()
            )
        })?;
        let signing_key = provider.key_provider.load_private_key(key).map_err(|e| {
            anyhow!(
                "{}: unsupported private key ({e}); expected RSA, ECDSA P-256/P-384 or Ed25519",
                paths.key.display()
            )
        })?;
        let certified = CertifiedKey::new(chain, signing_key);
        match certified.keys_match() {
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
            Err(_) => bail!(
                "the private key {} does not match the certificate {}",
                paths.key.display(),
                paths.cert.display()
            ),
        }
        Ok(Arc::new(certified))
    }
}

fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read the TLS {what} {}", path.display()))
}

fn certificates(pem: &[u8], path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| malformed(path, e))?;
    if chain.is_empty() {
        bail!(
            "{}: no \"BEGIN CERTIFICATE\" block; expected a PEM certificate chain",
            path.display()
        );
    }
    Ok(chain)
}

fn private_key(pem: &[u8], path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        pem::Error::NoItemsFound => anyhow!(
            "{}: no \"BEGIN PRIVATE KEY\" block (PKCS#8, RSA or EC); expected a PEM private key",
            path.display()
        ),
        e => malformed(path, e),
    })
}

fn malformed(path: &Path, e: pem::Error) -> anyhow::Error {
    // The markers and lines come as bytes, which Display would print as numbers.
    let problem = match e {
        pem::Error::MissingSectionEnd { end_marker } => {
            format!(
                "no \"-----END {}-----\" line",
                String::from_utf8_lossy(&end_marker)
            )
        }
        pem::Error::IllegalSectionStart { line } => {
            format!(
                "bad BEGIN line \"{}\"",
                String::from_utf8_lossy(&line[..line.len().min(80)])
            )
        }
        e => e.to_string(),
    };
    anyhow!("{}: malformed PEM ({problem})", path.display())
}

/// SHA-256 of a certificate's DER, as `AB:CD:...` (what `openssl x509 -fingerprint -sha256` prints).
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    let digest = Sha256::digest(cert.as_ref());
    let hex: Vec<String> = digest.iter().map(|b| format!("{b:02X}")).collect();
    hex.join(":")
}

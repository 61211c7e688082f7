//! The embedded default's certificate: made once under the data directory, reused after.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;

use super::{CertKeyPaths, Certificates};

impl Certificates {
    /// Loads `dir/tls.crt` and `dir/tls.key`, or first creates them (ECDSA P-256, self-signed,
    /// SAN = `names`) if either is missing. Returns the certificates and the fingerprint that
    /// clients will be asked to trust.
    pub fn self_signed(dir: &Path, names: &[String]) -> anyhow::Result<(Arc<Self>, String)> {
        let paths = CertKeyPaths::in_dir(dir);
        if !(paths.cert.exists() && paths.key.exists()) {
            create(&paths, names)?;
            tracing::info!(cert = %paths.cert.display(), ?names, "created a self-signed TLS certificate");
        }
        let certificates = Self::load(std::slice::from_ref(&paths))?;
        let fingerprint = certificates.fingerprint();
        Ok((certificates, fingerprint))
    }
}

fn create(paths: &CertKeyPaths, names: &[String]) -> anyhow::Result<()> {
    let generated = rcgen::generate_simple_self_signed(names.to_vec())
        .with_context(|| format!("cannot make a self-signed certificate for {names:?}"))?;
    if let Some(dir) = paths.cert.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the directory {}", dir.display()))?;
    }
    write_new(
        &paths.key,
        generated.signing_key.serialize_pem().as_bytes(),
        0o600,
    )?;
    write_new(&paths.cert, generated.cert.pem().as_bytes(), 0o644)
}

/// Writes beside `path` then renames, so a crash never leaves half a key behind.
fn write_new(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    let partial = path.with_extension("partial");
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&partial)?;
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::rename(&partial, path)
    };
    write().with_context(|| format!("cannot write {}", path.display()))
}

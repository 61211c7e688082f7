//! How the mail server learns about directories: a small YAML file (`--directory-config`)
//! naming each one, read once at start. Secrets come from files (a mounted Secret), never from
//! the YAML itself.
//!
//! ```yaml
//! directories:
//!   - name: corp
//!     urls: ["ldaps://ldap1.corp:636", "ldaps://ldap2.corp:636"]
//!     caFile: /etc/mail/ldap-ca.pem
//!     bindDn: cn=mail,ou=services,dc=corp
//!     bindPasswordFile: /etc/mail/ldap-bind/password
//!     base: ou=people,dc=corp
//!     filter: "(|(mail=%s)(uid=%u))"
//!     attributes: { quota: mailQuota }
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

/// The file: a list of directories.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryFile {
    pub directories: Vec<DirectorySettings>,
}

/// How the connection is secured. `ldaps://` URLs are TLS from the first byte whatever this
/// says; `starttls` upgrades `ldap://` URLs before anything is sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsSetting {
    /// Clear text on `ldap://` URLs (a directory on the same host or a trusted network).
    #[default]
    None,
    StartTls,
    Ldaps,
}

/// One directory, as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DirectorySettings {
    /// What `MailDomain.spec.directory.name` refers to.
    pub name: String,
    /// Servers, tried in order; the last one that answered is tried first next time.
    pub urls: Vec<String>,
    #[serde(default)]
    pub tls: TlsSetting,
    /// PEM file of the CA certificates to trust for TLS (needed for `starttls` and `ldaps`).
    pub ca_file: Option<PathBuf>,
    /// The service account that searches for users.
    pub bind_dn: String,
    /// File holding the service account's password (one line; a trailing newline is ignored).
    pub bind_password_file: PathBuf,
    /// Where users are searched (subtree).
    pub base: String,
    /// The filter that finds the user logging in: `%s` full login, `%u` local part, `%d`
    /// domain, each escaped (RFC 4515).
    #[serde(default = "default_filter")]
    pub filter: String,
    /// The filter that finds the owner of an address mail arrives for.
    #[serde(default = "default_lookup_filter")]
    pub lookup_filter: String,
    #[serde(default)]
    pub attributes: Attributes,
    /// Service connections kept open (and user binds in flight) at most.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
    #[serde(default = "default_operation_timeout")]
    pub operation_timeout_ms: u64,
    /// How long a verified password is remembered; 0 binds on every login.
    #[serde(default = "default_cache_ttl")]
    pub cache_ttl_seconds: u64,
    #[serde(default = "default_cache_size")]
    pub cache_size: usize,
    /// How long the answer for an address mail arrives for is remembered.
    #[serde(default = "default_lookup_ttl")]
    pub lookup_cache_seconds: u64,
}

/// Which attributes hold what.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Attributes {
    /// The address; its first value is the mailbox address, further values are aliases.
    #[serde(default = "default_address")]
    pub address: String,
    /// More addresses of the user (e.g. `mailAlternateAddress`).
    #[serde(default)]
    pub aliases: Option<String>,
    /// The display name: the first of these the entry has.
    #[serde(default = "default_display_name")]
    pub display_name: Vec<String>,
    /// The mailbox quota in bytes; unset or absent: the domain's default.
    #[serde(default)]
    pub quota: Option<String>,
}

impl Default for Attributes {
    fn default() -> Self {
        Self {
            address: default_address(),
            aliases: None,
            display_name: default_display_name(),
            quota: None,
        }
    }
}

fn default_filter() -> String {
    "(|(mail=%s)(uid=%u))".into()
}
fn default_lookup_filter() -> String {
    "(mail=%s)".into()
}
fn default_pool_size() -> usize {
    4
}
fn default_connect_timeout() -> u64 {
    2000
}
fn default_operation_timeout() -> u64 {
    3000
}
fn default_cache_ttl() -> u64 {
    60
}
fn default_cache_size() -> usize {
    10_000
}
fn default_lookup_ttl() -> u64 {
    30
}
fn default_address() -> String {
    "mail".into()
}
fn default_display_name() -> Vec<String> {
    vec!["displayName".into(), "cn".into()]
}

/// A directory ready to connect to: the settings checked, the secrets read.
#[derive(Clone)]
pub struct Resolved {
    pub settings: DirectorySettings,
    pub bind_password: String,
    /// Set when any URL uses TLS.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Resolved {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.settings.connect_timeout_ms)
    }
    pub fn operation_timeout(&self) -> Duration {
        Duration::from_millis(self.settings.operation_timeout_ms)
    }
}

impl std::fmt::Debug for Resolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolved")
            .field("settings", &self.settings)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// Reads and checks the file; every problem names the directory and the setting.
pub fn load(path: &Path) -> Result<Vec<Resolved>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("directory config {}: {e}", path.display()))?;
    let file: DirectoryFile = serde_yaml::from_str(&text)
        .map_err(|e| format!("directory config {}: {e}", path.display()))?;
    let mut names = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for settings in file.directories {
        if !names.insert(settings.name.clone()) {
            return Err(format!("directory {:?} is named twice", settings.name));
        }
        out.push(resolve(settings)?);
    }
    Ok(out)
}

/// Checks one directory's settings and reads its password and CA files.
pub fn resolve(settings: DirectorySettings) -> Result<Resolved, String> {
    let name = settings.name.clone();
    let problem = |what: String| format!("directory {name:?}: {what}");
    if name.is_empty() {
        return Err(problem("name is empty".into()));
    }
    if settings.urls.is_empty() {
        return Err(problem("urls is empty".into()));
    }
    let mut any_tls = settings.tls != TlsSetting::None;
    for url in &settings.urls {
        match url.split_once("://").map(|(scheme, _)| scheme) {
            Some("ldap") => {}
            Some("ldaps") => any_tls = true,
            _ => return Err(problem(format!("url {url:?} is not ldap:// or ldaps://"))),
        }
    }
    if settings.tls == TlsSetting::Ldaps && settings.urls.iter().any(|u| u.starts_with("ldap:")) {
        return Err(problem(
            "tls is ldaps but a url is ldap://; write ldaps:// URLs".into(),
        ));
    }
    for (what, filter) in [
        ("filter", &settings.filter),
        ("lookupFilter", &settings.lookup_filter),
    ] {
        let sample = super::filter::expand(filter, "user@example.test");
        if ldap3::parse_filter(&sample).is_err() {
            return Err(problem(format!(
                "{what} {filter:?} is not a valid LDAP filter"
            )));
        }
    }
    if !(1..=64).contains(&settings.pool_size) {
        return Err(problem("poolSize must be 1 to 64".into()));
    }
    let bind_password = std::fs::read_to_string(&settings.bind_password_file)
        .map_err(|e| {
            problem(format!(
                "bindPasswordFile {}: {e}",
                settings.bind_password_file.display()
            ))
        })?
        .trim_end_matches(['\r', '\n'])
        .to_string();
    let tls = match (any_tls, &settings.ca_file) {
        (false, _) => None,
        (true, None) => {
            return Err(problem(
                "TLS needs caFile (the CA that signed the server)".into(),
            ));
        }
        (true, Some(ca)) => Some(client_config(ca).map_err(problem)?),
    };
    Ok(Resolved {
        settings,
        bind_password,
        tls,
    })
}

/// A rustls client trusting exactly the certificates in the PEM file `ca`.
fn client_config(ca: &Path) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let certs =
        CertificateDer::pem_file_iter(ca).map_err(|e| format!("caFile {}: {e}", ca.display()))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("caFile {}: {e}", ca.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("caFile {}: {e}", ca.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("caFile {} holds no certificate", ca.display()));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn loads_defaults_and_refuses_mistakes() {
        let dir = tempfile::tempdir().unwrap();
        let pw = write(dir.path(), "pw", "s3cret\n");
        let ok = write(
            dir.path(),
            "ok.yaml",
            &format!(
                "directories:\n- name: corp\n  urls: [ldap://127.0.0.1:1, ldap://127.0.0.1:2]\n  \
                 bindDn: cn=admin\n  bindPasswordFile: {}\n  base: dc=corp\n",
                pw.display()
            ),
        );
        let loaded = load(&ok).unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].bind_password, "s3cret");
        assert_eq!(loaded[0].settings.filter, "(|(mail=%s)(uid=%u))");
        assert_eq!(loaded[0].settings.attributes.address, "mail");
        assert!(loaded[0].tls.is_none());

        for (yaml, want) in [
            ("directories:\n- name: c\n  urls: []\n", "missing field"),
            (
                "directories:\n- {name: c, urls: [], bindDn: x, bindPasswordFile: PW, base: b}\n",
                "urls is empty",
            ),
            (
                "directories:\n- {name: c, urls: [http://x], bindDn: x, bindPasswordFile: PW, base: b}\n",
                "not ldap://",
            ),
            (
                "directories:\n- {name: c, urls: [ldaps://x], bindDn: x, bindPasswordFile: PW, base: b}\n",
                "caFile",
            ),
            (
                "directories:\n- {name: c, urls: [ldap://x], bindDn: x, bindPasswordFile: PW, base: b, filter: \"(mail=%s\"}\n",
                "not a valid LDAP filter",
            ),
            (
                "directories:\n- {name: c, urls: [ldap://x], bindDn: x, bindPasswordFile: /nonexistent, base: b}\n",
                "bindPasswordFile",
            ),
            (
                "directories:\n- {name: c, urls: [ldap://x], bindDn: x, bindPasswordFile: PW, base: b, colour: red}\n",
                "unknown field",
            ),
            (
                "directories:\n- {name: c, urls: [ldap://x], bindDn: x, bindPasswordFile: PW, base: b}\n- {name: c, urls: [ldap://x], bindDn: x, bindPasswordFile: PW, base: b}\n",
                "named twice",
            ),
        ] {
            let path = write(
                dir.path(),
                "bad.yaml",
                &yaml.replace("PW", &pw.display().to_string()),
            );
            let err = load(&path).unwrap_err();
            assert!(err.contains(want), "{yaml}: {err}");
        }
    }
}

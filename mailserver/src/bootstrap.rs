//! From configuration to a ready store: the database (given, or an embedded PostgreSQL), the
//! blob store (S3, or a directory), migrations, and the manifests to apply at start.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use mail_blobstore::{BlobStore, FsBlobStore, S3BlobStore, S3Config};
use mail_localpg::{LocalPostgres, Options as PgOptions};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tracing::{info, warn};

use crate::config::Config;

/// The opened backends. Dropping it stops an embedded PostgreSQL.
pub struct Backends {
    pub pool: PgPool,
    pub blobs: Arc<dyn BlobStore>,
    /// `address, password` of the example users (at reserved example domains, with a plain
    /// password in their manifests); the embedded default prints them.
    pub example_logins: Vec<(String, String)>,
    embedded_pg: Option<LocalPostgres>,
    _scratch: Option<tempfile::TempDir>,
}

impl Backends {
    /// Opens everything the configuration names, runs migrations and applies the manifests.
    pub async fn open(config: &Config) -> anyhow::Result<Self> {
        let scratch = if config.ephemeral {
            Some(tempfile::Builder::new().prefix("mailserver-").tempdir()?)
        } else {
            None
        };
        let data_dir: PathBuf = match &scratch {
            Some(dir) => dir.path().to_path_buf(),
            None => config.data_dir.clone(),
        };

        let (url, embedded_pg) = match &config.database_url {
            Some(url) => (url.clone(), None),
            None => {
                // Ephemeral: localpg's own temporary directory, removed when it stops.
                let pg_dir = (!config.ephemeral)
                    .then(|| mail_localpg::reachable_data_dir(&data_dir.join("postgres")));
                let options = PgOptions {
                    data_dir: pg_dir.clone(),
                    port: 0,
                    fsync: !config.ephemeral,
                };
                let pg = tokio::task::spawn_blocking(move || LocalPostgres::start(options))
                    .await?
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                info!(dir = %pg.data_dir().display(), port = pg.port(), "embedded PostgreSQL started");
                (pg.url("postgres"), Some(pg))
            }
        };
        let pool = PgPoolOptions::new()
            .max_connections(50)
            .connect(&url)
            .await
            .with_context(|| format!("cannot connect to PostgreSQL at {}", redact(&url)))?;
        mail_provision::migrate(&pool)
            .await
            .context("cannot apply the database migrations")?;

        let blobs = open_blobs(config, &data_dir)?;

        let mut example_logins = Vec::new();
        if let Some(dir) = &config.manifests {
            example_logins = apply_manifests(&pool, blobs.as_ref(), dir, &config.bucket_prefix)
                .await
                .with_context(|| format!("cannot apply the manifests in {}", dir.display()))?;
        }

        Ok(Self {
            pool,
            blobs,
            example_logins,
            embedded_pg,
            _scratch: scratch,
        })
    }

    /// Closes the pool and stops an embedded PostgreSQL cleanly.
    pub async fn close(mut self) {
        self.pool.close().await;
        if let Some(pg) = self.embedded_pg.take() {
            let _ = tokio::task::spawn_blocking(move || pg.stop()).await;
        }
    }
}

fn open_blobs(config: &Config, data_dir: &Path) -> anyhow::Result<Arc<dyn BlobStore>> {
    if let Some(endpoint) = &config.s3_endpoint {
        let access_key_id = config
            .s3_access_key_id
            .clone()
            .context("--s3-endpoint needs --s3-access-key-id")?;
        let key_file = config
            .s3_secret_access_key_file
            .as_ref()
            .context("--s3-endpoint needs --s3-secret-access-key-file")?;
        let secret_access_key = std::fs::read_to_string(key_file)
            .with_context(|| format!("cannot read {}", key_file.display()))?
            .trim()
            .to_string();
        let s3 = S3Config {
            endpoint: endpoint.clone(),
            region: config.s3_region.clone(),
            access_key_id,
            secret_access_key,
            path_style: !config.s3_virtual_host_style,
        };
        info!(endpoint, "blob store: S3");
        return Ok(Arc::new(S3BlobStore::new(&s3)));
    }
    let dir = config
        .blob_dir
        .clone()
        .unwrap_or_else(|| data_dir.join("blobs"));
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create the blob directory {}", dir.display()))?;
    info!(dir = %dir.display(), "blob store: filesystem");
    Ok(Arc::new(FsBlobStore::new(dir)))
}

/// The URL without its password, for error messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Applies the manifests of `dir` by the operator's reconcile core (local mode) and returns
/// the example users' logins, for the embedded default to print.
async fn apply_manifests(
    pool: &PgPool,
    blobs: &dyn BlobStore,
    dir: &Path,
    bucket_prefix: &str,
) -> anyhow::Result<Vec<(String, String)>> {
    let loaded = mail_provision::manifests::load_dir(dir)?;
    for warning in &loaded.warnings {
        warn!("{warning}");
    }
    let options = mail_provision::Options {
        bucket_prefix: bucket_prefix.to_string(),
    };
    let report = mail_provision::sync(pool, blobs, &loaded.desired, &options).await?;
    info!(?report, dir = %dir.display(), "manifests applied");
    Ok(example_logins(&loaded.desired))
}

/// `address, password` of the example users: mailboxes at a domain reserved for examples
/// (RFC 2606, RFC 6761) whose Secrets hold a plain password. Anyone else's password stays
/// unprinted, whatever directory the server is given.
fn example_logins(desired: &mail_provision::Desired) -> Vec<(String, String)> {
    desired
        .mailboxes
        .iter()
        .filter(|mailbox| {
            let address = mailbox.spec.address.to_ascii_lowercase();
            address
                .rsplit_once('@')
                .is_some_and(|(_, domain)| is_example_domain(domain))
        })
        .filter_map(|mailbox| {
            let password = std::str::from_utf8(desired.password_of(mailbox)?).ok()?;
            (!password.starts_with("$argon2"))
                .then(|| (mailbox.spec.address.to_lowercase(), password.to_string()))
        })
        .collect()
}

/// Whether `domain` (lower case) can never be a real one: the special-use TLDs and the
/// example second-level domains.
fn is_example_domain(domain: &str) -> bool {
    let domain = domain.trim_end_matches('.');
    let tld = domain.rsplit('.').next().unwrap_or_default();
    matches!(tld, "test" | "example" | "invalid" | "localhost")
        || ["example.com", "example.net", "example.org"]
            .iter()
            .any(|d| domain == *d || domain.ends_with(&format!(".{d}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_only_the_example_users_passwords() {
        let dir = tempfile::tempdir().unwrap();
        let mut manifests = String::new();
        for (domain, user) in [
            ("example.test", "alice"),
            ("corp.acme.io", "carol"),
            ("example.com", "dave"),
            ("shop.example", "erin"),
            ("example.test.acme.io", "frank"),
        ] {
            manifests.push_str(&format!(
                "apiVersion: mail.kubemail.io/v1alpha1\nkind: MailDomain\n\
                 metadata: {{name: {user}-d}}\nspec: {{domain: {domain}}}\n---\n\
                 apiVersion: mail.kubemail.io/v1alpha1\nkind: Mailbox\n\
                 metadata: {{name: {user}}}\n\
                 spec: {{address: {user}@{domain}, passwordSecretRef: {{name: {user}}}}}\n---\n\
                 apiVersion: v1\nkind: Secret\nmetadata: {{name: {user}}}\n\
                 stringData: {{password: {user}-pw}}\n---\n"
            ));
        }
        std::fs::write(dir.path().join("all.yaml"), manifests).unwrap();
        let loaded = mail_provision::manifests::load_dir(dir.path()).unwrap();
        let printed: Vec<String> = example_logins(&loaded.desired)
            .into_iter()
            .map(|(address, _)| address)
            .collect();
        assert_eq!(
            printed,
            [
                "alice@example.test",
                "dave@example.com",
                "erin@shop.example"
            ]
        );
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
    }
}

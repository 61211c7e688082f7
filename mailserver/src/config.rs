//! Command line and environment: where the data lives and where each protocol listens.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// The mail server: SMTP, IMAP and POP3 on PostgreSQL metadata and S3 (or filesystem) bodies.
///
/// With no database URL it runs the embedded default: a PostgreSQL from the system's binaries
/// under the data directory and a filesystem blob store beside it.
#[derive(Parser, Debug, Clone)]
#[command(name = "mailserver", version)]
pub struct Config {
    /// PostgreSQL URL. Unset: start an embedded PostgreSQL from the system's binaries.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,

    /// Where the embedded PostgreSQL and the filesystem blob store keep their files.
    #[arg(long, env = "MAIL_DATA_DIR", default_value = ".kubemail-data")]
    pub data_dir: PathBuf,

    /// Keep nothing: embedded PostgreSQL and blobs in a temporary directory removed at exit.
    #[arg(long, env = "MAIL_EPHEMERAL")]
    pub ephemeral: bool,

    /// S3 endpoint for message bodies, e.g. `http://garage:3900`. Unset: the filesystem store.
    #[arg(long, env = "MAIL_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,

    /// S3 region.
    #[arg(long, env = "MAIL_S3_REGION", default_value = "garage")]
    pub s3_region: String,

    /// S3 access key id.
    #[arg(long, env = "MAIL_S3_ACCESS_KEY_ID")]
    pub s3_access_key_id: Option<String>,

    /// File holding the S3 secret access key (a mounted Secret in Kubernetes).
    #[arg(long, env = "MAIL_S3_SECRET_ACCESS_KEY_FILE")]
    pub s3_secret_access_key_file: Option<PathBuf>,

    /// Use virtual-host style S3 URLs instead of path style.
    #[arg(long, env = "MAIL_S3_VIRTUAL_HOST_STYLE")]
    pub s3_virtual_host_style: bool,

    /// Filesystem blob store directory. Default: `<data-dir>/blobs`.
    #[arg(long, env = "MAIL_BLOB_DIR")]
    pub blob_dir: Option<PathBuf>,

    /// Apply the MailDomain/Mailbox/DkimKey manifests in this directory at start (local mode of
    /// the operator's reconcile core). The embedded default applies `examples/`.
    #[arg(long, env = "MAIL_MANIFESTS")]
    pub manifests: Option<PathBuf>,

    /// Prefix of the per-domain bucket names created when applying manifests.
    #[arg(long, env = "MAIL_BUCKET_PREFIX", default_value = "mail")]
    pub bucket_prefix: String,

    /// SMTP (MX) listen address.
    #[arg(long, env = "MAIL_SMTP_LISTEN", default_value = "127.0.0.1:2525")]
    pub smtp_listen: SocketAddr,

    /// IMAP listen address.
    #[arg(long, env = "MAIL_IMAP_LISTEN", default_value = "127.0.0.1:2143")]
    pub imap_listen: SocketAddr,

    /// POP3 listen address.
    #[arg(long, env = "MAIL_POP3_LISTEN", default_value = "127.0.0.1:2110")]
    pub pop3_listen: SocketAddr,

    /// HTTP listen address for operations: `/healthz`, `/readyz` and `/metrics`.
    #[arg(long, env = "MAIL_HTTP_LISTEN", default_value = "127.0.0.1:8080")]
    pub http_listen: SocketAddr,

    /// The name the server calls itself in greetings and Received headers.
    #[arg(long, env = "MAIL_HOSTNAME", default_value = "localhost")]
    pub hostname: String,

    /// Largest message accepted, in bytes.
    #[arg(long, env = "MAIL_MAX_MESSAGE_SIZE", default_value_t = 50 * 1024 * 1024)]
    pub max_message_size: usize,

    /// Most recipients of one SMTP transaction.
    #[arg(long, env = "MAIL_MAX_RECIPIENTS", default_value_t = 100)]
    pub max_recipients: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_embedded_ports() {
        let config = Config::try_parse_from(["mailserver"]).unwrap();
        assert_eq!(config.smtp_listen.port(), 2525);
        assert_eq!(config.imap_listen.port(), 2143);
        assert_eq!(config.pop3_listen.port(), 2110);
        assert_eq!(config.http_listen.port(), 8080);
        assert!(config.http_listen.ip().is_loopback());
        assert!(config.smtp_listen.ip().is_loopback());
    }

    #[test]
    fn bad_address_is_an_error() {
        let err = Config::try_parse_from(["mailserver", "--smtp-listen", "nowhere"]).unwrap_err();
        assert!(err.to_string().contains("--smtp-listen"), "{err}");
        let err = Config::try_parse_from(["mailserver", "--http-listen", "8080"]).unwrap_err();
        assert!(err.to_string().contains("--http-listen"), "{err}");
    }
}

//! Command line and environment: where the data lives and where each protocol listens.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::listener::{ListenerSpec, Policy, Protocol, Role, TlsMode};
use crate::proxy::Networks;

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

    /// A listener, repeatable: `KIND=ADDRESS[,tls=none|implicit|starttls][,role=mx|submission]
    /// [,tls12=yes|no]`. KIND is `smtp`, `submission`, `submissions`, `imap`, `imaps`, `pop3`
    /// or `pop3s`, each with its usual TLS mode and role, or `https` (client
    /// self-configuration: autoconfig, autodiscover, .mobileconfig, MTA-STS policy). The
    /// environment variable takes several separated by `;`. Default: the seven embedded
    /// listeners on 127.0.0.1 (SMTP 2525, submission 2587, submissions 2465, IMAP 2143,
    /// IMAPS 2993, POP3 2110, POP3S 2995) and HTTPS on 8443.
    #[arg(long = "listen", env = "MAIL_LISTEN", value_delimiter = ';', value_parser = parse_listen)]
    pub listen: Vec<Listen>,

    /// TLS certificate chain (PEM), e.g. a mounted Secret's `tls.crt`. Unset: a self-signed
    /// certificate under the data directory.
    #[arg(long, env = "MAIL_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key (PEM), e.g. a mounted Secret's `tls.key`.
    #[arg(long, env = "MAIL_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Networks allowed (and required) to send a PROXY protocol header (v1 or v2), comma
    /// separated, e.g. `10.0.0.0/8`. Empty: PROXY is off.
    #[arg(long, env = "MAIL_PROXY_TRUSTED", default_value = "")]
    pub proxy_trusted: Networks,

    /// Most connections one client address may hold open, all listeners together.
    #[arg(long, env = "MAIL_MAX_CONNECTIONS_PER_IP", default_value_t = 50)]
    pub max_connections_per_ip: usize,

    /// Accept clear-text logins before TLS from loopback clients (`false`: TLS for everyone).
    #[arg(long, env = "MAIL_PLAINTEXT_LOGIN_LOOPBACK", default_value_t = true, action = clap::ArgAction::Set)]
    pub plaintext_login_loopback: bool,

    /// Seconds a client may stay silent before logging in.
    #[arg(long, env = "MAIL_LOGIN_IDLE_TIMEOUT", default_value_t = 60)]
    pub login_idle_timeout: u64,

    /// Seconds output may stay unread by the client before the connection is closed.
    #[arg(long, env = "MAIL_WRITE_TIMEOUT", default_value_t = 60)]
    pub write_timeout: u64,

    /// Seconds one connection may last in all.
    #[arg(long, env = "MAIL_SESSION_TIMEOUT", default_value_t = 24 * 60 * 60)]
    pub session_timeout: u64,

    /// Seconds shutdown (SIGTERM) waits for open sessions before cutting them.
    #[arg(long, env = "MAIL_GRACE_PERIOD", default_value_t = 10)]
    pub grace_period: u64,

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

    /// Seconds a POP3 maildrop lock outlives its server process (a pod that died); live
    /// sessions renew theirs every third of it.
    #[arg(long, env = "MAIL_POP3_LOCK_TTL", default_value_t = 60)]
    pub pop3_lock_ttl: u64,
    /// Milliseconds after which a failed login is answered, counted from its start: one delay
    /// for every protocol and every reason (unknown user or wrong password alike).
    #[arg(long, env = "MAIL_LOGIN_FAILURE_DELAY_MS", default_value_t = 500)]
    pub login_failure_delay_ms: u64,

    /// Accept `{PLAIN}` / `{CLEAR}` stored passwords (imported from Dovecot). Off: they never
    /// match.
    #[arg(long, env = "MAIL_AUTH_ALLOW_PLAINTEXT_HASHES")]
    pub auth_allow_plaintext_hashes: bool,

    /// Rehash a password stored in an older scheme (SHA512-CRYPT, bcrypt, SSHA...) to argon2id
    /// when its owner logs in with it.
    #[arg(long, env = "MAIL_AUTH_REHASH", default_value_t = true, action = clap::ArgAction::Set)]
    pub auth_rehash: bool,
}

impl Config {
    /// The listeners asked for, or the embedded seven.
    pub fn listeners(&self) -> Vec<ListenerSpec> {
        if !self.listen.is_empty() {
            return self
                .listen
                .iter()
                .filter_map(|l| match l {
                    Listen::Mail(spec) => Some(spec.clone()),
                    Listen::Https(_) => None,
                })
                .collect();
        }
        [
            "smtp=127.0.0.1:2525",
            "submission=127.0.0.1:2587",
            "submissions=127.0.0.1:2465",
            "imap=127.0.0.1:2143",
            "imaps=127.0.0.1:2993",
            "pop3=127.0.0.1:2110",
            "pop3s=127.0.0.1:2995",
        ]
        .into_iter()
        .filter_map(|spec| parse_listener(spec).ok())
        .collect()
    }

    /// The HTTPS listeners asked for, or the embedded one (127.0.0.1:8443).
    pub fn https_listeners(&self) -> Vec<SocketAddr> {
        if self.listen.is_empty() {
            return vec![SocketAddr::from(([127, 0, 0, 1], 8443))];
        }
        self.listen
            .iter()
            .filter_map(|l| match l {
                Listen::Https(address) => Some(*address),
                Listen::Mail(_) => None,
            })
            .collect()
    }

    /// The login policy's settings.
    pub fn auth_settings(&self) -> crate::auth::AuthSettings {
        crate::auth::AuthSettings {
            failure_delay: Duration::from_millis(self.login_failure_delay_ms),
            allow_plaintext_hashes: self.auth_allow_plaintext_hashes,
            rehash: self.auth_rehash,
        }
    }

    /// The connection rules of every listener.
    pub fn policy(&self) -> Policy {
        Policy {
            max_per_ip: self.max_connections_per_ip,
            proxy_trusted: self.proxy_trusted.clone(),
            plaintext_login_loopback: self.plaintext_login_loopback,
            login_idle: Some(Duration::from_secs(self.login_idle_timeout)),
            write_timeout: Some(Duration::from_secs(self.write_timeout)),
            session_timeout: Some(Duration::from_secs(self.session_timeout)),
            ..Policy::default()
        }
    }
}

/// One `--listen`: a mail protocol's listener, or HTTPS for client self-configuration.
#[derive(Clone, Debug)]
pub enum Listen {
    Mail(ListenerSpec),
    Https(SocketAddr),
}

/// Parses one `--listen` (see [`Config::listen`]).
pub fn parse_listen(text: &str) -> Result<Listen, String> {
    match text.trim().strip_prefix("https=") {
        Some(address) => address
            .trim()
            .parse()
            .map(Listen::Https)
            .map_err(|_| format!("{address:?}: expected IP:PORT (https takes no settings)")),
        None => parse_listener(text).map(Listen::Mail),
    }
}

/// Parses `KIND=ADDRESS[,key=value...]` (see [`Config::listen`]).
pub fn parse_listener(text: &str) -> Result<ListenerSpec, String> {
    let mut parts = text.split(',');
    let first = parts.next().unwrap_or("");
    let (kind, address) = first
        .split_once('=')
        .ok_or_else(|| format!("{first:?}: expected KIND=ADDRESS"))?;
    let address: SocketAddr = address
        .trim()
        .parse()
        .map_err(|_| format!("{address:?}: expected IP:PORT"))?;
    let (protocol, tls, role) = match kind.trim() {
        "smtp" => (Protocol::Smtp, TlsMode::StartTls, Role::Mx),
        "submission" => (Protocol::Smtp, TlsMode::StartTls, Role::Submission),
        "submissions" => (Protocol::Smtp, TlsMode::Implicit, Role::Submission),
        "imap" => (Protocol::Imap, TlsMode::StartTls, Role::Mx),
        "imaps" => (Protocol::Imap, TlsMode::Implicit, Role::Mx),
        "pop3" => (Protocol::Pop3, TlsMode::StartTls, Role::Mx),
        "pop3s" => (Protocol::Pop3, TlsMode::Implicit, Role::Mx),
        other => return Err(format!("{other:?}: unknown listener kind")),
    };
    let mut spec = ListenerSpec::new(protocol, address, tls, role);
    for part in parts {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?}: expected key=value"))?;
        match (key.trim(), value.trim()) {
            ("tls", "none") => spec.tls = TlsMode::None,
            ("tls", "implicit") => spec.tls = TlsMode::Implicit,
            ("tls", "starttls") => spec.tls = TlsMode::StartTls,
            ("role", "mx") if protocol == Protocol::Smtp => spec.role = Role::Mx,
            ("role", "submission") if protocol == Protocol::Smtp => spec.role = Role::Submission,
            ("tls12", "yes" | "true") => spec.tls12 = true,
            ("tls12", "no" | "false") => spec.tls12 = false,
            (key, value) => return Err(format!("{key}={value}: not a listener setting here")),
        }
    }
    // TLS 1.2 stays for other MTAs on port 25 only, unless asked for.
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_embedded_ports() {
        let config = Config::try_parse_from(["mailserver"]).unwrap();
        let got: Vec<(&str, u16, TlsMode, bool)> = config
            .listeners()
            .iter()
            .map(|l| (l.label(), l.address.port(), l.tls, l.tls12))
            .collect();
        assert_eq!(
            got,
            vec![
                ("smtp", 2525, TlsMode::StartTls, true),
                ("submission", 2587, TlsMode::StartTls, false),
                ("submissions", 2465, TlsMode::Implicit, false),
                ("imap", 2143, TlsMode::StartTls, false),
                ("imaps", 2993, TlsMode::Implicit, false),
                ("pop3", 2110, TlsMode::StartTls, false),
                ("pop3s", 2995, TlsMode::Implicit, false),
            ]
        );
        assert!(
            config
                .listeners()
                .iter()
                .all(|l| l.address.ip().is_loopback())
        );
        assert_eq!(
            config.https_listeners(),
            [SocketAddr::from(([127, 0, 0, 1], 8443))]
        );
        assert_eq!(config.http_listen.port(), 8080);
        assert!(config.http_listen.ip().is_loopback());
        assert!(config.policy().proxy_trusted.is_empty());
    }

    #[test]
    fn listeners_from_flags_and_env_syntax() {
        let config = Config::try_parse_from([
            "mailserver",
            "--listen",
            "smtp=0.0.0.0:25,tls=none",
            "--listen",
            "submission=[::]:587;imaps=0.0.0.0:993,tls12=yes",
            "--listen",
            "https=0.0.0.0:8443",
        ])
        .unwrap();
        assert_eq!(
            config.https_listeners(),
            [SocketAddr::from(([0, 0, 0, 0], 8443))]
        );
        let only_mail = Config::try_parse_from(["mailserver", "--listen", "imap=0.0.0.0:143"]);
        assert!(only_mail.unwrap().https_listeners().is_empty());
        let got: Vec<String> = config
            .listeners()
            .iter()
            .map(|l| {
                format!(
                    "{} {} {:?} {:?} {}",
                    l.label(),
                    l.address,
                    l.tls,
                    l.role,
                    l.tls12
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                "smtp 0.0.0.0:25 None Mx true",
                "submission [::]:587 StartTls Submission false",
                "imaps 0.0.0.0:993 Implicit Mx true",
            ]
        );
    }

    #[test]
    fn bad_listener_is_an_error() {
        for bad in [
            "smtp",
            "smtp=nowhere",
            "ftp=127.0.0.1:21",
            "imap=127.0.0.1:143,role=submission",
            "smtp=127.0.0.1:25,tls=maybe",
            "https=127.0.0.1:8443,tls=none",
            "https=:443",
        ] {
            let err = Config::try_parse_from(["mailserver", "--listen", bad]).unwrap_err();
            assert!(err.to_string().contains("--listen"), "{bad}: {err}");
        }
    }

    #[test]
    fn bad_address_is_an_error() {
        let err = Config::try_parse_from(["mailserver", "--http-listen", "8080"]).unwrap_err();
        assert!(err.to_string().contains("--http-listen"), "{err}");
        let err =
            Config::try_parse_from(["mailserver", "--proxy-trusted", "10.0.0.0/99"]).unwrap_err();
        assert!(err.to_string().contains("--proxy-trusted"), "{err}");
    }
}

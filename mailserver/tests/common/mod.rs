//! Shared setup for the integration tests: a migrated PostgreSQL database (mail-testkit) with
//! domains, mailboxes and folders, a filesystem blob store in a temp dir, and the server on free
//! loopback ports.
//!
//! ```ignore
//! let world = TestServer::builder()
//!     .domain("example.test")
//!     .mailbox("alice@example.test", Some("secret"))
//!     .start()
//!     .await;
//! world.deliver("alice@example.test", b"Subject: hi\r\n\r\nhello\r\n").await;
//! world.stop().await;
//! ```

// Each test binary compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, SaltString, rand_core::OsRng};
use mail_blobstore::FsBlobStore;
use mailserver::auth::{AuthSettings, Authenticator};
use mailserver::context::Settings;
use mailserver::server::ServerConfig;
use mailserver::store::{MessageMeta, Store};
use mailserver::{Addresses, Context, RunningServer};
use sqlx::PgPool;

/// Quota of a mailbox added without one: more than any test sends.
pub const DEFAULT_QUOTA: i64 = 10_000_000;

/// A context on `pool` with bodies in `blobs` (a directory), calling itself `hostname`.
pub fn context(pool: PgPool, blobs: &Path, hostname: &str) -> Arc<Context> {
    context_with(pool, blobs, hostname, AuthSettings::default())
}

/// [`context`] with the login policy's settings `auth`.
pub fn context_with(
    pool: PgPool,
    blobs: &Path,
    hostname: &str,
    auth: AuthSettings,
) -> Arc<Context> {
    Arc::new(Context {
        store: Store::new(pool.clone(), Arc::new(FsBlobStore::new(blobs))),
        auth: Authenticator::with_settings(pool, auth),
        settings: Settings {
            hostname: hostname.to_string(),
            ..Settings::default()
        },
    })
}

struct Domain {
    name: String,
    /// False for a domain whose bucket is never created, so storing there fails.
    bucketed: bool,
}

struct Mailbox {
    address: String,
    password: Option<String>,
    quota: i64,
}

struct Folder {
    address: String,
    name: String,
    special_use: Option<String>,
}

/// What the database holds before the server starts; see [`TestServer::builder`].
pub struct Builder {
    hostname: String,
    uid_validity: i64,
    domains: Vec<Domain>,
    mailboxes: Vec<Mailbox>,
    folders: Vec<Folder>,
    server: Option<ServerConfig>,
    auth: AuthSettings,
}

impl Builder {
    /// The login policy's settings (default: [`AuthSettings::default`]).
    pub fn auth(mut self, auth: AuthSettings) -> Self {
        self.auth = auth;
        self
    }

    /// Listeners and connection rules other than clear-text SMTP, IMAP and POP3 (addresses
    /// with port 0 get a free port).
    pub fn server(mut self, config: ServerConfig) -> Self {
        self.server = Some(config);
        self
    }

    /// The name the server calls itself (default: [`Settings::default`]'s).
    pub fn hostname(mut self, hostname: &str) -> Self {
        self.hostname = hostname.to_string();
        self
    }

    /// The UIDVALIDITY of every folder (default 1).
    pub fn uid_validity(mut self, uid_validity: i64) -> Self {
        self.uid_validity = uid_validity;
        self
    }

    /// A domain whose bucket (its name with dots as dashes) exists.
    pub fn domain(mut self, name: &str) -> Self {
        self.domains.push(Domain {
            name: name.to_string(),
            bucketed: true,
        });
        self
    }

    /// A domain whose bucket was never created: every delivery to it fails.
    pub fn unbucketed_domain(mut self, name: &str) -> Self {
        self.domains.push(Domain {
            name: name.to_string(),
            bucketed: false,
        });
        self
    }

    /// A mailbox with an INBOX and [`DEFAULT_QUOTA`]; without a password it cannot log in.
    /// Its domain must have been added.
    pub fn mailbox(mut self, address: &str, password: Option<&str>) -> Self {
        self.mailboxes.push(Mailbox {
            address: address.to_string(),
            password: password.map(str::to_string),
            quota: DEFAULT_QUOTA,
        });
        self
    }

    /// A mailbox (no password) with an INBOX and a quota of `quota` bytes.
    pub fn mailbox_with_quota(mut self, address: &str, quota: i64) -> Self {
        self.mailboxes.push(Mailbox {
            address: address.to_string(),
            password: None,
            quota,
        });
        self
    }

    /// One more folder of the mailbox `address` (created after every INBOX).
    pub fn folder(mut self, address: &str, name: &str, special_use: Option<&str>) -> Self {
        self.folders.push(Folder {
            address: address.to_string(),
            name: name.to_string(),
            special_use: special_use.map(str::to_string),
        });
        self
    }

    /// Creates the database rows and buckets, then starts SMTP, IMAP and POP3 on 127.0.0.1:0.
    pub async fn start(mut self) -> TestServer {
        // Blocking: the first call in a process starts PostgreSQL.
        let url = tokio::task::spawn_blocking(mail_testkit::fresh_database)
            .await
            .expect("testkit");
        let pool = PgPool::connect(&url).await.expect("connect");
        mail_provision::migrate(&pool).await.expect("migrate");
        let blobs = tempfile::tempdir().expect("temp dir");
        let ctx = context_with(pool.clone(), blobs.path(), &self.hostname, self.auth);
        for domain in &self.domains {
            let bucket = domain.name.replace('.', "-");
            sqlx::query("INSERT INTO domains (name, bucket) VALUES ($1, $2)")
                .bind(&domain.name)
                .bind(&bucket)
                .execute(&pool)
                .await
                .expect("domain");
            if domain.bucketed {
                ctx.store
                    .blobs()
                    .create_bucket(&bucket)
                    .await
                    .expect("bucket");
            }
        }
        for mailbox in &self.mailboxes {
            let hash = mailbox.password.as_ref().map(|password| {
                Argon2::default()
                    .hash_password(password.as_bytes(), &SaltString::generate(&mut OsRng))
                    .expect("hash")
                    .to_string()
            });
            let domain = mailbox.address.rsplit_once('@').expect("address").1;
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO mailboxes (domain_id, address, quota_bytes, password_hash)
                 SELECT id, $2, $3, $4 FROM domains WHERE name = $1 RETURNING id",
            )
            .bind(domain)
            .bind(&mailbox.address)
            .bind(mailbox.quota)
            .bind(hash)
            .fetch_one(&pool)
            .await
            .unwrap_or_else(|e| panic!("mailbox {} (is its domain added?): {e}", mailbox.address));
            self.insert_folder(&pool, id, "INBOX", Some("inbox")).await;
        }
        for folder in &self.folders {
            let id = mailbox_id(&pool, &folder.address).await;
            self.insert_folder(&pool, id, &folder.name, folder.special_use.as_deref())
                .await;
        }
        let any = "127.0.0.1:0".parse().expect("address");
        let config = self
            .server
            .take()
            .unwrap_or_else(|| ServerConfig::plain(Addresses::all(any)));
        let server = RunningServer::start_with(ctx.clone(), config)
            .await
            .expect("server starts");
        TestServer {
            addresses: server.addresses,
            listeners: server.listeners.clone(),
            server: Some(server),
            ctx,
            _blobs: blobs,
        }
    }

    async fn insert_folder(&self, pool: &PgPool, mailbox: i64, name: &str, use_: Option<&str>) {
        sqlx::query(
            "INSERT INTO folders (mailbox_id, name, special_use, uid_validity)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(mailbox)
        .bind(name)
        .bind(use_)
        .bind(self.uid_validity)
        .execute(pool)
        .await
        .expect("folder");
    }
}

async fn mailbox_id(pool: &PgPool, address: &str) -> i64 {
    sqlx::query_scalar("SELECT id FROM mailboxes WHERE address = $1")
        .bind(address)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("mailbox {address}: {e}"))
}

/// A running server on its own database and blob directory.
pub struct TestServer {
    /// `None` once drained (the database and blobs stay for inspection).
    server: Option<RunningServer>,
    addresses: Addresses,
    listeners: Vec<mailserver::listener::ListenerSpec>,
    ctx: Arc<Context>,
    _blobs: tempfile::TempDir,
}

impl TestServer {
    pub fn builder() -> Builder {
        Builder {
            hostname: Settings::default().hostname,
            uid_validity: 1,
            domains: Vec::new(),
            mailboxes: Vec::new(),
            folders: Vec::new(),
            server: None,
            auth: AuthSettings::default(),
        }
    }

    /// Where SMTP, IMAP and POP3 listen.
    pub fn addresses(&self) -> Addresses {
        self.addresses
    }

    /// The bound address of the first listener labelled `label` (`imaps`, `submission`...).
    pub fn listener(&self, label: &str) -> std::net::SocketAddr {
        self.listeners
            .iter()
            .find(|l| l.label() == label)
            .map(|l| l.address)
            .unwrap_or_else(|| panic!("no {label} listener"))
    }

    /// The filesystem blob store's directory (for a second server process on the same store).
    pub fn blob_dir(&self) -> &Path {
        self._blobs.path()
    }

    pub fn ctx(&self) -> &Arc<Context> {
        &self.ctx
    }

    pub fn pool(&self) -> &PgPool {
        self.ctx.store.db()
    }

    /// Stores `raw` for `address` directly (no SMTP).
    pub async fn deliver(&self, address: &str, raw: &[u8]) {
        let store = &self.ctx.store;
        let rcpt = store
            .resolve_recipient(address)
            .await
            .expect("resolve")
            .unwrap_or_else(|| panic!("{address} exists"));
        store.deliver(raw, &[rcpt]).await.expect("deliver");
    }

    /// The INBOX messages of `address`, bodies included.
    pub async fn inbox(&self, address: &str) -> Vec<(MessageMeta, Vec<u8>)> {
        let store = &self.ctx.store;
        let id = mailbox_id(self.pool(), address).await;
        let folder = store
            .folder(id, "INBOX")
            .await
            .expect("query")
            .expect("inbox");
        let mut out = Vec::new();
        for meta in store.messages(folder.id).await.expect("messages") {
            let body = store.read_body(&meta).await.expect("body");
            out.push((meta, body));
        }
        out
    }

    /// The UIDs in the INBOX of `address`, in order.
    pub async fn uids(&self, address: &str) -> Vec<i64> {
        self.inbox(address)
            .await
            .iter()
            .map(|(meta, _)| meta.uid)
            .collect()
    }

    pub async fn used_bytes(&self, address: &str) -> i64 {
        sqlx::query_scalar("SELECT used_bytes FROM mailboxes WHERE address = $1")
            .bind(address)
            .fetch_one(self.pool())
            .await
            .expect("mailbox")
    }

    pub async fn stop(self) {
        self.drain().await;
    }

    /// Shuts the server down (drain, as on SIGTERM) and keeps the database and blobs.
    pub async fn drain(mut self) -> Self {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
        self
    }
}

/// Runs `python3 -c script args...` (a real client from the standard library), fails the test
/// with everything it printed unless it exits 0, and returns its stdout.
pub async fn python(script: &str, args: &[&str]) -> String {
    let output = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .await
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "python failed:\n{script}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

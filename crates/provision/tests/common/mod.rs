//! Shared helpers of the integration tests: a migrated database and resource builders.
#![allow(dead_code)] // each test file uses a part

use argon2::password_hash::{PasswordHash, PasswordVerifier};

use mail_resources::{
    AuthSource, DkimAlgorithm, DkimKeySpec, MailDomainSpec, MailboxSpec, ReclaimPolicy,
    SecretKeyRef,
};
use sqlx::PgPool;

pub async fn database() -> PgPool {
    let pool = PgPool::connect(&mail_testkit::fresh_database())
        .await
        .expect("connect to the test database");
    mail_provision::migrate(&pool).await.expect("migrate");
    pool
}

pub fn domain(name: &str, policy: ReclaimPolicy) -> MailDomainSpec {
    MailDomainSpec {
        domain: name.to_string(),
        reclaim_policy: policy,
        catch_all: None,
        dns: Default::default(),
    }
}

pub fn mailbox(address: &str, aliases: &[&str]) -> MailboxSpec {
    MailboxSpec {
        address: address.to_string(),
        display_name: None,
        quota: "1Gi".to_string(),
        aliases: aliases.iter().map(|a| a.to_string()).collect(),
        auth_source: AuthSource::Local,
        password_secret_ref: Some(SecretKeyRef {
            name: "pw".to_string(),
            key: "password".to_string(),
        }),
    }
}

pub fn dkim(domain: &str, selector: &str) -> DkimKeySpec {
    DkimKeySpec {
        domain: domain.to_string(),
        selector: selector.to_string(),
        algorithm: DkimAlgorithm::Rsa2048,
        active: true,
        rotate_after: None,
        overlap: None,
    }
}

/// An argon2id PHC string for `password`, made the way a user would outside the operator.
pub fn hash_of(password: &str) -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt = SaltString::encode_b64(b"0123456789abcdef").expect("salt");
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("hash")
        .to_string()
}

pub fn verifies(hash: &str, password: &str) -> bool {
    let parsed = PasswordHash::new(hash).expect("a PHC hash");
    argon2::Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

/// The aliases of a mailbox, sorted.
pub async fn aliases_of(pool: &PgPool, address: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT a.address FROM aliases a JOIN mailboxes m ON m.id = a.mailbox_id
         WHERE m.address = $1 ORDER BY 1",
    )
    .bind(address)
    .fetch_all(pool)
    .await
    .expect("aliases")
}

/// Every row version of the tables the reconciler writes: equal snapshots mean no row changed.
pub async fn snapshot(pool: &PgPool) -> Vec<String> {
    let mut out = Vec::new();
    for table in ["domains", "mailboxes", "aliases", "dkim_keys", "folders"] {
        let rows: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT '{table} ' || id || ' ' || xmin::text FROM {table} ORDER BY id"
        ))
        .fetch_all(pool)
        .await
        .expect("snapshot");
        out.extend(rows);
    }
    out
}

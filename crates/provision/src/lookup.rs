//! What the controllers read back from PostgreSQL: whether a domain is served, its mailbox
//! count and usage, and the DKIM public keys to publish for it.

use mail_resources::DkimAlgorithm;
use sqlx::PgPool;

use crate::dns::DkimPublicKey;
use crate::error::Error;

/// Whether `domain` has a row that is not marked deleted.
pub async fn domain_hosted(pool: &PgPool, domain: &str) -> Result<bool, Error> {
    let hosted: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM domains WHERE name = $1 AND deleted_at IS NULL")
            .bind(domain.to_ascii_lowercase())
            .fetch_optional(pool)
            .await?;
    Ok(hosted.is_some())
}

/// The bucket a domain's row names (the one it was created with, whatever the prefix is now).
pub async fn bucket_of(pool: &PgPool, domain: &str) -> Result<Option<String>, Error> {
    Ok(
        sqlx::query_scalar("SELECT bucket FROM domains WHERE name = $1")
            .bind(domain)
            .fetch_optional(pool)
            .await?,
    )
}

/// How many mailboxes (not marked deleted) the domain serves.
pub async fn mailbox_count(pool: &PgPool, domain: &str) -> Result<i64, Error> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM mailboxes m JOIN domains d ON d.id = m.domain_id
         WHERE d.name = $1 AND m.deleted_at IS NULL",
    )
    .bind(domain)
    .fetch_one(pool)
    .await?)
}

/// The bytes a mailbox's messages take, if the mailbox exists.
pub async fn used_bytes(pool: &PgPool, address: &str) -> Result<Option<i64>, Error> {
    Ok(
        sqlx::query_scalar("SELECT used_bytes FROM mailboxes WHERE address = $1")
            .bind(address.to_ascii_lowercase())
            .fetch_optional(pool)
            .await?,
    )
}

/// The domain's DKIM keys that have a public key, by selector.
pub async fn dkim_public_keys(pool: &PgPool, domain: &str) -> Result<Vec<DkimPublicKey>, Error> {
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT k.selector, k.algorithm, k.public_key FROM dkim_keys k
         JOIN domains d ON d.id = k.domain_id
         WHERE d.name = $1 AND k.public_key IS NOT NULL ORDER BY k.selector",
    )
    .bind(domain)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(selector, algorithm, public_key)| DkimPublicKey {
            selector,
            algorithm: if algorithm == "ed25519" {
                DkimAlgorithm::Ed25519
            } else {
                DkimAlgorithm::Rsa2048
            },
            public_key,
        })
        .collect())
}

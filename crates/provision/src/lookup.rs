//! What the controllers read back from PostgreSQL: whether a domain is served, and the DKIM
//! public keys to publish for it.

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

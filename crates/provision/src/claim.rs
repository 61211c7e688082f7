//! One MailDomain resource per domain: the first to reconcile claims it (`domain_claims`),
//! others are told who has it. Claims outlive operator restarts and leader changes.

use sqlx::PgPool;

use crate::error::Error;

/// Claims `domain` for `owner` (`namespace/name`). `None`: `owner` holds it (now or already);
/// `Some(other)`: another resource does.
pub async fn claim_domain(
    pool: &PgPool,
    domain: &str,
    owner: &str,
) -> Result<Option<String>, Error> {
    let domain = domain.to_ascii_lowercase();
    // A claim committed while this statement waited is not in its snapshot: ask again.
    for _ in 0..3 {
        let holder: Option<String> = sqlx::query_scalar(
            "WITH new AS (
                 INSERT INTO domain_claims (domain, owner) VALUES ($1, $2)
                 ON CONFLICT (domain) DO NOTHING RETURNING owner)
             SELECT owner FROM new UNION ALL SELECT owner FROM domain_claims WHERE domain = $1
             LIMIT 1",
        )
        .bind(&domain)
        .bind(owner)
        .fetch_optional(pool)
        .await?;
        if let Some(holder) = holder {
            return Ok((holder != owner).then_some(holder));
        }
    }
    Err(Error::Conflict(format!(
        "domain {domain}: its claim changed while it was being read; will retry"
    )))
}

/// Who holds `domain`, if anyone.
pub async fn domain_claimant(pool: &PgPool, domain: &str) -> Result<Option<String>, Error> {
    Ok(
        sqlx::query_scalar("SELECT owner FROM domain_claims WHERE domain = $1")
            .bind(domain.to_ascii_lowercase())
            .fetch_optional(pool)
            .await?,
    )
}

/// Gives up `owner`'s claim on `domain` (nothing if another holds it).
pub async fn release_domain(pool: &PgPool, domain: &str, owner: &str) -> Result<(), Error> {
    sqlx::query("DELETE FROM domain_claims WHERE domain = $1 AND owner = $2")
        .bind(domain.to_ascii_lowercase())
        .bind(owner)
        .execute(pool)
        .await?;
    Ok(())
}

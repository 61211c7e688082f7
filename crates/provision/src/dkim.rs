//! DkimKey → a `dkim_keys` row. The operator generates the key pair into a Secret and stores
//! it here with [`store_dkim_key_pair`]; until then the key columns stay NULL. Local mode has
//! no Secrets: [`generate_missing_key_pair`] makes the pair straight into the row, where the
//! mail server reads it either way.

use mail_resources::DkimKeySpec;
use sqlx::PgPool;

use crate::error::{Error, Outcome};

/// Creates or updates the key's row. A changed algorithm clears the key pair, so that the key
/// generator makes one of the new kind.
pub async fn apply_dkim_key(pool: &PgPool, spec: &DkimKeySpec) -> Result<Outcome, Error> {
    let domain_id: Option<i64> =
        sqlx::query_scalar("SELECT id FROM domains WHERE name = $1 AND deleted_at IS NULL")
            .bind(&spec.domain)
            .fetch_optional(pool)
            .await?;
    let Some(domain_id) = domain_id else {
        return Err(Error::Conflict(format!(
            "DKIM key {}: domain {} is not hosted; apply a MailDomain for it first",
            spec.selector, spec.domain
        )));
    };
    let inserted: Option<bool> = sqlx::query_scalar(
        "INSERT INTO dkim_keys (domain_id, selector, algorithm, active) VALUES ($1, $2, $3, $4)
         ON CONFLICT (domain_id, selector) DO UPDATE SET algorithm = EXCLUDED.algorithm,
             active = EXCLUDED.active, updated_at = now(),
             private_key_pem = CASE WHEN dkim_keys.algorithm = EXCLUDED.algorithm
                                    THEN dkim_keys.private_key_pem END,
             public_key = CASE WHEN dkim_keys.algorithm = EXCLUDED.algorithm
                               THEN dkim_keys.public_key END
         WHERE (dkim_keys.algorithm, dkim_keys.active)
             IS DISTINCT FROM (EXCLUDED.algorithm, EXCLUDED.active)
         RETURNING (xmax = 0)",
    )
    .bind(domain_id)
    .bind(&spec.selector)
    .bind(spec.algorithm.as_str())
    .bind(spec.active)
    .fetch_optional(pool)
    .await?;
    Ok(Outcome::of_upsert(inserted))
}

/// Stores the key pair of an existing row: the PKCS#8 PEM the mail server signs with and the
/// base64 public key of the DNS record. Returns whether anything changed.
pub async fn store_dkim_key_pair(
    pool: &PgPool,
    spec: &DkimKeySpec,
    private_key_pem: &str,
    public_key: &str,
) -> Result<bool, Error> {
    let changed = sqlx::query(
        "UPDATE dkim_keys SET private_key_pem = $3, public_key = $4, updated_at = now()
         WHERE selector = $2 AND domain_id = (SELECT id FROM domains WHERE name = $1)
           AND (private_key_pem, public_key) IS DISTINCT FROM ($3, $4)",
    )
    .bind(&spec.domain)
    .bind(&spec.selector)
    .bind(private_key_pem)
    .bind(public_key)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(changed > 0)
}

/// Local mode: gives the key's row a new key pair of its algorithm if it has none. Never
/// replaces a key that is there. Returns whether one was made.
pub async fn generate_missing_key_pair(pool: &PgPool, spec: &DkimKeySpec) -> Result<bool, Error> {
    let missing: Option<bool> = sqlx::query_scalar(
        "SELECT k.private_key_pem IS NULL FROM dkim_keys k JOIN domains d ON d.id = k.domain_id
         WHERE d.name = $1 AND k.selector = $2",
    )
    .bind(&spec.domain)
    .bind(&spec.selector)
    .fetch_optional(pool)
    .await?;
    if missing != Some(true) {
        return Ok(false);
    }
    let algorithm = spec.algorithm;
    // RSA generation is CPU work: off the async workers.
    let pair = tokio::task::spawn_blocking(move || crate::keygen::generate(algorithm))
        .await
        .map_err(|e| Error::Conflict(format!("DKIM key generation stopped: {e}")))?
        .map_err(|e| Error::Conflict(format!("DKIM key generation failed: {e}")))?;
    // Only into a row that still has none (another process may have been quicker).
    let stored = sqlx::query(
        "UPDATE dkim_keys SET private_key_pem = $3, public_key = $4, updated_at = now()
         WHERE selector = $2 AND domain_id = (SELECT id FROM domains WHERE name = $1)
           AND private_key_pem IS NULL",
    )
    .bind(&spec.domain)
    .bind(&spec.selector)
    .bind(&pair.private_pem)
    .bind(&pair.public_key)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(stored > 0)
}

/// Removes the key's row.
pub async fn delete_dkim_key(
    pool: &PgPool,
    domain: &str,
    selector: &str,
) -> Result<Outcome, Error> {
    let deleted = sqlx::query(
        "DELETE FROM dkim_keys WHERE selector = $2
           AND domain_id = (SELECT id FROM domains WHERE name = $1)",
    )
    .bind(domain)
    .bind(selector)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(if deleted > 0 {
        Outcome::Removed
    } else {
        Outcome::Absent
    })
}

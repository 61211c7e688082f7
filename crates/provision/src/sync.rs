//! A full sync: make the database and buckets hold exactly the desired state.

use std::collections::BTreeSet;

use mail_blobstore::BlobStore;
use sqlx::PgPool;

use crate::desired::Desired;
use crate::dkim::{apply_dkim_key, delete_dkim_key, generate_missing_key_pair};
use crate::domain::{Options, apply_domain, delete_domain};
use crate::error::{Error, Outcome, Report};
use crate::mailbox::{apply_mailbox, delete_mailbox};
use crate::names::check_bucket_prefix;
use crate::validate::validate;

/// Validates `desired`, applies every resource in it and removes (by the delete functions, so
/// reclaim policies hold) whatever the database serves that `desired` does not name. Running
/// it again with the same state writes nothing.
pub async fn sync(
    pool: &PgPool,
    blobs: &dyn BlobStore,
    desired: &Desired,
    options: &Options,
) -> Result<Report, Error> {
    check_bucket_prefix(&options.bucket_prefix).map_err(Error::invalid)?;
    validate(desired, &options.bucket_prefix)?;
    let mut report = Report::default();

    for domain in &desired.domains {
        report
            .domains
            .add(apply_domain(pool, blobs, &domain.spec, options).await?);
    }

    // Removed mailboxes first, and aliases that move to another mailbox released, so that an
    // address can change hands within one sync.
    let wanted: BTreeSet<String> = desired
        .mailboxes
        .iter()
        .map(|m| m.spec.address.to_ascii_lowercase())
        .collect();
    let present: Vec<String> = sqlx::query_scalar(
        "SELECT address FROM mailboxes WHERE deleted_at IS NULL ORDER BY address",
    )
    .fetch_all(pool)
    .await?;
    for address in present.iter().filter(|a| !wanted.contains(*a)) {
        report.mailboxes.add(delete_mailbox(pool, address).await?);
    }
    let (owners, aliases): (Vec<String>, Vec<String>) = desired
        .mailboxes
        .iter()
        .flat_map(|m| {
            let owner = m.spec.address.to_ascii_lowercase();
            m.spec
                .aliases
                .iter()
                .map(move |a| (owner.clone(), a.to_ascii_lowercase()))
        })
        .unzip();
    let released: BTreeSet<String> = sqlx::query_scalar(
        "DELETE FROM aliases a USING mailboxes m
         WHERE m.id = a.mailbox_id
           AND (m.address, a.address) NOT IN (SELECT * FROM unnest($1::text[], $2::text[]))
         RETURNING m.address",
    )
    .bind(&owners)
    .bind(&aliases)
    .fetch_all(pool)
    .await?
    .into_iter()
    .collect();

    for mailbox in &desired.mailboxes {
        let password = desired.password_of(mailbox);
        let mut outcome = apply_mailbox(pool, &mailbox.spec, password).await?;
        // Its aliases were already trimmed above; that is this mailbox's update.
        if outcome == Outcome::Unchanged
            && released.contains(&mailbox.spec.address.to_ascii_lowercase())
        {
            outcome = Outcome::Updated;
        }
        report.mailboxes.add(outcome);
    }
    for key in &desired.dkim_keys {
        let mut outcome = apply_dkim_key(pool, &key.spec).await?;
        // No Secrets here: the key pair goes straight into the row the mail server reads.
        if generate_missing_key_pair(pool, &key.spec).await? && outcome == Outcome::Unchanged {
            outcome = Outcome::Updated;
        }
        report.dkim_keys.add(outcome);
    }

    let wanted: BTreeSet<&str> = desired
        .domains
        .iter()
        .map(|d| d.spec.domain.as_str())
        .collect();
    let present: Vec<String> =
        sqlx::query_scalar("SELECT name FROM domains WHERE deleted_at IS NULL ORDER BY name")
            .fetch_all(pool)
            .await?;
    for name in present.iter().filter(|n| !wanted.contains(n.as_str())) {
        report.domains.add(delete_domain(pool, blobs, name).await?);
    }

    // Keys of domains still served; a domain retained after deletion keeps its keys.
    let wanted: BTreeSet<(&str, &str)> = desired
        .dkim_keys
        .iter()
        .map(|k| (k.spec.domain.as_str(), k.spec.selector.as_str()))
        .collect();
    let present: Vec<(String, String)> = sqlx::query_as(
        "SELECT d.name, k.selector FROM dkim_keys k JOIN domains d ON d.id = k.domain_id
         WHERE d.deleted_at IS NULL ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await?;
    for (domain, selector) in &present {
        if !wanted.contains(&(domain.as_str(), selector.as_str())) {
            report
                .dkim_keys
                .add(delete_dkim_key(pool, domain, selector).await?);
        }
    }
    Ok(report)
}

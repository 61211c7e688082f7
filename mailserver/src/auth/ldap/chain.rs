//! The LDAP-first step of a login, in front of the local hash: which directory (if any) knows
//! this login, and what its answer means for the chain.
//!
//! - a Mailbox resource with `authSource: local` → the local hash only;
//! - a Mailbox resource with `authSource: ldap` → its domain's directory (or the only one);
//! - a mailbox a directory created, or no mailbox in a directory-backed domain → that
//!   directory; on success the mailbox and its folders are created if missing.
//!
//! Verified → logged in. Rejected (`invalidCredentials`) → a wrong password, no fallback.
//! Unknown or Unavailable → the local hash decides (and an unknown user of a directory
//! mailbox has left the directory: the mailbox is disabled).

use sqlx::PgPool;

use super::directories::{Directories, directory_mailbox, disable_mailbox};
use crate::auth::Account;
use crate::auth::source::{CredentialSource, Verdict};

/// The login's mailbox (id, auth source, the directory that made it) and its domain's
/// directory; the mailbox fields are `None` when there is no mailbox.
type Found = (Option<i64>, Option<String>, Option<String>, Option<String>);

/// What the directory step decided.
pub enum Step {
    Verified(Account),
    /// Wrong password (or the user has no mailbox here): refuse, do not fall back.
    Rejected,
    /// Ask the local hash.
    PassOn,
}

/// Asks the directory that backs `address`, when one does.
pub async fn ldap_first(
    directories: &Directories,
    db: &PgPool,
    address: &str,
    password: &str,
) -> Result<Step, sqlx::Error> {
    let Some((_, domain)) = address.rsplit_once('@') else {
        return Ok(Step::PassOn);
    };
    let row: Option<Found> = sqlx::query_as(
        "SELECT m.id, m.auth_source, m.directory, d.directory
               FROM domains d LEFT JOIN mailboxes m
                 ON m.domain_id = d.id AND m.address = $1 AND m.deleted_at IS NULL
              WHERE d.name = $2 AND d.deleted_at IS NULL",
    )
    .bind(address)
    .bind(domain)
    .fetch_optional(db)
    .await?;
    let Some((mailbox_id, auth_source, mailbox_directory, domain_directory)) = row else {
        return Ok(Step::PassOn);
    };
    let resource_mailbox = mailbox_id.filter(|_| mailbox_directory.is_none());
    let directory = match (&resource_mailbox, auth_source.as_deref()) {
        (Some(_), Some("ldap")) => match &domain_directory {
            Some(name) => directories.get(name),
            None => directories.only(),
        },
        (Some(_), _) => None,
        (None, _) => mailbox_directory
            .as_deref()
            .or(domain_directory.as_deref())
            .and_then(|name| directories.get(name)),
    };
    let Some(directory) = directory else {
        return Ok(Step::PassOn);
    };
    match directory.verify(address, password).await {
        Verdict::Verified(mut identity) => {
            if let Some(mailbox_id) = resource_mailbox {
                return Ok(Step::Verified(Account {
                    mailbox_id,
                    address: address.to_string(),
                }));
            }
            if identity.address.is_empty() {
                identity.address = address.to_string();
            }
            Ok(
                match directory_mailbox(db, directory.name(), &identity).await? {
                    Some((mailbox_id, address)) => Step::Verified(Account {
                        mailbox_id,
                        address,
                    }),
                    None => {
                        tracing::info!(
                            login = address,
                            mailbox = identity.address,
                            "directory user has no mailbox in a domain of the directory"
                        );
                        Step::Rejected
                    }
                },
            )
        }
        Verdict::Rejected => Ok(Step::Rejected),
        Verdict::Unknown => {
            if mailbox_directory.is_some() && disable_mailbox(db, address).await? {
                tracing::info!(address, "directory user gone: mailbox disabled");
            }
            Ok(Step::PassOn)
        }
        Verdict::Unavailable(why) => {
            tracing::warn!(
                directory = directory.name(),
                why,
                "LDAP unavailable: local hash decides"
            );
            Ok(Step::PassOn)
        }
    }
}

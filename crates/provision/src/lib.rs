//! The reconcile core: a desired state of MailDomain, Mailbox and DkimKey objects made true in
//! PostgreSQL rows and blob-store buckets. Local mode (manifests on disk) and the Kubernetes
//! controller share it: per-resource `apply_*` / `delete_*` functions, and [`sync`] for a
//! whole desired state.
#![forbid(unsafe_code)]

mod claim;
pub mod clientconfig;
mod desired;
mod dkim;
pub mod dns;
mod domain;
mod error;
pub mod keygen;
mod lookup;
mod mailbox;
pub mod manifests;
mod names;
mod password;
mod sync;
mod validate;

pub use claim::{claim_domain, domain_claimant, release_domain};
pub use desired::{DEFAULT_NAMESPACE, Desired, SecretData};
pub use dkim::{apply_dkim_key, delete_dkim_key, generate_missing_key_pair, store_dkim_key_pair};
pub use domain::{Options, apply_domain, delete_domain};
pub use error::{Counts, Error, Outcome, Report};
pub use lookup::{bucket_of, dkim_public_keys, domain_hosted, mailbox_count, used_bytes};
pub use mailbox::{STANDARD_FOLDERS, apply_mailbox, delete_mailbox};
pub use names::{bucket_name, check_address};
pub use sync::sync;
pub use validate::{ValidationErrors, validate};

use sqlx::PgPool;

/// Brings the database schema up to date (`migrations/` of the workspace). The mail server and
/// the operator both call it at start; it is safe to run concurrently and repeatedly.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    sqlx::migrate!("../../migrations").run(pool).await
}

//! The reconcile core: a desired state of MailDomain, Mailbox and DkimKey objects made true in
//! PostgreSQL rows and blob-store buckets. Local mode (manifests on disk) and the Kubernetes
//! controller share it.
#![forbid(unsafe_code)]

use sqlx::PgPool;

/// Brings the database schema up to date (`migrations/` of the workspace). The mail server and
/// the operator both call it at start; it is safe to run concurrently and repeatedly.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    sqlx::migrate!("../../migrations").run(pool).await
}

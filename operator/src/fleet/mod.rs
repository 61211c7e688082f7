//! The mail-server fleet the operator owns: a Deployment, a LoadBalancer Service and a
//! PodDisruptionBudget, built (pure, `build.rs`) from the settings and the number of mailboxes
//! and applied by server-side apply (`apply.rs`) at start and every minute after.

mod apply;
mod build;

use std::time::Duration;

use kube::Client;
use sqlx::PgPool;

pub use apply::apply;
pub use build::{Fleet, build};

/// How often the fleet is brought in line when nothing else asks.
pub const INTERVAL: Duration = Duration::from_secs(60);

/// The fleet's settings (the chart's `fleet` values).
#[derive(clap::Args, Clone, Debug, PartialEq)]
pub struct Settings {
    /// The mail-server image. Unset: the operator manages no fleet.
    #[arg(long = "fleet-image", env = "FLEET_IMAGE")]
    pub image: Option<String>,
    /// The namespace the fleet runs in (default: the operator's own).
    #[arg(long = "fleet-namespace", env = "FLEET_NAMESPACE")]
    pub namespace: Option<String>,
    #[arg(
        long = "fleet-min-replicas",
        env = "FLEET_MIN_REPLICAS",
        default_value_t = 2
    )]
    pub min_replicas: i32,
    #[arg(
        long = "fleet-max-replicas",
        env = "FLEET_MAX_REPLICAS",
        default_value_t = 10
    )]
    pub max_replicas: i32,
    /// One replica per this many mailboxes, within min and max.
    #[arg(
        long = "fleet-mailboxes-per-replica",
        env = "FLEET_MAILBOXES_PER_REPLICA",
        default_value_t = 1000,
        value_parser = clap::value_parser!(i64).range(1..)
    )]
    pub mailboxes_per_replica: i64,
    /// The Secret (key `url`) with the PostgreSQL URL the pods use.
    #[arg(
        long = "fleet-database-secret",
        env = "FLEET_DATABASE_SECRET",
        default_value = "mail-database"
    )]
    pub database_secret: String,
    /// The Secret (key `secret-access-key`) with the S3 secret the pods use.
    #[arg(
        long = "fleet-s3-secret",
        env = "FLEET_S3_SECRET",
        default_value = "mail-s3"
    )]
    pub s3_secret: String,
    /// The host name the servers greet with.
    #[arg(skip)]
    pub hostname: String,
    /// S3 endpoint, region, key id and bucket prefix, as the operator itself uses them.
    #[arg(skip)]
    pub s3: Option<(String, String, String)>,
    #[arg(skip)]
    pub bucket_prefix: String,
}

/// Applies the fleet now and then every [`INTERVAL`]; a failed round is logged and retried.
pub async fn run(client: Client, pool: PgPool, settings: Settings, namespace: String) {
    loop {
        let round = async {
            let mailboxes: i64 =
                sqlx::query_scalar("SELECT count(*) FROM mailboxes WHERE deleted_at IS NULL")
                    .fetch_one(&pool)
                    .await?;
            let fleet = build(&settings, &namespace, mailboxes);
            apply(&client, &namespace, &fleet).await?;
            anyhow::Ok(fleet.replicas())
        };
        match round.await {
            Ok(replicas) => tracing::info!(replicas, "fleet applied"),
            Err(e) => tracing::warn!(error = %e, "applying the fleet failed; retrying"),
        }
        tokio::time::sleep(INTERVAL).await;
    }
}

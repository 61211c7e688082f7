//! The mail-server fleet the operator owns: a Deployment, a LoadBalancer Service, a
//! PodDisruptionBudget, optionally a HorizontalPodAutoscaler and a cert-manager Certificate,
//! built (pure, `build.rs`) from the settings, the number of mailboxes and the hosted domains,
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
    /// The Secret with the servers' TLS certificate, as cert-manager writes it (`tls.crt`,
    /// `tls.key`); the pods pick up a renewed one without restarting.
    #[arg(
        long = "fleet-tls-secret",
        env = "FLEET_TLS_SECRET",
        default_value = "mailserver-tls"
    )]
    pub tls_secret: String,
    /// Create a cert-manager `Certificate` for the TLS Secret from this issuer, naming the mail
    /// host and every hosted domain's `mta-sts.` and `autoconfig.` hosts. Unset: the Secret is
    /// provided some other way.
    #[arg(long = "fleet-certificate-issuer", env = "FLEET_CERTIFICATE_ISSUER")]
    pub certificate_issuer: Option<String>,
    /// `ClusterIssuer` or `Issuer`.
    #[arg(
        long = "fleet-certificate-issuer-kind",
        env = "FLEET_CERTIFICATE_ISSUER_KIND",
        default_value = "ClusterIssuer",
        value_parser = ["ClusterIssuer", "Issuer"]
    )]
    pub certificate_issuer_kind: String,
    /// Networks the load balancer sends PROXY protocol headers from (comma separated CIDRs).
    /// Set: the pods require PROXY headers from them and the Service spreads traffic over the
    /// cluster (`externalTrafficPolicy: Cluster`); unset: `Local` keeps client addresses.
    #[arg(long = "fleet-proxy-trusted", env = "FLEET_PROXY_TRUSTED")]
    pub proxy_trusted: Option<String>,
    /// Scale by CPU with a HorizontalPodAutoscaler (target utilisation in percent, between
    /// min and max replicas) instead of by the number of mailboxes.
    #[arg(
        long = "fleet-hpa-cpu-percent",
        env = "FLEET_HPA_CPU_PERCENT",
        value_parser = clap::value_parser!(i32).range(1..)
    )]
    pub hpa_cpu_percent: Option<i32>,
    /// CPU and memory each pod requests (the HPA's utilisation is relative to the CPU).
    #[arg(
        long = "fleet-cpu-request",
        env = "FLEET_CPU_REQUEST",
        default_value = "250m"
    )]
    pub cpu_request: String,
    #[arg(
        long = "fleet-memory-request",
        env = "FLEET_MEMORY_REQUEST",
        default_value = "256Mi"
    )]
    pub memory_request: String,
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
            let domains: Vec<String> = sqlx::query_scalar(
                "SELECT name FROM domains WHERE deleted_at IS NULL ORDER BY name",
            )
            .fetch_all(&pool)
            .await?;
            let fleet = build(&settings, &namespace, mailboxes, &domains);
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

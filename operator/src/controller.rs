//! `mail-operator run`: the three controllers, the watches that wake them, and the HTTP port.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client};
use mail_provision::Options;
use mail_provision::dns::DnsSettings;
use mail_resources::{DkimKey, MailDomain, Mailbox};

use crate::context::Context;
use crate::http::{self, Health};
use crate::metrics::Metrics;
use crate::reconcile::{error_policy, reconcile};
use crate::stores::StoreArgs;
use crate::watch;
use crate::{fleet, leader};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    stores: StoreArgs,
    /// The host name clients and other servers reach the mail service at (MX, IMAP,
    /// submission, MTA-STS), e.g. mail.example.net.
    #[arg(long, env = "MAIL_HOST")]
    mail_host: String,
    /// The TTL of the records in each MailDomain's zone snippet.
    #[arg(long, default_value_t = 3600)]
    dns_ttl: u32,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    #[arg(long, env = "HTTP_ADDRESS", default_value = "0.0.0.0:8080")]
    http: SocketAddr,
    /// Watch this namespace only (default: every namespace).
    #[arg(long, env = "WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Elect a leader on a Lease in this namespace (the pod's own), so that several replicas
    /// can run; unset, this process reconciles alone.
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,
    /// This replica's name in the Lease.
    #[arg(long, env = "POD_NAME", default_value = "mail-operator")]
    identity: String,
    #[command(flatten)]
    fleet: fleet::Settings,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .context("connecting to Kubernetes (in-cluster or KUBECONFIG)")?;
    let pool = args.stores.database().await?;
    let blobs = args.stores.blob_store()?;
    let metrics = Arc::new(Metrics::default());
    let options = Options {
        bucket_prefix: args.stores.bucket_prefix.clone(),
    };
    let dns = DnsSettings {
        mail_host: args.mail_host.trim_end_matches('.').to_string(),
        ttl: args.dns_ttl,
    };
    let ctx_pool = pool.clone();
    let ctx = Arc::new(Context::new(
        client.clone(),
        pool,
        blobs,
        options,
        dns,
        metrics.clone(),
    ));
    let health = Health {
        metrics,
        ready: Arc::new(AtomicBool::new(false)),
    };
    let api = |client: &Client| ApiFor {
        client: client.clone(),
        namespace: args.namespace.clone(),
    };
    let apis = api(&client);
    let config = watcher::Config::default().any_semantic();

    let mailboxes = Controller::new(apis.get::<Mailbox>(), config.clone());
    let (by_secret, by_domain) = (mailboxes.store(), mailboxes.store());
    let mailboxes = mailboxes
        .watches(apis.get::<Secret>(), config.clone(), move |secret| {
            watch::mailboxes_of_secret(&by_secret.state(), &secret)
        })
        .watches(apis.get::<MailDomain>(), config.clone(), move |domain| {
            watch::mailboxes_of_domain(&by_domain.state(), &domain.spec.domain)
        })
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|_| async {});

    let domains = Controller::new(apis.get::<MailDomain>(), config.clone());
    let by_key = domains.store();
    let domains = domains
        .watches(apis.get::<DkimKey>(), config.clone(), move |key| {
            watch::domains_named(&by_key.state(), &key.spec.domain)
        })
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|_| async {});

    let keys = Controller::new(apis.get::<DkimKey>(), config.clone())
        .owns(apis.get::<Secret>(), config)
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {});

    let fleet = fleet_of(&args)?.map(|(settings, namespace)| {
        fleet::run(client.clone(), ctx_pool.clone(), settings, namespace)
    });
    // Only the leader reconciles and owns the fleet.
    let controllers = async {
        let fleet = async {
            if let Some(fleet) = fleet {
                fleet.await;
            }
        };
        tokio::join!(mailboxes, domains, keys, fleet);
    };
    let ready = health.ready.clone();
    let elected = async {
        ready.store(true, Ordering::Relaxed);
        match &args.lease_namespace {
            Some(namespace) => {
                let leases = Api::namespaced(client.clone(), namespace);
                leader::lead(leases, LEASE, &args.identity, controllers).await
            }
            None => {
                tracing::warn!("no --lease-namespace: reconciling without leader election");
                controllers.await;
                Ok(())
            }
        }
    };
    tokio::select! {
        result = http::serve(args.http, health) => result,
        result = elected => result,
    }
}

/// The fleet's settings completed from the operator's own, and its namespace; `None` when no
/// fleet image is set.
fn fleet_of(args: &Args) -> anyhow::Result<Option<(fleet::Settings, String)>> {
    if args.fleet.image.is_none() {
        return Ok(None);
    }
    let Some(namespace) = args
        .fleet
        .namespace
        .clone()
        .or(args.lease_namespace.clone())
    else {
        anyhow::bail!("--fleet-image needs --fleet-namespace (or POD_NAMESPACE)");
    };
    let stores = &args.stores;
    let s3 = match (
        &stores.s3_endpoint,
        &stores.s3_region,
        &stores.s3_access_key_id,
    ) {
        (Some(endpoint), Some(region), Some(key_id)) => {
            Some((endpoint.clone(), region.clone(), key_id.clone()))
        }
        _ => None,
    };
    let settings = fleet::Settings {
        hostname: args.mail_host.trim_end_matches('.').to_string(),
        s3,
        bucket_prefix: stores.bucket_prefix.clone(),
        ..args.fleet.clone()
    };
    Ok(Some((settings, namespace)))
}

/// The Lease the replicas elect a leader on.
const LEASE: &str = "mail-operator";

/// Apis in the watched namespace, or in all.
struct ApiFor {
    client: Client,
    namespace: Option<String>,
}

impl ApiFor {
    fn get<K>(&self) -> Api<K>
    where
        K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    {
        match &self.namespace {
            Some(namespace) => Api::namespaced(self.client.clone(), namespace),
            None => Api::all(self.client.clone()),
        }
    }
}

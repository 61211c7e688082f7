//! The one reconcile shape every kind shares: the finalizer routes to the kind's `apply` or
//! `cleanup`, the duration and outcome are counted, and failures back off per object.

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;

use k8s_openapi::NamespaceResourceScope;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event, finalizer};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::context::Context;
use crate::error::Error;

pub trait Reconciled:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + Serialize
    + Debug
    + Send
    + Sync
    + 'static
{
    /// The kind, as the metrics and logs name it.
    const KIND: &'static str;
    /// The finalizer that holds a deleted object until `cleanup` succeeded.
    const FINALIZER: &'static str;

    /// Makes the stores match the object and writes its status.
    fn apply(&self, ctx: &Context) -> impl Future<Output = Result<Action, Error>> + Send;
    /// Removes what the object made, as its reclaim policy says.
    fn cleanup(&self, ctx: &Context) -> impl Future<Output = Result<Action, Error>> + Send;
}

fn key<K: Reconciled>(obj: &K) -> String {
    format!(
        "{}/{}",
        obj.namespace().unwrap_or_else(|| "default".to_string()),
        obj.name_any()
    )
}

pub async fn reconcile<K: Reconciled>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile(K::KIND);
    let id = key(obj.as_ref());
    let api: Api<K> = Api::namespaced(
        ctx.client.clone(),
        &obj.namespace().unwrap_or_else(|| "default".to_string()),
    );
    let action = finalizer(&api, K::FINALIZER, obj, |event| async {
        match event {
            Event::Apply(obj) => obj.apply(&ctx).await,
            Event::Cleanup(obj) => obj.cleanup(&ctx).await,
        }
    })
    .await?;
    ctx.succeeded(K::KIND, &id);
    Ok(action)
}

pub fn error_policy<K: Reconciled>(obj: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.error_policy(K::KIND, &key(obj.as_ref()), error)
}

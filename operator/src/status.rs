//! Writing what a reconcile concluded: the status by server-side apply under [`FIELD_MANAGER`],
//! only when it changed, and an Event when the Ready condition changes status or reason.

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::conditions::{self, Verdict, is_transition};
use crate::context::{Context, FIELD_MANAGER, NOT_READY_RETRY, RESYNC};
use crate::error::Error;

/// Applies `next` as the status of `obj` when it differs from `current`, and publishes an Event
/// if the Ready condition (`next_ready`) is a transition from `current_conditions`.
pub async fn publish<K, S>(
    ctx: &Context,
    obj: &K,
    current: Option<&S>,
    current_conditions: &[Condition],
    next: &S,
    next_ready: &Condition,
) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug,
    S: Serialize + PartialEq,
{
    if current != Some(next) {
        let api: Api<K> = Api::namespaced(
            ctx.client.clone(),
            &obj.namespace().unwrap_or_else(|| "default".to_string()),
        );
        let patch = serde_json::json!({
            "apiVersion": K::api_version(&()),
            "kind": K::kind(&()),
            "status": next,
        });
        api.patch_status(
            &obj.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    }
    if is_transition(current_conditions, next_ready) {
        let event = Event {
            type_: if next_ready.status == "True" {
                EventType::Normal
            } else {
                EventType::Warning
            },
            reason: next_ready.reason.clone(),
            note: Some(next_ready.message.clone()),
            action: "Reconcile".to_string(),
            secondary: None,
        };
        ctx.recorder.publish(&event, &obj.object_ref(&())).await?;
    }
    Ok(())
}

/// The statuses that carry the Ready condition.
pub trait WithConditions: Serialize + PartialEq {
    fn conditions(&self) -> &[Condition];
    fn set_conditions(&mut self, conditions: Vec<Condition>);
}

macro_rules! with_conditions {
    ($($status:ty),*) => {$(
        impl WithConditions for $status {
            fn conditions(&self) -> &[Condition] {
                &self.conditions
            }
            fn set_conditions(&mut self, conditions: Vec<Condition>) {
                self.conditions = conditions;
            }
        }
    )*};
}
with_conditions!(
    mail_resources::MailboxStatus,
    mail_resources::MailDomainStatus,
    mail_resources::DkimKeyStatus
);

/// The last step of every apply: `next` gets the Ready condition for `verdict` and is
/// published; a Ready object is looked at again after [`RESYNC`], another sooner.
pub async fn conclude<K, S>(
    ctx: &Context,
    obj: &K,
    current: Option<&S>,
    verdict: &Verdict,
    mut next: S,
) -> Result<Action, Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug,
    S: WithConditions,
{
    let current_conditions = current.map_or(&[][..], WithConditions::conditions);
    let ready = conditions::ready(
        current_conditions,
        verdict,
        obj.meta().generation,
        Time(Timestamp::now()),
    );
    next.set_conditions(vec![ready.clone()]);
    publish(ctx, obj, current, current_conditions, &next, &ready).await?;
    Ok(Action::requeue(if verdict.ready {
        RESYNC
    } else {
        NOT_READY_RETRY
    }))
}

//! Leader election on a `coordination.k8s.io/v1` Lease, so that two replicas can run and only
//! one reconciles. Taking or renewing the Lease is a replace that carries the resourceVersion
//! it read, so two candidates cannot both win. A leader that cannot renew in time exits (the
//! pod restarts as a candidate) rather than risk two writers.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube::api::PostParams;

use crate::context::FIELD_MANAGER;

/// How long a Lease holds without renewal.
pub const LEASE_SECONDS: i32 = 15;
/// How often the leader renews and a candidate retries.
pub const RETRY: Duration = Duration::from_secs(5);

/// What a candidate does about a Lease as it finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nobody holds it, or the holder let it expire: take it over.
    Take,
    /// It is ours: renew it.
    Renew,
    /// Someone else holds it until it expires.
    Wait { holder: String },
}

/// Pure: what `identity` does with a Lease whose spec is `spec`, at `now`.
pub fn decide(spec: Option<&LeaseSpec>, identity: &str, now: Timestamp) -> Decision {
    let holder = spec
        .and_then(|s| s.holder_identity.as_deref())
        .unwrap_or("");
    if holder.is_empty() {
        return Decision::Take;
    }
    if holder == identity {
        return Decision::Renew;
    }
    let spec = spec.expect("a holder implies a spec");
    let seconds = i64::from(spec.lease_duration_seconds.unwrap_or(LEASE_SECONDS).max(1));
    let expired = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .is_none_or(|t| t.0 + SignedDuration::from_secs(seconds) < now);
    if expired {
        Decision::Take
    } else {
        Decision::Wait {
            holder: holder.to_string(),
        }
    }
}

/// One attempt to hold the Lease `name`: `true` when `identity` holds it afterwards.
pub async fn try_acquire(
    api: &Api<Lease>,
    name: &str,
    identity: &str,
    now: Timestamp,
) -> Result<bool, kube::Error> {
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PostParams::default()
    };
    let Some(lease) = api.get_opt(name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(identity.to_string()),
                lease_duration_seconds: Some(LEASE_SECONDS),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        return conflict_is_false(api.create(&params, &lease).await);
    };
    let decision = decide(lease.spec.as_ref(), identity, now);
    let mut spec = lease.spec.clone().unwrap_or_default();
    match decision {
        Decision::Wait { .. } => return Ok(false),
        Decision::Renew => spec.renew_time = Some(MicroTime(now)),
        Decision::Take => {
            spec.holder_identity = Some(identity.to_string());
            spec.lease_duration_seconds = Some(LEASE_SECONDS);
            spec.acquire_time = Some(MicroTime(now));
            spec.renew_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        }
    }
    // The read resourceVersion stays in the metadata: a concurrent writer makes this a 409.
    let next = Lease {
        metadata: lease.metadata,
        spec: Some(spec),
    };
    conflict_is_false(api.replace(name, &params, &next).await)
}

fn conflict_is_false(result: Result<Lease, kube::Error>) -> Result<bool, kube::Error> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.is_conflict() || status.is_already_exists() => {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// Waits until `identity` holds the Lease, then runs `work` while renewing it; returns when
/// `work` ends, or with an error when the Lease was lost.
pub async fn lead<T>(
    api: Api<Lease>,
    name: &str,
    identity: &str,
    work: impl Future<Output = T>,
) -> anyhow::Result<T> {
    loop {
        match try_acquire(&api, name, identity, Timestamp::now()).await {
            Ok(true) => break,
            Ok(false) => tracing::info!(lease = name, "another replica leads; waiting"),
            Err(e) => tracing::warn!(lease = name, error = %e, "could not read the lease"),
        }
        tokio::time::sleep(RETRY).await;
    }
    tracing::info!(lease = name, identity, "leading");
    let renew = async {
        let mut last = Timestamp::now();
        loop {
            tokio::time::sleep(RETRY).await;
            match try_acquire(&api, name, identity, Timestamp::now()).await {
                Ok(true) => last = Timestamp::now(),
                Ok(false) => return anyhow::anyhow!("lost the lease {name} to another replica"),
                Err(e)
                    if last + SignedDuration::from_secs(i64::from(LEASE_SECONDS))
                        < Timestamp::now() =>
                {
                    return anyhow::anyhow!("could not renew the lease {name} in time: {e}");
                }
                Err(e) => {
                    tracing::warn!(lease = name, error = %e, "renewing the lease failed; retrying")
                }
            }
        }
    };
    tokio::select! {
        out = work => Ok(out),
        lost = renew => Err(lost),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::fixtures::{self, lines, not_found, serve};

    const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/mail/leases/mail-operator";
    const LEASES: &str =
        "/apis/coordination.k8s.io/v1/namespaces/mail/leases?&fieldManager=mail-operator";

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).expect("timestamp")
    }

    fn spec(holder: &str, renewed: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.to_string()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(at(renewed))),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn decisions() {
        let wait = Decision::Wait {
            holder: "b".to_string(),
        };
        let cases = [
            (None, 100, Decision::Take),
            (Some(LeaseSpec::default()), 100, Decision::Take),
            (Some(spec("a", 0)), 100, Decision::Renew),
            (Some(spec("b", 90)), 100, wait.clone()),
            (Some(spec("b", 85)), 100, wait),
            (Some(spec("b", 84)), 100, Decision::Take),
        ];
        for (spec, now, want) in cases {
            assert_eq!(decide(spec.as_ref(), "a", at(now)), want, "{spec:?}");
        }
    }

    fn lease_json(holder: &str, renewed: &str) -> serde_json::Value {
        json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "mail-operator", "namespace": "mail", "resourceVersion": "7"},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                     "renewTime": renewed, "leaseTransitions": 2},
        })
    }

    #[tokio::test]
    async fn a_missing_lease_is_created_a_live_one_left_and_an_expired_one_taken_with_its_version()
    {
        let (client, mut handle) = fixtures::mock_client();
        let api: Api<Lease> = Api::namespaced(client, "mail");
        let attempt = |api: &Api<Lease>| {
            let api = api.clone();
            async move { try_acquire(&api, "mail-operator", "a", at(1000)).await }
        };

        let (won, seen) = serve(&mut handle, attempt(&api), |s| match s.method.as_str() {
            "GET" => not_found("leases mail-operator"),
            _ => (201, s.body.clone()),
        })
        .await;
        assert!(won.expect("create"));
        assert_eq!(
            lines(&seen),
            [format!("GET {LEASE}"), format!("POST {LEASES}")]
        );
        assert_eq!(seen[1].body["spec"]["holderIdentity"], "a");

        // Held by b, renewed 5 s ago: no write.
        let live = lease_json("b", "1970-01-01T00:16:35Z");
        let (won, seen) = serve(&mut handle, attempt(&api), move |_| (200, live.clone())).await;
        assert!(!won.expect("read"));
        assert_eq!(lines(&seen), [format!("GET {LEASE}")]);

        // Held by b, expired: replaced, carrying resourceVersion 7.
        let stale = lease_json("b", "1970-01-01T00:10:00Z");
        let (won, seen) = serve(&mut handle, attempt(&api), move |s| {
            match s.method.as_str() {
                "GET" => (200, stale.clone()),
                _ => (200, s.body.clone()),
            }
        })
        .await;
        assert!(won.expect("take"));
        assert_eq!(
            lines(&seen),
            [
                format!("GET {LEASE}"),
                format!("PUT {LEASE}?&fieldManager=mail-operator")
            ]
        );
        assert_eq!(seen[1].body["metadata"]["resourceVersion"], "7");
        assert_eq!(seen[1].body["spec"]["holderIdentity"], "a");
        assert_eq!(seen[1].body["spec"]["leaseTransitions"], 3);

        // Another replica replaced it first: the 409 is a lost race, not an error.
        let stale = lease_json("b", "1970-01-01T00:10:00Z");
        let (won, _) = serve(&mut handle, attempt(&api), move |s| {
            match s.method.as_str() {
                "GET" => (200, stale.clone()),
                _ => (
                    409,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                       "reason": "Conflict", "code": 409, "message": "conflict"}),
                ),
            }
        })
        .await;
        assert!(!won.expect("a lost race"));
    }
}

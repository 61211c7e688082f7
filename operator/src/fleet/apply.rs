//! The fleet's objects applied by server-side apply under the operator's field manager.

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::{Api, Client, Resource};
use serde::Serialize;

use super::Fleet;
use super::build::NAME;
use crate::context::FIELD_MANAGER;

pub async fn apply(client: &Client, namespace: &str, fleet: &Fleet) -> Result<(), kube::Error> {
    apply_one(client, namespace, &fleet.deployment).await?;
    apply_one(client, namespace, &fleet.service).await?;
    apply_one(client, namespace, &fleet.pdb).await?;
    match &fleet.hpa {
        Some(hpa) => apply_one(client, namespace, hpa).await?,
        // Switched off: the replica rule takes over, so an HPA left behind must not fight it.
        None => {
            let api: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), namespace);
            match api.delete(NAME, &DeleteParams::default()).await {
                Ok(_) => tracing::info!("fleet HPA removed"),
                Err(kube::Error::Api(status)) if status.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
    }
    // cert-manager's Certificate: only with the option (and the RBAC that comes with it).
    if let Some(certificate) = &fleet.certificate {
        let gvk = GroupVersionKind::gvk("cert-manager.io", "v1", "Certificate");
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), namespace, &ApiResource::from_gvk(&gvk));
        api.patch(
            NAME,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(certificate),
        )
        .await?;
    }
    Ok(())
}

async fn apply_one<K>(client: &Client, namespace: &str, object: &K) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Serialize
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    // SSA needs apiVersion and kind in the body; the typed structs leave them to serde.
    let mut body = serde_json::to_value(object).map_err(kube::Error::SerdeError)?;
    body["apiVersion"] = K::api_version(&()).into();
    body["kind"] = K::kind(&()).into();
    api.patch(
        NAME,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{lines, mock_client, serve};
    use crate::fleet::build;
    use crate::fleet::build::tests::settings;

    #[tokio::test]
    async fn the_objects_go_out_by_server_side_apply() {
        let (client, mut handle) = mock_client();
        let fleet = build(&settings(), "mail", 2500, &[]);
        let work = {
            let fleet = fleet.clone();
            async move { apply(&client, "mail", &fleet).await }
        };
        let (result, seen) = serve(&mut handle, work, |s| {
            if s.method == "DELETE" {
                (
                    404,
                    serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "reason": "NotFound", "code": 404, "message": "not found"}),
                )
            } else {
                (200, s.body.clone())
            }
        })
        .await;
        result.expect("apply");
        let query = "?&force=true&fieldManager=mail-operator";
        assert_eq!(
            lines(&seen),
            [
                format!("PATCH /apis/apps/v1/namespaces/mail/deployments/mailserver{query}"),
                format!("PATCH /api/v1/namespaces/mail/services/mailserver{query}"),
                format!(
                    "PATCH /apis/policy/v1/namespaces/mail/poddisruptionbudgets/mailserver{query}"
                ),
                "DELETE /apis/autoscaling/v2/namespaces/mail/horizontalpodautoscalers/mailserver?"
                    .to_string(),
            ]
        );
        assert_eq!(seen[0].body["kind"], "Deployment");
        assert_eq!(seen[0].body["apiVersion"], "apps/v1");
        assert_eq!(seen[0].body["spec"]["replicas"], 3);
        assert_eq!(seen[1].body["spec"]["externalTrafficPolicy"], "Local");
        assert_eq!(seen[2].body["spec"]["maxUnavailable"], 1);

        // What went out is valid for the API server.
        let dir = tempfile::tempdir().expect("tempdir");
        let files: Vec<_> = seen
            .iter()
            .take(3)
            .enumerate()
            .map(|(i, s)| {
                let path = dir.path().join(format!("{i}.json"));
                std::fs::write(&path, s.body.to_string()).expect("write");
                path
            })
            .collect();
        crate::fixtures::kubernetes_validate(&files);
    }

    #[tokio::test]
    async fn an_hpa_and_a_certificate_when_the_settings_ask() {
        let (client, mut handle) = mock_client();
        let s = crate::fleet::Settings {
            hpa_cpu_percent: Some(60),
            certificate_issuer: Some("letsencrypt".to_string()),
            ..settings()
        };
        let fleet = build(&s, "mail", 2500, &["example.com".to_string()]);
        let work = {
            let fleet = fleet.clone();
            async move { apply(&client, "mail", &fleet).await }
        };
        let (result, seen) = serve(&mut handle, work, |s| (200, s.body.clone())).await;
        result.expect("apply");
        let query = "?&force=true&fieldManager=mail-operator";
        let lines = lines(&seen);
        assert_eq!(
            lines[3..],
            [
                format!(
                    "PATCH /apis/autoscaling/v2/namespaces/mail/horizontalpodautoscalers/mailserver{query}"
                ),
                format!(
                    "PATCH /apis/cert-manager.io/v1/namespaces/mail/certificates/mailserver{query}"
                ),
            ]
        );
        assert!(
            seen[0].body["spec"].get("replicas").is_none(),
            "{}",
            seen[0].body
        );
        assert_eq!(seen[3].body["kind"], "HorizontalPodAutoscaler");
        assert_eq!(seen[4].body["spec"]["dnsNames"][1], "mta-sts.example.com");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("hpa.json");
        std::fs::write(&path, seen[3].body.to_string()).expect("write");
        crate::fixtures::kubernetes_validate(&[path]);
    }
}

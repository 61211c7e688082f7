//! The fleet's objects applied by server-side apply under the operator's field manager.

use kube::api::{Patch, PatchParams};
use kube::{Api, Client, Resource};
use serde::Serialize;

use super::Fleet;
use super::build::NAME;
use crate::context::FIELD_MANAGER;

pub async fn apply(client: &Client, namespace: &str, fleet: &Fleet) -> Result<(), kube::Error> {
    apply_one(client, namespace, &fleet.deployment).await?;
    apply_one(client, namespace, &fleet.service).await?;
    apply_one(client, namespace, &fleet.pdb).await?;
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
    async fn the_three_objects_go_out_by_server_side_apply() {
        let (client, mut handle) = mock_client();
        let fleet = build(&settings(), "mail", 2500);
        let work = {
            let fleet = fleet.clone();
            async move { apply(&client, "mail", &fleet).await }
        };
        let (result, seen) = serve(&mut handle, work, |s| (200, s.body.clone())).await;
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
            .enumerate()
            .map(|(i, s)| {
                let path = dir.path().join(format!("{i}.json"));
                std::fs::write(&path, s.body.to_string()).expect("write");
                path
            })
            .collect();
        crate::fixtures::kubernetes_validate(&files);
    }
}

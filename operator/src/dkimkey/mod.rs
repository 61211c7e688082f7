//! The DkimKey controller: the key pair lives in a Secret the DkimKey owns (`<name>-dkim`,
//! key `private.pem`): made once and never overwritten; then the `dkim_keys` row gets the pair
//! (the mail server signs with it) and the status the public key and its TXT record. Deleting
//! removes the row; Kubernetes collects the Secret by its owner reference.

mod keygen;
#[cfg(test)]
mod tests;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use mail_provision::dns;
use mail_resources::{DkimKey, DkimKeyStatus};
use std::collections::BTreeMap;

pub use keygen::{KeyPair, from_pem, generate};

use crate::conditions::Verdict;
use crate::context::{Context, FIELD_MANAGER};
use crate::error::Error;
use crate::reconcile::Reconciled;
use crate::status;

pub const FINALIZER: &str = "dkimkeys.mail.kubemail.io/cleanup";

impl Reconciled for DkimKey {
    const KIND: &'static str = "DkimKey";
    const FINALIZER: &'static str = FINALIZER;

    async fn apply(&self, ctx: &Context) -> Result<Action, Error> {
        apply(self, ctx).await
    }

    async fn cleanup(&self, ctx: &Context) -> Result<Action, Error> {
        cleanup(self, ctx).await
    }
}
/// The key of the private key in the Secret.
pub const PRIVATE_KEY: &str = "private.pem";

/// The name of the Secret a DkimKey keeps its private key in.
pub fn secret_name(key: &DkimKey) -> String {
    format!("{}-dkim", key.name_any())
}

async fn apply(key: &DkimKey, ctx: &Context) -> Result<Action, Error> {
    let spec = &key.spec;
    let current = key.status.as_ref();
    let mut next = DkimKeyStatus {
        observed_generation: key.metadata.generation,
        ..DkimKeyStatus::default()
    };
    let verdict = if !mail_provision::domain_hosted(&ctx.pool, &spec.domain).await? {
        Verdict::not_ready(
            "DomainNotFound",
            format!("no Ready MailDomain hosts {}", spec.domain),
        )
    } else {
        match key_pair(key, ctx).await? {
            Err(verdict) => verdict,
            Ok(pair) => {
                mail_provision::apply_dkim_key(&ctx.pool, spec).await?;
                mail_provision::store_dkim_key_pair(
                    &ctx.pool,
                    spec,
                    &pair.private_pem,
                    &pair.public_key,
                )
                .await?;
                next.secret_name = Some(secret_name(key));
                next.dns_name = Some(format!("{}._domainkey.{}.", spec.selector, spec.domain));
                next.dns_txt = Some(dns::dkim_txt(spec.algorithm, &pair.public_key));
                next.public_key = Some(pair.public_key);
                Verdict::ready("KeyReady", "the key pair exists and is published in status")
            }
        }
    };
    status::conclude(ctx, key, current, &verdict, next).await
}

/// The key pair in the owned Secret; a new one, in a new Secret, if there is none. An existing
/// Secret is never written: a key that does not parse is reported, not replaced.
async fn key_pair(key: &DkimKey, ctx: &Context) -> Result<Result<KeyPair, Verdict>, Error> {
    let namespace = key.namespace().unwrap_or_else(|| "default".to_string());
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let name = secret_name(key);
    let algorithm = key.spec.algorithm;
    if let Some(secret) = secrets.get_opt(&name).await? {
        let pem = secret
            .data
            .as_ref()
            .and_then(|d| d.get(PRIVATE_KEY))
            .map(|v| String::from_utf8_lossy(&v.0).into_owned());
        let Some(pem) = pem else {
            return Ok(Err(Verdict::not_ready(
                "SecretInvalid",
                format!("Secret {name} has no key {PRIVATE_KEY}; delete it to get a new key"),
            )));
        };
        return Ok(from_pem(algorithm, &pem).map_err(|e| {
            Verdict::not_ready(
                "SecretInvalid",
                format!("Secret {name}: {e}; delete it to get a new key"),
            )
        }));
    }
    let pair = tokio::task::spawn_blocking(move || generate(algorithm))
        .await
        .map_err(|e| Error::KeyGeneration(e.to_string()))?
        .map_err(Error::KeyGeneration)?;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(namespace),
            owner_references: key.controller_owner_ref(&()).map(|r| vec![r]),
            labels: Some(BTreeMap::from([
                (
                    "app.kubernetes.io/managed-by".to_string(),
                    FIELD_MANAGER.to_string(),
                ),
                ("mail.kubemail.io/dkimkey".to_string(), key.name_any()),
            ])),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_string()),
        data: Some(BTreeMap::from([(
            PRIVATE_KEY.to_string(),
            ByteString(pair.private_pem.clone().into_bytes()),
        )])),
        ..Secret::default()
    };
    // Create, never apply: if another writer got there first this fails (409) and the next
    // attempt reads the key that won.
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PostParams::default()
    };
    secrets.create(&params, &secret).await?;
    Ok(Ok(pair))
}

async fn cleanup(key: &DkimKey, ctx: &Context) -> Result<Action, Error> {
    let outcome =
        mail_provision::delete_dkim_key(&ctx.pool, &key.spec.domain, &key.spec.selector).await?;
    tracing::info!(domain = %key.spec.domain, selector = %key.spec.selector, ?outcome, "DKIM key deleted");
    Ok(Action::await_change())
}

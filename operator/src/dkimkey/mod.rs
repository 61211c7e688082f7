//! The DkimKey controller: the key pair lives in a Secret the DkimKey owns (`<name>-dkim`,
//! key `private.pem`): made once and never overwritten; then the `dkim_keys` row gets the pair
//! (the mail server signs with it) and the status the public key and its TXT record. Deleting
//! removes the rows; Kubernetes collects the Secrets by their owner reference.
//!
//! With `rotateAfter` a DkimKey has key versions (`rotation.rs`), each with its own selector,
//! Secret and row; only the `Active` one's row is marked active.

mod rotation;
#[cfg(test)]
mod rotation_tests;
#[cfg(test)]
mod tests;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use mail_provision::dns;
use mail_resources::{DkimKey, DkimKeySpec, DkimKeyStatus, DkimKeyVersion, DnsRecord, KeyState};
use std::collections::BTreeMap;

pub use mail_provision::keygen::{KeyPair, from_pem, generate};

use crate::conditions::Verdict;
use crate::context::{Context, FIELD_MANAGER, RESYNC};
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

/// The row of one key version: the spec with that version's selector, active only if it is
/// the one that signs.
fn row_of(spec: &DkimKeySpec, version: &DkimKeyVersion) -> DkimKeySpec {
    DkimKeySpec {
        selector: version.selector.clone(),
        active: spec.active && version.state == KeyState::Active,
        ..spec.clone()
    }
}

/// The TXT record of a key version.
fn record_of(domain: &str, selector: &str, txt: &str) -> DnsRecord {
    DnsRecord {
        name: format!("{selector}._domainkey.{domain}."),
        record_type: "TXT".to_string(),
        value: dns::txt_data(txt),
    }
}

async fn apply(key: &DkimKey, ctx: &Context) -> Result<Action, Error> {
    let spec = &key.spec;
    let current = key.status.as_ref();
    let now = ctx.now();
    let mut next = DkimKeyStatus {
        observed_generation: key.metadata.generation,
        ..DkimKeyStatus::default()
    };
    if !mail_provision::domain_hosted(&ctx.pool, &spec.domain).await? {
        let verdict = Verdict::not_ready(
            "DomainNotFound",
            format!("no Ready MailDomain hosts {}", spec.domain),
        );
        return status::conclude(ctx, key, current, &verdict, Vec::new(), next).await;
    }
    let schedule = match rotation::Schedule::of(spec) {
        Ok(schedule) => schedule,
        Err(message) => {
            let verdict = Verdict::not_ready("Invalid", message);
            return status::conclude(ctx, key, current, &verdict, Vec::new(), next).await;
        }
    };
    let mut versions = current.map(|s| s.keys.clone()).unwrap_or_default();
    let first_time = versions.is_empty();
    if first_time {
        versions.push(rotation::first(key, &key.name_any(), now));
    }

    // Retired versions go first: row, then Secret (their overlap is over).
    for index in rotation::expired(&versions, now).into_iter().rev() {
        let old = versions.remove(index);
        mail_provision::delete_dkim_key(&ctx.pool, &spec.domain, &old.selector).await?;
        delete_secret(key, ctx, &old.secret_name).await?;
        tracing::info!(domain = %spec.domain, selector = %old.selector, "retired DKIM key removed");
    }
    // A rotation that is due starts now.
    let started = rotation::rotation_due_at(&versions, &schedule).is_some_and(|at| at <= now);
    if started {
        let successor = rotation::successor(&versions, &spec.selector, &key.name_any(), now);
        tracing::info!(domain = %spec.domain, selector = %successor.selector, "DKIM key rotation started");
        versions.push(successor);
    }

    // Every version's key pair, from its Secret or new into a new Secret.
    let mut pairs = Vec::with_capacity(versions.len());
    for version in &mut versions {
        match key_pair(key, ctx, &version.secret_name).await? {
            Err(verdict) => {
                return status::conclude(ctx, key, current, &verdict, Vec::new(), next).await;
            }
            Ok((pair, made_at)) => {
                // A key from before versions were kept is as old as its Secret.
                if first_time && version.number == 1 {
                    let made_at = made_at.unwrap_or(now).to_string();
                    version.created_at.clone_from(&made_at);
                    version.active_since = Some(made_at);
                }
                pairs.push(pair);
            }
        }
    }

    // A pending key signs once DNS serves its record (never in the round that made it: the
    // MailDomain has not listed it yet).
    let mut waiting = None;
    if let Some(index) = rotation::pending(&versions) {
        let txt = dns::dkim_txt(spec.algorithm, &pairs[index].public_key);
        let record = record_of(&spec.domain, &versions[index].selector, &txt);
        let served = match (&ctx.dns_check, started) {
            (Some(checker), false) => checker.serves(std::slice::from_ref(&record)).await,
            _ => false,
        };
        if served {
            rotation::promote(&mut versions, index, now, schedule.overlap);
            tracing::info!(domain = %spec.domain, selector = %versions[index].selector, "DKIM key rotated");
        } else {
            waiting = Some(match ctx.dns_check {
                Some(_) => format!("it becomes active once DNS serves TXT {}", record.name),
                None => {
                    "the DNS check is off (--dns-check), so it cannot become active".to_string()
                }
            });
        }
    }

    // The rows: the signing one first, so that there is always one to sign with.
    let mut order: Vec<usize> = (0..versions.len()).collect();
    order.sort_by_key(|&i| versions[i].state != KeyState::Active);
    for i in order {
        let row = row_of(spec, &versions[i]);
        mail_provision::apply_dkim_key(&ctx.pool, &row).await?;
        mail_provision::store_dkim_key_pair(
            &ctx.pool,
            &row,
            &pairs[i].private_pem,
            &pairs[i].public_key,
        )
        .await?;
    }

    let active = versions
        .iter()
        .position(|v| v.state == KeyState::Active)
        .unwrap_or(0);
    let version = &versions[active];
    next.secret_name = Some(version.secret_name.clone());
    next.dns_name = Some(format!("{}._domainkey.{}.", version.selector, spec.domain));
    next.dns_txt = Some(dns::dkim_txt(spec.algorithm, &pairs[active].public_key));
    next.public_key = Some(pairs[active].public_key.clone());
    next.active_selector = Some(version.selector.clone());
    next.keys = versions.clone();
    let verdict = match &waiting {
        Some(why) => Verdict::ready(
            "Rotating",
            format!(
                "signing with {}; the new selector waits until DNS serves it: {why}",
                version.selector
            ),
        ),
        None => Verdict::ready("KeyReady", "the key pair exists and is published in status"),
    };
    let action = status::conclude(ctx, key, current, &verdict, Vec::new(), next).await?;
    // Wake for what is due next: the pending key's DNS, a retirement or the next rotation.
    Ok(match rotation::next_wake(&versions, &schedule, now) {
        Some(wake) => Action::requeue(wake.min(RESYNC)),
        None => action,
    })
}

/// The key pair in Secret `name`, with the Secret's creation time; a new one, in a new Secret,
/// if there is none. An existing Secret is never written: a key that does not parse is
/// reported, not replaced.
async fn key_pair(
    key: &DkimKey,
    ctx: &Context,
    name: &str,
) -> Result<Result<(KeyPair, Option<k8s_openapi::jiff::Timestamp>), Verdict>, Error> {
    let namespace = key.namespace().unwrap_or_else(|| "default".to_string());
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let algorithm = key.spec.algorithm;
    if let Some(secret) = secrets.get_opt(name).await? {
        let made_at = secret.metadata.creation_timestamp.as_ref().map(|t| t.0);
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
        return Ok(from_pem(algorithm, &pem)
            .map(|pair| (pair, made_at))
            .map_err(|e| {
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
            name: Some(name.to_string()),
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
    Ok(Ok((pair, None)))
}

/// Deletes a retired version's Secret (gone already is fine).
async fn delete_secret(key: &DkimKey, ctx: &Context, name: &str) -> Result<(), Error> {
    let namespace = key.namespace().unwrap_or_else(|| "default".to_string());
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    match secrets.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn cleanup(key: &DkimKey, ctx: &Context) -> Result<Action, Error> {
    let mut selectors = vec![key.spec.selector.clone()];
    if let Some(status) = &key.status {
        selectors.extend(status.keys.iter().map(|v| v.selector.clone()));
    }
    selectors.dedup();
    for selector in &selectors {
        let outcome =
            mail_provision::delete_dkim_key(&ctx.pool, &key.spec.domain, selector).await?;
        tracing::info!(domain = %key.spec.domain, %selector, ?outcome, "DKIM key deleted");
    }
    Ok(Action::await_change())
}

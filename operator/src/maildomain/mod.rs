//! The MailDomain controller: apply (the domain row and its bucket), build (the DNS records
//! from the domain, the mail host and the DKIM keys in PostgreSQL; pure), then the status.
//! Deleting runs `delete_domain`, which honours `reclaimPolicy`, before the finalizer goes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::Action;
use mail_provision::dns;
use mail_resources::{MailDomain, MailDomainStatus};

use crate::conditions::{self, Verdict};
use crate::context::{Context, NOT_READY_RETRY};
use crate::error::Error;
use crate::reconcile::Reconciled;
use crate::status;

mod dnscheck;
mod externaldns;
#[cfg(test)]
mod tests;

pub use dnscheck::DnsChecker;

pub const FINALIZER: &str = "maildomains.mail.kubemail.io/cleanup";

impl Reconciled for MailDomain {
    const KIND: &'static str = "MailDomain";
    const FINALIZER: &'static str = FINALIZER;

    async fn apply(&self, ctx: &Context) -> Result<Action, Error> {
        apply(self, ctx).await
    }

    async fn cleanup(&self, ctx: &Context) -> Result<Action, Error> {
        cleanup(self, ctx).await
    }
}

async fn apply(domain: &MailDomain, ctx: &Context) -> Result<Action, Error> {
    let name = domain.spec.domain.as_str();
    let current = domain.status.as_ref();
    let mut next = MailDomainStatus {
        observed_generation: domain.metadata.generation,
        ..MailDomainStatus::default()
    };
    let owner = owner_of(domain);
    if let Some(holder) = mail_provision::claim_domain(&ctx.pool, name, &owner).await? {
        // The rows belong to the first resource; this one writes nothing until that one goes.
        let verdict = Verdict::not_ready(
            "DomainConflict",
            format!(
                "domain {name} is already served by MailDomain {holder}; this resource changes \
                 nothing while that one exists"
            ),
        );
        return status::conclude(ctx, domain, current, &verdict, Vec::new(), next).await;
    }
    let verdict = match mail_provision::apply_domain(
        &ctx.pool,
        ctx.blobs.as_ref(),
        &domain.spec,
        &ctx.options,
    )
    .await
    {
        Ok(outcome) => {
            tracing::info!(domain = name, ?outcome, "domain applied");
            let keys = mail_provision::dkim_public_keys(&ctx.pool, name).await?;
            next.mailboxes = Some(mail_provision::mailbox_count(&ctx.pool, name).await?);
            next.bucket = mail_provision::bucket_of(&ctx.pool, name).await?;
            next.dns_records = dns::records(name, &ctx.dns, &keys);
            next.zone = Some(dns::zone_snippet(&next.dns_records, ctx.dns.ttl));
            next.dns_endpoint = externaldns::publish(ctx, domain, &next.dns_records).await?;
            if keys.is_empty() {
                Verdict::ready(
                    "Provisioned",
                    "the domain is served; it has no DKIM key yet, so outgoing mail is unsigned",
                )
            } else {
                Verdict::ready("Provisioned", "the domain is served")
            }
        }
        Err(mail_provision::Error::Blob(e)) => {
            Verdict::not_ready("BucketUnavailable", format!("the bucket: {e}"))
        }
        Err(e) => Verdict::of_store_error(&e).ok_or(e)?,
    };
    let mut more = Vec::new();
    let mut published = true;
    if let (true, Some(checker)) = (verdict.ready, &ctx.dns_check) {
        let dns = published_verdict(checker, &next.dns_records).await;
        published = dns.ready;
        let previous = current.map_or(&[][..], |s| &s.conditions[..]);
        more.push(conditions::condition(
            conditions::DNS_PUBLISHED,
            previous,
            &dns,
            domain.metadata.generation,
            Time(k8s_openapi::jiff::Timestamp::now()),
        ));
    }
    let action = status::conclude(ctx, domain, current, &verdict, more, next).await?;
    // Until DNS serves the records, look again sooner than the resync.
    Ok(if published {
        action
    } else {
        Action::requeue(NOT_READY_RETRY)
    })
}

async fn published_verdict(checker: &DnsChecker, records: &[mail_resources::DnsRecord]) -> Verdict {
    let served = checker.served(records).await;
    let missing = dnscheck::missing(records, &served);
    if missing.is_empty() {
        Verdict::ready("Published", "DNS serves every record in dnsRecords")
    } else {
        Verdict::not_ready(
            "DnsNotPublished",
            format!("DNS does not serve: {}", missing.join(", ")),
        )
    }
}

/// `namespace/name`: who claims a domain.
fn owner_of(domain: &MailDomain) -> String {
    format!(
        "{}/{}",
        domain.metadata.namespace.as_deref().unwrap_or("default"),
        domain.metadata.name.as_deref().unwrap_or_default()
    )
}

async fn cleanup(domain: &MailDomain, ctx: &Context) -> Result<Action, Error> {
    let name = domain.spec.domain.as_str();
    let owner = owner_of(domain);
    // A resource that lost the claim made nothing, so it removes nothing.
    if let Some(holder) = mail_provision::domain_claimant(&ctx.pool, name).await?
        && holder != owner
    {
        tracing::info!(
            domain = name,
            holder,
            "not deleting: another MailDomain serves it"
        );
        return Ok(Action::await_change());
    }
    let outcome = mail_provision::delete_domain(&ctx.pool, ctx.blobs.as_ref(), name).await?;
    mail_provision::release_domain(&ctx.pool, name, &owner).await?;
    tracing::info!(domain = name, ?outcome, "domain deleted");
    Ok(Action::await_change())
}

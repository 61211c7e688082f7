//! The MailDomain controller: apply (the domain row and its bucket), build (the DNS records
//! from the domain, the mail host and the DKIM keys in PostgreSQL; pure), then the status.
//! Deleting runs `delete_domain`, which honours `reclaimPolicy`, before the finalizer goes.

use kube::runtime::controller::Action;
use mail_provision::dns;
use mail_resources::{MailDomain, MailDomainStatus};

use crate::conditions::Verdict;
use crate::context::Context;
use crate::error::Error;
use crate::reconcile::Reconciled;
use crate::status;

mod externaldns;
#[cfg(test)]
mod tests;

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
    status::conclude(ctx, domain, current, &verdict, next).await
}

async fn cleanup(domain: &MailDomain, ctx: &Context) -> Result<Action, Error> {
    let outcome =
        mail_provision::delete_domain(&ctx.pool, ctx.blobs.as_ref(), &domain.spec.domain).await?;
    tracing::info!(domain = %domain.spec.domain, ?outcome, "domain deleted");
    Ok(Action::await_change())
}

//! The Mailbox controller: validate, dereference (the password Secret, the domain), apply
//! (the reconcile core's `apply_mailbox`), then the status. Deleting runs `delete_mailbox`
//! before the finalizer goes, so the row follows the domain's reclaim policy.

use k8s_openapi::api::core::v1::Secret;
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use mail_resources::{Mailbox, MailboxStatus};

use crate::conditions::Verdict;
use crate::context::Context;
use crate::error::Error;
use crate::reconcile::Reconciled;
use crate::status;

#[cfg(test)]
mod tests;

pub const FINALIZER: &str = "mailboxes.mail.kubemail.io/cleanup";

impl Reconciled for Mailbox {
    const KIND: &'static str = "Mailbox";
    const FINALIZER: &'static str = FINALIZER;

    async fn apply(&self, ctx: &Context) -> Result<Action, Error> {
        apply(self, ctx).await
    }

    async fn cleanup(&self, ctx: &Context) -> Result<Action, Error> {
        cleanup(self, ctx).await
    }
}

fn namespace(mailbox: &Mailbox) -> String {
    mailbox.namespace().unwrap_or_else(|| "default".to_string())
}

async fn apply(mailbox: &Mailbox, ctx: &Context) -> Result<Action, Error> {
    let verdict = match dereference(mailbox, ctx).await? {
        Err(verdict) => verdict,
        Ok(password) => {
            match mail_provision::apply_mailbox(&ctx.pool, &mailbox.spec, password.as_deref()).await
            {
                Ok(outcome) => {
                    tracing::info!(mailbox = %mailbox.spec.address, ?outcome, "mailbox applied");
                    Verdict::ready("Provisioned", "the mailbox receives mail")
                }
                Err(e) => Verdict::of_store_error(&e).ok_or(e)?,
            }
        }
    };
    let used_bytes = if verdict.ready {
        mail_provision::used_bytes(&ctx.pool, &mailbox.spec.address).await?
    } else {
        None
    };
    let next = MailboxStatus {
        observed_generation: mailbox.metadata.generation,
        used_bytes,
        ..MailboxStatus::default()
    };
    status::conclude(ctx, mailbox, mailbox.status.as_ref(), &verdict, next).await
}

/// The password bytes (if the spec references a Secret) once the Secret and the domain exist,
/// or the verdict that says which is missing.
async fn dereference(
    mailbox: &Mailbox,
    ctx: &Context,
) -> Result<Result<Option<Vec<u8>>, Verdict>, Error> {
    let address = mailbox.spec.address.to_ascii_lowercase();
    let domain = match mail_provision::check_address(&address) {
        Ok((_, domain)) => domain.to_string(),
        Err(e) => {
            return Ok(Err(Verdict::not_ready(
                "Invalid",
                format!("address {address:?} {e}"),
            )));
        }
    };
    let mut password = None;
    if let Some(reference) = &mailbox.spec.password_secret_ref {
        let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace(mailbox));
        let Some(secret) = secrets.get_opt(&reference.name).await? else {
            return Ok(Err(Verdict::not_ready(
                "SecretMissing",
                format!("Secret {} does not exist", reference.name),
            )));
        };
        let value = secret
            .data
            .as_ref()
            .and_then(|data| data.get(&reference.key));
        let Some(value) = value else {
            return Ok(Err(Verdict::not_ready(
                "SecretMissing",
                format!("Secret {} has no key {}", reference.name, reference.key),
            )));
        };
        password = Some(value.0.clone());
    }
    if !mail_provision::domain_hosted(&ctx.pool, &domain).await? {
        return Ok(Err(Verdict::not_ready(
            "DomainNotFound",
            format!("no Ready MailDomain hosts {domain}"),
        )));
    }
    Ok(Ok(password))
}

async fn cleanup(mailbox: &Mailbox, ctx: &Context) -> Result<Action, Error> {
    let outcome = mail_provision::delete_mailbox(&ctx.pool, &mailbox.spec.address).await?;
    tracing::info!(mailbox = %mailbox.spec.address, ?outcome, "mailbox deleted");
    Ok(Action::await_change())
}

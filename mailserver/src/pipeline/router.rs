//! The last step: each recipient to its mailbox here, or to the outbound queue (relayed for an
//! authenticated session, or forwarded by an alias with the sender rewritten by SRS).

use mail_blobstore::BlobSource;

use super::{Dsn, IncomingMessage, Target, srs};
use crate::store::{Delivered, Store, StoreError};

/// A recipient handed to the outbound queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboundRcpt {
    pub address: String,
    pub dsn: Dsn,
}

/// Why the queue did not take a message.
#[derive(Debug, thiserror::Error)]
#[error("outbound queue: {0}")]
pub struct OutboundError(pub String);

/// The outbound queue, as the router sees it (the queue module implements it). `enqueue`
/// returns once the message is durable in the queue.
#[async_trait::async_trait]
pub trait Outbound: Send + Sync {
    async fn enqueue(
        &self,
        message: &IncomingMessage,
        body: &BlobSource,
        sender: &str,
        recipients: &[OutboundRcpt],
    ) -> Result<(), OutboundError>;
}

/// Why a message could not be stored or queued (the client is told to retry).
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Outbound(#[from] OutboundError),
    #[error("remote recipients but no outbound queue")]
    NoOutbound,
}

/// The outbound part of a message: one envelope sender and its recipients.
#[derive(Debug, PartialEq, Eq)]
pub struct Batch {
    pub sender: String,
    pub recipients: Vec<OutboundRcpt>,
}

/// The outbound batches of a message: relayed recipients under the original sender, and each
/// forwarding alias's targets under the SRS form of it (at the alias's domain).
pub fn outbound_batches(
    message: &IncomingMessage,
    srs_secret: Option<&[u8]>,
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<Batch> {
    let envelope = &message.envelope;
    let mut batches: Vec<Batch> = Vec::new();
    let mut add = |sender: String, rcpt: OutboundRcpt| match batches
        .iter_mut()
        .find(|b| b.sender == sender)
    {
        Some(batch) => batch.recipients.push(rcpt),
        None => batches.push(Batch {
            sender,
            recipients: vec![rcpt],
        }),
    };
    for rcpt in &envelope.recipients {
        match &rcpt.target {
            Target::Local(_) => {}
            Target::Relay => add(
                envelope.sender.clone(),
                OutboundRcpt {
                    address: rcpt.address.clone(),
                    dsn: rcpt.dsn.clone(),
                },
            ),
            Target::Forward(targets) => {
                let alias_domain = rcpt.address.rsplit_once('@').map_or("", |(_, d)| d);
                let sender = match srs_secret {
                    Some(secret) => srs::forward(secret, &envelope.sender, alias_domain, now),
                    None => envelope.sender.clone(),
                };
                for target in targets {
                    // The original recipient is the alias (RFC 3461 ORCPT).
                    let dsn = Dsn {
                        notify: rcpt.dsn.notify,
                        orcpt: rcpt
                            .dsn
                            .orcpt
                            .clone()
                            .or_else(|| Some(("rfc822".into(), rcpt.address.clone()))),
                    };
                    add(
                        sender.clone(),
                        OutboundRcpt {
                            address: target.clone(),
                            dsn,
                        },
                    );
                }
            }
        }
    }
    batches
}

/// Files the message into its local mailboxes (Junk when `junk`) and queues the rest. Local
/// copies first: when queueing fails afterwards the client retries and the local recipients
/// may get the message twice, which is better than losing it.
pub async fn deliver(
    store: &Store,
    outbound: Option<&dyn Outbound>,
    srs_secret: Option<&[u8]>,
    message: &IncomingMessage,
    body: &BlobSource,
    junk: bool,
) -> Result<Vec<Delivered>, RouteError> {
    let local = message.envelope.local_recipients();
    let delivered = match local.is_empty() {
        true => Vec::new(),
        false => store.deliver_placed(body, &local, junk).await?,
    };
    let batches = outbound_batches(message, srs_secret, chrono::Utc::now());
    if !batches.is_empty() {
        let outbound = outbound.ok_or(RouteError::NoOutbound)?;
        for batch in batches {
            outbound
                .enqueue(message, body, &batch.sender, &batch.recipients)
                .await?;
        }
    }
    Ok(delivered)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{Envelope, Notify, Rcpt};
    use crate::smtp::session::Body;

    #[test]
    fn batches_by_sender() {
        let mut envelope = Envelope::test("Bob@remote.test");
        let never = Dsn {
            notify: Some(Notify::default()),
            orcpt: None,
        };
        envelope.recipients = vec![
            Rcpt {
                address: "far@away.test".into(),
                dsn: never.clone(),
                target: Target::Relay,
            },
            Rcpt {
                address: "list@example.test".into(),
                dsn: Dsn::default(),
                target: Target::Forward(vec!["x@ext.test".into(), "y@ext.test".into()]),
            },
        ];
        let message = IncomingMessage {
            id: "ID".into(),
            envelope,
            body: Body::Memory(Vec::new()),
        };
        let now = chrono::Utc::now();
        let batches = outbound_batches(&message, Some(b"k"), now);
        assert_eq!(batches.len(), 2, "{batches:?}");
        assert_eq!(batches[0].sender, "Bob@remote.test");
        assert_eq!(batches[0].recipients[0].dsn, never);
        let srs = &batches[1].sender;
        assert!(
            srs.starts_with("SRS0=") && srs.ends_with("@example.test"),
            "{srs}"
        );
        let local = srs.rsplit_once('@').unwrap().0.to_lowercase();
        assert_eq!(
            srs::reverse(b"k", &local, now).as_deref(),
            Some("bob@remote.test")
        );
        let targets: Vec<_> = batches[1].recipients.iter().map(|r| &r.address).collect();
        assert_eq!(targets, ["x@ext.test", "y@ext.test"]);
        assert_eq!(
            batches[1].recipients[0].dsn.orcpt,
            Some(("rfc822".into(), "list@example.test".into()))
        );
        // Without a secret, forwarding keeps the sender (SPF may then fail downstream).
        let plain = outbound_batches(&message, None, now);
        assert_eq!(plain.len(), 1, "{plain:?}");
        assert_eq!(plain[0].sender, "Bob@remote.test");
        assert_eq!(plain[0].recipients.len(), 3);
    }
}

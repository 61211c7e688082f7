//! The queue runner: claims due recipients under a lease, delivers them (remote domains through
//! [`Outbound`], hosted ones into the store), records the results, sends the DSNs that are due
//! and removes finished messages. Every pod runs one; leases keep them apart.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt;
use mail_blobstore::BlobSource;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::dsn::{self, Action, Entry, Report};
use super::store::{self as qstore, Claimed, Marks, NewState, QueuedMessage};
use super::{Envelope, Queue, QueueError, QueuedRecipient};
use crate::outbound::{Message, Outbound, Outcome, Rcpt, Status};
use crate::store::StoreError;

/// How the runner works; from the command line.
#[derive(Clone, Debug)]
pub struct RunnerSettings {
    /// This runner's name in `lease_owner` (pod name and a random part).
    pub owner: String,
    /// How long a claim holds; longer than `attempt_timeout` by a margin.
    pub lease: Duration,
    /// Longest one delivery attempt (one message to one domain) may take.
    pub attempt_timeout: Duration,
    /// Recipients claimed at once.
    pub batch: i64,
    /// Messages delivered at the same time.
    pub concurrency: usize,
    /// How often to look for due work when no notification came.
    pub poll: Duration,
}

impl Default for RunnerSettings {
    fn default() -> Self {
        Self {
            owner: format!("runner-{}", crate::queue::runner::random_suffix()),
            lease: Duration::from_secs(15 * 60),
            attempt_timeout: Duration::from_secs(10 * 60),
            batch: 200,
            concurrency: 32,
            poll: Duration::from_secs(5),
        }
    }
}

/// A random 8-hex-digit suffix for runner names.
pub fn random_suffix() -> String {
    format!("{:08x}", rand::random::<u32>())
}

pub struct Runner {
    queue: Queue,
    outbound: Arc<Outbound>,
    settings: RunnerSettings,
}

/// Every how often stranded reports and finished messages are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(30);
/// Every how often the queue gauges are refreshed.
const GAUGE_EVERY: Duration = Duration::from_secs(5);

impl Runner {
    pub fn new(queue: Queue, outbound: Arc<Outbound>, settings: RunnerSettings) -> Self {
        Self {
            queue,
            outbound,
            settings,
        }
    }

    /// Runs until `stop` turns true: claims and delivers while there is due work, else waits
    /// for an enqueue notification (any pod's) or the poll interval.
    pub fn spawn(self: Arc<Self>, mut stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let db = self.queue.store().db().clone();
            let mut listener = match sqlx::postgres::PgListener::connect_with(&db).await {
                Ok(mut l) => match l.listen("queue_added").await {
                    Ok(()) => Some(l),
                    Err(error) => {
                        warn!(%error, "queue: LISTEN failed; polling only");
                        None
                    }
                },
                Err(error) => {
                    warn!(%error, "queue: no listener connection; polling only");
                    None
                }
            };
            let mut last_sweep = Instant::now();
            let mut last_gauge: Option<Instant> = None;
            info!(owner = %self.settings.owner, "queue runner started");
            while !*stop.borrow() {
                if last_gauge.is_none_or(|t| t.elapsed() >= GAUGE_EVERY) {
                    self.refresh_gauges().await;
                    last_gauge = Some(Instant::now());
                }
                if last_sweep.elapsed() >= SWEEP_EVERY {
                    self.sweep().await;
                    last_sweep = Instant::now();
                }
                let worked = match self.run_once().await {
                    Ok(n) => n,
                    Err(error) => {
                        warn!(%error, "queue run failed");
                        0
                    }
                };
                if worked > 0 {
                    continue;
                }
                let wait = tokio::time::sleep(self.settings.poll);
                match listener.as_mut() {
                    Some(l) => tokio::select! {
                        _ = wait => {}
                        got = l.recv() => if let Err(error) = got {
                            debug!(%error, "queue listener interrupted");
                        },
                        _ = stop.changed() => {}
                    },
                    None => tokio::select! {
                        _ = wait => {}
                        _ = stop.changed() => {}
                    },
                }
            }
            info!("queue runner stopped");
        })
    }

    /// One pass: claims a batch, delivers it and returns how many recipients it handled.
    pub async fn run_once(&self) -> Result<usize, QueueError> {
        let db = self.queue.store().db();
        let claimed = qstore::claim(
            db,
            &self.settings.owner,
            self.settings.lease,
            self.settings.batch,
        )
        .await?;
        if claimed.is_empty() {
            return Ok(0);
        }
        let count = claimed.len();
        let mut by_message: BTreeMap<i64, Vec<Claimed>> = BTreeMap::new();
        for c in claimed {
            by_message.entry(c.queue_id).or_default().push(c);
        }
        let ids: Vec<i64> = by_message.keys().copied().collect();
        let messages = qstore::messages(db, &ids).await?;
        futures::stream::iter(messages.into_iter().filter_map(|m| {
            let rcpts = by_message.remove(&m.id)?;
            Some((m, rcpts))
        }))
        .for_each_concurrent(self.settings.concurrency, |(message, rcpts)| async move {
            let id = message.id;
            if let Err(error) = self.process(message, rcpts).await {
                warn!(queue_id = id, %error, "queue message not processed; retried later");
            }
        })
        .await;
        Ok(count)
    }

    async fn process(&self, message: QueuedMessage, rcpts: Vec<Claimed>) -> Result<(), QueueError> {
        let store = self.queue.store();
        let raw = match qstore::read_object(store, &message.bucket, &message.key).await {
            Ok(raw) => raw,
            Err(error) => {
                // Unreadable now (blob store down): every claimed recipient waits a round.
                let outcome =
                    Outcome::temporary("4.3.0", format!("message body unreadable: {error}"));
                for rcpt in &rcpts {
                    self.apply(&message, rcpt, &outcome, &mut Vec::new())
                        .await?;
                }
                return Err(error);
            }
        };
        let mut data = Vec::with_capacity(raw.len() + 1024);
        if let Some(header) = &message.dkim_header {
            data.extend_from_slice(header.as_bytes());
        }
        data.extend_from_slice(&raw);
        let data = Arc::new(data);
        let mut by_domain: BTreeMap<String, Vec<&Claimed>> = BTreeMap::new();
        for rcpt in &rcpts {
            let domain = rcpt
                .recipient
                .rsplit_once('@')
                .map(|(_, d)| d.trim_end_matches('.').to_lowercase())
                .unwrap_or_default();
            by_domain.entry(domain).or_default().push(rcpt);
        }
        // All domains at once: the whole pass then fits in one attempt timeout, well inside
        // the lease.
        let results = futures::future::join_all(
            by_domain
                .iter()
                .map(|(domain, group)| self.deliver_group(&message, &data, domain, group)),
        )
        .await;
        let mut delayed = Vec::new();
        for ((_, group), outcomes) in by_domain.iter().zip(results) {
            for (rcpt, outcome) in group.iter().zip(outcomes.iter()) {
                self.apply(&message, rcpt, outcome, &mut delayed).await?;
            }
        }
        self.report(&message, &raw, &delayed).await?;
        qstore::finish(store, message.id).await?;
        Ok(())
    }

    async fn deliver_group(
        &self,
        message: &QueuedMessage,
        data: &Arc<Vec<u8>>,
        domain: &str,
        group: &[&Claimed],
    ) -> Vec<Outcome> {
        if domain.is_empty() {
            return vec![
                Outcome::permanent("5.1.3", "the recipient address has no domain");
                group.len()
            ];
        }
        match self.is_local(domain).await {
            Ok(true) => return self.deliver_locally(data, group).await,
            Ok(false) => {}
            Err(error) => {
                return vec![
                    Outcome::temporary("4.3.0", format!("database: {error}"));
                    group.len()
                ];
            }
        }
        let outbound_message = Message {
            from: message.sender.clone(),
            data: data.clone(),
            env_id: message.env_id.clone(),
            ret: message.ret,
            requiretls: message.requiretls,
        };
        let rcpts: Vec<Rcpt> = group
            .iter()
            .map(|c| Rcpt {
                address: c.recipient.clone(),
                notify: c.notify.clone(),
                orcpt: c.orcpt.clone(),
            })
            .collect();
        let attempt = self.outbound.deliver(domain, &outbound_message, &rcpts);
        match tokio::time::timeout(self.settings.attempt_timeout, attempt).await {
            Ok(outcomes) => outcomes,
            Err(_) => vec![
                Outcome::temporary(
                    "4.4.2",
                    format!(
                        "delivery to {domain} took longer than {:?}",
                        self.settings.attempt_timeout
                    )
                );
                group.len()
            ],
        }
    }

    async fn is_local(&self, domain: &str) -> Result<bool, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM domains WHERE name = $1 AND deleted_at IS NULL)",
        )
        .bind(domain)
        .fetch_one(self.queue.store().db())
        .await
    }

    /// Recipients at a hosted domain (bounces to local senders, mostly) go into the store.
    async fn deliver_locally(&self, data: &[u8], group: &[&Claimed]) -> Vec<Outcome> {
        let store = self.queue.store();
        let mut out = Vec::with_capacity(group.len());
        for rcpt in group {
            let outcome = match store.resolve_recipient(&rcpt.recipient).await {
                Ok(None) => Outcome::permanent("5.1.1", format!("no mailbox {}", rcpt.recipient)),
                Ok(Some(target)) => match store.deliver(data, &[target]).await {
                    Ok(_) => Outcome::Delivered(Status {
                        enhanced: "2.0.0".into(),
                        text: "delivered locally".into(),
                        mta: None,
                    }),
                    Err(StoreError::QuotaExceeded { .. }) => {
                        Outcome::temporary("4.2.2", format!("mailbox {} is full", rcpt.recipient))
                    }
                    Err(error) => Outcome::temporary("4.3.0", format!("local delivery: {error}")),
                },
                Err(error) => Outcome::temporary("4.3.0", format!("local delivery: {error}")),
            };
            out.push(outcome);
        }
        out
    }

    /// Records one recipient's outcome; deferred ones due for a delay notice go to `delayed`.
    async fn apply(
        &self,
        message: &QueuedMessage,
        rcpt: &Claimed,
        outcome: &Outcome,
        delayed: &mut Vec<(Claimed, Status)>,
    ) -> Result<(), QueueError> {
        let settings = self.queue.settings();
        let now = Utc::now();
        let null_sender = message.sender.is_empty();
        let notify = rcpt.notify.as_deref();
        let (state, status, reported, result) = match outcome {
            Outcome::Delivered(status) => {
                let report = !null_sender && dsn::wanted(notify, Action::Relayed);
                (NewState::Delivered, status.clone(), !report, "delivered")
            }
            Outcome::Permanent(status) => {
                let report = !null_sender && dsn::wanted(notify, Action::Failed);
                (NewState::Failed, status.clone(), !report, "failed")
            }
            Outcome::Temporary(status) if now >= message.expires_at => {
                let report = !null_sender && dsn::wanted(notify, Action::Failed);
                let expired = Status {
                    enhanced: "4.4.7".into(),
                    text: format!("gave up after {} attempts: {}", rcpt.attempts, status.text),
                    mta: status.mta.clone(),
                };
                (NewState::Failed, expired, !report, "expired")
            }
            Outcome::Temporary(status) => {
                let next = (now + backoff(settings.retry_base, settings.retry_max, rcpt.attempts))
                    .min(message.expires_at);
                let age = (now - message.created_at).to_std().unwrap_or_default();
                if !null_sender
                    && !rcpt.delay_notified
                    && age >= settings.delay_notice
                    && dsn::wanted(notify, Action::Delayed)
                {
                    delayed.push((rcpt.clone(), status.clone()));
                }
                (NewState::Deferred(next), status.clone(), true, "deferred")
            }
        };
        crate::metrics::queue_attempt(result);
        let db = self.queue.store().db();
        let held =
            qstore::record(db, &self.settings.owner, rcpt.id, &state, &status, reported).await?;
        if !held {
            warn!(queue_id = message.id, recipient = %rcpt.recipient, "lease lost before the result was recorded");
        }
        info!(
            queue_id = message.id,
            recipient = %rcpt.recipient,
            attempt = rcpt.attempts,
            result,
            status = %status.enhanced,
            detail = %status.text,
            "delivery attempt"
        );
        Ok(())
    }

    /// Sends the DSN for the message's unreported final recipients and this pass's delay
    /// notices (one report), marking them in the same transaction that queues it.
    async fn report(
        &self,
        message: &QueuedMessage,
        raw: &[u8],
        delayed: &[(Claimed, Status)],
    ) -> Result<(), QueueError> {
        let db = self.queue.store().db();
        let unreported = qstore::unreported(db, message.id).await?;
        if unreported.is_empty() && delayed.is_empty() {
            return Ok(());
        }
        let reported_ids: Vec<i64> = unreported.iter().map(|r| r.id).collect();
        if message.sender.is_empty() {
            return Ok(qstore::mark_reported(db, &reported_ids).await?);
        }
        let mut entries: Vec<Entry> = Vec::new();
        for r in &unreported {
            let action = match r.status.as_str() {
                "failed" => Action::Failed,
                _ => Action::Relayed,
            };
            entries.push(Entry {
                recipient: r.recipient.clone(),
                orcpt: r.orcpt.clone(),
                action,
                status: r.last_status.clone().unwrap_or_else(|| "5.0.0".into()),
                diagnostic: r.last_error.clone().unwrap_or_default(),
                remote_mta: r.remote_mta.clone(),
            });
        }
        for (c, status) in delayed {
            entries.push(Entry {
                recipient: c.recipient.clone(),
                orcpt: c.orcpt.clone(),
                action: Action::Delayed,
                status: status.enhanced.clone(),
                diagnostic: status.text.clone(),
                remote_mta: status.mta.clone(),
            });
        }
        let settings = self.queue.settings();
        let unique = format!("{}.{}", message.id, random_suffix());
        let report = Report {
            hostname: &settings.hostname,
            to: &message.sender,
            env_id: message.env_id.as_deref(),
            arrival: message.created_at,
            retry_until: message.expires_at,
            ret: message.ret,
            entries: &entries,
            original: raw,
            unique: &unique,
        };
        let bounce = dsn::build(&report);
        let delayed_ids: Vec<i64> = delayed.iter().map(|(c, _)| c.id).collect();
        let envelope = Envelope {
            from: String::new(),
            rcpts: vec![QueuedRecipient::new(&message.sender)],
            ..Envelope::default()
        };
        let body = super::Body::Source {
            bucket: Some(message.bucket.clone()),
            source: BlobSource::Bytes(Bytes::from(bounce)),
        };
        let marks = Marks {
            reported: &reported_ids,
            delay_notified: &delayed_ids,
        };
        match self.queue.enqueue_marked(envelope, body, marks).await? {
            Some(id) => info!(queue_id = message.id, dsn = id, to = %message.sender, "DSN queued"),
            None => debug!(queue_id = message.id, "DSN sent by another runner already"),
        }
        Ok(())
    }

    /// Finds reports a dead runner left unsent and finished messages left in place.
    pub async fn sweep(&self) {
        let db = self.queue.store().db();
        let stranded: Result<Vec<i64>, sqlx::Error> = sqlx::query_scalar(
            "SELECT DISTINCT queue_id FROM queue_recipients
              WHERE (status <> 'pending' AND NOT reported AND updated_at < now() - interval '60 seconds')
              LIMIT 100",
        )
        .fetch_all(db)
        .await;
        let done: Result<Vec<i64>, sqlx::Error> = sqlx::query_scalar(
            "SELECT id FROM queue q WHERE NOT EXISTS (
                SELECT 1 FROM queue_recipients r
                 WHERE r.queue_id = q.id AND (r.status = 'pending' OR NOT r.reported))
              LIMIT 100",
        )
        .fetch_all(db)
        .await;
        let ids: Vec<i64> = stranded
            .unwrap_or_default()
            .into_iter()
            .chain(done.unwrap_or_default())
            .collect();
        if ids.is_empty() {
            return;
        }
        let Ok(messages) = qstore::messages(db, &ids).await else {
            return;
        };
        for message in messages {
            let raw = qstore::read_object(self.queue.store(), &message.bucket, &message.key)
                .await
                .unwrap_or_default();
            if let Err(error) = self.report(&message, &raw, &[]).await {
                warn!(queue_id = message.id, %error, "sweep: report failed");
                continue;
            }
            if let Err(error) = qstore::finish(self.queue.store(), message.id).await {
                warn!(queue_id = message.id, %error, "sweep: finish failed");
            }
        }
    }

    async fn refresh_gauges(&self) {
        match qstore::gauge(self.queue.store().db()).await {
            Ok((messages, oldest)) => crate::metrics::queue_gauges(messages, oldest),
            Err(error) => debug!(%error, "queue gauges not refreshed"),
        }
    }
}

/// `base * 2^(attempt-1)`, at most `max`.
pub fn backoff(base: Duration, max: Duration, attempt: i32) -> chrono::Duration {
    let exponent = u32::try_from(attempt.saturating_sub(1))
        .unwrap_or(0)
        .min(30);
    let wait = base.saturating_mul(1u32 << exponent).min(max);
    chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let base = Duration::from_secs(60);
        let max = Duration::from_secs(3600);
        let secs: Vec<i64> = [1, 2, 3, 4, 7, 8, 100, 0, -5]
            .into_iter()
            .map(|a| backoff(base, max, a).num_seconds())
            .collect();
        assert_eq!(secs, vec![60, 120, 240, 480, 3600, 3600, 3600, 60, 60]);
    }
}

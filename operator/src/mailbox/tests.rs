//! The Mailbox controller against a mock API server (every request asserted) and a real
//! PostgreSQL.

use std::sync::Arc;

use mail_resources::{
    AuthSource, MailDomainSpec, Mailbox, MailboxSpec, MailboxStatus, ReclaimPolicy, SecretKeyRef,
};
use serde_json::{Value, json};

use super::FINALIZER;
use crate::fixtures::{self, Seen, events, lines, not_found, run, secret};
use crate::reconcile::error_policy;

const OBJECT: &str = "/apis/mail.kubemail.io/v1alpha1/namespaces/default/mailboxes/alice";
const STATUS: &str = "/apis/mail.kubemail.io/v1alpha1/namespaces/default/mailboxes/alice/status?&force=true&fieldManager=mail-operator";
const SECRET: &str = "/api/v1/namespaces/default/secrets/alice-pw";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/default/events?";

fn alice() -> Mailbox {
    let mut mailbox = Mailbox::new(
        "alice",
        MailboxSpec {
            address: "alice@example.test".to_string(),
            display_name: None,
            quota: "1Gi".to_string(),
            aliases: vec![],
            auth_source: AuthSource::Local,
            password_secret_ref: Some(SecretKeyRef {
                name: "alice-pw".to_string(),
                key: "password".to_string(),
            }),
        },
    );
    mailbox.metadata.namespace = Some("default".to_string());
    mailbox.metadata.uid = Some("0000-alice".to_string());
    mailbox.metadata.generation = Some(1);
    mailbox.metadata.finalizers = Some(vec![FINALIZER.to_string()]);
    mailbox
}

/// The API server's answers, with the Secret when `secret_json` holds one.
fn answers(mailbox: &Mailbox, secret_json: Option<Value>) -> impl FnMut(&Seen) -> (u16, Value) {
    let get = secret_json.map_or_else(|| not_found("secrets alice-pw"), |s| (200, s));
    fixtures::answers(
        serde_json::to_value(mailbox).expect("JSON"),
        vec![(SECRET.to_string(), get)],
    )
}

fn ready_of(status: &MailboxStatus) -> (String, String) {
    fixtures::ready_of(&status.conditions)
}

fn applied_status(seen: &[Seen]) -> MailboxStatus {
    fixtures::applied_status(seen, STATUS)
}

#[tokio::test]
async fn a_new_mailbox_gets_the_finalizer_and_nothing_else() {
    let (ctx, mut api, _blobs) = fixtures::context().await;
    let mut mailbox = alice();
    mailbox.metadata.finalizers = None;
    let (result, seen) = run(&mut api, &ctx, &mailbox, answers(&mailbox, None)).await;
    result.expect("reconcile");
    assert_eq!(lines(&seen), [format!("PATCH {OBJECT}?")]);
    assert_eq!(
        seen[0].body,
        json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]},
        ])
    );
}

#[tokio::test]
async fn not_ready_until_the_secret_and_the_domain_exist_then_ready_once() {
    let (ctx, mut api, _blobs) = fixtures::context().await;
    let mut mailbox = alice();

    // No Secret: not Ready, says so once.
    let (result, seen) = run(&mut api, &ctx, &mailbox, answers(&mailbox, None)).await;
    result.expect("reconcile");
    assert_eq!(
        lines(&seen),
        [
            format!("GET {SECRET}"),
            format!("PATCH {STATUS}"),
            format!("POST {EVENTS}")
        ]
    );
    let status = applied_status(&seen);
    assert_eq!(ready_of(&status), ("False".into(), "SecretMissing".into()));
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(events(&seen), [("Warning".into(), "SecretMissing".into())]);
    mailbox.status = Some(status);

    // The Secret appears, the domain does not exist yet.
    let pw = secret("alice-pw", "password", b"alice-example-pw");
    let (result, seen) = run(
        &mut api,
        &ctx,
        &mailbox,
        answers(&mailbox, Some(pw.clone())),
    )
    .await;
    result.expect("reconcile");
    let status = applied_status(&seen);
    assert_eq!(ready_of(&status), ("False".into(), "DomainNotFound".into()));
    assert_eq!(events(&seen), [("Warning".into(), "DomainNotFound".into())]);
    // Still False: the transition time stays.
    assert_eq!(
        status.conditions[0].last_transition_time,
        mailbox.status.as_ref().expect("status").conditions[0].last_transition_time
    );
    mailbox.status = Some(status);

    // The domain is hosted: Ready, and the row exists.
    let domain = MailDomainSpec {
        domain: "example.test".to_string(),
        reclaim_policy: ReclaimPolicy::Delete,
        catch_all: None,
        dns: Default::default(),
        directory: None,
    };
    mail_provision::apply_domain(&ctx.pool, ctx.blobs.as_ref(), &domain, &ctx.options)
        .await
        .expect("apply domain");
    let (result, seen) = run(
        &mut api,
        &ctx,
        &mailbox,
        answers(&mailbox, Some(pw.clone())),
    )
    .await;
    result.expect("reconcile");
    let status = applied_status(&seen);
    assert_eq!(ready_of(&status), ("True".into(), "Provisioned".into()));
    assert_eq!(events(&seen), [("Normal".into(), "Provisioned".into())]);
    let hash: Option<String> =
        sqlx::query_scalar("SELECT password_hash FROM mailboxes WHERE address = $1")
            .bind("alice@example.test")
            .fetch_one(&ctx.pool)
            .await
            .expect("the mailbox row");
    assert!(hash.expect("a hash").starts_with("$argon2id$"));
    assert_eq!(status.used_bytes, Some(0));
    mailbox.status = Some(status);

    // Nothing changed: the Secret is read, nothing is written.
    let (result, seen) = run(
        &mut api,
        &ctx,
        &mailbox,
        answers(&mailbox, Some(pw.clone())),
    )
    .await;
    result.expect("reconcile");
    assert_eq!(lines(&seen), [format!("GET {SECRET}")]);

    // An update: the quota changes in generation 2; the status says so, no Event.
    mailbox.spec.quota = "2Gi".to_string();
    mailbox.metadata.generation = Some(2);
    let (result, seen) = run(
        &mut api,
        &ctx,
        &mailbox,
        answers(&mailbox, Some(pw.clone())),
    )
    .await;
    result.expect("reconcile");
    assert_eq!(
        lines(&seen),
        [format!("GET {SECRET}"), format!("PATCH {STATUS}")]
    );
    let status = applied_status(&seen);
    assert_eq!(ready_of(&status), ("True".into(), "Provisioned".into()));
    assert_eq!(status.observed_generation, Some(2));
    let quota: i64 = sqlx::query_scalar("SELECT quota_bytes FROM mailboxes WHERE address = $1")
        .bind("alice@example.test")
        .fetch_one(&ctx.pool)
        .await
        .expect("the mailbox row");
    assert_eq!(quota, 2 << 30);
    mailbox.status = Some(status);

    // Deleted: the row goes (reclaimPolicy Delete), then the finalizer.
    mailbox.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()),
    );
    let (result, seen) = run(&mut api, &ctx, &mailbox, answers(&mailbox, Some(pw))).await;
    result.expect("reconcile");
    fixtures::assert_only_finalizer_removed(&seen, OBJECT, FINALIZER);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM mailboxes")
        .fetch_one(&ctx.pool)
        .await
        .expect("count");
    assert_eq!(rows, 0);
}

#[tokio::test]
async fn a_missing_key_in_the_secret_is_secret_missing() {
    let (ctx, mut api, _blobs) = fixtures::context().await;
    let mailbox = alice();
    let wrong_key = secret("alice-pw", "pass", b"x");
    let (result, seen) = run(&mut api, &ctx, &mailbox, answers(&mailbox, Some(wrong_key))).await;
    result.expect("reconcile");
    let status = applied_status(&seen);
    assert_eq!(ready_of(&status), ("False".into(), "SecretMissing".into()));
    assert!(status.conditions[0].message.contains("no key password"));
}

#[tokio::test]
async fn an_unreachable_database_writes_no_status_and_backs_off() {
    // Port 1 on loopback: nothing listens, so every query fails at once.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(std::time::Duration::from_secs(5))
        .connect_lazy("postgres://nobody@127.0.0.1:1/none")
        .expect("a lazy pool");
    let (ctx, mut api, _blobs) = fixtures::context_on(pool).await;
    let mailbox = Arc::new(alice());
    let pw = secret("alice-pw", "password", b"pw");
    let (result, seen) = run(
        &mut api,
        &ctx,
        mailbox.as_ref(),
        answers(&mailbox, Some(pw)),
    )
    .await;
    let error = result.expect_err("the database is down");
    assert_eq!(error.label(), "Database");
    assert_eq!(lines(&seen), [format!("GET {SECRET}")]);
    let delays: Vec<_> = (0..3)
        .map(|_| error_policy(mailbox.clone(), &error, ctx.clone()))
        .collect();
    assert_eq!(
        delays,
        [5, 10, 20]
            .map(|s| kube::runtime::controller::Action::requeue(std::time::Duration::from_secs(s)))
    );
    assert!(
        ctx.metrics.encode().contains(
            "mail_operator_reconcile_errors_total{kind=\"Mailbox\",error=\"Database\"} 3"
        )
    );
}

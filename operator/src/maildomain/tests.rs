//! The MailDomain controller against a mock API server and a real PostgreSQL.

use mail_resources::{MailDomain, MailDomainSpec, MailDomainStatus, ReclaimPolicy};

use super::FINALIZER;
use crate::fixtures::{self, answers, applied_status, events, lines, ready_of, run};

const OBJECT: &str = "/apis/mail.kubemail.io/v1alpha1/namespaces/default/maildomains/example";
const STATUS: &str = "/apis/mail.kubemail.io/v1alpha1/namespaces/default/maildomains/example/status?&force=true&fieldManager=mail-operator";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/default/events?";

fn example(policy: ReclaimPolicy) -> MailDomain {
    let mut domain = MailDomain::new(
        "example",
        MailDomainSpec {
            domain: "example.test".to_string(),
            reclaim_policy: policy,
            catch_all: None,
            dns: Default::default(),
        },
    );
    domain.metadata.namespace = Some("default".to_string());
    domain.metadata.uid = Some("0000-example".to_string());
    domain.metadata.generation = Some(1);
    domain.metadata.finalizers = Some(vec![FINALIZER.to_string()]);
    domain
}

#[tokio::test]
async fn a_domain_gets_its_row_bucket_and_dns_records_and_its_delete_honours_the_policy() {
    let (ctx, mut api, blobs) = fixtures::context().await;
    let mut domain = example(ReclaimPolicy::Delete);
    let object = serde_json::to_value(&domain).expect("JSON");

    let (result, seen) = run(&mut api, &ctx, &domain, answers(object.clone(), vec![])).await;
    result.expect("reconcile");
    assert_eq!(
        lines(&seen),
        [format!("PATCH {STATUS}"), format!("POST {EVENTS}")]
    );
    let status: MailDomainStatus = applied_status(&seen, STATUS);
    assert_eq!(
        ready_of(&status.conditions),
        ("True".into(), "Provisioned".into())
    );
    assert_eq!(events(&seen), [("Normal".into(), "Provisioned".into())]);
    assert_eq!(status.bucket.as_deref(), Some("mail-example-test"));
    assert_eq!(status.mailboxes, Some(0));
    assert!(blobs.path().join("mail-example-test").is_dir());
    let mx = status
        .dns_records
        .iter()
        .find(|r| r.record_type == "MX")
        .expect("an MX record");
    assert_eq!(
        (mx.name.as_str(), mx.value.as_str()),
        ("example.test.", "10 mail.example.net.")
    );
    assert!(
        status
            .zone
            .as_deref()
            .expect("a zone")
            .contains("_imaps._tcp.example.test. 3600 IN SRV 0 1 993 mail.example.net.\n")
    );
    domain.status = Some(status);

    // Nothing changed: no request at all.
    let (result, seen) = run(&mut api, &ctx, &domain, answers(object.clone(), vec![])).await;
    result.expect("reconcile");
    assert!(seen.is_empty(), "{:?}", lines(&seen));

    // Deleted under reclaimPolicy Delete: the row and the bucket go, then the finalizer.
    domain.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()),
    );
    let (result, seen) = run(&mut api, &ctx, &domain, answers(object, vec![])).await;
    result.expect("reconcile");
    fixtures::assert_only_finalizer_removed(&seen, OBJECT, FINALIZER);
    assert!(
        !mail_provision::domain_hosted(&ctx.pool, "example.test")
            .await
            .expect("query")
    );
    assert!(!blobs.path().join("mail-example-test").exists());
}

#[tokio::test]
async fn a_domain_keeps_the_bucket_it_was_made_with_when_the_prefix_changes() {
    let (ctx, mut api, _blobs) = fixtures::context().await;
    mail_provision::apply_domain(
        &ctx.pool,
        ctx.blobs.as_ref(),
        &example(ReclaimPolicy::Retain).spec,
        &mail_provision::Options {
            bucket_prefix: "old".to_string(),
        },
    )
    .await
    .expect("apply under the old prefix");
    let domain = example(ReclaimPolicy::Retain);
    let object = serde_json::to_value(&domain).expect("JSON");
    let (result, seen) = run(&mut api, &ctx, &domain, answers(object, vec![])).await;
    result.expect("reconcile");
    let status: MailDomainStatus = applied_status(&seen, STATUS);
    assert_eq!(status.bucket.as_deref(), Some("old-example-test"));
}

#[tokio::test]
async fn a_catch_all_outside_the_domain_is_invalid_and_writes_no_row() {
    let (ctx, mut api, _blobs) = fixtures::context().await;
    let mut domain = example(ReclaimPolicy::Retain);
    domain.spec.catch_all = Some("all@other.test".to_string());
    let object = serde_json::to_value(&domain).expect("JSON");
    let (result, seen) = run(&mut api, &ctx, &domain, answers(object, vec![])).await;
    result.expect("reconcile");
    let status: MailDomainStatus = applied_status(&seen, STATUS);
    assert_eq!(
        ready_of(&status.conditions),
        ("False".into(), "Invalid".into())
    );
    assert!(status.dns_records.is_empty());
    assert_eq!(events(&seen), [("Warning".into(), "Invalid".into())]);
    assert!(
        !mail_provision::domain_hosted(&ctx.pool, "example.test")
            .await
            .expect("query")
    );
}

#[tokio::test]
async fn external_dns_gets_an_owned_dns_endpoint_and_loses_it_when_turned_off() {
    let (ctx, mut api, _blobs) = fixtures::context().await;
    let mut domain = example(ReclaimPolicy::Retain);
    domain.spec.dns.external_dns = true;
    let object = serde_json::to_value(&domain).expect("JSON");
    let endpoint = "/apis/externaldns.k8s.io/v1alpha1/namespaces/default/dnsendpoints/example-mail";
    let (result, seen) = run(&mut api, &ctx, &domain, answers(object.clone(), vec![])).await;
    result.expect("reconcile");
    assert_eq!(
        lines(&seen),
        [
            format!("PATCH {endpoint}?&force=true&fieldManager=mail-operator"),
            format!("PATCH {STATUS}"),
            format!("POST {EVENTS}"),
        ]
    );
    assert_eq!(
        seen[0].body["metadata"]["ownerReferences"][0]["kind"],
        "MailDomain"
    );
    let status: MailDomainStatus = applied_status(&seen, STATUS);
    assert_eq!(status.dns_endpoint.as_deref(), Some("example-mail"));
    domain.status = Some(status);

    // Turned off: the endpoint is deleted and the status forgets it.
    domain.spec.dns.external_dns = false;
    let (result, seen) = run(&mut api, &ctx, &domain, |s: &fixtures::Seen| {
        match s.method.as_str() {
            "DELETE" => (
                200,
                serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
            ),
            _ => (200, object.clone()),
        }
    })
    .await;
    result.expect("reconcile");
    assert_eq!(
        lines(&seen),
        [format!("DELETE {endpoint}?"), format!("PATCH {STATUS}")]
    );
    let status: MailDomainStatus = applied_status(&seen, STATUS);
    assert_eq!(status.dns_endpoint, None);
}

#[tokio::test]
async fn a_second_maildomain_for_the_same_domain_is_a_conflict_and_changes_nothing() {
    let (ctx, mut api, blobs) = fixtures::context().await;
    let first = example(ReclaimPolicy::Delete);
    let object = serde_json::to_value(&first).expect("JSON");
    let (result, _) = run(&mut api, &ctx, &first, answers(object, vec![])).await;
    result.expect("the first reconciles");

    // Same domain, another namespace and name, another catch-all and policy.
    let mut second = example(ReclaimPolicy::Delete);
    second.metadata.namespace = Some("other".to_string());
    second.metadata.name = Some("copy".to_string());
    second.metadata.uid = Some("0000-copy".to_string());
    second.spec.catch_all = Some("all@example.test".to_string());
    let second_status = "/apis/mail.kubemail.io/v1alpha1/namespaces/other/maildomains/copy/status?&force=true&fieldManager=mail-operator";
    let object = serde_json::to_value(&second).expect("JSON");
    let (result, seen) = run(&mut api, &ctx, &second, answers(object.clone(), vec![])).await;
    result.expect("reconcile");
    let status: MailDomainStatus = applied_status(&seen, second_status);
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "DomainConflict")
    );
    assert!(
        ready.message.contains("default/example"),
        "{}",
        ready.message
    );
    assert!(status.dns_records.is_empty());
    assert_eq!(events(&seen), [("Warning".into(), "DomainConflict".into())]);
    // The first one's row is untouched: no catch-all.
    let catch_all: Option<String> =
        sqlx::query_scalar("SELECT catch_all FROM domains WHERE name = 'example.test'")
            .fetch_one(&ctx.pool)
            .await
            .expect("the row");
    assert_eq!(catch_all, None);

    // Deleting the second removes nothing (only its finalizer).
    let mut gone = second.clone();
    gone.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    let (result, seen) = run(&mut api, &ctx, &gone, answers(object.clone(), vec![])).await;
    result.expect("reconcile");
    fixtures::assert_only_finalizer_removed(
        &seen,
        "/apis/mail.kubemail.io/v1alpha1/namespaces/other/maildomains/copy",
        FINALIZER,
    );
    assert!(
        mail_provision::domain_hosted(&ctx.pool, "example.test")
            .await
            .expect("query")
    );
    assert!(blobs.path().join("mail-example-test").is_dir());

    // Once the first is deleted, the claim is free and the second takes the domain over.
    let mut first_gone = example(ReclaimPolicy::Delete);
    first_gone.metadata.deletion_timestamp = gone.metadata.deletion_timestamp.clone();
    let first_object = serde_json::to_value(&first_gone).expect("JSON");
    let (result, _) = run(&mut api, &ctx, &first_gone, answers(first_object, vec![])).await;
    result.expect("reconcile");
    let (result, seen) = run(&mut api, &ctx, &second, answers(object, vec![])).await;
    result.expect("reconcile");
    let status: MailDomainStatus = applied_status(&seen, second_status);
    assert_eq!(
        ready_of(&status.conditions),
        ("True".into(), "Provisioned".into())
    );
    let catch_all: Option<String> =
        sqlx::query_scalar("SELECT catch_all FROM domains WHERE name = 'example.test'")
            .fetch_one(&ctx.pool)
            .await
            .expect("the row");
    assert_eq!(catch_all.as_deref(), Some("all@example.test"));
}

//! Rotation end to end: the DkimKey controller against the mock API (Secrets kept in a map, so
//! each request is answered as a server would), a real PostgreSQL, BIND's named as the DNS the
//! test publishes in, and a clock the test moves by days.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use mail_provision::dns;
use mail_resources::{DkimAlgorithm, DkimKey, DkimKeyStatus, KeyState};
use serde_json::Value;

use super::tests::{dkim_key, host_example};
use super::{PRIVATE_KEY, from_pem};
use crate::fixtures::{self, Seen, applied_status, events, lines, not_found, run};
use crate::maildomain::DnsChecker;

const STATUS: &str = "/apis/mail.kubemail.io/v1alpha1/namespaces/default/dkimkeys/example-s1/status?&force=true&fieldManager=mail-operator";
const SECRETS: &str = "/api/v1/namespaces/default/secrets";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/default/events?";

/// An API server that keeps the Secrets created, answers GETs and DELETEs from them, echoes
/// the DkimKey to status patches and accepts Events.
fn api_with_secrets(
    key: &DkimKey,
    secrets: Arc<Mutex<BTreeMap<String, Value>>>,
) -> impl FnMut(&Seen) -> (u16, Value) {
    let object = serde_json::to_value(key).expect("JSON");
    move |seen| {
        let mut secrets = secrets.lock().expect("secrets");
        let name = seen
            .uri
            .strip_prefix(&format!("{SECRETS}/"))
            .map(|rest| rest.split('?').next().unwrap_or(rest).to_string());
        match (seen.method.as_str(), name) {
            ("GET", Some(name)) => secrets
                .get(&name)
                .map(|s| (200, s.clone()))
                .unwrap_or_else(|| not_found(&name)),
            ("DELETE", Some(name)) => match secrets.remove(&name) {
                Some(_) => (
                    200,
                    serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
                ),
                None => not_found(&name),
            },
            ("POST", None) if seen.uri.starts_with(SECRETS) => {
                let name = seen.body["metadata"]["name"].as_str().expect("a name");
                secrets.insert(name.to_string(), seen.body.clone());
                (201, seen.body.clone())
            }
            ("POST", None) if seen.uri.contains("/events") => (201, seen.body.clone()),
            // The Recorder patches an Event it has sent before (a series).
            ("PATCH", None) if seen.uri.contains("/events/") => (200, seen.body.clone()),
            ("PATCH", None) => (200, object.clone()),
            _ => panic!("unexpected request {}", seen.line()),
        }
    }
}

/// The PEM in a Secret the mock holds.
fn pem_in(secrets: &Mutex<BTreeMap<String, Value>>, name: &str) -> String {
    use base64::Engine;
    let secrets = secrets.lock().expect("secrets");
    let data = secrets[name]["data"][PRIVATE_KEY]
        .as_str()
        .expect("private.pem");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data)
        .expect("base64");
    String::from_utf8(bytes).expect("PEM")
}

/// (selector, active) of every row of example.test, by selector.
async fn rows(pool: &sqlx::PgPool) -> Vec<(String, bool, Option<String>)> {
    sqlx::query_as(
        "SELECT k.selector, k.active, k.public_key FROM dkim_keys k
         JOIN domains d ON d.id = k.domain_id WHERE d.name = 'example.test' ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .expect("rows")
}

fn day(n: i64) -> SignedDuration {
    SignedDuration::from_hours(24 * n)
}

#[tokio::test]
async fn a_key_rotates_once_dns_serves_the_new_selector_and_the_old_one_retires_after_the_overlap()
{
    let named = mail_testkit::Named::start(&[("example.test", "@ IN TXT \"v=spf1 -all\"\n")]);
    let (ctx, mut api, _blobs) =
        fixtures::context_checking_dns(DnsChecker::at(named.address())).await;
    let t0: Timestamp = "2026-01-01T00:00:00Z".parse().expect("time");
    let now = Arc::new(Mutex::new(t0));
    let mut inner = Arc::into_inner(ctx).expect("the only reference");
    let clock = now.clone();
    inner.clock = Arc::new(move || *clock.lock().expect("clock"));
    let ctx = Arc::new(inner);
    let set_time = |at: Timestamp| *now.lock().expect("clock") = at;
    host_example(&ctx).await;

    let mut key = dkim_key(DkimAlgorithm::Ed25519);
    key.spec.rotate_after = Some("30d".to_string());
    key.spec.overlap = Some("7d".to_string());
    let secrets = Arc::new(Mutex::new(BTreeMap::new()));
    let first_secret = format!("{SECRETS}/example-s1-dkim");
    let second_secret = format!("{SECRETS}/example-s1-dkim-2");

    // Day 0: the first key, active.
    let (result, seen) = run(
        &mut api,
        &ctx,
        &key,
        api_with_secrets(&key, secrets.clone()),
    )
    .await;
    result.expect("reconcile");
    assert_eq!(
        lines(&seen),
        [
            format!("GET {first_secret}"),
            format!("POST {SECRETS}?&fieldManager=mail-operator"),
            format!("PATCH {STATUS}"),
            format!("POST {EVENTS}"),
        ]
    );
    let status: DkimKeyStatus = applied_status(&seen, STATUS);
    assert_eq!(status.active_selector.as_deref(), Some("s1"));
    assert_eq!(status.keys.len(), 1);
    assert_eq!(status.keys[0].created_at, t0.to_string());
    let first_public = status.public_key.clone().expect("public key");
    key.status = Some(status);

    // Day 10: not due; nothing written.
    set_time(t0 + day(10));
    let (result, seen) = run(
        &mut api,
        &ctx,
        &key,
        api_with_secrets(&key, secrets.clone()),
    )
    .await;
    let action = result.expect("reconcile");
    assert_eq!(lines(&seen), [format!("GET {first_secret}")]);
    // The rotation is 20 days away: the hourly resync comes first.
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(crate::context::RESYNC)
    );

    // Day 31: a second key in its own Secret, published (row, status) but not signing.
    set_time(t0 + day(31));
    let (result, seen) = run(
        &mut api,
        &ctx,
        &key,
        api_with_secrets(&key, secrets.clone()),
    )
    .await;
    result.expect("reconcile");
    assert_eq!(
        lines(&seen),
        [
            format!("GET {first_secret}"),
            format!("GET {second_secret}"),
            format!("POST {SECRETS}?&fieldManager=mail-operator"),
            format!("PATCH {STATUS}"),
            format!("POST {EVENTS}"),
        ]
    );
    assert_eq!(seen[2].body["metadata"]["name"], "example-s1-dkim-2");
    assert_eq!(events(&seen), [("Normal".into(), "Rotating".into())]);
    let status: DkimKeyStatus = applied_status(&seen, STATUS);
    assert_eq!(status.active_selector.as_deref(), Some("s1"));
    assert_eq!(status.public_key.as_deref(), Some(first_public.as_str()));
    let states: Vec<(&str, KeyState)> = status
        .keys
        .iter()
        .map(|v| (v.selector.as_str(), v.state))
        .collect();
    assert_eq!(
        states,
        [("s1", KeyState::Active), ("s1-2", KeyState::Pending)]
    );
    let second_public = from_pem(
        DkimAlgorithm::Ed25519,
        &pem_in(&secrets, "example-s1-dkim-2"),
    )
    .expect("a key")
    .public_key;
    assert_ne!(second_public, first_public, "never the old key again");
    assert_eq!(
        rows(&ctx.pool).await,
        [
            ("s1".to_string(), true, Some(first_public.clone())),
            ("s1-2".to_string(), false, Some(second_public.clone())),
        ]
    );
    key.status = Some(status);

    // DNS does not serve it yet: it stays pending, checked again within a minute.
    set_time(t0 + day(31) + SignedDuration::from_mins(30));
    let (result, seen) = run(
        &mut api,
        &ctx,
        &key,
        api_with_secrets(&key, secrets.clone()),
    )
    .await;
    let action = result.expect("reconcile");
    assert_eq!(
        lines(&seen),
        [
            format!("GET {first_secret}"),
            format!("GET {second_secret}")
        ]
    );
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(std::time::Duration::from_secs(60))
    );
    assert!(rows(&ctx.pool).await[0].1, "s1 still signs");

    // Published as the domain's records say (both selectors), the new key becomes active and
    // the old one retires a week later.
    let keys = mail_provision::dkim_public_keys(&ctx.pool, "example.test")
        .await
        .expect("keys");
    assert_eq!(keys.len(), 2);
    let records = dns::records("example.test", &ctx.dns, &keys);
    named.set_zone("example.test", &dns::zone_snippet(&records, 60));
    let promoted_at = t0 + day(31) + SignedDuration::from_hours(1);
    set_time(promoted_at);
    let (result, seen) = run(
        &mut api,
        &ctx,
        &key,
        api_with_secrets(&key, secrets.clone()),
    )
    .await;
    result.expect("reconcile");
    let sent = lines(&seen);
    assert_eq!(
        sent[..3],
        [
            format!("GET {first_secret}"),
            format!("GET {second_secret}"),
            format!("PATCH {STATUS}"),
        ]
    );
    // Back to KeyReady: the Event sent on day 0 again, as a series.
    assert_eq!(sent.len(), 4, "{sent:?}");
    assert!(
        sent[3].starts_with("PATCH /apis/events.k8s.io/v1/namespaces/default/events/example-s1."),
        "{sent:?}"
    );
    assert_eq!(seen[3].body["reason"], "KeyReady");
    let status: DkimKeyStatus = applied_status(&seen, STATUS);
    assert_eq!(status.active_selector.as_deref(), Some("s1-2"));
    assert_eq!(status.public_key.as_deref(), Some(second_public.as_str()));
    assert_eq!(
        status.dns_name.as_deref(),
        Some("s1-2._domainkey.example.test.")
    );
    assert_eq!(status.keys[0].state, KeyState::Retiring);
    assert_eq!(
        status.keys[0].retire_at,
        Some((promoted_at + day(7)).to_string())
    );
    assert_eq!(
        rows(&ctx.pool).await,
        [
            ("s1".to_string(), false, Some(first_public.clone())),
            ("s1-2".to_string(), true, Some(second_public.clone())),
        ]
    );
    key.status = Some(status);

    // Day 36: still in the overlap, the old selector stays published.
    set_time(t0 + day(36));
    let (result, seen) = run(
        &mut api,
        &ctx,
        &key,
        api_with_secrets(&key, secrets.clone()),
    )
    .await;
    result.expect("reconcile");
    assert!(!lines(&seen).iter().any(|l| l.starts_with("DELETE")));
    assert_eq!(rows(&ctx.pool).await.len(), 2);

    // Day 39, past the overlap: the old row and Secret go.
    set_time(promoted_at + day(7));
    let (result, seen) = run(
        &mut api,
        &ctx,
        &key,
        api_with_secrets(&key, secrets.clone()),
    )
    .await;
    result.expect("reconcile");
    assert_eq!(
        lines(&seen),
        [
            format!("DELETE {first_secret}?"),
            format!("GET {second_secret}"),
            format!("PATCH {STATUS}"),
        ]
    );
    let status: DkimKeyStatus = applied_status(&seen, STATUS);
    assert_eq!(status.keys.len(), 1);
    assert_eq!(status.keys[0].selector, "s1-2");
    assert_eq!(
        rows(&ctx.pool).await,
        [("s1-2".to_string(), true, Some(second_public))]
    );
    assert!(
        !secrets
            .lock()
            .expect("secrets")
            .contains_key("example-s1-dkim")
    );

    // Deleting the DkimKey removes the rows of every selector it still has.
    key.status = Some(status);
    key.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        promoted_at + day(8),
    ));
    let (result, _) = run(
        &mut api,
        &ctx,
        &key,
        api_with_secrets(&key, secrets.clone()),
    )
    .await;
    result.expect("reconcile");
    assert!(rows(&ctx.pool).await.is_empty());
}

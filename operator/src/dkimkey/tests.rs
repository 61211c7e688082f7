//! The DkimKey controller against a mock API server and a real PostgreSQL; its keys checked
//! by dkimpy, the domain's zone snippet by named-checkzone.

use std::process::Command;

use base64::Engine;
use mail_resources::{
    DkimAlgorithm, DkimKey, DkimKeySpec, DkimKeyStatus, MailDomain, MailDomainSpec,
    MailDomainStatus, ReclaimPolicy,
};
use serde_json::Value;

use super::{FINALIZER, PRIVATE_KEY};
use crate::fixtures::{
    self, Seen, answers, applied_status, events, lines, not_found, ready_of, run,
};

const STATUS: &str = "/apis/mail.kubemail.io/v1alpha1/namespaces/default/dkimkeys/example-s1/status?&force=true&fieldManager=mail-operator";
const SECRET: &str = "/api/v1/namespaces/default/secrets/example-s1-dkim";
const SECRETS: &str = "/api/v1/namespaces/default/secrets?&fieldManager=mail-operator";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/default/events?";

pub(super) fn dkim_key(algorithm: DkimAlgorithm) -> DkimKey {
    let mut key = DkimKey::new(
        "example-s1",
        DkimKeySpec {
            domain: "example.test".to_string(),
            selector: "s1".to_string(),
            algorithm,
            active: true,
            rotate_after: None,
            overlap: None,
        },
    );
    key.metadata.namespace = Some("default".to_string());
    key.metadata.uid = Some("0000-key".to_string());
    key.metadata.generation = Some(1);
    key.metadata.finalizers = Some(vec![FINALIZER.to_string()]);
    key
}

pub(super) async fn host_example(ctx: &crate::context::Context) {
    let spec = MailDomainSpec {
        domain: "example.test".to_string(),
        reclaim_policy: ReclaimPolicy::Retain,
        catch_all: None,
        dns: Default::default(),
    };
    mail_provision::apply_domain(&ctx.pool, ctx.blobs.as_ref(), &spec, &ctx.options)
        .await
        .expect("apply domain");
}

/// Answers like `answers`, and also the Secret create (echoed) when `secret` is None.
fn key_answers(key: &DkimKey, secret: Option<Value>) -> impl FnMut(&Seen) -> (u16, Value) {
    let get = secret.map_or_else(|| not_found("secrets example-s1-dkim"), |s| (200, s));
    let mut rest = answers(
        serde_json::to_value(key).expect("JSON"),
        vec![(SECRET.to_string(), get)],
    );
    move |seen| {
        if seen.method == "POST" && seen.uri == SECRETS {
            (201, seen.body.clone())
        } else {
            rest(seen)
        }
    }
}

/// The private key PEM of the Secret the operator created.
fn created_pem(seen: &[Seen]) -> String {
    let create = seen
        .iter()
        .find(|s| s.uri == SECRETS)
        .expect("a Secret create");
    let data = create.body["data"][PRIVATE_KEY]
        .as_str()
        .expect("private.pem");
    let pem = base64::engine::general_purpose::STANDARD
        .decode(data)
        .expect("base64");
    String::from_utf8(pem).expect("PEM text")
}

/// Signs a message with the key of `pem` and verifies it with dkimpy against `txt` (the
/// record's strings joined), as a receiving server would.
fn dkimpy_verifies(pem: &str, txt: &str) -> Result<(), String> {
    // dkimpy takes RSA keys as PEM, Ed25519 keys as the base64 of the 32-byte seed.
    let (key, algorithm) = match ed25519_dalek::pkcs8::DecodePrivateKey::from_pkcs8_pem(pem) {
        Ok(ed) => {
            let ed: ed25519_dalek::SigningKey = ed;
            (
                base64::engine::general_purpose::STANDARD.encode(ed.to_bytes()),
                "ed25519-sha256",
            )
        }
        Err(_) => (pem.to_string(), "rsa-sha256"),
    };
    let script = r#"
import sys, dkim
key, txt, alg = sys.argv[1].encode(), sys.argv[2].encode(), sys.argv[3].encode()
msg = b"From: a@example.test\r\nTo: b@example.org\r\nSubject: hi\r\n\r\nHello.\r\n"
sig = dkim.sign(msg, b"s1", b"example.test", key, include_headers=[b"From", b"To", b"Subject"],
                signature_algorithm=alg)
def dns(name, timeout=5):
    assert name == b"s1._domainkey.example.test.", name
    return txt
ok = dkim.verify(sig + msg, dnsfunc=dns)
print("verified" if ok else "failed")
sys.exit(0 if ok else 1)
"#;
    // Debian's interpreter: python3-dkim is installed for it, not for another on PATH.
    let out = Command::new("/usr/bin/python3")
        .args(["-c", script, &key, txt, algorithm])
        .output()
        .map_err(|e| format!("python3: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

#[tokio::test]
async fn a_key_is_made_once_into_an_owned_secret_and_verifies_with_dkimpy() {
    let (ctx, mut api, _blobs) = fixtures::context().await;
    let mut key = dkim_key(DkimAlgorithm::Rsa2048);

    // No domain yet: not Ready, no key made.
    let (result, seen) = run(&mut api, &ctx, &key, key_answers(&key, None)).await;
    result.expect("reconcile");
    assert_eq!(
        lines(&seen),
        [format!("PATCH {STATUS}"), format!("POST {EVENTS}")]
    );
    let status: DkimKeyStatus = applied_status(&seen, STATUS);
    assert_eq!(
        ready_of(&status.conditions),
        ("False".into(), "DomainNotFound".into())
    );
    key.status = Some(status);

    host_example(&ctx).await;
    let (result, seen) = run(&mut api, &ctx, &key, key_answers(&key, None)).await;
    result.expect("reconcile");
    assert_eq!(
        lines(&seen),
        [
            format!("GET {SECRET}"),
            format!("POST {SECRETS}"),
            format!("PATCH {STATUS}"),
            format!("POST {EVENTS}"),
        ]
    );
    let create = &seen[1].body;
    assert_eq!(create["metadata"]["name"], "example-s1-dkim");
    let owner = &create["metadata"]["ownerReferences"][0];
    assert_eq!(
        (
            &owner["kind"],
            &owner["name"],
            &owner["controller"],
            &owner["uid"]
        ),
        (
            &"DkimKey".into(),
            &"example-s1".into(),
            &true.into(),
            &"0000-key".into()
        )
    );
    let pem = created_pem(&seen);
    let status: DkimKeyStatus = applied_status(&seen, STATUS);
    assert_eq!(
        ready_of(&status.conditions),
        ("True".into(), "KeyReady".into())
    );
    assert_eq!(events(&seen), [("Normal".into(), "KeyReady".into())]);
    assert_eq!(
        status.dns_name.as_deref(),
        Some("s1._domainkey.example.test.")
    );
    let txt = status.dns_txt.clone().expect("a TXT value");
    assert!(txt.starts_with("v=DKIM1; k=rsa; p="), "{txt}");
    let stored: Option<String> = sqlx::query_scalar("SELECT private_key_pem FROM dkim_keys")
        .fetch_one(&ctx.pool)
        .await
        .expect("the key row");
    assert_eq!(stored.as_deref(), Some(pem.as_str()));
    key.status = Some(status);

    // The Secret exists now: it is read, never written again, and nothing else changes.
    let existing = fixtures::secret("example-s1-dkim", PRIVATE_KEY, pem.as_bytes());
    let (result, seen) = run(&mut api, &ctx, &key, key_answers(&key, Some(existing))).await;
    result.expect("reconcile");
    assert_eq!(lines(&seen), [format!("GET {SECRET}")]);

    // The domain publishes the key, split into 255-byte strings; dkimpy verifies a message
    // signed with the Secret's key against that record.
    let domain = MailDomain::new(
        "example",
        MailDomainSpec {
            domain: "example.test".to_string(),
            reclaim_policy: ReclaimPolicy::Retain,
            catch_all: None,
            dns: Default::default(),
        },
    );
    let mut domain = domain;
    domain.metadata.namespace = Some("default".to_string());
    domain.metadata.finalizers = Some(vec![crate::maildomain::FINALIZER.to_string()]);
    let (result, seen) = run(
        &mut api,
        &ctx,
        &domain,
        answers(serde_json::to_value(&domain).expect("JSON"), vec![]),
    )
    .await;
    result.expect("reconcile the domain");
    let status: MailDomainStatus = applied_status(
        &seen,
        "/apis/mail.kubemail.io/v1alpha1/namespaces/default/maildomains/example/status?&force=true&fieldManager=mail-operator",
    );
    let record = status
        .dns_records
        .iter()
        .find(|r| r.name == "s1._domainkey.example.test.")
        .expect("the DKIM record");
    assert!(
        record.value.matches('"').count() >= 4,
        "split: {}",
        record.value
    );
    assert_eq!(mail_provision::dns::txt_text(&record.value), txt);
    dkimpy_verifies(&pem, &mail_provision::dns::txt_text(&record.value)).expect("dkimpy verifies");

    // A wrong key does not verify: the check can fail.
    let other = super::generate(DkimAlgorithm::Rsa2048).expect("generate");
    assert!(dkimpy_verifies(&other.private_pem, &txt).is_err());

    // The zone snippet loads into a DNS server's checker.
    check_zone(status.zone.as_deref().expect("a zone")).expect("named-checkzone");
}

#[tokio::test]
async fn an_ed25519_key_verifies_with_dkimpy() {
    let (ctx, mut api, _blobs) = fixtures::context().await;
    host_example(&ctx).await;
    let key = dkim_key(DkimAlgorithm::Ed25519);
    let (result, seen) = run(&mut api, &ctx, &key, key_answers(&key, None)).await;
    result.expect("reconcile");
    let status: DkimKeyStatus = applied_status(&seen, STATUS);
    let txt = status.dns_txt.expect("a TXT value");
    assert!(txt.starts_with("v=DKIM1; k=ed25519; p="), "{txt}");
    dkimpy_verifies(&created_pem(&seen), &txt).expect("dkimpy verifies");
}

#[tokio::test]
async fn a_secret_that_holds_no_usable_key_is_reported_not_replaced() {
    let (ctx, mut api, _blobs) = fixtures::context().await;
    host_example(&ctx).await;
    let key = dkim_key(DkimAlgorithm::Rsa2048);
    let ed = super::generate(DkimAlgorithm::Ed25519).expect("generate");
    let existing = fixtures::secret("example-s1-dkim", PRIVATE_KEY, ed.private_pem.as_bytes());
    let (result, seen) = run(&mut api, &ctx, &key, key_answers(&key, Some(existing))).await;
    result.expect("reconcile");
    assert!(seen.iter().all(|s| s.uri != SECRETS), "{:?}", lines(&seen));
    let status: DkimKeyStatus = applied_status(&seen, STATUS);
    assert_eq!(
        ready_of(&status.conditions),
        ("False".into(), "SecretInvalid".into())
    );
    assert!(status.public_key.is_none());
}

/// Loads `snippet` into a zone with an SOA and NS, as an operator pasting it would.
fn check_zone(snippet: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let path = dir.path().join("example.test.zone");
    let zone = format!(
        "$TTL 3600\n@ IN SOA ns1.example.net. hostmaster.example.test. 1 7200 3600 1209600 3600\n\
         @ IN NS ns1.example.net.\n{snippet}"
    );
    std::fs::write(&path, zone).map_err(|e| e.to_string())?;
    let out = Command::new("named-checkzone")
        .args(["-k", "fail", "-n", "fail", "example.test"])
        .arg(&path)
        .output()
        .map_err(|e| format!("named-checkzone: {e} (Debian bind9-utils)"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

#[test]
fn named_checkzone_refuses_a_broken_zone() {
    assert!(check_zone("example.test. 3600 IN MX mail.example.net.\n").is_err());
}

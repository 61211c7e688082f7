//! Full syncs of a desired state: creation, idempotence, changes, removal, validation, and the
//! repository's `examples/`.

mod common;

use std::path::Path;

use common::*;
use mail_blobstore::{BlobStore, FsBlobStore};
use mail_provision::{Desired, Error, Options, manifests, sync};
use mail_resources::{DkimKey, MailDomain, Mailbox, ReclaimPolicy};

fn state() -> Desired {
    let mut desired = Desired {
        domains: vec![
            MailDomain::new("a", domain("a.test", ReclaimPolicy::Retain)),
            MailDomain::new("b", domain("b.test", ReclaimPolicy::Delete)),
        ],
        mailboxes: vec![
            Mailbox::new("one", mailbox("one@a.test", &["info@a.test", "x@b.test"])),
            Mailbox::new("two", mailbox("two@b.test", &[])),
        ],
        dkim_keys: vec![DkimKey::new("k", dkim("a.test", "s1"))],
        ..Desired::default()
    };
    for mailbox in &mut desired.mailboxes {
        mailbox.metadata.namespace = Some("default".into());
    }
    desired.secrets.insert(
        ("default".into(), "pw".into()),
        [("password".to_string(), b"pw".to_vec())].into(),
    );
    desired
}

#[tokio::test]
async fn sync_creates_then_changes_nothing_then_follows_changes() {
    let pool = database().await;
    let dir = tempfile::tempdir().unwrap();
    let blobs = FsBlobStore::new(dir.path());
    let options = Options::default();
    let mut desired = state();

    let report = sync(&pool, &blobs, &desired, &options).await.unwrap();
    assert_eq!(
        (
            report.domains.created,
            report.mailboxes.created,
            report.dkim_keys.created
        ),
        (2, 2, 1)
    );
    assert!(blobs.bucket_exists("mail-a-test").await.unwrap());

    // Idempotent: no row is written again.
    let before = snapshot(&pool).await;
    let report = sync(&pool, &blobs, &desired, &options).await.unwrap();
    assert!(!report.changed(), "{report}");
    assert_eq!(
        (
            report.domains.unchanged,
            report.mailboxes.unchanged,
            report.dkim_keys.unchanged
        ),
        (2, 2, 1)
    );
    assert_eq!(snapshot(&pool).await, before);

    // An alias moves from one mailbox to the other in one sync; a key goes.
    desired.mailboxes[0].spec.aliases = vec!["info@a.test".into()];
    desired.mailboxes[1].spec.aliases = vec!["x@b.test".into()];
    desired.dkim_keys.clear();
    let report = sync(&pool, &blobs, &desired, &options).await.unwrap();
    assert_eq!(report.mailboxes.updated, 2, "{report}");
    assert_eq!(report.dkim_keys.removed, 1, "{report}");
    assert_eq!(aliases_of(&pool, "two@b.test").await, ["x@b.test"]);
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM dkim_keys")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(keys, 0);

    // Removing mailbox two (domain b: Delete) drops its row; removing domain a (Retain) with
    // mailbox one only marks them deleted, and keeps the bucket.
    desired.mailboxes.remove(1);
    let report = sync(&pool, &blobs, &desired, &options).await.unwrap();
    assert_eq!(report.mailboxes.removed, 1, "{report}");
    let two: i64 =
        sqlx::query_scalar("SELECT count(*) FROM mailboxes WHERE address = 'two@b.test'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(two, 0);

    let retained = Desired {
        domains: vec![desired.domains[1].clone()],
        secrets: desired.secrets.clone(),
        ..Desired::default()
    };
    let report = sync(&pool, &blobs, &retained, &options).await.unwrap();
    assert_eq!(
        (report.domains.removed, report.mailboxes.removed),
        (1, 1),
        "{report}"
    );
    let kept: Vec<(String, bool)> =
        sqlx::query_as("SELECT name, deleted_at IS NOT NULL FROM domains ORDER BY name")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        kept,
        [("a.test".to_string(), true), ("b.test".to_string(), false)]
    );
    assert!(blobs.bucket_exists("mail-a-test").await.unwrap());
    let before = snapshot(&pool).await;
    assert!(
        !sync(&pool, &blobs, &retained, &options)
            .await
            .unwrap()
            .changed()
    );
    assert_eq!(
        snapshot(&pool).await,
        before,
        "retained rows are left alone"
    );

    // Everything back: the retained domain and mailbox are revived.
    let report = sync(&pool, &blobs, &desired, &options).await.unwrap();
    assert_eq!(
        (report.domains.updated, report.mailboxes.updated),
        (1, 1),
        "{report}"
    );
    let served: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM mailboxes m JOIN domains d ON d.id = m.domain_id
         WHERE m.deleted_at IS NULL AND d.deleted_at IS NULL",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(served, 1);

    // Removing domain b (Delete) removes its bucket.
    desired.domains.remove(1);
    desired.mailboxes[0].spec.aliases.clear();
    sync(&pool, &blobs, &desired, &options).await.unwrap();
    assert!(!blobs.bucket_exists("mail-b-test").await.unwrap());
}

#[tokio::test]
async fn an_invalid_state_writes_nothing() {
    let pool = database().await;
    let dir = tempfile::tempdir().unwrap();
    let blobs = FsBlobStore::new(dir.path());
    let mut desired = state();
    desired.mailboxes[1].spec.address = "two@c.test".into();
    let err = sync(&pool, &blobs, &desired, &Options::default())
        .await
        .expect_err("invalid");
    assert!(matches!(err, Error::Invalid(_)), "{err:?}");
    assert!(err.to_string().contains("Mailbox default/two"), "{err}");
    assert!(snapshot(&pool).await.is_empty());
    assert!(!blobs.bucket_exists("mail-a-test").await.unwrap());

    let bad_prefix = Options {
        bucket_prefix: "Bad".into(),
    };
    let err = sync(&pool, &blobs, &state(), &bad_prefix)
        .await
        .expect_err("bad prefix");
    assert!(err.to_string().contains("bucket prefix"), "{err}");
}

#[tokio::test]
async fn the_examples_apply() {
    let pool = database().await;
    let dir = tempfile::tempdir().unwrap();
    let blobs = FsBlobStore::new(dir.path());
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let loaded = manifests::load_dir(&examples).expect("examples load");
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let report = sync(&pool, &blobs, &loaded.desired, &Options::default())
        .await
        .unwrap();
    assert_eq!(
        (
            report.domains.created,
            report.mailboxes.created,
            report.dkim_keys.created
        ),
        (1, 2, 1)
    );

    let domain: (String, String) = sqlx::query_as("SELECT name, reclaim_policy FROM domains")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(domain, ("example.test".into(), "Retain".into()));
    let mailboxes: Vec<(String, String)> =
        sqlx::query_as("SELECT address, password_hash FROM mailboxes ORDER BY address")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(mailboxes.len(), 2);
    assert_eq!(mailboxes[0].0, "alice@example.test");
    assert!(verifies(&mailboxes[0].1, "alice-example-pw"));
    assert_eq!(mailboxes[1].0, "bob@example.test");
    assert!(verifies(&mailboxes[1].1, "bob-example-pw"));
    assert_eq!(
        aliases_of(&pool, "alice@example.test").await,
        ["postmaster@example.test"]
    );
    let key: (String, String, bool) = sqlx::query_as(
        "SELECT d.name, k.selector, k.active FROM dkim_keys k JOIN domains d ON d.id = k.domain_id",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(key, ("example.test".into(), "default".into(), true));
    assert!(blobs.bucket_exists("mail-example-test").await.unwrap());
    assert!(
        !sync(&pool, &blobs, &loaded.desired, &Options::default())
            .await
            .unwrap()
            .changed()
    );
}

/// Loads `dir` and syncs it, as local mode and the embedded default do.
async fn apply_dir(pool: &sqlx::PgPool, blobs: &FsBlobStore, dir: &Path) -> Result<(), String> {
    let loaded = manifests::load_dir(dir).map_err(|e| e.to_string())?;
    sync(pool, blobs, &loaded.desired, &Options::default())
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn a_typo_in_our_kind_or_version_refuses_the_apply() {
    let pool = database().await;
    let blobs_dir = tempfile::tempdir().unwrap();
    let blobs = FsBlobStore::new(blobs_dir.path());
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&examples).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    apply_dir(&pool, &blobs, dir.path())
        .await
        .expect("examples apply");
    let before = snapshot(&pool).await;

    let bob = dir.path().join("10-bob.yaml");
    let original = std::fs::read_to_string(&bob).unwrap();
    // (typo, the line of bob's Mailbox document that names it)
    let typos = [
        ("kind: Mailbox", "kind: MailBox", 3),
        (
            "apiVersion: mail.kubemail.io/v1alpha1",
            "apiVersion: mail.kubemail.io/v1beta1",
            2,
        ),
        (
            "apiVersion: mail.kubemail.io/v1alpha1",
            "apiVersion: kubemail.io/v1alpha1",
            2,
        ),
    ];
    for (right, wrong, line) in typos {
        std::fs::write(&bob, original.replacen(right, wrong, 1)).unwrap();
        let err = apply_dir(&pool, &blobs, dir.path()).await.expect_err(wrong);
        assert!(err.contains("10-bob.yaml"), "{wrong}: {err}");
        assert!(err.contains(&format!("line {line}")), "{wrong}: {err}");
        assert!(err.contains(wrong.split(": ").nth(1).unwrap()), "{err}");
        assert_eq!(snapshot(&pool).await, before, "{wrong}: rows changed");
    }
}

/// The PEM and public key of `selector`'s row in a.test.
async fn key_row(pool: &sqlx::PgPool, selector: &str) -> (String, Option<String>, Option<String>) {
    sqlx::query_as(
        "SELECT k.algorithm, k.private_key_pem, k.public_key FROM dkim_keys k
         JOIN domains d ON d.id = k.domain_id WHERE d.name = 'a.test' AND k.selector = $1",
    )
    .bind(selector)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn local_mode_makes_each_dkim_key_pair_once_into_the_row() {
    use mail_resources::DkimAlgorithm;
    let pool = database().await;
    let dir = tempfile::tempdir().unwrap();
    let blobs = FsBlobStore::new(dir.path());
    let options = Options::default();
    let mut ed = dkim("a.test", "s2");
    ed.algorithm = DkimAlgorithm::Ed25519;
    let mut desired = state();
    desired.dkim_keys.push(DkimKey::new("k2", ed));

    sync(&pool, &blobs, &desired, &options).await.unwrap();
    let mut pems = Vec::new();
    for (selector, algorithm) in [
        ("s1", DkimAlgorithm::Rsa2048),
        ("s2", DkimAlgorithm::Ed25519),
    ] {
        let (stored, pem, public) = key_row(&pool, selector).await;
        assert_eq!(stored, algorithm.as_str());
        let pem = pem.expect("a private key in the row");
        // The public key is the private key's, of the asked algorithm.
        let pair = mail_provision::keygen::from_pem(algorithm, &pem).expect("a key of its kind");
        assert_eq!(Some(pair.public_key), public, "{selector}");
        pems.push(pem);
    }
    // Published as the operator's are: both selectors in the domain's DNS records.
    let keys = mail_provision::dkim_public_keys(&pool, "a.test")
        .await
        .unwrap();
    let selectors: Vec<&str> = keys.iter().map(|k| k.selector.as_str()).collect();
    assert_eq!(selectors, ["s1", "s2"]);

    // Again: nothing written, no key replaced.
    let report = sync(&pool, &blobs, &desired, &options).await.unwrap();
    assert!(!report.changed(), "{report}");
    assert_eq!(key_row(&pool, "s1").await.1.as_ref(), Some(&pems[0]));

    // A key of another algorithm asked for: the old pair is cleared and a new one made.
    desired.dkim_keys[1].spec.algorithm = DkimAlgorithm::Rsa2048;
    let report = sync(&pool, &blobs, &desired, &options).await.unwrap();
    assert_eq!(report.dkim_keys.updated, 1, "{report}");
    let (stored, pem, _) = key_row(&pool, "s2").await;
    assert_eq!(stored, "rsa2048");
    let pem = pem.expect("a new key");
    assert_ne!(pem, pems[1]);
    mail_provision::keygen::from_pem(DkimAlgorithm::Rsa2048, &pem).expect("an RSA key");
    assert_eq!(key_row(&pool, "s1").await.1.as_ref(), Some(&pems[0]));
}

//! Per-resource apply and delete against a real PostgreSQL and a filesystem blob store.

mod common;

use common::*;
use mail_blobstore::{BlobStore, FsBlobStore};
use mail_provision::{
    Error, Options, Outcome, apply_dkim_key, apply_domain, apply_mailbox, delete_dkim_key,
    delete_domain, delete_mailbox,
};
use mail_resources::{DkimAlgorithm, ReclaimPolicy};

fn store() -> (tempfile::TempDir, FsBlobStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FsBlobStore::new(dir.path());
    (dir, store)
}

#[tokio::test]
async fn domain_create_update_retain_and_revive() {
    let pool = database().await;
    let (_dir, blobs) = store();
    let options = Options::default();
    let mut spec = domain("example.test", ReclaimPolicy::Retain);

    assert_eq!(
        apply_domain(&pool, &blobs, &spec, &options).await.unwrap(),
        Outcome::Created
    );
    assert!(blobs.bucket_exists("mail-example-test").await.unwrap());
    assert_eq!(
        apply_domain(&pool, &blobs, &spec, &options).await.unwrap(),
        Outcome::Unchanged
    );

    spec.catch_all = Some("Postmaster@example.test".into());
    assert_eq!(
        apply_domain(&pool, &blobs, &spec, &options).await.unwrap(),
        Outcome::Updated
    );
    let row: (String, Option<String>, String) =
        sqlx::query_as("SELECT bucket, catch_all, reclaim_policy FROM domains WHERE name = $1")
            .bind("example.test")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        row,
        (
            "mail-example-test".into(),
            Some("postmaster@example.test".into()),
            "Retain".into()
        )
    );

    apply_mailbox(
        &pool,
        &mailbox("alice@example.test", &["a@example.test"]),
        Some(b"pw"),
    )
    .await
    .unwrap();
    assert_eq!(
        delete_domain(&pool, &blobs, "example.test").await.unwrap(),
        Outcome::Removed
    );
    assert_eq!(
        delete_domain(&pool, &blobs, "example.test").await.unwrap(),
        Outcome::Unchanged
    );
    let deleted: (bool, bool) = sqlx::query_as(
        "SELECT d.deleted_at IS NOT NULL, m.deleted_at IS NOT NULL
         FROM domains d JOIN mailboxes m ON m.domain_id = d.id",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(deleted, (true, true), "domain and mailbox marked deleted");
    assert!(aliases_of(&pool, "alice@example.test").await.is_empty());
    assert!(
        blobs.bucket_exists("mail-example-test").await.unwrap(),
        "Retain keeps the bucket"
    );

    // A re-apply revives the domain; its bucket stays the one it was created with.
    let other = Options {
        bucket_prefix: "other".into(),
    };
    assert_eq!(
        apply_domain(&pool, &blobs, &spec, &other).await.unwrap(),
        Outcome::Updated
    );
    let (bucket, deleted): (String, bool) =
        sqlx::query_as("SELECT bucket, deleted_at IS NOT NULL FROM domains")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((bucket.as_str(), deleted), ("mail-example-test", false));
    assert_eq!(
        delete_domain(&pool, &blobs, "nope.test").await.unwrap(),
        Outcome::Absent
    );
}

#[tokio::test]
async fn domain_delete_policy_removes_rows_blobs_and_bucket() {
    let pool = database().await;
    let (_dir, blobs) = store();
    let spec = domain("gone.test", ReclaimPolicy::Delete);
    apply_domain(&pool, &blobs, &spec, &Options::default())
        .await
        .unwrap();
    apply_mailbox(&pool, &mailbox("u@gone.test", &[]), None)
        .await
        .unwrap();
    apply_dkim_key(&pool, &dkim("gone.test", "s1"))
        .await
        .unwrap();
    // A delivered message, as the mail server stores one.
    blobs.put("mail-gone-test", "abc", b"body").await.unwrap();
    sqlx::query(
        "WITH b AS (INSERT INTO blobs (bucket, key, size, refcount)
                    VALUES ('mail-gone-test', 'abc', 4, 2) RETURNING id),
              q AS (INSERT INTO queue (blob_id, sender, expires_at)
                    SELECT id, 'u@gone.test', now() FROM b)
         INSERT INTO messages (mailbox_id, folder_id, uid, blob_id, size)
         SELECT m.id, f.id, 1, b.id, 4 FROM b, mailboxes m JOIN folders f
             ON f.mailbox_id = m.id AND f.name = 'INBOX'",
    )
    .execute(&pool)
    .await
    .unwrap();

    assert_eq!(
        delete_domain(&pool, &blobs, "gone.test").await.unwrap(),
        Outcome::Removed
    );
    for table in [
        "domains",
        "mailboxes",
        "folders",
        "messages",
        "blobs",
        "queue",
        "dkim_keys",
    ] {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(n, 0, "{table} emptied");
    }
    assert!(!blobs.bucket_exists("mail-gone-test").await.unwrap());
}

#[tokio::test]
async fn mailbox_create_update_and_delete() {
    let pool = database().await;
    let (_dir, blobs) = store();
    apply_domain(
        &pool,
        &blobs,
        &domain("example.test", ReclaimPolicy::Retain),
        &Options::default(),
    )
    .await
    .unwrap();
    apply_domain(
        &pool,
        &blobs,
        &domain("other.test", ReclaimPolicy::Delete),
        &Options::default(),
    )
    .await
    .unwrap();

    let mut spec = mailbox(
        "Alice@Example.test",
        &["Postmaster@example.test", "a@other.test"],
    );
    spec.display_name = Some("Alice".into());
    spec.quota = "500Mi".into();
    assert_eq!(
        apply_mailbox(&pool, &spec, Some(b"secret")).await.unwrap(),
        Outcome::Created
    );
    let (quota, hash, name): (i64, String, Option<String>) = sqlx::query_as(
        "SELECT quota_bytes, password_hash, display_name FROM mailboxes WHERE address = $1",
    )
    .bind("alice@example.test")
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(quota, 500 << 20);
    assert_eq!(name.as_deref(), Some("Alice"));
    assert!(hash.starts_with("$argon2id$") && verifies(&hash, "secret"));
    assert_eq!(
        aliases_of(&pool, "alice@example.test").await,
        ["a@other.test", "postmaster@example.test"]
    );
    let folders: Vec<(String, Option<String>, i64)> =
        sqlx::query_as("SELECT name, special_use, uid_validity FROM folders ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    let names: Vec<_> = folders
        .iter()
        .map(|(n, s, _)| (n.as_str(), s.as_deref()))
        .collect();
    assert_eq!(
        names,
        [
            ("INBOX", Some("inbox")),
            ("Sent", Some("sent")),
            ("Drafts", Some("drafts")),
            ("Trash", Some("trash")),
            ("Junk", Some("junk")),
            ("Archive", Some("archive"))
        ]
    );
    assert!(
        folders
            .iter()
            .all(|(_, _, v)| (1..=i64::from(u32::MAX)).contains(v))
    );

    // Same spec, same password: nothing written, the hash kept.
    let before = snapshot(&pool).await;
    assert_eq!(
        apply_mailbox(&pool, &spec, Some(b"secret")).await.unwrap(),
        Outcome::Unchanged
    );
    assert_eq!(snapshot(&pool).await, before);

    // New aliases replace the old ones; a stored hash is taken as it is.
    spec.aliases = vec!["alias@example.test".into()];
    let given = hash_of("from-a-vault");
    assert_eq!(
        apply_mailbox(&pool, &spec, Some(format!("{given}\n").as_bytes()))
            .await
            .unwrap(),
        Outcome::Updated
    );
    assert_eq!(
        aliases_of(&pool, "alice@example.test").await,
        ["alias@example.test"]
    );
    let stored: String = sqlx::query_scalar(
        "SELECT password_hash FROM mailboxes WHERE address = 'alice@example.test'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(stored, given);
    assert_eq!(
        apply_mailbox(&pool, &spec, Some(b"changed")).await.unwrap(),
        Outcome::Updated
    );
    let changed: String = sqlx::query_scalar(
        "SELECT password_hash FROM mailboxes WHERE address = 'alice@example.test'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(verifies(&changed, "changed") && !verifies(&changed, "secret"));
    assert_eq!(
        apply_mailbox(&pool, &spec, None).await.unwrap(),
        Outcome::Updated
    );

    // Retain: marked deleted, aliases dropped, folders kept; a re-apply revives it as it was.
    let folders_before: Vec<(i64, i64)> =
        sqlx::query_as("SELECT id, uid_validity FROM folders ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        delete_mailbox(&pool, "ALICE@example.test").await.unwrap(),
        Outcome::Removed
    );
    assert_eq!(
        delete_mailbox(&pool, "alice@example.test").await.unwrap(),
        Outcome::Unchanged
    );
    assert!(aliases_of(&pool, "alice@example.test").await.is_empty());
    assert_eq!(
        apply_mailbox(&pool, &spec, None).await.unwrap(),
        Outcome::Updated
    );
    let revived: bool = sqlx::query_scalar(
        "SELECT deleted_at IS NULL FROM mailboxes WHERE address = 'alice@example.test'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(revived);
    let folders_after: Vec<(i64, i64)> =
        sqlx::query_as("SELECT id, uid_validity FROM folders ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(folders_after, folders_before, "UIDVALIDITY survives");

    // Delete policy: the row and its folders go.
    apply_mailbox(&pool, &mailbox("bob@other.test", &[]), None)
        .await
        .unwrap();
    assert_eq!(
        delete_mailbox(&pool, "bob@other.test").await.unwrap(),
        Outcome::Removed
    );
    let left: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM mailboxes m JOIN folders f ON f.mailbox_id = m.id
         WHERE m.address = 'bob@other.test'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(left, 0);
    let rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM mailboxes WHERE address = 'bob@other.test'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(rows, 0);
    assert_eq!(
        delete_mailbox(&pool, "bob@other.test").await.unwrap(),
        Outcome::Absent
    );
}

#[tokio::test]
async fn mailbox_conflicts_are_clear_errors() {
    let pool = database().await;
    let (_dir, blobs) = store();
    apply_domain(
        &pool,
        &blobs,
        &domain("example.test", ReclaimPolicy::Retain),
        &Options::default(),
    )
    .await
    .unwrap();
    apply_mailbox(
        &pool,
        &mailbox("alice@example.test", &["pm@example.test"]),
        None,
    )
    .await
    .unwrap();

    let cases = [
        (
            mailbox("bob@example.test", &["alice@example.test"]),
            "alice@example.test is a mailbox",
        ),
        (
            mailbox("bob@example.test", &["pm@example.test"]),
            "pm@example.test is an alias of alice@example.test",
        ),
        (
            mailbox("pm@example.test", &[]),
            "pm@example.test is an alias of alice@example.test",
        ),
        (
            mailbox("bob@nowhere.test", &[]),
            "domain nowhere.test is not hosted",
        ),
        (
            mailbox("bob@example.test", &["b@nowhere.test"]),
            "domain nowhere.test is not hosted",
        ),
        (mailbox("bob", &[]), "address \"bob\""),
        (
            mailbox("bob@example.test", &["bob@example.test"]),
            "lists itself",
        ),
    ];
    for (spec, want) in cases {
        let err = apply_mailbox(&pool, &spec, None).await.expect_err(want);
        assert!(err.to_string().contains(want), "{want}: {err}");
        assert!(
            matches!(err, Error::Conflict(_) | Error::Invalid(_)),
            "{err:?}"
        );
    }
    let mut bad_quota = mailbox("bob@example.test", &[]);
    bad_quota.quota = "1 GB".into();
    assert!(apply_mailbox(&pool, &bad_quota, None).await.is_err());
    let bad_hash = apply_mailbox(
        &pool,
        &mailbox("bob@example.test", &[]),
        Some(b"$argon2id$x"),
    )
    .await
    .expect_err("bad hash");
    assert!(
        bad_hash.to_string().contains("not a PHC hash"),
        "{bad_hash}"
    );
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM mailboxes")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 1, "failed applies wrote nothing");

    // A deleted (retained) domain takes no new mailboxes until it is applied again.
    delete_domain(&pool, &blobs, "example.test").await.unwrap();
    let err = apply_mailbox(&pool, &mailbox("carol@example.test", &[]), None)
        .await
        .expect_err("deleted domain");
    assert!(err.to_string().contains("was deleted"), "{err}");
}

#[tokio::test]
async fn dkim_key_create_update_delete() {
    let pool = database().await;
    let (_dir, blobs) = store();
    let err = apply_dkim_key(&pool, &dkim("example.test", "s1"))
        .await
        .expect_err("no domain");
    assert!(err.to_string().contains("not hosted"), "{err}");
    apply_domain(
        &pool,
        &blobs,
        &domain("example.test", ReclaimPolicy::Retain),
        &Options::default(),
    )
    .await
    .unwrap();

    let mut spec = dkim("example.test", "s1");
    assert_eq!(
        apply_dkim_key(&pool, &spec).await.unwrap(),
        Outcome::Created
    );
    assert_eq!(
        apply_dkim_key(&pool, &spec).await.unwrap(),
        Outcome::Unchanged
    );
    let keys: (String, bool, Option<String>) =
        sqlx::query_as("SELECT algorithm, active, private_key_pem FROM dkim_keys")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(keys, ("rsa2048".into(), true, None));

    // A generated key survives a change of `active` but not of the algorithm.
    sqlx::query("UPDATE dkim_keys SET private_key_pem = 'PEM', public_key = 'PUB'")
        .execute(&pool)
        .await
        .unwrap();
    spec.active = false;
    assert_eq!(
        apply_dkim_key(&pool, &spec).await.unwrap(),
        Outcome::Updated
    );
    let kept: Option<String> = sqlx::query_scalar("SELECT private_key_pem FROM dkim_keys")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(kept.as_deref(), Some("PEM"));
    spec.algorithm = DkimAlgorithm::Ed25519;
    assert_eq!(
        apply_dkim_key(&pool, &spec).await.unwrap(),
        Outcome::Updated
    );
    let cleared: (String, Option<String>, Option<String>) =
        sqlx::query_as("SELECT algorithm, private_key_pem, public_key FROM dkim_keys")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(cleared, ("ed25519".into(), None, None));

    assert_eq!(
        delete_dkim_key(&pool, "example.test", "s1").await.unwrap(),
        Outcome::Removed
    );
    assert_eq!(
        delete_dkim_key(&pool, "example.test", "s1").await.unwrap(),
        Outcome::Absent
    );
}

#[tokio::test]
async fn a_bucket_name_owned_by_another_domain_is_a_conflict() {
    let pool = database().await;
    let (_dir, blobs) = store();
    let options = Options::default();
    apply_domain(
        &pool,
        &blobs,
        &domain("a-b.test", ReclaimPolicy::Delete),
        &options,
    )
    .await
    .unwrap();
    let err = apply_domain(
        &pool,
        &blobs,
        &domain("a.b-test", ReclaimPolicy::Delete),
        &options,
    )
    .await
    .expect_err("same bucket");
    assert!(
        err.to_string().contains("belongs to domain a-b.test"),
        "{err}"
    );
}

#[tokio::test]
async fn domains_on_garage() {
    let pool = database().await;
    let blobs = mail_blobstore::S3BlobStore::new(&mail_testkit::garage().s3_config());
    let options = Options {
        bucket_prefix: mail_testkit::unique_prefix(),
    };
    let bucket = format!("{}-s3-test", options.bucket_prefix);
    apply_domain(
        &pool,
        &blobs,
        &domain("s3.test", ReclaimPolicy::Delete),
        &options,
    )
    .await
    .unwrap();
    assert!(blobs.bucket_exists(&bucket).await.unwrap());
    blobs.put(&bucket, "k", b"v").await.unwrap();
    delete_domain(&pool, &blobs, "s3.test").await.unwrap();
    assert!(
        !blobs.bucket_exists(&bucket).await.unwrap(),
        "emptied and deleted"
    );
}

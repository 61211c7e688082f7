//! The life of a body in the blob store: nothing is written for an APPEND over quota, a failed
//! delivery leaves only what the collector removes, expunged mail is collected after the grace
//! period (on the filesystem and on Garage), and the collector racing deliveries of the same
//! content never takes a body that a message points to.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::TestServer;
use mail_blobstore::{BlobStore, S3BlobStore};
use mailserver::store::{Collected, Store, StoreError, blob_key};
use sqlx::PgPool;

const SMALL: &str = "small@example.test";
const ALICE: &str = "alice@example.test";
const BUCKET: &str = "example-test";
const NOW: Duration = Duration::ZERO;
const HOUR: Duration = Duration::from_secs(3600);

async fn world() -> TestServer {
    TestServer::builder()
        .domain("example.test")
        .mailbox_with_quota(SMALL, 1000)
        .mailbox(ALICE, None)
        .start()
        .await
}

fn message(tag: &str, size: usize) -> Vec<u8> {
    let mut raw = format!("Subject: {tag}\r\n\r\n").into_bytes();
    raw.resize(size - 2, b'x');
    raw.extend_from_slice(b"\r\n");
    raw
}

async fn object(store: &Store, bucket: &str, raw: &[u8]) -> Option<Vec<u8>> {
    store.blobs().get(bucket, &blob_key(raw)).await.unwrap()
}

async fn uids_of(store: &Store, folder_id: i64) -> Vec<i64> {
    let messages = store.messages(folder_id).await.unwrap();
    messages.iter().map(|m| m.uid).collect()
}

async fn blob_rows(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM blobs")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_over_quota_writes_nothing() {
    let world = world().await;
    let store = &world.ctx().store;
    let small = store.resolve_recipient(SMALL).await.unwrap().unwrap();
    let inbox = store
        .folder(small.mailbox_id, "INBOX")
        .await
        .unwrap()
        .unwrap();
    let raw = message("big", 1200);
    let err = store
        .append(small.mailbox_id, inbox.id, &raw, &[], None)
        .await
        .expect_err("over quota");
    assert!(matches!(err, StoreError::QuotaExceeded { .. }), "{err:?}");
    assert_eq!(object(store, BUCKET, &raw).await, None, "no body written");
    assert_eq!(blob_rows(world.pool()).await, 0);
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_delivery_leaves_nothing_the_collector_cannot_find() {
    let world = world().await;
    let store = &world.ctx().store;
    let small = store.resolve_recipient(SMALL).await.unwrap().unwrap();
    let alice = store.resolve_recipient(ALICE).await.unwrap().unwrap();
    // The body is put before the transaction that fails on small's quota.
    let raw = message("lost", 1200);
    store
        .deliver(&raw, &[alice, small])
        .await
        .expect_err("over quota");
    assert_eq!(
        store.collect_garbage(HOUR).await.unwrap(),
        Collected::default(),
        "within the grace period nothing goes"
    );
    let collected = store.collect_garbage(NOW).await.unwrap();
    assert_eq!(collected.blobs, 1);
    assert_eq!(object(store, BUCKET, &raw).await, None);
    assert_eq!(blob_rows(world.pool()).await, 0);
    world.stop().await;
}

/// Delivers two messages, expunges one: only its body goes, and only after the grace period.
async fn expunged_mail_is_collected(store: &Store, pool: &PgPool, bucket: &str, address: &str) {
    let rcpt = store.resolve_recipient(address).await.unwrap().unwrap();
    let inbox = store
        .folder(rcpt.mailbox_id, "INBOX")
        .await
        .unwrap()
        .unwrap();
    let (gone, kept) = (message("gone", 300), message("kept", 300));
    // The same body twice: one reference is left after the first copy goes.
    for raw in [&gone, &kept, &kept] {
        store
            .deliver(raw, std::slice::from_ref(&rcpt))
            .await
            .unwrap();
    }
    assert_eq!(
        store.delete_messages(inbox.id, &[1, 2]).await.unwrap(),
        [1, 2]
    );
    assert_eq!(
        store.collect_garbage(HOUR).await.unwrap(),
        Collected::default()
    );
    assert!(object(store, bucket, &gone).await.is_some());
    let collected = store.collect_garbage(NOW).await.unwrap();
    assert_eq!((collected.blobs, collected.bytes), (1, 300));
    assert_eq!(
        object(store, bucket, &gone).await,
        None,
        "expunged body gone"
    );
    assert_eq!(object(store, bucket, &kept).await, Some(kept.clone()));
    let metas = store.messages(inbox.id).await.unwrap();
    assert_eq!(store.read_body(&metas[0]).await.unwrap(), kept);
    assert_eq!(blob_rows(pool).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expunged_mail_is_collected_on_the_filesystem() {
    let world = world().await;
    expunged_mail_is_collected(&world.ctx().store, world.pool(), BUCKET, ALICE).await;
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expunged_mail_is_collected_on_garage() {
    let url = tokio::task::spawn_blocking(mail_testkit::fresh_database)
        .await
        .unwrap();
    let pool = PgPool::connect(&url).await.unwrap();
    mail_provision::migrate(&pool).await.unwrap();
    let blobs = Arc::new(S3BlobStore::new(&mail_testkit::garage().s3_config()));
    let bucket = format!("{}-gc", mail_testkit::unique_prefix());
    blobs.create_bucket(&bucket).await.unwrap();
    sqlx::query(
        "WITH d AS (INSERT INTO domains (name, bucket) VALUES ('gc.test', $1) RETURNING id),
              m AS (INSERT INTO mailboxes (domain_id, address, quota_bytes)
                    SELECT id, 'u@gc.test', 100000 FROM d RETURNING id)
         INSERT INTO folders (mailbox_id, name, special_use, uid_validity)
         SELECT id, 'INBOX', 'inbox', 1 FROM m",
    )
    .bind(&bucket)
    .execute(&pool)
    .await
    .unwrap();
    let store = Store::new(pool.clone(), blobs.clone());
    expunged_mail_is_collected(&store, &pool, &bucket, "u@gc.test").await;

    // A domain deleted with its bucket while a staged body waited: the collector still
    // finishes (the object went with the bucket) instead of failing on every run.
    let rcpt = store.resolve_recipient("u@gc.test").await.unwrap().unwrap();
    let inbox = store
        .folder(rcpt.mailbox_id, "INBOX")
        .await
        .unwrap()
        .unwrap();
    let left: Vec<i64> = uids_of(&store, inbox.id).await;
    store.delete_messages(inbox.id, &left).await.unwrap();
    blobs.delete_bucket(&bucket).await.unwrap();
    assert_eq!(store.collect_garbage(NOW).await.unwrap().blobs, 1);
    assert_eq!(blob_rows(&pool).await, 0);
}

/// The collector runs (with no grace at all, the harshest case) while deliveries re-use the
/// content key it is deleting. Whatever the interleaving, every delivered message can be read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collector_racing_deliveries_of_the_same_body_loses_nothing() {
    let world = world().await;
    let store = world.ctx().store.clone();
    let alice = store.resolve_recipient(ALICE).await.unwrap().unwrap();
    let inbox = store
        .folder(alice.mailbox_id, "INBOX")
        .await
        .unwrap()
        .unwrap();
    let raw = message("again", 2000);
    let mut collected = 0;
    for _ in 0..100 {
        // One reference made and dropped: the blob is collectable at once.
        store
            .deliver(&raw, std::slice::from_ref(&alice))
            .await
            .unwrap();
        let uids: Vec<i64> = uids_of(&store, inbox.id).await;
        store.delete_messages(inbox.id, &uids).await.unwrap();

        let (s1, s2, s3, a1, a2) = (
            store.clone(),
            store.clone(),
            store.clone(),
            alice.clone(),
            alice.clone(),
        );
        let (r1, r2) = (raw.clone(), raw.clone());
        let (d1, c, d2) = tokio::join!(
            tokio::spawn(async move { s1.deliver(&r1, &[a1]).await }),
            tokio::spawn(async move { s2.collect_garbage(NOW).await }),
            tokio::spawn(async move { s3.deliver(&r2, &[a2]).await }),
        );
        d1.unwrap().expect("delivery");
        d2.unwrap().expect("delivery");
        collected += c.unwrap().expect("collector").blobs;
        // A later run must not take it either: it is referenced.
        store.collect_garbage(NOW).await.unwrap();
        let metas = store.messages(inbox.id).await.unwrap();
        assert_eq!(metas.len(), 2);
        for meta in &metas {
            let body = store.read_body(meta).await.expect("body still there");
            assert_eq!(body, raw);
        }
        let refcount: i64 = sqlx::query_scalar("SELECT refcount FROM blobs WHERE key = $1")
            .bind(blob_key(&raw))
            .fetch_one(world.pool())
            .await
            .unwrap();
        assert_eq!(refcount, 2);
        let uids: Vec<i64> = metas.iter().map(|m| m.uid).collect();
        store.delete_messages(inbox.id, &uids).await.unwrap();
    }
    // The race was real: the collector did delete the body between rounds many times.
    assert!(collected > 0, "the collector never ran into the deliveries");
    world.stop().await;
}

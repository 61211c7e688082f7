//! The store's delivery against a real PostgreSQL: quota holds inside the transaction, also
//! when deliveries race for the last bytes of a mailbox.

mod common;

use common::TestServer;
use mailserver::store::StoreError;

const SMALL: &str = "small@example.test";
const ALICE: &str = "alice@example.test";

async fn world() -> TestServer {
    TestServer::builder()
        .domain("example.test")
        .mailbox_with_quota(SMALL, 1000)
        .mailbox(ALICE, None)
        .start()
        .await
}

fn message(size: usize) -> Vec<u8> {
    let mut raw = b"Subject: q\r\n\r\n".to_vec();
    raw.resize(size - 2, b'x');
    raw.extend_from_slice(b"\r\n");
    raw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_quota_is_delivered_to_nobody() {
    let world = world().await;
    let store = &world.ctx().store;
    let small = store.resolve_recipient(SMALL).await.unwrap().unwrap();
    let alice = store.resolve_recipient(ALICE).await.unwrap().unwrap();

    // The caller skipped `fits` (or raced another delivery): the store still refuses, and
    // the other recipient of the same message gets nothing either.
    let err = store
        .deliver(&message(1200), &[alice.clone(), small.clone()])
        .await
        .expect_err("over quota");
    assert!(
        matches!(err, StoreError::QuotaExceeded { mailbox_id } if mailbox_id == small.mailbox_id),
        "{err:?}"
    );
    assert!(world.inbox(ALICE).await.is_empty());
    assert!(world.inbox(SMALL).await.is_empty());
    assert_eq!(world.used_bytes(ALICE).await, 0);
    assert_eq!(world.used_bytes(SMALL).await, 0);

    // Exactly up to the quota is fine.
    store.deliver(&message(1000), &[small]).await.expect("fits");
    assert_eq!(world.used_bytes(SMALL).await, 1000);
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_deliveries_never_overshoot_the_quota() {
    let world = world().await;
    let store = world.ctx().store.clone();
    let small = store.resolve_recipient(SMALL).await.unwrap().unwrap();
    // Every one of them passes the early check; only three fit.
    assert!(small.fits(300));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let (store, small) = (store.clone(), small.clone());
        tasks.spawn(async move { store.deliver(&message(300), &[small]).await });
    }
    let mut ok = 0;
    while let Some(result) = tasks.join_next().await {
        match result.expect("task") {
            Ok(_) => ok += 1,
            Err(StoreError::QuotaExceeded { .. }) => {}
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
    assert_eq!(ok, 3);
    assert_eq!(world.used_bytes(SMALL).await, 900);
    assert_eq!(world.inbox(SMALL).await.len(), 3);
    world.stop().await;
}

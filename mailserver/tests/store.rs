//! The store against a real PostgreSQL: quota holds inside the transaction, also when
//! deliveries race for the last bytes of a mailbox; APPEND, COPY and MOVE keep bytes, flags,
//! blob references and quota right and never reach another mailbox's folders.

mod common;

use common::TestServer;
use mailserver::store::{Folder, Store, StoreError};

const SMALL: &str = "small@example.test";
const ALICE: &str = "alice@example.test";

async fn world() -> TestServer {
    TestServer::builder()
        .domain("example.test")
        .mailbox_with_quota(SMALL, 1000)
        .mailbox(ALICE, None)
        .folder(ALICE, "Trash", Some("trash"))
        .folder(SMALL, "Archive", None)
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

async fn folder(store: &Store, address: &str, name: &str) -> Folder {
    let id = store
        .resolve_recipient(address)
        .await
        .unwrap()
        .unwrap()
        .mailbox_id;
    store.folder(id, name).await.unwrap().unwrap()
}

/// `(uid, flags, internal date, body)` of every message of a folder, in UID order.
async fn contents(
    store: &Store,
    folder: &Folder,
) -> Vec<(i64, Vec<String>, chrono::DateTime<chrono::Utc>, Vec<u8>)> {
    let mut out = Vec::new();
    for meta in store.messages(folder.id).await.unwrap() {
        let body = store.read_body(&meta).await.unwrap();
        out.push((meta.uid, meta.flags, meta.internal_date, body));
    }
    out
}

async fn refcount(world: &TestServer, raw: &[u8]) -> i64 {
    let key = mailserver::store::blob_key(raw);
    sqlx::query_scalar("SELECT refcount FROM blobs WHERE key = $1")
        .bind(key)
        .fetch_one(world.pool())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_copy_and_move_keep_bytes_flags_and_counts() {
    let world = world().await;
    let store = &world.ctx().store;
    let inbox = folder(store, ALICE, "INBOX").await;
    let trash = folder(store, ALICE, "Trash").await;
    let (one, two) = (
        message(300),
        b"Subject: two\r\n\r\nbinary \x00\xff\r\n".to_vec(),
    );
    let date = chrono::DateTime::parse_from_rfc3339("2024-07-14T10:00:00+02:00")
        .unwrap()
        .to_utc();
    let seen = vec!["\\Seen".to_string()];

    let first = store
        .append(inbox.mailbox_id, inbox.id, &one, &seen, Some(date))
        .await
        .unwrap();
    assert_eq!(first, (inbox.uid_validity, 1));
    let second = store
        .append(inbox.mailbox_id, inbox.id, &two, &[], None)
        .await
        .unwrap();
    assert_eq!(second, (inbox.uid_validity, 2));
    let appended = contents(store, &inbox).await;
    assert_eq!(appended.len(), 2);
    assert_eq!(
        (&appended[0].1, appended[0].2, &appended[0].3),
        (&seen, date, &one)
    );
    assert_eq!((&appended[1].1, &appended[1].3), (&Vec::new(), &two));
    let size = (one.len() + two.len()) as i64;
    assert_eq!(world.used_bytes(ALICE).await, size);

    // Unknown UIDs are skipped; new UIDs follow the source order.
    let pairs = store
        .copy_messages(inbox.id, trash.id, &[2, 1, 99])
        .await
        .unwrap();
    assert_eq!(pairs, vec![(1, 1), (2, 2)]);
    let copied = contents(store, &trash).await;
    assert_eq!(copied, appended, "same uids, flags, dates and bytes");
    assert_eq!(refcount(&world, &one).await, 2);
    assert_eq!(world.used_bytes(ALICE).await, 2 * size);

    let pairs = store.move_messages(inbox.id, trash.id, &[1]).await.unwrap();
    assert_eq!(pairs, vec![(1, 3)]);
    let left: Vec<i64> = contents(store, &inbox).await.iter().map(|m| m.0).collect();
    assert_eq!(left, vec![2], "the source is gone");
    let moved = contents(store, &trash).await;
    assert_eq!(moved.len(), 3);
    assert_eq!((&moved[2].1, moved[2].2, &moved[2].3), (&seen, date, &one));
    assert_eq!(refcount(&world, &one).await, 2, "a move adds no reference");
    assert_eq!(world.used_bytes(ALICE).await, 2 * size, "nor bytes");

    // Streamed and ranged reads give the same bytes as a whole read.
    let meta = &store.messages(trash.id).await.unwrap()[0];
    let mut streamed = Vec::new();
    let mut reader = store.open_body(meta).await.unwrap();
    tokio::io::AsyncReadExt::read_to_end(&mut reader, &mut streamed)
        .await
        .unwrap();
    assert_eq!(streamed, one);
    assert_eq!(
        store.read_body_range(meta, 9..12).await.unwrap(),
        &one[9..12]
    );
    assert_eq!(
        store.read_body_range(meta, 290..400).await.unwrap(),
        &one[290..]
    );

    // UIDs are never reused in a folder.
    let third = store
        .append(inbox.mailbox_id, inbox.id, &one, &[], None)
        .await
        .unwrap();
    assert_eq!(third.1, 3);
    assert_eq!(
        store.copy_messages(inbox.id, trash.id, &[]).await.unwrap(),
        vec![]
    );
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_and_copy_respect_the_quota_and_move_needs_none() {
    let world = world().await;
    let store = &world.ctx().store;
    let inbox = folder(store, SMALL, "INBOX").await;
    let archive = folder(store, SMALL, "Archive").await;
    store
        .append(inbox.mailbox_id, inbox.id, &message(600), &[], None)
        .await
        .unwrap();
    let err = store
        .append(inbox.mailbox_id, inbox.id, &message(500), &[], None)
        .await
        .expect_err("over quota");
    assert!(matches!(err, StoreError::QuotaExceeded { .. }), "{err:?}");
    let err = store
        .copy_messages(inbox.id, archive.id, &[1])
        .await
        .expect_err("over quota");
    assert!(matches!(err, StoreError::QuotaExceeded { .. }), "{err:?}");
    assert_eq!(store.messages(inbox.id).await.unwrap().len(), 1);
    assert!(store.messages(archive.id).await.unwrap().is_empty());
    assert_eq!(world.used_bytes(SMALL).await, 600);
    assert_eq!(refcount(&world, &message(600)).await, 1);

    assert_eq!(
        store
            .move_messages(inbox.id, archive.id, &[1])
            .await
            .unwrap(),
        vec![(1, 1)]
    );
    assert_eq!(world.used_bytes(SMALL).await, 600);
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_mailbox_folder_is_unreachable() {
    let world = world().await;
    let store = &world.ctx().store;
    let alice = folder(store, ALICE, "INBOX").await;
    let theirs = folder(store, SMALL, "Archive").await;
    let err = store
        .append(
            alice.mailbox_id,
            theirs.id,
            b"Subject: x\r\n\r\n",
            &[],
            None,
        )
        .await
        .expect_err("foreign folder");
    assert!(matches!(err, StoreError::NoSuchFolder { .. }), "{err:?}");
    store
        .append(
            alice.mailbox_id,
            alice.id,
            b"Subject: mine\r\n\r\n",
            &[],
            None,
        )
        .await
        .unwrap();
    for moving in [false, true] {
        let result = if moving {
            store.move_messages(alice.id, theirs.id, &[1]).await
        } else {
            store.copy_messages(alice.id, theirs.id, &[1]).await
        };
        assert!(
            matches!(result, Err(StoreError::NoSuchFolder { .. })),
            "{result:?}"
        );
    }
    assert!(store.messages(theirs.id).await.unwrap().is_empty());
    assert_eq!(store.messages(alice.id).await.unwrap().len(), 1);
    assert_eq!(world.used_bytes(SMALL).await, 0);
    world.stop().await;
}

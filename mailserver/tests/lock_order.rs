//! One lock order for everything that touches a folder and its mailbox: deliveries, EXPUNGE,
//! POP3's deletions at QUIT, STORE, COPY, MOVE and folder CREATE/RENAME/DELETE of one user run
//! concurrently, many times, and none of them fails with a deadlock; EXPUNGE never removes a
//! message whose `\Deleted` flag a concurrent STORE took away first.

mod common;

use common::TestServer;
use mailserver::store::{FlagMode, Folder, FolderError, Store, StoreError};

const ALICE: &str = "alice@example.test";
const BOB: &str = "bob@example.test";
const ROUNDS: usize = 40;

async fn world() -> TestServer {
    TestServer::builder()
        .domain("example.test")
        .mailbox(ALICE, None)
        .mailbox(BOB, None)
        .folder(ALICE, "Trash", Some("trash"))
        .start()
        .await
}

async fn folder(store: &Store, address: &str, name: &str) -> Folder {
    let rcpt = store.resolve_recipient(address).await.unwrap().unwrap();
    store.folder(rcpt.mailbox_id, name).await.unwrap().unwrap()
}

async fn uids_of(store: &Store, folder_id: i64) -> Vec<i64> {
    let messages = check("list", store.messages(folder_id).await);
    messages.iter().map(|m| m.uid).collect()
}

fn deleted() -> Vec<String> {
    vec!["\\Deleted".to_string()]
}

/// Fails the test on any store error but a full mailbox (none is expected here either).
fn check<T>(what: &str, result: Result<T, StoreError>) -> T {
    result.unwrap_or_else(|err| panic!("{what}: {err}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_expunges_stores_and_moves_never_deadlock() {
    let world = world().await;
    let store = world.ctx().store.clone();
    let inbox = folder(&store, ALICE, "INBOX").await;
    let trash = folder(&store, ALICE, "Trash").await;
    let alice = store.resolve_recipient(ALICE).await.unwrap().unwrap();
    let bob = store.resolve_recipient(BOB).await.unwrap().unwrap();
    for round in 0..ROUNDS {
        for n in 0..4 {
            let raw = format!("Subject: {round}-{n}\r\n\r\nbody\r\n");
            check(
                "seed",
                store
                    .deliver(raw.as_bytes(), std::slice::from_ref(&alice))
                    .await,
            );
        }
        let uids: Vec<i64> = uids_of(&store, inbox.id).await;
        let (first, rest) = (uids[..2].to_vec(), uids[2..].to_vec());
        check(
            "flag",
            store
                .store_flags(inbox.id, &first, FlagMode::Add, &deleted())
                .await,
        );
        // All at once: a delivery to both users, EXPUNGE, POP3 QUIT's deletions, STORE and
        // MOVE over the same messages.
        let raw = format!("Subject: racer {round}\r\n\r\nx\r\n").into_bytes();
        let (s1, s2, s3, s4, s5) = (
            store.clone(),
            store.clone(),
            store.clone(),
            store.clone(),
            store.clone(),
        );
        let rcpts = vec![alice.clone(), bob.clone()];
        let (rest2, all, all2) = (rest.clone(), uids.clone(), uids.clone());
        let (a, b, c, d, e) = tokio::join!(
            tokio::spawn(async move { s1.deliver(&raw, &rcpts).await.map(|_| ()) }),
            tokio::spawn(async move { s2.expunge(inbox.id, None).await.map(|_| ()) }),
            tokio::spawn(async move { s3.delete_messages(inbox.id, &rest2).await.map(|_| ()) }),
            tokio::spawn(async move {
                s4.store_flags(inbox.id, &all, FlagMode::Add, &["\\Seen".to_string()])
                    .await
                    .map(|_| ())
            }),
            tokio::spawn(async move {
                s5.move_messages(inbox.id, trash.id, &all2)
                    .await
                    .map(|_| ())
            }),
        );
        for (what, result) in [
            ("deliver", a),
            ("expunge", b),
            ("delete", c),
            ("store", d),
            ("move", e),
        ] {
            check(what, result.expect("task"));
        }
        // Clean up for the next round.
        let left: Vec<i64> = uids_of(&store, inbox.id).await;
        check("clear", store.delete_messages(inbox.id, &left).await);
    }
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expunge_spares_a_message_whose_deleted_flag_was_just_removed() {
    let world = world().await;
    let store = world.ctx().store.clone();
    let inbox = folder(&store, ALICE, "INBOX").await;
    let alice = store.resolve_recipient(ALICE).await.unwrap().unwrap();
    let mut wrong = 0;
    for round in 0..ROUNDS * 5 {
        let raw = format!("Subject: {round}\r\n\r\nkeep me\r\n");
        check(
            "seed",
            store
                .deliver(raw.as_bytes(), std::slice::from_ref(&alice))
                .await,
        );
        let uid = check("list", store.messages(inbox.id).await)[0].uid;
        check(
            "flag",
            store
                .store_flags(inbox.id, &[uid], FlagMode::Add, &deleted())
                .await,
        );
        let (s1, s2) = (store.clone(), store.clone());
        let (unflagged, expunged) = tokio::join!(
            tokio::spawn(async move {
                s1.store_flags(inbox.id, &[uid], FlagMode::Remove, &deleted())
                    .await
            }),
            tokio::spawn(async move { s2.expunge(inbox.id, None).await }),
        );
        let unflagged = check("unflag", unflagged.expect("task"));
        let expunged = check("expunge", expunged.expect("task"));
        // STORE saw the message, so it ran first and took the flag away: EXPUNGE must spare it.
        if unflagged.iter().any(|(u, _)| *u == uid) && expunged.contains(&uid) {
            wrong += 1;
        }
        let left: Vec<i64> = uids_of(&store, inbox.id).await;
        check("clear", store.delete_messages(inbox.id, &left).await);
    }
    assert_eq!(
        wrong, 0,
        "messages expunged after their \\Deleted flag was removed"
    );
    world.stop().await;
}

/// A folder change may be refused (the folder it names was renamed away meanwhile); a
/// deadlock or any other store error fails the test.
fn folder_check<T>(what: &str, result: Result<T, FolderError>) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(FolderError::NotFound | FolderError::Exists) => None,
        Err(err) => panic!("{what}: {err}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folder_changes_never_deadlock_with_mail() {
    let world = world().await;
    let store = world.ctx().store.clone();
    let alice = store.resolve_recipient(ALICE).await.unwrap().unwrap();
    let mailbox = alice.mailbox_id;
    let mut delivered = 0;
    for round in 0..ROUNDS / 2 {
        for n in 0..3 {
            let raw = format!("Subject: {round}-{n}\r\n\r\nbody\r\n");
            check(
                "seed",
                store
                    .deliver(raw.as_bytes(), std::slice::from_ref(&alice))
                    .await,
            );
            delivered += 1;
        }
        let inbox = folder(&store, ALICE, "INBOX").await;
        let work = folder_check(
            "create",
            store
                .create_folder(mailbox, &format!("W{round}/in"), None)
                .await,
        )
        .expect("a new name");
        let uids = uids_of(&store, inbox.id).await;
        // All at once: a delivery, MOVE and COPY out of the inbox, the inbox renamed (its
        // messages move), the target's parent renamed, a folder deleted and one created.
        let raw = format!("Subject: racer {round}\r\n\r\nx\r\n").into_bytes();
        let (s1, s2, s3, s4, s5, s6, s7) = (
            store.clone(),
            store.clone(),
            store.clone(),
            store.clone(),
            store.clone(),
            store.clone(),
            store.clone(),
        );
        let rcpts = vec![alice.clone()];
        let (first, all) = (uids[..1].to_vec(), uids.clone());
        let (a, b, c, d, e, f, g) = tokio::join!(
            tokio::spawn(async move { s1.deliver(&raw, &rcpts).await.map(|_| ()) }),
            tokio::spawn(async move { s2.move_messages(inbox.id, work.id, &first).await }),
            tokio::spawn(async move { s3.copy_messages(inbox.id, work.id, &all).await }),
            tokio::spawn(async move {
                s4.rename_folder(mailbox, "INBOX", &format!("Old{round}"))
                    .await
            }),
            tokio::spawn(async move {
                s5.rename_folder(mailbox, &format!("W{round}"), &format!("X{round}"))
                    .await
            }),
            tokio::spawn(async move { s6.delete_folder(mailbox, "Trash").await }),
            tokio::spawn(async move {
                s7.create_folder(mailbox, &format!("X{round}/new"), None)
                    .await
            }),
        );
        delivered += 1;
        check("deliver", a.expect("task"));
        let moved = check("move", b.expect("task"));
        let copied = check("copy", c.expect("task"));
        folder_check("rename inbox", d.expect("task"));
        folder_check("rename parent", e.expect("task"));
        folder_check("delete", f.expect("task"));
        folder_check("create", g.expect("task"));
        assert!(moved.len() <= 1 && copied.len() <= uids.len());
    }
    // Nothing lost, nothing counted twice: every delivered message is somewhere (copies are
    // extra rows), the quota and the blobs' references match the rows.
    let (count, bytes): (i64, i64) = sqlx::query_as(
        "SELECT count(*), COALESCE(SUM(size), 0)::bigint FROM messages WHERE mailbox_id = $1",
    )
    .bind(mailbox)
    .fetch_one(world.pool())
    .await
    .unwrap();
    assert!(
        count >= delivered,
        "{count} rows for {delivered} deliveries"
    );
    assert_eq!(world.used_bytes(ALICE).await, bytes);
    let wrong: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM blobs b
          WHERE refcount <> (SELECT count(*) FROM messages m WHERE m.blob_id = b.id)",
    )
    .fetch_one(world.pool())
    .await
    .unwrap();
    assert_eq!(wrong, 0, "blob references match the messages");
    world.stop().await;
}

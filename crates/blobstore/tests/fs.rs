//! FsBlobStore semantics on a temp dir: the same contract the S3 store keeps.

use mail_blobstore::{BlobError, BlobStore, FsBlobStore};

fn store() -> (tempfile::TempDir, FsBlobStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = FsBlobStore::new(dir.path());
    (dir, store)
}

#[tokio::test]
async fn put_get_replace_delete() {
    let (dir, store) = store();
    assert!(!store.bucket_exists("b").await.unwrap());
    store.create_bucket("b").await.unwrap();
    store.create_bucket("b").await.unwrap();
    assert!(store.bucket_exists("b").await.unwrap());
    assert!(dir.path().join("b").is_dir());

    assert_eq!(store.get("b", "k").await.unwrap(), None);
    store.put("b", "k", b"one").await.unwrap();
    assert_eq!(
        store.get("b", "k").await.unwrap().as_deref(),
        Some(&b"one"[..])
    );
    store.put("b", "k", b"two").await.unwrap();
    assert_eq!(
        store.get("b", "k").await.unwrap().as_deref(),
        Some(&b"two"[..])
    );
    store.put("b", "empty", b"").await.unwrap();
    assert_eq!(store.get("b", "empty").await.unwrap(), Some(Vec::new()));

    // No temporary files are left next to the blobs.
    let mut names: Vec<String> = std::fs::read_dir(dir.path().join("b"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["empty", "k"]);

    store.delete("b", "k").await.unwrap();
    store.delete("b", "k").await.unwrap();
    assert_eq!(store.get("b", "k").await.unwrap(), None);
}

#[tokio::test]
async fn put_into_a_missing_bucket_fails() {
    let (dir, store) = store();
    match store.put("nope", "k", b"x").await {
        Err(BlobError::NoSuchBucket(b)) => assert_eq!(b, "nope"),
        other => panic!("expected NoSuchBucket, got {other:?}"),
    }
    assert!(!dir.path().join("nope").exists());
}

#[tokio::test]
async fn delete_bucket_removes_its_blobs_and_is_idempotent() {
    let (dir, store) = store();
    store.create_bucket("b").await.unwrap();
    store.create_bucket("other").await.unwrap();
    store.put("b", "k1", b"1").await.unwrap();
    store.put("b", "k2", b"2").await.unwrap();
    store.put("other", "k1", b"kept").await.unwrap();

    store.delete_bucket("b").await.unwrap();
    assert!(!store.bucket_exists("b").await.unwrap());
    assert!(!dir.path().join("b").exists());
    store.delete_bucket("b").await.unwrap();
    assert_eq!(store.get("b", "k1").await.unwrap(), None);
    assert_eq!(
        store.get("other", "k1").await.unwrap().as_deref(),
        Some(&b"kept"[..])
    );
}

#[tokio::test]
async fn names_cannot_escape_the_root() {
    let (dir, store) = store();
    store.create_bucket("b").await.unwrap();
    for (bucket, key) in [
        ("..", "k"),
        ("b", ".."),
        ("b", "../x"),
        ("a/b", "k"),
        ("", "k"),
    ] {
        assert!(
            matches!(
                store.put(bucket, key, b"x").await,
                Err(BlobError::InvalidName(_))
            ),
            "{bucket}/{key}"
        );
        assert!(
            matches!(store.get(bucket, key).await, Err(BlobError::InvalidName(_))),
            "{bucket}/{key}"
        );
    }
    assert!(matches!(
        store.create_bucket("../up").await,
        Err(BlobError::InvalidName(_))
    ));
    assert!(!dir.path().parent().unwrap().join("up").exists());
}

#[tokio::test]
async fn concurrent_puts_of_one_key_leave_one_whole_blob() {
    let (_dir, store) = store();
    store.create_bucket("b").await.unwrap();
    let a = vec![b'a'; 100_000];
    let b = vec![b'b'; 100_000];
    let (ra, rb) = tokio::join!(store.put("b", "k", &a), store.put("b", "k", &b));
    ra.unwrap();
    rb.unwrap();
    let got = store.get("b", "k").await.unwrap().unwrap();
    assert!(got == a || got == b, "torn blob");
}

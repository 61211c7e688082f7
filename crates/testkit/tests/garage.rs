//! The shared Garage through `mail_blobstore::S3BlobStore`: this also tests the S3 blob store.

use mail_blobstore::{BlobError, BlobStore, S3BlobStore};

fn store() -> S3BlobStore {
    S3BlobStore::new(&mail_testkit::garage().s3_config())
}

#[tokio::test]
async fn bucket_and_blob_lifecycle() {
    let store = store();
    let bucket = format!("{}-life", mail_testkit::unique_prefix());
    assert!(!store.bucket_exists(&bucket).await.unwrap());
    store.create_bucket(&bucket).await.unwrap();
    // Creating it again is fine.
    store.create_bucket(&bucket).await.unwrap();
    assert!(store.bucket_exists(&bucket).await.unwrap());

    assert_eq!(store.get(&bucket, "missing").await.unwrap(), None);
    store
        .put(&bucket, "m1", b"Subject: hi\r\n\r\nbody\r\n")
        .await
        .unwrap();
    assert_eq!(
        store.get(&bucket, "m1").await.unwrap().as_deref(),
        Some(&b"Subject: hi\r\n\r\nbody\r\n"[..])
    );
    // A put replaces.
    store.put(&bucket, "m1", b"second").await.unwrap();
    assert_eq!(
        store.get(&bucket, "m1").await.unwrap().as_deref(),
        Some(&b"second"[..])
    );
    // Binary and larger than one buffer.
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    store.put(&bucket, "big", &big).await.unwrap();
    assert_eq!(store.get(&bucket, "big").await.unwrap(), Some(big));

    store.delete(&bucket, "m1").await.unwrap();
    store.delete(&bucket, "m1").await.unwrap();
    assert_eq!(store.get(&bucket, "m1").await.unwrap(), None);

    // delete_bucket empties it first (big is still there).
    store.delete_bucket(&bucket).await.unwrap();
    assert!(!store.bucket_exists(&bucket).await.unwrap());
    store.delete_bucket(&bucket).await.unwrap();
}

#[tokio::test]
async fn missing_bucket_and_bad_names_are_errors() {
    let store = store();
    let bucket = format!("{}-none", mail_testkit::unique_prefix());
    match store.put(&bucket, "k", b"x").await {
        Err(BlobError::NoSuchBucket(b)) => assert_eq!(b, bucket),
        other => panic!("expected NoSuchBucket, got {other:?}"),
    }
    assert!(matches!(
        store.put("a/b", "k", b"x").await,
        Err(BlobError::InvalidName(_))
    ));
    assert!(matches!(
        store.get(&bucket, "../etc").await,
        Err(BlobError::InvalidName(_))
    ));
}

#[test]
fn the_same_garage_is_shared() {
    let a = mail_testkit::garage();
    let b = mail_testkit::garage();
    assert!(std::ptr::eq(a, b));
    let config = a.s3_config();
    assert!(config.endpoint.starts_with("http://127.0.0.1:"));
    assert_eq!(config.region, "garage");
    assert!(config.access_key_id.starts_with("GK") && config.access_key_id.len() == 26);
    let keys = a.cli(&["key", "list"]).unwrap();
    assert!(keys.contains(&config.access_key_id), "{keys}");
}

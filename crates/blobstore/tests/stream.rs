//! Streaming puts and gets, the same on both backends: a put from a file reads only the
//! bytes it is given (S3: in parts past the part size), a get streams or reads a range.

use std::io::Write;

use mail_blobstore::{BlobSource, BlobStore, FsBlobStore, S3BlobStore};
use tokio::io::AsyncReadExt;

/// Bytes that differ at every offset of a part, so a misplaced part shows.
fn pattern(len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| (i * 7 + i / 251) as u8).collect()
}

async fn streams(store: &dyn BlobStore, bucket: &str, big: usize) {
    store.create_bucket(bucket).await.unwrap();
    let data = pattern(big);
    // The spool file holds more than the message: only `len` bytes belong to the blob.
    let mut spool = tempfile::NamedTempFile::new().unwrap();
    spool.write_all(&data).unwrap();
    spool.write_all(b"trailing garbage").unwrap();
    let source = BlobSource::File {
        path: spool.path().to_path_buf(),
        len: data.len() as u64,
    };
    store.put_source(bucket, "big", &source).await.unwrap();
    assert!(store.get(bucket, "big").await.unwrap() == Some(data.clone()));

    let mut read = Vec::new();
    let mut reader = store.open(bucket, "big").await.unwrap().expect("exists");
    reader.read_to_end(&mut read).await.unwrap();
    assert!(read == data, "open streams the same bytes");

    for range in [
        0..10,
        5..6,
        1_000_000..1_000_100,
        (big as u64 - 3)..(big as u64 + 50),
    ] {
        let want = &data[range.start as usize..(range.end as usize).min(big)];
        let got = store.get_range(bucket, "big", range.clone()).await.unwrap();
        assert_eq!(got.as_deref(), Some(want), "{range:?}");
    }
    assert_eq!(
        store.get_range(bucket, "big", 7..7).await.unwrap(),
        Some(Vec::new())
    );
    assert!(store.open(bucket, "missing").await.unwrap().is_none());
    assert_eq!(
        store.get_range(bucket, "missing", 0..5).await.unwrap(),
        None
    );

    // A file shorter than it claims is an error, and nothing is stored.
    let short = BlobSource::File {
        path: spool.path().to_path_buf(),
        len: big as u64 + 1000,
    };
    assert!(store.put_source(bucket, "short", &short).await.is_err());
    assert_eq!(store.get(bucket, "short").await.unwrap(), None);

    // Bytes sources are stored whole too.
    let small = BlobSource::Bytes(bytes::Bytes::from_static(b"Subject: s\r\n\r\nx\r\n"));
    store.put_source(bucket, "small", &small).await.unwrap();
    assert_eq!(
        store.get(bucket, "small").await.unwrap().as_deref(),
        Some(&b"Subject: s\r\n\r\nx\r\n"[..])
    );
}

#[tokio::test]
async fn filesystem_streams() {
    let dir = tempfile::tempdir().unwrap();
    streams(&FsBlobStore::new(dir.path()), "b", 3 * 1024 * 1024 + 17).await;
    // No temporary file is left behind, not even by the failed put.
    let mut names: Vec<String> = std::fs::read_dir(dir.path().join("b"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["big", "small"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_streams_in_parts() {
    let garage = mail_testkit::garage();
    // 5 MiB parts: an 11 MiB body goes up in three of them.
    let store = S3BlobStore::new(&garage.s3_config()).with_part_size(5 * 1024 * 1024);
    let bucket = format!("{}-stream", mail_testkit::unique_prefix());
    streams(&store, &bucket, 11 * 1024 * 1024 + 3).await;
    store.delete_bucket(&bucket).await.unwrap();
}

//! The walking skeleton end to end on real servers: `examples/` applied by the reconcile core
//! (local mode) into a real PostgreSQL and blob store, the mail server started on free ports,
//! and Python's smtplib, imaplib and poplib as the clients. Once with bodies on Garage (S3),
//! once on the filesystem store.

use std::sync::Arc;

use mail_blobstore::{BlobStore, FsBlobStore, S3BlobStore};
use mail_e2e::{Stack, listener_args, run_python, start};

/// Runs `e2e/clients/roundtrip.py` for alice: SMTP in, IMAP and POP3 out, byte-identical
/// bodies, flags across reconnects, POP3 DELE visible to IMAP, unknown recipient refused.
async fn roundtrip(stack: &Stack) {
    let mut args = listener_args(&stack.server.addresses);
    for arg in [
        "--user",
        "alice@example.test",
        "--password",
        "alice-example-pw",
        "--unknown",
        "nobody@example.test",
    ] {
        args.push(arg.to_string());
    }
    let out = tokio::task::spawn_blocking(move || run_python("roundtrip.py", &args))
        .await
        .expect("client thread")
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(out.contains("roundtrip: all checks passed"), "{out}");

    // The POP3 DELE removed the row and released the body and the quota.
    let (messages, used): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id
                  WHERE b.address = 'alice@example.test'),
                (SELECT used_bytes FROM mailboxes WHERE address = 'alice@example.test')",
    )
    .fetch_one(&stack.pool)
    .await
    .expect("count");
    assert_eq!((messages, used), (0, 0));
}

/// One message to alice, her alias and bob is stored once in the domain's bucket and filed
/// into two mailboxes.
async fn stored_once(stack: &Stack, blobs: &dyn BlobStore) {
    let smtp = stack.server.addresses.smtp;
    let script = format!(
        "import smtplib\n\
         s = smtplib.SMTP('{ip}', {port}, timeout=30)\n\
         r = s.sendmail('carol@elsewhere.test', \
             ['alice@example.test', 'postmaster@example.test', 'bob@example.test'], \
             b'Subject: to many\\r\\n\\r\\nstored once\\r\\n')\n\
         assert r == {{}}, r\n\
         s.quit()\n",
        ip = smtp.ip(),
        port = smtp.port()
    );
    let status = tokio::process::Command::new("python3")
        .args(["-c", &script])
        .status()
        .await
        .expect("python3");
    assert!(status.success(), "smtplib send to three addresses");

    let rows: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT bucket, key, refcount FROM blobs WHERE refcount > 0")
            .fetch_all(&stack.pool)
            .await
            .expect("blobs");
    assert_eq!(rows.len(), 1, "one blob for one message: {rows:?}");
    let (bucket, key, refcount) = &rows[0];
    assert_eq!(*refcount, 2, "alice (twice, via her alias) and bob");
    assert!(bucket.starts_with(&stack.bucket_prefix), "{bucket}");
    let body = blobs
        .get(bucket, key)
        .await
        .expect("blob read")
        .expect("blob present in the store");
    assert!(body.ends_with(b"Subject: to many\r\n\r\nstored once\r\n"));

    let owners: Vec<String> = sqlx::query_scalar(
        "SELECT b.address FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id ORDER BY 1",
    )
    .fetch_all(&stack.pool)
    .await
    .expect("owners");
    assert_eq!(owners, ["alice@example.test", "bob@example.test"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roundtrip_with_bodies_on_the_filesystem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let blobs: Arc<dyn BlobStore> = Arc::new(FsBlobStore::new(dir.path()));
    let stack = start(blobs.clone()).await;
    roundtrip(&stack).await;
    stored_once(&stack, blobs.as_ref()).await;
    stack.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roundtrip_with_bodies_on_garage() {
    let blobs: Arc<dyn BlobStore> = Arc::new(S3BlobStore::new(&mail_testkit::garage().s3_config()));
    let stack = start(blobs.clone()).await;
    roundtrip(&stack).await;
    stored_once(&stack, blobs.as_ref()).await;
    stack.server.shutdown().await;
}

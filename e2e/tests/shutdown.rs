//! A pod being stopped (SIGTERM → shutdown) tells SMTP clients `421` at once and does not
//! wait out the drain time for them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mail_blobstore::{BlobStore, FsBlobStore};
use mail_e2e::start;
use mailserver::server::DRAIN_TIME;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_says_421_to_open_smtp_sessions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let blobs: Arc<dyn BlobStore> = Arc::new(FsBlobStore::new(dir.path()));
    let stack = start(blobs).await;

    let stream = TcpStream::connect(stack.server.addresses.smtp)
        .await
        .expect("connect");
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let greeting = lines.next_line().await.expect("read").expect("greeting");
    assert!(greeting.starts_with("220 "), "{greeting}");
    write
        .write_all(b"EHLO client.test\r\n")
        .await
        .expect("write");
    loop {
        let line = lines.next_line().await.expect("read").expect("EHLO reply");
        if line.starts_with("250 ") {
            break;
        }
    }

    let started = Instant::now();
    let stopping = tokio::spawn(stack.server.shutdown());
    let line = tokio::time::timeout(Duration::from_secs(5), lines.next_line())
        .await
        .expect("a reply before the drain time")
        .expect("read")
        .expect("a line, not a closed connection");
    assert!(line.starts_with("421 "), "{line}");
    stopping.await.expect("shutdown task");
    assert!(
        started.elapsed() < DRAIN_TIME,
        "shutdown waited out the drain time ({:?})",
        started.elapsed()
    );
}

//! Learning from the Junk folder: a message moved into Junk over IMAP (Python's imaplib) is
//! taught to a real Rspamd as spam by the trainer, moved out again as ham; Rspamd's `learned`
//! count read back from the controller goes up, and the persisted cursor keeps a second pass
//! from teaching the same events again.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::TestServer;
use mail_testkit::rspamd;
use mailserver::filters::learn::{LearnConfig, Learner};
use mailserver::filters::rspamd::{RspamdClient, RspamdConfig};

const USER: &str = "alice@example.test";
const PASSWORD: &str = "s3cret pass";
const SPAM: &[u8] =
    b"From: promo@deals.example\r\nTo: alice@example.test\r\nSubject: cheap pills\r\n\
Message-ID: <learn-junk-1@deals.example>\r\nDate: Wed, 2 Dec 2026 10:00:00 +0000\r\n\r\n\
Cheap pills online without prescription, lowest prices, discreet worldwide shipping, order \
today and receive a bonus pack, satisfaction guaranteed or your money back, click here now.\r\n";

fn client() -> Arc<RspamdClient> {
    let r = rspamd();
    let mut config = RspamdConfig::new(r.scan_address(), r.controller_address());
    config.password = Some(r.password().to_string());
    config.timeout = Duration::from_secs(30);
    Arc::new(RspamdClient::new(config))
}

async fn imap_move(world: &TestServer, from: &str, to: &str) {
    let script = r#"
import imaplib, sys
port, user, password, src, dst = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
m = imaplib.IMAP4('127.0.0.1', port)
m.login(user, password)
typ, data = m.select(src); assert typ == 'OK', data
typ, data = m.uid('MOVE', '1:*', dst); assert typ == 'OK', data
m.logout()
print('moved')
"#;
    let port = world.addresses().imap.port().to_string();
    let out = common::python(script, &[&port, USER, PASSWORD, from, to]).await;
    assert_eq!(out, "moved\n");
}

#[tokio::test]
async fn moves_into_and_out_of_junk_teach_rspamd() {
    let world = TestServer::builder()
        .domain("example.test")
        .mailbox(USER, Some(PASSWORD))
        .folder(USER, "Junk", Some("junk"))
        .start()
        .await;
    world.deliver(USER, SPAM).await;
    let rspamd = client();
    let learner = Learner::new(
        world.ctx().store.clone(),
        rspamd.clone(),
        LearnConfig::default(),
    );
    let before = rspamd.stat().await.expect("stat").learned;

    imap_move(&world, "INBOX", "Junk").await;
    let pass = learner.pass().await.expect("pass");
    assert_eq!((pass.learned, pass.skipped, pass.locked_out), (1, 0, false));
    let after_spam = rspamd.stat().await.expect("stat").learned;
    assert_eq!(after_spam, before + 1);

    // The cursor is persisted: nothing is taught twice.
    let again = learner.pass().await.expect("pass");
    assert_eq!(again.learned + again.skipped, 0);
    let cursor: i64 = sqlx::query_scalar("SELECT last_event_id FROM learn_cursor")
        .fetch_one(world.pool())
        .await
        .expect("cursor row");
    assert!(cursor > 0);

    // Out of Junk: learned as ham (Rspamd relearns the message into the other class).
    imap_move(&world, "Junk", "INBOX").await;
    let pass = learner.pass().await.expect("pass");
    assert_eq!(pass.learned, 1);
    let after_ham = rspamd.stat().await.expect("stat").learned;
    assert!(after_ham > after_spam, "{after_spam} -> {after_ham}");

    // Another pod's pass while this one holds the lock does nothing.
    let mut conn = world.pool().acquire().await.unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(0x4c_45_41_52_4e_i64)
        .execute(&mut *conn)
        .await
        .unwrap();
    assert!(learner.pass().await.expect("pass").locked_out);
}

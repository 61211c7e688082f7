//! The POP3 maildrop lock across sessions and server processes: one lock per mailbox across two
//! `mailserver` processes on one database (`[IN-USE]`), released at QUIT, at disconnect and when
//! a process drains, expiring after a killed process, and a lost lease deletes nothing;
//! deletions only at QUIT; UIDL the same on every process and after other sessions removed
//! messages.

mod common;
mod pop3_support;

use std::time::{Duration, Instant};

use pop3_support::*;
use tokio::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_lock_per_maildrop_across_processes() {
    let fx = start().await;
    fx.deliver(USER, b"Subject: a\r\n\r\na\r\n").await;
    let here = fx.addresses().pop3;
    let mut other = spawn(&fx).await;

    // The first session holds the lock; a second one is refused on this process and on the
    // other, and stays in AUTHORIZATION.
    let mut first = session(here).await.expect("first login");
    assert_eq!(first.cmd("STAT").await, "+OK 1 17");
    let mut second = Pop::connect(here).await;
    assert_eq!(second.login().await, IN_USE);
    assert_eq!(second.cmd("STAT").await, "-ERR not allowed before login");
    let mut third = Pop::connect(other.pop3).await;
    assert_eq!(third.login().await, IN_USE);
    assert_eq!(
        other.metric("mailserver_pop3_maildrop_in_use_total").await,
        1.0
    );
    assert_eq!(other.metric("mailserver_pop3_maildrop_locks").await, 0.0);
    assert_eq!(third.cmd("STAT").await, "-ERR not allowed before login");
    // CAPA says the refusals carry response codes.
    assert_eq!(third.cmd("CAPA").await, "+OK capability list follows");
    let capa = third.lines().await;
    assert!(capa.contains(&"RESP-CODES".to_string()), "{capa:?}");
    assert!(capa.contains(&"AUTH-RESP-CODE".to_string()), "{capa:?}");

    // Released at QUIT: the waiting session on the other process gets in at once.
    assert!(first.cmd("QUIT").await.starts_with("+OK"));
    assert!(third.login().await.starts_with("+OK"), "free after QUIT");
    assert_eq!(other.metric("mailserver_pop3_maildrop_locks").await, 1.0);
    assert_eq!(
        second.login().await,
        IN_USE,
        "now held by the other process"
    );

    // Released when the client just goes away.
    drop(third);
    let (mut back, _) = session_within(here, Duration::from_secs(5)).await;
    assert_eq!(back.cmd("QUIT").await.chars().next(), Some('+'));
    assert_eq!(other.metric("mailserver_pop3_maildrop_locks").await, 0.0);

    // A process killed while its session holds the lock: the lease outlives it, then expires.
    let _holder = session(other.pop3)
        .await
        .expect("login on the other process");
    assert_eq!(session(here).await.err().as_deref(), Some(IN_USE));
    other.child.start_kill().expect("kill -9");
    other.child.wait().await.expect("exit");
    let killed = Instant::now();
    assert_eq!(
        session(here).await.err().as_deref(),
        Some(IN_USE),
        "the dead process's lease holds until it expires"
    );
    let (mut after, _) = session_within(here, CHILD_TTL * 4).await;
    assert!(
        killed.elapsed() < CHILD_TTL * 4,
        "the lease expired after about its TTL"
    );
    assert_eq!(after.cmd("STAT").await, "+OK 1 17");
    after.cmd("QUIT").await;

    // A lease row left by a process that never comes back (written as it would have).
    sqlx::query(
        "INSERT INTO pop3_locks (mailbox_id, process, session, expires_at)
         SELECT id, 'dead-pod', 1, now() + interval '1 second' FROM mailboxes WHERE address = $1",
    )
    .bind(USER)
    .execute(fx.pool())
    .await
    .expect("stale lease");
    assert_eq!(session(here).await.err().as_deref(), Some(IN_USE));
    let (mut last, _) = session_within(here, Duration::from_secs(5)).await;
    last.cmd("QUIT").await;
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pop3_locks")
        .fetch_one(fx.pool())
        .await
        .expect("count");
    assert_eq!(left, 0, "QUIT removed the lease row");
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletions_wait_for_quit_and_uidl_is_the_same_everywhere() {
    let fx = start().await;
    for n in 1..=5 {
        fx.deliver(USER, format!("Subject: {n}\r\n\r\nbody {n}\r\n").as_bytes())
            .await;
    }
    let mut other = spawn(&fx).await;
    let all: Vec<String> = (1..=5).map(|n| format!("{n} {UID_VALIDITY}.{n}")).collect();

    // The same ids from both processes.
    let mut a = session(fx.addresses().pop3).await.expect("login");
    assert_eq!(a.uidl().await, all);
    a.cmd("QUIT").await;
    let mut b = session(other.pop3)
        .await
        .expect("login on the other process");
    assert_eq!(b.uidl().await, all);

    // DELE then the connection drops: nothing removed, and the lock comes back.
    assert_eq!(b.cmd("DELE 1").await, "+OK message 1 deleted");
    assert_eq!(b.cmd("DELE 2").await, "+OK message 2 deleted");
    drop(b);
    let (mut c, _) = session_within(fx.addresses().pop3, Duration::from_secs(5)).await;
    assert_eq!(fx.uids(USER).await, vec![1, 2, 3, 4, 5]);
    assert_eq!(c.uidl().await, all);

    // DELE while the other process's server dies (kill -9): nothing removed either.
    c.cmd("QUIT").await;
    let mut d = session(other.pop3).await.expect("login");
    assert_eq!(d.cmd("DELE 3").await, "+OK message 3 deleted");
    other.child.start_kill().expect("kill -9");
    other.child.wait().await.expect("exit");
    assert_eq!(fx.uids(USER).await, vec![1, 2, 3, 4, 5]);

    // DELE, RSET, DELE, QUIT: only what was marked at QUIT goes.
    let (mut e, _) = session_within(fx.addresses().pop3, CHILD_TTL * 4).await;
    e.cmd("DELE 1").await;
    assert!(
        e.cmd("RSET")
            .await
            .starts_with("+OK maildrop has 5 messages")
    );
    assert_eq!(e.cmd("DELE 2").await, "+OK message 2 deleted");
    assert_eq!(fx.uids(USER).await, vec![1, 2, 3, 4, 5], "not before QUIT");
    assert_eq!(
        e.cmd("QUIT").await,
        "+OK mx.example.test POP3 server signing off (1 messages deleted)"
    );
    assert_eq!(fx.uids(USER).await, vec![1, 3, 4, 5]);

    // An IMAP EXPUNGE by another client: the ids of the rest stay as they were.
    let program = format!(
        "import imaplib\n\
         m = imaplib.IMAP4('127.0.0.1', {port})\n\
         m.login({USER:?}, {PASSWORD:?})\n\
         m.select('INBOX')\n\
         m.uid('STORE', '4', '+FLAGS', '(\\\\Deleted)')\n\
         m.expunge()\n\
         m.logout()\n",
        port = fx.addresses().imap.port()
    );
    common::python(&program, &[]).await;
    assert_eq!(fx.uids(USER).await, vec![1, 3, 5]);
    let mut f = session(fx.addresses().pop3).await.expect("login");
    assert_eq!(
        f.uidl().await,
        vec![
            format!("1 {UID_VALIDITY}.1"),
            format!("2 {UID_VALIDITY}.3"),
            format!("3 {UID_VALIDITY}.5"),
        ]
    );
    f.cmd("QUIT").await;
    fx.stop().await;
}

/// A message expunged over IMAP while a POP3 session that listed it is open: RETR of it says
/// so once its body is gone, the session goes on, and QUIT deletes the rest it marked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_expunge_during_a_pop3_session() {
    let fx = start().await;
    fx.deliver(USER, b"Subject: 1\r\n\r\none\r\n").await;
    fx.deliver(USER, b"Subject: 2\r\n\r\ntwo\r\n").await;
    let mut pop = session(fx.addresses().pop3).await.expect("login");
    let program = format!(
        "import imaplib\n\
         m = imaplib.IMAP4('127.0.0.1', {port})\n\
         m.login({USER:?}, {PASSWORD:?})\n\
         m.select('INBOX')\n\
         m.uid('STORE', '1', '+FLAGS', '(\\\\Deleted)')\n\
         m.expunge()\n\
         m.logout()\n",
        port = fx.addresses().imap.port()
    );
    common::python(&program, &[]).await;
    assert_eq!(fx.uids(USER).await, vec![2]);
    // The body may still be in the blob store until the collector's grace period ends.
    let reply = pop.cmd("RETR 1").await;
    if reply.starts_with("+OK") {
        assert_eq!(pop.lines().await, vec!["Subject: 1", "", "one"]);
    } else {
        assert_eq!(reply, "-ERR message was removed by another session");
    }
    assert_eq!(pop.cmd("DELE 1").await, "+OK message 1 deleted");
    assert_eq!(pop.cmd("DELE 2").await, "+OK message 2 deleted");
    assert_eq!(
        pop.cmd("QUIT").await,
        "+OK mx.example.test POP3 server signing off (1 messages deleted)"
    );
    assert_eq!(fx.uids(USER).await, Vec::<i64>::new());
    fx.stop().await;
}

/// A lease taken from under a live session (another process found it expired and took it):
/// the session deletes nothing, at QUIT or at its next command after the renewal noticed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_deletes_nothing() {
    let fx = start().await;
    fx.deliver(USER, b"Subject: 1\r\n\r\none\r\n").await;
    fx.deliver(USER, b"Subject: 2\r\n\r\ntwo\r\n").await;
    let other = spawn(&fx).await;
    let steal = || async {
        let gone = sqlx::query("DELETE FROM pop3_locks")
            .execute(fx.pool())
            .await
            .expect("delete lease");
        assert_eq!(gone.rows_affected(), 1);
    };
    let lost = "-ERR [SYS/TEMP] maildrop lock lost, nothing deleted; reconnect";

    // Checked in the database at QUIT.
    let mut a = session(other.pop3).await.expect("login");
    assert_eq!(a.cmd("DELE 1").await, "+OK message 1 deleted");
    steal().await;
    assert_eq!(a.cmd("QUIT").await, lost);
    assert_eq!(fx.uids(USER).await, vec![1, 2]);

    // Noticed by the renewal: the next command ends the session, while another has the lock.
    let mut b = session(other.pop3).await.expect("login");
    assert_eq!(b.cmd("DELE 2").await, "+OK message 2 deleted");
    steal().await;
    let mut c = session(fx.addresses().pop3)
        .await
        .expect("free after the theft");
    let deadline = Instant::now() + CHILD_TTL * 3;
    loop {
        let reply = b.cmd("NOOP").await;
        if reply == lost {
            break;
        }
        assert_eq!(reply, "+OK");
        assert!(Instant::now() < deadline, "the lost lease was not noticed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(fx.uids(USER).await, vec![1, 2]);
    assert_eq!(c.cmd("STAT").await, "+OK 2 38");
    c.cmd("QUIT").await;
    fx.stop().await;
}

/// A process that drains (SIGTERM, a rolling restart) frees its sessions' locks on the way
/// out: the client reconnecting to another pod gets in at once, long before the TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_process_frees_its_locks() {
    let fx = start().await;
    let mut other = spawn_with_ttl(&fx, Duration::from_secs(600)).await;
    let mut held = session(other.pop3)
        .await
        .expect("login on the other process");
    assert_eq!(
        session(fx.addresses().pop3).await.err().as_deref(),
        Some(IN_USE)
    );
    let pid = other.child.id().expect("pid").to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("kill");
    assert!(killed.success());
    // The session is told, then the process exits.
    assert_eq!(
        held.read_line().await,
        "-ERR [SYS/TEMP] server shutting down, nothing deleted; reconnect"
    );
    let status = tokio::time::timeout(Duration::from_secs(30), other.child.wait())
        .await
        .expect("exits within its grace period")
        .expect("exit status");
    assert!(status.success(), "{status}");
    let mut again = session(fx.addresses().pop3).await.expect("free at once");
    again.cmd("QUIT").await;
    fx.stop().await;
}

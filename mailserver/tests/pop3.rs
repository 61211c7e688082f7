//! POP3 against a real PostgreSQL and a filesystem blob store, driven by Python's poplib (an
//! independent client) and by raw bytes.

mod common;

use std::time::Duration;

use common::TestServer;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const USER: &str = "alice@example.test";
const PASSWORD: &str = "s3cret pass";
const UID_VALIDITY: i64 = 4242;

/// A running server with one mailbox (alice, password [`PASSWORD`]) and an empty INBOX.
async fn start() -> TestServer {
    TestServer::builder()
        .hostname("mx.example.test")
        .uid_validity(UID_VALIDITY)
        .domain("example.test")
        .mailbox(USER, Some(PASSWORD))
        .start()
        .await
}

/// Runs a Python poplib script with `p`, a connected `POP3`, and `login()`; returns the
/// script's `out` dict.
async fn poplib(world: &TestServer, script: &str) -> Value {
    let program = format!(
        "import poplib, json, base64, socket\n\
         p = poplib.POP3('127.0.0.1', {port}, timeout=20)\n\
         out = {{'welcome': p.getwelcome().decode()}}\n\
         def login():\n    p.user({user:?}); p.pass_({password:?})\n\
         {script}\n\
         print(json.dumps(out))\n",
        port = world.addresses().pop3.port(),
        user = USER,
        password = PASSWORD,
    );
    let stdout = common::python(&program, &[]).await;
    serde_json::from_str(&stdout).expect("json from python")
}

/// Plain ASCII messages with CRLF line ends, lines starting with dots and a lone `.` line.
const FIRST: &[u8] = b"From: bob@example.test\r\nTo: alice@example.test\r\nSubject: one\r\n\r\n\
Hello Alice.\r\n.\r\n..two dots\r\n.leading dot\r\nlast line\r\n";
const SECOND: &[u8] =
    b"From: carol@example.test\r\nSubject: two\r\n\r\nline 1\r\nline 2\r\nline 3\r\n";
const THIRD: &[u8] = b"Subject: three\r\n\r\nthree\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retr_is_byte_identical_and_uidl_is_stable() {
    let fx = start().await;
    fx.deliver(USER, FIRST).await;
    fx.deliver(USER, SECOND).await;
    let script = "\
login()
out['stat'] = list(p.stat())
out['list'] = [l.decode() for l in p.list()[1]]
out['uidl'] = [l.decode() for l in p.uidl()[1]]
out['uidl2'] = p.uidl(2).decode()
for n in (1, 2):
    resp, lines, octets = p.retr(n)
    out['retr%d' % n] = (b'\\r\\n'.join(lines) + b'\\r\\n').hex()
    out['retr_resp%d' % n] = resp.decode()
out['top'] = [l.decode() for l in p.top(2, 1)[1]]
out['capa'] = sorted(p.capa().keys())
out['quit'] = p.quit().decode()
";
    let first = poplib(&fx, script).await;
    assert_eq!(first["welcome"], "+OK mx.example.test POP3 server ready");
    let sizes = (FIRST.len(), SECOND.len());
    assert_eq!(first["stat"], serde_json::json!([2, sizes.0 + sizes.1]));
    assert_eq!(
        first["list"],
        serde_json::json!([format!("1 {}", sizes.0), format!("2 {}", sizes.1)])
    );
    assert_eq!(
        first["uidl"],
        serde_json::json!([format!("1 {UID_VALIDITY}.1"), format!("2 {UID_VALIDITY}.2")])
    );
    assert_eq!(first["uidl2"], format!("+OK 2 {UID_VALIDITY}.2"));
    assert_eq!(first["retr1"], hex::encode(FIRST));
    assert_eq!(first["retr2"], hex::encode(SECOND));
    assert_eq!(first["retr_resp1"], format!("+OK {} octets", sizes.0));
    assert_eq!(
        first["top"],
        serde_json::json!(["From: carol@example.test", "Subject: two", "", "line 1"])
    );
    assert_eq!(
        first["capa"],
        serde_json::json!([
            "AUTH-RESP-CODE",
            "IMPLEMENTATION",
            "PIPELINING",
            "RESP-CODES",
            "SASL",
            "TOP",
            "UIDL",
            "USER"
        ])
    );
    // Reading leaves the messages where they are.
    assert_eq!(fx.uids(USER).await, vec![1, 2]);

    // A new message and a new session: old ids unchanged, the new one gets its own.
    fx.deliver(USER, THIRD).await;
    let second = poplib(
        &fx,
        "login()\nout['uidl'] = [l.decode() for l in p.uidl()[1]]\np.quit()",
    )
    .await;
    assert_eq!(
        second["uidl"],
        serde_json::json!([
            format!("1 {UID_VALIDITY}.1"),
            format!("2 {UID_VALIDITY}.2"),
            format!("3 {UID_VALIDITY}.3")
        ])
    );
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dele_and_quit_removes_the_messages() {
    let fx = start().await;
    fx.deliver(USER, FIRST).await;
    fx.deliver(USER, SECOND).await;
    fx.deliver(USER, THIRD).await;
    let before = fx.used_bytes(USER).await;
    let out = poplib(&fx,
            "login()\np.dele(1)\np.dele(3)\nout['stat'] = list(p.stat())\nout['quit'] = p.quit().decode()",
        )
        .await;
    assert_eq!(out["stat"], serde_json::json!([1, SECOND.len()]));
    assert_eq!(
        out["quit"],
        "+OK mx.example.test POP3 server signing off (2 messages deleted)"
    );
    assert_eq!(fx.uids(USER).await, vec![2]);
    assert_eq!(
        fx.used_bytes(USER).await,
        before - (FIRST.len() + THIRD.len()) as i64
    );

    // The next session sees what is left, numbered from 1 again.
    let out = poplib(
        &fx,
        "login()\nout['uidl'] = [l.decode() for l in p.uidl()[1]]\np.dele(1)\np.quit()",
    )
    .await;
    assert_eq!(
        out["uidl"],
        serde_json::json!([format!("1 {UID_VALIDITY}.2")])
    );
    assert_eq!(fx.uids(USER).await, Vec::<i64>::new());
    assert_eq!(fx.used_bytes(USER).await, 0);
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connection_and_rset_remove_nothing() {
    let fx = start().await;
    fx.deliver(USER, FIRST).await;
    fx.deliver(USER, SECOND).await;
    // DELE acknowledged, then the connection drops without QUIT.
    let out = poplib(
        &fx,
        "login()\nout['dele'] = p.dele(1).decode()\np.file.close(); p.sock.close()",
    )
    .await;
    assert_eq!(out["dele"], "+OK message 1 deleted");
    // Give the server time to see the drop; nothing may be removed, now or later.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fx.uids(USER).await, vec![1, 2]);

    // DELE then RSET then QUIT: everything stays.
    let out = poplib(&fx,
            "login()\np.dele(1)\np.dele(2)\nout['rset'] = p.rset().decode()\nout['stat'] = list(p.stat())\nout['quit'] = p.quit().decode()",
        )
        .await;
    assert_eq!(
        out["rset"],
        format!(
            "+OK maildrop has 2 messages ({} octets)",
            FIRST.len() + SECOND.len()
        )
    );
    assert_eq!(
        out["stat"],
        serde_json::json!([2, FIRST.len() + SECOND.len()])
    );
    assert_eq!(
        out["quit"],
        "+OK mx.example.test POP3 server signing off (0 messages deleted)"
    );
    assert_eq!(fx.uids(USER).await, vec![1, 2]);
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins() {
    let fx = start().await;
    fx.deliver(USER, SECOND).await;
    let script = format!(
        "p.user({USER:?})\n\
         try:\n    p.pass_('wrong')\nexcept poplib.error_proto as e:\n    out['wrong'] = e.args[0].decode()\n\
         try:\n    p.stat()\nexcept poplib.error_proto as e:\n    out['stat_before'] = e.args[0].decode()\n\
         token = base64.b64encode(b'\\0' + {USER:?}.encode() + b'\\0' + {PASSWORD:?}.encode()).decode()\n\
         out['auth'] = p._shortcmd('AUTH PLAIN ' + token).decode()\n\
         out['stat'] = list(p.stat())\n\
         p.quit()"
    );
    let out = poplib(&fx, &script).await;
    assert_eq!(out["wrong"], "-ERR [AUTH] invalid user name or password");
    assert_eq!(out["stat_before"], "-ERR not allowed before login");
    assert_eq!(
        out["auth"],
        format!("+OK maildrop has 1 messages ({} octets)", SECOND.len())
    );
    assert_eq!(out["stat"], serde_json::json!([1, SECOND.len()]));

    // An unknown user fails exactly like a wrong password; the address matches in any case.
    let out = poplib(&fx,
            "p.user('nobody@example.test')\n\
             try:\n    p.pass_('x')\nexcept poplib.error_proto as e:\n    out['unknown'] = e.args[0].decode()\n\
             p.user('ALICE@Example.Test')\nout['mixed'] = p.pass_('s3cret pass').decode()\np.quit()",
        )
        .await;
    assert_eq!(out["unknown"], "-ERR [AUTH] invalid user name or password");
    assert!(
        out["mixed"].as_str().is_some_and(|s| s.starts_with("+OK")),
        "{out}"
    );
    fx.stop().await;
}

/// Every command in one write (RFC 2449 PIPELINING): the replies come back in order, byte for
/// byte, and the message is dot-stuffed on the wire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_raw_session() {
    let fx = start().await;
    fx.deliver(USER, b"Subject: x\r\n\r\n.dot\r\n").await;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", fx.addresses().pop3.port()))
        .await
        .expect("connect");
    let commands = format!(
        "USER {USER}\r\nPASS {PASSWORD}\r\nSTAT\r\nRETR 1\r\nTOP 1 0\r\nRETR 2\r\nBOGUS\r\nDELE 1\r\nQUIT\r\n"
    );
    stream.write_all(commands.as_bytes()).await.expect("write");
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut got))
        .await
        .expect("server closes after QUIT")
        .expect("read");
    let want = "+OK mx.example.test POP3 server ready\r\n\
                +OK send PASS\r\n\
                +OK maildrop has 1 messages (20 octets)\r\n\
                +OK 1 20\r\n\
                +OK 20 octets\r\nSubject: x\r\n\r\n..dot\r\n.\r\n\
                +OK top of message follows\r\nSubject: x\r\n\r\n.\r\n\
                -ERR no such message\r\n\
                -ERR unknown command\r\n\
                +OK message 1 deleted\r\n\
                +OK mx.example.test POP3 server signing off (1 messages deleted)\r\n";
    assert_eq!(String::from_utf8_lossy(&got), want);
    assert_eq!(fx.uids(USER).await, Vec::<i64>::new());
    fx.stop().await;
}

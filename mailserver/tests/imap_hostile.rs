//! Hostile input against IMAP and POP3 (issue 10): a message nested 100,000 levels deep, LIST
//! patterns that backtrack, sequence sets built to cost, a FETCH of a whole folder. The server
//! must answer each and stay up; Python's imaplib, poplib and smtplib are the clients.

mod common;

use common::TestServer;
use serde_json::Value;

const USER: &str = "alice@example.test";
const PASSWORD: &str = "s3cret pass";
/// Messages in the folder of the sequence-set test.
const MESSAGES: usize = 300;

async fn start() -> TestServer {
    TestServer::builder()
        .domain("example.test")
        .mailbox(USER, Some(PASSWORD))
        .folder(USER, "Archive", None)
        .folder(USER, "Archive/2024", None)
        .start()
        .await
}

/// Runs `script` with `smtp`, `imap` and `pop` ports, `user` and `password` defined and a
/// `login()` that returns a logged-in imaplib client (every read times out after 20 s, well
/// inside the test's patience); returns the script's `out` dict.
async fn python(world: &TestServer, script: &str) -> Value {
    let addresses = world.addresses();
    let program = format!(
        "import imaplib, poplib, smtplib, json, time\n\
         smtp, imap, pop = {smtp}, {imap}, {pop}\n\
         user, password = {USER:?}, {PASSWORD:?}\n\
         out = {{'seconds': {{}}}}\n\
         def timed(name, f):\n    t = time.perf_counter(); r = f()\n    \
         out['seconds'][name] = round(time.perf_counter() - t, 3)\n    return r\n\
         def login():\n    c = imaplib.IMAP4('127.0.0.1', imap, timeout=20)\n    \
         c.login(user, password)\n    return c\n\
         {script}\n\
         print(json.dumps(out))\n",
        smtp = addresses.smtp.port(),
        imap = addresses.imap.port(),
        pop = addresses.pop3.port(),
    );
    let stdout = common::python(&program, &[]).await;
    let out: Value = serde_json::from_str(&stdout).expect("json from python");
    // Figures for the report (run with --nocapture), not assertions.
    eprintln!("seconds: {}", out["seconds"]);
    out
}

/// The issue's poison: 100,000 `message/rfc822` parts, each inside the one before, sent over
/// SMTP; then every IMAP and POP3 command that reads it. A stack overflow would abort this
/// whole test binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_message_is_served_as_opaque_bytes() {
    let world = start().await;
    let script = r#"
poison = (b"From: bob@example.test\r\nTo: alice@example.test\r\nSubject: poison\r\n"
          + b"Content-Type: message/rfc822\r\n\r\n" * 100000 + b"the end\r\n")
s = smtplib.SMTP('127.0.0.1', smtp, timeout=60)
s.sendmail('bob@example.test', [user], poison)
s.sendmail('bob@example.test', [user], b"Subject: plain\r\n\r\nhello\r\n")
s.quit()
c = login()
c.select('INBOX')
out['search'] = timed('search subject', lambda: c.search(None, 'SUBJECT', 'poison'))[1][0].decode()
out['search_body'] = timed('search body', lambda: c.search(None, 'BODY', 'end'))[1][0].decode()
typ, data = timed('fetch bodystructure', lambda: c.fetch('1', '(BODYSTRUCTURE)'))
out['bodystructure'] = data[0].decode()
typ, data = c.fetch('1', '(ENVELOPE BODY)')
out['envelope'] = data[0].decode()
typ, data = c.fetch('1', '(BODY.PEEK[] BODY.PEEK[TEXT]<0.40> BODY.PEEK[1]<0.10>)')
parts = {}
for item in data:
    if isinstance(item, tuple):
        parts[item[0].decode().split()[-2].lstrip('(')] = item[1]
out['full_ends_with_poison'] = parts['BODY[]'].endswith(poison)
out['text'] = parts['BODY[TEXT]<0>'].decode()
out['part1'] = parts['BODY[1]<0>'].decode()
out['still_up'] = c.noop()[0]
c.logout()
p = poplib.POP3('127.0.0.1', pop, timeout=20)
p.user(user); p.pass_(password)
lines = p.retr(1)[1]
out['retr_ends_with_poison'] = (b"\r\n".join(lines) + b"\r\n").endswith(poison)
out['top'] = [l.decode() for l in p.top(1, 2)[1]][-2:]
p.quit()
"#;
    let out = python(&world, script).await;
    assert_eq!(out["search"], "1");
    assert_eq!(out["search_body"], "1");
    // Past the limits the body is one opaque part: its size is what follows the header.
    let structure = out["bodystructure"].as_str().unwrap();
    assert!(
        structure.contains(
            "(BODYSTRUCTURE (\"APPLICATION\" \"OCTET-STREAM\" NIL NIL NIL \"7BIT\" 3199977"
        ),
        "{structure}"
    );
    let envelope = out["envelope"].as_str().unwrap();
    assert!(envelope.contains("\"poison\""), "{envelope}");
    assert!(
        envelope.contains("(\"APPLICATION\" \"OCTET-STREAM\""),
        "{envelope}"
    );
    assert_eq!(out["full_ends_with_poison"], true);
    assert_eq!(out["text"], "Content-Type: message/rfc822\r\n\r\nContent-");
    assert_eq!(out["part1"], "Content-Ty");
    assert_eq!(out["still_up"], "OK");
    assert_eq!(out["retr_ends_with_poison"], true);
    assert_eq!(
        out["top"],
        serde_json::json!(["Content-Type: message/rfc822", ""])
    );

    // The first SEARCH cached both messages' header fields: with a body gone from the blob
    // store, header keys still answer from the cache, and only a body key needs the body.
    let (plain, _) = world
        .inbox(USER)
        .await
        .into_iter()
        .find(|(_, body)| body.ends_with(b"Subject: plain\r\n\r\nhello\r\n"))
        .expect("the plain message");
    let blobs = world.ctx().store.blobs();
    blobs.delete(&plain.bucket, &plain.blob_key).await.unwrap();
    let script = r#"
c = login()
c.select('INBOX')
out['cached'] = c.search(None, 'OR SUBJECT plain FROM bob@example.test')[1][0].decode()
out['sent'] = c.search(None, 'SENTSINCE 1-Jan-2000')[1][0].decode()
typ, data = c.search(None, 'BODY hello')
out['body'] = typ + ' ' + data[0].decode()
"#;
    let out = python(&world, script).await;
    assert_eq!(out["cached"], "1 2");
    assert_eq!(out["sent"], "1 2", "no Date header: the arrival date");
    let body = out["body"].as_str().unwrap();
    assert!(body.starts_with("NO [UNAVAILABLE]"), "{body}");
    world.stop().await;
}

/// LIST patterns that make a backtracking matcher run for ever answer at once; sequence sets
/// written to cost (the same number 50,000 times, every UID there is) answer at once too, and a
/// set longer than the bound is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_patterns_and_sequence_sets_answer() {
    let world = start().await;
    for n in 0..MESSAGES {
        world
            .deliver(
                USER,
                format!("Subject: m{n}\r\n\r\nbody {n}\r\n").as_bytes(),
            )
            .await;
    }
    let script = r#"
c = login()
c.select('INBOX')
typ, data = timed('fetch 50000 ones', lambda: c.fetch(','.join(['1'] * 50000), '(UID)'))
out['ones'] = [typ, [d.decode() for d in data]]
typ, data = c.uid('FETCH', '1:4294967295', '(UID)')
out['all'] = [typ, len(data)]
typ, data = c.search(None, ','.join(['2'] * 50000))
out['search'] = [typ, [d.decode() for d in data]]
import socket
raw = socket.create_connection(('127.0.0.1', imap), timeout=20)
t = time.perf_counter()
raw.sendall(f'a1 LOGIN "{user}" "{password}"\r\na2 SELECT INBOX\r\n'
            'a3 FETCH 1:* (UID BODY.PEEK[])\r\na4 NOOP\r\na5 LOGOUT\r\n'.encode())
got = b''
while True:
    chunk = raw.recv(65536)
    if not chunk:
        break
    got += chunk
out['seconds']['pipelined fetch 1:* body'] = round(time.perf_counter() - t, 3)
tail = [l for l in got.decode().split('\r\n') if l.startswith(('a3 ', 'a4 ', 'a5 ', '* BYE'))]
out['pipelined'] = [got.count(b' FETCH (UID '), tail]
try:
    c.fetch(','.join(['1'] * 50001), '(UID)')
    out['too_long'] = 'answered'
except imaplib.IMAP4.error as e:
    out['too_long'] = str(e)
for n in (200, 10000):
    for w in ('*', '%'):
        typ, data = timed(f'list {n}{w}', lambda: c.list('""', '"' + w * n + 'z"'))
        out[f'{w}{n}'] = [typ, [d for d in data if d]]
typ, data = c.list('""', '"' + '*' * 10000 + '2024"')
out['hit'] = [d.decode() for d in data]
typ, data = c.list('""', '"A%%%%%%%%%%%%%%%%/%%%%%%%%%%%%%%%%4"')
out['hit%'] = [d.decode() for d in data]
"#;
    let out = python(&world, script).await;
    for key in ["*200", "%200", "*10000", "%10000"] {
        assert_eq!(out[key], serde_json::json!(["OK", []]), "{key}");
    }
    assert_eq!(out["ones"], serde_json::json!(["OK", ["1 (UID 1)"]]));
    assert_eq!(out["all"], serde_json::json!(["OK", MESSAGES]));
    assert_eq!(out["search"], serde_json::json!(["OK", ["2"]]));
    // A FETCH answered in batches, with commands pipelined behind it: all of it, in order.
    assert_eq!(
        out["pipelined"],
        serde_json::json!([
            MESSAGES,
            [
                "a3 OK FETCH completed",
                "a4 OK NOOP completed",
                "* BYE Logging out",
                "a5 OK LOGOUT completed"
            ]
        ])
    );
    let refused = out["too_long"].as_str().unwrap();
    assert!(refused.contains("Sequence set too long"), "{refused}");
    let hit = serde_json::json!(["(\\HasNoChildren) \"/\" Archive/2024"]);
    assert_eq!(out["hit"], hit);
    assert_eq!(out["hit%"], hit);
    world.stop().await;
}

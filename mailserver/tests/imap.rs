//! IMAP against a real PostgreSQL: raw protocol exchanges and Python's imaplib.

mod common;

use std::net::SocketAddr;

use common::TestServer;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

const USER: &str = "alice@example.test";
const PASSWORD: &str = "s3cret pass";

/// Alice (password [`PASSWORD`]) with an empty INBOX, Sent, Archive and Archive/2024.
async fn start() -> TestServer {
    TestServer::builder()
        .uid_validity(1234567)
        .domain("example.test")
        .mailbox(USER, Some(PASSWORD))
        .folder(USER, "Sent", Some("sent"))
        .folder(USER, "Archive", None)
        .folder(USER, "Archive/2024", None)
        .start()
        .await
}

/// A line-oriented IMAP client that reads literals by their announced length.
struct Client {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    greeting: String,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Self {
        let (read, writer) = TcpStream::connect(addr).await.unwrap().into_split();
        let mut client = Client {
            reader: BufReader::new(read),
            writer,
            greeting: String::new(),
        };
        client.greeting = client.read_response().await;
        client
    }

    /// One response line with its literals, as bytes.
    async fn read_response_bytes(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let mut line = Vec::new();
            let read = self.reader.read_until(b'\n', &mut line);
            let n = tokio::time::timeout(std::time::Duration::from_secs(10), read)
                .await
                .unwrap_or_else(|_| {
                    panic!("no response; so far: {}", String::from_utf8_lossy(&out))
                })
                .unwrap();
            assert!(
                n > 0,
                "server closed; so far: {}",
                String::from_utf8_lossy(&out)
            );
            out.extend_from_slice(&line);
            let literal = line
                .strip_suffix(b"}\r\n")
                .and_then(|l| l.iter().rposition(|&b| b == b'{').map(|at| &l[at + 1..]))
                .and_then(|n| {
                    std::str::from_utf8(n)
                        .ok()?
                        .trim_end_matches('+')
                        .parse()
                        .ok()
                });
            match literal {
                Some(len) => {
                    let mut data = vec![0; len];
                    self.reader.read_exact(&mut data).await.unwrap();
                    out.extend_from_slice(&data);
                }
                None => return out,
            }
        }
    }

    async fn read_response(&mut self) -> String {
        String::from_utf8(self.read_response_bytes().await).unwrap()
    }

    /// Sends `tag command` and returns every response up to and including the tagged one.
    async fn run_bytes(&mut self, tag: &str, command: &str) -> Vec<u8> {
        self.writer
            .write_all(format!("{tag} {command}\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = Vec::new();
        loop {
            let response = self.read_response_bytes().await;
            let done = response.starts_with(format!("{tag} ").as_bytes());
            out.extend_from_slice(&response);
            if done {
                return out;
            }
        }
    }

    async fn run(&mut self, tag: &str, command: &str) -> String {
        String::from_utf8(self.run_bytes(tag, command).await).unwrap()
    }

    async fn login(addr: SocketAddr) -> Self {
        let mut client = Client::connect(addr).await;
        let reply = client
            .run("l1", &format!("LOGIN {USER} \"{PASSWORD}\""))
            .await;
        assert!(reply.starts_with("l1 OK [CAPABILITY IMAP4REV1 "), "{reply}");
        client
    }
}

const FIRST: &[u8] = b"From: Bob <bob@example.test>\r\nTo: alice@example.test\r\nSubject: first\r\nMessage-ID: <1@example.test>\r\n\r\nHello Alice.\r\n";
const SECOND: &[u8] = b"From: carol@example.test\r\nTo: alice@example.test\r\nSubject: second\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=b1\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nplain\r\n--b1\r\nContent-Type: text/html\r\n\r\n<p>html</p>\r\n--b1--\r\n";
const THIRD: &[u8] = b"Subject: third\r\n\r\nx\r\n";

#[tokio::test]
async fn login_failures_and_folders() {
    let world = start().await;
    let mut c = Client::connect(world.addresses().imap).await;
    assert!(
        c.greeting
            .starts_with("* OK [CAPABILITY IMAP4REV1 AUTH=PLAIN"),
        "{}",
        c.greeting
    );
    let started = std::time::Instant::now();
    assert_eq!(
        c.run("a1", &format!("LOGIN {USER} wrong")).await,
        "a1 NO [AUTHENTICATIONFAILED] Invalid credentials\r\n"
    );
    assert_eq!(
        c.run("a2", "LOGIN nobody@example.test wrong").await,
        "a2 NO [AUTHENTICATIONFAILED] Invalid credentials\r\n"
    );
    // Each failure is answered after the login service's one delay.
    assert!(
        started.elapsed() >= 2 * mailserver::auth::AuthSettings::default().failure_delay,
        "failures are slowed"
    );
    // AUTHENTICATE PLAIN with a continuation, base64 of "\0alice@example.test\0s3cret pass".
    c.writer
        .write_all(b"a3 AUTHENTICATE PLAIN\r\n")
        .await
        .unwrap();
    assert_eq!(c.read_response().await, "+  \r\n");
    c.writer
        .write_all(b"AGFsaWNlQGV4YW1wbGUudGVzdABzM2NyZXQgcGFzcw==\r\n")
        .await
        .unwrap();
    let ok = c.read_response().await;
    assert!(
        ok.starts_with("a3 OK [CAPABILITY IMAP4REV1 LITERAL+"),
        "{ok}"
    );
    assert_eq!(
        c.run("a4", "LOGIN x y").await,
        "a4 BAD Already logged in\r\n"
    );

    assert_eq!(
        c.run("b1", "LIST \"\" *").await,
        "* LIST (\\HasNoChildren) \"/\" INBOX\r\n\
         * LIST (\\HasChildren) \"/\" Archive\r\n\
         * LIST (\\HasNoChildren) \"/\" Archive/2024\r\n\
         * LIST (\\HasNoChildren \\Sent) \"/\" Sent\r\n\
         b1 OK LIST completed\r\n"
    );
    assert_eq!(
        c.run("b2", "LIST \"\" %").await.lines().count(),
        4,
        "% does not descend"
    );
    assert_eq!(
        c.run("b3", "LIST \"\" \"\"").await,
        "* LIST (\\Noselect) \"/\" \"\"\r\nb3 OK LIST completed\r\n"
    );
    assert_eq!(
        c.run("b4", "LSUB \"\" inbox").await,
        "* LSUB (\\HasNoChildren) \"/\" INBOX\r\nb4 OK LSUB completed\r\n"
    );
    assert_eq!(
        c.run("b5", "SELECT Nope").await,
        "b5 NO [NONEXISTENT] No such folder\r\n"
    );
    assert_eq!(
        c.run("b6", "STATUS Nope (MESSAGES)").await,
        "b6 NO [NONEXISTENT] No such folder\r\n"
    );
    assert_eq!(
        c.run("b7", "NAMESPACE").await,
        "* NAMESPACE ((\"\" \"/\")) NIL NIL\r\nb7 OK NAMESPACE completed\r\n"
    );
    assert_eq!(
        c.run("b8", "FETCH 1 FLAGS").await,
        "b8 BAD Select a folder first\r\n"
    );
    drop(c);
    world.stop().await;
}

#[tokio::test]
async fn select_fetch_store_expunge() {
    let world = start().await;
    world.deliver(USER, FIRST).await;
    world.deliver(USER, SECOND).await;
    world.deliver(USER, THIRD).await;
    let mut c = Client::login(world.addresses().imap).await;

    assert_eq!(
        c.run(
            "s1",
            "STATUS INBOX (MESSAGES UNSEEN UIDNEXT UIDVALIDITY RECENT)"
        )
        .await,
        "* STATUS INBOX (MESSAGES 3 UNSEEN 3 UIDNEXT 4 UIDVALIDITY 1234567 RECENT 0)\r\n\
         s1 OK STATUS completed\r\n"
    );
    assert_eq!(
        c.run("s2", "SELECT inbox").await,
        "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n\
         * OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags permitted\r\n\
         * 3 EXISTS\r\n\
         * 0 RECENT\r\n\
         * OK [UNSEEN 1] First unseen message\r\n\
         * OK [UIDVALIDITY 1234567] UIDs valid\r\n\
         * OK [UIDNEXT 4] Predicted next UID\r\n\
         s2 OK [READ-WRITE] SELECT completed\r\n"
    );

    // Metadata, and PEEK leaves \Seen alone.
    assert_eq!(
        c.run("f1", "FETCH 1:* (UID FLAGS RFC822.SIZE)").await,
        format!(
            "* 1 FETCH (UID 1 FLAGS () RFC822.SIZE {})\r\n* 2 FETCH (UID 2 FLAGS () RFC822.SIZE {})\r\n\
             * 3 FETCH (UID 3 FLAGS () RFC822.SIZE {})\r\nf1 OK FETCH completed\r\n",
            FIRST.len(),
            SECOND.len(),
            THIRD.len()
        )
    );
    let mut want = format!("* 1 FETCH (BODY[] {{{}}}\r\n", FIRST.len()).into_bytes();
    want.extend_from_slice(FIRST);
    want.extend_from_slice(b")\r\nf2 OK FETCH completed\r\n");
    assert_eq!(
        c.run_bytes("f2", "FETCH 1 BODY.PEEK[]").await,
        want,
        "byte-exact body"
    );
    assert_eq!(
        c.run("f3", "FETCH 1 FLAGS").await,
        "* 1 FETCH (FLAGS ())\r\nf3 OK FETCH completed\r\n"
    );
    assert_eq!(
        c.run("f4", "UID FETCH 2 (BODY.PEEK[HEADER.FIELDS (Subject)] BODY.PEEK[1] BODY.PEEK[2.MIME] BODY.PEEK[]<0.4>)").await,
        "* 2 FETCH (BODY[HEADER.FIELDS (Subject)] {19}\r\nSubject: second\r\n\r\n \
         BODY[1] {5}\r\nplain BODY[2.MIME] {27}\r\nContent-Type: text/html\r\n\r\n \
         BODY[]<0> {4}\r\nFrom UID 2)\r\nf4 OK FETCH completed\r\n"
    );
    let envelope = c.run("f5", "FETCH 1 (ENVELOPE INTERNALDATE)").await;
    assert!(
        envelope.starts_with(
            "* 1 FETCH (ENVELOPE (NIL \"first\" ((\"Bob\" NIL \"bob\" \"example.test\")) \
             ((\"Bob\" NIL \"bob\" \"example.test\")) ((\"Bob\" NIL \"bob\" \"example.test\")) \
             ((NIL NIL \"alice\" \"example.test\")) NIL NIL NIL \"<1@example.test>\") INTERNALDATE \""
        ),
        "{envelope}"
    );
    let structure = c.run("f6", "FETCH 2 BODYSTRUCTURE").await;
    assert!(
        structure.starts_with("* 2 FETCH (BODYSTRUCTURE ((\"TEXT\" \"plain\" NIL NIL NIL \"7bit\" 5 0 NIL NIL NIL NIL)(\"TEXT\" \"html\" NIL NIL NIL \"7bit\" 11 0 NIL NIL NIL NIL) \"alternative\" (\"boundary\" \"b1\")"),
        "{structure}"
    );

    // A body fetch without PEEK sets \Seen and says so.
    let mut want = b"* 3 FETCH (BODY[TEXT] {3}\r\nx\r\n FLAGS (\\Seen))\r\n".to_vec();
    want.extend_from_slice(b"f7 OK FETCH completed\r\n");
    assert_eq!(c.run_bytes("f7", "FETCH 3 BODY[TEXT]").await, want);

    assert_eq!(
        c.run("t1", "STORE 1:2 +FLAGS (\\Flagged $Work)").await,
        "* 1 FETCH (FLAGS ($Work \\Flagged))\r\n* 2 FETCH (FLAGS ($Work \\Flagged))\r\nt1 OK STORE completed\r\n"
    );
    assert_eq!(
        c.run("t2", "UID STORE 2 -FLAGS.SILENT ($Work)").await,
        "t2 OK STORE completed\r\n"
    );
    assert_eq!(
        c.run("t3", "UID STORE 1 FLAGS (\\Deleted)").await,
        "* 1 FETCH (FLAGS (\\Deleted) UID 1)\r\nt3 OK STORE completed\r\n"
    );
    assert_eq!(
        c.run("q1", "SEARCH FLAGGED").await,
        "* SEARCH 2\r\nq1 OK SEARCH completed\r\n"
    );
    assert_eq!(
        c.run("q2", "UID SEARCH UNSEEN").await,
        "* SEARCH 1 2\r\nq2 OK SEARCH completed\r\n"
    );
    assert_eq!(
        c.run("q3", "SEARCH DELETED").await,
        "* SEARCH 1\r\nq3 OK SEARCH completed\r\n"
    );
    assert_eq!(
        c.run("q4", "SEARCH SUBJECT second").await,
        "* SEARCH 2\r\nq4 OK SEARCH completed\r\n"
    );
    assert_eq!(
        c.run("q5", "SEARCH CHARSET KOI8-R ALL").await,
        "q5 NO [BADCHARSET] Use UTF-8 or US-ASCII\r\n"
    );
    assert_eq!(
        c.run("q6", "FETCH 4 FLAGS").await,
        "q6 BAD Message sequence number out of range\r\n"
    );

    // Another session sees the flags, and its expunge reaches us at NOOP.
    let mut other = Client::login(world.addresses().imap).await;
    other.run("o1", "SELECT INBOX").await;
    assert_eq!(
        other.run("o2", "FETCH 1:3 FLAGS").await,
        "* 1 FETCH (FLAGS (\\Deleted))\r\n* 2 FETCH (FLAGS (\\Flagged))\r\n* 3 FETCH (FLAGS (\\Seen))\r\no2 OK FETCH completed\r\n"
    );
    other.run("o3", "STORE 3 +FLAGS (\\Deleted)").await;
    assert_eq!(
        other.run("o4", "EXPUNGE").await,
        "* 3 EXPUNGE\r\n* 1 EXPUNGE\r\no4 OK EXPUNGE completed\r\n",
        "highest first, each number right when read"
    );
    world.deliver(USER, FIRST).await;
    assert_eq!(
        c.run("n1", "NOOP").await,
        "* 3 EXPUNGE\r\n* 1 EXPUNGE\r\n* 2 EXISTS\r\nn1 OK NOOP completed\r\n"
    );
    assert_eq!(
        c.run("n2", "FETCH 1:* (UID FLAGS)").await,
        "* 1 FETCH (UID 2 FLAGS (\\Flagged))\r\n* 2 FETCH (UID 4 FLAGS ())\r\nn2 OK FETCH completed\r\n"
    );

    // UID EXPUNGE removes only what it names; EXAMINE is read-only.
    c.run("x1", "STORE 1:2 +FLAGS.SILENT (\\Deleted)").await;
    assert_eq!(
        c.run("x2", "UID EXPUNGE 4").await,
        "* 2 EXPUNGE\r\nx2 OK EXPUNGE completed\r\n"
    );
    assert!(
        c.run("x3", "EXAMINE INBOX")
            .await
            .ends_with("x3 OK [READ-ONLY] EXAMINE completed\r\n")
    );
    assert_eq!(
        c.run("x4", "STORE 1 +FLAGS (\\Seen)").await,
        "x4 NO [READ-ONLY] The folder is open read-only (EXAMINE)\r\n"
    );
    assert_eq!(c.run("x5", "CLOSE").await, "x5 OK CLOSE completed\r\n");
    assert_eq!(
        c.run("x6", "STATUS INBOX (MESSAGES)").await,
        "* STATUS INBOX (MESSAGES 1)\r\nx6 OK STATUS completed\r\n",
        "CLOSE after EXAMINE expunges nothing"
    );
    c.run("x7", "SELECT INBOX").await;
    assert_eq!(c.run("x8", "CLOSE").await, "x8 OK CLOSE completed\r\n");
    assert_eq!(
        c.run("x9", "STATUS INBOX (MESSAGES)").await,
        "* STATUS INBOX (MESSAGES 0)\r\nx9 OK STATUS completed\r\n"
    );
    assert_eq!(
        c.run("z1", "LOGOUT").await,
        "* BYE Logging out\r\nz1 OK LOGOUT completed\r\n"
    );
    drop(other);
    world.stop().await;
}

#[tokio::test]
async fn python_imaplib() {
    let world = start().await;
    world.deliver(USER, FIRST).await;
    world.deliver(USER, SECOND).await;
    let dir = tempfile::tempdir().unwrap();
    let expected = dir.path().join("second.eml");
    std::fs::write(&expected, SECOND).unwrap();
    let script = r#"
import imaplib, sys
port, user, password, expected = int(sys.argv[1]), sys.argv[2], sys.argv[3], open(sys.argv[4], 'rb').read()
m = imaplib.IMAP4('127.0.0.1', port)
typ, _ = m.login(user, password); assert typ == 'OK'
typ, data = m.select('INBOX'); assert (typ, data) == ('OK', [b'2']), (typ, data)
typ, data = m.fetch('2', '(BODY[])'); assert typ == 'OK'
assert data[0][1] == expected, data[0][1]
typ, data = m.store('1', '+FLAGS', '(\\Flagged)'); assert typ == 'OK', data
typ, data = m.uid('SEARCH', None, 'FLAGGED'); assert data == [b'1'], data
m.logout()
m = imaplib.IMAP4('127.0.0.1', port)
m.login(user, password)
m.select('INBOX')
typ, data = m.fetch('1:2', '(FLAGS)')
assert data == [b'1 (FLAGS (\\Flagged))', b'2 (FLAGS (\\Seen))'], data
m.store('1', '+FLAGS', '(\\Deleted)')
typ, data = m.expunge(); assert (typ, data) == ('OK', [b'1']), (typ, data)
typ, data = m.select('INBOX'); assert data == [b'1'], data
typ, data = m.list(); assert typ == 'OK' and b'(\\HasNoChildren) "/" INBOX' in data, data
m.close(); m.logout()
try:
    imaplib.IMAP4('127.0.0.1', port).login(user, 'wrong'); sys.exit('wrong password accepted')
except imaplib.IMAP4.error as e:
    assert 'AUTHENTICATIONFAILED' in str(e), e
print('imaplib ok')
"#;
    let port = world.addresses().imap.port().to_string();
    let stdout = common::python(
        script,
        &[
            &port,
            USER,
            PASSWORD,
            expected.to_str().expect("utf-8 path"),
        ],
    )
    .await;
    assert_eq!(stdout, "imaplib ok\n");
    world.stop().await;
}

/// `APPEND folder ... {n+}` with the body sent right behind (LITERAL+).
fn append_command(folder: &str, extra: &str, body: &[u8]) -> String {
    let body = std::str::from_utf8(body).unwrap();
    format!("APPEND {folder}{extra} {{{}+}}\r\n{body}", body.len())
}

#[tokio::test]
async fn append_copy_and_move() {
    let world = start().await;
    let mut c = Client::login(world.addresses().imap).await;
    assert!(c.greeting.contains(" UIDPLUS MOVE]"), "{}", c.greeting);
    c.run("s0", "SELECT INBOX").await;

    // APPEND with flags and date; into the selected folder it shows as EXISTS at once.
    let date = " (\\Seen $Sent \\Seen) \"14-Jul-2024 10:00:00 +0200\"";
    assert_eq!(
        c.run("a1", &append_command("Sent", date, FIRST)).await,
        "a1 OK [APPENDUID 1234567 1] APPEND completed\r\n"
    );
    assert_eq!(
        c.run("a2", &append_command("INBOX", "", SECOND)).await,
        "* 1 EXISTS\r\na2 OK [APPENDUID 1234567 1] APPEND completed\r\n"
    );
    assert_eq!(
        c.run("a3", &append_command("INBOX", " ()", THIRD)).await,
        "* 2 EXISTS\r\na3 OK [APPENDUID 1234567 2] APPEND completed\r\n"
    );
    assert_eq!(
        c.run("a4", &append_command("Nope", "", THIRD)).await,
        "a4 NO [TRYCREATE] No such folder\r\n"
    );
    assert_eq!(
        c.run("a5", "FETCH 1:* UID").await,
        "* 1 FETCH (UID 1)\r\n* 2 FETCH (UID 2)\r\na5 OK FETCH completed\r\n"
    );

    // UID COPY keeps bytes and flags, in ascending source order.
    c.run("c0", "UID STORE 2 +FLAGS (\\Flagged)").await;
    assert_eq!(
        c.run("c1", "UID COPY 2,1 Archive").await,
        "c1 OK [COPYUID 1234567 1:2 1:2] COPY completed\r\n"
    );
    assert_eq!(
        c.run("c2", "COPY 2 Archive").await,
        "c2 OK [COPYUID 1234567 2 3] COPY completed\r\n"
    );
    assert_eq!(
        c.run("c3", "COPY 1 Nope").await,
        "c3 NO [TRYCREATE] No such folder\r\n"
    );
    assert_eq!(
        c.run("c4", "COPY 9 Archive").await,
        "c4 BAD Message sequence number out of range\r\n"
    );

    // MOVE: COPYUID untagged, then the EXPUNGEs highest first, and the view follows.
    assert_eq!(
        c.run("m1", "MOVE 1:2 Archive/2024").await,
        "* OK [COPYUID 1234567 1:2 1:2] Moved\r\n* 2 EXPUNGE\r\n* 1 EXPUNGE\r\nm1 OK MOVE completed\r\n"
    );
    assert_eq!(c.run("m2", "NOOP").await, "m2 OK NOOP completed\r\n");
    assert_eq!(
        c.run("m3", "UID MOVE 1 Archive").await,
        "m3 OK MOVE completed\r\n",
        "nothing left to move"
    );

    c.run("f0", "SELECT Archive/2024").await;
    let fetched = c.run_bytes("f1", "FETCH 1:2 (UID FLAGS BODY.PEEK[])").await;
    let mut want =
        format!("* 1 FETCH (UID 1 FLAGS () BODY[] {{{}}}\r\n", SECOND.len()).into_bytes();
    want.extend_from_slice(SECOND);
    want.extend_from_slice(
        format!(
            ")\r\n* 2 FETCH (UID 2 FLAGS (\\Flagged) BODY[] {{{}}}\r\n",
            THIRD.len()
        )
        .as_bytes(),
    );
    want.extend_from_slice(THIRD);
    want.extend_from_slice(b")\r\nf1 OK FETCH completed\r\n");
    assert_eq!(
        String::from_utf8_lossy(&fetched),
        String::from_utf8_lossy(&want)
    );
    c.run("f2", "SELECT Sent").await;
    let fetched = c
        .run("f3", "FETCH 1 (FLAGS INTERNALDATE BODY.PEEK[])")
        .await;
    assert!(
        fetched.starts_with(
            "* 1 FETCH (FLAGS ($Sent \\Seen) INTERNALDATE \"14-Jul-2024 08:00:00 +0000\" BODY[] {"
        ),
        "{fetched}"
    );
    assert!(
        fetched.contains(std::str::from_utf8(FIRST).unwrap()),
        "{fetched}"
    );

    // Over quota: APPEND and COPY are refused, nothing is written.
    sqlx::query("UPDATE mailboxes SET quota_bytes = used_bytes + 10 WHERE address = $1")
        .bind(USER)
        .execute(world.pool())
        .await
        .unwrap();
    assert_eq!(
        c.run("q1", &append_command("Sent", "", SECOND)).await,
        "q1 NO [OVERQUOTA] The mailbox is over its quota\r\n"
    );
    assert_eq!(
        c.run("q2", "COPY 1 Archive").await,
        "q2 NO [OVERQUOTA] The mailbox is over its quota\r\n"
    );
    assert_eq!(
        c.run("q3", "MOVE 1 Archive").await,
        "* OK [COPYUID 1234567 1 4] Moved\r\n* 1 EXPUNGE\r\nq3 OK MOVE completed\r\n",
        "a move needs no room"
    );
    assert_eq!(
        c.run("q4", "STATUS Archive (MESSAGES UIDNEXT)").await,
        "* STATUS Archive (MESSAGES 4 UIDNEXT 5)\r\nq4 OK STATUS completed\r\n"
    );

    // EXAMINE: COPY out is fine, MOVE out is not.
    c.run("r0", "EXAMINE Archive").await;
    assert_eq!(
        c.run("r1", "MOVE 1 Sent").await,
        "r1 NO [READ-ONLY] The folder is open read-only (EXAMINE)\r\n"
    );
    world.stop().await;
}

#[tokio::test]
async fn another_users_folders_are_unreachable() {
    let bob = "bob@example.test";
    let world = TestServer::builder()
        .domain("example.test")
        .mailbox(USER, Some(PASSWORD))
        .mailbox(bob, Some(PASSWORD))
        .folder(bob, "Private", None)
        .start()
        .await;
    let mut c = Client::login(world.addresses().imap).await;
    assert_eq!(
        c.run("a1", &append_command("Private", "", FIRST)).await,
        "a1 NO [TRYCREATE] No such folder\r\n"
    );
    c.run("a2", &append_command("INBOX", "", FIRST)).await;
    c.run("a3", "SELECT INBOX").await;
    for (tag, command) in [("a4", "COPY 1 Private"), ("a5", "UID MOVE 1 Private")] {
        assert_eq!(
            c.run(tag, command).await,
            format!("{tag} NO [TRYCREATE] No such folder\r\n")
        );
    }
    let bobs: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id WHERE b.address = $1",
    )
    .bind(bob)
    .fetch_one(world.pool())
    .await
    .unwrap();
    assert_eq!(bobs, 0);
    assert_eq!(world.uids(USER).await, vec![1]);
    world.stop().await;
}

#[tokio::test]
async fn python_imaplib_append_copy_move() {
    let world = start().await;
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("second.eml");
    std::fs::write(&body, SECOND).unwrap();
    sqlx::query("UPDATE mailboxes SET quota_bytes = 100000 WHERE address = $1")
        .bind(USER)
        .execute(world.pool())
        .await
        .unwrap();
    let script = r#"
import imaplib, re, sys
port, user, password, body = int(sys.argv[1]), sys.argv[2], sys.argv[3], open(sys.argv[4], 'rb').read()
m = imaplib.IMAP4('127.0.0.1', port)
m.login(user, password)
assert 'MOVE' in m.capabilities, m.capabilities
typ, data = m.append('Sent', '(\\Seen \\Flagged)', imaplib.Time2Internaldate(1700000000), body)
assert typ == 'OK' and b'[APPENDUID 1234567 1]' in data[0], (typ, data)
typ, data = m.append('Sent', None, None, b'Subject: two\r\n\r\n2\r\n'); assert typ == 'OK', data
typ, data = m.append('Nope', None, None, body)
assert typ == 'NO' and b'TRYCREATE' in data[0], (typ, data)
m.select('Sent')
typ, data = m.uid('COPY', '1:2', 'Archive'); assert typ == 'OK', (typ, data)
typ, data = m.uid('MOVE', '1', 'Archive/2024'); assert typ == 'OK', (typ, data)
assert m.untagged_responses.get('EXPUNGE') == [b'1'], m.untagged_responses
# The tagged COPYUID of COPY, then the untagged one of MOVE.
assert m.untagged_responses.get('COPYUID') == [b'1234567 1:2 1:2', b'1234567 1 1'], m.untagged_responses
typ, data = m.uid('FETCH', '1:*', '(UID)'); assert data == [b'1 (UID 2)'], data
for folder in ('Archive', 'Archive/2024'):
    m.select(folder)
    typ, data = m.uid('FETCH', '1', '(FLAGS BODY.PEEK[])'); assert typ == 'OK', data
    assert data[0][1] == body, (folder, data[0][1])
    assert b'\\Seen' in data[0][0] and b'\\Flagged' in data[0][0], data[0][0]
m.select('Sent')
typ, data = m.uid('SEARCH', None, 'ALL'); assert data == [b'2'], data
typ, data = m.append('Sent', None, None, b'Subject: big\r\n\r\n' + b'x' * 200000 + b'\r\n')
assert typ == 'NO' and b'[OVERQUOTA]' in data[0], (typ, data)
typ, data = m.uid('SEARCH', None, 'ALL'); assert data == [b'2'], data
m.logout()
print('imaplib ok')
"#;
    let port = world.addresses().imap.port().to_string();
    let stdout = common::python(
        script,
        &[&port, USER, PASSWORD, body.to_str().expect("utf-8 path")],
    )
    .await;
    assert_eq!(stdout, "imaplib ok\n");
    world.stop().await;
}

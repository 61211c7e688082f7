//! The POP3 maildrop across sessions and server processes: `fetchmail` downloads a whole
//! maildrop byte for byte (dots, a bare CR, 8-bit text, 5 MB); one lock per mailbox across two
//! `mailserver` processes on one database (`[IN-USE]`), released at QUIT and at disconnect,
//! expiring after a killed process; deletions only at QUIT; UIDL the same on every process and
//! after other sessions removed messages.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::TestServer;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::process::{Child, Command};

const USER: &str = "alice@example.test";
const PASSWORD: &str = "s3cret pass";
const UID_VALIDITY: i64 = 777;
const IN_USE: &str = "-ERR [IN-USE] maildrop already locked";
/// Lease time of the second server process: what a killed process leaves behind lasts this.
const CHILD_TTL: Duration = Duration::from_secs(2);

async fn start() -> TestServer {
    TestServer::builder()
        .hostname("mx.example.test")
        .uid_validity(UID_VALIDITY)
        .domain("example.test")
        .mailbox(USER, Some(PASSWORD))
        .start()
        .await
}

/// A second `mailserver` process on the same database and blob store (another pod).
struct Process {
    child: Child,
    pop3: SocketAddr,
    _data: tempfile::TempDir,
}

async fn spawn(world: &TestServer) -> Process {
    spawn_with_ttl(world, CHILD_TTL).await
}

async fn spawn_with_ttl(world: &TestServer, ttl: Duration) -> Process {
    let opts = world.pool().connect_options();
    let url = format!(
        "postgres://postgres@{}:{}/{}",
        opts.get_host(),
        opts.get_port(),
        opts.get_database().expect("database name")
    );
    let data = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_mailserver"))
        .args(["--database-url", &url, "--blob-dir"])
        .arg(world.blob_dir())
        .arg("--data-dir")
        .arg(data.path())
        .args([
            "--listen",
            "pop3=127.0.0.1:0,tls=none",
            "--http-listen",
            "127.0.0.1:0",
            "--hostname",
            "mx2.example.test",
            "--pop3-lock-ttl",
            &ttl.as_secs().to_string(),
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("mailserver starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut found: HashMap<String, SocketAddr> = HashMap::new();
    while let Some(line) = lines.next_line().await.expect("stdout") {
        if line == "ready" {
            break;
        }
        if let Some((name, addr)) = line.split_once(" listening on ") {
            let addr = addr.split(' ').next().expect("address");
            found.insert(name.to_string(), addr.parse().expect("address"));
        }
    }
    // Keep reading stdout so the process never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Process {
        child,
        pop3: found["POP3"],
        _data: data,
    }
}

/// A raw POP3 client.
struct Pop {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Pop {
    async fn connect(addr: SocketAddr) -> Self {
        let (read, writer) = TcpStream::connect(addr)
            .await
            .expect("connect")
            .into_split();
        let mut pop = Self {
            reader: BufReader::new(read),
            writer,
        };
        let greeting = pop.read_line().await;
        assert!(greeting.starts_with("+OK "), "{greeting}");
        pop
    }

    async fn read_line(&mut self) -> String {
        let mut line = String::new();
        tokio::time::timeout(Duration::from_secs(20), self.reader.read_line(&mut line))
            .await
            .expect("reply in time")
            .expect("read");
        line.trim_end().to_string()
    }

    /// Sends one command and returns its status line.
    async fn cmd(&mut self, line: &str) -> String {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .expect("write");
        self.read_line().await
    }

    /// Reads the lines of a multi-line reply up to the final `.`.
    async fn lines(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let line = self.read_line().await;
            if line == "." {
                return lines;
            }
            lines.push(line);
        }
    }

    /// USER and PASS; the reply to PASS.
    async fn login(&mut self) -> String {
        assert_eq!(self.cmd(&format!("USER {USER}")).await, "+OK send PASS");
        self.cmd(&format!("PASS {PASSWORD}")).await
    }

    async fn uidl(&mut self) -> Vec<String> {
        assert!(self.cmd("UIDL").await.starts_with("+OK"));
        self.lines().await
    }
}

/// A new session logged in on `addr`, or the refusal it got.
async fn session(addr: SocketAddr) -> Result<Pop, String> {
    let mut pop = Pop::connect(addr).await;
    let reply = pop.login().await;
    if reply.starts_with("+OK") {
        Ok(pop)
    } else {
        Err(reply)
    }
}

/// Logs in on `addr` until it works (the lock freed), failing after `limit`; returns the
/// session and how many logins were refused with `[IN-USE]` before.
async fn session_within(addr: SocketAddr, limit: Duration) -> (Pop, u32) {
    let deadline = Instant::now() + limit;
    let mut refused = 0;
    loop {
        match session(addr).await {
            Ok(pop) => return (pop, refused),
            Err(reply) => {
                assert_eq!(reply, IN_USE);
                refused += 1;
                assert!(
                    Instant::now() < deadline,
                    "maildrop still locked after {limit:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Every line end as LF: what a client that stores LF lines (fetchmail through an MDA) keeps
/// of a message whose line ends were CRLF, LF or a bare CR on the POP3 wire.
fn lf_lines(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'\r' if raw.get(i + 1) == Some(&b'\n') => {
                out.push(b'\n');
                i += 1;
            }
            b'\r' => out.push(b'\n'),
            b => out.push(b),
        }
        i += 1;
    }
    if out.last().is_some_and(|&b| b != b'\n') {
        out.push(b'\n');
    }
    out
}

/// A mixed maildrop: dots at line starts, a bare CR, 8-bit text, and about 5 MB.
fn messages() -> Vec<Vec<u8>> {
    let mut big = b"From: big@example.test\r\nSubject: big\r\n\r\n".to_vec();
    let mut n = 0u64;
    while big.len() < 5 * 1024 * 1024 {
        // Every 50th line starts with a dot, so stuffing happens across piece boundaries.
        let lead = if n.is_multiple_of(50) { "." } else { "" };
        big.extend_from_slice(
            format!("{lead}line {n:08} of the big message ----------\r\n").as_bytes(),
        );
        n += 1;
    }
    vec![
        b"From: bob@example.test\r\nSubject: dots\r\n\r\nHi.\r\n.\r\n..two\r\n.lead\r\nend\r\n"
            .to_vec(),
        b"From: carol@example.test\r\nSubject: bare cr\r\n\r\nbefore\rafter\r\n.\rdot after cr\r\n"
            .to_vec(),
        "From: dave@example.test\r\nSubject: 8bit\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\r\nGrüße aus Köln, ça va? 日本語\r\n"
            .as_bytes()
            .to_vec(),
        big,
    ]
}

/// Runs fetchmail against `addr` into a directory, one file per message (an MDA that writes
/// its standard input), keeping or deleting the messages on the server.
async fn fetchmail(addr: SocketAddr, keep: bool) -> Vec<Vec<u8>> {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("out");
    std::fs::create_dir(&out).expect("out dir");
    let mda = dir.path().join("mda.sh");
    std::fs::write(
        &mda,
        format!(
            "#!/bin/sh\nn=$(ls {out} | wc -l)\nexec cat > {out}/$(printf %04d \"$n\")\n",
            out = out.display()
        ),
    )
    .expect("mda");
    let rc = dir.path().join("fetchmailrc");
    std::fs::write(
        &rc,
        format!(
            "set no bouncemail\n\
             poll 127.0.0.1 service {port} protocol pop3 uidl auth password timeout 30\n\
             \x20 user \"{USER}\" there with password \"{PASSWORD}\" is \"root\" here\n\
             \x20 options {keep} fetchall no rewrite mda \"/bin/sh {mda}\"\n\
             \x20 sslproto '' no sslcertck\n",
            port = addr.port(),
            keep = if keep { "keep" } else { "no keep" },
            mda = mda.display(),
        ),
    )
    .expect("rc");
    set_mode_600(&rc);
    let output = Command::new("fetchmail")
        .args(["--nodetach", "--nosyslog", "--invisible", "--fetchmailrc"])
        .arg(&rc)
        .env("HOME", dir.path())
        .env("FETCHMAILHOME", dir.path())
        .output()
        .await
        .expect("fetchmail runs");
    assert!(
        output.status.success(),
        "fetchmail failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let mut names: Vec<_> = std::fs::read_dir(&out)
        .expect("out dir")
        .map(|e| e.expect("entry").path())
        .collect();
    names.sort();
    names
        .iter()
        .map(|p| std::fs::read(p).expect("message file"))
        .collect()
}

fn set_mode_600(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetchmail_downloads_the_maildrop_byte_for_byte() {
    let fx = start().await;
    let delivered = messages();
    for raw in &delivered {
        fx.deliver(USER, raw).await;
    }
    // Kept on the server: the download changes nothing there.
    let got = fetchmail(fx.addresses().pop3, true).await;
    assert_eq!(got.len(), delivered.len(), "one file per message");
    for (i, (got, raw)) in got.iter().zip(&delivered).enumerate() {
        let want = lf_lines(raw);
        assert!(
            got == &want,
            "message {i}: {} bytes, want {}; first difference at {:?}",
            got.len(),
            want.len(),
            got.iter().zip(&want).position(|(a, b)| a != b)
        );
    }
    assert_eq!(fx.uids(USER).await, vec![1, 2, 3, 4]);

    // poplib: TOP of the big one stops after the lines asked for; UIDL lists every message.
    let program = format!(
        "import poplib, json\n\
         p = poplib.POP3('127.0.0.1', {port}, timeout=20)\n\
         p.user({USER:?}); p.pass_({PASSWORD:?})\n\
         out = {{}}\n\
         resp, lines, octets = p.top(4, 2)\n\
         out['top'] = [l.decode() for l in lines]\n\
         out['top_resp'] = resp.decode()\n\
         out['uidl'] = [l.decode() for l in p.uidl()[1]]\n\
         out['list4'] = p.list(4).decode()\n\
         p.quit()\n\
         print(json.dumps(out))\n",
        port = fx.addresses().pop3.port()
    );
    let out: Value = serde_json::from_str(&common::python(&program, &[]).await).expect("json");
    assert_eq!(
        out["top"],
        serde_json::json!([
            "From: big@example.test",
            "Subject: big",
            "",
            // poplib undoes the stuffing of the dot line.
            ".line 00000000 of the big message ----------",
            "line 00000001 of the big message ----------"
        ])
    );
    assert_eq!(out["top_resp"], "+OK top of message follows");
    assert_eq!(
        out["uidl"],
        serde_json::json!(
            (1..=4)
                .map(|n| format!("{n} {UID_VALIDITY}.{n}"))
                .collect::<Vec<_>>()
        )
    );
    assert_eq!(out["list4"], format!("+OK 4 {}", delivered[3].len()));

    // Not kept: fetchmail marks each with DELE and the removal happens at its QUIT.
    let again = fetchmail(fx.addresses().pop3, false).await;
    assert_eq!(again.len(), delivered.len());
    assert_eq!(fx.uids(USER).await, Vec::<i64>::new());
    fx.stop().await;
}

/// getmail6 into a maildir (its own POP3 client, in Python), deleting after download.
async fn getmail(addr: SocketAddr) -> Vec<Vec<u8>> {
    let dir = tempfile::tempdir().expect("temp dir");
    let maildir = dir.path().join("Maildir");
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(maildir.join(sub)).expect("maildir");
    }
    // getmail refuses to deliver as root; as root it delivers as another user, who must be
    // able to write the maildir.
    let as_root = std::fs::read_to_string("/proc/self/status")
        .expect("status")
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
    if as_root {
        use std::os::unix::fs::PermissionsExt;
        let open = |path: &Path, mode| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod")
        };
        open(dir.path(), 0o755);
        open(&maildir, 0o777);
        for sub in ["cur", "new", "tmp"] {
            open(&maildir.join(sub), 0o777);
        }
    }
    let rc = dir.path().join("getmailrc");
    std::fs::write(
        &rc,
        format!(
            "[retriever]\ntype = SimplePOP3Retriever\nserver = 127.0.0.1\nport = {port}\n\
             username = {USER}\npassword = {PASSWORD}\n\n\
             [destination]\ntype = Maildir\npath = {maildir}\n\n\
             [options]\nread_all = true\ndelete = true\ndelivered_to = false\n\
             received = false\nmessage_log_syslog = false\nverbose = 0\n",
            port = addr.port(),
            maildir = if as_root {
                format!("{}/\nuser = nobody", maildir.display())
            } else {
                format!("{}/", maildir.display())
            },
        ),
    )
    .expect("rc");
    let output = Command::new("getmail")
        .arg("--getmaildir")
        .arg(dir.path())
        .arg("--rcfile")
        .arg(&rc)
        .output()
        .await
        .expect("getmail runs");
    assert!(
        output.status.success(),
        "getmail failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // getmail adds a Return-Path of its own (POP3 carries no envelope sender): taken off.
    let mut files: Vec<Vec<u8>> = std::fs::read_dir(maildir.join("new"))
        .expect("new")
        .map(|e| std::fs::read(e.expect("entry").path()).expect("message"))
        .map(|m| {
            m.strip_prefix(b"Return-Path: <unknown>\n".as_slice())
                .expect("getmail's Return-Path first")
                .to_vec()
        })
        .collect();
    // Maildir names carry no order: sort by the Subject line.
    files.sort_by_key(|m| subject(m));
    files
}

fn subject(message: &[u8]) -> Vec<u8> {
    message
        .split(|&b| b == b'\n')
        .find(|l| l.starts_with(b"Subject: "))
        .map(<[u8]>::to_vec)
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn getmail_downloads_into_a_maildir_and_deletes() {
    let fx = start().await;
    let mut delivered = messages();
    delivered.pop(); // the big one is fetchmail's
    for raw in &delivered {
        fx.deliver(USER, raw).await;
    }
    let got = getmail(fx.addresses().pop3).await;
    delivered.sort_by_key(|m| subject(&lf_lines(m)));
    assert_eq!(got.len(), delivered.len(), "one file per message");
    for (got, raw) in got.iter().zip(&delivered) {
        assert_eq!(
            String::from_utf8_lossy(got),
            String::from_utf8_lossy(&lf_lines(raw))
        );
    }
    assert_eq!(fx.uids(USER).await, Vec::<i64>::new(), "deleted at QUIT");
    fx.stop().await;
}

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
    assert_eq!(third.cmd("STAT").await, "-ERR not allowed before login");
    // CAPA says the refusals carry response codes.
    assert_eq!(third.cmd("CAPA").await, "+OK capability list follows");
    let capa = third.lines().await;
    assert!(capa.contains(&"RESP-CODES".to_string()), "{capa:?}");
    assert!(capa.contains(&"AUTH-RESP-CODE".to_string()), "{capa:?}");

    // Released at QUIT: the waiting session on the other process gets in at once.
    assert!(first.cmd("QUIT").await.starts_with("+OK"));
    assert!(third.login().await.starts_with("+OK"), "free after QUIT");
    assert_eq!(
        second.login().await,
        IN_USE,
        "now held by the other process"
    );

    // Released when the client just goes away.
    drop(third);
    let (mut back, _) = session_within(here, Duration::from_secs(5)).await;
    assert_eq!(back.cmd("QUIT").await.chars().next(), Some('+'));

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

/// RETR of a 24 MB message raises the serving process's peak memory by far less than the
/// message: the body streams through in pieces (a whole copy plus its stuffed copy was ~50 MB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retr_of_a_large_message_streams() {
    let fx = start().await;
    let mut raw = b"Subject: large\r\n\r\n".to_vec();
    let mut n = 0u64;
    while raw.len() < 24 * 1024 * 1024 {
        raw.extend_from_slice(format!(".{n:010} some text to fill the line up\r\n").as_bytes());
        n += 1;
    }
    sqlx::query("UPDATE mailboxes SET quota_bytes = 100000000")
        .execute(fx.pool())
        .await
        .expect("quota");
    fx.deliver(USER, &raw).await;
    let other = spawn(&fx).await;
    let pid = other.child.id().expect("pid");
    let mut pop = session(other.pop3).await.expect("login");
    // TOP first: it must not need the whole body either.
    assert_eq!(pop.cmd("TOP 1 1").await, "+OK top of message follows");
    assert_eq!(
        pop.lines().await,
        vec![
            "Subject: large",
            "",
            "..0000000000 some text to fill the line up"
        ]
    );
    // Peak counted from now on (`clear_refs` 5 resets VmHWM to the current RSS).
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("reset peak RSS");
    let before = rss_kib(pid, "VmHWM:");
    assert_eq!(pop.cmd("RETR 1").await, format!("+OK {} octets", raw.len()));
    let mut wire = 0usize;
    let mut lines = 0u64;
    loop {
        let mut line = Vec::new();
        let read = pop.reader.read_until(b'\n', &mut line).await.expect("read");
        assert!(read > 0, "connection closed in the middle of the message");
        if line == b".\r\n" {
            break;
        }
        wire += line.len();
        lines += 1;
    }
    let after = rss_kib(pid, "VmHWM:");
    // Every body line starts with a dot, so each got one more on the wire.
    assert_eq!(wire, raw.len() + usize::try_from(n).expect("count"));
    assert_eq!(lines, n + 2);
    let grown = after.saturating_sub(before);
    eprintln!(
        "RETR of {} bytes: peak RSS {before} KiB -> {after} KiB (+{grown} KiB)",
        raw.len()
    );
    assert!(
        grown < 12 * 1024,
        "peak memory grew by {grown} KiB during RETR"
    );
    pop.cmd("QUIT").await;
    fx.stop().await;
}

/// A memory figure of the process from `/proc/<pid>/status` (`VmHWM:` is the peak resident
/// memory), in KiB.
fn rss_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
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

//! Real POP3 clients download a maildrop: `fetchmail` (through an MDA) and `getmail6` (into a
//! maildir) get every message byte for byte, dots, a bare CR, 8-bit text and 5 MB included;
//! poplib's TOP and UIDL; RETR of a large message streams with little memory.

mod common;
mod pop3_support;

use std::net::SocketAddr;
use std::path::Path;

use pop3_support::*;
use serde_json::Value;
use tokio::io::AsyncBufReadExt;
use tokio::process::Command;

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
    let started = std::time::Instant::now();
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
    let took = started.elapsed();
    // Every body line starts with a dot, so each got one more on the wire.
    assert_eq!(wire, raw.len() + usize::try_from(n).expect("count"));
    assert_eq!(lines, n + 2);
    let grown = after.saturating_sub(before);
    eprintln!(
        "RETR of {} bytes in {took:?} ({:.0} MB/s, this build): peak RSS {before} KiB -> \
         {after} KiB (+{grown} KiB)",
        raw.len(),
        raw.len() as f64 / took.as_secs_f64() / 1e6
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

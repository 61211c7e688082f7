//! IMAP commands and extensions through real clients: Python's imaplib (CREATE, DELETE,
//! RENAME, SUBSCRIBE, LSUB, STATUS, EXAMINE, CHECK, CLOSE, UNSELECT, QUOTA, ENABLE,
//! CREATE-SPECIAL-USE, SORT, THREAD), curl's IMAP, and mbsync syncing nested folders with
//! flags, then one account into another.

mod common;

use common::TestServer;

const USER: &str = "alice@example.test";
const PASSWORD: &str = "s3cret pass";

const FIRST: &[u8] = b"From: Bob <bob@example.test>\r\nTo: alice@example.test\r\nSubject: first\r\nMessage-ID: <1@example.test>\r\n\r\nHello Alice.\r\n";
const SECOND: &[u8] = b"From: carol@example.test\r\nTo: alice@example.test\r\nSubject: second\r\nMessage-ID: <2@example.test>\r\n\r\nHi again.\r\n";

/// Alice with the provisioned folders (INBOX, Sent, Drafts, Trash, Junk, Archive).
async fn start() -> TestServer {
    TestServer::builder()
        .uid_validity(1234567)
        .domain("example.test")
        .mailbox(USER, Some(PASSWORD))
        .folder(USER, "Sent", Some("sent"))
        .folder(USER, "Drafts", Some("drafts"))
        .folder(USER, "Trash", Some("trash"))
        .folder(USER, "Junk", Some("junk"))
        .folder(USER, "Archive", Some("archive"))
        .start()
        .await
}

async fn count(world: &TestServer, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(world.pool())
        .await
        .expect("query")
}

#[tokio::test]
async fn folders_quota_and_enable_with_imaplib() {
    let world = start().await;
    world.deliver(USER, FIRST).await;
    world.deliver(USER, SECOND).await;
    let script = r#"
import imaplib, re, sys
port, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]
m = imaplib.IMAP4('127.0.0.1', port)
m.login(user, password)
typ, data = m.capability()
caps = data[0].decode().split()
for cap in ('CHILDREN', 'SPECIAL-USE', 'QUOTA', 'QUOTA=RES-STORAGE', 'ENABLE', 'STATUS=SIZE', 'UIDPLUS'):
    assert cap in caps, (cap, caps)

def names(pattern='*', lsub=False):
    typ, data = (m.lsub if lsub else m.list)('""', pattern)
    assert typ == 'OK', data
    out = {}
    for line in data:
        attrs, name = re.match(rb'\(([^)]*)\) "/" (.*)', line).groups()
        out[name.strip(b'"').decode()] = attrs.decode().split()
    return out

# Special-use attributes and CHILDREN on the provisioned folders.
listed = names()
assert listed['Junk'] == ['\\HasNoChildren', '\\Junk'], listed
assert listed['Archive'] == ['\\HasNoChildren', '\\Archive'], listed
assert listed['Sent'] == ['\\HasNoChildren', '\\Sent'], listed

# CREATE makes the missing parents; the parents list \HasChildren.
typ, data = m.create('Work/2024/Q1'); assert typ == 'OK', data
listed = names('Work*')
assert listed == {'Work': ['\\HasChildren'], 'Work/2024': ['\\HasChildren'], 'Work/2024/Q1': ['\\HasNoChildren']}, listed
assert set(names('Work/%')) == {'Work/2024'}, names('Work/%')
typ, data = m.create('Work'); assert typ == 'NO' and b'[ALREADYEXISTS]' in data[0], data
typ, data = m.create('INBOX'); assert typ == 'NO' and b'[ALREADYEXISTS]' in data[0], data
typ, data = m.create('a//b'); assert typ == 'NO' and b'[CANNOT]' in data[0], data
typ, data = m.create('Trailing/'); assert typ == 'OK', data
assert 'Trailing' in names(), names()

# APPEND into the new folder, STATUS with SIZE, without selecting it.
body = b'Subject: nested\r\n\r\nin Q1\r\n'
typ, data = m.append('Work/2024/Q1', '(\\Seen)', None, body); assert typ == 'OK', data
typ, data = m.append('Work/2024/Q1', None, None, body + b'more\r\n'); assert typ == 'OK', data
typ, data = m.status('Work/2024/Q1', '(MESSAGES UIDNEXT UNSEEN RECENT SIZE UIDVALIDITY)')
assert typ == 'OK', data
st = data[0].decode()
assert 'MESSAGES 2' in st and 'UIDNEXT 3' in st and 'UNSEEN 1' in st and 'RECENT 0' in st, st
assert 'SIZE %d' % (2 * len(body) + 6) in st, st
validity = re.search(r'UIDVALIDITY (\d+)', st).group(1)

# RENAME moves the children along and keeps UIDVALIDITY.
typ, data = m.rename('Work', 'Projects/Old'); assert typ == 'OK', data
listed = names()
assert not any(n.startswith('Work') for n in listed), listed
assert listed['Projects'] == ['\\HasChildren'] and 'Projects/Old/2024/Q1' in listed, listed
typ, data = m.status('Projects/Old/2024/Q1', '(MESSAGES UIDVALIDITY)')
assert data[0].decode().endswith('(MESSAGES 2 UIDVALIDITY %s)' % validity), data
typ, data = m.rename('Projects', 'Projects/Inside'); assert typ == 'NO', data
typ, data = m.rename('Nope', 'Other'); assert typ == 'NO' and b'[NONEXISTENT]' in data[0], data
typ, data = m.rename('Sent', 'Archive'); assert typ == 'NO' and b'[ALREADYEXISTS]' in data[0], data

# DELETE: not with children, not INBOX; a leaf goes with its messages.
typ, data = m.delete('Projects/Old/2024'); assert typ == 'NO' and b'[HASCHILDREN]' in data[0], data
typ, data = m.delete('INBOX'); assert typ == 'NO', data
typ, data = m.delete('Projects/Old/2024/Q1'); assert typ == 'OK', data
typ, data = m.delete('Projects/Old/2024/Q1'); assert typ == 'NO' and b'[NONEXISTENT]' in data[0], data
assert names('Projects/Old/2024') == {'Projects/Old/2024': ['\\HasNoChildren']}, names('Projects/Old/2024')
# Deleting the selected folder closes it.
typ, data = m.create('Scratch'); assert typ == 'OK', data
m.select('Scratch')
typ, data = m.delete('Scratch'); assert typ == 'OK', data
assert m.untagged_responses.pop('OK', None) == [b'[CLOSED] The selected folder was deleted'], m.untagged_responses
m.state = 'AUTH'  # imaplib does not know the server closed the folder
# A deleted name can be created again, under a new UIDVALIDITY.
typ, data = m.create('Projects/Old/2024/Q1'); assert typ == 'OK', data
typ, data = m.status('Projects/Old/2024/Q1', '(MESSAGES UIDNEXT UIDVALIDITY)')
st = data[0].decode()
assert 'MESSAGES 0' in st and 'UIDNEXT 1' in st and 'UIDVALIDITY %s)' % validity not in st, st

# SUBSCRIBE / UNSUBSCRIBE / LSUB.
typ, data = m.unsubscribe('Archive'); assert typ == 'OK', data
assert 'Archive' not in names(lsub=True) and 'INBOX' in names(lsub=True), names(lsub=True)
typ, data = m.subscribe('Archive'); assert typ == 'OK', data
assert 'Archive' in names(lsub=True)
typ, data = m.unsubscribe('Nope'); assert typ == 'NO', data
# LSUB with %: an unsubscribed parent of a subscribed folder stands in as \\Noselect.
typ, data = m.unsubscribe('Projects'); assert typ == 'OK', data
assert names('%', lsub=True)['Projects'] == ['\\Noselect', '\\HasChildren'], names('%', lsub=True)
assert 'Projects' not in names('*', lsub=True) and 'Projects/Old' in names('*', lsub=True)

# QUOTA: any folder, nothing selected; SETQUOTA is refused.
typ, data = m.getquotaroot('Archive'); assert typ == 'OK', data
assert data[0] == [b'Archive ""'], data
assert re.fullmatch(rb'"" \(STORAGE 1 \d+\)', data[1][0]), data
typ, data = m.getquota('""'); assert typ == 'OK' and data[0].startswith(b'"" (STORAGE '), data
typ, data = m.getquota('other'); assert typ == 'NO', data
typ, data = m.setquota('""', '(STORAGE 1)'); assert typ == 'NO', data
typ, data = m.getquotaroot('Nope'); assert typ == 'NO', data

# ENABLE answers only what is offered.
typ, data = m._simple_command('ENABLE', 'X-NOTHING')
assert typ == 'OK' and m.untagged_responses.pop('ENABLED', None) == [b''], (typ, data)

# EXAMINE is read-only; CHECK; UNSELECT; CLOSE expunges quietly after SELECT.
typ, data = m.select('INBOX', readonly=True); assert typ == 'OK' and data == [b'2'], data
m.send(b'E1 ENABLE X-NOTHING\r\n')  # imaplib itself refuses it in this state
line = m.readline(); assert line == b'E1 BAD ENABLE is only valid before SELECT\r\n', line
typ, data = m.store('1', '+FLAGS', '(\\Deleted)'); assert typ == 'NO', data
typ, data = m.check(); assert typ == 'OK', data
typ, data = m.unselect(); assert typ == 'OK', data
m.select('INBOX')
typ, data = m.store('1', '+FLAGS', '(\\Deleted)'); assert typ == 'OK', data
typ, data = m.close(); assert typ == 'OK', data
assert 'EXPUNGE' not in m.untagged_responses, m.untagged_responses
typ, data = m.status('INBOX', '(MESSAGES HIGHESTMODSEQ)'); assert typ == 'OK', data
assert re.search(rb'\(MESSAGES 1 HIGHESTMODSEQ [1-9]\d*\)$', data[0]), data

# RENAME INBOX: its messages move to the new folder, INBOX stays, empty.
typ, data = m.rename('INBOX', '"Old Inbox"'); assert typ == 'OK', data
typ, data = m.status('INBOX', '(MESSAGES UIDNEXT)'); assert data[0].endswith(b'(MESSAGES 0 UIDNEXT 3)'), data
m.select('"Old Inbox"')
typ, data = m.fetch('1', '(BODY.PEEK[HEADER.FIELDS (SUBJECT)])'); assert b'second' in data[0][1], data

# BINARY: parts with their transfer encoding undone; a NUL travels as a literal8.
assert 'BINARY' in caps, caps
mime = (b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n'
        b'Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\nSGVsbG8gYmluYXJ5\r\n--b\r\n'
        b'Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAAEC\r\n--b--\r\n')
typ, data = m.append('"Old Inbox"', None, None, mime); assert typ == 'OK', data
typ, data = m.uid('FETCH', '2', '(BINARY.PEEK[1] BINARY.SIZE[2])'); assert typ == 'OK', data
assert data[0][1] == b'Hello binary' and b'BINARY.SIZE[2] 3' in data[1], data
typ, data = m.uid('FETCH', '2', '(BINARY.PEEK[2])'); assert data[0][1] == b'\x00\x01\x02', data
assert data[0][0].endswith(b'~{3}'), data
typ, data = m.uid('FETCH', '2', '(FLAGS)'); assert b'\\Seen' not in data[0], data

# CREATE-SPECIAL-USE: one folder per use; \All cannot be created.
assert 'CREATE-SPECIAL-USE' in caps, caps
typ, data = m._simple_command('CREATE', 'Kept/2025 (USE (\\Archive))')
assert typ == 'NO' and b'[USEATTR]' in data[0], (typ, data)
typ, data = m.delete('Archive'); assert typ == 'OK', data
typ, data = m._simple_command('CREATE', 'Kept/2025 (USE (\\Archive))'); assert typ == 'OK', (typ, data)
typ, data = m._simple_command('CREATE', 'Everything (USE (\\All))'); assert typ == 'NO', (typ, data)
listed = names('Kept*')
assert listed == {'Kept': ['\\HasChildren'], 'Kept/2025': ['\\HasNoChildren', '\\Archive']}, listed
assert 'Everything' not in names()

# Junk: into it by APPEND and MOVE, out of it by MOVE (recorded for the spam trainer).
typ, data = m.append('Junk', None, None, b'Subject: spam\r\n\r\nbuy\r\n'); assert typ == 'OK', data
typ, data = m.uid('MOVE', '1', 'Junk'); assert typ == 'OK', data
m.select('Junk')
typ, data = m.uid('MOVE', '1', 'INBOX'); assert typ == 'OK', data
m.logout()
print('imaplib ok')
"#;
    let port = world.addresses().imap.port().to_string();
    let stdout = common::python(script, &[&port, USER, PASSWORD]).await;
    assert_eq!(stdout, "imaplib ok\n");

    // The deleted folder's message bodies lost their references and their bytes left the quota.
    let used: i64 = count(
        &world,
        "SELECT COALESCE(SUM(size), 0)::bigint FROM messages",
    )
    .await;
    assert_eq!(world.used_bytes(USER).await, used);
    let referenced = count(
        &world,
        "SELECT count(*) FROM blobs b WHERE refcount <> (SELECT count(*) FROM messages m WHERE m.blob_id = b.id)",
    )
    .await;
    assert_eq!(referenced, 0, "every blob's refcount equals its messages");
    // The appended spam went in and came out again; the moved message went in.
    let events: Vec<(String, i64)> =
        sqlx::query_as("SELECT direction, message_id FROM junk_events ORDER BY id")
            .fetch_all(world.pool())
            .await
            .unwrap();
    let directions: Vec<&str> = events.iter().map(|(d, _)| d.as_str()).collect();
    assert_eq!(directions, ["in", "in", "out"], "{events:?}");
    assert_eq!(events[0].1, events[2].1, "{events:?}");
    assert_ne!(events[0].1, events[1].1, "{events:?}");
    let spam_folder: String = sqlx::query_scalar(
        "SELECT f.name FROM messages m JOIN folders f ON f.id = m.folder_id WHERE m.id = $1",
    )
    .bind(events[0].1)
    .fetch_one(world.pool())
    .await
    .unwrap();
    assert_eq!(spam_folder, "INBOX");
    world.stop().await;
}

const BOB: &str = "bob@example.test";

/// An mbsync configuration: `stores` and `channels` written by the test, the common parts here.
fn mbsync_config(dir: &std::path::Path, port: u16, body: &str) -> std::path::PathBuf {
    let account = |name: &str, user: &str| {
        format!(
            "IMAPAccount {name}\nHost 127.0.0.1\nPort {port}\nUser {user}\nPass \"{PASSWORD}\"\n\
             SSLType None\nAuthMechs LOGIN\n\nIMAPStore {name}\nAccount {name}\n\n"
        )
    };
    let config = format!("{}{}{body}", account("alice", USER), account("bob", BOB));
    let path = dir.join("mbsyncrc");
    std::fs::write(&path, config).unwrap();
    path
}

/// Runs `mbsync -c config -a` and fails the test with its output unless it succeeds.
async fn mbsync(config: &std::path::Path) {
    let output = tokio::process::Command::new("mbsync")
        .arg("-c")
        .arg(config)
        .arg("-a")
        .output()
        .await
        .expect("mbsync runs (Debian package isync)");
    assert!(
        output.status.success(),
        "mbsync failed\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs curl (its IMAP client) and returns what it printed.
async fn curl(args: &[&str]) -> String {
    let output = tokio::process::Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "20"])
        .args(args)
        .output()
        .await
        .expect("curl runs");
    assert!(
        output.status.success(),
        "curl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8")
}

/// The files of a Maildir folder's `cur` and `new`, as (flags suffix, bytes).
fn maildir(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for sub in ["cur", "new"] {
        let Ok(entries) = std::fs::read_dir(dir.join(sub)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let flags = name.rsplit_once(":2,").map(|(_, f)| f.to_string());
            out.push((flags.unwrap_or_default(), std::fs::read(&path).unwrap()));
        }
    }
    out.sort();
    out
}

/// A message as mbsync stored it, without the `X-TUID:` line it adds.
fn without_tuid(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in raw.split_inclusive(|&b| b == b'\n') {
        if !line.starts_with(b"X-TUID: ") {
            out.extend_from_slice(line);
        }
    }
    out
}

/// Per folder of `address` (by name): its message bodies without X-TUID, sorted.
async fn account_bodies(world: &TestServer, address: &str) -> Vec<(String, Vec<Vec<u8>>)> {
    let store = &world.ctx().store;
    let id: i64 = sqlx::query_scalar("SELECT id FROM mailboxes WHERE address = $1")
        .bind(address)
        .fetch_one(world.pool())
        .await
        .unwrap();
    let mut out = Vec::new();
    for folder in store.folders(id).await.unwrap() {
        let mut bodies = Vec::new();
        for meta in store.messages(folder.id).await.unwrap() {
            bodies.push(without_tuid(&store.read_body(&meta).await.unwrap()));
        }
        bodies.sort();
        let name = if folder.special_use.as_deref() == Some("inbox") {
            "INBOX".to_string()
        } else {
            folder.name
        };
        out.push((name, bodies));
    }
    out.sort();
    out
}

/// Per folder of `address`: (name, messages, bytes, every message's flags sorted).
async fn account_digest(world: &TestServer, address: &str) -> Vec<(String, i64, i64, Vec<String>)> {
    sqlx::query_as(
        "SELECT CASE WHEN f.special_use = 'inbox' THEN 'INBOX' ELSE f.name END,
                count(m.id), COALESCE(SUM(m.size), 0)::bigint,
                COALESCE(array_agg(array_to_string(m.flags, ' ') ORDER BY m.size, array_to_string(m.flags, ' '))
                         FILTER (WHERE m.id IS NOT NULL), '{}')
           FROM folders f JOIN mailboxes b ON b.id = f.mailbox_id
           LEFT JOIN messages m ON m.folder_id = f.id
          WHERE b.address = $1 GROUP BY 1 ORDER BY 1",
    )
    .bind(address)
    .fetch_all(world.pool())
    .await
    .expect("digest")
}

#[tokio::test]
async fn mbsync_two_way_then_account_to_account() {
    let world = TestServer::builder()
        .uid_validity(1234567)
        .domain("example.test")
        .mailbox(USER, Some(PASSWORD))
        .mailbox(BOB, Some(PASSWORD))
        .folder(USER, "Sent", Some("sent"))
        .start()
        .await;
    world.deliver(USER, FIRST).await;
    world.deliver(USER, SECOND).await;
    let store = &world.ctx().store;
    let alice: i64 = count(
        &world,
        "SELECT id FROM mailboxes WHERE address = 'alice@example.test'",
    )
    .await;
    let nested = store.create_folder(alice, "Work/2024", None).await.unwrap();
    store
        .append(
            alice,
            nested.id,
            b"Subject: nested\r\n\r\nreport\r\n",
            &["\\Flagged".into(), "\\Seen".into()],
            None,
        )
        .await
        .unwrap();

    // Server to Maildir and back.
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("mail");
    std::fs::create_dir_all(&local).unwrap();
    let port = world.addresses().imap.port();
    let config = mbsync_config(
        dir.path(),
        port,
        &format!(
            "MaildirStore local\nPath {0}/\nInbox {0}/INBOX\nSubFolders Verbatim\n\n\
             Channel local\nFar :alice:\nNear :local:\nPatterns *\nCreate Both\nExpunge Both\n\
             SyncState *\nSync All\n",
            local.display()
        ),
    );
    mbsync(&config).await;
    let inbox = maildir(&local.join("INBOX"));
    assert_eq!(inbox.len(), 2, "{inbox:?}");
    let work = maildir(&local.join("Work/2024"));
    assert_eq!(work.len(), 1, "{work:?}");
    assert_eq!(work[0].0, "FS", "flags arrive as Maildir flags");
    // Maildir keeps LF line ends, and mbsync adds its X-TUID marker.
    assert_eq!(
        without_tuid(&work[0].1),
        b"Subject: nested\n\nreport\n",
        "{:?}",
        String::from_utf8_lossy(&work[0].1)
    );
    assert!(local.join("Sent").is_dir() && local.join("Work").is_dir());

    // Local changes: a new nested folder with a message, and a message flagged locally.
    let notes = local.join("Local/Notes");
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(notes.join(sub)).unwrap();
    }
    let note = b"Subject: note\r\n\r\nwritten offline\r\n";
    std::fs::write(notes.join("cur/1700000000.1.local:2,S"), note).unwrap();
    // An unseen message sits in new/; flagging it moves it to cur/ with its flags.
    let first = ["cur", "new"]
        .iter()
        .flat_map(|sub| std::fs::read_dir(local.join("INBOX").join(sub)).unwrap())
        .map(|e| e.unwrap().path())
        .find(|p| std::fs::read(p).unwrap().ends_with(b"Hello Alice.\n"))
        .expect("first message synced");
    let name = first.file_name().unwrap().to_string_lossy().into_owned();
    let flagged = match name.split_once(":2,") {
        Some((base, flags)) => format!("{base}:2,F{flags}"),
        None => format!("{name}:2,F"),
    };
    std::fs::rename(&first, local.join("INBOX/cur").join(flagged)).unwrap();
    mbsync(&config).await;
    let digest = account_digest(&world, USER).await;
    let by_name = |name: &str| digest.iter().find(|d| d.0 == name).cloned();
    let notes_row = by_name("Local/Notes").expect("folder created on the server");
    assert_eq!(notes_row.1, 1, "{notes_row:?}");
    let folder = store
        .folder(alice, "Local/Notes")
        .await
        .unwrap()
        .expect("folder");
    let uploaded = &store.messages(folder.id).await.unwrap()[0];
    let bytes = store.read_body(uploaded).await.unwrap();
    assert_eq!(
        without_tuid(&bytes),
        note,
        "{:?}",
        String::from_utf8_lossy(&bytes)
    );
    assert_eq!(notes_row.3, ["\\Seen"]);
    assert!(by_name("Local").is_some(), "the parent exists: {digest:?}");
    let inbox_row = by_name("INBOX").unwrap();
    assert!(
        inbox_row.3.iter().any(|f| f.contains("\\Flagged")),
        "the local flag reached the server: {inbox_row:?}"
    );

    // Alice's account into Bob's, server to server.
    let move_config = mbsync_config(
        dir.path(),
        port,
        "Channel move\nFar :alice:\nNear :bob:\nPatterns *\nCreate Near\nSync Pull\nSyncState *\n",
    );
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let with_state = std::fs::read_to_string(&move_config)
        .unwrap()
        .replace("SyncState *", &format!("SyncState {}/", state.display()));
    std::fs::write(&move_config, with_state).unwrap();
    mbsync(&move_config).await;
    let (from, to) = (
        account_digest(&world, USER).await,
        account_digest(&world, BOB).await,
    );
    let shape = |d: &[(String, i64, i64, Vec<String>)]| -> Vec<(String, i64, Vec<String>)> {
        d.iter()
            .map(|(name, count, _, flags)| (name.clone(), *count, flags.clone()))
            .collect()
    };
    assert_eq!(
        shape(&from),
        shape(&to),
        "every folder, message count and flag"
    );
    assert!(from.iter().map(|d| d.1).sum::<i64>() >= 4, "{from:?}");
    // The bytes, but for the X-TUID line mbsync adds to each message it uploads.
    assert_eq!(
        account_bodies(&world, USER).await,
        account_bodies(&world, BOB).await
    );

    // curl: the folder list, then one message by UID from a nested folder.
    let user = format!("{BOB}:{PASSWORD}");
    let list = curl(&["--user", &user, &format!("imap://127.0.0.1:{port}/")]).await;
    for line in ["\"/\" INBOX", "\"/\" Work/2024", "\"/\" Local/Notes"] {
        assert!(list.contains(line), "{line} in {list}");
    }
    let url = format!("imap://127.0.0.1:{port}/Local%2FNotes;UID=1");
    let fetched = curl(&["--user", &user, &url]).await;
    assert_eq!(without_tuid(fetched.as_bytes()), note);
    world.stop().await;
}

#[tokio::test]
async fn sort_and_thread_with_imaplib() {
    let world = start().await;
    let messages: [&[u8]; 5] = [
        b"From: Zed <zed@example.test>\r\nTo: b@example.test\r\nSubject: Lunch\r\nDate: Mon, 6 Jan 2025 12:00:00 +0000\r\n\r\nfive\r\n",
        b"From: amy@example.test\r\nTo: c@example.test\r\nCc: x@example.test\r\nSubject: Re: Lunch\r\nDate: Tue, 7 Jan 2025 12:00:00 +0000\r\n\r\na longer body\r\n",
        b"From: \"Bob\" <bob@example.test>\r\nTo: a@example.test\r\nSubject: =?utf-8?q?Meeting?=\r\nDate: Sun, 5 Jan 2025 12:00:00 +0000\r\n\r\nm\r\n",
        b"From: carl@example.test\r\nTo: d@example.test\r\nSubject: [team] Re: meeting\r\nDate: Wed, 8 Jan 2025 12:00:00 +0000\r\n\r\nthe longest body of them all\r\n",
        b"From: dan@example.test\r\nSubject: Fwd: Meeting (fwd)\r\nDate: Thu, 9 Jan 2025 09:00:00 +0100\r\n\r\nx\r\n",
    ];
    for raw in messages {
        world.deliver(USER, raw).await;
    }
    let script = r#"
import imaplib, sys
port, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]
m = imaplib.IMAP4('127.0.0.1', port)
m.login(user, password)
caps = m.capability()[1][0].decode().split()
assert 'SORT' in caps and 'THREAD=ORDEREDSUBJECT' in caps, caps
m.select('INBOX')
def sort(criteria, search='ALL'):
    typ, data = m.sort(criteria, 'UTF-8', search); assert typ == 'OK', data
    return data[0].decode()
assert sort('(ARRIVAL)') == '1 2 3 4 5', sort('(ARRIVAL)')
assert sort('(REVERSE ARRIVAL)') == '5 4 3 2 1'
assert sort('(DATE)') == '3 1 2 4 5', sort('(DATE)')
assert sort('(FROM)') == '2 3 4 5 1', sort('(FROM)')
assert sort('(TO)') == '5 3 1 2 4', sort('(TO)')
assert sort('(CC DATE)') == '3 1 4 5 2', sort('(CC DATE)')
assert sort('(SIZE)').split()[-1] == '4' and sort('(REVERSE SIZE)').split()[0] == '4'
assert sort('(SUBJECT DATE)') == '1 2 3 4 5', sort('(SUBJECT DATE)')
assert sort('(SUBJECT REVERSE DATE)') == '2 1 5 4 3', sort('(SUBJECT REVERSE DATE)')
assert sort('(DATE)', 'FROM bob') == '3', sort('(DATE)', 'FROM bob')
typ, data = m.uid('SORT', '(REVERSE DATE)', 'UTF-8', 'ALL'); assert data[0] == b'5 4 2 1 3', data
typ, data = m.thread('ORDEREDSUBJECT', 'UTF-8', 'ALL'); assert typ == 'OK', data
assert data[0] == b'(3 (4)(5))(1 2)', data
try:
    m.thread('REFERENCES', 'UTF-8', 'ALL'); sys.exit('THREAD=REFERENCES is not offered')
except imaplib.IMAP4.error as e:
    assert 'ORDEREDSUBJECT' in str(e), e
m.logout()
print('imaplib ok')
"#;
    let port = world.addresses().imap.port().to_string();
    let stdout = common::python(script, &[&port, USER, PASSWORD]).await;
    assert_eq!(stdout, "imaplib ok\n");
    world.stop().await;
}

//! The IMAP change feed across two server processes on one database and blob store: a
//! delivery through process 1 wakes an IDLE session on process 2, flag changes and expunges
//! on one reach the other (in IDLE and on NOOP, never as EXPUNGE after FETCH), and a killed
//! `LISTEN` connection loses no update. Clients are Python's `imaplib` and `smtplib`.

mod common;
mod idle_support;

use idle_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_cross_processes_in_idle_and_noop() {
    let world = start().await;
    let other = spawn(&world).await;
    let script = r#"
a = login(imap2)
run(a, 'SELECT INBOX')
tag = idle(a)
send('one')
lines, seconds = wait_for(a, r'^\* 1 EXISTS$')
report(step='idle_exists', lines=lines, seconds=seconds)
report(step='done', lines=done(a, tag))

b = login(imap1)
run(b, 'SELECT INBOX')
run(b, 'STORE 1 +FLAGS (\\Flagged)')
report(step='noop_flags', lines=run(a, 'NOOP'))

tag = idle(a)
run(b, 'STORE 1 +FLAGS (\\Deleted)')
run(b, 'EXPUNGE')
lines, _ = wait_for(a, r'^\* 1 EXPUNGE$')
report(step='idle_expunge', lines=lines + done(a, tag))

# RFC 3501 7.4.1: after FETCH the expunge is held back, shown on NOOP.
send('two')
send('three')
fetches = []
deadline = time.time() + 10
while True:
    got = run(a, 'FETCH 1:* (FLAGS)')
    fetches += got
    if '* 2 EXISTS' in fetches:
        break
    assert time.time() < deadline, fetches
    time.sleep(0.02)
run(b, 'NOOP')
run(b, 'STORE 1 +FLAGS (\\Deleted)')
run(b, 'EXPUNGE')
# Committed after the expunge: once process 2's session shows it, it has seen the expunge.
run(b, 'STORE 1 +FLAGS (\\Seen)')
while True:
    got = run(a, 'FETCH 1:* (FLAGS)')
    fetches += got
    if '* 2 FETCH (FLAGS (\\Seen))' in got:
        break
    assert time.time() < deadline, fetches
    time.sleep(0.02)
fetches += run(a, 'FETCH 1 (FLAGS)')
report(step='fetches', lines=fetches)
report(step='noop_expunge', lines=run(a, 'NOOP'))

tag = idle(a)
pause('kill')
send('four')
lines, _ = wait_for(a, r'^\* 2 EXISTS$')
report(step='after_kill', lines=lines + done(a, tag))
run(a, 'LOGOUT')
run(b, 'LOGOUT')
"#;
    let mut client = Client::start(&world, &other, script);

    let step = client.next().await;
    assert_eq!(step["step"], "idle_exists");
    let seconds = step["seconds"].as_f64().expect("seconds");
    eprintln!("delivery on process 1 to EXISTS in IDLE on process 2: {seconds:.3} s");
    assert!(seconds < 10.0);

    let step = client.next().await;
    assert_eq!(step["step"], "done");
    assert!(
        step["lines"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()
            .as_str()
            .unwrap()
            .ends_with("OK IDLE terminated"),
        "{step}"
    );

    let step = client.next().await;
    assert_eq!(step["step"], "noop_flags");
    let lines = strings(&step);
    assert!(
        lines.contains(&"* 1 FETCH (FLAGS (\\Flagged))".to_string()),
        "flag change on process 1 reaches NOOP on process 2: {lines:?}"
    );

    let step = client.next().await;
    assert_eq!(step["step"], "idle_expunge");
    let lines = strings(&step);
    assert!(
        lines.contains(&"* 1 EXPUNGE".to_string()),
        "EXPUNGE in IDLE: {lines:?}"
    );

    let step = client.next().await;
    assert_eq!(step["step"], "fetches");
    let lines = strings(&step);
    assert!(
        lines.iter().all(|l| !l.ends_with("EXPUNGE")),
        "no EXPUNGE after FETCH (RFC 3501 §7.4.1): {lines:?}"
    );
    assert!(lines.contains(&"* 2 EXISTS".to_string()), "{lines:?}");
    let step = client.next().await;
    assert_eq!(step["step"], "noop_expunge");
    let lines = strings(&step);
    assert_eq!(
        lines.first().map(String::as_str),
        Some("* 1 EXPUNGE"),
        "{lines:?}"
    );

    // The LISTEN connections of both processes are cut while process 2's session idles.
    let step = client.next().await;
    assert_eq!(step["pause"], "kill");
    kill_listeners(&world, 2).await;
    client.resume().await;
    let step = client.next().await;
    assert_eq!(step["step"], "after_kill");
    let lines = strings(&step);
    assert!(lines.contains(&"* 2 EXISTS".to_string()), "{lines:?}");
    client.finish().await;
    world.stop().await;
}

fn strings(step: &serde_json::Value) -> Vec<String> {
    step["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|l| l.as_str().expect("string").to_string())
        .collect()
}

/// CONDSTORE MODSEQs are the same through both processes, and QRESYNC after a disconnect
/// reports exactly the UIDs expunged meanwhile (`VANISHED (EARLIER)`) and the changed
/// messages, and nothing else; after the expunged record is pruned the answer is the full one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn condstore_and_qresync_across_processes() {
    let world = start().await;
    let other = spawn(&world).await;
    let script = r#"
def code(lines, name):
    return int(re.search(name + r' (\d+)', ' '.join(lines)).group(1))
def modseqs(lines):
    return sorted(l for l in lines if re.match(r'^\* \d+ FETCH \(UID \d+ MODSEQ \(\d+\)\)$', l))
for i in range(1, 6):
    send(f'm{i}')
a = login(imap1)
b = login(imap2)
report(step='enable', lines=run(a, 'ENABLE QRESYNC') + run(b, 'ENABLE QRESYNC'))
run(a, 'SELECT INBOX (CONDSTORE)')
run(a, 'UID STORE 2 +FLAGS (\\Seen)')
run(b, 'SELECT INBOX (CONDSTORE)')
run(a, 'NOOP')
report(step='modseqs', a=modseqs(run(a, 'FETCH 1:* (UID MODSEQ)')),
       b=modseqs(run(b, 'FETCH 1:* (UID MODSEQ)')))
run(a, 'UID STORE 5 +FLAGS (\\Answered)')
noop = run(b, 'NOOP')
report(step='noop_modseq', b=noop, a=run(a, 'UID FETCH 5 (MODSEQ)'),
       cond=run(a, 'UID STORE 2,5 (UNCHANGEDSINCE 1) +FLAGS (\\Flagged)'))

selected = run(b, 'SELECT INBOX')
validity, highest = code(selected, 'UIDVALIDITY'), code(selected, 'HIGHESTMODSEQ')
run(b, 'LOGOUT')
# Meanwhile, on process 1: two expunged, one flagged, one delivered.
run(a, 'UID STORE 1,3 +FLAGS (\\Deleted)')
run(a, 'UID EXPUNGE 1:3')
run(a, 'UID STORE 4 +FLAGS (\\Flagged)')
send('m6')
b = login(imap2)
run(b, 'ENABLE QRESYNC')
report(step='qresync', lines=run(b, f'SELECT INBOX (QRESYNC ({validity} {highest} 1:5))'))
report(step='changedsince', lines=run(b, f'UID FETCH 1:* (FLAGS) (CHANGEDSINCE {highest} VANISHED)'))
run(b, 'LOGOUT')
pause('prune')
b = login(imap2)
run(b, 'ENABLE QRESYNC')
report(step='pruned', lines=run(b, f'SELECT INBOX (QRESYNC ({validity} {highest}))'))
run(b, 'LOGOUT')
run(a, 'LOGOUT')
"#;
    let mut client = Client::start(&world, &other, script);

    let step = client.next().await;
    let lines = strings(&step);
    assert_eq!(
        lines.iter().filter(|l| *l == "* ENABLED QRESYNC").count(),
        2,
        "{lines:?}"
    );

    let step = client.next().await;
    assert_eq!(step["step"], "modseqs");
    assert_eq!(step["a"].as_array().unwrap().len(), 5, "{step}");
    assert_eq!(step["a"], step["b"], "MODSEQs agree between the processes");

    let step = client.next().await;
    let b = string_list(&step["b"]);
    let a = string_list(&step["a"]);
    let modseq_a = a
        .iter()
        .find(|l| l.starts_with("* 5 FETCH"))
        .and_then(|l| l.split("MODSEQ (").nth(1)?.split(')').next())
        .expect("MODSEQ on process 1");
    let pushed = b
        .iter()
        .find(|l| l.starts_with("* 5 FETCH (FLAGS (\\Answered)"))
        .unwrap_or_else(|| panic!("flag change on process 2: {b:?}"));
    assert!(
        pushed.contains(&format!("MODSEQ ({modseq_a}")),
        "{pushed} vs {a:?}"
    );

    let step = client.next().await;
    assert_eq!(step["step"], "qresync");
    let lines = strings(&step);
    let vanished: Vec<&String> = lines.iter().filter(|l| l.contains("VANISHED")).collect();
    assert_eq!(vanished, ["* VANISHED (EARLIER) 1,3"], "{lines:?}");
    let fetched: Vec<&String> = lines.iter().filter(|l| l.contains(" FETCH ")).collect();
    // uid 4 flagged and uid 6 new since; uid 5's flag changed before the client's MODSEQ.
    assert_eq!(fetched.len(), 2, "{lines:?}");
    assert!(
        fetched[0].starts_with("* 2 FETCH (FLAGS (\\Flagged) UID 4 MODSEQ"),
        "{lines:?}"
    );
    assert!(
        fetched[1].starts_with("* 4 FETCH (FLAGS () UID 6 MODSEQ"),
        "{lines:?}"
    );
    assert!(lines.contains(&"* 4 EXISTS".to_string()), "{lines:?}");

    let step = client.next().await;
    let lines = strings(&step);
    assert_eq!(lines[0], "* VANISHED (EARLIER) 1,3", "{lines:?}");
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("* ") && l.contains(" FETCH ("))
            .count(),
        2,
        "{lines:?}"
    );

    // Pruned record: the answer from the same MODSEQ names every UID that is gone.
    let step = client.next().await;
    assert_eq!(step["pause"], "prune");
    let pruned = world
        .ctx()
        .store
        .prune_expunged(std::time::Duration::ZERO)
        .await
        .expect("prune");
    assert_eq!(pruned, 2);
    client.resume().await;
    let step = client.next().await;
    let lines = strings(&step);
    let vanished: Vec<&String> = lines.iter().filter(|l| l.contains("VANISHED")).collect();
    assert_eq!(vanished, ["* VANISHED (EARLIER) 1,3"], "{lines:?}");
    client.finish().await;
    world.stop().await;
}

fn string_list(value: &serde_json::Value) -> Vec<String> {
    value
        .as_array()
        .expect("list")
        .iter()
        .map(|l| l.as_str().expect("string").to_string())
        .collect()
}

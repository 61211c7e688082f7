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

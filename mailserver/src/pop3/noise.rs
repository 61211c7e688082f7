//! Noise: thousands of random POP3 sessions — real commands mixed with random bytes, logins
//! that succeed, fail or find the store down — must never panic and must answer only
//! well-formed replies. A cheap, deterministic stand-in for a fuzzer in every `cargo test`.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::session::{Action, LoginOutcome, Session};

const LINES: &[&[u8]] = &[
    b"USER alice@example.test",
    b"PASS secret",
    b"PASS",
    b"AUTH PLAIN",
    b"AUTH PLAIN AGFsaWNlAHNlY3JldA==",
    b"AUTH PLAIN =",
    b"AUTH LOGIN",
    b"AUTH LOGIN YWxpY2U=",
    b"AUTH SCRAM-SHA-256",
    // n,,n=user,r=abc
    b"AUTH SCRAM-SHA-256 biwsbj11c2VyLHI9YWJj",
    b"Yz1iaXdzLHI9YWJj,cD1BQUFB",
    b"YWxpY2U=",
    b"c2VjcmV0",
    b"*",
    b"CAPA",
    b"STAT",
    b"LIST",
    b"LIST 1",
    b"LIST 0",
    b"LIST 99999999999999999999",
    b"UIDL",
    b"UIDL 2",
    b"RETR 1",
    b"TOP 1 0",
    b"TOP 1 -1",
    b"DELE 1",
    b"DELE 3",
    b"RSET",
    b"NOOP",
    b"QUIT",
    b"",
    b" ",
    b"\xff\xfe",
];

/// A reply is `+OK`, `-ERR` or a SASL `+ ` line, ends in CRLF, and a multi-line reply ends
/// with the terminating `.` line.
fn check_reply(bytes: &[u8], context: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    assert!(
        text.starts_with("+OK") || text.starts_with("-ERR") || text.starts_with("+ "),
        "{text:?} after {context:?}"
    );
    assert!(text.ends_with("\r\n"), "{text:?} after {context:?}");
    let lines = text.split_terminator("\r\n").count();
    if lines > 1 {
        assert!(text.ends_with("\r\n.\r\n"), "{text:?} after {context:?}");
    }
    // No bare CR or LF: a client must never see a line end we did not mean.
    let bare = bytes.iter().enumerate().any(|(i, &b)| {
        (b == b'\r' && bytes.get(i + 1) != Some(&b'\n'))
            || (b == b'\n' && (i == 0 || bytes[i - 1] != b'\r'))
    });
    assert!(!bare, "{text:?} after {context:?}");
}

fn random_line(rng: &mut StdRng) -> Vec<u8> {
    if rng.gen_bool(0.85) {
        LINES[rng.gen_range(0..LINES.len())].to_vec()
    } else {
        let n = rng.gen_range(0..80);
        (0..n).map(|_| rng.r#gen::<u8>()).collect()
    }
}

#[test]
fn random_sessions_get_well_formed_replies() {
    let mut rng = StdRng::seed_from_u64(0x9093);
    for _ in 0..2000 {
        let mut session = Session::new("mx.test");
        let mut exchange = None;
        check_reply(&session.greeting(), b"greeting");
        for _ in 0..rng.gen_range(1..40) {
            let line = random_line(&mut rng);
            let mut action = if rng.gen_bool(0.02) {
                session.line_too_long()
            } else {
                session.line(&line)
            };
            loop {
                action = match action {
                    Action::Reply(bytes) => {
                        check_reply(&bytes, &line);
                        break;
                    }
                    Action::Close(bytes) => {
                        check_reply(&bytes, &line);
                        session = Session::new("mx.test");
                        break;
                    }
                    Action::Login(_) => session.login_done(match rng.gen_range(0..3) {
                        0 => LoginOutcome::Opened(crate::fuzzing::maildrop([100, 200, 300])),
                        1 => LoginOutcome::Rejected,
                        _ => LoginOutcome::Unavailable,
                    }),
                    // The real SASL engine, with the fuzz target's stand-in for the service.
                    Action::Sasl(input) => {
                        crate::fuzzing::sasl_input(&mut session, &mut exchange, input, b"body")
                    }
                    Action::Retrieve { message, .. } => {
                        assert!((1..=3).contains(&message.uid), "{message:?}");
                        break;
                    }
                    Action::Update { uids, .. } => {
                        assert!(uids.iter().all(|uid| (1..=3).contains(uid)), "{uids:?}");
                        session.update_done(if rng.gen_bool(0.5) {
                            Ok(uids.len())
                        } else {
                            Err(())
                        })
                    }
                };
            }
        }
    }
}

#[test]
fn the_checker_rejects_malformed_replies() {
    for bad in [
        &b"OK\r\n"[..],
        b"+OK no line end",
        b"+OK 2 messages\r\n1 100\r\n",
        b"-ERR bare\nline\r\n",
    ] {
        let caught = std::panic::catch_unwind(|| check_reply(bad, b""));
        assert!(caught.is_err(), "{bad:?}");
    }
    check_reply(b"+OK 1 messages\r\n1 100\r\n.\r\n", b"");
}

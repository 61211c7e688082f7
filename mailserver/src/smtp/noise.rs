//! Noise: thousands of random sessions — real command fragments mixed with random bytes, fed
//! in random chunks — must never panic, must answer only well-formed replies, and must hand
//! over only messages that end in CRLF. A cheap, deterministic stand-in for a fuzzer that runs
//! in every `cargo test`.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::session::tests::{limits, run_chunked};

const FRAGMENTS: &[&[u8]] = &[
    b"EHLO c.test\r\n",
    b"HELO c.test\r\n",
    b"MAIL FROM:<a@b.test>\r\n",
    b"MAIL FROM:<a@b.test> SIZE=99999999\r\n",
    b"MAIL FROM:<> BODY=8BITMIME SMTPUTF8\r\n",
    b"RCPT TO:<alice@example.test>\r\n",
    b"RCPT TO:<nobody@example.test>\r\n",
    b"RCPT TO:<x@elsewhere.test>\r\n",
    b"RCPT TO:<down@example.test>\r\n",
    b"DATA\r\n",
    b"BDAT 10 LAST\r\n",
    b"RSET\r\n",
    b"NOOP\r\n",
    b"VRFY alice\r\n",
    b"QUIT\r\n",
    b"Subject: x\r\n\r\nbody\r\n",
    b".\r\n",
    b"\r\n.\r\n",
    b"\n.\n",
    b"\r.\r",
    b"..leading dot\r\n",
    b"\xff\xfe\x00\x80",
    b"\r\n",
    b"\n",
    b"MAIL FROM:<\xc3\xa9@b.test>\r\n",
];

fn random_session(rng: &mut StdRng) -> Vec<u8> {
    crate::noise::random_input(rng, FRAGMENTS, 40, 300)
}

/// Every reply line is `ddd` then space or hyphen, then text, then CRLF.
fn check_transcript(transcript: &str, input: &[u8]) {
    let text = transcript.replace("<close>", "");
    assert!(text.ends_with("\r\n") || text.is_empty(), "{input:?}");
    for line in text.split_terminator("\r\n") {
        let bytes = line.as_bytes();
        assert!(
            bytes.len() >= 4
                && bytes[..3].iter().all(u8::is_ascii_digit)
                && matches!(bytes[3], b' ' | b'-')
                && !line.contains(['\r', '\n']),
            "malformed reply line {line:?} for input {input:?}"
        );
    }
}

#[test]
fn random_sessions_get_well_formed_replies() {
    let mut rng = StdRng::seed_from_u64(0x5eed_5a17);
    for _ in 0..3000 {
        let input = random_session(&mut rng);
        let chunk = rng.gen_range(1..64);
        let store_ok = rng.gen_bool(0.8);
        let outcome = run_chunked(&input, chunk, limits(), store_ok);
        assert!(outcome.transcript.starts_with("220 "), "{input:?}");
        check_transcript(&outcome.transcript, &input);
        for delivery in &outcome.deliveries {
            assert!(delivery.message.bytes().ends_with(b"\r\n"), "{input:?}");
            assert!(!delivery.recipients.is_empty(), "{input:?}");
        }
    }
}

#[test]
fn the_checker_rejects_malformed_replies() {
    let caught = std::panic::catch_unwind(|| check_transcript("250 ok\r\nnot a reply\r\n", b""));
    assert!(caught.is_err());
    check_transcript("250-a\r\n250 b\r\n<close>", b"");
}

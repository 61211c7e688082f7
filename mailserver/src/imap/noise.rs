//! Noise: hundreds of random IMAP conversations — real commands, literals and random bytes —
//! against a server whose database is down. The connection must never panic, must end, and
//! every line it writes must be an untagged (`* `), continuation (`+ `) or tagged response.

use std::net::SocketAddr;
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::session::tests::offline_context;

const FRAGMENTS: &[&[u8]] = &[
    b"a1 CAPABILITY\r\n",
    b"a2 NOOP\r\n",
    b"a3 ID NIL\r\n",
    b"a4 SELECT INBOX\r\n",
    b"a5 FETCH 1:* (FLAGS BODY[])\r\n",
    b"a6 UID STORE 1 +FLAGS (\\Seen)\r\n",
    b"a7 AUTHENTICATE PLAIN\r\n",
    b"*\r\n",
    b"a8 AUTHENTICATE PLAIN =\r\n",
    b"a9 LOGIN {5}\r\n",
    b"alice {6+}\r\nsecret\r\n",
    b"b1 SEARCH UNSEEN\r\n",
    b"b2 STARTTLS\r\n",
    b"b3 IDLE\r\n",
    b"DONE\r\n",
    b"b4 LIST \"\" *\r\n",
    b"b5 EXPUNGE\r\n",
    b"{4294967295}\r\n",
    b"\r\n",
    b"\n",
    b"b6 LOGOUT\r\n",
];

fn random_conversation(rng: &mut StdRng) -> Vec<u8> {
    crate::noise::random_input(rng, FRAGMENTS, 20, 200)
}

fn check_output(output: &[u8], input: &[u8]) {
    let text = String::from_utf8_lossy(output);
    assert!(text.starts_with("* OK "), "{text:?} for {input:?}");
    for line in text.split_terminator("\r\n") {
        let tagged = line.split_once(' ').is_some_and(|(tag, rest)| {
            !tag.is_empty()
                && ["OK", "NO", "BAD", "BYE", "PREAUTH"]
                    .iter()
                    .any(|status| rest.starts_with(status))
        });
        assert!(
            line.starts_with("* ") || line.starts_with("+ ") || tagged,
            "bad line {line:?} in {text:?} for {input:?}"
        );
    }
}

#[tokio::test]
async fn random_conversations_get_well_formed_responses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ctx = offline_context(dir.path());
    let mut rng = StdRng::seed_from_u64(0x1a4a9);
    // Conversations run side by side: most of their time is spent waiting (login delays,
    // the unreachable database), not computing.
    let mut conversations = tokio::task::JoinSet::new();
    for _ in 0..400 {
        let input = random_conversation(&mut rng);
        let ctx = ctx.clone();
        conversations.spawn(async move {
            let (mut client, server) = tokio::io::duplex(1 << 20);
            let peer: SocketAddr = "127.0.0.1:5555".parse().expect("address");
            let task = tokio::spawn(crate::imap::handle(server, peer, ctx));
            client.write_all(&input).await.expect("write");
            client.shutdown().await.expect("shutdown");
            let mut out = Vec::new();
            tokio::time::timeout(Duration::from_secs(30), client.read_to_end(&mut out))
                .await
                .unwrap_or_else(|_| panic!("no end of output for {input:?}"))
                .expect("read");
            // An I/O error ends a connection; a panic would surface here as a JoinError.
            let _ = task.await.unwrap_or_else(|e| panic!("{e} for {input:?}"));
            check_output(&out, &input);
        });
    }
    while let Some(done) = conversations.join_next().await {
        done.expect("conversation");
    }
}

#[test]
fn the_checker_rejects_malformed_lines() {
    let caught = std::panic::catch_unwind(|| check_output(b"* OK hi\r\ngarbage\r\n", b""));
    assert!(caught.is_err());
    check_output(b"* OK hi\r\n+ go on\r\na1 NO [UNAVAILABLE] x\r\n", b"");
}

//! The Rspamd client against a real Rspamd (with redis): GTUBE is rejected, a plain message gets
//! no action with its symbols, headers render, the controller learns and counts.

use std::time::Duration;

use bytes::Bytes;
use mail_testkit::rspamd;
use mailserver::filters::rspamd::{Action, Envelope, RspamdClient, RspamdConfig, RspamdError};

fn client() -> RspamdClient {
    let r = rspamd();
    let mut config = RspamdConfig::new(r.scan_address(), r.controller_address());
    config.password = Some(r.password().to_string());
    config.timeout = Duration::from_secs(30);
    RspamdClient::new(config)
}

fn envelope() -> Envelope {
    Envelope {
        ip: Some("192.0.2.10".parse().unwrap()),
        helo: Some("client.example.test".into()),
        hostname: Some("mx.example.test".into()),
        from: Some("alice@example.test".into()),
        rcpt: vec!["bob@example.test".into(), "carol@example.test".into()],
        user: None,
        queue_id: Some("Q123".into()),
    }
}

const GTUBE: &str = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";

#[tokio::test]
async fn gtube_is_rejected() {
    let c = client();
    let msg = format!(
        "From: alice@example.test\r\nTo: bob@example.test\r\nSubject: gtube\r\n\
         Message-ID: <gtube@example.test>\r\nDate: Wed, 2 Dec 2026 10:00:00 +0000\r\n\r\n{GTUBE}\r\n"
    );
    let size = msg.len() as u64;
    let r = c
        .check(&envelope(), std::io::Cursor::new(msg.into_bytes()), size)
        .await
        .expect("check");
    assert_eq!(r.action, Action::Reject, "{r:?}");
    assert!(r.score >= r.required_score, "{r:?}");
    assert!(r.symbols.iter().any(|s| s.name == "GTUBE"), "{r:?}");
    let headers = r.headers();
    assert!(headers[1].1.starts_with("Yes, score="), "{headers:?}");
    assert!(headers[0].1.contains("GTUBE("), "{headers:?}");
}

#[tokio::test]
async fn a_plain_message_gets_no_action_and_symbols() {
    let c = client();
    let msg = "From: Alice <alice@example.test>\r\nTo: bob@example.test\r\nSubject: lunch\r\n\
               Message-ID: <lunch-1@example.test>\r\nDate: Wed, 2 Dec 2026 10:00:00 +0000\r\n\
               MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
               Hi Bob, shall we have lunch on Friday at the usual place? Alice\r\n";
    let r = c
        .check(
            &envelope(),
            std::io::Cursor::new(msg.as_bytes().to_vec()),
            msg.len() as u64,
        )
        .await
        .expect("check");
    assert_eq!(r.action, Action::NoAction, "{r:?}");
    assert!(!r.symbols.is_empty(), "{r:?}");
    assert!(r.score < r.required_score);
    let headers = r.headers();
    assert_eq!(headers[0].0, "X-Spamd-Result");
    assert!(headers[0].1.starts_with("default: False ["), "{headers:?}");
    assert!(headers[1].1.starts_with("No, score="), "{headers:?}");
}

#[tokio::test]
async fn oversized_and_short_bodies_are_errors() {
    let r = rspamd();
    let mut config = RspamdConfig::new(r.scan_address(), r.controller_address());
    config.max_size = 100;
    let c = RspamdClient::new(config);
    let body = vec![b'a'; 200];
    let err = c
        .check(&envelope(), std::io::Cursor::new(body), 200)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RspamdError::TooLarge {
                size: 200,
                limit: 100
            }
        ),
        "{err}"
    );
    // A reader shorter than the announced size is not sent as a short message.
    let err = c
        .check(&envelope(), std::io::Cursor::new(b"abc".to_vec()), 50)
        .await
        .unwrap_err();
    assert!(
        matches!(err, RspamdError::Body(_) | RspamdError::Http(_)),
        "{err}"
    );
}

#[tokio::test]
async fn a_dead_rspamd_is_an_error_and_opens_the_breaker() {
    let port = mail_localpg::free_port().unwrap();
    let mut config = RspamdConfig::new(format!("127.0.0.1:{port}"), format!("127.0.0.1:{port}"));
    config.breaker_threshold = 2;
    config.timeout = Duration::from_secs(2);
    let c = RspamdClient::new(config);
    for _ in 0..2 {
        let err = c
            .check(&envelope(), std::io::Cursor::new(b"x".to_vec()), 1)
            .await
            .unwrap_err();
        assert!(matches!(err, RspamdError::Connect(_)), "{err}");
    }
    assert!(c.breaker().is_open());
    let err = c
        .check(&envelope(), std::io::Cursor::new(b"x".to_vec()), 1)
        .await
        .unwrap_err();
    assert!(matches!(err, RspamdError::CircuitOpen), "{err}");
}

#[tokio::test]
async fn learn_spam_counts_in_the_statistics() {
    let c = client();
    let before = c.stat().await.expect("stat");
    let msg = "From: promo@deals.example\r\nTo: bob@example.test\r\nSubject: cheap watches now\r\n\
               Message-ID: <promo-learn-1@deals.example>\r\nDate: Wed, 2 Dec 2026 10:00:00 +0000\r\n\r\n\
               Buy cheap replica watches today, huge discount, limited offer, click the link \
               below to claim your exclusive prize and free shipping worldwide, act now before \
               the offer expires, best prices guaranteed on luxury brands.\r\n";
    c.learn_spam(Bytes::from_static(msg.as_bytes()))
        .await
        .expect("learn_spam");
    let after = c.stat().await.expect("stat");
    assert_eq!(after.learned, before.learned + 1, "{before:?} -> {after:?}");
    // Learning the same message again is no error (learning may be retried).
    c.learn_spam(Bytes::from_static(msg.as_bytes()))
        .await
        .expect("learn_spam again");
    // A wrong password is refused.
    let r = rspamd();
    let mut config = RspamdConfig::new(r.scan_address(), r.controller_address());
    config.password = Some("wrong".into());
    let err = RspamdClient::new(config).stat().await.unwrap_err();
    assert!(
        matches!(
            err,
            RspamdError::Status {
                status: 401 | 403,
                ..
            }
        ),
        "{err}"
    );
}

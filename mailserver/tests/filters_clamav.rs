//! The clamd client against a real clamd (local EICAR signatures): clean, infected (plain and
//! base64 inside a MIME attachment), over the size limit, and clamd stopped.

use std::time::Duration;

use base64::Engine;
use mail_testkit::{EICAR, clamd};
use mailserver::filters::clamav::{
    ClamdAddress, ClamdClient, ClamdConfig, ClamdError, ScanOutcome,
};
use mailserver::filters::policy::{FailureDecision, FailurePolicy};

fn client(address: String) -> ClamdClient {
    let mut config = ClamdConfig::new(ClamdAddress::Tcp(address));
    config.timeout = Duration::from_secs(10);
    config.stream_max_length = 1024 * 1024;
    config.chunk_size = 4096;
    config.breaker_threshold = 2;
    config.breaker_open_for = Duration::from_secs(60);
    ClamdClient::new(config)
}

async fn scan(c: &ClamdClient, body: &[u8]) -> ScanOutcome {
    c.scan(body, body.len() as u64).await
}

const CLEAN: &str =
    "From: a@example.test\r\nTo: b@example.test\r\nSubject: hello\r\n\r\nJust a note.\r\n";

#[tokio::test]
async fn ping_and_clean_message() {
    let c = client(clamd().address());
    c.ping().await.expect("PONG");
    assert_eq!(scan(&c, CLEAN.as_bytes()).await, ScanOutcome::Clean);
    // Over several chunks, still clean.
    let big = format!("{CLEAN}{}", "x".repeat(200_000));
    assert_eq!(scan(&c, big.as_bytes()).await, ScanOutcome::Clean);
}

#[tokio::test]
async fn eicar_plain_is_infected() {
    let c = client(clamd().address());
    let msg = format!("Subject: test\r\n\r\n{EICAR}\r\n");
    match scan(&c, msg.as_bytes()).await {
        ScanOutcome::Infected(name) => assert!(name.contains("EICAR"), "{name}"),
        other => panic!("expected Infected, got {other:?}"),
    }
}

#[tokio::test]
async fn eicar_base64_in_a_mime_attachment_is_infected() {
    let c = client(clamd().address());
    let b64 = base64::engine::general_purpose::STANDARD.encode(EICAR);
    let msg = format!(
        "From: a@example.test\r\nTo: b@example.test\r\nSubject: attached\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"XYZ\"\r\n\r\n--XYZ\r\n\
         Content-Type: text/plain\r\n\r\nsee attachment\r\n--XYZ\r\n\
         Content-Type: application/octet-stream; name=\"eicar.com\"\r\n\
         Content-Transfer-Encoding: base64\r\n\
         Content-Disposition: attachment; filename=\"eicar.com\"\r\n\r\n{b64}\r\n--XYZ--\r\n"
    );
    assert!(
        !msg.contains("EICAR-STANDARD"),
        "only the encoded form is sent"
    );
    match scan(&c, msg.as_bytes()).await {
        ScanOutcome::Infected(name) => assert!(name.contains("EICAR"), "{name}"),
        other => panic!("expected Infected, got {other:?}"),
    }
}

#[tokio::test]
async fn a_body_over_the_limit_gets_the_policy_answer() {
    // Our limit above clamd's (1 MB): clamd's own "size limit exceeded" answer is read.
    let mut config = ClamdConfig::new(ClamdAddress::Tcp(clamd().address()));
    config.stream_max_length = 8 * 1024 * 1024;
    let lenient = ClamdClient::new(config);
    let body = vec![b'a'; 2 * 1024 * 1024];
    let outcome = scan(&lenient, &body).await;
    let ScanOutcome::Error(error @ ClamdError::TooLarge { .. }) = outcome else {
        panic!("expected TooLarge from clamd, got {outcome:?}");
    };
    // Our limit at clamd's: the body is not sent at all.
    let strict = client(clamd().address());
    assert_eq!(
        scan(&strict, &body).await,
        ScanOutcome::Error(ClamdError::TooLarge {
            size: body.len() as u64,
            limit: 1024 * 1024
        })
    );
    assert_eq!(
        FailurePolicy::Tempfail.decide("clamav", &error.to_string()),
        FailureDecision::Tempfail
    );
    let FailureDecision::Accept { header } =
        FailurePolicy::AcceptWithHeader.decide("clamav", &error.to_string())
    else {
        panic!("accept-with-header accepts");
    };
    assert_eq!(header.0, "X-Filter-Skipped");
    assert!(header.1.starts_with("clamav; ") && header.1.contains("over the scan limit"));
    // Either way the breaker stays closed: clamd answered.
    assert!(!strict.breaker().is_open() && !lenient.breaker().is_open());
}

#[tokio::test]
async fn clamd_stopped_gives_error_and_opens_the_breaker() {
    let mut own = mail_testkit::Clamd::start(1024 * 1024).expect("own clamd");
    let c = client(own.address());
    assert_eq!(scan(&c, CLEAN.as_bytes()).await, ScanOutcome::Clean);
    own.stop();
    for _ in 0..2 {
        let outcome = scan(&c, CLEAN.as_bytes()).await;
        assert!(
            matches!(
                outcome,
                ScanOutcome::Error(ClamdError::Connect(_) | ClamdError::Io(_))
            ),
            "{outcome:?}"
        );
    }
    assert!(c.breaker().is_open());
    let started = std::time::Instant::now();
    assert_eq!(
        scan(&c, CLEAN.as_bytes()).await,
        ScanOutcome::Error(ClamdError::CircuitOpen)
    );
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "an open breaker does not call"
    );
    let metrics = mailserver::metrics::encode();
    let failures = mailserver::metrics::sample(
        &metrics,
        "mailserver_filter_failures_total{filter=\"clamav\"}",
    )
    .unwrap_or(0.0);
    assert!(failures >= 3.0, "{failures}\n{metrics}");
}

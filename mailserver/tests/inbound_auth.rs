//! Inbound sender authentication end to end: BIND (`mail_testkit::Named`) serves the test
//! domains' SPF, DKIM and DMARC records; Python's smtplib sends from different loopback source
//! addresses, dkimpy signs; the `Authentication-Results` header is read back over IMAP.
//!
//! Zones: `spf.test` allows 127.0.0.2 (`-all`), `soft.test` allows 127.0.0.2 (`~all`),
//! `signed.test` publishes the DKIM key `sel`, `reject.test` and `quar.test` allow 127.0.0.2
//! under DMARC `p=reject` and `p=quarantine`.

mod common;

use std::time::Duration;

use common::{TestServer, python};
use mail_testkit::Named;
use mailserver::pipeline::PipelineSettings;

const PASSWORD: &str = "secret";

/// An RSA key for dkimpy (PEM) and its public half as DKIM TXT strings of at most 255 bytes.
fn dkim_key(dir: &std::path::Path) -> (std::path::PathBuf, String) {
    let key = dir.join("dkim.pem");
    let status = std::process::Command::new("openssl")
        .args(["genrsa", "-traditional", "-out"])
        .arg(&key)
        .arg("2048")
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(status.success(), "openssl genrsa");
    let public = std::process::Command::new("openssl")
        .args(["rsa", "-pubout", "-outform", "DER", "-in"])
        .arg(&key)
        .stderr(std::process::Stdio::null())
        .output()
        .expect("openssl rsa");
    assert!(public.status.success(), "openssl rsa -pubout");
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&public.stdout);
    let record = format!("v=DKIM1; k=rsa; p={b64}");
    let strings: Vec<String> = record
        .as_bytes()
        .chunks(200)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect();
    (key, strings.join(" "))
}

fn zones(dkim_txt: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "spf.test",
            "@ IN TXT \"v=spf1 ip4:127.0.0.2 -all\"\n".to_string(),
        ),
        (
            "soft.test",
            "@ IN TXT \"v=spf1 ip4:127.0.0.2 ~all\"\n".to_string(),
        ),
        (
            "signed.test",
            format!("@ IN TXT \"v=spf1 -all\"\nsel._domainkey IN TXT ( {dkim_txt} )\n"),
        ),
        (
            "reject.test",
            "@ IN TXT \"v=spf1 ip4:127.0.0.2 -all\"\n_dmarc IN TXT \"v=DMARC1; p=reject\"\n"
                .to_string(),
        ),
        (
            "quar.test",
            "@ IN TXT \"v=spf1 ip4:127.0.0.2 -all\"\n_dmarc IN TXT \"v=DMARC1; p=quarantine\"\n"
                .to_string(),
        ),
    ]
}

async fn server(dns: std::net::SocketAddr, timeout: Duration) -> TestServer {
    TestServer::builder()
        .hostname("mx.example.test")
        .domain("example.test")
        .mailbox("alice@example.test", Some(PASSWORD))
        .folder("alice@example.test", "Junk", Some("junk"))
        .pipeline(PipelineSettings {
            authentication: true,
            dns_server: Some(dns),
            dns_timeout: timeout,
            ..PipelineSettings::default()
        })
        .start()
        .await
}

/// Sends each `(source address, HELO, MAIL FROM, message file)` with smtplib and prints one
/// line per message: `ok` or the refusal's code and text.
const SEND: &str = r#"
import smtplib, sys
host, port = sys.argv[1], int(sys.argv[2])
for spec in sys.argv[3:]:
    source, helo, sender, path = spec.split('|')
    raw = open(path, 'rb').read()
    s = smtplib.SMTP(host, port, source_address=(source, 0), local_hostname=helo)
    try:
        s.sendmail(sender, ['alice@example.test'], raw)
        print('ok')
    except smtplib.SMTPDataError as e:
        print(e.smtp_code, e.smtp_error.decode())
    s.quit()
"#;

/// Signs a message with dkimpy (`sign KEY OUT`), writes a tampered copy (`OUT.tampered`) and
/// an ARC-sealed message from a list at `signed.test` (`OUT.sealed`; needs python3-authres).
const SIGN: &str = r#"
import dkim, sys
key = open(sys.argv[1], 'rb').read()
msg = (b"From: Dee <dee@signed.test>\r\nTo: alice@example.test\r\nSubject: signed\r\n"
       b"Message-ID: <s1@signed.test>\r\n"
       b"Authentication-Results: mx.example.test; dkim=pass header.d=forged.test\r\n\r\n"
       b"hello, signed\r\n")
sig = dkim.sign(msg, b"sel", b"signed.test", key, include_headers=[b"from", b"to", b"subject"])
open(sys.argv[2], 'wb').write(sig + msg)
sealed = (b"Authentication-Results: lists.signed.test; spf=pass smtp.mailfrom=dee@signed.test\r\n"
          b"From: Dee <dee@signed.test>\r\nTo: alice@example.test\r\nSubject: sealed\r\n\r\n"
          b"hello, sealed\r\n")
seal = dkim.arc_sign(sealed, b"sel", b"signed.test", key, b"lists.signed.test")
open(sys.argv[2] + '.sealed', 'wb').write(b"".join(seal) + sealed)
open(sys.argv[2] + '.tampered', 'wb').write((sig + msg).replace(b"hello, signed", b"hello, forged").replace(b"Subject: signed", b"Subject: tampered"))
"#;

/// Every message of a folder over IMAP, as `=====`-separated raw texts.
const FETCH: &str = r#"
import imaplib, sys
m = imaplib.IMAP4(sys.argv[1], int(sys.argv[2]))
m.login(sys.argv[3], sys.argv[4])
m.select(sys.argv[5])
typ, data = m.search(None, 'ALL')
for num in data[0].split():
    typ, msg = m.fetch(num, '(RFC822)')
    sys.stdout.write(msg[0][1].decode('utf-8', 'replace'))
    sys.stdout.write('\n=====\n')
m.logout()
"#;

fn message(dir: &std::path::Path, name: &str, from: &str, subject: &str) -> String {
    let path = dir.join(name);
    let text =
        format!("From: {from}\r\nTo: alice@example.test\r\nSubject: {subject}\r\n\r\nbody\r\n");
    std::fs::write(&path, text).expect("message file");
    path.display().to_string()
}

async fn folder(world: &TestServer, name: &str) -> Vec<String> {
    let imap = world.addresses().imap;
    let out = python(
        FETCH,
        &[
            &imap.ip().to_string(),
            &imap.port().to_string(),
            "alice@example.test",
            PASSWORD,
            name,
        ],
    )
    .await;
    out.split("\n=====\n")
        .filter(|m| !m.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// The `Authentication-Results` field of the message whose subject is `subject`, unfolded.
fn results(messages: &[String], subject: &str) -> Vec<String> {
    let message = messages
        .iter()
        .find(|m| m.contains(&format!("Subject: {subject}\r\n")))
        .unwrap_or_else(|| panic!("no message {subject:?} in {messages:#?}"));
    let header = message.split("\r\n\r\n").next().unwrap_or_default();
    let unfolded = header.replace("\r\n\t", " ").replace("\r\n ", " ");
    unfolded
        .lines()
        .filter(|l| {
            l.to_ascii_lowercase()
                .starts_with("authentication-results:")
        })
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn spf_dkim_dmarc_verdicts_reach_the_mailbox() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (key, dkim_txt) = dkim_key(dir.path());
    let zones = zones(&dkim_txt);
    let zone_refs: Vec<(&str, &str)> = zones.iter().map(|(o, r)| (*o, r.as_str())).collect();
    let dns = Named::start(&zone_refs);
    let world = server(dns.address(), Duration::from_secs(3)).await;
    let signed = dir.path().join("signed.eml");
    // Debian's interpreter: python3-dkim is installed for it, not for a python3 earlier on PATH.
    let status = std::process::Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(SIGN)
        .arg(&key)
        .arg(&signed)
        .status()
        .expect("/usr/bin/python3 runs");
    assert!(status.success(), "dkimpy signs (Debian python3-dkim)");
    let signed = signed.display().to_string();
    let tampered = format!("{signed}.tampered");
    let sealed = format!("{signed}.sealed");
    let d = dir.path();
    let cases = [
        (
            "127.0.0.3",
            "mta.signed.test",
            "dee@signed.test",
            signed.clone(),
        ),
        ("127.0.0.3", "mta.signed.test", "dee@signed.test", tampered),
        (
            "127.0.0.2",
            "mta.spf.test",
            "a@spf.test",
            message(d, "1", "a@spf.test", "spf pass"),
        ),
        (
            "127.0.0.3",
            "mta.spf.test",
            "a@spf.test",
            message(d, "2", "a@spf.test", "spf fail"),
        ),
        (
            "127.0.0.3",
            "mta.soft.test",
            "a@soft.test",
            message(d, "3", "a@soft.test", "softfail"),
        ),
        (
            "127.0.0.3",
            "mta.reject.test",
            "a@reject.test",
            message(d, "4", "a@reject.test", "dmarc reject"),
        ),
        (
            "127.0.0.2",
            "mta.reject.test",
            "a@reject.test",
            message(d, "5", "a@reject.test", "dmarc aligned"),
        ),
        (
            "127.0.0.3",
            "mta.quar.test",
            "a@quar.test",
            message(d, "6", "a@quar.test", "dmarc quarantine"),
        ),
        ("127.0.0.3", "lists.signed.test", "list@signed.test", sealed),
    ];
    let specs: Vec<String> = cases
        .iter()
        .map(|(src, helo, from, path)| format!("{src}|{helo}|{from}|{path}"))
        .collect();
    let smtp = world.addresses().smtp;
    let mut args = vec![smtp.ip().to_string(), smtp.port().to_string()];
    args.extend(specs);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let replies = python(SEND, &args).await;
    let replies: Vec<&str> = replies.lines().collect();
    assert_eq!(replies.len(), cases.len(), "{replies:?}");
    for (i, reply) in replies.iter().enumerate() {
        if i == 5 {
            assert!(
                reply.starts_with("550 5.7.1"),
                "DMARC p=reject refuses: {reply}"
            );
        } else {
            assert_eq!(*reply, "ok", "case {i}");
        }
    }

    let inbox = folder(&world, "INBOX").await;
    let junk = folder(&world, "Junk").await;
    let check = |messages: &[String], subject: &str, want: &[&str]| {
        // Other hosts' results (the list's, in "sealed") stay; ours is the only one of ours.
        let found: Vec<String> = results(messages, subject)
            .into_iter()
            .filter(|h| h.starts_with("Authentication-Results: mx.example.test"))
            .collect();
        assert_eq!(
            found.len(),
            1,
            "one header of ours, forged ones removed: {found:?}"
        );
        for part in want {
            assert!(
                found[0].contains(part),
                "{subject}: {part:?} not in {}",
                found[0]
            );
        }
    };
    check(
        &inbox,
        "signed",
        &[
            "mx.example.test;",
            "dkim=pass header.i=@signed.test header.s=sel",
        ],
    );
    check(&inbox, "tampered", &["dkim=fail"]);
    check(&inbox, "sealed", &["arc=pass smtp.remote-ip=127.0.0.3"]);
    check(&inbox, "spf pass", &["arc=none"]);
    check(
        &inbox,
        "spf pass",
        &["spf=pass", "smtp.mailfrom=a@spf.test", "dkim=none"],
    );
    check(
        &inbox,
        "spf fail",
        &["spf=fail", "smtp.mailfrom=a@spf.test"],
    );
    check(&inbox, "softfail", &["spf=softfail"]);
    check(
        &inbox,
        "dmarc aligned",
        &["spf=pass", "dmarc=pass header.from=reject.test"],
    );
    check(
        &junk,
        "dmarc quarantine",
        &["dmarc=fail header.from=quar.test policy.dmarc=quarantine"],
    );
    assert!(
        !inbox.iter().any(|m| m.contains("Subject: dmarc reject") || m.contains("Subject: dmarc quarantine")),
        "refused and quarantined messages are not in the INBOX"
    );
    assert!(
        !inbox.iter().any(|m| m.contains("forged.test")),
        "the forged Authentication-Results with our authserv-id is gone"
    );
    assert_eq!(junk.len(), 1, "{junk:#?}");
    world.stop().await;

    // DNS gone: every result is a temporary error and the message is still accepted.
    drop(dns);
    let dead = std::net::UdpSocket::bind("127.0.0.1:0").expect("a silent port");
    let world = server(dead.local_addr().unwrap(), Duration::from_millis(300)).await;
    let smtp = world.addresses().smtp;
    let path = message(d, "7", "a@reject.test", "no dns");
    let spec = format!("127.0.0.3|mta.reject.test|a@reject.test|{path}");
    let replies = python(
        SEND,
        &[&smtp.ip().to_string(), &smtp.port().to_string(), &spec],
    )
    .await;
    assert_eq!(replies.trim(), "ok", "a DNS failure never refuses");
    let inbox = folder(&world, "INBOX").await;
    check(&inbox, "no dns", &["spf=temperror", "dmarc=temperror"]);
    world.stop().await;
}

//! LDAP as the first credential source and directory-backed domains, against a real Debian
//! `slapd` (mail-testkit) and real clients (Python's imaplib, poplib and smtplib).
//!
//! One slapd serves the binary's tests (each test adds its own users); the tests that stop
//! the directory or count its binds start one of their own.

mod common;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use common::TestServer;
use mail_testkit::Slapd;
use mailserver::auth::ldap::Directories;
use mailserver::auth::ldap::settings::{self, DirectorySettings};
use mailserver::auth::source::{CredentialSource, Verdict};

const DOMAIN: &str = "corp.test";
const DIRECTORY: &str = "corp";

fn shared_slapd() -> &'static Slapd {
    static SLAPD: OnceLock<Slapd> = OnceLock::new();
    SLAPD.get_or_init(|| Slapd::start(false))
}

/// Directory settings for `slapd` at `urls`, with YAML `extra` lines (`cacheTtlSeconds: 0`).
fn directory_settings(slapd: &Slapd, urls: &[String], extra: &str) -> settings::Resolved {
    let yaml = format!(
        "name: {DIRECTORY}\nurls: [{urls}]\nbindDn: \"{admin}\"\nbindPasswordFile: {pw}\n\
         base: \"{people}\"\nconnectTimeoutMs: 1000\noperationTimeoutMs: 2000\n\
         attributes: {{ quota: employeeNumber }}\n{extra}",
        urls = urls.join(", "),
        admin = Slapd::ADMIN_DN,
        pw = slapd.admin_password_file().display(),
        people = Slapd::PEOPLE,
    );
    let parsed: DirectorySettings = serde_yaml::from_str(&yaml).expect("settings yaml");
    settings::resolve(parsed).expect("valid settings")
}

fn directories(slapd: &Slapd, extra: &str) -> Arc<Directories> {
    Arc::new(Directories::new(vec![directory_settings(
        slapd,
        &[slapd.url()],
        extra,
    )]))
}

/// A server with the directory-backed domain and one local-only mailbox `svc@corp.test`.
async fn start(directories: Arc<Directories>) -> TestServer {
    TestServer::builder()
        .directories(directories)
        .directory_domain(DOMAIN, DIRECTORY)
        .mailbox("svc@corp.test", Some("svc-local-pw"))
        .start()
        .await
}

/// Logs in over IMAP with imaplib: `"OK"` and the folders listed, or `"NO"`.
async fn imap_login(fx: &TestServer, user: &str, password: &str) -> String {
    let script = "\
import imaplib, sys
m = imaplib.IMAP4('127.0.0.1', int(sys.argv[1]))
try:
    m.login(sys.argv[2], sys.argv[3])
except imaplib.IMAP4.error:
    print('NO'); sys.exit(0)
typ, folders = m.list()
print('OK', len(folders))
m.logout()
";
    let port = fx.addresses().imap.port().to_string();
    common::python(script, &[&port, user, password])
        .await
        .trim()
        .to_string()
}

/// Logs in over POP3 with poplib: `"OK <stat>"` or `"ERR"`.
async fn pop3_login(fx: &TestServer, user: &str, password: &str) -> String {
    let script = "\
import poplib, sys
p = poplib.POP3('127.0.0.1', int(sys.argv[1]), timeout=20)
try:
    p.user(sys.argv[2]); p.pass_(sys.argv[3])
except poplib.error_proto:
    print('ERR'); sys.exit(0)
print('OK', p.stat())
p.quit()
";
    let port = fx.addresses().pop3.port().to_string();
    common::python(script, &[&port, user, password])
        .await
        .trim()
        .to_string()
}

/// Sends one message with smtplib; the RCPT refusal (`"550 ..."`) or `"sent"`.
async fn smtp_send(fx: &TestServer, to: &str, subject: &str) -> String {
    let script = "\
import smtplib, sys
with smtplib.SMTP('127.0.0.1', int(sys.argv[1]), local_hostname='py.test') as s:
    try:
        s.sendmail('sender@elsewhere.test', [sys.argv[2]],
                   'Subject: %s\\r\\n\\r\\nhello from smtplib\\r\\n' % sys.argv[3])
        print('sent')
    except smtplib.SMTPRecipientsRefused as e:
        code, text = list(e.recipients.values())[0]
        print(code, text.decode())
";
    let port = fx.addresses().smtp.port().to_string();
    common::python(script, &[&port, to, subject])
        .await
        .trim()
        .to_string()
}

async fn mailbox_row(
    fx: &TestServer,
    address: &str,
) -> Option<(i64, String, Option<String>, bool)> {
    sqlx::query_as(
        "SELECT quota_bytes, auth_source, directory, deleted_at IS NOT NULL
           FROM mailboxes WHERE address = $1",
    )
    .bind(address)
    .fetch_optional(fx.pool())
    .await
    .expect("query")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldap_only_user_logs_in_over_imap_and_pop3_and_local_user_too() {
    let slapd = shared_slapd();
    slapd.add(&Slapd::person(
        "carol",
        &["carol@corp.test", "c.directory@corp.test"],
        "carol-ldap-pw",
        &[
            ("employeeNumber", "5000000"),
            ("displayName", "Carol Directory"),
        ],
    ));
    let fx = start(directories(slapd, "")).await;
    assert_eq!(
        mailbox_row(&fx, "carol@corp.test").await,
        None,
        "no row before login"
    );

    assert_eq!(
        imap_login(&fx, "carol@corp.test", "carol-ldap-pw").await,
        "OK 5"
    );
    // The row appeared on first login: the directory's quota, no local password.
    assert_eq!(
        mailbox_row(&fx, "carol@corp.test").await,
        Some((5_000_000, "ldap".into(), Some(DIRECTORY.into()), false))
    );
    let hash: Option<String> =
        sqlx::query_scalar("SELECT password_hash FROM mailboxes WHERE address = $1")
            .bind("carol@corp.test")
            .fetch_one(fx.pool())
            .await
            .unwrap();
    assert_eq!(hash, None);
    assert_eq!(
        pop3_login(&fx, "Carol@Corp.Test", "carol-ldap-pw").await,
        "OK (0, 0)"
    );
    assert_eq!(imap_login(&fx, "carol@corp.test", "wrong").await, "NO");
    assert_eq!(pop3_login(&fx, "carol@corp.test", "").await, "ERR");

    // A local-only mailbox of the same domain logs in with its local hash.
    assert_eq!(
        imap_login(&fx, "svc@corp.test", "svc-local-pw").await,
        "OK 1"
    );
    assert_eq!(
        pop3_login(&fx, "svc@corp.test", "svc-local-pw").await,
        "OK (0, 0)"
    );
    assert_eq!(
        imap_login(&fx, "svc@corp.test", "carol-ldap-pw").await,
        "NO"
    );
    // Unknown users are refused like wrong passwords.
    assert_eq!(imap_login(&fx, "nobody@corp.test", "x").await, "NO");
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_domain_receives_mail_for_a_user_without_mailbox_resource() {
    let slapd = shared_slapd();
    slapd.add(&Slapd::person("dave", &["dave@corp.test"], "dave-pw", &[]));
    let fx = start(directories(slapd, "")).await;

    assert_eq!(smtp_send(&fx, "dave@corp.test", "first").await, "sent");
    assert_eq!(
        smtp_send(&fx, "dave+lists@corp.test", "tagged").await,
        "sent"
    );
    let (quota, source, directory, deleted) = mailbox_row(&fx, "dave@corp.test")
        .await
        .expect("row made on delivery");
    assert_eq!(
        (quota, source.as_str(), directory.as_deref(), deleted),
        (1 << 30, "ldap", Some(DIRECTORY), false)
    );
    let refused = smtp_send(&fx, "nobody@corp.test", "x").await;
    assert!(refused.starts_with("550"), "{refused}");

    // The user reads the mail over IMAP.
    let script = "\
import imaplib, sys
m = imaplib.IMAP4('127.0.0.1', int(sys.argv[1]))
m.login('dave@corp.test', 'dave-pw')
m.select('INBOX')
typ, data = m.fetch('1:*', '(BODY[HEADER.FIELDS (SUBJECT)])')
print(sorted(d[1].decode().strip() for d in data if isinstance(d, tuple)))
m.logout()
";
    let port = fx.addresses().imap.port().to_string();
    let out = common::python(script, &[&port]).await;
    assert_eq!(out.trim(), "['Subject: first', 'Subject: tagged']");
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_ldap_password_is_final_even_when_the_local_hash_matches() {
    let slapd = shared_slapd();
    slapd.add(&Slapd::person(
        "erin",
        &["erin@corp.test"],
        "erin-ldap-pw",
        &[],
    ));
    let fx = TestServer::builder()
        .directories(directories(slapd, ""))
        .directory_domain(DOMAIN, DIRECTORY)
        .mailbox("erin@corp.test", Some("erin-local-pw"))
        .start()
        .await;
    sqlx::query("UPDATE mailboxes SET auth_source = 'ldap' WHERE address = 'erin@corp.test'")
        .execute(fx.pool())
        .await
        .unwrap();
    assert_eq!(
        imap_login(&fx, "erin@corp.test", "erin-local-pw").await,
        "NO"
    );
    assert_eq!(
        pop3_login(&fx, "erin@corp.test", "erin-local-pw").await,
        "ERR"
    );
    assert_eq!(
        imap_login(&fx, "erin@corp.test", "erin-ldap-pw").await,
        "OK 1"
    );
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_injection_is_refused() {
    let slapd = shared_slapd();
    slapd.add(&Slapd::person(
        "frank",
        &["frank@corp.test"],
        "frank-pw",
        &[],
    ));
    let dirs = directories(slapd, "");
    let directory = dirs.get(DIRECTORY).expect("configured");
    assert!(matches!(
        directory.verify("frank@corp.test", "frank-pw").await,
        Verdict::Verified(_)
    ));
    // The login is one literal value: wildcards and closing parentheses match nobody.
    for login in [
        "*",
        "*)(uid=*",
        "frank*",
        "*@corp.test",
        "*)(|(uid=*@corp.test",
        "fr*nk",
    ] {
        let verdict = directory.verify(login, "frank-pw").await;
        assert_eq!(verdict, Verdict::Unknown, "{login}");
    }
    let fx = start(dirs.clone()).await;
    assert_eq!(
        imap_login(&fx, "*)(uid=*@corp.test", "frank-pw").await,
        "NO"
    );
    assert_eq!(imap_login(&fx, "*@corp.test", "frank-pw").await, "NO");
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_over_to_the_second_url_when_the_first_is_dead() {
    let slapd = shared_slapd();
    slapd.add(&Slapd::person("gina", &["gina@corp.test"], "gina-pw", &[]));
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("ldap://{}", dead.local_addr().unwrap());
    drop(dead);
    let resolved = directory_settings(slapd, &[dead_url, slapd.url()], "cacheTtlSeconds: 0\n");
    let dirs = Arc::new(Directories::new(vec![resolved]));
    let fx = start(dirs).await;
    assert_eq!(imap_login(&fx, "gina@corp.test", "gina-pw").await, "OK 5");
    assert_eq!(
        pop3_login(&fx, "gina@corp.test", "gina-pw").await,
        "OK (0, 0)"
    );
    assert_eq!(imap_login(&fx, "gina@corp.test", "bad").await, "NO");
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_hit_does_not_bind_again() {
    // Its own slapd, so the monitor's bind count is this test's alone.
    let slapd = Slapd::start(false);
    slapd.add(&Slapd::person("hank", &["hank@corp.test"], "hank-pw", &[]));
    let fx = start(directories(&slapd, "")).await;
    // Every call of binds() binds once itself (the admin's ldapsearch).
    let before = slapd.binds();
    assert_eq!(imap_login(&fx, "hank@corp.test", "hank-pw").await, "OK 5");
    let after_first = slapd.binds();
    // Service bind of the new pooled connection + the user's bind + the count's own bind.
    assert_eq!(after_first - before, 3, "first login");
    assert_eq!(imap_login(&fx, "hank@corp.test", "hank-pw").await, "OK 5");
    assert_eq!(
        pop3_login(&fx, "hank@corp.test", "hank-pw").await,
        "OK (0, 0)"
    );
    let after_cached = slapd.binds();
    assert_eq!(after_cached - after_first, 1, "cached logins bind nothing");
    // A different password is not a hit: the directory decides (and refuses).
    assert_eq!(imap_login(&fx, "hank@corp.test", "hank-other").await, "NO");
    assert_eq!(slapd.binds() - after_cached, 2, "wrong password binds");
    fx.stop().await;

    // With the cache off every login binds.
    let fx = start(directories(&slapd, "cacheTtlSeconds: 0\n")).await;
    assert_eq!(imap_login(&fx, "hank@corp.test", "hank-pw").await, "OK 5");
    let first = slapd.binds();
    assert_eq!(imap_login(&fx, "hank@corp.test", "hank-pw").await, "OK 5");
    assert_eq!(slapd.binds() - first, 2, "uncached login binds");
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_down_local_users_log_in_and_ldap_users_fall_back() {
    let mut slapd = Slapd::start(false);
    slapd.add(&Slapd::person(
        "ivy",
        &["ivy@corp.test"],
        "ivy-ldap-pw",
        &[],
    ));
    slapd.add(&Slapd::person(
        "jack",
        &["jack@corp.test"],
        "jack-ldap-pw",
        &[],
    ));
    let fx = TestServer::builder()
        .directories(directories(&slapd, "cacheTtlSeconds: 0\n"))
        .directory_domain(DOMAIN, DIRECTORY)
        .mailbox("svc@corp.test", Some("svc-local-pw"))
        .mailbox("ivy@corp.test", Some("ivy-local-pw"))
        .start()
        .await;
    sqlx::query("UPDATE mailboxes SET auth_source = 'ldap' WHERE address = 'ivy@corp.test'")
        .execute(fx.pool())
        .await
        .unwrap();
    assert_eq!(
        imap_login(&fx, "ivy@corp.test", "ivy-ldap-pw").await,
        "OK 1"
    );
    assert_eq!(
        imap_login(&fx, "jack@corp.test", "jack-ldap-pw").await,
        "OK 5"
    );

    slapd.stop();
    let started = Instant::now();
    assert_eq!(
        imap_login(&fx, "svc@corp.test", "svc-local-pw").await,
        "OK 1"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let started = Instant::now();
    // The LDAP user with a local hash falls back to it while the directory is away.
    assert_eq!(
        imap_login(&fx, "ivy@corp.test", "ivy-local-pw").await,
        "OK 1"
    );
    assert_eq!(
        pop3_login(&fx, "ivy@corp.test", "ivy-local-pw").await,
        "OK (0, 0)"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    // Directory-only users cannot log in, and mail for unknown directory users waits.
    assert_eq!(
        imap_login(&fx, "jack@corp.test", "jack-ldap-pw").await,
        "NO"
    );
    let deferred = smtp_send(&fx, "newcomer@corp.test", "x").await;
    assert!(deferred.starts_with("451 4.4.3"), "{deferred}");
    // Known mailboxes still receive.
    assert_eq!(smtp_send(&fx, "jack@corp.test", "while down").await, "sent");
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removal_from_the_directory_disables_the_mailbox() {
    let slapd = shared_slapd();
    slapd.add(&Slapd::person("kate", &["kate@corp.test"], "kate-pw", &[]));
    slapd.add(&Slapd::person("liam", &["liam@corp.test"], "liam-pw", &[]));
    let dirs = directories(slapd, "cacheTtlSeconds: 0\nlookupCacheSeconds: 0\n");
    let fx = start(dirs.clone()).await;
    assert_eq!(smtp_send(&fx, "kate@corp.test", "hello").await, "sent");
    assert_eq!(imap_login(&fx, "liam@corp.test", "liam-pw").await, "OK 5");

    slapd.delete(&Slapd::dn_of("kate"));
    let report = dirs.sweep(fx.pool()).await.expect("sweep");
    assert!(report.ran);
    assert_eq!(report.disabled, vec!["kate@corp.test".to_string()]);
    // Retain (the default): the row and its mail stay, unserved.
    let (_, _, _, deleted) = mailbox_row(&fx, "kate@corp.test").await.expect("row kept");
    assert!(deleted);
    let refused = smtp_send(&fx, "kate@corp.test", "again").await;
    assert!(refused.starts_with("550"), "{refused}");
    assert_eq!(imap_login(&fx, "kate@corp.test", "kate-pw").await, "NO");
    // Liam is still there; a second sweep changes nothing.
    assert_eq!(
        mailbox_row(&fx, "liam@corp.test").await.map(|r| r.3),
        Some(false)
    );
    assert!(dirs.sweep(fx.pool()).await.unwrap().disabled.is_empty());

    // Removed between logins: the failed lookup at login disables the mailbox at once.
    slapd.delete(&Slapd::dn_of("liam"));
    assert_eq!(imap_login(&fx, "liam@corp.test", "liam-pw").await, "NO");
    assert_eq!(
        mailbox_row(&fx, "liam@corp.test").await.map(|r| r.3),
        Some(true)
    );
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldaps_and_starttls_with_a_ca_file() {
    let slapd = Slapd::start(true);
    slapd.add(&Slapd::person("mona", &["mona@corp.test"], "mona-pw", &[]));
    let ca = slapd.ca_file().display().to_string();
    for (url, extra) in [
        (
            slapd.ldaps_url().expect("ldaps"),
            format!("caFile: {ca}\ncacheTtlSeconds: 0\n"),
        ),
        (
            slapd.url(),
            format!("tls: starttls\ncaFile: {ca}\ncacheTtlSeconds: 0\n"),
        ),
    ] {
        let resolved = directory_settings(&slapd, std::slice::from_ref(&url), &extra);
        let dirs = Directories::new(vec![resolved]);
        let directory = dirs.get(DIRECTORY).unwrap();
        match directory.verify("mona@corp.test", "mona-pw").await {
            Verdict::Verified(identity) => assert_eq!(identity.address, "mona@corp.test"),
            other => panic!("{url} {extra}: {other:?}"),
        }
        assert_eq!(
            directory.verify("mona@corp.test", "nope").await,
            Verdict::Rejected
        );
    }
    // A server whose certificate is not trusted is unavailable, never accepted.
    let other = Slapd::start(true);
    let resolved = directory_settings(
        &slapd,
        &[slapd.ldaps_url().unwrap()],
        &format!("caFile: {}\n", other.ca_file().display()),
    );
    let dirs = Directories::new(vec![resolved]);
    let verdict = dirs
        .get(DIRECTORY)
        .unwrap()
        .verify("mona@corp.test", "mona-pw")
        .await;
    assert!(matches!(verdict, Verdict::Unavailable(_)), "{verdict:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldap_only_user_authenticates_over_smtp_submission() {
    use mailserver::listener::{ListenerSpec, Protocol, Role, TlsMode};
    use mailserver::server::ServerConfig;
    let slapd = shared_slapd();
    slapd.add(&Slapd::person("nina", &["nina@corp.test"], "nina-pw", &[]));
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut config = ServerConfig::plain(mailserver::Addresses::all(any));
    config.listeners.push(ListenerSpec::new(
        Protocol::Smtp,
        any,
        TlsMode::None,
        Role::Submission,
    ));
    let fx = TestServer::builder()
        .directories(directories(slapd, ""))
        .directory_domain(DOMAIN, DIRECTORY)
        .server(config)
        .start()
        .await;
    let script = "\
import smtplib, sys
for user, pw in (('nina@corp.test', 'nina-pw'), ('nina@corp.test', 'wrong')):
    with smtplib.SMTP('127.0.0.1', int(sys.argv[1]), local_hostname='py.test') as s:
        s.ehlo()
        try:
            code, _ = s.login(user, pw)
            print(code)
        except smtplib.SMTPAuthenticationError as e:
            print(e.smtp_code)
";
    let port = fx.listener("submission").port().to_string();
    let out = common::python(script, &[&port]).await;
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["235", "535"]);
    fx.stop().await;
}

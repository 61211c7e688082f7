//! The TLS module against real clients over loopback: tokio-rustls and `openssl s_client`
//! handshake with acceptors built from PEM files, self-signed, chosen by SNI and reloaded.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::Arc;

use mailserver::tls::{CertKeyPaths, Certificates, Versions, expiry_warning, fingerprint};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// An echo server: each connection is handshaken with `acceptor`, then every line comes back.
async fn serve(acceptor: tokio_rustls::TlsAcceptor) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let (read, mut write) = tokio::io::split(tls);
                let mut lines = BufReader::new(read).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if write
                        .write_all(format!("{line}\n").as_bytes())
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A client trusting exactly `roots`, offering `versions`, asking for `sni`.
async fn connect(
    addr: SocketAddr,
    sni: &str,
    roots: &[CertificateDer<'static>],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> std::io::Result<TlsStream<TcpStream>> {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(sni.to_string()).unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
}

/// The fingerprint of the certificate the server presented.
fn presented(stream: &TlsStream<TcpStream>) -> String {
    fingerprint(&stream.get_ref().1.peer_certificates().unwrap()[0])
}

/// Sends one line and reads it back.
async fn echo(stream: &mut TlsStream<TcpStream>, line: &str) -> String {
    stream
        .write_all(format!("{line}\n").as_bytes())
        .await
        .unwrap();
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while reply.last() != Some(&b'\n') {
        tokio::io::AsyncReadExt::read_exact(stream, &mut byte)
            .await
            .unwrap();
        reply.push(byte[0]);
    }
    String::from_utf8(reply).unwrap()
}

fn cert_der(path: &Path) -> CertificateDer<'static> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_file(path).unwrap()
}

const BOTH: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

#[tokio::test]
async fn the_embedded_certificate_verifies_for_localhost_and_the_loopback_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let names = mailserver::tls::embedded_names("mx.example.test");
    let (certs, _) = Certificates::self_signed(dir.path(), &names).unwrap();
    let addr = serve(certs.acceptor(Versions::Tls13Only)).await;
    let root = cert_der(&dir.path().join("tls.crt"));
    for name in ["mx.example.test", "localhost", "example.test", "127.0.0.1"] {
        let client = connect(addr, name, std::slice::from_ref(&root), BOTH).await;
        assert!(client.is_ok(), "{name}: {:?}", client.err());
    }
    let other = connect(addr, "elsewhere.test", &[root], BOTH).await;
    assert!(
        other.is_err(),
        "a name the certificate does not cover must fail"
    );
}

#[tokio::test]
async fn self_signed_is_created_once_then_reused_and_serves_a_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let names = vec!["localhost".to_string(), "mail.example.test".to_string()];
    let (certs, first) = Certificates::self_signed(dir.path(), &names).unwrap();
    let (_, again) = Certificates::self_signed(dir.path(), &names).unwrap();
    assert_eq!(first, again, "the second start must reuse the certificate");
    assert_eq!(first.len(), 32 * 3 - 1);
    let mode = std::fs::metadata(dir.path().join("tls.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "the private key must be readable by its owner only"
    );

    let openssl = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(dir.path().join("tls.crt"))
        .output()
        .unwrap();
    let printed = String::from_utf8(openssl.stdout).unwrap();
    assert_eq!(printed.trim().rsplit('=').next(), Some(first.as_str()));

    let addr = serve(certs.acceptor(Versions::Tls13Only)).await;
    let root = cert_der(&dir.path().join("tls.crt"));
    let mut client = connect(addr, "mail.example.test", &[root], BOTH)
        .await
        .unwrap();
    assert_eq!(presented(&client), first);
    assert_eq!(echo(&mut client, "hello").await, "hello\n");

    // Half a pair is not reused: both files are made afresh.
    std::fs::remove_file(dir.path().join("tls.key")).unwrap();
    let (_, remade) = Certificates::self_signed(dir.path(), &names).unwrap();
    assert_ne!(remade, first);
}

/// A certificate and key made by rcgen for `names`, written as `tls.crt`/`tls.key` in `dir`.
fn make_pair(dir: &Path, names: &[&str]) -> CertificateDer<'static> {
    std::fs::create_dir_all(dir).unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let made = rcgen::generate_simple_self_signed(names).unwrap();
    std::fs::write(dir.join("tls.crt"), made.cert.pem()).unwrap();
    std::fs::write(dir.join("tls.key"), made.signing_key.serialize_pem()).unwrap();
    made.cert.der().clone()
}

/// A Secret mounted the way the kubelet does it: `tls.crt -> ..data/tls.crt`,
/// `..data -> ..<version>/`, and an update swaps `..data` in one rename.
struct MountedSecret {
    root: tempfile::TempDir,
    version: u32,
}

impl MountedSecret {
    fn new(names: &[&str]) -> (Self, CertificateDer<'static>) {
        let mut secret = Self {
            root: tempfile::tempdir().unwrap(),
            version: 0,
        };
        let der = secret.update(|dir| make_pair(dir, names));
        for file in ["tls.crt", "tls.key"] {
            let link = secret.root.path().join(file);
            std::os::unix::fs::symlink(Path::new("..data").join(file), link).unwrap();
        }
        (secret, der)
    }

    fn paths(&self) -> CertKeyPaths {
        CertKeyPaths::in_dir(self.root.path())
    }

    /// Writes a new version with `write` and points `..data` at it atomically.
    fn update<T>(&mut self, write: impl FnOnce(&Path) -> T) -> T {
        self.version += 1;
        let name = format!("..version{}", self.version);
        let written = write(&self.root.path().join(&name));
        let staging = self.root.path().join("..data_tmp");
        std::os::unix::fs::symlink(&name, &staging).unwrap();
        std::fs::rename(&staging, self.root.path().join("..data")).unwrap();
        written
    }
}

const TLS12: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];

#[tokio::test]
async fn tls12_is_refused_by_tls13_only_and_accepted_by_tls12_and_13() {
    let dir = tempfile::tempdir().unwrap();
    let root = make_pair(dir.path(), &["localhost"]);
    let certs = Certificates::load(&[CertKeyPaths::in_dir(dir.path())]).unwrap();
    let strict = serve(certs.acceptor(Versions::Tls13Only)).await;
    let lenient = serve(certs.acceptor(Versions::Tls12And13)).await;
    let roots = std::slice::from_ref(&root);

    let refused = connect(strict, "localhost", roots, TLS12).await;
    assert!(
        refused.is_err(),
        "TLS 1.2 handshake succeeded on a TLS 1.3-only acceptor"
    );
    let mut accepted = connect(lenient, "localhost", roots, TLS12).await.unwrap();
    let version = accepted.get_ref().1.protocol_version();
    assert_eq!(version, Some(rustls::ProtocolVersion::TLSv1_2));
    assert_eq!(echo(&mut accepted, "over 1.2").await, "over 1.2\n");

    let strict13 = connect(strict, "localhost", roots, BOTH).await.unwrap();
    let version = strict13.get_ref().1.protocol_version();
    assert_eq!(version, Some(rustls::ProtocolVersion::TLSv1_3));

    let (ok, output) = s_client(strict, "localhost", &["-tls1_2"]).await;
    assert!(
        !ok,
        "openssl -tls1_2 got through a TLS 1.3-only acceptor:\n{output}"
    );
    let (ok, output) = s_client(lenient, "localhost", &["-tls1_2"]).await;
    assert!(ok && output.contains("New, TLSv1.2"), "{output}");
    let (ok, output) = s_client(strict, "localhost", &[]).await;
    assert!(ok && output.contains("New, TLSv1.3"), "{output}");
}

/// Runs `openssl s_client` asking for `sni` (none if empty) with `args`; whether it handshook, and what it
/// printed (the server's certificate in PEM among it).
async fn s_client(addr: SocketAddr, sni: &str, args: &[&str]) -> (bool, String) {
    let output = tokio::process::Command::new("openssl")
        .args(["s_client", "-connect"])
        .arg(addr.to_string())
        .args(match sni {
            "" => vec!["-noservername"],
            sni => vec!["-servername", sni],
        })
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

/// The fingerprint of the certificate `openssl s_client` printed.
fn s_client_cert(output: &str) -> String {
    use rustls::pki_types::pem::PemObject;
    let cert = CertificateDer::pem_slice_iter(output.as_bytes()).next();
    fingerprint(
        &cert
            .expect("no certificate in the s_client output")
            .unwrap(),
    )
}

#[tokio::test]
async fn sni_picks_the_certificate_that_names_the_host_and_falls_back_to_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let mx = make_pair(&dir.path().join("mx"), &["mx.example.test"]);
    let other = make_pair(
        &dir.path().join("other"),
        &["mail.other.test", "*.other.test"],
    );
    let pairs = [
        CertKeyPaths::in_dir(&dir.path().join("mx")),
        CertKeyPaths::in_dir(&dir.path().join("other")),
    ];
    let certs = Certificates::load(&pairs).unwrap();
    assert_eq!(certs.fingerprint(), fingerprint(&mx));
    let addr = serve(certs.acceptor(Versions::Tls13Only)).await;
    let roots = [mx.clone(), other.clone()];

    for (sni, expected) in [
        ("mx.example.test", &mx),
        ("mail.other.test", &other),
        ("imap.other.test", &other),
        ("MX.EXAMPLE.TEST", &mx),
    ] {
        let client = connect(addr, sni, &roots, BOTH).await.unwrap();
        assert_eq!(presented(&client), fingerprint(expected), "for {sni}");
    }

    // A name no certificate covers gets the default, which a strict client then rejects.
    let unknown = connect(addr, "unknown.test", &roots, BOTH).await;
    assert!(unknown.is_err());
    let (ok, output) = s_client(addr, "unknown.test", &[]).await;
    assert!(ok, "{output}");
    assert_eq!(s_client_cert(&output), fingerprint(&mx));
    let (_, output) = s_client(addr, "", &[]).await;
    assert_eq!(s_client_cert(&output), fingerprint(&mx), "without SNI");
    let (_, output) = s_client(addr, "www.other.test", &[]).await;
    assert_eq!(s_client_cert(&output), fingerprint(&other));
}

#[tokio::test]
async fn reload_serves_the_swapped_secret_to_new_handshakes_and_keeps_open_sessions() {
    let (mut secret, old) = MountedSecret::new(&["localhost"]);
    let certs = Certificates::load(&[secret.paths()]).unwrap();
    let addr = serve(certs.acceptor(Versions::Tls13Only)).await;
    assert!(!certs.reload().unwrap(), "nothing changed yet");

    let mut before = connect(addr, "localhost", std::slice::from_ref(&old), BOTH)
        .await
        .unwrap();
    let new = secret.update(|dir| make_pair(dir, &["localhost"]));
    assert!(certs.reload().unwrap());
    assert_eq!(certs.fingerprint(), fingerprint(&new));
    assert!(!certs.reload().unwrap(), "a second look sees no change");

    let after = connect(addr, "localhost", &[old.clone(), new.clone()], BOTH)
        .await
        .unwrap();
    assert_eq!(presented(&after), fingerprint(&new));
    assert_eq!(presented(&before), fingerprint(&old));
    assert_eq!(echo(&mut before, "still here").await, "still here\n");
}

#[tokio::test]
async fn a_corrupt_replacement_keeps_the_old_certificate() {
    let (mut secret, old) = MountedSecret::new(&["localhost"]);
    let certs = Certificates::load(&[secret.paths()]).unwrap();
    let addr = serve(certs.acceptor(Versions::Tls13Only)).await;

    secret.update(|dir| {
        make_pair(dir, &["localhost"]);
        std::fs::write(
            dir.join("tls.crt"),
            "-----BEGIN CERTIFICATE-----\nnot base64!\n",
        )
        .unwrap();
    });
    let err = format!("{:#}", certs.reload().unwrap_err());
    assert!(
        err.contains("tls.crt") && err.contains("keeping the previous"),
        "{err}"
    );
    let again = format!("{:#}", certs.reload().unwrap_err());
    assert_eq!(err, again, "bad files stay an error until fixed");
    assert_eq!(certs.fingerprint(), fingerprint(&old));
    let client = connect(addr, "localhost", std::slice::from_ref(&old), BOTH)
        .await
        .unwrap();
    assert_eq!(presented(&client), fingerprint(&old));

    // A key from another pair is as bad as a corrupt file.
    let stray = tempfile::tempdir().unwrap();
    make_pair(stray.path(), &["localhost"]);
    secret.update(|dir| {
        make_pair(dir, &["localhost"]);
        std::fs::copy(stray.path().join("tls.key"), dir.join("tls.key")).unwrap();
    });
    let err = format!("{:#}", certs.reload().unwrap_err());
    assert!(err.contains("does not match"), "{err}");
    assert_eq!(certs.fingerprint(), fingerprint(&old));

    // Fixed files are picked up again.
    let new = secret.update(|dir| make_pair(dir, &["localhost"]));
    assert!(certs.reload().unwrap());
    assert_eq!(certs.fingerprint(), fingerprint(&new));
}

#[tokio::test]
async fn the_reloader_task_notices_a_symlink_swap() {
    let (mut secret, _) = MountedSecret::new(&["localhost"]);
    let certs = Certificates::load(&[secret.paths()]).unwrap();
    let mut reloads = certs.subscribe();
    let reloader = certs.spawn_reloader_every(std::time::Duration::from_millis(20));

    let new = secret.update(|dir| make_pair(dir, &["localhost"]));
    let wait = tokio::time::timeout(std::time::Duration::from_secs(30), reloads.changed());
    wait.await.expect("no reload within 30 s").unwrap();
    assert_eq!(certs.fingerprint(), fingerprint(&new));

    // The task holds no strong reference: dropping the certificates ends it.
    drop(certs);
    tokio::time::timeout(std::time::Duration::from_secs(30), reloader)
        .await
        .expect("the reloader outlived its certificates")
        .unwrap();
}

/// Errors name the file and say what is wrong with it.
#[test]
fn load_errors_name_the_file_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good");
    make_pair(&good, &["localhost"]);
    let other = dir.path().join("other");
    make_pair(&other, &["localhost"]);
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\nAAAA\n").unwrap();
    let missing = dir.path().join("missing.pem");
    let bogus = dir.path().join("bogus.pem");
    std::fs::write(
        &bogus,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();

    let cert = good.join("tls.crt");
    let key = good.join("tls.key");
    let stray_key = other.join("tls.key");
    let cases = [
        (
            &missing,
            &key,
            &missing,
            "cannot read the TLS certificate chain",
        ),
        (&cert, &missing, &missing, "cannot read the TLS private key"),
        (&empty, &key, &empty, "no \"BEGIN CERTIFICATE\" block"),
        (&cert, &empty, &empty, "no \"BEGIN PRIVATE KEY\" block"),
        (&key, &key, &key, "no \"BEGIN CERTIFICATE\" block"),
        (&cert, &cert, &cert, "no \"BEGIN PRIVATE KEY\" block"),
        (
            &garbage,
            &key,
            &garbage,
            "no \"-----END CERTIFICATE-----\" line",
        ),
        (&bogus, &key, &bogus, "not a valid X.509 certificate"),
        (&cert, &stray_key, &stray_key, "does not match"),
    ];
    for (cert, key, named, problem) in cases {
        let paths = CertKeyPaths {
            cert: cert.clone(),
            key: key.clone(),
        };
        let message = format!("{:#}", Certificates::load(&[paths]).unwrap_err());
        assert!(message.contains(&named.display().to_string()), "{message}");
        assert!(message.contains(problem), "{message}");
    }
    assert!(Certificates::load(&[]).is_err());
}

/// A certificate valid from `not_before` to `not_after` (year, month, day).
fn dated(
    not_before: (i32, u8, u8),
    not_after: (i32, u8, u8),
) -> rcgen::CertifiedKey<rcgen::KeyPair> {
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.not_before = rcgen::date_time_ymd(not_before.0, not_before.1, not_before.2);
    params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
    let signing_key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&signing_key).unwrap();
    rcgen::CertifiedKey { cert, signing_key }
}

#[test]
fn expired_and_expiring_certificates_are_warned_about_but_still_load() {
    let at = |unix: u64| std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix);
    let (jun_2019, jun_2020) = (1_559_347_200, 1_590_969_600);
    let (jan_2029, jul_2029, dec_25_2029) = (1_861_920_000, 1_877_558_400, 1_892_851_200);

    let old = dated((2019, 1, 1), (2020, 1, 1));
    let der = old.cert.der();
    assert_eq!(expiry_warning(der, at(jun_2019)), None);
    let expired = expiry_warning(der, at(jun_2020));
    assert_eq!(expired.as_deref(), Some("expired on 2020-01-01 00:00 UTC"));

    let future = dated((2029, 6, 1), (2030, 1, 1));
    let der = future.cert.der();
    let early = expiry_warning(der, at(jan_2029));
    assert_eq!(
        early.as_deref(),
        Some("not valid before 2029-06-01 00:00 UTC")
    );
    let soon = expiry_warning(der, at(dec_25_2029));
    assert_eq!(soon.as_deref(), Some("expires on 2030-01-01 00:00 UTC"));
    assert_eq!(expiry_warning(der, at(jul_2029)), None);

    // Loading warns but serves: port 25 peers rarely verify, and no TLS at all is worse.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tls.crt"), old.cert.pem()).unwrap();
    std::fs::write(dir.path().join("tls.key"), old.signing_key.serialize_pem()).unwrap();
    let certs = Certificates::load(&[CertKeyPaths::in_dir(dir.path())]).unwrap();
    assert_eq!(certs.fingerprint(), fingerprint(old.cert.der()));
}

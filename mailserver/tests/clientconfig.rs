//! Client self-configuration served by the real binary over HTTPS (`--listen https=`) and on
//! the operations port: curl fetches each document, verifying the server's certificate, and
//! Python's XML and plist parsers check every field a client reads; the MTA-STS policy is
//! checked against RFC 8461's format. A domain the server does not host gets 404.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Kills the server if the test fails half-way.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A certificate for the names a client asks for, made by openssl (a real CA tool).
fn certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=mail.example.net"])
        .arg("-addext")
        .arg(
            "subjectAltName=DNS:mail.example.net,DNS:mta-sts.example.com,\
             DNS:autoconfig.example.com,DNS:mta-sts.other.org,IP:127.0.0.1",
        )
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(status.success(), "openssl req");
    (cert, key)
}

/// curl (verifying against `ca`), `host` resolved to 127.0.0.1: status, content type, body.
fn curl(ca: &Path, url: &str, resolve: Option<&str>, post: Option<&str>) -> (u16, String, String) {
    let mut command = Command::new("curl");
    command
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(ca)
        .args(["-w", "\n%{http_code} %{content_type}"]);
    if let Some(resolve) = resolve {
        command.args(["--resolve", resolve]);
    }
    if let Some(body) = post {
        command.args(["-H", "Content-Type: text/xml", "--data-binary", body]);
    }
    let output = command.arg(url).output().expect("curl runs");
    assert!(
        output.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("UTF-8");
    let (body, tail) = text.rsplit_once('\n').expect("status line");
    let (status, content_type) = tail.split_once(' ').unwrap_or((tail, ""));
    (
        status.parse().expect("status"),
        content_type.to_string(),
        body.to_string(),
    )
}

/// Runs the Python `check` with the document parsed as `root` (XML) or `plist`.
fn python(document: &str, check: &str) {
    let script = format!(
        "import sys, plistlib, xml.etree.ElementTree as ET\ndata = sys.stdin.buffer.read()\n{check}\n"
    );
    let mut child = Command::new("python3")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(document.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("python3");
    assert!(
        out.status.success(),
        "{}\n--- document:\n{document}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What Thunderbird's autoconfig reader takes from every server entry.
const THUNDERBIRD: &str = r#"
root = ET.fromstring(data)
assert root.tag == "clientConfig" and root.get("version") == "1.1"
p = root.find("emailProvider")
assert [d.text for d in p.findall("domain")] == ["example.com"]
incoming, outgoing = p.findall("incomingServer"), p.findall("outgoingServer")
assert {s.get("type") for s in incoming} == {"imap", "pop3"}, incoming
assert {s.get("type") for s in outgoing} == {"smtp"}, outgoing
for s in incoming + outgoing:
    for field in ("hostname", "port", "socketType", "username", "authentication"):
        assert s.find(field) is not None and s.find(field).text, (s.get("type"), field)
    assert s.find("hostname").text == "mail.example.net"
    assert s.find("socketType").text in ("SSL", "STARTTLS")
    assert s.find("username").text == "%EMAILADDRESS%"
    assert s.find("authentication").text == "password-cleartext"
ports = {(s.get("type"), s.find("port").text, s.find("socketType").text) for s in incoming + outgoing}
assert ("imap", "993", "SSL") in ports and ("pop3", "995", "SSL") in ports, ports
assert ("smtp", "465", "SSL") in ports and ("smtp", "587", "STARTTLS") in ports, ports
"#;

/// RFC 8461 §3.2: `key: value` lines ending in CRLF, `version: STSv1` first, a mode, the MX
/// patterns and a max_age of at most a year.
const MTA_STS: &str = r#"
text = data.decode("ascii")
assert text.endswith("\r\n"), repr(text)
lines = text[:-2].split("\r\n")
pairs = [line.split(": ", 1) for line in lines]
assert all(len(p) == 2 for p in pairs), lines
assert pairs[0] == ["version", "STSv1"], pairs
fields = {}
for k, v in pairs:
    fields.setdefault(k, []).append(v)
assert fields["mode"] == ["enforce"], fields
assert fields["mx"] == ["mail.example.net"], fields
assert 0 < int(fields["max_age"][0]) <= 31557600, fields
"#;

#[test]
fn client_configuration_over_https_and_http() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = certificate(dir.path());
    let manifests = dir.path().join("manifests");
    std::fs::create_dir(&manifests).expect("mkdir");
    std::fs::write(
        manifests.join("domain.yaml"),
        "apiVersion: mail.kubemail.io/v1alpha1\nkind: MailDomain\nmetadata:\n  name: example-com\n\
         spec:\n  domain: example.com\n",
    )
    .expect("manifest");
    let database = mail_testkit::fresh_database();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mailserver"))
        .arg("--database-url")
        .arg(&database)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--manifests")
        .arg(&manifests)
        .args(["--hostname", "mail.example.net"])
        .args([
            "--listen",
            "imaps=127.0.0.1:0",
            "--listen",
            "https=127.0.0.1:0",
        ])
        .args(["--http-listen", "127.0.0.1:0"])
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("mailserver binary starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let _server = Server(child);
    let (mut https, mut http) = (None, None);
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("stdout");
        if let Some(addr) = line.strip_prefix("HTTPS listening on ") {
            https = Some(addr.to_string());
        } else if let Some(addr) = line.strip_prefix("HTTP listening on ") {
            http = Some(addr.to_string());
        } else if line == "ready" {
            break;
        }
    }
    let https = https.expect("an HTTPS line before `ready`");
    let http = http.expect("an HTTP line before `ready`");
    let port = https.rsplit_once(':').expect("port").1.to_string();
    let base = format!("https://{https}");

    // Thunderbird: both paths, by address and by the autoconfig host.
    for path in [
        "/mail/config-v1.1.xml?emailaddress=alice%40example.com",
        "/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=alice@Example.COM",
    ] {
        let (status, content_type, body) = curl(&cert, &format!("{base}{path}"), None, None);
        assert_eq!(status, 200, "{path}: {body}");
        assert!(
            content_type.starts_with("application/xml"),
            "{content_type}"
        );
        python(&body, THUNDERBIRD);
    }
    let (status, _, body) = curl(
        &cert,
        &format!("https://autoconfig.example.com:{port}/mail/config-v1.1.xml"),
        Some(&format!("autoconfig.example.com:{port}:127.0.0.1")),
        None,
    );
    assert_eq!(status, 200, "{body}");
    python(&body, THUNDERBIRD);
    // The same document on the plain operations port (behind an ingress).
    let (status, _, body) = curl(
        &cert,
        &format!("http://{http}/mail/config-v1.1.xml?emailaddress=alice@example.com"),
        None,
        None,
    );
    assert_eq!(status, 200, "{body}");
    python(&body, THUNDERBIRD);

    // Nothing about domains served elsewhere, and a clear 400 for a bad address.
    let (status, _, _) = curl(
        &cert,
        &format!("{base}/mail/config-v1.1.xml?emailaddress=alice@other.org"),
        None,
        None,
    );
    assert_eq!(status, 404);
    let (status, _, body) = curl(
        &cert,
        &format!("{base}/mail/config-v1.1.xml?emailaddress=no-at-sign"),
        None,
        None,
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("emailaddress"), "{body}");

    // Outlook POX autodiscover.
    let request = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\
        <Autodiscover xmlns=\"http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006\">\
        <Request><EMailAddress>alice@example.com</EMailAddress>\
        <AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema>\
        </Request></Autodiscover>";
    let (status, _, body) = curl(
        &cert,
        &format!("{base}/autodiscover/autodiscover.xml"),
        None,
        Some(request),
    );
    assert_eq!(status, 200, "{body}");
    python(
        &body,
        r#"
ns = {"r": "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"}
root = ET.fromstring(data)
account = root.find("r:Response/r:Account", ns)
assert account.find("r:AccountType", ns).text == "email"
protocols = {p.find("r:Type", ns).text: p for p in account.findall("r:Protocol", ns)}
assert set(protocols) == {"IMAP", "SMTP"}, protocols
for p in protocols.values():
    assert p.find("r:Server", ns).text == "mail.example.net"
    assert p.find("r:LoginName", ns).text == "alice@example.com"
    assert p.find("r:SSL", ns).text == "on"
assert protocols["IMAP"].find("r:Port", ns).text == "993"
assert protocols["SMTP"].find("r:Port", ns).text == "465"
"#,
    );
    let (status, _, _) = curl(
        &cert,
        &format!("{base}/autodiscover/autodiscover.xml"),
        None,
        Some(&request.replace("alice@example.com", "alice@other.org")),
    );
    assert_eq!(status, 404);

    // Apple configuration profile.
    let (status, content_type, body) = curl(
        &cert,
        &format!("{base}/apple/mobileconfig?emailaddress=alice@example.com"),
        None,
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(content_type, "application/x-apple-aspen-config");
    python(
        &body,
        r#"
p = plistlib.loads(data)
assert p["PayloadType"] == "Configuration"
[a] = p["PayloadContent"]
assert a["PayloadType"] == "com.apple.mail.managed" and a["EmailAccountType"] == "EmailTypeIMAP"
assert a["EmailAddress"] == a["IncomingMailServerUsername"] == "alice@example.com"
assert a["IncomingMailServerHostName"] == "mail.example.net"
assert a["IncomingMailServerPortNumber"] == 993 and a["IncomingMailServerUseSSL"]
assert a["OutgoingMailServerPortNumber"] == 465 and a["OutgoingMailServerUseSSL"]
"#,
    );

    // MTA-STS, by the Host the sending MTA connects to.
    let (status, content_type, body) = curl(
        &cert,
        &format!("https://mta-sts.example.com:{port}/.well-known/mta-sts.txt"),
        Some(&format!("mta-sts.example.com:{port}:127.0.0.1")),
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    python(&body, MTA_STS);
    let (status, _, _) = curl(
        &cert,
        &format!("https://mta-sts.other.org:{port}/.well-known/mta-sts.txt"),
        Some(&format!("mta-sts.other.org:{port}:127.0.0.1")),
        None,
    );
    assert_eq!(status, 404);
}

//! Client self-configuration documents for a hosted domain, from the same settings as its DNS
//! records: Thunderbird autoconfig (`/mail/config-v1.1.xml`), Outlook autodiscover (POX) and an
//! Apple configuration profile (`.mobileconfig`). Pure; the mail pods serve them over HTTPS.

use sha2::{Digest, Sha256};

use crate::dns::DnsSettings;

/// `&`, `<`, `>`, `"` and `'` escaped for XML text and attributes.
fn xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// (type, port, socketType) of each server a client may use, implicit TLS first (RFC 8314).
const INCOMING: [(&str, u16, &str); 3] = [
    ("imap", 993, "SSL"),
    ("imap", 143, "STARTTLS"),
    ("pop3", 995, "SSL"),
];
const OUTGOING: [(u16, &str); 2] = [(465, "SSL"), (587, "STARTTLS")];

/// Thunderbird's autoconfig file (the `clientConfig` 1.1 format) for `domain`.
pub fn thunderbird_autoconfig(domain: &str, settings: &DnsSettings) -> String {
    let host = xml(&settings.mail_host);
    let domain = xml(domain);
    let server = |tag: &str, kind: &str, port: u16, socket: &str| {
        format!(
            "    <{tag} type=\"{kind}\">\n      <hostname>{host}</hostname>\n      \
             <port>{port}</port>\n      <socketType>{socket}</socketType>\n      \
             <authentication>password-cleartext</authentication>\n      \
             <username>%EMAILADDRESS%</username>\n    </{tag}>\n"
        )
    };
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<clientConfig version=\"1.1\">\n  \
         <emailProvider id=\"{domain}\">\n    <domain>{domain}</domain>\n    \
         <displayName>{domain} mail</displayName>\n    <displayShortName>{domain}</displayShortName>\n"
    );
    for (kind, port, socket) in INCOMING {
        out.push_str(&server("incomingServer", kind, port, socket));
    }
    for (port, socket) in OUTGOING {
        out.push_str(&server("outgoingServer", "smtp", port, socket));
    }
    out.push_str("  </emailProvider>\n</clientConfig>\n");
    out
}

/// Outlook's POX autodiscover response for `email`.
pub fn outlook_autodiscover(email: &str, settings: &DnsSettings) -> String {
    let host = xml(&settings.mail_host);
    let email = xml(email);
    let protocol = |kind: &str, port: u16| {
        format!(
            "      <Protocol>\n        <Type>{kind}</Type>\n        <Server>{host}</Server>\n        \
             <Port>{port}</Port>\n        <LoginName>{email}</LoginName>\n        \
             <SPA>off</SPA>\n        <SSL>on</SSL>\n        <AuthRequired>on</AuthRequired>\n      \
             </Protocol>\n"
        )
    };
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n\
         <Autodiscover xmlns=\"http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006\">\n  \
         <Response xmlns=\"http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a\">\n    \
         <Account>\n      <AccountType>email</AccountType>\n      <Action>settings</Action>\n{}{}    \
         </Account>\n  </Response>\n</Autodiscover>\n",
        protocol("IMAP", 993),
        protocol("SMTP", 465)
    )
}

/// A UUID (version 4 layout) derived from `seed`, so a profile is the same on every pod and
/// every request: a device replaces the profile it has instead of adding a second one.
fn stable_uuid(seed: &str) -> String {
    let mut b: [u8; 16] = Sha256::digest(seed.as_bytes())[..16]
        .try_into()
        .unwrap_or([0; 16]);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode_upper(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// An unsigned Apple configuration profile (`com.apple.mail.managed`) with one IMAP account for
/// `email`: IMAP on 993 and submission on 465, both implicit TLS, password authentication.
pub fn apple_mobileconfig(email: &str, settings: &DnsSettings) -> String {
    let host = xml(&settings.mail_host);
    let domain = email.rsplit_once('@').map_or(email, |(_, d)| d);
    let reverse: Vec<&str> = domain.split('.').rev().collect();
    let id = xml(&format!("{}.mail", reverse.join(".")));
    let account_uuid = stable_uuid(&format!("account:{email}"));
    let profile_uuid = stable_uuid(&format!("profile:{email}"));
    let email = xml(email);
    let domain = xml(domain);
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>
<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">
<plist version=\"1.0\">
<dict>
  <key>PayloadContent</key>
  <array>
    <dict>
      <key>EmailAccountDescription</key><string>{email}</string>
      <key>EmailAccountName</key><string>{email}</string>
      <key>EmailAccountType</key><string>EmailTypeIMAP</string>
      <key>EmailAddress</key><string>{email}</string>
      <key>IncomingMailServerAuthentication</key><string>EmailAuthPassword</string>
      <key>IncomingMailServerHostName</key><string>{host}</string>
      <key>IncomingMailServerPortNumber</key><integer>993</integer>
      <key>IncomingMailServerUseSSL</key><true/>
      <key>IncomingMailServerUsername</key><string>{email}</string>
      <key>OutgoingMailServerAuthentication</key><string>EmailAuthPassword</string>
      <key>OutgoingMailServerHostName</key><string>{host}</string>
      <key>OutgoingMailServerPortNumber</key><integer>465</integer>
      <key>OutgoingMailServerUseSSL</key><true/>
      <key>OutgoingMailServerUsername</key><string>{email}</string>
      <key>OutgoingPasswordSameAsIncomingPassword</key><true/>
      <key>PayloadDisplayName</key><string>{email}</string>
      <key>PayloadIdentifier</key><string>{id}.account</string>
      <key>PayloadType</key><string>com.apple.mail.managed</string>
      <key>PayloadUUID</key><string>{account_uuid}</string>
      <key>PayloadVersion</key><integer>1</integer>
    </dict>
  </array>
  <key>PayloadDisplayName</key><string>{domain} mail</string>
  <key>PayloadIdentifier</key><string>{id}</string>
  <key>PayloadRemovalDisallowed</key><false/>
  <key>PayloadType</key><string>Configuration</string>
  <key>PayloadUUID</key><string>{profile_uuid}</string>
  <key>PayloadVersion</key><integer>1</integer>
</dict>
</plist>
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> DnsSettings {
        DnsSettings {
            mail_host: "mail.example.net".to_string(),
            ttl: 3600,
        }
    }

    /// Parses `document` with Python's XML parser (a real one) and runs `check` on its root.
    fn python_checks(document: &str, check: &str) -> Result<(), String> {
        let script = format!(
            "import sys, xml.etree.ElementTree as ET\nroot = ET.fromstring(sys.stdin.read())\n{check}\n"
        );
        let mut child = std::process::Command::new("python3")
            .args(["-c", &script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(document.as_bytes())
            .map_err(|e| e.to_string())?;
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Every field Thunderbird's autoconfig reader requires of a server, on every server.
    const THUNDERBIRD_FIELDS: &str = r#"
assert root.tag == "clientConfig" and root.get("version") == "1.1"
p = root.find("emailProvider")
assert p.get("id") == "example.com"
assert [d.text for d in p.findall("domain")] == ["example.com"]
assert p.find("displayName").text and p.find("displayShortName").text
servers = p.findall("incomingServer") + p.findall("outgoingServer")
assert {s.get("type") for s in servers} == {"imap", "pop3", "smtp"}, servers
for s in servers:
    for field in ("hostname", "port", "socketType", "authentication", "username"):
        assert s.find(field) is not None and s.find(field).text, (s.get("type"), field)
    assert s.find("hostname").text == "mail.example.net"
    assert s.find("socketType").text in ("SSL", "STARTTLS", "plain")
    assert 0 < int(s.find("port").text) < 65536
assert p.find("incomingServer").find("port").text == "993"
"#;

    #[test]
    fn thunderbird_autoconfig_has_every_field_thunderbird_reads() {
        let document = thunderbird_autoconfig("example.com", &settings());
        python_checks(&document, THUNDERBIRD_FIELDS).expect("valid autoconfig");
        // The check can fail: a server without a username is refused.
        let broken = document.replacen("<username>%EMAILADDRESS%</username>", "", 1);
        assert!(python_checks(&broken, THUNDERBIRD_FIELDS).is_err());
    }

    #[test]
    fn outlook_autodiscover_names_imap_and_smtp_for_the_address() {
        let document = outlook_autodiscover("a&b@example.com", &settings());
        python_checks(
            &document,
            r#"
ns = {"r": "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"}
protocols = root.findall("r:Response/r:Account/r:Protocol", ns)
assert [p.find("r:Type", ns).text for p in protocols] == ["IMAP", "SMTP"]
for p in protocols:
    assert p.find("r:Server", ns).text == "mail.example.net"
    assert p.find("r:LoginName", ns).text == "a&b@example.com"
"#,
        )
        .expect("valid autodiscover");
    }

    #[test]
    fn apple_profile_is_a_plist_with_one_imap_account() {
        let document = apple_mobileconfig("alice@example.com", &settings());
        let script = r#"
import plistlib, sys
p = plistlib.loads(sys.stdin.buffer.read())
assert p["PayloadType"] == "Configuration" and p["PayloadVersion"] == 1
[a] = p["PayloadContent"]
assert a["PayloadType"] == "com.apple.mail.managed"
assert a["EmailAccountType"] == "EmailTypeIMAP"
assert a["EmailAddress"] == a["IncomingMailServerUsername"] == "alice@example.com"
assert a["IncomingMailServerHostName"] == a["OutgoingMailServerHostName"] == "mail.example.net"
assert (a["IncomingMailServerPortNumber"], a["OutgoingMailServerPortNumber"]) == (993, 465)
assert a["IncomingMailServerUseSSL"] is True and a["OutgoingMailServerUseSSL"] is True
assert a["PayloadUUID"] != p["PayloadUUID"]
"#;
        let out = std::process::Command::new("python3")
            .args(["-c", script])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child
                    .stdin
                    .take()
                    .expect("stdin")
                    .write_all(document.as_bytes())?;
                child.wait_with_output()
            })
            .expect("python3");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The same address gives the same profile (a device replaces it, adds no second one).
        assert_eq!(
            document,
            apple_mobileconfig("alice@example.com", &settings())
        );
        assert_ne!(document, apple_mobileconfig("bob@example.com", &settings()));
    }
}

//! The DNS records a hosted domain needs, built from the domain, the mail host and its DKIM
//! public keys: structured for `MailDomain.status` and as a zone snippet to paste. Pure.

use mail_resources::{DkimAlgorithm, DnsRecord};
use sha2::{Digest, Sha256};

/// A TXT record holds strings of at most 255 bytes each (RFC 1035 §3.3).
pub const TXT_STRING_MAX: usize = 255;

/// Where the domain's mail is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSettings {
    /// The host name of the mail service (MX, IMAP, submission, MTA-STS), without a final dot.
    pub mail_host: String,
    /// The TTL the zone snippet writes.
    pub ttl: u32,
}

/// One DKIM selector's public half, as the key generator stored it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DkimPublicKey {
    pub selector: String,
    pub algorithm: DkimAlgorithm,
    /// Base64 of the DER SubjectPublicKeyInfo (RSA) or of the 32 raw bytes (Ed25519).
    pub public_key: String,
}

/// The DKIM TXT record value (RFC 6376 §3.6.1, RFC 8463 for `k=ed25519`).
pub fn dkim_txt(algorithm: DkimAlgorithm, public_key: &str) -> String {
    let k = match algorithm {
        DkimAlgorithm::Rsa2048 => "rsa",
        DkimAlgorithm::Ed25519 => "ed25519",
    };
    format!("v=DKIM1; k={k}; p={public_key}")
}

/// `value` cut into strings of at most 255 bytes, never inside a UTF-8 character.
pub fn txt_strings(value: &str) -> Vec<&str> {
    let mut strings = Vec::new();
    let mut rest = value;
    while rest.len() > TXT_STRING_MAX {
        let mut cut = TXT_STRING_MAX;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (head, tail) = rest.split_at(cut);
        strings.push(head);
        rest = tail;
    }
    strings.push(rest);
    strings
}

/// TXT data as a zone file writes it: each string quoted, `"` and `\` escaped.
pub fn txt_data(value: &str) -> String {
    txt_strings(value)
        .iter()
        .map(|s| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The text of zone-file TXT data: its quoted strings unescaped and joined (the inverse of
/// [`txt_data`]).
pub fn txt_text(data: &str) -> String {
    let mut text = String::new();
    let (mut quoted, mut escaped) = (false, false);
    for c in data.chars() {
        match (quoted, escaped, c) {
            (true, true, c) => {
                text.push(c);
                escaped = false;
            }
            (true, false, '\\') => escaped = true,
            (_, false, '"') => quoted = !quoted,
            (true, false, c) => text.push(c),
            (false, _, _) => {}
        }
    }
    text
}

/// The MTA-STS policy served at `https://mta-sts.<domain>/.well-known/mta-sts.txt` (RFC 8461).
pub fn mta_sts_policy(settings: &DnsSettings) -> String {
    format!(
        "version: STSv1\r\nmode: enforce\r\nmx: {}\r\nmax_age: 604800\r\n",
        settings.mail_host
    )
}

/// The `_mta-sts` id: changes whenever the policy does (1-32 alphanumerics).
fn mta_sts_id(policy: &str) -> String {
    hex::encode(&Sha256::digest(policy.as_bytes())[..10])
}

/// Every record the domain should publish, in a stable order.
pub fn records(domain: &str, settings: &DnsSettings, dkim: &[DkimPublicKey]) -> Vec<DnsRecord> {
    let apex = format!("{domain}.");
    let host = format!("{}.", settings.mail_host);
    let at = |label: &str| format!("{label}.{domain}.");
    let record = |name: String, record_type: &str, value: String| DnsRecord {
        name,
        record_type: record_type.to_string(),
        value,
    };
    let srv = |service: &str, priority: u16, port: u16| {
        record(at(service), "SRV", format!("{priority} 1 {port} {host}"))
    };
    let policy = mta_sts_policy(settings);
    let mut out = vec![
        record(apex.clone(), "MX", format!("10 {host}")),
        record(apex.clone(), "TXT", txt_data("v=spf1 mx -all")),
        record(
            at("_dmarc"),
            "TXT",
            txt_data(&format!(
                "v=DMARC1; p=quarantine; rua=mailto:postmaster@{domain}"
            )),
        ),
    ];
    for key in dkim {
        out.push(record(
            at(&format!("{}._domainkey", key.selector)),
            "TXT",
            txt_data(&dkim_txt(key.algorithm, &key.public_key)),
        ));
    }
    out.extend([
        record(
            at("_mta-sts"),
            "TXT",
            txt_data(&format!("v=STSv1; id={}", mta_sts_id(&policy))),
        ),
        record(at("mta-sts"), "CNAME", host.clone()),
        record(
            at("_smtp._tls"),
            "TXT",
            txt_data(&format!("v=TLSRPTv1; rua=mailto:postmaster@{domain}")),
        ),
        // RFC 8314 §5.1: implicit TLS preferred (lower priority number) over STARTTLS.
        srv("_submissions._tcp", 0, 465),
        srv("_submission._tcp", 10, 587),
        srv("_imaps._tcp", 0, 993),
        srv("_imap._tcp", 10, 143),
        srv("_pop3s._tcp", 0, 995),
        srv("_pop3._tcp", 10, 110),
        srv("_autodiscover._tcp", 0, 443),
        record(at("autoconfig"), "CNAME", host.clone()),
        record(at("autodiscover"), "CNAME", host),
    ]);
    out
}

/// The records as zone file lines, ready to paste into the domain's zone.
pub fn zone_snippet(records: &[DnsRecord], ttl: u32) -> String {
    records
        .iter()
        .map(|r| format!("{} {ttl} IN {} {}\n", r.name, r.record_type, r.value))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txt_strings_split_at_255_bytes() {
        let cases: [(usize, Vec<usize>); 5] = [
            (0, vec![0]),
            (255, vec![255]),
            (256, vec![255, 1]),
            (510, vec![255, 255]),
            (600, vec![255, 255, 90]),
        ];
        for (len, want) in cases {
            let value = "a".repeat(len);
            let got: Vec<usize> = txt_strings(&value).iter().map(|s| s.len()).collect();
            assert_eq!(got, want, "{len}");
        }
        // Never inside a character: 254 ASCII bytes then a 2-byte one.
        let value = format!("{}é", "a".repeat(254));
        let got: Vec<usize> = txt_strings(&value).iter().map(|s| s.len()).collect();
        assert_eq!(got, vec![254, 2]);
    }

    #[test]
    fn txt_data_quotes_and_escapes() {
        assert_eq!(txt_data(r#"a"b\c"#), r#""a\"b\\c""#);
        let long = "x".repeat(300);
        assert_eq!(
            txt_data(&long),
            format!("\"{}\" \"{}\"", "x".repeat(255), "x".repeat(45))
        );
    }

    #[test]
    fn txt_text_inverts_txt_data() {
        for value in ["", "v=spf1 mx -all", r#"a"b\c"#, &"k".repeat(600)] {
            assert_eq!(txt_text(&txt_data(value)), value);
        }
    }

    #[test]
    fn records_name_every_service() {
        let settings = DnsSettings {
            mail_host: "mail.example.net".to_string(),
            ttl: 3600,
        };
        let keys = [DkimPublicKey {
            selector: "s1".to_string(),
            algorithm: DkimAlgorithm::Ed25519,
            public_key: "AAAA".to_string(),
        }];
        let records = records("example.com", &settings, &keys);
        let find = |name: &str, t: &str| {
            records
                .iter()
                .find(|r| r.name == name && r.record_type == t)
                .map(|r| r.value.as_str())
                .unwrap_or_else(|| panic!("no {t} at {name}"))
        };
        assert_eq!(find("example.com.", "MX"), "10 mail.example.net.");
        assert_eq!(find("example.com.", "TXT"), "\"v=spf1 mx -all\"");
        assert_eq!(
            find("s1._domainkey.example.com.", "TXT"),
            "\"v=DKIM1; k=ed25519; p=AAAA\""
        );
        assert_eq!(
            find("_submissions._tcp.example.com.", "SRV"),
            "0 1 465 mail.example.net."
        );
        assert_eq!(
            find("_imaps._tcp.example.com.", "SRV"),
            "0 1 993 mail.example.net."
        );
        assert!(find("_mta-sts.example.com.", "TXT").starts_with("\"v=STSv1; id="));
        assert!(find("_smtp._tls.example.com.", "TXT").starts_with("\"v=TLSRPTv1;"));
        assert_eq!(
            find("autoconfig.example.com.", "CNAME"),
            "mail.example.net."
        );
        let zone = zone_snippet(&records, 300);
        assert!(
            zone.contains("example.com. 300 IN MX 10 mail.example.net.\n"),
            "{zone}"
        );
        assert_eq!(zone.lines().count(), records.len());
    }

    #[test]
    fn the_mta_sts_id_follows_the_policy() {
        let a = DnsSettings {
            mail_host: "a.example".to_string(),
            ttl: 1,
        };
        let b = DnsSettings {
            mail_host: "b.example".to_string(),
            ..a.clone()
        };
        let id_a = mta_sts_id(&mta_sts_policy(&a));
        assert_ne!(id_a, mta_sts_id(&mta_sts_policy(&b)));
        assert!(id_a.len() <= 32 && id_a.bytes().all(|b| b.is_ascii_alphanumeric()));
    }
}

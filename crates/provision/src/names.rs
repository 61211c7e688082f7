//! Syntax of the names the resources carry: domain names, addresses, bucket names.

use sha2::{Digest, Sha256};

/// Why a domain name is not acceptable; the text says what to fix.
pub fn check_domain(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty".into());
    }
    if name.len() > 253 {
        return Err("is longer than 253 characters".into());
    }
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err("must be lower case".into());
    }
    if !name.contains('.') {
        return Err("needs at least two labels, e.g. example.com".into());
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("has an empty label (a leading, trailing or double dot)".into());
        }
        if label.len() > 63 {
            return Err(format!("label {label:?} is longer than 63 characters"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(format!(
                "label {label:?} may hold only a-z, 0-9 and '-' (write an internationalized \
                 name in its xn-- form)"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label {label:?} must not start or end with '-'"));
        }
    }
    Ok(())
}

/// Characters RFC 5322 allows in a dot-atom besides letters and digits.
const ATEXT_SPECIALS: &[u8] = b"!#$%&'*+-/=?^_`{|}~";

/// Splits `local@domain`, checking a dot-atom local part and the domain. The address is taken
/// as it is; callers lower-case it first.
pub fn check_address(address: &str) -> Result<(&str, &str), String> {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return Err("is not of the form local-part@domain".into());
    };
    if local.is_empty() {
        return Err("has an empty local part".into());
    }
    if local.len() > 64 {
        return Err("has a local part longer than 64 characters".into());
    }
    let atext = |b: u8| b.is_ascii_alphanumeric() || ATEXT_SPECIALS.contains(&b);
    if local.split('.').any(|atom| atom.is_empty() || !atom.bytes().all(atext)) {
        return Err(format!(
            "local part {local:?} must be a dot-atom: letters, digits and !#$%&'*+-/=?^_`{{|}}~, \
             dots only between them"
        ));
    }
    check_domain(domain).map_err(|e| format!("domain {domain:?} {e}"))?;
    Ok((local, domain))
}

/// S3 allows 3..63 characters.
const BUCKET_MAX: usize = 63;

/// Checks a bucket-name prefix: lower-case letters, digits and '-', starting with a letter or
/// digit, short enough to leave room for a domain.
pub fn check_bucket_prefix(prefix: &str) -> Result<(), String> {
    let ok = !prefix.is_empty()
        && prefix.len() <= 40
        && prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !prefix.starts_with('-')
        && !prefix.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "bucket prefix {prefix:?} must be 1..40 characters of a-z, 0-9 and '-', \
             not starting or ending with '-'"
        ))
    }
}

/// The bucket of a domain: `<prefix>-<domain with dots as dashes>`. A name over 63 characters
/// is cut and ends in 8 hex digits of a hash of the full name, so it stays unique.
pub fn bucket_name(prefix: &str, domain: &str) -> String {
    let full = format!("{prefix}-{}", domain.replace('.', "-"));
    if full.len() <= BUCKET_MAX {
        return full;
    }
    let hash = hex::encode(&Sha256::digest(full.as_bytes())[..4]);
    // Only ASCII here (checked domains and prefixes), so byte slicing is on char boundaries.
    let head = full[..BUCKET_MAX - hash.len() - 1].trim_end_matches('-');
    format!("{head}-{hash}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains() {
        let long_label = "a".repeat(64);
        let long_name = format!("{}.com", "a.".repeat(126));
        let cases: &[(&str, bool)] = &[
            ("example.test", true),
            ("mail.example-1.co.uk", true),
            ("xn--bcher-kva.example", true),
            ("", false),
            ("localhost", false),
            ("Example.test", false),
            ("example..test", false),
            (".example.test", false),
            ("example.test.", false),
            ("-a.test", false),
            ("a-.test", false),
            ("exa_mple.test", false),
            ("bücher.test", false),
            (&format!("{long_label}.test"), false),
            (&long_name, false),
        ];
        for (name, ok) in cases {
            assert_eq!(check_domain(name).is_ok(), *ok, "{name:?}");
        }
    }

    #[test]
    fn addresses() {
        let cases: &[(&str, Option<(&str, &str)>)] = &[
            ("alice@example.test", Some(("alice", "example.test"))),
            ("a.b+tag@example.test", Some(("a.b+tag", "example.test"))),
            ("o'neil@sub.example.test", Some(("o'neil", "sub.example.test"))),
            ("alice", None),
            ("@example.test", None),
            ("alice@", None),
            ("alice@localhost", None),
            (".alice@example.test", None),
            ("al..ice@example.test", None),
            ("al ice@example.test", None),
            ("\"quoted\"@example.test", None),
            ("a@b@example.test", None),
        ];
        for (address, want) in cases {
            assert_eq!(check_address(address).ok(), *want, "{address:?}");
        }
        let long = format!("{}@example.test", "a".repeat(65));
        assert!(check_address(&long).is_err());
    }

    #[test]
    fn prefixes() {
        for good in ["mail", "m", "prod-mail2"] {
            assert!(check_bucket_prefix(good).is_ok(), "{good}");
        }
        for bad in ["", "-mail", "mail-", "Mail", "mail.x", &"a".repeat(41)] {
            assert!(check_bucket_prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn buckets() {
        assert_eq!(bucket_name("mail", "example.test"), "mail-example-test");
        assert_eq!(bucket_name("x", "a.b"), "x-a-b");
        let long = format!("{}.example.test", "sub".repeat(20));
        let a = bucket_name("mail", &long);
        let b = bucket_name("mail", &format!("x{long}"));
        for name in [&a, &b] {
            assert!((3..=63).contains(&name.len()), "{name}");
            assert!(
                name.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
            );
            assert!(!name.ends_with('-') && !name.contains("--"), "{name}");
        }
        assert_ne!(a, b, "truncated names stay distinct");
        assert_eq!(a, bucket_name("mail", &long), "stable");
    }
}

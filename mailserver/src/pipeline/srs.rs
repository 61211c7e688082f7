//! The Sender Rewriting Scheme (SRS0) for forwarded mail: the envelope sender of a message we
//! forward becomes an address of ours, so the next hop's SPF check sees our domain, and a bounce
//! to it finds its way back to the original sender.
//!
//! `SRS0=HHHH=TT=orig-domain=orig-local@our-domain`: `TT` is the day (base32, mod 1024), `HHHH`
//! an HMAC-SHA256 over the rest (base64 of its first bytes, compared without case). An address
//! older than [`MAX_AGE_DAYS`] or with a wrong hash is not reversed, so nobody can use us to
//! relay by making up SRS addresses.

use base64::Engine;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How long a rewritten address can take a bounce back.
pub const MAX_AGE_DAYS: u32 = 21;

const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

fn day(now: DateTime<Utc>) -> u32 {
    (now.timestamp().div_euclid(86_400) as u32) % 1024
}

fn timestamp(day: u32) -> String {
    [BASE32[(day >> 5) as usize & 31], BASE32[day as usize & 31]]
        .iter()
        .map(|&b| b as char)
        .collect()
}

fn hash(secret: &[u8], tt: &str, domain: &str, local: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key");
    mac.update(tt.to_ascii_lowercase().as_bytes());
    mac.update(domain.to_ascii_lowercase().as_bytes());
    mac.update(local.to_lowercase().as_bytes());
    let digest = mac.finalize().into_bytes();
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(&digest[..3])
}

/// The SRS0 form of `sender` at `our_domain`. The null sender stays null (nothing bounces to it).
pub fn forward(secret: &[u8], sender: &str, our_domain: &str, now: DateTime<Utc>) -> String {
    let Some((local, domain)) = sender.rsplit_once('@') else {
        return sender.to_string();
    };
    let tt = timestamp(day(now));
    let hh = hash(secret, &tt, domain, local);
    format!("SRS0={hh}={tt}={domain}={local}@{our_domain}")
}

/// The original sender of an SRS0 local part (as stored: lower-cased), when its hash and age
/// check out.
pub fn reverse(secret: &[u8], local: &str, now: DateTime<Utc>) -> Option<String> {
    let rest = local
        .strip_prefix("SRS0=")
        .or_else(|| local.strip_prefix("srs0="))?;
    let mut parts = rest.splitn(4, '=');
    let (hh, tt, domain, orig_local) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if domain.is_empty() || orig_local.is_empty() || tt.len() != 2 {
        return None;
    }
    let tt_value = tt.bytes().try_fold(0u32, |acc, b| {
        let digit = BASE32.iter().position(|&c| c == b.to_ascii_lowercase())? as u32;
        Some(acc << 5 | digit)
    })?;
    let age = (day(now) + 1024 - tt_value) % 1024;
    if age > MAX_AGE_DAYS {
        return None;
    }
    // Local parts reach us lower-cased, so the hash is compared without case, over the
    // lower-cased original.
    let want = hash(secret, tt, domain, orig_local);
    if !want.eq_ignore_ascii_case(hh) {
        return None;
    }
    Some(format!("{orig_local}@{domain}"))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn forward_and_back() {
        let now = Utc.with_ymd_and_hms(2026, 5, 1, 12, 0, 0).unwrap();
        let srs = forward(b"k", "bob@remote.test", "example.test", now);
        assert!(srs.starts_with("SRS0="), "{srs}");
        assert!(srs.ends_with("=remote.test=bob@example.test"), "{srs}");
        let (local, domain) = srs.rsplit_once('@').unwrap();
        assert_eq!(domain, "example.test");
        // As the store sees it: lower case.
        let lowered = local.to_lowercase();
        assert_eq!(
            reverse(b"k", &lowered, now).as_deref(),
            Some("bob@remote.test")
        );
        assert_eq!(
            reverse(b"k", local, now + chrono::Duration::days(20)).as_deref(),
            Some("bob@remote.test")
        );
        for (name, secret, local, at) in [
            ("other key", &b"x"[..], lowered.clone(), now),
            (
                "too old",
                b"k",
                lowered.clone(),
                now + chrono::Duration::days(30),
            ),
            ("forged target", b"k", lowered.replace("=bob", "=eve"), now),
            ("not srs", b"k", "alice".to_string(), now),
            ("truncated", b"k", "srs0=abcd=xx".to_string(), now),
        ] {
            assert_eq!(reverse(secret, &local, at), None, "{name}");
        }
        assert_eq!(forward(b"k", "", "example.test", now), "");
    }
}

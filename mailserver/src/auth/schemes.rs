//! The password hash schemes of existing Dovecot and Postfix installations, verified as they
//! are so imported users never notice the move: `{SCHEME}` prefixes as Dovecot writes them,
//! and the bare crypt(3)/PHC forms. New hashes are argon2id; a login with any other scheme
//! may rehash (see `local.rs`). Everything here is CPU work for the password pool.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

use argon2::Block;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;

use super::hasher;

/// Most SHA-crypt rounds verified (Dovecot writes 5,000): a stored hash must not pin a core.
const MAX_SHA_CRYPT_ROUNDS: u32 = 200_000;
/// Highest bcrypt cost verified (Dovecot writes 5, PHP 10-12).
const MAX_BCRYPT_COST: u32 = 15;

/// How a stored hash is checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scheme {
    Argon2,
    Sha512Crypt,
    Sha256Crypt,
    Bcrypt,
    /// Salted digest: base64 of `digest || salt`.
    Salted(Digester),
    /// Unsalted digest.
    Digest(Digester),
    /// The password itself (`{PLAIN}`, `{CLEAR}`): refused unless allowed.
    Plain,
    /// A scheme this server does not know: never matches.
    Unknown(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Digester {
    Sha1,
    Sha256,
    Sha512,
}

impl Digester {
    fn digest(self, parts: &[&[u8]]) -> Vec<u8> {
        fn run<D: Digest>(parts: &[&[u8]]) -> Vec<u8> {
            let mut d = D::new();
            for part in parts {
                d.update(part);
            }
            d.finalize().to_vec()
        }
        match self {
            Digester::Sha1 => run::<Sha1>(parts),
            Digester::Sha256 => run::<Sha256>(parts),
            Digester::Sha512 => run::<Sha512>(parts),
        }
    }

    fn len(self) -> usize {
        match self {
            Digester::Sha1 => 20,
            Digester::Sha256 => 32,
            Digester::Sha512 => 64,
        }
    }
}

/// How the digest of a `{SHA...}` scheme is written (Dovecot's `.HEX` / `.B64` suffixes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Encoding {
    Base64,
    Hex,
}

/// The scheme of `stored` and the part its verifier reads.
pub fn parse(stored: &str) -> (Scheme, &str) {
    let (name, rest) = match stored.strip_prefix('{').and_then(|s| s.split_once('}')) {
        Some((name, rest)) => (name.to_ascii_uppercase(), rest),
        None => return (bare(stored), stored),
    };
    let base = name
        .strip_suffix(".HEX")
        .or_else(|| name.strip_suffix(".B64"))
        .or_else(|| name.strip_suffix(".BASE64"))
        .unwrap_or(&name);
    let scheme = match base {
        "ARGON2ID" | "ARGON2I" if rest.starts_with("$argon2") => Scheme::Argon2,
        "SHA512-CRYPT" if rest.starts_with("$6$") => Scheme::Sha512Crypt,
        "SHA256-CRYPT" if rest.starts_with("$5$") => Scheme::Sha256Crypt,
        "BLF-CRYPT" => Scheme::Bcrypt,
        // Dovecot's CRYPT is crypt(3): the prefix says which.
        "CRYPT" => bare(rest),
        "SSHA512" => Scheme::Salted(Digester::Sha512),
        "SSHA256" => Scheme::Salted(Digester::Sha256),
        "SSHA" => Scheme::Salted(Digester::Sha1),
        "SHA512" => Scheme::Digest(Digester::Sha512),
        "SHA256" => Scheme::Digest(Digester::Sha256),
        "SHA" | "SHA1" => Scheme::Digest(Digester::Sha1),
        "PLAIN" | "CLEAR" => Scheme::Plain,
        _ => Scheme::Unknown(name.chars().take(32).collect()),
    };
    (scheme, rest)
}

fn bare(stored: &str) -> Scheme {
    if stored.starts_with("$argon2") {
        Scheme::Argon2
    } else if stored.starts_with("$6$") {
        Scheme::Sha512Crypt
    } else if stored.starts_with("$5$") {
        Scheme::Sha256Crypt
    } else if ["$2y$", "$2b$", "$2a$"]
        .iter()
        .any(|p| stored.starts_with(p))
    {
        Scheme::Bcrypt
    } else {
        // Never a piece of the value in the log: it may be a password stored as it is.
        Scheme::Unknown("(no scheme prefix)".to_string())
    }
}

fn encoding(stored: &str) -> Encoding {
    let name = stored.split('}').next().unwrap_or("").to_ascii_uppercase();
    if name.ends_with(".HEX") {
        Encoding::Hex
    } else {
        Encoding::Base64
    }
}

/// Whether `stored` is already what new hashes are (bare argon2id), so no rehash is due.
pub fn is_current(stored: &str) -> bool {
    stored.starts_with("$argon2id$")
}

/// Whether `password` matches `stored`, whatever its scheme. `{PLAIN}` matches only when
/// `allow_plain`; unknown schemes and malformed or too costly hashes never match.
pub fn verify(stored: &str, password: &str, allow_plain: bool, memory: &mut Vec<Block>) -> bool {
    let (scheme, rest) = parse(stored);
    match scheme {
        Scheme::Argon2 => hasher::verify_in(rest, password, memory),
        Scheme::Sha512Crypt => rounds_ok(rest) && sha_crypt::sha512_check(password, rest).is_ok(),
        Scheme::Sha256Crypt => rounds_ok(rest) && sha_crypt::sha256_check(password, rest).is_ok(),
        Scheme::Bcrypt => bcrypt_cost_ok(rest) && bcrypt::verify(password, rest).unwrap_or(false),
        Scheme::Salted(digester) => {
            let Some(decoded) = decode(rest, encoding(stored)) else {
                return false;
            };
            if decoded.len() <= digester.len() {
                return false;
            }
            let (expected, salt) = decoded.split_at(digester.len());
            let computed = digester.digest(&[password.as_bytes(), salt]);
            bool::from(computed.ct_eq(expected))
        }
        Scheme::Digest(digester) => {
            let Some(expected) = decode(rest, encoding(stored)) else {
                return false;
            };
            let computed = digester.digest(&[password.as_bytes()]);
            bool::from(computed.ct_eq(&expected))
        }
        Scheme::Plain => {
            if !allow_plain {
                log_once("PLAIN (refused: not allowed by --auth-allow-plaintext-hashes)");
                return false;
            }
            bool::from(rest.as_bytes().ct_eq(password.as_bytes()))
        }
        Scheme::Unknown(name) => {
            log_once(&name);
            false
        }
    }
}

fn decode(text: &str, encoding: Encoding) -> Option<Vec<u8>> {
    match encoding {
        Encoding::Base64 => BASE64.decode(text.trim()).ok(),
        Encoding::Hex => hex::decode(text.trim()).ok(),
    }
}

/// `$6$rounds=N$...`: N within bounds (no `rounds=` means 5,000).
fn rounds_ok(hash: &str) -> bool {
    let Some(params) = hash.get(3..).and_then(|h| h.strip_prefix("rounds=")) else {
        return true;
    };
    let digits: String = params.chars().take_while(char::is_ascii_digit).collect();
    digits
        .parse::<u32>()
        .is_ok_and(|n| n <= MAX_SHA_CRYPT_ROUNDS)
}

/// `$2y$NN$...`: cost NN within bounds.
fn bcrypt_cost_ok(hash: &str) -> bool {
    hash.get(4..6)
        .and_then(|cost| cost.parse::<u32>().ok())
        .is_some_and(|cost| cost <= MAX_BCRYPT_COST)
}

/// Says once per process that a scheme is not verified, so an import mistake shows in the
/// log without a line per login.
fn log_once(scheme: &str) {
    static SEEN: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let seen = SEEN.get_or_init(Mutex::default);
    let Ok(mut seen) = seen.lock() else {
        return;
    };
    if seen.len() < 64 && seen.insert(scheme.to_string()) {
        tracing::warn!(
            scheme,
            "password hash scheme not verified: such logins always fail"
        );
    }
}

/// A new argon2id hash of `password` (argon2's default parameters, the ones of `DUMMY_HASH`).
pub fn hash_argon2id(password: &str) -> Option<String> {
    use argon2::password_hash::{PasswordHasher, SaltString, rand_core::OsRng};
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &SaltString::generate(&mut OsRng))
        .ok()
        .map(|hash| hash.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_are_recognized() {
        for (stored, want) in [
            (
                "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaA",
                Scheme::Argon2,
            ),
            (
                "{ARGON2ID}$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaA",
                Scheme::Argon2,
            ),
            (
                "{argon2i}$argon2i$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaA",
                Scheme::Argon2,
            ),
            ("{SHA512-CRYPT}$6$salt$x", Scheme::Sha512Crypt),
            ("$6$salt$x", Scheme::Sha512Crypt),
            ("{CRYPT}$5$salt$x", Scheme::Sha256Crypt),
            ("{BLF-CRYPT}$2y$05$x", Scheme::Bcrypt),
            ("$2b$05$x", Scheme::Bcrypt),
            ("{SSHA512}abc", Scheme::Salted(Digester::Sha512)),
            ("{SSHA256.HEX}abc", Scheme::Salted(Digester::Sha256)),
            ("{SHA}abc", Scheme::Digest(Digester::Sha1)),
            ("{CLEAR}pw", Scheme::Plain),
            ("{MD5-CRYPT}$1$x", Scheme::Unknown("MD5-CRYPT".into())),
            // A prefix that disagrees with the hash is not trusted.
            (
                "{SHA512-CRYPT}$5$salt$x",
                Scheme::Unknown("SHA512-CRYPT".into()),
            ),
        ] {
            assert_eq!(parse(stored).0, want, "{stored}");
        }
        assert!(matches!(parse("plain text").0, Scheme::Unknown(_)));
    }

    #[test]
    fn digests_verify() {
        let salt = b"NaCl1234";
        let digest = Sha512::digest([&b"pw"[..], salt].concat());
        let ssha512 = format!("{{SSHA512}}{}", BASE64.encode([&digest[..], salt].concat()));
        let sha256 = format!("{{SHA256}}{}", BASE64.encode(Sha256::digest(b"pw")));
        let sha256_hex = format!("{{SHA256.HEX}}{}", hex::encode(Sha256::digest(b"pw")));
        let mut memory = Vec::new();
        for stored in [&ssha512, &sha256, &sha256_hex] {
            assert!(verify(stored, "pw", false, &mut memory), "{stored}");
            assert!(!verify(stored, "pw ", false, &mut memory), "{stored}");
        }
        assert!(!verify("{SSHA512}", "", false, &mut memory));
        assert!(!verify("{SSHA512}!!", "pw", false, &mut memory));
        assert!(!verify("{PLAIN}pw", "pw", false, &mut memory));
        assert!(verify("{PLAIN}pw", "pw", true, &mut memory));
        assert!(!verify("{CLEAR}pw", "px", true, &mut memory));
        assert!(!verify("{NOPE}pw", "pw", true, &mut memory));
    }

    #[test]
    fn costly_hashes_are_refused_unread() {
        let mut memory = Vec::new();
        assert!(!verify(
            "$6$rounds=999999999$salt$x",
            "pw",
            false,
            &mut memory
        ));
        assert!(!verify(
            "$2y$31$abcdefghijklmnopqrstuu",
            "pw",
            false,
            &mut memory
        ));
        assert!(rounds_ok("$6$rounds=5000$salt$x"));
        assert!(rounds_ok("$6$salt$x"));
        assert!(bcrypt_cost_ok("$2y$05$x"));
    }

    #[test]
    fn rehash_is_argon2id() {
        let hash = hash_argon2id("pw").unwrap();
        assert!(is_current(&hash));
        assert!(verify(&hash, "pw", false, &mut Vec::new()));
        assert!(!is_current(
            "{ARGON2ID}$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaA"
        ));
    }
}

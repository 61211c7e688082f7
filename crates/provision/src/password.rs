//! Passwords from Secrets: a PHC argon2 hash is stored as it is, a plain password is hashed
//! with argon2id — unless the stored hash already verifies it, so a re-apply changes nothing.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params};
use rand::RngCore;

/// What a Secret value holds.
enum Value<'a> {
    Hash(&'a str),
    Plain(&'a [u8]),
}

fn classify(value: &[u8]) -> Result<Value<'_>, String> {
    if value.is_empty() {
        return Err("is empty; put the password (or an argon2 hash) there".into());
    }
    if !value.starts_with(b"$argon2") {
        return Ok(Value::Plain(value));
    }
    // Trailing whitespace around a hash is an artefact of how the Secret was made.
    let text = std::str::from_utf8(value)
        .map_err(|_| "starts like an argon2 hash but is not UTF-8".to_string())?
        .trim();
    let parsed = PasswordHash::new(text)
        .map_err(|e| format!("starts with $argon2 but is not a PHC hash string ({e})"))?;
    // Parsing alone accepts `$argon2id$x`; a usable hash also has valid params, salt and hash.
    let usable = Algorithm::try_from(parsed.algorithm).is_ok()
        && Params::try_from(&parsed).is_ok()
        && parsed.salt.is_some()
        && parsed.hash.is_some();
    if !usable {
        return Err("starts with $argon2 but is not a PHC hash string with params, salt and hash"
            .into());
    }
    Ok(Value::Hash(text))
}

/// Whether a Secret value can be used as a password; the error says what is wrong.
pub fn check_secret_value(value: &[u8]) -> Result<(), String> {
    classify(value).map(|_| ())
}

/// The hash to store for `value`, given the hash stored now. CPU-heavy: call it off the async
/// executor (`spawn_blocking`).
pub fn hash_for(value: &[u8], existing: Option<&str>) -> Result<String, String> {
    match classify(value)? {
        Value::Hash(hash) => Ok(hash.to_string()),
        Value::Plain(plain) => {
            if let Some(existing) = existing
                && let Ok(parsed) = PasswordHash::new(existing)
                && Argon2::default().verify_password(plain, &parsed).is_ok()
            {
                return Ok(existing.to_string());
            }
            let mut salt = [0u8; 16];
            rand::thread_rng().fill_bytes(&mut salt);
            let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
            Argon2::default()
                .hash_password(plain, &salt)
                .map(|h| h.to_string())
                .map_err(|e| format!("hashing failed: {e}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verifies(hash: &str, plain: &[u8]) -> bool {
        let parsed = PasswordHash::new(hash).expect("PHC string");
        Argon2::default().verify_password(plain, &parsed).is_ok()
    }

    #[test]
    fn plain_passwords_are_hashed_once() {
        let first = hash_for(b"s3cret", None).expect("hash");
        assert!(first.starts_with("$argon2id$"), "{first}");
        assert!(verifies(&first, b"s3cret"));
        assert!(!verifies(&first, b"other"));
        // The stored hash verifies: kept, so a re-apply writes nothing new.
        assert_eq!(hash_for(b"s3cret", Some(&first)).expect("hash"), first);
        // A changed password gets a new hash.
        let changed = hash_for(b"changed", Some(&first)).expect("hash");
        assert_ne!(changed, first);
        assert!(verifies(&changed, b"changed"));
        // A broken stored hash is replaced, not an error.
        assert!(verifies(&hash_for(b"x", Some("garbage")).expect("hash"), b"x"));
    }

    #[test]
    fn values() {
        let hash = hash_for(b"pw", None).expect("hash");
        let with_newline = format!("{hash}\n");
        let cases: &[(&[u8], Result<Option<&str>, &str>)] = &[
            (hash.as_bytes(), Ok(Some(&hash))),
            (with_newline.as_bytes(), Ok(Some(&hash))),
            (b"", Err("is empty")),
            (b"$argon2id$nonsense", Err("not a PHC hash")),
            (b"$argon2\xff", Err("not UTF-8")),
            (b"plain", Ok(None)),
        ];
        for (value, want) in cases {
            let got = hash_for(value, None);
            match want {
                Ok(Some(stored)) => assert_eq!(got.as_deref(), Ok(*stored)),
                Ok(None) => assert!(verifies(&got.expect("hash"), value)),
                Err(text) => {
                    let err = got.expect_err("invalid");
                    assert!(err.contains(text), "{err}");
                    assert!(check_secret_value(value).is_err());
                }
            }
        }
    }
}

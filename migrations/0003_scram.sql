-- SCRAM-SHA-256 (RFC 5802, RFC 7677) for every protocol's AUTH: a mailbox's keys, written by the
-- mail server when a password login succeeds against the local hash (the server cannot derive
-- them from an argon2 hash). Layout `iterations,salt,StoredKey,ServerKey`, base64 (Dovecot's).
-- NULL: no keys yet; SCRAM then fails exactly like a wrong password.
ALTER TABLE mailboxes ADD COLUMN scram_sha256 TEXT;

-- Secrets the login service derives answers from, the same on every pod: `scram-fake-salt`
-- keys the salts invented for unknown users, so SCRAM cannot tell them from real ones.
CREATE TABLE auth_secrets (
    name  TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);

-- The schema shared by the operator (which writes domains, mailboxes, aliases and DKIM keys)
-- and the mail server (which writes folders, messages, blobs and the queue).
-- Addresses and domain names are stored lower case; the code normalizes before it queries.

CREATE TABLE domains (
    id             BIGSERIAL PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    bucket         TEXT NOT NULL,
    -- Full address of the mailbox that receives mail for unknown local parts; NULL rejects them.
    catch_all      TEXT,
    reclaim_policy TEXT NOT NULL DEFAULT 'Retain' CHECK (reclaim_policy IN ('Retain', 'Delete')),
    -- Set when the resource was deleted under reclaimPolicy Retain: the data stays, unserved.
    deleted_at     TIMESTAMPTZ,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE mailboxes (
    id            BIGSERIAL PRIMARY KEY,
    domain_id     BIGINT NOT NULL REFERENCES domains (id) ON DELETE CASCADE,
    address       TEXT NOT NULL UNIQUE,
    display_name  TEXT,
    quota_bytes   BIGINT NOT NULL CHECK (quota_bytes >= 0),
    -- Sum of the sizes of the messages in the mailbox, kept in the delivering transaction.
    used_bytes    BIGINT NOT NULL DEFAULT 0,
    auth_source   TEXT NOT NULL DEFAULT 'local' CHECK (auth_source IN ('local', 'ldap')),
    -- argon2 PHC string; NULL means no local password (LDAP only, or no login at all).
    password_hash TEXT,
    deleted_at    TIMESTAMPTZ,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX mailboxes_domain ON mailboxes (domain_id);

-- Extra addresses that deliver into a mailbox.
CREATE TABLE aliases (
    id         BIGSERIAL PRIMARY KEY,
    address    TEXT NOT NULL UNIQUE,
    domain_id  BIGINT NOT NULL REFERENCES domains (id) ON DELETE CASCADE,
    mailbox_id BIGINT NOT NULL REFERENCES mailboxes (id) ON DELETE CASCADE
);
CREATE INDEX aliases_mailbox ON aliases (mailbox_id);

CREATE TABLE dkim_keys (
    id              BIGSERIAL PRIMARY KEY,
    domain_id       BIGINT NOT NULL REFERENCES domains (id) ON DELETE CASCADE,
    selector        TEXT NOT NULL,
    algorithm       TEXT NOT NULL CHECK (algorithm IN ('rsa2048', 'ed25519')),
    active          BOOLEAN NOT NULL DEFAULT true,
    -- PKCS#8 PEM; NULL until the key pair has been generated.
    private_key_pem TEXT,
    -- Base64 public key, the p= of the DNS record.
    public_key      TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (domain_id, selector)
);

-- IMAP folders. Every mailbox has an INBOX (special_use 'inbox').
CREATE TABLE folders (
    id             BIGSERIAL PRIMARY KEY,
    mailbox_id     BIGINT NOT NULL REFERENCES mailboxes (id) ON DELETE CASCADE,
    name           TEXT NOT NULL,
    special_use    TEXT CHECK (special_use IN ('inbox', 'sent', 'drafts', 'trash', 'junk', 'archive')),
    uid_validity   BIGINT NOT NULL CHECK (uid_validity BETWEEN 1 AND 4294967295),
    uid_next       BIGINT NOT NULL DEFAULT 1,
    highest_modseq BIGINT NOT NULL DEFAULT 1,
    subscribed     BOOLEAN NOT NULL DEFAULT true,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (mailbox_id, name)
);
CREATE UNIQUE INDEX folders_one_per_special_use ON folders (mailbox_id, special_use)
    WHERE special_use IS NOT NULL;

-- Message bodies in the blob store, content-addressed (key = SHA-256 of the bytes) inside the
-- bucket of a domain, so one message to many recipients of a domain is stored once.
CREATE TABLE blobs (
    id         BIGSERIAL PRIMARY KEY,
    bucket     TEXT NOT NULL,
    key        TEXT NOT NULL,
    size       BIGINT NOT NULL,
    -- Messages and queue entries that point here; 0 makes it a candidate for collection once
    -- older than any delivery still in flight.
    refcount   BIGINT NOT NULL DEFAULT 0,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (bucket, key)
);
CREATE INDEX blobs_unreferenced ON blobs (created_at) WHERE refcount = 0;

CREATE TABLE messages (
    id            BIGSERIAL PRIMARY KEY,
    mailbox_id    BIGINT NOT NULL REFERENCES mailboxes (id) ON DELETE CASCADE,
    folder_id     BIGINT NOT NULL REFERENCES folders (id) ON DELETE CASCADE,
    uid           BIGINT NOT NULL,
    modseq        BIGINT NOT NULL DEFAULT 1,
    blob_id       BIGINT NOT NULL REFERENCES blobs (id),
    size          BIGINT NOT NULL,
    internal_date TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- System flags (\Seen, \Answered, \Flagged, \Deleted, \Draft) and keywords.
    flags         TEXT[] NOT NULL DEFAULT '{}',
    -- Parsed once at delivery so FETCH ENVELOPE/BODYSTRUCTURE need not read the body.
    envelope      JSONB,
    structure     JSONB,
    UNIQUE (folder_id, uid)
);
CREATE INDEX messages_mailbox ON messages (mailbox_id);
CREATE INDEX messages_blob ON messages (blob_id);

-- Outbound mail waiting for delivery to remote hosts.
CREATE TABLE queue (
    id          BIGSERIAL PRIMARY KEY,
    blob_id     BIGINT NOT NULL REFERENCES blobs (id),
    -- Envelope sender; '' for the null sender of bounces.
    sender      TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE queue_recipients (
    id              BIGSERIAL PRIMARY KEY,
    queue_id        BIGINT NOT NULL REFERENCES queue (id) ON DELETE CASCADE,
    recipient       TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_error      TEXT,
    -- A runner holds a lease while it delivers, so several pods never send one message twice.
    lease_owner     TEXT,
    lease_until     TIMESTAMPTZ
);
CREATE INDEX queue_recipients_due ON queue_recipients (next_attempt_at) WHERE status = 'pending';

-- POP3 maildrop locks (RFC 1939 section 4): at most one session per mailbox across every server
-- process. A row is a lease held by one session (`session`) of one process (`process`, unique per
-- start); its process renews it while the session lives and deletes it at QUIT or disconnect.
-- A process that dies stops renewing: a lease past `expires_at` may be taken over.
CREATE TABLE pop3_locks (
    mailbox_id  BIGINT PRIMARY KEY REFERENCES mailboxes (id) ON DELETE CASCADE,
    process     TEXT NOT NULL,
    session     BIGINT NOT NULL,
    acquired_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at  TIMESTAMPTZ NOT NULL
);

-- The renewal task updates all the leases of one process at once.
CREATE INDEX pop3_locks_process ON pop3_locks (process);

-- Messages a user moved into or out of the Junk folder (IMAP MOVE, COPY, APPEND), written in
-- the transaction that moved them. The spam filter's trainer reads them in id order (Rspamd
-- learn_spam for 'in', learn_ham for 'out') and deletes what it has learned from. A message
-- may be gone by then (expunged): message_id is not a foreign key, and such an event is skipped.
CREATE TABLE junk_events (
    id          BIGSERIAL PRIMARY KEY,
    mailbox_id  BIGINT NOT NULL REFERENCES mailboxes (id) ON DELETE CASCADE,
    message_id  BIGINT NOT NULL,
    direction   TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX junk_events_mailbox ON junk_events (mailbox_id);

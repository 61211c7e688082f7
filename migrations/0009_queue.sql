-- The outbound queue (issue 13): what a message needs for its delivery and its bounces, per
-- message and per recipient.

-- RFC 3461 envelope: ENVID and RET; RFC 8689 REQUIRETLS; who submitted it (for logs).
ALTER TABLE queue ADD COLUMN env_id TEXT;
ALTER TABLE queue ADD COLUMN ret TEXT CHECK (ret IN ('full', 'hdrs'));
ALTER TABLE queue ADD COLUMN requiretls BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE queue ADD COLUMN authenticated_as TEXT;
-- The DKIM-Signature header field (with its CRLF) made at enqueue, sent before the body.
ALTER TABLE queue ADD COLUMN dkim_header TEXT;
ALTER TABLE queue ADD COLUMN size BIGINT NOT NULL DEFAULT 0;

-- RFC 3461 NOTIFY (a comma list of SUCCESS, FAILURE, DELAY, or NEVER; NULL: the default,
-- FAILURE and DELAY) and ORCPT (`rfc822;addr`).
ALTER TABLE queue_recipients ADD COLUMN notify TEXT;
ALTER TABLE queue_recipients ADD COLUMN orcpt TEXT;
-- The remote host's reply that decided the state (or our reason), for DSNs and inspection.
ALTER TABLE queue_recipients ADD COLUMN last_status TEXT;
ALTER TABLE queue_recipients ADD COLUMN remote_mta TEXT;
-- A delay notice (DSN action=delayed) went out for this recipient.
ALTER TABLE queue_recipients ADD COLUMN delay_notified BOOLEAN NOT NULL DEFAULT false;
-- Set once the final state's DSN (or the decision that none is due) is done.
ALTER TABLE queue_recipients ADD COLUMN reported BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE queue_recipients ADD COLUMN updated_at TIMESTAMPTZ NOT NULL DEFAULT now();

CREATE INDEX queue_recipients_queue ON queue_recipients (queue_id);
CREATE INDEX queue_created ON queue (created_at);

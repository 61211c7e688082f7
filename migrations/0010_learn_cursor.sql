-- Where the spam trainer (mailserver/src/filters/learn.rs) is in junk_events: the id of the last
-- event it taught Rspamd from (or skipped). One row per trainer name; written after each event,
-- so a restart repeats at most the event under way (Rspamd answers a repeat "already learned").
CREATE TABLE learn_cursor (
    name           TEXT PRIMARY KEY,
    last_event_id  BIGINT NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The change feed's record of expunged messages, so QRESYNC (RFC 7162) can tell a client
-- exactly which UIDs vanished since the MODSEQ it last saw.
--
-- Pruning: rows older than 30 days are deleted (Store::prune_expunged); the folder's
-- `expunged_from` then rises to the highest MODSEQ pruned, and a client resyncing from an
-- older MODSEQ gets every UID it might know that is gone (a full resync), never a wrong answer.
CREATE TABLE expunged (
    folder_id   BIGINT NOT NULL REFERENCES folders (id) ON DELETE CASCADE,
    uid         BIGINT NOT NULL,
    modseq      BIGINT NOT NULL,
    expunged_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (folder_id, uid)
);
CREATE INDEX expunged_modseq ON expunged (folder_id, modseq);
CREATE INDEX expunged_age ON expunged (expunged_at);

-- MODSEQ from which `expunged` is complete for the folder: expunges before this migration were
-- not recorded, so existing folders start at their current MODSEQ.
ALTER TABLE folders ADD COLUMN expunged_from BIGINT NOT NULL DEFAULT 0;
UPDATE folders SET expunged_from = highest_modseq;

-- Reads by MODSEQ (changes_since) instead of whole folders.
CREATE INDEX messages_folder_modseq ON messages (folder_id, modseq);

-- Directory-backed domains: every user of a named LDAP directory with an address in the domain
-- is served without a Mailbox resource; their mailbox row appears on first delivery or login.

-- The directory (a name in the mail server's directory configuration) backing the domain, and
-- the quota of its users' mailboxes when the directory has no quota attribute for them.
ALTER TABLE domains ADD COLUMN directory TEXT;
ALTER TABLE domains ADD COLUMN directory_quota_bytes BIGINT NOT NULL DEFAULT 1073741824
    CHECK (directory_quota_bytes >= 0);

-- The directory that created this mailbox row; NULL for a row written from a Mailbox resource.
-- A full sync of the resources leaves directory rows alone; the directory sweep disables them
-- when their user leaves the directory.
ALTER TABLE mailboxes ADD COLUMN directory TEXT;
CREATE INDEX mailboxes_directory ON mailboxes (directory) WHERE directory IS NOT NULL;

-- Which MailDomain resource (`namespace/name`) serves each domain. A second resource naming a
-- domain already claimed is refused (DomainConflict) instead of overwriting the first one's
-- row, and deleting it leaves the row alone. Released when the owner's finalizer runs. Local
-- mode claims nothing: its manifests are checked for duplicates before anything is applied.
CREATE TABLE domain_claims (
    domain     TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    claimed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

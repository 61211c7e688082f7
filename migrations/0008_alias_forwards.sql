-- Addresses of a hosted domain that forward to addresses elsewhere (through the outbound queue,
-- with the envelope sender rewritten by SRS). Local targets belong in `aliases`.
CREATE TABLE alias_forwards (
    id         BIGSERIAL PRIMARY KEY,
    address    TEXT NOT NULL,
    domain_id  BIGINT NOT NULL REFERENCES domains (id) ON DELETE CASCADE,
    target     TEXT NOT NULL,
    UNIQUE (address, target)
);

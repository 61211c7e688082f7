-- Blob lifecycle: a blob whose refcount is 0 is collected (object, then row) once it has been
-- unreferenced for a grace period. `zero_since` is when it last became, or was staged as,
-- unreferenced; a trigger keeps it, so every writer of refcount (the mail server, the
-- operator's domain deletion) stays correct without knowing about it.
ALTER TABLE blobs ADD COLUMN zero_since TIMESTAMPTZ;
UPDATE blobs SET zero_since = now() WHERE refcount = 0;

CREATE FUNCTION blobs_zero_since() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.refcount > 0 THEN
        NEW.zero_since := NULL;
    ELSIF TG_OP = 'INSERT' OR OLD.refcount > 0 OR NEW.zero_since IS NULL THEN
        NEW.zero_since := now();
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER blobs_zero_since BEFORE INSERT OR UPDATE OF refcount, zero_since ON blobs
    FOR EACH ROW EXECUTE FUNCTION blobs_zero_since();

DROP INDEX blobs_unreferenced;
CREATE INDEX blobs_collectable ON blobs (zero_since) WHERE refcount = 0;

-- The login guard, shared by every pod: failed logins in a sliding window, bans of client
-- networks (an IPv4 address, an IPv6 /64) and messages sent per authenticated sender.

-- One row per failed login, counted per client network and per account; rows older than the
-- window are deleted by every pod's cleanup.
CREATE TABLE login_failures (
    id BIGSERIAL PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('network', 'account')),
    subject TEXT NOT NULL,
    at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX login_failures_subject ON login_failures (kind, subject, at);
CREATE INDEX login_failures_at ON login_failures (at);

-- A ban of a client network. The row outlives the ban (until the cleanup forgets it) so a
-- repeat offender's next ban is longer: `repeats` counts the bans it has had.
CREATE TABLE login_bans (
    network CIDR PRIMARY KEY,
    until TIMESTAMPTZ NOT NULL,
    repeats INT NOT NULL DEFAULT 1,
    reason TEXT NOT NULL DEFAULT '',
    banned_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX login_bans_until ON login_bans (until);

-- Every change (a ban, a lift, from a pod or from `mail-operator bans lift`) reaches the pods'
-- in-process views: a ban as `<network> <seconds left>` (entered without a query), a deletion
-- as an empty payload (reload; identical payloads of one transaction arrive once).
CREATE FUNCTION login_bans_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('login_bans', '');
    ELSE
        PERFORM pg_notify('login_bans', NEW.network::text || ' '
            || GREATEST(EXTRACT(EPOCH FROM NEW.until - now()), 0)::text);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER login_bans_notify AFTER INSERT OR UPDATE OR DELETE ON login_bans
    FOR EACH ROW EXECUTE FUNCTION login_bans_notify();

-- Messages accepted per authenticated sender, per minute (the hourly limit sums 60 of them).
CREATE TABLE sender_counts (
    account TEXT NOT NULL,
    minute TIMESTAMPTZ NOT NULL,
    messages INT NOT NULL,
    PRIMARY KEY (account, minute)
);
CREATE INDEX sender_counts_minute ON sender_counts (minute);

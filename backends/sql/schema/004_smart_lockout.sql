-- easync schema, version 4: the login throttle's smart lockout (issue #10 points 4, 5).
--
-- auth_throttle rows now also count, per user, failures from familiar sources apart
-- (scope 'user-known'; 'user' counts the unfamiliar ones).  pending counts the attempts
-- reserved and still being checked (an attempt reserves before bcrypt, so the count and
-- the limit check are one transaction); a wrong one moves to failures, a right one is
-- given back.  lockouts/last_lockout make lockouts grow:
-- the n-th lockout of the same counter within a day lasts first * 2^(n-1) seconds (capped).
ALTER TABLE auth_throttle ADD COLUMN pending INTEGER NOT NULL DEFAULT 0;
ALTER TABLE auth_throttle ADD COLUMN lockouts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE auth_throttle ADD COLUMN last_lockout DOUBLE PRECISION NOT NULL DEFAULT 0;

-- Familiar sources: a DeviceId (kind 'device') or a client address (kind 'addr') that
-- logged in successfully as user_name; last_ok is the newest such login (written at most
-- once a minute per pair).  Rows older than the familiarity period are ignored and purged.
CREATE TABLE auth_familiar (
    user_name TEXT NOT NULL,
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    last_ok DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (user_name, kind, value)
);

-- easync schema, version 11: device access (issue #14 point 3, easync/deviceaccess.py).
-- Portable SQL: @SERIAL_PK@ is replaced by backends/sql/engines.py.

-- An administrator's decision for one device of one user: NULL (the rules decide),
-- 'allow', 'block' or 'quarantine'.  It wins over every rule.
ALTER TABLE devices ADD COLUMN access TEXT;
-- The highest EAS protocol version the device was seen to speak ("16.1"): an
-- account-only wipe is offered only to devices that speak 16.1 or later.
ALTER TABLE devices ADD COLUMN protocol_version TEXT;

-- Bumped whenever a device access decision or a rule of this user changes: the SQLite
-- poller of the server sees a change made by easync-admin through it and wakes the
-- user's held Pings (a rule for everyone bumps nothing: it applies at each device's
-- next request).
ALTER TABLE users ADD COLUMN access_version BIGINT NOT NULL DEFAULT 0;

-- Device access rules: user_id NULL = everyone; kind device_id | user_agent |
-- device_type | any; pattern: exact, or a prefix when it ends in '*' (case-insensitive);
-- action allow | block | quarantine.
CREATE TABLE device_rules (
    id @SERIAL_PK@,
    user_id BIGINT REFERENCES users (id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    pattern TEXT NOT NULL,
    action TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL,
    created_by TEXT
);
-- A request reads the rules of its user and those for everyone: two ranges of this.
CREATE INDEX device_rules_user ON device_rules (user_id);

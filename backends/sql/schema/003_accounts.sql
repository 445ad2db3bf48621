-- easync schema, version 3: who may sync (easync.auth.accounts).
--
-- The per-user credential fields (ActiveSync password hash, 2FA method, encrypted TOTP
-- secret, ...) live in users.extra; these tables hold what is shared by every process
-- and must change atomically.

-- Server-wide settings, e.g. two_factor_all = 'on'.
CREATE TABLE server_settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Every credential change and every lockout.  Never a secret: detail says what
-- happened ("ActiveSync password set"), not to what.
CREATE TABLE audit_log (
    id @SERIAL_PK@,
    at DOUBLE PRECISION NOT NULL,
    actor TEXT NOT NULL,
    user_name TEXT,
    action TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    address TEXT NOT NULL DEFAULT ''
);
CREATE INDEX audit_log_user ON audit_log (user_name, at);

-- Failed logins per user name and per client address (scope 'user', 'addr', 'code'):
-- failures counted since window_start; locked_until > now means locked out.
CREATE TABLE auth_throttle (
    scope TEXT NOT NULL,
    name TEXT NOT NULL,
    failures INTEGER NOT NULL DEFAULT 0,
    window_start DOUBLE PRECISION NOT NULL,
    locked_until DOUBLE PRECISION NOT NULL DEFAULT 0,
    PRIMARY KEY (scope, name)
);

-- The one pending e-mail code of a user: a keyed hash of it, never the code.
CREATE TABLE email_codes (
    user_id BIGINT PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    code_mac TEXT NOT NULL,
    sent_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    tries_left INTEGER NOT NULL,
    used_at DOUBLE PRECISION
);

-- The newest TOTP time step accepted per user: a code of that step or an older one is
-- refused (replay protection, shared by every process).
CREATE TABLE totp_steps (
    user_id BIGINT PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    step BIGINT NOT NULL
);

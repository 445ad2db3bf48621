-- easync schema, version 7: purging a user's expired familiar sources is a range of an
-- index, not a walk of all of that user's rows (issue #12: a user with 10,000 devices
-- logging in at once made every login's purge scan the user's 20,000 rows, quadratic
-- work on the store's one SQLite thread that stalled the ramp).
CREATE INDEX auth_familiar_expiry ON auth_familiar (user_name, last_ok);

-- easync schema, version 9: shared folders (issue #14 point 1, backends/sql/shares.py).
--
-- A row lets one user (grantee_id = users.id), or every user (grantee_id = 0), hold
-- another user's folder on their devices: read-only (can_write = 0) or read-write.
-- The items stay the owner's rows (items.user_id is the owner's, modseqs come from
-- the owner's counter): a grantee's device reads the owner's change feed.
-- The company address book is a folder of the system user "~company" (no password,
-- ActiveSync off: nobody logs in as it) shared with everyone.
CREATE TABLE folder_shares (
    folder_id BIGINT NOT NULL REFERENCES folders (id) ON DELETE CASCADE,
    grantee_id BIGINT NOT NULL,
    can_write INTEGER NOT NULL DEFAULT 0,
    created DOUBLE PRECISION,
    PRIMARY KEY (folder_id, grantee_id)
);
-- A user's FolderSync: the folders shared with them or with everyone.
CREATE INDEX folder_shares_grantee ON folder_shares (grantee_id, folder_id);
-- A shared folder's states belong to several users: the tombstone purge
-- (backends/sql/retention.py) finds the lowest feed cursor among all of them.
CREATE INDEX sync_states_name ON sync_states (name, feed_cursor);

-- easync schema, version 10: what devices deleted, kept for --deleted-keep (issue #14
-- point 2, backends/sql/deleted.py; easync/deleted.py restores it).  The same SQL on
-- SQLite and PostgreSQL.

-- One row per item a device deleted with a Sync Delete (MS-ASCMD 2.2.3.42.2): its full
-- canonical data as JSON (easync.items), written in the same transaction as the
-- tombstone (the SQL store) or before the CRM is asked to delete (the CRM store).
-- folder_id: the folder it was in (a restore goes there, or to the user's default
-- folder of its class when that folder is gone); backend: the item store that held it
-- ('sql' or 'crm': a restore must go through the same store).  summary: a short text
-- for lists (a contact's name, an event's or task's subject).  restored_at /
-- restored_id: when it was restored and the server id of the item it became (NULL:
-- not restored); a row is restored once.
CREATE TABLE deleted_items (
    id @SERIAL_PK@,
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    device_id TEXT NOT NULL,
    folder_id TEXT NOT NULL,
    cls TEXT NOT NULL,
    server_id TEXT NOT NULL,
    data TEXT NOT NULL,
    summary TEXT NOT NULL DEFAULT '',
    backend TEXT NOT NULL DEFAULT 'sql',
    deleted_at DOUBLE PRECISION NOT NULL,
    restored_at DOUBLE PRECISION,
    restored_id TEXT
);
-- a user's list, newest first, and "what this device deleted since T"
CREATE INDEX deleted_items_user ON deleted_items (user_id, deleted_at);
-- the expiry (--deleted-keep) walks the oldest first
CREATE INDEX deleted_items_age ON deleted_items (deleted_at);

-- A folder's live items counted without reading them (the mass-delete alarm): a range
-- of this partial index.
CREATE INDEX items_live ON items (folder_id) WHERE deleted = 0;

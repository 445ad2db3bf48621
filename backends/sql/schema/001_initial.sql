-- easync schema, version 1.
--
-- Portable SQL: @SERIAL_PK@ and @BLOB@ are replaced by backends/sql/engines.py
-- (INTEGER PRIMARY KEY AUTOINCREMENT / BIGSERIAL PRIMARY KEY, BLOB / BYTEA).
-- Statements are split on ';' at line ends: no semicolons inside statements.
-- Booleans are INTEGER 0/1 in both dialects; timestamps are Unix seconds.

-- Local accounts.  name is stored lower-cased (lookups are case-insensitive).
-- modseq is the user's change counter: every item write takes the next value,
-- in the same transaction, so modseqs are unique and increasing per user (and
-- updating this row serializes a user's writers).
CREATE TABLE users (
    id @SERIAL_PK@,
    name TEXT NOT NULL UNIQUE,
    email TEXT,
    password_hash TEXT,
    activesync INTEGER NOT NULL DEFAULT 0,
    extra TEXT NOT NULL DEFAULT '{}',
    modseq BIGINT NOT NULL DEFAULT 0,
    hierarchy_version BIGINT NOT NULL DEFAULT 1
);

-- Folders: server_id is str(id); ids are never reused (rows of deleted folders
-- stay, flagged).  modseq = the newest change to an item in the folder.
CREATE TABLE folders (
    id @SERIAL_PK@,
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    parent_id TEXT NOT NULL DEFAULT '0',
    name TEXT NOT NULL,
    type INTEGER NOT NULL,
    modseq BIGINT NOT NULL DEFAULT 0,
    deleted INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX folders_user ON folders (user_id, parent_id);

-- Items: one row per (item, folder) incarnation; server id = "<folder_id>:<id>".
-- A delete keeps the row as a tombstone (deleted=1, data NULL, modseq bumped);
-- a move tombstones this row and continues the item in a new row of the
-- destination folder.  data is the canonical item dict as JSON text; uid,
-- start_ts, end_ts, complete come from easync.items.index_fields.
CREATE TABLE items (
    id @SERIAL_PK@,
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    folder_id BIGINT NOT NULL REFERENCES folders (id) ON DELETE CASCADE,
    cls TEXT NOT NULL,
    data TEXT,
    uid TEXT,
    start_ts BIGINT,
    end_ts BIGINT,
    complete INTEGER,
    modseq BIGINT NOT NULL,
    created_modseq BIGINT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0
);
-- The change feed: changes_since walks this index from the cursor, O(limit).
CREATE UNIQUE INDEX items_feed ON items (folder_id, modseq);
CREATE INDEX items_uid ON items (user_id, uid) WHERE uid IS NOT NULL;

-- The e-mail addresses of live contacts (bare, lower-cased), to link events.
CREATE TABLE contact_emails (
    item_id BIGINT NOT NULL REFERENCES items (id) ON DELETE CASCADE,
    user_id BIGINT NOT NULL,
    email TEXT NOT NULL,
    PRIMARY KEY (item_id, email)
);
CREATE INDEX contact_emails_lookup ON contact_emails (user_id, email);

-- Event <-> contact links, kept as data: made when an attendee e-mail matches a
-- contact, kept while the attendee stays on the event (even if the contact's
-- address changes), removed with the attendee, the event or the contact.
CREATE TABLE event_contacts (
    event_item_id BIGINT NOT NULL REFERENCES items (id) ON DELETE CASCADE,
    contact_item_id BIGINT NOT NULL REFERENCES items (id) ON DELETE CASCADE,
    email TEXT NOT NULL,
    PRIMARY KEY (event_item_id, contact_item_id, email)
);
CREATE INDEX event_contacts_contact ON event_contacts (contact_item_id);

CREATE TABLE devices (
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    device_id TEXT NOT NULL,
    device_type TEXT,
    user_agent TEXT,
    policy_key BIGINT,
    wipe TEXT NOT NULL DEFAULT 'none',
    info TEXT NOT NULL DEFAULT '{}',
    blocked INTEGER NOT NULL DEFAULT 0,
    first_seen DOUBLE PRECISION,
    last_seen DOUBLE PRECISION,
    last_sync DOUBLE PRECISION,
    PRIMARY KEY (user_id, device_id)
);

-- Per-device state blobs (sync keys, folder state, client-id maps, resends).
CREATE TABLE sync_states (
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    device_id TEXT NOT NULL,
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, name)
);

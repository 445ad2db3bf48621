-- The company address book of --backend crm (backends/crm/mirror.py, README "The
-- company address book"): each CRM contact is mirrored ONCE into one folder of a
-- system user, whichever easync users read it; a row here ties that item to its CRM
-- record and to the CRM user it is assigned to (owner: the users it is hidden from,
-- who have it in their own Contacts).  A re-assign tombstones the row and adds a
-- new one (a new item id), so each user's view of the folder is a plain feed.

CREATE TABLE crm_shared (
    item_id BIGINT PRIMARY KEY,
    crm_id TEXT NOT NULL,
    owner TEXT NOT NULL,
    mtime TEXT NOT NULL DEFAULT '',
    snapshot TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX crm_shared_crm ON crm_shared (crm_id);

-- (the index sync_states_name (name, feed_cursor) that the CRM store's guard state
-- of the company address book is read through comes with 009_shares.sql)

-- the mirror's own layout version (backends/crm/mirror.py SCHEMA_VERSION)
UPDATE crm_state SET value = '2' WHERE name = 'schema_version';

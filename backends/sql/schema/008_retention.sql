-- easync schema, version 8: tombstones purged, devices forgotten (issue #13 point 6,
-- backends/sql/retention.py).  SQLite's JSON here; 008_retention.sql.postgres
-- replaces this file for PostgreSQL (its JSON operators differ), the rest is the same.

-- When a row became a tombstone (Unix seconds; NULL while live): tombstones older
-- than --tombstone-max-age are purged whoever still needs them.
ALTER TABLE items ADD COLUMN deleted_at DOUBLE PRECISION;
-- The tombstones of a folder in feed order, and all of them by age: a purge batch is
-- a range of one of these (live rows are not in them).
CREATE INDEX items_tombstones ON items (folder_id, modseq) WHERE deleted = 1;
CREATE INDEX items_tombstone_age ON items (deleted_at) WHERE deleted = 1;

-- The highest modseq of a tombstone purged from the folder: a device whose sync state
-- of it is older (feed_cursor below it) may have missed a delete, and is sent Sync
-- Status 3 (a full resync).
ALTER TABLE folders ADD COLUMN purged BIGINT NOT NULL DEFAULT 0;

-- What a sync state still needs of the folder's feed (easync.storerules.feed_cursor):
-- every tombstone above it; NULL for a state that needs none (not a collection's
-- state, or one holding nothing yet).  The purge keeps the tombstones above the
-- lowest feed_cursor of the folder's states.
ALTER TABLE sync_states ADD COLUMN feed_cursor BIGINT;

-- Devices unseen for --device-max-idle are forgotten: a range of this index.
CREATE INDEX devices_last_seen ON devices (last_seen);

-- What is there already: tombstones dated now (they are kept a full max age from
-- this upgrade), collection states' cursors from their JSON.
UPDATE items SET deleted_at = CAST(strftime('%s', 'now') AS REAL) WHERE deleted = 1;
UPDATE sync_states SET feed_cursor = CAST(json_extract(state, '$.cursor') AS INTEGER)
    WHERE name LIKE 'sync:%' AND (CAST(json_extract(state, '$.cursor') AS INTEGER) > 0 OR json_extract(state, '$.own') NOT IN ('{}', ''));

-- The CRM mirror's tables (backends/crm/mirror.py says what each holds).  Before
-- version 6 the CRM backend created them itself at start, with these statements;
-- IF NOT EXISTS keeps such a database's tables and rows as they are.

CREATE TABLE IF NOT EXISTS crm_items (
    item_id BIGINT PRIMARY KEY,
    user_id BIGINT NOT NULL,
    module TEXT NOT NULL,
    crm_id TEXT NOT NULL,
    mtime TEXT NOT NULL DEFAULT '',
    snapshot TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS crm_items_crm ON crm_items (crm_id);
CREATE INDEX IF NOT EXISTS crm_items_user ON crm_items (user_id, module, deleted);

CREATE TABLE IF NOT EXISTS crm_users (
    user_id BIGINT PRIMARY KEY,
    crm_user_id TEXT,
    loaded INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS crm_state (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS crm_client_adds (
    user_id BIGINT NOT NULL,
    device_id TEXT NOT NULL,
    folder_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    item_id BIGINT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (user_id, device_id, folder_id, client_id)
);

CREATE TABLE IF NOT EXISTS crm_event_links (
    item_id BIGINT NOT NULL,
    contact_id TEXT NOT NULL,
    email TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (item_id, contact_id)
);

CREATE TABLE IF NOT EXISTS crm_journal (
    jid TEXT PRIMARY KEY,
    user_id BIGINT NOT NULL,
    device_id TEXT NOT NULL,
    folder_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    module TEXT NOT NULL,
    owner TEXT NOT NULL,
    element TEXT NOT NULL,
    data TEXT NOT NULL,
    since TEXT NOT NULL,
    node TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS crm_journal_device ON crm_journal (user_id, device_id);

-- the mirror's own layout version, as the CRM backend wrote it
INSERT INTO crm_state (name, value) VALUES ('schema_version', '1')
    ON CONFLICT (name) DO UPDATE SET value = excluded.value;

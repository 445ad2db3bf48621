-- easync schema, version 5: indexed recipient and directory lookups (issue #10 point 2).
--
-- ResolveRecipients and the GAL Search used to scan every contact and every user in
-- Python.  These tables let them ask the database instead, by prefix, with a LIMIT:
-- ``token >= ? AND token < ?`` is a range of a plain b-tree in both dialects (LIKE is
-- not, on PostgreSQL with a non-C collation).  Tokens are case-folded, blanks
-- collapsed, at most 254 characters (easync.items.name_tokens).

-- The name words of live contacts that have an e-mail address (the only ones a
-- recipient lookup can return): each word of FirstName, MiddleName, LastName, FileAs,
-- CompanyName, NickName, each whole value, "first last", "last first" and the like
-- (easync.lookup.contact_tokens).  Kept true by the transaction that writes the item
-- (like contact_emails).
CREATE TABLE contact_names (
    item_id BIGINT NOT NULL REFERENCES items (id) ON DELETE CASCADE,
    user_id BIGINT NOT NULL,
    token TEXT NOT NULL,
    PRIMARY KEY (item_id, token)
);
CREATE INDEX contact_names_lookup ON contact_names (user_id, token, item_id);

-- The directory (GAL) words of users: login name, e-mail address, display name and
-- its words.  Kept true by add_user / update_user.
CREATE TABLE user_names (
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token TEXT NOT NULL,
    PRIMARY KEY (user_id, token)
);
CREATE INDEX user_names_lookup ON user_names (token, user_id);

-- What existed before this version has no tokens yet: the item data is JSON, which
-- SQL cannot parse portably, so SqlStore.open() fills them in the background, in
-- batches of rows by id (next_id .. last_id), each batch its own transaction.
CREATE TABLE lookup_backfill (
    what TEXT PRIMARY KEY,
    next_id BIGINT NOT NULL,
    last_id BIGINT NOT NULL
);
INSERT INTO lookup_backfill (what, next_id, last_id)
    SELECT 'contacts', 0, COALESCE(MAX(id), 0) FROM items;
INSERT INTO lookup_backfill (what, next_id, last_id)
    SELECT 'users', 0, COALESCE(MAX(id), 0) FROM users;

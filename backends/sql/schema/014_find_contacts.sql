-- easync schema, version 14: Find finds every contact, in one folder too (issue 14
-- point 5).
--
-- Until now contact_names held only the name tokens of contacts with an e-mail
-- address (the only ones ResolveRecipients may return).  From this version it holds
-- every live contact (easync.lookup.contact_index): the name tokens of all, and
-- each e-mail address whole, with
--   recipient  1: a name token of a contact that has an address (what
--                 ResolveRecipients walks, index contact_names_recipients);
--              0: a name token of a contact without one, or an address — for Find only
--   folder_id     the contact's folder, so that a Find within one Contacts folder
--                 walks that folder's tokens (index contact_names_folder).
-- Find on all the user's folders walks contact_names_lookup (user_id, token, item_id)
-- as before.  The rows already there are name tokens of contacts with an address:
-- recipient 1 is right for them; their folder and the rows of the other contacts
-- come from the background backfill of SqlStore (the one of version 5, re-run from
-- the first row: a batch of 100 row ids per transaction, see _backfill_batch).
ALTER TABLE contact_names ADD COLUMN recipient INTEGER NOT NULL DEFAULT 1;
ALTER TABLE contact_names ADD COLUMN folder_id BIGINT NOT NULL DEFAULT 0;
CREATE INDEX contact_names_recipients ON contact_names (user_id, recipient, token, item_id);
CREATE INDEX contact_names_folder ON contact_names (folder_id, token, item_id);
UPDATE lookup_backfill SET next_id = 0,
    last_id = (SELECT COALESCE(MAX(id), 0) FROM items)
    WHERE what = 'contacts';

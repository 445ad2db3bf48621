"""easync's stores: ``backends.sql`` (SQLite, PostgreSQL) and ``backends.crm`` (vtenext /
vtiger).  A backend implements the contracts of ``easync.interfaces``; it never imports
the protocol side (commands, HTTP, account page), and the protocol never imports it:
only the composition roots (``easync.tap``, ``easync.admin``, ``easync.workers``) do."""

"""The SQL store: SQLite (the embedded default) and PostgreSQL through
``twisted.enterprise.adbapi``.  ``store.SqlStore`` composes the parts (``users``, ``items``,
``state``, ``holds``) over one ``database.Database``; the schema is the numbered files of
``schema/`` (``migrations``).  Push across processes: ``pgnotify`` (PostgreSQL
LISTEN/NOTIFY) and ``poller`` (SQLite)."""

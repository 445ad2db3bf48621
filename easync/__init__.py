"""easync, an Exchange ActiveSync server: the protocol side, independent of any one store.

The layers, outside in: ``tap`` (the composition root) builds ``http`` (the resources and
the front door of ``auth``), which dispatches to ``commands`` (the static table), which
parse and render WBXML (``wbxml``, ``items``) around the plain-data ``syncengine``, which
works on the store contracts of ``interfaces``.  tests/test_architecture.py keeps the
imports that way."""

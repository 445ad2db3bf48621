"""The ``twistd easync`` plugin.

Only a lazy ServiceMaker: Twisted imports every plugin module on every ``twistd`` run,
so nothing of easync (and never the reactor) is imported here.  ``easync.tap`` is loaded
when the ``easync`` subcommand is actually used.  ``test_plugin_is_found_and_lazy``
(tests/test_packaging.py) scans for plugins in a fresh interpreter and fails if that
imports easync, backends or the reactor; tests/test_architecture.py forbids the import.
"""

from twisted.application.service import ServiceMaker

easync = ServiceMaker(
    "easync",
    "easync.tap",
    "Exchange ActiveSync server: contacts, calendar and tasks with push",
    "easync",
)

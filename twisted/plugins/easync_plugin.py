"""The ``twistd easync`` plugin.

Only a lazy ServiceMaker: Twisted imports every plugin module on every ``twistd`` run,
so nothing of easync (and never the reactor) is imported here.  ``easync.tap`` is loaded
when the ``easync`` subcommand is actually used.
"""

from twisted.application.service import ServiceMaker

easync = ServiceMaker(
    "easync",
    "easync.tap",
    "Exchange ActiveSync server: contacts, calendar and tasks with push",
    "easync",
)

"""The CRM item store: contacts, events and tasks in a vtenext or vtiger CRM.

``client``   the web-service client (sessions, errors, timeouts) over treq
``mapping``  EAS item dicts <-> CRM records, field by field
``mirror``   the CRM mirror's tables in easync's SQL database
``store``    ``CrmStore`` (``IItemStore``): device writes, first loads, the poller

``make_store`` builds it from the ``crm-*`` options (``--backend crm``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from easync.config import CrmConfig

__all__ = ["make_client", "make_store", "read_key_file"]


def read_key_file(path: str) -> str:
    """The first line of the access-key file; ValueError if unreadable or empty."""
    try:
        with open(path, encoding="utf-8") as f:
            key = f.readline().strip()
    except OSError as e:
        raise ValueError(f"crm-access-key-file {path}: {e.strerror}") from None
    if not key:
        raise ValueError(f"crm-access-key-file {path} is empty")
    return key


def make_http(reactor: Any) -> Any:
    """A treq HTTPClient with a persistent connection pool (certificates checked) that
    does not log every connection it opens and closes."""
    from treq.client import HTTPClient
    from twisted.web.client import Agent

    from backends.crm.client import quiet_pool

    pool = quiet_pool(reactor)
    pool.maxPersistentPerHost = 4
    return HTTPClient(Agent(reactor, pool=pool))


def make_client(reactor: Any, crm: CrmConfig, access_key: str = "",
                http: Any = None) -> Any:
    """The ``CrmClient`` for the ``crm-*`` options."""
    from backends.crm.client import CrmClient

    return CrmClient(reactor, http if http is not None else make_http(reactor),
                     crm.url, crm.user, access_key, timeout=crm.timeout)


def make_store(reactor: Any, sql: Any, crm: CrmConfig, notifier: Any = None,
               http: Any = None) -> Any:
    """The ``CrmStore`` for the ``crm-*`` options, mirroring into ``sql`` (a
    ``SqlStore``)."""
    from backends.crm.store import CrmStore

    key = read_key_file(crm.access_key_file)
    client = make_client(reactor, crm, key, http)
    return CrmStore(reactor, sql, client, notifier=notifier,
                    poll_interval=crm.poll_interval, zone=crm.timezone,
                    shared_contacts=crm.shared_contacts, shared_name=crm.shared_name)

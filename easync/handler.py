"""What a command handler receives and returns.

Every command in the table ``easync.commands.COMMANDS`` has a handler::

    async def handler(server: EasServer, req: EasRequest) -> EasResponse

The HTTP layer (``easync.http``) has already authenticated the user, parsed the
query (plain or base64 form), decoded the WBXML body (``req.body`` is None for an
empty body), checked that the body's root matches the command, and enforced
provisioning for every command but Provision.  A handler never raises for bad
client input: it answers with the protocol's Status.  Raising ``EasHTTPError``
gives a bare HTTP status (e.g. 400); any other exception is a 500 and is logged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IReactorTime

from easync.interfaces import IChangeNotifier, IItemStore, IStateStore, IUserStore
from easync.model import User
from easync.requestread import RequestSnapshot
from easync.settings import Settings
from easync.versions import version_tuple
from easync.wbxml.element import Element

if TYPE_CHECKING:
    from easync.commands.sync import SyncCaches


@dataclass(slots=True)
class EasRequest:
    cmd: str                       # "Sync", "FolderSync", ...
    user: User
    device_id: str
    device_type: str
    version: str                   # "14.1", "16.1", ...
    policy_key: str | None = None  # X-MS-PolicyKey or from the base64 query
    params: dict[str, str] = field(default_factory=dict)  # CollectionId, ItemId, SaveInSent...
    user_agent: str = ""
    body: Element | None = None
    raw_body: bytes = b""
    client_addr: str = ""
    device: dict[str, Any] | None = None  # the IStateStore device record, if known
    # what the HTTP layer read with the device (easync.requestread): the command's first
    # look may use it instead of reading again; later looks (a held Sync woken) read
    preloaded: RequestSnapshot | None = None

    @property
    def v(self) -> tuple[int, int]:
        return version_tuple(self.version)


@dataclass
class EasResponse:
    body: Element | None = None    # None → empty 200 body
    http_status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    status: str = ""               # the EAS Status for the request log line
    woken: float | None = None     # time.monotonic() a change woke this long poll (metrics)
    wbxml: bytes | None = None     # ``body`` already encoded (a ready-made answer)


class EasHTTPError(Exception):
    """Answer with a bare HTTP status (no WBXML body)."""

    def __init__(self, code: int, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.headers = headers or {}


@dataclass
class EasServer:
    """Everything a handler may use.  Built by ``easync.tap.makeService``."""

    users: IUserStore
    items: IItemStore
    state: IStateStore
    notifier: IChangeNotifier
    clock: IReactorTime
    settings: Settings = field(default_factory=Settings)
    accounts: Any = None           # easync.auth.accounts.Accounts (who may sync)
    holds: Any = None              # easync.push.Holds: the long polls held (made if None)
    metrics: Any = None            # easync.metrics.Metrics (made if None)
    # easync.deleted: the mass-delete alarm (made from settings if None), and the
    # listing and restoring of kept deletes (set by easync.tap; None: not offered)
    mass_deletes: Any = None
    deleted: Any = None
    # what Sync keeps in memory (encoded items, the last request cache seen per device):
    # one per server, never a process global
    caches: SyncCaches = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.holds is None:
            from easync.push import Holds

            self.holds = Holds(self.notifier, self.clock)
        if self.metrics is None:
            from easync.metrics import Metrics

            self.metrics = Metrics()
        if self.mass_deletes is None:
            from easync.deleted import MassDeletes

            self.mass_deletes = MassDeletes(self.settings.mass_delete_share,
                                            self.settings.mass_delete_min)
            self.mass_deletes.register(self.metrics)
        from easync.commands.sync import SyncCaches

        self.caches = SyncCaches()

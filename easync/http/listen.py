"""Sites and listeners: the one place where easync turns endpoint strings into ports.

Every HTTP(S) port of a process is set up here (``twistd easync`` in ``easync.tap``):
the ``--listen`` ports with the EAS site, ``--account-listen`` with the account page's
own site, ``--metrics-listen`` with ``/metrics``.

* ``site``: a ``twisted.web.server.Site`` as easync serves them: no tracebacks to
  clients, no factory lines, no access log (the resources log their own line), a
  request class that bounds the body, and with ``ConnectionLimits`` the header timeout
  (``easync.http.limits.HeadTimeoutChannel``).
* ``Listeners``: adds one ``ListenerService`` per endpoint string to the
  service tree.  An ``ssl:`` endpoint without ``privateKey=`` gets the ``--tls-cert``
  file, the self-signed certificate (``easync.tls``) being created (and its
  fingerprint logged) once per process when it is first needed.  A port that cannot
  be bound stops twistd (``StartupError``, one line) instead of leaving a server that
  listens nowhere.
* ``ListeningReactor``: what ``serverFromString`` binds with: the reactor, except that
  TCP and TLS ports put the per-address connection cap (``ConnectionLimits``) in
  front of the factory, outside TLS, accept at most ``MAX_ACCEPTS`` connections per
  reactor turn (``BoundedAcceptPort``: a burst of connects is taken in slices), and
  with ``--workers`` bind with ``SO_REUSEPORT`` so that several processes accept on
  one port (``easync.workers``).
"""

from __future__ import annotations

import os
import socket
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet import tcp
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IProtocolFactory
from twisted.logger import Logger
from twisted.python import usage
from twisted.web import server
from twisted.web.resource import IResource

from easync import tls
from easync.errors import StartupError, one_line
from easync.http.limits import ConnectionLimits

# the certificate lines keep the namespace they have always been logged under
log = Logger(namespace="easync.tap")

__all__ = ["MAX_ACCEPTS", "BoundedAcceptPort", "ListenerService", "Listeners", "ListeningReactor", "ReusePort", "announce", "endpoint_description",
           "site"]


def site(root: IResource, *, request_factory: type[server.Request],
         timeout: float | None, limits: ConnectionLimits | None = None) -> server.Site:
    """A Site serving ``root`` as easync serves its sites.  With ``limits`` whose
    header timeout is set, that timeout replaces ``timeout`` (the idle timeout) and a
    request head must be complete within it."""
    if limits is not None and limits.header_timeout:
        timeout = limits.header_timeout
    made = server.Site(root, timeout=timeout)
    if limits is not None and limits.header_timeout:
        # an HTTP/1.1 channel class in place of Site's protocol factory, which Site
        # calls the same way (the stubs type it as that factory function)
        made.protocol = limits.channel_class()  # type: ignore[method-assign,assignment]
    made.requestFactory = request_factory
    made.displayTracebacks = False
    made.noisy = False
    made.log = lambda request: None  # type: ignore[method-assign]  # resources log their own
    return made


# The listen() backlog of tcp:, ssl: and unix: ports that do not say ``backlog=``: the
# accept queue a burst of connects lands in (phones reconnecting at once after a restart).
# Twisted's default, 50, drops the rest (issue #12 point 3); Linux caps it at
# net.core.somaxconn (4096 by default since 5.4).
DEFAULT_BACKLOG = 4096
_BACKLOG_KINDS = ("tcp", "tcp6", "ssl", "unix")


def endpoint_description(description: str, cert_path: str) -> tuple[str, bool]:
    """The endpoint string to use, and whether it uses the self-signed certificate:
    an ``ssl:`` endpoint without ``privateKey=`` gets ``cert_path``; a tcp:, tcp6:,
    ssl: or unix: endpoint without ``backlog=`` gets ``DEFAULT_BACKLOG``."""
    kind = description.split(":", 1)[0].lower()
    if kind in _BACKLOG_KINDS and "backlog=" not in description.lower():
        description = f"{description}:backlog={DEFAULT_BACKLOG}"
    if kind != "ssl" or "privatekey=" in description.lower():
        return description, False
    escaped = cert_path.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")
    return f"{description}:privateKey={escaped}", True


def announce(info: tls.CertificateInfo, now: float) -> None:
    """Log the certificate's fingerprint, for users to compare with their phone's."""
    log.info(
        "{verb} TLS certificate {path}, SHA-256 fingerprint {fingerprint}, "
        "names {names}, valid until {until}",
        verb="Created self-signed" if info.created else "Using",
        path=info.path, fingerprint=info.fingerprint,
        names=", ".join(info.dns_names), until=info.not_after.date().isoformat())
    if info.not_after.timestamp() < now:
        log.warn(  # noqa: G010 - twisted.logger.Logger has warn, not warning
            "TLS certificate {path} has expired: phones will refuse it; delete the "
            "file to have a new self-signed one created", path=info.path)


# -- binding ---------------------------------------------------------------------------------

# At most this many connections accepted per readiness event of a listening port (one
# reactor turn).  Twisted's port starts at 100 and adds 20 whenever it accepted as many
# as it tried, without bound: in a burst (thousands of phones reconnecting) one turn
# then builds hundreds of connections (and, on ssl:, their TLS objects) while everyone
# waits.  The rest stay in the listen queue (DEFAULT_BACKLOG) for the next turn.
MAX_ACCEPTS = 32


class BoundedAcceptPort(tcp.Port):
    """A TCP port that accepts at most ``max_accepts`` connections per event (Twisted's
    own scaling of ``numberAccepts``, capped)."""

    max_accepts = MAX_ACCEPTS
    _number_accepts = 1

    @property  # type: ignore[override]
    def numberAccepts(self) -> int:
        return self._number_accepts

    @numberAccepts.setter
    def numberAccepts(self, n: int) -> None:
        self._number_accepts = max(1, min(int(n), self.max_accepts))


class ReusePort(BoundedAcceptPort):
    """A TCP port bound with SO_REUSEPORT: several processes may listen on it."""

    def createInternetSocket(self) -> socket.socket:
        s = super().createInternetSocket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        return s


class ListeningReactor:
    """The reactor, except that ``listenTCP``/``listenSSL`` put ``limits``' per-address
    cap in front of the factory (before TLS: a refused connection costs no handshake)
    and, with ``reuse_port``, bind with SO_REUSEPORT; every TCP port accepts at most
    ``MAX_ACCEPTS`` connections per turn.  Give it to ``serverFromString`` so that any
    tcp:/tcp6:/ssl: endpoint string gets all of it."""

    def __init__(self, reactor: Any, limits: ConnectionLimits | None = None,
                 reuse_port: bool = False) -> None:
        self._reactor = reactor
        self._limits = limits
        self._reuse_port = reuse_port

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)

    def listenTCP(self, port: int, factory: Any, backlog: int = 50,
                  interface: str = "") -> Any:
        if self._limits is not None:
            factory = self._limits.wrap(factory)
        kind = ReusePort if self._reuse_port else BoundedAcceptPort
        p = kind(port, factory, backlog, interface, self._reactor)
        p.startListening()
        return p

    def listenSSL(self, port: int, factory: Any, contextFactory: Any, backlog: int = 50,
                  interface: str = "") -> Any:
        from twisted.protocols.tls import TLSMemoryBIOFactory

        p = self.listenTCP(port, TLSMemoryBIOFactory(contextFactory, False, factory),
                           backlog, interface)
        p._type = "TLS"
        return p


class ListenerService(StreamServerEndpointService):
    """One listener.  A port that cannot be bound (in use, not allowed, an address
    this machine does not have) stops twistd with ``StartupError``, one line naming
    the option and endpoint, instead of leaving a server running that listens nowhere
    (twistd's own strports services stop it too, with a traceback)."""

    def __init__(self, endpoint: Any, factory: IProtocolFactory, what: str) -> None:
        super().__init__(endpoint, factory)
        self.what = what
        self._raiseSynchronously = True

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except Exception as e:  # noqa: BLE001 - CannotListenError, a bad key file, …
            message = f"{self.what}: {one_line(e)}"
            log.error("{message}", message=message)
            raise StartupError(message) from None


class Listeners:
    """The listeners of one process, added to ``top`` as services (nothing is bound
    before the service tree starts).  ``tls_cert``: the file ``ssl:`` endpoints without
    ``privateKey=`` use, created self-signed when missing."""

    def __init__(self, top: MultiService, reactor: Any, tls_cert: str) -> None:
        self.top = top
        self.reactor = reactor
        self.cert_path = os.path.abspath(tls_cert)
        self._cert_ready = False

    def add(self, name: str, description: str, factory: IProtocolFactory, *, option: str,
            limits: ConnectionLimits | None = None,
            reuse_port: bool = False) -> StreamServerEndpointService:
        """Serve ``factory`` on the endpoint ``description`` (given as ``option``, for
        the error message: a UsageError for a bad endpoint or key file)."""
        full, self_signed = endpoint_description(description, self.cert_path)
        # (every port: the accept cap per turn, BoundedAcceptPort)
        binder: Any = ListeningReactor(self.reactor, limits, reuse_port)
        try:
            if self_signed and not self._cert_ready:
                announce(tls.ensure_certificate(self.cert_path), self.reactor.seconds())
                self._cert_ready = True
            endpoint = serverFromString(binder, full)
        except Exception as e:  # noqa: BLE001 - a bad key file, a missing certificate, …
            raise usage.UsageError(f"{option} {description}: {e}") from None
        service = ListenerService(endpoint, factory, f"{option} {description}")
        service.setName(name)
        service.setServiceParent(self.top)
        return service

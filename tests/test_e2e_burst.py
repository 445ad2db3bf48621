"""A burst of simultaneous connections is all served (issue #12 point 3).

When a company's phones reconnect at once (the server restarted, a network came back),
thousands of TCP connects reach the listener in the same instant.  The kernel completes
each handshake into the listening socket's accept queue, whose length is the
``listen()`` backlog; Twisted's default is 50, and a connect beyond it is dropped (the
phone retries a second later, or gets a reset).  easync listens with a backlog that fits
such a burst unless the endpoint string says ``backlog=``.

The test is Linux's: 1,000 connects from 1,000 loopback addresses (as 1,000 phones, and
under the per-address connection cap), all started before any is served, each sending
one request.  Every one must be answered, and the kernel's count of accept-queue
overflows (``TcpExtListenOverflows``) must not move.
"""

from __future__ import annotations

import errno
import select
import socket
import time
from pathlib import Path

import needs
from easync_server import RunningServer

BURST = 1000
REQUEST = b"GET /Microsoft-Server-ActiveSync HTTP/1.0\r\nHost: burst\r\n\r\n"

pytestmark = needs.mark(needs.linux())     # loopback source addresses, /proc/net


def listen_overflows() -> int:
    """The kernel's count of connections dropped because an accept queue was full."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for head, values in zip(lines[::2], lines[1::2]):
        if head.startswith("TcpExt:"):
            row = dict(zip(head.split()[1:], values.split()[1:]))
            return int(row["ListenOverflows"])
    raise AssertionError("no TcpExt line in /proc/net/netstat")


def burst(port: int, count: int, timeout: float) -> tuple[int, list[str]]:
    """Open ``count`` connections at once (each from its own 127.0.x.y), send one
    request on each as soon as it is connected; how many got an HTTP answer, and the
    errors of the others."""
    socks: dict[int, socket.socket] = {}
    for i in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.bind((f"127.0.{10 + i // 250}.{1 + i % 250}", 0))
        err = s.connect_ex(("127.0.0.1", port))
        assert err in (0, errno.EINPROGRESS), errno.errorcode.get(err, err)
        socks[s.fileno()] = s
    pending_send = set(socks)
    answers: dict[int, bytes] = {}
    errors: list[str] = []
    poll = select.poll()
    for fd in socks:
        poll.register(fd, select.POLLOUT | select.POLLIN)
    deadline = time.monotonic() + timeout
    open_fds = set(socks)
    try:
        while open_fds and time.monotonic() < deadline:
            for fd, ev in poll.poll(100):
                s = socks[fd]
                if fd in pending_send and ev & select.POLLOUT:
                    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        errors.append(errno.errorcode.get(err, str(err)))
                        poll.unregister(fd)
                        open_fds.discard(fd)
                        continue
                    s.send(REQUEST)
                    pending_send.discard(fd)
                    poll.modify(fd, select.POLLIN)
                elif ev & (select.POLLIN | select.POLLHUP | select.POLLERR):
                    try:
                        data = s.recv(65536)
                    except OSError as e:
                        errors.append(type(e).__name__)
                        data = b""
                    if data:
                        answers[fd] = answers.get(fd, b"") + data
                        continue
                    poll.unregister(fd)
                    open_fds.discard(fd)
    finally:
        for s in socks.values():
            s.close()
    served = sum(1 for a in answers.values() if a[:8] in (b"HTTP/1.0", b"HTTP/1.1") and a[9:12] == b"405")
    errors.extend("no answer" for _ in open_fds)
    return served, errors


def test_a_burst_of_connects_is_all_served(tmp_path: Path) -> None:
    server = RunningServer(tmp_path, tls=False).start()
    try:
        before = listen_overflows()
        served, errors = burst(server.port, BURST, timeout=60)
        overflows = listen_overflows() - before
    finally:
        server.stop()
    assert (served, errors[:5]) == (BURST, [])
    assert overflows == 0, f"{overflows} connects overflowed the accept queue"

"""A real SMTP listener for the tests: Twisted's ESMTP server in its own process.

``SmtpSink(workdir).start()`` listens on a free loopback port (``.port``) and writes each
message it accepts to ``workdir/NNNN.eml``; ``wait_for(to)`` returns the newest message
to an address (waiting for it), ``code_for(to)`` the 6-digit code in it.  A process of
its own, so a test that blocks (pyactivesync, a browser driver) still gets its mail.

Run directly: ``python tests/smtpsink.py PORT DIR``.
"""

from __future__ import annotations

import email
import email.policy
import re
import socket
import subprocess
import sys
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SmtpSink:
    def __init__(self, workdir: Path) -> None:
        self.dir = Path(workdir)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> SmtpSink:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen([sys.executable, str(HERE / "smtpsink.py"),
                                      str(self.port), str(self.dir)])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("the SMTP sink exited")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("the SMTP sink did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def messages(self, to: str | None = None) -> list[EmailMessage]:
        out = []
        for path in sorted(self.dir.glob("*.eml")):
            msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            assert isinstance(msg, EmailMessage)
            if to is None or to.lower() in str(msg["To"]).lower():
                out.append(msg)
        return out

    def wait_for(self, to: str, count: int = 1, timeout: float = 20.0) -> EmailMessage:
        """The ``count``-th message to ``to`` (1 = the first), once it has arrived."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.messages(to)
            if len(found) >= count:
                return found[count - 1]
            time.sleep(0.05)
        raise AssertionError(f"no message {count} to {to} within {timeout} s")

    def code_for(self, to: str, count: int = 1, timeout: float = 20.0) -> str:
        msg = self.wait_for(to, count, timeout)
        body = msg.get_body(preferencelist=("plain",))
        assert body is not None
        m = re.search(r"\b(\d{6})\b", body.get_content())
        assert m, "no 6-digit code in the message"
        return m.group(1)


# ------------------------------------------------------------------ the server process

def _serve(port: int, outdir: Path) -> None:
    from twisted.internet import defer, reactor
    from twisted.mail import smtp
    from zope.interface import implementer

    counter = [len(list(outdir.glob("*.eml")))]

    @implementer(smtp.IMessage)
    class Message:
        def __init__(self) -> None:
            self.lines: list[bytes] = []

        def lineReceived(self, line: bytes) -> None:
            self.lines.append(line)

        def eomReceived(self) -> defer.Deferred[None]:
            counter[0] += 1
            tmp = outdir / f"{counter[0]:04d}.tmp"
            tmp.write_bytes(b"\n".join(self.lines) + b"\n")
            tmp.rename(outdir / f"{counter[0]:04d}.eml")    # whole files only
            return defer.succeed(None)

        def connectionLost(self) -> None:
            self.lines = []

    @implementer(smtp.IMessageDelivery)
    class Delivery:
        def receivedHeader(self, helo: Any, origin: Any, recipients: Any) -> bytes:
            return b"Received: by easync test sink"

        def validateFrom(self, helo: Any, origin: Any) -> Any:
            return origin

        def validateTo(self, user: Any) -> Any:
            return Message

    class Factory(smtp.SMTPFactory):
        protocol = smtp.ESMTP

        def buildProtocol(self, addr: Any) -> Any:
            p = super().buildProtocol(addr)
            p.delivery = Delivery()
            return p

    reactor.listenTCP(port, Factory(), interface="127.0.0.1")  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    _serve(int(sys.argv[1]), Path(sys.argv[2]))

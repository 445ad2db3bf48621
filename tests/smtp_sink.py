"""A real SMTP listener for the tests: a small Twisted ESMTP server that accepts every
message and keeps it.

In the test process: ``SmtpSink(reactor).listen()`` (its ``messages`` and
``wait_for``).  As a separate process (the browser test drives a ``twistd easync``
child and a blocking browser, so its mail sink runs beside them)::

    python tests/smtp_sink.py PORT MAILDIR

writes each message to ``MAILDIR/<n>.eml`` (written under a temporary name, then
renamed) and prints ``ready`` once it listens.
"""

from __future__ import annotations

import email
import email.policy
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.mail import smtp
from zope.interface import implementer


@dataclass
class Mail:
    sender: str
    recipients: list[str]
    data: bytes

    @property
    def text(self) -> str:
        msg = email.message_from_bytes(self.data, policy=email.policy.default)
        part = msg.get_body(preferencelist=("plain", "html")) if msg.is_multipart() else msg
        return part.get_content() if part is not None else ""

    @property
    def subject(self) -> str:
        msg = email.message_from_bytes(self.data, policy=email.policy.default)
        return str(msg.get("Subject", ""))

    def code(self) -> str:
        """The 6-digit one-time code in the message."""
        found = re.findall(r"\b(\d{6})\b", self.subject + "\n" + self.text)
        if not found:
            raise AssertionError(f"no code in the message: {self.text!r}")
        return found[0]


@implementer(smtp.IMessage)
class _Message:
    def __init__(self, sink: SmtpSink, sender: str, recipient: str) -> None:
        self.sink = sink
        self.sender = sender
        self.recipient = recipient
        self.lines: list[bytes] = []

    def lineReceived(self, line: bytes) -> None:
        self.lines.append(line)

    def eomReceived(self) -> defer.Deferred[None]:
        self.sink._received(Mail(self.sender, [self.recipient],
                                 b"\n".join(self.lines) + b"\n"))
        return defer.succeed(None)

    def connectionLost(self) -> None:
        self.lines = []


@implementer(smtp.IMessageDelivery)
class _Delivery:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink
        self.sender = ""

    def receivedHeader(self, helo: Any, origin: Any, recipients: Any) -> bytes:
        return b"Received: by easync-test-sink"

    def validateFrom(self, helo: Any, origin: smtp.Address) -> smtp.Address:
        self.sender = str(origin)
        return origin

    def validateTo(self, user: smtp.User) -> Any:
        recipient = str(user.dest)
        return lambda: _Message(self.sink, self.sender, recipient)


class _Factory(smtp.SMTPFactory):
    def __init__(self, sink: SmtpSink) -> None:
        super().__init__()
        self.sink = sink
        self.noisy = False

    def buildProtocol(self, addr: Any) -> smtp.ESMTP:
        proto = smtp.ESMTP()
        proto.factory = self
        proto.delivery = _Delivery(self.sink)
        proto.host = b"sink.test"
        return proto


class SmtpSink:
    """Accepts every message on 127.0.0.1; keeps them in ``messages``."""

    def __init__(self, reactor: Any, maildir: Path | None = None) -> None:
        self.reactor = reactor
        self.maildir = maildir
        self.messages: list[Mail] = []
        self._waiters: list[tuple[str, defer.Deferred[Mail]]] = []
        self.port: Any = None

    def listen(self, port: int = 0) -> SmtpSink:
        self.port = self.reactor.listenTCP(port, _Factory(self), interface="127.0.0.1")
        return self

    @property
    def port_number(self) -> int:
        return int(self.port.getHost().port)

    def stop(self) -> defer.Deferred[None]:
        return defer.maybeDeferred(self.port.stopListening)

    def _received(self, mail: Mail) -> None:
        self.messages.append(mail)
        if self.maildir is not None:
            n = len(self.messages)
            tmp = self.maildir / f".{n}.tmp"
            tmp.write_bytes(mail.data)
            os.replace(tmp, self.maildir / f"{n:04d}.eml")
        waiting, self._waiters = self._waiters, []
        for to, d in waiting:
            if to in mail.recipients:
                d.callback(mail)
            else:
                self._waiters.append((to, d))

    def wait_for(self, to: str, after: int = 0) -> defer.Deferred[Mail]:
        """The first message to ``to`` among those from index ``after`` on (waits)."""
        for mail in self.messages[after:]:
            if to in mail.recipients:
                return defer.succeed(mail)
        d: defer.Deferred[Mail] = defer.Deferred()
        self._waiters.append((to, d))
        return d


def main(argv: list[str]) -> None:
    from twisted.internet import reactor

    port, maildir = int(argv[0]), Path(argv[1])
    maildir.mkdir(parents=True, exist_ok=True)
    SmtpSink(reactor, maildir).listen(port)
    print("ready", flush=True)
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main(sys.argv[1:])

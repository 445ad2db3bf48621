"""One-time codes by e-mail through an SMTP relay (Twisted's ESMTP client).

``--smtp-host`` (and ``--smtp-port``, default 25) names the relay; ``--smtp-from`` the
sender; ``--smtp-starttls`` requires STARTTLS (the relay's certificate is verified
against the system's CAs, or ``--smtp-ca-file``); ``--smtp-user`` with the password in
``--smtp-password-file`` authenticates (only over TLS).  A relay that is down, refuses
the message or does not answer within ``--smtp-timeout`` seconds gives
``DeliveryFailed`` naming the relay and the reason; the code is never logged.
"""

from __future__ import annotations

import email.utils
import io
from email.message import EmailMessage
from typing import Any

from twisted.internet.defer import Deferred, TimeoutError
from twisted.internet.endpoints import HostnameEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from easync import i18n
from easync.auth.accounts import DeliveryFailed
from easync.i18n import msg

__all__ = ["SmtpMailer", "code_message"]

log = Logger()


def code_message(sender: str, to: str, user: str, code: str, minutes: int,
                 issuer: str = "easync", lang: str | None = None) -> bytes:
    """The e-mail carrying a code (plain text), in ``lang`` (default: the language in
    force, ``easync.i18n``: the account page's visitor's)."""
    t = i18n.translations(lang or i18n.current())
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = to
    mail["Subject"] = t.gettext("Your {issuer} security code").format(issuer=issuer)
    mail["Date"] = email.utils.formatdate(localtime=False)
    mail["Message-ID"] = email.utils.make_msgid(domain=sender.partition("@")[2] or None)
    mail["Auto-Submitted"] = "auto-generated"
    mail.set_content(t.ngettext(
        "Hello {user},\n\n"
        "your security code is: {code}\n\n"
        "It is valid for {minutes} minute and can be used once.  If you did not try to "
        "sign in to the {issuer} account page, someone knows your password: change it.\n",
        "Hello {user},\n\n"
        "your security code is: {code}\n\n"
        "It is valid for {minutes} minutes and can be used once.  If you did not try to "
        "sign in to the {issuer} account page, someone knows your password: change it.\n",
        minutes).format(user=user, code=code, minutes=minutes, issuer=issuer))
    mail["Content-Language"] = lang or i18n.current()     # after set_content, which drops it
    return mail.as_bytes()


class SmtpMailer:
    """``CodeMailer`` over SMTP: ``send_code`` fires once the relay accepted the mail."""

    def __init__(self, reactor: Any, host: str, port: int = 25, *, sender: str,
                 starttls: bool = False, username: str | None = None,
                 password: str | None = None, timeout: float = 20.0,
                 ca_file: str | None = None, issuer: str = "easync") -> None:
        if username and not starttls:
            raise ValueError("smtp-user needs smtp-starttls: a password is never sent "
                             "over an unencrypted connection")
        self.reactor = reactor
        self.host = host
        self.port = port
        self.sender = sender
        self.starttls = starttls
        self.username = username
        self.password = password
        self.timeout = timeout
        self.ca_file = ca_file
        self.issuer = issuer

    def _tls(self) -> Any:
        from twisted.internet.ssl import Certificate, optionsForClientTLS, platformTrust

        trust: Any = platformTrust()
        if self.ca_file:
            with open(self.ca_file, "rb") as f:
                trust = Certificate.loadPEM(f.read())
        return optionsForClientTLS(self.host, trustRoot=trust)

    def send_code(self, to: str, user: str, code: str, minutes: int) -> Deferred[None]:
        """Send in the language in force now (the account page's visitor's)."""
        return Deferred.fromCoroutine(self._send(to, user, code, minutes, i18n.current()))

    async def _send(self, to: str, user: str, code: str, minutes: int, lang: str) -> None:
        from twisted.mail.smtp import ESMTPSenderFactory

        where = f"{self.host}:{self.port}"
        data = code_message(self.sender, to, user, code, minutes, self.issuer, lang)
        done: Deferred[Any] = Deferred()
        try:
            factory = ESMTPSenderFactory(
                self.username.encode() if self.username else None,
                self.password.encode() if self.password else None,
                self.sender, [to], io.BytesIO(data), done, retries=0,
                timeout=int(self.timeout),
                contextFactory=self._tls() if self.starttls else None,
                requireAuthentication=bool(self.username),
                requireTransportSecurity=self.starttls)
            factory.noisy = False
            endpoint = HostnameEndpoint(self.reactor, self.host, self.port,
                                        timeout=self.timeout)
            connecting = endpoint.connect(factory)
            connecting.addErrback(_fail_unless_called, done)
            done.addTimeout(self.timeout + 5, self.reactor)
            await done
        except TimeoutError:
            raise DeliveryFailed(msg("the mail relay {where} did not answer in time: the "
                                     "code was not sent; try again later", where=where)
                                 ) from None
        except DeliveryFailed:
            raise
        except Exception as e:  # noqa: BLE001 - connection refused, SMTP errors, TLS
            reason = _reason(e)
            log.warn("cannot send a code through {where}: {reason}",  # noqa: G010
                     where=where, reason=reason)
            raise DeliveryFailed(msg("the mail relay {where} cannot take the message "
                                     "({reason}): the code was not sent; try again later",
                                     where=where, reason=reason)) from None


def _reason(e: Exception) -> str:
    text = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {text}"[:200] if text else type(e).__name__


def _fail_unless_called(failure: Failure, done: Deferred[Any]) -> None:
    """The connection failed: ``done`` fails with it, unless it has an outcome already."""
    if not done.called:
        done.errback(failure)

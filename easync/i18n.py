"""What people read, in their language: English (the source) or Italian.

The account page and the e-mails it sends speak the language the browser asks for
(``Accept-Language``, ``negotiate``); ``easync-admin`` speaks the language of its locale
(``LANGUAGE``, ``LC_ALL``, ``LC_MESSAGES``, ``LANG``: ``locale_language``).  Logs stay in
English.

The catalogues are gettext's: domain ``easync``, ``easync/locale/<lang>/LC_MESSAGES/
easync.po`` with its compiled ``.mo`` beside it (both committed; ``python -m
easync.locale`` updates and compiles them with Babel, README "Translations").  At run
time only the standard library's ``gettext`` is used.

The language in force is a context variable: ``use(lang)`` at the start of a request's
coroutine (Twisted runs each coroutine in a copy of the context, so one request's
language never leaks into another's) or of a command.  ``_`` / ``ngettext`` translate
into it at once.  Messages made where the language is not known — the account
service's refusals, shared by the page and ``easync-admin`` — are ``msg(...)``: an
English ``str`` that remembers its template, said again in the reader's language by
``tr`` where it is shown.
"""

from __future__ import annotations

import functools
import gettext
import os
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Self

__all__ = [
    "DEFAULT",
    "DOMAIN",
    "KEYWORDS",
    "LANGUAGES",
    "LOCALE_DIR",
    "N_",
    "Msg",
    "_",
    "current",
    "locale_language",
    "msg",
    "msg_n",
    "negotiate",
    "ngettext",
    "tr",
    "use",
]

DOMAIN = "easync"
LOCALE_DIR = Path(__file__).resolve().parent / "locale"
#: the languages with a catalogue; the first is the source language and the fallback
LANGUAGES = ("en", "it")
DEFAULT = LANGUAGES[0]
#: the marker functions Babel extracts (name → positions of the message arguments)
KEYWORDS: dict[str, tuple[int, ...]] = {
    "_": (1,), "N_": (1,), "gettext": (1,), "ngettext": (1, 2), "msg": (1,),
    "msg_n": (1, 2)}

_language: ContextVar[str] = ContextVar("easync_language", default=DEFAULT)
# Longest Accept-Language looked at (browsers send well under 200 characters).
_MAX_ACCEPT = 1000


@functools.cache
def translations(lang: str) -> gettext.NullTranslations:
    """The catalogue of ``lang`` (English: none, the messages are English)."""
    if lang not in LANGUAGES or lang == DEFAULT:
        return gettext.NullTranslations()
    return gettext.translation(DOMAIN, str(LOCALE_DIR), languages=[lang])


def use(lang: str) -> None:
    """Speak ``lang`` from now on in this context (an unknown one: English)."""
    _language.set(lang if lang in LANGUAGES else DEFAULT)


def current() -> str:
    """The language in force here."""
    return _language.get()


def _(message: str) -> str:
    """``message`` in the language in force."""
    return translations(current()).gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    return translations(current()).ngettext(singular, plural, n)


def N_(message: str) -> str:
    """Marks ``message`` for the catalogue; ``_(message)`` translates it later."""
    return message


class Msg(str):
    """An English message (the ``str`` itself) that can be said again in another
    language: its ``template`` (a catalogue entry, ``str.format`` fields) and ``params``
    (and the plural form and count when it has one)."""

    template: str
    plural: str | None
    n: int
    params: Mapping[str, Any]

    def __new__(cls, template: str, plural: str | None = None, n: int = 1,
                params: Mapping[str, Any] | None = None) -> Self:
        fmt = plural if plural is not None and n != 1 else template
        params = dict(params or {})
        self = super().__new__(cls, fmt.format(**params) if params else fmt)
        self.template, self.plural, self.n, self.params = template, plural, n, params
        return self

    def say(self, lang: str) -> str:
        t = translations(lang)
        fmt = (t.ngettext(self.template, self.plural, self.n) if self.plural is not None
               else t.gettext(self.template))
        return fmt.format(**self.params) if self.params else fmt


def msg(template: str, /, **params: Any) -> str:
    """An English message, translated where it is shown (``tr``)::

        raise NotFound(msg("no user named {name!r}", name=name))
    """
    return Msg(template, params=params)


def msg_n(singular: str, plural: str, n: int, /, **params: Any) -> str:
    """``msg`` with a plural form, chosen by ``n`` (also a field: ``{n}``)."""
    return Msg(singular, plural, n, {"n": n, **params})


def tr(text: str, lang: str | None = None) -> str:
    """``text`` in ``lang`` (default: the language in force): a ``msg`` is made again
    from its template, other text looked up as it is (unknown: left as it is)."""
    lang = lang or current()
    if isinstance(text, Msg):
        return text.say(lang)
    return translations(lang).gettext(text) if text else text


def negotiate(accept_language: str | None) -> str:
    """The language to answer an ``Accept-Language`` header with (RFC 9110 12.5.4):
    the supported one with the highest q-value (the first listed on a tie), matching
    by primary tag (``it-IT`` is Italian); English when none is acceptable."""
    best, best_q = DEFAULT, 0.0
    for part in (accept_language or "")[:_MAX_ACCEPT].split(","):
        tag, _sep, params = part.partition(";")
        primary = tag.strip().lower().split("-")[0]
        if primary not in LANGUAGES:
            continue
        q = 1.0
        for param in params.split(";"):
            key, _sep, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
        if 0.0 < q <= 1.0 and q > best_q:
            best, best_q = primary, q
    return best


def locale_language(environ: Mapping[str, str] | None = None) -> str:
    """The language of the locale, as gettext reads it: the first of ``LANGUAGE``,
    ``LC_ALL``, ``LC_MESSAGES``, ``LANG`` that is set (``LANGUAGE`` may list several,
    ``it:en``); ``it_IT.UTF-8`` is Italian; English when it names no supported one."""
    env = os.environ if environ is None else environ
    for var in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
        value = env.get(var, "")
        if not value:
            continue
        for item in value.split(":"):
            code = item.split(".")[0].split("@")[0].split("_")[0].lower()
            if code in LANGUAGES:
                return code
        return DEFAULT
    return DEFAULT

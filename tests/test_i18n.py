"""Languages (issue 13 point 9): how the language is chosen (``Accept-Language`` for the
account page, the locale for ``easync-admin``), the catalogues against the source (every
marked message has an Italian translation with the same fields; the committed ``.mo``
files are compiled from the ``.po``), and messages said again in another language."""

from __future__ import annotations

import email
import email.policy
import re
import string
from pathlib import Path

import pytest

from easync import i18n
from easync import locale as catalogues
from easync.auth.mail import code_message
from easync.i18n import msg, msg_n, negotiate, tr

# ---------------------------------------------------------------------- choosing


@pytest.mark.parametrize(("header", "lang"), [
    ("it-IT,it;q=0.9,en-US;q=0.8,en;q=0.7", "it"),      # an Italian browser
    ("it", "it"),
    ("IT-it", "it"),                                      # tags are case-insensitive
    ("en-US,en;q=0.9,it;q=0.8", "en"),
    ("fr-FR,fr;q=0.9,it;q=0.5,en;q=0.4", "it"),          # the best supported one
    ("de, en;q=0.2, it;q=0.7", "it"),
    ("en;q=0.5, it;q=0.5", "en"),                         # a tie: the first listed
    ("it;q=0, en;q=0.1", "en"),                           # q=0: "not acceptable"
    ("it;q=0", "en"),
    ("fr-FR,de", "en"),                                   # nothing supported: English
    ("*", "en"),
    ("", "en"),
    (None, "en"),
    ("it;q=abc", "en"),                                   # a broken q-value
    ("it;q=2", "en"),                                     # out of range
    ("italian", "en"),                                    # not the tag "it"
    (" it-CH ; q=0.8 , en ; q=0.3", "it"),
])
def test_negotiate_accept_language(header: str | None, lang: str) -> None:
    """RFC 9110 12.5.4: the highest q-value among the languages we have wins."""
    assert negotiate(header) == lang


@pytest.mark.parametrize(("env", "lang"), [
    ({"LANG": "it_IT.UTF-8"}, "it"),
    ({"LANG": "en_GB.UTF-8"}, "en"),
    ({"LANG": "C.UTF-8"}, "en"),
    ({"LANG": "de_DE.UTF-8"}, "en"),
    ({}, "en"),
    ({"LC_MESSAGES": "it_IT.UTF-8", "LANG": "en_US.UTF-8"}, "it"),
    ({"LC_ALL": "C", "LC_MESSAGES": "it_IT.UTF-8"}, "en"),     # LC_ALL overrides
    ({"LANGUAGE": "de:it", "LANG": "en_US.UTF-8"}, "it"),      # a list, in order
    ({"LANGUAGE": "", "LANG": "it_IT@euro"}, "it"),            # empty: not set
    ({"LANGUAGE": "en:it", "LC_ALL": "it_IT.UTF-8"}, "en"),
])
def test_locale_language(env: dict[str, str], lang: str) -> None:
    """As gettext reads the locale: LANGUAGE, LC_ALL, LC_MESSAGES, LANG, first set wins."""
    assert i18n.locale_language(env) == lang


# ---------------------------------------------------------------------- catalogues

def test_catalogues_match_the_source() -> None:
    """Every message marked in the source is in every catalogue, translated into
    Italian (not fuzzy), and the committed .mo files are compiled from the .po files.
    Fails when someone adds a message without translating it: run ``python -m
    easync.locale update``, translate, ``python -m easync.locale compile``."""
    assert catalogues.check() == []


def test_catalogue_check_sees_a_new_untranslated_message(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """The check above can fail: a new marked message, also inside an f-string."""
    src = tmp_path / "easync_extra"
    src.mkdir()
    (src / "new.py").write_text(
        "from easync.i18n import _\n"
        "def page(x):\n"
        "    return f'<p>{_(\"A message nobody translated\")}</p>'\n", encoding="utf-8")
    monkeypatch.setattr(catalogues, "SOURCES", (*catalogues.SOURCES, src))
    problems = catalogues.check()
    assert "it: not in the catalogue: 'A message nobody translated'" in problems


def _fields(text: str) -> list[str]:
    return sorted(f"{name}!{conv}" for _lit, name, _spec, conv in
                  string.Formatter().parse(text) if name is not None)


def test_italian_keeps_every_field_and_tag() -> None:
    """A translation with a field missing, renamed ({utente}) or extra would raise or
    drop a value when formatted; an HTML tag lost would break the page."""
    catalog = catalogues.read_po("it")
    checked = 0
    for m in catalog:
        if not m.id:
            continue
        ids = m.id if isinstance(m.id, tuple) else (m.id,)
        strings = m.string if isinstance(m.string, tuple) else (m.string,)
        for s in strings:
            assert _fields(s) == _fields(ids[-1]), (m.id, s)
            assert re.findall(r"</?\w+>", s) == re.findall(r"</?\w+>", ids[0]), (m.id, s)
            checked += 1
    assert checked > 200


def test_vtenext_wording() -> None:
    """The vtenext Italian pages' terms (shared/seeds), where they exist."""
    it = i18n.translations("it")
    assert it.gettext("ActiveSync password") == "Password ActiveSync"
    assert it.gettext("Change the ActiveSync password") == "Cambia Password ActiveSync"
    assert it.gettext("New password") == "Nuova Password"
    assert it.gettext("Confirm password") == "Conferma Password"
    assert it.gettext("Save") == "Salva"
    assert it.gettext("Cancel") == "Annulla"
    assert it.gettext("Verify") == "Verifica"
    assert it.gettext("Two-factor authentication") == "Autenticazione a 2 fattori"
    assert it.gettext("You need to authenticate to proceed.") == \
        "E' necessario autenticarsi per procedere."


# ---------------------------------------------------------------------- messages

def test_msg_is_english_and_said_again_in_italian() -> None:
    m = msg("no user named {name!r}", name="mario")
    assert m == "no user named 'mario'"            # a str: logs and tests see English
    assert tr(m, "it") == "non esiste un utente di nome 'mario'"
    assert tr(m, "en") == m
    one = msg_n("wrong code ({n} try left)", "wrong code ({n} tries left)", 1)
    four = msg_n("wrong code ({n} try left)", "wrong code ({n} tries left)", 4)
    assert (one, four) == ("wrong code (1 try left)", "wrong code (4 tries left)")
    assert tr(one, "it") == "codice errato (1 tentativo rimasto)"
    assert tr(four, "it") == "codice errato (4 tentativi rimasti)"
    assert tr("text that is in no catalogue", "it") == "text that is in no catalogue"


def test_language_is_per_context() -> None:
    """``use`` sets the language of the current context only."""
    import contextvars

    def speak(lang: str) -> str:
        i18n.use(lang)
        return i18n._("Verify")

    assert contextvars.copy_context().run(speak, "it") == "Verifica"
    assert i18n.current() == "en" and i18n._("Verify") == "Verify"
    assert contextvars.copy_context().run(speak, "xx") == "Verify"   # unknown: English


# ---------------------------------------------------------------------- the e-mail

def _mail(data: bytes) -> email.message.EmailMessage:
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(parsed, email.message.EmailMessage)
    return parsed


def test_code_mail_in_italian_and_english() -> None:
    it = _mail(code_message("easync@example.it", "mario@example.it", "mario", "496655", 10,
                            lang="it"))
    assert it["Subject"] == "Il tuo codice di sicurezza easync"
    assert it["Content-Language"] == "it"
    body = it.get_content()
    assert body.startswith("Ciao mario,")
    assert "il tuo codice di sicurezza è: 496655" in body
    assert "È valido per 10 minuti" in body
    en = _mail(code_message("easync@example.it", "mario@example.it", "mario", "496655", 1,
                            lang="en"))
    assert en["Subject"] == "Your easync security code"
    assert en["Content-Language"] == "en"
    assert "your security code is: 496655" in en.get_content()
    assert "valid for 1 minute " in en.get_content()

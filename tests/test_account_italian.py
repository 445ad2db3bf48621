"""The account page, its JSON API and its e-mails in Italian (issue 13 point 9): the
language is the browser's ``Accept-Language`` (Italian for ``it``/``it-IT``, English for
anything else), over real HTTP on the real account service with a real SMTP listener."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from account_http import PASSWORD, AccountServer
from twisted.internet.defer import Deferred, gatherResults

pytestmark = pytest.mark.timeout(60)

ITALIAN = "it-IT,it;q=0.9,en-US;q=0.8,en;q=0.7"     # what an Italian Chrome sends


async def _mail_to(srv: AccountServer, to: str, after: int) -> Any:
    d: Deferred[Any] = srv.sink.wait_for(to, after)
    d.addTimeout(15, srv.reactor)
    return await d


@pytest_twisted.async_yield_fixture()
async def srv(tmp_path: Path) -> AsyncIterator[AccountServer]:
    from twisted.internet import reactor

    s = await AccountServer(reactor, tmp_path).start()
    await s.add_user("mario", email="mario@example.it", twofa="email")
    await s.add_user("luigi", email="luigi@example.it", twofa="email")
    await s.add_user("anna", email="anna@example.it")
    yield s
    await s.stop()


@pytest_twisted.ensureDeferred
async def test_page_in_italian_english_the_fallback(srv: AccountServer) -> None:
    it = await srv.client(ITALIAN).get("/account/login")
    assert it.status == 200
    assert '<html lang="it">' in it.text
    assert it.header("content-language") == "it"
    assert "Nome Utente" in it.text and ">Accedi</button>" in it.text
    assert "Log in" not in it.text
    for other in (None, "fr-FR,fr;q=0.9,de;q=0.8", "en-GB,it;q=0.5"):
        en = await srv.client(other).get("/account/login")
        assert '<html lang="en">' in en.text, other
        assert en.header("content-language") == "en"
        assert ">Log in</button>" in en.text and "Accedi" not in en.text


@pytest_twisted.ensureDeferred
async def test_refusals_and_overview_in_italian(srv: AccountServer) -> None:
    c = srv.client(ITALIAN)
    r = await c.login("anna", "wrong password")
    # the service's refusal, said again in Italian by the page
    assert r.status == 403 and "Nome utente o password errati." in r.messages()
    r = await c.login("anna")
    assert r.url.endswith("/account/")
    assert "Accesso come <strong>anna</strong>" in r.text
    assert "I dispositivi mobili usano la tua password di accesso." in r.text
    assert "Vedi e modifica la Password ActiveSync" in r.text
    page = await c.get("/account/as-password")
    r = await c.submit(page, "/account/as-password",
                       {"action": "set", "new": "abcdefgh1", "confirm": "abcdefgh2"})
    assert r.status == 400
    assert "La nuova password e la conferma non coincidono." in r.messages()
    r = await c.submit(page, "/account/as-password",
                       {"action": "set", "new": "abcdefgh1", "confirm": "abcdefgh1"})
    assert any(m.startswith("La tua Password ActiveSync è impostata.") for m in r.messages())
    assert (await srv.service.status("anna")).as_password.is_set


@pytest_twisted.ensureDeferred
async def test_code_mail_in_the_language_of_the_login(srv: AccountServer) -> None:
    """The e-mailed code speaks the language of the page that asked for it."""
    c = srv.client(ITALIAN)
    n = len(srv.sink.messages)
    page = await c.login("mario")
    assert "Abbiamo inviato un codice di 6 cifre a <strong>m***@example.it</strong>" in \
        page.text
    mail = await _mail_to(srv, "mario@example.it", n)
    assert mail.subject == "Il tuo codice di sicurezza easync"
    assert mail.text.startswith("Ciao mario,")
    code = mail.code()
    wrong = f"{(int(code) + 1) % 1000000:06d}"
    r = await c.submit(page, "/account/login/code", {"code": wrong})
    assert r.status == 403 and "Codice errato (4 tentativi rimasti)." in r.messages()

    en = srv.client()
    n = len(srv.sink.messages)
    await en.login("luigi")         # (mario may ask for a new code only in 30 s)
    mail = await _mail_to(srv, "luigi@example.it", n)
    assert mail.subject == "Your easync security code"
    assert mail.text.startswith("Hello luigi,")


@pytest_twisted.ensureDeferred
async def test_json_api_messages_in_italian(srv: AccountServer) -> None:
    it = srv.client(ITALIAN)
    r = await it.api("GET", "status")
    assert r.status == 401 and r.json()["error"] == {"code": "login",
                                                      "message": "Accedi prima."}
    r = await it.api("POST", "login", {"username": "anna", "password": "nope"})
    assert r.status == 403
    assert r.json()["error"] == {"code": "bad-password",
                                 "message": "Nome utente o password errati."}
    r = await it.api("POST", "login", {"username": "anna", "password": 5})
    assert r.status == 400
    assert r.json()["error"]["message"] == "Il campo 'password' deve essere una stringa."
    r = await it.api("POST", "login", {"username": "anna", "password": PASSWORD},
                     csrf="wrong")
    assert r.status == 403 and r.json()["error"]["message"].startswith(
        "Il modulo è scaduto o non proviene da questa pagina")
    en = srv.client("de-DE")
    r = await en.api("POST", "login", {"username": "anna", "password": "nope"})
    assert r.json()["error"]["message"] == "Wrong user name or password."


@pytest_twisted.ensureDeferred
async def test_concurrent_requests_keep_their_own_language(srv: AccountServer) -> None:
    """Requests in flight at the same time (bcrypt runs in threads, so they interleave)
    each answer in their own language: the language is per request, not per process."""
    for i in range(4):              # one user each: the throttle caps checks per user
        await srv.add_user(f"user{i}")
    clients = [srv.client(ITALIAN if i % 2 else "en") for i in range(4)]
    pages = await gatherResults([Deferred.fromCoroutine(c.login(f"user{i}", "wrong"))
                                 for i, c in enumerate(clients)])
    for i, r in enumerate(pages):
        want = ("Nome utente o password errati." if i % 2 else
                "Wrong user name or password.")
        assert want in r.messages(), (i, r.messages())

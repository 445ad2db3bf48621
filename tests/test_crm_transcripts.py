"""Replay every recorded request of a real CRM against the fake (issue #9).

The recordings are ``../shared/crm-transcripts/*.jsonl`` beside the repository (see the
README there).  Each file is replayed in order against ``tests/fakecrm.py`` of the
flavour its name starts with, set up as the CRM was: users admin (id 1, administrator,
Europe/Rome, dd-mm-yyyy, 12 h) and mario (id 5, Europe/Rome, dd-mm-yyyy, 24 h), the
recording's id prefixes, records made in the recorded order.  Per step the test
compares:

* API calls (through ``FakeCrmResource``, so over the HTTP layer): HTTP status, content
  type, the body — ``success``, error code and message, the field names of every
  answer, every value (all strings), the records each answer holds and their order.
  Placeholders become patterns or bindings: ``<id:N>``/``CON<no:N>`` bind to the fake's
  N-th id (and must stay consistent), ``<now>`` is a ``YYYY-MM-DD HH:MM:SS`` time (an
  integer in getchallenge, with ``<now+300>`` = it + 300), ``<today>`` the fake's date.
* UI saves (``request.ui``): the fake's Edit view (``ui_edit_form`` plus what the user
  changed) must be the recorded form, and the recorded form is then saved through
  ``ui_save``; the saved record binds the ``<id:N>`` of the recorded redirect.
* SQL reads (``request.sql``): the rows of the fake's modelled table (``table``),
  filtered and ordered as the query says.

Where the fake and the recording differ, the recording is right.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from io import BytesIO
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import needs
import pytest
from fakecrm import FakeCrm, FakeCrmResource
from twisted.web.test.requesthelper import DummyRequest

REPO = Path(__file__).resolve().parents[1]
TRANSCRIPTS = REPO.parent / "shared" / "crm-transcripts"
FILES = sorted(TRANSCRIPTS.glob("*.jsonl")) if TRANSCRIPTS.is_dir() else []

pytestmark = needs.mark(None if FILES else
                        f"no recorded CRM transcripts in {TRANSCRIPTS} (../shared beside the"
                        " repository)")

ADMIN_KEY = "recordedAdminKey"      # the real key is a placeholder in the recording
PREFIXES = {"Contacts": "12", "Events": "18", "Calendar": "9", "Users": "19"}
START = datetime(2026, 12, 4, 9, 0, tzinfo=UTC).timestamp()    # the day of the recording
PLACEHOLDER = re.compile(r"CON<no:(\d+)>|<(id:\d+|token|session|md5|md5-wrong|accesskey|now"
                         r"|now\+300|csrf|today|today\+1|today\+1y)>")
STAMP = r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}"


def load(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def step_ids() -> list[tuple[str, str]]:
    return [(path.name, step["step"]) for path in FILES for step in load(path)]


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        self.now += 1
        return self.now


class Replay:
    """One recording replayed against a fresh fake; ``problems`` per step."""

    def __init__(self, path: Path) -> None:
        flavour = "vtiger" if path.name.startswith("vtiger") else "vtenext"
        self.clock = Clock()
        self.crm = FakeCrm(flavour, clock=self.clock, prefixes=PREFIXES, admin_key=ADMIN_KEY,
                           admin_tz="Europe/Rome", admin_date_format="dd-mm-yyyy")
        self.crm.update_user("admin", first_name="Admin", last_name="Administrator",
                             email="admin@example.org", hour_format="12")
        self.crm.add_user("mario", user_id=5, timezone="Europe/Rome",
                          date_format="dd-mm-yyyy", hour_format="24",
                          email="mario@example.org", first_name="Mario", last_name="Rossi")
        self.resource = FakeCrmResource(self.crm)
        self.ids: dict[str, int] = {}           # "id:N" -> crmid
        self.nos: dict[str, str] = {}           # "N" -> contact number digits
        self.tokens: list[str] = []
        self.session = ""
        self.problems: dict[str, list[str]] = {}
        for step in load(path):
            out: list[str] = []
            try:
                self.run(step, out)
            except Exception as e:  # noqa: BLE001 - reported as the step's problem
                out.append(f"replay raised {type(e).__name__}: {e}")
            self.problems[step["step"]] = out

    # -- placeholders ------------------------------------------------------------------
    def today(self, days: int = 0, years: int = 0) -> datetime:
        now = datetime.fromtimestamp(self.clock.now, UTC) + timedelta(hours=1)   # Rome
        day = now + timedelta(days=days)
        return day.replace(year=day.year + years)

    def fill(self, text: str, step: str, ui: bool = False) -> str:
        """A recorded request value with the placeholders replaced by this run's."""
        fmt = "%d-%m-%Y" if ui else "%Y-%m-%d"

        def one(m: re.Match[str]) -> str:
            if m.group(1):
                return f"CON{self.nos[m.group(1)]}"
            name = m.group(2)
            if name.startswith("id:"):
                if name not in self.ids:
                    raise KeyError(f"{name} used before the recording made it")
                return str(self.ids[name])
            if name == "session":
                return self.session
            if name in ("md5", "md5-wrong"):
                token = self.tokens[0] if "stale" in step else self.tokens[-1]
                key = ADMIN_KEY if name == "md5" else "not-the-key"
                return hashlib.md5((token + key).encode()).hexdigest()
            if name == "now":
                return self.crm.now_local()
            if name == "csrf":
                return "sid:replayed-csrf"
            if name == "today":
                return self.today().strftime(fmt)
            if name == "today+1":
                return self.today(days=1).strftime(fmt)
            if name == "today+1y":
                return self.today(years=1).strftime(fmt)
            raise KeyError(name)

        return PLACEHOLDER.sub(one, text)

    # -- comparison --------------------------------------------------------------------
    def pattern(self, expected: str) -> tuple[str, list[tuple[str, str]]]:
        """A regex for a recorded string and the bindings its groups make."""
        parts, binds, pos = [], [], 0
        for m in PLACEHOLDER.finditer(expected):
            parts.append(re.escape(expected[pos:m.start()]))
            pos = m.end()
            if m.group(1):
                n = m.group(1)
                if n in self.nos:
                    parts.append("CON" + re.escape(self.nos[n]))
                else:
                    parts.append(r"CON(\d+)")
                    binds.append(("no", n))
                continue
            name = m.group(2)
            if name.startswith("id:"):
                if name in self.ids:
                    parts.append(str(self.ids[name]) + r"(?!\d)")
                else:
                    parts.append(r"(\d+)")
                    binds.append(("id", name))
            elif name == "now":
                parts.append(STAMP)
            elif name in ("token", "session"):
                parts.append(r"[0-9A-Za-z.]+")
            elif name == "today":
                parts.append(self.today().strftime("%Y-%m-%d"))
            elif name == "today+1":
                parts.append(self.today(days=1).strftime("%Y-%m-%d"))
            elif name == "today+1y":
                parts.append(self.today(years=1).strftime("%Y-%m-%d"))
            else:
                parts.append(".+")
        parts.append(re.escape(expected[pos:]))
        return "".join(parts), binds

    def match(self, expected: Any, actual: Any, where: str, out: list[str]) -> None:
        if isinstance(expected, dict):
            if not isinstance(actual, dict):
                out.append(f"{where}: expected an object, got {actual!r}")
                return
            missing, extra = set(expected) - set(actual), set(actual) - set(expected)
            if missing or extra:
                out.append(f"{where}: field names differ: missing {sorted(missing)}, "
                           f"extra {sorted(extra)}")
            for key in expected:
                if key in actual:
                    self.match(expected[key], actual[key], f"{where}.{key}", out)
            server_time = actual.get("serverTime")
            if (expected.get("serverTime") == "<now>" and isinstance(server_time, int)
                    and actual.get("expireTime") != server_time + 300):
                out.append(f"{where}: expireTime is not serverTime + 300")
            return
        if isinstance(expected, list):
            if not isinstance(actual, list) or len(actual) != len(expected):
                got = len(actual) if isinstance(actual, list) else repr(actual)
                out.append(f"{where}: expected {len(expected)} items, got {got}")
                if not isinstance(actual, list):
                    return
            for i, (e, a) in enumerate(zip(expected, actual, strict=False)):
                self.match(e, a, f"{where}[{i}]", out)
            return
        if expected in ("<now>", "<now+300>") and where.endswith(("serverTime", "expireTime")):
            if not isinstance(actual, int):
                out.append(f"{where}: expected an integer time, got {actual!r}")
            return
        if isinstance(expected, str) and PLACEHOLDER.search(expected):
            if not isinstance(actual, str):
                out.append(f"{where}: expected a string like {expected!r}, got {actual!r}")
                return
            regex, binds = self.pattern(expected)
            m = re.fullmatch(regex, actual, re.DOTALL)
            if not m:
                out.append(f"{where}: {actual!r} does not match {expected!r}")
                return
            for (kind, name), value in zip(binds, m.groups(), strict=True):
                table: dict[str, Any] = self.ids if kind == "id" else self.nos
                if kind == "id" and int(value) in self.ids.values():
                    out.append(f"{where}: {value} is already another placeholder's id")
                table[name] = int(value) if kind == "id" else value
            return
        if expected != actual:
            out.append(f"{where}: expected {expected!r}, got {actual!r}")

    # -- steps -------------------------------------------------------------------------
    def run(self, step: dict[str, Any], out: list[str]) -> None:
        request, response = step["request"], step["response"]
        if "sql" in request:
            self.sql(request["sql"], response["rows"], out)
        elif "ui" in request:
            self.ui(step["step"], request, response, out)
        else:
            self.api(step["step"], request, response, out)

    def api(self, name: str, request: dict[str, Any], response: dict[str, Any],
            out: list[str]) -> None:
        params = {k: self.fill(str(v), name) for k, v in request["params"].items()}
        method = request["method"]
        fields = {"operation": request["operation"], **params}
        req = DummyRequest([b""])
        req.method = method.encode()
        if method == "GET":
            req.uri = b"/webservice.php?" + urlencode(fields).encode()
            req.content = BytesIO(b"")
        else:
            req.uri = b"/webservice.php"
            req.requestHeaders.setRawHeaders(b"content-type",
                                             [b"application/x-www-form-urlencoded"])
            req.content = BytesIO(urlencode(fields).encode())
        body = self.resource.render(req)
        status = req.responseCode or 200
        ctype = (req.responseHeaders.getRawHeaders(b"content-type") or [b""])[0].decode()
        if status != response["http_status"]:
            out.append(f"HTTP status {status}, recorded {response['http_status']}")
        if ctype != response["content_type"]:
            out.append(f"content type {ctype!r}, recorded {response['content_type']!r}")
        expected = response["body"]
        if isinstance(expected, str):
            if body.decode("utf-8", "replace")[:300] != expected:
                out.append(f"body {body[:80]!r}, recorded {expected[:80]!r}")
            return
        try:
            actual = json.loads(body)
        except ValueError:
            out.append(f"body is not JSON: {body[:80]!r}")
            return
        self.match(expected, actual, "body", out)
        result = actual.get("result") if isinstance(actual, dict) else None
        if request["operation"] == "getchallenge" and isinstance(result, dict):
            self.tokens.append(str(result.get("token")))
        if request["operation"] == "login" and isinstance(result, dict):
            self.session = str(result.get("sessionName"))

    def ui(self, name: str, request: dict[str, Any], response: dict[str, Any],
           out: list[str]) -> None:
        user = re.search(r"user (\w+)", request["ui"])
        assert user, request["ui"]
        form = [(k, self.fill(str(v), name, ui=True)) for k, v in request["fields"]]
        values = dict(form)
        module = values["module"]
        record = values.get("record") or None
        # the Edit view the user saw, with what they typed, is the recorded form
        changes: dict[str, Any] = {}
        for key, value in request["changed_by_user"].items():
            text = self.fill(str(value), name, ui=True)
            changes[key] = text.split(",") if key == "contact_id" else text
        shown = self.crm.ui_apply(self.crm.ui_edit_form(module, user.group(1), record),
                                  changes)
        want = [p for p in form if p[0] != "__vtrftk"]
        got = [tuple(p) for p in shown if p[0] != "__vtrftk"]
        if got != want:
            diff = [f"{w} != {g}" for w, g in zip(want, got, strict=False) if w != g][:4]
            out.append(f"Edit view form differs ({len(got)} vs {len(want)} fields): {diff}")
        ids = self.crm.ui_save(module, form, user.group(1))
        if response["http_status"] != 302:
            out.append(f"recorded UI status {response['http_status']}")
        saved = re.search(r"record=<(id:\d+)>", response["location"])
        if saved:
            crmid = int(ids[0].split("x")[1])
            if saved.group(1) in self.ids and self.ids[saved.group(1)] != crmid:
                out.append(f"saved {ids[0]}, recorded {saved.group(1)}")
            self.ids[saved.group(1)] = crmid

    def sql(self, query: str, rows: list[dict[str, str]], out: list[str]) -> None:
        table = re.search(r"FROM (\w+)", query)
        assert table, query
        columns = [c.strip().split(".")[-1] for c in
                   re.search(r"SELECT (.*?) FROM", query).group(1).split(",")]  # type: ignore[union-attr]
        have = self.crm.table(table.group(1))
        by_id = re.search(r"\b(activityid|activity_id) = (\d+)", self.fill(query, "sql"))
        if by_id:
            have = [r for r in have if r.get(by_id.group(1)) == by_id.group(2)]
        subject = re.search(r"subject (=|LIKE) '([^']*)'", query)
        if subject:
            subjects = {r["activityid"]: r["subject"]
                        for r in self.crm.table("vtiger_activity")}
            op, text = subject.groups()
            regex = re.escape(text).replace("%", ".*") if op == "LIKE" else re.escape(text)
            have = [r for r in have if re.fullmatch(regex, subjects.get(r["activityid"], ""))]
        order = re.search(r"ORDER BY (.*)$", query)
        if order:
            keys = [c.strip().split(".")[-1] for c in order.group(1).split(",")]
            have.sort(key=lambda r: tuple(int(r[k]) if r[k].isdigit() else r[k] for k in keys))
        self.match(rows, [{c: r.get(c) for c in columns} for r in have], "rows", out)


@pytest.fixture(scope="module")
def replays() -> Iterator[dict[str, Replay]]:
    yield {path.name: Replay(path) for path in FILES}


@pytest.mark.parametrize(("recording", "step"), step_ids() or [("none", "none")])
def test_recorded_step(replays: dict[str, Replay], recording: str, step: str) -> None:
    problems = replays[recording].problems[step]
    assert not problems, "\n".join(problems)


def test_every_step_is_replayed(replays: dict[str, Replay]) -> None:
    for path in FILES:
        steps = [s["step"] for s in load(path)]
        assert len(set(steps)) == len(steps)
        assert list(replays[path.name].problems) == steps

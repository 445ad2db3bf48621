"""A faithful fake of the vtenext / vtiger web service (``/webservice.php``).

The behaviour follows the CRM sources (vtenext CE 20.04 ``include/Webservices``,
``webservice.php``; vtiger ``include/Webservices``), so that easync's tests fail
where the real API would:

* Every answer is HTTP 200 with ``{"success": true, "result": …}`` or
  ``{"success": false, "error": {"code", "message"}}``.
* ``operation``, ``sessionName`` and ``format`` come from ``$_REQUEST`` (query or
  form); an operation's own parameters come from the query string only (GET
  operations: getchallenge, describe, query, retrieve, sync, listtypes) or from a
  form-encoded body only (POST operations: login, login_pwd, create, update, revise,
  delete, logout).  ``element`` is a JSON string inside the form.
* ``getchallenge`` tokens live 300 s (vtenext keeps every live token of a user,
  vtiger only the newest); ``login`` wants ``md5(token + access key)`` in lower-case
  hex; repeated wrong logins lock the account (vtenext, ``LOGIN_LOCKED``).
  Sessions die after 1800 s idle (``SESSION_LEFT_IDLE``) or 86400 s
  (``SESSION_EXPIRED``); an unknown one is ``INVALID_SESSIONID``.
* VTQL: ``SELECT * | count(*) | col, … FROM Module [WHERE c op v (AND|OR) …]
  [ORDER BY col, … [ASC|DESC]] [LIMIT [offset,] n];`` — the ``;`` is required;
  vtiger caps n at 100 (and adds LIMIT 100), vtenext adds LIMIT 1000 when none is
  given and caps nothing.  Rows a non-admin may not read are dropped *after* the
  LIMIT (short pages).  ``id`` and reference values are ``<prefix>x<crmid>``
  compared as numbers; text compares case-insensitively (MySQL collation).
  Deleted records never appear.
* ``sync``: the first 100 modified times after ``modifiedTime`` decide the page's
  last second; the page holds *every* record (live or deleted) up to and including
  that second (so one page can exceed 100 when many records share it); ``more``
  says whether anything is newer; only the caller's own records unless
  ``syncType=application`` (admins only).  ``vtiger_sync_broken`` makes it answer
  HTTP 500 with a PHP error page (vtiger 8 on PHP 8).
* Deletes are soft (``deleted=1`` and a new modifiedtime, so ``sync`` reports
  them); vtenext answers success for a missing id, vtiger ``RECORD_NOT_FOUND``.
* ids carry per-module prefixes from ``describe`` (deliberately unusual here).
* Events: ``reminder_time`` is written in seconds and read in minutes, and a whole
  number of hours gains a minute (3600 → 61); a revise or update without
  ``reminder_time`` drops the reminder.  vtenext takes ``invitees`` ([{email,
  partecipation}], matched to users and contacts) on create/update/revise and never
  returns them.  ``contact_id`` holds one contact.
* Time zones: vtiger keeps and returns UTC.  vtenext keeps server-local time; a
  create/update/revise reads an event's date_start/time_start and due_date/time_end
  in the caller's zone and retrieve/create/revise answer them in it (shifted by the
  login's ``timezone`` difference, computed once, as the real code does), while
  query and sync return them as stored; every read formats date fields in the
  caller's date format.

``FakeCrm`` is the data and the operations; ``FakeCrmResource`` serves it; ``serve``
puts it on a loopback port of a reactor.  Run as a program (``python
tests/fakecrm.py --port 0``) it also answers a JSON control API on ``/control`` for
tests that drive a separate easync process.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

from twisted.web import server
from twisted.web.resource import Resource

TOKEN_LIFE = 300
SESSION_IDLE = 1800
SESSION_LIFE = 86400
LOCK_AFTER = 5

GET_OPS = {"getchallenge", "describe", "query", "retrieve", "sync", "listtypes"}
POST_OPS = {"login", "login_pwd", "create", "update", "revise", "delete", "logout"}
PRELOGIN = {"getchallenge", "login", "login_pwd"}

DEFAULT_PREFIXES = {"Users": "33", "Accounts": "30", "Contacts": "31", "Calendar": "26",
                    "Events": "27"}

# module -> field -> type (text, date, time, datetime, owner, reference:<module>,
# boolean, integer, picklist)
_COMMON = {"assigned_user_id": "owner", "createdtime": "datetime", "modifiedtime": "datetime",
           "description": "text"}
CONTACT_FIELDS = {
    "salutationtype": "picklist", "firstname": "text", "lastname": "text", "email": "email",
    "phone": "text", "mobile": "text", "homephone": "text", "otherphone": "text",
    "fax": "text", "assistant": "text", "assistantphone": "text", "title": "text",
    "department": "text", "account_id": "reference:Accounts", "birthday": "date",
    "mailingstreet": "text", "mailingcity": "text", "mailingstate": "text",
    "mailingzip": "text", "mailingcountry": "text", "mailingpobox": "text",
    "otherstreet": "text", "othercity": "text", "otherstate": "text", "otherzip": "text",
    "othercountry": "text", "otherpobox": "text", "imagename": "text",
    "contact_no": "text", **_COMMON,
}
EVENT_FIELDS = {
    "subject": "text", "date_start": "date", "time_start": "time", "due_date": "date",
    "time_end": "time", "duration_hours": "integer", "duration_minutes": "integer",
    "eventstatus": "picklist", "activitytype": "picklist", "location": "text",
    "visibility": "picklist", "recurringtype": "picklist", "reminder_time": "integer",
    "contact_id": "reference:Contacts", "parent_id": "reference:Accounts",
    "sendnotification": "boolean", "taskpriority": "picklist", **_COMMON,
}
TASK_FIELDS = {
    "subject": "text", "date_start": "date", "time_start": "time", "due_date": "date",
    "taskstatus": "picklist", "taskpriority": "picklist", "activitytype": "picklist",
    "contact_id": "reference:Contacts", "parent_id": "reference:Accounts",
    "sendnotification": "boolean", **_COMMON,
}
ACCOUNT_FIELDS = {"accountname": "text", **_COMMON}
USER_FIELDS = {"user_name": "text", "first_name": "text", "last_name": "text",
               "email1": "email", "is_admin": "text", "status": "text",
               "date_format": "text", "user_timezone": "text"}
MANDATORY = {
    "Contacts": ("lastname", "assigned_user_id"),
    "Events": ("subject", "assigned_user_id", "date_start", "time_start", "due_date",
               "time_end", "duration_hours", "eventstatus", "activitytype"),
    "Calendar": ("subject", "assigned_user_id", "date_start", "taskstatus"),
    "Accounts": ("accountname", "assigned_user_id"),
}


class WsError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class Http500(Exception):
    """Answer HTTP 500 with a PHP error page (a fatal error in the CRM)."""


def _clean_ws_id(value: Any) -> tuple[str, int] | None:
    text = str(value or "").strip().strip("'\"")
    prefix, sep, num = text.partition("x")
    if not sep or not prefix.isdigit() or not num.isdigit():
        return None
    return prefix, int(num)


class FakeCrm:
    """The CRM's data and web-service operations (no HTTP here)."""

    def __init__(self, flavour: str = "vtenext", *, clock: Callable[[], float] | None = None,
                 server_tz: str | None = None, prefixes: dict[str, str] | None = None,
                 admin_key: str = "adminKEY123", admin_tz: str | None = None,
                 admin_date_format: str = "yyyy-mm-dd") -> None:
        if flavour not in ("vtenext", "vtiger"):
            raise ValueError(flavour)
        self.flavour = flavour
        self.clock = clock or time.time
        # vtiger keeps UTC in the database; vtenext the server's $default_timezone
        self.server_tz = "UTC" if flavour == "vtiger" else (server_tz or "Europe/Rome")
        self.prefixes = dict(DEFAULT_PREFIXES, **(prefixes or {}))
        self.by_prefix = {v: k for k, v in self.prefixes.items() if k != "Events"}
        self.users: dict[int, dict[str, Any]] = {}
        self.records: dict[int, dict[str, Any]] = {}
        self.tokens: dict[int, list[tuple[str, float]]] = {}
        self.sessions: dict[str, dict[str, Any]] = {}
        self.failed_logins: Counter[int] = Counter()
        self.next_id = 100
        # fault injection
        self.down = False                   # connections are dropped
        self.delay = 0.0                    # seconds before each answer
        self.fail_next: list[tuple[str, str]] = []   # error envelopes for the next calls
        self.fail_ops: set[str] | None = None        # ...only for these operations
        self.http500_next = 0               # PHP fatal pages for the next calls
        self.vtiger_sync_broken = False
        # what happened
        self.calls: Counter[str] = Counter()
        self.log: list[tuple[str, dict[str, Any]]] = []
        self.admin_id = self.add_user("admin", access_key=admin_key, password="admin-pw",
                                      is_admin=True, timezone=admin_tz or self.server_tz,
                                      date_format=admin_date_format)

    # -- set-up and direct access (what a user does in the CRM's own UI) ---------------
    def _new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def add_user(self, name: str, *, access_key: str | None = None,
                 password: str | None = None, is_admin: bool = False,
                 timezone: str | None = None, date_format: str = "yyyy-mm-dd",
                 email: str | None = None, status: str = "Active") -> int:
        uid = len(self.users) + 1
        self.users[uid] = {
            "user_name": name, "accesskey": access_key or uuid.uuid4().hex[:16],
            "password": password, "is_admin": "on" if is_admin else "off",
            "user_timezone": timezone or self.server_tz, "date_format": date_format,
            "email1": email or f"{name}@crm.example", "first_name": name.title(),
            "last_name": "User", "status": status,
        }
        return uid

    def user_id(self, name: str) -> int:
        for uid, u in self.users.items():
            if u["user_name"].lower() == name.lower():
                return uid
        raise KeyError(name)

    def ws_id(self, module: str, crmid: int) -> str:
        return f"{self.prefixes[module]}x{crmid}"

    def now_local(self) -> str:
        dt = datetime.fromtimestamp(self.clock(), UTC).astimezone(ZoneInfo(self.server_tz))
        return dt.strftime("%Y-%m-%d %H:%M:%S")

    def add_record(self, module: str, fields: dict[str, Any], owner: int | str | None = None,
                   modifiedtime: str | None = None) -> str:
        """Store a record as the CRM's UI would (fields in database form: dates Y-m-d,
        times server-local).  Returns its web-service id."""
        crmid = self._new_id()
        owner_id = self._owner(owner)
        stamp = modifiedtime or self.now_local()
        rec = {"module": module, "fields": {}, "owner": owner_id, "deleted": False,
               "createdtime": stamp, "modifiedtime": stamp, "invitees": []}
        if module == "Calendar":
            rec["fields"]["activitytype"] = "Task"
        for k, v in fields.items():
            self._set_field(rec, k, v)
        self.records[crmid] = rec
        return self.ws_id(module, crmid)

    def modify_record(self, ws_id: str, fields: dict[str, Any],
                      modifiedtime: str | None = None) -> None:
        rec = self._record(ws_id)
        for k, v in fields.items():
            self._set_field(rec, k, v)
        rec["modifiedtime"] = modifiedtime or self.now_local()

    def delete_record(self, ws_id: str, modifiedtime: str | None = None) -> None:
        rec = self._record(ws_id)
        rec["deleted"] = True
        rec["modifiedtime"] = modifiedtime or self.now_local()

    def record(self, ws_id: str) -> dict[str, Any]:
        """The stored record (database form) with owner, deleted, invitees."""
        rec = self._record(ws_id, live_only=False)
        out = dict(rec["fields"])
        out.update(id=ws_id, owner=self.users[rec["owner"]]["user_name"],
                   deleted=rec["deleted"], modifiedtime=rec["modifiedtime"],
                   invitees=[dict(i) for i in rec["invitees"]])
        return out

    def live(self, module: str, owner: str | None = None) -> list[dict[str, Any]]:
        out = []
        for crmid, rec in sorted(self.records.items()):
            if rec["module"] != module or rec["deleted"]:
                continue
            if owner is not None and self.users[rec["owner"]]["user_name"] != owner:
                continue
            out.append(self.record(self.ws_id(module, crmid)))
        return out

    def expire_sessions(self, code: str = "INVALID_SESSIONID") -> None:
        for s in self.sessions.values():
            s["dead"] = code

    def _owner(self, owner: int | str | None) -> int:
        if owner is None:
            return self.admin_id
        if isinstance(owner, int):
            return owner
        parsed = _clean_ws_id(owner)
        if parsed:
            return parsed[1]
        return self.user_id(owner)

    def _record(self, ws_id: str, live_only: bool = True) -> dict[str, Any]:
        parsed = _clean_ws_id(ws_id)
        rec = self.records.get(parsed[1]) if parsed else None
        if rec is None or (live_only and rec["deleted"]):
            raise KeyError(ws_id)
        return rec

    def _fields(self, module: str) -> dict[str, str]:
        if module == "Contacts":
            f = dict(CONTACT_FIELDS)
            f["yahooid" if self.flavour == "vtenext" else "secondaryemail"] = "email"
            return f
        if module == "Events":
            f = dict(EVENT_FIELDS)
            if self.flavour == "vtenext":
                f.update(is_all_day_event="boolean", ical_uuid="text")
            return f
        if module == "Calendar":
            return dict(TASK_FIELDS)
        if module == "Accounts":
            return dict(ACCOUNT_FIELDS)
        if module == "Users":
            f = dict(USER_FIELDS)
            if self.flavour == "vtiger":
                f["time_zone"] = f.pop("user_timezone")
            return f
        raise WsError("ACCESS_DENIED", "Permission to perform the operation is denied")

    def _set_field(self, rec: dict[str, Any], name: str, value: Any) -> None:
        if name == "assigned_user_id":
            rec["owner"] = self._owner(value)
            return
        if name in ("id", "modifiedtime", "createdtime"):
            return
        ftype = self._fields(rec["module"]).get(name)
        if ftype is None:
            return                      # unknown fields are ignored by the CRM
        if ftype.startswith("reference:"):
            parsed = _clean_ws_id(value)
            rec["fields"][name] = parsed[1] if parsed else None
            return
        rec["fields"][name] = "" if value is None else str(value)

    # -- the web-service operations --------------------------------------------------
    def handle(self, method: str, query: dict[str, str], form: dict[str, str]) -> Any:
        """Run one request; returns the result or raises WsError / Http500."""
        request = dict(query)
        request.update(form)                       # $_REQUEST (POST wins)
        op = request.get("operation", "").lower()
        self.calls[op or "?"] += 1
        if self.http500_next > 0:
            self.http500_next -= 1
            raise Http500(op)
        known = GET_OPS | POST_OPS
        if self.flavour == "vtiger":
            known = known - {"login_pwd"}
        if op not in known:
            raise WsError("UNKNOWN_OPERATION", "Unknown operation requested")
        params = query if op in GET_OPS else form
        self.log.append((op, dict(params)))
        session = request.get("sessionName") or None
        if session and session.lower() == "null":
            session = None
        user_id = None
        if session is not None:
            user_id = self._check_session(session)
        elif op not in PRELOGIN:
            raise WsError("AUTHENTICATION_REQUIRED", "Authencation required")
        if self.fail_next and (self.fail_ops is None or op in self.fail_ops):
            code, message = self.fail_next.pop(0)
            raise WsError(code, message)
        if op == "getchallenge":
            return self.op_getchallenge(params.get("username", ""))
        if op == "login":
            return self.op_login(params.get("username", ""), params.get("accessKey", ""))
        if op == "login_pwd":
            return self.op_login_pwd(params.get("username", ""), params.get("password", ""))
        assert user_id is not None
        if op == "logout":
            self.sessions.pop(session or "", None)
            return {"message": "successfull"}
        if op == "listtypes":
            return {"types": ["Contacts", "Accounts", "Calendar", "Events", "Users"],
                    "information": {}}
        if op == "describe":
            return self.op_describe(params.get("elementType", ""), user_id)
        if op == "query":
            return self.op_query(params.get("query", ""), user_id)
        if op == "retrieve":
            return self.op_retrieve(params.get("id", ""), user_id)
        if op == "sync":
            return self.op_sync(params.get("modifiedTime", ""), params.get("elementType", ""),
                                params.get("syncType", ""), user_id)
        if op == "delete":
            return self.op_delete(params.get("id", ""), user_id)
        element = self._element(params.get("element"))
        if op == "create":
            return self.op_create(params.get("elementType", ""), element, user_id)
        return self.op_write(op, element, user_id)

    @staticmethod
    def _element(raw: str | None) -> dict[str, Any]:
        if not raw:
            return {}
        try:
            value = json.loads(raw)
        except ValueError:
            raise WsError("INTERNAL_SERVER_ERROR",
                          "Unknown Error while processing request") from None
        return value if isinstance(value, dict) else {}

    def _check_session(self, sid: str) -> int:
        s = self.sessions.get(sid)
        now = self.clock()
        if s is None:
            raise WsError("INVALID_SESSIONID", "Session Identifier provided is Invalid")
        if s.get("dead"):
            del self.sessions[sid]
            code = s["dead"]
            raise WsError(code, {"SESSION_EXPIRED": "Session has life span over please login"
                                 " again", "SESSION_LEFT_IDLE": "Session has been invalidated"
                                 " to due lack activity"}.get(code, "Session Identifier "
                                                                   "provided is Invalid"))
        if now - s["start"] > SESSION_LIFE:
            del self.sessions[sid]
            raise WsError("SESSION_EXPIRED", "Session has life span over please login again")
        if now - s["last"] > SESSION_IDLE:
            del self.sessions[sid]
            raise WsError("SESSION_LEFT_IDLE",
                          "Session has been invalidated to due lack activity")
        s["last"] = now
        return int(s["user"])

    def op_getchallenge(self, username: str) -> dict[str, Any]:
        now = int(self.clock())
        token = uuid.uuid4().hex[:13]
        try:
            uid = self.user_id(username)
        except KeyError:
            uid = 0                         # the real CRM stores a token for user id 0
        live = [(t, e) for t, e in self.tokens.get(uid, []) if e >= now]
        if self.flavour == "vtiger":
            live = []                       # vtiger deletes the older tokens
        live.append((token, now + TOKEN_LIFE))
        self.tokens[uid] = live
        return {"token": token, "serverTime": now, "expireTime": now + TOKEN_LIFE}

    def _timezone_diff(self, uid: int) -> int:
        """The user's offset minus the server's, in seconds, now (Users.php)."""
        now = datetime.fromtimestamp(self.clock(), UTC)
        user = ZoneInfo(self.users[uid]["user_timezone"])
        srv = ZoneInfo(self.server_tz)
        return int((now.astimezone(user).utcoffset() or timedelta()).total_seconds()
                   - (now.astimezone(srv).utcoffset() or timedelta()).total_seconds())

    def op_login(self, username: str, access_key: str) -> dict[str, Any]:
        try:
            uid = self.user_id(username)
        except KeyError:
            raise WsError("INVALID_AUTH_TOKEN", "Specified token is invalid or expired") from None
        if self.flavour == "vtenext" and self.failed_logins[uid] >= LOCK_AFTER:
            raise WsError("LOGIN_LOCKED", "Login failed because too many unsuccessfully logins")
        now = self.clock()
        tokens = [t for t, e in self.tokens.get(uid, []) if e >= now]
        if not tokens:
            raise WsError("INVALID_AUTH_TOKEN", "Specified token is invalid or expired")
        user = self.users[uid]
        if not any(hashlib.md5((t + user["accesskey"]).encode()).hexdigest() == access_key
                   for t in tokens):
            self.failed_logins[uid] += 1
            raise WsError("INVALID_USER_CREDENTIALS", "Invalid username or password")
        self.failed_logins[uid] = 0
        if user["status"] != "Active":
            raise WsError("AUTHENTICATION_REQUIRED", "Given user is inactive")
        sid = uuid.uuid4().hex + uuid.uuid4().hex[:9]
        self.sessions[sid] = {"user": uid, "start": now, "last": now,
                              "diff": self._timezone_diff(uid)}
        out: dict[str, Any] = {"sessionName": sid, "userId": self.ws_id("Users", uid),
                               "version": "0.22"}
        if self.flavour == "vtenext":
            out.update(vteVersion="20.04", timezone=self.sessions[sid]["diff"])
        else:
            out["vtigerVersion"] = "8.3.0"
        return out

    def op_login_pwd(self, username: str, password: str) -> list[str]:
        try:
            uid = self.user_id(username)
        except KeyError:
            raise WsError("INVALID_USER_CREDENTIALS", "Invalid username or password") from None
        if self.failed_logins[uid] >= LOCK_AFTER:
            raise WsError("INVALID_USER_CREDENTIALS", "Invalid username or password")
        user = self.users[uid]
        if not password or user["password"] is None or password != user["password"]:
            self.failed_logins[uid] += 1
            raise WsError("INVALID_USER_CREDENTIALS", "Invalid username or password")
        self.failed_logins[uid] = 0
        if user["status"] != "Active":
            raise WsError("AUTHENTICATION_REQUIRED", "Given user is inactive")
        return [user["accesskey"]]

    def _is_admin(self, uid: int) -> bool:
        return self.users[uid]["is_admin"] == "on"

    def _module_of(self, ws_id: str) -> tuple[str, int]:
        parsed = _clean_ws_id(ws_id)
        if parsed is None:
            raise WsError("INVALID_ID_ATTRIBUTE", "Id specified is incorrect")
        prefix, crmid = parsed
        if prefix == self.prefixes["Events"]:
            return "Events", crmid
        module = self.by_prefix.get(prefix)
        if module is None:
            raise WsError("INVALID_ID_ATTRIBUTE", "Id specified is incorrect")
        return module, crmid

    def op_describe(self, module: str, uid: int) -> dict[str, Any]:
        fields = self._fields(module)
        mandatory = set(MANDATORY.get(module, ()))
        out = []
        for name, ftype in fields.items():
            t: dict[str, Any] = {"name": ftype.split(":")[0]}
            if ftype.startswith("reference:"):
                t["refersTo"] = [ftype.split(":")[1]]
            out.append({"name": name, "label": name.replace("_", " ").title(),
                        "mandatory": name in mandatory, "type": t, "nullable": True,
                        "editable": name not in ("createdtime", "modifiedtime"),
                        "default": ""})
        out.append({"name": "id", "label": "id", "mandatory": False,
                    "type": {"name": "autogenerated"}, "nullable": False, "editable": False,
                    "default": ""})
        return {"label": module, "name": module, "createable": True, "updateable": True,
                "deleteable": True, "retrieveable": True, "fields": out,
                "idPrefix": self.prefixes[module], "isEntity": module != "Users",
                "labelFields": "lastname" if module == "Contacts" else "subject"}

    # -- reading records -------------------------------------------------------------
    def _fmt_date(self, value: str, uid: int) -> str:
        if not value or self.flavour == "vtiger":
            return value
        fmt = self.users[uid]["date_format"]
        y, m, d = value[:10].split("-")
        return {"dd-mm-yyyy": f"{d}-{m}-{y}", "mm-dd-yyyy": f"{m}-{d}-{y}"}.get(
            fmt, f"{y}-{m}-{d}")

    @staticmethod
    def _shift(date: str, clock: str, seconds: int) -> tuple[str, str]:
        dt = datetime.strptime(f"{date[:10]} {clock[:5]}", "%Y-%m-%d %H:%M")
        dt += timedelta(seconds=seconds)
        return dt.strftime("%Y-%m-%d"), dt.strftime("%H:%M")

    def _row(self, crmid: int, rec: dict[str, Any], uid: int, path: str,
             diff: int = 0, columns: list[str] | None = None) -> dict[str, Any]:
        module = rec["module"]
        if module == "Calendar" and rec["fields"].get("activitytype") != "Task":
            module = "Events"
        fields = self._fields(module)
        row: dict[str, Any] = {}
        values = dict(rec["fields"])
        if (path == "retrieve" and module == "Events" and self.flavour == "vtenext" and diff
                and values.get("date_start") and values.get("time_start")):
            values["date_start"], values["time_start"] = self._shift(
                values["date_start"], values["time_start"], diff)
            if values.get("due_date") and values.get("time_end"):
                values["due_date"], values["time_end"] = self._shift(
                    values["due_date"], values["time_end"], diff)
        for name, ftype in fields.items():
            if columns is not None and name not in columns:
                continue
            if name == "assigned_user_id":
                row[name] = self.ws_id("Users", rec["owner"])
            elif name in ("createdtime", "modifiedtime"):
                row[name] = rec[name]
            elif ftype.startswith("reference:"):
                ref = values.get(name)
                target = ftype.split(":")[1]
                live = ref is not None and ref in self.records and not self.records[ref][
                    "deleted"]
                row[name] = self.ws_id(target, ref) if live else None
            elif ftype == "date":
                row[name] = self._fmt_date(values.get(name, ""), uid)
            else:
                row[name] = values.get(name, "")
        row["id"] = self.ws_id(module, crmid)
        return row

    def op_retrieve(self, ws_id: str, uid: int) -> dict[str, Any]:
        module, crmid = self._module_of(ws_id)
        if module == "Users":
            user = self.users.get(crmid)
            if user is None:
                raise WsError("RECORD_NOT_FOUND", "Record you are trying to access is not found")
            out = {k: user[k] for k in USER_FIELDS}
            if self.flavour == "vtiger":
                out["time_zone"] = out.pop("user_timezone")
            out["id"] = self.ws_id("Users", crmid)
            return out
        rec = self.records.get(crmid)
        if rec is None or rec["deleted"]:
            raise WsError("RECORD_NOT_FOUND", "Record you are trying to access is not found")
        self._check_access(rec, uid)
        return self._row(crmid, rec, uid, "retrieve", self._diff(uid))

    def _diff(self, uid: int) -> int:
        for s in self.sessions.values():
            if s["user"] == uid:
                return int(s["diff"])
        return 0

    def _check_access(self, rec: dict[str, Any], uid: int) -> None:
        if not self._is_admin(uid) and rec["owner"] != uid:
            raise WsError("ACCESS_DENIED", "Permission to read given object is denied")

    # -- VTQL --------------------------------------------------------------------------
    _TOKEN = re.compile(r"""\s*(?:(?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")|"""
                        r"""(?P<op><=|>=|!=|<>|=|<|>)|(?P<punct>[(),;*])|"""
                        r"""(?P<word>[A-Za-z_][A-Za-z0-9_.]*)|(?P<num>-?\d+(?:\.\d+)?))""")

    def _tokens(self, q: str) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        pos = 0
        q = q.rstrip()
        while pos < len(q):
            m = self._TOKEN.match(q, pos)
            if not m or m.end() == pos:
                raise WsError("QUERY_SYNTAX_ERROR",
                              f"Syntax Error on line 1: token '{q[pos:pos + 10]}'")
            pos = m.end()
            kind = m.lastgroup or ""
            text = m.group(kind)
            if kind == "str":
                text = text[1:-1]
            out.append((kind, text))
        return out

    def parse_vtql(self, q: str) -> dict[str, Any]:
        toks = self._tokens(q)
        if not toks or toks[-1] != ("punct", ";"):
            raise WsError("QUERY_SYNTAX_ERROR", "There is an syntax error in query")
        toks = toks[:-1]
        i = 0

        def peek(word: str) -> bool:
            return i < len(toks) and toks[i][0] == "word" and toks[i][1].lower() == word

        def expect(word: str) -> None:
            nonlocal i
            if not peek(word):
                got = toks[i][1] if i < len(toks) else ""
                raise WsError("QUERY_SYNTAX_ERROR", f"Syntax Error on line 1: token '{got}'")
            i += 1

        expect("select")
        columns: list[str] | None = []
        count = False
        if i < len(toks) and toks[i] == ("punct", "*"):
            columns = None
            i += 1
        elif peek("count"):
            i += 1
            if toks[i:i + 3] != [("punct", "("), ("punct", "*"), ("punct", ")")]:
                raise WsError("QUERY_SYNTAX_ERROR", "There is an syntax error in query")
            i += 3
            count = True
        else:
            while True:
                if i >= len(toks) or toks[i][0] != "word":
                    raise WsError("QUERY_SYNTAX_ERROR", "There is an syntax error in query")
                assert columns is not None
                columns.append(toks[i][1])
                i += 1
                if i < len(toks) and toks[i] == ("punct", ","):
                    i += 1
                    continue
                break
        expect("from")
        if i >= len(toks) or toks[i][0] != "word":
            raise WsError("QUERY_SYNTAX_ERROR", "There is an syntax error in query")
        module = toks[i][1]
        i += 1
        where: list[Any] = []
        if peek("where"):
            i += 1
            while True:
                if i >= len(toks) or toks[i][0] != "word":
                    raise WsError("QUERY_SYNTAX_ERROR", "There is an syntax error in query")
                col = toks[i][1]
                i += 1
                if i < len(toks) and toks[i][0] == "op":
                    op = toks[i][1]
                    i += 1
                elif peek("in"):
                    op = "IN"
                    i += 1
                elif peek("like"):
                    op = "LIKE"
                    i += 1
                else:
                    raise WsError("QUERY_SYNTAX_ERROR", "There is an syntax error in query")
                if op == "IN":
                    if i >= len(toks) or toks[i] != ("punct", "("):
                        raise WsError("QUERY_SYNTAX_ERROR", "There is an syntax error in query")
                    i += 1
                    values = []
                    while i < len(toks) and toks[i] != ("punct", ")"):
                        if toks[i][0] in ("str", "num"):
                            values.append(toks[i][1])
                        elif toks[i] != ("punct", ","):
                            raise WsError("QUERY_SYNTAX_ERROR",
                                          "There is an syntax error in query")
                        i += 1
                    i += 1
                    value: Any = values
                else:
                    if i >= len(toks) or toks[i][0] not in ("str", "num"):
                        raise WsError("QUERY_SYNTAX_ERROR", "There is an syntax error in query")
                    value = toks[i][1]
                    i += 1
                where.append((col, "!=" if op == "<>" else op, value))
                if peek("and") or peek("or"):
                    where.append(toks[i][1].upper())
                    i += 1
                    continue
                break
        order: list[str] = []
        desc = False
        if peek("order"):
            i += 1
            expect("by")
            while i < len(toks) and toks[i][0] == "word":
                order.append(toks[i][1])
                i += 1
                if i < len(toks) and toks[i] == ("punct", ","):
                    i += 1
                else:
                    break
            if peek("asc"):
                i += 1
            elif peek("desc"):
                desc = True
                i += 1
        limit: list[int] = []
        if peek("limit"):
            i += 1
            while i < len(toks) and toks[i][0] == "num":
                limit.append(int(toks[i][1]))
                i += 1
                if i < len(toks) and toks[i] == ("punct", ","):
                    i += 1
                else:
                    break
            if not 1 <= len(limit) <= 2:
                raise WsError("QUERY_SYNTAX_ERROR", "There is an syntax error in query")
        if i != len(toks):
            raise WsError("QUERY_SYNTAX_ERROR",
                          f"Syntax Error on line 1: token '{toks[i][1]}'")
        return {"columns": columns, "count": count, "module": module, "where": where,
                "order": order, "desc": desc, "limit": limit}

    def _compare_key(self, module: str, col: str, crmid: int, rec: dict[str, Any]) -> Any:
        ftype = self._fields(module).get(col, "text")
        if col == "id":
            return crmid
        if col == "assigned_user_id":
            return rec["owner"]
        if col in ("modifiedtime", "createdtime"):
            return rec[col]
        value = rec["fields"].get(col)
        if ftype.startswith("reference:"):
            return value or 0
        return (value or "").lower() if isinstance(value, str) else value

    def _value_key(self, module: str, col: str, value: str) -> Any:
        ftype = self._fields(module).get(col, "text")
        if col == "id" or col == "assigned_user_id" or ftype.startswith("reference:"):
            parsed = _clean_ws_id(value)
            if parsed is None:
                if col == "assigned_user_id":
                    try:
                        return self.user_id(value)
                    except KeyError:
                        return -1
                raise WsError("INVALID_ID_ATTRIBUTE", "Id specified is incorrect")
            return parsed[1]
        return value.lower()

    def _matches(self, module: str, crmid: int, rec: dict[str, Any], cond: Any) -> bool:
        col, op, value = cond
        have = self._compare_key(module, col, crmid, rec)
        if op == "IN":
            return have in {self._value_key(module, col, v) for v in value}
        want = self._value_key(module, col, value)
        if op == "LIKE":
            pattern = "^" + re.escape(str(want)).replace("%", ".*").replace("_", ".") + "$"
            return re.match(pattern, str(have), re.DOTALL) is not None
        try:
            return {"=": have == want, "!=": have != want, "<": have < want,
                    ">": have > want, "<=": have <= want, ">=": have >= want}[op]
        except TypeError:
            return False

    def _where(self, module: str, crmid: int, rec: dict[str, Any], where: list[Any]) -> bool:
        if not where:
            return True
        # MySQL precedence: AND binds tighter than OR
        groups: list[list[Any]] = [[]]
        for part in where:
            if part == "OR":
                groups.append([])
            elif part != "AND":
                groups[-1].append(part)
        return any(all(self._matches(module, crmid, rec, c) for c in g) for g in groups)

    def _module_records(self, module: str) -> list[tuple[int, dict[str, Any]]]:
        out = []
        for crmid, rec in self.records.items():
            if module == "Events":
                ok = rec["module"] in ("Events", "Calendar") and rec["fields"].get(
                    "activitytype") != "Task"
            elif module == "Calendar":
                ok = rec["module"] in ("Events", "Calendar") and rec["fields"].get(
                    "activitytype") == "Task"
            else:
                ok = rec["module"] == module
            if ok:
                out.append((crmid, rec))
        return out

    def op_query(self, q: str, uid: int) -> Any:
        parsed = self.parse_vtql(q)
        module = parsed["module"]
        fields = self._fields(module)
        known = set(fields) | {"id"}
        for col in (parsed["columns"] or []) + [c[0] for c in parsed["where"]
                                                 if isinstance(c, tuple)] + parsed["order"]:
            if col not in known:
                raise WsError("ACCESS_DENIED", f"Permission to access '{col}' attribute denied.")
        if module == "Users":
            if not self._is_admin(uid):
                raise WsError("ACCESS_DENIED", "Permission to read is denied")
            rows = []
            for user_id in sorted(self.users):
                u = self.users[user_id]
                fake = {"fields": dict(u), "owner": user_id, "modifiedtime": "",
                        "createdtime": ""}
                if self._where(module, user_id, fake, parsed["where"]):
                    row = {k: u[k] for k in USER_FIELDS}
                    if self.flavour == "vtiger":
                        row["time_zone"] = row.pop("user_timezone")
                    row["id"] = self.ws_id("Users", user_id)
                    if parsed["columns"] is not None:
                        row = {k: v for k, v in row.items()
                               if k in parsed["columns"] or k == "id"}
                    rows.append(row)
            return rows
        matched = [(crmid, rec) for crmid, rec in self._module_records(module)
                   if not rec["deleted"] and self._where(module, crmid, rec, parsed["where"])]
        if parsed["count"]:
            return [{"count": str(len(matched))}]
        if parsed["order"]:
            matched.sort(key=lambda cr: tuple(self._compare_key(module, c, cr[0], cr[1])
                                              for c in parsed["order"]),
                         reverse=parsed["desc"])
        else:
            matched.sort(key=lambda cr: cr[0])
        limit = parsed["limit"]
        if self.flavour == "vtiger":
            if not limit:
                start, n = 0, 100
            elif len(limit) == 1:
                start, n = 0, min(limit[0], 100)
            else:
                start, n = limit[0], min(limit[1], 100)
        else:
            if not limit:
                start, n = 0, 1000
            elif len(limit) == 1:
                start, n = 0, limit[0]
            else:
                start, n = limit[0], limit[1]
        page = matched[start:start + n]
        cols = parsed["columns"]
        out = []
        for crmid, rec in page:
            if not self._is_admin(uid) and rec["owner"] != uid:
                continue                    # dropped after the LIMIT: a short page
            out.append(self._row(crmid, rec, uid, "query", columns=cols))
        return out

    # -- sync ------------------------------------------------------------------------
    def _to_local(self, seconds: int) -> str:
        return datetime.fromtimestamp(seconds, UTC).astimezone(
            ZoneInfo(self.server_tz)).strftime("%Y-%m-%d %H:%M:%S")

    def _to_seconds(self, local: str) -> int:
        dt = datetime.strptime(local, "%Y-%m-%d %H:%M:%S").replace(
            tzinfo=ZoneInfo(self.server_tz))
        return int(dt.timestamp())

    def op_sync(self, modified: str, module: str, sync_type: str, uid: int) -> dict[str, Any]:
        if self.vtiger_sync_broken:
            raise Http500("sync")
        try:
            mtime = int(float(modified or 0))
        except ValueError:
            mtime = 0
        application = sync_type == "application"
        if application and not self._is_admin(uid):
            raise WsError("ACCESS_DENIED", "Only admin users can perform application sync")
        if module not in ("Contacts", "Events", "Calendar", "Accounts"):
            raise WsError("ACCESS_DENIED", "Permission to perform the operation is denied")
        since = self._to_local(mtime)
        candidates = [(crmid, rec) for crmid, rec in self._module_records(module)
                      if rec["modifiedtime"] > since and (application or rec["owner"] == uid)]
        times = sorted(rec["modifiedtime"] for _c, rec in candidates)[:100]
        top = max(times) if times else since
        updated, deleted = [], []
        for crmid, rec in sorted(candidates, key=lambda cr: cr[0]):
            if rec["modifiedtime"] > top:
                continue
            if rec["deleted"]:
                deleted.append(self.ws_id(module, crmid))
            else:
                updated.append(self._row(crmid, rec, uid, "sync"))
        more = any(rec["modifiedtime"] > top for _c, rec in candidates)
        return {"updated": updated, "deleted": deleted, "more": more,
                "lastModifiedTime": self._to_seconds(top) if times else mtime}

    # -- writes ------------------------------------------------------------------------
    def _apply_reminder(self, rec: dict[str, Any], element: dict[str, Any]) -> None:
        raw = element.get("reminder_time")
        try:
            seconds = int(float(raw)) if raw not in (None, "") else 0
        except (TypeError, ValueError):
            seconds = 0
        if seconds == 0:
            rec["fields"]["reminder_time"] = ""
            return
        minutes = (seconds // 60) % 60
        hours = (seconds // 3600) % 24
        days = seconds // 86400
        if minutes == 0:
            minutes = 1             # "at vte there cant be 0 minutes reminder"
        rec["fields"]["reminder_time"] = str(days * 1440 + hours * 60 + minutes)

    def _apply_times(self, rec: dict[str, Any], element: dict[str, Any], diff: int) -> None:
        if self.flavour != "vtenext" or not diff:
            return
        f = rec["fields"]
        for dkey, tkey in (("date_start", "time_start"), ("due_date", "time_end")):
            if element.get(dkey) and element.get(tkey):
                f[dkey], f[tkey] = self._shift(f[dkey], f[tkey], -diff)

    def _apply_invitees(self, rec: dict[str, Any], element: dict[str, Any]) -> None:
        invitees = element.get("invitees")
        if self.flavour != "vtenext" or not isinstance(invitees, list):
            return
        found = []
        for inv in invitees:
            if not isinstance(inv, dict) or not inv.get("email"):
                continue
            email = str(inv["email"]).lower()
            for uid, u in self.users.items():
                if u["email1"].lower() == email:
                    found.append({"module": "Users", "id": uid,
                                  "partecipation": int(inv.get("partecipation") or 0)})
            for crmid, r in self.records.items():
                if (r["module"] == "Contacts" and not r["deleted"]
                        and email in (r["fields"].get("email", "").lower(),
                                      r["fields"].get("yahooid", "").lower())):
                    found.append({"module": "Contacts", "id": crmid,
                                  "partecipation": int(inv.get("partecipation") or 0)})
        rec["invitees"] = found

    def _validate(self, module: str, rec: dict[str, Any]) -> None:
        for name in MANDATORY.get(module, ()):
            if name == "assigned_user_id":
                continue
            if rec["fields"].get(name) in (None, ""):
                raise WsError("MANDATORY_FIELDS_MISSING", f"{name} does not have a value")
        fields = self._fields(module)
        for name, ftype in fields.items():
            value = rec["fields"].get(name)
            if not value:
                continue
            if ftype == "date" and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(value)):
                raise WsError("INTERNAL_SERVER_ERROR", f"{name}: date not in Y-m-d")
            if ftype == "time" and not re.fullmatch(r"\d{2}:\d{2}(:\d{2})?", str(value)):
                raise WsError("INTERNAL_SERVER_ERROR", f"{name}: time not in H:i")
        if module == "Events" and rec["fields"].get("activitytype") == "Task":
            raise WsError("ACCESS_DENIED", "Permission to perform the operation is denied")

    def op_create(self, module: str, element: dict[str, Any], uid: int) -> dict[str, Any]:
        if module not in ("Contacts", "Events", "Calendar", "Accounts"):
            raise WsError("ACCESS_DENIED", "Permission to perform the operation is denied")
        if not element.get("assigned_user_id"):
            raise WsError("MANDATORY_FIELDS_MISSING", "assigned_user_id does not have a value")
        owner = _clean_ws_id(element["assigned_user_id"])
        if owner is None or owner[0] != self.prefixes["Users"] or owner[1] not in self.users:
            raise WsError("INVALID_ID_ATTRIBUTE", "Id specified is incorrect")
        now = self.now_local()
        rec = {"module": module, "fields": {}, "owner": owner[1], "deleted": False,
               "createdtime": now, "modifiedtime": now, "invitees": []}
        if module == "Calendar":
            rec["fields"]["activitytype"] = "Task"
        for k, v in element.items():
            if k in ("invitees", "reminder_time"):
                continue
            if k == "activitytype" and module == "Calendar":
                continue
            self._set_field(rec, k, v)
        self._validate(module, rec)
        if module == "Events":
            self._apply_times(rec, element, self._diff(uid))
            self._apply_reminder(rec, element)
            self._apply_invitees(rec, element)
        crmid = self._new_id()
        self.records[crmid] = rec
        return self._row(crmid, rec, uid, "retrieve", self._diff(uid))

    def op_write(self, op: str, element: dict[str, Any], uid: int) -> dict[str, Any]:
        module, crmid = self._module_of(str(element.get("id", "")))
        rec = self.records.get(crmid)
        if rec is None or rec["deleted"]:
            raise WsError("RECORD_NOT_FOUND", "Record you are trying to access is not found")
        self._check_access(rec, uid)
        real = rec["module"]
        if real == "Calendar" and rec["fields"].get("activitytype") != "Task":
            real = "Events"
        if real != module and not (module == "Calendar" and real == "Events"):
            raise WsError("INVALID_ID_ATTRIBUTE", "Id specified is incorrect")
        new = {"module": rec["module"], "fields": dict(rec["fields"]), "owner": rec["owner"],
               "deleted": False, "createdtime": rec["createdtime"],
               "modifiedtime": self.now_local(), "invitees": list(rec["invitees"])}
        if op == "update":
            # update takes the whole record: what is not sent becomes empty
            keep = {"activitytype"} if real == "Calendar" else set()
            new["fields"] = {k: v for k, v in new["fields"].items() if k in keep}
            if not element.get("assigned_user_id"):
                raise WsError("MANDATORY_FIELDS_MISSING",
                              "assigned_user_id does not have a value")
        for k, v in element.items():
            if k in ("invitees", "reminder_time", "id"):
                continue
            if k == "activitytype" and real == "Calendar":
                continue
            self._set_field(new, k, v)
        self._validate(real, new)
        if real == "Events":
            self._apply_times(new, element, self._diff(uid))
            self._apply_reminder(new, element)    # absent: the reminder is dropped
            self._apply_invitees(new, element)
        self.records[crmid] = new
        return self._row(crmid, new, uid, "retrieve", self._diff(uid))

    def op_delete(self, ws_id: str, uid: int) -> Any:
        _module, crmid = self._module_of(ws_id)
        rec = self.records.get(crmid)
        if rec is None or rec["deleted"]:
            if self.flavour == "vtenext":
                return None                 # crmv@2390m: deleting a missing id succeeds
            raise WsError("RECORD_NOT_FOUND", "Record you are trying to access is not found")
        self._check_access(rec, uid)
        rec["deleted"] = True
        rec["modifiedtime"] = self.now_local()
        return {"status": "successful"}


# -- HTTP ------------------------------------------------------------------------------

PHP_FATAL = (b"<br />\n<b>Fatal error</b>:  Uncaught TypeError: count(): Argument #1 "
             b"($value) must be of type Countable|array, null given in "
             b"/var/www/html/include/Webservices/GetUpdates.php:47<br />")


class FakeCrmResource(Resource):
    """``/webservice.php`` over a ``FakeCrm``; ``reactor`` is needed for ``delay``."""

    isLeaf = True

    def __init__(self, crm: FakeCrm, reactor: Any = None) -> None:
        super().__init__()
        self.crm = crm
        self.reactor = reactor

    def render_GET(self, request: server.Request) -> Any:
        return self._render(request, "GET")

    def render_POST(self, request: server.Request) -> Any:
        return self._render(request, "POST")

    def _render(self, request: server.Request, method: str) -> Any:
        crm = self.crm
        if crm.down:
            request.transport.abortConnection()
            return server.NOT_DONE_YET
        query = {k: v[-1] for k, v in parse_qs(urlsplit(request.uri.decode()).query,
                                              keep_blank_values=True).items()}
        form: dict[str, str] = {}
        ctype = (request.getHeader("content-type") or "").split(";")[0].strip().lower()
        if method == "POST" and ctype == "application/x-www-form-urlencoded":
            request.content.seek(0)
            body = request.content.read().decode("utf-8", "replace")
            form = {k: v[-1] for k, v in parse_qs(body, keep_blank_values=True).items()}
        status = 200
        try:
            payload = json.dumps({"success": True,
                                  "result": crm.handle(method, query, form)}).encode()
            ctype_out = b"application/json"
        except WsError as e:
            payload = json.dumps({"success": False, "error": {
                "code": e.code, "message": e.message}}).encode()
            ctype_out = b"application/json"
        except Http500:
            status, payload, ctype_out = 500, PHP_FATAL, b"text/html"
        if crm.delay > 0 and self.reactor is not None:
            def later() -> None:
                if request.finished or getattr(request, "_disconnected", False):
                    return
                request.setResponseCode(status)
                request.setHeader(b"content-type", ctype_out)
                request.write(payload)
                request.finish()

            call = self.reactor.callLater(crm.delay, later)
            request.notifyFinish().addErrback(lambda _f: call.active() and call.cancel())
            return server.NOT_DONE_YET
        request.setResponseCode(status)
        request.setHeader(b"content-type", ctype_out)
        return payload


class ControlResource(Resource):
    """``POST /control`` {"action": name, ...} for tests driving a separate process."""

    isLeaf = True

    def __init__(self, crm: FakeCrm) -> None:
        super().__init__()
        self.crm = crm

    def render_POST(self, request: server.Request) -> bytes:
        request.content.seek(0)
        cmd = json.loads(request.content.read() or b"{}")
        action = cmd.pop("action", "")
        crm = self.crm
        try:
            if action == "add_user":
                result: Any = crm.add_user(cmd.pop("name"), **cmd)
            elif action == "add_record":
                result = crm.add_record(cmd["module"], cmd["fields"], cmd.get("owner"),
                                        cmd.get("modifiedtime"))
            elif action == "add_records":
                result = [crm.add_record(cmd["module"], f, cmd.get("owner"),
                                         cmd.get("modifiedtime")) for f in cmd["fields"]]
            elif action == "modify_record":
                crm.modify_record(cmd["id"], cmd["fields"], cmd.get("modifiedtime"))
                result = None
            elif action == "delete_record":
                crm.delete_record(cmd["id"], cmd.get("modifiedtime"))
                result = None
            elif action == "record":
                result = crm.record(cmd["id"])
            elif action == "live":
                result = crm.live(cmd["module"], cmd.get("owner"))
            elif action == "set":
                for key in ("down", "delay", "http500_next", "vtiger_sync_broken"):
                    if key in cmd:
                        setattr(crm, key, cmd[key])
                if "fail_next" in cmd:
                    crm.fail_next = [tuple(x) for x in cmd["fail_next"]]
                    crm.fail_ops = set(cmd["fail_ops"]) if cmd.get("fail_ops") else None
                result = None
            elif action == "expire_sessions":
                crm.expire_sessions(cmd.get("code", "INVALID_SESSIONID"))
                result = None
            elif action == "calls":
                result = dict(crm.calls)
            elif action == "now_local":
                result = crm.now_local()
            else:
                raise KeyError(action)
        except (KeyError, ValueError) as e:
            request.setResponseCode(400)
            return json.dumps({"error": str(e)}).encode()
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({"result": result}).encode()


class _Root(Resource):
    def __init__(self, crm: FakeCrm, reactor: Any, control: bool) -> None:
        super().__init__()
        self.putChild(b"webservice.php", FakeCrmResource(crm, reactor))
        if control:
            self.putChild(b"control", ControlResource(crm))


def serve(crm: FakeCrm, reactor: Any, port: int = 0, control: bool = False) -> Any:
    """Listen on 127.0.0.1 (``port`` 0: any free one); returns the listening port
    (``.getHost().port``; ``stopListening()`` to stop)."""
    site = server.Site(_Root(crm, reactor, control))
    site.noisy = False
    site.displayTracebacks = False
    return reactor.listenTCP(port, site, interface="127.0.0.1")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="fake vtenext/vtiger web service")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--flavour", default="vtenext", choices=("vtenext", "vtiger"))
    parser.add_argument("--server-tz", default=None)
    parser.add_argument("--admin-key", default="adminKEY123")
    args = parser.parse_args(argv)
    from twisted.internet import reactor

    crm = FakeCrm(args.flavour, server_tz=args.server_tz, admin_key=args.admin_key)
    port = serve(crm, reactor, args.port, control=True)
    print(f"PORT {port.getHost().port}", flush=True)
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    sys.path.insert(0, ".")
    main()

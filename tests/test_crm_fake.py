"""The fake CRM behaves as the vtenext / vtiger sources say (see tests/fakecrm.py):
these tests keep it honest, so the store's tests fail where the real API would."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from fakecrm import FakeCrm, WsError


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def session(crm: FakeCrm, user: str = "admin", key: str = "adminKEY123") -> str:
    token = crm.handle("GET", {"operation": "getchallenge", "username": user}, {})["token"]
    res = crm.handle("POST", {}, {"operation": "login", "username": user, "accessKey":
                                  hashlib.md5((token + key).encode()).hexdigest()})
    return str(res["sessionName"])


def q(crm: FakeCrm, sid: str, vtql: str) -> Any:
    return crm.handle("GET", {"operation": "query", "sessionName": sid, "query": vtql}, {})


def write(crm: FakeCrm, sid: str, op: str, element: dict[str, Any], **extra: str) -> Any:
    return crm.handle("POST", {}, {"operation": op, "sessionName": sid,
                                   "element": json.dumps(element), **extra})


def owner(crm: FakeCrm, name: str = "admin") -> str:
    return crm.ws_id("Users", crm.user_id(name))


def test_challenge_expires_and_login_checks_the_hash() -> None:
    clock = Clock()
    crm = FakeCrm(clock=clock)
    token = crm.handle("GET", {"operation": "getchallenge", "username": "admin"}, {})
    assert token["expireTime"] - token["serverTime"] == 300
    clock.now += 301
    with pytest.raises(WsError, match="INVALID_AUTH_TOKEN"):
        crm.handle("POST", {}, {"operation": "login", "username": "admin", "accessKey":
                                hashlib.md5((token["token"] + "adminKEY123").encode()
                                            ).hexdigest()})
    for _ in range(5):
        crm.handle("GET", {"operation": "getchallenge", "username": "admin"}, {})
        with pytest.raises(WsError, match="INVALID_USER_CREDENTIALS"):
            crm.handle("POST", {}, {"operation": "login", "username": "admin",
                                    "accessKey": "0" * 32})
    with pytest.raises(WsError, match="LOGIN_LOCKED"):
        session(crm)
    with pytest.raises(WsError, match="AUTHENTICATION_REQUIRED"):
        crm.handle("GET", {"operation": "listtypes"}, {})


def test_sessions_idle_and_life() -> None:
    clock = Clock()
    crm = FakeCrm(clock=clock)
    sid = session(crm)
    clock.now += 1799
    crm.handle("GET", {"operation": "listtypes", "sessionName": sid}, {})
    clock.now += 1801
    with pytest.raises(WsError, match="SESSION_LEFT_IDLE"):
        crm.handle("GET", {"operation": "listtypes", "sessionName": sid}, {})
    with pytest.raises(WsError, match="INVALID_SESSIONID"):
        crm.handle("GET", {"operation": "listtypes", "sessionName": sid}, {})


@pytest.mark.parametrize("flavour", ["vtenext", "vtiger"])
def test_vtql_rules(flavour: str) -> None:
    crm = FakeCrm(flavour)
    sid = session(crm)
    for n in range(1200):
        crm.add_record("Contacts", {"lastname": f"n{n:04d}", "email": f"N{n}@X.org"})
    with pytest.raises(WsError, match="QUERY_SYNTAX_ERROR"):
        q(crm, sid, "SELECT * FROM Contacts")               # no ;
    with pytest.raises(WsError, match="QUERY_SYNTAX_ERROR"):
        q(crm, sid, "SELECT * FROM Contacts LIMIT 5; SELECT 1;")
    with pytest.raises(WsError, match="ACCESS_DENIED"):
        q(crm, sid, "SELECT nosuchfield FROM Contacts;")
    everything = q(crm, sid, "SELECT * FROM Contacts;")
    capped = q(crm, sid, "SELECT * FROM Contacts LIMIT 0, 500;")
    if flavour == "vtiger":
        assert len(everything) == 100 and len(capped) == 100
    else:
        assert len(everything) == 1000 and len(capped) == 500
    assert q(crm, sid, "SELECT count(*) FROM Contacts;") == [{"count": "1200"}]
    # text compares case-insensitively, ids as numbers, AND before OR
    assert len(q(crm, sid, "SELECT id FROM Contacts WHERE email = 'n7@x.org';")) == 1
    first = everything[0]["id"]
    prefix, num = first.split("x")
    later = q(crm, sid, f"SELECT id FROM Contacts WHERE id > '{prefix}x{int(num) + 1195}'"
                        " ORDER BY id LIMIT 100;")
    assert len(later) == 4
    both = q(crm, sid, "SELECT id FROM Contacts WHERE lastname = 'n0001' OR lastname = "
                       "'n0002' AND email = 'nobody';")
    assert len(both) == 1
    # deleted records never appear
    crm.delete_record(first)
    assert q(crm, sid, "SELECT count(*) FROM Contacts;") == [{"count": "1199"}]


def test_non_admin_pages_come_short() -> None:
    crm = FakeCrm("vtiger")
    crm.add_user("dana", access_key="danaKEY")
    for n in range(100):
        crm.add_record("Contacts", {"lastname": f"n{n}"}, owner="dana" if n % 2 else "admin")
    sid = session(crm, "dana", "danaKEY")
    assert len(q(crm, sid, "SELECT * FROM Contacts LIMIT 0, 100;")) == 50


def test_sync_pages_by_second_with_deletes_and_owners() -> None:
    clock = Clock()
    crm = FakeCrm(clock=clock)
    sid = session(crm)
    crm.add_user("dana")
    t1, t2 = crm.now_local(), "2030-01-01 00:00:00"
    ids = [crm.add_record("Contacts", {"lastname": f"a{n}"}, modifiedtime=t1)
           for n in range(150)]
    crm.add_record("Contacts", {"lastname": "later"}, modifiedtime=t2)
    crm.add_record("Contacts", {"lastname": "danas"}, owner="dana", modifiedtime=t1)
    crm.delete_record(ids[0], modifiedtime=t1)

    def sync(since: int, kind: str = "application") -> dict[str, Any]:
        return crm.handle("GET", {"operation": "sync", "sessionName": sid, "elementType":
                                  "Contacts", "modifiedTime": str(since), "syncType": kind}, {})

    page = sync(int(clock.now) - 10)
    # all 151 records of that second in one page (more than 100), the deleted one apart
    assert len(page["updated"]) == 150 and page["deleted"] == [ids[0]] and page["more"]
    page2 = sync(page["lastModifiedTime"])
    assert [r["lastname"] for r in page2["updated"]] == ["later"] and not page2["more"]
    mine = sync(int(clock.now) - 10, "user")
    assert all(r["assigned_user_id"] == owner(crm) for r in mine["updated"])
    crm.add_user("plain", access_key="k")
    with pytest.raises(WsError, match="ACCESS_DENIED"):
        crm.handle("GET", {"operation": "sync", "sessionName": session(crm, "plain", "k"),
                           "elementType": "Contacts", "modifiedTime": "0",
                           "syncType": "application"}, {})


def test_reminder_quirk_and_revise_dropping_it() -> None:
    crm = FakeCrm()
    sid = session(crm)
    base = {"subject": "s", "assigned_user_id": owner(crm), "date_start": "2026-01-01",
            "time_start": "10:00", "due_date": "2026-01-01", "time_end": "11:00",
            "duration_hours": "1", "eventstatus": "Planned", "activitytype": "Meeting"}
    for seconds, minutes in ((3600, "61"), (900, "15"), (5400, "90"), (86400, "1441"),
                             (0, "")):
        rec = write(crm, sid, "create", dict(base, reminder_time=seconds),
                    elementType="Events")
        assert rec["reminder_time"] == minutes
    rec = write(crm, sid, "create", dict(base, reminder_time=900), elementType="Events")
    rec = write(crm, sid, "revise", {"id": rec["id"], "subject": "t"})
    assert rec["reminder_time"] == "" and rec["subject"] == "t"
    with pytest.raises(WsError, match="MANDATORY_FIELDS_MISSING"):
        write(crm, sid, "update", {"id": rec["id"], "subject": "u",
                                   "assigned_user_id": owner(crm)})


def test_vtenext_time_zones_and_date_format() -> None:
    crm = FakeCrm("vtenext", server_tz="Europe/Rome", admin_tz="Asia/Tokyo",
                  admin_date_format="mm-dd-yyyy")
    login = crm.handle("POST", {}, {"operation": "login", "username": "admin", "accessKey":
                                    hashlib.md5((crm.handle("GET", {
                                        "operation": "getchallenge", "username": "admin"},
                                        {})["token"] + "adminKEY123").encode()).hexdigest()})
    sid = login["sessionName"]
    assert login["timezone"] in (8 * 3600, 7 * 3600)       # Tokyo minus Rome
    rec = write(crm, sid, "create", {
        "subject": "s", "assigned_user_id": owner(crm), "date_start": "2026-01-15",
        "time_start": "18:00", "due_date": "2026-01-15", "time_end": "19:00",
        "duration_hours": "1", "eventstatus": "Planned", "activitytype": "Meeting"},
        elementType="Events")
    stored = crm.record(rec["id"])
    assert (stored["date_start"], stored["time_start"]) == ("2026-01-15", "10:00")   # Rome
    assert (rec["date_start"], rec["time_start"]) == ("01-15-2026", "18:00")    # Tokyo, user fmt
    (row,) = q(crm, sid, "SELECT * FROM Events;")
    assert (row["date_start"], row["time_start"]) == ("01-15-2026", "10:00")    # as stored


def test_ids_prefixes_soft_deletes_and_flavours() -> None:
    a, b = FakeCrm(prefixes={"Contacts": "7"}), FakeCrm("vtiger")
    sid = session(a)
    d = a.handle("GET", {"operation": "describe", "sessionName": sid,
                         "elementType": "Contacts"}, {})
    assert d["idPrefix"] == "7" and {"yahooid", "lastname"} <= {f["name"] for f in d["fields"]}
    assert "secondaryemail" in {f["name"] for f in b.op_describe("Contacts", 1)["fields"]}
    rec = write(a, sid, "create", {"lastname": "x", "assigned_user_id": owner(a)},
                elementType="Contacts")
    assert rec["id"].startswith("7x")
    assert a.handle("POST", {}, {"operation": "delete", "sessionName": sid,
                                 "id": rec["id"]}) == {"status": "successful"}
    assert a.record(rec["id"])["deleted"] is True           # soft
    with pytest.raises(WsError, match="UNKNOWN_OPERATION"):
        b.handle("POST", {}, {"operation": "login_pwd", "username": "admin",
                              "password": "admin-pw"})
    assert a.handle("POST", {}, {"operation": "login_pwd", "username": "admin",
                                 "password": "admin-pw"}) == ["adminKEY123"]


def test_error_envelope_over_http() -> None:
    from fakecrm import FakeCrmResource
    from twisted.web.test.requesthelper import DummyRequest

    crm = FakeCrm()
    request = DummyRequest([b""])
    request.uri = b"/webservice.php?operation=query&query=x"
    request.method = b"GET"
    body = FakeCrmResource(crm).render(request)
    assert json.loads(body) == {"success": False, "error": {
        "code": "AUTHENTICATION_REQUIRED", "message": "Authencation required"}}
    assert request.responseCode in (None, 200)

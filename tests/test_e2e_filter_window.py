"""Acceptance (issue 8, points 8 and 9): FilterType changed on a live SyncKey, and
WindowSize 0, through ``twistd easync`` with raw WBXML (libwbxml) at 12.1, 14.1 and
16.1, on the SQL store and (calendar, tasks) on the CRM store.

MS-ASCMD 2.2.3.68.2: with a FilterType the server maintains the window on the device —
Adds for what enters it, SoftDelete (MS-ASCMD 2.2.3.172) for what leaves it; a change
of FilterType on the same SyncKey moves it.  GetItemEstimate with that FilterType
(MS-ASCMD 2.2.3.68.1) counts what the next Syncs send.  MS-ASCMD 2.2.3.199: WindowSize
0 means 512.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import needs
import pytest
from backendsites import started
from easync_server import RunningServer
from rawclient import Node, RawDevice
from test_e2e_calendar_raw import responses

pytestmark = needs.mark(needs.libwbxml())

PASSWORD = "window-Pa55"
VERSIONS = ("12.1", "14.1", "16.1")
USERS = [f"fw{v.replace('.', '')}" for v in VERSIONS] + \
    [f"ft{v.replace('.', '')}" for v in VERSIONS] + ["ws"]
DAY = 86400
NOW = time.time()


@pytest.fixture(scope="module", params=["sql", "crm"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[RunningServer, str]]:
    with started(tmp_path_factory, request.param, "window", USERS, PASSWORD) as (srv, _crm):
        yield srv, str(request.param)


def device(srv: RunningServer, user: str, dev: str, version: str) -> RawDevice:
    d = RawDevice(srv.url, user, PASSWORD, dev, version=version)
    d.provision()
    return d


def compact(ts: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(ts))


def event(subject: str, start: float, recurrence: str = "") -> str:
    return (f"<C:Subject>{subject}</C:Subject><C:AllDayEvent>0</C:AllDayEvent>"
            f"<C:StartTime>{compact(start)}</C:StartTime>"
            f"<C:EndTime>{compact(start + 3600)}</C:EndTime><C:BusyStatus>2</C:BusyStatus>"
            f"<C:UID>{subject.replace(' ', '-')}-{int(start)}</C:UID>{recurrence}")


def weekly(count: int | None) -> str:
    end = f"<C:Occurrences>{count}</C:Occurrences>" if count else ""
    return ("<C:Recurrence><C:Type>1</C:Type><C:Interval>1</C:Interval>"
            f"<C:DayOfWeek>2</C:DayOfWeek>{end}</C:Recurrence>")


def add_all(d: RawDevice, folder: str, items: dict[str, str]) -> dict[str, str]:
    """Add through Sync (the store and the CRM get them as from any phone); name -> id."""
    key, _i, _d, _r = d.pull(folder, d.initial(folder))
    inner = "<GetChanges>0</GetChanges><Commands>" + "".join(
        f"<Add><ClientId>{n}</ClientId><ApplicationData>{x}</ApplicationData></Add>"
        for n, x in items.items()) + "</Commands>"
    got = responses(d.sync(folder, key, inner))
    assert all(s == "1" for s, _sid, _n in got.values()), got
    return {n: sid for n, (_s, sid, _n) in got.items()}


def opts(filter_type: int | None) -> str:
    return "" if filter_type is None else \
        f"<Options><FilterType>{filter_type}</FilterType></Options>"


class Phone:
    """ServerId -> subject of what the phone holds; an Add of a held id fails."""

    def __init__(self) -> None:
        self.held: dict[str, str] = {}

    def sync(self, d: RawDevice, folder: str, key: str, filter_type: int | None,
             window: int | None = None, resend: bool = False) -> tuple[str, list[tuple[str, str]]]:
        sent: list[tuple[str, str]] = []
        while True:
            r = d.sync(folder, key, window=window, options=opts(filter_type))
            if r is None:
                return key, sent
            if resend:      # the answer was lost: the same request gives the same answer
                again = d.sync(folder, key, window=window, options=opts(filter_type))
                assert again is not None and _cmds(again) == _cmds(r)
                assert _coll(again).text_of("AirSync:SyncKey") == _coll(r).text_of(
                    "AirSync:SyncKey")
            for kind, sid, subject in _cmds(r):
                sent.append((kind, sid))
                if kind == "Add":
                    assert sid not in self.held, f"Add of {sid}, which the phone holds"
                    self.held[sid] = subject
                elif kind == "Change":
                    self.held[sid] = subject
                else:
                    self.held.pop(sid, None)
            assert window is None or len(_cmds(r)) <= window
            key = _coll(r).text_of("AirSync:SyncKey") or key
            if _coll(r).find("AirSync:MoreAvailable") is None:
                return key, sent


def _coll(r: Node) -> Node:
    coll = r.find("AirSync:Collections/AirSync:Collection")
    assert coll is not None and coll.text_of("AirSync:Status") == "1", r
    return coll


def _cmds(r: Node) -> list[tuple[str, str, str]]:
    cmds = _coll(r).find("AirSync:Commands")
    out = []
    for c in cmds.children if cmds else []:
        subject = (c.text_of("AirSync:ApplicationData/Calendar:Subject") or
                   c.text_of("AirSync:ApplicationData/Tasks:Subject") or "")
        out.append((c.tag.split(":")[1], c.text_of("AirSync:ServerId") or "", subject))
    return out


def estimate(d: RawDevice, folder: str, key: str, filter_type: int, cls: str) -> int:
    if d.version.startswith("12"):
        # 12.x: Class and FilterType are children of Collection (MS-ASCMD 2.2.3.68.1)
        inner = (f"<Class>{cls}</Class><A:SyncKey>{key}</A:SyncKey>"
                 f"<CollectionId>{folder}</CollectionId><A:FilterType>{filter_type}"
                 "</A:FilterType>")
    else:
        inner = (f"<A:SyncKey>{key}</A:SyncKey><CollectionId>{folder}</CollectionId>"
                 f"<A:Options><A:FilterType>{filter_type}</A:FilterType></A:Options>")
    # (libwbxml names code page 6 "GetItemEstimate")
    r = d.call("GetItemEstimate", '<GetItemEstimate xmlns="GetItemEstimate:" '
               f'xmlns:A="AirSync:"><Collections><Collection>{inner}</Collection>'
               "</Collections></GetItemEstimate>")
    assert r is not None
    resp = r.find("GetItemEstimate:Response")
    assert resp is not None and resp.text_of("GetItemEstimate:Status") == "1", r
    return int(resp.text_of("GetItemEstimate:Collection/GetItemEstimate:Estimate") or -1)


@pytest.mark.parametrize("version", VERSIONS)
def test_calendar_filter_type_changed_on_a_live_key(server: tuple[RunningServer, str],
                                                     version: str) -> None:
    """MS-ASCMD 2.2.3.68.2 / 2.2.3.172: FilterType 4 -> 0 on the same key brings the
    older events as Adds (two per answer, each answer resent once), 0 -> 4 takes them
    away with SoftDelete; a weekly series that ended in 2020 is old, one without an
    end is not; GetItemEstimate with the new FilterType counts what comes."""
    srv, _backend = server
    tag = version.replace(".", "")
    user = f"fw{tag}"
    writer = device(srv, user, f"writer{tag}", "14.1")
    cal = writer.folders()["Calendar"]
    y2020 = 1580000000.0          # 2020-01-26
    ids = add_all(writer, cal, {
        **{f"old{i}": event(f"old {i}", y2020 + i * DAY) for i in range(4)},
        "old series": event("old series", y2020, weekly(4)),
        "open series": event("open series", y2020, weekly(None)),
        "soon": event("soon", NOW + 10 * DAY), "later": event("later", NOW + 40 * DAY),
        "recent": event("recent", NOW - 3 * DAY)})
    old = {n for n in ids if n.startswith("old")}
    inside = set(ids) - old

    d = device(srv, user, f"reader{tag}", version)
    phone = Phone()
    r = d.sync(cal, "0", options=opts(4))
    key = _coll(r).text_of("AirSync:SyncKey")
    key, sent = phone.sync(d, cal, key, 4)
    assert set(phone.held) == {ids[n] for n in inside}
    assert d.sync(cal, key, options=opts(4)) is None       # nothing new: empty answer

    est = estimate(d, cal, key, 0, "Calendar")
    key, sent = phone.sync(d, cal, key, 0, window=2, resend=True)
    assert sorted(sent) == sorted(("Add", ids[n]) for n in old) and est == len(old)
    assert set(phone.held) == set(ids.values())
    assert d.sync(cal, key, options=opts(0)) is None

    est = estimate(d, cal, key, 4, "Calendar")
    key, sent = phone.sync(d, cal, key, 4, window=2, resend=True)
    assert sorted(sent) == sorted(("SoftDelete", ids[n]) for n in old) and est == len(old)
    assert set(phone.held) == {ids[n] for n in inside}
    assert d.sync(cal, key, options=opts(4)) is None
    # the events stay in the store: another phone without a filter reads all of them
    other = device(srv, user, f"all{tag}", "14.1")
    _k, items, _d, _r = other.pull(cal, other.initial(cal))
    assert set(items) == set(ids.values())


@pytest.mark.parametrize("version", VERSIONS)
def test_tasks_filter_type_8_and_back(server: tuple[RunningServer, str], version: str
                                      ) -> None:
    """Tasks FilterType 8 (incomplete only, MS-ASCMD 2.2.3.68.2) and 0 on a live key."""
    srv, _backend = server
    tag = version.replace(".", "")
    user = f"ft{tag}"
    writer = device(srv, user, f"twriter{tag}", "14.1")
    tasks = writer.folders()["Tasks"]
    ids = add_all(writer, tasks, {
        f"t{i}": f"<T:Subject>task {i}</T:Subject><T:Complete>{i % 2}</T:Complete>" +
                 (f"<T:DateCompleted>{time.strftime('%Y-%m-%dT%H:%M:%S.000Z')}"
                  "</T:DateCompleted>" if i % 2 else "") for i in range(4)})
    done = {ids["t1"], ids["t3"]}
    d = device(srv, user, f"treader{tag}", version)
    phone = Phone()
    key = _coll(d.sync(tasks, "0", options=opts(0))).text_of("AirSync:SyncKey")
    key, _s = phone.sync(d, tasks, key, 0)
    assert set(phone.held) == set(ids.values())
    est = estimate(d, tasks, key, 8, "Tasks")
    key, sent = phone.sync(d, tasks, key, 8)
    assert sorted(sent) == sorted(("SoftDelete", s) for s in done) and est == 2
    key, sent = phone.sync(d, tasks, key, 0)
    assert sorted(sent) == sorted(("Add", s) for s in done)
    assert set(phone.held) == set(ids.values())


# WindowSize is the sync engine's alone: 520 contacts through the SQL store are enough.
@pytest.mark.parametrize("server", ["sql"], indirect=True)
def test_window_size_zero_means_512(server: tuple[RunningServer, str]) -> None:
    """MS-ASCMD 2.2.3.199: "The server interprets the value 0 (zero) and values above
    512 as 512"; absent is 100.  For the collection, and for the request (14.0+)."""
    srv, _backend = server
    writer = device(srv, "ws", "wswriter", "14.1")
    contacts = writer.folders()["Contacts"]
    add_all(writer, contacts, {f"c{i}": f"<K:FirstName>C{i}</K:FirstName>" for i in range(520)})
    for version in VERSIONS:
        tag = version.replace(".", "")
        counts = []
        for n, (coll_ws, top_ws) in enumerate(((0, None), (None, None), (1000, None),
                                               (0, 0), (None, 0))):
            if top_ws is not None and version.startswith("12"):
                continue            # the request-wide WindowSize is 14.0+
            d = device(srv, "ws", f"ws{tag}{n}", version)
            key = d.initial(contacts)
            ws = "" if coll_ws is None else f"<WindowSize>{coll_ws}</WindowSize>"
            top = "" if top_ws is None else f"<WindowSize>{top_ws}</WindowSize>"
            r = d.call("Sync", '<Sync xmlns="AirSync:"><Collections><Collection>'
                       f"<SyncKey>{key}</SyncKey><CollectionId>{contacts}</CollectionId>{ws}"
                       f"</Collection></Collections>{top}</Sync>")
            assert r is not None
            counts.append((coll_ws, top_ws, len(_cmds(r)),
                           _coll(r).find("AirSync:MoreAvailable") is not None))
        want = [(0, None, 512, True), (None, None, 100, True), (1000, None, 512, True)]
        if not version.startswith("12"):
            want += [(0, 0, 512, True), (None, 0, 100, True)]
        assert counts == want, version

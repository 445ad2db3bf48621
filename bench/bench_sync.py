"""Initial sync throughput and the cost of an empty Sync, over loopback HTTP.

    python bench/bench_sync.py [--counts 5000,100000] [--window 100]

For each count: a fresh SQLite database with that many real-shaped contacts,
``twistd -n easync --listen tcp:…`` in a subprocess, and this process as the
client (keep-alive HTTP/1.1, WBXML through easync's codec): provision, SyncKey 0,
then Sync windows of ``--window`` until MoreAvailable stops.  Reports contacts/s,
the time per window around the 1k, 10k and 100k positions, and the median time of
a Sync with nothing new (client round trip, and the server's own figure from its
log line).  First, the database transactions a request costs (empty Sync, empty-body
Sync, a command with no reads of its own, FolderSync, a Ping answered at once, a Ping
that holds); last, the server's time and CPU for a FolderSync with nothing new and for a
Ping answered at once (Status 2), 200 of each.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from base64 import b64encode
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from easync_server import free_port, twistd

from easync.wbxml import E, decode, encode

PASSWORD = "bench-password-1"


def contact(i: int) -> dict:
    return {
        "FirstName": f"First{i}", "LastName": f"Last{i}", "MiddleName": "M",
        "CompanyName": f"Company {i % 97} S.p.A.", "JobTitle": "Account manager",
        "Department": "Sales", "Email1Address": f"first{i}.last{i}@example.org",
        "Email2Address": f"f{i}@home.example", "MobilePhoneNumber": f"+39 333 {i:07d}",
        "BusinessPhoneNumber": f"+39 02 {i:07d}", "HomePhoneNumber": f"+39 06 {i:07d}",
        "BusinessAddressStreet": f"Via Roma {i % 200}", "BusinessAddressCity": "Milano",
        "BusinessAddressPostalCode": "20100", "BusinessAddressCountry": "Italia",
        "Birthday": f"19{60 + i % 40}-0{1 + i % 9}-1{i % 9}", "Categories": ["Clienti"],
        "Body": {"Type": 1, "Data": f"Met at the fair, notes for contact {i}."},
    }


def populate(db: str, count: int) -> None:
    """Fill the database through the store (as an import would)."""
    code = f"""
import sys
sys.path.insert(0, {str(REPO)!r}); sys.path.insert(0, {str(REPO / 'bench')!r})
import bcrypt
from twisted.internet import task
from backends.sql.store import SqlStore
from easync.model import Op
from bench_sync import contact, PASSWORD

async def main(reactor):
    store = SqlStore(reactor, {db!r})
    await store.open()
    h = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    user = await store.add_user("bench", h, None, True)
    folders = {{f.name: f.server_id for f in await store.list_folders(user)}}
    for start in range(0, {count}, 1000):
        ops = [Op(kind="add", data=contact(i), cls="Contacts")
               for i in range(start, min(start + 1000, {count}))]
        await store.apply(user, folders["Contacts"], ops)
    await store.close()

task.react(lambda r: __import__("twisted.internet.defer", fromlist=["x"]).ensureDeferred(main(r)))
"""
    subprocess.run([sys.executable, "-c", code], check=True)


class Client:
    def __init__(self, port: int, device: str = "bench1") -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.auth = "Basic " + b64encode(f"bench:{PASSWORD}".encode()).decode()
        self.policy = ""
        self.device = device

    def post(self, cmd: str, root) -> tuple[object, float, int]:
        body = encode(root) if root is not None else b""
        headers = {"Authorization": self.auth, "MS-ASProtocolVersion": "14.1",
                   "Content-Type": "application/vnd.ms-sync.wbxml",
                   "User-Agent": "bench/1.0"}
        if self.policy:
            headers["X-MS-PolicyKey"] = self.policy
        t0 = time.perf_counter()
        self.conn.request("POST", f"/Microsoft-Server-ActiveSync?Cmd={cmd}&User=bench"
                          f"&DeviceId={self.device}&DeviceType=iPhone", body, headers)
        resp = self.conn.getresponse()
        data = resp.read()
        dt = time.perf_counter() - t0
        assert resp.status == 200, (cmd, resp.status)
        return (decode(data) if data else None), dt, len(data)

    def provision(self) -> None:
        pol = E("Provision:Policies", E("Provision:Policy",
                                        E("Provision:PolicyType", "MS-EAS-Provisioning-WBXML")))
        r, _, _ = self.post("Provision", E("Provision:Provision", pol))
        temp = r.find("Provision:Policies").find("Provision:Policy").findtext("Provision:PolicyKey")
        self.policy = temp
        ack = E("Provision:Policies", E("Provision:Policy",
                                        E("Provision:PolicyType", "MS-EAS-Provisioning-WBXML"),
                                        E("Provision:PolicyKey", temp), E("Provision:Status", "1")))
        r, _, _ = self.post("Provision", E("Provision:Provision", ack))
        self.policy = r.find("Provision:Policies").find("Provision:Policy").findtext(
            "Provision:PolicyKey")

    def sync(self, cid: str, key: str, window: int):
        root = E("AirSync:Sync", E("AirSync:Collections", E(
            "AirSync:Collection", E("AirSync:SyncKey", key), E("AirSync:CollectionId", cid),
            E("AirSync:WindowSize", str(window)))))
        return self.post("Sync", root)


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, every thread) a process has used so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(count: int, window: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        db = f"sqlite:///{tmp}/bench.sqlite"
        t0 = time.perf_counter()
        populate(db, count)
        fill = time.perf_counter() - t0
        port = free_port()
        env = dict(os.environ, PYTHONPATH=str(REPO))
        log = Path(tmp) / "server.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([twistd(), "-n", "--logfile", "-", "--pidfile", "",
                                     "easync", "--listen", f"tcp:{port}:interface=127.0.0.1",
                                     "--db", db], cwd=tmp, env=env, stdout=out,
                                    stderr=subprocess.STDOUT)
        try:
            for _ in range(200):
                try:
                    http.client.HTTPConnection("127.0.0.1", port, timeout=1).connect()
                    break
                except OSError:
                    time.sleep(0.05)
            c = Client(port)
            c.provision()
            r, _, _ = c.post("FolderSync", E("FolderHierarchy:FolderSync",
                                             E("FolderHierarchy:SyncKey", "0")))
            cid = next(a.findtext("FolderHierarchy:ServerId")
                       for a in r.find("FolderHierarchy:Changes").findall("FolderHierarchy:Add")
                       if a.findtext("FolderHierarchy:DisplayName") == "Contacts")
            r, _, _ = c.sync(cid, "0", window)
            key = r.find("AirSync:Collections").find("AirSync:Collection").findtext(
                "AirSync:SyncKey")
            got = 0
            times: list[tuple[int, float]] = []
            nbytes = 0
            cpu_start = cpu_seconds(proc.pid)
            t_start = time.perf_counter()
            while True:
                r, dt, n = c.sync(cid, key, window)
                nbytes += n
                coll = r.find("AirSync:Collections").find("AirSync:Collection")
                key = coll.findtext("AirSync:SyncKey")
                cmds = coll.find("AirSync:Commands")
                got += len(cmds.children) if cmds is not None else 0
                times.append((got, dt))
                if coll.find("AirSync:MoreAvailable") is None:
                    break
            total = time.perf_counter() - t_start
            cpu_sync = cpu_seconds(proc.pid) - cpu_start
            assert got == count, (got, count)
            empty = []
            cpu_start = cpu_seconds(proc.pid)
            for _ in range(200):
                r, dt, _ = c.sync(cid, key, window)
                assert r is None
                empty.append(dt)
            cpu_empty = (cpu_seconds(proc.pid) - cpu_start) / 200
            # FolderSync with nothing new, and a Ping answered at once (Status 2: another
            # device added a contact this one has not synced), 200 of each
            fkey = c.post("FolderSync", E("FolderHierarchy:FolderSync", E(
                "FolderHierarchy:SyncKey", "0")))[0].findtext("FolderHierarchy:SyncKey")
            cpu_start = cpu_seconds(proc.pid)
            for _ in range(200):
                c.post("FolderSync", E("FolderHierarchy:FolderSync",
                                       E("FolderHierarchy:SyncKey", fkey)))
            cpu_folders = (cpu_seconds(proc.pid) - cpu_start) / 200
            other = Client(port, "bench2")
            other.provision()
            r, _, _ = other.sync(cid, "0", window)
            okey = r.find("AirSync:Collections").find("AirSync:Collection").findtext(
                "AirSync:SyncKey")
            add = E("AirSync:Sync", E("AirSync:Collections", E(
                "AirSync:Collection", E("AirSync:SyncKey", okey),
                E("AirSync:CollectionId", cid), E("AirSync:GetChanges", "0"),
                E("AirSync:Commands", E("AirSync:Add", E("AirSync:ClientId", "b2-1"),
                                        E("AirSync:ApplicationData",
                                          E("Contacts:FirstName", "Pinged")))))))
            other.post("Sync", add)
            ping = E("Ping:Ping", E("Ping:HeartbeatInterval", "300"), E("Ping:Folders", E(
                "Ping:Folder", E("Ping:Id", cid), E("Ping:Class", "Contacts"))))
            cpu_start = cpu_seconds(proc.pid)
            for _ in range(200):
                r, _, _ = c.post("Ping", ping)
                assert r.findtext("Ping:Status") == "2"
            cpu_ping = (cpu_seconds(proc.pid) - cpu_start) / 200
        finally:
            proc.terminate()
            proc.wait(10)
        server_ms = [float(m) for m in re.findall(
            r"bench1 Sync http=200 status=1 ([0-9.]+)ms", log.read_text())]
        # the server's own time for the windows (its log line per request), in order
        window_ms = server_ms[1:1 + len(times)]
        folders_ms = [float(m) for m in re.findall(
            r"bench1 FolderSync http=200 status=1 ([0-9.]+)ms", log.read_text())][-200:]
        ping_ms = [float(m) for m in re.findall(
            r"bench1 Ping http=200 status=2 ([0-9.]+)ms", log.read_text())][-200:]
    per_window = {}
    for mark in (1000, 10000, 100000):
        near = [dt for pos, dt in times if mark - 5 * window < pos <= mark + 5 * window]
        if near:
            per_window[mark] = statistics.median(near) * 1000
    return {
        "count": count, "fill_s": fill, "seconds": total, "rate": count / total,
        "windows": len(times), "bytes": nbytes, "per_window_ms": per_window,
        "server_rate": count / (sum(window_ms) / 1000) if window_ms else None,
        "server_per_window_ms": {
            mark: statistics.median([ms for (pos, _dt), ms in zip(times, window_ms,
                                                                  strict=False)
                                     if mark - 5 * window < pos <= mark + 5 * window])
            for mark in (1000, 10000, 100000) if mark <= count},
        "cpu_rate": count / cpu_sync if cpu_sync else None,
        "empty_cpu_ms": cpu_empty * 1000,
        "empty_rtt_ms": statistics.median(empty) * 1000,
        "empty_server_ms": statistics.median(server_ms[-200:]) if server_ms else None,
        "foldersync_server_ms": statistics.median(folders_ms) if folders_ms else None,
        "foldersync_cpu_ms": cpu_folders * 1000,
        "ping2_server_ms": statistics.median(ping_ms) if ping_ms else None,
        "ping2_cpu_ms": cpu_ping * 1000,
    }


ROUNDTRIPS = """
import sys
sys.path.insert(0, {repo!r}); sys.path.insert(0, {tests!r})
import tempfile
from pathlib import Path
import bcrypt
from twisted.internet import reactor, task
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import deferLater
from backends.sql.authstore import SqlAuthStore
from backends.sql.store import SqlStore
from easync import tap
from easync.auth import accounts, aspassword, build_auth
from easync.handler import EasServer
from easync.http.resource import make_site
from easync.model import Op
from easync.notify import LocalNotifier
from easync.settings import Settings
from easync.wbxml import E
import test_request_roundtrips as T

async def main(_reactor):
    tmp = Path(tempfile.mkdtemp())
    store = SqlStore(reactor, f"sqlite:///{{tmp / 'rt.sqlite'}}")
    await store.open()
    hashed = bcrypt.hashpw(T.PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    user = await store.add_user("rita", hashed, None, True)
    server = EasServer(users=store, items=store, state=store, notifier=LocalNotifier(reactor),
                       clock=reactor, settings=Settings(provisioning=True))
    options = tap.Options()
    options.parseOptions(["--secret-key", str(tmp / "key"), "--login-delay", "0"])
    auth = build_auth(options.config, server, SqlAuthStore(store), reactor)
    server.accounts = auth.accounts
    port = reactor.listenTCP(0, make_site(server, auth.door), interface="127.0.0.1")
    web = T.Web(store, server, port.getHost().port, user)
    await T.provision(web)
    cid, key = await T.synced(web)
    _c, r = await web.call("FolderSync", E("FolderHierarchy:FolderSync",
                                           E("FolderHierarchy:SyncKey", "0")))
    fkey = r.findtext("FolderHierarchy:SyncKey")
    for label, due in (("warm", False), ("lockout recheck and 2FA setting due", True)):
        aspassword.LOCK_RECHECK = 0.0 if due else 1.0
        accounts.SETTING_TTL = 0.0 if due else 1.0
        await web.call("Sync", T.sync_body(cid, key))
        out = {{}}
        out["empty Sync"] = (await web.cost("Sync", T.sync_body(cid, key)))[0]
        out["empty-body Sync (request cache)"] = (await web.cost("Sync", None))[0]
        out["Settings (HTTP-level only)"] = (await web.cost("Settings", E(
            "Settings:Settings", E("Settings:UserInformation", E("Settings:Get")))))[0]
        out["FolderSync, nothing new"] = (await web.cost("FolderSync", E(
            "FolderHierarchy:FolderSync", E("FolderHierarchy:SyncKey", fkey))))[0]
        await store.apply(user, cid, [Op(kind="add", data={{"FirstName": "x"}},
                                         cls="Contacts")])
        ping = E("Ping:Ping", E("Ping:HeartbeatInterval", "300"), E("Ping:Folders", E(
            "Ping:Folder", E("Ping:Id", cid), E("Ping:Class", "Contacts"))))
        out["Ping answered at once"] = (await web.cost("Ping", ping))[0]
        if hasattr(web, "held_cost"):
            _c, r = await web.call("Sync", T.sync_body(cid, key))
            key = T.key_of(r)
            await web.held_cost(ping)
            out["Ping with nothing new, before its hold"] = await web.held_cost(ping)
            out["empty Ping (cached), before its hold"] = await web.held_cost(None)
            wait = T.sync_body(cid, key)
            wait.add("AirSync:Wait", "1")
            await web.held_cost(wait, "Sync")
            out["Sync with Wait, nothing new, before its hold"] = await web.held_cost(
                wait, "Sync")
            await store.apply(user, cid, [Op(kind="add", data={{"FirstName": "y"}},
                                             cls="Contacts")])
        _c, r = await web.call("Sync", T.sync_body(cid, key))
        key = T.key_of(r)
        print(f"transactions per request ({{label}}): "
              + ", ".join(f"{{k}} {{v}}" for k, v in out.items()))
    await port.stopListening()
    await store.close()

task.react(lambda r: ensureDeferred(main(r)))
"""


def roundtrips() -> None:
    """Database transactions per request (``Database.interactions``) over real HTTP
    with the real front door, in a process of its own (see
    tests/test_request_roundtrips.py)."""
    subprocess.run([sys.executable, "-c", ROUNDTRIPS.format(
        repo=str(REPO), tests=str(REPO / "tests"))], check=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--counts", default="5000,100000")
    ap.add_argument("--window", type=int, default=100)
    args = ap.parse_args()
    roundtrips()
    for count in (int(c) for c in args.counts.split(",")):
        res = run(count, args.window)
        pw = ", ".join(f"{k:,}: {v:.1f} ms" for k, v in res["per_window_ms"].items())
        spw = ", ".join(f"{k:,}: {v:.1f} ms" for k, v in res["server_per_window_ms"].items())
        print(f"{res['count']:,} contacts in {res['windows']} windows of {args.window}: "
              f"{res['seconds']:.2f} s wall = {res['rate']:,.0f} contacts/s end to end "
              f"(client decode included; {res['bytes'] / 1e6:.1f} MB); per window at {pw}; "
              f"server time only: {res['server_rate']:,.0f} contacts/s, per window at {spw}; "
              f"empty Sync: {res['empty_rtt_ms']:.2f} ms round trip, server "
              f"{res['empty_server_ms']:.2f} ms (median of 200); server CPU (all its "
              f"threads, what other load on the machine moves least): "
              f"{res['cpu_rate']:,.0f} contacts per CPU second, "
              f"{res['empty_cpu_ms']:.2f} ms per empty Sync; FolderSync with nothing new: "
              f"server {res['foldersync_server_ms']:.2f} ms, CPU "
              f"{res['foldersync_cpu_ms']:.2f} ms; Ping answered at once (Status 2): "
              f"server {res['ping2_server_ms']:.2f} ms, CPU {res['ping2_cpu_ms']:.2f} ms "
              f"(medians / means of 200)")


if __name__ == "__main__":
    main()

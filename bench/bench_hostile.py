"""Another user's latency while one user sends the hostile requests of issue #10.

    python bench/bench_hostile.py [--contacts 50000] [--users 2000] [--seconds 20]
                                  [--pg postgresql://postgres@127.0.0.1:5432/test]

A fresh SQLite database (with ``--pg``: a PostgreSQL database created through that
admin URL for the run, dropped after): user A ("mallory") owns ``--contacts`` contacts (one in a
thousand with a 32 kB name and a 32 kB Email1Address), user B ("bob") 200, and
``--users`` more accounts fill the GAL.  ``twistd -n easync --listen tcp:…`` runs in a
subprocess.  B, in this process (keep-alive HTTP/1.1, easync's codec), sends ordinary
requests one after the other — a Sync of his Contacts with nothing new, and every
tenth a FolderSync — and their round-trip times are recorded.

Phases of ``--seconds`` each: B alone (the baseline), then B while A (in its own
process, so that the client's GIL does not distort B's figures, with ``--hostile``
connections sending back to back) sends one kind of hostile request:

* ``resolve``: ResolveRecipients with 100 To (the cap): names matching thousands of
  contacts, exact addresses, 32 kB names and 32 kB addresses;
* ``gal``: GAL Searches whose queries match 1 to all of the users;
* ``add``: contact Sync Adds with a 32 kB FirstName and a 32 kB Email1Address;
* ``all``: the three at once.

Reports B's p50 / p99 / max per phase and how many hostile requests A got answered.
The target of issue #10: B's p99 under 100 ms in every phase.
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing as mp
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from base64 import b64encode
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from easync_server import free_port, twistd

from easync.wbxml import E, decode, encode

PASSWORD = "bench-password-1"
HOSTILE = "x" * 32_000


def contact(i: int) -> dict[str, Any]:
    if i % 1000 == 999:
        return {"FirstName": "Zed" + HOSTILE, "LastName": f"Hostile{i}",
                "Email1Address": HOSTILE + f"{i}@example.org",
                "Email2Address": f"hostile{i}@example.org"}
    return {"FirstName": f"First{i}", "LastName": f"Last{i % 500}",
            "CompanyName": f"Company {i % 97} S.p.A.", "Email1Address": f"c{i}@example.org",
            "MobilePhoneNumber": f"+39 333 {i:07d}", "BusinessAddressCity": "Milano",
            "Body": {"Type": 1, "Data": f"Notes on contact {i}."}}


async def _populate(reactor: Any, db: str, contacts: int, users: int) -> None:
    import bcrypt

    from backends.sql.store import SqlStore
    from easync.model import Op

    store = SqlStore(reactor, db)
    await store.open()
    h = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    for name, count in (("mallory", contacts), ("bob", 200)):
        user = await store.add_user(name, h, f"{name}@example.org", True)
        folder = {f.name: f.server_id for f in await store.list_folders(user)}["Contacts"]
        for start in range(0, count, 5000):
            await store.apply(user, folder, [
                Op(kind="add", data=contact(i), cls="Contacts")
                for i in range(start, min(start + 5000, count))])

    def gal(cur: Any) -> None:
        for n in range(users):
            store.users.add_user_txn(cur, f"u{n:05d}", None, f"user{n}@corp.example", True)

    await store.db.run_interaction("gal", gal, write=True)
    await store.close()


def populate(db: str, contacts: int, users: int) -> None:
    from twisted.internet import defer, task

    task.react(lambda r: defer.ensureDeferred(_populate(r, db, contacts, users)))


class Client:
    def __init__(self, port: int, user: str, device: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        self.user, self.device = user, device
        self.auth = "Basic " + b64encode(f"{user}:{PASSWORD}".encode()).decode()
        self.policy = ""

    def post_raw(self, cmd: str, body: bytes) -> tuple[int, bytes, float]:
        headers = {"Authorization": self.auth, "MS-ASProtocolVersion": "14.1",
                   "Content-Type": "application/vnd.ms-sync.wbxml", "User-Agent": "bench/1.0"}
        if self.policy:
            headers["X-MS-PolicyKey"] = self.policy
        t0 = time.perf_counter()
        self.conn.request("POST", f"/Microsoft-Server-ActiveSync?Cmd={cmd}&User={self.user}"
                          f"&DeviceId={self.device}&DeviceType=iPhone", body, headers)
        resp = self.conn.getresponse()
        data = resp.read()
        return resp.status, data, time.perf_counter() - t0

    def post(self, cmd: str, root: Any) -> Any:
        status, data, _ = self.post_raw(cmd, encode(root) if root is not None else b"")
        assert status == 200, (cmd, status)
        return decode(data) if data else None

    def provision(self) -> None:
        pol = E("Provision:Policies", E("Provision:Policy",
                                        E("Provision:PolicyType", "MS-EAS-Provisioning-WBXML")))
        r = self.post("Provision", E("Provision:Provision", pol))
        self.policy = r.find("Provision:Policies").find("Provision:Policy").findtext(
            "Provision:PolicyKey")
        ack = E("Provision:Policies", E("Provision:Policy",
                                        E("Provision:PolicyType", "MS-EAS-Provisioning-WBXML"),
                                        E("Provision:PolicyKey", self.policy),
                                        E("Provision:Status", "1")))
        r = self.post("Provision", E("Provision:Provision", ack))
        self.policy = r.find("Provision:Policies").find("Provision:Policy").findtext(
            "Provision:PolicyKey")

    def contacts_folder(self) -> str:
        r = self.post("FolderSync", E("FolderHierarchy:FolderSync",
                                      E("FolderHierarchy:SyncKey", "0")))
        return next(a.findtext("FolderHierarchy:ServerId")
                    for a in r.find("FolderHierarchy:Changes").findall("FolderHierarchy:Add")
                    if a.findtext("FolderHierarchy:DisplayName") == "Contacts")

    def sync(self, cid: str, key: str, *extra: Any) -> Any:
        return self.post("Sync", E("AirSync:Sync", E("AirSync:Collections", E(
            "AirSync:Collection", E("AirSync:SyncKey", key), E("AirSync:CollectionId", cid),
            *extra))))


def _key(r: Any) -> str:
    return r.find("AirSync:Collections").find("AirSync:Collection").findtext("AirSync:SyncKey")


# -- the hostile user (its own process) ------------------------------------------------

def resolve_body() -> bytes:
    tos: list[str] = []
    for n in range(25):
        tos += [f"c{n * 1997}@example.org", f"First{n * 7}", f"Last{n}",
                HOSTILE + f"{n}@example.org" if n % 2 else "Zed" + HOSTILE]
    tos[-4:] = ["l", "f", "c", "company 1"]
    return encode(E("ResolveRecipients:ResolveRecipients",
                    *[E("ResolveRecipients:To", t) for t in tos]))


def gal_bodies() -> list[bytes]:
    return [encode(E("Search:Search", E("Search:Store", E("Search:Name", "GAL"),
                                        E("Search:Query", q),
                                        E("Search:Options", E("Search:Range", "0-99")))))
            for q in ("u", "user1", "u0", "user12", "zzz", "m", "b")]


def hostile_loop(port: int, kind: str, conn_no: int, stop_at: float, out: Any) -> None:
    c = Client(port, "mallory", f"mal{kind}{conn_no}")
    c.provision()
    n, worst, total = 0, 0.0, 0.0
    statuses: dict[int, int] = {}
    if kind == "resolve":
        bodies, cmd = [resolve_body()], "ResolveRecipients"
    elif kind == "gal":
        bodies, cmd = gal_bodies(), "Search"
    else:
        cid = c.contacts_folder()
        key = _key(c.sync(cid, "0"))
        cmd = "Sync"
    while time.monotonic() < stop_at:
        if kind == "add":
            cmds = E("AirSync:Commands", E("AirSync:Add", E("AirSync:ClientId", f"h{n}"),
                                           E("AirSync:ApplicationData",
                                             E("Contacts:FirstName", f"Evil{n}" + HOSTILE),
                                             E("Contacts:Email1Address",
                                               HOSTILE + f"{n}@evil.example"))))
            body = encode(E("AirSync:Sync", E("AirSync:Collections", E(
                "AirSync:Collection", E("AirSync:SyncKey", key), E("AirSync:CollectionId", cid),
                E("AirSync:GetChanges", "0"), cmds))))
        else:
            body = bodies[n % len(bodies)]
        status, data, dt = c.post_raw(cmd, body)
        statuses[status] = statuses.get(status, 0) + 1
        if kind == "add" and status == 200:
            key = _key(decode(data))
        n += 1
        worst = max(worst, dt)
        total += dt
    out.put((kind, n, total, worst, statuses))


# -- the measured user ------------------------------------------------------------------

def victim(port: int, seconds: float) -> list[float]:
    c = Client(port, "bob", "bob1")
    c.provision()
    cid = c.contacts_folder()
    key = _key(c.sync(cid, "0"))
    while True:
        r = c.sync(cid, key, E("AirSync:WindowSize", "512"))
        key = _key(r)
        coll = r.find("AirSync:Collections").find("AirSync:Collection")
        if coll.find("AirSync:MoreAvailable") is None:
            break
    sync_body = encode(E("AirSync:Sync", E("AirSync:Collections", E(
        "AirSync:Collection", E("AirSync:SyncKey", key), E("AirSync:CollectionId", cid)))))
    fs_body = encode(E("FolderHierarchy:FolderSync", E("FolderHierarchy:SyncKey", "0")))
    times: list[float] = []
    stop_at = time.monotonic() + seconds
    n = 0
    while time.monotonic() < stop_at:
        cmd, body = ("FolderSync", fs_body) if n % 10 == 9 else ("Sync", sync_body)
        status, _data, dt = c.post_raw(cmd, body)
        assert status == 200, (cmd, status)
        times.append(dt)
        n += 1
        time.sleep(0.005)
    return times


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))] * 1000


def run_phase(port: int, kinds: list[str], seconds: float, hostile: int) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = []
    stop_at = time.monotonic() + seconds + 3
    for kind in kinds:
        for i in range(hostile):
            p = ctx.Process(target=hostile_loop, args=(port, kind, i, stop_at, out))
            p.start()
            procs.append(p)
    if procs:
        time.sleep(2.5)                  # let them provision and start sending
    times = victim(port, seconds)
    results = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(60)
    return {"times": times, "hostile": results}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--contacts", type=int, default=50_000)
    ap.add_argument("--users", type=int, default=2_000)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--hostile", type=int, default=2, help="connections per hostile kind")
    ap.add_argument("--phases", default="none,resolve,gal,add,all")
    ap.add_argument("--pg", metavar="ADMIN_URL", help="run on PostgreSQL instead of SQLite")
    args = ap.parse_args()
    cpu = next((ln.split(":", 1)[1].strip() for ln in
                Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, nproc {os.cpu_count()},"
          f" {cpu}, Python {platform.python_version()}, load {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        db = f"sqlite:///{tmp}/bench.sqlite"
        admin = None
        if args.pg:
            import psycopg

            admin = psycopg.connect(args.pg, autocommit=True)
            name = f"easync_bench_{os.getpid()}"
            admin.execute(f"CREATE DATABASE {name}")
            db = args.pg.rsplit("/", 1)[0] + "/" + name
        print(f"# store: {db.split(':', 1)[0]}")
        t0 = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--populate-only", db,
                        str(args.contacts), str(args.users)], check=True)
        print(f"# populated {args.contacts:,} contacts for mallory, {args.users:,} GAL users"
              f" in {time.perf_counter() - t0:.1f} s")
        port = free_port()
        env = dict(os.environ, PYTHONPATH=str(REPO))
        log = Path(tmp) / "server.log"
        with open(log, "wb") as f:
            proc = subprocess.Popen([twistd(), "-n", "--logfile", "-", "--pidfile", "",
                                     "easync", "--listen", f"tcp:{port}:interface=127.0.0.1",
                                     "--db", db], cwd=tmp, env=env, stdout=f,
                                    stderr=subprocess.STDOUT)
        try:
            for _ in range(400):
                try:
                    http.client.HTTPConnection("127.0.0.1", port, timeout=1).connect()
                    break
                except OSError:
                    time.sleep(0.05)
            print("| hostile load (A) | B requests | B p50 | B p99 | B max |"
                  " A requests answered (HTTP status: count) | A mean / max |")
            print("|---|---:|---:|---:|---:|---|---:|")
            for phase in args.phases.split(","):
                kinds = [] if phase == "none" else (
                    ["resolve", "gal", "add"] if phase == "all" else [phase])
                res = run_phase(port, kinds, args.seconds, args.hostile)
                t = res["times"]
                a_n = sum(h[1] for h in res["hostile"])
                a_tot = sum(h[2] for h in res["hostile"])
                a_max = max((h[3] for h in res["hostile"]), default=0.0)
                codes: dict[int, int] = {}
                for h in res["hostile"]:
                    for k, v in h[4].items():
                        codes[k] = codes.get(k, 0) + v
                a_txt = (", ".join(f"{k}: {v}" for k, v in sorted(codes.items()))
                         if codes else "–")
                a_time = (f"{a_tot / a_n * 1000:.0f} / {a_max * 1000:.0f} ms" if a_n else "–")
                print(f"| {phase} | {len(t)} | {statistics.median(t) * 1000:.1f} ms |"
                      f" {pct(t, 99):.1f} ms | {max(t) * 1000:.1f} ms | {a_txt} | {a_time} |",
                      flush=True)
        finally:
            proc.terminate()
            proc.wait(20)
            if admin is not None:
                admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        tracebacks = log.read_text(errors="replace").count("Traceback")
        print(f"# server log: {tracebacks} tracebacks")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--populate-only":
        populate(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        main()

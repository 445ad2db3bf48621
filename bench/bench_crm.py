"""The CRM store's costs, against the fake CRM (tests/fakecrm.py) over loopback HTTP.

    python bench/bench_crm.py [--contacts 5000] [--users 1,10,100] [--polls 20]

1. Initial sync: ``--contacts`` contacts of one CRM user; ``twistd -n easync --backend
   crm`` in a subprocess, the fake CRM in another, this process as a new phone
   (provision, FolderSync — which makes easync's first load of the user's records —
   then Sync windows of 100 until MoreAvailable stops).  Reports the time of the
   load and of the whole sync, and the CRM requests made, by operation.
2. Poll cost with no changes, for 1, 10 and 100 users (10 contacts each, every user
   loaded), in this process, on the fake vtiger and vtenext: CRM requests (by
   operation) and milliseconds per poll; the re-read of a bulk-changed second; what
   the poll after 10 deletions costs and finds; and the delete latency: the poller
   running every ``--interval`` seconds, ``--samples`` records deleted at random
   moments, the time until the change hub is told.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

from bench_sync import PASSWORD, Client
from easync_server import free_port, twistd

from easync.wbxml import E


class Crm:
    """The fake CRM in a subprocess, driven through its /control API."""

    def __init__(self, tmp: str) -> None:
        self.proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "fakecrm.py"),
                                      "--port", "0"], cwd=tmp, stdout=subprocess.PIPE,
                                     text=True)
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline().split()[1])
        self.url = f"http://127.0.0.1:{self.port}/webservice.php"

    def __call__(self, action: str, **kw: Any) -> Any:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/control",
                                     data=json.dumps({"action": action, **kw}).encode())
        with urllib.request.urlopen(req, timeout=120) as r:
            return json.loads(r.read())["result"]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def crm_contact(i: int) -> dict[str, str]:
    return {"firstname": f"First{i}", "lastname": f"Last{i}",
            "email": f"first{i}.last{i}@example.org", "mobile": f"+39 333 {i:07d}",
            "phone": f"+39 02 {i:07d}", "title": "Account manager", "department": "Sales",
            "mailingstreet": f"Via Roma {i % 200}", "mailingcity": "Milano",
            "mailingzip": "20100", "mailingcountry": "Italia",
            "birthday": f"19{60 + i % 40}-0{1 + i % 9}-1{i % 9}",
            "description": f"Met at the fair, notes for contact {i}."}


def initial_sync(count: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        crm = Crm(tmp)
        try:
            crm("add_user", name="bench", email="bench@example.org")
            for start in range(0, count, 1000):
                crm("add_records", module="Contacts", owner="bench", fields=[
                    crm_contact(i) for i in range(start, min(start + 1000, count))])
            db = f"sqlite:///{tmp}/bench.sqlite"
            env = dict(os.environ, PYTHONPATH=str(REPO), EASYNC_BCRYPT_ROUNDS="4")
            subprocess.run([sys.executable, "-m", "easync.admin", "--db", db, "init"],
                           text=True, env=env, check=True, cwd=tmp, capture_output=True)
            subprocess.run([sys.executable, "-m", "easync.admin", "--db", db, "user", "add",
                            "bench", "--password-stdin", "--activesync"], input=PASSWORD,
                           text=True, env=env, check=True, cwd=tmp, capture_output=True)
            Path(tmp, "key").write_text("adminKEY123\n")
            port = free_port()
            with open(Path(tmp) / "server.log", "wb") as out:
                proc = subprocess.Popen(
                    [twistd(), "-n", "--logfile", "-", "--pidfile", "", "easync",
                     "--listen", f"tcp:{port}:interface=127.0.0.1", "--db", db,
                     "--backend", "crm", "--crm-url", crm.url, "--crm-user", "admin",
                     "--crm-access-key-file", f"{tmp}/key", "--crm-poll-interval", "15"],
                    cwd=tmp, env=env, stdout=out, stderr=subprocess.STDOUT)
            try:
                import http.client
                for _ in range(400):
                    try:
                        http.client.HTTPConnection("127.0.0.1", port, timeout=1).connect()
                        break
                    except OSError:
                        time.sleep(0.05)
                before = Counter(crm("calls"))
                c = Client(port)
                c.provision()
                t0 = time.perf_counter()
                r, _, _ = c.post("FolderSync", E("FolderHierarchy:FolderSync",
                                                 E("FolderHierarchy:SyncKey", "0")))
                load = time.perf_counter() - t0
                cid = next(a.findtext("FolderHierarchy:ServerId") for a in
                           r.find("FolderHierarchy:Changes").findall("FolderHierarchy:Add")
                           if a.findtext("FolderHierarchy:DisplayName") == "Contacts")
                r, _, _ = c.sync(cid, "0", 100)
                key = r.find("AirSync:Collections").find("AirSync:Collection").findtext(
                    "AirSync:SyncKey")
                got = 0
                windows = 0
                while True:
                    r, _dt, _n = c.sync(cid, key, 100)
                    windows += 1
                    coll = r.find("AirSync:Collections").find("AirSync:Collection")
                    key = coll.findtext("AirSync:SyncKey")
                    cmds = coll.find("AirSync:Commands")
                    got += len(cmds.children) if cmds is not None else 0
                    if coll.find("AirSync:MoreAvailable") is None:
                        break
                total = time.perf_counter() - t0
                assert got == count, (got, count)
                after = Counter(crm("calls"))
            finally:
                proc.terminate()
                proc.wait(10)
        finally:
            crm.stop()
    calls = after - before
    # the poller's own requests in those seconds are in the count too
    return {"count": count, "load_s": load, "total_s": total, "windows": windows,
            "calls": dict(calls), "requests": sum(calls.values())}


async def poll_costs(reactor: Any, user_counts: list[int], polls: int, interval: float,
                     samples: int) -> list[dict[str, Any]]:
    from crmtest import make_env
    from fakecrm import FakeCrm
    from twisted.internet.defer import maybeDeferred
    from twisted.internet.task import deferLater

    out = []
    for flavour in ("vtiger", "vtenext"):
        for n in user_counts:
            with tempfile.TemporaryDirectory() as tmp:
                crm = FakeCrm(flavour)
                old = crm.now_local()[:4] + "-01-01 00:00:00"     # settled long ago
                names = tuple(f"u{i:03d}" for i in range(n))
                for name in names:
                    crm.add_user(name)
                    for k in range(10):
                        crm.add_record("Contacts", {"firstname": f"{name}-{k}",
                                                    "lastname": "x"}, owner=name,
                                       modifiedtime=old)
                env = await make_env(Path(tmp), crm=crm, users=names,
                                     poll_interval=interval)
                try:
                    for name in names:
                        await env.folders(name)
                    await env.store.poll_once()
                    await deferLater(reactor, 1.1, lambda: None)  # the first second settles
                    env.store.settle = 0.0
                    await env.store.poll_once()
                    r0, t0 = env.client.requests, time.perf_counter()
                    calls0 = Counter(crm.calls)
                    for _ in range(polls):
                        await env.store.poll_once()
                    per_poll = (env.client.requests - r0) / polls
                    ms = (time.perf_counter() - t0) / polls * 1000
                    ops = {k: v / polls for k, v in (Counter(crm.calls) - calls0).items()}
                    env.store.settle = 30.0
                    # every record changed in one second (a bulk update): the polls of
                    # the next SETTLE seconds read that second again
                    stamp = crm.now_local()
                    for r in crm.live("Contacts"):
                        crm.modify_record(r["id"], {"title": "bulk"}, modifiedtime=stamp)
                    r0 = env.client.requests
                    await env.store.poll_once()
                    bulk_first = env.client.requests - r0
                    r0, t0 = env.client.requests, time.perf_counter()
                    await env.store.poll_once()
                    bulk_again = env.client.requests - r0
                    bulk_ms = (time.perf_counter() - t0) * 1000
                    env.store.settle = 0.0
                    await env.store.poll_once()
                    # deletions: 10 records deleted in the CRM, then one poll
                    victims = [r["id"] for r in crm.live("Contacts")[:10]]
                    for v in victims:
                        crm.delete_record(v)
                    dead0 = await _tombstones(env)
                    r0 = env.client.requests
                    await env.store.poll_once()
                    poll_reqs = env.client.requests - r0
                    by_poll = await _tombstones(env) - dead0
                    # delete latency: the service polls every `interval` s; a record is
                    # deleted at a random moment; time until its user's folder is published
                    for k in range(samples):            # records to delete, mirrored
                        crm.add_record("Contacts", {"firstname": f"spare-{k}",
                                                    "lastname": "x"}, owner=names[0])
                    env.store.startService()
                    await deferLater(reactor, 2 * interval, lambda: None)
                    latencies = []
                    import random

                    rnd = random.Random(n)
                    for _ in range(samples):
                        await deferLater(reactor, rnd.uniform(0, interval), lambda: None)
                        victim = rnd.choice(crm.live("Contacts"))
                        owner = env.users[victim["owner"]]
                        folder = (await env.store.folders_of(owner.id))["Contacts"]
                        woke = env.hub.next(owner.id, folder)
                        t0 = time.perf_counter()
                        crm.delete_record(victim["id"])
                        await woke
                        latencies.append(time.perf_counter() - t0)
                    await maybeDeferred(env.store.stopService)
                    latencies.sort()
                    out.append({"flavour": flavour, "users": n, "records": 10 * n,
                                "per_poll": per_poll, "ms": ms, "ops": ops,
                                "bulk_first": bulk_first, "bulk_again": bulk_again,
                                "bulk_ms": bulk_ms, "deletion_poll_requests": poll_reqs,
                                "by_poll": by_poll, "interval": interval,
                                "latency_p50": latencies[len(latencies) // 2],
                                "latency_max": latencies[-1], "samples": samples})
                finally:
                    await env.close()
    return out


async def _tombstones(env: Any) -> int:
    rows = await env.sql.raw_query("SELECT COUNT(*) FROM items WHERE deleted = 1")
    return int(rows[0][0])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--contacts", type=int, default=5000)
    ap.add_argument("--users", default="1,10,100")
    ap.add_argument("--polls", type=int, default=20)
    ap.add_argument("--interval", type=float, default=1.0,
                    help="poll interval for the delete-latency measurement (s)")
    ap.add_argument("--samples", type=int, default=10, help="deletions timed per run")
    args = ap.parse_args()
    res = initial_sync(args.contacts)
    print(f"initial sync of {res['count']:,} CRM contacts: first load (FolderSync) "
          f"{res['load_s']:.2f} s, whole sync {res['total_s']:.2f} s in {res['windows']} "
          f"windows; CRM requests {res['requests']} "
          f"(target <= {res['count'] // 100} + constant): {res['calls']}")
    from twisted.internet import defer, task

    results: list[dict[str, Any]] = []

    async def run(reactor: Any) -> None:
        results.extend(await poll_costs(reactor, [int(u) for u in args.users.split(",")],
                                        args.polls, args.interval, args.samples))
        for r in results:
            print(f"{r['flavour']}, {r['users']} users ({r['records']} records): "
                  f"{r['per_poll']:.1f} CRM requests ({r['ops']}), {r['ms']:.1f} ms per "
                  f"poll with no changes; after all {r['records']} changed in one second: "
                  f"{r['bulk_first']} requests, then {r['bulk_again']} ({r['bulk_ms']:.0f} ms)"
                  f" per poll until that second settles; 10 deletions: the next poll "
                  f"({r['deletion_poll_requests']} requests) finds {r['by_poll']}; delete "
                  f"latency with a {r['interval']:g} s poll interval, {r['samples']} "
                  f"deletions: median {r['latency_p50']:.2f} s, max "
                  f"{r['latency_max']:.2f} s")

    task.react(lambda r: defer.ensureDeferred(run(r)))


if __name__ == "__main__":
    main()

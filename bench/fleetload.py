"""Load generator of ``bench/bench_fleet.py``: a slice of a fleet of phones, in one process.

    python bench/fleetload.py --port 8080 --fleet fleet.json --first 0 --count 5000 \
        [--schedule changes-0.json] [--concurrency 50]

Each device of ``fleet["devices"][first:first + count]`` behaves as its profile's phone
(iPhone 16.1, Android 14.1, Outlook 14.0: DeviceType, User-Agent, protocol version and
Sync shapes from ``tests/corpus/devices/``; see ``PROFILES``), from a loopback address
of its own (``fleet["source_net"]``), on one keep-alive connection:

* setup: Sync SyncKey 0 of its Contacts and Calendar folders, the Sync that fetches what
  they hold, then a Ping on both with the profile's heartbeat (MS-ASCMD 2.2.3.134);
* when a Ping answers Status 2 (changes, MS-ASCMD 2.2.3.177.12) it Syncs the folders the
  answer names — MoreAvailable followed, at most 20 rounds — then Pings again; Status 1
  (heartbeat expired): Pings again; anything else: counted as an error, the device stops;
* at the times of ``--schedule`` (``[[seconds after the start, device index], ...]``)
  the device adds a contact through a Sync on a second connection (its held Ping stays
  held, MS-ASCMD 2.2.3.134), the corpus's own Add for its profile.

Prints ``D`` when every device's first Ping is out, then waits for ``go T0`` on stdin
(``T0`` a ``time.monotonic()``, one clock for every process of the machine); from then
on the schedule runs, and the process stops by itself ``--duration`` + ``--grace`` s
after ``T0`` (or on SIGTERM / stdin closing).  With ``--stay`` the devices go on
pinging after the day (``F`` said) and the process waits for the next day,
``go T0 DURATION SCHEDULE`` (bench_fleet's ``--reuse-setup``: a next step only adds
devices), until ``stop``, stdin closing or ``--hard`` seconds after its start.
Lines (times are ``time.monotonic()``):

    P <dev> <t>                                 Ping Status 2 arrived at t
    H <dev>                                     Ping Status 1 (heartbeat)
    Y <dev> <kind> <t0> <t1> <items>            a Sync (kind s setup, w after a wake,
                                                c a change), request written at t0,
                                                answer read at t1, items it brought
    C <dev> <t0> <t1>                           this device's Add: written t0, answered t1
    E <dev> <what>                              an error
    N <sent>                                    progress of the setup
    D                                           every device's first Ping is out
    F <t>                                       the day (+ grace) is over
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import sys
import time
import xml.etree.ElementTree as ET
from base64 import b64encode
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from easync.wbxml import E, Element, decode, encode

CORPUS = REPO / "tests" / "corpus" / "devices"


@dataclass(frozen=True)
class Profile:
    name: str
    corpus: str          # the corpus file whose identity and Sync shape the device uses
    version: str         # MS-ASProtocolVersion
    heartbeat: int       # Ping HeartbeatInterval, seconds


# Heartbeats: iOS grows its Ping heartbeat up to 1,680 s, Android's Exchange clients
# use 470 s (the figures); Outlook desktop's is taken as 900 s (no public figure
# found; within the server's default 60-3,540 s).
PROFILES = {
    "ios": Profile("ios", "iphone_ios17_161_contact_add_birthday_1604.xml", "16.1", 1680),
    "android": Profile("android", "gmail_android_161_contact_add_no_fileas.xml", "14.1", 470),
    "outlook": Profile("outlook", "outlook2016_140_contact_add_own_fileas.xml", "14.0", 900),
}


def _meta(text: str) -> dict[str, str]:
    m = re.match(r"\s*<!--(.*?)-->", text, re.DOTALL)
    assert m, "corpus file without its leading comment"
    out = {}
    for line in m.group(1).splitlines():
        km = re.match(r"^([A-Z][A-Za-z-]*):\s?(.*)$", line)
        if km:
            out[km.group(1)] = km.group(2).strip()
    return out


def _element(el: ET.Element) -> Element:
    ns, _, local = el.tag[1:].partition("}")
    out = Element(f"{ns.rstrip(':')}:{local}")
    kids = [_element(c) for c in el]
    if kids:
        out.children = kids
    elif el.text and el.text.strip():
        out.text = el.text.strip()
    return out


def _copy(el: Element) -> Element:
    return Element(el.tag, el.text, [_copy(c) for c in el.children], el.opaque)


class Shape:
    """A profile's requests, from its corpus file: the Collection of its Sync (Commands
    taken out, for a Sync that only fetches; GetChanges 0 taken out too, as a Sync after
    a Ping wants the changes), its Add, its identity."""

    def __init__(self, profile: Profile) -> None:
        text = (CORPUS / profile.corpus).read_text("utf-8")
        meta = _meta(text)
        self.profile = profile
        self.device_type = meta["DeviceType"]
        self.user_agent = meta["User-Agent"]
        body = re.sub(r"\A\s*<!--.*?-->", "", text, flags=re.DOTALL)
        root = _element(ET.fromstring(body))
        coll = root.find("AirSync:Collections").find("AirSync:Collection")  # type: ignore[union-attr]
        assert coll is not None
        commands = coll.find("AirSync:Commands")
        assert commands is not None
        self.add = commands.find("AirSync:Add")
        assert self.add is not None
        self.fetch = _copy(coll)
        self.fetch.children = [c for c in self.fetch.children
                               if c.tag != "AirSync:Commands"
                               and not (c.tag == "AirSync:GetChanges" and c.text == "0")]

    def collection(self, key: str, folder: str, add_client_id: str | None = None) -> Element:
        coll = _copy(self.fetch)
        for c in coll.children:
            if c.tag == "AirSync:SyncKey":
                c.text = key
            elif c.tag == "AirSync:CollectionId":
                c.text = folder
        if add_client_id is not None:
            add = _copy(self.add)  # type: ignore[arg-type]
            for c in add.children:
                if c.tag == "AirSync:ClientId":
                    c.text = add_client_id
            coll.children.append(E("AirSync:Commands", add))
        return coll

    def device_id(self, n: int) -> str:
        """A DeviceId of the form the profile's devices use."""
        if self.profile.name == "ios":
            return f"ApplF{n:09d}FLT"            # "Appl" + the serial number
        if self.profile.name == "android":
            return f"androidc{n:09d}"            # as in the corpus, androidc195792594
        return f"{n:032X}"                       # Outlook: 32 hex digits


SHAPES: dict[str, Shape] = {}


def shape(name: str) -> Shape:
    if name not in SHAPES:
        SHAPES[name] = Shape(PROFILES[name])
    return SHAPES[name]


def source_address(i: int, net: str) -> str:
    """Device ``i``'s own loopback address under ``net`` (A): A.(i/62500).(i/250%250).(1+i%250)."""
    a = int(net)
    return f"127.{a + i // 62500}.{i // 250 % 250}.{1 + i % 250}"


# -- one device --------------------------------------------------------------------------

class HttpError(Exception):
    pass


class Device:
    def __init__(self, i: int, rec: list, fleet: dict, host: str, port: int) -> None:
        self.i = i
        self.user, self.device_id, profile, self.contacts, self.calendar = rec
        self.shape = shape(profile)
        self.host, self.port = host, port
        self.source = source_address(i, fleet["source_net"])
        self.keys: dict[str, str] = {self.contacts: "0", self.calendar: "0"}
        self.lock = asyncio.Lock()
        self.adds = 0
        auth = b64encode(f"{self.user}:{fleet['password']}".encode()).decode()
        self.head = (f"Host: {host}:{port}\r\nAuthorization: Basic {auth}\r\n"
                     f"MS-ASProtocolVersion: {self.shape.profile.version}\r\n"
                     f"User-Agent: {self.shape.user_agent}\r\n"
                     "Content-Type: application/vnd.ms-sync.wbxml\r\n")
        self.ping_body = encode(E("Ping:Ping",
                                  E("Ping:HeartbeatInterval", str(self.shape.profile.heartbeat)),
                                  E("Ping:Folders",
                                    E("Ping:Folder", E("Ping:Id", self.contacts),
                                      E("Ping:Class", "Contacts")),
                                    E("Ping:Folder", E("Ping:Id", self.calendar),
                                      E("Ping:Class", "Calendar")))))
        self.conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    def request(self, cmd: str, body: bytes) -> bytes:
        return (f"POST /Microsoft-Server-ActiveSync?Cmd={cmd}&User={self.user}"
                f"&DeviceId={self.device_id}&DeviceType={self.shape.device_type} HTTP/1.1\r\n"
                f"{self.head}Content-Length: {len(body)}\r\n\r\n").encode() + body

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        for attempt in range(20):
            try:
                return await asyncio.open_connection(self.host, self.port,
                                                     local_addr=(self.source, 0))
            except OSError:
                if attempt == 19:
                    raise
                await asyncio.sleep(0.2 * (attempt + 1))
        raise AssertionError("unreachable")

    async def exchange(self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                       data: bytes, timeout: float) -> tuple[bytes, float]:
        """Send one request, read its answer: (body, arrival time).  429 (login bound,
        README "Login throttling"): wait as told and send again, at most 10 times."""
        reader, writer = conn
        for _ in range(10):
            writer.write(data)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
            now = time.monotonic()
            length, chunked, retry = 0, False, 5.0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"transfer-encoding" and b"chunked" in value.lower():
                    chunked = True
                elif name == b"retry-after":
                    retry = float(value)
            if chunked:
                parts = []
                for _ in range(100000):
                    size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                    if size == 0:
                        await reader.readuntil(b"\r\n")
                        break
                    parts.append(await reader.readexactly(size + 2))
                body = b"".join(p[:-2] for p in parts)
            else:
                body = await reader.readexactly(length) if length else b""
            code = head.split(b" ", 2)[1]
            if code == b"429":
                await asyncio.sleep(retry)
                continue
            if code != b"200":
                raise HttpError(f"http{code.decode()}")
            return body, now
        raise HttpError("http429x10")

    async def sync(self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                   folders: list[str], kind: str, out: list[str],
                   add: bool = False) -> tuple[float, float]:
        """One Sync (and its MoreAvailable rounds) of ``folders``; (first write, last read)."""
        first = last = 0.0
        items = 0
        todo = list(folders)
        for _round in range(20):
            colls = []
            for f in todo:
                client_id = None
                if add and f == self.contacts and _round == 0:
                    self.adds += 1
                    client_id = f"fleet-{self.i}-{self.adds}"
                colls.append(self.shape.collection(self.keys[f], f, client_id))
            body = encode(E("AirSync:Sync", E("AirSync:Collections", *colls)))
            t0 = time.monotonic()
            first = first or t0
            data, last = await self.exchange(conn, self.request("Sync", body), 120)
            out.append(f"Y {self.i} {kind} {t0:.6f} {last:.6f} -")   # items patched below
            more = []
            if data:
                root = decode(data)
                status = root.findtext("AirSync:Status")
                if status is not None and status != "1":
                    raise HttpError(f"sync-status{status}")
                collections = root.find("AirSync:Collections")
                for coll in collections.children if collections is not None else []:
                    fid = coll.findtext("AirSync:CollectionId") or ""
                    st = coll.findtext("AirSync:Status")
                    if st != "1":
                        raise HttpError(f"sync-collection-status{st}")
                    self.keys[fid] = coll.findtext("AirSync:SyncKey") or self.keys[fid]
                    cmds = coll.find("AirSync:Commands")
                    n = len(cmds.children) if cmds is not None else 0
                    items += n
                    if coll.find("AirSync:MoreAvailable") is not None:
                        more.append(fid)
            out[-1] = out[-1][:-1] + str(items)
            if not more:
                break
            todo = more
            items = 0
        return first, last

    async def setup(self, gate: asyncio.Semaphore, out: list[str]) -> None:
        async with gate:
            self.conn = await self.connect()
            async with self.lock:
                await self.sync(self.conn, [self.contacts, self.calendar], "s", out)
                await self.sync(self.conn, [self.contacts, self.calendar], "s", out)

    async def pings(self, out: list[str], stop_at: list[float]) -> None:
        """Ping, Sync after each wake, Ping again, until ``stop_at[0]`` (bounded)."""
        assert self.conn is not None
        ping = self.request("Ping", self.ping_body)
        for _ in range(100000):
            if time.monotonic() >= stop_at[0]:
                return
            data, now = await self.exchange(self.conn, ping, self.shape.profile.heartbeat + 120)
            root = decode(data) if data else None
            status = root.findtext("Ping:Status") if root is not None else "-"
            if status == "1":
                out.append(f"H {self.i}")
                continue
            if status != "2":
                out.append(f"E {self.i} ping-status{status}")
                return
            out.append(f"P {self.i} {now:.6f}")
            fs = root.find("Ping:Folders") if root is not None else None
            folders = [f.text or "" for f in fs.children] if fs is not None else []
            folders = [f for f in folders if f in self.keys] or list(self.keys)
            async with self.lock:
                await self.sync(self.conn, folders, "w", out)

    async def change(self, out: list[str]) -> None:
        """Add a contact through a Sync on a second connection, as a second device of
        the same user would be doing while this one's Ping is held."""
        conn = await self.connect()
        try:
            async with self.lock:
                t0, t1 = await self.sync(conn, [self.contacts], "c", out, add=True)
            out.append(f"C {self.i} {t0:.6f} {t1:.6f}")
        finally:
            conn[1].close()


# -- the process --------------------------------------------------------------------------

async def guarded(dev: int, coro: object, out: list[str]) -> None:
    try:
        await coro  # type: ignore[misc]
    except asyncio.CancelledError:
        raise
    except (TimeoutError, HttpError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as e:
        out.append(f"E {dev} {type(e).__name__}:{str(e)[:60].replace(' ', '_') or '-'}")


async def main(args: argparse.Namespace) -> None:
    from pingload import wind_up

    fleet = json.loads(Path(args.fleet).read_text())
    recs = fleet["devices"]
    devices = {i: Device(i, recs[i], fleet, args.host, args.port)
               for i in range(args.first, min(len(recs), args.first + args.count))}
    out: list[str] = []
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    days: asyncio.Queue[tuple[float, float, str | None]] = asyncio.Queue()
    if args.schedule:
        first_schedule: str | None = args.schedule
    else:
        first_schedule = None

    def on_stdin() -> None:
        data = sys.stdin.buffer.read1(65536)
        if not data:
            stop.set()
            return
        for line in data.decode().splitlines():
            f = line.split()
            if f[:1] == ["go"] and len(f) >= 2:
                # go T0 [DURATION SCHEDULE]: a day from T0 (time.monotonic())
                days.put_nowait((float(f[1]),
                                 float(f[2]) if len(f) > 2 else args.duration,
                                 f[3] if len(f) > 3 else first_schedule))
            elif f[:1] == ["stop"]:
                stop.set()

    try:
        loop.add_reader(sys.stdin.fileno(), on_stdin)
    except (PermissionError, ValueError, OSError):
        pass

    async def report() -> None:
        while True:
            if out:
                lines, out[:] = list(out), []
                sys.stdout.write("\n".join(lines) + "\n")
                sys.stdout.flush()
            await asyncio.sleep(0.1)

    reporter = asyncio.ensure_future(report())
    # the whole process is bounded by --hard (after it, it stops whatever it was told);
    # without --stay it stops after its one day
    hard = args.hard or (args.setup_timeout + args.duration + args.grace + 60)
    end = time.monotonic() + hard
    stop_at = [end]
    gate = asyncio.Semaphore(args.concurrency)
    tasks: list[asyncio.Future] = []

    async def one(d: Device) -> None:
        await d.setup(gate, out)
        await d.pings(out, stop_at)

    for d in devices.values():
        tasks.append(asyncio.ensure_future(guarded(d.i, one(d), out)))

    async def announce_setup() -> None:
        for _ in range(int(args.setup_timeout * 2)):
            sent = sum(1 for d in devices.values() if d.conn is not None)
            out.append(f"N {sent}")
            if sent >= len(devices):
                break
            await asyncio.sleep(0.5)
        out.append("D")

    tasks.append(asyncio.ensure_future(announce_setup()))

    async def run_days() -> None:
        for _day in range(1000):
            t0, duration, sched = await days.get()
            schedule = json.loads(Path(sched).read_text()) if sched else []
            day_end = t0 + duration + args.grace
            if not args.stay:
                stop_at[0] = min(end, day_end)
            for at, dev in sorted(schedule):
                wait = t0 + at - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if dev in devices:
                    tasks.append(asyncio.ensure_future(
                        guarded(dev, devices[dev].change(out), out)))
            await asyncio.sleep(max(0.0, day_end - time.monotonic()))
            out.append(f"F {time.monotonic():.6f}")      # this day is over
            if not args.stay:
                stop.set()
                return

    day_task = asyncio.ensure_future(run_days())
    try:
        await asyncio.wait_for(stop.wait(), max(0.0, end - time.monotonic()))
    except TimeoutError:
        out.append("E -1 hard-stop")
    day_task.cancel()
    await wind_up(tasks, reporter, out, 0.2)
    sys.stdout.write("END\n")
    sys.stdout.flush()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--fleet", required=True, help="JSON file written by bench_fleet.py")
    p.add_argument("--first", type=int, default=0)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--schedule", help="JSON [[seconds after go, device index], ...]")
    p.add_argument("--duration", type=float, default=600)
    p.add_argument("--grace", type=float, default=15)
    p.add_argument("--setup-timeout", type=float, default=1800)
    p.add_argument("--concurrency", type=int, default=50,
                   help="devices being set up at once")
    p.add_argument("--stay", action="store_true",
                   help="after a day, keep the devices pinging and wait for the next "
                        "'go T0 DURATION SCHEDULE' (or 'stop', stdin closing, --hard)")
    p.add_argument("--hard", type=float, default=0,
                   help="stop after this many seconds whatever happens (default: "
                        "setup timeout + duration + grace + 60)")
    asyncio.run(main(p.parse_args()))

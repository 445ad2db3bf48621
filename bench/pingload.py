"""Load generator for the Ping benchmarks: one process holding many Pings.

    python bench/pingload.py --port 8080 --users users.json --first 0 --count 9000 \
        --heartbeat 3000 [--concurrency 200]

Opens ``--count`` plain-TCP HTTP/1.1 connections to easync, one per user
``users[first + i]`` (device ``bench-<user>``), sends one Ping on each (body encoded
once per user with easync's codec), and keeps every connection open.  When a Ping is
answered it prints ``R <user index> <status> <time.monotonic()> <folders>``; after a
Status 1 (heartbeat) it sends the next Ping on the same connection, as a phone does,
and after anything else it closes the connection (a phone would Sync first).  ``S <n>`` lines report how many requests were sent,
``E <user index> <error>`` failures; ``D`` once every first Ping is out.  Stops
on SIGTERM or when stdin closes.

A process may open at most 20,000 files here, so a benchmark runs several of these.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from base64 import b64encode
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from easync.wbxml import E, decode, encode


def ping_request(host: str, user: str, password: str, folder_id: str, heartbeat: int) -> bytes:
    return eas_request(host, "Ping", user, password, f"bench{user}",
                       ping_body(folder_id, heartbeat))


def ping_body(folder_id: str, heartbeat: int) -> bytes:
    """A Ping on the Contacts folder ``folder_id``."""
    return encode(E("Ping:Ping", E("Ping:HeartbeatInterval", str(heartbeat)),
                    E("Ping:Folders", E("Ping:Folder", E("Ping:Id", folder_id),
                                        E("Ping:Class", "Contacts")))))


def eas_request(host: str, cmd: str, user: str, password: str, device: str,
                body: bytes) -> bytes:
    """The bytes of one EAS 14.1 POST of ``cmd`` from an iPhone, Basic auth."""
    auth = b64encode(f"{user}:{password}".encode()).decode()
    head = (f"POST /Microsoft-Server-ActiveSync?Cmd={cmd}&User={user}&DeviceId={device}"
            f"&DeviceType=iPhone HTTP/1.1\r\nHost: {host}\r\nAuthorization: Basic {auth}\r\n"
            "MS-ASProtocolVersion: 14.1\r\nUser-Agent: Apple-iPhone13C2/2003.68\r\n"
            "Content-Type: application/vnd.ms-sync.wbxml\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


def parse_status(body: bytes) -> tuple[str, list[str]]:
    if not body:
        return "-", []
    root = decode(body)
    folders = root.find("Ping:Folders")
    return (root.findtext("Ping:Status") or "-",
            [f.text or "" for f in folders.children] if folders is not None else [])


async def connect(i: int, host: str, port: int, local: tuple[str, int] | None,
                  out: list[str]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    """A connection for device ``i``, tried 20 times with a growing pause; None (and an
    ``E <i> connect`` line in ``out``) when every try failed."""
    for attempt in range(20):
        try:
            return await asyncio.open_connection(host, port, local_addr=local)
        except OSError as e:
            if attempt == 19:
                out.append(f"E {i} connect {e}")
                return None
            await asyncio.sleep(0.2 * (attempt + 1))
    return None


async def hold(i: int, request: bytes, host: str, port: int, gate: asyncio.Semaphore,
               out: list[str], sent: list[int], again: bool, source: str | None) -> None:
    local = (source, 0) if source else None
    async with gate:
        conn = await connect(i, host, port, local, out)
        if conn is None:
            return
        reader, writer = conn
        writer.write(request)
        sent[0] += 1
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            now = time.monotonic()
            length = 0
            retry_after = 5.0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
                elif line[:12].lower() == b"retry-after:":
                    retry_after = float(line[12:])
            body = await reader.readexactly(length) if length else b""
            code = head.split(b" ", 2)[1].decode()
            if code == "429":
                # Too many logins from this address being checked at once (the login
                # bound, README "Login throttling"): wait as told and ask again, as a
                # phone does.
                await asyncio.sleep(retry_after)
                writer.write(request)
                continue
            status, folders = parse_status(body) if code == "200" else (f"http{code}", [])
            out.append(f"R {i} {status} {now:.6f} {','.join(folders) or '-'}")
            if not again or status != "1":
                break
            writer.write(request)
    except (asyncio.IncompleteReadError, ConnectionError) as e:
        out.append(f"E {i} closed {type(e).__name__}")
    finally:
        writer.close()


def source_of(i: int, args: argparse.Namespace) -> str | None:
    """The local address connection ``i`` comes from: ``--source-net A.B`` gives every
    device an address of its own (A.B.x.y), as phones on the Internet have; the server
    bounds logins checked at once per address (README "Login throttling")."""
    if args.source_net:
        return f"{args.source_net}.{i // 250 % 250}.{1 + i % 250}"
    return args.source


# -- the plumbing of a load-generator process (bench_fanout's and fleetload's too) ------

def stop_when_told(stop: asyncio.Event, sigint: bool = True) -> None:
    """Set ``stop`` on SIGTERM (and SIGINT) and when stdin, a pipe from the benchmark,
    closes: its end stops this process too."""
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    if sigint:
        loop.add_signal_handler(signal.SIGINT, stop.set)
    try:
        loop.add_reader(sys.stdin.fileno(), lambda: sys.stdin.buffer.read1(65536) or stop.set())
    except (PermissionError, ValueError, OSError):
        pass    # not a pipe (/dev/null, a file)


async def report(out: list[str], sent: list[int], done_at: int | None = None) -> None:
    """Every 50 ms: the lines in ``out``, ``S <sent>`` when it changed, and ``D`` once
    ``sent`` reaches ``done_at``."""
    last = -1
    done_said = False
    while True:
        if out:
            lines, out[:] = list(out), []
            sys.stdout.write("\n".join(lines) + "\n")
        if sent[0] != last:
            last = sent[0]
            sys.stdout.write(f"S {last}\n")
        if done_at is not None and not done_said and sent[0] >= done_at:
            sys.stdout.write("D\n")
            done_said = True
        sys.stdout.flush()
        await asyncio.sleep(0.05)


async def wind_up(tasks: Sequence[asyncio.Future[Any]], reporter: asyncio.Future[Any],
                  out: list[str], pause: float) -> None:
    """Cancel ``tasks``, give them ``pause`` seconds, stop ``reporter`` and write what
    is left in ``out``."""
    for t in tasks:
        t.cancel()
    await asyncio.sleep(pause)
    reporter.cancel()
    if out:
        sys.stdout.write("\n".join(out) + "\n")
    sys.stdout.flush()


async def main(args: argparse.Namespace) -> None:
    users = json.loads(Path(args.users).read_text())
    names: list[str] = users["names"]
    folders: list[str] = users["contacts"]
    password: str = users["password"]
    gate = asyncio.Semaphore(args.concurrency)
    out: list[str] = []
    sent = [0]
    stop = asyncio.Event()
    stop_when_told(stop)
    tasks = []
    for i in range(args.first, args.first + args.count):
        req = ping_request(f"{args.host}:{args.port}", names[i], password, folders[i],
                           args.heartbeat)
        tasks.append(asyncio.ensure_future(
            hold(i, req, args.host, args.port, gate, out, sent, not args.once,
                 source_of(i, args))))

    reporter = asyncio.ensure_future(report(out, sent, done_at=args.count))
    await stop.wait()
    await wind_up(tasks, reporter, out, 0.1)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--users", required=True, help="JSON file written by bench_pings.py")
    p.add_argument("--first", type=int, default=0)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--heartbeat", type=int, default=3000)
    p.add_argument("--concurrency", type=int, default=200,
                   help="connections being opened at once")
    p.add_argument("--once", action="store_true", help="one Ping per connection, no repeat")
    p.add_argument("--source-net", help="A.B: connection i comes from A.B.(i/250).(1+i%%250) "
                   "(loopback: any 127.x.y.z can be bound on Linux)")
    p.add_argument("--source", help="local address to connect from, e.g. 127.0.0.7: one "
                   "source address has ~28,000 ports towards one server port")
    asyncio.run(main(p.parse_args()))

"""The request log line and the Ping Status 2 answer in isolation (issue #12 point 1).

    python bench/bench_logline.py [--lines 20000]

CPU time (``time.process_time``) per line of 20,000 request lines through
``Logger.emit`` into a ``twisted.python.logfile.LogFile`` (unbuffered, as twistd opens
it): twistd's ``textFileLogObserver`` against ``easync.logfile.TurnLogObserver`` with
200 lines per reactor turn (as in a fan-out slice); and per Ping Status 2 answer, the
element tree plus the WBXML encoder against the ready-made bytes (``ping._changed``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def per_line(observer: Any, lines: int, per_turn: int | None) -> float:
    from twisted.logger import Logger, LogLevel

    log = Logger(namespace="easync.request", observer=observer)
    t0 = time.process_time()
    for i in range(lines):
        log.emit(LogLevel.info, f"user fan{i} Ping http=200 status=2 0.4ms 127.0.{i % 250}.1",
                 user="user", device=f"fan{i}", cmd="Ping", code=200, status="2", ms=0.4,
                 sizes="", addr="127.0.0.1", note="")
        if per_turn and i % per_turn == per_turn - 1:
            observer.flush()            # the end of a reactor turn
    if per_turn:
        observer.flush()
    return (time.process_time() - t0) / lines * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lines", type=int, default=20000)
    args = p.parse_args()
    from twisted.internet import reactor
    from twisted.logger import textFileLogObserver
    from twisted.python.logfile import LogFile

    from easync.commands.ping import _changed, _status
    from easync.logfile import TurnLogObserver
    from easync.wbxml import encode

    # buffering as in a running reactor; the turn's end is the explicit flush
    reactor.running = True              # type: ignore[attr-defined]
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(2):
            twistd = textFileLogObserver(LogFile.fromFullPath(os.path.join(tmp, f"t{k}.log")))
            ours = TurnLogObserver(LogFile.fromFullPath(os.path.join(tmp, f"e{k}.log")))
            print(f"log line: twistd's observer {per_line(twistd, args.lines, None):.2f} µs, "
                  f"TurnLogObserver {per_line(ours, args.lines, 200):.2f} µs (CPU per line)")
    reactor.running = False             # type: ignore[attr-defined]
    n = 20000
    t0 = time.process_time()
    for _ in range(n):
        encode(_status("2", folders=["abc"]).body)
    a = (time.process_time() - t0) / n * 1e6
    t0 = time.process_time()
    for _ in range(n):
        _changed(["abc"])
    b = (time.process_time() - t0) / n * 1e6
    print(f"Ping Status 2: tree + encoder {a:.2f} µs, ready-made {b:.2f} µs (CPU per answer)")
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

"""``easync-admin import`` of a large vCard file: time and peak memory.

    python bench/bench_import.py [--count 100000] [--keep DIR]

Writes a vCard 3.0 file of ``--count`` real-shaped contacts (``tests/vcardgen.py``),
creates a fresh SQLite database with
one user, and runs ``easync-admin import`` under ``/usr/bin/time -v``.  Prints the
wall time, the peak RSS (maximum resident set size) and the import's summary line.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from vcardgen import write_vcards


def admin(db: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "easync.admin", "--db", db, *args]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=100_000)
    p.add_argument("--keep", metavar="DIR", help="work in DIR and keep it")
    args = p.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="easync-bench-import-"))
    work.mkdir(parents=True, exist_ok=True)
    vcf = work / f"contacts-{args.count}.vcf"
    if not vcf.exists():
        write_vcards(vcf, args.count)
    db_file = work / "bench.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db_file}{suffix}").unlink(missing_ok=True)
    db = f"sqlite:///{db_file}"
    env = dict(os.environ, EASYNC_BCRYPT_ROUNDS="4",
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    subprocess.run(admin(db, "user", "add", "bench", "--password-stdin"), input="x\n",
                   text=True, env=env, check=True, capture_output=True)
    res = subprocess.run(["/usr/bin/time", "-v", *admin(db, "import", "bench", str(vcf))],
                         text=True, env=env, capture_output=True, check=False)
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", res.stderr)
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", res.stderr)
    cpu = sum(float(m) for m in re.findall(r"(?:User|System) time \(seconds\): (\S+)",
                                            res.stderr))
    print(f"contacts: {args.count}  file: {vcf.stat().st_size / 1e6:.1f} MB")
    print(f"exit: {res.returncode}  wall: {wall.group(1) if wall else '?'}  "
          f"CPU (user+sys): {cpu:.1f} s  "
          f"peak RSS: {int(peak.group(1)) / 1024:.0f} MiB" if peak else "peak RSS: ?")
    print(res.stdout.strip().splitlines()[0] if res.stdout.strip() else res.stderr[-2000:])
    print(f"load average: {os.getloadavg()}")


if __name__ == "__main__":
    main()

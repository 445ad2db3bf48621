"""``python -m easync.locale update|compile|check``: see ``easync.locale``."""

from __future__ import annotations

import sys

from easync import locale


def main(argv: list[str]) -> int:
    step = argv[0] if argv else ""
    if step == "update":
        locale.update()
    elif step == "compile":
        locale.compile_all()
    elif step == "check":
        problems = locale.check()
        for line in problems:
            print(line)
        return 1 if problems else 0
    else:
        print("usage: python -m easync.locale update|compile|check", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

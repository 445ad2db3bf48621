"""mypy over the tree, with mypy-zope, as part of the test suite (issue 11 point 7).

Runs ``python -m mypy --config-file setup.cfg`` from the repository root in a
subprocess: the ``[mypy]`` section of setup.cfg says what is checked (``easync``,
``backends`` and the twistd plugin) and loads the ``mypy_zope`` plugin, so a class that
says it implements an interface of ``easync.interfaces`` and does not is an error.  No
skip: mypy and mypy-zope are in the ``test`` extras the README's test command installs.

The tree is not clean yet; ``ALLOWANCE`` holds today's error count of each file that still
has errors.  A file fails the suite when it has more errors than allowed (a file not listed
is allowed none) and also when it has fewer: lower (or delete) its entry in the change that
fixes them, so the dict stays exact and only shrinks, to empty.
"""

from __future__ import annotations

import configparser
import os
import re
import subprocess
import sys
import textwrap
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: file -> the number of mypy errors it may have (today's, see the module docstring).
#: Files with no entry must have none.
ALLOWANCE: dict[str, int] = {
}

_ERROR = re.compile(r"^(?P<path>[^:\n]+?):(?P<line>\d+)(?::\d+)?: error: (?P<message>.*)$",
                    re.MULTILINE)


@dataclass
class MypyRun:
    returncode: int
    output: str

    def errors(self) -> list[tuple[str, str]]:
        """(file relative to the root with / separators, the error line)."""
        return [(Path(m["path"]).as_posix(), m[0]) for m in _ERROR.finditer(self.output)]


def run_mypy(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> MypyRun:
    try:
        import mypy  # noqa: F401
        import mypy_zope  # noqa: F401
    except ImportError as e:                  # a failure, not a skip: CI must run it
        pytest.fail(f"mypy and mypy-zope are needed (pip install '.[test]'): {e}")
    res = subprocess.run([sys.executable, "-m", "mypy", "--config-file",
                          str(ROOT / "setup.cfg"), "--no-color-output", *args],
                         cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
                         check=False)
    output = res.stdout + res.stderr
    # 0: clean, 1: errors reported; anything else (2: a bad config, a plugin that cannot
    # be loaded, a crash) is not a type check at all
    assert res.returncode in (0, 1), output
    run = MypyRun(res.returncode, output)
    assert (res.returncode == 1) == bool(run.errors()), output
    return run


@pytest.fixture(scope="module")
def tree() -> MypyRun:
    return run_mypy()


def test_setup_cfg_checks_the_tree_with_mypy_zope() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    assert "mypy_zope:plugin" in cfg["mypy"]["plugins"]
    files = {f.strip() for f in cfg["mypy"]["files"].split(",")}
    assert files >= {"easync", "backends", "twisted/plugins"}


def test_no_file_has_more_errors_than_allowed(tree: MypyRun) -> None:
    counts = Counter(path for path, _line in tree.errors())
    over = {path: n for path, n in counts.items() if n > ALLOWANCE.get(path, 0)}
    lines = [line for path, line in tree.errors() if path in over]
    assert not over, (
        "mypy errors beyond tests/test_typecheck.py ALLOWANCE "
        "(file: found > allowed): "
        + ", ".join(f"{p}: {n} > {ALLOWANCE.get(p, 0)}" for p, n in sorted(over.items()))
        + "\n" + "\n".join(lines))


def test_allowance_is_exact(tree: MypyRun) -> None:
    """Errors fixed: lower the file's ALLOWANCE (delete it at 0) in the same change."""
    counts = Counter(path for path, _line in tree.errors())
    under = {path: (counts.get(path, 0), n) for path, n in ALLOWANCE.items()
             if counts.get(path, 0) < n}
    assert not under, "lower ALLOWANCE in tests/test_typecheck.py (file: found < allowed): " \
        + ", ".join(f"{p}: {found} < {n}" for p, (found, n) in sorted(under.items()))
    assert all(n > 0 for n in ALLOWANCE.values()), "delete the entries at 0"


def test_allowance_names_files_of_the_tree() -> None:
    missing = [p for p in ALLOWANCE if not (ROOT / p).is_file()]
    assert not missing, f"ALLOWANCE names files that are gone: {missing}"


def test_mypy_zope_holds_implementations_to_their_interface(tmp_path: Path) -> None:
    """The check can fail, and the interfaces mean something to it: a class that says it
    provides IChangeNotifier but lacks ``listen``, ``publish`` and ``waiting`` is an error, and so is a
    call against the interface with the wrong types."""
    bad = tmp_path / "half_notifier.py"
    bad.write_text(textwrap.dedent('''\
        from zope.interface import implementer

        from easync.interfaces import IChangeNotifier


        @implementer(IChangeNotifier)
        class Half:
            def unlisten(self, user_id: int, listener: object) -> None:
                return None


        def use(notifier: IChangeNotifier) -> None:
            notifier.publish("not a user id", 3)
        '''))
    env = {**os.environ, "MYPYPATH": str(ROOT)}
    run = run_mypy("--cache-dir", str(tmp_path / "cache"), str(bad), cwd=tmp_path, env=env)
    text = "\n".join(line for _path, line in run.errors())
    assert run.returncode == 1, run.output
    assert "missing following 'IChangeNotifier' interface members: listen, publish, waiting" in text
    assert 'Argument 1 to "publish" of "IChangeNotifier" has incompatible type "str"' in text
    assert {path for path, _line in run.errors()} == {bad.name}, run.output

"""The account package's shape: imports go one way (no cycle, not even one hidden in a
function or behind TYPE_CHECKING), and one error type is mapped to HTTP in one place."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "easync" / "account"


def imports_of(path: Path, package: str = "easync.account") -> set[str]:
    """The modules of ``package`` that ``path`` imports, anywhere in the file."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == package:
                found.update(f"{package}.{a.name}" for a in node.names)
            elif node.module.startswith(package + "."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith(package + "."))
    return found


def cycles(package_dir: Path) -> list[list[str]]:
    modules = {f"easync.account.{p.stem}": p for p in package_dir.glob("*.py")
               if p.stem != "__init__"}
    graph = {m: imports_of(p) & set(modules) for m, p in modules.items()}
    found: list[list[str]] = []

    def walk(node: str, path: list[str]) -> None:
        for nxt in sorted(graph[node]):
            if nxt in path:
                found.append(path[path.index(nxt):] + [nxt])
            elif len(path) < len(graph):
                walk(nxt, path + [nxt])

    for start in sorted(graph):
        walk(start, [start])
    return found


def test_the_account_package_has_no_import_cycle() -> None:
    assert cycles(PACKAGE) == []


def test_the_cycle_finder_finds_one(tmp_path: Path) -> None:
    (tmp_path / "web.py").write_text("from easync.account import pages\n")
    (tmp_path / "pages.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
        "    from easync.account.web import X\n")
    assert cycles(tmp_path) != []


@pytest.mark.parametrize("name", ["Refused", "BadRequest", "refused_status"])
def test_one_error_vocabulary(name: str) -> None:
    """The page's own refusal types are gone: every refusal is an AccountError."""
    for path in PACKAGE.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        defined = {n.name for n in ast.walk(tree)
                   if isinstance(n, (ast.ClassDef, ast.FunctionDef))}
        assert name not in defined, path


def test_refusals_map_to_http_in_one_place() -> None:
    from easync.account.request import refusal
    from easync.auth import accounts as acc

    assert refusal(acc.BadPassword("wrong user name or password")) == (403, {})
    assert refusal(acc.AccountError("Log in first.", "login")) == (401, {})
    assert refusal(acc.AccountError("There is no such device.", "no_device")) == (404, {})
    assert refusal(acc.Mismatch("the two passwords differ")) == (400, {})
    assert refusal(acc.AccountError("The body is not valid JSON.", "bad_request")) == (400, {})
    assert refusal(acc.AccountLockedOut("locked", 12.2)) == (429, {b"Retry-After": b"13"})
    assert refusal(acc.TooManyAttempts("spent")) == (400, {})   # no time given: no 429

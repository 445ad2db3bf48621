"""The architecture, checked: imports that cross a forbidden seam fail here (issue 11 point 7).

DESIGN.md draws the seams: the protocol never imports a backend, a backend never
imports a command (nor the HTTP front or the account pages), the WBXML codec knows
nothing above it, the sync engine works on plain data (the command parses and renders
WBXML), another backend reaches the SQL store only through its public API, and the twistd
plugin imports nothing of easync at plugin-scan time.

Every module under ``easync/``, ``backends/`` and ``twisted/plugins/`` is parsed (not
imported) and every import in it is looked at: module level, inside functions, under
``TYPE_CHECKING``, relative ones, and ``import_module``/``__import__`` calls whose
module name is a literal (or an f-string with a literal head).

``KNOWN`` lists the violations the tree still has, each with the issue-11 point that
removes it.  The suite fails on a violation not in ``KNOWN`` and on an entry of ``KNOWN``
that no longer occurs: delete the entry in the change that removes the violation, so the
list only shrinks, to empty.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ("easync", "backends", "twisted/plugins")

#: The modules of the protocol package that may import ``backends``: the composition
#: roots, which pick and build the configured backend.  Keep it short; a reason each.
COMPOSITION_ROOTS: dict[str, str] = {
    "easync.tap": "twistd's makeService: builds the configured store, change hub and "
                  "checkers from the options",
    "easync.admin": "the easync-admin command line: opens the SQL store it administers",
    "easync.workers": "the --workers supervisor: each worker runs the service easync.tap "
                      "wires",
}

#: The sync engine: ``easync.syncengine`` and whatever modules it is split into.  Also
#: counted (see ``is_engine``): every ``easync.sync*`` module or package (its typed data,
#: its state) and every easync module with "engine" in a part of its dotted name; name
#: here any engine module whose name says neither.
ENGINE_MODULES: tuple[str, ...] = ("easync.syncengine",)

#: Names under which another backend holds the SQL store (``sql._x`` is a private of it).
SQL_STORE_NAMES = ("db", "database")          # plus every name containing "sql"

RULES: dict[str, str] = {
    "protocol-imports-backend":
        "the protocol (easync) never imports a backend; only the composition roots "
        "(COMPOSITION_ROOTS) do",
    "backend-imports-front":
        "a backend never imports a command, the HTTP front or the account pages "
        "(easync.commands, easync.http, easync.account)",
    "wbxml-imports-upper":
        "the WBXML codec (easync.wbxml) imports nothing above it "
        "(easync.commands, easync.items, easync.http, easync.auth)",
    "engine-imports-wbxml":
        "the sync engine works on plain data: it never imports easync.wbxml or "
        "easync.commands (the command parses and renders)",
    "crm-uses-sql-private":
        "backends.crm reaches the SQL store only through its public API "
        "(no sql._name, no private name imported from backends.sql)",
    "plugin-imports-project":
        "the twistd plugin names easync.tap as a string and imports nothing of easync "
        "or backends (Twisted imports every plugin on every twistd run)",
}

#: Violations in the tree today -> the point of issue 11 that removes them (and who).
#: (rule, module, what it imports or the attribute it uses)
KNOWN: dict[tuple[str, str, str], str] = {
}


@dataclass(frozen=True)
class Violation:
    rule: str
    module: str
    detail: str                                  # the module imported, or the attribute
    line: int = field(default=0, compare=False)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.rule, self.module, self.detail)

    def __str__(self) -> str:
        return f"{self.module}:{self.line}: {self.detail} [{self.rule}: {RULES[self.rule]}]"


# ------------------------------------------------------------------ the checker

def _within(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def is_engine(module: str) -> bool:
    """True for a module of the sync engine (see ``ENGINE_MODULES``)."""
    parts = module.split(".")
    return _within(module, *ENGINE_MODULES) or (parts[0] == "easync" and len(parts) > 1 and (
        parts[1].startswith("sync") or any("engine" in part for part in parts)))


def _resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    """The absolute name of a relative import ``from <level dots><target> import``."""
    base = module.split(".") if is_package else module.split(".")[:-1]
    if level > 1:
        base = base[:-(level - 1)]
    return ".".join([*base, target] if target else base)


def _literal_head(node: ast.expr) -> str | None:
    """The module a dynamic import names: a literal, or an f-string's literal head
    (``f"easync.commands.{name}"`` -> ``easync.commands``)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and node.values:
        head = node.values[0]
        if isinstance(head, ast.Constant) and isinstance(head.value, str):
            return head.value.rstrip(".") or None
    return None


def imports_of(tree: ast.AST, module: str,
               is_package: bool) -> Iterator[tuple[str, str | None, int]]:
    """Every import in ``tree``: (module, name imported from it or None, line).
    ``import a.b`` gives ``("a.b", None)``, ``from a import b`` gives ``("a", "b")``
    (``b`` may be a submodule), a literal ``import_module("a.b")`` ``("a.b", None)``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = _resolve(module, is_package, node.level, node.module)
            for alias in node.names:
                yield base, (None if alias.name == "*" else alias.name), node.lineno
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.id if isinstance(func, ast.Name) else (
                func.attr if isinstance(func, ast.Attribute) else "")
            if name in ("import_module", "__import__"):
                target = _literal_head(node.args[0])
                if target:
                    yield target, None, node.lineno


def _forbidden_module(base: str, name: str | None, forbidden: tuple[str, ...]) -> str | None:
    """The forbidden module an import names: the statement's module when it is inside
    ``forbidden`` (``from easync.wbxml.element import E`` -> ``easync.wbxml.element``),
    else the module it imports a submodule from (``from easync import wbxml`` ->
    ``easync.wbxml``); None when the import is allowed."""
    if _within(base, *forbidden):
        return base
    if name is not None and _within(f"{base}.{name}", *forbidden):
        return f"{base}.{name}"
    return None


def _import_rules(module: str) -> list[tuple[str, tuple[str, ...]]]:
    """The (rule, forbidden module prefixes) that apply to ``module``."""
    rules: list[tuple[str, tuple[str, ...]]] = []
    if _within(module, "easync") and module not in COMPOSITION_ROOTS:
        rules.append(("protocol-imports-backend", ("backends",)))
    if _within(module, "backends"):
        rules.append(("backend-imports-front",
                      ("easync.commands", "easync.http", "easync.account")))
    if _within(module, "easync.wbxml"):
        rules.append(("wbxml-imports-upper",
                      ("easync.commands", "easync.items", "easync.http", "easync.auth")))
    if is_engine(module):
        rules.append(("engine-imports-wbxml", ("easync.wbxml", "easync.commands")))
    if _within(module, "twisted.plugins"):
        rules.append(("plugin-imports-project", ("easync", "backends")))
    return rules


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _holds_sql_store(node: ast.expr) -> bool:
    name = node.id if isinstance(node, ast.Name) else (
        node.attr if isinstance(node, ast.Attribute) else "")
    return "sql" in name.lower() or name in SQL_STORE_NAMES


def _sql_privates(tree: ast.AST, module: str,
                  is_package: bool) -> Iterator[tuple[str, int]]:
    """``sql._name`` attribute uses and private names imported from backends.sql."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _is_private(node.attr) \
                and _holds_sql_store(node.value):
            yield ast.unparse(node), node.lineno
    for base, name, line in imports_of(tree, module, is_package):
        if _within(base, "backends.sql"):
            if name is not None and _is_private(name):
                yield f"{base}.{name}", line
            elif any(_is_private(part) for part in base.split(".")):
                yield base, line


def check_source(module: str, source: str, is_package: bool = False) -> set[Violation]:
    """The violations in ``source``, the text of module ``module``."""
    tree = ast.parse(source)
    found: set[Violation] = set()
    rules = _import_rules(module)
    for base, name, line in imports_of(tree, module, is_package):
        for rule, forbidden in rules:
            hit = _forbidden_module(base, name, forbidden)
            if hit is not None:
                found.add(Violation(rule, module, hit, line))
    if _within(module, "backends.crm"):
        for detail, line in _sql_privates(tree, module, is_package):
            found.add(Violation("crm-uses-sql-private", module, detail, line))
    return found


def modules() -> Iterator[tuple[str, Path, bool]]:
    """(dotted name, file, is a package) for every module scanned."""
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts = parts[:-1]
            yield ".".join(parts), path, is_package


def check_tree() -> set[Violation]:
    found: set[Violation] = set()
    for module, path, is_package in modules():
        found |= check_source(module, path.read_text(encoding="utf-8"), is_package)
    return found


# ------------------------------------------------------------------ the tree

def test_no_new_violation() -> None:
    new = sorted((v for v in check_tree() if v.key not in KNOWN), key=str)
    assert not new, "forbidden imports (see DESIGN.md):\n" + "\n".join(map(str, new))


def test_known_violations_still_occur() -> None:
    """An entry of KNOWN whose violation is gone must go too: the list only shrinks."""
    found = {v.key for v in check_tree()}
    stale = sorted(k for k in KNOWN if k not in found)
    assert not stale, ("fixed, now delete from KNOWN in tests/test_architecture.py:\n"
                       + "\n".join(map(str, stale)))


def test_the_lists_name_real_modules() -> None:
    """The composition roots and engine modules named exist, and the engine is found
    (a rule about a module that is gone would check nothing)."""
    names = {module for module, _path, _pkg in modules()}
    assert set(COMPOSITION_ROOTS) <= names, set(COMPOSITION_ROOTS) - names
    assert set(ENGINE_MODULES) <= names, set(ENGINE_MODULES) - names
    assert any(is_engine(n) for n in names)
    assert all(rule in RULES for rule, _module, _detail in KNOWN)
    assert "twisted.plugins.easync_plugin" in names


def test_the_whole_tree_is_scanned() -> None:
    """The three places are walked (a wrong root would make every rule pass)."""
    tops = {module.split(".")[0] for module, _path, _pkg in modules()}
    assert tops == {"easync", "backends", "twisted"}
    assert len(list(modules())) > 50


# ------------------------------------------------------------------ each rule can fail

FAILING = [
    # (module, is a package, source, rule, detail)
    ("easync.items.contact", False,
     "def f():\n    from backends.sql.store import SqlStore\n",
     "protocol-imports-backend", "backends.sql.store"),
    ("easync.http.resource", False, "import backends.crm\n",
     "protocol-imports-backend", "backends.crm"),
    ("easync.http.resource", False,
     "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from backends import sql\n",
     "protocol-imports-backend", "backends"),
    ("easync.handler", False, "import importlib\nimportlib.import_module('backends.crm')\n",
     "protocol-imports-backend", "backends.crm"),
    ("backends.sql.store", False, "from easync.commands.sync import handle\n",
     "backend-imports-front", "easync.commands.sync"),
    ("backends.crm.store", False, "from easync.http import resource\n",
     "backend-imports-front", "easync.http"),
    ("backends.crm", True, "from ..sql import x\nfrom easync.account.web import y\n",
     "backend-imports-front", "easync.account.web"),
    ("easync.wbxml.codec", False, "from ..commands import sync\n",
     "wbxml-imports-upper", "easync.commands"),
    ("easync.wbxml", True, "from ..items import convert\n",
     "wbxml-imports-upper", "easync.items"),
    ("easync.wbxml.element", False, "from easync import auth\n",
     "wbxml-imports-upper", "easync.auth"),
    ("easync.syncengine", False, "def f():\n    import easync.wbxml.codec as c\n",
     "engine-imports-wbxml", "easync.wbxml.codec"),
    ("easync.syncengine", False, "from easync.wbxml.element import E, Element\n",
     "engine-imports-wbxml", "easync.wbxml.element"),
    ("easync.sync.engine", False, "from easync.commands import sync\n",
     "engine-imports-wbxml", "easync.commands"),
    ("easync.synctypes", False, "from easync.wbxml import Element\n",
     "engine-imports-wbxml", "easync.wbxml"),
    ("easync.commands.sync_engine", False,
     "from importlib import import_module\nimport_module(f'easync.wbxml.{n}')\n",
     "engine-imports-wbxml", "easync.wbxml"),
    ("backends.crm.mirror", False, "def f(sql, cur):\n    sql._apply(cur)\n",
     "crm-uses-sql-private", "sql._apply"),
    ("backends.crm.store", False, "class S:\n    def f(self):\n        self.db._run()\n",
     "crm-uses-sql-private", "self.db._run"),
    ("backends.crm.store", False, "from backends.sql.store import _apply\n",
     "crm-uses-sql-private", "backends.sql.store._apply"),
    ("backends.crm.mirror", False, "from ..sql._items import apply\n",
     "crm-uses-sql-private", "backends.sql._items"),
    ("backends.crm.mirror", False, "def f(self):\n    return self._sql._run()\n",
     "crm-uses-sql-private", "self._sql._run"),
    ("twisted.plugins.easync_plugin", False, "from easync import tap\n",
     "plugin-imports-project", "easync"),
]


@pytest.mark.parametrize(("module", "is_package", "source", "rule", "detail"), FAILING,
                         ids=[f"{r}:{m}:{d}" for m, _p, _s, r, d in FAILING])
def test_each_rule_can_fail(module: str, is_package: bool, source: str, rule: str,
                            detail: str) -> None:
    found = check_source(module, source, is_package)
    assert (rule, module, detail) in {v.key for v in found}, found


ALLOWED = [
    # what the rules must not catch
    ("easync.tap", "from backends.sql.store import SqlStore\n"),
    ("easync.admin", "def f():\n    from backends.sql.authstore import SqlAuthStore\n"),
    ("backends.crm.checker", "from easync.auth.local import HandsOverUser\n"),
    ("backends.sql.store", "from easync.model import Op\nfrom easync.wbxml import E\n"),
    ("easync.wbxml.codec", "from easync.wbxml.codepages import TOKENS\nfrom . import element\n"),
    ("easync.commands.sync", "from easync.wbxml import E\nfrom easync.syncengine import x\n"),
    ("easync.items.fastpath", "from easync.wbxml.codec import fragment\n"),
    ("easync.syncengine", "from easync.items import index_fields\nfrom easync.model import Op\n"),
    ("easync.http.resource", "import importlib\nimportlib.import_module(f'easync.commands.{c}')\n"),
    ("backends.crm.mirror", ("def f(self, sql):\n    self._x()\n    sql.apply()\n"
                             "    sql.__class__\n    other._private\n")),
    ("backends.crm.store", "from backends.sql.store import SqlStore\n"),
    ("twisted.plugins.easync_plugin",
     ("from twisted.application.service import ServiceMaker\n"
      "easync = ServiceMaker('easync', 'easync.tap', 'd', 'easync')\n")),
]


@pytest.mark.parametrize(("module", "source"), ALLOWED,
                         ids=[m for m, _s in ALLOWED])
def test_allowed_imports_pass(module: str, source: str) -> None:
    assert check_source(module, source) == set()

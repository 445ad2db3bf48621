"""What the suite needs from the machine, and what a test does when a part is missing.

A test that needs a tool or a service this machine lacks says so with
:func:`require` (inside a test or a fixture) or :func:`mark` (a test, a class, a
module's ``pytestmark``: evaluated before any fixture is set up, by the hook in
``tests/conftest.py``), with a reason that says what is missing and how to get it:

* on a developer's machine the test is **skipped** with that reason;
* with ``CI=true`` (``.ci/run``, and most CI services) it **fails** with it: CI
  installs everything (README "Quick start"), so a missing part there is a broken CI,
  not a test that does not apply (issue 13).

The reasons come from the functions here (:func:`libwbxml`, :func:`chromium`,
:func:`linux`) and, for the services the tests start or connect to, from the helper
that knows them: ``ldapserver.missing()`` (slapd) and ``pgtest.unreachable()``
(PostgreSQL at ``$EASYNC_TEST_PG``).  Python packages of the ``[test]`` extras are
imported with :func:`importable`.

A test that does not apply to a parameter (a feature only one store has) is not one
of these: it is not generated at all (parametrize only what applies).
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
from types import ModuleType

import pytest


def in_ci() -> bool:
    """Is this a CI run (``CI=true``, or ``1``/``yes``)?"""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def require(reason: str | None) -> None:
    """Nothing when ``reason`` is None (nothing is missing); otherwise skip the running
    test with ``reason``, or with ``CI=true`` fail it."""
    if reason is None:
        return
    if in_ci():
        pytest.fail(f"{reason} (CI=true: every test must run here)", pytrace=False)
    pytest.skip(reason)


def mark(reason: str | None) -> pytest.MarkDecorator:
    """A mark with which the test(s) it decorates :func:`require` ``reason`` before
    their fixtures are set up (``pytestmark = needs.mark(needs.libwbxml())``)."""
    return pytest.mark.needs(reason)


def importable(name: str) -> ModuleType:
    """The module ``name`` (a package of the ``[test]`` extras); when it is missing, a
    skip with the reason, or with ``CI=true`` the ImportError itself (at a module's top:
    a collection error, which fails the run)."""
    if in_ci():
        return importlib.import_module(name)
    return pytest.importorskip(
        name, reason=f"{name} is not installed (pip install '.[test]' brings it)")


def libwbxml() -> str | None:
    """Why the libwbxml tools cannot run here (None: they can)."""
    if shutil.which("xml2wbxml") and shutil.which("wbxml2xml"):
        return None
    return ("libwbxml tools (xml2wbxml, wbxml2xml) not installed: "
            "apt-get install libwbxml2-utils")


def chromium() -> str | None:
    """Why the account page's browser test cannot drive a browser here."""
    if (shutil.which("chromium") or shutil.which("chromium-browser")) and \
            shutil.which("chromedriver"):
        return None
    return ("Debian's chromium and chromium-driver are not installed: "
            "apt-get install chromium chromium-driver")


def tool(name: str, package: str) -> str | None:
    """Why the system tool ``name`` (Debian package ``package``) cannot run here; also
    looked for in /usr/sbin and /sbin, which a non-root PATH may lack."""
    if shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin"):
        return None
    return f"{name} not installed: apt-get install {package}"


def linux() -> str | None:
    """Why a test of Linux's own interfaces (/proc, epoll, glibc) cannot run here."""
    if sys.platform.startswith("linux"):
        return None
    return f"Linux only (/proc, epoll, glibc), not {sys.platform}"


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before the fixtures of ``item``: :func:`require` what its ``needs`` marks say."""
    for m in item.iter_markers("needs"):
        require(m.args[0] if m.args else None)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "needs(reason): the test needs a tool or service, missing when reason "
        "is not None: a skip, or with CI=true a failure (tests/needs.py)")

"""tests/needs.py: what the suite needs from the machine, and what a missing part does.

On a developer's machine a test whose tool or service is missing is skipped, with the
reason and how to get it; with ``CI=true`` (``.ci/run``) the same test fails with that
reason (issue 13 point 1: CI must not look green with parts of the suite not run).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import ldapserver
import needs
import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def test_nothing_missing_is_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    assert needs.require(None) is None


def test_missing_is_a_skip_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="frobnicator not installed"):
        needs.require("frobnicator not installed")
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception):
        needs.require("frobnicator not installed")


@pytest.mark.parametrize("value", ["true", "TRUE", "1"])
def test_missing_is_a_failure_in_ci(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.fail.Exception, match="frobnicator not installed.*CI"):
        needs.require("frobnicator not installed")


def test_libwbxml_reason_names_the_debian_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(needs.shutil, "which", lambda name: None)
    reason = needs.libwbxml()
    assert reason is not None and "libwbxml2-utils" in reason and "xml2wbxml" in reason
    monkeypatch.setattr(needs.shutil, "which",
                        lambda name: None if name == "wbxml2xml" else f"/usr/bin/{name}")
    assert needs.libwbxml() is not None
    monkeypatch.setattr(needs.shutil, "which", lambda name: f"/usr/bin/{name}")
    assert needs.libwbxml() is None


def test_chromium_reason_names_both_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(needs.shutil, "which",
                        lambda name: None if name == "chromedriver" else f"/usr/bin/{name}")
    reason = needs.chromium()
    assert reason is not None and "chromium-driver" in reason
    monkeypatch.setattr(needs.shutil, "which", lambda name: f"/usr/bin/{name}")
    assert needs.chromium() is None


def test_a_python_module_of_the_test_extras(monkeypatch: pytest.MonkeyPatch) -> None:
    assert needs.importable("json") is sys.modules["json"]
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"no_such_module_x.*\[test\]"):
        needs.importable("no_such_module_x")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(ImportError):           # at a module's top: a collection error
        needs.importable("no_such_module_x")


SAMPLE = '''
import needs
import pytest

pytestmark = needs.mark("frobnicator not installed (apt-get install frob)")


@pytest.fixture(scope="module")
def costly():
    raise AssertionError("the fixture of a test that cannot run was set up")


def test_marked(costly):
    pass
'''


def run_sample(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    (tmp_path / "conftest.py").write_text((HERE / "conftest.py").read_text())
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p",
                           "no:cacheprovider", "-c", os.devnull, "--rootdir", str(tmp_path),
                           "test_sample.py"],
                          check=False, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60)


def test_the_mark_skips_before_the_fixtures_outside_ci(tmp_path: Path) -> None:
    run = run_sample(tmp_path, None)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 skipped" in run.stdout and "frobnicator not installed" in run.stdout
    assert "fixture of a test that cannot run" not in run.stdout


def test_the_mark_fails_in_ci(tmp_path: Path) -> None:
    run = run_sample(tmp_path, "true")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "skipped" not in run.stdout
    assert "1 error" in run.stdout and "frobnicator not installed" in run.stdout
    assert "fixture of a test that cannot run" not in run.stdout


def test_the_readme_line_installs_every_tool_and_ci_runs_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The one Debian line of the README's Quick start names every package a reason
    here asks for, and ``.ci/run`` installs exactly that line."""
    readme = (REPO / "README.md").read_text()
    found = re.findall(r"^apt-get install -y (.+)$", readme, re.MULTILINE)
    assert len(found) == 1
    line = found[0]
    assert f"apt-get install -y {line}\n" in (REPO / ".ci" / "run").read_text()
    monkeypatch.setattr(needs.shutil, "which", lambda name: None)
    monkeypatch.setattr(ldapserver, "SLAPD", "/nonexistent/slapd")
    reasons = [needs.libwbxml(), needs.chromium(), ldapserver.missing()]
    for reason in reasons:
        assert reason is not None
        wanted = reason.split("apt-get install ", 1)[1].split()
        assert set(wanted) <= set(line.split()), (reason, line)

"""The built wheel, installed (not editable) in a fresh venv, gives a working server.

Builds a wheel from a copy of the tree, installs it in a new venv that borrows the
packages of the Python running the tests (a ``.pth`` line, so no download of the
dependencies; ``--system-site-packages`` would miss them when that Python is a venv), and
from that venv: finds the plugin, runs ``twistd -n easync`` on a free TLS port in an empty
directory, adds a user with the venv's ``easync-admin``, and syncs a contact with
pyactivesync over TLS checked against the server's own self-signed certificate.

Slow (tens of seconds): set ``EASYNC_SKIP_PACKAGING=1`` to skip the tests of the
installed wheel locally; CI runs them.

Also: the plugin is found and lazy.  Twisted imports every plugin module on every
``twistd`` run, so scanning for plugins must not import easync (``easync.tap`` is named by
string and loaded when ``twistd easync`` runs) nor the reactor (twistd installs the one
its ``--reactor`` option names, after the scan); checked in a fresh interpreter.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import needs
import pytest

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "packaging test password"
# What the copy of the tree leaves out: VCS data, build leftovers, local venvs.
IGNORE = shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__", "*.pyc",
                                ".venv", "venv", ".ci", ".ruff_cache", "*.sqlite*", "*.pem",
                                "dropin.cache", ".pytest_cache", ".mypy_cache")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "EASYNC_DB")}
    env.update(extra)
    return env


def _run(argv: list[str], cwd: Path, **kw: Any) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(argv, cwd=cwd, env=_env(), capture_output=True, text=True,
                         timeout=600, check=False, **kw)
    assert res.returncode == 0, f"{argv} failed:\n{res.stdout}\n{res.stderr}"
    return res


class Installed:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.venv = root / "venv"
        self.python = str(self.venv / "bin" / "python")
        self.admin = str(self.venv / "bin" / "easync-admin")
        self.wheel = ""

    def site_packages(self) -> Path:
        out = _run([self.python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                   self.root)
        return Path(out.stdout.strip())

    def twistd(self, *args: str) -> list[str]:
        # The venv has no twistd script of its own (Twisted comes from the borrowed
        # packages), so run twistd's entry point with the venv's interpreter.
        code = "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"
        return [self.python, "-c", code, *args]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    if os.environ.get("EASYNC_SKIP_PACKAGING"):
        pytest.skip("EASYNC_SKIP_PACKAGING is set")
    root = tmp_path_factory.mktemp("packaging")
    src = root / "src"
    shutil.copytree(ROOT, src, ignore=IGNORE)
    inst = Installed(root)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(root / "dist"),
          str(src)], root)
    wheels = glob.glob(str(root / "dist" / "easync-*.whl"))
    assert len(wheels) == 1, wheels
    inst.wheel = wheels[0]
    _run([sys.executable, "-m", "venv", str(inst.venv)], root)
    borrowed = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    (inst.site_packages() / "borrowed-packages.pth").write_text(
        "".join(f"{p}\n" for p in sorted(borrowed)))
    # --ignore-installed: the borrowed packages may hold an easync of the same version
    # (CI installs the project into its venv), which pip would take as already there.
    _run([inst.python, "-m", "pip", "install", "--no-deps", "--ignore-installed",
          inst.wheel], root)
    yield inst


REQUIREMENTS_MET = """
import importlib.metadata as md
from packaging.requirements import Requirement
bad = []
for line in md.requires("easync") or []:
    req = Requirement(line)
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue
    try:
        version = md.version(req.name)
    except md.PackageNotFoundError:
        bad.append(f"{line}: not installed")
        continue
    if not req.specifier.contains(version, prereleases=True):
        bad.append(f"{line}: {version} installed")
print("\\n".join(bad))
"""


def test_install_requires_are_met(installed: Installed, tmp_path: Path) -> None:
    """What the wheel declares is what the tests ran with (lower bounds not too high)."""
    out = _run([installed.python, "-c", REQUIREMENTS_MET], tmp_path).stdout.strip()
    assert out == ""


DECLARED = """
import importlib.metadata as md
from packaging.requirements import Requirement
for line in md.requires("easync") or []:
    req = Requirement(line)
    print(req.name, ",".join(sorted(req.extras)), req.marker or "-")
"""


def test_a_plain_install_brings_the_postgresql_driver(installed: Installed,
                                                      tmp_path: Path) -> None:
    """Issue 13 point 2: the Quick start's ``pip install .`` installs psycopg with its
    binary wheel (libpq included), so the README's ``postgresql://`` examples need no
    extra; ``.[postgresql]`` still names it, for the commands written before."""
    lines = _run([installed.python, "-c", DECLARED], tmp_path).stdout.splitlines()
    assert "psycopg binary -" in lines
    assert 'psycopg binary extra == "postgresql"' in lines


def test_wheel_contents(installed: Installed) -> None:
    names = zipfile.ZipFile(installed.wheel).namelist()
    assert "twisted/plugins/easync_plugin.py" in names
    assert "twisted/__init__.py" not in names
    assert "twisted/plugins/__init__.py" not in names
    assert not any(n.endswith("dropin.cache") for n in names)
    assert not any(n.startswith("tests/") for n in names)
    assert "easync/tap.py" in names and "easync/admin.py" in names
    assert any(n.startswith("backends/sql/schema/") and ".sql" in n for n in names)
    # the compiled gettext catalogues (committed, not built: easync.locale)
    for lang in ("en", "it"):
        assert f"easync/locale/{lang}/LC_MESSAGES/easync.mo" in names, lang
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    text = zipfile.ZipFile(installed.wheel).read(entry_points).decode()
    assert "easync-admin = easync.admin:main" in text


def test_every_package_is_listed_in_setup_cfg() -> None:
    """setup.cfg lists packages by hand (find: cannot see twisted/plugins)."""
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    listed = set(cfg["options"]["packages"].split())
    found = {str(p.parent.relative_to(ROOT)).replace(os.sep, ".")
             for top in ("easync", "backends") for p in (ROOT / top).rglob("__init__.py")
             if "__pycache__" not in p.parts}
    assert found - listed == set(), "packages missing from setup.cfg [options] packages"
    assert "twisted.plugins" in listed


def test_installed_layout(installed: Installed) -> None:
    site = installed.site_packages()
    assert str(site).startswith(str(installed.venv))
    assert (site / "twisted" / "plugins" / "easync_plugin.py").is_file()
    assert not (site / "twisted" / "__init__.py").exists()
    assert not (site / "twisted" / "plugins" / "__init__.py").exists()
    assert glob.glob(str(site / "backends" / "sql" / "schema" / "*.sql*")) or \
        glob.glob(str(site / "backends" / "sql" / "schema" / "*" / "*.sql*"))
    assert os.access(installed.admin, os.X_OK)


def test_installed_catalogue_speaks_italian(installed: Installed, tmp_path: Path) -> None:
    """The installed package finds its own Italian catalogue (not the checkout's)."""
    code = ("from easync import i18n\n"
            "print(i18n.LOCALE_DIR)\n"
            "i18n.use('it')\n"
            "print(i18n._('Verify'))\n")
    out = _run([installed.python, "-c", code], tmp_path).stdout.splitlines()
    assert out[0].startswith(str(installed.venv)), out
    assert out[1] == "Verifica"


def test_plugin_found_from_the_venv(installed: Installed, tmp_path: Path) -> None:
    code = ("from twisted.plugin import getPlugins\n"
            "from twisted.application.service import IServiceMaker\n"
            "import easync\n"
            "print(easync.__file__)\n"
            "print(sorted(p.tapname for p in getPlugins(IServiceMaker)))\n")
    out = _run([installed.python, "-c", code], tmp_path).stdout.splitlines()
    assert out[0].startswith(str(installed.venv))        # not the source tree
    assert "'easync'" in out[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_twistd_easync_serves_and_syncs(installed: Installed, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    pyactivesync = needs.importable("pyactivesync")
    from pyactivesync.models import Contact

    db = f"sqlite:///{tmp_path / 'easync.sqlite'}"
    res = subprocess.run([installed.admin, "--db", db, "init"], cwd=tmp_path, env=_env(),
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    res = subprocess.run([installed.admin, "--db", db, "user", "add", "tester", "--email",
                          "tester@example.org", "--password-stdin", "--activesync"],
                         input=PASSWORD + "\n", cwd=tmp_path,
                         env=_env(EASYNC_BCRYPT_ROUNDS="4"), capture_output=True, text=True,
                         timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    port = _free_port()
    log_path = tmp_path / "twistd.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            installed.twistd("-n", "--pidfile", "", "--logfile", "-", "easync", "--listen",
                             f"ssl:{port}:interface=127.0.0.1", "--db", db),
            cwd=tmp_path, env=_env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log_path.read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.2)
        cert = tmp_path / "easync.pem"
        assert cert.is_file()
        assert oct(cert.stat().st_mode & 0o777) == "0o600"
        # Verify TLS for real, trusting the server's own certificate (as a phone does once
        # its user has accepted it).
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
        host = f"127.0.0.1:{port}"
        with pyactivesync.Client(host, "tester", PASSWORD, device_id="pkgwriter1",
                                 timeout=30) as writer:
            assert writer.provision()
            folders = {f.name: f.id for f in writer.list_folders()}
            assert {"Contacts", "Calendar", "Tasks"} <= set(folders)
            key = writer.sync_folder(folders["Contacts"], "0").sync_key
            key = writer.sync_folder(folders["Contacts"], key).sync_key
            added = writer.create_contact(folders["Contacts"], key, Contact(
                first_name="Wheel", last_name="Installed", email1_address="wheel@example.org"))
            assert added.status == "1" and added.server_id
        with pyactivesync.Client(host, "tester", PASSWORD, device_id="pkgreader1",
                                 timeout=30) as reader:
            folder = {f.name: f.id for f in reader.list_folders()}["Contacts"]
            key = reader.sync_folder(folder, "0").sync_key
            items: dict[str, Any] = {}
            while True:
                res = reader.sync_folder(folder, key)
                key = res.sync_key
                items.update({it.server_id: it.fields for it in res.added})
                if not res.more_available:
                    break
        assert added.server_id in items
        assert "Installed" in items[added.server_id].values()
    except Exception as e:
        raise AssertionError(f"{e}\n--- server log ---\n{log_path.read_text()}") from e
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    text = log_path.read_text()
    assert "self-signed TLS certificate" in text and "SHA-256 fingerprint" in text
    assert PASSWORD not in text
    assert "Traceback" not in text


# ------------------------------------------------------------------ the plugin, lazy

PLUGIN = ROOT / "twisted" / "plugins" / "easync_plugin.py"

#: easync modules the plugin may need at scan time: none (it names easync.tap by string).
NEEDED_AT_SCAN: frozenset[str] = frozenset()

#: Run in a fresh interpreter: discover the IServiceMaker plugins (of ``twisted.plugins``,
#: or of the package named by argv[1]) and report them and every module then imported.
DISCOVER = """
import json, sys
from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
package = None
if len(sys.argv) > 1:
    import importlib
    package = importlib.import_module(sys.argv[1])
makers = [{"tapname": p.tapname, "module": p.module}
          for p in getPlugins(IServiceMaker, *([package] if package else []))]
print(json.dumps({"makers": makers, "modules": sorted(sys.modules)}))
"""


def discover(pythonpath: list[Path], package: str | None = None) -> dict[str, Any]:
    """The plugins and ``sys.modules`` after a plugin scan in a fresh interpreter."""
    env = _env(PYTHONPATH=os.pathsep.join(str(p) for p in pythonpath))
    res = subprocess.run([sys.executable, "-c", DISCOVER, *([package] if package else [])],
                         cwd=pythonpath[0], env=env, capture_output=True, text=True,
                         timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    out: dict[str, Any] = json.loads(res.stdout.splitlines()[-1])
    out["stderr"] = res.stderr
    return out


def eager_imports(modules: list[str]) -> list[str]:
    """What a plugin scan must not have imported: easync (beyond ``NEEDED_AT_SCAN``),
    backends, and the reactor."""
    return sorted(m for m in modules
                  if (m == "easync" or m.startswith("easync.")) and m not in NEEDED_AT_SCAN
                  or m == "backends" or m.startswith("backends.")
                  or m == "twisted.internet.reactor")


def scan_plugin_file(source: str, tmp_path: Path) -> dict[str, Any]:
    """Scan one plugin file, given as its source, as twistd would scan twisted/plugins:
    it sits alone in a plugin package of a temporary directory (so no dropin.cache is
    written into the tree, and an installed copy cannot stand in for it), the source tree
    next on the path so that what it imports of easync is there to import."""
    package = tmp_path / "easync_scan_plugins"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "easync_plugin.py").write_text(source)
    return discover([tmp_path, ROOT], "easync_scan_plugins")


def test_plugin_is_found_and_lazy(tmp_path: Path) -> None:
    """``twistd`` finds the easync plugin, which names easync.tap lazily: a plugin scan in
    a fresh interpreter imports nothing of easync and not the reactor, for the plugins on
    the path (the source tree's or the installed one) and for the tree's plugin file."""
    scan = discover([ROOT])
    makers = [m for m in scan["makers"] if m["tapname"] == "easync"]
    assert makers == [{"tapname": "easync", "module": "easync.tap"}], scan["makers"]
    assert eager_imports(scan["modules"]) == []
    own = scan_plugin_file(PLUGIN.read_text(), tmp_path)
    assert own["makers"] == [{"tapname": "easync", "module": "easync.tap"}], own["stderr"]
    assert eager_imports(own["modules"]) == []
    # In this process: the maker is an IServiceMaker plugin whose options are tap's.
    from twisted.application.service import IServiceMaker, ServiceMaker
    from twisted.plugin import IPlugin, getPlugins
    from zope.interface.verify import verifyObject

    from easync import tap

    maker = next(p for p in getPlugins(IServiceMaker) if p.tapname == "easync")
    assert verifyObject(IServiceMaker, maker)
    assert verifyObject(IPlugin, maker)
    assert isinstance(maker, ServiceMaker) and maker.module == "easync.tap"
    assert maker.options is tap.Options


@pytest.mark.parametrize(("added", "caught"), [
    ("import easync.tap as _tap", "easync.tap"),
    ("from easync.tap import Options", "easync.tap"),
    ("from twisted.internet import reactor", "twisted.internet.reactor"),
    ("from easync import versions as _versions", "easync.versions"),
    ("import backends.sql", "backends.sql"),
])
def test_plugin_scan_catches_an_eager_plugin(added: str, caught: str, tmp_path: Path) -> None:
    """The laziness check fails for a plugin that imports easync.tap, another easync
    module or the reactor when it is scanned (a copy of the plugin with one line more;
    ``as`` keeps the plugin's name ``easync`` bound to the ServiceMaker)."""
    source = PLUGIN.read_text() + f"\n{added}\n"
    scan = scan_plugin_file(source, tmp_path)
    assert [m["tapname"] for m in scan["makers"]] == ["easync"], scan["stderr"]
    assert caught in eager_imports(scan["modules"])

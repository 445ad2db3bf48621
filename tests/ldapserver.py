"""A real OpenLDAP ``slapd`` for the tests, in a temporary directory.

``Slapd(workdir).start()`` writes a ``slapd.conf`` and an mdb database under ``workdir``,
loads the people and the group below with ``slapadd``, and serves ``ldap://`` (with
StartTLS, on a self-signed certificate) and ``ldaps://`` on free loopback ports;
``stop()`` ends it.  ``pause()``/``resume()`` (SIGSTOP/SIGCONT) make it a server that
accepts connections but never answers.  Needs the Debian package ``slapd`` (``.ci/run``
installs it); ``missing()`` says what is absent (tests/needs.py: a skip, with CI=true a
failure).
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from easync_server import stop_process

SLAPD = "/usr/sbin/slapd"
SLAPADD = "/usr/sbin/slapadd"
SCHEMA = Path("/etc/ldap/schema")
MODULES = Path("/usr/lib/ldap")

BASE = "dc=example,dc=org"
ROOT_DN = f"cn=admin,{BASE}"
ROOT_PW = "root-secret"
SERVICE_DN = f"cn=easync,ou=services,{BASE}"
SERVICE_PW = "service-secret"
GROUP_DN = f"cn=activesync,ou=groups,{BASE}"

#: uid → (password, mail, member of the ActiveSync group)
PEOPLE: dict[str, tuple[str, str, bool]] = {
    "lara": ("lara-login-pw", "lara@example.org", True),
    "nino": ("nino-login-pw", "nino@example.org", True),
    "otto": ("otto-login-pw", "otto@example.org", False),      # outside the group
    "pia": ("pia-login-pw", "pia@example.org", True),
    "remo": ("remo-login-pw", "remo@example.org", True),
    "sara": ("sara-login-pw", "sara@example.org", True),
}


def missing() -> str | None:
    """Why slapd cannot run here (None: it can)."""
    for tool in (SLAPD, SLAPADD):
        if not os.access(tool, os.X_OK):
            return f"no slapd: {tool} not installed: apt-get install slapd"
    if not (SCHEMA / "inetorgperson.schema").exists():
        return f"no slapd: {SCHEMA}/inetorgperson.schema missing: apt-get install slapd"
    return None


def _listens(pid: int, port: int) -> bool:
    """Does process ``pid`` itself listen on 127.0.0.1:``port``?  A connection that
    succeeds is not enough: under pytest-xdist another worker's slapd (the same people,
    the same passwords) can hold the port this one failed to bind, and a test that then
    pauses this slapd still got answers from that one (test_ldap's hanging-directory
    test: "DID NOT RAISE Unavailable")."""
    try:
        mine = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
        with open("/proc/net/tcp") as f:
            rows = [line.split() for line in f.readlines()[1:]]
    except OSError:
        return False
    for row in rows:
        local, state, inode = row[1], row[3], row[9]
        if state == "0A" and int(local.split(":")[1], 16) == port and \
                f"socket:[{inode}]" in mine:
            return True
    return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ssha(password: str) -> str:
    salt = os.urandom(8)
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


def user_dn(uid: str) -> str:
    return f"uid={uid},ou=people,{BASE}"


def _ldif(people: dict[str, tuple[str, str, bool]]) -> str:
    out = [(f"dn: {BASE}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\n"
           "o: Example\n")]
    for ou in ("people", "groups", "services"):
        out.append(f"dn: ou={ou},{BASE}\nobjectClass: organizationalUnit\nou: {ou}\n")
    out.append(f"dn: {SERVICE_DN}\nobjectClass: person\ncn: easync\nsn: service\n"
               f"userPassword: {ssha(SERVICE_PW)}\n")
    members = []
    for uid, (password, mail, member) in people.items():
        out.append(f"dn: {user_dn(uid)}\nobjectClass: inetOrgPerson\nuid: {uid}\n"
                   f"cn: {uid.title()}\nsn: {uid.title()}\nmail: {mail}\n"
                   f"userPassword: {ssha(password)}\n")
        if member:
            members.append(user_dn(uid))
    out.append(f"dn: {GROUP_DN}\nobjectClass: groupOfNames\ncn: activesync\n"
               + "".join(f"member: {m}\n" for m in members))
    return "\n".join(out)


class Slapd:
    def __init__(self, workdir: Path,
                 people: dict[str, tuple[str, str, bool]] | None = None) -> None:
        self.dir = Path(workdir)
        self.people = people if people is not None else PEOPLE
        self.port = free_port()
        self.tls_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.cert = self.dir / "slapd-cert.pem"
        self.key = self.dir / "slapd-key.pem"

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://127.0.0.1:{self.tls_port}"

    def _certificate(self) -> None:
        from easync import tls

        pem = self.dir / "slapd.pem"
        tls.ensure_certificate(str(pem), ["localhost"])
        text = pem.read_text()
        key_start = text.index("-----BEGIN")
        blocks = [b for b in text[key_start:].split("-----END ") if b.strip()]
        key = next(b for b in blocks if "PRIVATE KEY" in b.split("\n", 1)[0])
        certs = [b for b in blocks if "BEGIN CERTIFICATE" in b]

        def block(b: str) -> str:
            body = b[b.index("-----BEGIN"):]
            kind = body.split("-----BEGIN ", 1)[1].split("-----", 1)[0]
            return f"{body}-----END {kind}-----\n"

        self.key.write_text(block(key))
        self.cert.write_text("".join(block(c) for c in certs))
        os.chmod(self.key, 0o600)

    def _config(self) -> Path:
        db = self.dir / "db"
        db.mkdir(exist_ok=True)
        conf = self.dir / "slapd.conf"
        conf.write_text(f"""
include {SCHEMA}/core.schema
include {SCHEMA}/cosine.schema
include {SCHEMA}/inetorgperson.schema
include {SCHEMA}/nis.schema
modulepath {MODULES}
moduleload back_mdb
pidfile {self.dir}/slapd.pid
argsfile {self.dir}/slapd.args
TLSCertificateFile {self.cert}
TLSCertificateKeyFile {self.key}
disallow bind_anon
database mdb
maxsize 10485760
suffix "{BASE}"
rootdn "{ROOT_DN}"
rootpw {ROOT_PW}
directory {db}
access to attrs=userPassword
    by self =xw
    by anonymous auth
    by * none
access to *
    by users read
    by * none
""")
        return conf

    def start(self) -> Slapd:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._certificate()
        conf = self._config()
        ldif = self.dir / "data.ldif"
        ldif.write_text(_ldif(self.people))
        subprocess.run([SLAPADD, "-f", str(conf), "-l", str(ldif)], check=True,
                       capture_output=True, timeout=60)
        for attempt in range(3):
            if attempt:     # (its ports were taken meanwhile, most likely: two new ones)
                self.log.close()
                self.port, self.tls_port = free_port(), free_port()
            urls = f"{self.url}/ {self.ldaps_url}/"
            self.log = open(self.dir / "slapd.log", "wb")  # noqa: SIM115 - closed in stop
            self.proc = subprocess.Popen([SLAPD, "-f", str(conf), "-h", urls, "-d", "0"],
                                         stdout=self.log, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + 20
            while self.proc.poll() is None:
                if _listens(self.proc.pid, self.port) and \
                        _listens(self.proc.pid, self.tls_port):
                    return self
                if time.monotonic() > deadline:
                    raise RuntimeError("slapd did not start")
                time.sleep(0.1)
        raise RuntimeError("slapd exited: " + (self.dir / "slapd.log").read_text())

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            stop_process(self.proc)
        if getattr(self, "log", None) is not None:
            self.log.close()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

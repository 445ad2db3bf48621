"""``easync-admin`` speaks the language of its locale (issue 13 point 9): Italian for an
Italian ``LANG``/``LC_ALL``/``LC_MESSAGES``/``LANGUAGE``, English otherwise; its own
messages and the account service's refusals alike.  Run as a program."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parent.parent)
LOCALE_VARS = ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG")


def admin(tmp_path: Path, locale: dict[str, str], *args: str, stdin: str = ""
          ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in LOCALE_VARS + ("EASYNC_DB",)}
    env.update(locale, EASYNC_BCRYPT_ROUNDS="4",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-m", "easync.admin", "--db", f"sqlite:///{tmp_path}/a.sqlite",
         *args], input=stdin, capture_output=True, text=True, cwd=tmp_path, env=env,
        timeout=60, check=False)


def test_admin_in_italian_and_english(tmp_path: Path) -> None:
    it = {"LANG": "it_IT.UTF-8"}
    r = admin(tmp_path, it, "user", "add", "mario", "--password-stdin",
              stdin="password di mario\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "aggiunto l'utente mario (ActiveSync off)\n"
    # its own refusal
    r = admin(tmp_path, it, "user", "add", "mario", "--password-stdin", stdin="x\n")
    assert r.returncode == 1
    assert r.stderr == "easync-admin: errore: esiste già un utente di nome 'mario'\n"
    # the account service's refusal, said again in Italian
    r = admin(tmp_path, {"LC_MESSAGES": "it_IT.UTF-8", "LANG": "en_US.UTF-8"},
              "user", "2fa", "mario", "email")
    assert r.returncode == 1
    assert r.stderr == ("easync-admin: errore: mario non ha un indirizzo email per i "
                        "codici: impostane prima uno\n")
    r = admin(tmp_path, {"LANGUAGE": "fr:it"}, "user", "show", "mario")
    assert "Password ActiveSync:  non impostata\n" in r.stdout
    assert "accessi EAS:          ActiveSync non è abilitato per questo utente" in r.stdout

    r = admin(tmp_path, it, "user", "add", "--help")
    assert "--email ADDR      l'indirizzo email dell'utente" in r.stdout

    # English: another language, C, or nothing set
    for locale in ({"LANG": "de_DE.UTF-8"}, {"LC_ALL": "C", "LANG": "it_IT.UTF-8"}, {}):
        r = admin(tmp_path, locale, "user", "2fa", "mario", "email")
        assert r.stderr == ("easync-admin: error: mario has no e-mail address for codes: "
                            "set one first\n"), locale
    r = admin(tmp_path, {}, "user", "show", "mario")
    assert "ActiveSync password:  not set\n" in r.stdout

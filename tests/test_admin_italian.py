"""``easync-admin`` speaks the language of its locale (issue 13 point 9): Italian for an
Italian ``LANG``/``LC_ALL``/``LC_MESSAGES``/``LANGUAGE``, English otherwise; its own
messages and the account service's refusals alike.  Run as a program."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from test_admin import schema_version

ROOT = str(Path(__file__).resolve().parent.parent)
DATA = Path(ROOT) / "tests" / "data"
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
    assert admin(tmp_path, it, "init").returncode == 0
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


def test_the_later_subcommands_speak_italian(tmp_path: Path) -> None:
    """init, folder list, import's refusal of a folder of another kind, export and
    backup (added after the catalogue was first made) speak Italian too; folder list's
    table stays English, for scripts (README "Languages")."""
    it = {"LANG": "it_IT.UTF-8"}
    db = tmp_path / "a.sqlite"
    # the refusal to make a database implicitly, then init
    r = admin(tmp_path, it, "user", "list")
    assert r.returncode == 3
    assert r.stderr.startswith(f"easync-admin: errore: nessun database in {db} (--db ")
    assert r.stderr.endswith(f"per creare lì un nuovo database: easync-admin --db "
                             f"sqlite:///{db} init\n")
    r = admin(tmp_path, it, "init")
    assert r.stdout == f"creato il database {db} (versione dello schema {schema_version()})\n"
    assert admin(tmp_path, it, "user", "add", "mario", "--password-stdin",
                 stdin="x\n").returncode == 0

    # folder list: its help in Italian, its table in English
    r = admin(tmp_path, it, "folder", "--help")
    # (whitespace normalised: argparse wraps the help column to the longest ACTION)
    assert "le cartelle di un utente: id (per import --folder), nome, tipo" in \
        " ".join(r.stdout.split())
    r = admin(tmp_path, it, "folder", "list", "mario")
    assert r.stdout.splitlines()[0].split() == ["ID", "NAME", "KIND", "ITEMS"]
    ids = {line.split()[2]: line.split()[0] for line in r.stdout.splitlines()[1:]}
    r = admin(tmp_path, it, "folder", "list", "nessuno")
    assert r.stderr == "easync-admin: errore: non esiste un utente di nome 'nessuno'\n"

    # import: contacts into the Calendar folder are refused, nothing imported
    vcf = DATA / "contacts.vcf"
    r = admin(tmp_path, it, "import", "mario", str(vcf), "--folder", ids["Calendar"])
    assert r.returncode == 1
    assert r.stderr == (f"easync-admin: errore: la cartella {ids['Calendar']} (Calendar) è "
                        f"una cartella Calendario e {vcf} contiene contatti: nessun "
                        "elemento importato\n")
    r = admin(tmp_path, it, "import", "mario", str(vcf))
    assert r.stdout.splitlines()[:2] == [
        "importazione eseguita: 5 contatti; 2 avvisi",
        ("avviso: contatto Mario Rossi: 1 e-mail address(es) beyond the third dropped: "
         "quarto@example.org")], r.stderr     # (the vCard reader's own words: English)

    # export: the report (singular and plural), and its refusal
    out = tmp_path / "out"
    out.mkdir()
    r = admin(tmp_path, it, "export", "mario", "--out", str(out))
    assert f"esportati 5 elementi di Contatti in {out}/contacts.vcf\n" in r.stdout
    assert f"esportati 0 elementi di Calendario in {out}/calendar.ics\n" in r.stdout
    r = admin(tmp_path, it, "export", "mario")
    assert r.stderr == ("easync-admin: errore: indica --folder per esportare sullo "
                        "standard output, oppure --out DIR\n")

    # backup: done, and refused (a message made in the backup's worker thread)
    copy = tmp_path / "copia.sqlite"
    r = admin(tmp_path, it, "backup", str(copy))
    assert r.stdout == (f"backup di {db} eseguito in {copy} "
                        f"({copy.stat().st_size} byte)\n"), r.stderr
    r = admin(tmp_path, it, "backup", str(db))
    assert r.stderr == f"easync-admin: errore: {db} è il database stesso\n"
    # English all the same without an Italian locale
    r = admin(tmp_path, {"LANG": "C.UTF-8"}, "backup", str(db))
    assert r.stderr == f"easync-admin: error: {db} is the database itself\n"

"""Generated vCard files of real-shaped contacts, for tests and bench/bench_import.py."""

from __future__ import annotations

from pathlib import Path


def card(i: int) -> str:
    """Contact number ``i`` as one vCard 3.0 card (CRLF line ends): name, company, two
    e-mail addresses, three phones, an address, a note with an escaped comma,
    categories; every tenth card has no UID, as exports from old phones have none."""
    uid = f"UID:bench-{i:07d}@easync.test\r\n" if i % 10 else ""
    return (
        "BEGIN:VCARD\r\nVERSION:3.0\r\n" + uid +
        f"N:Cognome{i};Nome{i};;Dott.;\r\nFN:Nome{i} Cognome{i}\r\n"
        f"ORG:Azienda {i % 997} S.r.l.;Vendite\r\nTITLE:Referente\r\n"
        f"EMAIL;TYPE=INTERNET,WORK:nome{i}@azienda{i % 997}.example\r\n"
        f"EMAIL;TYPE=INTERNET,HOME:n.cognome{i}@posta.example\r\n"
        f"TEL;TYPE=CELL:+39 3{i % 100:02d} {i:07d}\r\n"
        f"TEL;TYPE=WORK,VOICE:+39 06 {i:07d}\r\nTEL;TYPE=HOME:+39 02 {i:07d}\r\n"
        f"ADR;TYPE=WORK:;;Via Roma {i % 300};Roma;RM;00{i % 200:03d};Italia\r\n"
        f"NOTE:Cliente numero {i}\\, importato dal vecchio gestionale.\r\n"
        "CATEGORIES:Clienti,Import\r\nEND:VCARD\r\n")


def write_vcards(path: Path | str, count: int, start: int = 0) -> Path:
    """A vCard file of contacts ``start`` … ``start + count - 1``."""
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.writelines(card(i) for i in range(start, start + count))
    return Path(path)

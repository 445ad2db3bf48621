"""Generated vCard and iCalendar files of real-shaped items, for tests and
bench/bench_import.py."""

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


def event(i: int) -> str:
    """Event number ``i`` as a VEVENT in Europe/Rome: a meeting with two attendees and
    a reminder; every tenth one a weekly series with an EXDATE."""
    day = 1 + i % 28
    month = 1 + (i // 28) % 12
    start = f"2026{month:02d}{day:02d}T{9 + i % 8:02d}0000"
    end = f"2026{month:02d}{day:02d}T{10 + i % 8:02d}0000"
    text = (f"BEGIN:VEVENT\r\nUID:event-{i:07d}@easync.test\r\nDTSTAMP:20260101T080000Z\r\n"
            f"DTSTART;TZID=Europe/Rome:{start}\r\nDTEND;TZID=Europe/Rome:{end}\r\n"
            f"SUMMARY:Incontro {i}\r\nLOCATION:Sala {i % 12}\r\n"
            f"DESCRIPTION:Ordine del giorno {i}:\\n1. vendite\\n2. varie\r\n"
            "ORGANIZER;CN=Mario Rossi:mailto:mario@example.it\r\n"
            f"ATTENDEE;CN=Cliente {i};PARTSTAT=ACCEPTED:mailto:cliente{i}@example.com\r\n"
            "ATTENDEE;CN=Lucia Bianchi;PARTSTAT=TENTATIVE:mailto:lucia@example.com\r\n"
            "BEGIN:VALARM\r\nACTION:DISPLAY\r\nTRIGGER:-PT15M\r\nEND:VALARM\r\n")
    if i % 10:
        return text + "END:VEVENT\r\n"
    text += (f"RRULE:FREQ=WEEKLY;COUNT=10\r\n"
             f"EXDATE;TZID=Europe/Rome:2026{month:02d}{day:02d}T{9 + i % 8:02d}0000\r\n"
             "END:VEVENT\r\n")
    return text


def write_events(path: Path | str, count: int) -> Path:
    """An iCalendar file of ``count`` events."""
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//easync//tests//EN\r\n"
                "X-WR-TIMEZONE:Europe/Rome\r\n")
        f.writelines(event(i) for i in range(count))
        f.write("END:VCALENDAR\r\n")
    return Path(path)

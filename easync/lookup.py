"""The words recipient and directory lookups are indexed by (issue #10 point 2).

ResolveRecipients (MS-ASCMD 2.2.1.15) and the GAL Search (MS-ASCMD 2.2.1.16) ask the
store for contacts and users *by prefix*: a query matches a contact or a user when it
is the beginning of one of its tokens.  That is what Exchange's ambiguous name
resolution (ANR) does, and it is what an index can answer in O(log n + results)
(``token >= key AND token < prefix_end(key)``, a range of a b-tree), unlike a
substring.

Tokens (all through ``normalise``: lone surrogates and control characters dropped,
case-folded, blanks collapsed, at most ``TOKEN_MAX`` characters):

* a contact: each of FirstName, MiddleName, LastName, FileAs, CompanyName and
  NickName whole, each of their words (at most ``MAX_WORDS`` per field, outer
  punctuation stripped), "first last", "first middle last", "last first" and
  "last, first";
* a contact, for Find only (``contact_index``): its e-mail addresses whole, and
  the name tokens of a contact without an address;
* a user: the login name, the e-mail address, the display name whole and its words.

So "ada", "love", "ada lov", "lovelace, a" all find "Ada Lovelace" (FileAs
"Lovelace, Ada"), "ace" does not.  Stores and commands share these functions so that
what is written and what is asked are normalised alike.  The store never imports a
command: the display-name rule of users (``display_name`` in
``easync.commands.settings``) is repeated in ``user_tokens``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from easync.items import email_address

#: the longest token (and query) kept: RFC 5321 4.5.3.1's limit for an address, and
#: far under PostgreSQL's b-tree entry limit whatever the characters
TOKEN_MAX = 254
#: words indexed per name field (a hostile 32 kB name gives no more rows than this)
MAX_WORDS = 16
#: the longest e-mail address indexed or looked up (RFC 5321 4.5.3.1: 254); a longer
#: "address" cannot be delivered to, so it is never a recipient
EMAIL_MAX = 254
CONTACT_NAME_FIELDS = ("FirstName", "MiddleName", "LastName", "FileAs", "CompanyName",
                       "NickName")
CONTACT_EMAIL_FIELDS = ("Email1Address", "Email2Address", "Email3Address")

# lone surrogates (not encodable as UTF-8), C0 controls, DEL and C1 controls: none of
# them may reach the database (PostgreSQL refuses NUL, both refuse surrogates)
_UNSTORABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_PUNCT = ".,;:()[]{}\"'<>!?"


def normalise(text: Any) -> str:
    """``text`` as a lookup key: storable characters only, case-folded, runs of blanks
    made one space, outer blanks removed, cut to ``TOKEN_MAX``.  Linear time."""
    if not isinstance(text, str) or not text:
        return ""
    if len(text) > 4 * TOKEN_MAX:
        text = text[:4 * TOKEN_MAX]          # enough to fill a token after folding
    clean = _UNSTORABLE.sub(" ", text)
    return " ".join(clean.casefold().split())[:TOKEN_MAX].rstrip()


def _words(value: str) -> Iterable[str]:
    n = 0
    for word in value.split(" "):
        word = word.strip(_PUNCT)
        if word:
            yield word
            n += 1
            if n >= MAX_WORDS:
                return


def _tokens_of(values: Iterable[str]) -> set[str]:
    out: set[str] = set()
    for value in values:
        if value:
            out.add(value)
            out.update(_words(value))
    return out


def contact_tokens(data: dict[str, Any]) -> set[str]:
    """The name tokens of a contact's canonical data."""
    fields = {k: normalise(data.get(k)) for k in CONTACT_NAME_FIELDS}
    out = _tokens_of(fields.values())
    first, middle, last = fields["FirstName"], fields["MiddleName"], fields["LastName"]
    if first and last:
        for combo in (f"{first} {last}", f"{first} {middle} {last}" if middle else "",
                      f"{last} {first}", f"{last}, {first}"):
            if combo:
                out.add(combo[:TOKEN_MAX].rstrip())
    out.discard("")
    return out


def contact_index(data: dict[str, Any]) -> dict[str, int]:
    """The rows of a contact in the name index (schema 14): each token and whether a
    recipient lookup may find the contact by it (1) or only Find may (0).  The name
    tokens (``contact_tokens``) are 1 when the contact has an e-mail address it can
    be sent to (``indexable_email`` of Email1/2/3Address), else 0; each such address
    is a token too, 0 unless it is also a name token (ResolveRecipients looks
    addresses up whole, in ``contact_emails``)."""
    emails = {a for a in (indexable_email(data.get(k)) for k in CONTACT_EMAIL_FIELDS) if a}
    flag = 1 if emails else 0
    out = dict.fromkeys(contact_tokens(data), flag)
    for addr in sorted(emails):
        key = normalise(addr)
        if key:
            out.setdefault(key, 0)
    return out


def user_tokens(name: str, email: str | None, extra: dict[str, Any] | None) -> set[str]:
    """The directory tokens of a user: login name, e-mail address (as
    ``indexable_email`` has it; the login name when the user has none), display name
    (``extra`` display_name, else full_name) whole and its words."""
    extra = extra or {}
    out = {normalise(name)}
    addr = indexable_email(email or name)
    if addr:
        out.add(addr)
    shown = extra.get("display_name") or extra.get("full_name")
    out |= _tokens_of([normalise(shown)])
    out.discard("")
    return out


def indexable_email(value: Any) -> str | None:
    """The bare, lower-cased address in ``value`` (``easync.items.email_address``)
    when it can be a recipient and be stored: at most ``EMAIL_MAX`` characters, no
    control character nor lone surrogate; else None."""
    if not isinstance(value, str):
        return None
    addr = email_address(value)
    return addr if addr and storable_email(addr) else None


def storable_email(addr: str) -> bool:
    """Whether an address ``email_address`` gave may be indexed (see
    ``indexable_email``)."""
    return len(addr) <= EMAIL_MAX and not _UNSTORABLE.search(addr)


def prefix_key(query: Any) -> str:
    """The normalised form of a lookup query ("" when nothing is left)."""
    return normalise(query)


def prefix_end(key: str) -> str | None:
    """The smallest string greater than every string that starts with ``key``, in
    code-point order (SQLite's BINARY collation on UTF-8, PostgreSQL's "C"), or None
    when there is none (every string from ``key`` on)."""
    while key:
        last = ord(key[-1]) + 1
        if last == 0xD800:
            last = 0xE000                     # surrogates are never stored
        if last <= 0x10FFFF:
            return key[:-1] + chr(last)
        key = key[:-1]
    return None

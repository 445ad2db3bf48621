"""Search (MS-ASCMD 2.2.1.16): the GAL store, answered from easync's own user list.

``Search/{Status, Response/Store/{Status, Result*/Properties/{GAL:…}, Range, Total}}``.

* ``GAL``: the server's accounts with a login name, an e-mail address, a display name
  or a word of the display name that *begins* with the query (case-insensitive, as
  Exchange's ambiguous name resolution; up to issue #10 a substring matched anywhere:
  "example.com" no longer finds alice@example.com, "ali" does), ordered by display
  name, sliced by the requested Range (MS-ASCMD 2.2.3.139: 0-based, default 0-99, at
  most 100 results).  Range and Total are always sent (Android needs both to show
  results); with no match Total is 0 and there is no Result (an empty Result would be
  a blank entry on the device).
* Cost (issue #10 point 2): one indexed range query of the user store with a LIMIT
  of ``GAL_MAX_MATCHES`` (1000), in the store's thread: O(log users + 1000) whatever
  the query.  Total is the number of matches up to that cap: a query matching more
  reports 1000, and a Range past it is empty.
* ``Mailbox``: easync holds no mail: Store Status 1, Total 0.
* any other store (DocumentLibrary): Store Status 2.
* A request without Store/Name, or a GAL query that is empty, or a bad Range:
  Store Status 2 (top-level Search/Status 2 when there is no Store at all).
"""

from __future__ import annotations

import re
from typing import Any

from easync.commands.settings import display_name, user_email
from easync.handler import EasRequest, EasResponse, EasServer
from easync.model import User
from easync.wbxml.element import Element

SR = "Search:"
DEFAULT_RANGE = (0, 99)
MAX_RESULTS = 100
#: the most GAL matches a Search looks at (and the largest Total it reports)
GAL_MAX_MATCHES = 1000
_RANGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")


def parse_range(text: str | None) -> tuple[int, int] | None:
    """"a-b" → (a, b); None when malformed.  A missing range is the default 0-99."""
    if text is None:
        return DEFAULT_RANGE
    m = _RANGE.match(text)
    if not m:
        return None
    lo, hi = int(m.group(1)), int(m.group(2))
    if hi < lo:
        return None
    return lo, min(hi, lo + MAX_RESULTS - 1)


def _split_name(name: str) -> tuple[str, str]:
    first, _, last = name.strip().rpartition(" ")
    return (first, last) if first else ("", last)


def gal_properties(user: User) -> list[Element]:
    """The GAL:* children of one Result for ``user``."""
    name = display_name(user)
    first, last = _split_name(name)
    props = [Element("GAL:DisplayName", name)]
    extra: dict[str, Any] = user.extra or {}
    for key, tag in (("phone", "Phone"), ("office", "Office"), ("title", "Title"),
                     ("company", "Company")):
        if extra.get(key):
            props.append(Element(f"GAL:{tag}", str(extra[key])))
    props.append(Element("GAL:Alias", user.name))
    email = user_email(user)
    # each is optional (0...1, MS-ASCMD 2.2.3.70, 2.2.3.95, 2.2.3.55.3): one with no
    # value is left out, not sent empty (a one-word name has no first name)
    for tag, value in (("FirstName", first), ("LastName", last),
                       ("MobilePhone", str(extra.get("mobile_phone") or "")),
                       ("EmailAddress", email or "")):
        if value:
            props.append(Element(f"GAL:{tag}", value))
    return props


async def gal_users(server: EasServer, query: str, limit: int = GAL_MAX_MATCHES
                    ) -> list[User]:
    """Up to ``limit`` accounts matching ``query`` (by prefix, see the module text),
    from the user store's indexed lookup, ordered by display name then login."""
    users: list[User] = await server.users.find_users(query, limit)
    users.sort(key=lambda u: (display_name(u).casefold(), u.name))
    return users


async def handle(server: EasServer, req: EasRequest) -> EasResponse:
    root = Element(SR + "Search")
    body = req.body
    store_el = body.find(SR + "Store") if body is not None and body.tag == SR + "Search" else None
    if store_el is None:
        root.add(SR + "Status", "2")
        return EasResponse(body=root, status="2")
    root.add(SR + "Status", "1")
    store = root.add(SR + "Response").add(SR + "Store")

    name = (store_el.findtext(SR + "Name") or "").strip()
    options = store_el.find(SR + "Options")
    rng = parse_range(options.findtext(SR + "Range") if options is not None else None)
    if name.upper() == "GAL":
        query = (store_el.findtext(SR + "Query") or "").strip()
        if not query or rng is None:
            store.add(SR + "Status", "2")
            return EasResponse(body=root, status="1")
        matches = await gal_users(server, query)
        lo, hi = rng
        page = matches[lo:hi + 1]
        store.add(SR + "Status", "1")
        for user in page:
            store.add(SR + "Result").add(SR + "Properties").children.extend(gal_properties(user))
        store.add(SR + "Range", f"{lo}-{lo + len(page) - 1}" if page else f"{lo}-{hi}")
        store.add(SR + "Total", len(matches))
    elif name.lower() == "mailbox":
        store.add(SR + "Status", "1")
        store.add(SR + "Total", 0)
    else:
        store.add(SR + "Status", "2")
    return EasResponse(body=root, status="1")

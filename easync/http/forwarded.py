"""The client's address behind reverse proxies (``X-Forwarded-For``).

``X-Forwarded-For: client, proxy1, proxy2`` is a list each proxy appends the address
it received the request from to.  Anybody can send the header, so it is believed only
as far as the hops are trusted: starting from the TCP peer, while the address in hand
is a trusted proxy (``--trusted-proxy``), step one entry to the left.  The first
address that is not a trusted proxy is the client (when every entry is trusted, the
leftmost; an entry that is not an address stops the walk).  With no trusted proxies, or a
peer that is not one, the header is ignored and the peer is the client.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """``--trusted-proxy`` values: addresses or networks (``10.0.0.0/8``).
    Raises ValueError for anything else."""
    out = []
    for v in values:
        try:
            out.append(ipaddress.ip_network(v.strip(), strict=False))
        except ValueError:
            raise ValueError(f"expected an IP address or network such as 10.0.0.0/8, "
                             f"got {v!r}") from None
    return tuple(out)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address from a header entry: ``1.2.3.4``, ``1.2.3.4:567``, ``[::1]:80``,
    ``::1``; None when it is none of these (``unknown``, garbage)."""
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _trusted(ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None,
             networks: Sequence[Network]) -> bool:
    return ip is not None and any(ip.version == n.version and ip in n for n in networks)


def client_address(peer: str, forwarded_for: Sequence[bytes] | None,
                   networks: Sequence[Network]) -> tuple[str, str | None]:
    """(the client's address, the trusted proxy it came through or None).

    ``peer``: the TCP peer's address; ``forwarded_for``: the raw values of every
    X-Forwarded-For header, in order."""
    if not networks or not forwarded_for or not _trusted(_ip(peer), networks):
        return peer, None
    hops = [h for value in forwarded_for
            for h in value.decode("latin-1").split(",") if h.strip()]
    client = peer
    for hop in reversed(hops):
        ip = _ip(hop)
        if ip is None:
            break                     # garbage: believe nothing to its left
        client = str(ip)
        if not _trusted(ip, networks):
            break                     # the first untrusted hop is the client
    return client, (peer if client != peer else None)

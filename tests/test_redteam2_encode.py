"""Red team 2: a big answer is encoded to WBXML without holding the reactor (the
brief's ~50 ms rule).  A device can make one: 40,000 Fetches in one ItemOperations
(about 2 MB of answer, encoded in 150 ms); at --max-request-size, twenty times that.
As easync.http.resource's ``decode_wbxml`` for a big request body, and its sliced
gzip of an answer (test_e2e_gzip)."""

from __future__ import annotations

import itertools
import time

import pytest
import pytest_twisted

from easync.http.resource import encode_wbxml
from easync.wbxml import encode
from easync.wbxml.element import Element

#: the longest the reactor may go without a turn here (50 ms, with margin for a
#: loaded CI machine)
GAP_LIMIT = 0.1


def _big_answer(n: int) -> Element:
    root = Element("ItemOperations:ItemOperations")
    root.add("ItemOperations:Status", "1")
    response = root.add("ItemOperations:Response")
    for i in range(n):
        fetch = response.add("ItemOperations:Fetch")
        fetch.add("ItemOperations:Status", "1")
        fetch.add("AirSync:ServerId", f"1:{i}")
        fetch.add("AirSync:Class", "Contacts")
        fetch.add("ItemOperations:Properties").add("Contacts:FirstName", f"Name {i}")
    return root


@pytest.mark.solo  # measures wall-clock time (tests/conftest.py)
@pytest_twisted.ensureDeferred
async def test_encoding_a_big_answer_leaves_the_reactor_its_turns() -> None:
    """600,000 elements or more (as many as take over 300 ms to encode here): a 1 ms
    LoopingCall keeps ticking meanwhile, and the bytes are those ``encode`` makes.  A small answer is
    encoded at once."""
    from twisted.internet import task

    # an answer whose encoding takes several times the limit on this machine (a fast
    # one needs a bigger answer for the test to show anything)
    n = 100_000
    while True:
        tree = _big_answer(n)
        t0 = time.perf_counter()
        expected = encode(tree)
        cost = time.perf_counter() - t0
        if cost > 3 * GAP_LIMIT or n >= 800_000:
            break
        n *= 2
    assert cost > 2 * GAP_LIMIT, cost           # (worth measuring here)
    ticks: list[float] = []
    loop = task.LoopingCall(lambda: ticks.append(time.monotonic()))
    loop.start(0.001)
    try:
        start = time.monotonic()
        data = await encode_wbxml(tree)
        end = time.monotonic()
    finally:
        loop.stop()
    gaps = [b - a for a, b in itertools.pairwise([start, *ticks, end])]
    assert max(gaps) < GAP_LIMIT, (max(gaps), cost)
    assert data == expected
    small = Element("Ping:Ping")
    small.add("Ping:Status", "1")
    assert await encode_wbxml(small) == encode(small)

"""Red-team of issue 14 on the CRM store (``twistd easync --backend crm
--crm-shared-contacts all`` against the fake CRM in its own process): Find in the
CRM's company address book.

* MS-ASCMD 2.2.1.2 (Find, 16.1): a MailBoxSearchCriterion's Query names the folder
  to search in airsync:CollectionId; a folder the user holds is searched.
"""

from __future__ import annotations

import needs
from easync_server import RunningServer
from findwire import decode as wire_decode
from findwire import encode as wire_encode
from findwire import mailbox_find
from rawclient import RawDevice
from test_crm_shared_e2e import BOOK, PASSWORD, crm, hierarchy, server  # noqa: F401

pytestmark = needs.mark(needs.libwbxml())


def test_find_in_the_crm_company_book(server: RunningServer) -> None:  # noqa: F811
    """dana's 16.1 phone searches the company address book (erin's CRM contact is in
    it, not in dana's own Contacts): found there, with the book's CollectionId."""
    d = RawDevice(server.url, "dana", PASSWORD, "DanaFind", version="16.1")
    d.provision()
    book = hierarchy(d)[BOOK][0]
    r = d.post("Find", wire_encode(mailbox_find("erino", cls=None, collection=book)))
    assert r.status_code == 200
    answer = wire_decode(r.content)
    assert answer.text_of("Find:Status") == "1", answer
    resp = answer.find("Find:Response")
    assert resp is not None and resp.text_of("Find:Status") == "1", answer
    found = [(x.text_of("Find:Properties/GAL:DisplayName"), x.text_of("AirSync:CollectionId"))
             for x in resp.findall("Find:Result")]
    assert found == [("Erin ErinOwn", book)], answer

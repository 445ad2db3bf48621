"""Acceptance (issue 9, point 3): a phone's change to a record the CRM has deleted is
never lost silently.  vtiger answers ACCESS_DENIED for such an id (recording:
contact-revise-deleted); the phone gets the per-item Status 8 (MS-ASCMD 2.2.3.177.17,
object not found) in the same Sync answer and the Delete of the item, and a Delete of
such a record is a success.  Raw WBXML through ``twistd easync --backend crm`` against
the fake CRM made faithful to the recording (its vtenext flavour answers these
ids as vtiger 8.2 does)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import needs
import pytest
from backendsites import started
from easync_server import RunningServer
from rawclient import RawDevice

pytestmark = needs.mark(needs.libwbxml())

PASSWORD = "deleted-Pa55word"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, Any]]:
    # a long poll interval: the phone's request reaches the CRM before the poller has
    # seen the deletion, which is the case that was lost
    with started(tmp_path_factory, "crm", "deleted", ["dana141", "dana161"], PASSWORD,
                 poll=60) as s:
        yield s


@pytest.mark.parametrize("version", ["14.1", "16.1"])
def test_change_and_delete_of_records_the_crm_deleted(site: tuple[RunningServer, Any],
                                                      version: str) -> None:
    srv, crm = site
    user = "dana" + version.replace(".", "")     # loaded at its first Sync: after these
    first = crm("add_record", module="Contacts", owner=user,
                fields={"lastname": f"Gone{version}", "firstname": "Soon"})
    second = crm("add_record", module="Contacts", owner=user,
                 fields={"lastname": f"Also{version}", "firstname": "Gone"})
    d = RawDevice(srv.url, user, PASSWORD, f"del{version.replace('.', '')}", version=version)
    d.provision()
    contacts = d.folders()["Contacts"]
    key, items, _, _ = d.pull(contacts, d.initial(contacts))
    by_name = {n.text_of("Contacts:LastName"): sid for sid, n in items.items()}
    gone, also = by_name[f"Gone{version}"], by_name[f"Also{version}"]
    crm("delete_record", id=first)
    crm("delete_record", id=second)
    r = d.sync(contacts, key, "<GetChanges>0</GetChanges><Commands>"
                              f"<Change><ServerId>{gone}</ServerId><ApplicationData>"
                              "<K:LastName>Edited</K:LastName></ApplicationData></Change>"
                              f"<Delete><ServerId>{also}</ServerId></Delete></Commands>")
    assert r is not None
    coll = r.find("AirSync:Collections/AirSync:Collection")
    assert coll is not None and coll.text_of("AirSync:Status") == "1"
    answers = {(c.tag, c.text_of("AirSync:ServerId")): c.text_of("AirSync:Status")
               for c in (coll.find("AirSync:Responses").children
                         if coll.find("AirSync:Responses") else [])}
    assert answers.get(("AirSync:Change", gone)) == "8"
    assert ("AirSync:Delete", also) not in answers          # a success needs no answer
    key = coll.text_of("AirSync:SyncKey") or key
    _, items, deleted, _ = d.pull(contacts, key)
    assert gone in deleted and gone not in items
    assert crm("live", module="Contacts", owner=user) == [] or all(
        r["lastname"] not in (f"Gone{version}", "Edited") for r in crm(
            "live", module="Contacts", owner=user))

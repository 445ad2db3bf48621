"""EAS ApplicationData trees ↔ canonical item dicts, and the rules around them.

* ``to_eas``: a stored item → the children of ``AirSync:ApplicationData`` (or
  ``ItemOperations:Properties``) for one protocol version, body preferences and device.
* ``from_eas``: what a client sent → a canonical dict.  Absent properties are absent;
  a property the client sent *empty* is ``""`` (``[]`` for lists, a body with empty
  Data) so that ``merge_change`` can tell "delete it" from "not sent" when ghosting.
  ``merge_change(cls, {}, new, None)`` gives the clean dict to store for an Add.
* ``merge_change``: the Supported/ghosting rules of a Sync Change (notes 5.4).
* ``apply_instance_change``: 16.x Change/Delete of one occurrence (InstanceId).
* ``filter_window``: Sync FilterType → the window of ``IItemStore.changes_since``.
"""

from __future__ import annotations

import calendar as _cal
from datetime import UTC, datetime, timedelta
from typing import Any

from easync.items import contact, event, task
from easync.items._common import (
    DROPPED,
    BodyPreference,
    DeviceQuirks,
    ItemError,
    body_preference,
    body_preferences,
    is_empty,
    strip_empty,
    to_compact,
)
from easync.wbxml.element import Element

__all__ = [
    "BodyPreference",
    "DeviceQuirks",
    "ItemError",
    "apply_instance_change",
    "body_preference",
    "body_preferences",
    "filter_window",
    "from_eas",
    "merge_change",
    "supported_names",
    "to_eas",
]

CLASSES = ("Contacts", "Calendar", "Tasks")
_MODULES = {"Contacts": contact, "Calendar": event, "Tasks": task}
# Properties that only follow another one (a Supported list never names them).
_FOLLOWERS = {"TimezoneId": "Timezone", "LocationDetails": "Location"}
# Kept from the stored item whatever the client sends or leaves out.
_SERVER_KEPT = {"Calendar": frozenset({"UID", "ClientUid"}), "Contacts": frozenset(),
                "Tasks": frozenset()}


def _module(cls: str) -> Any:
    try:
        return _MODULES[cls]
    except KeyError:
        raise ValueError(f"unsupported class {cls!r}") from None


def to_eas(cls: str, data: dict[str, Any], version: str,
           prefs: list[BodyPreference] | None = None,
           quirks: DeviceQuirks | None = None) -> list[Element]:
    """Children of ApplicationData/Properties for a server→client Add, Change or Fetch."""
    return _module(cls).to_eas(data or {}, version, prefs, quirks or DeviceQuirks())


def from_eas(cls: str, appdata: Element, version: str,
             quirks: DeviceQuirks | None = None) -> dict[str, Any]:
    """The canonical dict of a client's ApplicationData.  ItemError for invalid data.

    When ``quirks.protocol_version`` is unset it is set to ``version`` (the request's
    version), which ``merge_change`` needs for the 16.x Exceptions rule.
    """
    quirks = quirks if quirks is not None else DeviceQuirks()
    if not quirks.protocol_version:
        quirks.protocol_version = version
    try:
        return _module(cls).from_eas(appdata, version, quirks)
    except ItemError:
        raise
    except (ValueError, TypeError, OverflowError) as exc:   # defensive: bad data, not a bug
        raise ItemError(str(exc)) from exc


def supported_names(supported: Element) -> list[str]:
    """Canonical property names listed in a Collection's ``AirSync:Supported``."""
    out: list[str] = []
    for child in supported.children:
        name = child.tag.partition(":")[2] or child.tag
        if name == "NativeBodyType":
            continue
        if name not in out:
            out.append(name)
    return out


def merge_change(cls: str, old: dict[str, Any], new: dict[str, Any], supported: list[str] | None,
                 quirks: DeviceQuirks | None = None) -> dict[str, Any]:
    """The item to store after a client Change ``new`` of stored item ``old`` (an Add
    is a Change of ``{}``).

    ``supported`` None: no ghosting, properties absent from ``new`` are cleared;
    ``[]``: every ghostable property absent from ``new`` is kept; a list: listed
    properties absent from ``new`` are cleared, the others kept (MS-ASCMD 2.2.3.179).
    Only Contacts and Calendar properties can be ghosted; from 16.0 every top-level
    Calendar property a Change leaves out is ghosted, whatever Supported said
    (MS-ASCAL 3.1.5.3).  Whatever the mode: UID/ClientUid stay; a property the client
    sent but that could not be read (``DROPPED``) keeps its stored value; an empty
    Picture from a device that sends it on every edit (iOS) keeps the picture;
    TimezoneId goes with Timezone (and stays when the device drops Timezone); 16.x
    master Changes keep Exceptions unless the start, end or pattern changed
    (MS-ASCAL 2.2.2.22).  The result is normalised (``event.normalize``).
    """
    quirks = quirks or DeviceQuirks()
    ghostable = cls in ("Contacts", "Calendar")
    listed = set(supported or [])
    ghost_all = cls == "Calendar" and quirks.is_16
    unread = set(new.get(DROPPED) or ())
    new_written = new.get(contact.WRITTEN) or {}
    new = {k: v for k, v in new.items() if k not in (DROPPED, contact.WRITTEN)}
    result: dict[str, Any] = dict(new)

    def kept(key: str) -> bool:
        if key in _SERVER_KEPT.get(cls, ()) or key in unread or key == contact.WRITTEN:
            return True
        if ghost_all:
            return True
        if not ghostable or supported is None:
            return False
        return not supported or key not in listed

    for key, value in old.items():
        if key in new or key in _FOLLOWERS:
            continue
        if kept(key):
            result[key] = value
    for follower, leader in _FOLLOWERS.items():
        if leader in new:
            if follower not in new:
                result.pop(follower, None)
        elif leader in result and follower in old:      # leader kept: keep its follower
            result[follower] = old[follower]
    if cls == "Calendar":
        if old.get("UID"):
            result["UID"] = old["UID"]
        if "Timezone" not in new and old.get("TimezoneId"):
            result["TimezoneId"] = old["TimezoneId"]    # the zone is still the item's zone
        _recurrence_type_from_stored(result, old)
        if "Exceptions" not in new and old.get("Exceptions"):
            changed = any(new.get(k) not in (None, "") and new.get(k) != old.get(k)
                          for k in ("StartTime", "EndTime", "Recurrence"))
            if changed or ("Recurrence" in new and is_empty(new["Recurrence"])):
                result.pop("Exceptions", None)
            elif quirks.is_16:
                result["Exceptions"] = old["Exceptions"]
        if is_empty(result.get("Recurrence")):
            result.pop("Exceptions", None)              # no series, no exceptions
    if (cls == "Contacts" and new.get("Picture") == "" and quirks.sends_empty_picture
            and old.get("Picture")):
        result["Picture"] = old["Picture"]
    if cls == "Contacts":
        _merge_written(result, old, new, new_written)
    result = strip_empty(result)
    if cls == "Calendar":
        event.normalize(result)
    return result


def _merge_written(result: dict[str, Any], old: dict[str, Any], new: dict[str, Any],
                   new_written: dict[str, Any]) -> None:
    """Which device wrote each stored Birthday/Anniversary in which form (see
    ``contact.WRITTEN``): a date the client sent replaces the memory of the old one."""
    written = dict(old.get(contact.WRITTEN) or {})
    for name in contact.DATE_FIELDS:
        if name in new:
            written.pop(name, None)
            if name in new_written:
                written[name] = new_written[name]
        if is_empty(result.get(name)):
            written.pop(name, None)
    if written:
        result[contact.WRITTEN] = written
    else:
        result.pop(contact.WRITTEN, None)


def _recurrence_type_from_stored(result: dict[str, Any], old: dict[str, Any]) -> None:
    """A 16.x Recurrence sent without Type and without pattern fields: the stored
    series' pattern with what the client sent over it (a new event: daily)."""
    rec = result.get("Recurrence")
    if not (isinstance(rec, dict) and rec.pop(event.TYPE_FROM_STORED, None)):
        return
    stored = old.get("Recurrence")
    if isinstance(stored, dict) and stored.get("Type") is not None:
        result["Recurrence"] = {**stored, **rec}
    else:
        rec["Type"] = 0


def _instance_key(instance_id: str) -> str:
    try:
        return to_compact(instance_id)
    except ItemError:
        raise ItemError(f"bad InstanceId {instance_id!r}") from None


def apply_instance_change(old: dict[str, Any], instance_id: str,
                          new: dict[str, Any] | None) -> dict[str, Any]:
    """16.x Change/Delete with AirSyncBase:InstanceId: set one occurrence's exception.

    ``new`` None deletes the occurrence; otherwise the exception gets the exception
    properties of ``new`` (the others inherit from the series).  ItemError if the
    item does not recur, the id is not a date, or the 256-exception limit is hit.
    """
    if not isinstance(old.get("Recurrence"), dict):
        raise ItemError("InstanceId change on an item that does not recur")
    key = _instance_key(instance_id)
    if old.get("AllDayEvent") in (1, "1"):
        # 16.x clients name an all-day occurrence by its date form (event.date_form)
        try:
            key = event.from_date_form(key, event.event_zone(old))
        except (ValueError, OverflowError):
            raise ItemError(f"bad InstanceId {instance_id!r}") from None
    if new is None:
        exc: dict[str, Any] = {"ExceptionStartTime": key, "Deleted": 1}
    else:
        exc = {"ExceptionStartTime": key}
        for name, value in new.items():
            if name in event.EXCEPTION_FIELDS and not is_empty(value):
                exc[name] = value
    others = [e for e in old.get("Exceptions") or []
              if isinstance(e, dict) and _safe_key(e) != key]
    if len(others) + 1 > event.MAX_EXCEPTIONS:
        raise ItemError("too many exceptions")
    result = dict(old)
    result["Exceptions"] = sorted(others + [exc], key=lambda e: str(e["ExceptionStartTime"]))
    return event.normalize(result)


def _safe_key(exc: dict[str, Any]) -> str | None:
    try:
        return to_compact(str(exc.get("ExceptionStartTime") or ""))
    except ItemError:
        return None


def _months_back(now: datetime, months: int) -> datetime:
    month0 = now.month - 1 - months
    year = now.year + month0 // 12
    month = month0 % 12 + 1
    day = min(now.day, _cal.monthrange(year, month)[1])
    return now.replace(year=year, month=month, day=day)


def filter_window(filter_type: int, cls: str,
                  now: float) -> tuple[int | None, int | None] | None:
    """Sync FilterType → ``window`` for ``IItemStore.changes_since`` (None: everything).

    Calendar 4/5/6/7: events ending before now - 2 weeks / 1 / 3 / 6 months are left
    out; Tasks 8: incomplete tasks only.
    """
    try:
        ft = int(filter_type)
    except (TypeError, ValueError):
        return None
    if cls == "Calendar" and ft in (4, 5, 6, 7):
        now_dt = datetime.fromtimestamp(now, UTC)
        if ft == 4:
            start = now_dt - timedelta(weeks=2)
        else:
            start = _months_back(now_dt, {5: 1, 6: 3, 7: 6}[ft])
        return int(start.timestamp()), None
    if cls == "Tasks" and ft == 8:
        return None, 1
    return None

"""What every store agrees on, whatever keeps the data (``easync.interfaces``).

The server id forms of folders (``"7"``) and items (``"7:42"``), which device fields a
store writes and how they are kept, how ``update_user``'s keywords change a user, and
what a batch of ``apply`` ops does to a folder's rows (``plan_ops``).
The SQL store (``backends.sql``) and the in-memory store (``easync.testing``) both use
these rules, so the one contract suite (tests/test_store_contract.py) checks one set of
them rather than two copies that could drift apart.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from easync.model import Op, OpResult

__all__ = ["ACCESS_VALUES", "DEVICE_COLUMNS", "DEVICE_FIELDS", "USER_FIELDS", "WIPE_VALUES", "device_values",
           "dumps", "feed_cursor", "named_rows", "new_rows", "parse_folder_id", "parse_item_id",
           "plan_ops", "user_changes"]

# What a device record holds (IStateStore.get_device), in the SQL store's column order.
DEVICE_COLUMNS = ("device_id", "device_type", "user_agent", "policy_key", "wipe", "info",
                  "blocked", "first_seen", "last_seen", "last_sync", "policy_hash",
                  "policy_status", "access", "protocol_version")
# What save_device may write (the id names the record, it is not a field).
DEVICE_FIELDS = frozenset(DEVICE_COLUMNS) - {"device_id"}
WIPE_VALUES = ("none", "pending", "done")
# A device's own access decision (easync.deviceaccess); None: the rules decide.
ACCESS_VALUES = (None, "allow", "block", "quarantine")
# update_user keywords kept as the user's own fields; any other keyword is a key of extra.
USER_FIELDS = ("password_hash", "email", "activesync")


def dumps(value: Any) -> str:
    """JSON as the stores keep it: compact, ASCII-escaped (a lone surrogate survives)."""
    return json.dumps(value, separators=(",", ":"))


def feed_cursor(name: str, state: Mapping[str, Any]) -> int | None:
    """What a sync state blob still needs of its folder's change feed: the tombstones
    with a modseq above the returned number (its ``cursor``: below it the feed is never
    read again for this state, and the device's own writes are above it).  At cursor
    0 the feed's tombstones of items the device never got are skipped: only those of
    its own writes count (those above the oldest of them).  Never below the state's
    ``base``: the folder's ``purged`` mark when the state began, as everything the
    state got came after it.  None when it needs none: not a
    collection's state (``name`` not ``sync:…``), or one holding nothing yet (cursor
    0, no writes of its own).  A store keeps every tombstone above the lowest
    ``feed_cursor`` of a folder's states; one whose ``feed_cursor`` is below the
    folder's ``purged`` mark may have missed a delete (``easync.syncengine``:
    Status 3)."""
    if not name.startswith("sync:"):
        return None
    try:
        cursor = int(state.get("cursor") or 0)
        own = state.get("own") or {}
        if cursor > 0:
            floor = cursor
        elif own:
            floor = min(abs(int(v)) for v in own.values())
        else:
            return None
        # ``base``: the folder's purged mark when the state began (SyncKey 0): what was
        # deleted up to there it never held
        return max(floor, int(state.get("base") or 0))
    except (TypeError, ValueError, AttributeError):
        return 0


def refuse_expired(write: Any, purged: int) -> None:
    """``StateExpired`` when the folder's purged mark ``purged`` has passed the
    ``feed_from`` of a sync-state write (``easync.model.StateWrite``)."""
    if write.feed_from is not None and purged > write.feed_from:
        from easync.errors import StateExpired

        raise StateExpired(f"{write.name}: purged up to {purged}, state needs the feed "
                           f"from {write.feed_from}")


def refuse_replaced(write: Any, stored: dict[str, Any] | None) -> None:
    """``StateConflict`` when a sync-state write (``easync.model.StateWrite``) names
    the state it replaces and ``stored`` (the state stored now, read in the write's
    transaction) is another one: another request of the device wrote it since this
    one read it."""
    if write.replaces is None:
        return
    now = None if stored is None else (stored.get("epoch"), stored.get("key"))
    if now != tuple(write.replaces):
        from easync.errors import StateConflict

        raise StateConflict(f"{write.name}: replaced meanwhile")


def purged_folder(write: Any) -> int | None:
    """The folder id whose purged mark a sync-state write must be checked against
    (None: no check)."""
    if write.feed_from is None or not write.name.startswith("sync:"):
        return None
    return parse_folder_id(write.name[5:])


def parse_item_id(server_id: str | None) -> tuple[int, int] | None:
    """(folder id, row id) of an item server id ``"F:R"``, or None if malformed."""
    if not server_id or not isinstance(server_id, str):
        return None
    folder, sep, row = server_id.partition(":")
    if not sep or not folder.isdigit() or not row.isdigit():
        return None
    return int(folder), int(row)


def parse_folder_id(server_id: str | None) -> int | None:
    """The folder id of a folder server id ``"F"``, or None if malformed."""
    if not server_id or not isinstance(server_id, str) or not server_id.isdigit():
        return None
    return int(server_id)


def device_values(fields: Mapping[str, Any]) -> dict[str, Any]:
    """``save_device``'s keywords as stored (info as JSON, blocked as 0/1, the policy key
    as an int; ``access`` sets ``blocked`` too); ValueError for an unknown field, a
    ``wipe`` not in WIPE_VALUES or an ``access`` not in ACCESS_VALUES."""
    unknown = set(fields) - DEVICE_FIELDS
    if unknown:
        raise ValueError(f"unknown device fields: {sorted(unknown)}")
    if "wipe" in fields and fields["wipe"] not in WIPE_VALUES:
        raise ValueError(f"wipe must be one of {WIPE_VALUES}")
    if "access" in fields and fields["access"] not in ACCESS_VALUES:
        raise ValueError(f"access must be one of {ACCESS_VALUES}")
    values: dict[str, Any] = {}
    for k, v in fields.items():
        if k == "info":
            v = dumps(v or {})
        elif k == "blocked":
            v = int(bool(v))
        elif k == "policy_key" and v is not None:
            v = int(v)
        values[k] = v
    if "access" in fields:
        # ``blocked`` (kept from schema 1) says "an administrator's decision keeps this
        # device": retention never forgets it (IRetentionStore.forget_devices)
        values["blocked"] = int(fields["access"] in ("block", "quarantine"))
    return values


def user_changes(extra: Mapping[str, Any], fields: Mapping[str, Any]) -> dict[str, Any]:
    """The stored values ``update_user(**fields)`` writes for a user whose ``extra`` is
    ``extra``: USER_FIELDS as given (activesync as 0/1), ``extra=`` merged key by key and
    any other keyword set in extra (None removes the key); ``"extra"`` is the new extra
    as JSON.  ValueError for ``id`` or ``name``, which never change."""
    merged = dict(extra)
    changes: dict[str, Any] = {}
    for key, value in fields.items():
        if key in USER_FIELDS:
            changes[key] = int(bool(value)) if key == "activesync" else value
        elif key == "extra":
            for k, v in (value or {}).items():
                if v is None:
                    merged.pop(k, None)
                else:
                    merged[k] = v
        elif key in ("id", "name"):
            raise ValueError(f"cannot change {key}")
        elif value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    changes["extra"] = dumps(merged)
    return changes


# -- IItemStore.apply: what a batch of ops does, whatever keeps the rows --------------------

def named_rows(ops: Sequence[Op], folder_id: int) -> list[int]:
    """The row ids of folder ``folder_id`` that the batch's changes and deletes name (the
    rows a store reads before ``plan_ops``)."""
    named: list[int] = []
    for op in ops:
        if op.kind in ("change", "delete"):
            parsed = parse_item_id(op.server_id)
            if parsed and parsed[0] == folder_id:
                named.append(parsed[1])
    return named


def new_rows(ops: Sequence[Op]) -> int:
    """How many rows the batch's adds make (the ids a store allocates for ``plan_ops``)."""
    return sum(1 for op in ops if op.kind == "add" and isinstance(op.data, dict))


def plan_ops(ops: Sequence[Op], folder_id: int, folder_cls: str, live: dict[int, str],
             base: int, new_ids: Iterator[int]
             ) -> tuple[dict[int, list[Any]], list[OpResult]]:
    """What ``apply(ops)`` does to folder ``folder_id`` (class ``folder_cls``):
    ``live`` maps the named rows that exist now to their class (updated as the ops go),
    op i gets modseq ``base + i + 1``, adds take their ids from ``new_ids``.  Gives the
    final state of each touched row, ``{id: [cls, data | None (deleted), modseq,
    created modseq | None (an existing row)]}``, and one OpResult per op (a change or
    delete of a row not live: "notfound"; an add or change without a dict, or another
    kind: "invalid")."""
    final: dict[int, list[Any]] = {}
    results: list[OpResult] = []
    for i, op in enumerate(ops):
        m = base + i + 1
        if op.kind == "add":
            if not isinstance(op.data, dict):
                results.append(OpResult(op.ref, None, False, 0, "invalid"))
                continue
            iid = next(new_ids)
            cls = op.cls or folder_cls
            final[iid] = [cls, op.data, m, m]
            live[iid] = cls
            results.append(OpResult(op.ref, f"{folder_id}:{iid}", True, m))
        elif op.kind in ("change", "delete"):
            parsed = parse_item_id(op.server_id)
            named = parsed[1] if parsed and parsed[0] == folder_id else None
            if named is None or named not in live:
                results.append(OpResult(op.ref, op.server_id, False, 0, "notfound"))
                continue
            if op.kind == "change" and not isinstance(op.data, dict):
                results.append(OpResult(op.ref, op.server_id, False, 0, "invalid"))
                continue
            prev = final.get(named)
            created = prev[3] if prev else None
            if op.kind == "change":
                final[named] = [live[named], op.data, m, created]
            else:
                final[named] = [live[named], None, m, created]
                del live[named]
            results.append(OpResult(op.ref, op.server_id, True, m))
        else:
            results.append(OpResult(op.ref, op.server_id, False, 0, "invalid"))
    return final, results

"""The contracts between the protocol server and its stores.

The protocol side (``easync.http``, ``easync.commands``, ``easync.syncengine``)
only ever talks to these interfaces; ``backends/*`` implement them.  All
methods returning ``Deferred`` must never block the reactor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

from easync.model import ChangeBatch, Folder, Item, KeptItem, Op, OpResult, StateWrite, User
from easync.requestread import RequestRead, RequestSnapshot


class IUserStore(Interface):
    """Local accounts (always in easync's own SQL database)."""

    def add_user(name: str, password_hash: str | None, email: str | None,
                 activesync: bool) -> Deferred[User]:
        """Create a user and its default folders. Raises KeyError if the name exists."""

    def get_user(name: str) -> Deferred[User | None]:
        """The user with this (case-insensitive) name, or None."""

    def list_users() -> Deferred[list[User]]:
        """All users, ordered by name."""

    def update_user(name: str, **fields: Any) -> Deferred[User]:
        """Set password_hash, email, activesync or keys of ``extra``. KeyError if missing."""

    def find_users(query: str, limit: int) -> Deferred[list[User]]:
        """Up to ``limit`` users with a directory token (``easync.lookup.user_tokens``:
        login name, e-mail address, display name and its words) that starts with
        ``query`` once normalised (``easync.lookup.prefix_key``); none for an empty
        query.  Which ones, when more match: the first in token order.  One indexed
        range query with a LIMIT in the store's thread: O(log users + limit)."""

    def find_users_by_emails(emails: list[str], limit: int) -> Deferred[dict[str, list[User]]]:
        """For each address (normalised by ``easync.lookup.indexable_email``; others
        are left out), up to ``limit`` users whose address it is (their e-mail, or
        their login name when they have none).  One indexed query for all."""


class IItemStore(Interface):
    """A user's folders and items, with a change feed."""

    def list_folders(user: User) -> Deferred[list[Folder]]:
        """All folders of the user (defaults first), with their current modseq."""

    def hierarchy_version(user: User) -> Deferred[int]:
        """A number that grows whenever a folder is created, renamed or deleted."""

    def create_folder(user: User, parent_id: str, name: str, type: int) -> Deferred[Folder]:
        """Create a user folder. ValueError('exists') if the name is taken under parent,
        ValueError('parent') if parent_id is not "0" nor a folder."""

    def update_folder(user: User, server_id: str, parent_id: str, name: str) -> Deferred[Folder]:
        """Rename/move. KeyError if missing, ValueError('special') for default folders,
        ValueError('exists'), ValueError('parent') as for create."""

    def delete_folder(user: User, server_id: str) -> Deferred[None]:
        """Delete a user folder and its items. KeyError if missing, ValueError('special')."""

    def get_items(user: User, server_ids: list[str]) -> Deferred[list[Item]]:
        """The live items among ``server_ids`` (missing ones are left out)."""

    def changes_since(user: User, folder_id: str, cursor: int, limit: int,
                      window: tuple[int | None, int | None] | None = None,
                      held_upto: int | None = None) -> Deferred[ChangeBatch]:
        """Up to ``limit`` changes in the folder with modseq > cursor, oldest first.

        Only the newest state of each item appears (the feed is keyed by item).
        ``window`` (start_ts, end_ts) in Unix seconds, when given, leaves out live
        calendar items that end before start_ts (a series ends with its last
        occurrence; an unbounded one never) or start after end_ts, and for tasks
        ``(None, 1)`` means only incomplete tasks.  With ``held_upto``, a live item
        outside the window that was created at or before that modseq is not left out
        but returned as ``Change(soft=True, item=None)`` (a device may hold an older
        version of it).  Cost: O(limit) returned entries.
        """

    def window_changes(user: User, folder_id: str, after: int, upto: int,
                       old: tuple[int | None, int | None] | None,
                       new: tuple[int | None, int | None] | None,
                       limit: int) -> Deferred[ChangeBatch]:
        """What moving a device from window ``old`` to window ``new`` (as in
        ``changes_since``; None: everything) means for the live items with
        after < modseq <= upto: ``Change(enters=True)`` for those inside ``new`` only,
        ``Change(soft=True)`` for those inside ``old`` only (``item`` None), oldest
        first, at most ``limit``; ``high`` is where to go on from.  One indexed walk
        of the folder in the store's thread; the caller sees O(limit)."""

    def find_by_uids(user: User, folder_id: str, uids: list[str]) -> Deferred[dict[str, Item]]:
        """The live items of the folder by UID (calendar events), for the UIDs given
        that have one (the oldest item when several share a UID)."""

    def count_changes_since(user: User, folder_id: str, cursor: int) -> Deferred[int]:
        """How many changes ``changes_since`` would return with no limit."""

    def apply(user: User, folder_id: str, ops: list[Op],
              state: StateWrite | None = None) -> Deferred[list[OpResult]]:
        """Apply writes to one folder; with ``state``, save that sync-state blob in the
        same transaction (all or nothing).  Each write gets a new modseq.  A change or
        delete of a missing item gives ``OpResult(ok=False, error="notfound")``.  An
        add with ``Op.restores`` marks that kept row (``IDeletedStore``) restored with
        the item where the item is recorded, and gives ``error="restored"`` (no item)
        for a row restored already."""

    def move_item(user: User, server_id: str, dst_folder_id: str) -> Deferred[str]:
        """Move an item, returning its new server id. KeyError('src'|'dst'),
        ValueError('class') when the destination holds another class."""

    def find_contacts_by_emails(user: User, emails: list[str], limit: int
                                ) -> Deferred[dict[str, list[Item]]]:
        """For each address (normalised by ``easync.lookup.indexable_email``; others
        are left out, and an address no contact has is absent from the answer), up
        to ``limit`` live contacts of the user (any Contacts folder) that have it as
        Email1/2/3Address, oldest first.  One indexed query for all the addresses,
        each bounded by ``limit``: O(addresses * (log n + limit))."""

    def find_contacts_by_name(user: User, prefix: str, limit: int, *,
                              recipients: bool = True, folder_id: str | None = None
                              ) -> Deferred[list[Item]]:
        """Up to ``limit`` live contacts of the user with a token starting with
        ``prefix`` once normalised; none for an empty prefix.  With ``recipients``
        (ResolveRecipients) only contacts that have an e-mail address, by a name token
        (``easync.lookup.contact_tokens``); without (Find) every contact, by a name
        token or an e-mail address (``easync.lookup.contact_index``), and with
        ``folder_id`` (a Contacts folder of the user; ``recipients`` must then be
        False) only that folder's.  Which ones, when more match: the first in token
        order.  One indexed range walk: O(log n + limit)."""


class IStateStore(Interface):
    """Devices and per-device sync state (always SQL)."""

    def get_device(user: User, device_id: str) -> Deferred[dict[str, Any] | None]:
        """The device record: keys device_id, device_type, user_agent, policy_key,
        wipe ('none'|'pending'|'done'), info (dict), first_seen, last_seen, last_sync,
        blocked (bool), access (None|'allow'|'block'|'quarantine': its own decision),
        protocol_version (the highest EAS version it spoke, or None) — or None if
        never seen."""

    def save_device(user: User, device_id: str, *, max_devices: int = 0,
                    **fields: Any) -> Deferred[dict[str, Any]]:
        """Create or update the device record with these fields; returns it.  With
        ``max_devices`` (0: no cap), a new device of a user who has that many already
        fails with ``easync.errors.TooManyDevices`` and nothing is stored; the count
        and the insert are one transaction."""

    def list_devices(user: User | None) -> Deferred[list[dict[str, Any]]]:
        """Devices of one user (or all, each with a 'user' key)."""

    def delete_device(user: User, device_id: str) -> Deferred[None]:
        """Forget a device and all its sync state."""

    def set_device_access(user: User, device_id: str, access: str | None
                          ) -> Deferred[dict[str, Any] | None]:
        """Set the device's own access decision (``easync.deviceaccess``: "allow",
        "block", "quarantine", or None: the rules decide; ValueError for another);
        the device record, or None (nothing written) for a device never seen."""

    def list_device_rules(user: User | None) -> Deferred[list[Any]]:
        """The device access rules (``easync.deviceaccess.Rule``) that apply to
        ``user``'s devices, its own and everyone's (None: every rule), by id."""

    def add_device_rule(user: User | None, kind: str, pattern: str, action: str,
                        created_by: str | None = None) -> Deferred[Any]:
        """Add a rule for ``user`` (None: everyone); the ``Rule`` with its id.
        ValueError (nothing stored) for a rule ``easync.deviceaccess.check_rule``
        refuses."""

    def remove_device_rule(rule_id: int) -> Deferred[Any]:
        """Remove a rule; the ``Rule`` removed, or None when there was none."""

    def get_state(user: User, device_id: str, name: str) -> Deferred[dict[str, Any] | None]:
        """A state blob saved by ``save_state`` or ``IItemStore.apply``."""

    def save_state(user: User, write: StateWrite) -> Deferred[None]:
        """Save a state blob."""

    def read_request(read: RequestRead) -> Deferred[RequestSnapshot]:
        """What a request reads before its command runs (``easync.requestread``), in
        one transaction: each part as the single-purpose call gives it, the states
        ``read.follow`` names included (``followed_states``: Ping's cached folders).
        A store without the auth tables leaves ``familiar`` None and ``counters``
        empty."""


class IHoldStore(Interface):
    """Where the long polls held by each process are written down, so that
    ``easync-admin`` can list them (``easync.push.HoldRecorder`` writes them)."""

    def record_holds(node: str, starts: Sequence[tuple[int, str, str, float, float]],
                     ends: Sequence[tuple[int, str, float]]) -> Deferred[None]:
        """One transaction: remove the rows of ``ends`` (user id, device id, started)
        that ``node`` wrote, then write ``starts`` (user id, device id, command,
        started, deadline) as held on ``node`` (replacing the device's row)."""

    def clear_holds(node: str) -> Deferred[None]:
        """Forget every row of ``node``, and rows of any node whose deadline passed."""

    def list_holds(user: User | None) -> Deferred[list[dict[str, Any]]]:
        """The held-request rows (keys user, device_id, node, command, started,
        deadline) of one user or of all, by user name then device id."""


@dataclass(frozen=True, slots=True)
class PurgeStep:
    """What one retention batch did (``IRetentionStore``)."""

    done: int                   # rows purged (tombstones) or devices forgotten
    more: bool                  # more to do now: call again (with ``after``)
    after: int = 0              # where the next batch of a walk resumes
    busy: bool = False          # another process holds the retention lock: nothing done


class IRetentionStore(Interface):
    """What keeps a long-running store small (``easync.retention``): tombstones and
    devices nobody needs any more, each call one short transaction of at most
    ``limit`` rows.  Several processes on one database may call these at once: each
    batch takes the store's retention lock and answers ``busy`` without waiting when
    another holds it."""

    def purge_synced(after: int, limit: int) -> Deferred[PurgeStep]:
        """Tombstones every sync state of their folder has passed (modseq at most the
        lowest ``easync.storerules.feed_cursor`` of the folder's states not already
        behind its ``purged`` mark; all of them when no state needs any), walking the
        folders by id from after ``after``; ``PurgeStep.after`` is where to resume.
        The folder's ``purged`` mark rises to the highest modseq purged."""

    def purge_older(before: float, limit: int) -> Deferred[PurgeStep]:
        """Tombstones made before ``before`` (Unix time), whoever still needs them:
        each folder's ``purged`` mark rises to the highest modseq purged, so a sync
        state that needed one is answered Status 3 (``easync.syncengine``)."""

    def forget_devices(unseen_before: float, limit: int) -> Deferred[PurgeStep]:
        """Devices last seen before ``unseen_before``, with their sync states and held
        request rows (as ``IStateStore.delete_device``); never a blocked device or
        one with a wipe pending (an administrator's decision does not expire)."""


class IDeletedStore(Interface):
    """What devices deleted, kept for a while (issue #14 point 2; ``easync.deleted``).
    Always SQL (the state database), whatever the item store: the item store writes
    a row when it carries out a delete ``Op`` with ``keep`` set (a device's Sync
    Delete), in the transaction of the delete where it can."""

    def list_deleted(user: User, *, device_id: str | None = None,
                     since: float | None = None, folder_id: str | None = None,
                     restored: bool = False, limit: int = 500) -> Deferred[list[KeptItem]]:
        """The user's kept items, newest first, at most ``limit``: deleted at ``since``
        or later, by that device, from that folder; restored ones only with
        ``restored``.  One range of an index (user, deleted_at)."""

    def get_deleted(user: User, ids: Sequence[int]) -> Deferred[list[KeptItem]]:
        """The user's kept items among ``ids`` (another user's are left out)."""

    def claim_restore(user: User, kept_ids: Sequence[int], now: float
                      ) -> Deferred[list[KeptItem]]:
        """Mark the user's kept items among ``kept_ids`` as being restored, those not
        restored nor being restored (a claim older than a timeout, never finished,
        counts as none); returns the ones claimed.  One transaction: of two concurrent
        claims of a row one wins."""

    def finish_restore(done: Sequence[tuple[int, str]]) -> Deferred[None]:
        """The claimed items ``(kept id, server id)`` were re-created as those ids."""

    def release_restore(kept_ids: Sequence[int]) -> Deferred[None]:
        """The claimed items could not be re-created: they may be restored again."""

    def count_live(user: User, folder_id: str) -> Deferred[int]:
        """How many live items the folder holds (an index count, no item read)."""

    def purge_deleted(before: float, limit: int) -> Deferred[PurgeStep]:
        """Forget up to ``limit`` kept items deleted before ``before`` (Unix time),
        oldest first, in one short transaction."""


@dataclass(frozen=True, slots=True)
class ChangeHint:
    """What a published change is, when the publisher knows: the folder's modseq once
    it committed and, for a device's own write (its Sync), that device.  A held Ping
    that knows the device's cursor in the folder answers from it without reading the
    store; a change published without a hint is looked up as before."""

    modseq: int
    device_id: str | None = None    # None: not one device's write (an import, merged)

    @staticmethod
    def of(results: Sequence[OpResult], device_id: str | None) -> ChangeHint | None:
        """The hint for a committed ``apply``: None when nothing was written."""
        top = max((r.modseq for r in results if r.ok), default=0)
        return ChangeHint(top, device_id) if top > 0 else None

    def merge(self, other: ChangeHint | None) -> ChangeHint | None:
        """Two changes of one folder as one hint: None if either is unknown; the
        device only if both are that device's."""
        if other is None:
            return None
        device = self.device_id if self.device_id == other.device_id else None
        return ChangeHint(max(self.modseq, other.modseq), device)


class IChangeListener(Interface):
    """What ``IChangeNotifier.listen`` registers (``easync.push.Hold``)."""

    def on_change(folder_id: str, hint: ChangeHint | None) -> None:
        """A watched folder changed.  Called in the publisher's call: keep it cheap."""


class IChangeNotifier(Interface):
    """'Folder F of user U changed' — the push hub."""

    def publish(user_id: int, folder_id: str, hint: ChangeHint | None = None) -> None:
        """Announce a committed change (with ``hint``: what it is)."""

    def listen(user_id: int, folder_ids: list[str], listener: IChangeListener) -> None:
        """Call ``listener.on_change(folder, hint)`` at every change to these folders
        (each change once, hint included) until ``unlisten``.  The folder ``"*"``
        (``easync.notify.ANY``): every change of the user."""

    def unlisten(user_id: int, listener: IChangeListener) -> None:
        """Stop calling ``listener`` (idempotent)."""

    waiting = Attribute("Number of listeners currently listening.")


class IAuthStore(Interface):
    """What ``easync.auth`` keeps besides the user records: server settings, the audit
    log, login throttling, e-mail codes and TOTP replay protection.  Shared by every
    process on the database; each method is one transaction."""

    def get_setting(name: str) -> Deferred[str | None]:
        """A server-wide setting, or None if never set."""

    def set_setting(name: str, value: str | None) -> Deferred[None]:
        """Set (or, with None, remove) a server-wide setting."""

    def add_audit(at: float, actor: str, user_name: str | None, action: str, detail: str,
                  address: str) -> Deferred[None]:
        """Append one audit entry (never a secret in any field)."""

    def list_audit(user_name: str | None, limit: int) -> Deferred[list[dict[str, Any]]]:
        """The newest ``limit`` entries (of one user, or all), newest first: dicts with
        at, actor, user, action, detail, address."""

    def throttle_get(scope: str, name: str) -> Deferred[tuple[int, float, float] | None]:
        """(failures, window_start, locked_until) or None."""

    def throttle_fail(scope: str, name: str, now: float, window: float
                      ) -> Deferred[tuple[int, float]]:
        """Count one failure (a new window when the last began ``window`` seconds ago or
        more); returns (failures in the window, locked_until)."""

    def throttle_lock(scope: str, name: str, until: float) -> Deferred[None]:
        """Lock ``name`` out until ``until`` (the failure count restarts)."""

    def throttle_clear(scope: str, name: str) -> Deferred[None]:
        """Forget the failures and any lockout."""

    def throttle_reserve(counters: Sequence[tuple[str, str, int]], now: float,
                         window: float) -> Deferred[tuple[bool, list[int], float]]:
        """Reserve one attempt on every ``(scope, name, limit)`` counter at once, before
        the password is checked: refused (nothing changed) when one is locked out or
        has ``limit`` failures and pending attempts; else each counter's pending count
        grows by one.  Failures older than ``window`` (since its window began) are
        forgotten.  Returns (reserved, each counter's failures, the latest
        locked_until still in force or 0)."""

    def throttle_confirm(counters: Sequence[tuple[str, str, int]], now: float,
                         first: float, cap: float, memory: float
                         ) -> Deferred[list[tuple[int, float]]]:
        """The reserved attempt was wrong: on each counter the reservation becomes a
        failure; a counter at its limit is locked out for ``first * 2**n`` seconds (at
        most ``cap``), n = its lockouts of the last ``memory`` seconds, and its failures
        restart.  Returns each counter's (failures, seconds of the lockout just set or
        0)."""

    def throttle_release(counters: Sequence[tuple[str, str, int]]) -> Deferred[None]:
        """The reserved attempt was right: give its reservation back on each counter
        (the failures others made stay)."""

    def familiar_get(user: str, device: str, address: str, since: float) -> Deferred[bool]:
        """Whether the DeviceId or the address (either may be empty) logged in
        successfully as ``user`` at ``since`` or later."""

    def familiar_note(user: str, kind: str, value: str, now: float, forget_before: float
                      ) -> Deferred[None]:
        """Record a successful login of ``user`` from a ``kind`` ('device' or 'addr')
        source; the user's records older than ``forget_before`` are dropped."""

    def save_email_code(user_id: int, code_mac: str, sent_at: float, expires_at: float,
                        tries: int) -> Deferred[None]:
        """Replace the user's pending e-mail code."""

    def get_email_code(user_id: int) -> Deferred[dict[str, Any] | None]:
        """The pending code: code_mac, sent_at, expires_at, tries_left, used_at."""

    def spend_email_code_try(user_id: int) -> Deferred[int]:
        """One wrong try: returns the tries left (0: the code is spent)."""

    def use_email_code(user_id: int, code_mac: str, now: float) -> Deferred[bool]:
        """Mark the code used if it is this one and unused; False if it was not."""

    def delete_email_code(user_id: int) -> Deferred[None]:
        """Drop the pending code."""

    def use_totp_step(user_id: int, step: int) -> Deferred[bool]:
        """Record ``step`` as the newest accepted; False if it or a later step already
        was (the code is a replay)."""

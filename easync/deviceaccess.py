"""Device access: allow, block or quarantine a device (issue #14 point 3).

What Exchange calls "Allow/Block/Quarantine" (ABQ).  A device's access state comes
from, in this order (the first that says something decides; Exchange 2010 SP1's
sequence, "Understanding Exchange ActiveSync device access": the personal exemption
for the device, then device access rules from the most specific characteristic to the
least, then the organization's DefaultAccessLevel):

1. the device's own decision (``devices.access``: an administrator's "allow", "block"
   or "quarantine" of that one device of that user: Exchange's per-mailbox
   ActiveSyncAllowedDeviceIDs / ActiveSyncBlockedDeviceIDs);
2. the rules for that user, then the rules for everyone; inside one scope the most
   specific match: ``device_id`` before ``user_agent`` (≈ Exchange's DeviceModel)
   before ``device_type`` (≈ DeviceFamily) before ``any`` (every device: a rule
   ``--everyone --any`` is the server's default access level, a rule ``--user U
   --any`` that user's);
   several rules of the same scope and kind that match: the most restrictive wins
   (block, then quarantine, then allow);
3. nothing matched: allow (Exchange's default DefaultAccessLevel).

Matching: case-insensitive; a pattern ending in ``*`` matches by prefix
(``Apple-iPhone*``), any other pattern the whole value.  That is all: no other glob or
regular expression (one rule, one cheap comparison, whatever the device sends).

Everything here is plain data, no I/O: the HTTP layer reads the device and the rules of
its user and of everyone in the request's one read (``IStateStore.read_request``) and
asks :func:`decide`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ACCESS",
    "ACTIONS",
    "ALLOW",
    "BLOCK",
    "KINDS",
    "QUARANTINE",
    "Decision",
    "Rule",
    "account_wipe_capable",
    "check_rule",
    "decide",
    "decide_record",
    "device_refusal",
    "rule_matches",
]

ALLOW = "allow"
BLOCK = "block"
QUARANTINE = "quarantine"
ACTIONS = (ALLOW, BLOCK, QUARANTINE)
#: what a rule matches, most specific first
KINDS = ("device_id", "user_agent", "device_type", "any")
_SEVERITY = {ALLOW: 0, QUARANTINE: 1, BLOCK: 2}

#: the change-hub pseudo-folder a held Ping also listens to: "this user's device access
#: changed" (published by whatever changes it; the Ping then looks at its device again)
ACCESS = "access"


@dataclass(frozen=True, slots=True)
class Rule:
    """One device access rule.  ``user``: the user's name, None for everyone.
    ``touched``: as the store's ``add_device_rule``/``remove_device_rule`` return it,
    the users whose device access it changed (their held Pings must look again): its
    user, or, for a rule for everyone, each user with a device it matches."""

    id: int
    user_id: int | None
    kind: str
    pattern: str
    action: str
    created: float = 0.0
    created_by: str | None = None
    user: str | None = None
    touched: tuple[int, ...] = ()

    @staticmethod
    def from_row(row: Mapping[str, Any]) -> Rule:
        return Rule(int(row["id"]), None if row.get("user_id") is None else int(row["user_id"]),
                    str(row["kind"]), str(row["pattern"]), str(row["action"]),
                    float(row.get("created") or 0.0), row.get("created_by"), row.get("user"))

    def describe(self) -> str:
        who = "everyone" if self.user_id is None else f"user {self.user or self.user_id}"
        what = "any device" if self.kind == "any" else f"{self.kind} {self.pattern!r}"
        return f"#{self.id} {who}, {what}: {self.action}"


@dataclass(frozen=True, slots=True)
class Decision:
    """A device's access state and why: ``"device"`` (its own decision), ``"rule N"``
    or ``"default"``."""

    state: str
    reason: str

    @property
    def allowed(self) -> bool:
        return self.state == ALLOW


def check_rule(kind: str, pattern: str, action: str) -> None:
    """ValueError for a rule that cannot be: an unknown kind or action, or an empty
    pattern (or a pattern other than "*" for ``any``), or one over 200 characters."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {ACTIONS}")
    if kind == "any":
        if pattern != "*":
            raise ValueError("a rule for any device has the pattern '*'")
    elif not pattern or len(pattern) > 200 or not pattern.isprintable():
        raise ValueError("the pattern must be 1 to 200 printable characters")


def _value(kind: str, device_id: str, device_type: str, user_agent: str) -> str:
    return {"device_id": device_id, "device_type": device_type,
            "user_agent": user_agent}.get(kind, "")


def rule_matches(rule: Rule, device_id: str, device_type: str, user_agent: str) -> bool:
    """Whether ``rule`` applies to a device with these values."""
    if rule.kind == "any":
        return True
    value = (_value(rule.kind, device_id, device_type, user_agent) or "").casefold()
    pattern = rule.pattern.casefold()
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    return value == pattern


def decide(device: Mapping[str, Any] | None, rules: Iterable[Rule], device_id: str,
           device_type: str, user_agent: str) -> Decision:
    """The access state of a device (``device``: its record, None if never seen;
    ``rules``: those of its user and those for everyone, in any order)."""
    own = (device or {}).get("access")
    if own in _SEVERITY:
        return Decision(str(own), "device")
    mine: list[Rule] = []
    everyone: list[Rule] = []
    for rule in rules:
        (everyone if rule.user_id is None else mine).append(rule)
    for scope in (mine, everyone):
        for kind in KINDS:
            hits = [r for r in scope if r.kind == kind and r.action in _SEVERITY
                    and rule_matches(r, device_id, device_type, user_agent)]
            if hits:
                worst = max(hits, key=lambda r: (_SEVERITY[r.action], -r.id))
                return Decision(worst.action, f"rule {worst.id}")
    return Decision(ALLOW, "default")


def account_wipe_capable(protocol_version: str | None) -> bool:
    """Whether a device that spoke ``protocol_version`` at most can take an
    account-only wipe (AccountOnlyRemoteWipe: EAS 16.1, MS-ASPROV 2.2.2.1)."""
    major, _, minor = (protocol_version or "").partition(".")
    if not major.isdigit() or not (minor or "0").isdigit():
        return False
    return (int(major), int(minor or 0)) >= (16, 1)


def decide_record(device: Mapping[str, Any], rules: Iterable[Rule]) -> Decision:
    """:func:`decide` for a stored device record (its own id, type and user agent)."""
    return decide(device, rules, str(device.get("device_id") or ""),
                  str(device.get("device_type") or ""), str(device.get("user_agent") or ""))


def device_refusal(device: Mapping[str, Any] | None, rules: Iterable[Rule], device_id: str,
                   device_type: str, user_agent: str, cmd: str, version: str) -> str | None:
    """Why this request of this device is refused (the request log's note), or None
    when it may go on.

    * A wipe pending is delivered whatever the access state (the wipe is the stronger
      order: a blocked lost phone still gets it at Provision) — except an account-only
      wipe to a request below 16.1, which cannot carry it: refused as blocked.
    * Blocked: every command is refused.
    * Quarantined: Provision goes through (the device's information — model, name,
      OS — is recorded for the administrator who decides, as Exchange lets a
      quarantined device provision), every other command is refused.
    """
    from easync.commands.provisioning import account_wipe_unsupported, wipe_pending

    dev = dict(device or {})
    if wipe_pending(dev):
        if account_wipe_unsupported(dev, version):
            return f"account-only wipe pending: EAS {version} cannot take it (16.1 can)"
        return None
    decision = decide(dev, rules, device_id, device_type, user_agent)
    if decision.state == ALLOW:
        return None
    if decision.state == QUARANTINE and cmd == "Provision":
        return None
    return f"device {decision.state} ({decision.reason})"

"""The device policy we hand out, policy keys, and the "provision first" answers.

The policy itself (its settings, the server's and the user's, the two document forms)
is ``easync.policy``; by default it is the permissive one (nothing required).  The
policy key is how a device is brought back to ``Provision``: when it was told to
wipe (notes §3.4, §3.5) and when its user's policy changed since it acknowledged it
(143).

The HTTP layer calls :func:`policy_status` for every command but Provision and,
when it is not None, answers with :func:`policy_required_response`.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

from easync.handler import EasResponse
from easync.policy import DEFAULT_FINGERPRINT, DEFAULTS, provision_doc_entries
from easync.versions import version_tuple
from easync.wbxml.element import Element

POLICY_TYPE = "MS-EAS-Provisioning-WBXML"
# The 2.5 form (MS-ASPROV 2.2.2.43): the policy as a wap-provisioningdoc string.
WAP_POLICY_TYPE = "MS-WAP-Provisioning-XML"

# Not provisioned / policy refresh / invalid key / remote wipe requested.
NOT_PROVISIONED = "142"
POLICY_REFRESH = "143"
INVALID_POLICY_KEY = "144"
REMOTE_WIPE_REQUESTED = "140"
_REASONS = (NOT_PROVISIONED, POLICY_REFRESH, INVALID_POLICY_KEY, REMOTE_WIPE_REQUESTED)

# Where a command's top-level Status goes (root tag, Status tag), 14.0+.  Every
# one of these roots has an optional top-level Status in its response schema.
# Commands missing here (MeetingResponse, GetAttachment, …) have none: 449.
STATUS_ROOTS: dict[str, tuple[str, str]] = {
    "Sync": ("AirSync:Sync", "AirSync:Status"),
    "FolderSync": ("FolderHierarchy:FolderSync", "FolderHierarchy:Status"),
    "FolderCreate": ("FolderHierarchy:FolderCreate", "FolderHierarchy:Status"),
    "FolderUpdate": ("FolderHierarchy:FolderUpdate", "FolderHierarchy:Status"),
    "FolderDelete": ("FolderHierarchy:FolderDelete", "FolderHierarchy:Status"),
    "GetItemEstimate": ("ItemEstimate:GetItemEstimate", "ItemEstimate:Status"),
    "Ping": ("Ping:Ping", "Ping:Status"),
    "Settings": ("Settings:Settings", "Settings:Status"),
    "ItemOperations": ("ItemOperations:ItemOperations", "ItemOperations:Status"),
    "MoveItems": ("Move:MoveItems", "Move:Status"),
    "Search": ("Search:Search", "Search:Status"),
    "ResolveRecipients": ("ResolveRecipients:ResolveRecipients", "ResolveRecipients:Status"),
    "ValidateCert": ("ValidateCert:ValidateCert", "ValidateCert:Status"),
    "SendMail": ("ComposeMail:SendMail", "ComposeMail:Status"),
    "SmartReply": ("ComposeMail:SmartReply", "ComposeMail:Status"),
    "SmartForward": ("ComposeMail:SmartForward", "ComposeMail:Status"),
    "Find": ("Find:Find", "Find:Status"),
}


def provision_doc(version: str, policy: Mapping[str, str] | None = None) -> Element:
    """The ``Provision:EASProvisionDoc`` of ``policy`` (default: the permissive one)
    for a protocol version: the 12.1 elements only from 12.1 on (MS-ASPROV 2.2.2.28)."""
    doc = Element("Provision:EASProvisionDoc")
    for name, value in provision_doc_entries(policy or DEFAULTS, version):
        doc.add(f"Provision:{name}", value)
    return doc


def new_policy_key(avoid: tuple[str | None, ...] = ()) -> str:
    """A random non-zero uint32 as a decimal string, different from ``avoid``."""
    while True:
        key = str(secrets.randbelow(0xFFFFFFFF) + 1)
        if key not in avoid:
            return key


def wipe_pending(device: dict[str, Any] | None) -> bool:
    """True when a remote wipe was ordered and not yet acknowledged as done."""
    return bool(device and device.get("wipe") == "pending")


def account_only_wipe(device: dict[str, Any] | None) -> bool:
    """True when the wipe ordered for the device is the account-only one."""
    dev = device or {}
    kind = dev.get("wipe_kind") or (dev.get("info") or {}).get("wipe_kind")
    return kind == "account"


def account_wipe_unsupported(device: dict[str, Any] | None, version: str) -> bool:
    """True when an account-only wipe is pending and the request speaks a version
    below 16.1, which has no AccountOnlyRemoteWipe (MS-ASPROV 2.2.2.1): the wipe cannot
    be delivered as ordered, and a full RemoteWipe is never sent in its place (the
    owner's photos are not this account's to erase).  The HTTP layer refuses such a
    device, as blocked, until the wipe is cancelled or changed."""
    return (wipe_pending(device) and account_only_wipe(device)
            and version_tuple(version) < (16, 1))


def wipe_element(device: dict[str, Any] | None, version: str) -> Element:
    """The empty wipe directive: AccountOnlyRemoteWipe (MS-ASPROV 2.2.2.1; 16.1+)
    when the device record (or its ``info``) says ``wipe_kind == "account"``, else
    RemoteWipe (2.2.2.53).  An account-only wipe never reaches a request below 16.1
    (``account_wipe_unsupported``); should one, it gets AccountOnlyRemoteWipe all
    the same, never a full wipe."""
    if account_only_wipe(device):
        return Element("Provision:AccountOnlyRemoteWipe")
    return Element("Provision:RemoteWipe")


# MS-ASCMD 2.2.2 common status 129 DeviceIsBlockedForThisUser.
DEVICE_BLOCKED = "129"


def refused_device_response(cmd: str, version: str, status: str = DEVICE_BLOCKED
                            ) -> EasResponse:
    """The answer to a device that may not sync (blocked, quarantined, or over the
    device cap): from 14.0 HTTP 200 with the command's top-level Status ``status``
    (MS-ASCMD 2.2.2 common statuses: 129 DeviceIsBlockedForThisUser, 177
    MaximumDevicesReached; Provision's Status takes them too, MS-ASPROV 2.2.2.54.2);
    below 14.0, which has no common statuses, or for a command without a top-level
    Status, HTTP 403 (MS-ASHTTP 2.2.2.1.1: the user or device may not sync)."""
    roots = STATUS_ROOTS.get(cmd) or (
        ("Provision:Provision", "Provision:Status") if cmd == "Provision" else None)
    return _common_status(roots, version, status, 403)


def _common_status(roots: tuple[str, str] | None, version: str, status: str,
                   fallback: int) -> EasResponse:
    """A common status (MS-ASCMD 2.2.2) as the command's own top-level Status (HTTP
    200, ``roots``: its root and Status tags), or the bare HTTP ``fallback`` below
    14.0, which has no common statuses, or for a command without a top-level Status."""
    if version_tuple(version) < (14, 0) or roots is None:
        return EasResponse(body=None, http_status=fallback, status=str(fallback))
    root = Element(roots[0])
    root.add(roots[1], status)
    return EasResponse(body=root, status=status)


def policy_status(device: dict[str, Any] | None, sent_key: str | None,
                  policy_hash: str | None = None) -> str | None:
    """None when ``sent_key`` is the device's current policy key; else the reason:
    "140" (a wipe is pending: the device must come to Provision), "142" (never
    provisioned, or no key sent), "144" (a key that is not the current one) or, when
    ``policy_hash`` (the fingerprint of the policy the device's user has now,
    ``easync.policy``) is given and is not the one the device acknowledged, "143"
    (PolicyRefresh, MS-ASCMD 2.2.2: the policy changed on the server, the device
    provisions again).  A device record without a fingerprint acknowledged the
    permissive policy (it was provisioned before policies were configurable)."""
    if wipe_pending(device):
        return REMOTE_WIPE_REQUESTED
    current = (device or {}).get("policy_key")
    if not current:
        return NOT_PROVISIONED
    sent = (sent_key or "").strip()
    if not sent or sent == "0":
        return NOT_PROVISIONED
    if sent != str(current):
        return INVALID_POLICY_KEY
    if policy_hash is not None:
        acked = (device or {}).get("policy_hash") or DEFAULT_FINGERPRINT
        if acked != policy_hash:
            return POLICY_REFRESH
    return None


def policy_required_response(cmd: str, version: str, reason: str) -> EasResponse:
    """The answer to ``cmd`` sent without a valid policy key.

    Below 14.0: a bare HTTP 449 ("retry after Provision", MS-ASHTTP 2.2.2.1.1).
    From 14.0: HTTP 200 with the command's own top-level Status set to ``reason``
    (140/142/143/144, MS-ASCMD 2.2.2); 449 for commands whose response has no
    top-level Status.
    """
    status = reason if reason in _REASONS else NOT_PROVISIONED
    return _common_status(STATUS_ROOTS.get(cmd), version, status, 449)


async def access_refused(server: Any, req: Any) -> EasResponse | None:
    """For a held long poll (Ping, Sync with Wait) woken by a device access change
    (``easync.deviceaccess.ACCESS``): the answer when its device may no longer sync
    (blocked, quarantined), or None.  One read of the device record and the rules.
    From 14.0 the command's Status 129 DeviceIsBlockedForThisUser (MS-ASCMD 2.2.2);
    below, HTTP 403 (MS-ASHTTP 2.2.2.1.1), raised as ``EasHTTPError``.  A wipe ordered
    meanwhile (that it can take): Status 140 RemoteWipeRequested from 14.0, HTTP 449
    below — the device goes to Provision, which carries the wipe, now rather than at
    the poll's heartbeat."""
    from easync.deviceaccess import device_refusal
    from easync.handler import EasHTTPError

    device = await server.state.get_device(req.user, req.device_id)
    if wipe_pending(device) and not account_wipe_unsupported(device, req.version):
        return policy_required_response(req.cmd, req.version, REMOTE_WIPE_REQUESTED)
    rules = await server.state.list_device_rules(req.user)
    why = device_refusal(device, rules, req.device_id, req.device_type, req.user_agent,
                         req.cmd, req.version)
    if why is None:
        return None
    resp = refused_device_response(req.cmd, req.version)
    if resp.http_status != 200:
        raise EasHTTPError(resp.http_status, why)
    return resp

"""Provision (MS-ASPROV): policy download/acknowledge, device information, remote wipe.

Request shapes (MS-ASPROV 3.1.5.1):

* initial: ``Provision/{[settings:DeviceInformation/Set], Policies/Policy/PolicyType}``
  → ``Provision/{[settings:DeviceInformation/Status], Status, Policies/Policy/
  {PolicyType, Status, PolicyKey=<temporary>, Data/EASProvisionDoc}}``
* acknowledgement: ``Provision/Policies/Policy/{PolicyType, PolicyKey=<temporary>, Status}``
  → ``Provision/{Status, Policies/Policy/{PolicyType, Status, PolicyKey=<final>}}``
  The temporary key waits in the per-device state blob ``"provision"``; the final key
  goes into the device record (``policy_key``), which the HTTP layer checks.
* wipe acknowledgement: ``Provision/(RemoteWipe|AccountOnlyRemoteWipe)/Status``
  → ``Provision/Status`` (1), or Status 2 plus the directive again when the device
  reports that the wipe failed (MS-ASPROV 3.2.5.1.2.2).

While a wipe is pending, any Provision gets ``Provision/{Status 1, RemoteWipe}``
and no policy (MS-ASPROV 3.2.5.1.1, the "empty initial request" answer): the device
is never given a usable key again until the wipe is acknowledged.  An account-only
wipe is ``AccountOnlyRemoteWipe`` (MS-ASPROV 2.2.2.1, 16.1 only), acknowledged with
its ``Status`` like RemoteWipe's; a request below 16.1 while one is pending is refused
as a blocked device (Provision/Status 129 from 14.0, HTTP 403 below): never a full
wipe in its place.

Status choices: Provision/Status 2 (protocol error) for a request that is none of
the above or lacks a Policy or its PolicyType; Policy/Status 3 for a PolicyType the
version does not use (MS-ASPROV 2.2.2.43: MS-WAP-Provisioning-XML at 2.5,
MS-EAS-Provisioning-WBXML from 12.0); Policy/Status 5 when the acknowledged key is not
the temporary key we handed out (also when that key was already exchanged: a lost
acknowledgement answer costs one more handshake).  A PolicyKey of 0 in the first
phase is read as none.

The policy sent is the user's (``easync.policy.effective``); its fingerprint waits
with the temporary key and goes into the device record with the final key
(``policy_hash``), with the client's acknowledgement Status (``policy_status``).
A client Status other than 1 (2 partially applied, 3 not applied, 4 externally
managed; MS-ASPROV 2.2.2.54.1) is accepted and logged with --allow-non-provisionable
on (the default); off, the answer is Provision/Status 139, or 145 for 4 (MS-ASPROV
3.1.5.2), HTTP 403 below 14.0, and no key.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from easync.commands.provisioning import (
    POLICY_TYPE,
    WAP_POLICY_TYPE,
    account_wipe_unsupported,
    new_policy_key,
    provision_doc,
    refused_device_response,
    wipe_element,
    wipe_pending,
)
from easync.handler import EasHTTPError, EasRequest, EasResponse, EasServer
from easync.model import StateWrite
from easync.policy import effective, fingerprint, wap_provisioning_doc
from easync.versions import version_tuple
from easync.wbxml.element import Element

log = Logger()

# The temporary key between the two phases lives in this per-device state blob (the
# device record has a column for the final key only).
PROVISION_STATE = "provision"

# Settings:DeviceInformation/Set children we keep (MS-ASCMD 2.2.3.49).
DEVICE_INFO_FIELDS = (
    "Model", "IMEI", "FriendlyName", "OS", "OSLanguage", "PhoneNumber", "UserAgent",
    "EnableOutboundSMS", "MobileOperator",
)
#: the longest value of a DeviceInformation field (MS-ASCMD 2.2.3.115 Model,
#: 2.2.3.91 IMEI, 2.2.3.127 OS, …: "up to 1024 characters"); what a device sends
#: beyond it is not kept
DEVICE_INFO_MAX = 1024


def parse_device_information(el: Element | None) -> dict[str, str] | None:
    """The fields of a ``Settings:DeviceInformation`` element, or None when it has
    no ``Set``.  Unknown children are ignored; a value is cut to ``DEVICE_INFO_MAX``
    characters."""
    if el is None:
        return None
    set_el = el.find("Settings:Set")
    if set_el is None:
        return None
    info: dict[str, str] = {}
    for name in DEVICE_INFO_FIELDS:
        value = set_el.findtext(f"Settings:{name}")
        if value is not None:
            info[name] = value[:DEVICE_INFO_MAX]
    return info


async def save_device_information(server: EasServer, req: EasRequest,
                                  device: dict[str, Any] | None,
                                  info: dict[str, str]) -> dict[str, Any]:
    """Merge ``info`` into the device record's ``info`` and save it."""
    merged = dict((device or {}).get("info") or {})
    merged.update(info)
    return await server.state.save_device(req.user, req.device_id, info=merged)


async def handle(server: EasServer, req: EasRequest) -> EasResponse:
    body = req.body
    device = req.device
    if device is None:
        device = await server.state.get_device(req.user, req.device_id)

    if account_wipe_unsupported(device, req.version):
        # an account-only wipe cannot be said below 16.1 and a full wipe is not what was
        # ordered: refused as a blocked device (129 / 403) until it speaks 16.1
        return refused_device_response("Provision", req.version)

    root = Element("Provision:Provision")
    if body is not None and body.tag != "Provision:Provision":
        root.add("Provision:Status", "2")
        return EasResponse(body=root, status="2")

    children = body.children if body is not None else []
    devinfo_el = body.find("Settings:DeviceInformation") if body is not None else None
    policies_el = body.find("Provision:Policies") if body is not None else None
    wipe_ack = None
    if body is not None:
        wipe_ack = body.find("Provision:RemoteWipe")
        if wipe_ack is None:
            wipe_ack = body.find("Provision:AccountOnlyRemoteWipe")

    # -- a remote wipe acknowledgement ------------------------------------------
    if wipe_ack is not None:
        result = wipe_ack.findtext("Provision:Status")
        if result == "1":
            if wipe_pending(device):
                await server.state.save_device(req.user, req.device_id, wipe="done")
            root.add("Provision:Status", "1")
            return EasResponse(body=root, status="1")
        if result == "2" and wipe_pending(device):
            # Spec: answer 2 and repeat the directive; the wipe stays pending.
            root.add("Provision:Status", "2")
            root.append(wipe_element(device, req.version))
            return EasResponse(body=root, status="2")
        if result == "2":
            root.add("Provision:Status", "1")
            return EasResponse(body=root, status="1")
        root.add("Provision:Status", "2")
        return EasResponse(body=root, status="2")

    # -- device information (14.1+, accepted from any version) -----------------
    if devinfo_el is not None:
        info = parse_device_information(devinfo_el)
        di = root.add("Settings:DeviceInformation")
        if info is None:
            di.add("Settings:Status", "2")
        else:
            if not wipe_pending(device):
                device = await save_device_information(server, req, device, info)
            di.add("Settings:Status", "1")

    # -- a device ordered to wipe gets the directive and nothing else ------------
    if wipe_pending(device):
        root.add("Provision:Status", "1")
        root.append(wipe_element(device, req.version))
        return EasResponse(body=root, status="1")

    if policies_el is None:
        # Only DeviceInformation is a (lenient) success; an empty or unknown body is not.
        status = "1" if devinfo_el is not None and len(children) == 1 else "2"
        root.add("Provision:Status", status)
        return EasResponse(body=root, status=status)

    policy_el = policies_el.find("Provision:Policy")
    if policy_el is None:
        root.add("Provision:Status", "2")
        return EasResponse(body=root, status="2")

    policy_type = (policy_el.findtext("Provision:PolicyType") or "").strip()
    if not policy_type:
        root.add("Provision:Status", "2")
        return EasResponse(body=root, status="2")
    sent_key = (policy_el.findtext("Provision:PolicyKey") or "").strip()

    # 2.5 asks for the WAP form, 12.0 and later for the WBXML one (MS-ASPROV 2.2.2.43)
    wanted = WAP_POLICY_TYPE if version_tuple(req.version) < (12, 0) else POLICY_TYPE
    if policy_type != wanted:
        _policy(root, policy_type, "3")
        return EasResponse(body=root, status="1")

    dev = device or {}
    current = str(dev["policy_key"]) if dev.get("policy_key") else None
    pending, pending_hash = await _pending_key(server, req)
    if not sent_key or sent_key == "0":
        # Phase 1 (a PolicyKey of 0 is read as none): a temporary key and the policy
        # the user has now (the server's, with the user's own settings over it)
        policy = effective(server.settings.policy, req.user.extra.get("policy"))
        temp = new_policy_key(avoid=(current, pending))
        await _save_pending_key(server, req, temp, fingerprint(policy))
        out_policy = _policy(root, policy_type, "1", temp)
        if policy_type == WAP_POLICY_TYPE:
            out_policy.add("Provision:Data", wap_provisioning_doc(policy))
        else:
            out_policy.add("Provision:Data").append(provision_doc(req.version, policy))
        return EasResponse(body=root, status="1")

    # Phase 2: the acknowledgement must carry the temporary key.
    if not pending or sent_key != pending:
        _policy(root, policy_type, "5")
        return EasResponse(body=root, status="1")
    # What the device did with the policy (MS-ASPROV 2.2.2.54.1): 1 applied, 2 partly
    # (at least the PIN), 3 not at all, 4 managed by a third party.  A device that
    # leaves it out is taken as 1 (as before: some clients do).
    applied = (policy_el.findtext("Provision:Status") or "1").strip()
    if applied not in ("1", "2", "3", "4"):
        root.add("Provision:Status", "2")
        return EasResponse(body=root, status="2")
    if applied != "1" and not server.settings.allow_non_provisionable:
        # Refused (MS-ASPROV 3.1.5.2): 139 "cannot fully comply" (also for 3, which
        # applied nothing), 145 "externally managed"; the device gets no key, so its
        # next command is sent back to Provision (142), which refuses it again.
        code = "145" if applied == "4" else "139"
        await server.state.save_device(req.user, req.device_id, policy_key=None,
                                       policy_hash=None, policy_status=f"refused:{applied}")
        await _save_pending_key(server, req, None, None)
        log.info("policy refused: user {user} device {device} acknowledged the policy "
                 "with Status {applied} (allow-non-provisionable off): Provision Status "
                 "{code}", user=req.user.name, device=_safe(req.device_id),
                 applied=applied, code=code)
        if version_tuple(req.version) < (14, 0):
            # status codes above 100 are 14.0+ (MS-ASCMD 2.2.2): the user may not sync
            raise EasHTTPError(403, f"policy not applied (Status {applied}), "
                                    "allow-non-provisionable off")
        refused = Element("Provision:Provision")
        refused.add("Provision:Status", code)
        return EasResponse(body=refused, status=code)
    if applied != "1":
        log.info("policy not fully applied: user {user} device {device} acknowledged "
                 "with Status {applied}; let in (allow-non-provisionable on)",
                 user=req.user.name, device=_safe(req.device_id), applied=applied)
    final = new_policy_key(avoid=(pending, current))
    await server.state.save_device(req.user, req.device_id, policy_key=int(final),
                                   policy_hash=pending_hash, policy_status=applied)
    await _save_pending_key(server, req, None, None)
    _policy(root, policy_type, "1", final)
    return EasResponse(body=root, status="1")


def _policy(root: Element, policy_type: str, status: str, key: str | None = None
            ) -> Element:
    """Add Provision Status 1 and one Policy {PolicyType, Status[, PolicyKey]} to
    ``root``; the Policy element."""
    root.add("Provision:Status", "1")
    out_policy = root.add("Provision:Policies").add("Provision:Policy")
    out_policy.add("Provision:PolicyType", policy_type)
    out_policy.add("Provision:Status", status)
    if key is not None:
        out_policy.add("Provision:PolicyKey", key)
    return out_policy


def _safe(text: str) -> str:
    """Client text for a log line: control characters escaped."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


async def _pending_key(server: EasServer, req: EasRequest) -> tuple[str | None, str | None]:
    """The temporary key handed out, and the fingerprint of the policy sent with it."""
    state = await server.state.get_state(req.user, req.device_id, PROVISION_STATE) or {}
    key = state.get("pending_policy_key")
    return (str(key) if key else None), state.get("pending_policy_hash")


async def _save_pending_key(server: EasServer, req: EasRequest, key: str | None,
                            policy_hash: str | None) -> None:
    await server.state.save_state(
        req.user, StateWrite(req.device_id, PROVISION_STATE,
                             {"pending_policy_key": key, "pending_policy_hash": policy_hash}))

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
the above or lacks a Policy or its PolicyType; Policy/Status 3 for an unknown
PolicyType; Policy/Status 5 when the acknowledged key is not the temporary key we
handed out (also when that key was already exchanged: a lost acknowledgement answer
costs one more handshake).  A PolicyKey of 0 in the first phase is read as none.
The acknowledgement is accepted whatever the client's Policy/Status (1 applied,
2 partially, 3 not applied, 4 externally managed): the policy asks for nothing.
"""

from __future__ import annotations

from typing import Any

from easync.commands.provisioning import (
    POLICY_TYPE,
    account_wipe_unsupported,
    new_policy_key,
    provision_doc,
    refused_device_response,
    wipe_element,
    wipe_pending,
)
from easync.handler import EasRequest, EasResponse, EasServer
from easync.model import StateWrite
from easync.wbxml.element import Element

# The temporary key between the two phases lives in this per-device state blob (the
# device record has a column for the final key only).
PROVISION_STATE = "provision"

# Settings:DeviceInformation/Set children we keep (MS-ASCMD 2.2.3.49).
DEVICE_INFO_FIELDS = (
    "Model", "IMEI", "FriendlyName", "OS", "OSLanguage", "PhoneNumber", "UserAgent",
    "EnableOutboundSMS", "MobileOperator",
)


def parse_device_information(el: Element | None) -> dict[str, str] | None:
    """The fields of a ``Settings:DeviceInformation`` element, or None when it has
    no ``Set``.  Unknown children are ignored."""
    if el is None:
        return None
    set_el = el.find("Settings:Set")
    if set_el is None:
        return None
    info: dict[str, str] = {}
    for name in DEVICE_INFO_FIELDS:
        value = set_el.findtext(f"Settings:{name}")
        if value is not None:
            info[name] = value
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
    root.add("Provision:Status", "1")
    out_policy = root.add("Provision:Policies").add("Provision:Policy")
    out_policy.add("Provision:PolicyType", policy_type)

    if policy_type != POLICY_TYPE:
        out_policy.add("Provision:Status", "3")
        return EasResponse(body=root, status="1")

    dev = device or {}
    current = str(dev["policy_key"]) if dev.get("policy_key") else None
    pending = await _pending_key(server, req)
    if not sent_key or sent_key == "0":
        # Phase 1 (a PolicyKey of 0 is read as none): a temporary key and the document.
        temp = new_policy_key(avoid=(current, pending))
        await _save_pending_key(server, req, temp)
        out_policy.add("Provision:Status", "1")
        out_policy.add("Provision:PolicyKey", temp)
        out_policy.add("Provision:Data").append(provision_doc(req.version))
        return EasResponse(body=root, status="1")

    # Phase 2: the acknowledgement must carry the temporary key.
    if not pending or sent_key != pending:
        out_policy.add("Provision:Status", "5")
        return EasResponse(body=root, status="1")
    final = new_policy_key(avoid=(pending, current))
    await server.state.save_device(req.user, req.device_id, policy_key=int(final))
    await _save_pending_key(server, req, None)
    out_policy.add("Provision:Status", "1")
    out_policy.add("Provision:PolicyKey", final)
    return EasResponse(body=root, status="1")


async def _pending_key(server: EasServer, req: EasRequest) -> str | None:
    state = await server.state.get_state(req.user, req.device_id, PROVISION_STATE)
    key = (state or {}).get("pending_policy_key")
    return str(key) if key else None


async def _save_pending_key(server: EasServer, req: EasRequest, key: str | None) -> None:
    await server.state.save_state(
        req.user, StateWrite(req.device_id, PROVISION_STATE, {"pending_policy_key": key}))

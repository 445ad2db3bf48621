"""Settings (MS-ASCMD 2.2.1.18).

Each request child gets its own answer, in request order, after the top-level
``Settings/Status`` (1, or 2 for a request with nothing we recognise):

* ``DeviceInformation/Set`` → saved into the device record's ``info``; Status 1
  (2 without ``Set``).  A request has at most one (MS-ASCMD 2.2.3.45: 0...1): a
  further one is Status 2 (protocol error, 2.2.3.177.15) and not saved (a flood of
  them was one write of the device record each).
* ``UserInformation/Get`` → ≤14.0 ``Get/EmailAddresses/SmtpAddress``; 14.1+
  ``Get/Accounts/Account/{AccountName, UserDisplayName, EmailAddresses/
  PrimarySmtpAddress}``.
* ``Oof/Get`` → Status 1, ``OofState`` 0: easync sends no mail, so an automatic reply
  is truthfully off (clients show "off" instead of an error).  ``Oof/Set`` turning it
  off is Status 1; turning it on is Status 7 ("denied by policy": there is nothing
  to send the replies with, and a permanent refusal stops clients from retrying).
* ``DevicePassword/Set`` → Status 1; the recovery password is not stored (the policy
  has PasswordRecoveryEnabled 0, so clients should not send it).
* ``RightsManagementInformation/Get`` (14.1+) → Status 1 and an empty ``Get``: no
  IRM templates.

A request of more than ``MAX_PARTS`` parts (each of the five is 0...1, MS-ASCMD
2.2.3.168.2) fails to validate: the top-level Status 2 alone, nothing done.
"""

from __future__ import annotations

from easync.commands.provision import parse_device_information, save_device_information
from easync.handler import EasRequest, EasResponse, EasServer
from easync.model import User
from easync.wbxml.element import Element

S = "Settings:"
#: the most parts (children) a request may have: five kinds, each 0...1 (MS-ASCMD
#: 2.2.3.168.2); a few repeated ones are answered in order, more fail to validate
MAX_PARTS = 16


def user_email(user: User) -> str:
    """The user's SMTP address: the configured one, else the login name."""
    return user.email or user.name


def display_name(user: User) -> str:
    extra = user.extra or {}
    return str(extra.get("display_name") or extra.get("full_name") or user.name)


def _user_information(req: EasRequest, el: Element) -> Element:
    out = Element(S + "UserInformation")
    if el.find(S + "Get") is None:
        out.add(S + "Status", "2")
        return out
    out.add(S + "Status", "1")
    get = out.add(S + "Get")
    email = user_email(req.user)
    if req.v >= (14, 1):
        account = get.add(S + "Accounts").add(S + "Account")
        account.add(S + "AccountName", email)
        account.add(S + "UserDisplayName", display_name(req.user))
        account.add(S + "EmailAddresses").add(S + "PrimarySmtpAddress", email)
    else:
        get.add(S + "EmailAddresses").add(S + "SmtpAddress", email)
    return out


def _oof(el: Element) -> Element:
    out = Element(S + "Oof")
    get = el.find(S + "Get")
    set_el = el.find(S + "Set")
    if get is not None:
        out.add(S + "Status", "1")
        out.add(S + "Get").add(S + "OofState", "0")
    elif set_el is not None:
        state = (set_el.findtext(S + "OofState") or "").strip()
        if state in ("", "0"):
            out.add(S + "Status", "1")
        elif state in ("1", "2"):
            out.add(S + "Status", "7")
        else:
            out.add(S + "Status", "5")
    else:
        out.add(S + "Status", "2")
    return out


def _simple(tag: str, el: Element, wanted: str) -> Element:
    out = Element(S + tag)
    out.add(S + "Status", "1" if el.find(S + wanted) is not None else "2")
    return out


async def handle(server: EasServer, req: EasRequest) -> EasResponse:
    root = Element(S + "Settings")
    body = req.body
    if body is None or body.tag != S + "Settings":
        root.add(S + "Status", "2")
        return EasResponse(body=root, status="2")

    if len(body.children) > MAX_PARTS:
        # (200,000 Oof/Get: 600,000 answer elements built in the reactor thread)
        root.add(S + "Status", "2")
        return EasResponse(body=root, status="2")
    answers: list[Element] = []
    device = req.device
    informed = False            # (a DeviceInformation was answered)
    for child in body.children:
        name = child.tag
        if name == S + "DeviceInformation":
            info = parse_device_information(child) if not informed else None
            informed = True
            out = Element(S + "DeviceInformation")
            if info is None:
                out.add(S + "Status", "2")
            else:
                device = await save_device_information(server, req, device, info)
                out.add(S + "Status", "1")
            answers.append(out)
        elif name == S + "UserInformation":
            answers.append(_user_information(req, child))
        elif name == S + "Oof":
            answers.append(_oof(child))
        elif name == S + "DevicePassword":
            answers.append(_simple("DevicePassword", child, "Set"))
        elif name == S + "RightsManagementInformation":
            out = _simple("RightsManagementInformation", child, "Get")
            if out.findtext(S + "Status") == "1":
                out.add(S + "Get")
            answers.append(out)

    status = "1" if answers else "2"
    root.add(S + "Status", status)
    root.children.extend(answers)
    return EasResponse(body=root, status=status)

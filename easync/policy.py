"""The device policy (passcode, lock, encryption, …): its settings, their checks, and
the two forms a device receives it in (issue #14 point 4).

A policy is a plain ``{setting: value}`` dict keyed by the EASProvisionDoc element
names of MS-ASPROV 2.2.2.28 (``DevicePasswordEnabled``, ``MinDevicePasswordLength``,
…), values as sent (``"0"``/``"1"``, decimal numbers, ``""`` for an empty element).
``DEFAULTS`` is the permissive policy easync always sent (nothing required); the
server's ``--policy`` (config file ``[policy]`` table) changes some settings, a
user's own settings (``easync-admin policy set``, kept in the user record's
``extra["policy"]``) change them again: the user's win (``effective``).

What a device is sent (``provision_doc``, ``wap_provisioning_doc``):

* 12.0 and later: ``Provision:EASProvisionDoc`` (MS-ASPROV 2.2.2.24.1), the 12.0
  elements only at 12.0, the 12.1 ones from 12.1 on (each element's "Protocol
  Versions" table in MS-ASPROV 2.2.2.x).
* 2.5: the ``MS-WAP-Provisioning-XML`` string (MS-ASPROV 2.2.2.24.2): a
  ``wap-provisioningdoc`` with the ``SecurityPolicy`` and ``Registry`` characteristics,
  which carry what 2.5 devices know: passcode on/off, minimum length, alphanumeric or
  not, inactivity lock (in minutes) and wipe after N failed unlocks.

``fingerprint`` names a policy's content: a device record keeps the fingerprint of the
policy it acknowledged, and a device whose fingerprint differs from its user's current
one is sent to Provision again (Status 143, ``easync.commands.provisioning``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from xml.sax.saxutils import quoteattr

from easync.versions import version_tuple

__all__ = ["DEFAULTS", "SETTINGS", "PolicyError", "Setting", "describe", "effective",
           "fingerprint", "parse_policy", "parse_value", "provision_doc_entries",
           "wap_provisioning_doc"]


class PolicyError(ValueError):
    """A policy setting that does not exist, or a value out of its range."""


@dataclass(frozen=True)
class Setting:
    """One EASProvisionDoc element (MS-ASPROV 2.2.2.x)."""

    name: str
    since: tuple[int, int]          # the first protocol version that has it
    default: str                    # the permissive value easync sends by default
    kind: str                       # "bool" | "int" | "enum" | "list" (always empty)
    low: int = 0                    # int: the range (inclusive)
    high: int = 2 ** 31 - 1
    empty_ok: bool = False          # int: may be sent empty (…OrEmpty types)
    choices: tuple[str, ...] = ()   # enum
    help: str = ""


def _b(name: str, since: tuple[int, int], default: str, help: str) -> Setting:
    return Setting(name, since, default, "bool", help=help)


_V12_0 = (12, 0)
_V12_1 = (12, 1)

#: Every element of the EASProvisionDoc, in the order of its schema (MS-ASPROV
#: 2.2.2.28) and of the code page 14 tokens (MS-ASWBXML, code page 14).
SETTINGS: tuple[Setting, ...] = (
    _b("DevicePasswordEnabled", _V12_0, "0", "a passcode is required (2.2.2.25)"),
    _b("AlphanumericDevicePasswordRequired", _V12_0, "0",
       "the passcode must contain letters and digits, not only digits"),
    _b("RequireStorageCardEncryption", _V12_0, "0",
       "the storage card must be encrypted"),
    _b("PasswordRecoveryEnabled", _V12_0, "0",
       "the device may send a recovery passcode to the server"),
    _b("AttachmentsEnabled", _V12_0, "1", "attachments may be downloaded"),
    Setting("MinDevicePasswordLength", _V12_0, "4", "int", 1, 16, empty_ok=True,
            help="shortest passcode, 1-16 characters; empty: no minimum (2.2.2.38)"),
    # (no idle lock and no wipe unless asked for: an admin who only turns the passcode
    # on must not get a phone that erases itself after a few wrong tries)
    Setting("MaxInactivityTimeDeviceLock", _V12_0, "", "int", 0, 9999, empty_ok=True,
            help="seconds without use before the device locks; 9999: never "
                 "(2.2.2.36)"),
    Setting("MaxDevicePasswordFailedAttempts", _V12_0, "", "int", 4, 16, empty_ok=True,
            help="wrong passcodes (4-16) before the device wipes itself or locks "
                 "for a time; empty: no limit (2.2.2.32)"),
    Setting("MaxAttachmentSize", _V12_0, "", "int", 0, 2 ** 31 - 1, empty_ok=True,
            help="largest attachment downloaded, in bytes; empty: no limit"),
    _b("AllowSimpleDevicePassword", _V12_0, "1",
       "simple passcodes such as 1111 or 1234 are allowed"),
    Setting("DevicePasswordExpiration", _V12_0, "0", "int", 0, 730, empty_ok=True,
            help="days before the passcode must be changed; 0 or empty: never"),
    Setting("DevicePasswordHistory", _V12_0, "0", "int", 0, 50,
            help="earlier passcodes that may not be used again; 0: none"),
    _b("AllowStorageCard", _V12_1, "1", "a storage card may be used"),
    _b("AllowCamera", _V12_1, "1", "the camera may be used"),
    _b("RequireDeviceEncryption", _V12_1, "0", "the device must be encrypted"),
    _b("AllowUnsignedApplications", _V12_1, "1",
       "unsigned applications may run"),
    _b("AllowUnsignedInstallationPackages", _V12_1, "1",
       "unsigned installation packages may run"),
    Setting("MinDevicePasswordComplexCharacters", _V12_1, "3", "int", 1, 4,
            help="character groups (lower case, upper case, digits, symbols) an "
                 "alphanumeric passcode must contain, 1-4"),
    _b("AllowWiFi", _V12_1, "1", "Wi-Fi may be used"),
    _b("AllowTextMessaging", _V12_1, "1", "text messaging may be used"),
    _b("AllowPOPIMAPEmail", _V12_1, "1", "POP or IMAP e-mail accounts are allowed"),
    Setting("AllowBluetooth", _V12_1, "2", "enum", choices=("0", "1", "2"),
            help="0: no Bluetooth, 1: hands-free only, 2: allowed"),
    _b("AllowIrDA", _V12_1, "1", "infrared connections are allowed"),
    _b("RequireManualSyncWhenRoaming", _V12_1, "0",
       "no push while roaming"),
    _b("AllowDesktopSync", _V12_1, "1", "desktop synchronization is allowed"),
    Setting("MaxCalendarAgeFilter", _V12_1, "0", "enum",
            choices=("0", "4", "5", "6", "7"),
            help="how far back calendar items may sync: 0 all, 4 two weeks, 5 one "
                 "month, 6 three months, 7 six months"),
    _b("AllowHTMLEmail", _V12_1, "1", "HTML e-mail is allowed"),
    Setting("MaxEmailAgeFilter", _V12_1, "0", "enum",
            choices=("0", "1", "2", "3", "4", "5"),
            help="how far back e-mail may sync: 0 all, 1 one day … 5 one month"),
    Setting("MaxEmailBodyTruncationSize", _V12_1, "-1", "int", -1, 2 ** 31 - 1,
            help="largest plain-text e-mail body in KB; -1: no limit"),
    Setting("MaxEmailHTMLBodyTruncationSize", _V12_1, "-1", "int", -1, 2 ** 31 - 1,
            help="largest HTML e-mail body in KB; -1: no limit"),
    _b("RequireSignedSMIMEMessages", _V12_1, "0", "S/MIME messages must be signed"),
    _b("RequireEncryptedSMIMEMessages", _V12_1, "0", "S/MIME messages must be "
       "encrypted"),
    Setting("RequireSignedSMIMEAlgorithm", _V12_1, "0", "enum", choices=("0", "1"),
            help="0: SHA-1, 1: MD5"),
    Setting("RequireEncryptionSMIMEAlgorithm", _V12_1, "0", "enum",
            choices=("0", "1", "2", "3", "4"),
            help="0: TripleDES, 1: DES, 2: RC2 128, 3: RC2 64, 4: RC2 40"),
    Setting("AllowSMIMEEncryptionAlgorithmNegotiation", _V12_1, "2", "enum",
            choices=("0", "1", "2"),
            help="0: no negotiation, 1: strong algorithms only, 2: any"),
    _b("AllowSMIMESoftCerts", _V12_1, "1", "soft certificates are allowed"),
    _b("AllowBrowser", _V12_1, "1", "the browser may be used"),
    _b("AllowConsumerEmail", _V12_1, "1", "personal e-mail accounts are allowed"),
    _b("AllowRemoteDesktop", _V12_1, "1", "remote desktop is allowed"),
    _b("AllowInternetSharing", _V12_1, "1", "internet sharing (tethering) is allowed"),
    Setting("UnapprovedInROMApplicationList", _V12_1, "", "list",
            help="not configurable: sent empty"),
    Setting("ApprovedApplicationList", _V12_1, "", "list",
            help="not configurable: sent empty"),
)
BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}
_BY_LOWER: dict[str, Setting] = {s.name.lower(): s for s in SETTINGS}
#: the permissive policy: every setting at its default
DEFAULTS: dict[str, str] = {s.name: s.default for s in SETTINGS}

_TRUE = {"1", "on", "true", "yes"}
_FALSE = {"0", "off", "false", "no"}
_EMPTY = {"", "none", "unlimited", "empty"}


def setting(name: str) -> Setting:
    """The setting called ``name`` (any case); PolicyError if there is none."""
    found = _BY_LOWER.get(str(name).strip().lower())
    if found is None:
        raise PolicyError(f"unknown policy setting {name!r}")
    if found.kind == "list":
        raise PolicyError(f"{found.name} cannot be set (it is always sent empty)")
    return found


def parse_value(name: str, value: Any) -> tuple[str, str]:
    """(the setting's name, the value as sent) for one setting; PolicyError when the
    value is not one MS-ASPROV allows for it."""
    s = setting(name)
    if isinstance(value, bool):
        raw = "1" if value else "0"
    else:
        raw = str(value).strip()
    low = raw.lower()
    if s.kind == "bool":
        if low in _TRUE:
            return s.name, "1"
        if low in _FALSE:
            return s.name, "0"
        raise PolicyError(f"{s.name}: expected on or off (1 or 0), got {value!r}")
    if s.kind == "enum":
        if raw in s.choices:
            return s.name, raw
        raise PolicyError(f"{s.name}: expected one of {', '.join(s.choices)}, "
                          f"got {value!r}")
    # int
    if low in _EMPTY:
        if s.empty_ok:
            return s.name, ""
        raise PolicyError(f"{s.name}: a number from {s.low} to {s.high} is required")
    try:
        n = int(raw)
    except ValueError:
        raise PolicyError(f"{s.name}: expected a whole number, got {value!r}") from None
    if not s.low <= n <= s.high:
        raise PolicyError(f"{s.name}: must be from {s.low} to {s.high}, got {n}")
    return s.name, str(n)


def _pairs(given: Any) -> Iterable[tuple[str, Any]]:
    if isinstance(given, Mapping):
        return list(given.items())
    if isinstance(given, str):
        out = []
        for part in given.replace(",", " ").split():
            name, sep, value = part.partition("=")
            if not sep:
                raise PolicyError(f"expected SETTING=VALUE, got {part!r}")
            out.append((name, value))
        return out
    if isinstance(given, (list, tuple)):
        out = []
        for item in given:
            if isinstance(item, str):
                out.extend(_pairs(item))
            else:
                name, value = item
                out.append((name, value))
        return out
    raise PolicyError(f"expected SETTING=VALUE pairs, got {given!r}")


def parse_policy(given: Any) -> dict[str, str]:
    """Settings from a mapping (a TOML ``[policy]`` table, a stored user policy), a
    string ``"Setting=value Setting=value"`` (commas also separate) or a list of such
    strings or pairs; every one checked (``parse_value``).  PolicyError on the first
    bad one; a setting given twice keeps the last value."""
    out: dict[str, str] = {}
    for name, value in _pairs(given):
        key, val = parse_value(name, value)
        out[key] = val
    return out


def effective(server: Mapping[str, str] | Iterable[tuple[str, str]] | None,
              user: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Every setting: the default, changed by the server's, changed by the user's."""
    out = dict(DEFAULTS)
    out.update(dict(server or {}))
    if user:
        try:
            out.update(parse_policy(user))
        except PolicyError:
            pass        # (stored values were checked when set; never fail a device)
    return out


def fingerprint(policy: Mapping[str, str]) -> str:
    """A short name of the policy's content (16 hex digits); equal policies, equal
    fingerprints."""
    return _fingerprint(json.dumps(sorted(policy.items()), separators=(",", ":")))


@lru_cache(maxsize=1024)
def _fingerprint(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@lru_cache(maxsize=256)
def _user_fingerprint(server: tuple[tuple[str, str], ...], user_json: str) -> str:
    user = json.loads(user_json) if user_json else None
    return fingerprint(effective(server, user))


def user_fingerprint(server: tuple[tuple[str, str], ...],
                     user: Mapping[str, Any] | None) -> str:
    """``fingerprint(effective(server, user))``, remembered (a request computes it)."""
    text = json.dumps(dict(user), sort_keys=True) if user else ""
    return _user_fingerprint(tuple(server), text)


#: the fingerprint of the permissive policy: what every device provisioned before
#: policies were configurable acknowledged
DEFAULT_FINGERPRINT = fingerprint(DEFAULTS)


def provision_doc_entries(policy: Mapping[str, str], version: str
                          ) -> list[tuple[str, str | None]]:
    """(element, value) of the EASProvisionDoc for ``version``, in schema order; None
    for an empty element.  Elements newer than the version are left out."""
    v = version_tuple(version)
    out: list[tuple[str, str | None]] = []
    for s in SETTINGS:
        if v < s.since:
            continue
        value = policy.get(s.name, s.default)
        out.append((s.name, value if value != "" else None))
    return out


def wap_provisioning_doc(policy: Mapping[str, str]) -> str:
    """The 2.5 form (MS-ASPROV 2.2.2.24.2): SecurityPolicy parm 4131 is 0 when a
    passcode is required (1: not required), 4133 1 (the device may be unlocked from
    a desktop); the Registry characteristics carry the inactivity lock in minutes
    (AEFrequencyType 0: none), DeviceWipeThreshold, CodewordFrequency,
    MinimumPasswordLength and PasswordComplexity (0: alphanumeric required, 2: any)."""
    required = policy.get("DevicePasswordEnabled") == "1"
    lock = policy.get("MaxInactivityTimeDeviceLock", "")
    minutes = 0
    if required and lock not in ("", None) and int(lock) < 9999:
        minutes = max(1, (int(lock) + 59) // 60)
    wipe = policy.get("MaxDevicePasswordFailedAttempts", "") if required else ""
    min_len = policy.get("MinDevicePasswordLength", "") if required else ""
    complexity = "0" if required and policy.get(
        "AlphanumericDevicePasswordRequired") == "1" else "2"
    ae = "{50C13377-C66D-400C-889E-C316FC4AB374}"

    def parm(name: str, value: str) -> str:
        return f"<parm name={quoteattr(name)} value={quoteattr(value)}/>"

    parts = ['<wap-provisioningdoc><characteristic type="SecurityPolicy">',
             parm("4131", "0" if required else "1"), parm("4133", "1"),
             '</characteristic><characteristic type="Registry">',
             f'<characteristic type="HKLM\\Comm\\Security\\Policy\\LASSD\\AE\\{ae}">',
             parm("AEFrequencyType", "1" if minutes else "0"),
             parm("AEFrequencyValue", str(minutes)), "</characteristic>"]
    if wipe:
        parts += ['<characteristic type="HKLM\\Comm\\Security\\Policy\\LASSD">',
                  parm("DeviceWipeThreshold", wipe), "</characteristic>"]
        # (a challenge phrase every few failures: half the threshold, as devices do)
        parts += ['<characteristic type="HKLM\\Comm\\Security\\Policy\\LASSD">',
                  parm("CodewordFrequency", str(max(1, int(wipe) // 2))),
                  "</characteristic>"]
    parts += ['<characteristic type="HKLM\\Comm\\Security\\Policy\\LASSD\\LAP\\lap_pw">',
              parm("MinimumPasswordLength", min_len or "1"),
              parm("PasswordComplexity", complexity), "</characteristic>",
              "</characteristic></wap-provisioningdoc>"]
    return "".join(parts)


def describe(policy: Mapping[str, str]) -> list[str]:
    """What a phone must meet, in a few plain lines in the reader's language
    (easync-admin policy show): the passcode rules, encryption, and any feature
    switched off."""
    from easync.i18n import _

    lines: list[str] = []
    if policy.get("DevicePasswordEnabled") == "1":
        kind = (_("alphanumeric") if policy.get("AlphanumericDevicePasswordRequired") == "1"
                else _("any"))
        lines.append(_("passcode required ({kind}), at least {n} characters").format(
            kind=kind, n=policy.get("MinDevicePasswordLength") or 1))
        if policy.get("AllowSimpleDevicePassword") == "0":
            lines.append(_("no simple passcodes (1111, 1234)"))
        lock = policy.get("MaxInactivityTimeDeviceLock") or ""
        if lock and int(lock) < 9999:
            lines.append(_("locks after {n} seconds without use").format(n=lock))
        wipe = policy.get("MaxDevicePasswordFailedAttempts") or ""
        if wipe:
            lines.append(_("wiped after {n} wrong passcodes").format(n=wipe))
        exp = policy.get("DevicePasswordExpiration") or "0"
        if exp != "0":
            lines.append(_("passcode expires after {n} days").format(n=exp))
        hist = policy.get("DevicePasswordHistory") or "0"
        if hist != "0":
            lines.append(_("the last {n} passcodes cannot be reused").format(n=hist))
    else:
        lines.append(_("no passcode required"))
    if policy.get("RequireDeviceEncryption") == "1":
        lines.append(_("device encryption required"))
    if policy.get("RequireStorageCardEncryption") == "1":
        lines.append(_("storage card encryption required"))
    off = [s.name for s in SETTINGS
           if s.kind == "bool" and s.name.startswith("Allow") and s.default == "1"
           and policy.get(s.name) == "0"]
    if off:
        lines.append(_("not allowed: {features}").format(
            features=", ".join(n[len("Allow"):] for n in off)))
    return lines

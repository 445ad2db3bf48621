"""The protocol tunables (``Settings``): each one can come from the command line or the
config file (``easync.config``)."""

from __future__ import annotations

from dataclasses import dataclass

# Settings.fileas_order: how a contact's missing FileAs is made (easync.items.contact).
FILEAS_ORDERS = ("last-first", "first-last", "last-first-nocomma", "company-first")


@dataclass
class Settings:
    """Tunables; every one can come from the command line or config file."""

    max_window: int = 512
    default_window: int = 100
    max_request_bytes: int = 16 * 1024 * 1024
    request_timeout: float = 120.0
    heartbeat_min: int = 60
    heartbeat_max: int = 3540
    max_ping_folders: int = 300
    max_sync_collections: int = 100
    max_sync_commands: int = 1000
    max_devices_per_user: int = 100   # 0: no cap (issue #10 point 7)
    provisioning: bool = True
    # the server's device policy: (EASProvisionDoc setting, value) pairs over the
    # permissive defaults (easync.policy; a user's own settings win)
    policy: tuple[tuple[str, str], ...] = ()
    # a device that acknowledges the policy as not (fully) applied still syncs;
    # off: it gets Provision Status 139/145 and no policy key (MS-ASPROV 3.1.5.2)
    allow_non_provisionable: bool = True
    max_picture_bytes: int = 5 * 1024 * 1024
    fileas_order: str = "last-first"  # a contact's missing FileAs: "Last, First" (see items)
    server_version: str = "16.1"
    trusted_proxies: tuple[str, ...] = ()  # --trusted-proxy: X-Forwarded-For believed
    public_url: str = ""            # e.g. https://mail.example.org (Autodiscover answers)
    mass_delete_share: float = 0.5  # a Sync deleting more of a folder: an alarm (0: off)
    mass_delete_min: int = 10       # ...and at least this many items (easync.deleted)

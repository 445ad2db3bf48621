"""The server's secret key: encrypts TOTP secrets at rest and keys code hashes.

The key is a file (``--secret-key``, default ``easync-secret.key`` in the working
directory, beside the database), created with mode 0600 on first use.  ``twistd easync``
and ``easync-admin`` must read the same file: a TOTP secret written by one is read by the
other.  Losing the file loses the TOTP enrolments (users enrol again); nothing else.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from cryptography.fernet import Fernet, InvalidToken


class SecretKeyError(Exception):
    """The key file cannot be read or created, or a value cannot be decrypted."""


class SecretBox:
    """Encrypt/decrypt short secrets (Fernet: AES-128-CBC + HMAC-SHA256) and compute
    keyed hashes (HMAC-SHA256) with one 32-byte key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the secret key is 32 bytes")
        self._mac_key = hashlib.sha256(b"easync-mac\x00" + key).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(
            hashlib.sha256(b"easync-enc\x00" + key).digest()))

    @classmethod
    def ephemeral(cls) -> SecretBox:
        """A box with a random key that lives as long as the process (tests)."""
        return cls(os.urandom(32))

    @classmethod
    def from_file(cls, path: str, create: bool = True) -> SecretBox:
        """The box for the key in ``path``, creating the file (0600) if missing."""
        try:
            with open(path, "rb") as f:
                raw = f.read().strip()
        except FileNotFoundError:
            if not create:
                raise SecretKeyError(f"secret key file {path} does not exist") from None
            raw = base64.b64encode(os.urandom(32))
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:          # another process created it just now
                return cls.from_file(path, create=False)
            except OSError as e:
                raise SecretKeyError(f"cannot create secret key file {path}: {e.strerror}") from None
            with os.fdopen(fd, "wb") as f:
                f.write(raw + b"\n")
        except OSError as e:
            raise SecretKeyError(f"cannot read secret key file {path}: {e.strerror}") from None
        try:
            key = base64.b64decode(raw, validate=True)
        except ValueError:
            raise SecretKeyError(f"secret key file {path} is not base64 text") from None
        if len(key) != 32:
            raise SecretKeyError(f"secret key file {path} does not hold a 32-byte key")
        return cls(key)

    def encrypt(self, text: str) -> str:
        return self._fernet.encrypt(text.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode("utf-8")
        except (InvalidToken, ValueError):
            raise SecretKeyError("a stored secret cannot be decrypted with this server's secret "
                            "key (was the key file replaced?)") from None

    def mac(self, *parts: str) -> str:
        """A keyed hash of the parts, hex."""
        msg = "\x00".join(parts).encode("utf-8")
        return hmac.new(self._mac_key, msg, hashlib.sha256).hexdigest()

"""The self-signed certificate easync serves HTTPS with when nobody gave it one.

``ensure_certificate(path)`` creates, once, a PEM file holding an RSA 2048 private key
and a self-signed certificate for ``localhost``, ``127.0.0.1``, ``::1`` and this machine's
host names, readable by its owner only (0600), and afterwards reuses it.  The SHA-256
fingerprint is what a user compares with the one the phone shows before trusting it.

The certificate follows the rules iOS applies to every TLS server certificate (SAN with
the names, ExtendedKeyUsage serverAuth, SHA-256 signature, at most 825 days).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY_DAYS = 825


@dataclass
class CertificateInfo:
    path: str
    fingerprint: str            # "AB:CD:…", SHA-256 of the DER certificate
    created: bool               # True when this call wrote the file
    not_after: datetime.datetime
    dns_names: list[str] = field(default_factory=list)


def default_hostnames() -> list[str]:
    """``localhost`` plus this machine's host name and fully qualified name."""
    names = ["localhost"]
    for name in (socket.gethostname(), socket.getfqdn()):
        name = (name or "").strip().rstrip(".").lower()
        if name and name not in names and not _is_ip(name):
            names.append(name)
    return names


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def fingerprint(cert: x509.Certificate) -> str:
    """The SHA-256 fingerprint as colon-separated upper-case hex pairs."""
    digest = cert.fingerprint(hashes.SHA256())
    return ":".join(f"{b:02X}" for b in digest)


def make_self_signed(hostnames: list[str], now: datetime.datetime | None = None
                     ) -> tuple[bytes, x509.Certificate]:
    """A new (private key PEM, certificate) pair for these host names."""
    now = now or datetime.datetime.now(datetime.UTC)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    common_name = next((h for h in hostnames if h != "localhost"), "localhost")
    name = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64]),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "easync self-signed"),
    ])
    alt_names: list[x509.GeneralName] = [x509.DNSName(h) for h in hostnames]
    alt_names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ("127.0.0.1", "::1")]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALIDITY_DAYS))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_encipherment=True, content_commitment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=False,
            crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    return key_pem, cert


def load_certificate(path: str) -> x509.Certificate:
    """The first certificate in a PEM file. ValueError if there is none."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as e:
        raise ValueError(f"{path}: no PEM certificate found ({e})") from None


def _info(path: str, cert: x509.Certificate, created: bool) -> CertificateInfo:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        dns = list(san.value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        dns = []
    return CertificateInfo(path=path, fingerprint=fingerprint(cert), created=created,
                           not_after=cert.not_valid_after_utc, dns_names=dns)


def ensure_certificate(path: str, hostnames: list[str] | None = None) -> CertificateInfo:
    """Reuse the PEM file at ``path``, or create it (mode 0600) with a new self-signed
    certificate and key when it does not exist."""
    path = os.path.abspath(path)
    if os.path.exists(path):
        return _info(path, load_certificate(path), created=False)
    key_pem, cert = make_self_signed(hostnames or default_hostnames())
    data = key_pem + cert.public_bytes(serialization.Encoding.PEM)
    # O_EXCL: never overwrite a file that appeared meanwhile; 0600 from the start, so the
    # key is never readable by others, whatever the umask.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return _info(path, cert, created=True)

"""Reading and checking a certificate and key a user gives, for every server that takes one (the
bus's client port, the ingress).

A pair that does not match, has expired or names another host only shows later as a handshake
failure on the client's side, long after ``up`` said the stack was fine. Each check here is one
``ConfigError`` paragraph naming the deploy file's key and the file, ending with the caller's fix.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import NameOID

from nachos_deploy.core.errors import ConfigError


@dataclass(frozen=True)
class Pair:
    """A user's certificate chain (the server's own first) and its key, as read."""

    cert_bytes: bytes
    key_bytes: bytes
    leaf: x509.Certificate


def read(key: str, path: str | Path) -> bytes:
    """The bytes of ``path``, named by the deploy file's ``key`` when it cannot be read."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"{key} is {path}, which cannot be read ({exc.strerror or exc}). Fix the path (relative "
            "paths are from the deploy file's folder) or the file's permissions."
        ) from None


def load_pair(prefix: str, cert_path: str | Path, key_path: str | Path, *, server: str, fix: str) -> Pair:
    """Read ``<prefix>.cert_file`` and ``<prefix>.key_file`` and check that they are PEM, that the key
    is unencrypted (``server`` cannot ask for a passphrase) and is the certificate's own, and that
    the certificate is valid now."""
    cert_key, key_key = f"{prefix}.cert_file", f"{prefix}.key_file"
    cert_bytes = read(cert_key, cert_path)
    key_bytes = read(key_key, key_path)
    try:
        leaf = x509.load_pem_x509_certificates(cert_bytes)[0]
    except ValueError:
        raise ConfigError(f"{cert_key} ({cert_path}) holds no PEM certificate. {fix}") from None
    try:
        key = serialization.load_pem_private_key(key_bytes, password=None)
    except (ValueError, TypeError) as exc:
        why = (
            f"is encrypted ({server} needs it without a passphrase)"
            if isinstance(exc, TypeError)
            else "holds no PEM private key"
        )
        raise ConfigError(f"{key_key} ({key_path}) {why}. {fix}") from None
    if not holds_key(key.public_key(), leaf):
        raise ConfigError(
            f"{key_key} ({key_path}) is not the key of the certificate in {cert_key} ({cert_path}): "
            f"the {server} could not prove it holds the certificate. {fix}"
        )
    check_dates(cert_key, cert_path, leaf, fix=fix)
    return Pair(cert_bytes, key_bytes, leaf)


def holds_key(public: PublicKeyTypes, cert: x509.Certificate) -> bool:
    """Whether ``public`` is the key ``cert`` was issued for (a server with another key cannot
    complete a handshake for it)."""
    der, spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return public.public_bytes(der, spki) == cert.public_key().public_bytes(der, spki)


def signed_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    """Whether ``parent``'s key signed ``child`` (issuer name and signature)."""
    try:
        child.verify_directly_issued_by(parent)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def check_dates(key: str, path: str | Path, cert: x509.Certificate, *, fix: str) -> None:
    """Refuse a certificate that has expired or is not valid yet (a wrong clock, most often)."""
    now = datetime.datetime.now(datetime.UTC)
    if cert.not_valid_after_utc <= now:
        raise ConfigError(
            f"{key} ({path}) expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC: clients refuse "
            f"it. Renew it. {fix}"
        )
    if cert.not_valid_before_utc > now:
        raise ConfigError(
            f"{key} ({path}) is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC "
            f"(is this host's clock right?). {fix}"
        )


def names(cert: x509.Certificate) -> set[str]:
    """The names a client's hostname check accepts: the subject alternative names (DNS names in
    lower case, addresses), or for an old certificate without them its common name."""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return {str(a.value).lower() for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)}
    return {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)} | {
        name.lower() for name in sans.get_values_for_type(x509.DNSName)
    }


def covers(cert: x509.Certificate, host: str) -> bool:
    """Whether ``cert`` is for ``host`` (an address, a name, or a name under a one-label wildcard:
    ``*.example.com`` covers ``a.example.com``, not ``a.b.example.com`` nor ``example.com``)."""
    found = names(cert)
    if is_address(host):
        return str(ipaddress.ip_address(host)) in found
    wanted = host.lower().rstrip(".")
    for name in (n.rstrip(".") for n in found):
        if name == wanted or (name.startswith("*.") and wanted.partition(".")[2] == name[2:]):
            return True
    return False


def is_address(name: str) -> bool:
    """Whether ``name`` is an IP address rather than a host name."""
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True

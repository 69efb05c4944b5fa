"""The ingress's certificates on the host side: the user's files checked (``tls: files``), and the
root of Caddy's own CA written to the output folder (``tls: internal``) so clients can trust it.

A certificate that does not match its key, has expired or names another domain would only show as
a handshake failure on the provider's side, long after ``up`` said the stack was fine: ``validate``
and ``up`` refuse it here instead, naming the key and the file.
"""

from __future__ import annotations

import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from nachos_deploy.core.errors import ConfigError, OutputError
from nachos_deploy.core.ingress import IngressPlan
from nachos_deploy.io.files import replace_private
from nachos_deploy.io.stack import Stack

_FIX = (
    "Give a PEM certificate chain (the server's certificate first) in ingress.cert_file and its "
    "unencrypted PEM private key in ingress.key_file, or use tls: acme or internal."
)


def describe(stack: Stack) -> str | None:
    """The ingress in words (``validate``), after checking the files of ``tls: files``; None when
    the stack has no ingress."""
    ingress = stack.plan.ingress
    if ingress is None:
        return None
    routes = ", ".join(f"{r.path} to {r.channel}:{r.upstream_port}" for r in ingress.routes)
    settings = stack.config.ingress
    if ingress.tls == "files" and settings.cert_file and settings.key_file:
        base = stack.loaded.base_dir
        checked = check_files(ingress, base / settings.cert_file, base / settings.key_file)
        return f"routes {routes}; TLS from {checked}"
    how = {"acme": f"ACME certificates for {ingress.domain}", "internal": "Caddy's own CA"}[ingress.tls]
    return f"routes {routes}; TLS by {how}"


def check_files(ingress: IngressPlan, cert_file: Path, key_file: Path) -> str:
    """Read and check the files of ``tls: files``; one ConfigError paragraph per problem. Returns
    what ``validate`` says of them."""
    cert_bytes = _read("ingress.cert_file", cert_file)
    key_bytes = _read("ingress.key_file", key_file)
    try:
        chain = x509.load_pem_x509_certificates(cert_bytes)
    except ValueError:
        raise ConfigError(f"ingress.cert_file ({cert_file}) holds no PEM certificate. {_FIX}") from None
    try:
        key = serialization.load_pem_private_key(key_bytes, password=None)
    except (ValueError, TypeError) as exc:
        why = "is encrypted (Caddy needs it without a passphrase)" if isinstance(exc, TypeError) else ""
        raise ConfigError(
            f"ingress.key_file ({key_file}) {why or 'holds no PEM private key'}. {_FIX}"
        ) from None
    leaf = chain[0]
    der = serialization.Encoding.DER
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(der, spki) != leaf.public_key().public_bytes(der, spki):
        raise ConfigError(
            f"ingress.key_file ({key_file}) is not the key of the certificate in ingress.cert_file "
            f"({cert_file}): the ingress could not prove it holds the certificate. {_FIX}"
        )
    now = datetime.datetime.now(datetime.UTC)
    if leaf.not_valid_after_utc <= now:
        raise ConfigError(
            f"ingress.cert_file ({cert_file}) expired on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC: "
            f"providers refuse it. Renew it. {_FIX}"
        )
    if leaf.not_valid_before_utc > now:
        raise ConfigError(
            f"ingress.cert_file ({cert_file}) is valid only from {leaf.not_valid_before_utc:%Y-%m-%d %H:%M} "
            "UTC. Check this machine's clock, or use a certificate valid now."
        )
    names = _names(leaf)
    for wanted in ingress.names:
        if not any(_covers(name, wanted) for name in names):
            raise ConfigError(
                f"ingress.cert_file ({cert_file}) is for {', '.join(sorted(names)) or 'no name'}, not "
                f"for {wanted} (ingress.domain): clients would refuse it. Give a certificate for "
                f"{wanted}, or set ingress.domain to the name it is for."
            )
    until = f"{leaf.not_valid_after_utc:%Y-%m-%d}"
    return f"{cert_file} (checked: matches its key, valid until {until}, names {', '.join(ingress.names)})"


def _read(key: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"{key} is {path}, which cannot be read ({exc.strerror or exc}). Fix the path (relative "
            "paths are from the deploy file's folder) or the file's permissions."
        ) from None


def _names(cert: x509.Certificate) -> set[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        found = {str(name).lower() for name in san.get_values_for_type(x509.DNSName)}
        found |= {str(address) for address in san.get_values_for_type(x509.IPAddress)}
        return found
    except x509.ExtensionNotFound:  # an old certificate: its common name is what clients check
        return {str(a.value).lower() for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)}


def _covers(name: str, wanted: str) -> bool:
    if name == wanted:
        return True
    # *.example.com covers a.example.com, not a.b.example.com nor example.com
    return name.startswith("*.") and wanted.partition(".")[2] == name[2:]


def write_root(output_dir: Path, ingress: IngressPlan, pem: str) -> Path | None:
    """The internal CA's root certificate at ``ingress.root_cert_file`` (0644: it is public), when
    ``pem`` is one; None otherwise (the caller says the ingress has none yet)."""
    if ingress.root_cert_file is None:
        return None
    try:
        x509.load_pem_x509_certificate(pem.encode())
    except ValueError:
        return None
    target = output_dir / ingress.root_cert_file
    try:
        if not target.is_file() or target.read_text(encoding="utf-8") != pem:
            replace_private(target, pem, 0o644)
    except OSError as exc:
        raise OutputError(
            f"Cannot write the ingress's root certificate to {target} ({exc.strerror or exc}); check the "
            "output folder's permissions."
        ) from None
    return target

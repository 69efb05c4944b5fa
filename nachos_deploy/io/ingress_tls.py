"""The ingress's certificates on the host side: the user's files checked (``tls: files``), and the
root of Caddy's own CA written to the output folder (``tls: internal``) so clients can trust it.

A certificate that does not match its key, has expired or names another domain would only show as
a handshake failure on the provider's side, long after ``up`` said the stack was fine: ``validate``
and ``up`` refuse it here instead, naming the key and the file.
"""

from __future__ import annotations

from pathlib import Path

from cryptography import x509

from nachos_deploy.core.errors import ConfigError, OutputError
from nachos_deploy.core.ingress import IngressPlan
from nachos_deploy.io import certificates
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
    pair = certificates.load_pair("ingress", cert_file, key_file, server="ingress (Caddy)", fix=_FIX)
    for wanted in ingress.names:
        if not certificates.covers(pair.leaf, wanted):
            names = certificates.names(pair.leaf)
            raise ConfigError(
                f"ingress.cert_file ({cert_file}) is for {', '.join(sorted(names)) or 'no name'}, not "
                f"for {wanted} (ingress.domain): clients would refuse it. Give a certificate for "
                f"{wanted}, or set ingress.domain to the name it is for."
            )
    until = f"{pair.leaf.not_valid_after_utc:%Y-%m-%d}"
    return f"{cert_file} (checked: matches its key, valid until {until}, names {', '.join(ingress.names)})"


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

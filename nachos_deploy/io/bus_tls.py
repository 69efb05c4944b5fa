"""The certificate the hub's client port serves when it leaves the machine (bus.tls), and the CA
file the host's clients trust.

Two sources. By default nachos-deploy is its own CA: a key and certificate made once per output
folder (``credentials/bus-ca-key.pem``, 0600, never mounted anywhere; ``credentials/bus-ca.pem``,
what clients trust), which signs the server's certificate for the names clients use (the plan's,
plus this host's name). The server's certificate is made again when those names change, when it
nears its end, or when ``credentials rotate`` asks (a new key, the same CA, so no client needs a new
trust file). Or the user gives ``bus.tls.cert_file``/``key_file`` (and ``ca_file``): they are
checked (readable, a certificate and its own key, valid now) and copied beside the generated ones,
so the rendered files mount one place whichever the source. Either way ``up`` has a running bus
re-read files it has not read yet (:func:`loaded`, lifecycle/bus_tls_reload.py).

The server's files sit in ``credentials/bus-tls/`` (0711, files 0644, inside the 0700
``credentials/``), as the passwords' ``secrets.conf`` does and for the same reason: the hub reads them
as a root without CAP_DAC_OVERRIDE, which cannot open another uid's 0600 file; no other host user can
reach them through ``credentials/``. On Swarm each is a Swarm secret, named by the folder's hash.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from nachos_deploy.core.errors import ConfigError, OutputError
from nachos_deploy.core.names import (
    CREDENTIALS_DIR,
    TLS_CA,
    TLS_CA_KEY,
    TLS_CERT,
    TLS_KEY,
    TLS_LOADED,
    TLS_OWNER,
)
from nachos_deploy.core.plan import secret_version_variable
from nachos_deploy.core.plan_types import BusTlsPlan, Plan
from nachos_deploy.io import certificates
from nachos_deploy.io.files import replace_private

CA_DAYS = 3650
SERVER_DAYS = 397  # what browsers accept for a server certificate; nats-server does not care
RENEW_BEFORE = datetime.timedelta(days=30)
FIX = (
    "Give bus.tls.cert_file and bus.tls.key_file that match and are valid now, or remove both "
    "(nachos-deploy then makes its own)."
)


@dataclass(frozen=True)
class UserFiles:
    """The user's files, read and checked: PEM bytes to copy, and the CA file clients trust."""

    cert: bytes
    key: bytes
    ca_file: Path | None


def ca_file(output_dir: Path, plan: Plan) -> Path | None:
    """The file clients must trust for the bus's certificate (see ``BusTlsPlan.trusted_ca``)."""
    tls = plan.bus.tls
    found = tls.trusted_ca(output_dir) if tls is not None else None
    return Path(found) if found is not None else None


def ensure(output_dir: Path, plan: Plan, *, rotate: bool = False) -> Path | None:
    """Make sure the server's certificate and key the plan mounts are in place (a new key when
    ``rotate``), and return the CA file clients trust (see :func:`ca_file`). Nothing is written when
    TLS is off. A user's file that is unreadable, mismatched or expired is a ``ConfigError``."""
    tls = plan.bus.tls
    if tls is None:
        return None
    credentials = output_dir / CREDENTIALS_DIR
    if tls.generated:
        cert, key = _own_server_files(credentials, tls, rotate=rotate)
    else:
        files = check_user_files(tls)
        cert, key = files.cert, files.key
    _write_server_files(credentials / TLS_OWNER, cert, key)
    return ca_file(output_dir, plan)


def secret_versions(output_dir: Path) -> dict[str, str]:
    """The TLS files' Swarm secret version (their hash), as credentials.secret_versions gives the
    passwords': a renewed certificate must be a secret of a new name."""
    digest = _digest(output_dir)
    return {secret_version_variable(TLS_OWNER): digest} if digest is not None else {}


def loaded(output_dir: Path) -> bool:
    """Whether the server's files are the ones the running bus last read, as :func:`record_loaded`
    noted. A nats-server reads them only at start or reload, and Compose keeps a bus whose rendered
    files did not change: a certificate made again (near its end, for new names, by ``render``, or
    a user's files copied anew) would otherwise be served only from the bus's next restart."""
    try:
        noted = (output_dir / CREDENTIALS_DIR / TLS_LOADED).read_text(encoding="utf-8").strip()
    except OSError:
        noted = None
    return noted == _digest(output_dir)


def record_loaded(output_dir: Path) -> None:
    """Note that the running bus reads the server's files as they are now (after its reload, or as
    it starts); see :func:`loaded`."""
    digest = _digest(output_dir)
    if digest is None:
        return
    try:
        replace_private(output_dir / CREDENTIALS_DIR / TLS_LOADED, digest + "\n", 0o600)
    except OSError as exc:
        raise _cannot_write(output_dir / CREDENTIALS_DIR, exc) from None


def _digest(output_dir: Path) -> str | None:
    folder = output_dir / CREDENTIALS_DIR / TLS_OWNER
    try:
        content = b"".join(path.read_bytes() for path in (folder / TLS_CERT, folder / TLS_KEY))
    except OSError:
        return None
    return hashlib.sha256(content).hexdigest()[:12]


def wanted_names(tls: BusTlsPlan) -> set[str]:
    """The names nachos-deploy's own server certificate must carry (the plan's and this host's), as
    :func:`certificates.names` reads them from a certificate."""
    return _normalized(_names(tls))


# -- the user's files -----------------------------------------------------------------------------


def check_user_files(tls: BusTlsPlan) -> UserFiles:
    """Read and check ``bus.tls.cert_file``/``key_file``/``ca_file``; each problem is one paragraph
    naming the key and the file. (``validate`` and ``up`` both call this.)"""
    assert tls.cert_file is not None and tls.key_file is not None
    pair = certificates.load_pair("bus.tls", tls.cert_file, tls.key_file, server="nats-server", fix=FIX)
    if not certificates.covers(pair.leaf, tls.server_name):
        named = ", ".join(sorted(certificates.names(pair.leaf))) or "no name at all"
        raise ConfigError(
            f"bus.tls.cert_file ({tls.cert_file}) is for {named}, not for {tls.server_name}, which "
            "nachos-deploy's own clients check it for (they connect to that address): put that name "
            "first in bus.tls.names if the certificate names it, e.g. bus.tls.names: [bus.example.net], "
            "or use a certificate that covers the address."
        )
    ca_path = None
    if tls.ca_file is not None:
        ca_bytes = certificates.read("bus.tls.ca_file", tls.ca_file)
        try:
            cas = x509.load_pem_x509_certificates(ca_bytes)
        except ValueError:
            raise ConfigError(
                f"bus.tls.ca_file ({tls.ca_file}) holds no PEM certificate. Give the CA certificate "
                "that signed bus.tls.cert_file, or remove the key to trust the system's CAs."
            ) from None
        for ca in cas:
            certificates.check_dates("bus.tls.ca_file", tls.ca_file, ca, fix=FIX)
        ca_path = Path(tls.ca_file)
    return UserFiles(pair.cert_bytes, pair.key_bytes, ca_path)


# -- nachos-deploy's own CA ---------------------------------------------------------------------


def _own_server_files(credentials: Path, tls: BusTlsPlan, *, rotate: bool) -> tuple[bytes, bytes]:
    """The server's certificate and key, signed by the CA of this output folder (made on first use);
    the existing pair is kept while it is signed by that CA, covers the wanted names and is not near
    its end, so a second ``up`` changes nothing and the bus is not reloaded for nothing."""
    ca_cert, ca_key = _own_ca(credentials)
    names = _names(tls)
    folder = credentials / TLS_OWNER
    if not rotate:
        kept = _kept_server_files(folder, ca_cert, names)
        if kept is not None:
            return kept
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    sans: list[x509.GeneralName] = []
    for name in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nachos-deploy bus")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=SERVER_DAYS))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def _names(tls: BusTlsPlan) -> tuple[str, ...]:
    """The plan's names and this host's name (planning is pure, so the host is asked here)."""
    names = list(tls.names)
    host = socket.gethostname()
    if host and host not in names and all(part and len(part) < 64 for part in host.split(".")):
        names.append(host)
    return tuple(names)


def _normalized(names: tuple[str, ...]) -> set[str]:
    return {str(ipaddress.ip_address(n)) if certificates.is_address(n) else n.lower() for n in names}


def _kept_server_files(
    folder: Path, ca_cert: x509.Certificate, names: tuple[str, ...]
) -> tuple[bytes, bytes] | None:
    try:
        cert_bytes = (folder / TLS_CERT).read_bytes()
        key_bytes = (folder / TLS_KEY).read_bytes()
        cert = x509.load_pem_x509_certificate(cert_bytes)
        key = serialization.load_pem_private_key(key_bytes, password=None)
    except (OSError, ValueError, TypeError):
        return None
    same_key = certificates.holds_key(key.public_key(), cert)
    fresh = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC) > RENEW_BEFORE
    wanted = _normalized(names)
    if not (same_key and fresh and cert.issuer == ca_cert.subject and certificates.names(cert) == wanted):
        return None
    if not certificates.signed_by(cert, ca_cert):  # a CA made anew (its old files lost) signs anew
        return None
    return cert_bytes, key_bytes


def _own_ca(credentials: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """This output folder's CA, made on first use and kept (clients trust its certificate file)."""
    cert_path, key_path = credentials / TLS_CA, credentials / TLS_CA_KEY
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if (
            isinstance(key, ec.EllipticCurvePrivateKey)
            and cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC) > RENEW_BEFORE
        ):
            return cert, key
    except (OSError, ValueError, TypeError):
        pass
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, f"nachos-deploy bus CA {socket.gethostname()}")]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    try:
        credentials.mkdir(mode=0o700, parents=True, exist_ok=True)
        credentials.chmod(0o700)
        replace_private(key_path, _key_pem(key).decode(), 0o600)  # the key first: a cert alone is useless
        replace_private(cert_path, cert.public_bytes(serialization.Encoding.PEM).decode(), 0o644)
    except OSError as exc:
        raise _cannot_write(credentials, exc) from None
    return cert, key


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write_server_files(folder: Path, cert: bytes, key: bytes) -> None:
    """Both files, each in one rename and only when changed (a reload then sees no change)."""
    try:
        folder.mkdir(mode=0o711, parents=True, exist_ok=True)
        folder.chmod(0o711)
        for path, content in ((folder / TLS_KEY, key), (folder / TLS_CERT, cert)):
            if not (path.is_file() and path.read_bytes() == content):
                replace_private(path, content.decode(), 0o644)
    except OSError as exc:
        raise _cannot_write(folder, exc) from None


def _cannot_write(where: Path, exc: OSError) -> OutputError:
    return OutputError(
        f"Cannot write the bus's TLS files to {where} ({exc.strerror or exc}). Fix the output "
        "folder's permissions or choose another with --output."
    )

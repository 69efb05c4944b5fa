"""What ``doctor`` says of the bus's TLS files (bus.tls), before a client finds out by a failed
handshake: readable, the key the certificate's own, signed by the CA clients trust, not expired nor
ending within :data:`EXPIRY_WARNING`, naming every name clients use.

The levels follow what ``up`` does about each finding. A user's files that ``up`` refuses (exit 3),
or that the host's clients would refuse (not signed by ``bus.tls.ca_file``: ``up``'s gate fails),
are a failure. What still works today but will not for long (a certificate or CA near its end, a
name in ``bus.tls.names`` the certificate does not carry) is a warning. nachos-deploy's own files are
made again by the next ``up``, which also has the running bus re-read them (lifecycle/bus_tls_reload.py):
a stale or broken one is a warning whose fix is ``up``; a CA made again is a warning too, as every
client must then be handed the new ``bus-ca.pem``.
"""

from __future__ import annotations

import datetime
import itertools
from pathlib import Path
from typing import Literal, NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from nachos_deploy.core.errors import ConfigError
from nachos_deploy.core.names import CREDENTIALS_DIR, TLS_CA, TLS_CA_KEY, TLS_CERT, TLS_KEY, TLS_OWNER
from nachos_deploy.core.plan_types import Plan
from nachos_deploy.io import bus_tls, certificates

EXPIRY_WARNING = datetime.timedelta(days=30)  # as bus_tls.RENEW_BEFORE: the next up renews its own then
NAME = "bus tls"
_UP = "run `nachos-deploy up`: it makes a new one from the same CA and has the running bus re-read it"


class Finding(NamedTuple):
    level: Literal["pass", "warn", "fail"]
    detail: str
    fix: str = ""


def examine(output_dir: Path, plan: Plan) -> list[Finding]:
    """Every finding on the bus's TLS files; none when bus.tls is off."""
    tls = plan.bus.tls
    if tls is None:
        return []
    if tls.generated:
        return _own_files(output_dir, plan)
    return _user_files(output_dir, plan)


# -- the user's files ------------------------------------------------------------------------------


def _user_files(output_dir: Path, plan: Plan) -> list[Finding]:
    tls = plan.bus.tls
    assert tls is not None and tls.cert_file is not None
    try:
        files = bus_tls.check_user_files(tls)  # what validate and up refuse (exit 3)
    except ConfigError as exc:
        return [Finding("fail", exc.message, bus_tls.FIX)]
    chain = x509.load_pem_x509_certificates(files.cert)
    leaf = chain[0]
    found: list[Finding] = []
    ending = _ending("bus.tls.cert_file", tls.cert_file, leaf)
    if ending:
        found.append(Finding("warn", ending, "renew it, then run `nachos-deploy up` (the bus re-reads it)"))
    missing = [name for name in tls.names if not certificates.covers(leaf, name)]
    if missing:
        carried = ", ".join(sorted(certificates.names(leaf))) or "no name at all"
        found.append(
            Finding(
                "warn",
                f"bus.tls.cert_file ({tls.cert_file}) is for {carried}, not for {', '.join(missing)} "
                "(bus.tls.names): a client that connects by that name refuses it",
                "use a certificate that names every one of bus.tls.names, or remove the others",
            )
        )
    if files.ca_file is not None:
        cas = x509.load_pem_x509_certificates(files.ca_file.read_bytes())
        for ca in cas:
            ending = _ending("bus.tls.ca_file", files.ca_file, ca)
            if ending:
                found.append(Finding("warn", ending, "renew the CA and the certificates it signed"))
        if not _chains_to(chain, cas):
            found.append(
                Finding(
                    "fail",
                    f"bus.tls.cert_file ({tls.cert_file}) is not signed by a CA in bus.tls.ca_file "
                    f"({files.ca_file}): clients that trust that file refuse the bus, `up`'s own first",
                    "give the CA certificate that signed it in bus.tls.ca_file (the chain's "
                    "intermediates after the certificate in bus.tls.cert_file)",
                )
            )
    copied = output_dir / CREDENTIALS_DIR / TLS_OWNER
    if (copied / TLS_CERT).is_file() and _read(copied / TLS_CERT) != files.cert:
        found.append(
            Finding(
                "warn",
                f"{copied / TLS_CERT} is not bus.tls.cert_file ({tls.cert_file}) as it is now: the bus "
                "serves the copy the last `up` made",
                "run `nachos-deploy up`: it copies the files and has the running bus re-read them",
            )
        )
    if found:
        return found
    until = f"{leaf.not_valid_after_utc:%Y-%m-%d}"
    trusted = f", signed by a CA in {files.ca_file}" if files.ca_file else ""
    return [
        Finding(
            "pass",
            f"{tls.cert_file}: matches its key, valid until {until}, names {tls.server_name}"
            f"{''.join(', ' + n for n in tls.names[1:])}{trusted}",
        )
    ]


def _chains_to(chain: list[x509.Certificate], cas: list[x509.Certificate]) -> bool:
    """Whether each certificate of ``chain`` is signed by the next, and the last by one of ``cas``
    (or is one of them)."""
    for child, parent in itertools.pairwise(chain):
        if not certificates.signed_by(child, parent):
            return False
    top = chain[-1]
    return any(top == ca or certificates.signed_by(top, ca) for ca in cas)


# -- nachos-deploy's own files ---------------------------------------------------------------------


def _own_files(output_dir: Path, plan: Plan) -> list[Finding]:
    tls = plan.bus.tls
    assert tls is not None
    credentials = output_dir / CREDENTIALS_DIR
    ca_path, server_path = credentials / TLS_CA, credentials / TLS_OWNER / TLS_CERT
    if not ca_path.exists() and not server_path.exists():
        return [
            Finding(
                "pass",
                f"nachos-deploy's own CA: not made yet; the next `up` (or `render`) makes it in "
                f"{credentials} and a server certificate for {', '.join(sorted(bus_tls.wanted_names(tls)))}",
            )
        ]
    ca, why = _own_ca(credentials)
    if ca is None:
        return [
            Finding(
                "warn",
                f"{ca_path}: {why}: the next `up` makes a new CA, and every client must then be given "
                "the new file to trust",
                f"put the output folder's {TLS_CA} and {TLS_CA_KEY} back from a backup, or hand clients "
                f"the new {ca_path} after `up`",
            )
        ]
    found: list[Finding] = []
    ending = _ending("nachos-deploy's CA", ca_path, ca)
    if ending:
        found.append(
            Finding(
                "warn",
                f"{ending}; the next `up` makes a new CA, which every client must then trust",
                f"after `nachos-deploy up`, hand clients the new {ca_path}",
            )
        )
    server, why = _own_server(credentials, ca)
    if server is None:
        found.append(Finding("warn", f"{server_path}: {why}", _UP))
        return found
    ending = _ending("the bus's certificate", server_path, server)
    if ending:
        found.append(Finding("warn", ending, _UP))
    wanted, carried = bus_tls.wanted_names(tls), certificates.names(server)
    if carried != wanted:
        found.append(
            Finding(
                "warn",
                f"{server_path} names {', '.join(sorted(carried))}, but clients use "
                f"{', '.join(sorted(wanted))} (the bind address, bus.tls.names and this host's name)",
                _UP,
            )
        )
    if found:
        return found
    return [
        Finding(
            "pass",
            f"nachos-deploy's CA ({ca_path}, until {ca.not_valid_after_utc:%Y-%m-%d}) signed {server_path} "
            f"for {', '.join(sorted(carried))}, valid until {server.not_valid_after_utc:%Y-%m-%d}",
        )
    ]


def _own_ca(credentials: Path) -> tuple[x509.Certificate | None, str]:
    """The CA's certificate when it and its key can be read and belong together; else why not."""
    try:
        cert = x509.load_pem_x509_certificate((credentials / TLS_CA).read_bytes())
        key = serialization.load_pem_private_key((credentials / TLS_CA_KEY).read_bytes(), password=None)
    except OSError as exc:
        return None, f"cannot be read with its key {TLS_CA_KEY} ({exc.strerror or exc})"
    except (ValueError, TypeError):
        return None, f"it or its key {TLS_CA_KEY} is not a PEM certificate or key nachos-deploy made"
    if not certificates.holds_key(key.public_key(), cert):
        return None, f"{TLS_CA_KEY} is not the key of this CA"
    return cert, ""


def _own_server(credentials: Path, ca: x509.Certificate) -> tuple[x509.Certificate | None, str]:
    """The server's certificate when it, its key and its signature check out; else why not."""
    folder = credentials / TLS_OWNER
    try:
        cert = x509.load_pem_x509_certificate((folder / TLS_CERT).read_bytes())
        key = serialization.load_pem_private_key((folder / TLS_KEY).read_bytes(), password=None)
    except OSError as exc:
        return None, f"cannot be read with its key {TLS_KEY} ({exc.strerror or exc})"
    except (ValueError, TypeError):
        return None, f"it or its key {TLS_KEY} is not a PEM certificate or key"
    if not certificates.holds_key(key.public_key(), cert):
        return None, f"{TLS_KEY} is not its key: the bus cannot serve it"
    if not certificates.signed_by(cert, ca):
        return (
            None,
            f"it is not signed by the CA in {credentials / TLS_CA}: clients trusting that CA refuse it",
        )
    return cert, ""


# -- shared ----------------------------------------------------------------------------------------


def _ending(what: str, path: str | Path, cert: x509.Certificate) -> str | None:
    """Why ``cert`` needs renewing soon (expired, not valid yet, or ending within EXPIRY_WARNING)."""
    now = datetime.datetime.now(datetime.UTC)
    end = cert.not_valid_after_utc
    if end <= now:
        return f"{what} ({path}) expired on {end:%Y-%m-%d %H:%M} UTC: clients refuse it"
    if cert.not_valid_before_utc > now:
        return f"{what} ({path}) is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
    if end - now <= EXPIRY_WARNING:
        return f"{what} ({path}) ends on {end:%Y-%m-%d} (in {(end - now).days} days): clients refuse it then"
    return None


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None

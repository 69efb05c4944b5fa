"""The bus's passwords: generated once per project, kept in the output folder, never rendered.

The rendered nats configs name them only as variables (``$NACHOS_OPERATOR_PASSWORD``), so ``render``
stays byte-for-byte deterministic and a committed output folder holds no secret. They are kept in
``credentials/*.env`` (mode 0600, in a 0700 folder the rendered ``.gitignore`` keeps out of version
control), which nachos-deploy reads: ``bus.env`` has every password the hub checks; each
``bus-<component>.env`` has only the URL its sidecar logs in with.

The servers read the same values from ``<service>/secrets.conf``, which their config ``include``s
(see :data:`~nachos_deploy.core.names.CREDENTIALS_MOUNT`), never from their environment, where
anyone who may read the process's environ or ``docker inspect`` it would read them too. On Compose
the folder is mounted, so a rotation reaches a running server by a reload (nats-server re-reads
files on SIGHUP); on Swarm the file is a Swarm secret, named by its hash (:func:`secret_versions`).
Those folders are 0711 and their file 0644, because the sidecars read them as their own uid and the hub
as a root without CAP_DAC_OVERRIDE; no other host user can reach them, since ``credentials/`` itself
stays 0700.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import urllib.parse
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from nachos_deploy.core.bus_nodes import leaf_remotes, route_host, route_variable
from nachos_deploy.core.errors import OutputError
from nachos_deploy.core.names import (
    BUS,
    CREDENTIALS_DIR,
    CREDENTIALS_INCLUDE,
    LEAF_PORT,
    LEAF_URL,
    OPERATOR_PASSWORD,
    OPERATOR_USER,
    ROUTE_PASSWORD,
    ROUTE_PORT,
    ROUTE_USER,
    SYSTEM_PASSWORD,
    SYSTEM_USER,
)
from nachos_deploy.core.plan import secret_version_variable
from nachos_deploy.core.plan_types import Plan
from nachos_deploy.io.files import read_env_file, replace_private

PASSWORD_BYTES = 24  # 192 bits from the OS's CSPRNG
BUS_ENV = f"{BUS}.env"  # every password the hub checks


def new_password() -> str:
    """Hex after a letter: nats-server parses a ``$VARIABLE``'s value as a config token, so a value
    starting with a digit would be read as a number (and fail); hex also needs no URL escaping."""
    return "n" + secrets.token_hex(PASSWORD_BYTES)


@dataclass(frozen=True)
class Credentials:
    operator_password: str
    # The monitoring reader of the system account; None in a folder written before there was one
    # (the next `up` adds it).
    system_password: str | None = None

    def operator_url(self, nats_url: str) -> str:
        """``nats_url`` with the operator's user and password: what a caller can use as it is."""
        return _with_login(nats_url, OPERATOR_USER, self.operator_password)

    def system_url(self, nats_url: str) -> str | None:
        """``nats_url`` with the system user's login, which reads the servers' monitoring over NATS
        (see :mod:`~nachos_deploy.bus.monitor`); None when there is no system password yet."""
        if self.system_password is None:
            return None
        return _with_login(nats_url, SYSTEM_USER, self.system_password)


def _with_login(nats_url: str, user: str, password: str) -> str:
    parts = urllib.parse.urlsplit(nats_url)
    netloc = f"{user}:{urllib.parse.quote(password, safe='')}@{parts.netloc}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def folder(output_dir: Path) -> Path:
    return output_dir / CREDENTIALS_DIR


def load(output_dir: Path) -> Credentials | None:
    """The operator's credentials, or None before the first ``up``."""
    hub = read_env_file(folder(output_dir) / BUS_ENV)
    password = hub.get(OPERATOR_PASSWORD)
    return Credentials(password, hub.get(SYSTEM_PASSWORD) or None) if password else None


def snapshot(output_dir: Path) -> dict[str, str]:
    """The credential files as they are now, to tell whether ``ensure`` changed any (Compose reads
    them as ``env_file``s: a project resolved before they changed is out of date)."""
    try:
        return {p.name: p.read_text(encoding="utf-8") for p in sorted(folder(output_dir).glob("*.env"))}
    except OSError:
        return {}


def ensure(output_dir: Path, plan: Plan, *, rotate: bool = False) -> Credentials:
    """Make sure every password the plan needs exists (all new when ``rotate``), and write the files
    the hub and each sidecar read. Existing passwords are kept, so a second ``up`` changes nothing."""
    on_disk = read_env_file(folder(output_dir) / BUS_ENV)
    existing = {} if rotate else on_disk

    def password(name: str) -> str:
        return existing.get(name) or new_password()

    hub = {OPERATOR_PASSWORD: password(OPERATOR_PASSWORD)}
    if plan.auth:  # the system account exists only in a hub that checks logins
        hub[SYSTEM_PASSWORD] = password(SYSTEM_PASSWORD)
    files: dict[str, dict[str, str]] = {}
    for sidecar in plan.sidecars:
        hub[sidecar.password_variable] = password(sidecar.password_variable)
        user = urllib.parse.quote(sidecar.leaf_user, safe="")
        secret = urllib.parse.quote(hub[sidecar.password_variable], safe="")
        files[f"{sidecar.service.name}.env"] = {
            variable: f"nats://{user}:{secret}@{host}:{LEAF_PORT}"
            for variable, host in leaf_remotes(len(plan.bus.nodes))
        }
    if plan.bus.clustered:  # the routes between the nodes, with their own password
        # Kept by a rotation: only the nodes use it, on bus-link, and changing it under running nodes
        # would part them until each had reloaded (see docs/security.md).
        hub[ROUTE_PASSWORD] = on_disk.get(ROUTE_PASSWORD) or new_password()
        secret = urllib.parse.quote(hub[ROUTE_PASSWORD], safe="")
        for index in range(1, len(plan.bus.nodes) + 1):
            where = f"{route_host(index)}:{ROUTE_PORT}"
            hub[route_variable(index)] = f"nats-route://{ROUTE_USER}:{secret}@{where}"
    files[f"{BUS}.env"] = hub
    _write_private(folder(output_dir), files)
    _write_includes(folder(output_dir), {name.removesuffix(".env"): values for name, values in files.items()})
    return Credentials(hub[OPERATOR_PASSWORD], hub.get(SYSTEM_PASSWORD))


def leaf_logins(output_dir: Path, plan: Plan) -> dict[str, tuple[str, str]]:
    """Sidecar service → the (user, password) it logs in at the hub with now: after a rotation, the
    old ones must be refused."""
    logins = {}
    for sidecar in plan.sidecars:
        url = read_env_file(folder(output_dir) / f"{sidecar.service.name}.env").get(LEAF_URL)
        parts = urllib.parse.urlsplit(url or "")
        if parts.username and parts.password:
            logins[sidecar.service.name] = (
                urllib.parse.unquote(parts.username),
                urllib.parse.unquote(parts.password),
            )
    return logins


def secret_versions(output_dir: Path) -> dict[str, str]:
    """Each Swarm secret's version variable → the hash of its file as it is now: the stack files name
    the bus's credential secrets by it (a rotated file must be a secret of a new name)."""
    name = PurePosixPath(CREDENTIALS_INCLUDE).name
    return {
        secret_version_variable(path.parent.name): hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        for path in sorted(folder(output_dir).glob(f"*/{name}"))
    }


def include_text(values: dict[str, str]) -> str:
    """The variables as nats-server config assignments (``NAME: "value"``): values are hex or URLs
    of hex, but are escaped as JSON strings anyway, which nats-server reads the same way."""
    lines = "".join(f"{key}: {json.dumps(value)}\n" for key, value in sorted(values.items()))
    return "# Written by nachos-deploy (credentials rotate changes it); never commit it.\n" + lines


def _write_includes(directory: Path, owners: dict[str, dict[str, str]]) -> None:
    """Each owner's ``secrets.conf`` in its own folder, replaced atomically (a reload reads the old
    file or the new one, never half of one; a folder is mounted, not the file, so the server sees
    the new file). Readable inside the containers: see the module's docstring."""
    name = PurePosixPath(CREDENTIALS_INCLUDE).name
    try:
        for owner, values in owners.items():
            place = directory / owner
            place.mkdir(mode=0o711, exist_ok=True)
            place.chmod(0o711)
            _replace_if_changed(place / name, include_text(values), 0o644)
    except OSError as exc:
        raise OutputError(
            f"Cannot write the bus credentials to {directory} ({exc.strerror or exc}). Fix the output "
            "folder's permissions or choose another with --output."
        ) from None


def _write_private(directory: Path, files: dict[str, dict[str, str]]) -> None:
    """Each file atomically, created 0600 (never readable by others, not even for a moment)."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        directory.chmod(0o700)
        for name, values in files.items():
            text = "".join(f"{key}={value}\n" for key, value in sorted(values.items()))
            _replace_if_changed(directory / name, text, 0o600)
    except OSError as exc:
        raise OutputError(
            f"Cannot write the bus credentials to {directory} ({exc.strerror or exc}). Fix the output "
            "folder's permissions or choose another with --output."
        ) from None


def _replace_if_changed(target: Path, text: str, mode: int) -> None:
    """Swap ``target`` for ``text`` in one rename, so a server reloading it never reads half a file; the
    temporary file is made 0600 by mkstemp and only then given ``mode``, and an unchanged file is left
    alone so a reload sees no change."""
    if target.is_file() and target.read_text(encoding="utf-8") == text:
        return
    replace_private(target, text, mode)

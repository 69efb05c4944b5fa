"""The state store's logins: generated once per project, kept in the output folder, never rendered.

Redis learns them from an ACL file (``credentials/state/users.acl``) that holds each password only as
its SHA-256 (``#<hex>``), so the state's container never holds the gateway's password: it checks it.
The plain passwords live in ``credentials/state.env`` (0600, in the 0700 folder the rendered
``.gitignore`` keeps out of version control), and the gateway's reaches the gateway as the URLs it
reads (``REDIS_URL``, ``RUNTIME_REDIS_URL``) through its private env file
``credentials/platform-gateway.env`` (see :mod:`~nachos_deploy.io.platform_secrets`).

Four users: ``default`` off (no login without a name and a password), the gateway's (every command
but the administrative ones: it keeps its limits and sessions there), the healthcheck's, which
may only PING and list the clients (what ``status`` reads), so the one plain password inside the
state's container opens nothing, and ``backup``'s, which may only take a snapshot
(``redis-cli --rdb``: SYNC with REPLCONF) and count the keys: it reads the data as a whole, never
writes it. The ACL file's folder is 0711 and its files 0644, as the bus's
``secrets.conf``: Redis reads them as its own uid, and ``credentials/`` itself stays 0700.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from nachos_deploy.core.catalog import Role
from nachos_deploy.core.errors import OutputError
from nachos_deploy.core.names import (
    CREDENTIALS_DIR,
    STATE,
    STATE_ACL_FILE,
    STATE_BACKUP_USER,
    STATE_GATEWAY_USER,
    STATE_HEALTH_FILE,
    STATE_HEALTH_USER,
    STATE_PORT,
    STATE_URL_VARIABLES,
)
from nachos_deploy.core.plan import secret_version_variable
from nachos_deploy.core.plan_types import Plan
from nachos_deploy.io import platform_secrets
from nachos_deploy.io.credentials import new_password
from nachos_deploy.io.files import read_env_file, replace_private
from nachos_deploy.io.stack import Stack

GATEWAY_PASSWORD = "NACHOS_STATE_GATEWAY_PASSWORD"
HEALTH_PASSWORD = "NACHOS_STATE_HEALTH_PASSWORD"
BACKUP_PASSWORD = "NACHOS_STATE_BACKUP_PASSWORD"
ENV_FILE = f"{STATE}.env"
# What the gateway may do: everything on every key and channel but the administrative commands
# (ACL, CONFIG, DEBUG, SHUTDOWN, MONITOR, REPLICAOF, ...), which would let it undo these rules.
GATEWAY_RULES = "~* &* +@all -@admin"
HEALTH_RULES = "resetkeys resetchannels -@all +ping +client|list"
# `backup`: redis-cli --rdb (REPLCONF, then SYNC: the whole data set as one RDB stream) and the key
# count for its manifest; no key pattern, so no command that names a key is allowed.
BACKUP_RULES = "resetkeys resetchannels -@all +ping +replconf +sync +psync +info +dbsize"


def folder(output_dir: Path) -> Path:
    return output_dir / CREDENTIALS_DIR


def passwords(output_dir: Path) -> dict[str, str]:
    """The state's plain passwords as they are now ({} before the first ``up``)."""
    return read_env_file(folder(output_dir) / ENV_FILE)


def gateway_url(password: str) -> str:
    """What the gateway dials: node-redis takes the ACL user and its password in the URL. The
    password is hex after a letter (credentials.new_password), so it needs no escaping."""
    return f"redis://{STATE_GATEWAY_USER}:{password}@{STATE}:{STATE_PORT}"


def acl_text(gateway_password: str, health_password: str, backup_password: str) -> str:
    """The ACL file: the passwords only as their SHA-256, which Redis compares a login's hash with."""

    def digest(password: str) -> str:
        return "#" + hashlib.sha256(password.encode()).hexdigest()

    return (
        "user default off resetkeys resetchannels -@all\n"
        f"user {STATE_GATEWAY_USER} on {digest(gateway_password)} {GATEWAY_RULES}\n"
        f"user {STATE_HEALTH_USER} on {digest(health_password)} {HEALTH_RULES}\n"
        f"user {STATE_BACKUP_USER} on {digest(backup_password)} {BACKUP_RULES}\n"
    )


def ensure(output_dir: Path, plan: Plan, *, rotate: bool = False) -> dict[str, dict[str, str]]:
    """Make sure the state's passwords exist (new ones when ``rotate``) and write the ACL file and
    the healthcheck's password beside it; returns what each gateway's env file must add (none when
    the plan has no state store). Existing passwords are kept, so a second ``up`` changes nothing."""
    if plan.state is None:
        return {}
    existing = {} if rotate else passwords(output_dir)
    names = (GATEWAY_PASSWORD, HEALTH_PASSWORD, BACKUP_PASSWORD)
    values = {name: existing.get(name) or new_password() for name in names}
    directory = folder(output_dir)
    place = directory / STATE
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        directory.chmod(0o700)
        _write(directory / ENV_FILE, "".join(f"{k}={v}\n" for k, v in sorted(values.items())), 0o600)
        place.mkdir(mode=0o711, exist_ok=True)
        place.chmod(0o711)
        acl = acl_text(values[GATEWAY_PASSWORD], values[HEALTH_PASSWORD], values[BACKUP_PASSWORD])
        _write(place / STATE_ACL_FILE, acl, 0o644)
        _write(place / STATE_HEALTH_FILE, values[HEALTH_PASSWORD], 0o644)
    except OSError as exc:
        raise OutputError(
            f"Cannot write the state store's credentials to {directory} ({exc.strerror or exc}). Fix "
            "the output folder's permissions or choose another with --output."
        ) from None
    url = gateway_url(values[GATEWAY_PASSWORD])
    return {
        service.name: dict.fromkeys(STATE_URL_VARIABLES, url)
        for service in plan.components
        if service.role is Role.GATEWAY
    }


def _write(target: Path, text: str, mode: int) -> None:
    """Atomically, and only when changed: an unchanged file keeps its time, so nothing restarts."""
    if target.is_file() and target.read_text(encoding="utf-8") == text:
        return
    replace_private(target, text, mode)


def rotate(stack: Stack) -> None:
    """New passwords for the state store, and the gateway's env file with the URLs that carry them
    (the running containers learn them when they start again: lifecycle/rotate.py)."""
    generated = ensure(stack.output_dir, stack.plan, rotate=True)
    platform_secrets.write(stack.output_dir, stack.loaded.platform.secrets, generated)


def secret_versions(output_dir: Path) -> dict[str, str]:
    """The version variable of the state's Swarm secrets (its ACL file and the healthcheck's
    password, one version for both) -> the hash of those files now: a rotated file is a new secret,
    and so a new task of the state store."""
    place = folder(output_dir) / STATE
    try:
        data = b"".join((place / name).read_bytes() for name in (STATE_ACL_FILE, STATE_HEALTH_FILE))
    except OSError:
        return {}
    return {secret_version_variable(STATE): hashlib.sha256(data).hexdigest()[:12]}

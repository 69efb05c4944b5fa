"""The bus's passwords: generated once per project, kept in the output folder, never rendered.

The rendered nats configs name them only as variables (``$NACHOS_OPERATOR_PASSWORD``), which Compose
fills from ``credentials/*.env`` (mode 0600, in a 0700 folder the rendered ``.gitignore`` keeps out of
version control), so ``render`` stays byte-for-byte deterministic and a committed output folder holds
no secret. ``bus.env`` has every password the hub checks; each ``bus-<component>.env`` has only the
URL its sidecar logs in with.
"""

from __future__ import annotations

import os
import secrets
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from nachos_deploy.core.errors import OutputError
from nachos_deploy.core.plan import (
    BUS,
    CREDENTIALS_DIR,
    LEAF_PORT,
    LEAF_URL,
    OPERATOR_PASSWORD,
    OPERATOR_USER,
    ROUTE_PASSWORD,
    ROUTE_PORT,
    ROUTE_USER,
    Plan,
    route_host,
    route_variable,
)
from nachos_deploy.io.files import read_env_file

PASSWORD_BYTES = 24  # 192 bits from the OS's CSPRNG


def new_password() -> str:
    """Hex after a letter: nats-server parses a ``$VARIABLE``'s value as a config token, so a value
    starting with a digit would be read as a number (and fail); hex also needs no URL escaping."""
    return "n" + secrets.token_hex(PASSWORD_BYTES)


@dataclass(frozen=True)
class Credentials:
    operator_password: str

    def operator_url(self, nats_url: str) -> str:
        """``nats_url`` with the operator's user and password: what a caller can use as it is."""
        parts = urllib.parse.urlsplit(nats_url)
        netloc = f"{OPERATOR_USER}:{urllib.parse.quote(self.operator_password, safe='')}@{parts.netloc}"
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def folder(output_dir: Path) -> Path:
    return output_dir / CREDENTIALS_DIR


def load(output_dir: Path) -> Credentials | None:
    """The operator's credentials, or None before the first ``up``."""
    password = read_env_file(folder(output_dir) / f"{BUS}.env").get(OPERATOR_PASSWORD)
    return Credentials(password) if password else None


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
    existing = {} if rotate else read_env_file(folder(output_dir) / f"{BUS}.env")

    def password(name: str) -> str:
        return existing.get(name) or new_password()

    hub = {OPERATOR_PASSWORD: password(OPERATOR_PASSWORD)}
    files: dict[str, dict[str, str]] = {}
    for sidecar in plan.sidecars:
        hub[sidecar.password_variable] = password(sidecar.password_variable)
        user = urllib.parse.quote(sidecar.leaf_user, safe="")
        secret = urllib.parse.quote(hub[sidecar.password_variable], safe="")
        files[f"{sidecar.service.name}.env"] = {LEAF_URL: f"nats://{user}:{secret}@{BUS}:{LEAF_PORT}"}
    if plan.bus.clustered:  # the routes between the nodes, with their own password
        hub[ROUTE_PASSWORD] = password(ROUTE_PASSWORD)
        secret = urllib.parse.quote(hub[ROUTE_PASSWORD], safe="")
        for index in range(1, len(plan.bus.nodes) + 1):
            where = f"{route_host(index)}:{ROUTE_PORT}"
            hub[route_variable(index)] = f"nats-route://{ROUTE_USER}:{secret}@{where}"
    files[f"{BUS}.env"] = hub
    _write_private(folder(output_dir), files)
    return Credentials(hub[OPERATOR_PASSWORD])


def _write_private(directory: Path, files: dict[str, dict[str, str]]) -> None:
    """Each file atomically, created 0600 (never readable by others, not even for a moment)."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        directory.chmod(0o700)
        for name, values in files.items():
            text = "".join(f"{key}={value}\n" for key, value in sorted(values.items()))
            target = directory / name
            if target.is_file() and target.read_text(encoding="utf-8") == text:
                continue
            handle, temporary = tempfile.mkstemp(prefix=f".{name}.", dir=directory)
            try:
                with os.fdopen(handle, "w", encoding="utf-8") as stream:
                    stream.write(text)
                Path(temporary).replace(target)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
    except OSError as exc:
        raise OutputError(
            f"Cannot write the bus credentials to {directory} ({exc.strerror or exc}). Fix the output "
            "folder's permissions or choose another with --output."
        ) from None

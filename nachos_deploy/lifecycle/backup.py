"""`backup`: one archive of everything a running stack keeps, taken while it runs.

What goes in, each part read online by the tool its owner provides for that:

- every JetStream stream, through the server's snapshot API (:mod:`nachos_deploy.bus.snapshots`);
- the gateway's SQLite database, through SQLite's online backup API in a one-shot container on its
  volume (:mod:`nachos_deploy.docker.oneshot`), checked (integrity, pages, rows) as it is copied;
- the state store's data, as the RDB snapshot ``redis-cli --rdb`` reads from it, as the ACL user
  ``nachos-backup`` (which may do nothing else);
- the components' state folders (``<component>-state`` volumes), as tars;
- with ``--with-credentials``, the output folder's ``credentials/``.

``manifest.json`` records what each holds (per stream its configuration, first and last sequence
and message count; the database's pages, integrity and rows; the store's keys) and a SHA-256 per
member (:mod:`nachos_deploy.io.checked_tar`), which `restore` checks before anything and verifies
against afterwards. Each part goes to a private scratch folder as it is taken, and the archive is
streamed from there and written atomically (0600: it may hold credentials): a failed backup leaves
no file.
"""

from __future__ import annotations

import datetime
import json
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nachos_deploy import __version__
from nachos_deploy.bus import snapshots
from nachos_deploy.bus.monitor import BusUnavailable
from nachos_deploy.core.catalog import GATEWAY_DATA_DIR, Role
from nachos_deploy.core.errors import BusFailure, DeployError, ExitCode
from nachos_deploy.core.names import CREDENTIALS_DIR, GATEWAY_VOLUME, STATE_BACKUP_USER
from nachos_deploy.core.plan import state_volume
from nachos_deploy.core.plan_types import ServicePlan
from nachos_deploy.docker import oneshot
from nachos_deploy.io import checked_tar, state_credentials
from nachos_deploy.io.stack import Stack
from nachos_deploy.targets import for_stack

Progress = Callable[[str], None]

STREAMS = "streams"  # streams/<name>.snapshot
DATABASE_MEMBER = "gateway/database.sqlite"
STATE_MEMBER = "state/dump.rdb"
FOLDERS = "volumes"  # volumes/<volume>.tar
CREDENTIALS = "credentials"  # credentials/<path under the output folder's credentials/>
ARCHIVE = checked_tar.Kind(
    "backup archive",
    "Nothing was restored; restore from a good copy of the archive.",
    "Choose another --to, or free space there.",
)


class Members:
    """The archive's members, each written to a private scratch folder as it is taken, so the archive
    is streamed from files rather than held in memory."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.files: dict[str, Path] = {}

    def add(self, name: str, data: bytes) -> None:
        path = self.folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.files[name] = path


@dataclass(frozen=True)
class BackupResult:
    """Where the archive went, how big it is, how long it took, and its manifest."""

    path: Path
    size: int
    seconds: float
    manifest: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        doc = {k: v for k, v in self.manifest.items() if k != "members"}
        return {"archive": str(self.path), "size": self.size, "seconds": round(self.seconds, 3), **doc}


def volume_name(stack: Stack, volume: str) -> str:
    """The engine's name of a stack's named volume: the project's prefix, on Compose and on Swarm."""
    return f"{stack.project}_{volume}"


def gateway(stack: Stack) -> tuple[ServicePlan, str] | None:
    """The gateway whose database lives on the gateway's volume, and the database's file name there."""
    for service in stack.plan.components:
        if service.role is not Role.GATEWAY:
            continue
        if not any(m.source == GATEWAY_VOLUME for m in service.mounts):
            continue
        path = next((e.value for e in service.environment if e.name == "GATEWAY_DB_PATH"), "")
        if path.startswith(f"{GATEWAY_DATA_DIR}/"):
            return service, path.removeprefix(f"{GATEWAY_DATA_DIR}/")
    return None


def state_folders(stack: Stack) -> list[str]:
    """The ``<component>-state`` volumes of the plan (the components' state folders)."""
    wanted = {state_volume(s.name) for s in stack.plan.components}
    return sorted(v for v in stack.plan.volumes if v in wanted)


def default_path(stack: Stack, now: datetime.datetime) -> Path:
    return Path(f"nachos-backup-{stack.project}-{now.strftime('%Y%m%dT%H%M%SZ')}.tar")


def backup(
    stack: Stack, to: Path | None, *, with_credentials: bool = False, progress: Progress = lambda _: None
) -> BackupResult:
    """Take the archive of a running stack (see the module's docstring)."""
    started = time.monotonic()
    now = datetime.datetime.now(datetime.UTC)
    path = to if to is not None else default_path(stack, now)
    with tempfile.TemporaryDirectory(prefix=".nachos-backup-") as scratch:
        manifest = _take(stack, Members(Path(scratch)), path, now, with_credentials, progress)
    written = json.loads(json.dumps(manifest))
    return BackupResult(path, path.stat().st_size, time.monotonic() - started, written)


def _take(
    stack: Stack,
    members: Members,
    path: Path,
    now: datetime.datetime,
    with_credentials: bool,
    progress: Progress,
) -> dict[str, Any]:
    """Take every part into ``members``, then write the archive; the manifest (without the
    checksums the archive's copy adds)."""
    manifest: dict[str, Any] = {
        "nachos_deploy": __version__,
        "project": stack.project,
        "target": stack.plan.target,
        "created": now.isoformat(timespec="seconds"),
        "credentials": with_credentials,
    }
    with for_stack(stack) as target:
        endpoints = target.endpoints()
        if endpoints is None:
            raise DeployError(
                f"The bus of project {stack.project} is not running: `backup` reads a running stack "
                f"(start it with `nachos-deploy up -p {stack.project}`).",
                exit_code=ExitCode.FAILED,
            )
        states = target.states()
        manifest["streams"] = _streams(endpoints.nats_url, members, progress)
        manifest["database"] = _database(stack, members, progress)
        manifest["state_store"] = _state_store(stack, states, members, progress)
    manifest["volumes"] = _folders(stack, members, progress)
    if with_credentials:
        manifest["credential_modes"] = _credentials(stack, members)
    progress(f"Writing {path}")
    checked_tar.write(path, members.files, manifest, mode=0o600, kind=ARCHIVE)
    return manifest


def _streams(nats_url: str, members: Members, progress: Progress) -> dict[str, Any]:
    try:
        taken = snapshots.snapshot_all(nats_url, progress=progress)
    except BusUnavailable as exc:
        raise BusFailure(f"Cannot take the streams' snapshots: {exc}.") from None
    found: dict[str, Any] = {}
    for snap in taken:
        member = f"{STREAMS}/{snap.name}.snapshot"
        members.add(member, snap.data)
        found[snap.name] = {
            "member": member,
            "config": snap.config,
            "state": snap.state,
            "first_seq": snap.first_seq,
            "last_seq": snap.last_seq,
            "messages": snap.messages,
        }
    return found


def _database(stack: Stack, members: Members, progress: Progress) -> dict[str, Any] | None:
    found = gateway(stack)
    if found is None:
        return None
    service, file_name = found
    volume = volume_name(stack, GATEWAY_VOLUME)
    if not oneshot.volume_exists(volume):
        return None
    progress(f"Copying the gateway's database ({volume}) with SQLite's online backup")
    data, check = oneshot.database_backup(volume, file_name, service.user or "0:0")
    members.add(DATABASE_MEMBER, data)
    return {"member": DATABASE_MEMBER, "volume": GATEWAY_VOLUME, "file": file_name, **check.as_dict()}


def _state_store(
    stack: Stack, states: Mapping[str, Any], members: Members, progress: Progress
) -> dict[str, Any] | None:
    state = stack.plan.state
    if state is None:
        return None
    running = states.get(state.name)
    if running is None or running.status != "running":
        raise DeployError(
            f"The state store ({state.name}) of project {stack.project} is not running; `backup` takes "
            f"its snapshot online. Start it with `nachos-deploy up -p {stack.project}`.",
            exit_code=ExitCode.FAILED,
        )
    password = state_credentials.passwords(stack.output_dir).get(state_credentials.BACKUP_PASSWORD)
    if not password:
        raise DeployError(
            f"{stack.output_dir}/{CREDENTIALS_DIR}/{state_credentials.ENV_FILE} has no password for the "
            f"state store's backup user {STATE_BACKUP_USER} (made before `backup` existed). Run "
            f"`nachos-deploy up -p {stack.project}`, then restart the store (`docker restart` of its "
            "container) so that it reads its new ACL file, and back up again.",
            exit_code=ExitCode.FAILED,
        )
    progress("Taking the state store's snapshot (redis-cli --rdb)")
    data, keys = oneshot.redis_snapshot(running.container, STATE_BACKUP_USER, password)
    members.add(STATE_MEMBER, data)
    return {"member": STATE_MEMBER, "volume": state.mounts[0].source, **keys.as_dict()}


def _folders(stack: Stack, members: Members, progress: Progress) -> dict[str, str]:
    found: dict[str, str] = {}
    for volume in state_folders(stack):
        name = volume_name(stack, volume)
        if not oneshot.volume_exists(name):
            continue
        progress(f"Copying the state folder {volume}")
        member = f"{FOLDERS}/{volume}.tar"
        members.add(member, oneshot.folder_out(name))
        found[volume] = member
    return found


def _credentials(stack: Stack, members: Members) -> dict[str, str]:
    """The output folder's credentials/ as members; the mode of each file and folder (the bus and the
    state store read some of them as their own uid, through 0711 folders and 0644 files)."""
    folder = stack.output_dir / CREDENTIALS_DIR
    modes: dict[str, str] = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        modes[relative] = oct(path.stat().st_mode & 0o777)
        if path.is_file():
            members.add(f"{CREDENTIALS}/{relative}", path.read_bytes())
    return modes

"""`restore`: a backup archive into a project whose stack is down, then `up`, then proof.

The order keeps every promise of the command:

1. the archive is verified whole (manifest, every member's SHA-256) while it is copied out to a
   private scratch folder, before anything else: a damaged or altered one is an ArchiveError
   (exit 9) naming the file and the member, and nothing has been touched;
2. a running stack is refused (restore under a running gateway would be overwritten by it), and so
   are the project's existing volumes unless ``yes`` (then they are removed first);
3. the volumes are made (with the labels their engine gives them) and filled by one-shot
   containers: the gateway's database, the state folders, the state store's data; the database's
   check and the store's key count are compared with the manifest at once;
4. the bus alone comes up (`up --only bus`), and each stream is restored through JetStream's restore
   API, replicated as this bus can hold it (:func:`fit_replicas`: an archive of a 3-node bus
   restores into a single node and the reverse); its first and last sequence and message count
   must be the manifest's;
5. a full `up`, then a last look at the running stack: every stream still holds at least what the
   manifest says, the database passes its integrity check with at least its rows, and the store
   holds at least its keys that do not expire.

A difference at 3, 4 or 5 is an error (exit 1) naming what differs.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nachos_deploy.bus import snapshots
from nachos_deploy.bus.monitor import BusUnavailable
from nachos_deploy.core.errors import ArchiveError, BusFailure, DeployError, ExitCode
from nachos_deploy.core.names import CREDENTIALS_DIR, GATEWAY_VOLUME, STATE_BACKUP_USER
from nachos_deploy.core.plan_types import AuditPlan
from nachos_deploy.core.results import UpResult
from nachos_deploy.docker import engine, oneshot
from nachos_deploy.docker.oneshot import DatabaseCheck, KeyCount
from nachos_deploy.io import checked_tar, state_credentials
from nachos_deploy.io.files import replace_private
from nachos_deploy.io.stack import Stack
from nachos_deploy.lifecycle import up as lifecycle_up
from nachos_deploy.lifecycle.backup import ARCHIVE, CREDENTIALS, gateway, volume_name
from nachos_deploy.targets import for_stack

Progress = Callable[[str], None]

# The labels Compose and Swarm give a stack's volumes; a restored volume gets both, so either engine
# (and `down --volumes`, and the next restore's check) finds it as the project's.
COMPOSE_PROJECT_LABEL = "com.docker.compose.project"
COMPOSE_VOLUME_LABEL = "com.docker.compose.volume"
STACK_LABEL = "com.docker.stack.namespace"


@dataclass(frozen=True)
class RestoreResult:
    """What was restored, how long each part took, and the `up` that followed."""

    archive: Path
    project: str
    streams: dict[str, dict[str, int]]
    database: dict[str, Any] | None
    state_store: dict[str, int] | None
    volumes: list[str]
    credentials: bool
    seconds: float
    up: UpResult | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "archive": str(self.archive),
            "project": self.project,
            "streams": self.streams,
            "database": self.database,
            "state_store": self.state_store,
            "volumes": self.volumes,
            "credentials": self.credentials,
            "seconds": round(self.seconds, 3),
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "verified": True,
        }


def verify_archive(path: Path) -> dict[str, Any]:
    """Verify an archive without writing anything (ArchiveError, exit 9, when it fails); its manifest."""
    return _complete(path, checked_tar.verify(path, ARCHIVE))


def _complete(path: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """A verified manifest whose streams each name a member it lists."""
    for name, stream in (manifest.get("streams") or {}).items():
        if stream.get("member") not in manifest["members"]:
            raise ArchiveError(f"{path}: member {stream.get('member')} (stream {name}) is missing.")
    return manifest


def restore(
    stack: Stack,
    path: Path,
    *,
    yes: bool = False,
    timeout: float = 120.0,
    progress: Progress = lambda _: None,
) -> RestoreResult:
    """Restore ``path`` into ``stack`` (see the module's docstring)."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=".nachos-restore-") as scratch:  # 0700: it may hold credentials
        progress(f"Verifying {path}")
        found = checked_tar.extract(path, Path(scratch), ARCHIVE)
        _complete(path, found.manifest)
        return _restore(stack, found, started, yes=yes, timeout=timeout, progress=progress)


def _restore(
    stack: Stack,
    found: checked_tar.Extracted,
    started: float,
    *,
    yes: bool,
    timeout: float,
    progress: Progress,
) -> RestoreResult:
    """Steps 2 to 5, from an archive already verified and copied out."""
    timings: dict[str, float] = {}
    path = found.path
    manifest = found.manifest
    engine.require_engine()
    with for_stack(stack) as target:
        running = sorted(name for name, state in target.states().items() if state.status == "running")
        if running:
            raise DeployError(
                f"Project {stack.project} is running ({', '.join(running)}): `restore` writes into a stack "
                f"that is down. Run `nachos-deploy down -p {stack.project}` first (its volumes are kept "
                "unless you also pass --volumes), or restore into another project with -p.",
                exit_code=ExitCode.FAILED,
            )
        # What the `up`s below would refuse (a secret, an image, a port...), refused before a volume
        # is touched: else they fail with the volumes restored and the bus started.
        lifecycle_up.preflight(target, "Nothing was restored.")
        existing = sorted(set(target.volumes()) | set(_existing(stack, manifest)))
    if existing and not yes:
        raise DeployError(
            f"Project {stack.project} already has data volumes: {', '.join(existing)}. `restore` would "
            "replace them; add --yes to delete them and restore, or restore into another project with -p.",
            exit_code=ExitCode.FAILED,
        )
    if existing:
        progress(f"Deleting the existing volumes {', '.join(existing)}")
        engine.remove_volumes(existing)
    wrote_credentials = _credentials(stack, found)
    mark = time.monotonic()
    database = _database(stack, found, progress)
    folders = _folders(stack, found, progress)
    keys = _state_store(stack, found, progress)
    timings["volumes"] = time.monotonic() - mark

    mark = time.monotonic()
    progress("Starting the bus alone to restore the streams")
    bus = lifecycle_up.up(stack, timeout=timeout, only=["bus"], progress=progress)
    streams = _streams(stack, found, bus.endpoints.nats_url, progress)
    timings["streams"] = time.monotonic() - mark

    mark = time.monotonic()
    progress("Starting the whole stack")
    result = lifecycle_up.up(stack, timeout=timeout, progress=progress)
    timings["up"] = time.monotonic() - mark
    _verify_running(stack, manifest, result, progress)
    return RestoreResult(
        path,
        stack.project,
        streams,
        database.as_dict() if database is not None else None,
        keys.as_dict() if keys is not None else None,
        folders,
        wrote_credentials,
        time.monotonic() - started,
        result,
        timings,
    )


def _existing(stack: Stack, manifest: Mapping[str, Any]) -> list[str]:
    """Volumes the archive would write that exist by name (made by hand, or by another engine)."""
    wanted = [GATEWAY_VOLUME, *(manifest.get("volumes") or {})]
    state = manifest.get("state_store")
    if isinstance(state, dict) and state.get("volume"):
        wanted.append(str(state["volume"]))
    return [volume_name(stack, v) for v in wanted if oneshot.volume_exists(volume_name(stack, v))]


def _labels(stack: Stack, volume: str) -> dict[str, str]:
    return {COMPOSE_PROJECT_LABEL: stack.project, COMPOSE_VOLUME_LABEL: volume, STACK_LABEL: stack.project}


def _make(stack: Stack, volume: str) -> str:
    name = volume_name(stack, volume)
    oneshot.create_volume(name, _labels(stack, volume))
    return name


def _database(stack: Stack, found: checked_tar.Extracted, progress: Progress) -> DatabaseCheck | None:
    wanted = found.manifest.get("database")
    if not wanted:
        return None
    located = gateway(stack)
    if located is None:
        raise DeployError(
            f"The archive holds a gateway database, but project {stack.project} runs no gateway with "
            "one; enable the gateway in the deploy file, or restore into the project the archive came from.",
            exit_code=ExitCode.CONFIG,
        )
    service, file_name = located
    progress("Restoring the gateway's database")
    name = _make(stack, GATEWAY_VOLUME)
    check = oneshot.database_restore(name, file_name, service.user or "0:0", found.read(wanted["member"]))
    _compare_database(wanted, check, exact=True)
    return check


def _compare_database(wanted: Mapping[str, Any], check: DatabaseCheck, *, exact: bool) -> None:
    problems = []
    if check.integrity_check != "ok":
        problems.append(f"integrity_check says {check.integrity_check!r}")
    for table, rows in sorted((wanted.get("rows") or {}).items()):
        have = check.rows.get(table, -1)
        if have != rows if exact else have < rows:
            problems.append(f"table {table} has {have} rows, the manifest {rows}")
    if exact and check.page_count != wanted.get("page_count"):
        problems.append(f"{check.page_count} pages, the manifest {wanted.get('page_count')}")
    if problems:
        raise DeployError(
            "The restored gateway database differs from the archive's manifest: " + "; ".join(problems) + ".",
            exit_code=ExitCode.FAILED,
        )


def _folders(stack: Stack, found: checked_tar.Extracted, progress: Progress) -> list[str]:
    done = []
    for volume, member in sorted((found.manifest.get("volumes") or {}).items()):
        progress(f"Restoring the state folder {volume}")
        oneshot.folder_in(_make(stack, volume), found.read(member))
        done.append(volume)
    return done


def _state_store(stack: Stack, found: checked_tar.Extracted, progress: Progress) -> KeyCount | None:
    wanted = found.manifest.get("state_store")
    if not wanted:
        return None
    state = stack.plan.state
    if state is None:
        raise DeployError(
            f"The archive holds the state store's data, but project {stack.project} runs no state store "
            "(state.enabled); enable it, or restore into the project the archive came from.",
            exit_code=ExitCode.CONFIG,
        )
    progress("Restoring the state store's data")
    name = _make(stack, str(wanted["volume"]))
    keys = oneshot.redis_restore(name, state.image, state.user or "0:0", found.read(wanted["member"]))
    # A key that expired since the backup is not loaded: only those without an expiry must all be there.
    lasting, expected = keys.keys - keys.expiring, int(wanted["keys"]) - int(wanted["expiring"])
    if lasting != expected or keys.expiring > int(wanted["expiring"]):
        raise DeployError(
            f"The restored state store holds {keys.keys} keys ({keys.expiring} expiring), the archive's "
            f"manifest {wanted['keys']} ({wanted['expiring']} expiring).",
            exit_code=ExitCode.FAILED,
        )
    return keys


def fit_replicas(name: str, config: Mapping[str, Any], audit: AuditPlan | None, nodes: int) -> dict[str, Any]:
    """A stream's configuration from the archive, replicated as the bus it is restored into can
    hold it: the audit stream as the stack renders it (``audit.replicas``, what `up` provisions),
    any other stream on at most ``nodes`` nodes. The server refuses a replicated stream on a single
    node ("replicas > 1 not supported in non-clustered mode"), and a 3-node bus restoring a
    single-node archive would otherwise keep its audit stream on one node until the next `up`."""
    fitted = dict(config)
    wanted = int(config.get("num_replicas") or 1)
    fitted["num_replicas"] = (
        audit.replicas if audit is not None and name == audit.stream else min(wanted, nodes)
    )
    return fitted


def _streams(
    stack: Stack, found: checked_tar.Extracted, nats_url: str, progress: Progress
) -> dict[str, dict[str, int]]:
    bus = stack.plan.bus
    snaps = []
    for name, doc in sorted((found.manifest.get("streams") or {}).items()):
        config = fit_replicas(name, doc["config"], bus.audit, len(bus.nodes))
        if config["num_replicas"] != int(doc["config"].get("num_replicas") or 1):
            progress(
                f"Stream {name} was kept on {doc['config'].get('num_replicas') or 1} node(s); "
                f"this bus replicates it on {config['num_replicas']}"
            )
        snaps.append(snapshots.StreamSnapshot(name, config, doc["state"], found.read(doc["member"])))
    try:
        restored = snapshots.restore_all(nats_url, snaps, progress=progress)
    except BusUnavailable as exc:
        raise BusFailure(f"Cannot restore the streams: {exc}.") from None
    done: dict[str, dict[str, int]] = {}
    for snap, state in zip(snaps, restored, strict=True):
        if not snap.restored_as(state):
            raise DeployError(
                f"Stream {snap.name} was restored with sequences {state.first_seq}..{state.last_seq} and "
                f"{state.messages} messages; the archive's manifest says {snap.first_seq}..{snap.last_seq} "
                f"and {snap.messages}.",
                exit_code=ExitCode.FAILED,
            )
        done[snap.name] = {
            "first_seq": state.first_seq,
            "last_seq": state.last_seq,
            "messages": state.messages,
            "replicas": state.replicas,
        }
    return done


def _verify_running(stack: Stack, manifest: Mapping[str, Any], result: UpResult, progress: Progress) -> None:
    """After the full `up`: nothing the archive held is missing from the running stack (the
    components may have added to it since they started)."""
    progress("Verifying the running stack against the archive's manifest")
    problems = []
    try:
        live = snapshots.states(result.endpoints.nats_url)
    except BusUnavailable as exc:
        raise BusFailure(f"Cannot read the restored streams: {exc}.") from None
    for name, doc in sorted((manifest.get("streams") or {}).items()):
        state = live.get(name)
        if state is None:
            problems.append(f"stream {name} is missing")
        elif state.last_seq < doc["last_seq"] or state.messages < doc["messages"]:
            problems.append(
                f"stream {name} has last sequence {state.last_seq} and {state.messages} messages, the "
                f"manifest {doc['last_seq']} and {doc['messages']}"
            )
    wanted = manifest.get("database")
    located = gateway(stack)
    if wanted and located is not None:
        service, file_name = located
        check = oneshot.database_check(volume_name(stack, GATEWAY_VOLUME), file_name, service.user or "0:0")
        try:
            _compare_database(wanted, check, exact=False)
        except DeployError as exc:
            problems.append(str(exc))
    store = manifest.get("state_store")
    if store and stack.plan.state is not None:
        with for_stack(stack) as target:
            container = target.states().get(stack.plan.state.name)
        password = state_credentials.passwords(stack.output_dir).get(state_credentials.BACKUP_PASSWORD, "")
        if container is not None:
            keys = oneshot.redis_keys(container.container, STATE_BACKUP_USER, password)
            if keys.keys - keys.expiring < int(store["keys"]) - int(store["expiring"]):
                problems.append(
                    f"the state store holds {keys.keys - keys.expiring} keys without expiry, the manifest "
                    f"{int(store['keys']) - int(store['expiring'])}"
                )
    if problems:
        raise DeployError(
            f"Project {stack.project} is up, but differs from the archive: " + "; ".join(problems) + ".",
            exit_code=ExitCode.FAILED,
        )


def _credentials(stack: Stack, found: checked_tar.Extracted) -> bool:
    """The archive's credentials (``backup --with-credentials``), with their modes, into an output
    folder that has none yet; a folder's own credentials are never replaced."""
    members = {name for name in found.names if name.startswith(f"{CREDENTIALS}/")}
    modes = {str(k): int(str(v), 8) for k, v in (found.manifest.get("credential_modes") or {}).items()}
    folder = stack.output_dir / CREDENTIALS_DIR
    if not members or (folder.is_dir() and any(folder.iterdir())):
        return False
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    for relative, mode in sorted(modes.items()):  # folders first: a parent sorts before its files
        target = folder / relative
        if Path(relative).is_absolute() or ".." in Path(relative).parts:
            raise ArchiveError(f"{found.path}: member {CREDENTIALS}/{relative} points outside credentials/.")
        member = f"{CREDENTIALS}/{relative}"
        if member not in members:
            target.mkdir(mode=0o700, exist_ok=True)
            target.chmod(mode)
        else:
            replace_private(target, found.read(member).decode(), mode)
    return True

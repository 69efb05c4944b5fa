"""The public Python API: start a stack from a deploy file or a mapping, read its URLs, stop it.

The CLI is a thin layer over these functions, so both behave the same and fail with the same
messages. Every failure is a :class:`DeployError` subclass carrying the CLI's message, its exit code
and, for a component, the failing services' last log lines (``details``)::

    from nachos_deploy import api

    with api.running({"components": {"gateway": {"enabled": False}}}, only=["bus"]) as bus:
        print(bus.nats_url)          # usable as it is: carries the operator's credentials
    # containers, networks and volumes are gone, also after an exception or Ctrl-C

    stack = api.start("deploy/nachos-deploy.yaml", project="ci-42", timeout=60)
    ...
    stack.stop(volumes=True)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from nachos_deploy.core.errors import (
    BusFailure,
    ComponentFailure,
    ConfigError,
    DeployError,
    EnvironmentProblem,
    ExitCode,
    OutputError,
)
from nachos_deploy.core.results import DownResult, ServiceReport, StatusResult, UpResult
from nachos_deploy.interfaces import outputs
from nachos_deploy.io.stack import Stack, prepare

__all__ = [
    "BusFailure",
    "ComponentFailure",
    "ConfigError",
    "DeployError",
    "EnvironmentProblem",
    "ExitCode",
    "OutputError",
    "RunningStack",
    "env",
    "load",
    "running",
    "start",
    "status",
    "stop",
    "up",
]

Config = str | Path | Mapping[str, Any] | None
Progress = Callable[[str], None]


@dataclass
class RunningStack:
    """A started stack: where to reach its bus, what runs, and how to remove it."""

    project: str
    nats_url: str  # with the operator's credentials when the bus requires them
    monitor_url: str | None  # the published HTTP monitoring URL (bus.publish_monitor), else None
    services: list[ServiceReport]
    stack: Stack
    result: UpResult
    _scratch: Path | None = field(default=None, repr=False)  # the output folder of a mapping

    @property
    def ca_file(self) -> str | None:
        """The CA file a client of ``nats_url`` must trust when it is ``tls://`` (bus.tls), e.g.
        ``nats.connect(stack.nats_url, tls=ssl.create_default_context(cafile=stack.ca_file))``."""
        return self.result.endpoints.ca_file

    @property
    def servers(self) -> list[str]:
        """Every URL of the bus: ``nats_url``, then each node's of a clustered bus, for a client that
        fails over (``nats.connect(stack.servers)``): one node's loss then costs it no reconnect wait."""
        return self.result.endpoints.servers

    @property
    def env(self) -> dict[str, str]:
        """NATS_URL, NATS_SERVERS (only for a clustered bus: every URL, comma-separated),
        NATS_MONITOR_URL (only with bus.publish_monitor), NATS_CA_FILE (only with TLS on the bus),
        NACHOS_PROJECT and each webhook channel's NACHOS_WEBHOOK_URL_<CHANNEL>, as ``up --env-file``
        writes them."""
        webhooks = {webhook.channel: webhook.url for webhook in self.result.webhooks}
        return outputs.values(self.result.endpoints, self.project, webhooks)

    def logs(self, services: Sequence[str] = (), tail: int = 50) -> str:
        """The last ``tail`` lines of each service's log (all services when none is named)."""
        return service_logs(self.stack, services, tail)

    def stop(self, *, volumes: bool = True) -> DownResult:
        """Remove containers and networks, and the volumes unless ``volumes=False``."""
        try:
            return down(self.stack, volumes=volumes)
        finally:
            _discard(self._scratch)

    def __enter__(self) -> RunningStack:
        return self

    def __exit__(self, *_: object) -> None:
        _uninterrupted(lambda: self.stop(volumes=True))


def load(
    config: Config = None,
    *,
    project: str | None = None,
    output: str | Path | None = None,
    sets: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
    strict_lock: bool = True,
) -> Stack:
    """Validate and render a deploy file (a path) or a mapping in memory; nothing is written.
    Paths inside a mapping are relative to the current folder. A broken nachos-deploy.lock is a
    ConfigError unless ``strict_lock`` is False: then the stack comes back unpinned with the reason
    in ``lock_error``, for what only reads or removes a running stack (`down` must never be stopped
    by the file that pins images for the next `up`) or rewrites the lock."""
    document = config if isinstance(config, Mapping) else None
    path = Path(config) if isinstance(config, str | Path) else None
    stack = prepare(
        path,
        sets=sets,
        project=project,
        output=Path(output) if output is not None else None,
        environ=environ,
        document=document,
    )
    if strict_lock and stack.lock_error is not None:
        raise ConfigError(stack.lock_error)
    return stack


def up(
    stack: Stack,
    *,
    only: Sequence[str] = (),
    timeout: float = 120.0,
    progress: Progress | None = None,
    notice: Progress | None = None,
    warm_up: Sequence[str] = (),
) -> UpResult:
    """Start a loaded stack bus-first and verify it (the CLI's ``up``). Another `up` or `down` of
    the same project is waited for; ``notice`` is told when that happens. ``warm_up`` names modules
    the caller will need once this returns: they are imported while Compose starts the bus."""
    from nachos_deploy.lifecycle import up as lifecycle

    return lifecycle.up(
        stack,
        timeout=timeout,
        only=only,
        progress=progress or (lambda _: None),
        notice=notice,
        warm_up=warm_up,
    )


def down(stack: Stack, *, volumes: bool = False, notice: Progress | None = None) -> DownResult:
    """Remove a loaded stack's containers and networks, and its volumes when asked."""
    from nachos_deploy.lifecycle import down as teardown

    return teardown.down(stack, volumes=volumes, notice=notice or (lambda _: None))


def status(stack: Stack, only: Sequence[str] | None = None) -> StatusResult:
    """Judge a loaded stack as ``nachos-deploy status`` does."""
    from nachos_deploy.lifecycle.status import status as judge

    return judge(stack, only)


def env(stack: Stack) -> dict[str, str]:
    """Connection details of a loaded stack's running bus; DeployError when it is not running."""
    ingress = stack.plan.ingress
    webhooks = {route.channel: ingress.public_url(route) for route in ingress.routes} if ingress else {}
    return outputs.values(endpoints(stack), stack.project, webhooks)


def service_logs(stack: Stack, services: Sequence[str] = (), tail: int = 50) -> str:
    """The last ``tail`` lines of each service's log (all services when none is named)."""
    from nachos_deploy.targets import for_stack

    require_engine()
    names = list(services) or [s.name for s in stack.plan.services]
    with for_stack(stack) as target:
        return "\n".join(f"--- {name}\n{target.logs_tail(name, tail)}" for name in names)


def start(
    config: Config = None,
    *,
    only: Sequence[str] = (),
    project: str | None = None,
    timeout: float = 120.0,
    output: str | Path | None = None,
    sets: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
    progress: Progress | None = None,
) -> RunningStack:
    """Load and start a stack. A mapping's rendered files go to a temporary folder (removed by
    ``stop``) unless ``output`` is given. On failure the stack is left as the CLI leaves it; use
    :func:`running` to have it removed whatever happens."""
    scratch, output = _scratch(config, output)
    try:
        stack = load(config, project=project, output=output, sets=sets, environ=environ)
        return _running_stack(stack, up(stack, only=only, timeout=timeout, progress=progress), scratch)
    except BaseException:
        _discard(scratch)
        raise


@contextlib.contextmanager
def running(
    config: Config = None,
    *,
    keep_volumes: bool = False,
    only: Sequence[str] = (),
    project: str | None = None,
    timeout: float = 120.0,
    output: str | Path | None = None,
    sets: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
    progress: Progress | None = None,
) -> Iterator[RunningStack]:
    """Start a stack for the block and always remove it afterwards: after the block, after an
    exception in it, after a failed start and after Ctrl-C, volumes too unless ``keep_volumes``."""
    scratch, output = _scratch(config, output)
    try:
        stack = load(config, project=project, output=output, sets=sets, environ=environ)
    except BaseException:
        _discard(scratch)
        raise
    try:
        yield _running_stack(stack, up(stack, only=only, timeout=timeout, progress=progress))
    finally:
        try:
            _uninterrupted(lambda: down(stack, volumes=not keep_volumes))
        finally:
            _discard(scratch)


def _scratch(config: Config, output: str | Path | None) -> tuple[Path | None, str | Path | None]:
    """A temporary output folder for a mapping given without one (the caller removes it)."""
    if not isinstance(config, Mapping) or output is not None:
        return None, output
    scratch = Path(tempfile.mkdtemp(prefix="nachos-deploy-"))
    return scratch, scratch / "rendered"


def _discard(scratch: Path | None) -> None:
    """Remove a mapping's temporary output folder, if there is one."""
    if scratch is not None:
        shutil.rmtree(scratch, ignore_errors=True)


def _running_stack(stack: Stack, result: UpResult, scratch: Path | None = None) -> RunningStack:
    endpoints = result.endpoints
    return RunningStack(
        result.project,
        endpoints.nats_url,
        endpoints.shown_monitor_url,
        result.services,
        stack,
        result,
        scratch,
    )


def stop(
    config: Config = None,
    *,
    project: str | None = None,
    output: str | Path | None = None,
    volumes: bool = False,
) -> DownResult:
    """Remove a stack by its project name (and deploy file or mapping): what the project runs, as it
    was deployed, also when the deploy file has changed since (see :func:`deployed`)."""
    return down(deployed(load(config, project=project, output=output)).stack, volumes=volumes)


def deployed(stack: Stack) -> Located:
    """The stack ``stack.project`` runs, as it was deployed, wherever from: the engine's labels name
    its output folder, whose record holds the configuration `up` deployed. ``stack`` itself when it
    is that one, or when nothing runs. The reading commands (status, request, env, logs, down) work
    on ``.stack``; ``.differs`` says that the configuration given is another one than what runs."""
    from nachos_deploy.targets.deployment import locate

    return locate(stack)  # an engine that does not answer finds nothing: the command then says why


def deployed_by_name(
    config: Config, sets: Sequence[str] | None, project: str | None, output: str | Path | None
) -> Located | None:
    """The stack project ``project`` runs, found by its name alone, for a reading command whose
    configuration failed to load, when that was only the deploy file found in the current folder
    (none named by ``config`` or NACHOS_DEPLOY_CONFIG, no ``sets``): `status -p P` run from another
    project's folder must not be stopped by that project's broken file, as these commands work from
    any folder. None when something the user named is what failed, or when the project does not run
    from a folder that recorded its configuration: then the error is what the user needs."""
    from nachos_deploy.io.loader import names_deploy_file

    if project is None or sets or names_deploy_file(config, os.environ):
        return None
    try:
        # the defaults, the environment's NACHOS_DEPLOY_* and the name: enough to find the project
        bare = load({}, project=project, output=output, strict_lock=False)
    except DeployError:
        return None
    located = deployed(bare)
    if located.stack is bare or located.unrecorded:
        return None
    return located


def file_project(stack: Stack) -> str | None:
    """The project the stack's deploy file names itself (its ``project`` key, not -p), when it has one."""
    from nachos_deploy.io.loader import file_project as own

    path = stack.loaded.config_path
    return own(path) if path is not None else None


def _uninterrupted(action: Callable[[], object]) -> None:
    """Run a teardown to its end: a second Ctrl-C while it runs is held back until it is done, so
    an impatient user does not leave half a stack behind."""
    if threading.current_thread() is not threading.main_thread():
        action()
        return
    held: list[int] = []

    def hold(signum: int, _frame: FrameType | None) -> None:
        held.append(signum)

    previous = signal.signal(signal.SIGINT, hold)
    try:
        action()
    finally:
        signal.signal(signal.SIGINT, previous)
    if held:
        raise KeyboardInterrupt


# ----------------------------------------------------------------------------------------------------
# What the command line needs besides up, down and status. The CLI imports no lower layer: everything
# it does to a stack, its files, its engine or its bus goes through the functions below, so that the
# Python API and the command line cannot drift apart. Lower modules are imported inside each function,
# as the command that needs them runs (`--help` and `render` need no NATS client and no engine).
# ----------------------------------------------------------------------------------------------------

__all__ += [
    "ComposeCheck",
    "Rotation",
    "Stack",
    "bench",
    "bind_sources",
    "check_compose",
    "deployed",
    "doctor",
    "endpoints",
    "firewall",
    "request",
    "require_engine",
    "rotate_credentials",
    "stack_volumes",
    "stale_files",
    "stream_logs",
    "uses_credentials",
    "write_files",
]

if TYPE_CHECKING:
    from nachos_deploy.bus.bench import BenchResult
    from nachos_deploy.core.results import Endpoints
    from nachos_deploy.lifecycle.doctor import Check
    from nachos_deploy.lifecycle.firewall import FirewallState as FirewallState
    from nachos_deploy.lifecycle.rotate import Reloaded
    from nachos_deploy.targets.deployment import Located


def require_engine() -> None:
    """An EnvironmentProblem (exit 4) with Docker's reason and a fix when no engine answers."""
    from nachos_deploy.docker import engine

    engine.require_engine()


def write_files(stack: Stack) -> list[str]:
    """Write the rendered files into the output folder, all or nothing; the names changed or removed.
    Then the bus credentials those files reference, when missing (existing ones are kept, as by
    `up`): without them the folder would not run with `docker compose` (or `docker stack deploy`)
    alone. They are never rendered, so the rendered files stay byte-for-byte deterministic, and the
    folder's .gitignore keeps them out of version control."""
    from nachos_deploy.core.render import HEADER
    from nachos_deploy.io import credentials, files, platform_secrets, state_credentials

    changed = files.write_all(stack.output_dir, stack.files, stack.stale, marker=HEADER)
    # what env_file names, with the gateway's state store URLs (made when missing)
    state = state_credentials.ensure(stack.output_dir, stack.plan)
    platform_secrets.write(stack.output_dir, stack.loaded.platform.secrets, state)
    if uses_credentials(stack):
        credentials.ensure(stack.output_dir, stack.plan)
    if stack.plan.bus.tls is not None:  # the client port's certificate, which the bus mounts
        from nachos_deploy.io import bus_tls

        bus_tls.ensure(stack.output_dir, stack.plan)
    return changed


def check_ingress_tls(stack: Stack) -> str | None:
    """The ingress's TLS in words for ``validate``, after checking the user's files in ``tls: files``
    (readable, matching, valid now, naming the domain: else a ConfigError, exit 3); None when off."""
    from nachos_deploy.io import ingress_tls

    return ingress_tls.describe(stack)


def check_bus_tls(stack: Stack) -> str | None:
    """The bus's TLS in words for ``validate``, after checking the user's certificate files
    (readable, a certificate and its own key, valid now: else a ConfigError, exit 3); None when off."""
    tls = stack.plan.bus.tls
    if tls is None:
        return None
    if tls.generated:
        return (
            f"on, with nachos-deploy's own CA (certificate for {', '.join(tls.names)} and this host's name)"
        )
    from nachos_deploy.io import bus_tls

    bus_tls.check_user_files(tls)
    return f"on, with {tls.cert_file} (checked: matches its key, valid now)"


def uses_credentials(stack: Stack) -> bool:
    """Whether the rendered files read bus passwords from the output folder's credentials/."""
    return stack.plan.auth or stack.plan.bus.clustered


def bind_sources(stack: Stack) -> str:
    """What ``up`` will do with the host folders the deploy file bind-mounts, in words (``validate``);
    a missing absolute one is a ConfigError (exit 3), as ``up`` would refuse it."""
    from nachos_deploy.io import bind_folders

    level, detail, _ = bind_folders.verdict(stack)
    if level == "fail":
        raise ConfigError(detail)
    return detail


def stale_files(stack: Stack) -> list[str]:
    """The files of the output folder that differ from the configuration (``render --check``)."""
    from nachos_deploy.io import files

    return files.differences(stack.output_dir, stack.files, stack.stale)


@dataclass(frozen=True)
class ComposeCheck:
    """What ``validate`` learned from Docker Compose: the version that accepted the rendered files, or
    why the check was skipped (a Compose file Compose rejects raises ConfigError instead)."""

    version: str | None
    skipped: str | None = None


def check_compose(stack: Stack) -> ComposeCheck:
    """Let the target's own tool (``docker compose config``) check the rendered files, without
    writing them; no engine needed."""
    from nachos_deploy.targets import for_stack

    with for_stack(stack) as target:
        checked = target.check_files()
    return ComposeCheck(checked.version, checked.skipped)


def stream_logs(
    stack: Stack, services: Sequence[str] = (), *, follow: bool = False, tail: int | None = None
) -> Iterator[str]:
    """The services' logs as they come (all services when none is named). Unknown names are refused
    (exit 2) and a missing engine reported (exit 4) before the first chunk is asked for."""
    known = [s.name for s in stack.plan.services]
    unknown = sorted(set(services) - set(known))
    if unknown:
        raise DeployError(
            f"No service named {', '.join(unknown)} in project {stack.project}; its services are "
            f"{', '.join(known)}.",
            exit_code=ExitCode.USAGE,
        )
    require_engine()
    return _logs(stack, list(services), follow=follow, tail=tail)


def _logs(stack: Stack, services: list[str], *, follow: bool, tail: int | None) -> Iterator[str]:
    from nachos_deploy.targets import for_stack

    with for_stack(stack) as target:
        yield from target.stream_logs(services, follow=follow, tail=tail)


def has_containers(stack: Stack) -> bool:
    """Whether the project has a container (or a Swarm task) on this engine: what `logs` says when it
    printed nothing, so that a mistyped `-p` is not read as a quiet stack."""
    from nachos_deploy.targets import for_stack

    require_engine()
    with for_stack(stack) as target:
        return bool(target.states())


def stack_volumes(stack: Stack) -> list[str]:
    """The stack's volumes on this engine, by the label Compose or Swarm gave them (exit 4 without one)."""
    from nachos_deploy.targets import for_stack

    require_engine()
    with for_stack(stack) as target:
        return target.volumes()


def endpoints(stack: Stack) -> Endpoints:
    """Where the host reaches a running stack's bus; exit 1 with the command to start it when it is not."""
    from nachos_deploy.targets import for_stack

    require_engine()
    with for_stack(stack) as target:
        found = target.endpoints()
    if found is None:
        raise DeployError(
            f"The bus of project {stack.project} is not running; start it with "
            f"`nachos-deploy up -p {stack.project}`.",
            exit_code=ExitCode.FAILED,
        )
    return found


REQUEST_PAYLOAD = b"{}"
"""What ``request`` sends when given no data: the platform's components parse every request as JSON,
and the gateway drops an empty payload without a word (``Unexpected end of JSON input``)."""


def request(stack: Stack, subject: str, data: bytes = REQUEST_PAYLOAD, *, timeout: float = 2.0) -> bytes:
    """Send one request through the running stack's bus and return the reply (exit 1 when none comes)."""
    from nachos_deploy.bus import natsclient
    from nachos_deploy.bus.monitor import BusUnavailable

    nats_url = endpoints(stack).nats_url
    try:
        return natsclient.request(nats_url, subject, data, timeout=timeout)
    except natsclient.NoReply as exc:
        raise DeployError(
            f"No reply on {exc.subject}: waited {exc.waited:.1f}s (--timeout {timeout:g}) and nothing "
            "answered, although something on the bus subscribes to it. The component may be slow "
            "(raise --timeout) or may have dropped the request: the platform's components expect a "
            "JSON payload and ignore any other (`nachos-deploy logs` shows what it said).",
            exit_code=ExitCode.FAILED,
        ) from None
    except BusUnavailable as exc:
        raise DeployError(f"No reply on {subject}: {exc}.", exit_code=ExitCode.FAILED) from None


@dataclass(frozen=True)
class Rotation:
    """Where the new passwords were written, whether the stack runs, and, when the running servers
    took them in place (Compose), how that went; running but not ``reloaded`` (Swarm): ``up`` must
    follow, which replaces the bus and the sidecars."""

    folder: Path
    running: bool
    reloaded: Reloaded | None = None


def rotate_credentials(stack: Stack, *, progress: Progress | None = None) -> Rotation:
    """Write new bus passwords (the operator's and each sidecar's). On a running Compose stack the
    bus and the sidecars reload them in place, the components untouched, and the hub is shown to
    refuse the old ones (:mod:`nachos_deploy.lifecycle.rotate`). The state store's passwords too: it
    and the gateway start again with them."""
    from nachos_deploy.io import credentials, state_credentials

    if not stack.plan.auth:
        raise DeployError(
            "bus.auth is false: this bus has no credentials to rotate.", exit_code=ExitCode.USAGE
        )
    from nachos_deploy.lifecycle import rotate
    from nachos_deploy.targets import for_stack, subnet_check

    require_engine()
    folder = credentials.folder(stack.output_dir)
    # The subnets the running networks have: `up` may have moved the stack off its drawn block, and
    # the gateway is recreated below through Compose, which would remake a network that differs.
    stack, _ = subnet_check.settle(stack)
    with for_stack(stack) as target:
        endpoints = target.endpoints()
        if endpoints is None:
            credentials.ensure(stack.output_dir, stack.plan, rotate=True)
            state_credentials.rotate(stack)  # the state store's too (io/state_credentials.py)
            rotate.new_tls_key(stack)
            return Rotation(folder, running=False)
        reloaded = rotate.rotate(stack, target, endpoints, progress or (lambda _: None))
    return Rotation(folder, running=True, reloaded=reloaded)


def doctor(
    config: Config = None,
    *,
    project: str | None = None,
    output: str | Path | None = None,
    sets: Sequence[str] = (),
) -> list[Check]:
    """Every check of this machine for a deployment; a configuration that does not load is one failed
    check among them, not an error, so that the engine checks still run."""
    from nachos_deploy.lifecycle import doctor as doctor_mod

    try:
        stack: Stack | None = load(config, project=project, output=output, sets=sets)
        problem: DeployError | None = None
    except DeployError as exc:
        stack, problem = None, exc
    return doctor_mod.run_checks(stack, problem)


def bench(
    nats_url: str, monitor_url: str | None = None, *, duration: float = 5.0, max_payload: int | None = None
) -> BenchResult:
    """Measure the bus at ``nats_url`` against the platform's targets (``nachos-deploy bench``)."""
    from nachos_deploy.bus import bench as bench_mod

    return bench_mod.run(nats_url, monitor_url, duration=duration, max_payload=max_payload)


def firewall(project: str, action: str, *, egress: bool = False) -> FirewallState:
    """``action`` (install, remove or status) on the opt-in host rule that drops what the project's
    internal networks (with ``egress`` on install, its plain ones too) send to the host
    (docs/security.md#the-host-behind-the-private-networks). Needs root and iptables; each missing
    one is an EnvironmentProblem naming the fix."""
    from nachos_deploy.lifecycle import firewall as firewall_mod

    if action == "install":
        return firewall_mod.install(project, egress=egress)
    if action == "remove":
        return firewall_mod.remove(project)
    if action == "status":
        return firewall_mod.status(project)
    raise ValueError(f"firewall action {action!r} is not one of install, remove, status")


# -- the image lock and bundles (docs/images.md) ------------------------------------------------------
if TYPE_CHECKING:
    from nachos_deploy.lifecycle.bundle import LoadResult, SaveResult
    from nachos_deploy.lifecycle.lock import LockResult


def lock_images(stack: Stack) -> LockResult:
    """Resolve every image of the stack to its registry digest (or, for a local build, its id) and
    write nachos-deploy.lock beside the deploy file (``nachos-deploy lock``); a missing image is an
    EnvironmentProblem (exit 4) naming it."""
    from nachos_deploy.lifecycle import lock

    require_engine()
    return lock.lock(stack)


def check_lock(stack: Stack) -> int | None:
    """With a lock beside the deploy file, refuse (EnvironmentProblem, exit 4) any image that differs
    from it (``validate``); the number of services checked, or None when there is no lock."""
    if stack.lock is None:
        return None
    from nachos_deploy.lifecycle import lock

    require_engine()
    lock.verify(stack)
    return len(stack.lock.services)


def bundle_save(stack: Stack, target: str | Path, *, progress: Progress | None = None) -> SaveResult:
    """Write the stack's images, lock, rendered files and their checksums into one file."""
    from nachos_deploy.lifecycle import bundle

    require_engine()
    return bundle.save(stack, Path(target), progress or (lambda _: None))


def bundle_load(
    archive: str | Path, *, to: str | Path | None = None, progress: Progress | None = None
) -> LoadResult:
    """Check every checksum of a bundle, then load its images and check them against its lock; with
    ``to``, write its lock, deploy file and rendered files there. A damaged bundle is an ArchiveError
    (exit 9) before anything is loaded."""
    from nachos_deploy.lifecycle import bundle

    require_engine()
    return bundle.load(Path(archive), Path(to) if to is not None else None, progress or (lambda _: None))


if TYPE_CHECKING:
    from nachos_deploy.core.changes import PlanResult


def plan(stack: Stack, *, only: Sequence[str] = ()) -> PlanResult:
    """What ``up --only`` would change (``nachos-deploy plan``): the rendered files against the output
    folder, each service (create, recreate and why, remove, keep), the engine objects to create.
    Writes no file and changes nothing on the engine; ``result.changes`` is its exit 2."""
    from nachos_deploy.lifecycle import preview

    return preview.plan(stack, only=only)


def rollback(
    stack: Stack,
    *,
    timeout: float = 120.0,
    progress: Progress | None = None,
    notice: Progress | None = None,
) -> UpResult:
    """Return a deployed stack to its previous successful deployment (its rendered files and images,
    from the output folder's record of releases) and prove it as ``up`` does (``nachos-deploy
    rollback``). With no previous deployment recorded: a DeployError (exit 1), nothing changed."""
    from nachos_deploy.lifecycle import rollback as lifecycle

    return lifecycle.rollback(stack, timeout=timeout, progress=progress or (lambda _: None), notice=notice)


# `backup` and `restore` (issue 21, docs/backup.md).
__all__ += ["ArchiveError", "backup", "restore", "verify_backup"]

from nachos_deploy.core.errors import ArchiveError  # noqa: E402  (appended section, exported above)

if TYPE_CHECKING:
    from nachos_deploy.lifecycle.backup import BackupResult
    from nachos_deploy.lifecycle.restore import RestoreResult


def backup(
    stack: Stack,
    *,
    to: str | Path | None = None,
    with_credentials: bool = False,
    progress: Progress | None = None,
) -> BackupResult:
    """One archive of everything the running stack keeps, taken online: every JetStream stream (the
    server's snapshot API), the gateway's database (SQLite's backup API), the state store (an RDB
    snapshot), the state folders, and with ``with_credentials`` the bus and store passwords. Written
    atomically; its manifest holds a SHA-256 of every member."""
    from nachos_deploy.lifecycle import backup as backup_mod

    require_engine()
    target = Path(to) if to is not None else None
    return backup_mod.backup(
        stack, target, with_credentials=with_credentials, progress=progress or (lambda _: None)
    )


def verify_backup(path: str | Path) -> dict[str, Any]:
    """An archive's manifest, once it and every member's checksum are verified (ArchiveError, exit 9)."""
    from nachos_deploy.lifecycle import restore as restore_mod

    return restore_mod.verify_archive(Path(path))


def restore(
    stack: Stack,
    path: str | Path,
    *,
    yes: bool = False,
    timeout: float = 120.0,
    progress: Progress | None = None,
) -> RestoreResult:
    """Restore an archive into a project whose stack is down, then `up` it and verify it against the
    manifest. The archive is verified whole first; existing volumes are replaced only with ``yes``."""
    from nachos_deploy.lifecycle import restore as restore_mod

    return restore_mod.restore(
        stack, Path(path), yes=yes, timeout=timeout, progress=progress or (lambda _: None)
    )

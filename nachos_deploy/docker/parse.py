"""Docker's JSON (``container inspect``, task and node inspect, ``events``, ``stats``, ``info``)
into this project's dataclasses; pure functions, no engine call.

Kept apart from the calls so that what nachos-deploy reads of each document is tested against
documents the real engine printed (tests/data/docker/, tests/test_docker_parsers.py), without an
engine. Every reader tolerates a missing or mistyped field: Docker's JSON differs between versions
and a field it leaves out reads as "unknown", never as a crash.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

from nachos_deploy.core.bus_placement import Machine

FAILED_STATES = ("failed", "rejected")
ENDED_STATES = ("complete", "shutdown", "orphaned", "remove", *FAILED_STATES)


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


@dataclass(frozen=True)
class SwarmNode:
    """This engine's place in a swarm, from ``docker info``."""

    state: str  # inactive, pending, active, error, locked
    manager: bool
    nodes: int


@dataclass(frozen=True)
class Task:
    """One task of a service: what it is doing, what it should do, and the error it ended with."""

    service: str  # the deploy file's name, without the stack prefix
    state: str  # new ... running, complete, failed, rejected, shutdown
    desired: str  # running, shutdown, ...
    error: str
    exit_code: int | None
    at: float | None  # when it entered ``state``, seconds since the epoch
    node: str


def mapping(value: object) -> Mapping[str, object]:
    return value if isinstance(value, dict) else {}


def items(value: object) -> list[Mapping[str, object]]:
    """The objects of a JSON list (``docker inspect`` prints one); anything else: none."""
    return [mapping(item) for item in value] if isinstance(value, list) else []


def integer(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def parse_time(value: object) -> datetime | None:
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


def epoch(moment: datetime | None) -> float | None:
    # Docker reports 0001-01-01 for a container that never ran.
    if moment is None or moment.year < 2000:
        return None
    return moment.timestamp()


def epoch_of(value: object) -> float | None:
    """An RFC 3339 time of Docker's as seconds since the epoch; None for none or "never"."""
    return epoch(parse_time(value))


def state_of(item: Mapping[str, object]) -> ServiceState:
    """One entry of ``docker container inspect``'s JSON."""
    state = mapping(item.get("State"))
    config = mapping(item.get("Config"))
    labels = mapping(config.get("Labels"))
    health = mapping(state.get("Health"))
    settings = mapping(item.get("NetworkSettings"))
    networks = mapping(settings.get("Networks"))
    probes = []
    for entry in items(health.get("Log")):
        started = epoch_of(entry.get("Start"))
        if started is not None:
            probes.append(
                Probe(started, integer(entry.get("ExitCode")), str(entry.get("Output") or "").strip())
            )
    name = str(item.get("Name") or "").lstrip("/")
    return ServiceState(
        service=str(labels.get("com.docker.compose.service") or name),
        container=name,
        status=str(state.get("Status") or "unknown"),
        health=str(health["Status"]) if health.get("Status") else None,
        exit_code=integer(state.get("ExitCode")),
        restart_count=integer(item.get("RestartCount")),
        image=str(config.get("Image") or ""),
        container_id=str(item.get("Id") or ""),
        image_id=str(item.get("Image") or ""),
        started_at=epoch_of(state.get("StartedAt")),
        probes=tuple(probes),
        addresses=tuple(
            (str(network), str(mapping(values).get("IPAddress")))
            for network, values in networks.items()
            if mapping(values).get("IPAddress")
        ),
        ports=published(mapping(settings.get("Ports"))),
    )


def published(ports: Mapping[str, object]) -> tuple[tuple[int, int], ...]:
    """``{"4222/tcp": [{"HostIp": "127.0.0.1", "HostPort": "4222"}]}`` → ``((4222, 4222),)``: the
    first host port of each published TCP port."""
    found = []
    for key, bindings in sorted(ports.items()):
        port, _, protocol = key.partition("/")
        if protocol != "tcp" or not port.isdigit():
            continue
        for binding in items(bindings):
            host = str(binding.get("HostPort") or "")
            if host.isdigit():
                found.append((int(port), int(host)))
                break
    return tuple(found)


def host_ports(containers: Iterable[Mapping[str, object]]) -> set[int]:
    """Every host port the containers publish (any protocol, any address)."""
    found: set[int] = set()
    for item in containers:
        for bindings in mapping(mapping(item.get("NetworkSettings")).get("Ports")).values():
            for binding in items(bindings):
                host = str(binding.get("HostPort") or "")
                if host.isdigit():
                    found.add(int(host))
    return found


def die_exit_codes(events: Iterable[Mapping[str, object]]) -> list[int]:
    """The exit codes of ``docker events --format '{{json .}}'`` die events, in their order."""
    codes = []
    for event in events:
        code = mapping(mapping(event.get("Actor")).get("Attributes")).get("exitCode")
        if code is not None and str(code).lstrip("-").isdigit():
            codes.append(int(str(code)))
    return codes


_UNITS = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4}


def size_in_bytes(text: str) -> int | None:
    """``2.508MiB`` (binary) or ``1.92kB`` (decimal), as ``docker stats`` prints sizes."""
    match = re.fullmatch(r"\s*([\d.]+)\s*([kKmMgGtT]?)(i?)B\s*", text)
    if not match:
        return None
    number, prefix, binary = match.groups()
    try:
        value = float(number)
    except ValueError:
        return None
    power = list(_UNITS).index(prefix.lower())
    return int(value * (1024**power if binary else _UNITS[prefix.lower()]))


def memory_used(stats: Mapping[str, object]) -> int | None:
    """Bytes in use, from one ``docker stats --format '{{json .}}'`` line ("2.508MiB / 23.54GiB")."""
    return size_in_bytes(str(stats.get("MemUsage") or "").split("/")[0])


def duplicate_networks(networks: Sequence[Mapping[str, object]]) -> list[tuple[str, str]]:
    """(name, id) of the networks to remove among ``docker network inspect``'s: of each name held by
    more than one network, all but the one in use (else the oldest), and only empty ones."""
    groups: dict[str, list[tuple[int, float, str]]] = {}
    for network in networks:
        entry = (len(mapping(network.get("Containers"))), epoch_of(network.get("Created")) or 0.0)
        groups.setdefault(str(network.get("Name")), []).append((*entry, str(network.get("Id"))))
    extra = []
    for name, group in sorted(groups.items()):
        group.sort(key=lambda entry: (-entry[0], entry[1]))  # keep the used one, else the oldest
        extra += [(name, network_id) for containers, _, network_id in group[1:] if not containers]
    return extra


class EngineNetwork(NamedTuple):
    """One network of the engine: its name, its configured subnets, and the project that made it
    (Compose's or Swarm's label; "" for one made by hand or by another tool)."""

    name: str
    subnets: tuple[str, ...]
    project: str = ""


PROJECT_LABELS = ("com.docker.compose.project", "com.docker.stack.namespace")


def network_subnets(networks: Sequence[Mapping[str, object]]) -> list[EngineNetwork]:
    """Each network of ``docker network inspect`` with IPAM's configured subnets: what a stack's
    planned subnets must not overlap (core/subnets.settle), and whose it is."""
    found = []
    for network in networks:
        ipam = mapping(network.get("IPAM"))
        subnets = tuple(str(c.get("Subnet")) for c in items(ipam.get("Config")) if c.get("Subnet"))
        labels = mapping(network.get("Labels"))
        project = next((str(labels[key]) for key in PROJECT_LABELS if labels.get(key)), "")
        found.append(EngineNetwork(str(network.get("Name") or network.get("Id")), subnets, project))
    return found


def swarm_node(info: Mapping[str, object]) -> SwarmNode:
    """``docker info --format '{{json .Swarm}}'``."""
    nodes = info.get("Nodes")
    return SwarmNode(
        state=str(info.get("LocalNodeState") or "inactive"),
        manager=bool(info.get("ControlAvailable")),
        nodes=nodes if isinstance(nodes, int) else 0,
    )


def machine_of(item: Mapping[str, object]) -> Machine:
    """One entry of ``docker node inspect``: ready only when up and available for tasks."""
    spec = mapping(item.get("Spec"))
    return Machine(
        id=str(item.get("ID")),
        hostname=str(mapping(item.get("Description")).get("Hostname") or item.get("ID")),
        ready=mapping(item.get("Status")).get("State") == "ready" and spec.get("Availability") == "active",
        labels=frozenset(mapping(spec.get("Labels")).keys()),
    )


def task_services(listing: str) -> dict[str, str]:
    """Task ID → its service's full name, from ``docker stack ps --format '{{.ID}} {{.Name}}'``: a
    task is named ``<stack>_<service>.<slot>`` (a global service's: ``.<node id>``), and a service's
    name has no dot. One call where ``service ls`` and ``service inspect`` took two more."""
    found = {}
    for line in listing.splitlines():
        task, _, name = line.strip().partition(" ")
        if task and name:
            found[task] = name.rpartition(".")[0] or name
    return found


def task_of(item: Mapping[str, object], names: Mapping[str, str], project: str) -> Task:
    """One task of ``docker inspect`` (of task IDs); ``names``: service ID → full service name."""
    status = mapping(item.get("Status"))
    code = mapping(status.get("ContainerStatus")).get("ExitCode")
    return Task(
        service=names.get(str(item.get("ServiceID")), "").removeprefix(f"{project}_"),
        state=str(status.get("State") or ""),
        desired=str(item.get("DesiredState") or ""),
        error=str(status.get("Err") or ""),
        exit_code=code if isinstance(code, int) else None,
        at=epoch_of(status.get("Timestamp")),
        node=str(item.get("NodeID") or ""),
    )


def remote_state(service: str, task: Mapping[str, object]) -> ServiceState:
    """A task's state as a container's: running only when Swarm says so (a task with a healthcheck
    is running once it passed); earlier states are "created", ended ones "exited". No health and no
    probes (Swarm does not report them), addresses from its network attachments."""
    status = mapping(task.get("Status"))
    state = str(status.get("State") or "")
    container = mapping(status.get("ContainerStatus"))
    code = container.get("ExitCode")
    addresses = []
    for attachment in items(task.get("NetworksAttachments")):
        network = str(mapping(mapping(attachment.get("Network")).get("Spec")).get("Name") or "")
        listed = attachment.get("Addresses")
        for address in listed if isinstance(listed, list) else []:
            addresses.append((network, str(address).split("/")[0]))
    spec = mapping(mapping(task.get("Spec")).get("ContainerSpec"))
    return ServiceState(
        service=service,
        container="",  # not on this node: nothing to exec into
        status="running" if state == "running" else "exited" if state in ENDED_STATES else "created",
        health=None,
        exit_code=code if isinstance(code, int) else 0,
        restart_count=0,
        image=str(spec.get("Image") or "").split("@")[0],
        container_id=str(container.get("ContainerID") or ""),
        started_at=epoch_of(status.get("Timestamp")) if state == "running" else None,
        addresses=tuple(addresses),
    )


def replicas(text: str, project: str) -> dict[str, tuple[int, int]]:
    """``docker stack services --format '{{.Name}} {{.Replicas}}'`` → service → (running, desired)."""
    found = {}
    for line in text.splitlines():
        name, _, counts = line.partition(" ")
        running, _, desired = counts.split(" ")[0].partition("/")
        if running.isdigit() and desired.isdigit():
            found[name.removeprefix(f"{project}_")] = (int(running), int(desired))
    return found


def most_named(lines: Iterable[str]) -> list[Path]:
    """The absolute folders in ``lines`` (one label value each: an output folder), the one most of
    them name first; blanks (a service deployed without the label: by hand, or by an older
    nachos-deploy) and relative paths are no folder to trust."""
    counts: dict[str, int] = {}
    for line in lines:
        value = line.strip()
        if value.startswith("/"):
            counts[value] = counts.get(value, 0) + 1
    return [Path(value) for value, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0]))]


def split_frames(output: str, frame: str, hosts: Iterable[str]) -> dict[str, object | None]:
    """Each host's JSON answer from ``output``, whose answers each follow a line ``<frame> <host>``;
    None for a host with no frame or no valid JSON (a host that did not answer)."""
    result: dict[str, object | None] = dict.fromkeys(hosts)
    for chunk in output.split(f"\n{frame} ")[1:]:
        host, _, body = chunk.partition("\n")
        if host not in result:
            continue
        try:
            result[host] = json.loads(body) if body.strip() else None
        except ValueError:
            result[host] = None
    return result

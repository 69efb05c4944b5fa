"""Bringing a stack up bus-first, proving it healthy, and taking it down.

``up`` starts the bus alone and gates on it from the host (HTTP monitoring plus a real NATS round
trip), polling every few tens of milliseconds instead of waiting for Compose's healthcheck interval.
Only a proven bus lets components start; each component must then be running, healthy where it has a
healthcheck, and listed on the bus's ``/connz`` under its connection name, since a container's own
health does not prove it is on the bus.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from python_on_whales import DockerClient

from nachos_deploy import engine, files, health
from nachos_deploy.errors import BusFailure, ComponentFailure, ConfigError, DeployError, ExitCode
from nachos_deploy.plan import BUS, CLIENT_PORT, MONITOR_PORT, ServicePlan
from nachos_deploy.stack import Stack

Progress = Callable[[str], None]
POLL = 0.05
LOG_LINES = 20


@dataclass
class ServiceReport:
    name: str
    status: str
    health: str | None
    connection_name: str | None
    connected: bool | None  # None: not checked (the bus itself, or no connection name)
    # The bus is proven by the host-side gate, often before Docker's first healthcheck probe has run.
    proven: bool = False

    @property
    def ok(self) -> bool:
        if self.proven:
            return self.status == "running"
        return self.status == "running" and self.health in (None, "healthy") and self.connected is not False

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "health": self.health,
            "connection_name": self.connection_name,
            "connected": self.connected,
            "ok": self.ok,
        }


@dataclass
class Endpoints:
    nats_url: str
    monitor_url: str

    def as_json(self) -> dict[str, str]:
        return {"nats_url": self.nats_url, "monitor_url": self.monitor_url}


@dataclass
class UpResult:
    project: str
    endpoints: Endpoints
    services: list[ServiceReport]
    phases: dict[str, float] = field(default_factory=dict)
    bus: health.BusReport | None = None
    changed_files: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        bus = self.bus
        return {
            "ok": True,
            "project": self.project,
            **self.endpoints.as_json(),
            "services": [service.as_json() for service in self.services],
            "phases": {name: round(seconds, 3) for name, seconds in self.phases.items()},
            "bus": {
                "version": bus.server_version,
                "jetstream": bus.jetstream,
                "max_payload": bus.max_payload,
                "round_trip_ms": bus.round_trip_ms,
            }
            if bus
            else None,
        }


def bus_endpoints(client: DockerClient, stack: Stack) -> Endpoints | None:
    """Host URLs of the running bus from its published ports (which may have been picked by the engine)."""
    client_port = engine.published_port(client, BUS, CLIENT_PORT)
    monitor_port = engine.published_port(client, BUS, MONITOR_PORT)
    if not client_port or not monitor_port:
        return None
    host = stack.plan.bus.bind_address
    host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    host = "[::1]" if host == "::" else (f"[{host}]" if ":" in host else host)
    return Endpoints(f"nats://{host}:{client_port}", f"http://{host}:{monitor_port}")


def up(
    stack: Stack,
    *,
    timeout: float = 60.0,
    only: Sequence[str] = (),
    progress: Progress = lambda _: None,
) -> UpResult:
    """Render, start the bus, gate on it, start the components and verify them, within ``timeout``."""
    started = time.monotonic()
    deadline = started + timeout
    phases: dict[str, float] = {}
    unknown = sorted(set(only) - {service.name for service in stack.plan.services})
    if unknown:
        raise ConfigError(
            f"--only names {', '.join(unknown)}, which this configuration does not run; its services "
            f"are {', '.join(s.name for s in stack.plan.services)}."
        )
    components = [c for c in stack.plan.components if not only or c.name in only]

    progress("Checking the Docker engine")
    engine.require_engine()
    missing = engine.missing_images(
        s.image for s in (stack.plan.bus.service, *components) if s.build_context is None
    )
    if missing:
        raise DeployError(
            f"These images are not on this Docker engine: {', '.join(missing)}. Pull them (`docker pull "
            "IMAGE`) or point images.prefix/images.tag or a component's image at images you have; on a "
            "machine with no registry, `bash scripts/build-images.sh` builds the nats:alpine stand-in and "
            "the probe image. `nachos-deploy doctor` lists what is missing.",
            exit_code=ExitCode.ENVIRONMENT,
        )
    changed = files.write_all(stack.output_dir, stack.files)
    phases["prepare"] = time.monotonic() - started
    client = engine.compose_client(stack.project, stack.compose_file)

    mark = time.monotonic()
    progress("Starting the bus")
    previous = engine.states(client).get(BUS)
    engine.up(client, [BUS], failure=ExitCode.BUS)
    restarts = previous.restart_count if previous else 0
    progress("Waiting for the bus: JetStream, max_payload and a NATS round trip")
    endpoints, report = _gate_bus(client, stack, deadline, restarts)
    phases["bus"] = time.monotonic() - mark

    mark = time.monotonic()
    reports: list[ServiceReport] = []
    if components:
        progress(f"Starting {', '.join(c.name for c in components)}")
        before = engine.states(client)
        engine.up(client, [c.name for c in components], dependencies=False)
        reports = _verify_components(client, stack, components, endpoints, before, deadline, progress)
    phases["components"] = time.monotonic() - mark
    phases["total"] = time.monotonic() - started
    bus_state = engine.states(client).get(BUS)
    bus_report = ServiceReport(
        BUS,
        bus_state.status if bus_state else "unknown",
        bus_state.health if bus_state else None,
        None,
        None,
        proven=True,
    )
    return UpResult(stack.project, endpoints, [bus_report, *reports], phases, report, changed)


def _gate_bus(
    client: DockerClient, stack: Stack, deadline: float, restarts_before: int
) -> tuple[Endpoints, health.BusReport]:
    """Poll the bus from the host until it is proven healthy; fail at once if its container fails.

    A restart counts only if it happened during this call: a bus that restarted once last week (and
    kept the same container) must not block a later `up`."""

    def container_problem() -> str | None:
        state = engine.states(client).get(BUS)
        if state is None:
            return "the bus container does not exist"
        if state.status in ("exited", "dead"):
            return f"the bus container exited with code {state.exit_code}"
        if state.status == "restarting" or state.restart_count > restarts_before:
            return f"the bus container is restarting (exit code {state.exit_code})"
        return None

    endpoints: Endpoints | None = None
    report: health.BusReport | None = None
    problem: str | None = None
    while time.monotonic() < deadline:
        problem = container_problem()
        if problem:
            break
        endpoints = endpoints or bus_endpoints(client, stack)
        if endpoints is None:
            problem = "the bus has no published ports yet"
            time.sleep(POLL)
            continue
        report = health.wait_for_bus(
            health.BusEndpoints(endpoints.nats_url, endpoints.monitor_url),
            expected_max_payload=stack.plan.bus.max_payload,
            deadline=deadline,
            interval=POLL,
            abort=container_problem,
        )
        if report.healthy:
            return endpoints, report
        problem = report.problem
        break
    else:
        problem = problem or "no answer"
    logs = engine.logs_tail(client, BUS, LOG_LINES)
    raise BusFailure(
        f"The bus did not become healthy: {problem}. No component was started. Its last log lines are "
        f"below; fix the cause (the rendered config is in {stack.output_dir}), then run `nachos-deploy up` "
        f"again, or remove the stack with `nachos-deploy down -p {stack.project}`.",
        details=_indent(logs),
    )


def _verify_components(
    client: DockerClient,
    stack: Stack,
    components: Sequence[ServicePlan],
    endpoints: Endpoints,
    before: dict[str, engine.ServiceState],
    deadline: float,
    progress: Progress,
) -> list[ServiceReport]:
    """Wait until every component is running, healthy and on the bus; fail fast on an exit or restart."""
    reports: dict[str, ServiceReport] = {}
    restarts: dict[str, int] = {}
    while True:
        states = engine.states(client)
        try:
            names = health.connection_names(endpoints.monitor_url, timeout=1.0)
        except health.BusUnavailable:
            names = {}
        failed: list[str] = []
        for component in components:
            state = states.get(component.name)
            baseline = before.get(component.name)
            restarts[component.name] = (state.restart_count if state else 0) - (
                baseline.restart_count if baseline else 0
            )
            if state is None:
                reports[component.name] = ServiceReport(
                    component.name, "missing", None, component.connection_name, False
                )
                continue
            connected = None if component.connection_name is None else component.connection_name in names
            reports[component.name] = ServiceReport(
                component.name, state.status, state.health, component.connection_name, connected
            )
            if (
                state.status in ("exited", "dead", "restarting")
                or restarts[component.name] > 0
                or state.health == "unhealthy"
            ):
                failed.append(component.name)
        pending = {name for name, report in reports.items() if not report.ok}
        if failed:
            break
        if not pending:
            return [reports[c.name] for c in components]
        if time.monotonic() >= deadline:
            break
        progress(f"Waiting for {', '.join(sorted(pending))}")
        time.sleep(POLL * 2)
    culprits = failed or sorted(pending)
    reasons = {name: _why(reports[name], states.get(name), restarts.get(name, 0)) for name in culprits}
    lines = [
        f"--- {name}: {why}\n{_indent(engine.logs_tail(client, name, LOG_LINES))}"
        for name, why in reasons.items()
    ]
    raise ComponentFailure(
        f"{', '.join(culprits)} did not come up: "
        + "; ".join(f"{name} {why}" for name, why in reasons.items())
        + f". The stack is left as it is for inspection (`nachos-deploy status`, `nachos-deploy logs "
        f"{culprits[0]}`); remove it with `nachos-deploy down -p {stack.project}`.",
        details="\n".join(lines),
    )


def _why(report: ServiceReport, state: engine.ServiceState | None, restarts: int = 0) -> str:
    """Why a service is not ok; ``restarts`` counts only the restarts seen during this command."""
    if state is None:
        return "has no container"
    if state.status in ("exited", "dead"):
        return f"exited with code {state.exit_code}"
    if state.status == "restarting":
        return f"is restarting (last exit code {state.exit_code})"
    if restarts > 0:
        return f"restarted {restarts} time(s) (last exit code {state.exit_code})"
    if state.health not in (None, "healthy"):
        return f"is {state.health or 'not healthy'} by its healthcheck"
    if report.connected is False:
        return f"is not connected to the bus as {report.connection_name!r}"
    return f"is {state.status}"


def _indent(text: str) -> str:
    return "\n".join(f"    {line}" for line in text.splitlines()) or "    (no log lines)"


@dataclass
class DownResult:
    project: str
    volumes_removed: list[str]
    volumes_kept: list[str]


def down(stack: Stack, *, volumes: bool) -> DownResult:
    """Remove containers and networks; JetStream and other volumes only when asked."""
    engine.require_engine()
    existing = engine.project_volumes(stack.project)
    with compose_client(stack) as client:
        engine.down(client, volumes=volumes)
    if not volumes:
        return DownResult(stack.project, volumes_removed=[], volumes_kept=existing)
    leftovers = engine.project_volumes(stack.project)  # of services no longer in the configuration
    if leftovers:
        engine.remove_volumes(leftovers)
    return DownResult(stack.project, volumes_removed=existing, volumes_kept=[])


@contextlib.contextmanager
def compose_client(stack: Stack) -> Iterator[DockerClient]:
    """A Compose client on the files as rendered now; relative paths resolve from the output folder."""
    with files.staged(stack.output_dir, stack.files) as folder:
        yield engine.compose_client(stack.project, folder / stack.compose_file.name, stack.output_dir)


def running_endpoints(stack: Stack) -> Endpoints:
    """Host URLs of a running stack's bus, or a clear error when it is not running."""
    engine.require_engine()
    with compose_client(stack) as client:
        endpoints = bus_endpoints(client, stack)
    if endpoints is None:
        raise DeployError(
            f"The bus of project {stack.project} is not running; start it with `nachos-deploy up`.",
            exit_code=ExitCode.FAILED,
        )
    return endpoints


@dataclass
class StatusResult:
    project: str
    endpoints: Endpoints | None
    services: list[ServiceReport]
    bus: dict[str, Any] | None
    bus_memory: int | None
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "project": self.project,
            **(self.endpoints.as_json() if self.endpoints else {"nats_url": None, "monitor_url": None}),
            "services": [service.as_json() for service in self.services],
            "bus": {**(self.bus or {}), "container_memory": self.bus_memory} if self.bus else None,
            "problems": self.problems,
        }


def status(stack: Stack) -> StatusResult:
    """Each planned service's container state, health and bus connection, and the bus's own view."""
    engine.require_engine()
    with compose_client(stack) as client:
        states = engine.states(client)
        endpoints = bus_endpoints(client, stack) if BUS in states else None
    overview: dict[str, Any] | None = None
    names: dict[str, int] = {}
    problems: list[str] = []
    if endpoints is not None:
        try:
            overview = dict(health.bus_overview(endpoints.monitor_url))
            names = health.connection_names(endpoints.monitor_url)
        except health.BusUnavailable as exc:
            problems.append(f"the bus does not answer on {endpoints.monitor_url}: {exc}")
    if not states:
        problems.append(f"project {stack.project} has no containers; start it with `nachos-deploy up`")
    reports = []
    for service in stack.plan.services:
        state = states.get(service.name)
        if state is None:
            reports.append(ServiceReport(service.name, "missing", None, service.connection_name, None))
            if states:
                problems.append(f"{service.name} has no container")
            continue
        connected = None
        if service.connection_name is not None and overview is not None:
            connected = service.connection_name in names
        report = ServiceReport(service.name, state.status, state.health, service.connection_name, connected)
        reports.append(report)
        if not report.ok:
            problems.append(f"{service.name} {_why(report, state)}")
    if overview is not None and not overview.get("jetstream"):
        problems.append("JetStream is off on the bus")
    memory = engine.container_memory(states[BUS].container) if BUS in states else None
    return StatusResult(stack.project, endpoints, reports, overview, memory, problems)

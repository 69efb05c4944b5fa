"""One look at a running stack, and the one rule that says whether each of its services is ok.

``up`` and ``status`` both ask :func:`observe`, so they cannot disagree: a service is ok only when its
container is running, healthy where it has a check, and (where it has a connection name) listed on
the bus's ``/connz``. A container's own state proves nothing about the bus: after a long outage the
platform's channels keep running, disconnected, for ever. Where a check asks only the bus (the one
rendered so that Compose alone can wait for the same fact: see ``HealthPlan.asks_bus``), the rule
reads the bus itself, fresh, instead of Docker's verdict, which lags by up to an interval.

``up`` passes a :class:`Since`, which narrows what counts against a service to what happened during
this ``up``: restarts of the current container after the baseline, and healthcheck runs after the
bus was proven (a health verdict from before an outage is stale, not a failure).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from nachos_deploy.bus import monitor
from nachos_deploy.core.bus_nodes import is_bus_node
from nachos_deploy.core.catalog import Role
from nachos_deploy.core.names import BUS, INTERNAL_NETWORK, PORTS, STATE_CLIENTS_COMMAND, STATE_GATEWAY_USER
from nachos_deploy.core.plan_types import HEALTH_DISABLED, ServicePlan
from nachos_deploy.core.results import ServiceReport
from nachos_deploy.core.units import duration_seconds
from nachos_deploy.docker.engine import ServiceState
from nachos_deploy.targets.base import Target

DEFAULT_RETRIES = 3  # Docker's, for an image's own check whose settings we do not know


@dataclass(frozen=True)
class BusView:
    """The bus's own view of who is connected; ``connections`` is None when it did not answer.

    With authentication on, components sit behind their sidecars: ``leafs`` are the sidecars logged
    in at the hub, ``sidecars`` what each sidecar's own ``/connz`` lists (None: it did not answer)."""

    connections: Mapping[str, int] | None
    problem: str | None = None
    leafs: frozenset[str] | None = None
    sidecars: Mapping[str, Mapping[str, int] | None] = field(default_factory=dict)
    # The users the state store's CLIENT LIST shows connected; None when it was not read (no state
    # store, it or the gateway not running, or no answer).
    state_clients: frozenset[str] | None = None


@dataclass(frozen=True)
class Since:
    """What "during this up" means: the moment (epoch seconds) after which healthcheck runs count,
    and each container's restart count at that moment, by container id."""

    at: float
    restarts: Mapping[str, int]

    def restarts_of(self, state: ServiceState) -> int:
        return state.restart_count - self.restarts.get(state.container_id, 0)


@dataclass(frozen=True)
class Observation:
    states: Mapping[str, ServiceState]
    bus: BusView
    reports: list[ServiceReport]
    early: frozenset[str] = frozenset()  # healthy by a check run now (check_waiting), not yet the engine's

    def report(self, name: str) -> ServiceReport:
        return next(report for report in self.reports if report.name == name)


def look_at_bus(
    target: Target | None,
    monitor_url: str | None,
    sidecars: Sequence[str] = (),
    states: Mapping[str, ServiceState] | None = None,
    *,
    leafs: bool = False,
    node_monitors: Sequence[str] = (),
) -> BusView:
    """The hub's connections and leaf nodes from the host, and, for ``sidecars``, each one's own
    ``/connz``, read from inside a bus node's container (the sidecars publish no port).
    ``node_monitors``: a cluster's nodes' own monitoring URLs, read in place of ``monitor_url``
    (which reaches one node per request): a client or sidecar counts on whichever node it reached
    (a leaf connection goes to whichever node `bus` resolved to). A node that does not answer is
    left out here, so the survivors of a dead node still prove their clients; `status` names it.
    Without a ``target`` (a look at states alone, in tests) no container can be read from inside:
    the sidecars then do not answer."""
    if monitor_url is None:
        return BusView(None, "the bus has no published port to read it through (is it running?)")
    wanted_leafs = leafs or bool(sidecars)

    def read(url: str) -> tuple[dict[str, int], frozenset[str] | None]:
        names = monitor.connection_names(url, timeout=1.0)
        return names, frozenset(monitor.leaf_names(url)) if wanted_leafs else None

    urls = list(node_monitors) or [monitor_url]
    with ThreadPoolExecutor(max_workers=len(urls)) as pool:  # a dead node's 1 s timeout, once
        looks = [pool.submit(read, url) for url in urls]
    connections: dict[str, int] | None = None
    leaf_names: frozenset[str] | None = None
    problem = ""
    for look in looks:
        try:
            names, leaf_view = look.result()
        except monitor.BusUnavailable as exc:
            problem = problem or str(exc)
            continue
        connections = connections or {}
        for name, count in names.items():
            connections[name] = connections.get(name, 0) + count
        if leaf_view is not None:
            leaf_names = (leaf_names or frozenset()) | leaf_view
    if connections is None:
        return BusView(None, problem)
    seen: dict[str, Mapping[str, int] | None] = dict.fromkeys(sidecars)
    states = states or {}
    hub = next(
        (s for name, s in states.items() if is_bus_node(name) and s.status == "running"), states.get(BUS)
    )
    if sidecars and hub is not None and target is not None:
        addresses = {
            name: address for name in sidecars if (address := _internal_address(states.get(name))) is not None
        }
        documents = target.read_inside(hub.container, addresses, "/connz?limit=1024")
        seen = {
            name: None if doc is None else monitor.parse_connz_names(doc) for name, doc in documents.items()
        }
    return BusView(connections, None, leaf_names, seen)


def _internal_address(state: ServiceState | None) -> str | None:
    """A sidecar's address on nachos-internal, the one network it shares with the hub."""
    if state is None:
        return None
    return next((ip for network, ip in state.addresses if network.endswith(f"_{INTERNAL_NETWORK}")), None)


def observe(
    target: Target | None,
    services: Sequence[ServicePlan],
    monitor_url: str | None,
    *,
    since: Since | None = None,
    healed: frozenset[str] = frozenset(),
    states: Mapping[str, ServiceState] | None = None,
    node_monitors: Sequence[str] = (),
) -> Observation:
    """Read the containers through the ``target`` (unless ``states`` were read a moment ago: then
    ``target`` may be None) and the bus once, and judge every service in ``services``."""
    if states is None:
        assert target is not None, "observe needs a target or the states"
        states = target.states()
    states = dict(states)
    sidecars = [s.sidecar for s in services if s.sidecar]
    leafs = bool(sidecars) or any(s.leaf_name for s in services)
    with ThreadPoolExecutor(max_workers=1) as pool:  # the state store's exec while the bus is read
        clients = pool.submit(_state_clients, target, services, states)
        bus = look_at_bus(target, monitor_url, sidecars, states, leafs=leafs, node_monitors=node_monitors)
        bus = replace(bus, state_clients=clients.result())
    reports = [
        judge(service, states.get(service.name), bus, since, healed=service.name in healed)
        for service in services
    ]
    return Observation(states, bus, reports)


STATE_CLIENTS_TIMEOUT = 3.0


def _state_clients(
    target: Target | None, services: Sequence[ServicePlan], states: Mapping[str, ServiceState]
) -> frozenset[str] | None:
    """The users connected to the state store, by its ``CLIENT LIST`` (one ``docker exec``), when it
    is judged and runs beside a running gateway; None otherwise (a gateway that is down is its own
    report's problem, not the state store's)."""
    state = next((s for s in services if s.role is Role.STATE), None)
    running = {name for name, s in states.items() if s.status == "running"}
    if target is None or state is None or state.name not in running:
        return None
    if not any(s.role is Role.GATEWAY and s.name in running for s in services):
        return None
    listed = target.exec_output(states[state.name].container, STATE_CLIENTS_COMMAND, STATE_CLIENTS_TIMEOUT)
    if listed is None:
        return None
    return frozenset(
        field.removeprefix("user=")
        for line in listed.splitlines()
        for field in line.split()
        if field.startswith("user=")
    )


def judge(
    service: ServicePlan,
    state: ServiceState | None,
    bus: BusView,
    since: Since | None = None,
    *,
    healed: bool = False,
) -> ServiceReport:
    """The one rule. Pure: everything it needs was read beforehand."""
    problem, final = _problem(service, state, since)
    connected: bool | None = None
    if service.name == BUS:
        if problem is None and bus.connections is None:
            problem = f"its monitoring does not answer: {bus.problem}"
    elif service.name == PORTS:  # the host reads the bus through it: no answer, no proof it relays
        if problem is None and bus.connections is None:
            problem = f"relays to a bus that does not answer: {bus.problem}"
    elif service.leaf_name is not None:  # a sidecar: logged in at the hub with its credentials?
        connected = bus.leafs is not None and service.leaf_name in bus.leafs
        if problem is None and bus.connections is None:
            problem = f"cannot reach the hub: {bus.problem}"
        elif problem is None and not connected:
            problem = "is not connected to the hub as a leaf node (/leafz)"
    elif service.connection_name is not None and service.sidecar is not None:
        names = bus.sidecars.get(service.sidecar)
        connected = names is not None and service.connection_name in names
        if problem is None and names is None:
            problem = f"cannot be on the bus: its sidecar {service.sidecar} does not answer"
        elif problem is None and not connected:
            problem = f"is not connected to its sidecar {service.sidecar} as {service.connection_name!r}"
    elif service.connection_name is not None:
        connected = bool(bus.connections) and service.connection_name in (bus.connections or {})
        if problem is None and bus.connections is None:
            problem = f"cannot be on the bus: {bus.problem}"
        elif problem is None and not connected:
            problem = f"is not connected to the bus as {service.connection_name!r}"
    elif (
        service.role is Role.STATE
        and problem is None
        and bus.state_clients is not None
        and STATE_GATEWAY_USER not in bus.state_clients  # Redis runs, but the gateway is not on it
    ):
        problem = f"lists no connection of the gateway's user {STATE_GATEWAY_USER!r} (CLIENT LIST)"
    health = state.health if state else None
    if health is not None and problem is None and _asks_only_the_bus(service):
        health = "healthy"  # proven on the bus just now: what Docker's next run of that check says
    return ServiceReport(
        name=service.name,
        status=state.status if state else "missing",
        health=health,
        connection_name=service.connection_name,
        connected=connected,
        problem=problem,
        final=final,
        tool_id=service.tool_id,
        healed=healed,
    )


def _problem(
    service: ServicePlan, state: ServiceState | None, since: Since | None
) -> tuple[str | None, bool]:
    """The container's own problem, if any, and whether waiting could clear it."""
    if state is None:
        return "has no container", False
    if state.status in ("exited", "dead"):
        return f"exited with code {state.exit_code}", True
    # Docker counts a restart when the policy decides on it, before the back-off wait, so during
    # `up` the count tells the story in every state: restarting now, or running again.
    if since is not None and since.restarts_of(state) > 0:
        return f"restarted {since.restarts_of(state)} time(s) during this run", True
    if state.status == "restarting":
        return f"is restarting (last exit code {state.exit_code})", True
    if state.status == "created":
        return "was created but has not started", False
    if _asks_only_the_bus(service):  # judged below on the bus, read now: Docker's verdict lags
        return None, False
    if state.health == "starting" and not is_bus_node(service.name):  # proven from the host
        return "is waiting for its first healthcheck", False
    if state.health == "unhealthy":
        return _unhealthy(service, state, since)
    return None, False


def _asks_only_the_bus(service: ServicePlan) -> bool:
    """A check that asks only what :func:`judge` reads from the bus itself (a component's connection
    on its sidecar's /connz, the forwarder's relay), rendered so that Compose alone can wait for it:
    the same fact, which the judge reads fresh rather than up to an interval late (so `up` waits
    for it no longer than before the check existed)."""
    return service.healthcheck is not None and service.healthcheck.asks_bus == "only"


def _unhealthy(service: ServicePlan, state: ServiceState, since: Since | None) -> tuple[str, bool]:
    last = state.probes[-1].output if state.probes else ""
    detail = f" ({' '.join(last.split())[:200]})" if last else ""
    if since is None:
        return f"is unhealthy by its healthcheck{detail}", True
    check = service.healthcheck
    retries = check.retries if check is not None and check is not HEALTH_DISABLED else DEFAULT_RETRIES
    reference = max(since.at, state.started_at or 0.0)
    fresh = [probe for probe in state.probes if probe.started >= reference]
    failing = 0
    for probe in reversed(fresh):
        if probe.exit_code == 0:
            break
        failing += 1
    if failing >= retries:
        return f"is unhealthy by its healthcheck{detail}", True
    return "is unhealthy from before this run; waiting for a fresh healthcheck", False


def _waits_for_check(service: ServicePlan, status: str, health: str | None) -> bool:
    asks_bus = service.healthcheck.asks_bus if service.healthcheck is not None else "no"
    return (
        status == "running"
        and service.name != BUS
        and asks_bus != "only"  # the judge reads that on the bus itself
        # a cluster's node that was unhealthy while it caught up: its check is asked again now
        and (health == "starting" or (health == "unhealthy" and is_bus_node(service.name)))
    )


def _stale_verdict(report: ServiceReport) -> bool:
    """Unhealthy, yet on the bus again (a sidecar the hub lists, a component its sidecar lists): a
    verdict from an outage, which its check, run again now, may clear ahead of the engine's next run."""
    return report.status == "running" and report.health == "unhealthy" and report.connected is True


def _run_check(target: Target | None, service: ServicePlan, state: ServiceState) -> bool:
    """The service's own check, run in its container by the target (none: nothing can run it)."""
    health = service.healthcheck
    if target is None or health is None or not health.test or health.test == HEALTH_DISABLED.test:
        return False
    return target.run_check(state.container, health.test, duration_seconds(health.timeout))


def start_checks(
    pool: ThreadPoolExecutor,
    target: Target | None,
    services: Sequence[ServicePlan],
    states: Mapping[str, ServiceState],
    passed_before: Mapping[str, str] | None = None,
) -> dict[str, Future[bool]]:
    """The checks :func:`check_waiting` will want, started now from the containers' states, so that
    they run while :func:`observe` reads the bus (each is a ``docker exec`` of 0.1-0.2 s). Sidecars
    are left out: the hub's ``/leafz`` in that look usually proves them without an exec."""
    return {
        service.name: pool.submit(_run_check, target, service, state)
        for service in services
        if not service.leaf_name
        and (state := states.get(service.name)) is not None
        and _waits_for_check(service, state.status, state.health)
        and not (passed_before and passed_before.get(service.name) == state.container_id)
    }


def check_waiting(
    target: Target | None,
    services: Sequence[ServicePlan],
    seen: Observation,
    since: Since | None = None,
    healed: frozenset[str] = frozenset(),
    passed_before: Mapping[str, str] | None = None,
    started: Mapping[str, Future[bool]] | None = None,
) -> Observation:
    """Services still waiting for their first healthcheck get it run now, in their container, by
    the same command; one that passes is judged healthy (the engine reports it so at its next
    interval). This is where `up` beats `compose up --wait`, which waits the interval out.
    ``passed_before``: service → the container whose check passed at an earlier look of this wait;
    not run again while that container runs (a restart in between is the caller's failure).
    ``started``: checks already running on the containers of ``seen`` (see :func:`start_checks`)."""
    by_name = {service.name: service for service in services}
    waiting = {
        report.name
        for report in seen.reports
        if report.name in by_name
        and (_waits_for_check(by_name[report.name], report.status, report.health) or _stale_verdict(report))
    }
    if not waiting:
        return seen
    states = dict(seen.states)
    leafs = seen.bus.leafs or frozenset()

    def check(name: str) -> bool:
        service, state = by_name[name], states[name]
        if passed_before and state.container_id and passed_before.get(name) == state.container_id:
            return True
        if service.leaf_name and seen.bus.leafs is not None:
            # A sidecar's own check asks its /leafz for the hub; the hub's /leafz, read from the
            # host a moment ago, gives the same fact from the other end, without an exec. Not
            # listed yet: the next look (POLL later) asks again. An exec here took up to 1.6 s on
            # a cold demo `up`, and the wait's next look waited for it (docs/benchmarks.md).
            return service.leaf_name in leafs
        if started and name in started:
            return started[name].result()
        return _run_check(target, service, state)

    with ThreadPoolExecutor(max_workers=min(4, len(waiting))) as pool:
        passed = [
            name for name, ok in zip(sorted(waiting), pool.map(check, sorted(waiting)), strict=True) if ok
        ]
    if not passed:
        return seen
    for name in passed:
        states[name] = replace(states[name], health="healthy")
    reports = [
        judge(by_name[r.name], states.get(r.name), seen.bus, since, healed=r.name in healed)
        if r.name in passed
        else r
        for r in seen.reports
    ]
    return Observation(states, seen.bus, reports, frozenset(passed))

"""The seam between the one bus-first algorithm (:mod:`nachos_deploy.lifecycle`) and an engine.

Compose and Swarm differ in how a set of services is started (a Compose ``up`` of named services,
a ``docker stack deploy`` of a whole file), in what a failure looks like (a container that exits or
restarts; a task that fails and is replaced) and in how a stack is removed. They do not differ in
what ``up`` must prove, in what order, or in the rule that judges a service: that is written once,
against :class:`Target`. Everything the algorithm asks of an engine is a method here, named for what
the algorithm needs, so that a fake (``tests/fake_target.py``) can stand in for both in-process.

A target is made for one stack and one command (:func:`nachos_deploy.targets.for_stack`): it may
keep what it learned in one call for a later one (Compose keeps the containers it created while
the bus was proven, and its last look at the containers).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Literal, NamedTuple, Protocol

from nachos_deploy.bus import trust
from nachos_deploy.core.bus_nodes import forwarded_ports
from nachos_deploy.core.changes import Objects, ServiceChange
from nachos_deploy.core.names import PORTS
from nachos_deploy.core.plan_types import ServicePlan
from nachos_deploy.core.results import Endpoints
from nachos_deploy.docker.engine import ServiceState
from nachos_deploy.io import credentials
from nachos_deploy.io.host_ports import HostPort
from nachos_deploy.io.stack import Stack

Progress = Callable[[str], None]


class OneShot(NamedTuple):
    """Where a one-shot service (volume-init) stands: ``done`` once it ended, ``failure`` says how
    it failed (None: it succeeded, or is still running when not ``done``)."""

    done: bool
    failure: str | None = None


class Finding(NamedTuple):
    """One check of what this engine needs, for ``doctor``: its level is pass, warn or fail."""

    name: str
    level: Literal["pass", "warn", "fail"]
    detail: str
    fix: str = ""


class FilesCheck(NamedTuple):
    """What ``validate`` learned from the engine's own tool without starting anything: the version
    that accepted the rendered files, or why there was no such check (a rejected file raises)."""

    version: str | None
    skipped: str | None = None


class Target(Protocol):
    """What differs between Compose and Swarm, and nothing else."""

    stack: Stack
    verb: str  # how a user reads "started" on this engine ("started", "deployed"), for messages
    look_interval: float  # seconds between looks at the bus set while the gate polls the bus

    # -- before anything is written -------------------------------------------------------------
    def components(self, only: Sequence[str]) -> list[ServicePlan]:
        """The components ``up --only`` runs here; a selection this engine cannot run is refused."""
        ...

    def check_files(self) -> FilesCheck:
        """The rendered files checked by the engine's own tool (``validate``), needing no engine
        where the tool can do without one; a file it refuses is a ConfigError (exit 3)."""
        ...

    def check(self, components: Sequence[ServicePlan]) -> bool:
        """The engine, its images and the rendered files, before anything is written: one clear
        error naming the first thing missing. Settles the stack's networks on a free block of the
        pool (``stack`` may be rendered anew: targets/subnet_check.py); True when a network of the
        stack is in that block already, so that no other `up` can take it meanwhile."""
        ...

    def ports_taken(self) -> list[HostPort]:
        """The stack's fixed host ports another program holds now (not the project's own), asked
        before anything is written or started: the engine would refuse one only when it publishes
        it, with the bus already started. Empty where a test from this machine cannot speak for
        where the port is published."""
        ...

    def unchanged(self, changed: Sequence[str], only: Sequence[str]) -> Mapping[str, ServiceState] | None:
        """The running services' states when the last full ``up`` (of the same ``only``) left them
        exactly as they are now (``changed``: files this ``up`` just wrote), so that nothing needs
        starting; else None."""
        ...

    def remember(self, states: Mapping[str, ServiceState], started: Sequence[str]) -> None:
        """Note a successful full ``up`` for the next one's :meth:`unchanged`."""
        ...

    def changes(self, only: Sequence[str]) -> list[ServiceChange]:
        """What ``up --only`` would do to each service (create, recreate and why, remove, keep),
        then to the orphans, read from the engine without changing anything (``plan``)."""
        ...

    def to_create(self, only: Sequence[str]) -> Objects:
        """The volumes, networks (and on Swarm configs and secrets) ``up --only`` would create."""
        ...

    # -- starting, stage by stage ----------------------------------------------------------------
    def start_bus(self, components: Sequence[ServicePlan], progress: Progress) -> list[str]:
        """Start the bus set (the bus's nodes, its port forwarder, volume-init) without waiting;
        may prepare the ``components``' later start meanwhile. Returns warnings for the result."""
        ...

    def bus_problem(self) -> str | None:
        """Why the bus set has failed since :meth:`start_bus` (a container exited or restarted, a
        task failed), ending the gate at once; None while it may still come up."""
        ...

    def gate_endpoints(self) -> Endpoints | str:
        """Where the gate reaches the bus as started now, or why it cannot yet (no published port,
        a task still being replaced)."""
        ...

    def abandon(self) -> None:
        """The bus failed: undo what :meth:`start_bus` prepared for the components (no container
        of a component may be left behind by a bus that never came up)."""
        ...

    def start_sidecars(self, sidecars: Sequence[ServicePlan], states: Mapping[str, ServiceState]) -> None:
        """Start the bus sidecars (``states``: read a moment ago)."""
        ...

    def start_components(self, components: Sequence[ServicePlan], states: Mapping[str, ServiceState]) -> None:
        """Start the components (``states``: read a moment ago)."""
        ...

    def volume_init(self, since: float, states: Mapping[str, ServiceState] | None) -> OneShot:
        """How volume-init stands (a failure counts from ``since``, epoch seconds; ``states``: read
        a moment ago, or None to read them)."""
        ...

    def restart(self, names: Sequence[str]) -> None:
        """Restart services now (also ends a restart back-off)."""
        ...

    # -- upgrading (lifecycle/upgrade.py) ----------------------------------------------------------
    def clear_for_cold_start(self, progress: Progress) -> bool:
        """When the stack's containers cannot take this ``up``'s files as they are, remove them (never
        its volumes), so that this ``up`` starts it from cold; True when it did. Compose: a network
        on another subnet than the plan gives it (a grown stack, another ``networks.pool``), which
        must be made anew, or the bus's credentials made anew under running servers."""
        ...

    def note_credentials(self) -> None:
        """The running servers have read the credentials as they are now (a rotation proved it), so
        that the next ``up`` does not take them for credentials its servers never read (Compose:
        :meth:`clear_for_cold_start`)."""
        ...

    def prune_networks(self) -> None:
        """Remove this project's networks the plan no longer has (a component disabled or removed),
        once a successful ``up`` took its containers off them; best effort: one still in use stays,
        and stands in the way of no block (targets/subnet_check.stale_networks)."""
        ...

    def hold(self, names: Sequence[str]) -> None:
        """Leave the running components ``names`` as they are in :meth:`start_components`: an upgrade
        replaces them one at a time afterwards (:meth:`replace`)."""
        ...

    def replace(self, names: Sequence[str]) -> None:
        """Recreate the held components ``names`` from the files as rendered now (one upgrade step),
        every other service left as it is; none is held any more once each was replaced."""
        ...

    def restore(self, names: Sequence[str], rendered: Mapping[str, str], images: Mapping[str, str]) -> None:
        """Put ``rendered`` (an earlier deployment's rendered files) back in the output folder and
        recreate the components ``names`` from them, each on the image id ``images`` names (the one
        its container ran then) where its reference names another image now."""
        ...

    def replace_bus_node(self, name: str) -> None:
        """Replace one running node of a clustered bus now, as rendered (stop it, start it anew),
        without waiting for it and without touching any other service: ``up`` replaces the nodes
        :meth:`changes` says the engine would recreate one at a time (lifecycle/bus_upgrade.py)."""
        ...

    def reload(self, names: Sequence[str]) -> bool:
        """Make the running nats-servers of ``names`` re-read their config files in place (SIGHUP),
        keeping their clients connected; False where this engine cannot, so ``up`` must replace
        them instead (Swarm: a task's configs and environment are fixed)."""
        ...

    # -- observing ---------------------------------------------------------------------------------
    def states(self, *, recent: bool = False) -> dict[str, ServiceState]:
        """Service name → the state of its container (``recent``: the last look this target took,
        e.g. during the bus gate, will do when there is one)."""
        ...

    def endpoints(self, states: Mapping[str, ServiceState] | None = None) -> Endpoints | None:
        """Host URLs of the running bus (None when it is not running); ``states`` read a moment ago
        save reading them again."""
        ...

    def failed_tasks(self, names: Sequence[str], since: float) -> dict[str, str]:
        """Service → why a task of it failed since ``since`` (engines that restart containers in
        place have none: a restart shows in the container's state)."""
        ...

    def shortfalls(self, names: Sequence[str]) -> dict[str, str]:
        """Service → how many of its replicas are missing, for those of ``names`` short of them."""
        ...

    def run_check(self, container: str, test: Sequence[str] | str, timeout: float) -> bool:
        """Run a container's own healthcheck command in it now; whether it passed."""
        ...

    def read_inside(self, container: str, hosts: Mapping[str, str], path: str) -> dict[str, object | None]:
        """GET a monitoring ``path`` of each ``name: address`` from inside ``container`` (servers
        that publish no port); None for one that did not answer."""
        ...

    def read_file(self, container: str, path: str) -> str | None:
        """A text file inside a running container (the ingress's CA root), None while it has none."""
        ...

    def exec_output(self, container: str, command: Sequence[str], timeout: float) -> str | None:
        """What ``command`` prints in a running container (``docker exec``), None when it failed: how
        ``status`` asks the state store which users are connected (``CLIENT LIST``)."""
        ...

    def exit_codes_since(self, state: ServiceState, since: float) -> list[int]:
        """Exit codes of the runs of this container that ended after ``since``, oldest first."""
        ...

    def logs_tail(self, name: str, lines: int) -> str:
        """The last ``lines`` log lines of a service (never raises: the text says why there are none)."""
        ...

    def stream_logs(self, names: Sequence[str], *, follow: bool, tail: int | None) -> Iterator[str]:
        """The logs of ``names`` (all services: empty) as they come."""
        ...

    def diagnose(self) -> list[Finding]:
        """What this engine needs beyond Docker itself (Swarm: an active swarm, a manager), for
        ``doctor``."""
        ...

    # -- removing --------------------------------------------------------------------------------
    def volumes(self) -> list[str]:
        """The stack's volumes on this engine, also when it is down."""
        ...

    def remove(self, *, volumes: bool) -> None:
        """Remove the stack, components before the bus; its volumes too when asked."""
        ...


def bus_endpoints(stack: Stack, states: Mapping[str, ServiceState]) -> Endpoints | None:
    """Host URLs of the running bus from the ports its forwarder publishes (maybe engine-picked):
    the bus's own, which reach whichever node is up, and, for a clustered bus, each node's alone;
    None while the forwarder does not run or publish them. Monitoring is read through the client
    port as the system user (the HTTP ports are published only with bus.publish_monitor)."""
    forwarder = states.get(PORTS)
    if forwarder is None or forwarder.status != "running":
        return None
    host = stack.plan.bus.bind_address
    host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    host = "[::1]" if host == "::" else (f"[{host}]" if ":" in host else host)
    login = credentials.load(stack.output_dir) if stack.plan.auth else None
    # With bus.tls the client port speaks only TLS: tls:// URLs, checked against the stack's CA,
    # which every host client of these URLs trusts from here on (see bus/trust.py).
    scheme = "tls" if stack.plan.bus.tls else "nats"
    ca = stack.plan.bus.tls.trusted_ca(stack.output_dir) if stack.plan.bus.tls else None
    ca_file = str(ca) if ca is not None else None
    urls = []
    published: list[str | None] = []
    names = [node.name for node in stack.plan.bus.nodes] if stack.plan.bus.clustered else []
    for index, name in enumerate(["", *names]):
        client_port, monitor_port = (forwarder.host_port(port) for port in forwarded_ports(index))
        monitor = f"http://{host}:{monitor_port}" if monitor_port else None
        if not client_port:
            return None
        nats_url = f"{scheme}://{host}:{client_port}"
        trust.trust(nats_url, ca_file, stack.plan.bus.tls.server_name if stack.plan.bus.tls else None)
        # Monitoring is read over NATS as the system user; the HTTP port only where there is none.
        source = (login.system_url(nats_url) if login else None) or monitor
        if source is None:
            return None
        urls.append((name, login.operator_url(nats_url) if login else nats_url, source))
        published.append(monitor)
    (_, nats_url, monitor_url), *nodes = urls
    return Endpoints(nats_url, monitor_url, tuple(nodes), published[0], tuple(published[1:]), ca_file)

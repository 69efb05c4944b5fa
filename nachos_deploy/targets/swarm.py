"""A stack on Docker Swarm (``target: swarm``).

Swarm ignores ``depends_on`` and deploys a stack file whole, so the stages are three files:
``docker-stack.bus.yml`` (the bus's nodes, its port forwarder, the one-shot volume-init), then the
sidecars' file (with the state store), then the whole ``docker-stack.yml``. Swarm replaces a task
that exits instead of restarting its container: a failure is a task that failed since the deploy
(named with its error), and a service is short while fewer of its replicas run than it wants. The
containers this node runs are read as Compose's are, so that
:func:`nachos_deploy.lifecycle.observe.judge` stays the one rule.

``remove`` takes the components and their sidecars down first and the bus last. Swarm's own
``stack rm`` stops the bus first, and its clients then spend their grace period redialing it (11 to
16 s measured, against the few seconds it takes in this order).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from nachos_deploy.core import bus_placement
from nachos_deploy.core.bus_nodes import is_bus_node
from nachos_deploy.core.changes import Objects, ServiceChange
from nachos_deploy.core.errors import DeployError, EnvironmentProblem, ExitCode
from nachos_deploy.core.names import PORTS, VOLUME_INIT
from nachos_deploy.core.plan_types import Plan, ServicePlan
from nachos_deploy.core.results import Endpoints
from nachos_deploy.docker import engine, swarm
from nachos_deploy.docker.engine import ServiceState
from nachos_deploy.io import bus_tls, credentials, files, state_credentials
from nachos_deploy.io.host_ports import HostPort
from nachos_deploy.io.stack import DOTENV, Stack
from nachos_deploy.targets import subnet_check, swarm_changes, upgrade_files
from nachos_deploy.targets.base import FilesCheck, Finding, OneShot, Progress, bus_endpoints

GONE_TIMEOUT = 60.0  # seconds `down` waits for Swarm to remove the containers of removed services
POLL = 0.1


class SwarmTarget:
    """One stack of a swarm, driven from a manager node."""

    verb = "deployed"
    look_interval = 0.5  # a look at the tasks is four engine calls

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self._deployed = 0.0  # when the bus file was deployed (epoch seconds)
        self._moved: dict[str, str] = {}  # bus node -> the machine it is moving to
        self._held: frozenset[str] = frozenset()  # running components an upgrade replaces one by one

    # -- before anything is written -------------------------------------------------------------
    def components(self, only: Sequence[str]) -> list[ServicePlan]:
        """``--only`` on Swarm: the bus alone, or nothing left out (a stack file is deployed whole)."""
        if not only:
            return list(self.stack.plan.components)
        if all(is_bus_node(name) or name == PORTS for name in only):
            return []
        raise DeployError(
            f"--only {' '.join(only)}: with target: swarm, --only takes the bus alone (`--only bus`), "
            "since Swarm deploys a stack file whole. Leave --only out to deploy every component.",
            exit_code=ExitCode.USAGE,
        )

    def check_files(self) -> FilesCheck:
        return FilesCheck(None, "target is swarm (`docker stack deploy` has no dry run)")

    def check(self, components: Sequence[ServicePlan]) -> bool:
        engine.require_engine()
        swarm.require_manager()
        images = [s.image for s in (self.stack.plan.bus.service, *components)]
        missing = engine.missing_images(images)
        if missing:
            raise EnvironmentProblem(
                f"These images are not on this Docker engine: {', '.join(missing)}. Swarm runs a task "
                "with the image of the node it lands on and nachos-deploy never asks a registry: load "
                "them on every node (`docker load`, or `bash scripts/build-images.sh` for the offline "
                "stand-ins)."
            )
        self.stack, held = subnet_check.settle(self.stack)
        return held

    def ports_taken(self) -> list[HostPort]:
        """None are tested: Swarm publishes a port through its routing mesh on every node of the
        swarm, so a bind on this machine could not speak for the others; `docker stack deploy` and
        `doctor` (on this machine) tell."""
        return []

    def unchanged(self, changed: Sequence[str], only: Sequence[str]) -> Mapping[str, ServiceState] | None:
        return None  # a deploy of an unchanged file is Swarm's own no-op; there is no record to trust

    def remember(self, states: Mapping[str, ServiceState], started: Sequence[str]) -> None:
        return None

    def changes(self, only: Sequence[str]) -> list[ServiceChange]:
        """See :mod:`nachos_deploy.targets.swarm_changes`: reads, changes nothing."""
        return swarm_changes.changes(self.stack, only)

    def to_create(self, only: Sequence[str]) -> Objects:
        return swarm_changes.to_create(self.stack, only)

    # -- starting, stage by stage ----------------------------------------------------------------
    def start_bus(self, components: Sequence[ServicePlan], progress: Progress) -> list[str]:
        warnings, self._moved = self._place_bus(progress)
        progress(f"Deploying the bus ({self.stack.bus_stack_file.name})")
        self._deployed = time.time()
        self._deploy(self.stack.bus_stack_file, prune=False, failure=ExitCode.BUS)
        return warnings

    def _deploy(self, stack_file: Path, *, prune: bool, failure: ExitCode) -> None:
        """``docker stack deploy`` of one rendered file, with the output folder's .env as host variables
        and the versions that name the bus's credential secrets."""
        dotenv = self.stack.output_dir / DOTENV
        versions = {
            **credentials.secret_versions(self.stack.output_dir),
            **bus_tls.secret_versions(self.stack.output_dir),
            **state_credentials.secret_versions(self.stack.output_dir),
        }
        swarm.deploy(
            self.stack.project, stack_file, dotenv=dotenv, prune=prune, failure=failure, variables=versions
        )

    def _place_bus(self, progress: Progress) -> tuple[list[str], dict[str, str]]:
        """Put the clustered bus's node labels on the swarm's machines (see :mod:`bus_placement`):
        one bus node per ready machine when there are enough; the warnings say when there are not.
        Also returns the bus nodes given a new machine (bus node -> machine id), for the gate to wait
        for: Swarm moves a running task whose constraint no longer holds a moment later, by itself."""
        project = self.stack.project
        nodes = [node.name for node in self.stack.plan.bus.nodes]
        if len(nodes) < 2:
            return [], {}
        machines = swarm.machines()
        placed = bus_placement.assign(project, nodes, machines)
        if not placed.where:
            raise EnvironmentProblem(
                "No node of the swarm is ready to run the bus (`docker node ls`: each is down or "
                "drained). Bring one back, or set its availability to active with `docker node update "
                "--availability active NODE`."
            )
        if placed.changed:
            names = {m.id: m.hostname for m in machines}
            where = ", ".join(f"{n} on {names[placed.where[n]]}" for n in nodes)
            progress(f"Placing the bus's nodes: {where}")
            swarm.relabel(placed.add, placed.remove)
        added = {name for labels in placed.add.values() for name in labels}
        moved = {n: placed.where[n] for n in nodes if bus_placement.label(project, n) in added}
        return [
            f"the bus nodes {', '.join(shared)} share the machine {host}: the swarm has "
            f"{sum(m.ready for m in machines)} ready machine(s) for {len(nodes)} bus nodes, and losing "
            f"{host} loses the cluster's quorum. Join more machines (`docker swarm join`), then `up` "
            "spreads them."
            for host, shared in placed.shared.items()
        ], moved

    def _bus_set(self) -> list[str]:
        return sorted({node.name for node in self.stack.plan.bus.nodes} | {PORTS})

    def bus_problem(self) -> str | None:
        failed = self.failed_tasks(self._bus_set(), self._deployed)
        return next((f"a task of {name} failed: {why}" for name, why in failed.items()), None)

    def gate_endpoints(self) -> Endpoints | str:
        """None until Swarm runs the bus file's services as deployed now (an update replaces a task,
        and the old one must not pass the gate in its place) and the moved bus nodes on their new
        machine alone."""
        updating = swarm.updating(self.stack.project, self._bus_set())
        if updating:
            return f"{', '.join(updating)} still updating"
        moving = self._moving()
        if moving:
            return f"{', '.join(moving)} not yet running on the machine its label names"
        states = swarm.states(self.stack.project)
        # Swarm routes to a task (its name in DNS) only once its first healthcheck passed: a client
        # let in by the forwarder before then hangs until the gate's timeout (1 s of every Swarm up,
        # measured), so the gate asks once each node is routed.
        unrouted = [name for name in self._bus_set() if not routed(states.get(name))]
        if unrouted:
            return f"{', '.join(unrouted)} not yet routed by Swarm (its first healthcheck)"
        found = self.endpoints(states)
        return found if found is not None else "the bus has no published ports yet"

    def _moving(self) -> list[str]:
        """Those of the moved bus nodes not yet running on their machine alone: the task on the old
        machine is still being stopped, or the new one is not running yet."""
        if not self._moved:
            return []
        alive: dict[str, set[str]] = {name: set() for name in self._moved}
        running: dict[str, set[str]] = {name: set() for name in self._moved}
        for task in swarm.tasks(self.stack.project):
            if task.service in self._moved and task.state not in swarm.ENDED_STATES:
                alive[task.service].add(task.node)
                if task.state == "running":
                    running[task.service].add(task.node)
        return sorted(n for n, m in self._moved.items() if alive[n] != {m} or running[n] != {m})

    def abandon(self) -> None:
        return None  # nothing of the components was deployed yet

    def start_sidecars(self, sidecars: Sequence[ServicePlan], states: Mapping[str, ServiceState]) -> None:
        self._deploy(self.stack.sidecars_stack_file, prune=False, failure=ExitCode.COMPONENT)

    def start_components(self, components: Sequence[ServicePlan], states: Mapping[str, ServiceState]) -> None:
        if not self._held:
            self._deploy(self.stack.stack_file, prune=True, failure=ExitCode.COMPONENT)
            return
        # Held services left out of the file, and no --prune: Swarm leaves them running as they are.
        text = upgrade_files.without_services(self.stack.files[self.stack.stack_file.name], self._held)
        self._deploy_text(text, prune=False)

    def note_credentials(self) -> None:
        """Nothing to note: Swarm's secrets are named by their content, and replaced by `up`."""

    def prune_networks(self) -> None:
        """Left to `down`: Swarm removes a pruned service's tasks, and an overlay network removed
        meanwhile, in its own time (a `docker stack rm` then listed one that was gone), and a stale
        network stands in no block's way (targets/subnet_check.stale_networks)."""
        return

    def clear_for_cold_start(self, progress: Progress) -> bool:
        """Swarm's overlay networks are not moved here: `docker stack deploy` names the network
        whose subnet it cannot change (docs/networks.md); credentials made anew are new Swarm
        secrets, which Swarm gives the services it updates."""
        return False

    def hold(self, names: Sequence[str]) -> None:
        self._held = frozenset(names)

    def replace(self, names: Sequence[str]) -> None:
        """A deploy of a file naming only ``names``; once none is held, the whole file with --prune
        (a no-op for every service by then, but it removes what the configuration dropped)."""
        text = upgrade_files.only_services(self.stack.files[self.stack.stack_file.name], names)
        self._deploy_text(text, prune=False)
        self._held = self._held - set(names)
        if not self._held:
            self._deploy(self.stack.stack_file, prune=True, failure=ExitCode.COMPONENT)

    def restore(self, names: Sequence[str], rendered: Mapping[str, str], images: Mapping[str, str]) -> None:
        """The earlier files written back, then a deploy of the earlier stack file naming only
        ``names``, each on the image id of ``images`` where its tag has moved."""
        files.write_all(self.stack.output_dir, rendered)
        text = rendered.get(self.stack.stack_file.name)
        if text is None:
            raise DeployError(
                f"The earlier deployment has no {self.stack.stack_file.name} to put {', '.join(names)} "
                "back from; deploy the version you want with `nachos-deploy up`."
            )
        subset = upgrade_files.only_services(text, names)
        pinned = upgrade_files.pins(subset, {n: images[n] for n in names if n in images})
        self._deploy_text(upgrade_files.pin_images(subset, pinned), prune=False)
        self._held = self._held - set(names)

    def _deploy_text(self, text: str, *, prune: bool) -> None:
        """A deploy of a stack file made for one step, beside the rendered ones (its relative paths
        resolve from the output folder), removed again afterwards."""
        step = self.stack.output_dir / f".upgrade-step.{os.getpid()}.yml"
        try:
            files.replace_private(step, text)
            self._deploy(step, prune=prune, failure=ExitCode.COMPONENT)
        finally:
            step.unlink(missing_ok=True)

    def volume_init(self, since: float, states: Mapping[str, ServiceState] | None) -> OneShot:
        mine = [t for t in swarm.tasks(self.stack.project) if t.service == VOLUME_INIT]
        if any(t.state == "complete" for t in mine):
            return OneShot(True)
        failed = [t for t in mine if t.state in swarm.FAILED_STATES and (t.at or 0) >= since]
        return OneShot(True, f"failed ({failed[0].error})") if failed else OneShot(False)

    def restart(self, names: Sequence[str]) -> None:
        swarm.restart(self.stack.project, names)  # a new task each; the old one is stopped

    def replace_bus_node(self, name: str) -> None:
        """A deploy of a copy of the bus's stack file that names this node alone, without --prune:
        Swarm updates that one service and leaves the other nodes running as they are (a deploy of
        the whole file would update every changed node at once, each being its own service)."""
        text = upgrade_files.only_services(self.stack.files[self.stack.bus_stack_file.name], [name])
        step = self.stack.output_dir / f".bus-step.{os.getpid()}.yml"
        try:
            files.replace_private(step, text)
            self._deploy(step, prune=False, failure=ExitCode.BUS)
        finally:
            step.unlink(missing_ok=True)

    def reload(self, names: Sequence[str]) -> bool:
        """Never in place: the servers read their passwords from Swarm secrets here, which a task
        keeps for its life, so the next deploy replaces their tasks (docs/security.md)."""
        return False

    # -- observing ---------------------------------------------------------------------------------
    def states(self, *, recent: bool = False) -> dict[str, ServiceState]:
        """The containers this node runs for the current tasks (and the tasks' own state for those
        on other nodes), with a container here to read the sidecars from when the hub runs elsewhere."""
        return swarm.with_relay(self.stack.project, swarm.states(self.stack.project))

    def endpoints(self, states: Mapping[str, ServiceState] | None = None) -> Endpoints | None:
        return bus_endpoints(self.stack, states if states is not None else swarm.states(self.stack.project))

    def failed_tasks(self, names: Sequence[str], since: float) -> dict[str, str]:
        """Service → the error of its last task that failed at or after ``since``."""
        return failed_since(swarm.tasks(self.stack.project), names, since)

    def shortfalls(self, names: Sequence[str]) -> dict[str, str]:
        return {
            name: f"runs {running} of {desired} replicas"
            for name, (running, desired) in swarm.services(self.stack.project).items()
            if name in names and running < desired
        }

    def run_check(self, container: str, test: Sequence[str] | str, timeout: float) -> bool:
        return bool(container) and engine.passes_check(None, container, test, timeout)

    def read_inside(self, container: str, hosts: Mapping[str, str], path: str) -> dict[str, object | None]:
        return engine.monitor_from_inside(container, hosts, path)

    def read_file(self, container: str, path: str) -> str | None:
        return engine.read_file(container, path) if container else None

    def exec_output(self, container: str, command: Sequence[str], timeout: float) -> str | None:
        return engine.exec_output(container, command, timeout) if container else None

    def exit_codes_since(self, state: ServiceState, since: float) -> list[int]:
        return []  # a task that exits is replaced, not restarted: its failure is a failed task

    def logs_tail(self, name: str, lines: int) -> str:
        return swarm.logs_tail(self.stack.project, name, lines)

    def stream_logs(self, names: Sequence[str], *, follow: bool, tail: int | None) -> Iterator[str]:
        every = list(names) or [s.name for s in self.stack.plan.services]
        return swarm.stream_logs(self.stack.project, every, follow, tail)

    def diagnose(self) -> list[Finding]:
        """An active swarm with this node a manager. IPVS is only reported: the stack files use
        dnsrr, which needs none (VIP mode does)."""
        node = swarm.node_state()
        if node.state != "active":
            found = [
                Finding(
                    "swarm",
                    "fail",
                    f"this engine is not in an active swarm (state: {node.state})",
                    swarm.SWARM_INIT,
                )
            ]
        elif not node.manager:
            found = [
                Finding("swarm", "fail", "this node is a swarm worker", "run nachos-deploy on a manager node")
            ]
        else:
            found = [Finding("swarm", "pass", f"active, this node a manager, {node.nodes} node(s)")]
        ipvs = swarm.has_ipvs()
        detail = (
            "IPVS is available"
            if ipvs
            else "no IPVS in this kernel: Swarm's virtual IPs and routing mesh do not work here; the "
            "rendered stack files use endpoint_mode dnsrr and host-mode ports, which need neither"
        )
        return [*found, Finding("ipvs", "pass" if ipvs else "warn", detail)]

    # -- removing --------------------------------------------------------------------------------
    def volumes(self) -> list[str]:
        return swarm.volumes(self.stack.project)

    def remove(self, *, volumes: bool) -> None:
        """Components and sidecars first, the bus last, then the stack's networks and configs;
        volumes only when asked (Swarm itself never removes them)."""
        project = self.stack.project
        for wave in removal_waves(self.stack.plan, list(swarm.services(project))):
            elsewhere = swarm.remote_tasks(project, wave)  # each wave gone everywhere before the next
            swarm.remove_services(project, wave)
            swarm.stop_containers(project, wave)
            swarm.wait_tasks_ended(elsewhere, GONE_TIMEOUT / 2)
        swarm.remove_relay(project)
        swarm.remove_stack(project)  # what is left: networks, configs, services of old configs
        swarm.remove_stopped_containers(project)
        self._wait_gone()
        if not volumes:
            return
        existing = swarm.volumes(project)
        if existing:
            engine.remove_volumes(existing)
        labels = bus_placement.released(project, swarm.machines())
        if labels:  # the bus's nodes were pinned where their volumes were; those are gone now
            swarm.relabel({}, labels)

    def _wait_gone(self) -> None:
        """Until Swarm has removed the stack's containers and networks: volumes in use cannot be
        removed, nor can a stack be deployed again while its old networks are still going."""
        project = self.stack.project
        end = time.monotonic() + GONE_TIMEOUT
        while time.monotonic() < end:
            if not swarm.containers(project) and not swarm.networks(project):
                return
            time.sleep(POLL)
        raise DeployError(
            f"Swarm did not remove the containers of project {project} within {GONE_TIMEOUT:.0f} s; "
            "see `docker stack ps` and run `nachos-deploy down` again."
        )


def removal_waves(plan: Plan, present: Sequence[str]) -> list[list[str]]:
    """The services of a stack in the order they are removed: components, then their sidecars, then
    the bus's forwarder and volume-init, then the bus's nodes (``present``: what runs now)."""
    sidecars = {s.service.name for s in plan.sidecars}
    bus = {node.name for node in plan.bus.nodes}
    return [
        [name for name in present if name not in sidecars | bus | {PORTS, VOLUME_INIT}],
        [name for name in present if name in sidecars],
        [name for name in present if name in (PORTS, VOLUME_INIT)],
        [name for name in present if name in bus],
    ]


ENGINE_START_ERROR = "starting container failed"
"""How Swarm's executor words a container the engine created but could not start."""
SETUP_RETRIES = 2
"""Failures before a task's process ran that :func:`failed_since` leaves to Swarm's restart."""


def failed_since(tasks: Sequence[swarm.Task], names: Sequence[str], since: float) -> dict[str, str]:
    """Service → the error of its last task that failed at or after ``since``. A task whose
    container ran and exited non-zero is a failed start at once. One that failed before its process
    ran is Swarm's to retry (its restart delay is 1 s) and counts only from the third such failure of
    the same service: either no container at all (seen once in five runs as "error while removing
    network: unknown network") or a container the engine could not start (Engine 20.10, once in a CI
    run: "starting container failed: unable to remount dir as readonly: mount tmpfs
    .../mounts/secrets: device or resource busy", exit code 128, the engine's and not the process's)."""
    found: dict[str, str] = {}
    setup_failures: dict[str, int] = {}
    for task in sorted(tasks, key=lambda t: t.at or 0.0):
        if task.service not in names or task.state not in swarm.FAILED_STATES or (task.at or 0) < since:
            continue
        if not task.exit_code or task.error.startswith(ENGINE_START_ERROR):
            setup_failures[task.service] = setup_failures.get(task.service, 0) + 1
            if setup_failures[task.service] <= SETUP_RETRIES:
                continue
        code = f", exit code {task.exit_code}" if task.exit_code else ""
        found[task.service] = f"{task.error or task.state}{code}"
    return found


def routed(state: ServiceState | None) -> bool:
    """Whether Swarm routes to this service's task: running, and healthy when it has a healthcheck
    (a task on another node is "running" only once it passed, :func:`parse.remote_state`)."""
    return state is not None and state.status == "running" and state.health in (None, "healthy")

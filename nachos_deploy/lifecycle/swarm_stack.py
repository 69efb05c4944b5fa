"""``up``, ``status`` and ``down`` of a stack on Docker Swarm (``target: swarm``), bus first as with Compose.

Swarm ignores ``depends_on``, so the order is nachos-deploy's: ``docker-stack.bus.yml`` (the bus's
nodes, its port forwarder and the one-shot volume-init) is deployed first and proven from the host
by the same gate as Compose's (HTTP monitoring every 50 ms, JetStream, max_payload, a NATS round
trip; for a cluster, routes and one meta leader); the audit stream is provisioned; only then is the
whole ``docker-stack.yml`` deployed. Components are judged by :func:`nachos_deploy.lifecycle.observe.observe`,
the rule ``up`` and ``status`` share on Compose, over the containers this node runs, and by their
tasks: Swarm replaces a task that exits instead of restarting its container, so a task that failed
since the deploy is a failed start (exit 6), named with its error and its log lines.

``down`` removes the components and their sidecars first and the bus last. Swarm's own ``stack rm``
stops the bus first, and its clients then spend their grace period redialing it (11 to 16 s
measured, against the few seconds it takes in this order).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

from nachos_deploy.bus import gate
from nachos_deploy.bus.monitor import BusEndpoints
from nachos_deploy.core import bus_placement
from nachos_deploy.core.errors import BusFailure, ComponentFailure, DeployError, EnvironmentProblem, ExitCode
from nachos_deploy.core.plan import BUS, PORTS, VOLUME_INIT, ServicePlan, is_bus_node
from nachos_deploy.core.render import HEADER
from nachos_deploy.core.results import BusReport, DownResult, Endpoints, ServiceReport, StatusResult, UpResult
from nachos_deploy.docker import engine, swarm
from nachos_deploy.io import credentials, files
from nachos_deploy.io.stack import DOTENV, Stack
from nachos_deploy.lifecycle import up as lifecycle
from nachos_deploy.lifecycle.observe import Observation, Since, check_waiting, observe
from nachos_deploy.targets import project

Progress = Callable[[str], None]
POLL = lifecycle.POLL
LOG_LINES = lifecycle.LOG_LINES
GONE_TIMEOUT = 60.0  # seconds `down` waits for Swarm to remove the containers of removed services


def _bus_only(stack: Stack, only: Sequence[str]) -> bool:
    """``--only`` on Swarm: the bus alone, or nothing left out (a stack file is deployed whole)."""
    stack.plan.selected(only)  # refuses names the configuration does not run
    if not only:
        return False
    if all(is_bus_node(name) or name == PORTS for name in only):
        return True
    raise DeployError(
        f"--only {' '.join(only)}: with target: swarm, --only takes the bus alone (`--only bus`), since "
        "Swarm deploys a stack file whole. Leave --only out to deploy every component.",
        exit_code=ExitCode.USAGE,
    )


def deploy(stack: Stack, *, timeout: float, only: Sequence[str], progress: Progress) -> UpResult:
    """Deploy the bus, prove it, then deploy the whole stack and verify it, within ``timeout``; the
    caller (:func:`nachos_deploy.lifecycle.up.up`) holds the project's lock."""
    started = time.monotonic()
    deadline = started + timeout
    phases: dict[str, float] = {}
    bus_only = _bus_only(stack, only)
    components = [] if bus_only else list(stack.plan.components)
    stack.require_secrets([c.name for c in components])

    progress("Checking the Docker engine and the swarm")
    engine.require_engine()
    swarm.require_manager()
    images = [s.image for s in (stack.plan.bus.service, *components)]
    missing = engine.missing_images(images)
    if missing:
        raise EnvironmentProblem(
            f"These images are not on this Docker engine: {', '.join(missing)}. Swarm runs a task with "
            "the image of the node it lands on and nachos-deploy never asks a registry: load them on "
            "every node (`docker load`, or `bash scripts/build-images.sh` for the offline stand-ins)."
        )
    changed = files.write_all(stack.output_dir, stack.files, stack.stale, marker=HEADER)
    files.write_selection(stack.output_dir, only)
    if stack.plan.auth or stack.plan.bus.clustered:
        credentials.ensure(stack.output_dir, stack.plan)  # kept from the last up, made on the first
    phases["prepare"] = time.monotonic() - started

    mark = time.monotonic()
    warnings, moved = _place_bus(stack, progress)
    dotenv = stack.output_dir / DOTENV
    progress(f"Deploying the bus ({stack.bus_stack_file.name})")
    since = time.time()
    swarm.deploy(stack.project, stack.bus_stack_file, dotenv=dotenv, prune=False, failure=ExitCode.BUS)
    progress("Waiting for the bus: JetStream, max_payload and a NATS round trip")
    endpoints, report = _gate_bus(stack, deadline, since, moved)
    if stack.plan.bus.clustered:
        progress("Waiting for the cluster: every node healthy and routed, one JetStream meta leader")
        lifecycle.gate_cluster(
            lambda name, lines: swarm.logs_tail(stack.project, name, lines), stack, endpoints, deadline
        )
    audit = lifecycle.provision_audit(stack, endpoints, progress)
    phases["bus"] = time.monotonic() - mark

    mark = time.monotonic()
    services = [*stack.plan.bus.nodes, stack.plan.bus.ports]
    healed: frozenset[str] = frozenset()
    if not bus_only:
        sidecars = [s for s in stack.plan.with_sidecars(components) if s.leaf_name]
        if sidecars:  # as on Compose: each sidecar logged in at the hub before its component starts
            progress(f"Deploying the bus sidecars ({stack.sidecars_stack_file.name})")
            since = time.time()
            swarm.deploy(
                stack.project,
                stack.sidecars_stack_file,
                dotenv=dotenv,
                prune=False,
                failure=ExitCode.COMPONENT,
            )
            _wait_until_ok(stack, [*services, *sidecars], endpoints, deadline, since, progress, settle=False)
        if stack.plan.prepared_volumes:
            _wait_for_volume_init(stack, deadline, since, progress)
        stuck = _stuck(stack, components, endpoints)
        progress(f"Deploying the components ({stack.stack_file.name})")
        since = time.time()
        swarm.deploy(stack.project, stack.stack_file, dotenv=dotenv, prune=True, failure=ExitCode.COMPONENT)
        if stuck:  # left off the bus by an outage: a new task each, now that the bus is proven
            progress(f"Restarting {', '.join(stuck)}: not on the bus")
            swarm.restart(stack.project, stuck)
            healed = frozenset(stuck)
        services = list(stack.plan.services)
    reports = _wait_until_ok(stack, services, endpoints, deadline, since, progress, healed)
    phases["components"] = time.monotonic() - mark
    phases["total"] = time.monotonic() - started
    return UpResult(stack.project, endpoints, reports, phases, report, changed, audit, warnings=warnings)


def _place_bus(stack: Stack, progress: Progress) -> tuple[list[str], dict[str, str]]:
    """Put the clustered bus's node labels on the swarm's machines (see :mod:`bus_placement`):
    one bus node per ready machine when there are enough; the warnings say when there are not.
    Also returns the bus nodes given a new machine (bus node -> machine id), for the gate to wait
    for: Swarm moves a running task whose constraint no longer holds a moment later, by itself."""
    nodes = [node.name for node in stack.plan.bus.nodes]
    if len(nodes) < 2:
        return [], {}
    machines = swarm.machines()
    placed = bus_placement.assign(stack.project, nodes, machines)
    if not placed.where:
        raise EnvironmentProblem(
            "No node of the swarm is ready to run the bus (`docker node ls`: each is down or drained). "
            "Bring one back, or set its availability to active with `docker node update --availability "
            "active NODE`."
        )
    if placed.changed:
        names = {m.id: m.hostname for m in machines}
        progress("Placing the bus's nodes: " + ", ".join(f"{n} on {names[placed.where[n]]}" for n in nodes))
        swarm.relabel(placed.add, placed.remove)
    added = {name for labels in placed.add.values() for name in labels}
    moved = {n: placed.where[n] for n in nodes if bus_placement.label(stack.project, n) in added}
    return [
        f"the bus nodes {', '.join(shared)} share the machine {host}: the swarm has "
        f"{sum(m.ready for m in machines)} ready machine(s) for {len(nodes)} bus nodes, and losing {host} "
        "loses the cluster's quorum. Join more machines (`docker swarm join`), then `up` spreads them."
        for host, shared in placed.shared.items()
    ], moved


def _gate_bus(
    stack: Stack, deadline: float, since: float, moved: Mapping[str, str]
) -> tuple[Endpoints, BusReport]:
    """Wait for Swarm to run the bus file's services as deployed now (an update replaces a task, and
    the old one must not pass the gate in its place) and the ``moved`` bus nodes on their new
    machine alone, then poll the bus from the host; a task of theirs that fails ends the wait at once."""
    watched = {node.name for node in stack.plan.bus.nodes} | {PORTS}

    def task_problem() -> str | None:
        failed = _failed_tasks(stack.project, sorted(watched), since)
        return next((f"a task of {name} failed: {why}" for name, why in failed.items()), None)

    problem: str | None = "no answer"
    while time.monotonic() < deadline:
        problem = task_problem()
        if problem:
            break
        updating = swarm.updating(stack.project, sorted(watched))
        moving = [] if updating else _moving(stack.project, moved)
        endpoints = None if updating or moving else project.bus_endpoints(None, stack)
        if endpoints is None:
            problem = (
                f"{', '.join(updating)} still updating"
                if updating
                else f"{', '.join(moving)} not yet running on the machine its label names"
                if moving
                else "the bus has no published ports yet"
            )
            time.sleep(POLL * 2)
            continue
        report = gate.wait_for_bus(
            BusEndpoints(endpoints.nats_url, endpoints.monitor_url),
            expected_max_payload=stack.plan.bus.max_payload,
            deadline=deadline,
            interval=POLL,
            abort=task_problem,
            abort_interval=0.5,  # a look at the tasks is four engine calls
        )
        if report.healthy:
            return endpoints, report
        problem = report.problem
        break
    raise BusFailure(
        f"The bus did not become healthy: {problem}. No component was deployed. Its last log lines are "
        f"below; fix the cause (the rendered files are in {stack.output_dir}), then run `nachos-deploy up` "
        f"again, or remove the stack with `nachos-deploy down -p {stack.project}`.",
        details=lifecycle.indent(swarm.logs_tail(stack.project, BUS, LOG_LINES)),
    )


def _moving(project_name: str, moved: Mapping[str, str]) -> list[str]:
    """Those of the ``moved`` bus nodes not yet running on their machine alone: the task on the old
    machine is still being stopped, or the new one is not running yet."""
    if not moved:
        return []
    alive: dict[str, set[str]] = {name: set() for name in moved}
    running: dict[str, set[str]] = {name: set() for name in moved}
    for task in swarm.tasks(project_name):
        if task.service in moved and task.state not in swarm.ENDED_STATES:
            alive[task.service].add(task.node)
            if task.state == "running":
                running[task.service].add(task.node)
    return sorted(n for n, machine in moved.items() if alive[n] != {machine} or running[n] != {machine})


def _wait_for_volume_init(stack: Stack, deadline: float, since: float, progress: Progress) -> None:
    progress("Preparing volumes for their components' users")
    while True:
        mine = [t for t in swarm.tasks(stack.project) if t.service == VOLUME_INIT]
        if any(t.state == "complete" for t in mine):
            return
        failed = [t for t in mine if t.state in swarm.FAILED_STATES and (t.at or 0) >= since]
        if failed or time.monotonic() >= deadline:
            why = f"failed ({failed[0].error})" if failed else "did not finish before the timeout"
            raise ComponentFailure(
                f"{VOLUME_INIT} (which makes the components' volumes writable by their users) {why}; no "
                f"component was deployed. Its log lines are below; remove the stack with "
                f"`nachos-deploy down -p {stack.project}`.",
                details=lifecycle.indent(swarm.logs_tail(stack.project, VOLUME_INIT, LOG_LINES)),
            )
        time.sleep(POLL * 2)


def _stuck(stack: Stack, components: Sequence[ServicePlan], endpoints: Endpoints) -> list[str]:
    """Components running but not on the bus: the platform's channels never reconnect after their
    ten tries, so an outage leaves them so for ever."""
    if not components:
        return []
    seen = _look(stack, components, endpoints, None)
    return [r.name for r in seen.reports if r.status == "running" and r.connected is False]


def _wait_until_ok(
    stack: Stack,
    services: Sequence[ServicePlan],
    endpoints: Endpoints,
    deadline: float,
    since: float,
    progress: Progress,
    healed: frozenset[str] = frozenset(),
    settle: bool = True,
) -> list[ServiceReport]:
    """Until every service is ok by the one rule and runs all its replicas; a task failed since the
    deploy is final. With ``settle``, a service proven by its own check ahead of the engine must
    stay up a moment (the last wait holds the sidecars to it too)."""
    proven: dict[str, float] = {}
    while True:
        seen = _look(stack, services, endpoints, since, healed)
        for name in seen.early:
            proven.setdefault(name, time.monotonic())
        failures = _failed_tasks(stack.project, [s.name for s in services], since)
        if BUS in failures or seen.report(BUS).final:
            why = failures.get(BUS) or seen.report(BUS).problem
            raise BusFailure(
                f"The bus failed while the components were starting ({why}); "
                f"they cannot come up without it. Its last log lines are below; run `nachos-deploy up -p "
                f"{stack.project}` again once the cause is fixed, or remove the stack with "
                f"`nachos-deploy down -p {stack.project}`.",
                details=lifecycle.indent(swarm.logs_tail(stack.project, BUS, LOG_LINES)),
            )
        replicas = swarm.services(stack.project)
        short = {
            name: f"runs {running} of {desired} replicas"
            for name, (running, desired) in replicas.items()
            if name in {s.name for s in services} and running < desired
        }
        failed = {r.name: r.problem or "failed" for r in seen.reports if r.final}
        failed.update({name: f"has a failed task ({error})" for name, error in failures.items()})
        pending = {r.name: r.problem or f"is {r.status}" for r in seen.reports if not r.ok}
        pending.update({name: why for name, why in short.items() if name not in pending})
        settling = [
            name for name in seen.early if settle and time.monotonic() - proven[name] < lifecycle.EARLY_SETTLE
        ]
        if not failed and not pending:
            if not settling:
                return seen.reports
        elif failed or time.monotonic() >= deadline:
            raise _component_failure(stack, failed or pending)
        else:
            progress(f"Waiting for {', '.join(pending)}")
        time.sleep(POLL * 2)


def _look(
    stack: Stack,
    services: Sequence[ServicePlan],
    endpoints: Endpoints,
    since: float | None,
    healed: frozenset[str] = frozenset(),
) -> Observation:
    """One look at the containers this node runs and at the bus, judged by observe's rule. Swarm
    never restarts a container (it starts a new task), so no restart counts are kept."""
    states = swarm.with_relay(stack.project, swarm.states(stack.project))
    moment = Since(since, {}) if since is not None else None
    seen = observe(
        None,  # the states are read already; no Compose project to ask
        services,
        endpoints.monitor_url,
        since=moment,
        healed=healed,
        states=states,
        others=endpoints.others,
    )
    return check_waiting(None, services, seen, moment, healed)


def _failed_tasks(project_name: str, names: Sequence[str], since: float) -> dict[str, str]:
    """Service → the error of its last task that failed at or after ``since``."""
    found: dict[str, str] = {}
    for task in sorted(swarm.tasks(project_name), key=lambda t: t.at or 0.0):
        if task.service in names and task.state in swarm.FAILED_STATES and (task.at or 0) >= since:
            code = f", exit code {task.exit_code}" if task.exit_code else ""
            found[task.service] = f"{task.error or task.state}{code}"
    return found


def _component_failure(stack: Stack, reasons: dict[str, str]) -> ComponentFailure:
    first = next(iter(reasons))
    lines = [
        f"--- {name}: {why}\n{lifecycle.indent(swarm.logs_tail(stack.project, name, LOG_LINES))}"
        for name, why in reasons.items()
    ]
    return ComponentFailure(
        f"{', '.join(reasons)} did not come up: "
        + "; ".join(f"{name} {why}" for name, why in reasons.items())
        + f". The stack is left as it is for inspection (`nachos-deploy status -p {stack.project}`, "
        f"`nachos-deploy logs {first} -p {stack.project}`); remove it with "
        f"`nachos-deploy down -p {stack.project}`.",
        details="\n".join(lines),
    )


def status(stack: Stack, only: Sequence[str] | None = None) -> StatusResult:
    """As on Compose (see :mod:`nachos_deploy.lifecycle.status`), plus each service's replicas."""
    from nachos_deploy.lifecycle.status import judged

    names = {service.name for service in stack.plan.services}
    if only is None:
        only = [name for name in files.read_selection(stack.output_dir) if name in names]
    states = swarm.with_relay(stack.project, swarm.states(stack.project))
    result = judged(stack, None, states, project.bus_endpoints(None, stack, states), only)
    selected = {s.name for s in stack.plan.selected(only)}
    for name, (running, desired) in sorted(swarm.services(stack.project).items()):
        if name in selected and running < desired:
            result.problems.append(f"{name} runs {running} of {desired} replicas")
    return result


def remove(stack: Stack, *, volumes: bool) -> DownResult:
    """Components and sidecars first, the bus last, then the stack's networks and configs; volumes
    only when asked (Swarm itself never removes them). The caller (:func:`nachos_deploy.lifecycle.down.down`)
    holds the project's lock."""
    existing = swarm.volumes(stack.project)
    plan = stack.plan
    sidecars = {s.service.name for s in plan.sidecars}
    bus = {node.name for node in plan.bus.nodes}
    present = list(swarm.services(stack.project))
    waves = [
        [name for name in present if name not in sidecars | bus | {PORTS, VOLUME_INIT}],
        [name for name in present if name in sidecars],
        [name for name in present if name in (PORTS, VOLUME_INIT)],
        [name for name in present if name in bus],
    ]
    for wave in waves:  # each one gone (from every node) before the next one is touched
        elsewhere = swarm.remote_tasks(stack.project, wave)
        swarm.remove_services(stack.project, wave)
        swarm.stop_containers(stack.project, wave)
        swarm.wait_tasks_ended(elsewhere, GONE_TIMEOUT / 2)
    swarm.remove_relay(stack.project)
    swarm.remove_stack(stack.project)  # what is left: networks, configs, services of old configs
    _wait_gone(stack.project, None)
    if stack.output_dir.is_dir():
        files.write_selection(stack.output_dir, ())
    if not volumes:
        return DownResult(stack.project, volumes_removed=[], volumes_kept=existing)
    if existing:
        engine.remove_volumes(existing)
    labels = bus_placement.released(stack.project, swarm.machines())
    if labels:  # the bus's nodes were pinned where their volumes were; those are gone now
        swarm.relabel({}, labels)
    return DownResult(stack.project, volumes_removed=existing, volumes_kept=[])


def _wait_gone(project_name: str, names: Sequence[str] | None) -> None:
    """Until Swarm has removed the containers of ``names`` (all of the stack's: None) and, for the
    whole stack, its networks: volumes in use cannot be removed, nor can a stack be deployed
    again while its old networks are still being taken down."""
    end = time.monotonic() + GONE_TIMEOUT
    while time.monotonic() < end:
        left = [name for name, _ in swarm.containers(project_name) if names is None or name in names]
        if not left and (names is not None or not swarm.networks(project_name)):
            return
        time.sleep(POLL * 2)
    raise DeployError(
        f"Swarm did not remove the containers of project {project_name} within {GONE_TIMEOUT:.0f} s; "
        "see `docker stack ps` and run `nachos-deploy down` again."
    )

"""Bringing a stack up bus-first, proving it healthy and healing what an outage left behind: one
algorithm for every target (:class:`~nachos_deploy.targets.base.Target`: Compose, Swarm, a test's fake).

``up`` starts the bus set alone and gates on it from the host (HTTP monitoring plus a real NATS
round trip), polling every few tens of milliseconds instead of waiting for the engine's healthcheck
interval; a clustered bus must also form (routes, one JetStream meta leader) and the audit stream is
provisioned. Only a proven bus lets the sidecars start, and only proven sidecars the components.
Components an earlier outage left behind (running but off the bus: the platform's channels stay
disconnected for ever after their ten reconnects; or waiting out a restart back-off, as llm-proxy
does) are restarted, and from then on every service is judged by
:func:`nachos_deploy.lifecycle.observe.observe`, the same rule ``status`` uses. A bus that fails
is exit 5 with nothing of the components left behind; a component that fails, exit 6, named with
its exit code and log lines.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

from nachos_deploy.bus import gate, monitor
from nachos_deploy.bus.monitor import BusEndpoints, BusUnavailable, MonitorProblem
from nachos_deploy.core.errors import BusFailure, ComponentFailure, DeployError
from nachos_deploy.core.plan import BUS, VOLUME_INIT, ServicePlan
from nachos_deploy.core.render import HEADER
from nachos_deploy.core.results import BusReport, Endpoints, ServiceReport, StreamReport, UpResult
from nachos_deploy.docker.engine import ServiceState
from nachos_deploy.io import credentials, files, locks
from nachos_deploy.io.stack import Stack
from nachos_deploy.lifecycle.observe import Observation, Since, check_waiting, observe, start_checks
from nachos_deploy.targets import Target, for_stack

Progress = Callable[[str], None]
POLL = 0.05
EARLY_SETTLE = 1.0  # seconds a service proven by its own check (ahead of the engine) must stay up
LOG_LINES = 20
PEER_SETTLE = 20.0  # seconds a JetStream cluster may take to place a replicated stream


def up(
    stack: Stack,
    *,
    timeout: float = 60.0,
    only: Sequence[str] = (),
    progress: Progress = lambda _: None,
    notice: Progress | None = None,
    warm_up: Sequence[str] = (),
) -> UpResult:
    """Check, render, start the bus, gate on it, start and verify the components, within ``timeout``
    (counted once no other `up` or `down` of the project holds its lock; ``notice`` hears of the wait;
    ``warm_up`` names modules the caller needs afterwards, imported while the engine starts the bus)."""
    with locks.project_lock(stack.project, notice or progress), for_stack(stack) as target:
        return up_on(target, timeout=timeout, only=only, progress=progress, warm_up=warm_up)


def up_on(
    target: Target,
    *,
    timeout: float = 60.0,
    only: Sequence[str] = (),
    progress: Progress = lambda _: None,
    warm_up: Sequence[str] = (),
) -> UpResult:
    """:func:`up` on a given target, its caller holding the project's lock."""
    stack = target.stack
    started = time.monotonic()
    deadline = started + timeout
    phases: dict[str, float] = {}
    stack.plan.selected(only)  # refuses names the configuration does not run
    components = target.components(only)
    stack.require_secrets([c.name for c in components])

    progress("Checking the Docker engine")
    target.check(components)  # nothing is written before this passes
    changed = files.write_all(stack.output_dir, stack.files, stack.stale, marker=HEADER)
    files.write_selection(stack.output_dir, only)
    if stack.plan.auth or stack.plan.bus.clustered:
        credentials.ensure(stack.output_dir, stack.plan)  # kept from the last up, made on the first
    phases["prepare"] = time.monotonic() - started
    left = target.unchanged(changed, only)
    if left is not None:
        proven = _prove_unchanged(target, left, components, phases, progress)
        if proven is not None:
            phases["total"] = time.monotonic() - started
            return proven

    mark = time.monotonic()
    progress("Starting the bus")
    gate.warm_up(warm_up)
    bus_started = time.time()
    warnings = target.start_bus(components, progress)
    try:
        progress("Waiting for the bus: JetStream, max_payload and a NATS round trip")
        endpoints, report = _gate_bus(target, deadline)
        if stack.plan.bus.peers:
            # A cluster's nodes start together, as peers: a lone clustered node answers 503 until
            # it has a quorum, so gating them one after the other would never end.
            progress("Waiting for the cluster: every node healthy and routed, one JetStream meta leader")
            gate_cluster(target.logs_tail, stack, endpoints, deadline)
        audit = provision_audit(stack, endpoints, progress)
    except DeployError:
        target.abandon()
        raise
    phases["bus"] = time.monotonic() - mark

    mark = time.monotonic()
    seen = _start_components(target, components, endpoints, deadline, bus_started, progress)
    phases["components"] = time.monotonic() - mark
    init = [VOLUME_INIT] if any(c.waits_for_volumes for c in components) else []
    bus_set = [s.name for s in _bus_set(stack)]
    target.remember(seen.states, list(dict.fromkeys([*bus_set, *init, *(r.name for r in seen.reports)])))
    phases["total"] = time.monotonic() - started
    return UpResult(stack.project, endpoints, seen.reports, phases, report, changed, audit, warnings=warnings)


def _bus_set(stack: Stack) -> list[ServicePlan]:
    """The bus's nodes and its port forwarder: judged in every wait, as by ``status``."""
    return [*stack.plan.bus.nodes, stack.plan.bus.ports]


def _prove_unchanged(
    target: Target,
    states: Mapping[str, ServiceState],
    components: Sequence[ServicePlan],
    phases: dict[str, float],
    progress: Progress,
) -> UpResult | None:
    """The shortcut for a stack the last full `up` left as it is now (``states``, as the target
    vouched for them): nothing started, but the same proof, the bus gated from the host
    (monitoring and a NATS round trip) and every service judged by the rule `status` uses. None
    whenever anything is not ok at once: the full path then does what it always does (heal,
    restart, wait)."""
    stack = target.stack
    mark = time.monotonic()
    progress("Nothing changed since the last up: proving the running stack")
    endpoints = target.endpoints(states)
    if endpoints is None:
        return None
    report = gate.check_bus(
        BusEndpoints(endpoints.nats_url, endpoints.monitor_url),
        expected_max_payload=stack.plan.bus.max_payload,
    )
    if not report.healthy:
        return None
    if endpoints.nodes:
        from nachos_deploy.bus import natsclient

        if monitor.check_cluster([(name, url) for name, _, url in endpoints.nodes]):
            return None
        try:
            natsclient.cross_round_trip(endpoints.nodes[1][1], endpoints.nodes[0][1], timeout=2.0)
        except MonitorProblem:
            return None
    audit = provision_audit(stack, endpoints, progress)
    phases["bus"] = time.monotonic() - mark
    mark = time.monotonic()
    sidecars = [s for s in stack.plan.with_sidecars(components) if s.leaf_name]
    services = [*_bus_set(stack), *sidecars, *components]
    seen = observe(target, services, endpoints.monitor_url, states=states, others=endpoints.others)
    # The last up may have proven a service by its own check ahead of the engine, whose first
    # healthcheck can still be due (a moment later, or under load): the same check again, as status.
    seen = check_waiting(target, services, seen)
    if not all(r.ok for r in seen.reports):
        return None
    phases["components"] = time.monotonic() - mark
    return UpResult(stack.project, endpoints, seen.reports, phases, report, [], audit, unchanged=True)


def provision_audit(stack: Stack, endpoints: Endpoints, progress: Progress) -> StreamReport | None:
    """The audit stream, created or updated in place before any component can publish to it."""
    from nachos_deploy.bus import natsclient

    audit = stack.plan.bus.audit
    if audit is None:
        return None
    progress(f"Provisioning the audit stream {audit.stream}")
    # A cluster that has just formed, or whose node has just come back, can refuse or leave
    # unanswered the stream's placement for a few seconds (StreamNotReady): asked again, briefly.
    until = time.monotonic() + PEER_SETTLE
    told = False
    while True:
        try:
            return natsclient.ensure_stream(endpoints.nats_url, audit)
        except BusUnavailable as exc:
            if not isinstance(exc, natsclient.StreamNotReady) or time.monotonic() >= until:
                raise BusFailure(
                    f"The bus is up but the audit stream could not be provisioned: {exc}. No component "
                    f"was started; check the bus's logs (`nachos-deploy logs bus -p {stack.project}`)."
                ) from None
            if not told:
                progress(f"JetStream cannot place the stream yet ({exc}); asking again")
                told = True
        time.sleep(POLL * 4)


def _gate_bus(target: Target, deadline: float) -> tuple[Endpoints, BusReport]:
    """Poll the bus from the host until it is proven healthy; fail at once when the target sees the
    bus set fail (a container that exits or restarts, a task that fails)."""
    stack = target.stack
    problem: str | None = "no answer"
    while time.monotonic() < deadline:
        problem = target.bus_problem()
        if problem:
            break
        found = target.gate_endpoints()
        if isinstance(found, str):
            problem = found
            time.sleep(POLL)
            continue
        report = gate.wait_for_bus(
            BusEndpoints(found.nats_url, found.monitor_url),
            expected_max_payload=stack.plan.bus.max_payload,
            deadline=deadline,
            interval=POLL,
            abort=target.bus_problem,
            abort_interval=target.look_interval,
            aborted_just_now=True,
        )
        if report.healthy:
            return found, report
        problem = report.problem
        break
    raise BusFailure(
        f"The bus did not become healthy: {problem}. No component was {target.verb}. Its last log "
        f"lines are below; fix the cause (the rendered files are in {stack.output_dir}), then run "
        f"`nachos-deploy up` again, or remove the stack with `nachos-deploy down -p {stack.project}`.",
        details=indent(target.logs_tail(BUS, LOG_LINES)),
    )


def gate_cluster(
    logs: Callable[[str, int], str], stack: Stack, endpoints: Endpoints, deadline: float
) -> None:
    """Every node healthy, routed to every other, all following one JetStream meta leader, and a
    request answered across two nodes; else a bus failure naming what is missing."""
    from nachos_deploy.bus import natsclient

    names = [name for name, _, _ in endpoints.nodes]
    problems = ["no node answered yet"]
    while time.monotonic() < deadline:
        problems = monitor.check_cluster([(name, url) for name, _, url in endpoints.nodes])
        if not problems:
            try:
                left = max(0.5, deadline - time.monotonic())
                natsclient.cross_round_trip(endpoints.nodes[1][1], endpoints.nodes[0][1], timeout=left)
                return
            except MonitorProblem as exc:
                problems = [str(exc)]
        time.sleep(POLL * 2)
    raise BusFailure(
        f"The bus cluster did not form: {'; '.join(problems)}. No component was started. Look at the "
        f"nodes' logs (`nachos-deploy logs {' '.join(names)} -p {stack.project}`), then run "
        f"`nachos-deploy up` again or remove the stack with `nachos-deploy down -p {stack.project}`.",
        details="\n".join(f"--- {name}\n{indent(logs(name, 8))}" for name in names),
    )


def _since(states: Mapping[str, ServiceState]) -> Since:
    """ "During this up" from now: restarts after the containers' counts in ``states``."""
    return Since(time.time(), {s.container_id: s.restart_count for s in states.values()})


def _start_components(
    target: Target,
    components: Sequence[ServicePlan],
    endpoints: Endpoints,
    deadline: float,
    bus_started: float,
    progress: Progress,
) -> Observation:
    """Start the sidecars and wait until each is logged in at the hub, heal what an outage left,
    wait for volume-init, start the components, and wait until every service is ok."""
    stack = target.stack
    bus = _bus_set(stack)
    # Restart counts "before": as the gate's last look read them (a container made since has none).
    states = target.states(recent=True)
    since = _since(states)
    if not components:  # the bus alone (`up --only bus`): nothing to heal or start
        return _wait_until_ok(target, bus, endpoints, deadline, since, progress, states=states)
    sidecars = [s for s in stack.plan.with_sidecars(components) if s.leaf_name]
    looked: dict[str, ServiceState] | None = None
    if sidecars:  # the second link of the chain: each sidecar logged in at the hub
        progress(f"Starting the bus sidecars {', '.join(s.name for s in sidecars)}")
        target.start_sidecars(sidecars, states)
        # Proven is enough to let the components start: the settling time of a sidecar proven by
        # its own check runs on while they start, and the final wait below holds them all to it.
        seen = _wait_until_ok(target, [*bus, *sidecars], endpoints, deadline, since, progress, settle=False)
        looked = dict(seen.states)
    healed = _heal(target, components, endpoints, looked if looked is not None else states, progress)
    # The sidecars' last look is recent enough unless healing restarted something since.
    recent = looked if looked is not None and not healed else None
    if any(c.waits_for_volumes for c in components):
        _wait_for_volume_init(target, deadline, bus_started, progress, recent)
    states = dict(recent) if recent is not None else target.states()
    since = _since(states)
    progress(f"Starting {', '.join(c.name for c in components)}")
    target.start_components(components, states)
    services = [*bus, *sidecars, *components]
    return _wait_until_ok(target, services, endpoints, deadline, since, progress, healed)


def _heal(
    target: Target,
    components: Sequence[ServicePlan],
    endpoints: Endpoints,
    states: Mapping[str, ServiceState],
    progress: Progress,
) -> frozenset[str]:
    """Restart components an outage left behind: running but not on the bus (the platform's
    channels never reconnect after their ten tries), or waiting out a restart back-off (llm-proxy
    exits while the bus is away). Their new runs begin with the bus proven, so from here on a
    restart is real. Only a container that runs or restarts can be stuck: a first ``up``, whose
    components are not created or not started yet, has nothing to look at."""
    candidates = [
        c
        for c in components
        if (s := states.get(c.name)) is not None and s.status in ("running", "restarting")
    ]
    if not candidates:
        return frozenset()
    seen = observe(target, candidates, endpoints.monitor_url, others=endpoints.others)
    stuck = [
        report.name
        for report in seen.reports
        if report.status == "restarting" or (report.status == "running" and report.connected is False)
    ]
    if stuck:
        progress(f"Restarting {', '.join(stuck)}: not on the bus")
        target.restart(stuck)
    return frozenset(stuck)


def _wait_for_volume_init(
    target: Target,
    deadline: float,
    since: float,
    progress: Progress,
    states: Mapping[str, ServiceState] | None = None,
) -> None:
    """Until volume-init ended well (``states``: a first look read a moment ago)."""
    progress("Preparing volumes for their components' users")
    while True:
        shot = target.volume_init(since, states)
        states = None
        if shot.done and shot.failure is None:
            return
        if shot.failure is not None or time.monotonic() >= deadline:
            project = target.stack.project
            raise ComponentFailure(
                f"{VOLUME_INIT} (which makes the components' volumes writable by their users) "
                f"{shot.failure or 'did not finish before the timeout'}; no component was "
                f"{target.verb}. Its log lines are below; remove the stack with "
                f"`nachos-deploy down -p {project}`.",
                details=indent(target.logs_tail(VOLUME_INIT, LOG_LINES)),
            )
        time.sleep(POLL)


def _wait_until_ok(
    target: Target,
    services: Sequence[ServicePlan],
    endpoints: Endpoints,
    deadline: float,
    since: Since,
    progress: Progress,
    healed: frozenset[str] = frozenset(),
    states: Mapping[str, ServiceState] | None = None,
    settle: bool = True,
) -> Observation:
    """Until every one of ``services`` is ok by the one rule and runs all its replicas (``states``:
    the first look's containers, read a moment ago); a task failed since ``since`` is final. With
    ``settle``, each one proven by its own check ahead of the engine must then have stayed up for
    EARLY_SETTLE: a component that passes and crashes a moment later is a failed start."""
    names = [s.name for s in services]
    proven: dict[str, float] = {}  # service -> when its own check first passed ahead of the engine
    passed: dict[str, str] = {}  # service -> the container that passed it
    while True:
        states = states if states is not None else target.states()
        with ThreadPoolExecutor(max_workers=4) as pool:  # checks run while the bus is read
            started = start_checks(pool, target, services, states, passed)
            seen = observe(
                target,
                services,
                endpoints.monitor_url,
                since=since,
                healed=healed,
                others=endpoints.others,
                states=states,
            )
            seen = check_waiting(target, services, seen, since, healed, passed, started)
        states = None
        for name in seen.early:
            proven.setdefault(name, time.monotonic())
            passed.setdefault(name, seen.states[name].container_id)
        tasks = target.failed_tasks(names, since.at)
        if BUS in tasks or seen.report(BUS).final:
            raise _bus_lost(target, seen, since, tasks.get(BUS))
        failed = {r.name: _reason(target, r, seen, since) for r in seen.reports if r.final}
        failed.update({name: f"has a failed task ({why})" for name, why in tasks.items()})
        pending = {
            r.name: failed.get(r.name) or r.problem or f"is {r.status}" for r in seen.reports if not r.ok
        }
        short = target.shortfalls(names)
        pending.update({name: why for name, why in short.items() if name not in pending})
        settling = [n for n in seen.early if settle and time.monotonic() - proven[n] < EARLY_SETTLE]
        if not failed and not pending and not settling:
            return seen
        if not failed and not pending:
            # Only the settling is left: one look when it ends (a crash meanwhile shows as an exit
            # or a restart then) instead of a round of checks every POLL.
            ends = min(proven[n] + EARLY_SETTLE for n in settling)
            time.sleep(max(POLL, min(ends, deadline) - time.monotonic()))
            continue
        if failed or time.monotonic() >= deadline:
            raise _component_failure(target, failed or pending)
        progress(f"Waiting for {', '.join(pending)}")
        time.sleep(POLL * 2)


def _bus_lost(target: Target, seen: Observation, since: Since, task_failure: str | None) -> BusFailure:
    project = target.stack.project
    problem = seen.report(BUS).problem or "failed"
    state = seen.states.get(BUS)
    if task_failure is not None:
        problem = f"has a failed task ({task_failure})"
    elif state is not None:
        codes = target.exit_codes_since(state, since.at)
        if codes:
            problem = f"exited with code {codes[-1]}" + (
                " and was restarted" if state.status == "running" else ""
            )
    return BusFailure(
        f"The bus {problem} while the components were starting; they cannot come up without it. "
        f"Its last log lines are below; run `nachos-deploy up -p {project}` again once the cause "
        f"is fixed, or remove the stack with `nachos-deploy down -p {project}`.",
        details=indent(target.logs_tail(BUS, LOG_LINES)),
    )


def _component_failure(target: Target, reasons: Mapping[str, str]) -> ComponentFailure:
    project = target.stack.project
    first = next(iter(reasons))
    lines = [
        f"--- {name}: {why}\n{indent(target.logs_tail(name, LOG_LINES))}" for name, why in reasons.items()
    ]
    return ComponentFailure(
        f"{', '.join(reasons)} did not come up: "
        + "; ".join(f"{name} {why}" for name, why in reasons.items())
        + f". The stack is left as it is for inspection (`nachos-deploy status -p {project}`, "
        f"`nachos-deploy logs {first} -p {project}`); remove it with `nachos-deploy down -p {project}`.",
        details="\n".join(lines),
    )


def _reason(target: Target, report: ServiceReport, seen: Observation, since: Since) -> str:
    """The problem, with the exit code of the run that failed: once the restart policy has started
    the container again, its state reads exit code 0, so the engine's events tell it instead."""
    state = seen.states.get(report.name)
    problem = report.problem or f"is {report.status}"
    if state is None or not report.final or state.status in ("exited", "dead"):
        return problem
    codes = target.exit_codes_since(state, since.at)
    if codes and state.status in ("running", "restarting"):
        return f"{problem.split(' (last exit code')[0]} (exit code {codes[-1]})"
    return problem


def indent(text: str) -> str:
    return "\n".join(f"    {line}" for line in text.splitlines()) or "    (no log lines)"

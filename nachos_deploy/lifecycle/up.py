"""Bringing a stack up bus-first, proving it healthy, healing what an outage left behind, and down.

``up`` starts the bus alone and gates on it from the host (HTTP monitoring plus a real NATS round
trip), polling every few tens of milliseconds instead of waiting for Compose's healthcheck interval.
Only a proven bus lets components start. Components an earlier outage left off the bus (the
platform's channels stay disconnected for ever after their ten reconnects; llm-proxy sits in its
restart back-off) are restarted, and from then on every service is judged by
:func:`nachos_deploy.lifecycle.observe.observe`, the same rule ``status`` uses.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait

from nachos_deploy.bus import gate, monitor
from nachos_deploy.bus.monitor import BusEndpoints, BusUnavailable, MonitorProblem
from nachos_deploy.core.errors import BusFailure, ComponentFailure, DeployError, EnvironmentProblem, ExitCode
from nachos_deploy.core.plan import BUS, PORTS, VOLUME_INIT, ServicePlan
from nachos_deploy.core.render import HEADER
from nachos_deploy.core.results import BusReport, Endpoints, ServiceReport, StreamReport, UpResult
from nachos_deploy.docker import engine
from nachos_deploy.docker.engine import Compose
from nachos_deploy.io import credentials, fastpath, files, locks
from nachos_deploy.io.stack import Stack
from nachos_deploy.lifecycle.observe import Observation, Since, check_waiting, observe, start_checks
from nachos_deploy.targets import project

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
    ``warm_up`` names modules the caller needs afterwards, imported while Compose starts the bus)."""
    with locks.project_lock(stack.project, notice or progress):
        if stack.swarm:
            from nachos_deploy.lifecycle import swarm_stack as swarm_lifecycle

            return swarm_lifecycle.deploy(stack, timeout=timeout, only=only, progress=progress)
        return _up(stack, timeout=timeout, only=only, progress=progress, warm_up=warm_up)


def _up(
    stack: Stack, *, timeout: float, only: Sequence[str], progress: Progress, warm_up: Sequence[str]
) -> UpResult:
    started = time.monotonic()
    deadline = started + timeout
    phases: dict[str, float] = {}
    stack.plan.selected(only)  # refuses names the configuration does not run
    components = [c for c in stack.plan.components if not only or c.name in only]
    stack.require_secrets([c.name for c in components])

    progress("Checking the Docker engine")
    images = [s.image for s in (stack.plan.bus.service, *components) if s.build_context is None]
    # No record of a running stack (a first up, or one after `down`): the fast path cannot apply, so
    # the containers' states, which the full path reads first, are read alongside the checks.
    record = fastpath.load(stack.output_dir)
    cold = record is None
    with project.compose_client(stack) as client:
        resolved, image_ids, read_early = _check_engine(client, stack, images, with_states=cold)
    changed = files.write_all(stack.output_dir, stack.files, stack.stale, marker=HEADER)
    files.write_selection(stack.output_dir, only)
    kept = credentials.snapshot(stack.output_dir)
    if stack.plan.auth or stack.plan.bus.clustered:
        credentials.ensure(stack.output_dir, stack.plan)  # kept from the last up, made on the first
    # Made just now (a first up): Compose resolved the project without them, so that is asked again
    # once the stack is up, for the record the next up compares with.
    resolved_before_credentials = credentials.snapshot(stack.output_dir) != kept
    project_digest = fastpath.resolved_digest(resolved)
    digest = fastpath.key(project_digest, stack.files, only)
    phases["prepare"] = time.monotonic() - started
    if not cold and not changed and not resolved_before_credentials:
        proven = _prove_unchanged(stack, digest, resolved, image_ids, components, phases, progress)
        if proven is not None:
            phases["total"] = time.monotonic() - started
            return proven
    fastpath.forget(stack.output_dir)  # an up that stops half way leaves nothing to vouch for

    with project.compose_client(stack) as client:
        mark = time.monotonic()
        progress("Starting the bus")
        previous = read_early if read_early is not None else engine.states(client)
        init = [VOLUME_INIT] if any(c.waits_for_volumes for c in components) else []
        # A cluster's nodes start together, as peers: a lone clustered node answers 503 until it
        # has a quorum, so gating them one after the other would never end.
        peers = [peer.name for peer in stack.plan.bus.peers]
        gate.warm_up(warm_up)
        bus_start = [BUS, *peers, PORTS, *init]
        engine.up(client, bus_start, failure=ExitCode.BUS)
        # While the bus is proven, the containers of sidecars and components that have none yet
        # are created, not started (about a third of what starting them costs, off the critical
        # path); running ones are left as they are until the bus is proven.
        fresh = [
            s.name
            for s in stack.plan.with_sidecars(components)
            if s.name not in previous and s.build_context is None  # a build waits for `up`'s --build
        ]
        with ThreadPoolExecutor(max_workers=1) as pool:
            created = pool.submit(engine.create, client, fresh) if fresh else None
            try:
                progress("Waiting for the bus: JetStream, max_payload and a NATS round trip")
                endpoints, report, gated = _gate_bus(client, stack, deadline, previous)
                if peers:
                    progress(
                        "Waiting for the cluster: every node healthy and routed, one JetStream meta leader"
                    )
                    gate_cluster(
                        lambda name, lines: engine.logs_tail(client, name, lines), stack, endpoints, deadline
                    )
                audit = provision_audit(stack, endpoints, progress)
            except DeployError:
                if created is not None:  # a failed bus leaves no container of a component behind
                    wait([created])
                    engine.remove_created(client, fresh)
                raise
            if created is not None:
                created.result()
        phases["bus"] = time.monotonic() - mark

        mark = time.monotonic()
        seen = _start_components(client, stack, components, endpoints, deadline, progress, fresh, gated)
        phases["components"] = time.monotonic() - mark
        if resolved_before_credentials:
            project_digest = fastpath.resolved_digest(engine.check_compose_file(client, stack.compose_file))
            digest = fastpath.key(project_digest, stack.files, only)
    started_here = [BUS, *peers, PORTS, *init, *(r.name for r in seen.reports if r.name not in (BUS, PORTS))]
    fastpath.save(stack.output_dir, digest, seen.states, started_here)
    phases["total"] = time.monotonic() - started
    return UpResult(stack.project, endpoints, seen.reports, phases, report, changed, audit)


def _check_engine(
    client: Compose, stack: Stack, images: Sequence[str], *, with_states: bool = False
) -> tuple[dict[str, object], dict[str, str], dict[str, engine.ServiceState] | None]:
    """The project as Compose resolves it and the images' ids, in two
    docker calls at once (and, ``with_states``, the project's containers, alongside). Only when one
    fails are the engine, Compose and each image asked on their own, so that the error names the
    first thing missing: the engine, then Compose, then the images, then the files. Nothing is
    written before this passes."""
    with ThreadPoolExecutor(max_workers=3) as pool:
        listed = pool.submit(engine.image_ids, images)
        checked = pool.submit(engine.check_compose_file, client, stack.compose_file)
        states = pool.submit(engine.states, client) if with_states else None
        ids = listed.result()
        resolved: dict[str, object] = {}
        failed = False
        try:
            resolved = checked.result()
        except DeployError:
            failed = True
        try:
            read = states.result() if states is not None else None
        except DeployError:
            read = None  # read again, and reported in order, by the full path
    if ids is not None and not failed:
        return resolved, ids, read
    engine.require_engine()
    missing = engine.missing_images(images)
    if missing:
        raise EnvironmentProblem(
            f"These images are not on this Docker engine: {', '.join(missing)}. Pull them (`docker pull "
            "IMAGE`) or point images.prefix/images.tag or a component's image at images you have; on a "
            "machine with no registry, `bash scripts/build-images.sh` builds the nats:alpine stand-in and "
            "the probe image. `nachos-deploy doctor` lists what is missing."
        )
    return engine.check_compose_file(client, stack.compose_file), engine.image_ids(images) or {}, None


def _prove_unchanged(
    stack: Stack,
    digest: str,
    resolved: Mapping[str, object],
    image_ids: Mapping[str, str],
    components: Sequence[ServicePlan],
    phases: dict[str, float],
    progress: Progress,
) -> UpResult | None:
    """The shortcut for a stack the last full `up` left as it is now (see :mod:`fastpath`): no
    Compose run, but the same proof, the bus gated from the host (monitoring and a NATS round trip)
    and every service judged by the rule `status` uses. None whenever anything is not exactly as
    it was or not ok at once: the full path then does what it always did (heal, restart, wait)."""
    record = fastpath.load(stack.output_dir)
    if record is None or record.key != digest:
        return None
    states = engine.inspect_containers([container for container, _ in record.containers.values()])
    if states is None or not fastpath.as_left(record, states, resolved, image_ids):
        return None
    mark = time.monotonic()
    progress("Nothing changed since the last up: proving the running stack")
    endpoints = project.bus_endpoints(None, stack, states)
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
    services = [stack.plan.bus.service, stack.plan.bus.ports, *sidecars, *components]
    seen = observe(None, services, endpoints.monitor_url, states=states, others=endpoints.others)
    # The last up may have proven a service by its own check ahead of the engine, whose first
    # healthcheck can still be due (a moment later, or under load): the same check again, as status.
    seen = check_waiting(None, services, seen)
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


def _gate_bus(
    client: Compose, stack: Stack, deadline: float, previous: Mapping[str, engine.ServiceState]
) -> tuple[Endpoints, BusReport, dict[str, engine.ServiceState]]:
    """Poll the bus from the host until it is proven healthy; fail at once if its container fails.
    Also returns the containers' states as last read (the bus-only path judges by them).

    A restart counts only if it happened to the same container during this call: a bus that
    restarted once last week must not block a later `up`."""
    before = Since(0.0, {s.container_id: s.restart_count for s in previous.values()})

    last: dict[str, engine.ServiceState] = {}

    def container_problem() -> str | None:
        states = engine.states(client)
        last.clear()
        last.update(states)
        watched = [(node.name, f"the bus container {node.name}") for node in stack.plan.bus.nodes]
        for name, what in (*watched, (PORTS, f"the bus's port forwarder ({PORTS})")):
            state = states.get(name)
            if state is None:
                return f"{what} does not exist"
            if state.status in ("exited", "dead"):
                return f"{what} exited with code {state.exit_code}"
            if state.status == "restarting" or before.restarts_of(state) > 0:
                return f"{what} is restarting (exit code {state.exit_code})"
        return None

    endpoints: Endpoints | None = None
    problem: str | None = "no answer"
    while time.monotonic() < deadline:
        problem = container_problem()
        if problem:
            break
        endpoints = endpoints or project.bus_endpoints(client, stack, last)
        if endpoints is None:
            problem = "the bus has no published ports yet"
            time.sleep(POLL)
            continue
        report = gate.wait_for_bus(
            BusEndpoints(endpoints.nats_url, endpoints.monitor_url),
            expected_max_payload=stack.plan.bus.max_payload,
            deadline=deadline,
            interval=POLL,
            abort=container_problem,
            aborted_just_now=True,
        )
        if report.healthy:
            return endpoints, report, last
        problem = report.problem
        break
    raise BusFailure(
        f"The bus did not become healthy: {problem}. No component was started. Its last log lines are "
        f"below; fix the cause (the rendered config is in {stack.output_dir}), then run `nachos-deploy up` "
        f"again, or remove the stack with `nachos-deploy down -p {stack.project}`.",
        details=indent(engine.logs_tail(client, BUS, LOG_LINES)),
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


def _start_components(
    client: Compose,
    stack: Stack,
    components: Sequence[ServicePlan],
    endpoints: Endpoints,
    deadline: float,
    progress: Progress,
    fresh: Sequence[str] = (),
    gated: Mapping[str, engine.ServiceState] | None = None,
) -> Observation:
    """Heal what an outage left, start the components, and wait until every one is ok. Components
    ``fresh`` (created during this up, never started) cannot have been left behind by an outage.
    ``gated``: the containers as the bus's gate last read them (the restart counts "before", and
    the first look of a bus alone)."""
    bus_proven = time.time()
    if not components:  # the bus alone (`up --only bus`): nothing to heal or start
        states = dict(gated) if gated else engine.states(client)
        since = Since(bus_proven, {s.container_id: s.restart_count for s in states.values()})
        bus = [stack.plan.bus.service, stack.plan.bus.ports]
        return _wait_until_ok(client, stack, bus, endpoints, deadline, since, progress, states=states)
    # Restart counts "before": as the gate last read them (a container made since has none yet).
    states = dict(gated) if gated else engine.states(client)
    since = Since(bus_proven, {s.container_id: s.restart_count for s in states.values()})
    sidecars = [s for s in stack.plan.with_sidecars(components) if s.leaf_name]
    looked: Mapping[str, engine.ServiceState] | None = None
    if sidecars:  # the second link of the chain: each sidecar logged in at the hub
        progress(f"Starting the bus sidecars {', '.join(s.name for s in sidecars)}")
        _start(client, [s.name for s in sidecars], fresh)
        # Proven is enough to let the components start: the settling time of a sidecar proven by
        # its own check runs on while they start, and the final wait below holds them all to it.
        looked = _wait_until_ok(
            client,
            stack,
            [stack.plan.bus.service, stack.plan.bus.ports, *sidecars],
            endpoints,
            deadline,
            since,
            progress,
            settle=False,
        ).states
    old = [c for c in components if c.name not in fresh]
    healed = _heal(client, old, endpoints, progress) if old else frozenset()
    # The sidecars' last look is recent enough unless healing restarted something since.
    recent = looked if looked is not None and not healed else None
    if any(c.waits_for_volumes for c in components):
        _wait_for_volume_init(client, stack, deadline, progress, recent)
    states = dict(recent) if recent is not None else engine.states(client)
    since = Since(bus_proven, {s.container_id: s.restart_count for s in states.values()})
    if components:
        progress(f"Starting {', '.join(c.name for c in components)}")
        _start(client, [c.name for c in components], fresh, states)
    services = [stack.plan.bus.service, stack.plan.bus.ports, *sidecars, *components]
    return _wait_until_ok(client, stack, services, endpoints, deadline, since, progress, healed)


def _start(
    client: Compose,
    names: Sequence[str],
    fresh: Sequence[str],
    states: Mapping[str, engine.ServiceState] | None = None,
) -> None:
    """Start ``names``: those created during this up (``fresh``) by a ``docker start`` each, at
    once; the others through Compose, which recreates a container whose configuration changed.
    ``states``: read a moment ago, they name the created containers without asking again."""
    created = [name for name in names if name in fresh]
    others = [name for name in names if name not in fresh]
    with ThreadPoolExecutor(max_workers=2) as pool:
        started = pool.submit(engine.start_created, client, created, states) if created else None
        if others:
            engine.up(client, others, dependencies=False)
        if started is not None:
            started.result()


def _wait_until_ok(
    client: Compose,
    stack: Stack,
    services: Sequence[ServicePlan],
    endpoints: Endpoints,
    deadline: float,
    since: Since,
    progress: Progress,
    healed: frozenset[str] = frozenset(),
    states: Mapping[str, engine.ServiceState] | None = None,
    settle: bool = True,
) -> Observation:
    """Until every one of ``services`` is ok by the one rule (``states``: the first look's
    containers, read a moment ago), and, with ``settle``, each one proven by its own check ahead
    of the engine has stayed up for EARLY_SETTLE since."""
    proven: dict[str, float] = {}  # service -> when its own check first passed ahead of the engine
    passed: dict[str, str] = {}  # service -> the container that passed it
    while True:
        states = states if states is not None else engine.states(client)
        with ThreadPoolExecutor(max_workers=4) as pool:  # checks run while the bus is read
            started = start_checks(pool, client, services, states, passed)
            seen = observe(
                client,
                services,
                endpoints.monitor_url,
                since=since,
                healed=healed,
                others=endpoints.others,
                states=states,
            )
            seen = check_waiting(client, services, seen, since, healed, passed, started)
        states = None
        for name in seen.early:
            proven.setdefault(name, time.monotonic())
            passed.setdefault(name, seen.states[name].container_id)
        bus = seen.report(BUS)
        if bus.final:
            raise _bus_lost(client, stack, seen, since)
        failed = [r for r in seen.reports if r.final]
        pending = [r for r in seen.reports if not r.ok]
        # A service proven ahead of the engine's first check must then stay up for EARLY_SETTLE
        # (a component that passes and crashes a moment later is a failed start, not a healthy one).
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
            raise _component_failure(client, stack, seen, failed or pending, since)
        progress(f"Waiting for {', '.join(r.name for r in pending)}")
        time.sleep(POLL * 2)


def _heal(
    client: Compose, components: Sequence[ServicePlan], endpoints: Endpoints, progress: Progress
) -> frozenset[str]:
    """Restart components an outage left behind: running but not on the bus (the platform's channels
    never reconnect after their ten tries), or waiting out a restart back-off (llm-proxy exits while
    the bus is away). Their new runs begin with the bus proven, so from here on a restart is real."""
    seen = observe(client, components, endpoints.monitor_url, others=endpoints.others)
    stuck = [
        report.name
        for report in seen.reports
        if report.status == "restarting" or (report.status == "running" and report.connected is False)
    ]
    if stuck:
        progress(f"Restarting {', '.join(stuck)}: not on the bus")
        engine.restart(client, stuck)
    return frozenset(stuck)


def _wait_for_volume_init(
    client: Compose,
    stack: Stack,
    deadline: float,
    progress: Progress,
    states: Mapping[str, engine.ServiceState] | None = None,
) -> None:
    """Until volume-init exited 0 (``states``: a first look read a moment ago)."""
    progress("Preparing volumes for their components' users")
    while True:
        state = (states if states is not None else engine.states(client)).get(VOLUME_INIT)
        states = None
        if state is not None and state.status in ("exited", "dead"):
            if state.exit_code == 0:
                return
            raise ComponentFailure(
                f"{VOLUME_INIT} (which makes the components' volumes writable by their users) exited "
                f"with code {state.exit_code}; no component was started. Its log lines are below; "
                f"remove the stack with `nachos-deploy down -p {stack.project}`.",
                details=indent(engine.logs_tail(client, VOLUME_INIT, LOG_LINES)),
            )
        if time.monotonic() >= deadline:
            raise ComponentFailure(f"{VOLUME_INIT} did not finish before the timeout.")
        time.sleep(POLL)


def _bus_lost(client: Compose, stack: Stack, seen: Observation, since: Since) -> BusFailure:
    report = seen.report(BUS)
    state = seen.states.get(BUS)
    problem = report.problem or "failed"
    if state is not None:
        codes = engine.exit_codes_since(state.container_id, since.at)
        if codes:
            problem = f"exited with code {codes[-1]}" + (
                " and was restarted" if state.status == "running" else ""
            )
    return BusFailure(
        f"The bus {problem} while the components were starting; they cannot come up without it. "
        f"Its last log lines are below; run `nachos-deploy up -p {stack.project}` again once the cause "
        f"is fixed, or remove the stack with `nachos-deploy down -p {stack.project}`.",
        details=indent(engine.logs_tail(client, BUS, LOG_LINES)),
    )


def _component_failure(
    client: Compose,
    stack: Stack,
    seen: Observation,
    culprits: Sequence[ServiceReport],
    since: Since,
) -> ComponentFailure:
    reasons = {report.name: _reason(report, seen, since) for report in culprits}
    lines = [
        f"--- {name}: {why}\n{indent(engine.logs_tail(client, name, LOG_LINES))}"
        for name, why in reasons.items()
    ]
    first = culprits[0].name
    return ComponentFailure(
        f"{', '.join(reasons)} did not come up: "
        + "; ".join(f"{name} {why}" for name, why in reasons.items())
        + f". The stack is left as it is for inspection (`nachos-deploy status -p {stack.project}`, "
        f"`nachos-deploy logs {first} -p {stack.project}`); remove it with "
        f"`nachos-deploy down -p {stack.project}`.",
        details="\n".join(lines),
    )


def _reason(report: ServiceReport, seen: Observation, since: Since) -> str:
    """The problem, with the exit code of the run that failed: once the restart policy has started
    the container again, its state reads exit code 0, so the engine's events tell it instead."""
    state = seen.states.get(report.name)
    problem = report.problem or f"is {report.status}"
    if state is None or not report.final or state.status in ("exited", "dead"):
        return problem
    codes = engine.exit_codes_since(state.container_id, since.at)
    if codes and state.status in ("running", "restarting"):
        return f"{problem.split(' (last exit code')[0]} (exit code {codes[-1]})"
    return problem


def indent(text: str) -> str:
    return "\n".join(f"    {line}" for line in text.splitlines()) or "    (no log lines)"

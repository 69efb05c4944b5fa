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

import contextlib
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

from nachos_deploy.bus import gate, monitor
from nachos_deploy.bus.monitor import BusEndpoints, BusUnavailable, MonitorProblem
from nachos_deploy.core.errors import (
    BusFailure,
    ComponentFailure,
    DeployError,
    EnvironmentProblem,
    WebhookFailure,
)
from nachos_deploy.core.names import BUS, VOLUME_INIT
from nachos_deploy.core.plan_types import ServicePlan
from nachos_deploy.core.render import HEADER
from nachos_deploy.core.results import (
    BusReport,
    Endpoints,
    ServiceReport,
    StreamReport,
    UpResult,
    WebhookReport,
)
from nachos_deploy.docker.engine import ServiceState
from nachos_deploy.io import (
    bind_folders,
    credentials,
    deployed,
    files,
    host_ports,
    locks,
    platform_secrets,
    releases,
    state_credentials,
)
from nachos_deploy.io.stack import Stack
from nachos_deploy.lifecycle import upgrade
from nachos_deploy.lifecycle.ingress_root import root_missing, write_ingress_root
from nachos_deploy.lifecycle.observe import Observation, Since, check_waiting, observe, start_checks
from nachos_deploy.targets import Target, for_stack, subnet_check

Progress = Callable[[str], None]
POLL = 0.05
EARLY_SETTLE = 1.0  # seconds a service proven by its own check (ahead of the engine) must stay up
LOG_LINES = 20
PEER_SETTLE = 20.0  # seconds a JetStream cluster may take to place a replicated stream
# Seconds a sidecar that was running before this up may take to log in at the proven hub again by
# itself (measured: at most 1.4 s after an outage, its tries being 0.25-0.5 s apart then, now
# 0.05-0.1 s, plus a lookup of `bus` that fails within 1 s while the hub is away) before it is
# restarted.
LEAF_GRACE = 2.0
# Seconds a component that lost its sidecar (stopped, or restarted by this up) may take to be back on
# it by itself before it is restarted. The platform's clients try again every 2 s, so one try may land
# just before the sidecar listens and the next 2 s later; the read of /connz lags by up to a second
# under load. 2.5 s restarted a gateway that would have been back 0.2 s later (CI, stop-sidecar).
REJOIN_GRACE = 4.5
# Seconds the webhook proofs may take even when the components used up the timeout: a route whose
# channel has just become ok can answer 502 for a moment while the ingress opens its connection.
WEBHOOK_GRACE = 10.0


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
        return up_on(target, timeout=timeout, only=only, progress=progress, warm_up=warm_up, notice=notice)


def preflight(target: Target, untouched: str) -> None:
    """Every check `up` makes before it writes or starts anything, for a caller about to change
    something else first: `restore` fills the volumes before its `up`, and a secret, an image or a
    port `up` would refuse must stop it before that, not after. ``untouched`` ends the messages
    (what was left as it was). Nothing is settled or kept: `up` checks again."""
    stack = target.stack
    components = target.components(())
    stack.require_secrets([c.name for c in components])
    target.check(components)
    _check_inputs(target, untouched)
    bind_folders.require(target.stack)


def _check_inputs(target: Target, untouched: str) -> None:
    """The checks after the engine's (:meth:`Target.check`): the image lock, the ingress's own
    certificate and key, and the host ports the stack publishes."""
    stack = target.stack
    if stack.lock is not None:  # before the fast path and any upgrade: a rebuilt tag is refused
        from nachos_deploy.lifecycle import lock

        lock.verify(stack)
    if stack.plan.ingress is not None and stack.plan.ingress.tls == "files":
        from nachos_deploy.io import ingress_tls  # cryptography: loaded only then

        ingress_tls.describe(stack)  # the user's certificate and key, checked before anything starts
    taken = target.ports_taken()
    if taken:
        raise EnvironmentProblem(host_ports.refusal(taken, stack.project, untouched))


def up_on(
    target: Target,
    *,
    timeout: float = 60.0,
    only: Sequence[str] = (),
    progress: Progress = lambda _: None,
    warm_up: Sequence[str] = (),
    notice: Progress | None = None,
) -> UpResult:
    """:func:`up` on a given target, its caller holding the project's lock (``notice``: lines that
    must last, such as each bus node replaced one at a time; else ``progress`` hears them)."""
    claim = contextlib.ExitStack()  # this machine's lock on new networks, while it is needed
    try:
        return _up(target, claim, timeout, only, progress, warm_up, notice)
    finally:
        claim.close()


def _up(
    target: Target,
    claim: contextlib.ExitStack,
    timeout: float,
    only: Sequence[str],
    progress: Progress,
    warm_up: Sequence[str],
    notice: Progress | None,
) -> UpResult:
    stack = target.stack
    started = time.monotonic()
    deadline = started + timeout
    phases: dict[str, float] = {}
    stack.plan.selected(only)  # refuses names the configuration does not run
    components = target.components(only)
    stack.require_secrets([c.name for c in components])

    progress("Checking the Docker engine")
    # This machine's networks lock, held until the bus's networks exist (io/locks.py): not needed
    # when a network of the stack is in its block already (a running stack: its bus upgrade, say,
    # keeps no other project waiting), so a lock another holds is waited for only after the check
    # says it is needed, and the check is then made again under it.
    free = stack.plan.subnets is not None and claim.enter_context(
        locks.networks_lock(notice or progress, wait=False)
    )
    if target.check(components):  # nothing is written before this passes
        claim.close()
    elif stack.plan.subnets is not None and not free:
        claim.enter_context(locks.networks_lock(notice or progress))
        target.check(components)  # another up may have placed its networks meanwhile
    moved = subnet_check.moved(stack, target.stack)
    stack = target.stack  # settled on a free block of networks.pool (targets/subnet_check.py)
    if moved:
        (notice or progress)(moved)
    _check_inputs(target, "Nothing was written or started.")
    bind_folders.prepare(stack)  # one rule on every target: the deploy's missing folders are made
    before = upgrade.before_files(stack)  # what runs now, to put back if an upgrade fails
    changed = files.write_all(stack.output_dir, stack.files, stack.stale, marker=HEADER)
    # each component's env_file, with the gateway's state store URLs (made when missing)
    state = state_credentials.ensure(stack.output_dir, stack.plan)
    platform_secrets.write(stack.output_dir, stack.loaded.platform.secrets, state)
    files.write_selection(stack.output_dir, only)
    deployed.save(stack)  # how status, request, logs and down find this stack from anywhere
    if stack.plan.auth or stack.plan.bus.clustered:
        credentials.ensure(stack.output_dir, stack.plan)  # kept from the last up, made on the first
    if stack.plan.bus.tls is not None:  # the client port's certificate (cryptography: loaded only then)
        from nachos_deploy.io import bus_tls
        from nachos_deploy.lifecycle.bus_tls_reload import reload_if_renewed

        bus_tls.ensure(stack.output_dir, stack.plan)
        reload_if_renewed(target, progress)  # a running bus serves a certificate made again at once
    phases["prepare"] = time.monotonic() - started
    left = target.unchanged(changed, only)
    if left is not None:
        proven = _prove_unchanged(target, left, components, phases, progress)
        if proven is not None:
            proven.webhooks = prove_webhooks(target, components, deadline, progress)
            phases["total"] = time.monotonic() - started
            return proven

    mark = time.monotonic()
    # Running components this up would recreate are held, and replaced one at a time once the rest
    # is up (lifecycle/upgrade.py); read before anything starts.
    target.clear_for_cold_start(notice or progress)  # moved networks, credentials made anew
    upgrading = None
    if before.files:  # something ran from this folder: read what `up` would recreate of it
        now = target.states(recent=True)
        # With no component running (a first up, or one after `down`) nothing can be replaced: the
        # engine's reading of every change (four `docker compose config` runs, 0.3 s) is skipped.
        if upgrade.any_running(components, now):
            recreate = upgrade.recreated(target, only)
            upgrading = upgrade.prepare(target, components, recreate, before, now) if recreate else None
    if stack.plan.bus.clustered:  # a running cluster's changed nodes: one at a time, before the rest
        from nachos_deploy.lifecycle import bus_upgrade

        rolled = time.monotonic()
        if bus_upgrade.roll(target, deadline, notice or progress):
            phases["bus_upgrade"] = time.monotonic() - rolled
    progress("Starting the bus")
    gate.warm_up(warm_up)
    bus_started = time.time()
    warnings = target.start_bus(components, progress)
    claim.close()  # the stack's networks are in its block now: another up sees it taken
    if moved:
        warnings = [moved, *warnings]
    try:
        progress("Waiting for the bus: JetStream, max_payload and a NATS round trip")
        endpoints, report = _gate_bus(target, deadline)
        if stack.plan.bus.peers:
            # A cluster's nodes start together, as peers: a lone clustered node answers 503 until
            # it has a quorum, so gating them one after the other would never end.
            progress("Waiting for the cluster: every node healthy and routed, one JetStream meta leader")
            gate_cluster(target.logs_tail, stack, endpoints, deadline)
        audit = provision_audit(stack, endpoints, progress)
        if stack.plan.bus.peers and audit is not None:
            settle_streams(target.logs_tail, stack, endpoints, deadline, progress)
    except DeployError:
        target.abandon()
        raise
    phases["bus"] = time.monotonic() - mark

    mark = time.monotonic()
    last = LastLinks(target, components, deadline, progress)
    # An upgrade still replaces components after this wait: the last links wait for it.
    meanwhile = last.prove if upgrading is None else None
    held = frozenset(c.name for c in upgrading.replacing) if upgrading is not None else frozenset()
    seen = _start_components(target, components, endpoints, deadline, bus_started, progress, meanwhile, held)
    phases["components"] = time.monotonic() - mark
    if upgrading is not None:
        mark = time.monotonic()
        seen = _upgrade(target, upgrading, components, endpoints, deadline, timeout, progress)
        phases["upgrade"] = time.monotonic() - mark
    last.prove(seen)  # when no settling gave them its second
    last.raise_root_failure()
    init = [VOLUME_INIT] if any(c.waits_for_volumes for c in components) else []
    bus_set = [s.name for s in _bus_set(stack)]
    target.remember(seen.states, list(dict.fromkeys([*bus_set, *init, *(r.name for r in seen.reports)])))
    target.prune_networks()  # a disabled component's networks, now that nothing is on them
    webhooks = last.webhooks()
    if not only:  # a full deployment proven: what `rollback` and the next failed upgrade go back to
        _record_release(target, seen.states, progress)
    phases["total"] = time.monotonic() - started
    return UpResult(
        stack.project,
        endpoints,
        seen.reports,
        phases,
        report,
        changed,
        audit,
        warnings=warnings,
        webhooks=webhooks,
        upgraded=dict(upgrading.replaced) if upgrading is not None else {},
    )


def _upgrade(
    target: Target,
    upgrading: upgrade.Upgrade,
    components: Sequence[ServicePlan],
    endpoints: Endpoints,
    deadline: float,
    timeout: float,
    progress: Progress,
) -> Observation:
    """Replace the held components one at a time, each proven with the bus set and its sidecar
    (``timeout``: what a rollback may take again, from when it begins); then every service once more."""
    stack = target.stack
    bus = _bus_set(stack)
    sidecars = {s.name: s for s in stack.plan.with_sidecars(components) if s.leaf_name}

    def around(component: ServicePlan) -> list[ServicePlan]:
        sidecar = sidecars.get(component.sidecar) if component.sidecar else None
        return [*bus, *([sidecar] if sidecar is not None else [])]

    def wait(services: Sequence[ServicePlan], until: float, since: Since) -> Observation:
        return _wait_until_ok(target, services, endpoints, until, since, progress)

    everything = [*bus, *sidecars.values(), *components]
    return upgrade.replace_one_by_one(
        target, upgrading, around, wait, everything, deadline, lambda: time.monotonic() + timeout, progress
    )


class LastLinks:
    """The links proven once every service is ok: the ingress's CA root written for clients to trust,
    then every webhook route called from the host (:func:`prove_webhooks`). They run while the
    services proven ahead of the engine settle (EARLY_SETTLE), a second `up` otherwise spends
    asleep (0.2 s of a cold `up` of the demo), and once only. A failure is kept, and raised only
    after the settling passed, in the order of old: a crash while settling is the truer cause."""

    def __init__(
        self, target: Target, components: Sequence[ServicePlan], deadline: float, progress: Progress
    ) -> None:
        self._target = target
        self._components = components
        self._deadline = deadline
        self._progress = progress
        self._proven = False
        self._root_failure: DeployError | None = None
        self._webhook_failure: DeployError | None = None
        self._webhooks: list[WebhookReport] = []

    def prove(self, seen: Observation) -> None:
        if self._proven:
            return
        self._proven = True
        try:
            write_ingress_root(self._target, self._components, seen.states, self._deadline)
        except DeployError as exc:
            self._root_failure = exc
            return
        try:
            self._webhooks = prove_webhooks(self._target, self._components, self._deadline, self._progress)
        except DeployError as exc:
            self._webhook_failure = exc

    def raise_root_failure(self) -> None:
        if self._root_failure is not None:
            raise self._root_failure

    def webhooks(self) -> list[WebhookReport]:
        if self._webhook_failure is not None:
            raise self._webhook_failure
        return self._webhooks


def _record_release(target: Target, states: Mapping[str, ServiceState], progress: Progress) -> None:
    """Note the deployment just proven in the output folder's record of releases (io/releases.py)."""
    stack = target.stack
    images = {
        service.name: releases.ServiceImage(service.image, state.image_id)
        for service in stack.plan.services
        if (state := states.get(service.name)) is not None and state.image_id
    }
    try:
        releases.record(
            stack.output_dir, releases.release(stack.output_dir, deployed.digest(stack), images, stack.files)
        )
    except OSError as exc:
        progress(f"Could not record this deployment for `rollback` ({exc})")


def prove_webhooks(
    target: Target, components: Sequence[ServicePlan], deadline: float, progress: Progress
) -> list[WebhookReport]:
    """The last link: every webhook route this up started (the ingress and the channel), called from
    the host as its provider calls it (``nachos_deploy/web/webhooks.py``). Once every service is ok,
    so a failure here is the route's own: a certificate the caller cannot trust, a path the ingress
    does not forward, a channel holding another secret. A route still coming up (the ingress has no
    answer from the channel yet) is asked again until the deadline, or for WEBHOOK_GRACE at least."""
    stack = target.stack
    ingress = stack.plan.ingress
    started = {c.name for c in components}
    if ingress is None or ingress.service.name not in started:
        return []
    if not any(route.channel in started for route in ingress.routes):
        return []
    from nachos_deploy.web import webhooks  # ssl and http.client: only for a stack with webhooks

    progress("Proving the webhook routes from the host, as their providers call them")
    reports = webhooks.prove_all(
        stack.plan, stack.output_dir, deadline=max(deadline, time.monotonic() + WEBHOOK_GRACE)
    )
    reports = [r for r in reports if r.channel in started]
    failed = [r for r in reports if not r.ok]
    if failed:
        project = stack.project
        names = " ".join(dict.fromkeys([ingress.service.name, *(r.channel for r in failed)]))
        raise WebhookFailure(
            "Every service is up, but "
            + "; ".join(
                f"{r.channel}'s webhook {r.url} failed its proof ({r.proof}): {r.problem}" for r in failed
            )
            + ". A provider calling that URL would fail the same way. The stack is left running; look at "
            f"`nachos-deploy logs {names} -p {project}`, fix the cause and run `nachos-deploy up` again "
            "(see docs/webhooks.md#the-proof).",
            details="\n".join(f"--- {name}\n{indent(target.logs_tail(name, 8))}" for name in names.split()),
        )
    return reports


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
    seen = observe(
        target, services, endpoints.monitor_url, states=states, node_monitors=endpoints.node_monitors
    )
    # The last up may have proven a service by its own check ahead of the engine, whose first
    # healthcheck can still be due (a moment later, or under load): the same check again, as status.
    seen = check_waiting(target, services, seen)
    if not all(r.ok for r in seen.reports):
        return None
    phases["components"] = time.monotonic() - mark
    if root_missing(stack):  # else written by the last full up from this same container (0.1 s)
        write_ingress_root(target, components, seen.states, time.monotonic() + 5)
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


def settle_streams(
    logs: Callable[[str, int], str], stack: Stack, endpoints: Endpoints, deadline: float, progress: Progress
) -> None:
    """On a cluster, the cluster's gate once more after the audit stream was provisioned: a node's
    /healthz answers 503 until its replica of a stream just created is current ("JetStream stream
    '$G > AUDIT' is not current: group node unhealthy"), and so does its engine healthcheck, three
    times in a row while the components started was once enough for `up` to take the bus for lost
    (exit 5, a CI run on 2026-12-06). The components start on a bus whose every node is healthy."""
    if not monitor.check_cluster([(name, url) for name, _, url in endpoints.nodes]):
        return
    progress("Waiting for the audit stream: every node's replica current")
    gate_cluster(logs, stack, endpoints, deadline, failure="The audit stream was not current on every node")


def gate_cluster(
    logs: Callable[[str, int], str],
    stack: Stack,
    endpoints: Endpoints,
    deadline: float,
    failure: str = "The bus cluster did not form",
) -> None:
    """Every node healthy, routed to every other, all following one JetStream meta leader, and a
    request answered across two nodes; else a bus failure naming what is missing."""
    from nachos_deploy.bus import natsclient

    names = [name for name, _, _ in endpoints.nodes]
    while True:  # one look at least, so that a failure names what the nodes say
        problems = monitor.check_cluster([(name, url) for name, _, url in endpoints.nodes])
        if not problems:
            try:
                left = max(0.5, deadline - time.monotonic())
                natsclient.cross_round_trip(endpoints.nodes[1][1], endpoints.nodes[0][1], timeout=left)
                return
            except MonitorProblem as exc:
                problems = [str(exc)]
        if time.monotonic() >= deadline:
            break
        time.sleep(POLL * 2)
    raise BusFailure(
        f"{failure}: {'; '.join(problems)}. No component was started. Look at the "
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
    while_settling: Callable[[Observation], None] | None = None,
    held: frozenset[str] = frozenset(),
) -> Observation:
    """Start the sidecars and wait until each is logged in at the hub, heal what an outage left,
    wait for volume-init, start the components, and wait until every service is ok (``while_settling``:
    run once when only the last wait's settling is left).

    ``held``: running components an upgrade replaces next (lifecycle/upgrade.py), neither healed nor
    judged here: their old containers may fail beside what changed around them (on Swarm, `credentials
    rotate` restarts the state store with new passwords before the gateway is replaced with them),
    and their new ones are judged once replaced."""
    stack = target.stack
    bus = _bus_set(stack)
    # Restart counts "before": as the gate's last look read them (a container made since has none).
    states = target.states(recent=True)
    since = _since(states)
    if not components:  # the bus alone (`up --only bus`): nothing to heal or start
        return _wait_until_ok(target, bus, endpoints, deadline, since, progress, states=states)
    early = stack.plan.before_components(components)
    sidecars = [s for s in early if s.leaf_name]
    looked: dict[str, ServiceState] | None = None
    relaunched: set[str] = set()  # sidecars restarted for not logging in at the hub (once each)
    # What ran before this up, by container and restart count: the same run later was not started
    # by this up (see _wait_until_ok's settling).
    before = {n: (s.container_id, s.restart_count) for n, s in states.items() if s.status == "running"}
    waited = False  # for volume-init
    if early:  # the second link of the chain: each sidecar logged in at the hub, the state store up
        if any(s.waits_for_volumes for s in early):  # the store's volume must be its user's first
            _wait_for_volume_init(target, deadline, bus_started, progress, states)
            waited = True
        progress(f"Starting {_early_names(early)}")
        target.start_sidecars(early, states)
        # Proven is enough to let the components start: the settling time of a sidecar proven by
        # its own check runs on while they start, and the final wait below holds them all to it.
        seen = _wait_until_ok(
            target,
            [*bus, *early],
            endpoints,
            deadline,
            since,
            progress,
            settle=False,
            relaunched=relaunched,
            before=before,
        )
        looked = dict(seen.states)
    # Running components whose sidecar this up started or restarted lost it: on their way back.
    rejoining = {
        c.name
        for c in components
        if c.sidecar and c.name in before and (c.sidecar in relaunched or c.sidecar not in before)
    }
    judged = [c for c in components if c.name not in held]
    healed = _heal(target, judged, endpoints, looked if looked is not None else states, progress, rejoining)
    # The sidecars' last look is recent enough unless healing restarted something since.
    recent = looked if looked is not None and not healed else None
    late = [c for c in components if c not in early]
    if not waited and any(c.waits_for_volumes for c in late):
        _wait_for_volume_init(target, deadline, bus_started, progress, recent)
    states = dict(recent) if recent is not None else target.states()
    since = _since(states)
    if late:
        progress(f"Starting {', '.join(c.name for c in late)}")
        target.start_components(late, states)
    services = [*bus, *sidecars, *judged]
    healed |= relaunched
    return _wait_until_ok(
        target,
        services,
        endpoints,
        deadline,
        since,
        progress,
        healed,
        relaunched=relaunched,
        rejoining=rejoining - healed,
        before=before,
        while_settling=while_settling,
    )


def _early_names(early: Sequence[ServicePlan]) -> str:
    sidecars = [s.name for s in early if s.leaf_name]
    others = [s.name for s in early if not s.leaf_name]
    said = [f"the bus sidecars {', '.join(sidecars)}"] if sidecars else []
    return " and ".join([*said, *(f"the state store ({name})" for name in others)])


def _heal(
    target: Target,
    components: Sequence[ServicePlan],
    endpoints: Endpoints,
    states: Mapping[str, ServiceState],
    progress: Progress,
    rejoining: Collection[str] = (),
) -> frozenset[str]:
    """Restart components an outage left behind: running but not on the bus (the platform's
    channels never reconnect after their ten tries), or waiting out a restart back-off (llm-proxy
    exits while the bus is away). Their new runs begin with the bus proven, so from here on a
    restart is real. Only a container that runs or restarts can be stuck: a first ``up``, whose
    components are not created or not started yet, has nothing to look at. A running one in
    ``rejoining`` (its sidecar is back only now) is left to the final wait's REJOIN_GRACE."""
    candidates = [
        c
        for c in components
        if (s := states.get(c.name)) is not None and s.status in ("running", "restarting")
    ]
    if not candidates:
        return frozenset()
    seen = observe(target, candidates, endpoints.monitor_url, node_monitors=endpoints.node_monitors)
    stuck = [
        report.name
        for report in seen.reports
        if report.status == "restarting"
        or (report.status == "running" and report.connected is False and report.name not in rejoining)
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
    relaunched: set[str] | None = None,
    rejoining: Collection[str] = (),
    before: Mapping[str, tuple[str, int]] | None = None,
    while_settling: Callable[[Observation], None] | None = None,
) -> Observation:
    """Until every one of ``services`` is ok by the one rule and runs all its replicas (``states``:
    the first look's containers, read a moment ago); a task failed since ``since`` is final. With
    ``settle``, each one proven by its own check ahead of the engine must then have stayed up for
    EARLY_SETTLE: a component that passes and crashes a moment later is a failed start. Work that
    may overlap that second is ``while_settling``, called once with the look that left only it.

    A sidecar of ``before`` (running before this up) not logged in at the hub is reconnecting (after
    an outage its own check fails until it is back): settling, not failed. So is a component of
    ``rejoining`` (its sidecar is back only now) not on it yet. One still away LEAF_GRACE (a
    component: REJOIN_GRACE) after this wait first saw it so is restarted, once (``relaunched``: those
    restarted so far, shared by the waits of one up); from then on it is judged as any other.

    A service still in the run it had before this up (``before``: its container and restart count
    then; not restarted by this up) does not settle: it was not started now, and nothing about its
    start can fail a moment later. A component back on its restarted sidecar is one."""
    before = before if before is not None else {}
    names = [s.name for s in services]
    leaves = {s.name for s in services if s.leaf_name}
    proven: dict[str, float] = {}  # service -> when its own check first passed ahead of the engine
    passed: dict[str, str] = {}  # service -> the container that passed it
    relaunched = relaunched if relaunched is not None else set()
    away: dict[str, float] = {}  # service -> when this wait first saw it on its way back
    meanwhile = while_settling if settle else None
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
                node_monitors=endpoints.node_monitors,
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
        reconnecting = _reconnecting(services, seen, since, relaunched, rejoining, before)
        now = time.monotonic()
        away = {name: away.get(name, now) for name in reconnecting}
        stuck = sorted(name for name, at in away.items() if now - at >= reconnecting[name])
        if stuck:
            progress(f"Restarting {', '.join(stuck)}: not back on the bus in time")
            target.restart(stuck)
            relaunched.update(stuck)
            healed = healed | frozenset(stuck)
            states = target.states()
            # A restart by hand is no restart by the policy; on Swarm it is a new container anyway.
            since = Since(since.at, {**since.restarts, **_restart_counts(states, stuck)})
            continue
        failed = {
            r.name: _reason(target, r, seen, since) for r in seen.reports if r.final and r.name not in away
        }
        failed.update({name: f"has a failed task ({why})" for name, why in tasks.items()})
        pending = {
            r.name: failed.get(r.name)
            or ("is not logged in at the hub yet (/leafz)" if r.name in away and r.name in leaves else None)
            or r.problem
            or f"is {r.status}"
            for r in seen.reports
            if not r.ok
        }
        short = target.shortfalls(names)
        pending.update({name: why for name, why in short.items() if name not in pending})
        settling = [
            n
            for n in seen.early
            if settle
            and not _same_run(n, seen.states, before, healed)
            and time.monotonic() - proven[n] < EARLY_SETTLE
        ]
        if not failed and not pending and not settling:
            return seen
        if not failed and not pending:
            # Only the settling is left: one look when it ends (a crash meanwhile shows as an exit
            # or a restart then) instead of a round of checks every POLL.
            if meanwhile is not None:
                meanwhile(seen)
                meanwhile = None
            ends = min(proven[n] + EARLY_SETTLE for n in settling)
            time.sleep(max(POLL, min(ends, deadline) - time.monotonic()))
            continue
        if failed or time.monotonic() >= deadline:
            raise _component_failure(target, failed or pending, timed_out=not failed)
        progress(f"Waiting for {', '.join(pending)}")
        time.sleep(POLL * 2)


def _same_run(
    name: str,
    states: Mapping[str, ServiceState],
    before: Mapping[str, tuple[str, int]],
    healed: Collection[str],
) -> bool:
    """Whether ``name`` runs in the container and run it had before this up (``before``), which
    this up did not restart (``healed``: by hand, which the restart count does not show)."""
    state = states.get(name)
    return (
        state is not None
        and name not in healed
        and before.get(name) == (state.container_id, state.restart_count)
    )


def _reconnecting(
    services: Sequence[ServicePlan],
    seen: Observation,
    since: Since,
    relaunched: set[str],
    rejoining: Collection[str],
    before: Collection[str],
) -> dict[str, float]:
    """Service → how long it may stay away: the sidecars of ``before`` the hub (which answered)
    does not list as logged in, and the components of ``rejoining`` their sidecar does not list,
    each running as it was before this up (not restarted since, nor by the restart rule). Their
    own checks ask the same, so a failing one is on its way back, not a verdict. A sidecar this up
    started is not among them: one that cannot log in fails by the usual rule, as soon as before.
    A component of ``rejoining`` that exited or restarted meanwhile may stay away 0 s."""
    if seen.bus.leafs is None:
        return {}
    away: dict[str, float] = {}
    for service, report in zip(services, seen.reports, strict=True):
        state = seen.states.get(service.name)
        if service.name in relaunched or state is None:
            continue
        if service.name in rejoining and (state.status != "running" or since.restarts_of(state) > 0):
            # It gave up while its sidecar was away (llm-proxy exits, then loops on the restart
            # policy): restarted now, as healing restarts one in a back-off.
            away[service.name] = 0.0
            continue
        if report.connected is not False or state.status != "running" or since.restarts_of(state) > 0:
            continue
        if service.leaf_name is not None and service.name in before:
            away[service.name] = LEAF_GRACE
        elif service.name in rejoining:
            away[service.name] = REJOIN_GRACE
    return away


def _restart_counts(states: Mapping[str, ServiceState], names: Sequence[str]) -> dict[str, int]:
    return {state.container_id: state.restart_count for name in names if (state := states.get(name))}


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


def _component_failure(
    target: Target, reasons: Mapping[str, str], *, timed_out: bool = False
) -> ComponentFailure:
    """``timed_out``: nothing failed for good, the wait ran out; each reason is the last look's, and
    the services may only be slow (a loaded machine, a large stack), which the message says with
    the option that waits longer."""
    project = target.stack.project
    first = next(iter(reasons))
    lines = [
        f"--- {name}: {why}\n{indent(target.logs_tail(name, LOG_LINES))}" for name, why in reasons.items()
    ]
    slow = (
        " If they are only slow to start (a busy machine, a large stack), `--timeout SECONDS` waits longer."
        if timed_out
        else ""
    )
    return ComponentFailure(
        fields={"failed": dict(reasons)},
        message=f"{', '.join(reasons)} did not come up"
        + (" within `up`'s --timeout" if timed_out else "")
        + ": "
        + "; ".join(f"{name} {why}" for name, why in reasons.items())
        + f".{slow} The stack is left as it is for inspection (`nachos-deploy status -p {project}`, "
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

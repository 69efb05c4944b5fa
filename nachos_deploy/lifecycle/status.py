"""What a running stack looks like now: each service judged by the same rule as ``up``, and the bus's
own view, on any target. Loads no NATS client: everything here is the engine and the bus's HTTP
monitoring."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from nachos_deploy.bus import monitor
from nachos_deploy.core.errors import DeployError
from nachos_deploy.core.names import VOLUME_INIT
from nachos_deploy.core.results import Endpoints, StatusResult, StreamReport, WebhookReport
from nachos_deploy.docker.engine import ServiceState
from nachos_deploy.io import files
from nachos_deploy.io.stack import Stack
from nachos_deploy.lifecycle.ingress_root import root_missing, write_ingress_root
from nachos_deploy.lifecycle.observe import check_waiting, observe
from nachos_deploy.targets import Target, for_stack


def status(stack: Stack, only: Sequence[str] | None = None) -> StatusResult:
    """Each service's container state, health and bus connection, and the bus's own view. Judges
    the services ``only`` names (with the bus and their sidecars); by default what the last ``up``
    started (``up --only`` leaves its selection in the output folder), else the whole stack."""
    with for_stack(stack) as target:
        return status_on(target, only)


def status_on(target: Target, only: Sequence[str] | None = None) -> StatusResult:
    """:func:`status` on a given target."""
    stack = target.stack
    names = {service.name for service in stack.plan.services}
    if only is None:  # what the last up asked for, as far as this configuration still runs it
        only = [name for name in files.read_selection(stack.output_dir) if name in names]
    # No `docker version` first: listing the containers fails with the same advice when the engine
    # is away, and status needs no Compose (0.1 s saved of a command that should answer at once).
    states = target.states()
    result = judged(target, states, target.endpoints(states), only)
    selected = [s.name for s in stack.plan.selected(only)]
    result.problems += [f"{name} {why}" for name, why in sorted(target.shortfalls(selected).items())]
    if root_missing(stack):
        # Started without `up` (Compose alone): the root is read from the ingress, as `up` does.
        try:
            write_ingress_root(target, stack.plan.components, states, time.monotonic() + 2)
        except DeployError as exc:  # the proof below then says the root is missing
            result.problems.append(str(exc))
    result.webhooks = webhook_proofs(stack, selected)
    result.problems += [
        f"the webhook of {w.channel} ({w.url}): {w.problem}" for w in result.webhooks if not w.ok
    ]
    # Never a partial view called healthy: what runs in the project beyond what is judged is named.
    unknown = sorted(n for n, s in states.items() if n not in names | {VOLUME_INIT} and s.status == "running")
    if unknown:
        result.problems.append(
            f"project {stack.project} also runs {', '.join(unknown)}, which the configuration judged here "
            "does not describe: run `nachos-deploy status` with the deploy file that started them "
            f"(-c FILE), or `nachos-deploy down -p {stack.project}` and `up` to run only this one"
        )
    return result


def webhook_proofs(stack: Stack, selected: Sequence[str]) -> list[WebhookReport]:
    """Each judged webhook route proven as `up` proves it (the provider's own call, from the host),
    once: status waits for nothing."""
    ingress = stack.plan.ingress
    if ingress is None or ingress.service.name not in selected:
        return []
    from nachos_deploy.web import webhooks  # ssl and http.client: only for a stack with webhooks

    reports = webhooks.prove_all(stack.plan, stack.output_dir, deadline=time.monotonic())
    return [report for report in reports if report.channel in selected]


def judged(
    target: Target,
    states: Mapping[str, ServiceState],
    endpoints: Endpoints | None,
    only: Sequence[str],
) -> StatusResult:
    """The services ``only`` names (all: empty) judged on ``states``, and the bus's own view."""
    stack = target.stack
    monitor_url = endpoints.monitor_url if endpoints else None
    node_monitors = endpoints.node_monitors if endpoints else ()
    selected = stack.plan.selected(only)
    seen = observe(target, selected, monitor_url, states=states, node_monitors=node_monitors)
    seen = check_waiting(target, selected, seen)  # the same early healthcheck as up
    overview: dict[str, Any] | None = None
    problems: list[str] = []
    if not seen.states:
        problems.append(f"project {stack.project} has no containers; start it with `nachos-deploy up`")
    if endpoints is not None and seen.bus.connections is not None:
        try:
            overview = dict(monitor.bus_overview(endpoints.monitor_url))
        except monitor.BusUnavailable as exc:
            problems.append(f"the bus does not answer: {exc}")  # exc names the URL, without a password
    if seen.states:
        problems += [f"{report.name} {report.problem}" for report in seen.reports if report.problem]
    if endpoints is not None and endpoints.nodes:  # a clustered bus: each node, its routes, one leader
        problems += monitor.check_cluster([(name, url) for name, _, url in endpoints.nodes])
    if overview is not None and not overview.get("jetstream"):
        problems.append("JetStream is off on the bus")
    audit = None
    wanted = stack.plan.bus.audit
    if overview is not None and endpoints is not None and wanted is not None:
        try:
            state = monitor.stream_state(endpoints.monitor_url, wanted.stream)
        except monitor.BusUnavailable as exc:
            problems.append(f"the bus does not answer: {exc}")  # exc names the URL, without a password
            state = None
        else:
            if state is None:
                problems.append(
                    f"the audit stream {wanted.stream} does not exist: audit messages are not kept "
                    "(`nachos-deploy up` creates it)"
                )
        audit = StreamReport(wanted.stream, "seen", *state) if state else None
    # The server's own resident memory from /varz: `docker stats` would cost two seconds.
    mem = overview.get("mem") if overview else None
    memory = mem if isinstance(mem, int) else None
    return StatusResult(stack.project, endpoints, seen.reports, overview, memory, problems, audit)

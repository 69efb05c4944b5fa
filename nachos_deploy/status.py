"""What a running stack looks like now: each service judged by the same rule as ``up``, and the bus's
own view. Loads no NATS client: everything here is the engine and the bus's HTTP monitoring."""

from __future__ import annotations

from typing import Any

from nachos_deploy import engine, monitor, project
from nachos_deploy.observe import observe
from nachos_deploy.plan import BUS
from nachos_deploy.results import StatusResult
from nachos_deploy.stack import Stack


def status(stack: Stack) -> StatusResult:
    """Each planned service's container state, health and bus connection, and the bus's own view."""
    engine.require_engine()
    with project.compose_client(stack) as client:
        endpoints = project.bus_endpoints(client, stack)
        seen = observe(client, stack.plan.services, endpoints.monitor_url if endpoints else None)
    overview: dict[str, Any] | None = None
    problems: list[str] = []
    if not seen.states:
        problems.append(f"project {stack.project} has no containers; start it with `nachos-deploy up`")
    if endpoints is not None and seen.bus.connections is not None:
        try:
            overview = dict(monitor.bus_overview(endpoints.monitor_url))
        except monitor.BusUnavailable as exc:
            problems.append(f"the bus does not answer on {endpoints.monitor_url}: {exc}")
    if seen.states:
        problems += [f"{report.name} {report.problem}" for report in seen.reports if report.problem]
    if overview is not None and not overview.get("jetstream"):
        problems.append("JetStream is off on the bus")
    memory = engine.container_memory(seen.states[BUS].container) if BUS in seen.states else None
    return StatusResult(stack.project, endpoints, seen.reports, overview, memory, problems)

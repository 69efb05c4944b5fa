"""How often a stack's Docker healthchecks run, all together: at most a fixed number a second.

Pure. Every run of a Docker healthcheck is a ``docker exec`` (runc, a shell, the check's own process),
and the engine pays for each whatever the stack's size: a stack of 100 probe components had about
150 a second (each sidecar's check every ``bus.healthcheck_interval``, 1 s; each component's every
2 s), two cores could not keep up (load average 100 to 300), checks overran their 2 s timeout, and
the bus or a sidecar was judged unhealthy: ``up`` stopped, and so did plain ``docker compose up
--wait`` of the same files (docs/networks.md#figures).

So the rendered intervals grow with the stack: when every check at its usual interval would run
more than :data:`EXECS_PER_SECOND` a second, each interval nachos-deploy chose is stretched by the
same factor, so the stack stays near that budget; its timeout grows with it, up to the new
interval, because the load that makes a stack large also makes one exec slower. A stack within the
budget (the demo runs about 9.5 a second) keeps its intervals exactly. An interval the deploy file,
``--set`` or the environment sets (``bus.healthcheck_interval`` for the bus, its forwarder and the
sidecars; a component's own ``healthcheck.interval``; None in the configuration when left out) is
kept as written: it still counts against the budget, and the rest stretch as they would without
it. Nothing here slows ``nachos-deploy up`` on Compose, which proves every service itself and does
not wait for Docker's interval (docs/components.md#how-often-the-checks-run).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import replace

from nachos_deploy.core.config import HEALTHCHECK_BUDGET, DeployConfig, Healthcheck
from nachos_deploy.core.plan_types import HEALTH_DISABLED, HealthPlan, Plan, ServicePlan
from nachos_deploy.core.units import duration_seconds

# The whole stack's healthcheck runs a second, unless healthchecks.budget says otherwise. The demo (4
# components: the bus, its forwarder, four sidecars and the state store every second, the components
# and the ingress every 2 s) runs 9.5 and keeps its intervals; a stack of 100 tools (about 152 at the
# usual intervals) has its stretched about 13 times: the sidecars' every 12.7 s, the components' 25.4 s.
EXECS_PER_SECOND = HEALTHCHECK_BUDGET


def stretch(intervals: Iterable[float], budget: float = EXECS_PER_SECOND) -> float:
    """The factor every interval nachos-deploy chose is multiplied by: 1 while all the checks (every
    interval in seconds, the deploy file's too) run at most ``budget`` times a second, else what
    brings them to it. The deploy file's own intervals are counted but not stretched, so with
    them the stack may stay above the budget: its choice."""
    return max(1.0, sum(1.0 / interval for interval in intervals) / budget)


def stretched(interval: str, timeout: str, factor: float) -> tuple[str, str]:
    """(interval, timeout) ``factor`` times longer, in tenths of a second rounded up (never shorter
    than asked, so the budget holds); the timeout grows with it but never beyond the new interval,
    nor below the one asked. ``factor`` 1 changes nothing, not even the spelling."""
    if factor <= 1.0:
        return interval, timeout
    seconds = _tenths_up(duration_seconds(interval) * factor)
    asked = duration_seconds(timeout)
    wait = max(asked, min(_tenths_up(asked * factor), seconds))
    return _spelled(seconds), timeout if wait == asked else _spelled(wait)


def _tenths_up(seconds: float) -> float:
    # round() first: 1.625 * 10 is 16.250000000000004 in floating point, not worth a tenth more.
    return math.ceil(round(seconds * 10, 6)) / 10


def _spelled(seconds: float) -> str:
    """Compose's notation, as the deploy file would have it: ``13s``, ``12.7s``."""
    return f"{seconds:.1f}".removesuffix(".0") + "s"


def _timed(check: HealthPlan | None) -> bool:
    """A check Docker runs on a schedule: not none, not the image's own (an extra's: its interval
    is not known here), not switched off."""
    return check is not None and check.test != HEALTH_DISABLED.test and bool(check.interval)


def spread(config: DeployConfig, plan: Plan) -> Plan:
    """The plan with every healthcheck interval nachos-deploy chose stretched to the budget (the
    module's docstring); unchanged when the stack is within it."""
    bus_set = config.bus.healthcheck_interval is not None
    on_bus = {plan.bus.service.name, plan.bus.ports.name, *(p.name for p in plan.bus.peers)}
    on_bus.update(sidecar.service.name for sidecar in plan.sidecars)

    def fixed(service: ServicePlan) -> bool:
        if service.name in on_bus:
            return bus_set
        own = config.components.get(service.name)
        check = own.healthcheck if own is not None else None
        return isinstance(check, Healthcheck) and check.interval is not None

    factor = stretch(
        (
            duration_seconds(service.healthcheck.interval)
            for service in plan.services
            if service.healthcheck is not None and _timed(service.healthcheck)
        ),
        config.healthchecks.budget,
    )
    if factor == 1.0:
        return plan

    def one(service: ServicePlan) -> ServicePlan:
        check = service.healthcheck
        if check is None or not _timed(check) or fixed(service):
            return service
        interval, timeout = stretched(check.interval, check.timeout, factor)
        return replace(service, healthcheck=replace(check, interval=interval, timeout=timeout))

    bus = plan.bus
    bus = replace(bus, service=one(bus.service), peers=tuple(one(p) for p in bus.peers), ports=one(bus.ports))
    ingress = plan.ingress
    if ingress is not None:
        ingress = replace(ingress, service=one(ingress.service))
    return replace(
        plan,
        bus=bus,
        sidecars=tuple(replace(s, service=one(s.service)) for s in plan.sidecars),
        components=tuple(one(c) for c in plan.components),
        ingress=ingress,
    )

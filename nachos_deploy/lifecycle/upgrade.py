"""Upgrades that roll themselves back: running components replaced one at a time, each new container
proven by the one rule before the next is touched, and every one this `up` replaced put back when one
fails (docs/upgrades.md).

``docker compose up`` recreates every changed service at once and leaves a broken one crash-looping
in place of a working one; a ``docker stack deploy`` does the same per service. So ``up`` asks the
target which running components it would recreate (:meth:`Target.changes`: a new image, or a
re-pointed tag, new environment, mounts or configuration), holds them while the rest starts, then
replaces them one by one. Each new container must pass the same gate as at start (running, healthy,
on the bus under its own name: :func:`nachos_deploy.lifecycle.observe.observe`) before the `up`'s
deadline. When one does not, what ran before comes back: the previous successful deployment's
rendered files (environment, mounts, configuration), and each component on the image id its old
container ran, pinned by id when its tag has moved on (:mod:`nachos_deploy.targets.upgrade_files`).
Those are proven by the same rule, and ``up`` exits 6 naming what failed, with the new version's
last log lines and the components it rolled back (``"rolled_back"`` in ``--json``).

What ran before comes from the record of successful deployments (:mod:`nachos_deploy.io.releases`),
or, with none yet, from the output folder as it was before this `up` wrote its files.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from nachos_deploy.core.errors import ComponentFailure, DeployError
from nachos_deploy.core.plan_types import ServicePlan
from nachos_deploy.docker.engine import ServiceState
from nachos_deploy.io import releases
from nachos_deploy.io.stack import Stack
from nachos_deploy.lifecycle.observe import Observation, Since
from nachos_deploy.targets import Target

Progress = Callable[[str], None]
# Until every one of these services is ok by the one rule, from ``since``, before ``deadline``
# (up.py's _wait_until_ok); raises ComponentFailure with ``fields["failed"]``: name -> why.
Wait = Callable[[Sequence[ServicePlan], float, Since], Observation]
LOG_LINES = 20
SETTLE = 3.0
"""Seconds a new container must stay up, once it passed the gate, before the next one is replaced: a
version that dies a moment after it joined the bus (a crash on its first message, a failed migration)
passes a gate that looks once. Swarm's own rolling update watches each new task 5 s (``monitor``)."""


@dataclass
class Upgrade:
    """The running components this `up` replaces, in start order, and what to put back."""

    replacing: list[ServicePlan]
    before: releases.Release  # the deployment running before this up: its rendered files
    images: dict[str, str]  # component -> the image id its running container was created from
    replaced: dict[str, float] = field(default_factory=dict)  # name -> seconds until proven


def any_running(components: Sequence[ServicePlan], states: Mapping[str, ServiceState]) -> bool:
    """Whether a container of one of ``components`` runs: only such a one can be replaced."""
    return any((state := states.get(c.name)) is not None and state.status == "running" for c in components)


def recreated(target: Target, only: Sequence[str]) -> set[str]:
    """The services the target would recreate, read from the engine without changing anything."""
    return {change.name for change in target.changes(only) if change.action == "recreate"}


def before_files(stack: Stack) -> releases.Release:
    """What runs now, to put back: the last successful deployment when it is recorded, else the
    output folder as this `up` finds it (read before it writes)."""
    current = releases.load(stack.output_dir).current
    if current is not None:
        return current
    return releases.snapshot(stack.output_dir, list(stack.files))


def prepare(
    target: Target,
    components: Sequence[ServicePlan],
    recreate: set[str],
    before: releases.Release,
    states: Mapping[str, ServiceState],
) -> Upgrade | None:
    """The upgrade this `up` makes (``recreate``: :func:`recreated`, read before it wrote anything;
    ``states``: the containers now), or None when no running component changes; its components are
    held so that :meth:`Target.start_components` leaves them to :func:`replace_one_by_one`."""
    replacing = [
        c
        for c in components
        if c.name in recreate and (state := states.get(c.name)) is not None and state.status == "running"
    ]
    if not replacing:
        return None
    target.hold([c.name for c in replacing])
    images = {c.name: states[c.name].image_id for c in replacing if states[c.name].image_id}
    return Upgrade(replacing, before, images)


def replace_one_by_one(
    target: Target,
    upgrade: Upgrade,
    around: Callable[[ServicePlan], list[ServicePlan]],
    wait: Wait,
    everything: Sequence[ServicePlan],
    deadline: float,
    rollback_deadline: Callable[[], float],
    progress: Progress,
) -> Observation:
    """Replace each held component and prove its new container (with ``around(component)``: the
    services it needs, judged with it) before the next, then judge ``everything`` once more; on a
    failure, put back every one replaced so far, prove them (until ``rollback_deadline()``) and
    raise ComponentFailure (exit 6).

    Restarts count from the containers as they were just before each step: a new container has no
    count yet, so a new version that crashed and was restarted before the first look still counts."""
    done: list[ServicePlan] = []
    total = len(upgrade.replacing)
    start = _since(target)
    for index, component in enumerate(upgrade.replacing, start=1):
        name = component.name
        progress(f"Upgrading {name} ({index} of {total}): replacing its container")
        mark = time.monotonic()
        since = _since(target)
        target.replace([name])
        try:
            wait([*around(component), component], deadline, since)
            upgrade.replaced[name] = time.monotonic() - mark
            _pause(max(0.0, min(SETTLE, deadline - time.monotonic())))
            wait([*around(component), component], deadline, since)  # a restart meanwhile fails it
        except ComponentFailure as failure:
            raise _rolled_back(
                target,
                upgrade,
                [*done, component],
                component,
                failure,
                around,
                wait,
                rollback_deadline,
                progress,
            ) from None
        done.append(component)
    try:
        return wait(everything, deadline, start)
    except ComponentFailure as failure:
        reasons = failure.fields.get("failed")
        first = next(iter(reasons), None) if isinstance(reasons, dict) else None
        failed = next((c for c in done if c.name == first), done[-1])
        raise _rolled_back(
            target, upgrade, done, failed, failure, around, wait, rollback_deadline, progress
        ) from None


def _pause(seconds: float) -> None:
    """The settle (:data:`SETTLE`): its own function, so that the in-process tests can act in it."""
    time.sleep(seconds)


def _since(target: Target) -> Since:
    """From now, each container's restarts after its count now (a container made later: all)."""
    return Since(time.time(), {s.container_id: s.restart_count for s in target.states().values()})


def _rolled_back(
    target: Target,
    upgrade: Upgrade,
    changed: list[ServicePlan],
    failed: ServicePlan,
    failure: ComponentFailure,
    around: Callable[[ServicePlan], list[ServicePlan]],
    wait: Wait,
    rollback_deadline: Callable[[], float],
    progress: Progress,
) -> ComponentFailure:
    """Put back every component of ``changed`` as it ran before, prove them, and say what failed."""
    stack = target.stack
    project = stack.project
    names = [c.name for c in changed]
    reasons = failure.fields.get("failed")
    why = (
        reasons.get(failed.name) if isinstance(reasons, dict) else None
    ) or "did not pass the gate (running, healthy, on the bus)"
    logs = target.logs_tail(failed.name, LOG_LINES)  # the new version's, before it is replaced
    progress(f"The new {failed.name} {why}: putting back {', '.join(names)}")
    try:
        since = _since(target)
        target.restore(names, upgrade.before.files, upgrade.images)
        releases.put_back_deployed(stack.output_dir, upgrade.before.deployed)
        around_all = list({s.name: s for c in changed for s in around(c)}.values())
        wait([*around_all, *changed], rollback_deadline(), since)
    except DeployError as again:
        return ComponentFailure(
            f"The upgrade of {failed.name} failed (it {why}), and putting back the previous version of "
            f"{', '.join(names)} failed too: {again.message} The stack is left as it is; look at "
            f"`nachos-deploy status -p {project}` and `nachos-deploy logs -p {project}`.",
            details=f"--- the new {failed.name}'s last log lines\n{_indent(logs)}",
            fields={"rolled_back": [], "failed": {failed.name: why}},
        )
    kept = [c.name for c in upgrade.replacing if c.name not in names]
    return ComponentFailure(
        f"The upgrade of {failed.name} failed: its new container {why}. Rolled back "
        f"{', '.join(names)} to the previous version (its images and rendered files), proven running, "
        "healthy and on the bus"
        + (f"; {', '.join(kept)} were not upgraded" if kept else "")
        + f". The new version's last log lines are below; fix it and run `nachos-deploy up` again "
        f"(`nachos-deploy status -p {project}` shows the stack as it runs now).",
        details=f"--- the new {failed.name}'s last log lines\n{_indent(logs)}",
        fields={"rolled_back": names, "failed": {failed.name: why}},
    )


def _indent(text: str) -> str:
    return "\n".join(f"    {line}" for line in text.splitlines()) or "    (no log lines)"

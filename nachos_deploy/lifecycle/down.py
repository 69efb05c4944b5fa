"""``down``: the stack's containers and networks, components before the bus; volumes only when asked.

Apart from :mod:`nachos_deploy.lifecycle.up` so that ``down`` loads no NATS client or gate on
Compose: Compose's own ``down`` is the whole of the work there, and the command
should cost little more than it (``benchmarks/ratios.py`` compares them).
"""

from __future__ import annotations

from collections.abc import Callable

from nachos_deploy.core.results import DownResult
from nachos_deploy.io import deployed, files, locks
from nachos_deploy.io.stack import Stack
from nachos_deploy.targets import Target, for_stack

Progress = Callable[[str], None]


def down(stack: Stack, *, volumes: bool, notice: Progress = lambda _: None) -> DownResult:
    """Remove containers and networks; JetStream and other volumes only when asked."""
    with locks.project_lock(stack.project, notice), for_stack(stack) as target:
        return down_on(target, volumes=volumes)


def down_on(target: Target, *, volumes: bool) -> DownResult:
    """:func:`down` on a given target, its caller holding the project's lock. The volumes are listed
    first: the result names what was removed, or what is kept for the next ``up``."""
    stack = target.stack
    existing = target.volumes()
    found = bool(target.states())
    target.remove(volumes=volumes)
    if stack.output_dir.is_dir():
        files.write_selection(stack.output_dir, ())  # the next status judges the whole stack
        deployed.forget(stack.output_dir)  # nothing runs from this folder any more
    if not volumes:
        return DownResult(stack.project, volumes_removed=[], volumes_kept=existing, found=found)
    return DownResult(stack.project, volumes_removed=existing, volumes_kept=[], found=found)

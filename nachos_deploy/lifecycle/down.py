"""``down``: containers and networks, volumes only when asked (a Swarm stack: :mod:`swarm_lifecycle`).

Apart from :mod:`nachos_deploy.lifecycle.up` so that ``down`` loads no NATS client, gate or
python-on-whales: Compose's own ``down`` is the whole of the work, and the command should cost
little more than it (``benchmarks/ratios.py`` compares them).
"""

from __future__ import annotations

from collections.abc import Callable

from nachos_deploy.core.results import DownResult
from nachos_deploy.docker import engine
from nachos_deploy.io import fastpath, files, locks
from nachos_deploy.io.stack import Stack
from nachos_deploy.targets import project

Progress = Callable[[str], None]


def down(stack: Stack, *, volumes: bool, notice: Progress = lambda _: None) -> DownResult:
    """Remove containers and networks; JetStream and other volumes only when asked."""
    with locks.project_lock(stack.project, notice):
        if stack.swarm:
            from nachos_deploy.lifecycle import swarm_stack as swarm_lifecycle

            return swarm_lifecycle.remove(stack, volumes=volumes)
        return _down(stack, volumes=volumes)


def _down(stack: Stack, *, volumes: bool) -> DownResult:
    # No `docker version` first (0.1 s): listing the volumes fails with the same advice when the
    # engine is away, and a missing Compose is named by `compose down` itself.
    existing = engine.project_volumes(stack.project)
    with project.compose_client(stack) as client:
        engine.down(client, volumes=volumes)
    if stack.output_dir.is_dir():
        files.write_selection(stack.output_dir, ())
        fastpath.forget(stack.output_dir)
    if not volumes:
        return DownResult(stack.project, volumes_removed=[], volumes_kept=existing)
    leftovers = engine.project_volumes(stack.project)  # of services no longer in the configuration
    if leftovers:
        engine.remove_volumes(leftovers)
    return DownResult(stack.project, volumes_removed=existing, volumes_kept=[])

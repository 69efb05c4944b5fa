"""The engines a stack runs on, behind one seam (:class:`~nachos_deploy.targets.base.Target`).

:func:`for_stack` is the only place that asks which engine a stack runs on. Each target module is
imported only when chosen: a Compose ``status`` or ``down`` loads nothing of Swarm's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from nachos_deploy.io.stack import Stack
from nachos_deploy.targets.base import Target

__all__ = ["Target", "for_stack"]


@contextlib.contextmanager
def for_stack(stack: Stack) -> Iterator[Target]:
    """The target the deploy file names (``target:``), for one command; released at the block's end
    (Compose may stage the rendered files in a temporary folder meanwhile)."""
    if stack.swarm:
        from nachos_deploy.targets.swarm import SwarmTarget

        yield SwarmTarget(stack)
        return
    from nachos_deploy.targets.compose import ComposeTarget

    with contextlib.closing(ComposeTarget(stack)) as target:
        yield target

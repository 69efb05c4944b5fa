"""Before ``up`` creates a network: do the stack's planned subnets overlap a network the engine has?

The plan draws the stack's block of ``networks.pool`` from the project's name alone (core/subnets.py),
so two projects can draw overlapping blocks, and a network made by hand or by another tool can sit in
the pool. Docker would refuse the second network half way through ``up`` ("Pool overlaps with other
one on this address space"), naming neither network; this says which two, and a free range to move
to, before anything is written. Both targets call it from their ``check``.
"""

from __future__ import annotations

from nachos_deploy.core import subnets
from nachos_deploy.core.errors import EnvironmentProblem
from nachos_deploy.core.plan import Plan
from nachos_deploy.docker import engine


def own_names(plan: Plan) -> set[str]:
    """The engine's names of this stack's networks (Compose and Swarm both name them
    ``<project>_<network>``): they are this stack's to recreate, not collisions."""
    names = {name for name, _ in plan.networks}
    if plan.subnets is not None:
        names.update(name for name, _ in plan.subnets.assigned)
    return {f"{plan.project}_{name}" for name in names}


def check(plan: Plan, networks: list[tuple[str, tuple[str, ...]]] | None = None) -> None:
    """An EnvironmentProblem (exit 4) naming the first overlap and the fix; nothing when the plan
    leaves the addresses to the engine (``networks.pool: docker``). ``networks``: the engine's, when
    the caller read them already (engine.engine_subnets)."""
    if plan.subnets is None:
        return
    own = own_names(plan)
    listed = engine.engine_subnets() if networks is None else networks
    existing = [(name, found) for name, found in listed if name not in own]
    found = subnets.collisions(plan.subnets, own, existing)
    if found:
        raise EnvironmentProblem(message(plan, found, existing))


def message(plan: Plan, found: list[subnets.Collision], existing: list[tuple[str, tuple[str, ...]]]) -> str:
    """What overlaps what, and how to move: the free block of the pool named outright, since a pool
    of exactly the stack's block size has one place to give."""
    assert plan.subnets is not None
    first = found[0]
    more = f" (and {len(found) - 1} more overlaps)" if len(found) > 1 else ""
    free = subnets.free_block(plan.subnets, existing)
    if free is not None:
        fix = (
            f"Move this stack: set networks.pool to {free} in the deploy file (or `--set "
            f"networks.pool={free}`), a free range of the size this stack takes; or remove {first.other} "
            "if it is no longer used"
        )
    else:
        fix = (
            f"networks.pool {plan.subnets.pool} has no free range of the size this stack takes "
            f"({plan.subnets.block} is one): the range ran out. Give networks.pool another private range "
            f"that no network of this engine uses, or remove networks you no longer use "
            "(`docker network prune`, or `nachos-deploy down` of old stacks)"
        )
    return (
        f"Network {first.network} of project {plan.project} would take {first.subnet} (networks.pool "
        f"{plan.subnets.pool}, this project's block {plan.subnets.block}), which overlaps network "
        f"{first.other} ({first.other_subnet}) on this engine{more}. {fix}, then run `nachos-deploy up` "
        "again (docs/networks.md#collisions)."
    )

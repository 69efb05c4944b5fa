"""Before ``up`` creates a network: where the stack's subnets can go on this engine.

The plan draws the stack's block of ``networks.pool`` from the project's name alone (core/subnets.py),
so two projects can draw overlapping blocks, and a network made by hand or by another tool, or one
Swarm is still removing, can sit in the pool. Docker would refuse the second network half way through
``up`` ("Pool overlaps with other one on this address space"), naming neither network. So both targets'
``check`` read the engine's networks and settle the stack on a block no other network is in (the
stack's own running networks stay where they are), before anything is written; only a pool with no
free block left stops ``up``.
"""

from __future__ import annotations

import ipaddress

from nachos_deploy.core import subnets
from nachos_deploy.core.errors import EnvironmentProblem
from nachos_deploy.core.plan_types import Plan
from nachos_deploy.docker import engine
from nachos_deploy.io.stack import Stack, with_subnets

Listed = list[engine.EngineNetwork]


def own_networks(plan: Plan) -> dict[str, str]:
    """The engine's names of this stack's networks (Compose and Swarm both name them
    ``<project>_<network>``), to the plan's: they are this stack's to keep or recreate."""
    names = {name for name, _ in plan.networks}
    if plan.subnets is not None:
        names.update(name for name, _ in plan.subnets.assigned)
    return {f"{plan.project}_{name}": name for name in names}


def stale_networks(plan: Plan, listed: Listed) -> list[str]:
    """This project's networks the plan no longer has (their component was disabled or removed):
    the `up` that applies the plan removes them once its containers are off them, and until then they
    stand in no block's way, only in the way of a planned subnet they overlap."""
    own = own_networks(plan)
    return sorted(n.name for n in listed if n.project == plan.project and n.name not in own)


def settle(stack: Stack, networks: Listed | None = None) -> tuple[Stack, bool]:
    """``stack``, or the same stack rendered with its networks in a free block of the pool, and
    whether a network of the stack is in that block already (another `up` then sees the block taken:
    io/locks.networks_lock is not needed). An EnvironmentProblem (exit 4) when the pool has no free
    block. ``networks``: the engine's, when the caller read them already (engine.engine_subnets)."""
    plan = stack.plan
    if plan.subnets is None:  # networks.pool: docker, the engine's own choice
        return stack, True
    listed = engine.engine_subnets() if networks is None else networks
    own = own_networks(plan)
    existing = [(n.name, n.subnets) for n in listed]
    placed = subnets.settle(plan.project, plan.subnets, own, existing, stale_networks(plan, listed))
    if placed is None:
        raise EnvironmentProblem(ran_out(plan, [n for n in listed if n.name not in own]))
    block = ipaddress.IPv4Network(placed.block)
    mine = [network for n in listed if n.name in own for network in subnets.ipv4_networks(n.subnets)]
    held = any(network.overlaps(block) for network in mine)
    return (stack if placed == plan.subnets else with_subnets(stack, placed)), held


def moved(before: Stack, after: Stack) -> str | None:
    """What to tell the user when :func:`settle` moved the stack, else None."""
    if before.plan.subnets is None or after.plan.subnets is None:
        return None
    if before.plan.subnets.block == after.plan.subnets.block:
        return None
    return (
        f"Networks: this project's block {before.plan.subnets.block} of networks.pool overlaps a network "
        f"of this engine, so the stack takes {after.plan.subnets.block} (docs/networks.md#collisions)"
    )


def ran_out(plan: Plan, existing: Listed) -> str:
    """No block of the stack's size is free: the networks in the way and the ways out."""
    assert plan.subnets is not None
    block = ipaddress.IPv4Network(plan.subnets.block)
    example = ""
    for network in existing:
        taken = [subnet for subnet in subnets.ipv4_networks(network.subnets) if subnet.overlaps(block)]
        if taken:
            example = f" (this project's block {block} overlaps {network.name}, {taken[0]})"
            break
    return (
        f"networks.pool {plan.subnets.pool} has no free range of the size project {plan.project} takes "
        f"(a /{block.prefixlen}): every one overlaps a network of this engine{example}. The "
        "range ran out. Give networks.pool another private range that no network of this engine uses "
        "(in the deploy file, or `--set networks.pool=10.123.0.0/16`), or remove networks you no longer "
        "use (`docker network prune`, or `nachos-deploy down` of old stacks), then run `nachos-deploy "
        "up` again (docs/networks.md#collisions)."
    )

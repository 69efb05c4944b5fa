"""Which machine of a swarm runs which node of a clustered bus (``target: swarm``, ``bus.nodes`` > 1).

The nodes of a clustered bus are separate Swarm services (each keeps its own volume and server
name), and Swarm spreads the replicas of one service, not several services: left alone, it may put
two bus nodes on one machine, and losing that machine then loses the cluster's quorum. So each bus
node is pinned by a node label, ``org.nachos-deploy.<project>.<node>=true``, which the stack file
names as the node's placement constraint and which ``up`` puts on the swarm's machines:

- one bus node per ready machine while there are enough of them (a machine that is down or
  drained counts as not ready), else as evenly as they allow, which ``up`` says;
- a bus node stays where its label is while that machine is ready and not over its share: its
  JetStream volume is there; it moves when its machine is down or drained, or to spread a bus that
  shared machines once more of them are ready (it then starts empty and catches up from its peers);
- an operator may set the labels beforehand to choose the machines (``docker node update
  --label-add``); ``down --volumes`` removes them, a plain ``down`` keeps them with the volumes.

Pure: the machines come in, the label changes go out; :mod:`nachos_deploy.docker.swarm` does the calls.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

LABEL_PREFIX = "org.nachos-deploy"


def label(project: str, node: str) -> str:
    return f"{LABEL_PREFIX}.{project}.{node}"


def constraint(project: str, node: str) -> str:
    """The bus node's placement constraint in the stack file."""
    return f"node.labels.{label(project, node)} == true"


@dataclass(frozen=True)
class Machine:
    """A node of the swarm as Swarm's manager sees it (``docker node inspect``)."""

    id: str
    hostname: str
    ready: bool  # status ready and availability active: Swarm may put a task there
    labels: frozenset[str]


@dataclass(frozen=True)
class Assignment:
    where: dict[str, str]  # bus node -> machine id
    add: dict[str, tuple[str, ...]]  # machine id -> labels to add
    remove: dict[str, tuple[str, ...]]  # machine id -> labels to remove
    shared: dict[str, tuple[str, ...]]  # hostname -> the bus nodes it runs, when more than one

    @property
    def changed(self) -> bool:
        return bool(self.add or self.remove)


def assign(project: str, nodes: Sequence[str], machines: Sequence[Machine]) -> Assignment:
    """Place ``nodes`` on the ready ``machines``, keeping each where its label is when allowed.

    A machine takes at most its share (``ceil(nodes / ready machines)``), so three bus nodes on
    three ready machines are on three machines, whatever the labels said before."""
    ready = [m for m in machines if m.ready]
    if not ready:
        return Assignment({}, {}, {}, {})
    share = math.ceil(len(nodes) / len(ready))
    load = {m.id: 0 for m in ready}
    where: dict[str, str] = {}
    for node in nodes:
        holders = [m for m in ready if label(project, node) in m.labels and load[m.id] < share]
        if holders:
            where[node] = holders[0].id
            load[holders[0].id] += 1
    for node in nodes:
        if node not in where:
            chosen = min(ready, key=lambda m: load[m.id])  # the first of the least loaded, in order
            where[node] = chosen.id
            load[chosen.id] += 1
    add: dict[str, tuple[str, ...]] = {}
    remove: dict[str, tuple[str, ...]] = {}
    ours = {label(project, n) for n in nodes}
    for machine in machines:
        wanted = {label(project, n) for n in nodes if where[n] == machine.id}
        if missing := sorted(wanted - machine.labels):
            add[machine.id] = tuple(missing)
        if extra := sorted((machine.labels & ours) - wanted):
            remove[machine.id] = tuple(extra)
    names = {m.id: m.hostname for m in machines}
    shared = {names[m.id]: tuple(n for n in nodes if where[n] == m.id) for m in ready if load[m.id] > 1}
    return Assignment(where, add, remove, shared)


def released(project: str, machines: Sequence[Machine]) -> dict[str, tuple[str, ...]]:
    """The project's bus labels on each machine, to remove when its volumes go (``down --volumes``)."""
    prefix = f"{LABEL_PREFIX}.{project}."
    found = {m.id: tuple(sorted(x for x in m.labels if x.startswith(prefix))) for m in machines}
    return {machine: labels for machine, labels in found.items() if labels}

"""Upgrading a running clustered bus one node at a time, so that it never stops serving.

Left to itself, ``up`` hands the bus's nodes to the engine together, and Compose recreates every
node whose image or configuration changed at once: the cluster loses its quorum, the host's URL and
every component's sidecar lose the bus, and a publish to the audit stream gets no ack until the new
nodes have elected leaders again. So before the bus set is started, the nodes the engine would
recreate are replaced here one at a time: the nodes that do not lead the JetStream meta group
first, its leader last (one leader election instead of one per node); the streams a node leads are
handed to a current replica before it goes (a step-down: measured, a median of 17 requests of about
300 failing per upgrade instead of 69, docs/bus-upgrade.md); and the next one only once
the replaced node is proven back: running on its new container, healthy and routed to every other
node (a request crossing it), the cluster agreeing on one meta leader, and every replicated stream
(the audit stream and any other) with its leader and every replica current again, lag 0, the
replaced node's heard from since it came back. A node that does not come back within the timeout
stops the upgrade there (exit 5, naming the node and what it lacks); the others keep serving, and
the nodes not replaced yet stay as they were.

A single-node bus cannot be replaced without a gap, and a cluster with a node already down is
started as before (all nodes together): a rolling replacement needs a whole cluster to start from.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from nachos_deploy.bus import monitor, replicas
from nachos_deploy.bus.monitor import BusUnavailable, MonitorProblem
from nachos_deploy.core.errors import BusFailure
from nachos_deploy.core.results import Endpoints
from nachos_deploy.docker.engine import ServiceState
from nachos_deploy.targets import Target

Progress = Callable[[str], None]
POLL = 0.1
LOG_LINES = 20


def roll(target: Target, deadline: float, progress: Progress) -> list[str]:
    """Replace, one at a time, the running nodes of a clustered bus that the engine would recreate,
    each proven back before the next; returns the nodes replaced, in order (empty: nothing to do
    here, the bus set is started as always)."""
    stack = target.stack
    if not stack.plan.bus.clustered:
        return []
    names = [node.name for node in stack.plan.bus.nodes]
    # What `plan` reads (Target.changes): the nodes the engine would recreate, and why.
    changes = {c.name: c.reasons for c in target.changes(()) if c.name in names and c.action == "recreate"}
    if not changes:
        return []
    states = target.states()
    stopped = [name for name in names if (s := states.get(name)) is None or s.status != "running"]
    endpoints = target.endpoints(states)
    if stopped or endpoints is None or len(endpoints.nodes) != len(names):
        return []  # a node to start, or a bus growing to a cluster: the nodes start together, as peers
    problems = _wait_whole(endpoints, deadline)
    if problems:
        raise BusFailure(
            "The bus's nodes were not replaced: the cluster is not whole before the upgrade ("
            + "; ".join(problems)
            + "), and replacing a node now could leave a stream without a quorum. Nothing was "
            f"changed. Run `nachos-deploy status -p {stack.project}` to see which node lacks what, "
            "and `nachos-deploy up` again once it is whole."
        )
    pending = [name for name in names if name in changes]
    done: list[str] = []
    while pending:
        leader = meta_leader(endpoints)
        name = next_node(pending, leader)
        pending.remove(name)
        role = " (the JetStream meta leader, last)" if name == leader and done else ""
        progress(
            f"Replacing {name} ({len(done) + 1} of {len(done) + len(pending) + 1}): new "
            f"{' and '.join(changes[name])}{role}"
        )
        began = time.monotonic()
        _hand_over(endpoints, name, deadline)
        old = target.states().get(name)
        target.replace_bus_node(name)
        _wait_back(target, endpoints, name, old, deadline, done, pending)
        done.append(name)
        progress(
            f"{name} is back ({time.monotonic() - began:.1f} s): healthy, routed, one meta leader, "
            "every replicated stream current"
        )
    return done


def next_node(pending: Sequence[str], leader: str | None) -> str:
    """The next node to replace: one that does not lead the meta group while there is one."""
    return next((name for name in pending if name != leader), pending[0])


def meta_leader(endpoints: Endpoints) -> str | None:
    """The JetStream meta leader as the first node that answers names it."""
    for _, _, url in endpoints.nodes:
        view = monitor.node_view(url)
        if view.leader is not None:
            return view.leader
    return None


def whole(endpoints: Endpoints, fresh: dict[str, float]) -> list[str]:
    """What keeps the cluster from being whole now: each node healthy and routed, one meta leader,
    every replicated stream with a leader and every replica current (``fresh``: see
    :func:`nachos_deploy.bus.replicas.problems`). Empty when it is whole."""
    nodes = [(name, url) for name, _, url in endpoints.nodes]
    problems = monitor.check_cluster(nodes)
    if problems:
        return problems
    try:
        views = replicas.streams(endpoints.nats_url)
    except BusUnavailable as exc:
        return [str(exc)]
    return replicas.problems(views, fresh=fresh)


def _wait_whole(endpoints: Endpoints, deadline: float) -> list[str]:
    problems = ["not asked yet"]
    while time.monotonic() < deadline:
        problems = whole(endpoints, {})
        if not problems:
            return []
        time.sleep(POLL)
    return problems


def _wait_back(
    target: Target,
    endpoints: Endpoints,
    name: str,
    old: ServiceState | None,
    deadline: float,
    done: Sequence[str],
    pending: Sequence[str],
) -> None:
    """Until ``name`` runs on a new container and the cluster is whole with it, a request crossing
    it; a container that exits or restarts ends the wait at once."""
    from nachos_deploy.bus import natsclient

    urls = {node: url for node, url, _ in endpoints.nodes}
    other = next(url for node, url in urls.items() if node != name)
    problems = [f"{name} has no new container yet"]
    while time.monotonic() < deadline:
        state = target.states().get(name)
        if state is None or (old is not None and state.container_id == old.container_id):
            problems = [f"{name} has no new container yet"]
        elif state.status in ("exited", "dead") or state.restart_count > 0:
            problems = [f"{name} exited with code {state.exit_code}"]
            break
        elif state.status != "running":
            problems = [f"{name} is {state.status}"]
        else:
            ran = time.time() - (state.started_at or time.time())
            problems = whole(endpoints, {name: ran})
            if not problems:
                try:
                    natsclient.cross_round_trip(urls[name], other, timeout=2.0)
                    return
                except MonitorProblem as exc:
                    problems = [f"{name} does not carry a request to its peers ({exc})"]
        time.sleep(POLL)
    project = target.stack.project
    untouched = f"; {_were(pending)} left as they were" if pending else ""
    replaced = f" ({_were(done)} replaced and proven before it)" if done else ""
    raise BusFailure(
        f"The bus's node {name} was replaced but did not come back: {'; '.join(problems)}{replaced}. "
        f"The other nodes keep serving{untouched}; no component was touched. Its last log lines are "
        f"below; fix the cause (`nachos-deploy logs {name} -p {project}`), then run `nachos-deploy up` "
        "again.",
        details="\n".join(f"    {line}" for line in target.logs_tail(name, LOG_LINES).splitlines()),
    )


def _were(names: Sequence[str]) -> str:
    return f"{', '.join(names)} {'was' if len(names) == 1 else 'were'}"


def _hand_over(endpoints: Endpoints, name: str, deadline: float) -> None:
    """The streams ``name`` leads handed to a current replica before it goes, so that a publish
    waits for no election; best effort (the replacement elects a leader anyway)."""
    until = min(deadline, time.monotonic() + 5.0)
    try:
        led = [v.name for v in replicas.streams(endpoints.nats_url) if v.leader == name and v.replicas > 1]
        for stream in led:
            replicas.step_down(endpoints.nats_url, stream)
        while led and time.monotonic() < until:
            views = replicas.streams(endpoints.nats_url)
            if not any(v.leader in (name, None) for v in views if v.name in led):
                return
            time.sleep(POLL)
    except BusUnavailable:
        return

"""The bus's TLS certificate made again while the bus runs: ``up`` has the running nodes re-read it.

A nats-server reads its certificate and key only when it starts or reloads, and a bus whose rendered
files did not change is left running (Compose keeps its container; ``up``'s fast path does not even
ask Compose). So a server certificate made again with nothing else changed (near its end, for a new
host name, by ``render``, or a user's new files copied in) would be served only from the bus's next
restart, while clients already see the files on disk. ``up`` compares the server's files with those
the bus last read (io/bus_tls.py records them) and, when they differ, sends the running nodes a
SIGHUP before anything else starts: nats-server re-reads its TLS files in place, keeping every
client's connection. On Swarm the files are secrets named by their hash, so the deploy that
follows replaces the bus's tasks instead (``Target.reload`` says it cannot reload in place).
"""

from __future__ import annotations

from collections.abc import Callable

from nachos_deploy.io import bus_tls
from nachos_deploy.targets import Target

Progress = Callable[[str], None]


def reload_if_renewed(target: Target, progress: Progress) -> list[str]:
    """Reload the running bus nodes when the server's TLS files are not those they last read, and
    note the files as read (a node that is not running reads them when it starts). Returns the
    nodes asked to reload (none when TLS is off or the files are the ones the bus has)."""
    stack = target.stack
    if stack.plan.bus.tls is None or bus_tls.loaded(stack.output_dir):
        return []
    states = target.states()
    nodes = [
        node.name
        for node in stack.plan.bus.nodes
        if (state := states.get(node.name)) is not None and state.status == "running"
    ]
    if nodes:
        progress("Reloading the bus: its TLS certificate was made again")
        target.reload(nodes)
    bus_tls.record_loaded(stack.output_dir)
    return nodes

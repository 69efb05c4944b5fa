"""A 3-node bus losing each node in turn, repeated: what a client of the host's one NATS URL sees.

The sequence of tests/test_node_loss.py, ``--rounds`` times on one stack: for each node (bus, bus-2,
bus-3), a default nats-py client that the forwarder relayed to that node requests a probe component
through its sidecar and publishes to the audit stream with Nats-Msg-Id while the node is killed
(SIGKILL). Per kill it prints the seconds from the node's death (its client's connection closed)
until a request was answered again, the messages acked, and how long `status` took to name only
the dead node; then a plain `up` brings the node back and the next kill waits until `status` is
ok. At the end, acked messages missing from the stream (the goal: 0). Prints figures; exits 1 when
an acked message was lost or a kill was answered again later than the test's 2 s
(tests/test_node_loss.py, which CI runs, kills the first node once). Usage:

    .venv/bin/python benchmarks/node_loss.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository, for tests/

from tests.test_audit import Stack, stored_ids
from tests.test_lifecycle import PROBE, containers
from tests.test_node_loss import (
    ANSWERED_WITHIN,
    CLUSTER,
    NODES,
    Watched,
    lose,
    one_client_per_node,
    only_the_dead_node,
)


def wait(check: object, timeout: float) -> float:
    began = time.monotonic()
    while not check():  # type: ignore[operator]
        if time.monotonic() - began > timeout:
            raise SystemExit(f"not within {timeout} s")
        time.sleep(0.2)
    return time.monotonic() - began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="times each node is killed (default 3)")
    rounds = parser.parse_args().rounds
    with tempfile.TemporaryDirectory() as folder:
        stack = Stack(Path(folder), {"webchat": {"enabled": True, "image": PROBE, "egress": False}})
        document = yaml.safe_load(stack.file.read_text())
        document["bus"].update(CLUSTER["bus"])
        stack.file.write_text(yaml.safe_dump(document))
        loop = asyncio.new_event_loop()
        clients: dict[str, Watched] = {}
        try:
            url = str(stack.up()["nats_url"])
            answered: list[float] = []
            acked_all: set[str] = set()
            for round_ in range(rounds):
                for victim in NODES:
                    for watched in clients.values():
                        loop.run_until_complete(watched.client.close())
                    clients = loop.run_until_complete(one_client_per_node(url))
                    time.sleep(2.1)  # nats-py's reconnect_time_wait since its last dial
                    container = containers(stack.project)[victim]
                    took, _, acked, _ = loop.run_until_complete(
                        lose(clients[victim], container, f"r{round_}-{victim}-")
                    )
                    named = wait(only_the_dead_node(stack, victim), 30)
                    began = time.monotonic()
                    assert stack.up()["ok"] is True
                    back = time.monotonic() - began
                    whole = wait(lambda: stack.run("status").returncode == 0, 90)
                    answered.append(took)
                    acked_all |= acked
                    print(
                        f"round {round_ + 1} {victim:5}: answered again after {took:.2f} s, "
                        f"{len(acked)} acked, status named only it within {named:.1f} s, "
                        f"up {back:.1f} s, caught up {whole:.1f} s later",
                        flush=True,
                    )
            ids = set(loop.run_until_complete(stored_ids(url)))
        finally:
            for watched in clients.values():
                loop.run_until_complete(watched.client.close())
            loop.close()
            stack.run("down", "--volumes", "--yes")
    lost = len(acked_all - ids)
    print(
        f"{len(answered)} kills: answered again after {min(answered):.2f} to {max(answered):.2f} s "
        f"(median {statistics.median(answered):.2f} s); {len(acked_all)} acked, {lost} lost"
    )
    late = [took for took in answered if took > ANSWERED_WITHIN]
    if late:
        print(f"{len(late)} kill(s) answered again later than {ANSWERED_WITHIN} s: {late}")
    return 1 if lost or late else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""tests/test_bus_upgrade.py on Swarm: a running 3-node bus whose nodes' configuration changes is
replaced one node at a time (each node its own service, updated by a deploy of a file naming it
alone), while a client on the host publishes with Nats-Msg-Id and requests a component: no acked
message lost, never two nodes down together, requests unanswered for a short blip only."""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
import time
from pathlib import Path

import pytest

from tests.test_audit import stored_ids
from tests.test_bus_upgrade import BLIP_BUDGET, NodeEvents, Traffic, at_most_one_down, drive
from tests.test_lifecycle import PROBE
from tests.test_node_loss import NODES
from tests.test_swarm import SwarmStack, swarm  # noqa: F401  (the module's one-node swarm)

pytestmark = pytest.mark.filterwarnings(
    "ignore:unclosed:ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning"
)


def test_swarm_replaces_a_clustered_bus_one_node_at_a_time(swarm: None, tmp_path: Path) -> None:  # noqa: F811
    stack = SwarmStack(
        tmp_path, {"webchat": {"enabled": True, "image": PROBE, "egress": False}}, {"nodes": 3}
    )
    try:
        first = stack.run("up", "--json")
        assert first.returncode == 0, first.stdout + first.stderr
        result = json.loads(first.stdout)
        url = result["nats_url"]
        tls = ssl.create_default_context(cafile=result["ca_file"])
        tls.check_hostname = False  # the URL's host is this machine; the CA is the stack's own
        traffic = Traffic()
        runner = threading.Thread(
            target=lambda: asyncio.run(drive(url, traffic, "sw-", tls=tls)), daemon=True
        )
        runner.start()
        for _ in range(100):
            if traffic.answered and traffic.acked:
                break
            time.sleep(0.1)
        assert traffic.answered and traffic.acked, "nothing answered or acked before the upgrade"

        events = NodeEvents(stack.project, swarm=True)
        began = time.monotonic()
        done = stack.run("up", "--json", "--set", "bus.max_pending=48MB")
        ended = time.monotonic()
        seen = events.stop()
        time.sleep(1.0)
        traffic.stop.set()
        runner.join(timeout=15)
        assert done.returncode == 0, done.stdout + done.stderr
        print(done.stderr)

        order = at_most_one_down(seen)
        assert sorted(order) == sorted(NODES), seen
        for index, node in enumerate(order, 1):
            assert f"Replacing {node} ({index} of 3)" in done.stderr, done.stderr
        ids = asyncio.run(stored_ids(url, tls))
        assert not traffic.acked - set(ids), f"{len(traffic.acked - set(ids))} acked message(s) lost"
        blips = traffic.blips(began, ended)
        total = sum(seconds for _, seconds in blips)
        phase = json.loads(done.stdout)["phases"]["bus_upgrade"]
        print(
            f"swarm upgrade {ended - began:.1f} s (nodes {phase:.1f} s), "
            f"order {order}; {len(traffic.acked)} acked, 0 lost; {traffic.failed} requests failed; "
            "blips " + ", ".join(f"{s:.2f} s at {at:.1f}" for at, s in blips) + f" = {total:.2f} s"
        )
        assert total < BLIP_BUDGET, f"requests unanswered for {total:.2f} s in all: {blips}"
    finally:
        stack.run("down", "--volumes", "--yes")

"""A running 3-node bus changed by `up` (issue 21, section 4): the nodes are replaced one at a time,
each proven back (healthy, routed, one JetStream meta leader, every replicated stream current) before
the next goes, while a client on the host publishes to the audit stream with `Nats-Msg-Id` and
requests a component through its sidecar the whole time. No acked message may be lost, no two nodes
may be down together (the engine's own events, streamed live), and the requests may go unanswered
for a short blip only (measured, printed)."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import pytest

from tests.test_audit import Stack, stored_ids
from tests.test_lifecycle import containers
from tests.test_node_loss import NODES, REQUEST, clustered, monitor

pytestmark = pytest.mark.filterwarnings(
    "ignore:unclosed:ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning"
)
# Seconds, in total, that requests from the host may go unanswered during the upgrade. Each node's
# replacement moves the host client and the component's sidecar that were on it to a survivor
# (the sidecar redials within a second, nats-py right away or after its 2 s reconnect wait).
BLIP_BUDGET = 6.0
GAP = 0.5  # seconds between two answered requests that count as a blip (a request waits 0.25 s)
# 48 MiB: a change of the nodes' nats.conf alone (the default is 64 MiB), so Compose would recreate
# the three nodes and nothing else (a new bus.image also recreates the forwarder and the sidecars,
# which run that image too: benchmarks/bus_upgrade.py measures that case).
CHANGED_MAX_PENDING = 50331648


class NodeEvents:
    """The bus nodes' containers dying and starting, streamed live while `up` runs (``swarm``: the
    tasks' containers of a Swarm stack)."""

    def __init__(self, project: str, *, swarm: bool = False) -> None:
        label = "com.docker.stack.namespace" if swarm else "com.docker.compose.project"
        service = "com.docker.swarm.service.name" if swarm else "com.docker.compose.service"
        self.prefix = f"{project}_" if swarm else ""
        template = f'{{{{.Action}}}} {{{{index .Actor.Attributes "{service}"}}}} {{{{.TimeNano}}}}'
        self.proc = subprocess.Popen(
            [
                "docker", "events", "--filter", "type=container", "--filter", "event=die",
                "--filter", "event=start", "--filter", f"label={label}={project}", "--format", template,
            ],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        time.sleep(0.5)  # subscribed before anything happens

    def stop(self) -> list[tuple[str, str, float]]:
        """(action, service, epoch seconds) of every container's event, in order."""
        time.sleep(0.5)
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=10)
        return [
            (f[0], f[1].removeprefix(self.prefix), int(f[2]) / 1e9)
            for line in out.splitlines()
            if len(f := line.split()) == 3
        ]


def at_most_one_down(events: list[tuple[str, str, float]]) -> list[str]:
    """The nodes in the order they were replaced; fails when a node died while another was down."""
    down: set[str] = set()
    order = []
    for action, node, _ in events:
        if node not in NODES:
            continue
        if action == "die":
            assert not down, f"{node} went down while {down} was down: {events}"
            down.add(node)
        elif action == "start" and node in down:
            down.discard(node)
            order.append(node)
    assert not down, f"{down} did not start again: {events}"
    return order


@dataclass
class Traffic:
    """What a host client saw while the upgrade ran: acked and unsure publishes, answered requests."""

    acked: set[str] = field(default_factory=set)
    unsure: set[str] = field(default_factory=set)
    answered: list[float] = field(default_factory=list)
    failed: int = 0
    why: dict[str, int] = field(default_factory=dict)  # failed requests by nats-py's error
    stop: threading.Event = field(default_factory=threading.Event)

    def blips(self, began: float, ended: float) -> list[tuple[float, float]]:
        """(when, seconds): gaps longer than GAP between answered requests within [began, ended],
        ``when`` in seconds from ``began``."""
        moments = [began, *(m for m in self.answered if began <= m <= ended), ended]
        return [(a - began, b - a) for a, b in itertools.pairwise(moments) if b - a > GAP]


async def drive(url: str | list[str], traffic: Traffic, prefix: str, **options: Any) -> None:
    """Publish with Nats-Msg-Id and request the component until told to stop (nats-py's defaults;
    ``options``: more of nats.connect's, such as the ``tls`` context a Swarm stack's URL needs)."""
    client = await nats.connect(url, name="bus-upgrade-test", **options)
    js = client.jetstream(timeout=2)

    async def publish() -> None:
        index = 0
        while not traffic.stop.is_set():
            msg_id = f"{prefix}{index}"
            index += 1
            try:
                await js.publish("nachos.audit.log", b"upgrade", headers={"Nats-Msg-Id": msg_id})
                traffic.acked.add(msg_id)
            except (TimeoutError, nats.errors.Error):
                traffic.unsure.add(msg_id)
            await asyncio.sleep(0.01)

    async def request() -> None:
        while not traffic.stop.is_set():
            began = time.monotonic()
            try:
                await client.request(REQUEST, b"{}", timeout=0.25)
                traffic.answered.append(began)
                await asyncio.sleep(0.02)
            except (TimeoutError, nats.errors.Error) as exc:
                traffic.failed += 1
                traffic.why[type(exc).__name__] = traffic.why.get(type(exc).__name__, 0) + 1
                await asyncio.sleep(0.02)

    try:
        await asyncio.gather(publish(), request())
    finally:
        await client.close()


@pytest.fixture
def cluster(engine: str, tmp_path: Path) -> Iterator[Stack]:
    with clustered(tmp_path) as stack:
        yield stack


def test_up_replaces_a_clustered_bus_one_node_at_a_time_losing_no_acked_message(cluster: Stack) -> None:
    stack = cluster
    url = str(stack.up()["nats_url"])
    before = containers(stack.project)
    traffic = Traffic()
    runner = threading.Thread(target=lambda: asyncio.run(drive(url, traffic, "up-")), daemon=True)
    runner.start()
    for _ in range(100):  # the client is answered and acked before the upgrade
        if traffic.answered and traffic.acked:
            break
        time.sleep(0.1)
    assert traffic.answered and traffic.acked, "nothing answered or acked before the upgrade"

    events = NodeEvents(stack.project)
    began, epoch = time.monotonic(), time.time()
    print(f"before the upgrade: {len(traffic.acked)} acked, {len(traffic.answered)} answered")
    done = stack.run("up", "--json", "--set", f"bus.max_pending={CHANGED_MAX_PENDING}")
    ended = time.monotonic()
    seen = events.stop()
    time.sleep(1.0)  # traffic after the upgrade, as after each node
    traffic.stop.set()
    runner.join(timeout=15)
    print(f"up took {ended - began:.1f} s; the client stopped: {not runner.is_alive()}")
    assert done.returncode == 0, done.stdout + done.stderr
    print(done.stderr)  # one line per node replaced, and when it was back

    # One at a time, each announced, and every node now runs the new configuration.
    order = at_most_one_down(seen)
    assert sorted(order) == sorted(NODES), seen
    for index, node in enumerate(order, 1):
        assert f"Replacing {node} ({index} of 3)" in done.stderr, done.stderr
    phase = json.loads(done.stdout)["phases"]["bus_upgrade"]
    after = containers(stack.project)
    for node in NODES:
        assert after[node] != before[node]
    for node in json.loads(done.stdout)["nodes"]:  # each node runs the new configuration
        assert monitor(node["monitor_url"], "/varz")["max_pending"] == CHANGED_MAX_PENDING
    for kept in ("bus-ports", "bus-webchat", "webchat"):  # a change of the nodes alone
        assert after[kept] == before[kept], f"{kept} was replaced"

    # No acked message lost, nothing stored that was never sent.
    ids = asyncio.run(stored_ids(url))
    lost = traffic.acked - set(ids)
    assert not lost, f"{len(lost)} acked message(s) lost"
    assert set(ids) <= traffic.acked | traffic.unsure

    blips = traffic.blips(began, ended)
    total = sum(seconds for _, seconds in blips)
    print("events: " + ", ".join(f"{node} {action} at {at - epoch:.1f}" for action, node, at in seen))
    print(
        f"upgrade {ended - began:.1f} s (replacing the nodes {phase:.1f} s), "
        f"order {order}; {len(traffic.acked)} acked, {len(traffic.unsure)} unsure, 0 lost; "
        f"{len(traffic.answered)} requests answered, {traffic.failed} failed; "
        "blips " + ", ".join(f"{seconds:.2f} s at {at:.1f}" for at, seconds in blips) + f" = {total:.2f} s"
    )
    assert total < BLIP_BUDGET, f"requests unanswered for {total:.2f} s in all: {blips}"

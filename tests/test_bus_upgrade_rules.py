"""The rules of a clustered bus's rolling upgrade, without an engine: which stream views count as
whole (bus/replicas.py), which node goes next, and that `up` replaces the next node only once the
replaced one is back and every replicated stream is current again (lifecycle/bus_upgrade.py over a
scripted target and scripted views of the cluster). tests/test_bus_upgrade.py does it for real."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import PurePath
from types import SimpleNamespace
from typing import Any

import pytest

from nachos_deploy.bus import monitor, natsclient, replicas
from nachos_deploy.bus.replicas import Replica, StreamView
from nachos_deploy.core.changes import ServiceChange
from nachos_deploy.core.config import DeployConfig
from nachos_deploy.core.errors import BusFailure, ExitCode
from nachos_deploy.core.plan import make_plan
from nachos_deploy.core.results import Endpoints
from nachos_deploy.lifecycle import bus_upgrade
from tests.fake_target import container

NODES = ("bus", "bus-2", "bus-3")


def view(*peers: Replica, leader: str | None = "bus", replicas_: int = 3) -> StreamView:
    return StreamView("AUDIT", replicas_, leader, peers, 10)


def current(node: str, heard: float = 0.1) -> Replica:
    return Replica(node, True, False, 0, heard)


def test_a_stream_is_whole_with_a_leader_and_every_other_replica_current() -> None:
    assert replicas.problems([view(current("bus-2"), current("bus-3"))]) == []
    assert replicas.problems([view(leader=None)]) == ["stream AUDIT has no leader"]
    assert replicas.problems([view(current("bus-2"))]) == ["stream AUDIT lists 2 of its 3 replicas"]
    behind = Replica("bus-3", False, False, 12, 0.1)
    assert replicas.problems([view(current("bus-2"), behind)]) == [
        "stream AUDIT's replica on bus-3 is not current (lag 12)"
    ]
    lagging = Replica("bus-3", True, False, 3, 0.1)  # current by its flag, but not caught up
    assert replicas.problems([view(current("bus-2"), lagging)]) != []
    gone = Replica("bus-3", False, True, 0, 9.0)
    assert replicas.problems([view(current("bus-2"), gone)]) == ["stream AUDIT's replica on bus-3 is offline"]
    # One replica: nothing to be current with.
    assert replicas.problems([view(leader="bus", replicas_=1)]) == []


def test_a_replaced_node_counts_only_once_its_leader_heard_from_it_since_it_came_back() -> None:
    # The leader calls a peer that has just gone current for a while: heard 3 s ago, back 1 s ago.
    stale = [view(current("bus-2"), current("bus-3", heard=3.0))]
    assert replicas.problems(stale, fresh={"bus-3": 1.0}) == [
        "stream AUDIT's leader has not heard from bus-3 since it came back"
    ]
    assert replicas.problems(stale, fresh={"bus-3": 5.0}) == []


def test_the_meta_leader_goes_last() -> None:
    assert bus_upgrade.next_node(["bus", "bus-2", "bus-3"], "bus") == "bus-2"
    assert bus_upgrade.next_node(["bus"], "bus") == "bus"
    assert bus_upgrade.next_node(["bus-2", "bus-3"], None) == "bus-2"


@dataclass
class Cluster:
    """A scripted cluster: nodes replaced, how long each one's replica stays behind, and the log of
    what the upgrade did and saw, in order."""

    recreate: dict[str, tuple[str, ...]]
    behind_for: int = 3  # looks at the streams that find the replaced node's replica behind
    never_back: str | None = None  # a node whose new container never runs
    log: list[str] = field(default_factory=list)
    now: dict[str, Any] = field(default_factory=dict)
    behind: dict[str, int] = field(default_factory=dict)
    leader: str = "bus"  # the audit stream's leader (and the meta group's, below)

    def __post_init__(self) -> None:
        plan = make_plan(DeployConfig.model_validate({"bus": {"nodes": 3}}), base_dir=PurePath("/a"))
        self.stack = SimpleNamespace(plan=plan, project="rules")
        self.now = {name: container(name, started_at=time.time() - 60) for name in NODES}
        self.now["bus-ports"] = container("bus-ports")

    # -- the target's part ------------------------------------------------------------------------
    def changes(self, only: object) -> list[ServiceChange]:  # what `plan` reads: here, scripted
        return [ServiceChange(name, "recreate", why) for name, why in self.recreate.items()] + [
            ServiceChange("bus-ports", "keep"),
            ServiceChange("bus-4", "recreate", ("image",)),  # not a node of this bus: never replaced
        ]

    def states(self, *, recent: bool = False) -> dict[str, Any]:
        return dict(self.now)

    def endpoints(self, states: object = None) -> Endpoints:
        return Endpoints(
            "nats://all", "nats://sys", tuple((n, f"nats://{n}", f"nats://sys@{n}") for n in NODES)
        )

    def replace_bus_node(self, name: str) -> None:
        self.log.append(f"replace {name}")
        status = "created" if name == self.never_back else "running"
        self.now[name] = container(name, status, run=2, started_at=time.time())
        self.behind[name] = self.behind_for

    def logs_tail(self, name: str, lines: int) -> str:
        return f"{name}'s last words"

    # -- the bus's part ---------------------------------------------------------------------------
    def streams(self, nats_url: str, *, timeout: float = 2.0) -> list[StreamView]:
        peers = []
        for node in NODES:
            if node == self.leader:
                continue
            if self.behind.get(node, 0) > 0:
                self.behind[node] -= 1
                self.log.append(f"{node} behind")
                peers.append(Replica(node, False, False, 5, 0.01))
            else:
                peers.append(current(node, heard=0.0))
        return [view(*peers, leader=self.leader)]

    def step_down(self, nats_url: str, stream: str, *, timeout: float = 2.0) -> None:
        self.log.append(f"step down {stream}")
        self.leader = next(node for node in NODES if node != self.leader)


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    scripted = Cluster({"bus": ("image",), "bus-2": ("image",), "bus-3": ("image",)})
    monkeypatch.setattr(monitor, "check_cluster", lambda nodes: [])
    monkeypatch.setattr(monitor, "node_view", lambda url, timeout=1.0: SimpleNamespace(leader="bus"))
    monkeypatch.setattr(replicas, "streams", scripted.streams)
    monkeypatch.setattr(replicas, "step_down", scripted.step_down)
    monkeypatch.setattr(natsclient, "cross_round_trip", lambda a, b, timeout=5.0: 1.0)
    monkeypatch.setattr(bus_upgrade, "POLL", 0.001)
    yield scripted


def test_the_next_node_goes_only_once_every_stream_is_current_again(cluster: Cluster) -> None:
    lines: list[str] = []
    done = bus_upgrade.roll(cluster, time.monotonic() + 10, lines.append)  # type: ignore[arg-type]
    assert done == ["bus-2", "bus-3", "bus"]  # the meta leader last
    assert [line for line in cluster.log if line.startswith("replace")] == [
        "replace bus-2",
        "replace bus-3",
        "replace bus",
    ]
    # Each replaced node's replica was behind three looks, and the next node waited for all three.
    second = cluster.log.index("replace bus-3")
    assert cluster.log[:second] == ["replace bus-2", *["bus-2 behind"] * 3]
    assert cluster.log[second + 1 : second + 4] == ["bus-3 behind"] * 3
    # The stream's leader handed its leadership on before its node went, and only then.
    assert cluster.log[-5:] == ["step down AUDIT", "replace bus", *["bus behind"] * 3]
    assert cluster.log.count("step down AUDIT") == 1
    assert lines[0] == "Replacing bus-2 (1 of 3): new image"
    assert lines[-2] == "Replacing bus (3 of 3): new image (the JetStream meta leader, last)"


def test_a_node_that_does_not_come_back_stops_the_upgrade_there(cluster: Cluster) -> None:
    cluster.never_back = "bus-2"
    with pytest.raises(BusFailure) as failed:
        bus_upgrade.roll(cluster, time.monotonic() + 0.5, lambda _: None)  # type: ignore[arg-type]
    assert failed.value.exit_code == ExitCode.BUS
    assert "bus-2 was replaced but did not come back: bus-2 is created" in str(failed.value)
    assert "bus, bus-3 were left as they were" in str(failed.value)
    assert cluster.log == ["replace bus-2"]


def test_a_cluster_with_a_node_down_is_started_together_as_before(cluster: Cluster) -> None:
    cluster.now["bus-3"] = replace(cluster.now["bus-3"], status="exited")
    lines: list[str] = []
    assert bus_upgrade.roll(cluster, time.monotonic() + 1, lines.append) == []  # type: ignore[arg-type]
    assert cluster.log == [] and lines == []


def test_nothing_to_replace_is_no_upgrade(cluster: Cluster) -> None:
    cluster.recreate = {}
    assert bus_upgrade.roll(cluster, time.monotonic() + 1, lambda _: None) == []  # type: ignore[arg-type]
    assert cluster.log == []

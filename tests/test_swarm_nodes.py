"""`target: swarm` on a real multi-node swarm on this one machine: three engine-in-container nodes that
scripts/swarm-nodes.sh builds offline (Debian's docker.io in an imported image) and joins into a swarm
of their own, node 1 its only manager. nachos-deploy on the host talks to node 1's engine through
DOCKER_HOST, as it would to a remote manager; the bus's nodes, the sidecar and the component land on
different machines of the swarm.

Nothing is mocked: the nodes are real engines, the overlay networks cross them (VXLAN between the
node containers), and the host reaches the bus through node 1's published ports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from nachos_deploy.docker import swarm
from tests.conftest import ROOT, unavailable
from tests.test_lifecycle import PROBE
from tests.test_node_loss import monitor
from tests.test_swarm import require_offline_engine

SCRIPT = ROOT / "scripts" / "swarm-nodes.sh"
PREFIX = f"mn-t{uuid.uuid4().hex[:4]}"  # containers, volumes, network, socket folder of this run
CLIENT_PORT, MONITOR_PORT = 24322, 28322


def host_env() -> dict[str, str]:
    """The host engine's environment: no DOCKER_HOST leaking in from the caller."""
    return {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}


@dataclass(frozen=True)
class Nodes:
    docker_host: str
    node1_ip: str
    up_seconds: float

    def env(self) -> dict[str, str]:
        return {**host_env(), "DOCKER_HOST": self.docker_host}

    def docker(self, *args: str) -> str:
        """The docker CLI against the swarm's manager (node 1)."""
        done = subprocess.run(["docker", *args], env=self.env(), capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout


def script(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), "--prefix", PREFIX, "--client-port", str(CLIENT_PORT),
         "--monitor-port", str(MONITOR_PORT), *args],
        env=host_env(), capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


@pytest.fixture(scope="module")
def nodes(engine: str) -> Iterator[Nodes]:
    require_offline_engine()
    for image in ("nats:alpine", PROBE):
        found = subprocess.run(["docker", "image", "inspect", image], env=host_env(), capture_output=True)
        if found.returncode != 0:
            unavailable(f"{image} is missing: run `bash scripts/build-images.sh`")
    started = time.monotonic()
    try:
        up = script("up", "3")
        assert up.returncode == 0, up.stderr
        elapsed = time.monotonic() - started
        values = dict(line.split("=", 1) for line in script("env").stdout.splitlines())
        yield Nodes(values["DOCKER_HOST"], values["NODE1_IP"], elapsed)
    finally:
        down = script("down", timeout=300)
        assert down.returncode == 0, down.stderr


def test_the_script_makes_a_three_node_swarm_and_a_second_up_keeps_it(nodes: Nodes) -> None:
    listed = nodes.docker("node", "ls", "--format", "{{.Hostname}} {{.Status}} {{.ManagerStatus}}")
    assert sorted(listed.splitlines()) == [
        f"{PREFIX}-1 Ready Leader",
        f"{PREFIX}-2 Ready ",
        f"{PREFIX}-3 Ready ",
    ]
    info = json.loads(nodes.docker("info", "--format", "{{json .}}"))
    assert info["Name"] == f"{PREFIX}-1" and info["Swarm"]["Nodes"] == 3
    started = time.monotonic()
    again = script("up", "3")
    assert again.returncode == 0, again.stderr
    assert "starting" not in again.stderr and "loading" not in again.stderr, again.stderr
    assert time.monotonic() - started < 15, again.stderr  # nothing to do: about a second when idle
    print(f"3 nodes from nothing: {nodes.up_seconds:.1f} s; again: {time.monotonic() - started:.1f} s")


class Stack:
    def __init__(self, folder: Path, nodes: Nodes) -> None:
        self.project = f"mn-{uuid.uuid4().hex[:6]}"
        self.nodes = nodes
        self.file = folder / "nachos-deploy.yaml"
        document = {
            "project": self.project,
            "target": "swarm",
            "bus": {
                "nodes": 3,
                "client_port": CLIENT_PORT,  # node 1 publishes these on the host's 127.0.0.1
                "monitor_port": MONITOR_PORT,
                "publish_monitor": True,  # the test reads each node's HTTP monitoring itself
                # The other nodes' ports are engine-picked on node 1: reachable at its bridge address
                # only (the host's 127.0.0.1 maps the two fixed ones), so the URLs use that address.
                "bind_address": nodes.node1_ip,
                "healthcheck_interval": "500ms",
            },
            "ingress": {"enabled": False},  # not this test's subject (its image is not on the nodes)
            "components": {
                "gateway": {"enabled": False},
                "llm-proxy": {"enabled": False},
                # Its state folder is a local volume, prepared by volume-init on one node: pinned, as
                # docs/scaling-out.md says of every service that keeps state.
                "webchat": {"enabled": True, "image": PROBE, "placement": ["node.role == manager"]},
            },
        }
        self.file.write_text(yaml.safe_dump(document))

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "nachos_deploy", args[0], "-c", str(self.file), *args[1:]],
            env=self.nodes.env(), capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip

    def wait_until(self, done: Callable[[], bool], timeout: float = 60) -> None:
        end = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < end, "Swarm did not get there in time"
            time.sleep(0.5)

    def placed(self) -> dict[str, str]:
        """Service → the swarm node its running task is on."""
        text = self.nodes.docker(
            "stack",
            "ps",
            "--filter",
            "desired-state=running",
            "--format",
            "{{.Name}} {{.Node}}",
            self.project,
        )
        return {
            name.removeprefix(f"{self.project}_").split(".")[0]: node
            for name, _, node in (line.partition(" ") for line in text.splitlines())
        }


def assert_routed(up: dict[str, Any]) -> None:
    """Every bus node routed to the two others."""
    for node in up["nodes"]:
        routes = monitor(node["monitor_url"], "/routez")["routes"]
        assert {r["remote_name"] for r in routes} == {"bus", "bus-2", "bus-3"} - {node["name"]}  # type: ignore[union-attr]


class NodeEvents:
    """The stack's container deaths on one node's engine, streamed live: (nanoseconds, service)."""

    def __init__(self, node: str, project: str) -> None:
        self.project = project
        self.proc = subprocess.Popen(
            [
                "docker", "exec", node, "docker", "events", "--filter", "type=container",
                "--filter", "event=die", "--filter", f"label=com.docker.stack.namespace={project}",
                "--format", '{{.TimeNano}} {{index .Actor.Attributes "com.docker.swarm.service.name"}}',
            ],
            env=host_env(), stdout=subprocess.PIPE, text=True,
        )  # fmt: skip

    def stop(self) -> list[tuple[int, str]]:
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=10)
        found = []
        for line in out.splitlines():
            at, _, service = line.partition(" ")
            found.append((int(at), service.removeprefix(f"{self.project}_")))
        return found


@pytest.fixture
def stack(nodes: Nodes, tmp_path: Path) -> Iterator[Stack]:
    made = Stack(tmp_path, nodes)
    yield made
    made.run("down", "--volumes", "--yes")


def test_a_clustered_bus_spread_over_three_nodes_answers_and_comes_down(stack: Stack) -> None:
    started = time.monotonic()
    up = stack.run("up", "--json", "--timeout", "180")
    up_seconds = time.monotonic() - started
    assert up.returncode == 0, up.stdout + up.stderr
    result = json.loads(up.stdout)
    assert {s["name"] for s in result["services"] if s["ok"]} == {
        "bus", "bus-2", "bus-3", "bus-ports", "bus-webchat", "webchat"
    }  # fmt: skip

    # Where Swarm put them: the cluster spans machines, bus-ports is on the manager.
    placed = stack.placed()
    buses = [placed[name] for name in ("bus", "bus-2", "bus-3")]
    assert placed["bus-ports"] == f"{PREFIX}-1"
    # One bus node per machine, pinned by the labels up put on them (bus_placement), no warning.
    assert len(set(buses)) == 3 and result["warnings"] == [], (placed, result["warnings"])
    assert set(placed.values()) - {f"{PREFIX}-1"}, placed  # something runs off the manager

    # The cluster formed across the nodes' engines (routes go over the overlay, VXLAN between nodes).
    assert_routed(result)
    # The host's 127.0.0.1 reaches node 1's published monitoring port too.
    with urllib.request.urlopen(f"http://127.0.0.1:{MONITOR_PORT}/healthz", timeout=5) as answer:
        assert answer.status == 200

    answer = stack.run("request", "nachos.health.ping.webchat", "{}")
    assert answer.returncode == 0 and '"ok": true' in answer.stdout, answer.stdout + answer.stderr
    status = stack.run("status", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    assert json.loads(status.stdout)["problems"] == []

    # A machine drained: its bus node cannot run there; status names it, up moves it to a ready
    # machine (it starts empty and catches up) and warns that two now share one.
    drained = placed["bus-3"]
    stack.nodes.docker("node", "update", "--availability", "drain", drained)
    try:
        stack.wait_until(lambda: stack.placed().get("bus-3", "") == "")  # pending: no machine
        status = stack.run("status", "--json")
        assert status.returncode == 1 and any("bus-3" in p for p in json.loads(status.stdout)["problems"])
        repaired = stack.run("up", "--json", "--timeout", "180")
        assert repaired.returncode == 0, repaired.stdout + repaired.stderr
        (warning,) = json.loads(repaired.stdout)["warnings"]
        assert "bus-3 share the machine" in warning, warning
        moved = stack.placed()
        assert moved["bus-3"] != drained and moved["bus-3"] in buses, moved
        assert_routed(json.loads(repaired.stdout))
    finally:
        stack.nodes.docker("node", "update", "--availability", "active", drained)
    # The machine back: up spreads the bus again, one node per machine.
    spread = stack.run("up", "--json", "--timeout", "180")
    assert spread.returncode == 0, spread.stdout + spread.stderr
    assert json.loads(spread.stdout)["warnings"] == []
    placed = stack.placed()
    assert len({placed[name] for name in ("bus", "bus-2", "bus-3")}) == 3, placed
    assert_routed(json.loads(spread.stdout))

    deaths = [NodeEvents(f"{PREFIX}-{i}", stack.project) for i in (1, 2, 3)]
    time.sleep(0.5)  # subscribed before anything happens
    started = time.monotonic()
    down = stack.run("down", "--volumes", "--yes")
    down_seconds = time.monotonic() - started
    time.sleep(0.5)
    died = sorted(event for events in deaths for event in events.stop())  # one kernel: one clock
    assert down.returncode == 0, down.stdout + down.stderr
    # Bus last on every node, not only on the one nachos-deploy talks to.
    order = [name for _, name in died]
    assert {"webchat", "bus-webchat", "bus", "bus-2", "bus-3"} <= set(order), died
    last_client = max(i for i, name in enumerate(order) if name in ("webchat", "bus-webchat"))
    first_bus = min(i for i, name in enumerate(order) if name in ("bus", "bus-2", "bus-3"))
    assert last_client < first_bus, died
    assert (
        stack.nodes.docker(
            "service", "ls", "--quiet", "--filter", f"label=com.docker.stack.namespace={stack.project}"
        )
        == ""
    )
    assert (
        stack.nodes.docker(
            "network", "ls", "--quiet", "--filter", f"label=com.docker.stack.namespace={stack.project}"
        )
        == ""
    )
    assert (
        stack.nodes.docker(
            "container", "ls", "--all", "--quiet", "--filter", f"label={swarm.RELAY_LABEL}={stack.project}"
        )
        == ""
    )
    print(f"up {up_seconds:.1f} s (phases {result['phases']}), down {down_seconds:.1f} s, placed {placed}")


def test_a_task_on_another_node_is_judged_by_its_state() -> None:
    task = {
        "ID": "t1",
        "Status": {
            "State": "running",
            "Timestamp": "2026-11-28T00:00:00.5Z",
            "ContainerStatus": {"ContainerID": "c1", "ExitCode": 0},
        },
        "Spec": {"ContainerSpec": {"Image": "nats:alpine@sha256:abc"}},
        "NetworksAttachments": [
            {"Network": {"Spec": {"Name": "p_nachos-internal"}}, "Addresses": ["10.0.3.4/24"]}
        ],
    }
    state = swarm._remote_state("bus-webchat", task)
    assert (state.status, state.health, state.container, state.image) == ("running", None, "", "nats:alpine")
    assert state.address_on("p_nachos-internal") == "10.0.3.4" and state.container_id == "c1"
    for task_state, status in (("preparing", "created"), ("failed", "exited"), ("complete", "exited")):
        changed = {**task, "Status": {**task["Status"], "State": task_state}}  # type: ignore[dict-item]
        assert swarm._remote_state("x", changed).status == status
    # A hub on another node: observe execs into a container here on the internal network instead.
    local = swarm.engine.ServiceState(
        "bus-2", "p_bus-2.1.x", "running", "healthy", 0, 0, "nats:alpine",
        addresses=(("p_nachos-internal", "10.0.3.9"),),
    )  # fmt: skip
    relayed = swarm.with_relay("p", {"bus": swarm._remote_state("bus", task), "bus-2": local})
    assert relayed["bus"].container == "p_bus-2.1.x" and relayed["bus"].status == "running"

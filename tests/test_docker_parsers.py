"""What nachos-deploy reads of Docker's JSON, against documents the real engine printed.

tests/data/docker/ holds output recorded from Docker Engine 20.10.24 with Compose 2.40.3 (and a
one-node swarm made for the recording): a running container with a healthcheck, one exited, one
restarting under its restart policy, one publishing ports on two networks, a swarm task's container,
task/service/node inspect, die events, stats, two networks of one name. Nothing here needs an engine.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from nachos_deploy.core.bus_placement import Machine
from nachos_deploy.docker import parse
from nachos_deploy.docker.parse import Probe, ServiceState, SwarmNode, Task

DATA = Path(__file__).parent / "data" / "docker"
PROBE_IMAGE_ID = "sha256:1bbd1d618156da25fd3fbb4ee5193847a5bf50963626e40524ead8ee3e5fb415"
NODE = "e3o1gu58p17qzewt5hh44bagf"


def load(name: str) -> object:
    return json.loads((DATA / name).read_text())


def first(name: str) -> dict[str, object]:
    found = load(name)
    assert isinstance(found, list) and isinstance(found[0], dict)
    return found[0]


def at(text: str) -> float:
    """An exact expected time, microseconds kept (Docker's nanoseconds are cut, not rounded)."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_a_running_container_with_a_healthcheck() -> None:
    state = parse.state_of(first("container-healthy.json"))
    starts = ["01:06:16.178542", "01:06:17.344360", "01:06:18.542867", "01:06:19.612803", "01:06:20.691726"]
    assert state == ServiceState(
        service="healthy",
        container="ndr-rec-healthy-1",
        status="running",
        health="healthy",
        exit_code=0,
        restart_count=0,
        image="nachos-deploy/probe:latest",
        container_id="bf5583aea56c745a14d2a25c49e83ba2835ed630886ad4171bf9f73edb957aa0",
        image_id=PROBE_IMAGE_ID,
        started_at=at("2026-12-05T01:06:12.960325"),
        probes=tuple(Probe(at(f"2026-12-05T{start}"), 0, "") for start in starts),
        addresses=(("ndr-rec_default", "172.26.0.4"),),
        ports=(),
    )


def test_an_exited_container_keeps_its_exit_code_and_has_no_address() -> None:
    state = parse.state_of(first("container-failing.json"))
    assert (state.service, state.status, state.exit_code, state.restart_count) == ("failing", "exited", 3, 0)
    assert state.health == "unhealthy"  # the probe image's own HEALTHCHECK never passed
    assert state.addresses == () and state.probes == ()
    assert state.started_at == at("2026-12-05T01:06:12.671258")


def test_a_container_restarting_under_its_policy() -> None:
    state = parse.state_of(first("container-restarting.json"))
    assert (state.status, state.exit_code, state.restart_count) == ("restarting", 7, 6)
    assert state.container_id.startswith("c0a283e7d5f8")
    assert state.started_at == at("2026-12-05T01:06:18.308387")


def test_published_ports_and_two_networks() -> None:
    state = parse.state_of(first("container-ported.json"))
    assert state.image == "nats:alpine" and state.health is None
    assert state.addresses == (("ndr-rec_default", "172.26.0.5"), ("ndr-rec_inner", "172.27.0.2"))
    # 6222/tcp is exposed, not published (null); 9999/udp is not TCP: neither is a port the host reads.
    assert state.ports == ((4222, 47131), (8222, 47132))
    assert state.host_port(8222) == 47132 and state.host_port(6222) is None
    assert state.address_on("ndr-rec_inner") == "172.27.0.2"
    assert parse.host_ports([first("container-ported.json")]) == {47131, 47132, 47133}


def test_a_swarm_tasks_container() -> None:
    state = parse.state_of(first("container-swarm-task.json"))
    # No Compose label: swarm.states renames it by its service label.
    assert state.service == state.container == "ndr-sw_healthy.1.bkukac7p85417r4ccjyo96u6h"
    assert (state.status, state.health, len(state.probes)) == ("running", "healthy", 5)
    assert state.addresses == (("ndr-sw_inner", "10.0.1.3"),)


def test_die_events_give_the_exit_code_of_each_run() -> None:
    lines = (DATA / "events-die.jsonl").read_text().splitlines()
    assert parse.die_exit_codes(json.loads(line) for line in lines) == [7] * 6


def test_memory_from_docker_stats() -> None:
    assert parse.memory_used(first_line("stats-ported.json")) == int(2.508 * 1024**2)
    assert parse.size_in_bytes("1.92kB") == 1920
    assert parse.size_in_bytes("0B") == 0
    assert parse.size_in_bytes("lots") is None


def first_line(name: str) -> dict[str, object]:
    found = json.loads((DATA / name).read_text().splitlines()[0])
    assert isinstance(found, dict)
    return found


def test_of_two_networks_of_one_name_the_newer_empty_one_goes() -> None:
    networks = load("network-inspect-duplicates.json")
    assert isinstance(networks, list)
    assert parse.duplicate_networks(networks) == [
        ("ndr-amb_default", "8421444cb6e5d0d338d0d532a2c905ac9d499c485d5124e18ac6e55756b30e49")
    ]
    # The one a container uses is kept, although it is the newer one.
    used = [dict(networks[0]), {**networks[1], "Containers": {"abc": {}}}]
    assert parse.duplicate_networks(used) == [
        ("ndr-amb_default", "001e2ad52a5bae66d79f9cb34434ff851b37736a9621a1be403a710bf746ddce")
    ]
    assert parse.duplicate_networks(networks[:1]) == []


def test_swarm_state_from_docker_info() -> None:
    assert parse.swarm_node(load("info-swarm-active.json")) == SwarmNode("active", True, 1)  # type: ignore[arg-type]
    assert parse.swarm_node(load("info-swarm-inactive.json")) == SwarmNode("inactive", False, 0)  # type: ignore[arg-type]


def test_nodes() -> None:
    nodes = load("node-inspect.json")
    assert isinstance(nodes, list)
    assert [parse.machine_of(node) for node in nodes] == [Machine(NODE, "vm", True, frozenset())]
    drained = {
        **nodes[0],
        "Spec": {**nodes[0]["Spec"], "Availability": "drain", "Labels": {"nachos.bus": "true"}},
    }
    assert parse.machine_of(drained) == Machine(NODE, "vm", False, frozenset({"nachos.bus"}))


def test_task_services_from_stack_ps() -> None:
    # `docker stack ps --no-trunc --format '{{.ID}} {{.Name}}'` as Engine 20.10 printed it for a stack
    # with a task replaced (the old one is listed under the same name) and a global service's task.
    listing = (
        "lnkjpgo4711pa0wqwh70ykfh8 swt_bus-gateway.1\n"
        "5x7l2ic8z51jkb8m4vrc2dykt swt_webchat.1\n"
        "lk1nyoqsazy5gftwzewc8lg8l swt_webchat.1\n"
        "q0v9t6c1m2lcm0l4a8xgx5f0a swt_relay.ti1ql6ww9lu8yttwxnu7qrgpf\n\n"
    )
    assert parse.task_services(listing) == {
        "lnkjpgo4711pa0wqwh70ykfh8": "swt_bus-gateway",
        "5x7l2ic8z51jkb8m4vrc2dykt": "swt_webchat",
        "lk1nyoqsazy5gftwzewc8lg8l": "swt_webchat",
        "q0v9t6c1m2lcm0l4a8xgx5f0a": "swt_relay",
    }


def test_tasks_a_failing_service_left_and_the_running_one() -> None:
    services = load("service-inspect.json")
    found = load("task-inspect.json")
    assert isinstance(services, list) and isinstance(found, list)
    # What swarm.tasks reads from `stack ps` for these tasks: service ID → its full name.
    names = {service["ID"]: service["Spec"]["Name"] for service in services}
    assert names == {
        "vuk6uivd7qqodtzgmdjaf2mmu": "ndr-sw_failing",
        "pviujn0a7cqs4yffmq9fwpkz0": "ndr-sw_healthy",
    }
    tasks = [parse.task_of(item, names, "ndr-sw") for item in found]
    assert tasks[0] == Task("failing", "preparing", "ready", "", None, at("2026-12-05T01:06:50.478566"), NODE)
    assert tasks[1] == Task(
        "failing", "failed", "shutdown", "task: non-zero exit (3)", 3, at("2026-12-05T01:06:50.228678"), NODE
    )
    assert [task.state for task in tasks] == ["preparing", *["failed"] * 4, "running"]
    assert tasks[-1] == Task("healthy", "running", "running", "", 0, at("2026-12-05T01:06:44.658996"), NODE)


def test_a_task_as_a_container_state() -> None:
    found = load("task-inspect.json")
    assert isinstance(found, list)
    running = parse.remote_state("healthy", found[-1])
    assert running == ServiceState(
        service="healthy",
        container="",
        status="running",
        health=None,
        exit_code=0,
        restart_count=0,
        image="nachos-deploy/probe:latest",
        container_id="bd7947a9f8b6602b849c7622c3602b6663085027c3eeafc3f5587e60fa2ea212",
        started_at=at("2026-12-05T01:06:44.658996"),
        addresses=(("ndr-sw_inner", "10.0.1.3"),),
    )
    failed = parse.remote_state("failing", found[1])
    assert (failed.status, failed.exit_code, failed.started_at) == ("exited", 3, None)
    preparing = parse.remote_state("failing", found[0])
    assert (preparing.status, preparing.container_id) == ("created", "")
    assert preparing.addresses == (("ndr-sw_default", "10.0.2.13"),)


def test_stack_services_replicas() -> None:
    text = (DATA / "stack-services.txt").read_text()
    assert parse.replicas(text, "ndr-sw") == {"failing": (0, 1), "healthy": (1, 1)}


def test_missing_and_mistyped_fields_read_as_unknown() -> None:
    state = parse.state_of({"State": "odd", "Config": [], "NetworkSettings": {"Ports": {"x/tcp": 1}}})
    assert (state.status, state.health, state.exit_code, state.ports, state.started_at) == (
        "unknown",
        None,
        0,
        (),
        None,
    )
    assert parse.epoch_of("0001-01-01T00:00:00Z") is None  # a container that never ran
    assert parse.epoch_of("2026-12-05T01:06:12+02:00") == at("2026-12-04T23:06:12")
    assert parse.remote_state("x", {}).status == "created"


def test_the_networks_of_the_demo_s_bus_set() -> None:
    """What the containers made while the bus's `compose up` runs wait for (targets/compose.py)."""
    from nachos_deploy.targets.compose_changes import networks_of

    resolved = load("compose-config-demo.json")
    assert isinstance(resolved, dict)
    assert networks_of(resolved, ["bus", "bus-ports", "volume-init"]) == [
        "nachos-demo_bus-link",
        "nachos-demo_host-access",
        "nachos-demo_nachos-internal",
    ]
    assert networks_of(resolved, ["volume-init"]) == []  # network_mode: none
    assert networks_of({}, ["bus"]) is None  # not resolved: wait for the bus's own run
    assert networks_of({**resolved, "networks": {}}, ["bus"]) is None  # a network without its name

"""Where the nodes of a clustered bus go on a swarm (pure; the engine side is in test_swarm*.py)."""

from __future__ import annotations

from pathlib import Path

import yaml

from nachos_deploy.core.bus_placement import Machine, assign, constraint, label, released
from nachos_deploy.core.names import STACK_FILE
from nachos_deploy.io.stack import prepare

NODES = ["bus", "bus-2", "bus-3"]


def machine(name: str, *nodes: str, ready: bool = True, project: str = "p") -> Machine:
    return Machine(name, f"host-{name}", ready, frozenset(label(project, n) for n in nodes))


def spread(result_where: dict[str, str]) -> set[str]:
    return set(result_where.values())


def test_three_bus_nodes_on_three_new_machines_are_on_three_machines() -> None:
    placed = assign("p", NODES, [machine("a"), machine("b"), machine("c")])
    assert placed.where == {"bus": "a", "bus-2": "b", "bus-3": "c"}
    assert placed.add == {"a": (label("p", "bus"),), "b": (label("p", "bus-2"),), "c": (label("p", "bus-3"),)}
    assert placed.remove == {} and placed.shared == {}


def test_labels_already_in_place_are_kept_and_nothing_changes() -> None:
    machines = [machine("a", "bus-3"), machine("b", "bus"), machine("c", "bus-2")]
    placed = assign("p", NODES, machines)
    assert placed.where == {"bus": "b", "bus-2": "c", "bus-3": "a"} and not placed.changed


def test_one_machine_takes_every_node_and_says_so() -> None:
    placed = assign("p", NODES, [machine("a")])
    assert spread(placed.where) == {"a"} and placed.shared == {"host-a": tuple(NODES)}


def test_a_node_on_a_machine_that_is_down_moves_to_a_ready_one() -> None:
    machines = [machine("a", "bus"), machine("b", "bus-2", ready=False), machine("c", "bus-3")]
    placed = assign("p", NODES, machines)
    assert placed.where["bus"] == "a" and placed.where["bus-3"] == "c" and placed.where["bus-2"] in {"a", "c"}
    assert placed.remove == {"b": (label("p", "bus-2"),)}
    assert len(placed.shared) == 1  # two ready machines for three nodes


def test_a_bus_that_shared_one_machine_is_spread_once_there_are_enough() -> None:
    placed = assign("p", NODES, [machine("a", *NODES), machine("b"), machine("c")])
    assert placed.where == {"bus": "a", "bus-2": "b", "bus-3": "c"}
    assert placed.remove == {"a": (label("p", "bus-2"), label("p", "bus-3"))}


def test_five_nodes_on_three_machines_take_at_most_two_each() -> None:
    nodes = [*NODES, "bus-4", "bus-5"]
    placed = assign("p", nodes, [machine("a"), machine("b"), machine("c")])
    counts = sorted(list(placed.where.values()).count(m) for m in "abc")
    assert counts == [1, 2, 2] and len(placed.shared) == 2


def test_no_ready_machine_places_nothing() -> None:
    assert assign("p", NODES, [machine("a", ready=False)]).where == {}


def test_other_projects_labels_are_left_alone() -> None:
    other = Machine("a", "host-a", True, frozenset({label("p2", "bus"), label("p", "bus"), "zone"}))
    assert assign("p", ["bus"], [other]).remove == {}
    assert released("p", [other]) == {"a": (label("p", "bus"),)}


def test_a_clustered_swarm_bus_renders_one_constraint_per_node_and_compose_none(tmp_path: Path) -> None:
    document = {"project": "p", "target": "swarm", "bus": {"nodes": 3}}
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(document))
    services = yaml.safe_load(prepare(tmp_path / "a.yaml", cwd=tmp_path, environ={}).files[STACK_FILE])[
        "services"
    ]
    for node in NODES:
        assert services[node]["deploy"]["placement"]["constraints"] == [constraint("p", node)]
    (tmp_path / "b.yaml").write_text(yaml.safe_dump({**document, "target": "compose"}))
    assert (
        "node.labels"
        not in prepare(tmp_path / "b.yaml", cwd=tmp_path, environ={}).files["docker-compose.yml"]
    )


def test_a_single_bus_is_not_pinned(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(yaml.safe_dump({"target": "swarm"}))
    services = yaml.safe_load(prepare(tmp_path / "a.yaml", cwd=tmp_path, environ={}).files[STACK_FILE])[
        "services"
    ]
    assert "placement" not in services["bus"]["deploy"]  # Swarm may move a lone bus where it likes

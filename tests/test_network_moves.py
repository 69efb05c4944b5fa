"""A running stack whose networks change (docs/networks.md#where-one-block-per-stack), on the real
engine: adding a component moves no network, and when networks do move (another networks.pool, a
stack outgrowing its block) `up` still converges, its volumes kept. Before, adding one component to
the running demo grew nachos-internal to another subnet and the next `up` failed with exit 5: the
engine refused to remove a network the not-yet-started components were still on."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import yaml

from tests.commands import compose_down, container, docker, nachos

pytestmark = pytest.mark.engine

PROBE = "nachos-deploy/probe:latest"
OTHER_POOL = "10.126.0.0/16"


def deploy(folder: Path, project: str, tools: int, pool: str | None = None) -> None:
    components: dict[str, object] = {"gateway": {"enabled": False}, "llm-proxy": {"enabled": False}}
    components.update({f"t{index}": {"role": "tool", "image": PROBE} for index in range(tools)})
    document: dict[str, object] = {
        "project": project,
        "bus": {"client_port": 0, "monitor_port": 0},
        "ingress": {"enabled": False},
        "components": components,
    }
    if pool is not None:
        document["networks"] = {"pool": pool}
    (folder / "nachos-deploy.yaml").write_text(yaml.safe_dump(document))


def network(project: str, name: str) -> tuple[str, str]:
    """The engine's id and subnet of one of the project's networks."""
    found = json.loads(docker("network", "inspect", f"{project}_{name}"))[0]
    return found["Id"], found["IPAM"]["Config"][0]["Subnet"]


def volume_created(project: str, name: str) -> str:
    return docker("volume", "inspect", "--format", "{{.CreatedAt}}", f"{project}_{name}")


def test_a_component_added_moves_no_network_and_a_moved_pool_still_converges(tmp_path: Path) -> None:
    project = f"nmove-{uuid.uuid4().hex[:6]}"
    try:
        deploy(tmp_path, project, tools=1)
        assert nachos(tmp_path, "up", timeout=180).returncode == 0
        internal = network(project, "nachos-internal")
        jetstream = volume_created(project, "bus-data")

        deploy(tmp_path, project, tools=2)  # one more component, on the running stack
        added = nachos(tmp_path, "up", timeout=180)
        assert added.returncode == 0, added.stderr
        assert network(project, "nachos-internal") == internal  # the same network, not made anew

        # One component disabled again: its networks go, and nothing else moves. Before, they stayed
        # behind, counted as another's in the stack's block, and the whole stack moved to another
        # block (every container recreated) with a warning of a collision.
        tool = container(project, "t0")
        deploy(tmp_path, project, tools=1)
        removed = nachos(tmp_path, "up", timeout=180)
        assert removed.returncode == 0, removed.stderr
        assert "overlaps" not in removed.stderr and "move to other subnets" not in removed.stderr
        assert network(project, "nachos-internal") == internal and container(project, "t0") == tool
        assert f"{project}_t1-link" not in docker("network", "ls", "--format", "{{.Name}}").split()

        # A network of the project that its files no longer name (left by an older version): `down`
        # removes it with the rest, as it says.
        docker("network", "create", "--label", f"com.docker.compose.project={project}", f"{project}_old")
        assert nachos(tmp_path, "down").returncode == 0
        assert not [
            n for n in docker("network", "ls", "--format", "{{.Name}}").split() if n.startswith(project)
        ]
        assert nachos(tmp_path, "up", timeout=180).returncode == 0
        internal = network(project, "nachos-internal")

        deploy(tmp_path, project, tools=2)
        assert nachos(tmp_path, "up", timeout=180).returncode == 0

        deploy(tmp_path, project, tools=2, pool=OTHER_POOL)  # every network moves
        moved = nachos(tmp_path, "up", timeout=180)
        assert moved.returncode == 0, moved.stderr
        assert "move to other subnets" in moved.stderr
        _, subnet = network(project, "nachos-internal")
        assert subnet.startswith("10.126."), subnet
        assert volume_created(project, "bus-data") == jetstream  # kept: only containers went
        assert nachos(tmp_path, "status").returncode == 0
    finally:
        compose_down(project)

"""Networks that scale, on the real engine (docs/networks.md): each network takes its own small subnet
of networks.pool, so two stacks of 12 run side by side (30 networks: a stack of 24 components took
24 of the engine's ~31 default ranges and failed, exit 4), the same project gets the same subnets
again, a block another network holds moves the stack whole, and two projects that draw one
block, started at once, both come up."""

from __future__ import annotations

import ipaddress
import itertools
import subprocess
import sys
import uuid
from pathlib import Path

import yaml

from nachos_deploy.core.config import DeployConfig
from nachos_deploy.core.plan import make_plan
from nachos_deploy.docker import engine
from nachos_deploy.io import locks
from tests.commands import compose_down, docker, nachos

PROBE = "nachos-deploy/probe:latest"
# The big stacks here take their own range: another test's stack (in the default 172.16.0.0/16,
# drawn from its random name) could otherwise overlap one of them now and then, which is the
# collision `up` refuses (test_a_subnet_another_network_holds...), not what these tests are about.
POOL = "10.123.0.0/16"


def document(project: str, count: int, pool: str | None) -> dict[str, object]:
    """A stack of ``count`` probe tools, each with its sidecar and its own network, and no gateway."""
    components: dict[str, object] = {"gateway": {"enabled": False}, "llm-proxy": {"enabled": False}}
    components.update({f"t{index}": {"role": "tool", "image": PROBE} for index in range(count)})
    doc: dict[str, object] = {
        "project": project,
        "bus": {"client_port": 0, "monitor_port": 0},
        "components": components,
    }
    if pool is not None:
        doc["networks"] = {"pool": pool}
    return doc


def deploy_file(folder: Path, project: str, count: int, pool: str | None = POOL) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "nachos-deploy.yaml"
    path.write_text(yaml.safe_dump(document(project, count, pool)))
    return path


def engine_subnets() -> list[ipaddress.IPv4Network]:
    """The IPv4 subnets of every network the engine has (another test's, or one Engine 20.10 could
    not remove: "has active endpoints" with no container left), read as `up` reads them: a network
    another test removes meanwhile is left out, not a failure of this test (seen with two workers,
    Engine 20.10 naming it "network <id> not found")."""
    found = (ipaddress.ip_network(subnet) for n in engine.engine_subnets() for subnet in n.subnets)
    return [network for network in found if isinstance(network, ipaddress.IPv4Network)]


def apart(
    prefix: str,
    stacks: int = 1,
    count: int = 1,
    pool: str | None = POOL,
    components: dict[str, object] | None = None,
) -> list[str]:
    """Random project names whose drawn blocks of ``pool`` (None: the default pool) overlap neither
    each other nor a network the engine has: two names can draw overlapping blocks
    (docs/networks.md#collisions; `up` would then move one of them, which is another test's subject),
    and a network left by another run would refuse a test's own network there. ``components``, when
    given, replaces the document's (the block's size follows the stack's networks)."""
    taken = engine_subnets()
    while True:
        names = [f"{prefix}{index if stacks > 1 else ''}-{uuid.uuid4().hex[:6]}" for index in range(stacks)]
        blocks = []
        for name in names:
            doc = document(name, count, pool)
            if components is not None:
                doc["components"] = components
            subnets = make_plan(DeployConfig.model_validate(doc)).subnets
            assert subnets is not None
            blocks.append(ipaddress.IPv4Network(subnets.block))
        if not any(one.overlaps(two) for one, two in itertools.combinations(blocks, 2)) and not any(
            block.overlaps(other) for block in blocks for other in taken
        ):
            return names


def planned(folder: Path) -> dict[str, str]:
    """The subnets the rendered Compose file asks for, by network."""
    doc = yaml.safe_load((folder / ".nachos" / "docker-compose.yml").read_text())
    return {name: spec["ipam"]["config"][0]["subnet"] for name, spec in doc["networks"].items()}


def on_engine(project: str, networks: list[str]) -> dict[str, str]:
    """The subnets the engine gave the project's networks."""
    fmt = "{{range .IPAM.Config}}{{.Subnet}}{{end}}"
    return {name: docker("network", "inspect", f"{project}_{name}", "--format", fmt) for name in networks}


def no_overlap(subnets: list[str]) -> None:
    ordered = sorted(ipaddress.IPv4Network(s) for s in subnets)
    for one, two in itertools.pairwise(ordered):
        assert not one.overlaps(two), (one, two)


def up_at_once(folders: list[Path], files: list[Path], timeout: int) -> None:
    """`up` of each deploy file, all started together; each must exit 0."""
    ups = [
        subprocess.Popen(
            [sys.executable, "-m", "nachos_deploy", "up", "-c", str(file), "--timeout", str(timeout)],
            cwd=folder,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for folder, file in zip(folders, files, strict=True)
    ]
    for process in ups:
        out, err = process.communicate(timeout=timeout + 160)
        assert process.returncode == 0, out + err


def test_two_stacks_of_12_side_by_side_on_subnets_of_their_own(engine: str, tmp_path: Path) -> None:
    """30 networks at once, as many as the engine's ~31 default ranges: the failure of a stack of 24
    components (exit 4) and of two stacks of 12 before small subnets. A stack of 100 and five of 20
    are `make networks` (benchmarks/networks.py)."""
    projects = apart("h20n-12-", stacks=2, count=12)
    folders = [tmp_path / side for side in "ab"]
    files = [deploy_file(folder, project, 12) for folder, project in zip(folders, projects, strict=True)]
    try:
        up_at_once(folders, files, timeout=240)
        pool = ipaddress.IPv4Network(POOL)
        wanted = [planned(folder) for folder in folders]
        for project, subnets in zip(projects, wanted, strict=True):
            assert len(subnets) == 12 + 3  # a network per component, nachos-internal, bus-link, host-access
            assert on_engine(project, list(subnets)) == subnets
            assert all(ipaddress.IPv4Network(s).subnet_of(pool) for s in subnets.values())
        no_overlap([subnet for stack in wanted for subnet in stack.values()])
    finally:
        for folder, file, project in zip(folders, files, projects, strict=True):
            nachos(folder, "down", "-c", str(file), "--volumes", "--yes")
            compose_down(project)


def test_a_block_another_network_holds_moves_the_stack_and_a_full_pool_stops_up(
    engine: str, tmp_path: Path
) -> None:
    """A network in the project's drawn block: `up` says so and puts the whole stack in a free block;
    the next `up`s keep it there while it runs (even once the block is free again); after `down` it
    takes its drawn block again. A pool with no free block left: exit 4 before anything starts,
    naming the network in the way."""
    (project,) = apart("h20n-clash", pool=None)
    file = deploy_file(tmp_path, project, 1, pool=None)  # the default pool
    rendered = nachos(tmp_path, "render", "-c", str(file))
    assert rendered.returncode == 0, rendered.stderr
    drawn = planned(tmp_path)
    block = make_plan(DeployConfig.model_validate(document(project, 1, None))).subnets
    assert block is not None
    squatter = f"h20n-squatter-{uuid.uuid4().hex[:6]}"
    docker("network", "create", "--internal", "--subnet", drawn["t0-link"], squatter)
    try:
        result = nachos(tmp_path, "up", "-c", str(file), "--only", "bus", "--timeout", "60")
        assert result.returncode == 0, result.stdout + result.stderr
        told = " ".join(result.stderr.split())
        assert "overlaps a network of this engine, so the stack takes" in told, told
        moved = planned(tmp_path)
        assert set(moved) == set(drawn) and moved != drawn
        no_overlap([*moved.values(), drawn["t0-link"]])
        bus_networks = ["nachos-internal", "bus-link", "host-access"]
        assert on_engine(project, bus_networks) == {name: moved[name] for name in bus_networks}
        docker("network", "rm", squatter)
        again = nachos(tmp_path, "up", "-c", str(file), "--only", "bus", "--timeout", "60")
        assert again.returncode == 0, again.stdout + again.stderr
        assert planned(tmp_path) == moved  # running: it stays where its networks are
        assert nachos(tmp_path, "down", "-c", str(file)).returncode == 0
        back = nachos(tmp_path, "up", "-c", str(file), "--only", "bus", "--timeout", "60")
        assert back.returncode == 0, back.stdout + back.stderr
        assert planned(tmp_path) == drawn  # the same project gets the same subnets again
        assert on_engine(project, bus_networks) == {name: drawn[name] for name in bus_networks}
        # A pool of exactly one block, and another network in it: nothing to move to.
        assert nachos(tmp_path, "down", "-c", str(file)).returncode == 0
        docker("network", "create", "--internal", "--subnet", drawn["t0-link"], squatter)
        full = nachos(tmp_path, "up", "-c", str(file), "--set", f"networks.pool={block.block}")
        assert full.returncode == 4, full.stdout + full.stderr
        message = " ".join(full.stderr.split())
        assert "range ran out" in message and f"overlaps {squatter}" in message, message
        assert "Traceback" not in full.stderr
        assert not docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={project}")
    finally:
        if squatter in docker("network", "ls", "--format", "{{.Name}}").split():
            docker("network", "rm", squatter)
        nachos(tmp_path, "down", "-c", str(file), "--volumes", "--yes")
        compose_down(project)


def same_block(prefix: str) -> list[str]:
    """Two random project names that draw the same block of the default pool (1 pair in 128)."""
    seen: dict[str, str] = {}
    while True:
        name = f"{prefix}{uuid.uuid4().hex[:6]}"
        subnets = make_plan(DeployConfig.model_validate(document(name, 0, None))).subnets
        assert subnets is not None
        if subnets.block in seen:
            return [seen[subnets.block], name]
        seen[subnets.block] = name


def test_two_projects_that_draw_one_block_come_up_at_once(engine: str, tmp_path: Path) -> None:
    """Started together, each finds the block free: the machine's networks lock lets one place its
    networks first, and the other then finds the block taken and moves (before, Docker refused the
    second's network: "Pool overlaps with other one on this address space", exit 5)."""
    projects = same_block("h20n-twin-")
    folders = [tmp_path / side for side in "ab"]
    files = [
        deploy_file(folder, project, 0, pool=None) for folder, project in zip(folders, projects, strict=True)
    ]
    try:
        up_at_once(folders, files, timeout=120)
        # A running stack's networks mark its block: its next up needs no lock while another holds it.
        with locks.networks_lock(lambda _: None):
            again = nachos(folders[0], "up", "-c", str(files[0]), "--timeout", "60", timeout=90)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "placing its networks" not in again.stderr
        both = [
            on_engine(project, list(planned(folder)))
            for folder, project in zip(folders, projects, strict=True)
        ]
        no_overlap([subnet for stack in both for subnet in stack.values()])
    finally:
        for folder, file, project in zip(folders, files, projects, strict=True):
            nachos(folder, "down", "-c", str(file), "--volumes", "--yes")
            compose_down(project)


def test_credentials_rotate_keeps_a_moved_stack_on_its_subnets(engine: str, tmp_path: Path) -> None:
    """A stack that `up` moved off its drawn block (another network was in it): `credentials rotate`
    recreates the gateway on the networks as they run. It rendered the drawn block again before, and
    Compose, asked for the gateway, tried to remake state-link under the running state store ("has
    active endpoints", exit 6: seen in CI with a network an earlier run had left in the pool)."""
    components = {"gateway": {"image": PROBE, "egress": False}, "llm-proxy": {"enabled": False}}
    (project,) = apart("h20n-rot", pool=None, components=components)
    doc = document(project, 0, None)
    doc["components"] = components
    file = tmp_path / "nachos-deploy.yaml"
    file.write_text(yaml.safe_dump(doc))
    assert nachos(tmp_path, "render", "-c", str(file)).returncode == 0
    drawn = planned(tmp_path)
    squatter = f"h20n-squatter-{uuid.uuid4().hex[:6]}"
    docker("network", "create", "--internal", "--subnet", drawn["state-link"], squatter)
    try:
        result = nachos(tmp_path, "up", "-c", str(file), "--timeout", "90")
        assert result.returncode == 0, result.stdout + result.stderr
        moved = planned(tmp_path)
        assert moved != drawn
        rotated = nachos(tmp_path, "credentials", "rotate", "-c", str(file))
        assert rotated.returncode == 0, rotated.stdout + rotated.stderr
        assert on_engine(project, ["state-link", "gateway-link"]) == {
            name: moved[name] for name in ("state-link", "gateway-link")
        }
        status = nachos(tmp_path, "status", "-c", str(file))
        assert status.returncode == 0, status.stdout + status.stderr
    finally:
        nachos(tmp_path, "down", "-c", str(file), "--volumes", "--yes")
        compose_down(project)
        if squatter in docker("network", "ls", "--format", "{{.Name}}").split():
            docker("network", "rm", squatter)

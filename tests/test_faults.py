"""Faults of the engine itself, on the real engine: duplicate networks left by two Compose runs that
raced, and Docker's address pools running out."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

BUS_ONLY = {"gateway": {"enabled": False}, "llm-proxy": {"enabled": False}}


class _EngineSocket(http.client.HTTPConnection):
    """The Engine API on its Unix socket: the docker CLI cannot create a duplicate name any more."""

    def __init__(self) -> None:
        super().__init__("localhost", timeout=30)

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect("/var/run/docker.sock")


def _create_network(name: str, project: str, network: str) -> str:
    body = {
        "Name": name,
        "CheckDuplicate": False,
        "Internal": True,
        "Labels": {"com.docker.compose.project": project, "com.docker.compose.network": network},
    }
    connection = _EngineSocket()
    connection.request("POST", "/networks/create", json.dumps(body), {"Content-Type": "application/json"})
    try:
        response = connection.getresponse()
        payload = json.loads(response.read() or b"{}")
    finally:
        connection.close()
    assert response.status == 201, payload
    return str(payload["Id"])


def _cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nachos_deploy", *args], capture_output=True, text=True, timeout=timeout
    )


def _networks(name: str) -> list[str]:
    out = subprocess.run(
        ["docker", "network", "ls", "--filter", f"name=^{name}$", "--format", "{{.ID}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.split()


def test_duplicate_networks_from_a_race_are_repaired_by_up(engine: str, tmp_path: Path) -> None:
    project = f"ndt-dup-{uuid.uuid4().hex[:8]}"
    name = f"{project}_nachos-internal"
    first = _create_network(name, project, "nachos-internal")
    _create_network(name, project, "nachos-internal")
    assert len(_networks(name)) == 2, "the engine refused the duplicate: nothing to repair"
    file = tmp_path / "nachos-deploy.yaml"
    file.write_text(
        yaml.safe_dump(
            {"project": project, "bus": {"client_port": 0, "monitor_port": 0}, "components": BUS_ONLY}
        )
    )
    try:
        result = _cli("up", "-c", str(file), "--timeout", "60")
        assert result.returncode == 0, result.stdout + result.stderr
        assert _networks(name) == [first[:12]], "the empty duplicate should be gone, the first kept"
        assert _cli("status", "-c", str(file)).returncode == 0
    finally:
        _cli("down", "-c", str(file), "--volumes", "--yes")
        for network in _networks(name):
            subprocess.run(["docker", "network", "rm", network], capture_output=True)


FILL_LIMIT = 400
"""More networks than any engine here has room for: the engine's own pools hold about 31, and the
pool scripts/install-engine.sh gives an engine it starts (a /18 cut into /24s) holds 64."""


@pytest.mark.exclusive  # while the pools are full, any other stack's `up` would fail too
def test_an_exhausted_address_pool_is_an_environment_problem(engine: str, tmp_path: Path) -> None:
    """Exit 4 with the fix, not 5 ("the bus failed"): the stack is fine, the engine is full. Only a
    stack that leaves its addresses to the engine (networks.pool: docker) meets it; one with subnets
    of its own (the default, docs/networks.md) comes up on the same full engine."""
    prefix = f"ndt-pool-{uuid.uuid4().hex[:8]}"
    filler: list[str] = []
    project = f"{prefix}-stack"
    file = tmp_path / "nachos-deploy.yaml"
    file.write_text(
        yaml.safe_dump(
            {
                "project": project,
                "bus": {"client_port": 0, "monitor_port": 0},
                "components": BUS_ONLY,
                "networks": {"pool": "docker"},
            }
        )
    )
    own = tmp_path / "own"
    own.mkdir()
    (own / "nachos-deploy.yaml").write_text(
        yaml.safe_dump(
            {"project": f"{prefix}-own", "bus": {"client_port": 0, "monitor_port": 0}, "components": BUS_ONLY}
        )
    )
    try:
        for index in range(FILL_LIMIT):
            made = subprocess.run(
                ["docker", "network", "create", f"{prefix}-{index}"], capture_output=True, text=True
            )
            if made.returncode != 0:
                assert "address pool" in made.stderr or "fully subnetted" in made.stderr, made.stderr
                break
            filler.append(f"{prefix}-{index}")
        else:
            raise AssertionError(f"{FILL_LIMIT} networks did not exhaust the engine's address pools")
        result = _cli("up", "-c", str(file), "--timeout", "60")
        message = " ".join(result.stderr.split())
        assert result.returncode == 4, result.stdout + result.stderr
        assert "no address range left" in message and "docker network prune" in message, message
        assert "Traceback" not in result.stderr
        mine = _cli("up", "-c", str(own / "nachos-deploy.yaml"), "--timeout", "60")
        assert mine.returncode == 0, mine.stdout + mine.stderr
    finally:
        _cli("down", "-c", str(own / "nachos-deploy.yaml"), "--volumes", "--yes")
        _cli("down", "-c", str(file), "--volumes", "--yes")
        for start in range(0, len(filler), 64):  # one `docker network rm` per 64: 256 alone take ~50 s
            subprocess.run(["docker", "network", "rm", *filler[start : start + 64]], capture_output=True)

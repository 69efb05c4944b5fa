"""An upgrade on Swarm (one engine test, one stack): a good version replaces the component through a
deploy that names it alone, a broken one (PROBE_FAIL_AFTER_UPGRADE, in this test's own image) fails
its task and is put back with exit 6, and `status` then finds every service ok. The images are
derived from the probe and tagged uniquely, as in tests/test_upgrade.py."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.test_swarm import (
    SWARM_BUS,
    SwarmStack,
    swarm,  # noqa: F401  (the module's one-node swarm, used below)
)
from tests.test_upgrade import Versions

pytestmark = pytest.mark.usefixtures("swarm")


def image_of(project: str, service: str) -> str:
    """The image id of the running container of a Swarm service on this node."""
    ids = subprocess.run(
        [
            "docker", "ps", "-q",
            "--filter", f"label=com.docker.swarm.service.name={project}_{service}",
        ],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert len(ids) == 1, ids
    return subprocess.run(
        ["docker", "inspect", "-f", "{{.Image}}", ids[0]], capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.fixture
def versions(engine: str) -> Iterator[Versions]:
    made = Versions()
    try:
        yield made
    finally:
        made.remove()


def test_a_swarm_upgrade_replaces_one_service_and_rolls_a_broken_one_back(
    tmp_path: Path, versions: Versions
) -> None:
    stack = SwarmStack(tmp_path, {})

    def deploy(version: str) -> tuple[int, dict[str, Any]]:
        document = {
            "project": stack.project,
            "target": "swarm",
            "bus": SWARM_BUS,
            "ingress": {"enabled": False},
            "components": {
                "gateway": {"image": versions.tag(version), "egress": False},
                "llm-proxy": {"enabled": False},
            },
        }
        stack.file.write_text(yaml.safe_dump(document))
        done = stack.run("up", "--json", "--timeout", "120")
        return done.returncode, dict(json.loads(done.stdout))

    try:
        code, first = deploy("1")
        assert code == 0, json.dumps(first)
        code, good = deploy("2")
        assert code == 0 and list(good["upgraded"]) == ["gateway"], json.dumps(good)
        assert image_of(stack.project, "gateway") == versions.ids["2"]
        code, broken = deploy("3")
        assert code == 6 and broken["rolled_back"] == ["gateway"], json.dumps(broken)
        assert image_of(stack.project, "gateway") == versions.ids["2"]
        status = stack.run("status", "--json")
        assert status.returncode == 0, status.stdout + status.stderr
    finally:
        stack.run("down", "--volumes", "--yes")

"""A sidecar's leaf password, stolen, on the real engine: it logs in only as a leaf node.

The attack of issue 19 (item 2): a host process read a sidecar's leaf URL and connected to the bus's
published client port as that sidecar's leaf user, with the component's rights. Here the password is
read as the sidecar has it (its included credentials file, inside its container), then tried on the
client port from the host: the hub refuses it, while the operator's login on the same port works
and the sidecar stays logged in with it as a leaf (the hub's /leafz). And no container's environment
holds any password from the credentials folder, so a process that can read a container's
``/proc/<pid>/environ`` (or ``docker inspect``) learns none.
"""

from __future__ import annotations

import json
import re
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from nachos_deploy.bus.natsclient import login_refusal
from nachos_deploy.interfaces.cli import app
from tests.commands import compose_down, docker

pytestmark = pytest.mark.engine

PROBE = "nachos-deploy/probe:latest"
runner = CliRunner()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    project = f"h19b-leaf-{uuid.uuid4().hex[:8]}"
    file = tmp_path / "nachos-deploy.yaml"
    component = {"image": PROBE, "egress": False, "healthcheck": False}
    file.write_text(
        yaml.safe_dump(
            {
                "project": project,
                "output": "out",
                "bus": {"client_port": 0, "monitor_port": 0, "healthcheck_interval": "500ms"},
                "components": {"gateway": component, "llm-proxy": component},
            }
        )
    )
    try:
        yield file, project
    finally:
        compose_down(project)


def bus_passwords(folder: Path) -> set[str]:
    """Every password of the bus in the credentials folder (its .env files and the files the servers
    include): each value, and the password inside each URL. The components' own secrets
    (platform-*.env) are meant for their environment, which is how the platform reads them."""
    found = set()
    for path in [*folder.glob("bus*.env"), *folder.glob("*/secrets.conf")]:
        for value in re.findall(r'[=:]\s*"?([^"\s]+)"?\s*$', path.read_text(), flags=re.MULTILINE):
            password = urllib.parse.urlsplit(value).password if "://" in value else value
            if password:
                found.add(urllib.parse.unquote(password))
    return found


def test_a_stolen_leaf_password_logs_in_only_as_a_leaf(stack: tuple[Path, str]) -> None:
    file, project = stack
    result = runner.invoke(app, ["up", "-c", str(file), "--json", "--timeout", "90"])
    assert result.exit_code == 0, result.stdout + result.stderr
    operator_url = json.loads(result.stdout)["nats_url"]

    # The attacker's read: the leaf URL as the gateway's sidecar has it.
    included = docker("exec", f"{project}-bus-gateway-1", "cat", "/etc/nats/credentials/secrets.conf")
    match = re.search(r'NACHOS_LEAF_URL: "([^"]+)"', included)
    assert match, included
    leaf = urllib.parse.urlsplit(match.group(1))
    assert leaf.username == "leaf-gateway" and leaf.password

    # The attack: the bus's published client port, from the host, as the leaf user.
    published = urllib.parse.urlsplit(operator_url).netloc.rpartition("@")[2]
    stolen = f"nats://{leaf.username}:{leaf.password}@{published}"
    assert "Authorization Violation" in (login_refusal(stolen) or "accepted")
    assert login_refusal(operator_url) is None  # the same port, the operator: it is the right port

    # The same login still works where it is meant to: the sidecar is logged in at the hub with it.
    leafz = json.loads(docker("exec", f"{project}-bus-1", "wget", "-qO-", "http://127.0.0.1:8222/leafz"))
    assert "bus-gateway" in {leaf_["name"] for leaf_ in leafz["leafs"]}, leafz

    # No container's environment holds a password: a file does everywhere here.
    passwords = bus_passwords(file.parent / "out" / "credentials")
    assert leaf.password in passwords and len(passwords) >= 3  # operator, two leafs
    ids = docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={project}").split()
    inspected = json.loads(docker("inspect", *ids))
    assert {c["Config"]["Labels"]["com.docker.compose.service"] for c in inspected} >= {
        "bus",
        "bus-gateway",
        "bus-llm-proxy",
        "gateway",
        "llm-proxy",
    }
    leaked = {
        c["Name"]: variable.split("=", 1)[0]
        for c in inspected
        for variable in c["Config"]["Env"] or []
        if any(password in variable for password in passwords)
    }
    assert leaked == {}

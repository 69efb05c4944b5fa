"""End to end through the CLI against the real Docker engine and the real nats-server image.

Each test gets its own Compose project and engine-chosen host ports, and removes it afterwards, so it
does not depend on a clean engine. Probe components sit on the internal network only: a container that
loses the bus must not send name lookups off the machine.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
import yaml
from typer.testing import CliRunner

from nachos_deploy import health
from nachos_deploy.cli import app

PROBE = "nachos-deploy/probe:latest"
runner = CliRunner()


def probe(**extra: Any) -> dict[str, Any]:
    return {"image": PROBE, "egress": False, **extra}


def cli(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def containers(project: str) -> dict[str, str]:
    """Service → container id, for every container of the project, running or not."""
    out = subprocess.run(
        [
            "docker",
            "ps",
            "-a",
            "--filter",
            f"label=com.docker.compose.project={project}",
            "--format",
            '{{.ID}} {{.Label "com.docker.compose.service"}}',
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {service: cid for cid, service in (line.split() for line in out.splitlines())}


def volumes(project: str) -> list[str]:
    out = subprocess.run(
        ["docker", "volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={project}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sorted(out.split())


class Deployment:
    def __init__(self, folder: Path, project: str) -> None:
        self.folder = folder
        self.project = project
        self.file = folder / "nachos-deploy.yaml"

    def write(self, components: dict[str, Any], **bus: Any) -> None:
        document = {
            "project": self.project,
            "bus": {"client_port": 0, "monitor_port": 0, "healthcheck_interval": "500ms", **bus},
            "components": {"gateway": {"enabled": False}, "llm-proxy": {"enabled": False}, **components},
        }
        self.file.write_text(yaml.safe_dump(document))

    def run(self, command: str, *args: str) -> tuple[int, str, str]:
        return cli(command, "-c", str(self.file), *args)


@pytest.fixture
def deployment(engine: str, tmp_path: Path) -> Iterator[Deployment]:
    project = f"ndt-{uuid.uuid4().hex[:10]}"
    deployment = Deployment(tmp_path, project)
    deployment.write({})
    try:
        yield deployment
    finally:
        subprocess.run(
            ["docker", "compose", "-p", project, "down", "--volumes", "--remove-orphans", "-t", "2"],
            capture_output=True,
            timeout=120,
        )


FOUR = {
    "gateway": probe(
        environment={"PROBE_HTTP_PORT": 3000},
        healthcheck={"test": ["CMD", "python3", "-m", "nachos_probe", "--check"], "interval": "1s"},
    ),
    "llm-proxy": probe(),
    "webchat": probe(enabled=True),
    "filesystem": probe(enabled=True),
}


async def _stream_messages(nats_url: str, create: bool) -> int:
    client = await nats.connect(nats_url, allow_reconnect=False, connect_timeout=2)
    try:
        js = client.jetstream()
        if create:
            await js.add_stream(name="KEEP", subjects=["keep.>"])
            await js.publish("keep.one", b"must survive down and up")
        info = await js.stream_info("KEEP")
        return int(info.state.messages)
    finally:
        await client.close()


def test_up_answers_through_the_bus_and_down_keeps_data(deployment: Deployment) -> None:
    deployment.write(FOUR)
    code, out, err = deployment.run("up", "--json", "--timeout", "90")
    assert code == 0, err
    result = json.loads(out)
    assert result["ok"] is True
    assert [s["name"] for s in result["services"]] == ["bus", "gateway", "llm-proxy", "webchat", "filesystem"]
    assert all(s["ok"] for s in result["services"])
    assert {s["connection_name"] for s in result["services"][1:]} == {
        "gateway",
        "llm-proxy",
        "channel-webchat",
        "tool-filesystem",
    }
    nats_url = result["nats_url"]
    assert nats_url.startswith("nats://127.0.0.1:")
    assert result["bus"]["jetstream"] is True
    assert result["bus"]["max_payload"] == 10 * 1024 * 1024

    for name in ("gateway", "llm-proxy", "webchat", "filesystem"):
        reply = json.loads(health.request(nats_url, f"nachos.health.ping.{name}", b"hi"))
        assert reply["component"] == name and reply["ok"] is True
    echo = json.loads(health.request(nats_url, "nachos.llm.request", b"prompt"))
    assert echo["component"] == "llm-proxy" and echo["echo"] == "prompt"
    echo = json.loads(health.request(nats_url, "nachos.tool.filesystem.request", b"ls"))
    assert echo["component"] == "filesystem"
    code, out, _ = deployment.run("request", "nachos.health.ping.webchat")
    assert code == 0 and json.loads(out)["component"] == "webchat"

    code, out, _ = deployment.run("status", "--json")
    assert code == 0
    status = json.loads(out)
    assert status["bus"]["jetstream"] is True
    assert status["bus"]["connections"] >= 4

    # up again on the unchanged stack: nothing is recreated
    before = containers(deployment.project)
    code, _, err = deployment.run("up", "--timeout", "60")
    assert code == 0, err
    assert containers(deployment.project) == before

    assert asyncio.run(_stream_messages(nats_url, create=True)) == 1
    code, out, _ = deployment.run("down")
    assert code == 0
    assert containers(deployment.project) == {}
    assert f"{deployment.project}_bus-data" in volumes(deployment.project)
    assert "Kept volumes" in out

    code, out, err = deployment.run("up", "--json", "--only", "bus")
    assert code == 0, err
    assert set(containers(deployment.project)) == {"bus"}
    assert [s["ok"] for s in json.loads(out)["services"]] == [True]
    assert asyncio.run(_stream_messages(json.loads(out)["nats_url"], create=False)) == 1

    code, _, err = deployment.run("down", "--volumes")  # no terminal and no --yes: refused
    assert code == 2 and "--yes" in err
    assert volumes(deployment.project)
    code, out, _ = deployment.run("down", "--volumes", "--yes")
    assert code == 0 and "Deleted volumes" in out
    assert volumes(deployment.project) == []
    assert deployment.run("down")[0] == 0  # a stack that does not exist is not an error


def test_a_bus_that_cannot_start_stops_everything(deployment: Deployment) -> None:
    # The probe image is no nats-server: given the bus's flags it exits at once, like a broken config.
    deployment.write({"webchat": probe(enabled=True)}, image=PROBE)
    code, out, err = deployment.run("up", "--timeout", "30")
    assert code == 5, out + err
    text = " ".join(err.split())
    assert "The bus did not become healthy" in text
    assert "No component was started" in text
    assert "usage: python3 -m nachos_probe" in err  # the bus's own log lines are shown
    assert set(containers(deployment.project)) == {"bus"}


def test_a_component_that_exits_at_start_is_named(deployment: Deployment) -> None:
    deployment.write(
        {"webchat": probe(enabled=True), "crasher": probe(environment={"PROBE_FAIL_AT_START": 3})}
    )
    code, out, err = deployment.run("up", "--timeout", "60")
    assert code == 6, out + err
    text = " ".join(err.split())
    assert "crasher did not come up" in text
    assert "webchat" not in text.split("did not come up")[0]
    assert "exit code 3" in text
    assert "nachos-deploy down" in text
    assert "crasher" in containers(deployment.project)  # left for inspection


def test_a_component_not_on_the_bus_fails_by_connz(deployment: Deployment) -> None:
    # Running and healthy is not enough: the bus must list the component under its connection name.
    # This probe runs and is healthy but joins under another name than channel-webchat.
    deployment.write({"webchat": probe(enabled=True, environment={"NACHOS_CONNECTION_NAME": "impostor"})})
    code, out, err = deployment.run("up", "--timeout", "6")
    assert code == 6, out + err
    assert "is not connected to the bus as 'channel-webchat'" in " ".join(err.split())


def test_a_changed_bus_config_recreates_the_bus(deployment: Deployment) -> None:
    code, out, err = deployment.run("up", "--json", "--only", "bus")
    assert code == 0, err
    assert json.loads(out)["bus"]["max_payload"] == 10 * 1024 * 1024
    first = containers(deployment.project)["bus"]
    code, out, err = deployment.run("up", "--json", "--only", "bus", "--set", "bus.max_payload=1MB")
    assert code == 0, err
    assert json.loads(out)["bus"]["max_payload"] == 1024 * 1024
    assert containers(deployment.project)["bus"] != first
    code, out, _ = deployment.run("request", "_nobody.listens", "x", "--timeout", "0.5")
    assert code == 1 and "No reply" in out + _


def test_a_taken_host_port_is_a_bus_failure_with_a_fix(deployment: Deployment) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out, err = deployment.run("up", "--set", f"bus.client_port={port}")
    assert code == 5, out + err
    assert "--set bus.client_port=PORT" in " ".join(err.split())


def test_unknown_only_service_is_a_config_error(deployment: Deployment) -> None:
    code, _, err = deployment.run("up", "--only", "nope")
    assert code == 3 and "--only names nope" in err
    assert containers(deployment.project) == {}


def test_doctor_passes_with_a_free_port_setup(deployment: Deployment) -> None:
    code, out, _ = deployment.run("doctor", "--json")
    checks = {c["name"]: c for c in json.loads(out)["checks"]}
    assert checks["engine"]["level"] == "pass"
    assert checks["compose"]["level"] == "pass"
    assert checks["images"]["level"] == "pass"
    assert code == 0

"""End to end through the CLI against the real Docker engine and the real nats-server image.

Each test gets its own Compose project and engine-chosen host ports, and removes it afterwards, so it
does not depend on a clean engine. Probe components sit on the internal network only: a container that
loses the bus must not send name lookups off the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import pty
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
import yaml

from nachos_deploy.bus.monitor import BusUnavailable, connection_names
from nachos_deploy.bus.natsclient import request
from tests.commands import cli, compose_down, container, docker
from tests.conftest import unavailable, without_networks_wait
from tests.documents import FAST_CHECKS, stack_document
from tests.engine_events import LiveEvents

PROBE = "nachos-deploy/probe:latest"
# The probe's own HTTP /health as a fast check, for probes whose health a test watches closely.
FAST_CHECK = {"test": ["CMD", "python3", "-m", "nachos_probe", "--check"], "interval": "1s", "retries": 1}


def probe(**extra: Any) -> dict[str, Any]:
    """A probe in place of a component. Its image ships a healthcheck that never passes (as the
    filesystem tool's does): platform roles get it replaced by the defaults, and an extra must say
    what it wants, here no check."""
    if extra.get("role") is None and "healthcheck" not in extra:
        extra["healthcheck"] = False
    return {"image": PROBE, "egress": False, **extra}


def platform_probe(**extra: Any) -> dict[str, Any]:
    """A probe as a platform component, under the defaults: nothing about its health is set."""
    return {"image": PROBE, "egress": False, **extra}


def running(project: str, service: str) -> bool:
    """Whether ``service`` of ``project`` has a running container."""
    out = subprocess.run(
        [
            "docker", "ps", "--quiet",
            "--filter", f"label=com.docker.compose.project={project}",
            "--filter", f"label=com.docker.compose.service={service}",
        ],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    return bool(out.strip())


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
        document = stack_document(self.project, components, bus={**FAST_CHECKS, **bus})
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
        compose_down(project)


# Under the defaults: the gateway probe serves GET /health on 3000 and the rendered `node -e fetch`
# check runs unchanged (the probe image has a `node` for it); it writes its database to the fresh
# gateway-data volume as uid 61000; the others keep the image's never-passing check unless the
# defaults switch it off.
FOUR = {
    "gateway": platform_probe(),
    "llm-proxy": platform_probe(),
    "webchat": platform_probe(enabled=True),
    "filesystem": platform_probe(enabled=True),
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
    """The whole platform on one stack, and what only the engine can show about it, read off that one
    stack in turn: answers through the bus, the gateway's volume handed to its user, the images' own
    checks replaced, each component behind its own sidecar, hardened containers, the password kept out
    of the summary, passwords rotated, an unchanged `up`, and `down` keeping the data."""
    deployment.write(FOUR)
    code, out, err = deployment.run("up", "--json", "--timeout", "90")
    assert code == 0, err
    result = json.loads(out)
    assert result["ok"] is True
    names = ["gateway", "llm-proxy", "webchat", "filesystem"]
    assert [s["name"] for s in result["services"]] == [
        "bus",
        "bus-ports",
        *(f"bus-{n}" for n in names),
        "state",  # the gateway's Redis, before it
        *names,
    ]
    assert all(s["ok"] for s in result["services"])
    services = {s["name"]: s for s in result["services"]}
    assert {services[n]["connection_name"] for n in names} == {
        "gateway",
        "llm-proxy",
        "channel-webchat",
        "tool-filesystem_read",
    }
    assert all(services[f"bus-{n}"]["connected"] is True for n in names)  # leaf nodes at the hub
    assert services["filesystem"]["tool_id"] == "filesystem_read"
    assert services["gateway"]["health"] == "healthy"
    nats_url = result["nats_url"]
    assert nats_url.startswith("nats://nachos-deploy:") and "@127.0.0.1:" in nats_url
    assert result["bus"]["jetstream"] is True
    assert result["bus"]["max_payload"] == 10 * 1024 * 1024

    for name in ("gateway", "llm-proxy", "webchat", "filesystem"):
        reply = json.loads(request(nats_url, f"nachos.health.ping.{name}", b"hi"))
        assert reply["component"] == name and reply["ok"] is True
    echo = json.loads(request(nats_url, "nachos.llm.request", b"prompt"))
    assert echo["component"] == "llm-proxy" and echo["echo"] == "prompt"
    echo = json.loads(request(nats_url, "nachos.tool.filesystem_read.request", b"ls"))
    assert echo["component"] == "filesystem"
    code, out, _ = deployment.run("request", "nachos.gateway.subagents.list", "{}")
    assert code == 0 and json.loads(out) == {"ok": True, "runs": []}

    # The gateway runs as run_as.components and its image has no /app/data: on a fresh named volume
    # (owned by root) it dies with SQLITE_CANTOPEN unless the volume is handed to it first.
    owner, lines = gateway_db(deployment.project)
    assert owner == "61000:61000" and len(lines) == 1

    # The probe image's own check never passes and runs every 30 s (like the filesystem tool's);
    # left on, the components would sit in "starting" for 30 s and then turn unhealthy.
    assert all(s["health"] in (None, "healthy") for s in result["services"])
    ids = containers(deployment.project)
    for service in ("llm-proxy", "filesystem"):  # replaced by one that asks the bus (for Compose alone)
        test = json.loads(docker("inspect", "-f", "{{json .Config.Healthcheck.Test}}", ids[service]))
        assert test[:3] == ["CMD", "node", "-e"] and "/connz" in test[3], test

    code, out, _ = deployment.run("status", "--json")
    assert code == 0
    status = json.loads(out)
    assert status["bus"]["jetstream"] is True
    assert status["bus"]["leafnodes"] == 4  # the components' sidecars

    # Each component reaches the bus through its own sidecar only; the URL up gives works as it is
    # (it carries the operator's credentials), and without them the hub refuses the host's client.
    anonymous = "nats://" + nats_url.split("@", 1)[1]
    with pytest.raises(BusUnavailable, match="Authorization Violation"):
        request(anonymous, "nachos.health.ping.webchat")
    assert reaches(ids["webchat"], "bus-webchat")
    for other in ("bus", "bus-llm-proxy", "llm-proxy"):
        assert not reaches(ids["webchat"], other), f"webchat reaches {other}"
    # Hardened by default: no privileges to gain, no capabilities, a read-only root, limits.
    hardened = (
        ("webchat", "61000:61000"),
        ("bus-webchat", "61001:61001"),
        ("bus-ports", "61002:61002"),
        ("bus", ""),
    )
    for service, user in hardened:
        config = json.loads(docker("inspect", "-f", "{{json .HostConfig}}", ids[service]))
        assert config["ReadonlyRootfs"] is True and config["CapDrop"] == ["ALL"], service
        assert "no-new-privileges:true" in config["SecurityOpt"], service
        assert config["Memory"] > 0 and config["PidsLimit"] > 0, service
        assert docker("inspect", "-f", "{{.Config.User}}", ids[service]) == user

    # up again on the unchanged stack: nothing is recreated, and the human summary never shows the
    # password; the next commands name this project (it may come from the file, --set or the
    # environment) and a subject the platform's gateway answers.
    code, out, err = deployment.run("up", "--timeout", "60")
    assert code == 0, out + err
    assert containers(deployment.project) == ids
    password = nats_url.split(":")[2].split("@")[0]
    assert "nachos-deploy:***@" in out and password not in out
    text = " ".join(out.split())
    assert (
        f"request nachos.gateway.subagents.list '{{}}' -c {deployment.file} -p {deployment.project}" in text
    )
    assert f"down -c {deployment.file} -p {deployment.project}" in text

    # Rotating the passwords reloads the bus and the sidecars in place; the old password stops working.
    code, out, err = cli("credentials", "rotate", "-c", str(deployment.file))
    assert code == 0, out + err
    code, out, err = deployment.run("status", "--json")  # the stack is whole, by rotate alone
    assert code == 0, out + err
    nats_url = json.loads(out)["nats_url"]
    new_password = nats_url.split(":")[2].split("@")[0]
    assert new_password != password
    assert json.loads(request(nats_url, "nachos.health.ping.webchat"))["ok"] is True
    with pytest.raises(BusUnavailable, match="Authorization Violation"):
        request(nats_url.replace(new_password, password), "nachos.health.ping.webchat")

    assert asyncio.run(_stream_messages(nats_url, create=True)) == 1
    gateway = container(deployment.project, "gateway")
    code, out, err = deployment.run("up")  # after a rotation in place: nothing is started over
    assert code == 0 and "credentials changed" not in err, out + err
    assert container(deployment.project, "gateway") == gateway

    # The credentials folder removed under the running stack: `up` makes new passwords, which the
    # running servers (bind mounts of the folder that is gone) never read. It starts the stack over,
    # its data kept, where it failed with exit 5 before ("Authorization Violation").
    shutil.rmtree(deployment.folder / ".nachos" / "credentials")
    code, out, err = deployment.run("plan", "--json")  # which `plan` foresees, writing nothing
    assert code == 2, out + err
    planned = json.loads(out)["services"]
    assert {s["action"] for s in planned} == {"recreate"} and all(
        "credentials" in s["reasons"] for s in planned
    )
    assert not (deployment.folder / ".nachos" / "credentials").exists()
    code, out, err = deployment.run("up", "--json", "--timeout", "90")
    assert code == 0, out + err
    assert "credentials changed since its servers started" in " ".join(err.split())
    assert asyncio.run(_stream_messages(json.loads(out)["nats_url"], create=False)) == 1
    _, opened = gateway_db(deployment.project)  # once per start of the gateway
    code, out, _ = deployment.run("down")
    assert code == 0
    assert containers(deployment.project) == {}
    assert f"{deployment.project}_bus-data" in volumes(deployment.project)
    assert "Kept volumes" in out
    # Passwords rotated while the stack is down are written, said to be the next up's, and used by it.
    code, out, err = cli("credentials", "rotate", "-c", str(deployment.file))
    assert code == 0, out + err
    assert "the next `nachos-deploy up` starts the bus with them" in " ".join(out.split())

    code, out, err = deployment.run("up", "--json", "--timeout", "90")
    assert code == 0, out + err
    assert all(s["ok"] for s in json.loads(out)["services"])
    assert new_password not in json.loads(out)["nats_url"]
    assert asyncio.run(_stream_messages(json.loads(out)["nats_url"], create=False)) == 1
    owner, lines = gateway_db(deployment.project)
    assert owner == "61000:61000" and lines[:-1] == opened  # the same database, opened again after down

    code, _, err = deployment.run("down", "--volumes")  # no terminal and no --yes: refused
    assert code == 2 and "--yes" in err
    assert volumes(deployment.project)
    code, out, _ = deployment.run("down", "--volumes", "--yes")
    assert code == 0 and "Deleted volumes" in out
    assert volumes(deployment.project) == []
    assert deployment.run("down")[0] == 0  # a stack that does not exist is not an error


def test_a_bus_that_cannot_start_stops_everything(deployment: Deployment) -> None:
    # The probe image is no nats-server: given the bus's flags it exits at once, like a broken config.
    deployment.write({"webchat": platform_probe(enabled=True)}, image=PROBE)
    # `up` creates the components' containers while it proves the bus: created, never started.
    started = LiveEvents(
        "start", f"com.docker.compose.project={deployment.project}", "com.docker.compose.service"
    )
    code, out, err = deployment.run("up", "--timeout", "30")
    # no sidecar or component ever ran (volume-init, with no network, prepares volumes beside the bus)
    assert set(started.stop()) <= {"bus", "bus-ports", "volume-init"}
    assert code == 5, out + err
    text = " ".join(err.split())
    assert "The bus did not become healthy" in text
    assert "No component was started" in text
    assert "usage: python3 -m nachos_probe" in err  # the bus's own log lines are shown
    assert {"bus", "bus-ports"} <= set(containers(deployment.project)) <= {"bus", "bus-ports", "volume-init"}


def test_a_component_that_exits_at_start_is_named(deployment: Deployment) -> None:
    deployment.write(
        {"webchat": platform_probe(enabled=True), "crasher": probe(environment={"PROBE_FAIL_AT_START": 3})}
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
    deployment.write(
        {"webchat": platform_probe(enabled=True, environment={"NACHOS_CONNECTION_NAME": "impostor"})}
    )
    code, out, err = deployment.run("up", "--timeout", "15")
    assert code == 6, out + err
    # behind its sidecar, the proof is the sidecar's own /connz listing the connection name
    assert "is not connected to its sidecar bus-webchat as 'channel-webchat'" in " ".join(err.split())
    # status judges by the same rule: running, but not on the bus, is a problem
    code, out, _ = deployment.run("status", "--json")
    assert code == 1
    webchat = next(s for s in json.loads(out)["services"] if s["name"] == "webchat")
    assert webchat["status"] == "running" and webchat["connected"] is False and webchat["ok"] is False


def test_a_changed_bus_config_recreates_the_bus(deployment: Deployment) -> None:
    deployment.write({"webchat": platform_probe(enabled=True)})
    code, out, err = deployment.run("up", "--json", "--only", "bus")
    assert code == 0, err
    assert set(containers(deployment.project)) == {"bus", "bus-ports"}  # --only bus starts no other
    assert [s["ok"] for s in json.loads(out)["services"]] == [True, True]
    assert json.loads(out)["bus"]["max_payload"] == 10 * 1024 * 1024
    first = containers(deployment.project)["bus"]
    code, out, err = deployment.run("up", "--json", "--only", "bus", "--set", "bus.max_payload=1MB")
    assert code == 0, err
    assert json.loads(out)["bus"]["max_payload"] == 1024 * 1024
    assert containers(deployment.project)["bus"] != first
    code, out, _ = deployment.run("request", "_nobody.listens", "x", "--raw", "--timeout", "0.5")
    assert code == 1 and "No reply" in out + _


def test_a_taken_host_port_stops_up_before_anything_starts_with_a_fix(deployment: Deployment) -> None:
    # Before, Compose refused the port only when it published it: exit 5, the files written and the
    # bus left running. Now a cold up tests it first (io/host_ports.py). A bus that fails once it is
    # started is test_a_bus_that_cannot_start_stops_everything (the created containers removed).
    deployment.write({"webchat": platform_probe(enabled=True)})  # a sidecar shares a network with the bus
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out, err = deployment.run("up", "--set", f"bus.client_port={port}")
    assert code == 4, out + err
    text = " ".join(err.split())
    assert f"127.0.0.1:{port} (bus.client_port, for the bus). Nothing was written or started." in text
    assert "--set bus.client_port=PORT" in text
    assert containers(deployment.project) == {}
    assert not (deployment.folder / ".nachos").exists()


def test_unknown_only_service_is_a_config_error(deployment: Deployment) -> None:
    code, _, err = deployment.run("up", "--only", "nope")
    assert code == 3 and "--only names nope" in err
    assert containers(deployment.project) == {}


def test_doctor_passes_with_a_free_port_setup(deployment: Deployment) -> None:
    code, out, _ = deployment.run("doctor", "--json")
    checks = {c["name"]: c for c in json.loads(out)["checks"]}
    assert checks["engine"]["level"] == "pass"
    assert checks["compose"]["level"] == "pass"
    # This machine's docker is the compiled CLI with Compose as its plugin: every Compose call of the
    # engine tests starts Compose's own program (docker/compose_program.py), and doctor says so.
    assert re.search(r"\(run as /\S+/docker-compose\)$", checks["compose"]["detail"]), checks["compose"]
    assert checks["images"]["level"] == "pass"
    assert code == 0


def gateway_db(project: str) -> tuple[str, list[str]]:
    """Owner of the gateway's database in its named volume, and one line per start recorded in it."""
    out = docker(
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        f"{project}_gateway-data:/d",
        "--entrypoint",
        "sh",
        "nachos-deploy/probe:latest",
        "-c",
        'stat -c %u:%g /d/gateway.db && python3 -c "import sqlite3; '
        "db = sqlite3.connect('/d/gateway.db'); "
        "[print('start', at) for (at,) in db.execute('SELECT at FROM starts')]\"",
    )
    owner, *lines = out.splitlines()
    return owner, lines


def test_up_waits_for_a_component_healthcheck(deployment: Deployment) -> None:
    # On the bus at once, but healthy only 3 s later: up must not report it before Docker does.
    deployment.write(
        {
            "slow": probe(
                environment={"PROBE_HTTP_PORT": 8000, "PROBE_HEALTHY_AFTER": 3},
                healthcheck={**FAST_CHECK, "start_period": "30s"},  # failures while starting are fine
            ),
            "archiver": probe(),  # an extra that switches its image's never-passing check off itself
        }
    )
    code, out, err = deployment.run("up", "--json", "--timeout", "60")
    assert code == 0, out + err
    slow = next(s for s in json.loads(out)["services"] if s["name"] == "slow")
    assert slow["health"] == "healthy" and slow["connected"] is True
    # What `up` called healthy is: its own check passes now (it fails for the first 3 s).
    check = subprocess.run(
        ["docker", "exec", f"{deployment.project}-slow-1", *FAST_CHECK["test"][1:]],
        capture_output=True,
        timeout=30,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    archiver = containers(deployment.project)["archiver"]
    assert docker("inspect", "-f", "{{json .Config.Healthcheck.Test}}", archiver) == '["NONE"]'


def test_a_restart_during_up_fails_with_the_exit_code_of_the_failed_run(deployment: Deployment) -> None:
    # It connects, exits 4 once, and runs fine after the restart policy starts it again: the state
    # then reads exit code 0, and the container looks running and on the bus.
    deployment.write(
        {
            "flaky": probe(
                environment={"PROBE_EXIT_ONCE": 4, "PROBE_HTTP_PORT": 8000},
                healthcheck={**FAST_CHECK, "interval": "2s"},
            )
        }
    )
    code, out, err = deployment.run("up", "--timeout", "60")
    assert code == 6, out + err
    text = " ".join(err.split())
    assert "flaky did not come up: flaky restarted 1 time(s) during this run (exit code 4)" in text


def test_a_missing_required_secret_is_refused_with_its_name(deployment: Deployment) -> None:
    deployment.write({"telegram": platform_probe(enabled=True)})
    code, _, err = deployment.run("up")
    assert code == 3
    assert "telegram needs TELEGRAM_BOT_TOKEN" in " ".join(err.split())
    assert containers(deployment.project) == {}
    assert not (deployment.folder / ".nachos").exists()  # nothing written
    code, _, err = deployment.run("validate")
    assert code == 3 and "TELEGRAM_BOT_TOKEN" in err
    code, out, _ = deployment.run("doctor", "--json")
    checks = {c["name"]: c for c in json.loads(out)["checks"]}
    assert code == 1 and checks["secrets"]["level"] == "fail"
    assert "TELEGRAM_BOT_TOKEN (for telegram)" in checks["secrets"]["detail"]

    # Reading and removing commands work without it, and Compose says nothing about blank values.
    for command in (("status",), ("logs",), ("down",)):
        done = subprocess.run(
            [sys.executable, "-m", "nachos_deploy", *command, "-c", str(deployment.file)],
            capture_output=True,
            text=True,
            env={k: v for k, v in os.environ.items() if k != "TELEGRAM_BOT_TOKEN"},
            timeout=60,
        )
        said = done.stdout + done.stderr  # `logs` streams Compose's own messages to stdout
        assert "variable is not set" not in said, said
        assert "TELEGRAM_BOT_TOKEN" not in said, said
        assert done.returncode in (0, 1), done.stderr  # status: 1, nothing runs

    # The output folder's .env counts, as it does for Compose.
    (deployment.folder / ".nachos").mkdir()
    (deployment.folder / ".nachos" / ".env").write_text("TELEGRAM_BOT_TOKEN=t0k3n\n")
    code, out, err = deployment.run("validate")
    assert code == 0, out + err


def test_a_configuration_compose_rejects_writes_nothing(deployment: Deployment) -> None:
    code, _, err = deployment.run(
        "up", "--set", "components.x.image=" + PROBE, "--set", "components.x.command=echo 'oops"
    )
    assert code == 3, err
    assert "Docker Compose rejects" in err and "Nothing was written" in " ".join(err.split())
    assert not (deployment.folder / ".nachos").exists()
    assert containers(deployment.project) == {}


OUTAGE_TRIES = {"PROBE_RECONNECT_ATTEMPTS": 2, "PROBE_RECONNECT_WAIT": 0.5, "PROBE_CONNECT_WINDOW": 0.5}


def wait_for(predicate: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.mark.parametrize("auth", [True, False], ids=["sidecars", "open-bus"])
def test_up_heals_what_a_long_outage_left_and_status_tells_the_truth(
    deployment: Deployment, auth: bool
) -> None:
    # As measured with the real images after an outage longer than their ten reconnects: the gateway
    # comes back (but its health says unhealthy for a while), llm-proxy exits 0 and then
    # restart-loops while the bus is away, the whatsapp channel stays running and off the bus.
    deployment.write(
        {
            "gateway": platform_probe(
                environment={"PROBE_ON_BUS_LOSS": "forever", "PROBE_HTTP_PORT": 3000},
                healthcheck=FAST_CHECK,
            ),
            "llm-proxy": platform_probe(environment={**OUTAGE_TRIES, "PROBE_ON_BUS_LOSS": "exit0"}),
            "webchat": platform_probe(
                enabled=True, environment={**OUTAGE_TRIES, "PROBE_ON_BUS_LOSS": "stay"}
            ),
        },
        auth=auth,
    )
    code, out, err = deployment.run("up", "--timeout", "60")
    assert code == 0, out + err
    ids = containers(deployment.project)
    # Stopped by hand, so the restart policy leaves them down: the hub, and the sidecars (a hub outage
    # alone does not reach components behind sidecars: they keep their connection to the sidecar).
    outage = [
        cid for name, cid in ids.items() if name == "bus" or (name.startswith("bus-") and name != "bus-ports")
    ]
    docker("stop", "-t", "1", *outage)

    code, out, _ = deployment.run("status", "--json")
    assert code == 1  # with the bus down, nothing that uses it is ok
    status = json.loads(out)
    assert not any(s["ok"] for s in status["services"] if s["name"] != "state"), status  # Redis needs no bus
    off_bus = ("bus", "bus-ports", "state")  # the state store is never on the bus
    assert all(s["connected"] is False for s in status["services"] if s["name"] not in off_bus)

    def health(service: str) -> str:
        return docker("inspect", "-f", "{{.State.Health.Status}}", ids[service])

    wait_for(lambda: health("gateway") == "unhealthy", "the gateway to turn unhealthy")
    time.sleep(2)  # past the others' reconnect window

    code, out, err = deployment.run("up", "--json", "--timeout", "60")
    assert code == 0, out + err
    result = {s["name"]: s for s in json.loads(out)["services"]}
    assert all(s["ok"] and s["connected"] is not False for s in result.values())
    assert result["webchat"].get("restarted_by_up") is True
    assert deployment.run("status")[0] == 0
    assert containers(deployment.project)["webchat"] == ids["webchat"]  # restarted, not recreated


def test_up_stops_at_once_when_the_bus_dies_while_components_start(deployment: Deployment) -> None:
    # The component never gets on the bus, so up waits; killing the bus must end that wait with
    # the bus's own exit code, not blame the component at the timeout.
    deployment.write(
        {"webchat": platform_probe(enabled=True, environment={"NACHOS_CONNECTION_NAME": "impostor"})}
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "nachos_deploy", "up", "-c", str(deployment.file), "--timeout", "120"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Started, not only created: `up` creates the components' containers while the bus starts.
        wait_for(lambda: running(deployment.project, "webchat"), "the component to start", 60)
        time.sleep(0.5)
        docker("kill", containers(deployment.project)["bus"])
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 5, err
    assert "The bus exited with code 137" in " ".join(err.split())


def test_a_health_verdict_from_before_an_outage_does_not_fail_up(deployment: Deployment) -> None:
    # The gateway is back on the bus, but Docker still says "unhealthy" until its next check runs:
    # that verdict is from before the outage. up waits for a fresh one instead of failing at once.
    deployment.write(
        {
            "gateway": platform_probe(
                environment={
                    "PROBE_ON_BUS_LOSS": "forever",
                    "PROBE_RECONNECT_WAIT": 0.2,
                    "PROBE_HTTP_PORT": 3000,
                },
                healthcheck={**FAST_CHECK, "interval": "4s"},
            )
        },
        auth=False,  # the gateway on the hub itself, so a hub outage is its outage
    )
    code, out, err = deployment.run("up", "--json", "--timeout", "60")
    assert code == 0, out + err
    ids = containers(deployment.project)
    docker("stop", "-t", "1", ids["bus"])

    def gateway_health() -> str:
        return docker("inspect", "-f", "{{.State.Health.Status}}", ids["gateway"])

    wait_for(lambda: gateway_health() == "unhealthy", "the gateway to turn unhealthy")
    docker("start", ids["bus"])  # the bus is back by hand; the gateway reconnects on its own
    monitor_url = json.loads(out)["monitor_url"]  # published by bus-ports, which kept running

    def reconnected() -> bool:
        try:
            return "gateway" in connection_names(monitor_url)
        except BusUnavailable:
            return False

    wait_for(reconnected, "the gateway to reconnect")
    assert gateway_health() == "unhealthy"  # the verdict is now stale
    code, out, err = deployment.run("up", "--json", "--timeout", "60")
    assert code == 0, out + err
    gateway = next(s for s in json.loads(out)["services"] if s["name"] == "gateway")
    assert gateway["health"] == "healthy" and "restarted_by_up" not in gateway


def reaches(container: str, host: str, port: int = 4222) -> bool:
    """Whether a TCP connection from inside ``container`` to ``host:port`` succeeds within 2 s. The
    alarm bounds the name lookup too: on an internal network the lookup of a name that is not on it
    waits for the resolver's timeouts (10 s), while a name on it answers at once."""
    connect = f"socket.create_connection(({host!r}, {port}), timeout=2).close()"
    script = f"import signal, socket; signal.alarm(2); {connect}"
    done = subprocess.run(
        ["docker", "exec", container, "python3", "-c", script], capture_output=True, text=True, timeout=30
    )
    return done.returncode == 0


class LookupWatch:
    """Every packet on the host's interfaces that carries ``label``, by interface name, read with a
    raw packet socket (root only). Docker's own bridges and veths are inside the machine."""

    def __init__(self, label: str) -> None:
        self.label = label.encode()
        self.interfaces: set[str] = set()
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0003))
        self._sock.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                data, address = self._sock.recvfrom(65535)
            except TimeoutError:
                continue
            if self.label in data:
                self.interfaces.add(address[0])

    def stop(self) -> set[str]:
        time.sleep(0.5)  # a forwarded query is sent within milliseconds of the lookup
        self._stop.set()
        self._thread.join()
        self._sock.close()
        return self.interfaces

    @staticmethod
    def outside(interfaces: set[str]) -> set[str]:
        return {i for i in interfaces if not i.startswith(("veth", "br-", "docker"))}


def lookup_from(container: str) -> set[str]:
    """Look a unique name up from inside ``container``; the interfaces its query was seen on."""
    label = f"nachos-egress-{uuid.uuid4().hex[:12]}"
    watch = LookupWatch(label)
    subprocess.run(
        ["docker", "exec", container, "nslookup", f"{label}.example.com"], capture_output=True, timeout=30
    )
    return watch.stop()


def test_the_bus_has_no_way_off_the_machine(deployment: Deployment) -> None:
    if os.geteuid() != 0:
        unavailable("watching the host's interfaces for a lookup needs root; run the tests as root")
    code, out, err = deployment.run("up", "--json", "--only", "bus")
    assert code == 0, out + err
    ids = containers(deployment.project)
    # Every network of the bus is internal: the engine drops what leaves them for elsewhere.
    networks = json.loads(docker("inspect", "-f", "{{json .NetworkSettings.Networks}}", ids["bus"]))
    gateways = set()
    for name in networks:
        internal, ipam = docker(
            "network", "inspect", "-f", "{{.Internal}} {{json .IPAM.Config}}", name
        ).split(" ", 1)
        assert internal == "true", f"the bus is on {name}, which is not internal"
        # With a subnet of nachos-deploy's (docs/networks.md) the engine takes its first address as the
        # gateway and does not list it.
        gateways.update(
            entry.get("Gateway") or str(next(ipaddress.ip_network(entry["Subnet"]).hosts()))
            for entry in json.loads(ipam)
        )
    # By route: an address off the machine is routed only into one of those internal bridges.
    route = docker("exec", ids["bus"], "ip", "route", "get", "192.0.2.1").split()
    assert route[route.index("via") + 1] in gateways, route
    # By name lookup: the query is seen inside the machine (so the watch works) and never outside.
    seen = lookup_from(ids["bus"])
    assert seen, "the bus's lookup was not seen on any interface: the watch does not work"
    assert not LookupWatch.outside(seen), f"a lookup from the bus left through {seen}"
    # The forwarder that publishes the ports sends none anywhere, even for a name it cannot resolve.
    assert not LookupWatch.outside(lookup_from(ids["bus-ports"]))
    # And the host still reaches the bus, through the forwarder (up's gate made a round trip there).
    assert json.loads(out)["bus"]["round_trip_ms"] > 0


def test_no_secret_value_appears_in_anything_nachos_deploy_writes_or_prints(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A canary in every secret variable the README lists, and a stack that uses them all.
    from nachos_deploy.core import catalog

    names = sorted({s.name for known in catalog.KNOWN.values() for s in known.secrets})
    canaries = {name: f"CANARY-{name}-7f3a9c" for name in names}
    for name, value in canaries.items():
        monkeypatch.setenv(name, value)
    deployment.write(
        {
            "llm-proxy": platform_probe(),
            **{ch: platform_probe(enabled=True) for ch in ("slack", "discord", "telegram", "whatsapp")},
        }
    )
    said: list[str] = []
    for args in (
        ("render",),
        ("validate",),
        ("up", "--timeout", "90"),
        ("up", "--json", "--timeout", "90"),
        ("status", "--json"),
        ("logs",),
        ("doctor", "--json"),
        ("up", "--set", "bus.max_payload=1GB"),  # an error path
    ):
        code, out, err = deployment.run(*args)
        said.append(f"{args}: {code}\n{out}\n{err}")
    assert said[2].startswith("('up', '--timeout', '90'): 0"), said[2]
    assert said[-1].startswith("('up', '--set', 'bus.max_payload=1GB'): 3"), said[-1]
    rendered = [
        p.read_text(errors="replace") for p in (deployment.folder / ".nachos").rglob("*") if p.is_file()
    ]
    everything = "\n".join([*said, *rendered])
    assert "${TELEGRAM_BOT_TOKEN}" in everything  # the references are there ...
    leaked = [name for name, value in canaries.items() if value in everything]
    assert leaked == []  # ... never the values


def test_a_name_chosen_by_a_client_does_not_put_a_component_on_the_bus(deployment: Deployment) -> None:
    # The webchat container is not there as channel-webchat (it joins its sidecar under another
    # name); a client on the host, with the operator's credentials, takes the name channel-webchat at
    # the hub. up must not be fooled: the identity is the sidecar's login, and the component must be
    # in that sidecar's /connz.
    deployment.write(
        {"webchat": platform_probe(enabled=True, environment={"NACHOS_CONNECTION_NAME": "someone-else"})}
    )
    code, out, err = deployment.run("up", "--json", "--only", "bus")
    assert code == 0, out + err
    nats_url = json.loads(out)["nats_url"]

    async def impersonate() -> tuple[int, str, str]:
        impostor = await nats.connect(nats_url, name="channel-webchat", allow_reconnect=False)
        try:
            return await asyncio.to_thread(deployment.run, "up", "--timeout", "8")
        finally:
            await impostor.close()

    code, out, err = asyncio.run(impersonate())
    assert code == 6, out + err
    assert "is not connected to its sidecar bus-webchat as 'channel-webchat'" in " ".join(err.split())


def _up_bus_with_stderr_on(deployment: Deployment, terminal: bool, *args: str) -> tuple[int, str, str]:
    """`up --only bus` (or the command ``args``) as a subprocess whose stderr is a terminal (a pty)
    or a pipe."""
    command = [
        sys.executable, "-m", "nachos_deploy", *(args or ("up", "--only", "bus")), "-c", str(deployment.file)
    ]  # fmt: skip
    quiet = {
        k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")
    }
    if not terminal:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=quiet)
        return done.returncode, done.stdout, done.stderr
    main, other = pty.openpty()
    seen = bytearray()

    def read() -> None:  # drained all along: a full pty would block the spinner, and so the run
        with contextlib.suppress(OSError):  # EIO once the child has closed its end
            while chunk := os.read(main, 4096):
                seen.extend(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=other,
        text=True,
        env={**quiet, "TERM": "xterm", "COLUMNS": "200"},
    ) as child:
        os.close(other)
        out, _ = child.communicate(timeout=120)
    reader.join(timeout=10)
    os.close(main)
    return child.returncode, out, seen.decode("utf-8", "replace")


def test_up_shows_its_progress_on_a_terminal_and_none_in_a_pipe(deployment: Deployment) -> None:
    """On a terminal, a spinner says what `up` waits for, and what `down` does; in a pipe (CI, a log
    file) there is none, as rich would draw none (and rich is then not imported before the bus
    starts)."""
    code, out, shown = _up_bus_with_stderr_on(deployment, terminal=True)
    assert code == 0, out + shown
    # The spinner redraws 12.5 times a second: a line shorter than that may never be drawn, but
    # Compose starting the bus takes most of a second, and removing its networks too.
    assert "Starting the bus" in shown, shown[-2000:]
    assert "is up" in out
    code, out, shown = _up_bus_with_stderr_on(deployment, True, "down")
    assert code == 0 and "Removed project" in out, out + shown
    assert f"Removing project {deployment.project}'s containers and networks" in shown, shown[-2000:]
    code, out, err = _up_bus_with_stderr_on(deployment, terminal=False)
    assert code == 0, out + err
    assert "Starting the bus" not in err and "\x1b[" not in err, err
    assert "is up" in out
    code, out, err = _up_bus_with_stderr_on(deployment, False, "down")
    assert code == 0 and "Removed project" in out, out + err
    assert without_networks_wait(err) == [], err

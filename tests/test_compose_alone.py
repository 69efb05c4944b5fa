"""The rendered files run with Docker Compose alone (issue 18, section 6).

`render` leaves the output folder runnable: the credentials its files read are made there (never
rendered, so the rendered files stay byte-for-byte the same). Every long-running service has a
healthcheck that means what `status` means: a component's that its connection is on the bus (it asks
its sidecar's /connz, with the `node` the platform's images have and the probe image's stand-in),
the forwarder's that it reaches the bus. So `docker compose up -d --wait` exits 0 when the stack is
healthy and on the bus, and the one rule (lifecycle/observe.py) still judges, no later than before:
it reads the bus itself instead of waiting for Docker's verdict on the same fact.

The engine tests render each example (a bus alone, the demo, the full example with the probe in place
of every image), start it with Compose alone, send a request through the bus, ask `status`, and
remove it with `docker compose down -v`.
"""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from nachos_deploy.bus import natsclient
from nachos_deploy.core.catalog import Role
from nachos_deploy.core.names import PORTS, VOLUME_INIT
from nachos_deploy.core.plan import bus_check_script
from nachos_deploy.docker.compose import ACTIVE_ENDPOINTS, DOWN_RETRIES
from nachos_deploy.docker.engine import ServiceState
from nachos_deploy.io.stack import prepare
from nachos_deploy.lifecycle.observe import BusView, Observation, check_waiting, judge
from tests.commands import cli
from tests.natsserver import NatsServer, nats_server, nats_server_factory

__all__ = ["nats_server", "nats_server_factory"]  # the fixtures, imported for the tests below

ROOT = Path(__file__).resolve().parent.parent
PROBE = "nachos-deploy/probe:latest"
NODE_STAND_IN = ROOT / "images" / "probe" / "node"


def compose_services(folder: Path) -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load((folder / "docker-compose.yml").read_text())["services"]
    return services


# -- without an engine -------------------------------------------------------------------------------


@pytest.mark.parametrize("example", ["ci-bus-only", "default", "demo", "full"])
def test_every_long_running_service_of_an_example_has_a_check_compose_can_wait_for(example: str) -> None:
    # `docker compose up --wait` refuses a container whose check is disabled ("has no healthcheck
    # configured"). Only the one-shot volume-init (restart "no") has none to wait for, and an extra
    # keeps its image's own (the full example's archiver: Compose waits for it to run, or its check).
    folder = ROOT / "compose" / example
    stack = prepare(folder / "nachos-deploy.yaml", cwd=folder, environ={})
    services = yaml.safe_load(stack.files["docker-compose.yml"])["services"]
    extras = {c.name for c in stack.plan.components if c.role == "extra"}
    for name, service in services.items():
        check = service.get("healthcheck")
        if name == VOLUME_INIT or (name in extras and check is None):
            continue
        assert check and not check.get("disable") and check["test"], f"{example}: {name} has no check"
    for component in stack.plan.components:  # each asks the only server it can reach, for its name
        if component.name in extras or component.role in ("state", "ingress"):  # not on the bus
            continue
        script = services[component.name]["healthcheck"]["test"][-1]
        assert f'"http://{component.sidecar}:8222/connz?limit=1024"' in script
        assert f'const name = "{component.connection_name}"' in script
    assert services[PORTS]["healthcheck"]["test"][-1].endswith("http://127.0.0.1:8222/healthz")


def test_without_sidecars_a_component_asks_every_node_of_the_bus(tmp_path: Path) -> None:
    (tmp_path / "d.yaml").write_text(yaml.safe_dump({"bus": {"auth": False, "nodes": 3}}))
    stack = prepare(tmp_path / "d.yaml", cwd=tmp_path, environ={})
    script = yaml.safe_load(stack.files["docker-compose.yml"])["services"]["llm-proxy"]["healthcheck"]["test"]
    assert script[:3] == ["CMD", "node", "-e"]
    urls = ", ".join(f'"http://{node}:8222/connz?limit=1024"' for node in ("bus", "bus-2", "bus-3"))
    assert f"bus = [{urls}]" in script[-1]


def test_swarm_keeps_no_bus_check_since_it_would_kill_every_task_in_an_outage() -> None:
    folder = ROOT / "compose" / "swarm"
    stack = prepare(folder / "nachos-deploy.yaml", cwd=folder, environ={})
    services = yaml.safe_load(stack.files["docker-stack.yml"])["services"]
    assert services["llm-proxy"]["healthcheck"] == {"disable": True}
    assert services[PORTS]["healthcheck"] == {"disable": True}
    assert "connz" not in json.dumps(services["gateway"]["healthcheck"])


def test_render_makes_the_credentials_its_files_read_and_keeps_them(workdir: Path) -> None:
    (workdir / "nachos-deploy.yaml").write_text("project: h18-alone\n")
    code, out, err = cli("render", "--check")  # writes nothing, credentials included
    assert code == 1 and not (workdir / ".nachos").exists(), err
    code, out, err = cli("render")
    assert code == 0, err
    folder = workdir / ".nachos"
    hub = folder / "credentials" / "bus.env"
    assert "NACHOS_OPERATOR_PASSWORD=" in hub.read_text()
    assert stat.S_IMODE(hub.stat().st_mode) == 0o600
    assert stat.S_IMODE((folder / "credentials").stat().st_mode) == 0o700
    assert "/credentials/" in (folder / ".gitignore").read_text().splitlines()
    assert f"{folder / 'credentials'}" in " ".join(out.split())
    first = {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    code, out, err = cli("render")
    assert code == 0 and "unchanged" in out, err
    again = {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    assert again == first  # the passwords are kept, the rendered files byte for byte the same
    code, _, err = cli("render", "--check")
    assert code == 0, err  # the credentials are not among the compared files


def test_an_open_single_node_bus_needs_no_credentials(workdir: Path) -> None:
    # The state store has a password of its own (docs/state-store.md): off here, as is the bus's.
    (workdir / "nachos-deploy.yaml").write_text("bus:\n  auth: false\nstate:\n  enabled: false\n")
    code, out, err = cli("render")
    assert code == 0, err
    assert not (workdir / ".nachos" / "credentials").exists() and "credentials" not in out


class Recorder:
    """Stands in for a target: records each check it is asked to run (in a container), which fails."""

    def __init__(self) -> None:
        self.ran: list[str] = []

    def run_check(self, container: str, test: object, timeout: float) -> bool:
        self.ran.append(container)
        return False


def test_the_rule_reads_the_bus_rather_than_waiting_for_dockers_verdict_on_it(tmp_path: Path) -> None:
    """A component whose check asks only the bus is judged on the bus, read now: ok while Docker still
    says "starting" (its first run comes an interval after the start) or "unhealthy" (from while the
    bus was away), without an exec (the containers do not exist: an exec would fail); not ok when its
    sidecar does not list it, named as before the check existed."""
    (tmp_path / "d.yaml").write_text(yaml.safe_dump({"components": {"webchat": {"enabled": True}}}))
    plan = prepare(tmp_path / "d.yaml", cwd=tmp_path, environ={}).plan
    webchat, llm = plan.component("webchat"), plan.component("llm-proxy")
    bus = BusView({}, None, frozenset(), {"bus-webchat": {"channel-webchat": 1}, "bus-llm-proxy": {}})
    for health in ("starting", "unhealthy", "healthy"):
        states = {
            s.name: ServiceState(s.name, f"no-such-container-{s.name}", "running", health, 0, 0, "img")
            for s in (webchat, llm)
        }
        seen = Observation(states, bus, [judge(s, states[s.name], bus, None) for s in (webchat, llm)])
        target = Recorder()
        after = check_waiting(target, [webchat, llm], seen)  # type: ignore[arg-type]
        assert target.ran == [] and after.early == frozenset()  # nothing run, nothing has to settle
        assert after.report("webchat").ok and after.report("webchat").health == "healthy"
        assert not after.report("llm-proxy").ok
        assert (
            after.report("llm-proxy").problem
            == "is not connected to its sidecar bus-llm-proxy as 'llm-proxy'"
        )
        assert after.report("llm-proxy").health == health


def test_the_gateways_check_also_asks_its_health_and_a_failed_one_is_asked_again(tmp_path: Path) -> None:
    """The gateway's check is its GET /health and the bus: its verdict counts, and an "unhealthy"
    one (from while the bus was away) is run again once the bus lists it; here it fails."""
    (tmp_path / "d.yaml").write_text("project: x\n")
    gateway = prepare(tmp_path / "d.yaml", cwd=tmp_path, environ={}).plan.component("gateway")
    assert gateway.healthcheck is not None and gateway.healthcheck.asks_bus == "also"
    assert "http://127.0.0.1:3000/health" in gateway.healthcheck.test[-1]
    state = ServiceState("gateway", "nothing", "running", "unhealthy", 0, 0, "img", container_id="c1")
    bus = BusView({}, None, frozenset(), {"bus-gateway": {"gateway": 1}})
    seen = Observation({"gateway": state}, bus, [judge(gateway, state, bus, None)])
    assert not seen.report("gateway").ok
    kept = check_waiting(None, [gateway], seen, passed_before={"gateway": "c1"})  # passed a moment ago
    assert kept.report("gateway").ok and kept.report("gateway").health == "healthy"
    target = Recorder()
    assert not check_waiting(target, [gateway], seen).report("gateway").ok  # type: ignore[arg-type]
    assert target.ran == ["nothing"]  # run now, in its container: fails


# -- the node stand-in against a real nats-server ------------------------------------------------------


def _node(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(NODE_STAND_IN), "-e", script], capture_output=True, text=True, timeout=15
    )


def test_the_probe_images_node_runs_the_bus_check_as_node_does(nats_server: NatsServer) -> None:
    # The real node (v20) gave the same exit codes for these cases (docs/testing.md, the probe).
    import asyncio

    import nats

    monitor = nats_server.monitor_url.removeprefix("http://")
    health = f"{nats_server.monitor_url}/healthz"

    def check(name: str, servers: list[str], own: tuple[str, ...] = ()) -> int:
        script = bus_check_script(name, ["MONITOR"] * len(servers), own)
        for server in servers:
            script = script.replace("http://MONITOR:8222/", f"http://{server}/", 1)
        return _node(script).returncode

    async def hold() -> None:
        client = await nats.connect(nats_server.nats_url, name="channel-webchat")
        try:
            assert check("channel-webchat", [monitor]) == 0
            assert check("channel-webchat", ["127.0.0.1:1", monitor]) == 0  # any server that lists it
            assert check("channel-webchat", [monitor], (health,)) == 0
            assert check("channel-webchat", [monitor], (f"{nats_server.monitor_url}/nothing",)) == 1
            assert check("gateway", [monitor]) == 1
            assert check("channel-webchat", ["127.0.0.1:1"]) == 1
        finally:
            await client.close()

    asyncio.run(hold())
    assert check("channel-webchat", [monitor]) == 1  # gone from the bus


# -- Compose alone, on the engine ------------------------------------------------------------------------


def _deploy_document(example: str, project: str) -> dict[str, Any]:
    """The example's deploy file with its own project, engine-picked ports and, for the full example,
    the probe in place of every image (its extra archiver without its command, and with a check of
    its own that passes, as an archiver image of its own would have)."""
    folder = ROOT / "compose" / example
    document: dict[str, Any] = yaml.safe_load((folder / "nachos-deploy.yaml").read_text())
    document["project"] = project
    document["output"] = "out"
    document.setdefault("bus", {}).update(client_port=0, monitor_port=0)
    if example == "full":
        stack = prepare(folder / "nachos-deploy.yaml", cwd=folder, environ={})
        components = document.setdefault("components", {})
        for component in stack.plan.components:
            if component.role not in (Role.STATE, Role.INGRESS):  # Redis and Caddy keep their images
                components.setdefault(component.name, {})["image"] = PROBE
        archiver = components["audit-archiver"]
        archiver.pop("command")
        archiver["environment"]["PROBE_IMAGE_CHECK"] = "trivial"  # the image's check passes
        # every second, not the image's 30 s: Compose's first run of it would come 30 s after start
        archiver["healthcheck"] = {"test": ["CMD", "python3", "-m", "nachos_probe", "--image-check"]}
        archiver["healthcheck"]["interval"] = "1s"
    return document


def _compose(folder: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", "compose", "-f", str(folder / "docker-compose.yml"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _down(folder: Path) -> subprocess.CompletedProcess[str]:
    """`docker compose down -v` as a user on Engine 20.10 must run it: again, a moment later, when
    the engine has not yet released a removed container's endpoint ("has active endpoints", seen in
    CI on the full example's nachos-internal; `nachos-deploy down` does the same, DOWN_RETRIES)."""
    removed = _compose(folder, "down", "--volumes", "-t", "2")
    for wait in DOWN_RETRIES:
        if removed.returncode == 0 or ACTIVE_ENDPOINTS not in removed.stderr:
            break
        time.sleep(wait)
        removed = _compose(folder, "down", "--volumes", "-t", "2")
    return removed


def _run_check(container: str, test: list[str]) -> int:
    """A check as Docker runs it: CMD as it is, CMD-SHELL through the container's sh."""
    command = test[1:] if test[0] == "CMD" else ["sh", "-c", test[1]]
    return subprocess.run(["docker", "exec", container, *command], capture_output=True, timeout=30).returncode


@pytest.fixture
def alone(engine: str, tmp_path: Path) -> Iterator[Path]:
    """A folder for a deploy file; whatever Compose started from its output is removed after."""
    yield tmp_path
    out = tmp_path / "out"
    if (out / "docker-compose.yml").is_file():
        _compose(out, "down", "--volumes", "--remove-orphans", "-t", "2", timeout=120)


# Each runs alone (`exclusive`, under two workers): Compose alone creates the subnets `render` chose
# without the machine's networks lock that `up` holds, so a stack the other worker brought up meanwhile
# could draw the same block ("Pool overlaps", a two-worker CI run, 2026-12-07); and the full example
# takes 15 networks of the engine's 30 or so.
@pytest.mark.exclusive
@pytest.mark.parametrize(
    ("example", "subject"),
    [
        ("ci-bus-only", None),
        ("demo", "nachos.gateway.subagents.list"),
        ("full", "nachos.llm.request"),
    ],
)
def test_an_example_runs_with_compose_alone(alone: Path, example: str, subject: str | None) -> None:
    project = f"h18-alone-{example}-{uuid.uuid4().hex[:6]}"
    deploy = alone / "nachos-deploy.yaml"
    deploy.write_text(yaml.safe_dump(_deploy_document(example, project)))
    if (ROOT / "compose" / example / "nachos.toml").is_file():
        shutil.copy(ROOT / "compose" / example / "nachos.toml", alone / "nachos.toml")
    code, _, err = cli("render", "-c", str(deploy))
    assert code == 0, err
    out = alone / "out"

    started = _compose(out, "up", "-d", "--wait", "--wait-timeout", "120")
    assert started.returncode == 0, started.stderr[-2000:]
    listed = [json.loads(line) for line in _compose(out, "ps", "--format", "json").stdout.splitlines()]
    assert listed and all(c["Health"] == "healthy" for c in listed), [
        (c["Service"], c["Health"]) for c in listed
    ]

    # A request through the bus, from the host, as a user of the rendered folder would send it.
    selector = ["-c", str(deploy)]
    if subject is None:
        code, text, err = cli("env", *selector, "--format", "json")
        assert code == 0, err
        assert natsclient.round_trip(json.loads(text)["NATS_URL"], 5.0, 5.0) > 0
    else:
        code, reply, err = cli("request", subject, *selector, "--timeout", "10")
        assert code == 0, err
        assert reply.strip().startswith("{"), reply

    # The judge agrees with Compose: every service ok. Only `up` provisions the audit stream.
    code, text, err = cli("status", *selector, "--json")
    status = json.loads(text)
    assert all(s["ok"] for s in status["services"]), [s for s in status["services"] if not s["ok"]]
    assert [p for p in status["problems"] if "audit stream" not in p] == []

    # The same checks fail once what they prove is gone: a component whose sidecar is stopped is off
    # the bus; the forwarder of a stopped bus reaches nothing.
    names = {c["Service"]: c["Name"] for c in listed}
    checked, stopped = ("llm-proxy", "bus-llm-proxy") if subject else (PORTS, "bus")
    subprocess.run(["docker", "stop", "-t", "1", names[stopped]], check=True, capture_output=True, timeout=60)
    assert _run_check(names[checked], compose_services(out)[checked]["healthcheck"]["test"]) != 0

    removed = _down(out)
    assert removed.returncode == 0, removed.stderr[-2000:]

"""`target: swarm`: the stack files (pure), then the real thing on a one-node swarm that these tests
create and leave again (only when they created it), on an engine started with
DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 (scripts/install-engine.sh does), since no registry answers.

On the engine: the bus is deployed and proven before any component exists, stand-in components
answer through the bus, a bus that cannot start leaves no component deployed (exit 5), a component
that fails is named with exit 6, `status`, `logs`, and `down` removing the components before the
bus and keeping the volumes unless asked."""

from __future__ import annotations

import http.client
import json
import re
import socket
import ssl
import subprocess
import sys
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from nachos_deploy.bus import trust
from nachos_deploy.bus.monitor import BusUnavailable
from nachos_deploy.bus.natsclient import login_refusal
from nachos_deploy.core.errors import ConfigError
from nachos_deploy.core.names import BUS_STACK_FILE, SIDECARS_STACK_FILE, STACK_FILE
from nachos_deploy.io.stack import prepare
from tests.commands import nachos, nachos_on
from tests.conftest import unavailable
from tests.engine_events import LiveEvents
from tests.test_leaf_logins import bus_passwords
from tests.test_lifecycle import OUTAGE_TRIES, PROBE, wait_for
from tests.test_node_loss import monitor

SWARM_BUS = {"client_port": 0, "monitor_port": 0, "healthcheck_interval": "500ms"}


def rendered(tmp_path: Path, document: dict[str, object]) -> dict[str, dict[str, object]]:
    (tmp_path / "nachos-deploy.yaml").write_text(yaml.safe_dump(document))
    stack = prepare(tmp_path / "nachos-deploy.yaml", cwd=tmp_path, environ={})
    return {name: yaml.safe_load(text) for name, text in stack.files.items() if name.endswith(".yml")}


DEMO = {
    "project": "sw",
    "target": "swarm",
    "components": {
        "gateway": {"image": PROBE, "egress": False, "placement": ["node.role == manager"]},
        "webchat": {"enabled": True, "image": PROBE, "replicas": 2},
    },
}


def test_swarm_renders_three_stack_files_and_no_compose_file(tmp_path: Path) -> None:
    files = rendered(tmp_path, DEMO)
    assert set(files) == {STACK_FILE, BUS_STACK_FILE, SIDECARS_STACK_FILE}
    bus_file, full = files[BUS_STACK_FILE], files[STACK_FILE]
    # The sidecars and the state store go in between, so that no component starts before its
    # sidecar listens, nor the gateway before its store answers.
    assert set(files[SIDECARS_STACK_FILE]["services"]) == set(bus_file["services"]) | {
        "bus-webchat",
        "bus-gateway",
        "bus-llm-proxy",
        "state",
    }  # type: ignore[arg-type, operator]
    assert set(bus_file["services"]) == {"bus", "bus-ports", "volume-init"}  # type: ignore[arg-type]
    assert set(full["services"]) > set(bus_file["services"]) | {"gateway", "webchat", "bus-webchat"}  # type: ignore[arg-type, operator]
    for document in (bus_file, full):
        for name, service in document["services"].items():  # type: ignore[attr-defined]
            assert service["deploy"]["endpoint_mode"] == "dnsrr", name  # no IPVS needed
            assert not {"depends_on", "restart", "security_opt", "mem_limit", "tmpfs"} & set(service), name
        for name, network in document["networks"].items():  # type: ignore[attr-defined]
            assert network["driver"] == "overlay" and network["attachable"] is True, name
            public = ("host-access", "egress", "ingress-public")  # the ingress has a bridge of its own
            assert network.get("internal", False) is (name not in public), name


def test_swarm_services_carry_replicas_placement_limits_and_configs(tmp_path: Path) -> None:
    full = rendered(tmp_path, DEMO)[STACK_FILE]
    services = full["services"]
    assert isinstance(services, dict)
    assert services["webchat"]["deploy"]["replicas"] == 2
    assert services["gateway"]["deploy"]["placement"]["constraints"] == ["node.role == manager"]
    # Its volumes' users have no one placement (webchat, the state store and the ingress are not
    # pinned here), so it runs where Swarm puts it (docs/scaling-out.md); pinned when they share one:
    assert "placement" not in services["volume-init"]["deploy"]
    pinned = {
        **DEMO,
        "components": {
            n: {**c, "placement": ["node.role == manager"]} for n, c in DEMO["components"].items()
        },
    }  # type: ignore[attr-defined]
    pinned["state"] = pinned["ingress"] = {"placement": ["node.role == manager"]}
    (tmp_path / "pinned").mkdir()
    init = rendered(tmp_path / "pinned", pinned)[STACK_FILE]["services"]["volume-init"]  # type: ignore[index]
    assert init["deploy"]["placement"]["constraints"] == ["node.role == manager"]
    assert services["volume-init"]["deploy"]["restart_policy"]["condition"] == "none"
    assert services["bus"]["deploy"]["resources"]["limits"] == {"memory": "536870912", "pids": 256}
    ports = services["bus-ports"]["ports"]
    assert {p["mode"] for p in ports} == {"host"} and [p["published"] for p in ports] == [4222]
    # Rendered files go in as Swarm configs named by their content; a bind needs them on every node.
    assert services["bus"]["configs"] == [{"source": "nats-conf", "target": "/etc/nats/nats.conf"}]
    name = full["configs"]["nats-conf"]["name"]  # type: ignore[index]
    assert name.startswith("sw-nats-conf-") and len(name) == len("sw-nats-conf-") + 12
    assert all(m["type"] != "bind" for m in services["bus"]["volumes"])
    assert {"type": "tmpfs", "target": "/tmp"} in services["gateway"]["volumes"]


def test_a_changed_nats_conf_is_a_new_config_name(tmp_path: Path) -> None:
    first = rendered(tmp_path, DEMO)[STACK_FILE]["configs"]["nats-conf"]["name"]  # type: ignore[index]
    second = rendered(tmp_path, {**DEMO, "bus": {"max_payload": "1MB"}})[STACK_FILE]
    assert second["configs"]["nats-conf"]["name"] != first  # type: ignore[index]


def test_replicas_need_swarm(tmp_path: Path) -> None:
    (tmp_path / "nachos-deploy.yaml").write_text(
        yaml.safe_dump({"components": {"webchat": {"enabled": True, "replicas": 2}}})
    )
    with pytest.raises(ConfigError, match=r"components\.webchat\.replicas.*target: swarm"):
        prepare(tmp_path / "nachos-deploy.yaml", cwd=tmp_path, environ={})


def test_placement_on_compose_is_a_warning_and_swarm_warns_of_open_ports(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        yaml.safe_dump({"components": {"gateway": {"placement": ["node.role == manager"]}}})
    )
    compose = prepare(tmp_path / "a.yaml", cwd=tmp_path, environ={})
    assert any("placement of gateway applies to target: swarm only" in w for w in compose.warnings)
    assert "docker-compose.yml" in compose.files
    (tmp_path / "b.yaml").write_text(yaml.safe_dump({"target": "swarm"}))
    on_swarm = prepare(tmp_path / "b.yaml", cwd=tmp_path, environ={})
    assert any("every interface" in w for w in on_swarm.warnings)


@pytest.mark.parametrize("bad", ["node.role = manager", "rm -rf /", "node.labels. == x", "node.role == a b"])
def test_a_placement_that_is_not_a_constraint_is_refused(tmp_path: Path, bad: str) -> None:
    (tmp_path / "a.yaml").write_text(
        yaml.safe_dump({"target": "swarm", "components": {"gateway": {"placement": [bad]}}})
    )
    with pytest.raises(ConfigError, match=r"components\.gateway\.placement"):
        prepare(tmp_path / "a.yaml", cwd=tmp_path, environ={})


# --- on the engine -----------------------------------------------------------------------------


def dockerd_environment() -> str:
    pid = Path("/var/run/docker.pid").read_text().strip()
    return Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")


def require_offline_engine() -> None:
    """Swarm asks a registry for every image unless dockerd runs with that variable set."""
    try:
        offline = "DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1" in dockerd_environment().split("\0")
    except OSError as exc:
        offline = False
        unavailable(f"cannot read dockerd's environment ({exc}); run the tests as root")
    if not offline:
        unavailable(
            "dockerd runs without DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1, so Swarm would ask a registry for "
            "every image; restart it through `bash scripts/install-engine.sh`"
        )


LEAVING: list[subprocess.Popen[bytes]] = []
"""The `down` of each test's stacks, left to run while the next test starts (a Swarm `down` waits for
every task to go before it removes the volumes: seconds of nothing to do); waited for at the end."""


@pytest.fixture(scope="module")
def swarm(engine: str) -> Iterator[None]:
    """A one-node swarm for this module; left again only if this fixture made it, once every stack the
    tests made is down."""
    require_offline_engine()
    state = subprocess.run(
        ["docker", "info", "--format", "{{.Swarm.LocalNodeState}}"],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.strip()
    created = state == "inactive"
    if created:
        init = subprocess.run(
            ["docker", "swarm", "init", "--advertise-addr", "127.0.0.1"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert init.returncode == 0, init.stderr
    try:
        yield
    finally:
        for down in LEAVING:
            down.wait(timeout=300)
        LEAVING.clear()
        if created:
            subprocess.run(["docker", "swarm", "leave", "--force"], capture_output=True, timeout=60)


class SwarmStack:
    def __init__(
        self, folder: Path, components: dict[str, object], bus: dict[str, object] | None = None
    ) -> None:
        self.project = f"ndt-sw-{uuid.uuid4().hex[:6]}"
        self.file = folder / "nachos-deploy.yaml"
        document = {
            "project": self.project,
            "target": "swarm",
            "bus": {**SWARM_BUS, **(bus or {})},
            "ingress": {"enabled": False},  # its own test sets its ports (no 80/443 on a shared host)
            "components": {"gateway": {"enabled": False}, "llm-proxy": {"enabled": False}, **components},
        }
        self.file.write_text(yaml.safe_dump(document))

    def run(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return nachos_on(self.file, *args, timeout=timeout)

    def services(self) -> dict[str, str]:
        """Service → its creation time, from the engine."""
        listed = subprocess.run(
            [
                "docker",
                "service",
                "ls",
                "--quiet",
                "--filter",
                f"label=com.docker.stack.namespace={self.project}",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        if not listed:
            return {}
        found = json.loads(
            subprocess.run(["docker", "service", "inspect", *listed], capture_output=True, check=True).stdout
        )
        return {s["Spec"]["Name"].removeprefix(f"{self.project}_"): s["CreatedAt"] for s in found}


@pytest.fixture
def swarm_stack(swarm: None, tmp_path: Path) -> Iterator[SwarmStack]:
    stacks: list[SwarmStack] = []

    def make(components: dict[str, object], bus: dict[str, object] | None = None) -> SwarmStack:
        stacks.append(SwarmStack(tmp_path, components, bus))
        return stacks[-1]

    yield make  # type: ignore[misc]
    for stack in stacks:  # its own project: nothing the next test makes depends on it being gone
        LEAVING.append(
            subprocess.Popen(
                [sys.executable, "-m", "nachos_deploy", "down", "-c", str(stack.file), "--volumes", "--yes"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )


def container_started(project: str, service: str) -> str:
    ids = subprocess.run(
        ["docker", "ps", "--quiet", "--filter", f"label=com.docker.swarm.service.name={project}_{service}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert ids, f"no running container of {service}"
    return subprocess.run(
        ["docker", "inspect", "--format", "{{.State.StartedAt}}", ids[0]],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


@pytest.fixture(scope="module")
def shared(
    swarm: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[SwarmStack, dict[str, Any]]]:
    """One stack for the tests that read it (bus first, TLS, the state store, secrets), brought up
    once with its `up --json` result; the rotation then changes it and the last test takes it down.
    Each Swarm `up` costs about 12 s here (three stages, each waiting for Swarm's first healthcheck),
    so these share one instead of five (docs/testing.md)."""
    stack = SwarmStack(
        tmp_path_factory.mktemp("swarm-shared"),
        {
            "gateway": {"enabled": True, "image": PROBE, "egress": False},
            "webchat": {"enabled": True, "image": PROBE, "replicas": 2},
        },
    )
    up = stack.run("up", "--json")
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        yield stack, json.loads(up.stdout)
    finally:
        if stack.services():  # the last test failed before its down, or did not run
            LEAVING.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "nachos_deploy",
                        "down",
                        "-c",
                        str(stack.file),
                        "--volumes",
                        "--yes",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )


def test_swarm_up_is_bus_first_and_answers_through_the_bus(shared: tuple[SwarmStack, dict[str, Any]]) -> None:
    stack, result = shared
    assert {s["name"] for s in result["services"] if s["ok"]} >= {"bus", "gateway", "webchat", "bus-webchat"}
    # Swarm publishes on every interface: the client port speaks TLS (issue 20, item 4).
    assert result["nats_url"].startswith("tls://nachos-deploy:") and Path(result["ca_file"]).is_file()

    # Bus first: the components' services were created only once the bus's container was running.
    created = stack.services()
    bus_started = container_started(stack.project, "bus")
    assert created["gateway"] > bus_started and created["webchat"] > bus_started
    assert created["bus"] < bus_started

    answer = stack.run("request", "nachos.gateway.subagents.list", "{}")
    assert answer.returncode == 0 and '"ok": true' in answer.stdout, answer.stdout + answer.stderr

    status = stack.run("status", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    assert json.loads(status.stdout)["problems"] == []

    # Each overlay network has the subnet the stack file asks for (docs/networks.md).
    rendered = yaml.safe_load((stack.file.parent / ".nachos" / "docker-stack.yml").read_text())["networks"]
    for name, spec in rendered.items():
        subnet = subprocess.run(
            [
                "docker",
                "network",
                "inspect",
                f"{stack.project}_{name}",
                "--format",
                "{{range .IPAM.Config}}{{.Subnet}}{{end}}",
            ],
            capture_output=True,
            text=True,
        ).stdout.strip()
        assert subnet == spec["ipam"]["config"][0]["subnet"], (name, subnet)

    logs = stack.run("logs", "bus", "--tail", "20")
    assert logs.returncode == 0 and "Server is ready" in logs.stdout, logs.stdout + logs.stderr

    again = stack.run("up", "--json")  # an unchanged stack: nothing replaced, still verified
    assert again.returncode == 0, again.stdout + again.stderr
    assert container_started(stack.project, "bus") == bus_started


def test_swarm_bus_speaks_only_tls_with_the_stacks_ca(shared: tuple[SwarmStack, dict[str, Any]]) -> None:
    # Issue 20, item 4 on Swarm: the client port is published on every interface, so bus.tls's auto
    # is on: the certificate and key reach the bus as Swarm secrets; a client trusting the CA logs
    # in, one that does not is refused, and a plaintext one gets no session.
    _, result = shared
    url, ca_file = result["nats_url"], result["ca_file"]
    assert url.startswith("tls://") and result["tls"] is True
    trust.trust(url, ca_file)
    assert login_refusal(url) is None
    trust.trust(url, None)  # the system's CAs only
    with pytest.raises(BusUnavailable, match=r"(?i)certificate verify failed"):
        login_refusal(url)
    parts = urllib.parse.urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as plain:
        info = json.loads(plain.recv(4096).removeprefix(b"INFO ").split(b"\r\n")[0])
        plain.sendall(b'CONNECT {"verbose":false}\r\nPING\r\n')
        plain.settimeout(5)
        answered = b""
        while got := plain.recv(4096):
            answered += got
    assert info["tls_required"] is True and b"PONG" not in answered


def test_swarm_the_state_store_gates_the_gateway_and_takes_only_its_login(
    shared: tuple[SwarmStack, dict[str, Any]],
) -> None:
    # Issue 20, item 2 on Swarm: the ACL file and the healthcheck's password as Swarm secrets, the
    # gateway's URLs from its env file; Swarm ignores depends_on, so the gateway (the probe) retries
    # the store until it answers, and its /health waits for it. `status` judges the store by its
    # CLIENT LIST, which must show the gateway's user.
    stack, _ = shared
    status = stack.run("status", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    report = next(s for s in json.loads(status.stdout)["services"] if s["name"] == "state")
    assert report["status"] == "running" and report["health"] == "healthy" and not report.get("problem")
    state = subprocess.run(
        ["docker", "ps", "--quiet", "--filter", f"label=com.docker.swarm.service.name={stack.project}_state"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[0]
    output = stack.file.parent / ".nachos"
    password = (output / "credentials" / "state.env").read_text().split("GATEWAY_PASSWORD=")[1].split()[0]

    def redis(*login: str) -> str:
        env = ["-e", f"REDISCLI_AUTH={login[1]}"] if login else []
        user = ["--no-auth-warning", "--user", login[0]] if login else []
        done = subprocess.run(
            ["docker", "exec", *env, state, "redis-cli", *user, "GET", "x"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return done.stdout + done.stderr

    assert "NOAUTH" in redis()
    assert "WRONGPASS" not in redis("gateway", password) and "NOAUTH" not in redis("gateway", password)
    assert (
        password
        not in subprocess.run(
            ["docker", "service", "inspect", f"{stack.project}_state"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )


def test_swarm_servers_read_their_passwords_from_secrets_and_a_rotation_replaces_them(
    shared: tuple[SwarmStack, dict[str, Any]],
) -> None:
    # Issue 19, item 2 on Swarm: no bus password in any container's environment (the servers include
    # a Swarm secret instead), a sidecar's leaf password refused on the client port, and a rotation
    # (a secret cannot change) deploying new secrets under new names that the servers then use.
    stack, result = shared
    old_url = result["nats_url"]
    trust.trust(old_url, result["ca_file"])  # tls://: this process trusts the stack's CA
    folder = next(stack.file.parent.rglob("credentials/bus.env")).parent
    passwords = bus_passwords(folder)
    ids = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=com.docker.stack.namespace={stack.project}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    inspected = json.loads(
        subprocess.run(["docker", "inspect", *ids], capture_output=True, check=True).stdout
    )
    services = {c["Config"]["Labels"]["com.docker.swarm.service.name"] for c in inspected}
    assert {f"{stack.project}_{name}" for name in ("bus", "bus-webchat", "webchat")} <= services
    leaked = [
        (c["Name"], variable.split("=", 1)[0])
        for c in inspected
        for variable in c["Config"]["Env"] or []
        if any(password in variable for password in passwords)
    ]
    assert leaked == []

    sidecar = next(
        c["Id"]
        for c in inspected
        if c["Config"]["Labels"]["com.docker.swarm.service.name"].endswith("_bus-webchat")
    )
    included = subprocess.run(
        ["docker", "exec", sidecar, "cat", "/etc/nats/credentials/secrets.conf"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    leaf = urllib.parse.urlsplit(re.findall(r'NACHOS_LEAF_URL: "([^"]+)"', included)[0])
    published = urllib.parse.urlsplit(old_url).netloc.rpartition("@")[2]
    stolen = f"tls://{leaf.username}:{leaf.password}@{published}"
    assert "Authorization Violation" in (login_refusal(stolen) or "accepted")

    rotated = subprocess.run(
        [
            sys.executable,
            "-m",
            "nachos_deploy",
            "credentials",
            "rotate",
            "-c",
            str(stack.file),
            "--timeout",
            "120",
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert rotated.returncode == 0, rotated.stdout + rotated.stderr
    status = stack.run("status", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    assert json.loads(status.stdout)["problems"] == []  # every sidecar logged in with its new password
    assert "Authorization Violation" in (login_refusal(old_url) or "accepted")
    assert login_refusal(json.loads(status.stdout)["nats_url"]) is None


def test_swarm_down_removes_the_bus_last_and_keeps_the_volumes_unless_asked(
    shared: tuple[SwarmStack, dict[str, Any]],
) -> None:
    stack, _ = shared
    events = LiveEvents("die", f"com.docker.stack.namespace={stack.project}", "com.docker.swarm.service.name")
    down = stack.run("down")
    died = [name.removeprefix(f"{stack.project}_") for name in events.stop()]
    assert down.returncode == 0, down.stdout + down.stderr
    assert stack.services() == {}
    assert died and died[-1] == "bus", died  # the components and sidecars before the bus
    assert "bus-webchat" in died and died.index("bus-webchat") > max(
        i for i, name in enumerate(died) if name == "webchat"
    ), died
    volumes = subprocess.run(
        ["docker", "volume", "ls", "--quiet"], capture_output=True, text=True
    ).stdout.split()
    assert f"{stack.project}_bus-data" in volumes and f"{stack.project}_gateway-data" in volumes
    # The state folders (docs/components.md#state-folders), kept by `down` as on Compose.
    assert f"{stack.project}_gateway-state" in volumes and f"{stack.project}_webchat-state" in volumes
    gone = stack.run("down", "--volumes", "--yes")
    assert gone.returncode == 0, gone.stdout + gone.stderr
    volumes = subprocess.run(
        ["docker", "volume", "ls", "--quiet"], capture_output=True, text=True
    ).stdout.split()
    assert not [v for v in volumes if v.startswith(f"{stack.project}_")]


def test_swarm_a_bus_that_cannot_start_deploys_no_component(swarm_stack: object) -> None:
    # The probe in the bus's place: it exits at once (no NACHOS_COMPONENT), task after task.
    stack = swarm_stack({"webchat": {"enabled": True, "image": PROBE}}, bus={"image": PROBE})  # type: ignore[operator]
    up = stack.run("up", "--timeout", "60")
    assert up.returncode == 5, up.stdout + up.stderr
    assert "No component was deployed" in up.stderr
    assert set(stack.services()) <= {"bus", "bus-ports", "volume-init"}


def test_swarm_a_failing_component_is_named_with_exit_6(swarm_stack: object) -> None:
    broken = {"enabled": True, "image": PROBE, "environment": {"PROBE_ON_BUS_LOSS": "never-heard-of"}}
    stack = swarm_stack({"webchat": broken})  # type: ignore[operator]
    up = stack.run("up", "--timeout", "90")
    assert up.returncode == 6, up.stdout + up.stderr
    first = up.stderr.split("error: ", 1)[1].split(" did not come up")[0]
    assert first == "webchat", up.stderr
    assert "has a failed task" in up.stderr  # seen failing, not waited out until the timeout
    assert "PROBE_ON_BUS_LOSS" in up.stderr  # its log lines say why


def test_swarm_bus_checks_are_ones_swarm_will_not_kill_a_waiting_node_for(tmp_path: Path) -> None:
    services = rendered(tmp_path, {"target": "swarm", "bus": {"nodes": 3}})[BUS_STACK_FILE]["services"]
    assert isinstance(services, dict)
    for name in ("bus", "bus-2", "bus-3"):
        check = services[name]["healthcheck"]
        assert "js-enabled-only=true" in check["test"][1] and check["start_period"] == "60s", name


def test_swarm_three_node_bus_forms_a_cluster(swarm_stack: object) -> None:
    # The test reads each node's HTTP monitoring itself; nachos-deploy reads it over NATS.
    bus = {"nodes": 3, "publish_monitor": True}
    stack = swarm_stack({"webchat": {"enabled": True, "image": PROBE}}, bus=bus)  # type: ignore[operator]
    up = stack.run("up", "--json")
    assert up.returncode == 0, up.stdout + up.stderr
    nodes = {node["name"]: node for node in json.loads(up.stdout)["nodes"]}
    assert sorted(nodes) == ["bus", "bus-2", "bus-3"]
    leaders = set()
    for name, node in nodes.items():
        routes = monitor(node["monitor_url"], "/routez")["routes"]
        assert {r["remote_name"] for r in routes} == set(nodes) - {name}  # type: ignore[union-attr]
        meta = monitor(node["monitor_url"], "/jsz")["meta_cluster"]
        assert meta["cluster_size"] == 3  # type: ignore[index]
        leaders.add(meta["leader"])  # type: ignore[index]
    assert len(leaders) == 1 and None not in leaders
    status = stack.run("status", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    # One machine: the three bus nodes are pinned to it by labels, and up says they share it.
    assert node_labels(stack.project) == {f"org.nachos-deploy.{stack.project}.{n}" for n in nodes}  # type: ignore[attr-defined]
    (warning,) = own_warnings(json.loads(up.stdout))
    assert "bus, bus-2, bus-3 share the machine" in warning
    down = stack.run("down", "--volumes", "--yes")  # type: ignore[attr-defined]
    assert down.returncode == 0, down.stdout + down.stderr
    assert node_labels(stack.project) == set()  # type: ignore[attr-defined]


def own_warnings(result: dict[str, object]) -> list[str]:
    """An up's warnings but the notice that its networks took another block of networks.pool: a
    network of another project on this engine can hold the block this project draws (a network an
    earlier test's `down` could not remove: Engine 20.10's "has active endpoints" bug,
    docs/testing.md), and `up` then moves and says so, which is not what a test here is about."""
    warnings = result["warnings"]
    assert isinstance(warnings, list)
    return [str(w) for w in warnings if not str(w).startswith("Networks: this project's block ")]


def node_labels(project: str) -> set[str]:
    """The labels of this swarm's node that belong to ``project``."""
    text = subprocess.run(
        ["docker", "node", "inspect", "self", "--format", "{{json .Spec.Labels}}"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return {key for key in json.loads(text) or {} if key.startswith(f"org.nachos-deploy.{project}.")}


def test_swarm_up_heals_a_component_a_long_outage_left_off_the_bus(swarm_stack: object) -> None:
    # As the real channels do after their ten reconnects: the probe stays running, off the bus.
    stay = {"PROBE_ON_BUS_LOSS": "stay", **OUTAGE_TRIES}
    stack = swarm_stack({"webchat": {"enabled": True, "image": PROBE, "environment": stay}})  # type: ignore[operator]
    up = stack.run("up", "--json")
    assert up.returncode == 0, up.stdout + up.stderr
    before = container_started(stack.project, "webchat")
    # The outage: the bus and the webchat's sidecar scaled to nothing, for longer than its tries.
    outage = [f"{stack.project}_{name}" for name in ("bus", "bus-webchat")]
    scaled = subprocess.run(
        ["docker", "service", "scale", "--detach", *(f"{s}=0" for s in outage)],
        capture_output=True,
        text=True,
    )
    assert scaled.returncode == 0, scaled.stderr
    wait_for(lambda: "disconnected from the bus" in stack.run("logs", "webchat").stdout, "the outage", 60)
    time.sleep(3)  # past the probe's reconnect window
    status = stack.run("status", "--json")
    assert status.returncode == 1
    healed = stack.run("up", "--json")
    assert healed.returncode == 0, healed.stdout + healed.stderr
    result = {s["name"]: s for s in json.loads(healed.stdout)["services"]}
    assert all(s["ok"] for s in result.values()), result
    assert result["webchat"].get("restarted_by_up") is True
    assert container_started(stack.project, "webchat") != before  # Swarm restarts with a new task
    assert stack.run("status").returncode == 0


def test_swarm_creates_the_default_workspace_and_is_found_from_another_folder(
    swarm: None, tmp_path: Path
) -> None:
    """Issue 18 section 4 (Swarm failed the task after 7 s: "bind source path does not exist") and
    section 3 on Swarm (the output folder is a label of every service); the Compose side and the
    hints are in tests/test_status_anywhere.py."""
    project = f"ndt-swb-{uuid.uuid4().hex[:6]}"
    here, elsewhere = tmp_path / "deploy", tmp_path / "elsewhere"
    here.mkdir()
    elsewhere.mkdir()
    document = {
        "project": project,
        "target": "swarm",
        "bus": SWARM_BUS,
        "components": {
            "gateway": {"enabled": False},
            "llm-proxy": {"enabled": False},
            "filesystem": {"enabled": True, "image": PROBE},
        },
    }
    (here / "nachos-deploy.yaml").write_text(yaml.safe_dump(document))
    try:
        validate = nachos(here, "validate")
        assert f"creates the missing bind source folder(s) {here / 'workspace'}" in validate.stdout
        up = nachos(here, "up", "--timeout", "120")
        assert up.returncode == 0, up.stdout + up.stderr
        assert (here / "workspace").is_dir()
        status = nachos(elsewhere, "status", "-p", project)
        assert status.returncode == 0, status.stdout + status.stderr
        assert {"bus", "filesystem", "bus-filesystem"} <= set(re.findall(r"^(\S+)\s", status.stdout, re.M))
        down = nachos(elsewhere, "down", "-p", project, "--volumes", "--yes", timeout=240)
        assert down.returncode == 0, down.stdout + down.stderr
        listed = subprocess.run(
            ["docker", "service", "ls", "-q", "--filter", f"label=com.docker.stack.namespace={project}"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert listed.stdout.split() == []
    finally:
        nachos(elsewhere, "down", "-p", project, "--volumes", "--yes")  # after a failure too


SWARM_CHANNEL = (
    "import http.server, os, urllib.parse\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))\n"
    "        a = q.get('hub.challenge', 'channel').encode()\n"
    "        self.send_response(200); self.send_header('content-length', str(len(a))); self.end_headers()\n"
    "        self.wfile.write(a)\n"
    "http.server.ThreadingHTTPServer(('0.0.0.0', int(os.environ['WHATSAPP_HTTP_PORT'])), H).serve_forever()\n"
)


def test_swarm_the_ingress_routes_its_channel_over_https_and_nothing_else(
    swarm_stack: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 20, item 1 on Swarm: the Caddyfile as a Swarm config, the published port in host mode,
    # the internal CA's root written after up; the route answered by the channel, any other path 404.
    for name, value in {
        "WHATSAPP_TOKEN": "t",
        "WHATSAPP_PHONE_NUMBER_ID": "1",
        "WHATSAPP_VERIFY_TOKEN": "v",
    }.items():
        monkeypatch.setenv(name, value)
    quiet = {"egress": False, "connection_name": False, "healthcheck": False}
    channel = {"image": "nachos-deploy/python:3.11", "command": ["python3", "-c", SWARM_CHANNEL], **quiet}
    stack = swarm_stack({"whatsapp": {"enabled": True, **channel}})  # type: ignore[operator]
    document = yaml.safe_load(stack.file.read_text())
    with socket.socket() as a, socket.socket() as b:
        a.bind(("127.0.0.1", 0))
        b.bind(("127.0.0.1", 0))
        http_port, https_port = a.getsockname()[1], b.getsockname()[1]
    document["ingress"] = {"http_port": http_port, "https_port": https_port}
    stack.file.write_text(yaml.safe_dump(document))
    up = stack.run("up", "--json")
    assert up.returncode == 0, up.stdout + up.stderr
    context = ssl.create_default_context(cafile=str(stack.file.parent / ".nachos" / "ingress-root.crt"))
    for path, expected in (("/whatsapp/webhook?hub.challenge=hi", (200, b"hi")), ("/elsewhere", (404, b""))):
        connection = http.client.HTTPSConnection("localhost", https_port, context=context, timeout=30)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            assert (response.status, response.read()) == expected
        finally:
            connection.close()


def test_swarm_up_refuses_an_image_that_differs_from_the_lock_before_deploying(swarm_stack: object) -> None:
    """The lock's check is the algorithm's, before anything is deployed (docs/images.md): on Swarm too,
    a rebuilt tag is refused with exit 4, naming the image and both ids, and no service is created."""
    from tests import derived_images

    probe = f"nachos-test/lock-swarm-{uuid.uuid4().hex[:8]}:1"
    first = derived_images.build(probe, PROBE)
    made = [probe, first]
    try:
        stack = swarm_stack({"gateway": {"image": probe}})  # type: ignore[operator]
        locked = stack.run("lock")
        assert locked.returncode == 0, locked.stdout + locked.stderr
        second = derived_images.build(probe, PROBE)
        refused = stack.run("up", "--timeout", "60")
        assert refused.returncode == 4, refused.stdout + refused.stderr
        assert probe in refused.stderr and first in refused.stderr and second in refused.stderr
        assert "nachos-deploy lock" in refused.stderr
        assert stack.services() == {}  # refused before the bus was deployed
    finally:
        derived_images.remove(made)

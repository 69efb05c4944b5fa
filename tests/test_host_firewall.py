"""Issue 19, item 7: the private networks reach the host's services on wildcard addresses.

A program on the host listening on 0.0.0.0 answers a shell inside a component at its network's gateway
address, internal networks included: Docker filters traffic between networks and off the machine, not
traffic to the host. The engine test repeats the attack from inside a component container, with and
without `nachos-deploy firewall install`, and `doctor` must list the listener. The fast tests read
the engine's and iptables' output as recorded on this kind of machine (tests/data/firewall/)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from nachos_deploy.core.errors import EnvironmentProblem
from nachos_deploy.docker import firewall
from nachos_deploy.io.listeners import parse_proc_net_tcp, wildcard_listeners
from tests.commands import cli, compose_down
from tests.conftest import unavailable
from tests.documents import stack_document

DATA = Path(__file__).parent / "data" / "firewall"
PROBE = "nachos-deploy/probe:latest"
SECRET = b"host-only-service"


# --- fast: what is read, from recorded output ---------------------------------------------------


def test_wildcard_listeners_are_read_from_proc_net_tcp() -> None:
    found = parse_proc_net_tcp((DATA / "proc-net-tcp").read_text())
    found += parse_proc_net_tcp((DATA / "proc-net-tcp6").read_text())
    # 0.0.0.0:8080 and [::]:5432 listen; 127.0.0.1:4222 and [::1]:631 listen on one address only; the
    # established connection on 0.0.0.0's port is not a listener.
    assert [(f.address, f.port) for f in found] == [("0.0.0.0", 8080), ("::", 5432)]
    assert found[0].describe() == "0.0.0.0:8080" and found[1].describe() == "[::]:5432"


def test_this_process_is_named_as_the_holder_of_its_listener() -> None:
    with socket.socket() as server:
        server.bind(("0.0.0.0", 0))
        server.listen()
        port = server.getsockname()[1]
        mine = [f for f in wildcard_listeners() if f.port == port]
    assert mine and mine[0].program.endswith(f"pid {os.getpid()}"), mine


def test_the_internal_bridges_of_a_project_are_found_in_network_inspect() -> None:
    # recorded from a project with webchat and an extra component that has egress
    bridges = firewall.bridges_of(json.loads((DATA / "network-inspect.json").read_text()))
    assert [(b.network, b.interface, b.internal) for b in bridges] == [
        ("bus-link", "br-da841699cc6e", True),
        ("egress", "br-dde0fd30e583", False),  # plain bridges: dropped only with `install --egress`
        ("extra-link", "br-d369472377a9", True),
        ("host-access", bridges[3].interface, False),
        ("nachos-internal", "br-ff2d3615f455", True),
        ("webchat-link", "br-2de1a6c9909d", True),
    ]
    assert bridges[5].gateway == "10.210.44.1"
    named = {"Driver": "bridge", "Internal": True, "Id": "0123456789abcdef", "Name": "x"}
    named["Options"] = {"com.docker.network.bridge.name": "nd-private0"}
    assert firewall.bridges_of([named])[0].interface == "nd-private0"
    assert firewall.bridges_of([{**named, "Driver": "overlay"}]) == []  # Swarm: nothing on the host


def test_only_the_projects_own_rules_are_read_back() -> None:
    # recorded: the project's four rules, another project's whose name starts alike, the user's own
    text = (DATA / "iptables-S-INPUT").read_text()
    mine = firewall.parse_rules("iptables", text, "h19f-demo")
    assert [r.network for r in mine] == ["webchat-link", "nachos-internal", "extra-link", "bus-link"]
    assert mine[0].interface == "br-2de1a6c9909d"
    # what `-D INPUT` takes back: the rule as listed, comment unquoted
    assert mine[0].spec[:2] == ("-i", "br-2de1a6c9909d") and mine[0].spec[-2:] == ("-j", "DROP")
    assert "nachos-deploy:h19f-demo:webchat-link" in mine[0].spec
    assert [r.network for r in firewall.parse_rules("iptables", text, "h19f-demo-2")] == ["webchat-link"]
    assert firewall.parse_rules("iptables", text, "h19f-dem") == []
    assert len(firewall.parse_rules("iptables", text)) == 5  # never the user's "admin ssh" rule


def test_no_root_and_no_iptables_are_one_message_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(EnvironmentProblem) as missing:
        firewall.families()
    assert "apt-get install iptables" in missing.value.message
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(EnvironmentProblem) as not_root:
        firewall.require_root("install", "demo")
    assert "sudo nachos-deploy firewall install -p demo" in not_root.value.message


# --- engine: the attack, repeated ------------------------------------------------------------


class HostService(threading.Thread):
    """A TCP service on the host's wildcard address, as a developer's database or debug server is:
    it answers every connection with SECRET."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.server = socket.socket()
        self.server.bind(("0.0.0.0", 0))
        self.server.listen()
        self.server.settimeout(0.2)
        self.port = int(self.server.getsockname()[1])
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.sendall(SECRET)
        self.server.close()


def from_component(container: str, address: str, port: int) -> str:
    """What a shell inside ``container`` reads from ``address:port``: the bytes, or the error."""
    script = (
        "import socket, sys\n"
        "try:\n"
        f"    s = socket.create_connection(({address!r}, {port}), timeout=1.5); print(s.recv(64).decode())\n"
        "except OSError as exc:\n"
        "    print(type(exc).__name__)\n"
    )
    done = subprocess.run(
        ["docker", "exec", container, "python3", "-c", script], capture_output=True, text=True, timeout=60
    )
    return done.stdout.strip() or done.stderr.strip()


@pytest.fixture
def webchat(engine: str, tmp_path: Path) -> Iterator[tuple[Path, str]]:
    if os.geteuid() != 0:
        unavailable("the host firewall test changes iptables rules: run the tests as root")
    project = f"h19f-fw-{uuid.uuid4().hex[:8]}"
    file = tmp_path / "nachos-deploy.yaml"
    webchat = {"image": PROBE, "egress": False, "healthcheck": False, "enabled": True}
    file.write_text(yaml.safe_dump(stack_document(project, {"webchat": webchat})))
    try:
        yield file, project
    finally:
        cli("firewall", "remove", "-p", project)
        compose_down(project)


def test_the_firewall_keeps_a_component_off_the_hosts_wildcard_listeners(webchat: tuple[Path, str]) -> None:
    file, project = webchat
    service = HostService()
    service.start()
    try:
        code, out, err = cli("up", "-c", str(file), "--timeout", "90")
        assert code == 0, out + err
        gateway = subprocess.run(
            [
                *("docker", "network", "inspect", f"{project}_webchat-link"),
                *("--format", "{{(index .IPAM.Config 0).Gateway}}"),
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        container = f"{project}-webchat-1"

        # doctor names the listener, as a warning with the fix
        code, out, err = cli("doctor", "-c", str(file), "--json")
        check = next(c for c in json.loads(out)["checks"] if c["name"] == "host listeners")
        assert check["level"] == "warn" and f"0.0.0.0:{service.port}" in check["detail"], check
        assert f"firewall install -p {project}" in check["fix"]

        # the attack: webchat's only network is internal, yet the host's service answers it
        assert from_component(container, gateway, service.port) == SECRET.decode()

        code, out, err = cli("firewall", "install", "-c", str(file))
        assert code == 0, out + err
        families = 2 if "ip6tables" in out else 1  # IPv6 too, where its tool is installed
        assert "3 network(s) may no longer reach" in out and f"{3 * families} rule(s) added" in out, out
        code, out, err = cli("firewall", "install", "-c", str(file))  # idempotent
        assert code == 0 and "0 rule(s) added" in out, out + err
        code, out, err = cli("firewall", "status", "-c", str(file), "--json")
        state = json.loads(out)
        internal = [b["network"] for b in state["bridges"] if b["internal"]]
        assert code == 0 and state["installed"] and len(internal) == 3, out + err
        assert [b["network"] for b in state["bridges"] if not b["dropped"]] == ["host-access"]

        assert from_component(container, gateway, service.port) in ("TimeoutError", "timeout")
        check = next(
            c
            for c in json.loads(cli("doctor", "-c", str(file), "--json")[1])["checks"]
            if c["name"] == "host listeners"
        )
        assert check["level"] == "pass", check
        # the stack still works through the rule: the host's request crosses the bus to webchat's sidecar
        code, out, err = cli("status", "-c", str(file))
        assert code == 0, out + err

        # --egress: the plain bridges too (here host-access, the forwarder's), and status still holds
        code, out, err = cli("firewall", "install", "--egress", "-c", str(file))
        assert code == 0 and f"{families} rule(s) added" in out and "open (plain)" not in out, out + err
        assert cli("status", "-c", str(file))[0] == 0

        code, out, err = cli("firewall", "remove", "-c", str(file))
        assert code == 0 and f"removed {4 * families} rule(s)" in out, out + err
        listed = subprocess.run(
            ["iptables", "-S", "INPUT"], capture_output=True, text=True, check=True
        ).stdout
        assert f"nachos-deploy:{project}:" not in listed
        assert from_component(container, gateway, service.port) == SECRET.decode()
        code, out, err = cli("firewall", "status", "-c", str(file))
        assert code == 1 and "NOT dropped" in out, out + err
    finally:
        service.stop.set()
        service.join(5)


def test_a_project_that_does_not_run_is_a_clear_answer(engine: str) -> None:
    if os.geteuid() != 0:
        unavailable("the host firewall's commands need root: run the tests as root")
    project = f"h19f-none-{uuid.uuid4().hex[:8]}"
    code, out, err = cli("firewall", "install", "-p", project)
    message = " ".join(err.split())
    assert code == 1 and f"Project {project} has no internal network on this engine" in message, out + err
    assert f"nachos-deploy up -p {project}" in message and "Traceback" not in err
    code, out, err = cli("firewall", "remove", "-p", project)
    assert code == 0 and "nothing changed" in out, out + err
    code, out, err = cli("firewall", "status", "-p", project, "--json")
    assert code == 1 and json.loads(out)["installed"] is False and json.loads(out)["bridges"] == [], out

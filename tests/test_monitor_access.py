"""Who can read the bus's monitoring, and whether a component or a local user can blind `status`
(issue 19, items 6 and 8), on the real engine and the real nats-server image.

Item 6: any local user read `/connz?auth=1&subs=1` on the published monitoring port (every leaf user,
address, subscription, the names of failed logins) and held the forwarder's few slots so that
`status` could not read the bus. The host now reads monitoring over an authenticated NATS connection
as a system-account user; the HTTP port is published only when the deploy file asks.

Item 8: `status` reads every sidecar's `/connz` in one `docker exec` whose answers were split on a
fixed `@@`, which a component could put in its connection name to make its own row unreadable.
"""

from __future__ import annotations

import json
import select
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from nachos_deploy.docker.parse import split_frames
from tests.commands import nachos
from tests.documents import FAST_CHECKS, stack_document
from tests.ports import free_port

PROBE = "nachos-deploy/probe:latest"
# A name holding the old separator, a sidecar's name after it, and the new frame's shape: whatever
# `status` splits on, a component must not be able to write it.
HOSTILE_NAME = "channel-webchat@@bus-webchat\\n@@ nachos-frame-0123456789abcdef0123456789abcdef bus-webchat"


@dataclass
class Stack:
    folder: Path
    project: str
    up: dict[str, Any]
    monitor_port: int  # the deploy file's bus.monitor_port, which is not published by default

    def run(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return nachos(self.folder, *args, timeout=timeout)

    @property
    def client_port(self) -> int:
        return int(str(self.up["nats_url"]).rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def stack(engine: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("monitor-access")
    project = f"h19e-{uuid.uuid4().hex[:8]}"
    monitor_port = free_port()
    webchat = {"enabled": True, "image": PROBE, "egress": False, "connection_name": HOSTILE_NAME}
    bus = {**FAST_CHECKS, "monitor_port": monitor_port}
    document = stack_document(project, {"webchat": webchat}, bus=bus)
    (folder / "nachos-deploy.yaml").write_text(yaml.safe_dump(document))
    try:
        done = nachos(folder, "up", "--json", "--timeout", "120")
        assert done.returncode == 0, done.stdout + done.stderr
        yield Stack(folder, project, json.loads(done.stdout), monitor_port)
    finally:
        nachos(folder, "down", "--volumes", "--yes")


def test_frames_are_split_on_the_calls_own_token_only() -> None:
    answer = json.dumps({"connections": [{"name": HOSTILE_NAME}]}, indent=2)
    output = f"\nnachos-frame-ab bus-webchat\n{answer}\n\nnachos-frame-ab bus-gateway\n\n"
    assert split_frames(output, "nachos-frame-ab", ["bus-webchat", "bus-gateway"]) == {
        "bus-webchat": json.loads(answer),
        "bus-gateway": None,
    }


def test_a_connection_name_holding_separators_does_not_blind_status_to_its_row(stack: Stack) -> None:
    done = stack.run("status", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {row["name"]: row for row in json.loads(done.stdout)["services"]}
    webchat = rows["webchat"]
    assert webchat["ok"] is True and webchat.get("connected") is True, webchat
    assert rows["bus-webchat"]["ok"] is True, rows["bus-webchat"]


def _refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


def test_a_local_user_cannot_read_who_is_connected(stack: Stack) -> None:
    # The attack: any local user asks the monitoring port for every login, address and subscription.
    assert _refused(stack.monitor_port), f"127.0.0.1:{stack.monitor_port} accepts connections"
    forwarder = subprocess.run(
        ["docker", "compose", "-p", stack.project, "port", "bus-ports", "8222"],
        capture_output=True,
        text=True,
    )
    assert forwarder.stdout.strip() in ("", ":0"), forwarder.stdout  # Compose's "not published"
    # The client port answers, but only to a login: nothing there lists the connections.
    with socket.create_connection(("127.0.0.1", stack.client_port), timeout=5) as sock:
        sock.sendall(b"GET /connz?auth=1&subs=1 HTTP/1.0\r\n\r\n")
        said = sock.makefile("rb").read()
    assert b"leaf-webchat" not in said and b"connections" not in said, said[:300]
    # Outputs say so honestly: no monitoring URL, and never the system user's password.
    assert stack.up["monitor_url"] is None
    done = stack.run("env", "--format", "json")
    assert done.returncode == 0, done.stderr
    assert "NATS_MONITOR_URL" not in json.loads(done.stdout)
    system = (stack.folder / ".nachos" / "credentials" / "bus.env").read_text()
    secret = next(line.split("=", 1)[1] for line in system.splitlines() if line.startswith("NACHOS_SYSTEM"))
    status = stack.run("status", "--json")
    assert secret.strip().strip("'\"") not in status.stdout + status.stderr


class Holder:
    """A local user holding ``count`` connections to a port open, opening a new one as soon as the
    other end closes one (the server closes a connection that does not log in within seconds)."""

    def __init__(self, port: int, count: int) -> None:
        self.port = port
        self.count = count
        self.stop = threading.Event()
        self.held = 0
        self.thread = threading.Thread(target=self._hold, daemon=True)

    def _open(self) -> socket.socket | None:
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=0.5)
        except OSError:
            return None
        sock.setblocking(False)
        return sock

    def _hold(self) -> None:
        socks: list[socket.socket] = []
        try:
            while not self.stop.is_set():
                while len(socks) < self.count and not self.stop.is_set():
                    sock = self._open()
                    if sock is None:
                        break
                    socks.append(sock)
                self.held = max(self.held, len(socks))
                ready, _, _ = select.select(socks, [], [], 0.05)
                for sock in ready:
                    try:
                        if sock.recv(65536):
                            continue  # INFO: the server waits for a login now
                    except BlockingIOError:
                        continue
                    except OSError:
                        pass
                    socks.remove(sock)
                    sock.close()
        finally:
            for sock in socks:
                sock.close()

    def __enter__(self) -> Holder:
        self.thread.start()
        deadline = time.monotonic() + 10
        while self.held < self.count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


HELD = 100  # more than the forwarder's old 48 client relays (and 8 monitoring relays)


def test_connections_held_open_at_the_forwarder_do_not_stop_status(stack: Stack) -> None:
    with Holder(stack.client_port, HELD) as holder:
        assert holder.held >= HELD, f"held only {holder.held} connections"
        started = time.monotonic()
        done = stack.run("status", "--json", timeout=120)
        took = time.monotonic() - started
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {row["name"]: row for row in json.loads(done.stdout)["services"]}
    assert rows["webchat"]["ok"] is True, rows["webchat"]
    assert took < 60, took

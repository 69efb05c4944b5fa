"""`nachos-deploy bench` against real nats-server processes: the figures, the targets, the scratch
stream removed, the time bound, and the one-line failures."""

from __future__ import annotations

import asyncio
import functools
import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from typer.testing import CliRunner

from nachos_deploy.bus import bench
from nachos_deploy.bus.monitor import get_json
from nachos_deploy.interfaces.cli import app
from tests.natsserver import NatsServer, ServerFactory, nats_server, nats_server_factory, no_connections_left
from tests.test_health import fake_monitor as serve_monitor

__all__ = ["nats_server", "nats_server_factory"]  # fixtures, imported for pytest

runner = CliRunner()
MIB = 1024 * 1024


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def scratch_streams(monitor_url: str) -> list[str]:
    """Names of the benchmark's scratch streams still on the bus."""
    page = get_json(monitor_url, "/jsz?streams=true", 2.0)
    names = []
    for account in page.get("account_details") or []:
        for stream in account.get("stream_detail") or []:
            if str(stream.get("name", "")).startswith(bench.STREAM_PREFIX):
                names.append(stream["name"])
    return names


def _targets(monkeypatch: pytest.MonkeyPatch, targets: bench.Targets) -> None:
    measure = bench.run
    monkeypatch.setattr(bench, "run", functools.partial(measure, targets=targets))


@pytest.fixture
def lenient(monkeypatch: pytest.MonkeyPatch) -> None:
    """Targets no loaded CI machine misses (the suite runs two workers on two cores): these tests are
    about what the command says, the tests of a missed target below use strict ones. The bound of
    the 1 MiB phase goes too: at rest plus 6 MiB is within the Go runtime's own swing under load
    (CI once read the peak above it with the fast tests beside it)."""
    _targets(monkeypatch, bench.Targets(p99_ms=10_000, max_payload_copies=64))


@pytest.fixture
def lenient_p99(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the p99 target relaxed, for the test that judges a big ``max_payload`` on its own bound."""
    _targets(monkeypatch, bench.Targets(p99_ms=10_000))


BUFFERED = 40_000  # publishes of 128 bytes, all in the client's buffer (below its pending_size) at the flush


def test_a_flush_answers_once_the_server_has_read_what_the_client_buffered(nats_server: NatsServer) -> None:
    """bench's flush (`bench._flush`) against nats-py 2.16's own, which writes its PING ahead of
    publishes still in the client's buffer: a loop of publishes that never yields leaves the last of
    them there, and a subscriber must have every one once both flushes have come back (bench's
    `delivered`; seen 1,024 short in CI)."""

    async def delivered() -> int:
        sender = await nats.connect(nats_server.nats_url, pending_size=64 * 1024 * 1024)
        receiver = await nats.connect(nats_server.nats_url)
        try:
            sub = await receiver.subscribe("bench.order")
            await bench._flush(receiver, "a flush", 10)
            for _ in range(BUFFERED):
                await sender.publish("bench.order", b"x" * 128)
            await bench._flush(sender, "a flush after publishing", 10)
            await bench._flush(receiver, "the subscriber's flush", 10)
            return sub.delivered
        finally:
            await sender.close()
            await receiver.close()

    assert asyncio.run(delivered()) == BUFFERED


@pytest.mark.usefixtures("lenient")
def test_bench_json_against_a_real_bus(nats_server: NatsServer) -> None:
    duration = 1.0
    started = time.monotonic()
    code, out, err = run(
        "bench",
        "--url",
        nats_server.nats_url,
        "--monitor-url",
        nats_server.monitor_url,
        "--duration",
        str(duration),
        "--json",
    )
    elapsed = time.monotonic() - started
    assert code == 0, (out, err)
    doc = json.loads(out)
    assert doc["ok"] is True
    assert doc["duration_s"] == duration
    assert elapsed < duration + 10, elapsed  # a bound, not a speed test
    assert doc["server_version"]
    assert doc["max_payload"] == 1024 * 1024  # the server's default, announced in its INFO
    sizes = [row["size"] for row in doc["request_reply"]]
    assert sizes == [128, 1024, 64 * 1024, 1024 * 1024]
    for row in doc["request_reply"]:
        assert row["requests"] >= 1
        assert 0 < row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"] <= row["max_ms"]
        assert row["requests_per_s"] > 0
    publish = doc["publish"]
    assert publish["size"] == 128 and publish["messages"] > 0
    assert publish["msgs_per_s"] > 0 and publish["mib_per_s"] > 0
    assert publish["delivered"] == publish["messages"]  # nothing lost on the way to the subscriber
    assert doc["jetstream"]["msgs_per_s"] > 0 and doc["jetstream"]["messages"] > 0
    assert doc["jetstream_note"] is None
    assert isinstance(doc["cpu_percent"], float)
    # The bus's memory phase by phase, the max_payload phase (1 MiB, the server's default) last.
    phases = doc["memory_phases"]
    assert [(p["phase"], p["load"]) for p in phases] == [
        ("idle, before the load", "idle"),
        ("request/reply 128 B", "typical"),
        ("request/reply 1 KiB", "typical"),
        ("request/reply 64 KiB", "typical"),
        ("core publish 128 B", "typical"),
        ("JetStream acked publish 128 B", "typical"),
        ("at rest after the load", "rest"),
        ("request/reply 1 MiB, peak", "max_payload"),
    ]
    readings = [p["bytes"] for p in phases]
    assert all(reading > 0 for reading in readings)
    assert doc["memory_idle_bytes"] == readings[0]
    assert doc["memory_typical_bytes"] == max(readings[:6])
    assert doc["memory_rest_bytes"] == readings[6]
    assert doc["memory_max_payload_bytes"] == readings[7]
    assert (
        doc["memory_max_payload_bound_bytes"] == readings[6] + 64 * MIB
    )  # at rest + the lenient copies x max_payload
    assert doc["memory_bytes"] == max(readings)
    assert doc["memory_note"] is None
    names = {target["name"]: target for target in doc["targets"]}
    assert list(names) == [
        "request/reply p99 (128 B)",
        "bus memory, messages up to 64 KiB",
        "bus memory at rest after the load",
        "bus memory, 1 MiB requests (peak)",
    ]
    p99 = names["request/reply p99 (128 B)"]
    assert p99["measured"] == doc["request_reply"][0]["p99_ms"] and p99["ok"] is True
    typical, rest = names["bus memory, messages up to 64 KiB"], names["bus memory at rest after the load"]
    assert typical["measured"] == pytest.approx(doc["memory_typical_bytes"] / MIB, abs=1e-3)
    assert rest["measured"] == pytest.approx(doc["memory_rest_bytes"] / MIB, abs=1e-3)
    assert typical["limit"] == rest["limit"] == 50 and typical["unit"] == rest["unit"] == "MiB"
    peak = names["bus memory, 1 MiB requests (peak)"]
    assert peak["measured"] == pytest.approx(doc["memory_max_payload_bytes"] / MIB, abs=1e-3)
    assert peak["limit"] == pytest.approx(doc["memory_max_payload_bound_bytes"] / MIB, abs=1e-3)
    assert peak["target"].endswith("MiB (at rest + 64 x max_payload)")  # the lenient bound
    assert scratch_streams(nats_server.monitor_url) == []
    assert no_connections_left(nats_server.monitor_url)


@pytest.mark.usefixtures("lenient")
def test_bench_text_shows_the_table_and_the_targets(nats_server: NatsServer) -> None:
    code, out, err = run(
        "bench", "--url", nats_server.nats_url, "--monitor-url", nats_server.monitor_url, "--duration", "0.5"
    )
    assert code == 0, (out, err)
    for text in ("p50 ms", "p99 ms", "req/s", "128 B", "1 KiB", "64 KiB", "1 MiB", "Core publish, 128 B"):
        assert text in out
    assert "JetStream acked publish, 128 B" in out and "msgs/s" in out
    assert "Bus memory by phase" in out and "at rest after the load" in out and "CPU:" in out
    assert "request/reply 1 MiB, peak" in out
    assert "Targets" in out and "< 10000 ms" in out and "< 50 MiB" in out
    assert "Every measured target is met." in out


@pytest.mark.usefixtures("lenient")
def test_bench_without_jetstream_has_no_rate_and_says_why(nats_server_factory: ServerFactory) -> None:
    server = nats_server_factory(jetstream=False)
    code, out, err = run("bench", "--url", server.nats_url, "--duration", "0.5", "--json")
    assert code == 0, (out, err)
    doc = json.loads(out)
    assert doc["jetstream"] is None
    assert "JetStream is off" in doc["jetstream_note"]
    # No monitor URL: memory and CPU are not measured, and that is not a missed target.
    assert doc["memory_bytes"] is None and doc["cpu_percent"] is None and doc["monitor_url"] is None
    assert doc["memory_phases"] == [] and doc["memory_rest_bytes"] is None
    memory = [t for t in doc["targets"] if t["name"].startswith("bus memory")]
    assert len(memory) == 3 and all(t["measured"] is None and t["ok"] is None for t in memory)
    assert doc["ok"] is True


def test_max_payload_is_capped_by_the_server_and_measured(nats_server_factory: ServerFactory) -> None:
    server = nats_server_factory(max_payload=100_000)
    result = bench.run(server.nats_url, server.monitor_url, duration=0.5, max_payload=10 * MIB)
    assert result.max_payload == 100_000
    assert [row.size for row in result.latency] == [128, 1024, 64 * 1024, 100_000]


def test_a_missed_target_is_reported(nats_server: NatsServer) -> None:
    # Only p99 made impossible: the memory bounds are the lenient ones of the other tests (CI read the
    # 1 MiB phase above the real bound once, beside the fast tests on two workers).
    strict = bench.Targets(p99_ms=0.000001, max_payload_copies=64)
    result = bench.run(nats_server.nats_url, nats_server.monitor_url, duration=0.5, targets=strict)
    assert not result.ok
    # The target made impossible is missed; on a busy machine another may be too (a fast-suite run on
    # two workers missed one more), which is not this test's subject.
    assert "request/reply p99 (128 B)" in [check.name for check in result.missed]
    assert [check.ok for check in result.targets if check.name.startswith("bus memory")] == [True, True, True]
    assert result.as_json()["ok"] is False
    assert scratch_streams(nats_server.monitor_url) == []


@pytest.fixture
def fake_monitor() -> Iterator[str]:
    """A /varz that reports 100 MiB of memory: only to drive the exit code of a missed target."""
    body = json.dumps({"mem": 100 * MIB, "cpu": 1.5, "version": "fake"}).encode()
    with serve_monitor({"/varz": (200, body)}) as url:
        yield url


@pytest.mark.usefixtures("lenient")
def test_a_missed_target_exits_1(nats_server: NatsServer, fake_monitor: str) -> None:
    args = ("bench", "--url", nats_server.nats_url, "--monitor-url", fake_monitor, "--duration", "0.5")
    code, out, _ = run(*args, "--json")
    assert code == 1
    doc = json.loads(out)
    assert doc["ok"] is False and doc["memory_bytes"] == 100 * MIB
    assert doc["memory_note"].startswith("the bus held 100.0 MiB before the load: memory kept from")
    missed = [t["name"] for t in doc["targets"] if t["ok"] is False]
    assert missed == ["bus memory, messages up to 64 KiB", "bus memory at rest after the load"]
    assert all(t["measured"] == 100 for t in doc["targets"] if t["name"] in missed)
    code, out, _ = run(*args)
    assert code == 1
    assert "MISSED" in out and "Note: the bus held 100.0 MiB before the load" in out
    assert "Missed: bus memory, messages up to 64 KiB, bus memory at rest after the load." in out


def test_an_unreachable_bus_is_one_line_and_exit_1() -> None:
    code, out, err = run("bench", "--url", "nats://127.0.0.1:1", "--duration", "0.5")
    assert code == 1
    assert "Traceback" not in out + err
    assert err.strip() == "error: Cannot connect to the bus at nats://127.0.0.1:1: connection refused."
    code, out, _ = run("bench", "--url", "nats://127.0.0.1:1", "--json")
    assert code == 1
    assert json.loads(out) == {
        "ok": False,
        "exit_code": 1,
        "error": "Cannot connect to the bus at nats://127.0.0.1:1: connection refused.",
    }


def test_an_unreachable_monitor_fails_before_any_load(nats_server: NatsServer) -> None:
    code, out, err = run("bench", "--url", nats_server.nats_url, "--monitor-url", "http://127.0.0.1:1")
    assert code == 1
    assert "Traceback" not in out + err
    assert "Cannot read the bus's memory and CPU" in err and len(err.strip().splitlines()) == 1


def test_monitor_url_needs_url() -> None:
    code, _, err = run("bench", "--monitor-url", "http://127.0.0.1:8222")
    assert code == 2
    assert "--monitor-url goes with --url" in err


def test_bench_without_a_running_stack_is_exit_1(engine: str, workdir: Path) -> None:
    name = f"bench-none-{uuid.uuid4().hex[:8]}"
    code, out, err = run("bench", "-p", name, "--duration", "0.5")
    assert code == 1
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and f"The bus of project {name} is not running" in lines[0]
    assert f"nachos-deploy up -p {name}" in lines[0]


def test_help_explains_and_has_an_example() -> None:
    code, out, _ = run("bench", "--help")
    assert code == 0
    assert "Example" in out and "--duration" in out and "--json" in out


def test_payload_sizes_are_deduplicated_and_capped() -> None:
    assert bench.payload_sizes(10 * MIB) == [128, 1024, 65536, 10 * MIB]
    assert bench.payload_sizes(65536) == [128, 1024, 65536]
    assert bench.payload_sizes(1000) == [128, 1000]
    assert bench.payload_sizes(64) == [64]


def test_percentiles_and_targets() -> None:
    row = bench.latency_row(128, [float(n) for n in range(100, 0, -1)], 1.0)
    assert (row.p50_ms, row.p90_ms, row.p99_ms, row.max_ms) == (50.0, 90.0, 99.0, 100.0)
    assert row.requests == 100 and row.requests_per_s == 100.0
    p99, typical, rest = bench.judge([row], None)
    assert p99.ok is False and p99.measured == 99.0
    assert typical.ok is None and typical.measured is None and rest.ok is None
    _, typical, rest = bench.judge([row], memory(typical=50 * MIB, rest=50 * MIB - 1))
    assert typical.ok is False  # the target is strictly below 50 MiB
    assert rest.ok is True


def memory(typical: int, rest: int, peak: int | None = None, max_payload: int = 10 * MIB) -> bench.Memory:
    return bench.Memory(
        readings=(bench.MemoryReading("idle, before the load", typical, "idle"),),
        idle=typical,
        typical=typical,
        rest=rest,
        max_payload_peak=peak,
        max_payload_bound=None if peak is None else rest + 6 * max_payload,
    )


def test_the_max_payload_phase_has_its_own_bound() -> None:
    # Issue 18: a healthy bus missed "memory < 50 MiB" only because of its 10 MiB echoes (68.8 MiB).
    rows = [bench.latency_row(size, [1.0], 1.0) for size in (128, 65536, 10 * MIB)]
    checks = bench.judge(rows, memory(typical=21 * MIB, rest=21 * MIB, peak=int(68.8 * MIB)))
    assert [(c.name, c.ok) for c in checks] == [
        ("request/reply p99 (128 B)", True),
        ("bus memory, messages up to 64 KiB", True),
        ("bus memory at rest after the load", True),
        ("bus memory, 10 MiB requests (peak)", True),
    ]
    assert checks[3].limit == 81.0 and checks[3].target == "< 81.0 MiB (at rest + 6 x max_payload)"
    over = bench.judge(rows, memory(typical=21 * MIB, rest=21 * MIB, peak=81 * MIB))
    assert over[3].ok is False  # strictly below its bound
    # With no payload above 64 KiB there is no such phase, and no such target.
    assert len(bench.judge(rows[:2], memory(typical=21 * MIB, rest=21 * MIB))) == 3


@pytest.mark.usefixtures("lenient_p99")
def test_a_bus_echoing_big_payloads_passes_on_its_own_bound(nats_server_factory: ServerFactory) -> None:
    # The max_payload phase comes last and is judged alone: its peak is far above the at-rest reading
    # (about four copies of each message are in the server), yet the typical and at-rest figures hold.
    server = nats_server_factory(max_payload=8 * MIB)
    code, out, err = run(
        "bench", "--url", server.nats_url, "--monitor-url", server.monitor_url, "--duration", "2", "--json"
    )
    assert code == 0, (out, err)
    doc = json.loads(out)
    assert doc["memory_phases"][-1]["phase"] == "request/reply 8 MiB, peak"
    assert doc["memory_max_payload_bytes"] > doc["memory_rest_bytes"] + 8 * MIB
    assert doc["memory_typical_bytes"] < 50 * MIB and doc["memory_rest_bytes"] < 50 * MIB
    assert doc["memory_max_payload_bytes"] < doc["memory_max_payload_bound_bytes"]


def test_a_cancel_that_comes_as_the_scratch_stream_is_made_still_deletes_it(nats_server: NatsServer) -> None:
    """The server made the stream, and the cancel (a SIGTERM) reached the client before the answer
    did: the stream is deleted all the same (CI under load left it behind)."""

    async def run() -> None:
        client = await nats.connect(nats_server.nats_url)
        js = client.jetstream()
        real_add = js.add_stream

        async def made_then_cancelled(*args: object, **kwargs: object) -> None:
            await real_add(*args, **kwargs)
            raise asyncio.CancelledError

        js.add_stream = made_then_cancelled  # type: ignore[method-assign]
        client.jetstream = lambda **_: js  # type: ignore[method-assign]
        try:
            with pytest.raises(asyncio.CancelledError):
                await bench._jetstream(client, "cancel", bench._Clock(5.0), 0.25)
        finally:
            await client.close()

    asyncio.run(run())
    assert int(get_json(nats_server.monitor_url, "/jsz", 2.0)["streams"]) == 0


def test_sigterm_during_the_jetstream_phase_deletes_the_scratch_stream(nats_server: NatsServer) -> None:
    def streams() -> int:
        return int(get_json(nats_server.monitor_url, "/jsz", 2.0)["streams"])

    url = nats_server.nats_url
    command = [sys.executable, "-m", "nachos_deploy", "bench", "--url", url, "--duration", "4"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while streams() == 0 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert streams() == 1, "the scratch stream never appeared"
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130, (out, err)
    assert err.strip() == "Interrupted."
    assert streams() == 0

"""A compromised channel flooding its sidecar while the host keeps asking the gateway: shared by
``tests/test_flood.py`` (a short flood, in CI) and ``benchmarks/flood.py`` (30 s per attack).

The flooder (tests/flooder.py) runs inside the channel's own container (``docker exec``), on the
only server it can reach, its sidecar. Meanwhile the host sends ``nachos.gateway.subagents.list``
requests to the gateway through the hub at a steady rate (``requests``), and the engine's events
say which containers were killed for memory (``oom_kills``). The figures: OOM kills per service,
gateway requests sent and answered, and the p99 of their round trips.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import nats
import yaml

from nachos_deploy.interfaces import api
from nachos_deploy.io.stack import Stack
from tests.commands import container, docker
from tests.documents import stack_document

FLOODER = Path(__file__).with_name("flooder.py")
PROBE = "nachos-deploy/probe:latest"
GATEWAY_SUBJECT = "nachos.gateway.subagents.list"
MODES = ("small", "big", "conns", "subs")


def make_stack(
    folder: Path,
    project: str,
    *,
    llm_proxy: bool = True,
    logging: dict[str, object] | None = None,
    channel_sidecar: dict[str, object] | None = None,
) -> Stack:
    """The probe gateway and the webchat channel (and llm-proxy unless told), each behind its
    sidecar with the default limits (``channel_sidecar``: the channel's, to measure others), on
    engine-picked ports."""
    probe = {"image": PROBE}
    components = {
        "gateway": {**probe, "egress": False},
        "llm-proxy": {**probe, "egress": False} if llm_proxy else {"enabled": False},
        "webchat": {**probe, "enabled": True, "sidecar": channel_sidecar or {}},
    }
    document = stack_document(project, components, bus={}, output="out")
    if logging is not None:
        document["logging"] = logging
    path = folder / "nachos-deploy.yaml"
    path.write_text(yaml.safe_dump(document))
    return api.load(path)


def cpu_stat(project: str, service: str) -> dict[str, int]:
    """The kernel's CPU counters of a service's container (cgroup v1 or v2, read on the host):
    ``nr_periods`` it ran in and ``nr_throttled`` of them in which it spent its quota (``cpus``)."""
    full = docker("inspect", "-f", "{{.Id}}", container(project, service))
    for folder in (f"/sys/fs/cgroup/cpu/docker/{full}", f"/sys/fs/cgroup/system.slice/docker-{full}.scope"):
        path = Path(folder, "cpu.stat")
        if path.exists():
            pairs = (line.split() for line in path.read_text().splitlines())
            return {key: int(value) for key, value in pairs}
    raise AssertionError(f"no cgroup cpu.stat for {service} ({full}) under /sys/fs/cgroup")


def operator_url(stack: Stack) -> str:
    return api.endpoints(stack).nats_url


def inbound(channel: str) -> str:
    return f"nachos.channel.{channel}.inbound"


def outbound(channel: str) -> str:
    return f"nachos.channel.{channel}.outbound"


def start_flood(
    project: str, channel: str, mode: str, seconds: float, subject: str | None = None
) -> subprocess.Popen[str]:
    """The flooder, inside the channel's container, on its own inbound subject (``subs``: on its
    outbound subject, the one it may subscribe to), or on ``subject``."""
    subject = subject or (outbound(channel) if mode == "subs" else inbound(channel))
    with FLOODER.open("rb") as script:  # the child reads its own copy of the descriptor
        return subprocess.Popen(
            [
                "docker",
                "exec",
                "-i",
                container(project, channel),
                "python3",
                "-",
                mode,
                str(seconds),
                subject,
            ],
            stdin=script,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


def flood_result(process: subprocess.Popen[str], timeout: float = 60) -> dict[str, object]:
    """The flooder's own account (its last JSON line), or why there is none."""
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
    for line in reversed(out.splitlines()):
        with contextlib.suppress(ValueError):
            result: dict[str, object] = json.loads(line)
            return result
    return {"error": (err or out).strip()[-300:] or f"exit {process.returncode}"}


@dataclass
class Requests:
    """The host's requests to the gateway: how many went out, how many were answered (within
    ``timeout``), and each answered one's round trip in seconds."""

    sent: int = 0
    answered: int = 0
    latencies: list[float] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)

    @property
    def p99(self) -> float | None:
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def _ask(url: str, seconds: float, rate: float, timeout: float, into: Requests) -> None:
    client = await nats.connect(url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
    try:
        end = time.monotonic() + seconds
        pending: set[asyncio.Task[None]] = set()

        async def one() -> None:
            began = time.monotonic()
            try:
                await client.request(GATEWAY_SUBJECT, b"{}", timeout=timeout)
            except Exception as exc:  # every kind of failure is counted, by its name
                into.failures[type(exc).__name__] += 1
                return
            into.answered += 1
            into.latencies.append(time.monotonic() - began)

        while time.monotonic() < end:
            into.sent += 1
            task = asyncio.create_task(one())
            pending.add(task)
            task.add_done_callback(pending.discard)
            await asyncio.sleep(1 / rate)
        if pending:
            await asyncio.wait(pending)
    finally:
        await client.close()


REQUEST_TIMEOUT = 5.0  # a request not answered within it counts as failed (the machine may be busy)


def ask_gateway(url: str, seconds: float, *, rate: float = 20, timeout: float = REQUEST_TIMEOUT) -> Requests:
    """Requests to the gateway at ``rate`` per second for ``seconds`` (blocking)."""
    into = Requests()
    asyncio.run(_ask(url, seconds, rate, timeout, into))
    return into


def oom_kills(project: str, since: float, until: float) -> Counter[str]:
    """OOM kills per service of ``project`` between two times (the engine's ``oom`` events)."""
    events = subprocess.run(
        [
            "docker", "events", "--since", f"{since:.3f}", "--until", f"{until:.3f}",
            "--filter", "type=container", "--filter", "event=oom",
            "--filter", f"label=com.docker.compose.project={project}",
            "--format", "{{json .Actor.Attributes}}",
        ],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    kills: Counter[str] = Counter()
    for line in events.splitlines():
        attributes = json.loads(line)
        kills[attributes.get("com.docker.compose.service", attributes.get("name", "?"))] += 1
    return kills


def memory_peaks(project: str, stop: threading.Event, into: dict[str, float]) -> None:
    """The highest memory use (MiB) ``docker stats`` shows per service until ``stop`` is set (one
    reading every second or two: a peak between readings is missed)."""
    units = {"KiB": 1 / 1024, "MiB": 1.0, "GiB": 1024.0, "B": 1 / 1024**2}
    while not stop.is_set():
        ids = subprocess.run(
            ["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={project}"],
            capture_output=True, text=True,
        ).stdout.split()  # fmt: skip
        if not ids:
            return
        stats = subprocess.run(
            ["docker", "stats", "--no-stream", "--format", "{{.Name}} {{.MemUsage}}", *ids],
            capture_output=True, text=True,
        ).stdout  # fmt: skip
        for line in stats.splitlines():
            name, used = line.split()[:2]
            service = name.removeprefix(f"{project}-").rsplit("-", 1)[0]
            number = used.rstrip("KMGiB")
            unit = used[len(number) :]
            with contextlib.suppress(ValueError, KeyError):
                into[service] = max(into.get(service, 0.0), float(number) * units[unit])


@dataclass
class Round:
    """One flood (or none: mode ``none``, the anchor) and what the host saw meanwhile."""

    mode: str
    seconds: float
    requests: Requests
    kills: Counter[str]
    flooder: dict[str, object]
    memory: dict[str, float] = field(default_factory=dict)  # peak MiB per service


def run(project: str, nats_url: str, channel: str, mode: str, seconds: float, *, rate: float = 20) -> Round:
    """Flood for ``seconds`` (``mode`` none: no flood) while the host asks the gateway."""
    began = time.time()
    process = start_flood(project, channel, mode, seconds) if mode != "none" else None
    stop, memory = threading.Event(), dict[str, float]()
    sampler = threading.Thread(target=memory_peaks, args=(project, stop, memory), daemon=True)
    sampler.start()
    try:
        requests = ask_gateway(nats_url, seconds, rate=rate)
    finally:
        flooder = flood_result(process) if process is not None else {}
        stop.set()
        sampler.join(timeout=10)
    time.sleep(1)  # an OOM event comes a moment after the kill
    return Round(mode, seconds, requests, oom_kills(project, began, time.time()), flooder, memory)

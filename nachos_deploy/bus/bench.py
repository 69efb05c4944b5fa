"""Measure a running bus against the platform's targets (``nachos-deploy bench``).

What is measured, in this order, within ``duration`` seconds (plus connecting, creating and
removing the scratch stream, reading the monitor and a pause before the at-rest reading: a few
seconds at most):

- **request/reply** of the platform's typical messages, 128 B, 1 KiB and 64 KiB: one requester
  connection asks, one responder connection echoes the payload back, one request in flight at a
  time, on the private subject ``_nachos_deploy.bus.bench.<random hex>``. Latency percentiles
  (nearest rank) and requests/s. Half of the time goes to request/reply, split evenly over these
  sizes and the bus's ``max_payload`` (measured last, see below).
- **core publish**, a quarter: 128-byte messages published as fast as the client can for the slice,
  then flushed (the server has read them all); a subscriber on the other connection counts what the
  bus delivered to it.
- **JetStream acked publish**, a quarter: 128-byte messages into the scratch stream
  ``NACHOS_BENCH_<HEX>`` (memory storage, at most 8 MiB kept) on ``_nachos_deploy.bench_js.<hex>``,
  in pipelined batches of 100, each acknowledged by the stream. The stream is always deleted
  afterwards, also after a failure or Ctrl-C. With JetStream off, there is no rate (``None``).
- **at rest**: ``REST_PAUSE`` seconds without load, then a reading.
- **request/reply of ``max_payload``** (when it is above 64 KiB), last, because it moves the bus's
  memory for minutes: the server holds about four copies of each message in flight (the
  requester's read buffer, the responder's pending writes, and the same for the reply), and Go
  returns freed memory to the system only slowly. The monitor is read every ``PEAK_INTERVAL``
  seconds during this phase, for its peak.
- **the bus's memory and CPU**, from the monitor's ``/varz`` (``mem``: resident bytes; ``cpu``: the
  percentage of one core the server measures itself, over its last second): the memory before the
  load and after each phase above (``MemoryReading``), the highest CPU reading. Without a monitor
  URL they are not measured.

Targets (``Targets``): p99 of the 128-byte request/reply below 10 ms; the platform's 50 MiB for the
bus's memory (52,428,800 bytes: sizes in this project are NATS sizes, where MB means 1024 * 1024
bytes), judged on its typical messages (the highest reading from idle through the JetStream phase)
and at rest after that load; and the ``max_payload`` phase's peak against its own bound, the at-rest
reading plus ``MAX_PAYLOAD_COPIES`` times ``max_payload`` (measured: 4.2 to 4.5 times above the reading
before the phase for 4 to 10 MiB payloads; see docs/benchmarks.md). A target that could not be
measured (no monitor URL) is reported as such, not as missed.

:func:`print_result` shows a result to people (``--json`` uses ``BenchResult.as_json``). Like
``natsclient``, :func:`run` runs its own event loop with ``asyncio.run``: do not call it from
inside a running event loop. Every failure is a :class:`DeployError` (exit 1) with one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
import signal
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any, Literal, TypeVar

from nats import errors as nats_errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js import errors as js_errors
from nats.js.api import StorageType, StreamConfig
from rich.console import Console
from rich.table import Table
from rich.text import Text

from nachos_deploy.bus import trust
from nachos_deploy.bus.monitor import MonitorProblem, describe, get_json, int_field
from nachos_deploy.core.errors import DeployError
from nachos_deploy.core.results import redact

MIB = 1024 * 1024

DEFAULT_DURATION = 5.0
MIN_DURATION = 0.5
SETUP_ALLOWANCE = 3.0
"""Seconds beyond ``duration`` for connecting, the scratch stream and the monitor; past
``duration + SETUP_ALLOWANCE`` the run stops with an error instead of going on."""

CONNECT_TIMEOUT = 2.0
MONITOR_TIMEOUT = 1.0
CONNECTION_NAME = "nachos-deploy-bench"
SUBJECT_PREFIX = "_nachos_deploy.bus.bench"
JS_SUBJECT_PREFIX = "_nachos_deploy.bench_js"
STREAM_PREFIX = "NACHOS_BENCH_"

PAYLOAD_SIZES = (128, 1024, 64 * 1024)
"""Request/reply payloads; the bus's ``max_payload`` is added, and sizes above it dropped."""
TYPICAL_MAX = PAYLOAD_SIZES[-1]
"""The platform's typical messages are up to 64 KiB: its memory target is judged on them."""
REST_PAUSE = 0.5  # seconds without load before the at-rest reading
PEAK_INTERVAL = 0.1  # seconds between two readings of the monitor during the max_payload phase
MAX_PAYLOAD_COPIES = 6.0
"""The max_payload phase's bound: the at-rest reading plus this many max_payload messages. About four
copies of an echoed message are in the server at once, and Go's collector lets the heap grow past
what is live before it collects (measured 4.2-4.5 times above the reading before the phase)."""
PUBLISH_SIZE = 128
PUBLISH_CHUNK = 256  # publishes between two looks at the clock
JS_BATCH = 100  # JetStream publishes in flight at once
SCRATCH_MAX_BYTES = 8 * MIB  # the scratch stream keeps no more (older messages go)

REQUEST_SHARE = 0.5
PUBLISH_SHARE = 0.25
JETSTREAM_SHARE = 0.25

T = TypeVar("T")


@dataclass(frozen=True)
class Targets:
    """The platform's targets for the bus."""

    p99_ms: float = 10.0  # request/reply p99 of a 128-byte payload
    memory_bytes: int = 50 * MIB  # the bus's resident memory, with typical messages and at rest
    max_payload_copies: float = MAX_PAYLOAD_COPIES  # the max_payload phase: at rest + copies x max_payload


DEFAULT_TARGETS = Targets()


@dataclass(frozen=True)
class LatencyRow:
    """Request/reply through the bus for one payload size: one request in flight at a time."""

    size: int
    requests: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    requests_per_s: float

    def as_json(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "requests": self.requests,
            "p50_ms": round(self.p50_ms, 4),
            "p90_ms": round(self.p90_ms, 4),
            "p99_ms": round(self.p99_ms, 4),
            "max_ms": round(self.max_ms, 4),
            "requests_per_s": round(self.requests_per_s, 1),
        }


@dataclass(frozen=True)
class Rate:
    """Messages of ``size`` bytes: how many, in how long; ``delivered`` by the bus to a subscriber."""

    size: int
    messages: int
    seconds: float
    delivered: int | None = None

    @property
    def msgs_per_s(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0

    @property
    def mib_per_s(self) -> float:
        return self.msgs_per_s * self.size / MIB

    def as_json(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "messages": self.messages,
            "seconds": round(self.seconds, 4),
            "msgs_per_s": round(self.msgs_per_s, 1),
            "mib_per_s": round(self.mib_per_s, 3),
            "delivered": self.delivered,
        }


Load = Literal["idle", "typical", "rest", "max_payload"]


@dataclass(frozen=True)
class MemoryReading:
    """The bus's resident memory after one phase (its peak for the max_payload phase). ``load`` says
    which target judges it: idle and typical readings the 50 MiB of typical messages, rest the 50 MiB
    at rest, max_payload its own bound."""

    phase: str
    bytes: int
    load: Load

    def as_json(self) -> dict[str, Any]:
        return {"phase": self.phase, "load": self.load, "bytes": self.bytes}


@dataclass(frozen=True)
class Memory:
    """The bus's memory by phase, and the figures the targets judge (bytes)."""

    readings: tuple[MemoryReading, ...]
    idle: int
    typical: int  # the highest reading from idle through the JetStream phase: messages up to 64 KiB
    rest: int | None  # after REST_PAUSE without load; None when that reading failed
    max_payload_peak: int | None  # None: no payload above 64 KiB was measured
    max_payload_bound: int | None

    @property
    def highest(self) -> int:
        return max(reading.bytes for reading in self.readings)

    def note(self, targets: Targets = DEFAULT_TARGETS) -> str | None:
        """Why the typical figure may be missed by a healthy bus: it held the target's worth before
        any load, which is what earlier large messages leave behind (Go hands the memory back to the
        system over minutes: after a 10 MiB phase, 59 MiB fell to 27 MiB in about six)."""
        if self.idle < targets.memory_bytes:
            return None
        return (
            f"the bus held {self.idle / MIB:.1f} MiB before the load: memory kept from earlier large "
            "messages (a bench's max_payload phase too), which the server returns within minutes; "
            "measure again later"
        )


@dataclass(frozen=True)
class TargetCheck:
    """One target: ``ok`` is None when it could not be measured (never counted as missed)."""

    name: str
    target: str  # e.g. "< 10 ms"
    limit: float
    unit: str
    measured: float | None
    ok: bool | None

    def as_json(self) -> dict[str, Any]:
        measured = None if self.measured is None else round(self.measured, 4)
        return {
            "name": self.name,
            "target": self.target,
            "limit": self.limit,
            "unit": self.unit,
            "measured": measured,
            "ok": self.ok,
        }


@dataclass(frozen=True)
class BenchResult:
    nats_url: str  # without its password
    monitor_url: str | None
    server_version: str | None
    max_payload: int  # the largest payload measured: the configured one, capped by the server's
    duration: float  # the time budget of the measurements, seconds
    elapsed: float  # the whole run, connecting and clean-up included
    latency: tuple[LatencyRow, ...]
    publish: Rate
    jetstream: Rate | None  # None: not measured (JetStream off, or it refused the stream)
    jetstream_note: str | None  # why there is no JetStream rate
    memory: Memory | None  # by phase; None without a monitor URL
    cpu_percent: float | None  # highest /varz cpu reading
    targets: tuple[TargetCheck, ...]

    @property
    def memory_bytes(self) -> int | None:
        """The highest reading of the whole run, the max_payload phase's peak included."""
        return None if self.memory is None else self.memory.highest

    @property
    def ok(self) -> bool:
        """Every target met or not measurable; a single miss is a failure."""
        return not any(check.ok is False for check in self.targets)

    @property
    def missed(self) -> list[TargetCheck]:
        return [check for check in self.targets if check.ok is False]

    def as_json(self) -> dict[str, Any]:
        memory = self.memory
        return {
            "ok": self.ok,
            "nats_url": self.nats_url,
            "monitor_url": self.monitor_url,
            "server_version": self.server_version,
            "max_payload": self.max_payload,
            "duration_s": self.duration,
            "elapsed_s": round(self.elapsed, 3),
            "request_reply": [row.as_json() for row in self.latency],
            "publish": self.publish.as_json(),
            "jetstream": None if self.jetstream is None else self.jetstream.as_json(),
            "jetstream_note": self.jetstream_note,
            "memory_bytes": self.memory_bytes,
            "memory_idle_bytes": None if memory is None else memory.idle,
            "memory_typical_bytes": None if memory is None else memory.typical,
            "memory_rest_bytes": None if memory is None else memory.rest,
            "memory_max_payload_bytes": None if memory is None else memory.max_payload_peak,
            "memory_max_payload_bound_bytes": None if memory is None else memory.max_payload_bound,
            "memory_phases": [] if memory is None else [reading.as_json() for reading in memory.readings],
            "memory_note": None if memory is None else memory.note(),
            "cpu_percent": self.cpu_percent,
            "targets": [check.as_json() for check in self.targets],
        }


def payload_sizes(max_payload: int) -> list[int]:
    """The request/reply payload sizes for a bus: the fixed ones that fit, and ``max_payload``."""
    return sorted({size for size in (*PAYLOAD_SIZES, max_payload) if 0 < size <= max_payload})


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of sorted samples."""
    index = max(0, math.ceil(fraction * len(ordered)) - 1)
    return ordered[min(index, len(ordered) - 1)]


def latency_row(size: int, samples_ms: Sequence[float], seconds: float) -> LatencyRow:
    ordered = sorted(samples_ms)
    return LatencyRow(
        size=size,
        requests=len(ordered),
        p50_ms=percentile(ordered, 0.50),
        p90_ms=percentile(ordered, 0.90),
        p99_ms=percentile(ordered, 0.99),
        max_ms=ordered[-1],
        requests_per_s=len(ordered) / seconds if seconds > 0 else 0.0,
    )


def judge(
    latency: Sequence[LatencyRow], memory: Memory | None, targets: Targets = DEFAULT_TARGETS
) -> tuple[TargetCheck, ...]:
    """The targets against the figures: p99 of the 128-byte payload (the smallest measured when the
    bus's max_payload is below 128 bytes); the bus's memory with the platform's typical messages and
    at rest after them; and, when a payload above 64 KiB was measured, that phase's peak against
    its own bound."""
    checks: list[TargetCheck] = []
    row = next((r for r in latency if r.size == PAYLOAD_SIZES[0]), latency[0] if latency else None)
    checks.append(
        TargetCheck(
            name=f"request/reply p99 ({row.size if row else PAYLOAD_SIZES[0]} B)",
            target=f"< {targets.p99_ms:g} ms",
            limit=targets.p99_ms,
            unit="ms",
            measured=row.p99_ms if row else None,
            ok=(row.p99_ms < targets.p99_ms) if row else None,
        )
    )
    limit = f"< {targets.memory_bytes / MIB:g} MiB"
    for name, measured in (
        (f"bus memory, messages up to {size_text(TYPICAL_MAX)}", None if memory is None else memory.typical),
        ("bus memory at rest after the load", None if memory is None else memory.rest),
    ):
        checks.append(
            TargetCheck(
                name=name,
                target=limit,
                limit=targets.memory_bytes / MIB,
                unit="MiB",
                measured=None if measured is None else measured / MIB,
                ok=None if measured is None else measured < targets.memory_bytes,
            )
        )
    big = next((r for r in latency if r.size > TYPICAL_MAX), None)
    if big is not None:
        peak = None if memory is None else memory.max_payload_peak
        bound = None if memory is None else memory.max_payload_bound
        checks.append(
            TargetCheck(
                name=f"bus memory, {size_text(big.size)} requests (peak)",
                target=(f"< {bound / MIB:.1f} MiB (" if bound is not None else "< (")
                + f"at rest + {targets.max_payload_copies:g} x max_payload)",
                limit=round(bound / MIB, 4) if bound is not None else 0.0,
                unit="MiB",
                measured=None if peak is None else peak / MIB,
                ok=None if peak is None or bound is None else peak < bound,
            )
        )
    return tuple(checks)


def run(
    nats_url: str,
    monitor_url: str | None = None,
    *,
    duration: float = DEFAULT_DURATION,
    max_payload: int | None = None,
    targets: Targets = DEFAULT_TARGETS,
) -> BenchResult:
    """Measure the bus at ``nats_url`` (its ``/varz`` at ``monitor_url`` when given) for about
    ``duration`` seconds (at least ``MIN_DURATION``). ``max_payload`` is the largest payload to
    measure; the server's own limit caps it, and None means the server's. Raises DeployError, and
    KeyboardInterrupt on Ctrl-C or SIGTERM (after deleting the scratch stream)."""
    duration = max(MIN_DURATION, float(duration))
    try:
        return asyncio.run(_terminable(_run(nats_url, monitor_url, duration, max_payload, targets)))
    except _Terminated:
        raise KeyboardInterrupt from None


class _Terminated(Exception):
    """SIGTERM arrived: the run was cancelled (its clean-up done) and ends as a Ctrl-C would."""


async def _terminable(work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` with SIGTERM cancelling it, as asyncio.run does for Ctrl-C, so that its clean-up
    (the scratch stream) runs. A handler raising KeyboardInterrupt inside the loop, the CLI's, would
    skip it and leave the task's exception unretrieved. The previous handler comes back afterwards."""
    task = asyncio.current_task()
    if task is None or threading.current_thread() is not threading.main_thread():
        return await work
    loop = asyncio.get_running_loop()
    terminated: list[int] = []

    def cancel(signum: int, _frame: FrameType | None) -> None:
        terminated.append(signum)
        task.cancel()
        loop.call_soon_threadsafe(lambda: None)  # wake the loop if it sleeps in select()

    previous = signal.signal(signal.SIGTERM, cancel)
    try:
        return await work
    except asyncio.CancelledError:
        if terminated:
            raise _Terminated from None
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)


class _Varz:
    """The bus's /varz read phase by phase: its memory after each, the highest CPU reading."""

    def __init__(self, monitor_url: str | None) -> None:
        self.monitor_url = monitor_url
        self.readings: list[MemoryReading] = []
        self.cpu: float | None = None
        self.version: str | None = None

    async def read(self, *, required: bool = False) -> int | None:
        """Read /varz once and return its memory; a failure is an error when ``required`` (the
        first reading, which proves the URL before any load), else that reading is skipped."""
        if self.monitor_url is None:
            return None
        try:
            varz = await asyncio.to_thread(get_json, self.monitor_url, "/varz", MONITOR_TIMEOUT)
        except MonitorProblem as problem:
            if required:
                raise DeployError(f"Cannot read the bus's memory and CPU: {problem}.") from None
            return None
        cpu = varz.get("cpu")
        version = varz.get("version")
        if isinstance(cpu, int | float) and not isinstance(cpu, bool):
            self.cpu = max(float(cpu), self.cpu or 0.0)
        if isinstance(version, str):
            self.version = version
        return int_field(varz, "mem")

    async def sample(self, phase: str, load: Load, *, required: bool = False) -> None:
        """The memory after ``phase``."""
        memory = await self.read(required=required)
        if memory is not None:
            self.readings.append(MemoryReading(phase, memory, load))

    @contextlib.asynccontextmanager
    async def peak(self, phase: str) -> AsyncIterator[None]:
        """The highest memory during the block: read every PEAK_INTERVAL seconds, and once after."""
        if self.monitor_url is None:
            yield
            return
        highest: list[int] = []

        async def watch() -> None:
            while True:
                memory = await self.read()
                if memory is not None:
                    highest[:] = [max([memory, *highest])]
                await asyncio.sleep(PEAK_INTERVAL)

        watcher = asyncio.ensure_future(watch())
        try:
            yield
        finally:
            watcher.cancel()
            await asyncio.wait({watcher})  # never raises the watcher's cancellation, only our own
        last = await self.read()
        readings = [*highest, *([last] if last is not None else [])]
        if readings:
            self.readings.append(MemoryReading(phase, max(readings), "max_payload"))

    def memory(self, targets: Targets, max_payload: int | None) -> Memory | None:
        """The figures the targets judge, from the readings (None without any: the first one,
        idle, is required, so there is none only without a monitor URL)."""
        if not self.readings:
            return None

        def last(*loads: Load) -> list[int]:
            return [reading.bytes for reading in self.readings if reading.load in loads]

        rest = next(iter(last("rest")), None)
        bound = None
        if max_payload is not None and rest is not None:
            bound = rest + int(targets.max_payload_copies * max_payload)
        return Memory(
            readings=tuple(self.readings),
            idle=self.readings[0].bytes,
            typical=max(last("idle", "typical")),
            rest=rest,
            max_payload_peak=next(iter(last("max_payload")), None),
            max_payload_bound=bound,
        )


async def _run(
    nats_url: str, monitor_url: str | None, duration: float, max_payload: int | None, targets: Targets
) -> BenchResult:
    started = time.monotonic()
    budget = duration + SETUP_ALLOWANCE
    varz = _Varz(monitor_url)
    token = secrets.token_hex(8)
    try:
        async with asyncio.timeout(budget):
            await varz.sample("idle, before the load", "idle", required=True)
            async with _connected(nats_url) as requester, _connected(nats_url) as responder:
                limit = min(max_payload or requester.max_payload, requester.max_payload)
                sizes = payload_sizes(limit)
                big = [size for size in sizes if size > TYPICAL_MAX]
                clock = _Clock(duration)
                per_size = clock.slice(REQUEST_SHARE) / len(sizes)
                clock.spend(per_size * len(sizes))
                subject = await _echoing(requester, responder, token)
                latency = []
                for size in sizes:
                    if size in big:
                        continue
                    latency.append(await _latency(requester, subject, size, per_size))
                    await varz.sample(f"request/reply {size_text(size)}", "typical")
                publish = await _publish(requester, responder, token, clock, PUBLISH_SHARE)
                await varz.sample(f"core publish {size_text(PUBLISH_SIZE)}", "typical")
                jetstream, note = await _jetstream(requester, token, clock, JETSTREAM_SHARE)
                if jetstream is not None:
                    await varz.sample(f"JetStream acked publish {size_text(PUBLISH_SIZE)}", "typical")
                if monitor_url is not None:
                    await asyncio.sleep(REST_PAUSE)
                    await varz.sample("at rest after the load", "rest")
                for size in big:  # last: it holds the bus's memory up for minutes
                    async with varz.peak(f"request/reply {size_text(size)}, peak"):
                        latency.append(await _latency(requester, subject, size, per_size))
    except TimeoutError:
        raise DeployError(
            f"The benchmark did not finish within {budget:g}s ({duration:g}s of measurements and "
            f"{SETUP_ALLOWANCE:g}s to set up): the bus at {redact(nats_url)} is too slow or stopped "
            "answering."
        ) from None
    memory = varz.memory(targets, big[0] if big else None)
    return BenchResult(
        nats_url=redact(nats_url),
        monitor_url=None if monitor_url is None else redact(monitor_url),  # the system user's, maybe
        server_version=varz.version,
        max_payload=limit,
        duration=duration,
        elapsed=time.monotonic() - started,
        latency=tuple(latency),
        publish=publish,
        jetstream=jetstream,
        jetstream_note=note,
        memory=memory,
        cpu_percent=varz.cpu,
        targets=judge(latency, memory, targets),
    )


class _Clock:
    """Hands out the measurement time: each phase gets its share of ``duration``, never more than
    what is left of it."""

    def __init__(self, duration: float) -> None:
        self.duration = duration
        self.spent = 0.0

    def slice(self, share: float) -> float:
        return max(0.0, min(self.duration * share, self.duration - self.spent))

    def spend(self, seconds: float) -> None:
        self.spent += seconds


@contextlib.asynccontextmanager
async def _connected(nats_url: str) -> AsyncIterator[Client]:
    """A client that fails fast and quietly (see ``natsclient._client_options`` for why each
    option), closed afterwards; a connection failure is a DeployError."""
    errors: list[BaseException] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    client = Client()
    options: dict[str, Any] = {
        "name": CONNECTION_NAME,
        "allow_reconnect": False,
        "max_reconnect_attempts": 1,
        "reconnect_time_wait": 0,
        "connect_timeout": CONNECT_TIMEOUT,
        "error_cb": on_error,
        "verbose": False,
        "pedantic": False,
    }
    try:
        try:
            tls = trust.context(nats_url)  # tls://: the stack's CA (see bus/trust.py)
            if tls is not None:  # TLS before the server's INFO: see bus/trust.py
                options["tls"] = tls
                options["tls_handshake_first"] = True
                options["tls_hostname"] = trust.server_name(nats_url)
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await client.connect(nats_url, **options)
        except (OSError, nats_errors.Error, TimeoutError) as exc:
            cause: BaseException = exc
            if isinstance(exc, nats_errors.NoServersError | TimeoutError) and errors:
                cause = errors[-1]  # the socket error nats-py saw, not its generic one
            message = f"Cannot connect to the bus at {redact(nats_url)}: {describe(cause)}."
            raise DeployError(message) from None
        try:
            yield client
        except (OSError, nats_errors.Error) as exc:
            # A slow consumer or a lost connection shows up here as "connection closed"; the
            # error the client was told about says why.
            cause = errors[-1] if errors else exc
            raise DeployError(f"The bus connection failed during the benchmark: {describe(cause)}.") from None
    finally:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await client.close()


def _whole(seconds: float) -> int:
    """nats-py types flush's timeout as whole seconds."""
    return max(1, math.ceil(seconds))


async def _measured(what: str, action: Awaitable[T]) -> T:
    """One bus operation; its errors become a DeployError naming ``what`` (a request, a flush)."""
    try:
        return await action
    except nats_errors.NoRespondersError:
        raise DeployError(f"The bus answered 'no responders' to {what}.") from None
    except nats_errors.TimeoutError:
        raise DeployError(f"The bus did not answer {what} in time.") from None


async def _flush(client: Client, what: str, timeout: float) -> None:
    """``client.flush()``, once everything the client buffered is in the socket: nats-py 2.16's
    flush writes its PING straight to the socket, ahead of publishes and subscriptions its writer
    task has not sent yet, so the PONG can come back before the server has read them (seen on a
    loaded CI machine: 1,024 of 24,320 messages not yet delivered when the counts were taken, and
    'no responders' to a subscription just flushed). Waiting stops if the connection drops or
    ``timeout`` passes: the flush then fails on its own."""
    until = time.monotonic() + timeout
    while client.pending_data_size > 0 and client.is_connected and time.monotonic() < until:
        await asyncio.sleep(0.001)
    await _measured(what, client.flush(timeout=_whole(timeout)))


async def _echoing(requester: Client, responder: Client, token: str) -> str:
    """The responder echoing on a private subject, and the requester's first request (not part of
    any figure: it sets up the requester's reply subscription). Returns the subject."""
    subject = f"{SUBJECT_PREFIX}.{token}"

    async def echo(msg: Msg) -> None:
        await msg.respond(msg.data)

    await responder.subscribe(subject, cb=echo)
    await _flush(responder, "a flush", CONNECT_TIMEOUT)
    # Seen once on a loaded machine: 'no responders' to the first request although the responder
    # had flushed its subscription; being set-up, it is tried again a few times before that counts
    # as a failure.
    for attempt in range(5):
        try:
            await _measured("the first request", requester.request(subject, b"", timeout=CONNECT_TIMEOUT))
            break
        except DeployError as exc:
            if attempt == 4 or "no responders" not in exc.message:
                raise
            await asyncio.sleep(0.05)
    return subject


async def _latency(requester: Client, subject: str, size: int, seconds: float) -> LatencyRow:
    """Requests of ``size`` bytes one after the other for ``seconds`` (at least one)."""
    payload = b"x" * size
    samples: list[float] = []
    begin = time.perf_counter()
    end = begin + seconds
    what = f"a {size}-byte request"
    while True:
        sent = time.perf_counter()
        # The overall budget (asyncio.timeout in _run) bounds a request that never gets a reply.
        reply = await _measured(what, requester.request(subject, payload, timeout=SETUP_ALLOWANCE + seconds))
        done = time.perf_counter()
        if len(reply.data) != size:
            raise DeployError(f"The reply to {what} came back with {len(reply.data)} bytes.")
        samples.append((done - sent) * 1000.0)
        if done >= end:
            return latency_row(size, samples, done - begin)


async def _publish(requester: Client, subscriber: Client, token: str, clock: _Clock, share: float) -> Rate:
    """Publish as fast as the client can for the slice, then flush: the server has read them all.
    ``delivered`` counts what reached the subscriber by the time its own flush came back."""
    subject = f"{SUBJECT_PREFIX}.{token}.publish"

    async def ignore(_msg: Msg) -> None:
        return None

    sub = await subscriber.subscribe(subject, cb=ignore)
    await _flush(subscriber, "a flush", CONNECT_TIMEOUT)
    payload = b"x" * PUBLISH_SIZE
    seconds = clock.slice(share)
    sent = 0
    begin = time.perf_counter()
    end = begin + seconds
    while time.perf_counter() < end:
        for _ in range(PUBLISH_CHUNK):
            await requester.publish(subject, payload)
        sent += PUBLISH_CHUNK
        await asyncio.sleep(0)  # let the client's writer and the subscriber's reader run
    await _flush(requester, "a flush after publishing", SETUP_ALLOWANCE + seconds)
    elapsed = time.perf_counter() - begin
    await _flush(subscriber, "the subscriber's flush", SETUP_ALLOWANCE + seconds)
    delivered = sub.delivered
    with contextlib.suppress(nats_errors.Error):
        await sub.unsubscribe()
    clock.spend(seconds)
    return Rate(PUBLISH_SIZE, sent, elapsed, delivered)


async def _jetstream(
    client: Client, token: str, clock: _Clock, share: float
) -> tuple[Rate | None, str | None]:
    """Acked publishes into a scratch memory stream, always deleted afterwards."""
    name = f"{STREAM_PREFIX}{token.upper()}"
    subject = f"{JS_SUBJECT_PREFIX}.{token}"
    js = client.jetstream(timeout=CONNECT_TIMEOUT)
    config = StreamConfig(
        name=name,
        subjects=[subject],
        storage=StorageType.MEMORY,
        max_bytes=SCRATCH_MAX_BYTES,
        num_replicas=1,
    )
    try:
        await js.add_stream(config)
    except (js_errors.ServiceUnavailableError, nats_errors.NoRespondersError):
        return None, "JetStream is off on this bus: its API has no responders"
    except js_errors.APIError as exc:
        return None, f"JetStream refused the scratch stream {name}: {exc.description or exc}"
    except nats_errors.TimeoutError:
        await _remove_scratch(js, name)  # the server may have made it before its late answer
        return None, "JetStream did not answer in time"
    except asyncio.CancelledError:
        # A SIGTERM may come after the server made it and before its answer (seen in CI under load).
        await _remove_scratch(js, name)
        raise
    seconds = clock.slice(share)
    try:
        rate = await _acked_publishes(js.publish, subject, seconds)
    finally:
        removal_problem = await _remove_scratch(js, name)
    clock.spend(seconds)
    if removal_problem is not None:
        raise DeployError(
            f"Could not delete the benchmark's scratch stream {name} ({removal_problem}); delete it "
            f"with `nats stream rm {name}`."
        )
    return rate, None


async def _remove_scratch(js: JetStreamContext, name: str) -> str | None:
    """Delete the scratch stream; None when it is gone (or was never made), else why not."""
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            await js.delete_stream(name)
    except js_errors.NotFoundError:
        return None
    except (nats_errors.Error, TimeoutError, OSError) as exc:
        return describe(exc)
    return None


async def _acked_publishes(publish: Callable[..., Awaitable[Any]], subject: str, seconds: float) -> Rate:
    payload = b"x" * PUBLISH_SIZE
    acked = 0
    begin = time.perf_counter()
    end = begin + seconds
    try:
        while True:
            batch = [publish(subject, payload, timeout=SETUP_ALLOWANCE + seconds) for _ in range(JS_BATCH)]
            acked += len(await asyncio.gather(*batch))
            if time.perf_counter() >= end:
                break
    except js_errors.APIError as exc:
        raise DeployError(f"JetStream refused a publish: {exc.description or exc}.") from None
    except nats_errors.TimeoutError:
        raise DeployError("JetStream did not acknowledge a publish in time.") from None
    return Rate(PUBLISH_SIZE, acked, time.perf_counter() - begin)


def size_text(size: int) -> str:
    """128 B, 1 KiB, 64 KiB, 10 MiB."""
    for unit, factor in (("MiB", MIB), ("KiB", 1024)):
        if size >= factor:
            return f"{size // factor} {unit}" if size % factor == 0 else f"{size / factor:.1f} {unit}"
    return f"{size} B"


def print_result(console: Console, result: BenchResult) -> None:
    """The figures for people: the request/reply table, the rates, memory and CPU, the targets."""
    version = f" (nats-server {result.server_version})" if result.server_version else ""
    console.print(
        f"Bus {result.nats_url}{version}: {result.duration:g}s of measurements, "
        f"{result.elapsed:.1f}s in all.",
        markup=False,
    )
    title = "Request/reply, one request in flight"
    table = Table(box=None, pad_edge=False, title=title, title_justify="left")
    for column in ("payload", "requests", "p50 ms", "p90 ms", "p99 ms", "max ms", "req/s"):
        table.add_column(column, justify="left" if column == "payload" else "right")
    for row in result.latency:
        table.add_row(
            size_text(row.size),
            f"{row.requests:,}",
            f"{row.p50_ms:.3f}",
            f"{row.p90_ms:.3f}",
            f"{row.p99_ms:.3f}",
            f"{row.max_ms:.3f}",
            f"{row.requests_per_s:,.0f}",
        )
    console.print(table)
    publish = result.publish
    delivered = "" if publish.delivered is None else f", {publish.delivered:,} delivered to a subscriber"
    console.print(
        f"Core publish, {size_text(publish.size)}: {publish.msgs_per_s:,.0f} msgs/s "
        f"({publish.mib_per_s:.1f} MiB/s); {publish.messages:,} sent{delivered}.",
        markup=False,
    )
    if result.jetstream is not None:
        js = result.jetstream
        console.print(
            f"JetStream acked publish, {size_text(js.size)}: {js.msgs_per_s:,.0f} msgs/s "
            f"({js.mib_per_s:.1f} MiB/s) into a scratch memory stream (deleted).",
            markup=False,
        )
    else:
        console.print(f"JetStream acked publish: not measured ({result.jetstream_note}).", markup=False)
    if result.memory is None:
        console.print("Bus memory and CPU: not measured (no monitor URL; see --monitor-url).", markup=False)
    else:
        memory = Table(box=None, pad_edge=False, title="Bus memory by phase", title_justify="left")
        memory.add_column("after")
        memory.add_column("MiB", justify="right")
        for reading in result.memory.readings:
            memory.add_row(Text(reading.phase), f"{reading.bytes / MIB:.1f}")
        console.print(memory)
        note = result.memory.note()
        if note is not None:
            console.print(f"Note: {note}.", markup=False)
        cpu = "unknown" if result.cpu_percent is None else f"{result.cpu_percent:.0f}% of a core at most"
        console.print(f"Bus CPU: {cpu}.", markup=False)
    targets = Table(box=None, pad_edge=False, title="Targets", title_justify="left")
    for column in ("target", "limit", "measured", "result"):
        targets.add_column(column)
    for check in result.targets:
        measured = "not measured" if check.measured is None else f"{check.measured:.3g} {check.unit}"
        verdict = {True: Text("ok", "green"), False: Text("MISSED", "red"), None: Text("not measured")}
        targets.add_row(Text(check.name), Text(check.target), Text(measured), verdict[check.ok])
    console.print(targets)
    if result.ok:
        console.print("Every measured target is met.", markup=False)
    else:
        console.print(f"Missed: {', '.join(check.name for check in result.missed)}.", markup=False)

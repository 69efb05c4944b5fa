"""A short-lived NATS client for the host side: the gate's round trip and the ``request`` command.

Its short-lived connection (:func:`_connected`) is shared by the other nats-py users of bus/ (such
as :mod:`~nachos_deploy.bus.snapshots`, JetStream's snapshot API). Each call runs its own short
event loop with ``asyncio.run``, so these functions must not be called from inside a running event
loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from nats import errors as nats_errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import errors as js_errors
from nats.js.api import StorageType, StreamConfig, StreamInfo

from nachos_deploy.bus import trust
from nachos_deploy.bus.monitor import BusUnavailable, MonitorProblem, describe
from nachos_deploy.core.errors import ConfigError
from nachos_deploy.core.plan_types import AuditPlan
from nachos_deploy.core.results import StreamReport, redact

PROBE_CONNECTION_NAME = "nachos-deploy-probe"
"""Name of the health-check client, so it can be told apart (and ignored) in ``/connz``."""

REQUEST_CONNECTION_NAME = "nachos-deploy"
"""Name of the one-shot ``request`` client, distinct from the health probe for the same reason."""

HEALTH_SUBJECT_PREFIX = "_nachos_deploy.health"
"""Private subjects for the round trip: nothing on a Nachos bus may answer on them but us."""

MIN_STEP_TIMEOUT = 0.05
"""Floor for a step's timeout near a deadline, so the last attempt can still say what is wrong."""


def _client_options(name: str, timeout: float, errors: list[BaseException]) -> dict[str, Any]:
    """Options for a short-lived client that must fail fast and quietly.

    nats-py logs every error with a traceback unless given its own ``error_cb``; the one here
    only records them, so the caller can phrase the last one. ``max_reconnect_attempts`` is 1,
    not 0: nats-py (2.16) reads 0 as "no limit" while picking a server for the first
    connection and would retry a refused port until cancelled. With 1 and no wait it gives up
    after two immediate tries. A dict is used because nats-py annotates ``connect_timeout`` as
    int although it is only ever given to ``asyncio.wait_for``.
    """

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    return {
        "name": name,
        "allow_reconnect": False,
        "max_reconnect_attempts": 1,
        "reconnect_time_wait": 0,
        "connect_timeout": timeout,
        "error_cb": on_error,
        "verbose": False,
        "pedantic": False,
    }


def _connect_failure(nats_url: str, exc: BaseException, errors: list[BaseException]) -> str:
    """Prefer the socket error nats-py saw over its generic NoServersError/timeout."""
    cause: BaseException = exc
    if isinstance(exc, nats_errors.NoServersError | TimeoutError) and errors:
        cause = errors[-1]
    return f"cannot connect to the bus at {redact(nats_url)}: {describe(cause)}"


async def _connect(client: Client, nats_url: str, options: dict[str, Any], timeout: float) -> None:
    """Connect within ``timeout`` overall; nats-py's own timeout bounds each phase only."""
    async with asyncio.timeout(timeout):
        await client.connect(nats_url, **options)


CLOSE_TIMEOUT = 1.0
"""Seconds a close may take: nats-py's close of a client whose TLS handshake failed waits forever
for a transport that never finishes closing (nats-py 2.x; seen against a server that does not do TLS)."""


async def _close_quietly(client: Client) -> None:
    # Closing a half-open client must never replace the error that made us close it, nor hang.
    with contextlib.suppress(Exception):
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await client.close()


@contextlib.asynccontextmanager
async def _connected(
    nats_url: str, name: str, timeout: float, failure: type[Exception]
) -> AsyncIterator[Client]:
    """A short-lived client, connected within ``timeout`` (else ``failure`` saying why) and always
    closed quietly afterwards."""
    errors: list[BaseException] = []
    client = Client()
    try:
        try:
            options = _client_options(name, timeout, errors)
            tls = trust.context(nats_url)  # tls://: the stack's CA (see bus/trust.py)
            if tls is not None:  # TLS before the server's INFO: see bus/trust.py
                options["tls"] = tls
                options["tls_handshake_first"] = True
                options["tls_hostname"] = trust.server_name(nats_url)
            await _connect(client, nats_url, options, timeout)
        except (OSError, nats_errors.Error, TimeoutError) as exc:
            raise failure(_connect_failure(nats_url, exc, errors)) from None
        yield client
    finally:
        await _close_quietly(client)


async def _round_trip_async(nats_url: str, connect_timeout: float, request_timeout: float) -> float:
    """Request/reply with ourselves on a private subject; returns milliseconds."""
    async with _connected(nats_url, PROBE_CONNECTION_NAME, connect_timeout, MonitorProblem) as client:
        subject = f"{HEALTH_SUBJECT_PREFIX}.{secrets.token_hex(8)}"
        token = secrets.token_bytes(16)

        async def echo(msg: Msg) -> None:
            await msg.respond(msg.data)

        try:
            # Same connection: the server sees SUB before the request's PUB, so no flush needed.
            sub = await client.subscribe(subject, cb=echo)
            started = time.perf_counter()
            reply = await client.request(subject, token, timeout=request_timeout)
            elapsed_ms = (time.perf_counter() - started) * 1000.0
            await sub.unsubscribe()
        except nats_errors.NoRespondersError:
            raise MonitorProblem("the bus did not route a request back to its own subscriber") from None
        except TimeoutError:
            raise MonitorProblem(f"no reply to the round trip within {request_timeout:.2g}s") from None
        except (OSError, nats_errors.Error) as exc:
            raise MonitorProblem(f"bus round trip failed: {describe(exc)}") from None
        if reply.data != token:
            raise MonitorProblem("bus round trip returned a different payload than was sent")
        return elapsed_ms


class NoReply(BusUnavailable):
    """Something subscribes to the subject (the bus did not say "no responders") but no reply came:
    a slow component, or one that dropped the request (the platform's components drop a payload
    that is not JSON). Carries what a user must be told: which subject, and how long we waited."""

    def __init__(self, subject: str, waited: float) -> None:
        super().__init__(f"no reply on {subject} within {waited:.1f}s")
        self.subject = subject
        self.waited = waited


def request(nats_url: str, subject: str, payload: bytes = b"", *, timeout: float = 2.0) -> bytes:
    """Send one request and return the reply's payload, all within ``timeout`` seconds.

    Raises ``BusUnavailable`` when the bus cannot be reached or nobody listens on ``subject``, and
    its subclass ``NoReply`` when a subscriber got the request but no reply came in time, because
    to a CLI user these all mean "that component is not there" (``NoReply``: "not answering").
    """

    async def run() -> bytes:
        started = time.monotonic()
        async with _connected(nats_url, REQUEST_CONNECTION_NAME, timeout, BusUnavailable) as client:
            left = max(MIN_STEP_TIMEOUT, timeout - (time.monotonic() - started))
            try:
                reply = await client.request(subject, payload, timeout=left)
            except nats_errors.NoRespondersError:
                raise BusUnavailable(f"nothing on the bus answers on {subject}") from None
            except TimeoutError:
                raise NoReply(subject, time.monotonic() - started) from None
            except (OSError, nats_errors.Error) as exc:
                raise BusUnavailable(f"request on {subject} failed: {describe(exc)}") from None
            return bytes(reply.data)

    return asyncio.run(run())


def login_refusal(nats_url: str, *, timeout: float = 2.0) -> str | None:
    """Why the bus refused to let ``nats_url``'s user log in (e.g. "Authorization Violation"), or
    None when it accepted; any other failure (no bus) raises ``BusUnavailable``."""

    async def run() -> str | None:
        try:
            async with _connected(nats_url, REQUEST_CONNECTION_NAME, timeout, BusUnavailable):
                return None
        except BusUnavailable as exc:
            if "authorization" in str(exc).lower() or "authentication" in str(exc).lower():
                return str(exc)
            raise

    return asyncio.run(run())


def round_trip(nats_url: str, connect_timeout: float, request_timeout: float) -> float:
    """Request/reply with ourselves on a private subject; milliseconds. Raises ``MonitorProblem``."""
    return asyncio.run(_round_trip_async(nats_url, connect_timeout, request_timeout))


def cross_round_trip(responder_url: str, requester_url: str, *, timeout: float = 5.0) -> float:
    """A request sent to one node of a clustered bus and answered by a subscriber on another:
    proof that the routes carry messages, not only that they are listed. Milliseconds; raises
    ``MonitorProblem``. Interest crosses the route a moment after the subscription, so "no
    responders" is retried until ``timeout``."""

    async def run() -> float:
        deadline = time.monotonic() + timeout
        subject = f"{HEALTH_SUBJECT_PREFIX}.cross.{secrets.token_hex(8)}"
        token = secrets.token_bytes(16)
        async with (
            _connected(responder_url, PROBE_CONNECTION_NAME, timeout, MonitorProblem) as responder,
            _connected(requester_url, PROBE_CONNECTION_NAME, timeout, MonitorProblem) as requester,
        ):

            async def echo(msg: Msg) -> None:
                await msg.respond(msg.data)

            await responder.subscribe(subject, cb=echo)
            await responder.flush()
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise MonitorProblem(f"no request crossed between two nodes within {timeout:.2g}s")
                try:
                    started = time.perf_counter()
                    reply = await requester.request(
                        subject, token, timeout=max(MIN_STEP_TIMEOUT, min(1.0, left))
                    )
                except (nats_errors.NoRespondersError, TimeoutError):
                    await asyncio.sleep(0.02)
                    continue
                except (OSError, nats_errors.Error) as exc:
                    raise MonitorProblem(f"a request across two nodes failed: {describe(exc)}") from None
                if reply.data != token:
                    raise MonitorProblem("a request across two nodes returned another payload")
                return (time.perf_counter() - started) * 1000.0

    return asyncio.run(run())


class StreamNotReady(BusUnavailable):
    """JetStream did not place or answer for the stream yet: a cluster that has just formed, or
    whose node has just come back, is routed and has a meta leader a moment before it can place a
    replicated stream (measured: "no suitable peers for placement", or no answer within the timeout
    on a loaded machine). Asking again is safe: a create that timed out is found on the next ask."""


def ensure_stream(nats_url: str, audit: AuditPlan, *, timeout: float = 5.0) -> StreamReport:
    """Create the audit stream, or update it in place when the configuration changed; never delete
    or recreate it. A change JetStream refuses in place (the storage type) is a ConfigError."""
    wanted = StreamConfig(
        name=audit.stream,
        subjects=list(audit.subjects),
        storage=StorageType(audit.storage),
        max_age=audit.max_age,
        max_bytes=audit.max_bytes,
        duplicate_window=audit.duplicate_window,
        num_replicas=audit.replicas,
    )

    async def run() -> StreamReport:
        async with _connected(nats_url, REQUEST_CONNECTION_NAME, timeout, BusUnavailable) as client:
            return await _provision(client, audit, wanted, timeout)

    return asyncio.run(run())


async def _provision(client: Client, audit: AuditPlan, wanted: StreamConfig, timeout: float) -> StreamReport:
    """Create, update in place, or leave the stream; never delete or recreate it."""
    try:
        js = client.jetstream(timeout=timeout)
        try:
            info = await js.stream_info(audit.stream)
        except js_errors.NotFoundError:
            info = await js.add_stream(wanted)
            return _stream_report(info, "created")
        current = info.config
        storage = str(getattr(current.storage, "value", current.storage))
        if storage != audit.storage:
            raise ConfigError(
                f"bus.audit.storage is {audit.storage}, but the stream {audit.stream} on the bus "
                f"keeps {storage} storage, and "
                "JetStream cannot change that in place. Set bus.audit.storage back, or name a new "
                "stream with bus.audit.stream (the old one and its messages stay)."
            )
        updated = replace(current, **_changes(wanted))
        if updated == current:
            return _stream_report(info, "unchanged")
        try:
            info = await js.update_stream(updated)
        except js_errors.APIError as exc:
            raise ConfigError(
                f"JetStream refused to update the stream {audit.stream} in place: "
                f"{exc.description or exc}. Change bus.audit back, or name a new stream with "
                "bus.audit.stream."
            ) from None
        return _stream_report(info, "updated")
    except (nats_errors.Error, TimeoutError) as exc:
        message = f"cannot provision the audit stream {audit.stream}: {describe(exc)}"
        if isinstance(exc, (nats_errors.TimeoutError, TimeoutError)) or "no suitable peers" in str(exc):
            raise StreamNotReady(message) from None
        raise BusUnavailable(message) from None


def _changes(wanted: StreamConfig) -> dict[str, Any]:
    """The settings nachos-deploy owns; the server's own defaults for the rest are kept."""
    return {
        "subjects": wanted.subjects,
        "max_age": wanted.max_age,
        "max_bytes": wanted.max_bytes,
        "duplicate_window": wanted.duplicate_window,
        "num_replicas": wanted.num_replicas,
    }


def _stream_report(info: StreamInfo, action: str) -> StreamReport:
    return StreamReport(info.config.name or "", action, info.state.messages, info.state.bytes)


connected = _connected
"""A short-lived client for the other bus modules that speak nats-py (bus/replicas.py)."""

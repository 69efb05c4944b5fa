"""Checks of a running NATS bus, made from the host.

This is the only module of the package that imports nats-py, so the rest of the package (and its
tests) stays importable and fast without talking to a bus. Everything here is synchronous: the
CLI is synchronous, and each call runs its own short event loop with ``asyncio.run``, so these
functions must not be called from inside a running event loop (use ``asyncio.to_thread``).

Every failure, whether HTTP, JSON or NATS, is turned into one human line (``BusReport.problem``
or ``BusUnavailable``), because the callers show it to an operator who waits for a stack to
come up and who gains nothing from a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nats import errors as nats_errors
from nats.aio.client import Client
from nats.aio.msg import Msg

__all__ = [
    "PROBE_CONNECTION_NAME",
    "REQUEST_CONNECTION_NAME",
    "BusEndpoints",
    "BusReport",
    "BusUnavailable",
    "bus_overview",
    "check_bus",
    "connection_names",
    "request",
    "wait_for_bus",
]

PROBE_CONNECTION_NAME = "nachos-deploy-probe"
"""Name of the health-check client, so it can be told apart (and ignored) in ``/connz``."""

REQUEST_CONNECTION_NAME = "nachos-deploy"
"""Name of the one-shot ``request`` client, distinct from the health probe for the same reason."""

HEALTH_SUBJECT_PREFIX = "_nachos_deploy.health"
"""Private subjects for the round trip: nothing on a Nachos bus may answer on them but us."""

_MIN_STEP_TIMEOUT = 0.05
"""Floor for a step's timeout near a deadline, so the last attempt can still say what is wrong."""

_CONNZ_PAGE = 10_000


class BusUnavailable(Exception):
    """The bus could not be reached or did not answer; the message is one line for a human."""


@dataclass(frozen=True)
class BusEndpoints:
    """Where the host reaches the bus: its client port and its HTTP monitoring port."""

    nats_url: str
    monitor_url: str


@dataclass(frozen=True)
class BusReport:
    """The outcome of one check; facts are filled in as far as the check got before failing."""

    healthy: bool
    problem: str | None
    server_version: str | None
    jetstream: bool
    max_payload: int | None
    connections: int | None
    round_trip_ms: float | None


class _Problem(Exception):
    """A step failed; carries the line that ends up in ``BusReport.problem``."""


# --------------------------------------------------------------------------------------------
# HTTP monitoring


# The monitor is reached directly: an http_proxy meant for the internet must not swallow or
# reroute requests to 127.0.0.1 or to a host on the compose network.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _describe(exc: BaseException) -> str:
    """One line for an exception whose ``str`` may be empty (nats-py timeouts are)."""
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        return _describe(exc.reason) if isinstance(exc.reason, BaseException) else str(exc.reason)
    if isinstance(exc, ConnectionRefusedError):
        # asyncio words it "Connect call failed", which hides the one fact that matters.
        return "connection refused"
    if isinstance(exc, TimeoutError) and not str(exc):
        return "timed out"
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _monitor_url(monitor_url: str, path: str) -> str:
    base = monitor_url.rstrip("/")
    scheme = urllib.parse.urlsplit(base).scheme
    if scheme not in ("http", "https"):
        raise _Problem(f"bus monitor URL {monitor_url!r} is not an http(s) URL")
    return base + path


def _error_body(err: urllib.error.HTTPError) -> str:
    """The monitor explains a failing /healthz in a JSON ``error`` field; surface it."""
    try:
        raw = err.read(4096)
    except OSError:
        return ""
    try:
        doc = json.loads(raw)
    except ValueError:
        return " ".join(raw.decode("utf-8", "replace").split())[:200]
    if isinstance(doc, dict):
        for key in ("error", "description", "status"):
            value = doc.get(key)
            if isinstance(value, str) and value:
                return value
    return ""


def _get_json(monitor_url: str, path: str, timeout: float) -> dict[str, Any]:
    """GET a monitoring endpoint; any failure becomes a ``_Problem`` naming the endpoint."""
    url = _monitor_url(monitor_url, path)
    endpoint = path.split("?", 1)[0]
    try:
        with _OPENER.open(url, timeout=timeout) as response:
            raw = response.read()
    except urllib.error.HTTPError as err:
        with err:
            detail = _error_body(err)
        suffix = f": {detail}" if detail else ""
        raise _Problem(f"bus monitor {endpoint} answered HTTP {err.code}{suffix}") from None
    except (OSError, ValueError) as err:
        # URLError, timeouts, refused/reset connections and malformed URLs all land here.
        raise _Problem(
            f"bus monitor at {monitor_url} is not reachable ({endpoint}: {_describe(err)})"
        ) from None
    try:
        doc = json.loads(raw)
    except ValueError:
        raise _Problem(f"bus monitor {endpoint} did not answer JSON") from None
    if not isinstance(doc, dict):
        raise _Problem(f"bus monitor {endpoint} answered unexpected JSON")
    return doc


def _jetstream_enabled(section: object) -> bool:
    """Whether a ``/jsz`` document (or the ``jetstream`` part of ``/varz``) shows JetStream on.

    ``/healthz`` reports ok with JetStream off, so it cannot be trusted for this. With JetStream
    off, ``/jsz`` says ``"disabled": true`` and its config has zero limits and no store_dir, and
    ``/varz`` has an empty ``jetstream`` object; any of these means off.
    """
    if not isinstance(section, dict) or section.get("disabled") is True:
        return False
    config = section.get("config")
    if not isinstance(config, dict):
        return False
    if config.get("store_dir"):
        return True
    limits = (config.get("max_memory"), config.get("max_storage"))
    return any(isinstance(limit, int) and limit > 0 for limit in limits)


def _int_field(doc: dict[str, Any], key: str) -> int | None:
    value = doc.get(key)
    # bool is an int subclass, and never a meaningful size or count here.
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# --------------------------------------------------------------------------------------------
# NATS client


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
    return f"cannot connect to the bus at {_redact(nats_url)}: {_describe(cause)}"


def _redact(url: str) -> str:
    """Drop user:password from a URL before it is shown."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=host))


async def _connect(client: Client, nats_url: str, options: dict[str, Any], timeout: float) -> None:
    """Connect within ``timeout`` overall; nats-py's own timeout bounds each phase only."""
    async with asyncio.timeout(timeout):
        await client.connect(nats_url, **options)


async def _close_quietly(client: Client) -> None:
    # Closing a half-open client must never replace the error that made us close it.
    with contextlib.suppress(Exception):
        await client.close()


async def _round_trip(nats_url: str, connect_timeout: float, request_timeout: float) -> float:
    """Request/reply with ourselves on a private subject; returns milliseconds."""
    errors: list[BaseException] = []
    client = Client()
    try:
        try:
            await _connect(
                client,
                nats_url,
                _client_options(PROBE_CONNECTION_NAME, connect_timeout, errors),
                connect_timeout,
            )
        except (OSError, nats_errors.Error, TimeoutError) as exc:
            raise _Problem(_connect_failure(nats_url, exc, errors)) from None

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
            raise _Problem("the bus did not route a request back to its own subscriber") from None
        except TimeoutError:
            raise _Problem(f"no reply to the round trip within {request_timeout:.2g}s") from None
        except (OSError, nats_errors.Error) as exc:
            raise _Problem(f"bus round trip failed: {_describe(exc)}") from None
        if reply.data != token:
            raise _Problem("bus round trip returned a different payload than was sent")
        return elapsed_ms
    finally:
        await _close_quietly(client)


# --------------------------------------------------------------------------------------------
# Public API


def _step_timeout(timeout: float, until: float | None) -> float:
    if until is None:
        return timeout
    return max(_MIN_STEP_TIMEOUT, min(timeout, until - time.monotonic()))


def _check_bus(
    endpoints: BusEndpoints,
    expected_max_payload: int | None,
    timeout: float,
    until: float | None,
) -> BusReport:
    """check_bus, with every step also cut short by the ``until`` deadline of wait_for_bus."""
    version: str | None = None
    jetstream = False
    max_payload: int | None = None
    connections: int | None = None

    def unhealthy(problem: str) -> BusReport:
        return BusReport(
            healthy=False,
            problem=problem,
            server_version=version,
            jetstream=jetstream,
            max_payload=max_payload,
            connections=connections,
            round_trip_ms=None,
        )

    try:
        health = _get_json(
            endpoints.monitor_url, "/healthz?js-enabled-only=true", _step_timeout(timeout, until)
        )
        if health.get("status") != "ok":
            detail = health.get("error") or health.get("status") or "no status"
            return unhealthy(f"bus /healthz is not ok: {detail}")

        jsz = _get_json(endpoints.monitor_url, "/jsz", _step_timeout(timeout, until))
        if not _jetstream_enabled(jsz):
            return unhealthy(
                "JetStream is not enabled on the bus (/jsz reports it disabled); "
                "start nats-server with --jetstream or a jetstream {} block"
            )
        jetstream = True

        varz = _get_json(endpoints.monitor_url, "/varz", _step_timeout(timeout, until))
        raw_version = varz.get("version")
        version = raw_version if isinstance(raw_version, str) else None
        max_payload = _int_field(varz, "max_payload")
        connections = _int_field(varz, "connections")
        if version is None or max_payload is None:
            return unhealthy("bus /varz lacks version or max_payload")
        if expected_max_payload is not None and max_payload != expected_max_payload:
            wanted = expected_max_payload
            return unhealthy(f"bus max_payload is {max_payload}, config says {wanted}")

        round_trip_ms = asyncio.run(
            _round_trip(
                endpoints.nats_url,
                _step_timeout(timeout, until),
                _step_timeout(timeout, until),
            )
        )
    except _Problem as problem:
        return unhealthy(str(problem))

    return BusReport(
        healthy=True,
        problem=None,
        server_version=version,
        jetstream=jetstream,
        max_payload=max_payload,
        connections=connections,
        round_trip_ms=round_trip_ms,
    )


def check_bus(
    endpoints: BusEndpoints, *, expected_max_payload: int | None, timeout: float = 1.0
) -> BusReport:
    """Tell whether the bus is ready for Nachos containers, and if not, what is missing.

    Monitoring alone is not enough (``/healthz`` is ok with JetStream off, and says nothing of
    the client port), so a real client does a round trip last; the first failing step wins, as
    later steps could only repeat its cause. Each step is bounded by ``timeout`` seconds.
    """
    return _check_bus(endpoints, expected_max_payload, timeout, None)


def wait_for_bus(
    endpoints: BusEndpoints,
    *,
    expected_max_payload: int | None,
    deadline: float,
    interval: float = 0.05,
    abort: Callable[[], str | None] | None = None,
    on_attempt: Callable[[BusReport], None] | None = None,
) -> BusReport:
    """Poll ``check_bus`` until the bus is healthy or ``deadline`` (a ``time.monotonic()`` value).

    ``abort`` runs before every attempt so a bus container that has already exited ends the
    wait at once with the caller's reason, instead of at the deadline with a vaguer one. At
    least one attempt is made, and steps near the deadline are shortened so the call returns
    close to it. Returns the last unhealthy report at the deadline.
    """
    last: BusReport | None = None
    while True:
        if abort is not None:
            reason = abort()
            if reason is not None:
                return BusReport(
                    healthy=False,
                    problem=reason,
                    server_version=last.server_version if last else None,
                    jetstream=last.jetstream if last else False,
                    max_payload=last.max_payload if last else None,
                    connections=last.connections if last else None,
                    round_trip_ms=None,
                )
        if last is not None and time.monotonic() >= deadline:
            return last
        report = _check_bus(endpoints, expected_max_payload, 1.0, deadline)
        if on_attempt is not None:
            on_attempt(report)
        if report.healthy:
            return report
        last = report
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return last
        time.sleep(min(interval, remaining))


def connection_names(monitor_url: str, *, timeout: float = 1.0) -> dict[str, int]:
    """Count the bus's client connections per connection name ("" for unnamed ones).

    Containers name their connection after themselves, so this is how the CLI sees which
    components are really on the bus, as opposed to merely running. Raises ``BusUnavailable``.
    """
    counts: dict[str, int] = {}
    offset = 0
    try:
        while True:
            page = _get_json(monitor_url, f"/connz?limit={_CONNZ_PAGE}&offset={offset}", timeout)
            conns = page.get("connections")
            if not isinstance(conns, list):
                raise _Problem("bus monitor /connz answered without a connections list")
            for conn in conns:
                name = conn.get("name") if isinstance(conn, dict) else None
                key = name if isinstance(name, str) else ""
                counts[key] = counts.get(key, 0) + 1
            offset += len(conns)
            total = _int_field(page, "total")
            if not conns or total is None or offset >= total:
                return counts
    except _Problem as problem:
        raise BusUnavailable(str(problem)) from None


def request(nats_url: str, subject: str, payload: bytes = b"", *, timeout: float = 2.0) -> bytes:
    """Send one request and return the reply's payload, all within ``timeout`` seconds.

    Raises ``BusUnavailable`` when the bus cannot be reached, nobody listens on ``subject``, or
    no reply comes in time, because to a CLI user these all mean "that component is not there".
    """

    async def run() -> bytes:
        errors: list[BaseException] = []
        client = Client()
        started = time.monotonic()
        try:
            try:
                await _connect(
                    client,
                    nats_url,
                    _client_options(REQUEST_CONNECTION_NAME, timeout, errors),
                    timeout,
                )
            except (OSError, nats_errors.Error, TimeoutError) as exc:
                raise BusUnavailable(_connect_failure(nats_url, exc, errors)) from None
            left = max(_MIN_STEP_TIMEOUT, timeout - (time.monotonic() - started))
            try:
                reply = await client.request(subject, payload, timeout=left)
            except nats_errors.NoRespondersError:
                raise BusUnavailable(f"nothing on the bus answers on {subject}") from None
            except TimeoutError:
                raise BusUnavailable(f"no reply on {subject} within {timeout:.2g}s") from None
            except (OSError, nats_errors.Error) as exc:
                raise BusUnavailable(f"request on {subject} failed: {_describe(exc)}") from None
            return bytes(reply.data)
        finally:
            await _close_quietly(client)

    return asyncio.run(run())


def bus_overview(monitor_url: str, *, timeout: float = 1.0) -> dict[str, object]:
    """A few ``/varz`` facts for a status line; raises ``BusUnavailable`` when unreachable.

    ``mem`` is the server's resident memory in bytes; ``uptime`` is the server's own
    duration string (e.g. ``"1h2m3s"``).
    """
    try:
        varz = _get_json(monitor_url, "/varz", timeout)
    except _Problem as problem:
        raise BusUnavailable(str(problem)) from None
    version = varz.get("version")
    uptime = varz.get("uptime")
    return {
        "version": version if isinstance(version, str) else None,
        "jetstream": _jetstream_enabled(varz.get("jetstream")),
        "connections": _int_field(varz, "connections"),
        "max_payload": _int_field(varz, "max_payload"),
        "mem": _int_field(varz, "mem"),
        "uptime": uptime if isinstance(uptime, str) else None,
    }

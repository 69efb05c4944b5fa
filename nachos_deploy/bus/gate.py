"""Proving a bus ready for Nachos components, from the host, before any component starts.

Monitoring alone is not enough (``/healthz`` is ok with JetStream off and says nothing of the client
port), so the monitoring checks come first and a real NATS round trip last.
"""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Callable, Sequence

from nachos_deploy.bus.monitor import BusEndpoints, MonitorProblem, get_json, int_field, jetstream_enabled
from nachos_deploy.core.results import BusReport

_MIN_STEP_TIMEOUT = 0.05
"""Floor for a step's timeout near a deadline, so the last attempt can still say what is wrong."""


def _step_timeout(timeout: float, until: float | None) -> float:
    if until is None:
        return timeout
    return max(_MIN_STEP_TIMEOUT, min(timeout, until - time.monotonic()))


def warm_up(modules: Sequence[str] = ()) -> threading.Thread:
    """Import the NATS client and the HTTP client, and ``modules``, in the background: about 40 ms
    of imports that the gate needs only once the bus answers (and the caller's, e.g. the CLI's
    tables, once `up` is done), made while ``docker compose up`` runs, not before it or after it."""

    def load() -> None:
        for module in ("nachos_deploy.bus.natsclient", "urllib.request", *modules):  # see monitor._opener
            importlib.import_module(module)

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    return thread


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

    def unhealthy(problem: str, *, lasting: bool = False) -> BusReport:
        return BusReport(
            healthy=False,
            problem=problem,
            server_version=version,
            jetstream=jetstream,
            max_payload=max_payload,
            connections=connections,
            round_trip_ms=None,
            lasting=lasting,
        )

    try:
        health = get_json(
            endpoints.monitor_url, "/healthz?js-enabled-only=true", _step_timeout(timeout, until)
        )
        if health.get("status") != "ok":
            detail = health.get("error") or health.get("status") or "no status"
            return unhealthy(f"bus /healthz is not ok: {detail}")

        jsz = get_json(endpoints.monitor_url, "/jsz", _step_timeout(timeout, until))
        if not jetstream_enabled(jsz):
            return unhealthy(
                "JetStream is not enabled on the bus (/jsz reports it disabled); "
                "start nats-server with --jetstream or a jetstream {} block",
                lasting=True,
            )
        jetstream = True

        varz = get_json(endpoints.monitor_url, "/varz", _step_timeout(timeout, until))
        raw_version = varz.get("version")
        version = raw_version if isinstance(raw_version, str) else None
        max_payload = int_field(varz, "max_payload")
        connections = int_field(varz, "connections")
        if version is None or max_payload is None:
            return unhealthy("bus /varz lacks version or max_payload")
        if expected_max_payload is not None and max_payload != expected_max_payload:
            wanted = expected_max_payload
            return unhealthy(f"bus max_payload is {max_payload}, config says {wanted}", lasting=True)

        from nachos_deploy.bus import natsclient

        round_trip_ms = natsclient.round_trip(
            endpoints.nats_url,
            _step_timeout(timeout, until),
            _step_timeout(timeout, until),
        )
    except MonitorProblem as problem:
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
    settle: float = 1.0,
    abort_interval: float = 0.25,
    aborted_just_now: bool = False,
) -> BusReport:
    """Poll ``check_bus`` until the bus is healthy or ``deadline`` (a ``time.monotonic()`` value).

    ``abort`` runs before every attempt so a bus container that has already exited ends the
    wait at once with the caller's reason, instead of at the deadline with a vaguer one; it asks the
    engine (two docker calls, about 50 ms), so it runs every ``abort_interval`` while the bus is
    polled every ``interval`` from the start of one attempt to the next. At
    least one attempt is made (``aborted_just_now``: the caller has just asked ``abort`` itself, so the
    first attempt does not ask again), and steps near the deadline are shortened so the call returns
    close to it. Returns the last unhealthy report at the deadline, or earlier when a bus that
    answers has been set up wrong for ``settle`` seconds: that cannot clear by waiting.
    """
    last: BusReport | None = None
    lasting_since: float | None = None
    next_abort = time.monotonic() + abort_interval if aborted_just_now else 0.0
    while True:
        began = time.monotonic()
        if abort is not None and began >= next_abort:
            next_abort = began + abort_interval
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
        if report.lasting:
            lasting_since = lasting_since or time.monotonic()
            if time.monotonic() - lasting_since >= settle:
                return report
        else:
            lasting_since = None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return last
        time.sleep(max(0.0, min(began + interval - time.monotonic(), remaining)))

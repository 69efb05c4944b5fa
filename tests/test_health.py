"""nachos_deploy.health against a real nats-server (and against ports where nothing answers)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import nats
import pytest
from nats.aio.msg import Msg

from nachos_deploy.bus import monitor
from nachos_deploy.bus.gate import check_bus, wait_for_bus
from nachos_deploy.bus.monitor import BusEndpoints, BusUnavailable, bus_overview, connection_names
from nachos_deploy.bus.natsclient import request
from nachos_deploy.core.results import BusReport
from tests.natsserver import (
    NatsServer,
    ServerFactory,
    nats_server,
    nats_server_factory,
    no_connections_left,
)
from tests.ports import free_port as closed_port

__all__ = ["nats_server", "nats_server_factory"]  # fixtures, used by name

natsserver = pytest.mark.natsserver

DEFAULT_MAX_PAYLOAD = 1024 * 1024


def dead_endpoints() -> BusEndpoints:
    return BusEndpoints(f"nats://127.0.0.1:{closed_port()}", f"http://127.0.0.1:{closed_port()}")


@contextlib.contextmanager
def black_hole() -> Iterator[int]:
    """A port that accepts TCP connections (into the backlog) but never says anything."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield int(sock.getsockname()[1])


@contextlib.contextmanager
def fake_monitor(routes: dict[str, tuple[int, bytes]], delay: float = 0.0) -> Iterator[str]:
    """An HTTP server standing in for the monitor, answering ``routes[path] = (status, body)``,
    each answer ``delay`` seconds late."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            time.sleep(delay)
            status, body = routes.get(self.path.split("?", 1)[0], (404, b"not found"))
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def get_json(url: str) -> tuple[int, Any]:
    with urllib.request.urlopen(url, timeout=2) as response:
        return response.status, json.loads(response.read())


# --- check_bus -------------------------------------------------------------------------------


@natsserver
def test_check_bus_healthy_on_jetstream_server(nats_server: NatsServer) -> None:
    report = check_bus(nats_server.endpoints, expected_max_payload=DEFAULT_MAX_PAYLOAD)

    assert report.problem is None
    assert report.healthy
    assert report.server_version is not None
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", report.server_version)
    assert report.jetstream is True
    assert report.max_payload == DEFAULT_MAX_PAYLOAD
    assert isinstance(report.connections, int)
    assert report.round_trip_ms is not None
    assert 0 < report.round_trip_ms < 1000


@natsserver
def test_check_bus_without_expected_payload_accepts_any(nats_server: NatsServer) -> None:
    assert check_bus(nats_server.endpoints, expected_max_payload=None).healthy


@natsserver
def test_check_bus_leaves_no_connection_behind(nats_server: NatsServer) -> None:
    for _ in range(3):
        assert check_bus(nats_server.endpoints, expected_max_payload=None).healthy
    assert no_connections_left(nats_server.monitor_url)


@natsserver
def test_jetstream_off_is_unhealthy_although_healthz_is_ok(
    nats_server_factory: ServerFactory,
) -> None:
    server = nats_server_factory(jetstream=False)
    # The premise: the monitor's own health check does not notice.
    assert get_json(f"{server.monitor_url}/healthz?js-enabled-only=true") == (200, {"status": "ok"})

    report = check_bus(server.endpoints, expected_max_payload=None)

    assert not report.healthy
    assert report.problem is not None
    assert "JetStream" in report.problem
    assert report.jetstream is False
    assert report.round_trip_ms is None


@natsserver
def test_max_payload_mismatch_is_reported(nats_server_factory: ServerFactory) -> None:
    server = nats_server_factory(max_payload=2 * DEFAULT_MAX_PAYLOAD)

    wrong = check_bus(server.endpoints, expected_max_payload=DEFAULT_MAX_PAYLOAD)
    right = check_bus(server.endpoints, expected_max_payload=2 * DEFAULT_MAX_PAYLOAD)

    assert not wrong.healthy
    assert wrong.problem == "bus max_payload is 2097152, config says 1048576"
    assert wrong.max_payload == 2 * DEFAULT_MAX_PAYLOAD
    assert wrong.server_version is not None
    assert right.healthy, right.problem


@natsserver
def test_client_port_down_is_reported_after_monitor_checks(nats_server: NatsServer) -> None:
    endpoints = BusEndpoints(f"nats://127.0.0.1:{closed_port()}", nats_server.monitor_url)

    report = check_bus(endpoints, expected_max_payload=None, timeout=0.5)

    assert not report.healthy
    assert report.problem is not None
    assert report.problem.startswith("cannot connect to the bus at nats://127.0.0.1:")
    assert "refused" in report.problem.lower()
    assert report.jetstream is True
    assert report.server_version is not None


def test_unreachable_monitor_is_a_problem_not_an_exception() -> None:
    started = time.monotonic()
    report = check_bus(dead_endpoints(), expected_max_payload=None, timeout=0.5)

    assert time.monotonic() - started < 0.5
    assert not report.healthy
    assert report.problem is not None
    assert "not reachable" in report.problem
    assert report.server_version is None


def test_silent_monitor_is_bounded_by_timeout() -> None:
    with black_hole() as port:
        endpoints = BusEndpoints(f"nats://127.0.0.1:{port}", f"http://127.0.0.1:{port}")
        started = time.monotonic()
        report = check_bus(endpoints, expected_max_payload=None, timeout=0.3)
        elapsed = time.monotonic() - started

    assert not report.healthy
    assert report.problem is not None
    assert "timed out" in report.problem
    assert 0.25 < elapsed < 1.0


def test_garbage_and_http_errors_become_problems() -> None:
    routes = {
        "/healthz": (503, b'{"status":"unavailable","error":"JetStream has not yet started"}'),
    }
    with fake_monitor(routes) as url:
        report = check_bus(BusEndpoints("nats://127.0.0.1:1", url), expected_max_payload=None)
    assert report.problem == "bus monitor /healthz answered HTTP 503: JetStream has not yet started"

    routes = {"/healthz": (200, b'{"status":"ok"}'), "/jsz": (200, b"<html>proxy</html>")}
    with fake_monitor(routes) as url:
        report = check_bus(BusEndpoints("nats://127.0.0.1:1", url), expected_max_payload=None)
        with pytest.raises(BusUnavailable, match="/varz answered HTTP 404"):
            bus_overview(url)
        with pytest.raises(BusUnavailable, match="/connz"):
            connection_names(url)
    assert report.problem == "bus monitor /jsz did not answer JSON"


def test_monitor_url_must_be_http() -> None:
    report = check_bus(BusEndpoints("nats://x:4222", "ftp://x:8222"), expected_max_payload=None)
    assert report.problem is not None
    assert "not an http(s) or nats URL" in report.problem


# --- wait_for_bus ----------------------------------------------------------------------------


def test_wait_for_bus_gives_up_at_the_deadline() -> None:
    attempts: list[BusReport] = []
    started = time.monotonic()

    report = wait_for_bus(
        dead_endpoints(),
        expected_max_payload=None,
        deadline=started + 0.5,
        on_attempt=attempts.append,
    )
    elapsed = time.monotonic() - started

    assert not report.healthy
    assert report.problem is not None
    assert "not reachable" in report.problem
    assert 0.5 <= elapsed < 0.8
    assert len(attempts) >= 3  # it polled, rather than sleeping until the deadline
    assert report == attempts[-1]


def test_wait_for_bus_deadline_cuts_a_silent_bus_short() -> None:
    with black_hole() as port:
        endpoints = BusEndpoints(f"nats://127.0.0.1:{port}", f"http://127.0.0.1:{port}")
        started = time.monotonic()
        report = wait_for_bus(endpoints, expected_max_payload=None, deadline=started + 0.3)
        elapsed = time.monotonic() - started

    assert not report.healthy
    assert elapsed < 0.6  # a step's own 1 s timeout was shortened to the deadline


def test_wait_for_bus_stops_at_once_when_abort_says_so() -> None:
    attempts: list[BusReport] = []
    started = time.monotonic()

    report = wait_for_bus(
        dead_endpoints(),
        expected_max_payload=None,
        deadline=started + 30,
        abort=lambda: "the bus container exited with code 1",
        on_attempt=attempts.append,
    )

    assert time.monotonic() - started < 0.2
    assert report.healthy is False
    assert report.problem == "the bus container exited with code 1"
    assert attempts == []


def test_wait_for_bus_polls_the_bus_more_often_than_it_asks_abort() -> None:
    """abort (the engine: about 50 ms) runs first and then every abort_interval; the bus itself is
    polled every interval in between, so a slow engine call does not slow the gate down."""
    answers = iter([None, None, "gone"])
    events: list[str] = []

    def abort() -> str | None:
        events.append("abort")
        return next(answers)

    report = wait_for_bus(
        dead_endpoints(),
        expected_max_payload=None,
        deadline=time.monotonic() + 30,
        interval=0.01,
        abort_interval=0.1,
        abort=abort,
        on_attempt=lambda _: events.append("attempt"),
    )

    assert report.problem == "gone"
    assert events[0] == "abort" and events.count("abort") == 3
    assert events.count("attempt") >= 6, events  # several polls between two engine looks


@natsserver
def test_wait_for_bus_returns_the_healthy_report(nats_server: NatsServer) -> None:
    attempts: list[BusReport] = []
    report = wait_for_bus(
        nats_server.endpoints,
        expected_max_payload=DEFAULT_MAX_PAYLOAD,
        deadline=time.monotonic() + 5,
        abort=lambda: None,
        on_attempt=attempts.append,
    )
    assert report.healthy, report.problem
    assert attempts == [report]


@natsserver
def test_wait_for_bus_keeps_an_unhealthy_bus_unhealthy(nats_server_factory: ServerFactory) -> None:
    server = nats_server_factory(max_payload=4096)
    report = wait_for_bus(
        server.endpoints,
        expected_max_payload=DEFAULT_MAX_PAYLOAD,
        deadline=time.monotonic() + 0.3,
    )
    assert report.problem == "bus max_payload is 4096, config says 1048576"


@natsserver
def test_wait_for_bus_gives_up_soon_on_a_bus_set_up_wrong(nats_server_factory: ServerFactory) -> None:
    # A running bus with another max_payload will not change by waiting: the gate stops after the
    # settle time instead of polling until the deadline, and says so.
    server = nats_server_factory(max_payload=4096)
    started = time.monotonic()
    report = wait_for_bus(
        server.endpoints,
        expected_max_payload=DEFAULT_MAX_PAYLOAD,
        deadline=time.monotonic() + 30,
        settle=0.3,
    )
    assert report.lasting and report.problem == "bus max_payload is 4096, config says 1048576"
    assert time.monotonic() - started < 20  # far from the 30 s deadline, whatever the machine's load


# --- connection_names ------------------------------------------------------------------------


async def _with_clients(nats_url: str, names: list[str | None], monitor_url: str) -> dict[str, int]:
    clients = []
    try:
        for name in names:
            options: dict[str, Any] = {"name": name} if name is not None else {}
            clients.append(await nats.connect(nats_url, allow_reconnect=False, **options))
        for client in clients:
            await client.flush()
        return await asyncio.to_thread(connection_names, monitor_url)
    finally:
        for client in clients:
            await client.close()


@natsserver
def test_connection_names_counts_named_clients(nats_server: NatsServer) -> None:
    names = ["alpha", "alpha", "beta", None]
    counts = asyncio.run(_with_clients(nats_server.nats_url, names, nats_server.monitor_url))
    assert counts == {"alpha": 2, "beta": 1, "": 1}
    assert no_connections_left(nats_server.monitor_url)


@natsserver
def test_connection_names_follows_pages(
    nats_server: NatsServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(monitor, "_CONNZ_PAGE", 2)
    counts = asyncio.run(
        _with_clients(nats_server.nats_url, ["a", "b", "c", "a", "d"], nats_server.monitor_url)
    )
    assert counts == {"a": 2, "b": 1, "c": 1, "d": 1}


def test_connection_names_unreachable() -> None:
    with pytest.raises(BusUnavailable, match="not reachable"):
        connection_names(f"http://127.0.0.1:{closed_port()}", timeout=0.5)


# --- request ---------------------------------------------------------------------------------


async def _with_responder(nats_url: str, subject: str, call: Any) -> Any:
    client = await nats.connect(nats_url, allow_reconnect=False)
    try:

        async def answer(msg: Msg) -> None:
            await msg.respond(b"re:" + msg.data)

        await client.subscribe(subject, cb=answer)
        await client.flush()
        return await asyncio.to_thread(call)
    finally:
        await client.close()


@natsserver
def test_request_round_trip(nats_server: NatsServer) -> None:
    reply = asyncio.run(
        _with_responder(
            nats_server.nats_url,
            "nachos.test.echo",
            lambda: request(nats_server.nats_url, "nachos.test.echo", b"hello"),
        )
    )
    assert reply == b"re:hello"


@natsserver
def test_request_without_responder_is_bus_unavailable(nats_server: NatsServer) -> None:
    started = time.monotonic()
    with pytest.raises(BusUnavailable, match=r"nothing on the bus answers on nachos\.nobody"):
        request(nats_server.nats_url, "nachos.nobody", timeout=2)
    assert time.monotonic() - started < 1  # no responders is known at once, not by timeout


@natsserver
def test_request_unanswered_times_out(nats_server: NatsServer) -> None:
    async def scenario() -> None:
        client = await nats.connect(nats_server.nats_url, allow_reconnect=False)
        try:
            await client.subscribe("nachos.silent")  # interest, but never a reply
            await client.flush()
            started = time.monotonic()
            with pytest.raises(BusUnavailable, match=r"no reply on nachos\.silent"):
                await asyncio.to_thread(request, nats_server.nats_url, "nachos.silent", timeout=0.3)
            assert 0.25 < time.monotonic() - started < 1.0
        finally:
            await client.close()

    asyncio.run(scenario())


def test_request_without_server_is_bus_unavailable() -> None:
    url = f"nats://127.0.0.1:{closed_port()}"
    started = time.monotonic()
    with pytest.raises(BusUnavailable, match=r"cannot connect to the bus at nats://127\.0\.0\.1"):
        request(url, "nachos.anything", timeout=2)
    assert time.monotonic() - started < 1  # a refused port fails fast, it does not retry


def test_request_hides_credentials_in_errors() -> None:
    url = f"nats://user:s3cret@127.0.0.1:{closed_port()}"
    with pytest.raises(BusUnavailable) as caught:
        request(url, "nachos.anything", timeout=1)
    assert "s3cret" not in str(caught.value)


# --- bus_overview ----------------------------------------------------------------------------


@natsserver
def test_bus_overview_fields(nats_server_factory: ServerFactory) -> None:
    with_js = bus_overview(nats_server_factory().monitor_url)
    without_js = bus_overview(nats_server_factory(jetstream=False).monitor_url)

    assert set(with_js) == {
        "version",
        "jetstream",
        "connections",
        "leafnodes",
        "max_payload",
        "mem",
        "uptime",
    }
    assert isinstance(with_js["version"], str)
    assert with_js["jetstream"] is True
    assert with_js["connections"] == 0
    assert with_js["max_payload"] == DEFAULT_MAX_PAYLOAD
    assert isinstance(with_js["mem"], int)
    assert with_js["mem"] > 0
    assert isinstance(with_js["uptime"], str)
    assert without_js["jetstream"] is False


def test_bus_overview_unreachable() -> None:
    with pytest.raises(BusUnavailable, match="not reachable"):
        bus_overview(f"http://127.0.0.1:{closed_port()}", timeout=0.5)


def test_the_stream_state_waits_out_a_node_slow_to_list_its_streams() -> None:
    """`status` asks for the streams once /varz has answered: a node slow to list them (a cluster
    electing a leader after a node loss, on a busy machine) is waited for, not reported as a bus
    that does not answer."""
    page = {
        "account_details": [{"stream_detail": [{"name": "AUDIT", "state": {"messages": 7, "bytes": 70}}]}]
    }
    with fake_monitor({"/jsz": (200, json.dumps(page).encode())}, delay=1.5) as url:
        assert monitor.stream_state(url, "AUDIT") == (7, 70)
        assert monitor.stream_state(url, "OTHER") is None


def test_cluster_problems_name_the_node_the_route_and_the_leader() -> None:
    from nachos_deploy.bus.monitor import NodeView, cluster_problems

    def view(name: str, peers: set[str], leader: str | None = "bus", size: int = 3) -> NodeView:
        return NodeView(name, True, None, leader, size, frozenset(peers))

    names = ["bus", "bus-2", "bus-3"]
    good = {n: view(n, set(names) - {n}) for n in names}
    assert cluster_problems(good, names) == []
    down = {**good, "bus-2": NodeView("", False, "timed out", None, None, frozenset())}
    assert cluster_problems(down, names)[0] == "node bus-2 does not answer (timed out)"
    # The survivors have lost their routes to the dead node: only the dead node is named.
    gone = {**down, "bus": view("bus", {"bus-3"}), "bus-3": view("bus-3", {"bus"})}
    assert cluster_problems(gone, names) == ["node bus-2 does not answer (timed out)"]
    cut = {**good, "bus-3": view("bus-3", {"bus"})}
    assert cluster_problems(cut, names) == ["node bus-3 has no route to bus-2"]
    split = {**good, "bus-3": view("bus-3", {"bus", "bus-2"}, leader="bus-3")}
    assert "do not agree on a JetStream meta leader" in cluster_problems(split, names)[0]
    small = {n: view(n, set(names) - {n}, size=2) for n in names}
    assert cluster_problems(small, names) == ["the JetStream meta group is not 3 nodes yet"]

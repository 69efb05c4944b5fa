"""The bus's HTTP monitoring port, read from the host: health, JetStream, limits and connections.

Only the standard library is used, so ``status`` (which needs nothing else) loads no NATS client. Every
failure, HTTP or JSON, becomes one human line (``MonitorProblem`` or ``BusUnavailable``), because the
callers show it to an operator who gains nothing from a traceback.
"""

from __future__ import annotations

import functools
import json
import urllib.error
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nachos_deploy.bus import sysrequest
from nachos_deploy.core.results import redact

if TYPE_CHECKING:
    import urllib.request

_CONNZ_PAGE = 10_000


class BusUnavailable(Exception):
    """The bus could not be reached or did not answer; the message is one line for a human."""


class MonitorProblem(Exception):
    """A monitoring step failed; the message is the line shown to the operator."""


@dataclass(frozen=True)
class BusEndpoints:
    """Where the host reaches the bus: its client port and its HTTP monitoring port."""

    nats_url: str
    monitor_url: str


@functools.cache
def _opener() -> urllib.request.OpenerDirector:
    """The monitor is reached directly: an http_proxy meant for the internet must not swallow or
    reroute requests to 127.0.0.1 or to a host on the compose network. (urllib.request, with the ssl
    and email modules it imports, is loaded here, on the first request: about 7 ms that `up` spends
    while Compose starts the bus, see ``gate.warm_up``, rather than before.)"""
    import urllib.request

    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


def describe(exc: BaseException) -> str:
    """One line for an exception whose ``str`` may be empty (nats-py timeouts are)."""
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        return describe(exc.reason) if isinstance(exc.reason, BaseException) else str(exc.reason)
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
        raise MonitorProblem(f"bus monitor URL {redact(monitor_url)!r} is not an http(s) or nats URL")
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


def get_json(monitor_url: str, path: str, timeout: float) -> dict[str, Any]:
    """GET a monitoring endpoint; any failure becomes a ``MonitorProblem`` naming the endpoint.

    ``monitor_url`` is where the host reads monitoring: the system user's ``nats://`` URL (the
    request goes over NATS, see :mod:`~nachos_deploy.bus.sysrequest`; ``tls://`` on a bus with TLS),
    or an ``http://`` monitoring port (a bus without logins, or a test's own server). Both answer the
    same documents."""
    endpoint = path.split("?", 1)[0]
    if urllib.parse.urlsplit(monitor_url).scheme in ("nats", "tls"):
        try:
            return sysrequest.request(monitor_url, path, timeout)
        except sysrequest.SysRequestError as exc:
            raise MonitorProblem(f"bus monitor at {redact(monitor_url)} ({endpoint}): {exc}") from None
    url = _monitor_url(monitor_url, path)
    try:
        with _opener().open(url, timeout=timeout) as response:
            raw = response.read()
    except urllib.error.HTTPError as err:
        with err:
            detail = _error_body(err)
        suffix = f": {detail}" if detail else ""
        raise MonitorProblem(f"bus monitor {endpoint} answered HTTP {err.code}{suffix}") from None
    except (OSError, ValueError) as err:
        # URLError, timeouts, refused/reset connections and malformed URLs all land here.
        raise MonitorProblem(
            f"bus monitor at {monitor_url} is not reachable ({endpoint}: {describe(err)})"
        ) from None
    try:
        doc = json.loads(raw)
    except ValueError:
        raise MonitorProblem(f"bus monitor {endpoint} did not answer JSON") from None
    if not isinstance(doc, dict):
        raise MonitorProblem(f"bus monitor {endpoint} answered unexpected JSON")
    return doc


def jetstream_enabled(section: object) -> bool:
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


def int_field(doc: dict[str, Any], key: str) -> int | None:
    value = doc.get(key)
    # bool is an int subclass, and never a meaningful size or count here.
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def connection_names(monitor_url: str, *, timeout: float = 1.0) -> dict[str, int]:
    """Count the bus's client connections per connection name ("" for unnamed ones).

    Containers name their connection after themselves, so this is how the CLI sees which
    components are really on the bus, as opposed to merely running. Raises ``BusUnavailable``.
    """
    counts: dict[str, int] = {}
    offset = 0
    try:
        while True:
            page = get_json(monitor_url, f"/connz?limit={_CONNZ_PAGE}&offset={offset}", timeout)
            conns = page.get("connections")
            if not isinstance(conns, list):
                raise MonitorProblem("bus monitor /connz answered without a connections list")
            for conn in conns:
                name = conn.get("name") if isinstance(conn, dict) else None
                key = name if isinstance(name, str) else ""
                counts[key] = counts.get(key, 0) + 1
            offset += len(conns)
            total = int_field(page, "total")
            if not conns or total is None or offset >= total:
                counts.pop(sysrequest.MONITOR_CONNECTION_NAME, None)  # our own reader, over NATS
                return counts
    except MonitorProblem as problem:
        raise BusUnavailable(str(problem)) from None


def bus_overview(monitor_url: str, *, timeout: float = 1.0) -> dict[str, object]:
    """A few ``/varz`` facts for a status line; raises ``BusUnavailable`` when unreachable.

    ``mem`` is the server's resident memory in bytes; ``uptime`` is the server's own
    duration string (e.g. ``"1h2m3s"``).
    """
    try:
        varz = get_json(monitor_url, "/varz", timeout)
    except MonitorProblem as problem:
        raise BusUnavailable(str(problem)) from None
    version = varz.get("version")
    uptime = varz.get("uptime")
    connections = int_field(varz, "connections")
    if connections and urllib.parse.urlsplit(monitor_url).scheme == "nats":
        connections -= 1  # the reader's own connection, which asked
    return {
        "version": version if isinstance(version, str) else None,
        "jetstream": jetstream_enabled(varz.get("jetstream")),
        "connections": connections,
        "leafnodes": int_field(varz, "leafnodes"),
        "max_payload": int_field(varz, "max_payload"),
        "mem": int_field(varz, "mem"),
        "uptime": uptime if isinstance(uptime, str) else None,
    }


STREAM_READ_TIMEOUT = 3.0
"""Seconds ``status`` gives ``/jsz?streams=true``: it asks only once ``/varz`` has answered, so a
bus that is down was already named; a live node can take over a second to list its streams while
the cluster elects a new leader after a node loss on a busy machine (seen: 'the bus does not
answer' from a bus that did)."""


def stream_state(
    monitor_url: str, name: str, *, timeout: float = STREAM_READ_TIMEOUT
) -> tuple[int, int] | None:
    """(messages, bytes) of a JetStream stream from ``/jsz``, or None when there is no such
    stream. Raises ``BusUnavailable``."""
    try:
        page = get_json(monitor_url, "/jsz?streams=true", timeout)
    except MonitorProblem as problem:
        raise BusUnavailable(str(problem)) from None
    accounts = page.get("account_details")
    for account in accounts if isinstance(accounts, list) else []:
        streams = account.get("stream_detail") if isinstance(account, dict) else None
        for stream in streams if isinstance(streams, list) else []:
            if isinstance(stream, dict) and stream.get("name") == name:
                state = stream.get("state")
                if not isinstance(state, dict):
                    state = {}
                return int_field(state, "messages") or 0, int_field(state, "bytes") or 0
    return None


def leaf_names(monitor_url: str, *, timeout: float = 1.0) -> set[str]:
    """Server names of the leaf nodes connected to the hub (``/leafz``): the bus sidecars that are
    logged in with their credentials. Raises ``BusUnavailable``."""
    try:
        page = get_json(monitor_url, "/leafz", timeout)
    except MonitorProblem as problem:
        raise BusUnavailable(str(problem)) from None
    leafs = page.get("leafs")
    if not isinstance(leafs, list):
        return set()
    return {leaf["name"] for leaf in leafs if isinstance(leaf, dict) and isinstance(leaf.get("name"), str)}


def leaf_ids(monitor_url: str, *, timeout: float = 1.0) -> dict[str, int]:
    """Server name → the id of its leaf connection at this server (``/leafz``): a new id is a new
    login, made with the credentials the server accepted at that moment. Raises ``BusUnavailable``."""
    try:
        page = get_json(monitor_url, "/leafz", timeout)
    except MonitorProblem as problem:
        raise BusUnavailable(str(problem)) from None
    leafs = page.get("leafs")
    return {
        leaf["name"]: leaf["id"]
        for leaf in (leafs if isinstance(leafs, list) else [])
        if isinstance(leaf, dict) and isinstance(leaf.get("name"), str) and isinstance(leaf.get("id"), int)
    }


def parse_connz_names(doc: object) -> dict[str, int]:
    """Connection name → count in one ``/connz`` document ("" for unnamed connections)."""
    counts: dict[str, int] = {}
    conns = doc.get("connections") if isinstance(doc, dict) else None
    for conn in conns if isinstance(conns, list) else []:
        name = conn.get("name") if isinstance(conn, dict) else None
        key = name if isinstance(name, str) else ""
        counts[key] = counts.get(key, 0) + 1
    return counts


@dataclass(frozen=True)
class NodeView:
    """One clustered bus node as its own monitoring port shows it."""

    name: str  # server_name
    healthy: bool  # /healthz answered ok
    problem: str | None  # why not, in one line
    leader: str | None  # the JetStream meta leader this node follows
    cluster_size: int | None  # the meta group's size as this node knows it
    routed_to: frozenset[str]  # server names of the peers it has routes to


def node_view(monitor_url: str, *, timeout: float = 1.0) -> NodeView:
    """/healthz, /jsz (meta leader, cluster size) and /routez (peers) of one node. A node that does
    not answer is a view with its problem, never an exception: the caller judges all nodes at once."""
    try:
        varz = get_json(monitor_url, "/varz", timeout)
    except MonitorProblem as exc:
        return NodeView("", False, str(exc), None, None, frozenset())
    name = str(varz.get("server_name") or "")
    problem: str | None = None
    try:
        get_json(monitor_url, "/healthz", timeout)
    except MonitorProblem as exc:
        problem = str(exc)
    try:
        meta = get_json(monitor_url, "/jsz", timeout).get("meta_cluster")
        routes = get_json(monitor_url, "/routez", timeout).get("routes")
    except MonitorProblem as exc:
        return NodeView(name, False, problem or str(exc), None, None, frozenset())
    meta = meta if isinstance(meta, dict) else {}
    leader = meta.get("leader")
    size = meta.get("cluster_size")
    peers = frozenset(
        str(route.get("remote_name"))
        for route in (routes if isinstance(routes, list) else [])
        if isinstance(route, dict) and route.get("remote_name")
    )
    return NodeView(
        name,
        problem is None,
        problem,
        leader if isinstance(leader, str) and leader else None,
        size if isinstance(size, int) and not isinstance(size, bool) else None,
        peers,
    )


def cluster_problems(views: dict[str, NodeView], expected: list[str]) -> list[str]:
    """What keeps these nodes (``expected``: their server names) from being one healthy cluster:
    a node down or unhealthy, routes missing, no agreed JetStream meta leader. Empty when ok."""
    problems = []
    # A survivor has no route to a dead node: that is the dead node's problem, named once, so the
    # message names only the node that is gone.
    silent = {name for name in expected if (view := views.get(name)) is None or not view.name}
    for name in expected:
        view = views.get(name)
        if view is None or not view.name:
            problems.append(
                f"node {name} does not answer{f' ({view.problem})' if view and view.problem else ''}"
            )
            continue
        if not view.healthy:
            problems.append(f"node {name} is not healthy ({view.problem})")
        missing = sorted(set(expected) - {name} - silent - view.routed_to)
        if missing:
            problems.append(f"node {name} has no route to {', '.join(missing)}")
    leaders = {view.leader for view in views.values() if view.name}
    if not problems:
        if None in leaders or len(leaders) != 1:
            shown = ", ".join(sorted(str(leader) for leader in leaders))
            problems.append(f"the nodes do not agree on a JetStream meta leader ({shown})")
        elif any(view.cluster_size != len(expected) for view in views.values()):
            problems.append(f"the JetStream meta group is not {len(expected)} nodes yet")
    return problems


def check_cluster(nodes: Sequence[tuple[str, str]]) -> list[str]:
    """``cluster_problems`` of the nodes given as (server name, monitoring URL), each read now."""
    views = {name: node_view(url) for name, url in nodes}
    return cluster_problems(views, [name for name, _ in nodes])

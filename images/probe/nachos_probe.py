"""A stand-in Nachos component, shipped in the image ``nachos-deploy/probe`` as module ``nachos_probe``.

The platform's real images cannot be built everywhere, so this program reproduces, one environment
variable at a time, every behaviour of theirs a deployment must cope with (see the README's "The
probe"): it joins the bus under the component's connection name, answers its role's subjects from
the platform's subject map, writes its database where the gateway does, serves the gateway's
GET /health, and can die at start, crash once, stay off the bus after a long outage or exit 0 then,
as the real ones do. It imports only the standard library and nats-py, never nachos_deploy.

Environment:
  NACHOS_COMPONENT         component name (required); used in subjects, so no dots or spaces
  NATS_URL / NATS_SERVERS  bus URL, else the first of the comma list; default nats://bus:4222
  NACHOS_CONNECTION_NAME   connection name shown in /connz (default: the component name)
  NACHOS_ROLE              gateway | llm-proxy | channel | tool | extra (default: extra); the
                           gateway's own request subjects (nachos.gateway.subagents.*, .sandbox.*)
                           take JSON only: any other payload, an empty one too, is logged as a
                           SyntaxError and never answered, as the real gateway does
  GATEWAY_CHANNELS         gateway role: channels whose inbound subjects it subscribes to
  TOOL_ID                  tool role: the id in nachos.tool.<id>.request (default: the component)
  RUNTIME_REDIS_URL        gateway role: keep a session record per inbound sender and a shared rate
                           counter in the state store (redis://user:password@state:6379); /health
                           says 503 until it answers, and the probe retries it every 0.5 s
  GATEWAY_DB_PATH          open (create) this file for writing at start, as the gateway opens its
                           SQLite database; exit 1 with SQLITE_CANTOPEN when that fails
  PROBE_SUBJECTS           comma list replacing the role's subjects
  PROBE_HTTP_PORT          serve GET /health on 0.0.0.0:PORT (default: GATEWAY_HEALTH_PORT for the
                           gateway role, else 0: no HTTP)
  PROBE_HEALTHY_AFTER      seconds after connecting before /health says 200 (default 0)
  PROBE_FAIL_AT_START      exit at once with this code, to play a component that dies at start
  PROBE_EXIT_ONCE          exit with this code 0.5 s after the first connection of this container
                           (a marker in /tmp survives restarts), then run normally after a restart
  PROBE_FAIL_AFTER_UPGRADE a broken new version (docs/upgrades.md): exit with this code 0.5 s after
                           each connection to the bus, every run (it passes a first glance, then
                           crash-loops); bake it into an image derived FROM the probe
                           (`ENV PROBE_FAIL_AFTER_UPGRADE=3`) to make a version an upgrade must reject
  PROBE_ON_BUS_LOSS        when the reconnects run out: exit (code 1, default), exit0 (llm-proxy),
                           stay (running, off the bus, silent: the channels), forever (never give
                           up reconnecting: the tools)
  PROBE_CONNECT_WINDOW     seconds to keep trying the first connection (default 5)
  PROBE_RECONNECT_ATTEMPTS reconnect attempts after a lost connection, >= 1 (default 10)
  PROBE_RECONNECT_WAIT     seconds between reconnect attempts (default 2)
  PROBE_AUDIT_AT_START     publish this many core NATS messages on nachos.audit.log once connected,
                           as the gateway and llm-proxy do (default 0)
  RUNTIME_STATE_DIR        the platform's runtime.state_dir: at start the gateway role writes
                           identity/<component>.json (once) and appends to memory/starts.jsonl, and
                           exits 1 when it cannot (the folder is on a read-only root); the channel
                           role records each new sender of an inbound webhook message in
                           pairing/<component>.json, as a user pairing with the channel
  PROBE_PAIR_AT_START      channel role: comma list of senders recorded in pairing/ at start, as if
                           a message from each had come in
  PROBE_IMAGE_CHECK        what the image's own HEALTHCHECK does: broken (default: asks
                           :8080/health, which nothing serves, like the filesystem tool's image) or
                           trivial (passes, like `node -e process.exit(0)` in the gateway's)
  WHATSAPP_HTTP_PORT       channel role, component whatsapp: serve its webhook on this port (default
                           3002) at channels.whatsapp.webhook_path (default /whatsapp/webhook; overlay
                           CHANNEL_WHATSAPP_WEBHOOK_PATH), with WHATSAPP_VERIFY_TOKEN for Meta's GET
                           handshake and WHATSAPP_APP_SECRET, when set, for X-Hub-Signature-256
  SLACK_HTTP_PORT          channel role, component slack, channels.slack.mode = "http" (overlay
                           CHANNEL_SLACK_MODE): serve Bolt's /slack/events on this port (default 3000),
                           signed with SLACK_SIGNING_SECRET (required: exit 2 without it)
  CHANNEL_WEBCHAT_PORT     channel role, component webchat: serve its page on this port (default
                           8080; the overlay of channels.webchat.port, which nachos.toml may set):
                           GET and HEAD of /webchat and every path below it answer 200 text/html,
                           other methods 405, other paths 404

Exit codes: 0 on SIGTERM/SIGINT, 1 when the bus is unreachable at start or the connection is
finally closed (so the container restarts rather than idling), 2 for a configuration error.
``--check`` asks the running probe's /health and exits 0 only on HTTP 200; ``--image-check`` is
the image's own healthcheck; ``--config-value KEY`` prints what the platform's component reads at
KEY (dotted, e.g. channels.whatsapp.token): nachos.toml at NACHOS_CONFIG_PATH, the platform's
environment overlay on it (CHANNEL_WHATSAPP_TOKEN, ...), then the channel's own secret variable
(WHATSAPP_TOKEN, ...), and exits 1 when it is unset.

The gateway role takes a message on a channel's inbound subject as an event, never as a request:
it publishes its answer on the channel's outbound subject and ignores the reply subject, as the
platform's gateway does (see gateway_outbound).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import html
import json
import os
import signal
import sqlite3
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from nats import errors as nats_errors
from nats.aio.client import Client
from nats.aio.msg import Msg

ROLES = ("gateway", "llm-proxy", "channel", "tool", "extra")
DEFAULT_NATS_URL = "nats://bus:4222"
PING_SUBJECT_PREFIX = "nachos.health.ping"
AUDIT_SUBJECT = "nachos.audit.log"  # what the gateway and llm-proxy publish their audit records on

EXIT_OK = 0
EXIT_BUS = 1
EXIT_CONFIG = 2

_CONNECT_TIMEOUT = 2.0
_SHUTDOWN_STEP = 0.4
"""Bound for each of drain and close at shutdown, so SIGTERM ends the process well within 1 s."""

_CHECK_TIMEOUT = 2.0


class ConfigError(Exception):
    """The environment does not describe a usable probe; the message is one line."""


@dataclass(frozen=True)
class Settings:
    component: str
    role: str
    nats_url: str
    connection_name: str
    subjects: tuple[str, ...]
    http_port: int
    connect_window: float
    reconnect_attempts: int
    reconnect_wait: float
    on_bus_loss: str = "exit"
    exit_once: int | None = None
    fail_after_upgrade: int | None = None  # PROBE_FAIL_AFTER_UPGRADE: a new version that crash-loops
    healthy_after: float = 0.0
    db_path: str = ""
    audit_at_start: int = 0
    webhook: Webhook | None = None  # the inbound HTTP of whatsapp, of slack in http mode, of webchat
    state_dir: str = ""  # RUNTIME_STATE_DIR: the gateway's identity/ and memory/, a channel's pairing/
    pair_at_start: tuple[str, ...] = ()  # PROBE_PAIR_AT_START: senders paired as the channel starts
    redis_url: str = ""  # RUNTIME_REDIS_URL (gateway role): its sessions and limits in the state store

    @property
    def ping_subject(self) -> str:
        return f"{PING_SUBJECT_PREFIX}.{self.component}"


GATEWAY_REQUESTS = tuple(
    [f"nachos.gateway.subagents.{verb}" for verb in ("list", "spawn", "info", "stop", "log")]
    + [f"nachos.gateway.sandbox.{verb}" for verb in ("explain", "list", "recreate")]
)
BUS_LOSS_MODES = ("exit", "exit0", "stay", "forever")
EXIT_ONCE_MARKER = "/tmp/nachos-probe-exited-once"


def role_subjects(role: str, component: str, env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """What a real component of ``role`` subscribes to or answers, from the platform's subject map."""
    env = env or {}
    if role == "gateway":
        channels = [c.strip() for c in env.get("GATEWAY_CHANNELS", "").split(",") if c.strip()]
        return (*GATEWAY_REQUESTS, *(f"nachos.channel.{c}.inbound" for c in channels))
    if role == "llm-proxy":
        return ("nachos.llm.request",)
    if role == "channel":
        return (f"nachos.channel.{component}.outbound",)
    if role == "tool":
        return (f"nachos.tool.{env.get('TOOL_ID', '').strip() or component}.request",)
    return ()


def _redact(url: str) -> str:
    """Drop user:password from a URL before it is printed into a container log."""
    try:
        parts = urllib.parse.urlsplit(url)
        if parts.username is None and parts.password is None:
            return url
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
    except ValueError:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=host))


def _number(env: Mapping[str, str], key: str, default: float, *, minimum: float) -> float:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{key}={raw!r} is not a number") from None
    if not value >= minimum:  # also rejects nan
        raise ConfigError(f"{key}={raw!r} must be at least {minimum:g}")
    return value


def _integer(env: Mapping[str, str], key: str, default: int, *, low: int, high: int) -> int:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{key}={raw!r} is not an integer") from None
    if not low <= value <= high:
        raise ConfigError(f"{key}={raw!r} must be between {low} and {high}")
    return value


def load_settings(env: Mapping[str, str]) -> Settings:
    """Read the probe's environment, refusing values that would only fail later and vaguely."""
    component = env.get("NACHOS_COMPONENT", "").strip()
    if not component:
        raise ConfigError("NACHOS_COMPONENT is not set; it names this component on the bus")
    if any(ch.isspace() or ch in ".*>" for ch in component):
        rule = "no dots, spaces, '*' or '>'"
        raise ConfigError(f"NACHOS_COMPONENT={component!r} cannot be one subject token ({rule})")

    role = env.get("NACHOS_ROLE", "").strip() or "extra"
    if role not in ROLES:
        raise ConfigError(f"NACHOS_ROLE={role!r} is not one of {', '.join(ROLES)}")

    nats_url = env.get("NATS_URL", "").strip()
    if not nats_url:
        servers = [s.strip() for s in env.get("NATS_SERVERS", "").split(",") if s.strip()]
        nats_url = servers[0] if servers else DEFAULT_NATS_URL

    connection_name = env.get("NACHOS_CONNECTION_NAME", "").strip() or component

    if env.get("PROBE_SUBJECTS", "").strip():
        raw_subjects = env["PROBE_SUBJECTS"].split(",")
        subjects = tuple(s.strip() for s in raw_subjects if s.strip())
        bad = [s for s in subjects if any(ch.isspace() for ch in s) or ".." in s]
        if bad:
            raise ConfigError(f"PROBE_SUBJECTS has invalid subjects: {', '.join(bad)}")
    else:
        subjects = role_subjects(role, component, env)

    on_bus_loss = env.get("PROBE_ON_BUS_LOSS", "").strip() or "exit"
    if on_bus_loss not in BUS_LOSS_MODES:
        raise ConfigError(f"PROBE_ON_BUS_LOSS={on_bus_loss!r} is not one of {', '.join(BUS_LOSS_MODES)}")
    exit_once: int | None = None
    if env.get("PROBE_EXIT_ONCE", "").strip():
        exit_once = _integer(env, "PROBE_EXIT_ONCE", 1, low=0, high=255)
    fail_after_upgrade: int | None = None
    if env.get("PROBE_FAIL_AFTER_UPGRADE", "").strip():
        fail_after_upgrade = _integer(env, "PROBE_FAIL_AFTER_UPGRADE", 1, low=1, high=255)
    default_port = env.get("GATEWAY_HEALTH_PORT", "0") if role == "gateway" else "0"

    return Settings(
        component=component,
        role=role,
        nats_url=nats_url,
        connection_name=connection_name,
        subjects=subjects,
        http_port=_integer({"PROBE_HTTP_PORT": default_port, **env}, "PROBE_HTTP_PORT", 0, low=0, high=65535),
        connect_window=_number(env, "PROBE_CONNECT_WINDOW", 5.0, minimum=0.1),
        reconnect_attempts=_integer(env, "PROBE_RECONNECT_ATTEMPTS", 10, low=1, high=10_000),
        reconnect_wait=_number(env, "PROBE_RECONNECT_WAIT", 2.0, minimum=0.0),
        on_bus_loss=on_bus_loss,
        exit_once=exit_once,
        fail_after_upgrade=fail_after_upgrade,
        healthy_after=_number(env, "PROBE_HEALTHY_AFTER", 0.0, minimum=0.0),
        db_path=env.get("GATEWAY_DB_PATH", "").strip(),
        audit_at_start=_integer(env, "PROBE_AUDIT_AT_START", 0, low=0, high=1_000_000),
        webhook=webhook_settings(env, component, role),
        state_dir=env.get("RUNTIME_STATE_DIR", "").strip(),
        pair_at_start=tuple(s.strip() for s in env.get("PROBE_PAIR_AT_START", "").split(",") if s.strip()),
        redis_url=env.get("RUNTIME_REDIS_URL", "").strip() if role == "gateway" else "",
    )


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _describe(exc: BaseException) -> str:
    """One line for an exception whose ``str`` may be empty (nats-py timeouts are)."""
    if isinstance(exc, ConnectionRefusedError):
        # asyncio words it "Connect call failed", which hides the one fact that matters.
        return "connection refused"
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


# --------------------------------------------------------------------------------------------
# HTTP /health


def start_health_server(
    port: int,
    component: str,
    connected: threading.Event,
    healthy_after: float = 0.0,
    more_checks: Callable[[], dict[str, str]] | None = None,
) -> ThreadingHTTPServer:
    """Serve /health from a thread so a busy or blocked event loop cannot stall the healthcheck.

    The answer reflects ``connected``, which the NATS callbacks keep up to date, and says 503 for
    ``healthy_after`` seconds after the first connection (a component that is slow to be ready).
    """
    first_connected: list[float] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if urllib.parse.urlsplit(self.path).path != "/health":
                self._answer(404, {"ok": False, "error": "not found"})
                return
            ok = connected.is_set()
            if ok and not first_connected:
                first_connected.append(time.monotonic())
            if ok and time.monotonic() - first_connected[0] < healthy_after:
                ok = False
            checks = {"database": "ok", "bus": "ok" if connected.is_set() else "disconnected"}
            if more_checks is not None:  # the state store, when the gateway keeps its sessions there
                checks.update(more_checks())
                ok = ok and all(value == "ok" for value in checks.values())
            doc = {"status": "healthy" if ok else "unhealthy", "ok": ok, "component": component}
            self._answer(200 if ok else 503, {**doc, "checks": checks})

        def _answer(self, status: int, doc: dict[str, object]) -> None:
            body = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            # A healthcheck every few seconds would otherwise bury the component's own log.
            return

    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    server.daemon_threads = True
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.1},
        name="probe-health",
        daemon=True,
    )
    thread.start()
    return server


def check(env: Mapping[str, str]) -> int:
    """The container healthcheck: 0 only when the running probe says HTTP 200 on /health."""
    try:
        port = _integer(env, "PROBE_HTTP_PORT", 0, low=0, high=65535)
    except ConfigError as exc:
        _say(f"probe --check: {exc}")
        return EXIT_BUS
    if port == 0:
        _say("probe --check: PROBE_HTTP_PORT is not set, so there is no /health to ask")
        return EXIT_BUS
    # Straight to loopback: a proxy from the environment must not answer for us.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    url = f"http://127.0.0.1:{port}/health"
    try:
        with opener.open(url, timeout=_CHECK_TIMEOUT) as response:
            status = int(response.status)
    except urllib.error.HTTPError as err:
        with err:
            _say(f"probe --check: {url} answered HTTP {err.code}")
        return EXIT_BUS
    except (OSError, ValueError) as exc:
        _say(f"probe --check: {url} is not reachable: {_describe(exc)}")
        return EXIT_BUS
    return EXIT_OK if status == 200 else EXIT_BUS


def image_check(env: Mapping[str, str]) -> int:
    """The HEALTHCHECK baked into the probe image, standing in for the platform images' own checks:
    by default it asks :8080/health, which nothing serves (the filesystem tool's image does this and
    turns unhealthy); ``PROBE_IMAGE_CHECK=trivial`` passes like the gateway's `node -e
    process.exit(0)`. nachos-deploy must replace or disable it for platform components."""
    if env.get("PROBE_IMAGE_CHECK", "").strip() == "trivial":
        return EXIT_OK
    return check({"PROBE_HTTP_PORT": "8080"})


def _write_json(path: Path, doc: object) -> None:
    """All or nothing: a reader (or a restart) never finds half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    partial.replace(path)


def keep_state(settings: Settings) -> str | None:
    """What the real gateway and channels write under runtime.state_dir at start, and the error if
    it fails (the folder on the read-only root, or not the component's user's): the gateway its
    identity (kept across restarts: written once) and a line of memory per start, a channel the
    senders of PROBE_PAIR_AT_START."""
    root = Path(settings.state_dir)
    try:
        if settings.role == "gateway":
            identity = root / "identity" / f"{settings.component}.json"
            if not identity.exists():
                _write_json(identity, {"component": settings.component, "created": time.time()})
            (root / "memory").mkdir(parents=True, exist_ok=True)
            with (root / "memory" / "starts.jsonl").open("a", encoding="utf-8") as handle:
                handle.write(json.dumps({"start": time.time()}) + "\n")
        elif settings.role == "channel":
            (root / "pairing").mkdir(parents=True, exist_ok=True)
            for sender in settings.pair_at_start:
                record_pairing(settings.state_dir, settings.component, sender)
    except OSError as exc:
        return f"cannot write its state under {settings.state_dir} ({exc.strerror}: {exc.filename})"
    return None


def record_pairing(state_dir: str, channel: str, sender: str) -> bool:
    """Add ``sender`` to ``pairing/<channel>.json`` (the channel's pairing list, as the platform keeps
    it) unless it is there; True when it was new. Raises OSError when the folder cannot be written."""
    path = Path(state_dir) / "pairing" / f"{channel}.json"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        doc = {}
    except ValueError:
        doc = {}  # a damaged list: start again rather than refuse every message
    paired = doc.get("paired") if isinstance(doc, dict) else None
    entries = [entry for entry in paired if isinstance(entry, dict)] if isinstance(paired, list) else []
    if any(entry.get("id") == sender for entry in entries):
        return False
    entries.append({"id": sender, "since": time.time()})
    _write_json(path, {"channel": channel, "paired": entries})
    return True


def pairing_publish(settings: Settings, publish: Publish) -> Publish:
    """``publish`` for the channel's webhook, which also records each message's sender in the
    pairing list first (when RUNTIME_STATE_DIR is set), as the channel's DM policy does with a new
    user. A failed write is said and the message still goes out."""
    if not settings.state_dir:
        return publish

    async def paired(subject: str, data: bytes) -> None:
        try:
            message = json.loads(data)
            sender = message.get("sender", {}).get("id") if isinstance(message, dict) else None
            if isinstance(sender, str) and sender:
                record_pairing(settings.state_dir, settings.component, sender)
        except (ValueError, AttributeError):
            pass
        except OSError as exc:
            _say(f"probe {settings.component}: cannot record a pairing under {settings.state_dir}: {exc}")
        await publish(subject, data)

    return paired


_DATABASE: list[sqlite3.Connection] = []  # the gateway's database once open (at most one)

DATABASE_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS starts (id INTEGER PRIMARY KEY, at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS requests (id INTEGER PRIMARY KEY, at REAL NOT NULL, subject TEXT NOT NULL,"
    " bytes INTEGER NOT NULL)",
)


def open_database(path: str) -> str | None:
    """Open (create) the gateway's SQLite database as the gateway does; the error, if any.

    WAL journal, as the platform's gateway (better-sqlite3) uses it: readers (a backup) never block
    the writer. Each start adds a row to ``starts``, so a test can tell the data survived a restart
    or a `down`; each answered request a row to ``requests`` (:func:`record_request`).

    Probes before this one kept a text log at that path, not a database: found on a volume they
    wrote, it is moved aside (``<path>.text``), as the platform's gateway never meets one."""
    try:
        with Path(path).open("rb") as existing:
            head = existing.read(16)
        if head and head != b"SQLite format 3\x00":
            Path(path).replace(f"{path}.text")
            _say(f"probe gateway: {path} was an older probe's text log, moved to {path}.text")
    except OSError:
        pass  # no file yet (it is created below), or one the open below reports
    try:
        connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        for statement in DATABASE_SCHEMA:
            connection.execute(statement)
        connection.execute("INSERT INTO starts (at) VALUES (?)", (time.time(),))
    except sqlite3.Error as exc:
        return f"SQLITE_CANTOPEN: unable to open database file {path} ({exc})"
    _DATABASE[:] = [connection]
    return None


def record_request(subject: str, size: int) -> None:
    """One row per request the gateway answers; a write that fails is said, never fatal."""
    for connection in _DATABASE:
        try:
            connection.execute(
                "INSERT INTO requests (at, subject, bytes) VALUES (?, ?, ?)", (time.time(), subject, size)
            )
        except sqlite3.Error as exc:
            _say(f"probe gateway: cannot record a request in its database: {exc}")


# --------------------------------------------------------------------------------------------
# NATS


async def run(settings: Settings) -> int:
    """Connect, serve until SIGTERM/SIGINT (exit 0) or until the connection is lost for good."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    name = settings.component
    url = _redact(settings.nats_url)
    connected = threading.Event()
    closed = asyncio.Event()
    errors: list[BaseException] = []
    ready = False

    async def on_error(exc: Exception) -> None:
        # nats-py would log a traceback per error; a component log wants one line, and before
        # the first connection only the last refusal matters, for the final message.
        errors.append(exc)
        del errors[:-1]
        if ready:
            _say(f"probe {name}: bus error: {_describe(exc)}")

    async def on_disconnected() -> None:
        connected.clear()
        if ready and not stop.is_set():
            _say(f"probe {name}: disconnected from the bus, reconnecting")

    async def on_reconnected() -> None:
        connected.set()
        _say(f"probe {name}: reconnected to the bus")

    async def on_closed() -> None:
        connected.clear()
        closed.set()

    if settings.db_path:
        problem = open_database(settings.db_path)
        if problem:
            _say(f"probe {name}: {problem}")
            return EXIT_BUS
    if settings.state_dir:
        problem = keep_state(settings)
        if problem:
            _say(f"probe {name}: {problem}")
            return EXIT_BUS

    sessions = Sessions(settings.redis_url, name) if settings.redis_url else None
    if sessions is not None:
        sessions.start()
    server: ThreadingHTTPServer | None = None
    if settings.http_port:
        try:
            more = sessions.check if sessions is not None else None
            server = start_health_server(settings.http_port, name, connected, settings.healthy_after, more)
        except OSError as exc:
            _say(f"probe {name}: cannot serve /health on port {settings.http_port}: {exc}")
            return EXIT_BUS

    client = Client()
    webhook_server: asyncio.Server | None = None
    options: dict[str, Any] = {
        "name": settings.connection_name,
        "allow_reconnect": True,
        "connect_timeout": min(_CONNECT_TIMEOUT, settings.connect_window),
        "max_reconnect_attempts": -1 if settings.on_bus_loss == "forever" else settings.reconnect_attempts,
        "reconnect_time_wait": settings.reconnect_wait,
        "ping_interval": 10,
        "max_outstanding_pings": 3,
        "drain_timeout": 1,
        "error_cb": on_error,
        "disconnected_cb": on_disconnected,
        "reconnected_cb": on_reconnected,
        "closed_cb": on_closed,
    }
    try:
        connecting = _connect(client, settings, options)
        outcome = await _until_stopped(connecting, stop, settings.connect_window)
        if outcome is _STOPPED:
            return EXIT_OK
        if isinstance(outcome, BaseException):
            cause = errors[-1] if errors else outcome
            _say(f"probe {name}: cannot connect to the bus at {url}: {_describe(cause)}")
            return EXIT_BUS

        subjects = [settings.ping_subject, *settings.subjects]
        try:
            await client.subscribe(settings.ping_subject, cb=_ping_handler(settings))
            for subject in settings.subjects:
                await client.subscribe(subject, cb=_answer_handler(settings, subject, client, sessions))
            # The server has our subscriptions once it answers a PING; only then are we ready.
            await client.flush(timeout=2)
        except (nats_errors.Error, OSError, TimeoutError) as exc:
            _say(f"probe {name}: cannot subscribe on the bus at {url}: {_describe(exc)}")
            return EXIT_BUS
        if settings.webhook is not None:
            # Once on the bus, as the real channel starts its adapter, and before it says it is ready.
            hook = settings.webhook
            try:
                webhook_server = await serve_webhook(hook, pairing_publish(settings, client.publish))
            except OSError as exc:
                _say(f"probe {name}: cannot serve the {hook.label} on port {hook.port}: {exc}")
                return EXIT_BUS
        ready = True
        connected.set()
        answering = ", ".join(subjects)
        as_name = settings.connection_name
        print(f"probe {name} connected to {url} as {as_name}; answering {answering}", flush=True)
        if settings.webhook is not None:
            hook = settings.webhook
            print(f"probe {name} serving the {hook.label} on :{hook.port}{hook.path}", flush=True)
        for index in range(settings.audit_at_start):
            await client.publish(AUDIT_SUBJECT, json.dumps({"from": name, "index": index}).encode())
        if settings.audit_at_start:
            await client.flush(timeout=2)

        if settings.exit_once is not None and not Path(EXIT_ONCE_MARKER).exists():
            Path(EXIT_ONCE_MARKER).touch()
            await asyncio.sleep(0.5)
            _say(f"probe {name}: exiting once with code {settings.exit_once} (PROBE_EXIT_ONCE)")
            return settings.exit_once

        if settings.fail_after_upgrade is not None:
            await asyncio.sleep(0.5)
            code = settings.fail_after_upgrade
            _say(f"probe {name}: this version is broken, exiting with code {code} (PROBE_FAIL_AFTER_UPGRADE)")
            return code

        stop_wait = asyncio.ensure_future(stop.wait())
        closed_wait = asyncio.ensure_future(closed.wait())
        await asyncio.wait({stop_wait, closed_wait}, return_when=asyncio.FIRST_COMPLETED)
        stop_wait.cancel()
        closed_wait.cancel()
        if stop.is_set():
            return EXIT_OK
        if settings.on_bus_loss == "stay":
            # The platform's channels: running, off the bus, and silent about it, for ever.
            await stop.wait()
            return EXIT_OK
        last = f": {_describe(errors[-1])}" if errors else ""
        _say(f"probe {name}: connection to the bus at {url} is closed for good{last}")
        return EXIT_OK if settings.on_bus_loss == "exit0" else EXIT_BUS
    finally:
        stop.set()  # tells the callbacks that what follows is our own doing
        if webhook_server is not None:
            webhook_server.close()
        await _shutdown(client)
        if sessions is not None:
            await sessions.close()
        if server is not None:
            server.shutdown()
            server.server_close()


_STOPPED = object()


async def _connect(client: Client, settings: Settings, options: dict[str, Any]) -> None:
    await client.connect(settings.nats_url, **options)


async def _until_stopped(
    connecting: Coroutine[Any, Any, None], stop: asyncio.Event, window: float
) -> object | BaseException | None:
    """Run the first connection for at most ``window`` seconds, unless a signal comes first.

    Returns None once connected, ``_STOPPED`` on a signal, or the exception that ended it.
    """
    task: asyncio.Task[None] = asyncio.ensure_future(connecting)
    stop_wait = asyncio.ensure_future(stop.wait())
    try:
        first = asyncio.FIRST_COMPLETED
        done, _ = await asyncio.wait({task, stop_wait}, timeout=window, return_when=first)
    finally:
        stop_wait.cancel()
    if task in done:
        return task.exception()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    if stop.is_set():
        return _STOPPED
    return TimeoutError(f"no connection within {window:g}s")


async def _shutdown(client: Client) -> None:
    """Drain so in-flight replies still go out, but never let a dead bus delay the exit."""
    if client.is_connected:
        with contextlib.suppress(nats_errors.Error, TimeoutError):
            await asyncio.wait_for(client.drain(), _SHUTDOWN_STEP)
    if not client.is_closed:
        with contextlib.suppress(nats_errors.Error, OSError, TimeoutError):
            await asyncio.wait_for(client.close(), _SHUTDOWN_STEP)


def _ping_handler(settings: Settings) -> Callable[[Msg], Awaitable[None]]:
    body = json.dumps({"component": settings.component, "role": settings.role, "ok": True})

    async def handle(msg: Msg) -> None:
        if msg.reply:
            await msg.respond(body.encode())

    return handle


def json_problem(data: bytes) -> str | None:
    """What the real gateway's ``JSON.parse`` of a request says about ``data`` (None: it parses).
    An empty payload is Node's ``Unexpected end of JSON input``, word for word."""
    if not data.strip():
        return "SyntaxError: Unexpected end of JSON input"
    try:
        json.loads(data.decode("utf-8", errors="replace"))
    except ValueError as exc:
        return f"SyntaxError: {exc} (not valid JSON)"
    return None


def _inbound_channel(subject: str) -> str | None:
    """The channel whose inbound subject this is (``nachos.channel.<ch>.inbound``), else None."""
    parts = subject.split(".")
    if len(parts) == 4 and parts[:2] == ["nachos", "channel"] and parts[3] == "inbound":
        return parts[2]
    return None


def gateway_outbound(channel: str, data: bytes) -> bytes | None:
    """What the gateway publishes on ``nachos.channel.<channel>.outbound`` for one inbound message, as
    the platform's gateway does: it takes a channel's message as an event, never as a request, so it
    publishes its answer on the channel's outbound subject and never on the message's reply subject
    (which the channel chooses: it could name ``nachos.audit.log`` or ``nachos.llm.request``). The
    real gateway asks the model first; the probe answers at once with the text it got. A payload that
    is not a JSON object is dropped (the real gateway's JSON.parse fails), without a log line per
    message, so a flooding channel cannot fill the gateway's log either."""
    try:
        message = json.loads(data.decode("utf-8", errors="replace"))
    except ValueError:
        return None
    if not isinstance(message, dict):
        return None
    content = message.get("content")
    text = content.get("text", "") if isinstance(content, dict) else ""
    conversation = message.get("conversation")
    conversation_id = conversation.get("id") if isinstance(conversation, dict) else None
    reply = {
        "channel": channel,
        "conversationId": conversation_id,
        "content": {"text": f"echo: {text}"},
    }
    return json.dumps(reply).encode()


def _answer_handler(
    settings: Settings, subject: str, client: Client, sessions: Sessions | None = None
) -> Callable[[Msg], Awaitable[None]]:
    """Echo requests; answer the gateway's subagents.list as the real gateway does. The gateway's
    own request subjects take JSON only: on any other payload the real gateway logs a SyntaxError
    and never answers (the requester times out), and so does the probe. The gateway's channel
    inbound subjects are not requests at all (:func:`gateway_outbound`)."""

    inbound_channel = _inbound_channel(subject) if settings.role == "gateway" else None

    async def handle(msg: Msg) -> None:
        if inbound_channel is not None:
            # Never msg.respond here: the reply subject is the channel's to choose (issue 19, item 9).
            outbound = gateway_outbound(inbound_channel, msg.data)
            if outbound is not None and sessions is not None:  # its session, kept in the state store
                session = await sessions.remember(inbound_channel, msg.data)
                outbound = json.dumps({**json.loads(outbound), "session": session}).encode()
            if outbound is not None:
                await client.publish(f"nachos.channel.{inbound_channel}.outbound", outbound)
                record_request(msg.subject, len(msg.data))
            return
        if not msg.reply:
            return
        if subject in GATEWAY_REQUESTS:
            problem = json_problem(msg.data)
            if problem is not None:
                _say(f"probe {settings.component}: {msg.subject}: {problem}")
                return
        if subject == "nachos.gateway.subagents.list":
            await msg.respond(json.dumps({"ok": True, "runs": []}).encode())
            record_request(msg.subject, len(msg.data))
            return
        doc = {
            "component": settings.component,
            "subject": msg.subject,
            "echo": msg.data.decode("utf-8", errors="replace"),
        }
        await msg.respond(json.dumps(doc).encode())
        record_request(msg.subject, len(msg.data))

    return handle


# --------------------------------------------------------------------------------------------
# The state store: the gateway's sessions and limits in Redis (RUNTIME_REDIS_URL), as the platform's
# gateway keeps them through node-redis. The least of RESP2 over asyncio streams, standard library only.

RespValue = str | int | bytes | None | list["RespValue"]
STATE_PING_EVERY = 2.0  # seconds between the PINGs that keep the connection (and find it lost)
STATE_RETRY = 0.5  # seconds between tries while the state store does not answer
STATE_TIMEOUT = 2.0
RATE_WINDOW = 60  # seconds of the shared per-sender counter (the gateway's rate limiter's window)


class RedisError(Exception):
    """An error reply (``-WRONGPASS ...``, ``-NOPERM ...``): the server answered, and said no."""


def resp_command(*args: str) -> bytes:
    """One command as RESP2's array of bulk strings."""
    parts = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


async def resp_reply(reader: asyncio.StreamReader) -> RespValue:
    """One reply, read whole (a bulk string may hold CR LF); an error reply raises :class:`RedisError`."""
    line = await reader.readuntil(b"\r\n")
    kind, body = line[:1], line[1:-2].decode("utf-8", errors="replace")
    if kind == b"+":
        return body
    if kind == b"-":
        raise RedisError(body)
    if kind == b":":
        return int(body)
    if kind == b"$":
        size = int(body)
        return None if size < 0 else (await reader.readexactly(size + 2))[:-2]
    if kind == b"*":
        size = int(body)
        return None if size < 0 else [await resp_reply(reader) for _ in range(size)]
    raise RedisError(f"unexpected reply {line[:40]!r}")


class RedisClient:
    """One connection, logged in as the URL's user (``AUTH user password``), one command at a time;
    a broken connection is dropped, and the next command dials again."""

    def __init__(self, url: str, name: str) -> None:
        parts = urllib.parse.urlsplit(url)
        self.host = parts.hostname or "localhost"
        self.port = parts.port or 6379
        self.user = urllib.parse.unquote(parts.username or "")
        self.password = urllib.parse.unquote(parts.password or "")
        self.name = name
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._lock = asyncio.Lock()

    @property
    def where(self) -> str:
        return f"redis://{self.host}:{self.port} as {self.user or 'default'}"

    async def command(self, *args: str) -> RespValue:
        async with self._lock:
            try:
                if self._streams is None:
                    self._streams = await asyncio.wait_for(
                        asyncio.open_connection(self.host, self.port), STATE_TIMEOUT
                    )
                    if self.password:
                        await self._call("AUTH", *([self.user] if self.user else []), self.password)
                    await self._call("CLIENT", "SETNAME", self.name)
                return await self._call(*args)
            except (OSError, RedisError, TimeoutError, asyncio.IncompleteReadError, ValueError):
                self.close()
                raise

    async def _call(self, *args: str) -> RespValue:
        assert self._streams is not None
        reader, writer = self._streams
        writer.write(resp_command(*args))
        await writer.drain()
        return await asyncio.wait_for(resp_reply(reader), STATE_TIMEOUT)

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


class Sessions:
    """The gateway's sessions, one record per sender of each channel, and its shared rate counter,
    in the state store: what the platform's gateway keeps there, so that they survive its restarts
    and every replica counts the same limits. /health says 503 while the store does not answer (so
    a gateway started before Redis, as Swarm does, waits for it: it retries every half second)."""

    def __init__(self, url: str, component: str) -> None:
        self.client = RedisClient(url, component)
        self.component = component
        self.ok = False
        self._task: asyncio.Future[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._keep_connected())

    def check(self) -> dict[str, str]:
        return {"state": "ok" if self.ok else "unreachable"}

    async def _keep_connected(self) -> None:
        said = ""
        while True:
            try:
                await self.client.command("PING")
            except Exception as exc:  # whatever it was, the next try dials again: this loop never ends
                self.client.close()
                self.ok = False
                problem = _describe(exc)
                if problem != said:
                    where = self.client.where
                    _say(f"probe {self.component}: the state store at {where}: {problem}; retrying")
                    said = problem
                await asyncio.sleep(STATE_RETRY)
                continue
            if not self.ok:
                print(f"probe {self.component} keeps its sessions at {self.client.where}", flush=True)
                self.ok, said = True, ""
            await asyncio.sleep(STATE_PING_EVERY)

    async def remember(self, channel: str, data: bytes) -> dict[str, object]:
        """Count one inbound message in its sender's session record and in the shared rate counter;
        what the reply carries of them ({} when the store does not answer: the message still gets
        its answer, as the real gateway's in-memory fallback would)."""
        try:
            message = json.loads(data.decode("utf-8", errors="replace"))
        except ValueError:
            message = {}
        sender = _sender(message if isinstance(message, dict) else {})
        key = f"nachos:session:{channel}:{sender}"
        try:
            raw = await self.client.command("GET", key)
            record = json.loads(raw) if isinstance(raw, bytes) else {}
            record = record if isinstance(record, dict) else {}
            record["messages"] = int(record.get("messages", 0)) + 1
            record.setdefault("first_seen", time.time())
            record["last_seen"] = time.time()
            await self.client.command("SET", key, json.dumps(record))
            limit_key = f"nachos:ratelimit:{channel}:{sender}"
            counted = await self.client.command("INCR", limit_key)
            await self.client.command("EXPIRE", limit_key, str(RATE_WINDOW), "NX")
        except (OSError, RedisError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            _say(f"probe {self.component}: session of {sender} not kept: {_describe(exc)}")
            return {}
        return {"sender": sender, "messages": record["messages"], "window_count": counted}

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.client.close()


def _sender(message: Mapping[str, Any]) -> str:
    """Who sent an inbound message: its sender's id, else its conversation's, as one key token."""
    for key in ("sender", "conversation"):
        value = message.get(key)
        if isinstance(value, dict) and value.get("id"):
            token = "".join(ch for ch in str(value["id"]) if ch.isalnum() or ch in "-_.@+")[:128]
            return token or "anonymous"
    return "anonymous"


# --------------------------------------------------------------------------------------------
# The platform's configuration, as its loader reads it

# Its environment overlay on nachos.toml (upstream's packages/shared/config/src/env.ts): a variable
# set to a non-empty value replaces the file's value at that key. The channels' credentials come this
# way when nachos-deploy keeps them out of the file (issue 19, item 4).
ENV_OVERLAY = {
    "NACHOS_NAME": "nachos.name",
    "NACHOS_VERSION": "nachos.version",
    "LLM_PROVIDER": "llm.provider",
    "LLM_MODEL": "llm.model",
    "LLM_BASE_URL": "llm.base_url",
    "SECURITY_MODE": "security.mode",
    "RUNTIME_STATE_DIR": "runtime.state_dir",
    "RUNTIME_REDIS_URL": "runtime.redis_url",
    "CHANNEL_WEBCHAT_ENABLED": "channels.webchat.enabled",
    "CHANNEL_WEBCHAT_PORT": "channels.webchat.port",
    "CHANNEL_SLACK_ENABLED": "channels.slack.enabled",
    "CHANNEL_SLACK_MODE": "channels.slack.mode",
    "CHANNEL_SLACK_APP_TOKEN": "channels.slack.app_token",
    "CHANNEL_SLACK_BOT_TOKEN": "channels.slack.bot_token",
    "CHANNEL_SLACK_SIGNING_SECRET": "channels.slack.signing_secret",
    "CHANNEL_SLACK_WEBHOOK_PATH": "channels.slack.webhook_path",
    "CHANNEL_DISCORD_ENABLED": "channels.discord.enabled",
    "CHANNEL_DISCORD_TOKEN": "channels.discord.token",
    "CHANNEL_TELEGRAM_ENABLED": "channels.telegram.enabled",
    "CHANNEL_TELEGRAM_TOKEN": "channels.telegram.token",
    "CHANNEL_WHATSAPP_ENABLED": "channels.whatsapp.enabled",
    "CHANNEL_WHATSAPP_TOKEN": "channels.whatsapp.token",
    "CHANNEL_WHATSAPP_PHONE_NUMBER_ID": "channels.whatsapp.phone_number_id",
    "CHANNEL_WHATSAPP_VERIFY_TOKEN": "channels.whatsapp.verify_token",
    "CHANNEL_WHATSAPP_WEBHOOK_PATH": "channels.whatsapp.webhook_path",
    "CHANNEL_WHATSAPP_API_VERSION": "channels.whatsapp.api_version",
    "CHANNEL_WHATSAPP_APP_SECRET": "channels.whatsapp.app_secret",
}
# What a channel takes when its configuration has no value: upstream's adapters read
# ``channelConfig.token ?? secrets.WHATSAPP_TOKEN``, the secrets coming from these variables.
CHANNEL_SECRETS = {
    "channels.whatsapp.token": "WHATSAPP_TOKEN",
    "channels.whatsapp.phone_number_id": "WHATSAPP_PHONE_NUMBER_ID",
    "channels.whatsapp.verify_token": "WHATSAPP_VERIFY_TOKEN",
    "channels.whatsapp.app_secret": "WHATSAPP_APP_SECRET",
    "channels.slack.bot_token": "SLACK_BOT_TOKEN",
    "channels.slack.app_token": "SLACK_APP_TOKEN",
    "channels.slack.signing_secret": "SLACK_SIGNING_SECRET",
    "channels.discord.token": "DISCORD_BOT_TOKEN",
    "channels.telegram.token": "TELEGRAM_BOT_TOKEN",
}


def _overlay_value(value: str, key: str) -> object:
    """The value as upstream's ``parseEnvValue`` types it: booleans, and numbers for ports."""
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    if "port" in key:
        with contextlib.suppress(ValueError):
            return int(value)
    return value


def platform_config(env: Mapping[str, str]) -> dict[str, Any]:
    """nachos.toml at ``NACHOS_CONFIG_PATH`` (else ``NACHOS_CONFIG``) with the environment overlay on
    it; ConfigError when the file is named but cannot be read, as the platform's loader fails then."""
    import tomllib  # only this mode needs it

    path = env.get("NACHOS_CONFIG_PATH", "").strip() or env.get("NACHOS_CONFIG", "").strip()
    document: dict[str, Any] = {}
    if path:
        try:
            document = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read the platform configuration {path}: {_describe(exc)}") from None
    for variable, key in ENV_OVERLAY.items():
        value = env.get(variable, "")
        if not value:
            continue
        node = document
        *parents, last = key.split(".")
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[last] = _overlay_value(value, key)
    return document


def config_value(env: Mapping[str, str], key: str) -> object | None:
    """The value the platform's component reads at ``key`` (dotted): the file, the overlay on it,
    then the channel's own secret variable."""
    node: Any = platform_config(env)
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if node is None and key in CHANNEL_SECRETS:
        node = env.get(CHANNEL_SECRETS[key]) or None
    found: object | None = node
    return found


# --------------------------------------------------------------------------------------------
# Inbound webhooks: the whatsapp channel's, and slack's in http mode; and the webchat's page

WHATSAPP_DEFAULT_PORT = 3002
WHATSAPP_DEFAULT_PATH = "/whatsapp/webhook"
WHATSAPP_MAX_BODY = 1_000_000  # upstream's limit on a webhook POST; one byte more is 413
SLACK_DEFAULT_PORT = 3000  # Bolt's default; upstream's own compose sets 3005
SLACK_EVENTS_PATH = "/slack/events"
SLACK_MAX_AGE = 300  # seconds: Bolt refuses a request whose X-Slack-Request-Timestamp is older
SLACK_MAX_BODY = 10_000_000  # the probe's own bound (Bolt has none); the ingress refuses far less
WEBCHAT_DEFAULT_PORT = 8080  # upstream's generator: channels.webchat.port
WEBCHAT_PATH = "/webchat"  # the page and everything below it, as the ingress routes it
WEBCHAT_MAX_BODY = 1_000_000  # the probe's own bound, the ingress's limit for webchat
_HEADER_LIMIT = 65_536  # a request line and headers longer than this are refused with 431
KEEP_ALIVE_TIMEOUT = 5.0  # node:http's keepAliveTimeout: an idle kept-alive connection is closed after it
_READ_TIMEOUT = 30.0  # a request that trickles in for longer is dropped


@dataclass(frozen=True)
class Webhook:
    """The inbound HTTP a channel serves, read from its environment as the real channel reads it.
    The secrets are kept out of every repr, so a log line or a traceback never shows them."""

    kind: str  # "whatsapp" | "slack" | "webchat"
    channel: str  # the component: its inbound subject is nachos.channel.<channel>.inbound
    port: int
    path: str
    max_body: int
    verify_token: str = field(default="", repr=False)  # whatsapp: Meta's handshake
    secret: str = field(default="", repr=False)  # whatsapp's app secret, slack's signing secret

    @property
    def subject(self) -> str:
        return f"nachos.channel.{self.channel}.inbound"

    @property
    def label(self) -> str:
        """What it serves, for the log: a provider's webhook, or the page a browser opens."""
        return "webchat page" if self.kind == "webchat" else f"{self.kind} webhook"


@dataclass(frozen=True)
class Request:
    method: str
    target: str  # the path with its query, as the request line has it
    headers: Mapping[str, str]  # names lower-cased
    body: bytes = b""
    too_large: bool = False  # the body went over the webhook's limit (and was not read)


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    messages: tuple[bytes, ...] = ()  # to publish on the webhook's inbound subject, in order
    allow: str = ""  # a 405's Allow header: the methods the path takes


def _json_answer(status: int, doc: Mapping[str, object]) -> Answer:
    return Answer(status, json.dumps(doc, separators=(",", ":")).encode())


def _text(value: object | None) -> str:
    return value if isinstance(value, str) else "" if value is None else json.dumps(value)


def webhook_settings(env: Mapping[str, str], component: str, role: str) -> Webhook | None:
    """The webhook this component serves, if any: the whatsapp channel always (on
    WHATSAPP_HTTP_PORT, at its configured webhook_path), slack in ``http`` mode (on SLACK_HTTP_PORT,
    at Bolt's /slack/events). Values come from nachos.toml, its environment overlay, then the
    channel's own secret variables, as :func:`config_value` reads them. Slack in http mode without
    a signing secret is refused, as Bolt refuses to start without one. The webchat serves its page
    on channels.webchat.port (overlay CHANNEL_WEBCHAT_PORT), at /webchat and below."""
    if role != "channel" or component not in ("whatsapp", "slack", "webchat"):
        return None
    if component == "webchat":
        return Webhook(
            kind="webchat",
            channel=component,
            port=webchat_port(env),
            path=WEBCHAT_PATH,
            max_body=WEBCHAT_MAX_BODY,
        )
    if component == "whatsapp":
        path = _text(config_value(env, "channels.whatsapp.webhook_path")) or WHATSAPP_DEFAULT_PATH
        if not path.startswith("/"):
            raise ConfigError(f"channels.whatsapp.webhook_path={path!r} must start with '/'")
        return Webhook(
            kind="whatsapp",
            channel=component,
            port=_integer(env, "WHATSAPP_HTTP_PORT", WHATSAPP_DEFAULT_PORT, low=1, high=65535),
            path=path,
            max_body=WHATSAPP_MAX_BODY,
            verify_token=_text(config_value(env, "channels.whatsapp.verify_token")),
            secret=_text(config_value(env, "channels.whatsapp.app_secret")),
        )
    if _text(config_value(env, "channels.slack.mode")) != "http":
        return None  # socket mode: no inbound port at all
    secret = _text(config_value(env, "channels.slack.signing_secret"))
    if not secret:
        raise ConfigError(
            "slack runs in http mode but has no signing secret: set SLACK_SIGNING_SECRET "
            "(or CHANNEL_SLACK_SIGNING_SECRET); Bolt refuses to start without one"
        )
    return Webhook(
        kind="slack",
        channel=component,
        port=_integer(env, "SLACK_HTTP_PORT", SLACK_DEFAULT_PORT, low=1, high=65535),
        path=SLACK_EVENTS_PATH,
        max_body=SLACK_MAX_BODY,
        secret=secret,
    )


def webchat_port(env: Mapping[str, str]) -> int:
    """channels.webchat.port as the platform reads it (nachos.toml, CHANNEL_WEBCHAT_PORT over it)."""
    value = config_value(env, "channels.webchat.port")
    if value is None:
        return WEBCHAT_DEFAULT_PORT
    port = value if isinstance(value, int) and not isinstance(value, bool) else None
    if port is None or not 1 <= port <= 65535:
        raise ConfigError(
            f"channels.webchat.port={value!r} (CHANNEL_WEBCHAT_PORT or nachos.toml) must be a port "
            "number from 1 to 65535"
        )
    return port


def answer(hook: Webhook, request: Request, now: float | None = None) -> Answer:
    """What the real channel answers to one request, and the messages it publishes for it."""
    if hook.kind == "slack":
        return slack_answer(hook, request, time.time() if now is None else now)
    if hook.kind == "webchat":
        return webchat_answer(hook, request)
    return whatsapp_answer(hook, request)


def webchat_answer(hook: Webhook, request: Request) -> Answer:
    """A browser opening the chat: a small page at /webchat and every path below it (the UI's own
    routes and assets), for GET and HEAD. There is no upstream package to copy, so it answers as
    any web server serving a single-page UI would, and nothing reaches the bus."""
    path = urllib.parse.urlsplit(request.target).path
    if path != hook.path and not path.startswith(hook.path.rstrip("/") + "/"):
        return Answer(404, b"Not found\n", "text/plain")
    if request.method not in ("GET", "HEAD"):
        return Answer(405, b"Method not allowed\n", "text/plain", allow="GET, HEAD")
    name = html.escape(hook.channel)
    page = (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>Nachos {name}</title></head>'
        f"<body><h1>Nachos {name}</h1><p>The {name} channel (nachos-deploy probe).</p></body></html>\n"
    )
    return Answer(200, page.encode(), "text/html; charset=utf-8")


def whatsapp_answer(hook: Webhook, request: Request) -> Answer:
    """upstream's whatsapp adapter (node:http): one path, Meta's GET handshake, a POST whose raw body
    is signed with the app secret when there is one, anything else 405."""
    parts = urllib.parse.urlsplit(request.target)
    if parts.path != hook.path:
        return _json_answer(404, {"error": "Not found"})
    if request.method == "GET":
        query = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
        mode = query.get("hub.mode", [""])[0]
        token = query.get("hub.verify_token", [""])[0]
        challenge = query.get("hub.challenge", [""])[0]
        verified = bool(hook.verify_token) and hmac.compare_digest(token.encode(), hook.verify_token.encode())
        if mode == "subscribe" and verified:
            return Answer(200, challenge.encode(), "text/plain")
        return _json_answer(403, {"error": "Verification failed"})
    if request.method != "POST":
        return _json_answer(405, {"error": "Method not allowed"})
    if request.too_large or len(request.body) > hook.max_body:
        return _json_answer(413, {"error": "Payload too large"})
    if not request.body:
        return _json_answer(400, {"error": "Empty body"})
    if hook.secret:
        expected = "sha256=" + hmac.new(hook.secret.encode(), request.body, hashlib.sha256).hexdigest()
        given = request.headers.get("x-hub-signature-256", "")
        if not hmac.compare_digest(given.encode(), expected.encode()):
            return _json_answer(403, {"error": "Invalid signature"})
    try:
        event = json.loads(request.body)
    except ValueError:
        return _json_answer(400, {"error": "Invalid JSON"})
    return Answer(200, b'{"status":"ok"}', messages=whatsapp_messages(hook.channel, event))


def _items(value: object, key: str) -> list[dict[str, Any]]:
    """``value[key]`` when it is a list, keeping only its objects: a webhook's shape is the
    sender's to choose, and a malformed part is skipped, never a crash."""
    found = value.get(key) if isinstance(value, dict) else None
    return [item for item in found if isinstance(item, dict)] if isinstance(found, list) else []


def whatsapp_messages(channel: str, event: object) -> tuple[bytes, ...]:
    """Each text message of a Cloud API webhook (``entry[].changes[].value.messages[]``), as the
    platform's inbound message: the sender's number is the conversation (the channel's DM policy
    lets everyone through in the probe), the text its content."""
    out: list[bytes] = []
    for entry in _items(event, "entry"):
        for change in _items(entry, "changes"):
            value = change.get("value")
            for message in _items(value, "messages"):
                text = message.get("text")
                body = text.get("body") if isinstance(text, dict) else None
                if message.get("type") != "text" or not isinstance(body, str):
                    continue
                sender = _text(message.get("from"))
                doc = {
                    "channel": channel,
                    "channelMessageId": _text(message.get("id")),
                    "sender": {"id": sender},
                    "conversation": {"id": sender, "type": "dm"},
                    "content": {"text": body},
                }
                out.append(json.dumps(doc).encode())
    return tuple(out)


def slack_signature(secret: str, timestamp: str, body: bytes) -> str:
    """Slack's v0 request signature: HMAC-SHA256 of ``v0:<timestamp>:<raw body>``."""
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def slack_answer(hook: Webhook, request: Request, now: float) -> Answer:
    """Bolt's HTTP receiver in front of the slack channel: POST /slack/events only (anything else 404),
    every request signed (X-Slack-Signature v0) and at most five minutes old (else 401, empty), then
    Slack's url_verification challenge answered, message events published and acknowledged."""
    if urllib.parse.urlsplit(request.target).path != hook.path or request.method != "POST":
        return Answer(404, b"", "text/plain")
    if request.too_large or len(request.body) > hook.max_body:
        return Answer(413, b"", "text/plain")
    stamp = request.headers.get("x-slack-request-timestamp", "")
    given = request.headers.get("x-slack-signature", "")
    try:
        fresh = abs(now - int(stamp)) <= SLACK_MAX_AGE
    except ValueError:
        fresh = False
    expected = slack_signature(hook.secret, stamp, request.body)
    if not fresh or not hmac.compare_digest(given.encode(), expected.encode()):
        return Answer(401, b"", "text/plain")
    try:
        doc = _slack_body(request)
    except ValueError:
        return Answer(400, b"", "text/plain")
    if isinstance(doc, dict) and doc.get("type") == "url_verification":
        return _json_answer(200, {"challenge": _text(doc.get("challenge"))})
    return Answer(200, b"", "text/plain", messages=slack_messages(hook.channel, doc))


def _slack_body(request: Request) -> object:
    """JSON events, or a form whose ``payload`` holds JSON (interactions), as Bolt parses them."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    text = request.body.decode("utf-8", errors="replace")
    if content_type == "application/x-www-form-urlencoded":
        form = urllib.parse.parse_qs(text, keep_blank_values=True)
        if "payload" in form:
            return json.loads(form["payload"][0])
        return {key: values[0] for key, values in form.items()}
    return json.loads(text)


def slack_messages(channel: str, doc: object) -> tuple[bytes, ...]:
    """A user's message event (not a bot's, not an edit) as the platform's inbound message."""
    if not isinstance(doc, dict) or doc.get("type") != "event_callback":
        return ()
    event = doc.get("event")
    if not isinstance(event, dict) or event.get("type") != "message":
        return ()
    if event.get("subtype") or event.get("bot_id") or not isinstance(event.get("text"), str):
        return ()
    message = {
        "channel": channel,
        "channelMessageId": _text(event.get("client_msg_id") or event.get("ts")),
        "sender": {"id": _text(event.get("user"))},
        "conversation": {
            "id": _text(event.get("channel")),
            "type": "dm" if event.get("channel_type") == "im" else "channel",
        },
        "content": {"text": event["text"]},
    }
    return (json.dumps(message).encode(),)


class _BadRequest(Exception):
    """The bytes on the connection are not an HTTP/1.x request: answered with ``status``, then closed."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


async def _read_request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, max_body: int
) -> tuple[Request, bool, int] | None:
    """One request off a connection: (request, keep the connection open, body bytes left unread).
    None when the client closed it between requests. A body over ``max_body`` is not read (by its
    Content-Length, or counted as its chunks come): the request is marked ``too_large``."""
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), KEEP_ALIVE_TIMEOUT)
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise _BadRequest(400) from None
        return None
    except asyncio.LimitOverrunError:
        raise _BadRequest(431) from None
    lines = head.decode("latin-1").split("\r\n")
    try:
        method, target, version = lines[0].split(" ")
    except ValueError:
        raise _BadRequest(400) from None
    if not version.startswith("HTTP/1."):
        raise _BadRequest(505)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise _BadRequest(400)
        key = name.lower()
        if key in headers and key in ("content-length", "transfer-encoding", "host"):
            raise _BadRequest(400)
        headers[key] = value.strip()
    connection = headers.get("connection", "").lower()
    keep = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
    chunked = "chunked" in headers.get("transfer-encoding", "").lower()
    if chunked and "content-length" in headers:
        raise _BadRequest(400)
    length = 0
    if "content-length" in headers:
        if not headers["content-length"].isdigit():
            raise _BadRequest(400)
        length = int(headers["content-length"])
    expects = headers.get("expect", "").lower() == "100-continue"
    if length > max_body:
        # Refused without reading it (nor asking for it): the connection cannot be reused after.
        return Request(method, target, headers, too_large=True), False, length
    if expects and (length or chunked):
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # node:http's answer when nothing checks it
    if chunked:
        body, too_large = await _read_chunks(reader, max_body)
        if too_large:
            return Request(method, target, headers, too_large=True), False, 0
    else:
        body = await reader.readexactly(length) if length else b""
    return Request(method, target, headers, body), keep, 0


async def _read_chunks(reader: asyncio.StreamReader, max_body: int) -> tuple[bytes, bool]:
    """A chunked body, stopping (too large) as soon as it goes over ``max_body``."""
    parts: list[bytes] = []
    size = 0
    while True:
        line = await reader.readuntil(b"\r\n")
        try:
            chunk = int(line.split(b";")[0].strip(), 16)
        except ValueError:
            raise _BadRequest(400) from None
        if chunk == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                pass
            return b"".join(parts), False
        size += chunk
        if size > max_body:
            return b"", True
        parts.append(await reader.readexactly(chunk))
        if await reader.readexactly(2) != b"\r\n":
            raise _BadRequest(400)


def _response(result: Answer, keep: bool, head_only: bool = False) -> bytes:
    """The answer on the wire; for a HEAD request its headers alone, with the length GET would have."""
    phrase = HTTPStatus(result.status).phrase
    allow = f"Allow: {result.allow}\r\n" if result.allow else ""
    head = (
        f"HTTP/1.1 {result.status} {phrase}\r\n"
        f"Content-Type: {result.content_type}\r\n"
        f"Content-Length: {len(result.body)}\r\n{allow}"
        f"Connection: {'keep-alive' if keep else 'close'}\r\n\r\n"
    )
    return head.encode("latin-1") + (b"" if head_only else result.body)


Publish = Callable[[str, bytes], Awaitable[None]]


async def serve_webhook(hook: Webhook, publish: Publish, host: str = "0.0.0.0") -> asyncio.Server:
    """Serve ``hook`` on its port until the returned server is closed. Each message a request brings
    is published (in the event loop that also runs the bus client) before the answer goes out, so
    a 200 means the message is on its way to the bus."""

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    read = await asyncio.wait_for(_read_request(reader, writer, hook.max_body), _READ_TIMEOUT)
                except _BadRequest as bad:
                    writer.write(_response(Answer(bad.status, b"", "text/plain"), False))
                    await writer.drain()
                    return
                if read is None:
                    return
                request, keep, unread = read
                result = answer(hook, request)
                for message in result.messages:
                    try:
                        await publish(hook.subject, message)
                    except (nats_errors.Error, OSError) as exc:
                        _say(f"probe {hook.channel}: cannot publish on {hook.subject}: {_describe(exc)}")
                writer.write(_response(result, keep, head_only=request.method == "HEAD"))
                await writer.drain()
                if not keep:
                    await _discard(reader, unread)
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            return
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    return await asyncio.start_server(on_client, host, hook.port, limit=_HEADER_LIMIT, reuse_address=True)


async def _discard(reader: asyncio.StreamReader, unread: int) -> None:
    """Read what the client still sends of a refused body, briefly, so that closing the connection
    does not reset it before the client has read the answer."""
    deadline = time.monotonic() + 2.0
    while unread > 0 and time.monotonic() < deadline:
        try:
            data = await asyncio.wait_for(reader.read(min(unread, 1 << 16)), 0.5)
        except TimeoutError:
            return
        if not data:
            return
        unread -= len(data)


# --------------------------------------------------------------------------------------------
# Entry point


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    env = os.environ
    if args == ["--check"]:
        return check(env)
    if args == ["--image-check"]:
        return image_check(env)
    if len(args) == 2 and args[0] == "--config-value":
        try:
            value = config_value(env, args[1])
        except ConfigError as exc:
            _say(f"probe: {exc}")
            return EXIT_CONFIG
        if value is None:
            _say(f"probe: {args[1]} is not set in the platform configuration or its overlay")
            return EXIT_BUS
        print(value if isinstance(value, str) else json.dumps(value), flush=True)
        return EXIT_OK
    if args:
        _say("usage: python3 -m nachos_probe [--check | --image-check | --config-value KEY]")
        return EXIT_CONFIG

    fail_at_start = env.get("PROBE_FAIL_AT_START", "").strip()
    if fail_at_start:
        try:
            code = int(fail_at_start)
        except ValueError:
            _say(f"probe: PROBE_FAIL_AT_START={fail_at_start!r} is not an exit code")
            return EXIT_CONFIG
        who = env.get("NACHOS_COMPONENT", "").strip() or "?"
        _say(f"probe {who}: failing at start with exit code {code} (PROBE_FAIL_AT_START)")
        return code

    try:
        settings = load_settings(env)
    except ConfigError as exc:
        _say(f"probe: {exc}")
        return EXIT_CONFIG
    return asyncio.run(run(settings))


if __name__ == "__main__":
    sys.exit(main())

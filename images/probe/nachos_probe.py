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
  GATEWAY_DB_PATH          open (create) this file for writing at start, as the gateway opens its
                           SQLite database; exit 1 with SQLITE_CANTOPEN when that fails
  PROBE_SUBJECTS           comma list replacing the role's subjects
  PROBE_HTTP_PORT          serve GET /health on 0.0.0.0:PORT (default: GATEWAY_HEALTH_PORT for the
                           gateway role, else 0: no HTTP)
  PROBE_HEALTHY_AFTER      seconds after connecting before /health says 200 (default 0)
  PROBE_FAIL_AT_START      exit at once with this code, to play a component that dies at start
  PROBE_EXIT_ONCE          exit with this code 0.5 s after the first connection of this container
                           (a marker in /tmp survives restarts), then run normally after a restart
  PROBE_ON_BUS_LOSS        when the reconnects run out: exit (code 1, default), exit0 (llm-proxy),
                           stay (running, off the bus, silent: the channels), forever (never give
                           up reconnecting: the tools)
  PROBE_CONNECT_WINDOW     seconds to keep trying the first connection (default 5)
  PROBE_RECONNECT_ATTEMPTS reconnect attempts after a lost connection, >= 1 (default 10)
  PROBE_RECONNECT_WAIT     seconds between reconnect attempts (default 2)
  PROBE_AUDIT_AT_START     publish this many core NATS messages on nachos.audit.log once connected,
                           as the gateway and llm-proxy do (default 0)
  PROBE_IMAGE_CHECK        what the image's own HEALTHCHECK does: broken (default: asks
                           :8080/health, which nothing serves, like the filesystem tool's image) or
                           trivial (passes, like `node -e process.exit(0)` in the gateway's)

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
import json
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
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
    healthy_after: float = 0.0
    db_path: str = ""
    audit_at_start: int = 0

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
        healthy_after=_number(env, "PROBE_HEALTHY_AFTER", 0.0, minimum=0.0),
        db_path=env.get("GATEWAY_DB_PATH", "").strip(),
        audit_at_start=_integer(env, "PROBE_AUDIT_AT_START", 0, low=0, high=1_000_000),
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


def open_database(path: str) -> str | None:
    """Open (create) the database file for writing as the gateway does with SQLite; the error, if any.

    Each start appends a line, so a test can tell the data survived a restart or a `down`."""
    try:
        with Path(path).open("a", encoding="utf-8") as handle:
            handle.write(f"start {time.time():.3f}\n")
    except OSError as exc:
        return f"SQLITE_CANTOPEN: unable to open database file {path} ({exc.strerror})"
    return None


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

    server: ThreadingHTTPServer | None = None
    if settings.http_port:
        try:
            server = start_health_server(settings.http_port, name, connected, settings.healthy_after)
        except OSError as exc:
            _say(f"probe {name}: cannot serve /health on port {settings.http_port}: {exc}")
            return EXIT_BUS

    client = Client()
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
                await client.subscribe(subject, cb=_answer_handler(settings, subject, client))
            # The server has our subscriptions once it answers a PING; only then are we ready.
            await client.flush(timeout=2)
        except (nats_errors.Error, OSError, TimeoutError) as exc:
            _say(f"probe {name}: cannot subscribe on the bus at {url}: {_describe(exc)}")
            return EXIT_BUS
        ready = True
        connected.set()
        answering = ", ".join(subjects)
        as_name = settings.connection_name
        print(f"probe {name} connected to {url} as {as_name}; answering {answering}", flush=True)
        for index in range(settings.audit_at_start):
            await client.publish(AUDIT_SUBJECT, json.dumps({"from": name, "index": index}).encode())
        if settings.audit_at_start:
            await client.flush(timeout=2)

        if settings.exit_once is not None and not Path(EXIT_ONCE_MARKER).exists():
            Path(EXIT_ONCE_MARKER).touch()
            await asyncio.sleep(0.5)
            _say(f"probe {name}: exiting once with code {settings.exit_once} (PROBE_EXIT_ONCE)")
            return settings.exit_once

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
        await _shutdown(client)
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


def _answer_handler(settings: Settings, subject: str, client: Client) -> Callable[[Msg], Awaitable[None]]:
    """Echo requests; answer the gateway's subagents.list as the real gateway does. The gateway's
    own request subjects take JSON only: on any other payload the real gateway logs a SyntaxError
    and never answers (the requester times out), and so does the probe. The gateway's channel
    inbound subjects are not requests at all (:func:`gateway_outbound`)."""

    inbound_channel = _inbound_channel(subject) if settings.role == "gateway" else None

    async def handle(msg: Msg) -> None:
        if inbound_channel is not None:
            # Never msg.respond here: the reply subject is the channel's to choose (issue 19, item 9).
            outbound = gateway_outbound(inbound_channel, msg.data)
            if outbound is not None:
                await client.publish(f"nachos.channel.{inbound_channel}.outbound", outbound)
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
            return
        doc = {
            "component": settings.component,
            "subject": msg.subject,
            "echo": msg.data.decode("utf-8", errors="replace"),
        }
        await msg.respond(json.dumps(doc).encode())

    return handle


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

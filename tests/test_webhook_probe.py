"""The probe's inbound webhooks (issue 20): the whatsapp channel's and slack's in http mode, as the
real channels answer them, and the webchat's page. The handlers are pure functions, checked answer by
answer; then the probe runs as a process on a real nats-server, and requests over real HTTP reach (or
do not reach) the bus.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest

from tests.natsserver import NatsServer, nats_server, nats_server_factory
from tests.probe_module import KEEP_ALIVE_TIMEOUT, ConfigError, nachos_probe
from tests.test_probe import clean_env, closed_port, run_probe

__all__ = ["nats_server", "nats_server_factory"]  # fixtures, used by name

VERIFY = "verify-me"
SECRET = "app-secret"
SIGNING = "slack-signing-secret"
PATH = "/whatsapp/webhook"
INBOUND = "nachos.channel.whatsapp.inbound"


def event(*texts: str, kind: str = "text") -> bytes:
    """A WhatsApp Cloud API webhook with one message per text, the way Meta posts it."""
    messages = [
        {"from": "15550001111", "id": f"wamid.{i}", "type": kind, "text": {"body": text}}
        for i, text in enumerate(texts)
    ]
    doc = {
        "object": "whatsapp_business_account",
        "entry": [{"id": "1", "changes": [{"field": "messages", "value": {"messages": messages}}]}],
    }
    return json.dumps(doc).encode()


def signed(body: bytes, secret: str = SECRET) -> dict[str, str]:
    return {"x-hub-signature-256": "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()}


def hook(**changes: Any) -> Any:
    values: dict[str, Any] = {
        "kind": "whatsapp",
        "channel": "whatsapp",
        "port": 3002,
        "path": PATH,
        "max_body": 1_000_000,
        "verify_token": VERIFY,
        "secret": SECRET,
    }
    return nachos_probe.Webhook(**{**values, **changes})


def call(target: str, method: str = "GET", body: bytes = b"", headers: dict[str, str] | None = None) -> Any:
    return nachos_probe.whatsapp_answer(hook(), nachos_probe.Request(method, target, headers or {}, body))


# --- whatsapp, answer by answer ------------------------------------------------------------


def test_meta_handshake_answers_the_challenge_with_the_verify_token_only() -> None:
    ok = call(f"{PATH}?hub.mode=subscribe&hub.verify_token={VERIFY}&hub.challenge=1158201444")
    assert (ok.status, ok.body, ok.content_type) == (200, b"1158201444", "text/plain")
    for query in (
        "hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=x",
        f"hub.mode=unsubscribe&hub.verify_token={VERIFY}&hub.challenge=x",
        "hub.mode=subscribe&hub.challenge=x",
    ):
        refused = call(f"{PATH}?{query}")
        assert (refused.status, json.loads(refused.body)) == (403, {"error": "Verification failed"})
    # No verify token configured: nothing verifies, not even an empty one.
    empty = nachos_probe.whatsapp_answer(
        hook(verify_token=""), nachos_probe.Request("GET", f"{PATH}?hub.mode=subscribe&hub.verify_token=", {})
    )
    assert empty.status == 403


def test_only_the_webhook_path_is_served_and_only_get_and_post() -> None:
    for target in ("/", "/whatsapp", "/whatsapp/webhook/", "/health", "/slack/events"):
        assert call(target).status == 404
        assert call(target, "POST", event("x"), signed(event("x"))).status == 404
    for method in ("PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"):
        assert call(PATH, method).status == 405


def test_a_post_is_checked_for_size_emptiness_signature_and_json_in_that_order() -> None:
    big = b"{" + b" " * 1_000_000  # 1,000,001 bytes
    assert call(PATH, "POST", big, signed(big)).status == 413
    assert call(PATH, "POST", big[:1_000_000], signed(big[:1_000_000])).status == 400  # at the limit: read
    assert call(PATH, "POST", b"").status == 400
    body = event("hello")
    assert json.loads(call(PATH, "POST", body).body) == {"error": "Invalid signature"}
    assert call(PATH, "POST", body, signed(body, "another-secret")).status == 403
    assert call(PATH, "POST", body + b" ", signed(body)).status == 403  # the raw body is what is signed
    assert call(PATH, "POST", b"not json", signed(b"not json")).status == 400
    ok = call(PATH, "POST", body, signed(body))
    assert (ok.status, ok.body) == (200, b'{"status":"ok"}')


def test_without_an_app_secret_anyone_may_post() -> None:
    body = event("unsigned")
    result = nachos_probe.whatsapp_answer(hook(secret=""), nachos_probe.Request("POST", PATH, {}, body))
    assert result.status == 200 and len(result.messages) == 1


def test_each_text_message_becomes_one_inbound_message() -> None:
    body = event("one", "two")
    result = call(PATH, "POST", body, signed(body))
    docs = [json.loads(m) for m in result.messages]
    assert [d["content"]["text"] for d in docs] == ["one", "two"]
    assert docs[0] == {
        "channel": "whatsapp",
        "channelMessageId": "wamid.0",
        "sender": {"id": "15550001111"},
        "conversation": {"id": "15550001111", "type": "dm"},
        "content": {"text": "one"},
    }
    # what the probe gateway reads of it: the text and the conversation
    reply = json.loads(nachos_probe.gateway_outbound("whatsapp", result.messages[0]))
    assert reply == {"channel": "whatsapp", "conversationId": "15550001111", "content": {"text": "echo: one"}}
    # an image, a status update, a malformed part: acknowledged, nothing published
    for other in (
        event("pic", kind="image"),
        b'{"entry":[{"changes":[{"value":{"statuses":[{}]}}]}]}',
        b"[]",
    ):
        quiet = call(PATH, "POST", other, signed(other))
        assert (quiet.status, quiet.messages) == (200, ())


# --- slack in http mode --------------------------------------------------------------------


def slack_call(body: bytes, *, at: float = 1_700_000_000, stamp: int | None = None, **extra: str) -> Any:
    stamp = int(at) if stamp is None else stamp
    headers = {
        "content-type": "application/json",
        "x-slack-request-timestamp": str(stamp),
        "x-slack-signature": nachos_probe.slack_signature(SIGNING, str(stamp), body),
        **extra,
    }
    slack = hook(kind="slack", channel="slack", path="/slack/events", secret=SIGNING, verify_token="")
    return nachos_probe.slack_answer(slack, nachos_probe.Request("POST", "/slack/events", headers, body), at)


def test_slack_url_verification_needs_a_fresh_valid_signature() -> None:
    body = json.dumps({"type": "url_verification", "token": "t", "challenge": "3eZbrw1aB"}).encode()
    ok = slack_call(body)
    assert (ok.status, json.loads(ok.body)) == (200, {"challenge": "3eZbrw1aB"})
    assert slack_call(body, stamp=1_700_000_000 - 301).status == 401  # older than five minutes
    assert slack_call(body, stamp=1_700_000_000 - 299).status == 200
    assert slack_call(body, **{"x-slack-signature": "v0=" + "0" * 64}).status == 401
    assert slack_call(body, **{"x-slack-request-timestamp": "soon"}).status == 401


def test_slack_message_events_are_published_and_others_acknowledged() -> None:
    message = {
        "type": "message",
        "user": "U1",
        "text": "hi",
        "channel": "D1",
        "channel_type": "im",
        "ts": "1.2",
    }
    result = slack_call(json.dumps({"type": "event_callback", "event": message}).encode())
    assert result.status == 200 and result.body == b""
    assert [json.loads(m) for m in result.messages] == [
        {
            "channel": "slack",
            "channelMessageId": "1.2",
            "sender": {"id": "U1"},
            "conversation": {"id": "D1", "type": "dm"},
            "content": {"text": "hi"},
        }
    ]
    from_bot = json.dumps({"type": "event_callback", "event": {**message, "bot_id": "B1"}}).encode()
    assert slack_call(from_bot).messages == ()


def test_which_channel_serves_what() -> None:
    base = {"WHATSAPP_VERIFY_TOKEN": VERIFY}
    whatsapp = nachos_probe.webhook_settings(base, "whatsapp", "channel")
    assert (whatsapp.port, whatsapp.path, whatsapp.verify_token, whatsapp.secret) == (3002, PATH, VERIFY, "")
    moved = nachos_probe.webhook_settings(
        {
            **base,
            "WHATSAPP_HTTP_PORT": "3102",
            "CHANNEL_WHATSAPP_WEBHOOK_PATH": "/wa/in",
            "WHATSAPP_APP_SECRET": "s",
        },
        "whatsapp",
        "channel",
    )
    assert (moved.port, moved.path, moved.secret) == (3102, "/wa/in", "s")
    assert nachos_probe.webhook_settings(base, "whatsapp", "extra") is None
    webchat = nachos_probe.webhook_settings({}, "webchat", "channel")
    assert (webchat.kind, webchat.port, webchat.path) == ("webchat", 8080, "/webchat")
    assert nachos_probe.webhook_settings({}, "webchat", "tool") is None
    assert nachos_probe.webhook_settings({"SLACK_BOT_TOKEN": "x"}, "slack", "channel") is None  # socket mode
    slack = nachos_probe.webhook_settings(
        {"CHANNEL_SLACK_MODE": "http", "SLACK_SIGNING_SECRET": SIGNING, "SLACK_HTTP_PORT": "3005"},
        "slack",
        "channel",
    )
    assert (slack.port, slack.path, slack.secret) == (3005, "/slack/events", SIGNING)
    with pytest.raises(ConfigError, match="SLACK_SIGNING_SECRET"):
        nachos_probe.webhook_settings({"CHANNEL_SLACK_MODE": "http"}, "slack", "channel")
    assert SIGNING not in repr(slack) and VERIFY not in repr(whatsapp)


# --- webchat: a page at /webchat and below ---------------------------------------------------


def webchat_call(target: str, method: str = "GET") -> Any:
    hook = nachos_probe.webhook_settings({}, "webchat", "channel")
    return nachos_probe.answer(hook, nachos_probe.Request(method, target, {}))


def test_webchat_serves_its_page_at_webchat_and_below_for_get_and_head_only() -> None:
    for target in ("/webchat", "/webchat/", "/webchat/index.html", "/webchat/assets/app.js?v=1"):
        for method in ("GET", "HEAD"):
            page = webchat_call(target, method)
            assert (page.status, page.content_type) == (200, "text/html; charset=utf-8"), target
            assert b"webchat" in page.body and page.body.startswith(b"<!doctype html>")
            assert page.messages == ()  # a page view is not a message
    for target in ("/", "/webchatx", "/whatsapp/webhook", "/health"):
        assert webchat_call(target).status == 404, target
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        refused = webchat_call("/webchat/", method)
        assert (refused.status, refused.allow) == (405, "GET, HEAD"), method


def test_webchat_port_is_read_as_the_platform_reads_channels_webchat_port(tmp_path: Path) -> None:
    def port(env: dict[str, str]) -> int:
        return nachos_probe.webhook_settings(env, "webchat", "channel").port

    assert port({}) == 8080
    assert port({"CHANNEL_WEBCHAT_PORT": "8181"}) == 8181
    toml = tmp_path / "nachos.toml"
    toml.write_text("[channels.webchat]\nenabled = true\nport = 8282\n")
    assert port({"NACHOS_CONFIG_PATH": str(toml)}) == 8282
    assert port({"NACHOS_CONFIG_PATH": str(toml), "CHANNEL_WEBCHAT_PORT": "8383"}) == 8383  # the overlay wins
    for bad in ("http", "0", "70000"):
        with pytest.raises(ConfigError, match=r"channels\.webchat\.port"):
            port({"CHANNEL_WEBCHAT_PORT": bad})


# --- the probe as a process, on a real bus, over real HTTP ---------------------------------


class Listener:
    """An operator on the bus, keeping what arrives on a subject (nats-py in its own thread)."""

    def __init__(self, url: str, subject: str) -> None:
        self.got: list[dict[str, Any]] = []
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._run(url, subject),), daemon=True)

    async def _run(self, url: str, subject: str) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        client = await nats.connect(url, allow_reconnect=False)

        async def keep(msg: Any) -> None:
            self.got.append(json.loads(msg.data))

        await client.subscribe(subject, cb=keep)
        await client.flush()
        self._ready.set()
        await self._stop.wait()
        await client.close()

    def __enter__(self) -> Listener:
        self._thread.start()
        assert self._ready.wait(10), "the listener did not connect"
        return self

    def __exit__(self, *_: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.got) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.got


@pytest.fixture
def whatsapp_probe(nats_server: NatsServer) -> Iterator[tuple[int, str]]:
    port = closed_port()
    env = clean_env(
        NACHOS_COMPONENT="whatsapp",
        NACHOS_ROLE="channel",
        NATS_URL=nats_server.nats_url,
        WHATSAPP_HTTP_PORT=str(port),
        WHATSAPP_VERIFY_TOKEN=VERIFY,
        WHATSAPP_APP_SECRET=SECRET,
    )
    with run_probe(env) as probe:
        probe.wait_ready()
        serving = f"probe whatsapp serving the whatsapp webhook on :{port}{PATH}"
        deadline = time.monotonic() + 5  # the line after the ready one: its reader may lag a little
        while serving not in probe.stdout and time.monotonic() < deadline:
            time.sleep(0.02)
        assert serving in probe.stdout, probe.stdout
        yield port, nats_server.nats_url


def post(
    port: int, body: bytes, headers: dict[str, str], conn: http.client.HTTPConnection | None = None
) -> Any:
    own = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    own.request("POST", PATH, body=body, headers={"Content-Type": "application/json", **headers})
    response = own.getresponse()
    response.read()
    if conn is None:
        own.close()
    return response


@pytest.mark.natsserver
def test_signed_posts_reach_the_inbound_subject_and_bad_ones_do_not(whatsapp_probe: tuple[int, str]) -> None:
    port, url = whatsapp_probe
    with Listener(url, INBOUND) as bus:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        first, second = event("first"), event("second")
        # two requests on one kept-alive connection, as the ingress sends them
        assert post(port, first, signed(first), conn).status == 200
        assert post(port, second, signed(second), conn).status == 200
        conn.close()
        assert post(port, first, signed(first, "forged")).status == 403
        assert post(port, first, {}).status == 403
        got = bus.wait_for(2)
        time.sleep(0.3)  # the refused ones would have arrived by now
    assert [m["content"]["text"] for m in bus.got] == ["first", "second"], got


@pytest.mark.natsserver
def test_a_kept_connection_is_closed_once_idle_for_node_https_keep_alive_timeout(
    whatsapp_probe: tuple[int, str],
) -> None:
    """As node:http (the real channel's server): a connection is kept for the next request and
    closed by the channel once idle for KEEP_ALIVE_TIMEOUT; the ingress closes first (docs/ingress.md)."""
    port, _ = whatsapp_probe
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", f"{PATH}?hub.mode=subscribe&hub.verify_token={VERIFY}&hub.challenge=7")
    response = conn.getresponse()
    assert (response.status, response.read()) == (200, b"7")
    idle_since = time.monotonic()
    assert conn.sock is not None
    conn.sock.settimeout(KEEP_ALIVE_TIMEOUT - 1)
    with pytest.raises(TimeoutError):
        conn.sock.recv(1)  # still open, and nothing sent
    conn.sock.settimeout(3)
    assert conn.sock.recv(1) == b""  # closed by the channel
    assert KEEP_ALIVE_TIMEOUT - 1 <= time.monotonic() - idle_since < KEEP_ALIVE_TIMEOUT + 2
    conn.close()


@pytest.mark.natsserver
def test_bodies_over_the_limit_are_refused_413_on_the_wire(whatsapp_probe: tuple[int, str]) -> None:
    port, _ = whatsapp_probe
    big = b"x" * 1_000_001
    assert post(port, big, signed(big)).status == 413
    # chunked, with no length to refuse it by: counted as it comes
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("POST", PATH, body=iter([big[:600_000], big[600_000:]]), encode_chunked=True)
    assert conn.getresponse().status == 413
    conn.close()
    # a header section over 64 KiB
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET " + PATH.encode() + b" HTTP/1.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n")
        assert sock.recv(64).startswith(b"HTTP/1.1 431 ")
    # a chunked body within the limit is read whole
    body = event("chunked")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("POST", PATH, body=iter([body[:10], body[10:]]), headers=signed(body), encode_chunked=True)
    assert conn.getresponse().status == 200
    conn.close()


@pytest.mark.natsserver
def test_slack_http_mode_serves_signed_events(nats_server: NatsServer) -> None:
    port = closed_port()
    env = clean_env(
        NACHOS_COMPONENT="slack",
        NACHOS_ROLE="channel",
        NATS_URL=nats_server.nats_url,
        CHANNEL_SLACK_MODE="http",
        SLACK_HTTP_PORT=str(port),
        SLACK_SIGNING_SECRET=SIGNING,
    )
    body = json.dumps({"type": "url_verification", "challenge": "c-42"}).encode()
    stamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": nachos_probe.slack_signature(SIGNING, stamp, body),
    }
    with run_probe(env) as probe:
        probe.wait_ready()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("POST", "/slack/events", body=body, headers=headers)
        response = conn.getresponse()
        assert (response.status, json.loads(response.read())) == (200, {"challenge": "c-42"})
        conn.request("POST", "/slack/events", body=body, headers={**headers, "X-Slack-Signature": "v0=00"})
        assert conn.getresponse().status == 401
        conn.close()


def test_slack_http_mode_without_a_signing_secret_will_not_start() -> None:
    from tests.test_probe import run_once

    env = clean_env(NACHOS_COMPONENT="slack", NACHOS_ROLE="channel", CHANNEL_SLACK_MODE="http")
    done = run_once(env)
    assert done.returncode == 2 and "SLACK_SIGNING_SECRET" in done.stderr


@pytest.mark.natsserver
def test_webchat_serves_its_page_on_its_port(nats_server: NatsServer) -> None:
    port = closed_port()
    env = clean_env(
        NACHOS_COMPONENT="webchat",
        NACHOS_ROLE="channel",
        NATS_URL=nats_server.nats_url,
        CHANNEL_WEBCHAT_PORT=str(port),
    )
    with run_probe(env) as probe:
        probe.wait_ready()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:  # one kept-alive connection, as the ingress keeps its own
            conn.request("GET", "/webchat/")
            page = conn.getresponse()
            body = page.read()
            assert (page.status, page.getheader("Content-Type")) == (200, "text/html; charset=utf-8")
            assert b"<h1>Nachos webchat</h1>" in body
            conn.request("HEAD", "/webchat/index.html")
            head = conn.getresponse()
            assert (head.status, head.read(), head.getheader("Content-Length")) == (200, b"", str(len(body)))
            conn.request("POST", "/webchat", body=b"{}")
            refused = conn.getresponse()
            refused.read()
            assert (refused.status, refused.getheader("Allow")) == (405, "GET, HEAD")
            conn.request("GET", "/elsewhere")
            missing = conn.getresponse()
            missing.read()
            assert missing.status == 404
        finally:
            conn.close()
        assert f"probe webchat serving the webchat page on :{port}/webchat" in "\n".join(probe.stdout)

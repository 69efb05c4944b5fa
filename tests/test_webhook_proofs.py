"""The webhook proofs from the host (nachos_deploy/web/webhooks.py), against a real HTTPS server started
here: it stands where the ingress listens and answers each route with the probe's own channel logic,
so every proof crosses TLS (a CA made here, trusted as the ingress's root) and HTTP for real.
"""

from __future__ import annotations

import ssl
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from nachos_deploy.core.results import WebhookReport
from nachos_deploy.io.channel_secrets import channel_secret
from nachos_deploy.io.stack import Stack, prepare
from nachos_deploy.web import webhooks
from tests import certificates
from tests.ports import free_port as closed_port
from tests.probe_module import nachos_probe

VERIFY = "the-verify-token"
SIGNING = "the-signing-secret"
ENV = {
    "WHATSAPP_TOKEN": "t",
    "WHATSAPP_PHONE_NUMBER_ID": "1",
    "WHATSAPP_VERIFY_TOKEN": VERIFY,
    "SLACK_BOT_TOKEN": "b",
    "SLACK_SIGNING_SECRET": SIGNING,
}


@dataclass
class Authority:
    """A CA, as Caddy's internal one: a root, and a leaf for localhost and 127.0.0.1 signed by it."""

    root_pem: bytes
    cert_file: Path
    key_file: Path


def authority(folder: Path, name: str = "root") -> Authority:
    ca = certificates.authority(f"test {name}")
    cert_file, key_file = folder / f"{name}-leaf.pem", folder / f"{name}-leaf-key.pem"
    certificates.issue(ca, ["localhost", "127.0.0.1"]).write(cert_file, key_file)
    return Authority(ca.cert_pem, cert_file, key_file)


@dataclass
class Ingress:
    """The HTTPS server standing for the ingress and its channels; ``behaviour`` changes its answers."""

    port: int
    seen: list[str] = field(default_factory=list)
    behaviour: dict[str, Any] = field(default_factory=dict)


def channel_logic() -> dict[str, Any]:
    whatsapp = nachos_probe.Webhook(
        kind="whatsapp",
        channel="whatsapp",
        port=3002,
        path="/whatsapp/webhook",
        max_body=1_000_000,
        verify_token=VERIFY,
    )
    slack = nachos_probe.Webhook(
        kind="slack", channel="slack", port=3005, path="/slack/events", max_body=1_000_000, secret=SIGNING
    )
    webchat = nachos_probe.webhook_settings({}, "webchat", "channel")
    assert webchat is not None
    return {whatsapp.path: whatsapp, slack.path: slack, webchat.path: webchat}


def routed(hooks: dict[str, Any], path: str) -> str | None:
    """The route a path belongs to, as the ingress matches it: exact, or below webchat's."""
    if path in hooks:
        return path
    return next((p for p, h in hooks.items() if h.kind == "webchat" and path.startswith(p + "/")), None)


@pytest.fixture
def ingress(tmp_path: Path) -> Iterator[Ingress]:
    ca = authority(tmp_path)
    (tmp_path / "root.pem").write_bytes(ca.root_pem)
    state = Ingress(port=closed_port())
    hooks = channel_logic()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            state.seen.append(self.path)
            path = urllib.parse.urlsplit(self.path).path
            route = routed(hooks, path)
            status, answer, kind = 404, b"", "text/plain"
            failing = state.behaviour.get("fail_first", 0)
            if failing:
                state.behaviour["fail_first"] = failing - 1
                status = 502  # the ingress without an answer from the channel, yet
            elif path in state.behaviour.get("answers", {}):
                status = state.behaviour["answers"][path]  # a channel answering otherwise
            elif route is not None and route not in state.behaviour.get("unrouted", ()):
                headers = {name.lower(): value for name, value in self.headers.items()}
                request = nachos_probe.Request(self.command, self.path, headers, body)
                result = nachos_probe.answer(hooks[route], request)
                status, answer, kind = result.status, result.body, result.content_type
                if status == 200 and state.behaviour.get("forget_challenge"):
                    answer = b"ok"
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        do_GET = do_POST = _serve

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", state.port), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(ca.cert_file, ca.key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def stack_for(tmp_path: Path, port: int, *, root: bytes | None = None) -> Stack:
    document = {
        "project": "h20w-proofs",
        "components": {
            "whatsapp": {"enabled": True, "image": "nachos-deploy/probe:latest"},
            "slack": {
                "enabled": True,
                "image": "nachos-deploy/probe:latest",
                "environment": {"CHANNEL_SLACK_MODE": "http"},
            },
            "webchat": {"enabled": True, "image": "nachos-deploy/probe:latest"},
        },
        "ingress": {"https_port": port, "http_port": closed_port()},
    }
    stack = prepare(document=document, output=tmp_path / "out", cwd=tmp_path, environ=ENV)
    ingress = stack.plan.ingress
    assert ingress is not None and ingress.tls == "internal" and ingress.root_cert_file
    target = stack.output_dir / ingress.root_cert_file
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(root if root is not None else (tmp_path / "root.pem").read_bytes())
    return stack


def prove(
    stack: Stack, environ: dict[str, str] | None = None, within: float = 5.0
) -> dict[str, WebhookReport]:
    reports = webhooks.prove_all(
        stack.plan, stack.output_dir, deadline=time.monotonic() + within, environ=environ or ENV
    )
    return {report.channel: report for report in reports}


def test_each_route_is_proven_by_its_providers_own_call(tmp_path: Path, ingress: Ingress) -> None:
    stack = stack_for(tmp_path, ingress.port)
    first, second = prove(stack), prove(stack)
    whatsapp, slack, webchat = first["whatsapp"], first["slack"], first["webchat"]
    assert whatsapp.url == f"https://localhost:{ingress.port}/whatsapp/webhook"
    assert slack.url == f"https://localhost:{ingress.port}/slack/events"
    assert webchat.url == f"https://localhost:{ingress.port}/webchat"
    assert (whatsapp.proof, whatsapp.ok, whatsapp.status) == ("meta-verification", True, 200)
    assert (slack.proof, slack.ok, slack.status) == ("slack-url-verification", True, 200)
    assert (webchat.proof, webchat.proven, webchat.status) == ("webchat-page", True, 200)
    assert second["whatsapp"].ok and second["slack"].ok and second["webchat"].proven
    assert ingress.seen.count("/webchat/") == 2  # a browser's first call: the page, below the URL
    # Meta's handshake: the real token, a fresh challenge each time
    handshakes = [urllib.parse.parse_qs(urllib.parse.urlsplit(p).query) for p in ingress.seen if "hub." in p]
    assert [h["hub.verify_token"] for h in handshakes] == [[VERIFY], [VERIFY]]
    assert handshakes[0]["hub.challenge"] != handshakes[1]["hub.challenge"]
    assert whatsapp.as_json()["proven"] is True and whatsapp.ms is not None


def test_a_wrong_secret_fails_at_once_naming_it(tmp_path: Path, ingress: Ingress) -> None:
    stack = stack_for(tmp_path, ingress.port)
    started = time.monotonic()
    found = prove(stack, {**ENV, "WHATSAPP_VERIFY_TOKEN": "stale", "SLACK_SIGNING_SECRET": "old"}, within=30)
    assert time.monotonic() - started < 5  # a refusal is final: no waiting for the deadline
    assert found["whatsapp"].status == 403 and "verify token" in (found["whatsapp"].problem or "")
    assert found["slack"].status == 401 and "signing secret" in (found["slack"].problem or "")


def test_the_secret_is_read_as_the_channel_reads_it(tmp_path: Path, ingress: Ingress) -> None:
    stack = stack_for(tmp_path, ingress.port)
    # The platform's overlay variable fills channels.whatsapp.verify_token, which wins over the own one.
    overlay = {**ENV, "WHATSAPP_VERIFY_TOKEN": "not-this", "CHANNEL_WHATSAPP_VERIFY_TOKEN": VERIFY}
    assert prove(stack, overlay)["whatsapp"].ok
    # From the output folder's .env when the environment does not set it, as Compose reads it.
    no_env = {k: v for k, v in ENV.items() if k != "WHATSAPP_VERIFY_TOKEN"}
    unset = prove(stack, no_env)["whatsapp"]
    assert unset.ok and not unset.proven and "WHATSAPP_VERIFY_TOKEN is not set here" in (unset.unproven or "")
    assert len([path for path in ingress.seen if "hub." in path]) == 1  # nothing sent without it
    (stack.output_dir / ".env").write_text(f"WHATSAPP_VERIFY_TOKEN={VERIFY}\n")
    assert prove(stack, no_env)["whatsapp"].ok
    whatsapp = stack.plan.component("whatsapp")
    assert channel_secret(whatsapp, "WHATSAPP_APP_SECRET", stack.output_dir, no_env) is None


def test_an_untrusted_or_missing_root_fails_the_proof(tmp_path: Path, ingress: Ingress) -> None:
    other = authority(tmp_path, "other")
    stack = stack_for(tmp_path, ingress.port, root=other.root_pem)
    found = prove(stack, within=0.5)
    assert "is not trusted for localhost" in (found["whatsapp"].problem or ""), found
    assert ingress.seen == []  # nothing was sent over a connection the host could not trust
    assert stack.plan.ingress is not None and stack.plan.ingress.root_cert_file
    (stack.output_dir / stack.plan.ingress.root_cert_file).unlink()
    missing = prove(stack)["slack"].problem or ""
    assert "root certificate" in missing and "is missing" in missing


def test_a_route_still_coming_up_is_asked_again(tmp_path: Path, ingress: Ingress) -> None:
    stack = stack_for(tmp_path, ingress.port)
    ingress.behaviour["fail_first"] = 3
    assert prove(stack)["whatsapp"].ok
    ingress.behaviour["fail_first"] = 10**6
    started = time.monotonic()
    found = prove(stack, within=1.0)["whatsapp"]
    assert 0.7 < time.monotonic() - started < 4
    assert found.status == 502 and "no answer from whatsapp" in (found.problem or "")


def test_a_route_not_forwarded_or_an_answer_without_the_challenge_fails(
    tmp_path: Path, ingress: Ingress
) -> None:
    stack = stack_for(tmp_path, ingress.port)
    ingress.behaviour["unrouted"] = ("/whatsapp/webhook",)
    found = prove(stack)
    assert found["whatsapp"].problem == "HTTP 404: /whatsapp/webhook is not routed to whatsapp"
    assert found["slack"].ok
    ingress.behaviour.clear()
    ingress.behaviour["forget_challenge"] = True
    found = prove(stack)
    assert found["whatsapp"].problem == "answered 200 without the challenge (body 'ok')"
    assert found["slack"].problem == "answered 200 without the challenge (body 'ok')"


def test_nothing_listening_is_said_after_the_deadline(tmp_path: Path) -> None:
    (tmp_path / "root.pem").write_bytes(authority(tmp_path).root_pem)
    stack = stack_for(tmp_path, closed_port())
    found = prove(stack, within=0.6)["whatsapp"]
    assert found.problem is not None and "connection refused" in found.problem


def test_webchat_is_proven_by_its_page_and_needs_no_secret(tmp_path: Path, ingress: Ingress) -> None:
    stack = stack_for(tmp_path, ingress.port)
    # No secret anywhere: the providers' calls cannot be made, a browser's can.
    bare = prove(stack, {"LANG": "C"})
    assert bare["webchat"].proven and bare["webchat"].ms is not None
    assert bare["whatsapp"].unproven and bare["slack"].unproven
    assert bare["webchat"].as_json()["unproven"] is None
    ingress.behaviour["answers"] = {"/webchat/": 302}  # a redirect to the page is the channel answering
    assert prove(stack)["webchat"].proven


def test_webchat_still_coming_up_is_asked_again_and_a_wrong_answer_fails_at_once(
    tmp_path: Path, ingress: Ingress
) -> None:
    stack = stack_for(tmp_path, ingress.port)
    ingress.behaviour["answers"] = {"/webchat/": 504}
    started = time.monotonic()
    found = prove(stack, within=1.0)["webchat"]
    assert 0.7 < time.monotonic() - started < 4
    assert found.status == 504 and found.problem == "the ingress got no answer from webchat (HTTP 504)"
    assert ingress.seen.count("/webchat/") > 2  # asked again until the deadline
    for status, problem in (
        (500, "answered HTTP 500 (body '')"),
        (401, "answered HTTP 401 (body '')"),
        (404, "HTTP 404: /webchat is not routed to webchat"),
    ):
        ingress.behaviour["answers"] = {"/webchat/": status}
        started = time.monotonic()
        found = prove(stack, within=30)["webchat"]
        assert time.monotonic() - started < 5  # final at once
        assert (found.status, found.problem, found.proven) == (status, problem, False)


# --- in the one algorithm: `up` proves the routes last, and a failed proof is exit 8 -------------


def test_up_proves_the_routes_last_and_a_failed_proof_is_exit_8(
    tmp_path: Path, ingress: Ingress, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nachos_deploy.core.errors import ExitCode, WebhookFailure
    from nachos_deploy.core.ingress import INTERNAL_ROOT
    from nachos_deploy.lifecycle import up as algorithm
    from tests.fake_target import FakeTarget
    from tests.natsserver import start_nats_server

    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    document = {
        "project": "h20w-algorithm",
        "bus": {"auth": False},
        "state": {"enabled": False},
        "components": {
            "gateway": {"enabled": False},
            "llm-proxy": {"enabled": False},
            "whatsapp": {"enabled": True, "image": "nachos-deploy/probe:latest"},
        },
        "ingress": {"https_port": ingress.port, "http_port": closed_port()},
    }
    stack = prepare(document=document, output=tmp_path / "out", cwd=tmp_path, environ=ENV)
    config = "max_payload: 10485760\n"
    with start_nats_server(tmp_path / "hub", config_text=config) as hub:
        target = FakeTarget(stack, hub, tmp_path / "servers")
        try:
            target.online |= {"whatsapp"}
            # Caddy's root, as `up` reads it from the ingress's container (internal TLS)
            target.files_inside[("fake-ingress-1", INTERNAL_ROOT)] = (tmp_path / "root.pem").read_text()
            result = algorithm.up_on(target, timeout=20)
            (webhook,) = result.webhooks
            assert webhook.proven and webhook.url == f"https://localhost:{ingress.port}/whatsapp/webhook"
            assert result.as_json()["webhooks"][0]["proven"] is True
            handshakes = [path for path in ingress.seen if "hub.mode=subscribe" in path]
            assert len(handshakes) == 1  # once every service was ok: the components were judged first

            ingress.behaviour["forget_challenge"] = True  # a route that answers, but not as the channel must
            with pytest.raises(WebhookFailure) as failure:
                algorithm.up_on(target, timeout=20)
        finally:
            target.close()
    assert failure.value.exit_code == ExitCode.WEBHOOK == 8
    message = failure.value.message
    assert f"whatsapp's webhook https://localhost:{ingress.port}/whatsapp/webhook failed its proof" in message
    assert "answered 200 without the challenge" in message and "The stack is left running" in message
    assert "--- ingress" in failure.value.details and "--- whatsapp" in failure.value.details

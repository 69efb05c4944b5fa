"""A webhook from the outside world, end to end on the real engine (issue 20, part 1).

A stack of probes (the gateway, the whatsapp channel and a webchat) behind the ingress (Caddy,
internal TLS): `up` proves the whatsapp route with Meta's handshake and the webchat's with a browser's
GET of its page, and lists the public URLs; then, from the host, as Meta
would: an HTTPS POST of a signed WhatsApp event reaches the channel, which publishes it on
nachos.channel.whatsapp.inbound, and the gateway answers on the outbound subject (the operator
listens with its own credentials). A bad signature is 403 with nothing on the bus; a path the
ingress does not route is its own 404, never forwarded; `status` proves the route again, and says
so when the token it is given is not the channel's.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import http.client
import json
import re
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
import yaml

from tests.commands import compose_down, nachos
from tests.ports import free_port

PROBE = "nachos-deploy/probe:latest"
INBOUND = "nachos.channel.whatsapp.inbound"
OUTBOUND = "nachos.channel.whatsapp.outbound"
VERIFY = f"verify-{uuid.uuid4().hex[:12]}"
APP_SECRET = f"app-secret-{uuid.uuid4().hex[:12]}"
SECRETS = {
    "WHATSAPP_TOKEN": "token-not-used-offline",
    "WHATSAPP_PHONE_NUMBER_ID": "1234",
    "WHATSAPP_VERIFY_TOKEN": VERIFY,
    "WHATSAPP_APP_SECRET": APP_SECRET,
}


def event(text: str) -> bytes:
    message = {
        "from": "15550002222",
        "id": f"wamid.{uuid.uuid4().hex}",
        "type": "text",
        "text": {"body": text},
    }
    change = {"field": "messages", "value": {"messaging_product": "whatsapp", "messages": [message]}}
    return json.dumps(
        {"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [change]}]}
    ).encode()


def signature(body: bytes, secret: str = APP_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Stack:
    def __init__(self, folder: Path, project: str, port: int) -> None:
        self.folder, self.project, self.port = folder, project, port
        self.doc: dict[str, Any] = {}

    def run(self, *args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any], str]:
        done = nachos(self.folder, *args, "--json", "-o", "out", env={**SECRETS, **(env or {})})
        return done.returncode, json.loads(done.stdout or "{}"), done.stderr

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        """An HTTPS POST to the ingress as Meta sends it, trusting only the root `up` wrote."""
        context = ssl.create_default_context(cafile=str(self.folder / "out" / "ingress-root.crt"))
        connection = http.client.HTTPSConnection("localhost", self.port, timeout=10, context=context)
        try:
            connection.request(
                "POST", path, body=body, headers={"Content-Type": "application/json", **headers}
            )
            response = connection.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            connection.close()


@pytest.fixture
def stack(engine: str, tmp_path: Path) -> Iterator[Stack]:
    project = f"h20w-{uuid.uuid4().hex[:8]}"
    port = free_port()
    document = {
        "project": project,
        "bus": {"client_port": 0, "monitor_port": 0, "healthcheck_interval": "500ms"},
        "state": {"enabled": False},  # the gateway's Redis is another test's subject
        "components": {
            "gateway": {"image": PROBE, "egress": False},
            "llm-proxy": {"enabled": False},
            "whatsapp": {"enabled": True, "image": PROBE, "egress": False},
            "webchat": {"enabled": True, "image": PROBE},  # its page, proven by `up` too
        },
        "ingress": {"http_port": free_port(), "https_port": port},
    }
    (tmp_path / "nachos-deploy.yaml").write_text(yaml.safe_dump(document))
    try:
        yield Stack(tmp_path, project, port)
    finally:
        compose_down(project)


async def listen(nats_url: str, during: Any) -> dict[str, list[dict[str, Any]]]:
    """The operator on the bus (up's NATS URL, with its credentials): what arrives on the channel's
    inbound and outbound subjects while ``during`` (a blocking function) runs, and a moment after."""
    client = await nats.connect(nats_url, allow_reconnect=False, connect_timeout=5)
    got: dict[str, list[dict[str, Any]]] = {INBOUND: [], OUTBOUND: []}
    try:
        for subject, kept in got.items():

            async def keep(msg: Any, kept: list[dict[str, Any]] = kept) -> None:
                kept.append(json.loads(msg.data))

            await client.subscribe(subject, cb=keep)
        await client.flush()
        await asyncio.sleep(0.5)  # interest reaches the sidecars over their leaf connections
        await asyncio.get_running_loop().run_in_executor(None, during)
        for _ in range(50):
            if got[OUTBOUND]:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # anything refused would have arrived by now
    finally:
        await client.close()
    return got


def test_a_signed_webhook_crosses_the_ingress_to_the_bus_and_nothing_else_does(stack: Stack) -> None:
    code, up, err = stack.run("up", "--timeout", "120")
    assert code == 0, err
    url = f"https://localhost:{stack.port}/whatsapp/webhook"
    hooks = {hook["channel"]: hook for hook in up["webhooks"]}
    assert sorted(hooks) == ["webchat", "whatsapp"], up["webhooks"]
    webhook, webchat = hooks["whatsapp"], hooks["webchat"]
    # The webchat's route proven through Caddy by the probe's page (a browser's GET of <URL>/).
    assert (webchat["url"], webchat["proof"], webchat["proven"], webchat["ok"], webchat["status"]) == (
        f"https://localhost:{stack.port}/webchat",
        "webchat-page",
        True,
        True,
        200,
    ), webchat
    doc = (Path(__file__).resolve().parent.parent / "docs" / "json-output.md").read_text()
    assert set(webhook) == set(re.findall(r"^\| webhook \| `(\w+)` \|", doc, re.MULTILINE))
    assert (webhook["channel"], webhook["url"], webhook["proof"], webhook["proven"]) == (
        "whatsapp",
        url,
        "meta-verification",
        True,
    )

    good, forged = event("hello from meta"), event("forged")
    answers: dict[str, tuple[int, dict[str, str], bytes]] = {}

    def post_all() -> None:
        answers["good"] = stack.post("/whatsapp/webhook", good, {"X-Hub-Signature-256": signature(good)})
        answers["forged"] = stack.post(
            "/whatsapp/webhook", forged, {"X-Hub-Signature-256": signature(forged, "not-the-secret")}
        )
        answers["unsigned"] = stack.post("/whatsapp/webhook", forged, {})
        answers["elsewhere"] = stack.post(
            "/whatsapp/webhook2", forged, {"X-Hub-Signature-256": signature(forged)}
        )
        answers["root"] = stack.post("/", forged, {"X-Hub-Signature-256": signature(forged)})

    got = asyncio.run(listen(up["nats_url"], post_all))
    status, headers, body = answers["good"]
    assert (status, json.loads(body)) == (200, {"status": "ok"})
    assert [json.loads(answers[k][2]) for k in ("forged", "unsigned")] == [{"error": "Invalid signature"}] * 2
    assert [answers[k][0] for k in ("forged", "unsigned")] == [403, 403]
    # The ingress's own 404: no body, and no "Via" (what Caddy adds to an answer it forwarded; the
    # channel's own 404 would carry {"error":"Not found"} through it).
    for name in ("elsewhere", "root"):
        status, headers, body = answers[name]
        assert (status, body, "via" in headers) == (404, b"", False), answers[name]
    assert "via" in answers["good"][1]  # ... while the channel's answers come through it
    # Only the signed message reached the bus, and the gateway answered it on the outbound subject.
    assert [m["content"]["text"] for m in got[INBOUND]] == ["hello from meta"], got
    assert got[INBOUND][0]["conversation"]["id"] == "15550002222"
    assert [m["content"]["text"] for m in got[OUTBOUND]] == ["echo: hello from meta"], got

    # status proves the route again; with a token that is not the channel's, it says so.
    code, status_doc, err = stack.run("status")
    assert code == 0 and all(hook["proven"] for hook in status_doc["webhooks"]), status_doc
    code, status_doc, err = stack.run("status", env={"WHATSAPP_VERIFY_TOKEN": "an-old-token"})
    assert code == 1, status_doc
    hooks = {hook["channel"]: hook for hook in status_doc["webhooks"]}
    assert hooks["whatsapp"]["status"] == 403 and hooks["webchat"]["proven"] is True
    assert any("whatsapp" in p and "verify token" in p for p in status_doc["problems"]), status_doc

"""The stack the backup and state-store tests (and benchmarks/backup.py) start from: the probe as the
gateway and as one channel, no LLM proxy, ports chosen by the engine; a client of its bus; and the
traffic its clients make while a backup runs."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from typing import Any

import nats

from nachos_deploy.bus import trust

PROBE = "nachos-deploy/probe:latest"
CHANNEL = "chat"  # a channel of the probe's: the gateway answers its inbound subject
PAYLOAD = 512  # bytes of each audit message: random, so the snapshot is larger than its flow window


def document(project: str) -> dict[str, Any]:
    """The deploy document of ``project``."""
    return {
        "project": project,
        "bus": {"client_port": 0, "monitor_port": 0},
        "components": {
            "gateway": {"image": PROBE, "egress": False},
            "llm-proxy": {"enabled": False},
            CHANNEL: {"role": "channel", "image": PROBE, "egress": False},
        },
    }


async def connect(nats_url: str) -> nats.NATS:
    """A client that fails rather than reconnects, over TLS with the stack's CA for a tls:// bus (Swarm:
    the caller registers the CA with ``trust.trust``)."""
    options: dict[str, Any] = {"connect_timeout": 5, "allow_reconnect": False}
    tls = trust.context(nats_url)
    if tls is not None:
        options.update(tls=tls, tls_handshake_first=True, tls_hostname=trust.server_name(nats_url))
    return await nats.connect(nats_url, **options)


class Load:
    """Acked audit publishes and gateway requests, without pause, in a thread, until stopped: what
    the stack's clients see while a backup runs."""

    def __init__(self, nats_url: str, payload: int = PAYLOAD) -> None:
        self.nats_url = nats_url
        self.payload = payload
        self.acked: dict[int, bytes] = {}
        self.answered = 0
        self.failures: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        client = await connect(self.nats_url)
        js = client.jetstream(timeout=5)
        try:
            while not self.stop.is_set():
                data = os.urandom(self.payload)
                try:
                    ack = await js.publish("nachos.audit.log", data)
                    self.acked[ack.seq] = data
                    reply = await client.request("nachos.gateway.subagents.list", b"{}", timeout=5)
                    assert json.loads(reply.data) == {"ok": True, "runs": []}
                    self.answered += 1
                except Exception as exc:  # every failure is counted, none may happen
                    self.failures.append(repr(exc))
        finally:
            await client.close()

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)

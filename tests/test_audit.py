"""The durable audit stream on the real engine: provisioned by `up`, updated in place, never
recreated; core publishes captured; acked messages survive `down` + `up` and a SIGKILL of the bus."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
import yaml
from nats.js.errors import NoStreamResponseError

from tests.commands import nachos_on
from tests.test_lifecycle import PROBE, containers

BUS_ONLY = {
    "bus": {"client_port": 0, "monitor_port": 0, "healthcheck_interval": "500ms"},
    "ingress": {"enabled": False},  # not this test's subject: no ingress on ports 80/443 (docs/ingress.md)
    "components": {"gateway": {"enabled": False}, "llm-proxy": {"enabled": False}},
}
# One run in `make test` shows the behaviour; `make durability` runs the full counts (10 x 5000).
KILL_RUNS = int(os.environ.get("NACHOS_DURABILITY_RUNS", "1"))
KILL_MESSAGES = int(os.environ.get("NACHOS_DURABILITY_MESSAGES", "3000"))


class Stack:
    def __init__(self, folder: Path, components: dict[str, object] | None = None) -> None:
        self.project = f"ndt-audit-{uuid.uuid4().hex[:8]}"
        self.file = folder / "nachos-deploy.yaml"
        document = {"project": self.project, **BUS_ONLY}
        if components:
            document["components"] = {**BUS_ONLY["components"], **components}
        self.file.write_text(yaml.safe_dump(document))

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return nachos_on(self.file, *args, timeout=180)

    def up(self, *args: str) -> dict[str, object]:
        done = self.run("up", "--json", *args)
        assert done.returncode == 0, done.stdout + done.stderr
        return dict(json.loads(done.stdout))


@pytest.fixture
def stack(engine: str, tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(tmp_path)
    try:
        yield stack
    finally:
        stack.run("down", "--volumes", "--yes")


def audit_of(document: dict[str, object]) -> dict[str, object]:
    bus = document["bus"]
    assert isinstance(bus, dict)
    return dict(bus["audit"])


async def core_publish(url: str, count: int) -> None:
    client = await nats.connect(url)
    for index in range(count):
        await client.publish("nachos.audit.log", f"core {index}".encode())
    await client.flush()
    await client.close()


def test_up_provisions_the_stream_updates_it_in_place_and_never_recreates_it(stack: Stack) -> None:
    first = stack.up()
    assert audit_of(first) == {"stream": "AUDIT", "action": "created", "messages": 0, "bytes": 0}
    # What the platform's components do: plain core publishes on nachos.audit.log are kept.
    asyncio.run(core_publish(str(first["nats_url"]), 5))
    status = json.loads(stack.run("status", "--json").stdout)
    assert status["ok"] is True and status["bus"]["audit"]["messages"] == 5

    assert audit_of(stack.up())["action"] == "unchanged"
    changed = audit_of(stack.up("--set", "bus.audit.max_bytes=2GB"))
    assert changed["action"] == "updated" and changed["messages"] == 5  # the same stream, kept
    refused = stack.run("up", "--set", "bus.audit.max_bytes=2GB", "--set", "bus.audit.storage=memory")
    assert refused.returncode == 3
    assert "bus.audit.storage" in refused.stderr and "cannot change that in place" in refused.stderr
    assert json.loads(stack.run("status", "--json").stdout)["bus"]["audit"]["messages"] == 5


async def acked_publish(url: str, count: int, start: int = 0) -> None:
    client = await nats.connect(url)
    js = client.jetstream(timeout=10)
    for batch in range(start, start + count, 500):
        acks = await asyncio.gather(
            *(
                js.publish("nachos.audit.log", b"acked", headers={"Nats-Msg-Id": f"m{index}"})
                for index in range(batch, min(batch + 500, start + count))
            )
        )
        assert all(ack.stream == "AUDIT" and not ack.duplicate for ack in acks)
    await client.close()


def test_ten_thousand_acked_messages_survive_down_and_up(stack: Stack) -> None:
    asyncio.run(acked_publish(str(stack.up()["nats_url"]), 10_000))
    down = stack.run("down")  # keeps the volumes, as by default
    assert down.returncode == 0 and containers(stack.project) == {}
    assert audit_of(stack.up())["messages"] == 10_000


async def publish_until_killed(
    url: str, count: int, kill: asyncio.Event, prefix: str
) -> tuple[set[str], set[str]]:
    """Publish ``count`` messages with ids one by one; returns (acked ids, ids whose publish failed
    and so may or may not be stored). Sets ``kill`` a third of the way through."""
    client = await nats.connect(url, max_reconnect_attempts=0, allow_reconnect=False)
    js = client.jetstream(timeout=2)
    acked: set[str] = set()
    unsure: set[str] = set()
    for index in range(count):
        if index == count // 3:
            kill.set()
        msg_id = f"{prefix}{index}"
        try:
            await js.publish("nachos.audit.log", b"killed", headers={"Nats-Msg-Id": msg_id})
            acked.add(msg_id)
        except (TimeoutError, NoStreamResponseError, nats.errors.Error):
            unsure.add(msg_id)
            if client.is_closed:
                unsure.update(f"{prefix}{later}" for later in range(index + 1, count))
                break
        await asyncio.sleep(0)
    if not client.is_closed:
        await client.close()
    return acked, unsure


async def stored_ids(url: str, tls: ssl.SSLContext | None = None) -> list[str]:
    """The Nats-Msg-Id of every message AUDIT holds, in order (``tls``: the context of a tls:// bus)."""
    client = await nats.connect(url, tls=tls)
    try:
        js = client.jetstream(timeout=10)
        info = await js.stream_info("AUDIT")
        ids = []
        for sequence in range(info.state.first_seq, info.state.last_seq + 1):
            message = await js.get_msg("AUDIT", sequence)
            ids.append((message.headers or {}).get("Nats-Msg-Id", ""))
        return ids
    finally:
        await client.close()


async def kill_while_publishing(url: str, bus: str, prefix: str) -> tuple[set[str], set[str]]:
    kill = asyncio.Event()
    publisher = asyncio.create_task(publish_until_killed(url, KILL_MESSAGES, kill, prefix))
    await kill.wait()
    await asyncio.to_thread(subprocess.run, ["docker", "kill", "-s", "KILL", bus], check=True)
    return await publisher


def test_a_sigkill_of_the_bus_while_publishing_loses_no_acked_message(stack: Stack) -> None:
    url = str(stack.up()["nats_url"])
    for run in range(KILL_RUNS):
        prefix = f"run{run}-"  # ids stay unique across runs: the duplicate window would drop them
        acked, unsure = asyncio.run(kill_while_publishing(url, containers(stack.project)["bus"], prefix))
        url = str(stack.up()["nats_url"])  # up brings the bus back (and proves it)
        ids = [i for i in asyncio.run(stored_ids(url)) if i.startswith(prefix)]
        assert acked, "nothing was acked before the kill"
        missing = acked - set(ids)
        assert not missing, f"run {run}: {len(missing)} acked message(s) lost"
        assert set(ids) <= acked | unsure  # nothing stored that was never sent
        duplicates = len(ids) - len(set(ids))
        print(f"run {run}: {len(acked)} acked, {len(unsure)} unsure, {len(ids)} stored, {duplicates} dup")


def test_components_audit_publishes_cross_their_sidecars_into_the_stream(engine: str, tmp_path: Path) -> None:
    # llm-proxy may publish nachos.audit.log (its role does); a channel may not, and its sidecar
    # refuses the publish, so only llm-proxy's three records are stored.
    probe = {"image": PROBE, "egress": False}
    stack = Stack(
        tmp_path,
        {
            "llm-proxy": {**probe, "environment": {"PROBE_AUDIT_AT_START": "3"}},
            "webchat": {**probe, "enabled": True, "environment": {"PROBE_AUDIT_AT_START": "2"}},
        },
    )
    try:
        stack.up()
        messages = None
        for _ in range(50):  # the probes publish once connected, which up has just seen
            status = json.loads(stack.run("status", "--json").stdout)
            messages = status["bus"]["audit"]["messages"]
            if messages >= 3:
                break
            time.sleep(0.1)
        time.sleep(0.5)  # room for a wrong extra record to arrive
        status = json.loads(stack.run("status", "--json").stdout)
        assert status["bus"]["audit"]["messages"] == 3, status["bus"]["audit"]
        logs = stack.run("logs", "bus-webchat").stdout
        assert "Publish Violation" in logs or "Permissions Violation" in logs, logs[-2000:]
    finally:
        stack.run("down", "--volumes", "--yes")

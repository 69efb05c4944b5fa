"""`credentials rotate` on a running stack, on the real engine: what a component sees.

While the passwords change, a component keeps requesting another component and publishing acked
audit records through its sidecar (a client inside its container, as the platform's components
are), and the host does the same through the bus's published port with the operator's connection
made before the rotation. Every request must be answered, no acked record lost, and no component
container restarted; afterwards the hub refuses the old operator password and every old leaf login.
The figures printed here are the ones docs/security.md quotes.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
import yaml
from nats.aio.client import Client

from nachos_deploy.bus.natsclient import login_refusal
from nachos_deploy.io import credentials
from tests.commands import cli, compose_down

pytestmark = pytest.mark.engine

PROBE = "nachos-deploy/probe:latest"
REQUEST = "nachos.llm.request"  # the gateway may request it; llm-proxy answers it
AUDIT = "nachos.audit.log"
PAUSE = 0.01  # seconds between two rounds of the load (a request, then an acked publish)
RETRY_AFTER = 0.1  # seconds before a failed request or publish is tried again
GIVE_UP = 2.0  # seconds after its first failure when a request or publish counts as failed

# Runs inside the gateway's container (the probe image's Python and nats-py), on its sidecar, as the
# platform's gateway is connected: until its stdin closes, then one JSON line of counts. A request or
# publish that fails is tried again every RETRY_AFTER for up to GIVE_UP (a publish with the same
# Nats-Msg-Id, so it is stored once); "late" is the longest time from a first try that failed to the
# answer.
COMPONENT_LOAD = """
import asyncio, json, sys, threading, time, nats
async def main():
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    client = await nats.connect(sys.argv[1], max_reconnect_attempts=-1, reconnect_time_wait=0.05)
    js = client.jetstream(timeout=1)
    counts = {"answered": 0, "retried": 0, "failed": 0, "acked": [], "unacked": 0, "errors": [], "late": 0.0}
    async def retrying(what, step):
        first, started = None, time.monotonic()
        while first is None or time.monotonic() - first < float(sys.argv[6]):
            try:
                await step()
                if first is not None:
                    counts["late"] = max(counts["late"], time.monotonic() - started)
                return True
            except Exception as exc:
                counts["errors"].append(f"{what} at {time.time():.3f}: {type(exc).__name__} {exc}")
                counts["retried"] += first is None
                first = first or time.monotonic()
                await asyncio.sleep(float(sys.argv[5]))
        return False
    print("ready", flush=True)
    index = 0
    while not stop.is_set():
        index += 1
        if await retrying("request", lambda: client.request(sys.argv[2], b"{}", timeout=1)):
            counts["answered"] += 1
        else:
            counts["failed"] += 1
        msg_id = f"component-{index}"
        headers = {"Nats-Msg-Id": msg_id}
        if await retrying("publish", lambda: js.publish(sys.argv[3], b"rotation", headers=headers)):
            counts["acked"].append(msg_id)
        else:
            counts["unacked"] += 1
        await asyncio.sleep(float(sys.argv[4]))
    await client.close()
    print(json.dumps(counts), flush=True)
asyncio.run(main())
"""


def container_runs(project: str) -> dict[str, tuple[str, str, int]]:
    """Service → (container id, start time, restart count) of the project's running containers."""
    ids = subprocess.run(
        ["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={project}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    inspected = json.loads(
        subprocess.run(["docker", "inspect", *ids], capture_output=True, text=True, check=True).stdout
    )
    return {
        c["Config"]["Labels"]["com.docker.compose.service"]: (
            c["Id"],
            c["State"]["StartedAt"],
            c["RestartCount"],
        )
        for c in inspected
    }


class HostLoad(threading.Thread):
    """The host's side of the load, as a CI job does it: an operator connection, requesting llm-proxy
    and publishing acked audit records until stopped. The rotation closes a connection logged in
    with the old password; the job then connects again with the current URL (what `nachos-deploy
    env` prints), and a request or publish that failed is tried again as the component's are."""

    def __init__(self, nats_url: str, output: Path) -> None:
        super().__init__(daemon=True)
        parts = urllib.parse.urlsplit(nats_url)
        self.base = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
        self.output = output
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.counts: dict[str, Any] = {
            "answered": 0,
            "retried": 0,
            "failed": 0,
            "acked": [],
            "unacked": 0,
            "errors": [],
            "logins": 0,
            "refused": 0,
            "late": 0.0,
        }

    def run(self) -> None:
        asyncio.run(self._load())

    async def _connected(self, client: Client | None) -> Client:
        if client is not None and client.is_connected:
            return client
        login = credentials.load(self.output)
        assert login is not None
        try:
            client = await nats.connect(
                login.operator_url(self.base), allow_reconnect=False, connect_timeout=1
            )
        except Exception:
            self.counts["refused"] += 1
            raise
        self.counts["logins"] += 1
        return client

    async def _retrying(self, what: str, client: Client | None, step: Any) -> tuple[bool, Client | None]:
        first: float | None = None
        started = time.monotonic()
        while first is None or time.monotonic() - first < GIVE_UP:
            try:
                client = await self._connected(client)
                await step(client)
                if first is not None:
                    self.counts["late"] = max(self.counts["late"], time.monotonic() - started)
                return True, client
            except Exception as exc:  # every failure is a finding: counted and shown
                self.counts["errors"].append(f"{what} at {time.time():.3f}: {type(exc).__name__} {exc}")
                self.counts["retried"] += first is None
                first = first or time.monotonic()
                await asyncio.sleep(RETRY_AFTER)
        return False, client

    async def _load(self) -> None:
        client: Client | None = await self._connected(None)
        self.ready.set()
        index = 0
        while not self.stop.is_set():
            index += 1
            ok, client = await self._retrying(
                "request", client, lambda c: c.request(REQUEST, b"{}", timeout=1)
            )
            self.counts["answered" if ok else "failed"] += 1
            msg_id = f"host-{index}"

            ok, client = await self._retrying("publish", client, publisher(msg_id))
            if ok:
                self.counts["acked"].append(msg_id)
            else:
                self.counts["unacked"] += 1
            await asyncio.sleep(PAUSE)
        if client is not None:
            await client.close()


def publisher(msg_id: str) -> Any:
    """One acked audit publish under ``msg_id``, as a step :meth:`HostLoad._retrying` can try again."""

    async def publish(client: Client) -> None:
        await client.jetstream(timeout=1).publish(AUDIT, b"rotation", headers={"Nats-Msg-Id": msg_id})

    return publish


async def stored_ids(nats_url: str) -> set[str]:
    client = await nats.connect(nats_url)
    try:
        js = client.jetstream(timeout=10)
        info = await js.stream_info("AUDIT")
        ids = set()
        for sequence in range(info.state.first_seq, info.state.last_seq + 1):
            message = await js.get_msg("AUDIT", sequence)
            ids.add((message.headers or {}).get("Nats-Msg-Id", ""))
        return ids
    finally:
        await client.close()


@pytest.fixture(params=[1, 3], ids=["one-node", "three-nodes"])
def stack(engine: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Path, str]]:
    """A bus of one node, or of three (each node reloads; sidecars may be logged in at any of them)."""
    project = f"ndt-rot-{uuid.uuid4().hex[:8]}"
    file = tmp_path / "nachos-deploy.yaml"
    # The components' proof is the bus here (their own healthchecks are another test's subject).
    component = {"image": PROBE, "egress": False, "healthcheck": False}
    file.write_text(
        yaml.safe_dump(
            {
                "project": project,
                "output": "out",
                "bus": {
                    "client_port": 0,
                    "monitor_port": 0,
                    "healthcheck_interval": "500ms",
                    "nodes": request.param,
                },
                # The state store's password reaches the gateway only at its start, so its rotation
                # recreates the gateway (docs/state-store.md): tested there; hitless is the bus's.
                "state": {"enabled": False},
                "components": {"gateway": component, "llm-proxy": component},
            }
        )
    )
    try:
        yield file, project
    finally:
        compose_down(project)


def test_rotation_is_hitless_for_the_components(stack: tuple[Path, str]) -> None:
    file, project = stack
    code, out, err = cli("up", "-c", str(file), "--json", "--timeout", "90")
    assert code == 0, out + err
    old_url = json.loads(out)["nats_url"]
    before = container_runs(project)

    host = HostLoad(old_url, file.parent / "out")
    host.start()
    assert host.ready.wait(10)
    component = subprocess.Popen(
        [
            *("docker", "exec", "-i", f"{project}-gateway-1", "python3", "-c", COMPONENT_LOAD),
            *("nats://bus-gateway:4222", REQUEST, AUDIT, str(PAUSE), str(RETRY_AFTER), str(GIVE_UP)),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert component.stdout is not None and component.stdout.readline().strip() == "ready"
    time.sleep(0.5)  # some load before the change

    started = time.monotonic()
    code, out, err = cli("credentials", "rotate", "-c", str(file))
    took = time.monotonic() - started
    assert code == 0, out + err
    assert "took them in place" in out, out
    time.sleep(0.5)  # and some after it

    host.stop.set()
    host.join(10)
    remaining, errors = component.communicate("", timeout=20)
    assert component.returncode == 0, errors
    inside: dict[str, Any] = json.loads(remaining.strip().splitlines()[-1])

    code, out, err = cli("status", "-c", str(file), "--json")
    assert code == 0, out + err
    new_url = json.loads(out)["nats_url"]
    stored = asyncio.run(stored_ids(new_url))
    lost = {
        "component": sorted(set(inside["acked"]) - stored),
        "host": sorted(set(host.counts["acked"]) - stored),
    }
    figures = (
        f"rotate took {took:.2f} s; component: {inside['answered']} requests answered ({inside['retried']} "
        f"failed first, longest wait {inside['late'] * 1000:.0f} ms), {inside['failed']} not; "
        f"{len(inside['acked'])} publishes acked, {inside['unacked']} not; host: {host.counts['answered']} "
        f"answered ({host.counts['retried']} failed first, "
        f"longest wait {host.counts['late'] * 1000:.0f} ms), "
        f"{host.counts['failed']} not; {len(host.counts['acked'])} acked, {host.counts['unacked']} not, "
        f"{host.counts['logins']} logins, {host.counts['refused']} refused; "
        f"acked lost: {sum(map(len, lost.values()))}"
    )
    print(figures, inside["errors"], host.counts["errors"])
    assert inside["failed"] == 0 and inside["unacked"] == 0, figures
    assert host.counts["failed"] == 0 and host.counts["unacked"] == 0, figures
    # A request crossing a sidecar in the moment it logs in again can be lost (see docs/security.md):
    # a handful at most, each answered when tried again.
    assert inside["retried"] <= 3 and host.counts["retried"] <= 3, figures
    assert host.counts["logins"] <= 2, figures  # the operator's connection is closed once, at most
    # On three nodes the reloads land one after another: the host's new login can reach a node that
    # does not know the new password yet, refused there, and the next try another (docs/security.md).
    nodes = yaml.safe_load(file.read_text())["bus"]["nodes"]
    assert host.counts["refused"] <= (0 if nodes == 1 else 2), figures
    assert inside["answered"] > 30 and host.counts["answered"] > 30, figures  # the load ran throughout
    assert lost == {"component": [], "host": []}, figures

    # The components were not touched; the servers reloaded in place (same containers too).
    assert container_runs(project) == before

    # The old operator password and every old leaf login are refused; the new one works.
    old_password = urllib.parse.urlsplit(old_url).password
    assert old_password and old_password not in new_url
    assert "Authorization Violation" in (login_refusal(old_url) or "")
    assert login_refusal(new_url) is None

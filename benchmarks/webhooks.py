"""What a webhook costs on its way in: host -> ingress (HTTPS) -> whatsapp channel -> its inbound subject.

Brings up a stack of the whatsapp channel (the probe) behind the ingress (Caddy, internal TLS, on
free loopback ports) with its bus sidecar, then posts signed WhatsApp events one at a time, each with
its own text, and times each from the moment the POST is sent to the moment the operator, subscribed
from the host on nachos.channel.whatsapp.inbound (through bus-ports, with the operator's
credentials), receives the message it became. ``--posts`` per row (1,000 by default), after
``--warm-up`` posts that are not counted. Rows:

- ``via the ingress (HTTPS, kept alive)``: what a provider with a connection pool costs, as Meta's
  webhook delivery does: host -> docker-proxy -> Caddy (TLS 1.3, HTTP/1.1) -> channel;
- ``via the ingress (HTTPS, new connection each)``: the same with a TCP and TLS handshake per post
  (``--fresh`` posts of them, 200 by default);
- ``via the ingress (20 posts a second)``: ``--paced`` posts at ``--rate`` a second, a chat's pace
  rather than a flood's, measured first (a row at full rate spends the channel sidecar's CPU quota,
  its flood cap);
- ``straight to the channel (plain HTTP, the floor)``: the anchor, no ingress and no TLS: a POST to the
  channel's own port at its address on its ingress network (the host reaches bridge addresses), kept
  alive. What is left is the channel, its sidecar, the hub, bus-ports and the host's NATS client.

Each row also gives the HTTP answer's own p50/p99 (the POST until its 200), and the run the
kernel's count of the periods in which the channel's sidecar was throttled. Prints figures; no
pass/fail (issue 20's goal: p99 under 10 ms through the ingress). Usage:

    .venv/bin/python benchmarks/webhooks.py [--posts 1000] [--warm-up 50] [--fresh 200]
        [--paced 300] [--rate 20]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import http.client
import json
import os
import socket
import ssl
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nats
from nats.aio.msg import Msg

from nachos_deploy.core.errors import DeployError
from nachos_deploy.io.stack import prepare
from nachos_deploy.lifecycle import down as teardown
from nachos_deploy.lifecycle import up as lifecycle
from tests import floods
from tests.commands import container

INBOUND = "nachos.channel.whatsapp.inbound"
PATH = "/whatsapp/webhook"
APP_SECRET = f"bench-app-secret-{uuid.uuid4().hex[:8]}"
SECRETS = {
    "WHATSAPP_TOKEN": "bench-token",
    "WHATSAPP_PHONE_NUMBER_ID": "1234",
    "WHATSAPP_VERIFY_TOKEN": f"bench-verify-{uuid.uuid4().hex[:8]}",
    "WHATSAPP_APP_SECRET": APP_SECRET,
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True).stdout.strip()


def event(text: str) -> bytes:
    message = {"from": "15550003333", "id": f"wamid.{text}", "type": "text", "text": {"body": text}}
    change = {"field": "messages", "value": {"messages": [message]}}
    return json.dumps({"object": "whatsapp_business_account", "entry": [{"changes": [change]}]}).encode()


def signed(body: bytes) -> dict[str, str]:
    digest = hmac.new(APP_SECRET.encode(), body, hashlib.sha256).hexdigest()
    return {"Content-Type": "application/json", "X-Hub-Signature-256": f"sha256={digest}"}


@dataclass
class Row:
    name: str
    round_trip: list[float] = field(default_factory=list)  # ms, POST sent -> inbound message received
    answer: list[float] = field(default_factory=list)  # ms, POST sent -> its 200 read


class Inbound:
    """The operator's subscription on the inbound subject, in its own event loop thread."""

    def __init__(self, nats_url: str) -> None:
        self.arrived: dict[str, float] = {}
        self.cond = threading.Condition()
        self.ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.stop: asyncio.Event | None = None
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._run(nats_url),))
        self.thread.start()
        if not self.ready.wait(20):
            raise SystemExit("the operator could not subscribe on the bus")

    async def _run(self, nats_url: str) -> None:
        self.stop = asyncio.Event()
        client = await nats.connect(nats_url, allow_reconnect=False)

        async def keep(msg: Msg) -> None:
            now = time.perf_counter()
            text = json.loads(msg.data)["content"]["text"]
            with self.cond:
                self.arrived[text] = now
                self.cond.notify_all()

        await client.subscribe(INBOUND, cb=keep)
        await client.flush()
        await asyncio.sleep(0.5)  # interest reaches the channel's sidecar over its leaf connection
        self.ready.set()
        await self.stop.wait()
        await client.close()

    def wait(self, text: str, timeout: float = 10.0) -> float:
        with self.cond:
            if not self.cond.wait_for(lambda: text in self.arrived, timeout):
                raise SystemExit(f"{text!r} never reached {INBOUND}")
            return self.arrived.pop(text)

    def close(self) -> None:
        assert self.stop is not None
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(10)


Connect = Callable[[], http.client.HTTPConnection]


def measure(
    row: Row, connect: Connect, inbound: Inbound, posts: int, warm_up: int, *, fresh: bool, rate: float = 0.0
) -> Row:
    """``rate`` posts a second, each at its own slot; 0: each as soon as the one before arrived."""
    connection: http.client.HTTPConnection | None = None
    start = time.perf_counter()
    for index in range(warm_up + posts):
        if rate:
            time.sleep(max(0.0, start + index / rate - time.perf_counter()))
        if connection is None or fresh:
            if connection is not None:
                connection.close()
            connection = connect()
        text = f"{row.name[:12]}-{index}-{uuid.uuid4().hex[:6]}"
        body = event(text)
        headers = signed(body)
        sent = time.perf_counter()
        connection.request("POST", PATH, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        answered = time.perf_counter()
        if response.status != 200:
            raise SystemExit(f"{row.name}: POST answered {response.status}")
        arrived = inbound.wait(text)
        if index >= warm_up:
            row.answer.append((answered - sent) * 1000)
            row.round_trip.append((arrived - sent) * 1000)
    if connection is not None:
        connection.close()
    return row


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def report(rows: list[Row]) -> None:
    width = max(len(row.name) for row in rows) + 2
    heads = f"{'posts':>7}{'round trip p50 / p99 / max ms':>32}{'HTTP answer p50 / p99 ms':>27}{'mean ms':>9}"
    print(f"{'':{width}}{heads}")
    for row in rows:
        trip = (
            f"{percentile(row.round_trip, 0.5):.2f} / {percentile(row.round_trip, 0.99):.2f}"
            f" / {max(row.round_trip):.1f}"
        )
        answer = f"{percentile(row.answer, 0.5):.2f} / {percentile(row.answer, 0.99):.2f}"
        mean = statistics.fmean(row.round_trip)
        print(f"{row.name:{width}}{len(row.round_trip):>7}{trip:>32}{answer:>27}{mean:>9.2f}")


def throttling(project: str) -> str:
    """The kernel's count of the CPU periods in which the channel's sidecar ran out of its quota
    (``cpus``): why a message can wait for the next period."""
    stat = floods.cpu_stat(project, "bus-whatsapp")
    periods = f"{stat['nr_throttled']} of {stat['nr_periods']} periods"
    seconds = stat.get("throttled_time", 0) / 1e9 or stat.get("throttled_usec", 0) / 1e6  # cgroup v1, v2
    return f"throttled in {periods}, {seconds:.1f} s in all"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=1000, help="posts counted per row")
    parser.add_argument("--warm-up", type=int, default=50, help="posts per row before counting")
    parser.add_argument("--fresh", type=int, default=200, help="posts of the new-connection row (0: skip)")
    parser.add_argument("--paced", type=int, default=300, help="posts of the paced row (0: skip)")
    parser.add_argument("--rate", type=float, default=20.0, help="posts a second in the paced row")
    args = parser.parse_args()
    os.environ.update(SECRETS)  # the channel's secrets, as an operator exports them

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        project = f"bench-wh-{uuid.uuid4().hex[:8]}"
        https_port = free_port()
        (folder / "nachos-deploy.yaml").write_text(
            f"project: {project}\n"
            "bus: {client_port: 0, monitor_port: 0}\n"
            "state: {enabled: false}\n"
            "components:\n"
            "  gateway: {enabled: false}\n"
            "  llm-proxy: {enabled: false}\n"
            "  whatsapp: {enabled: true, image: 'nachos-deploy/probe:latest', egress: false}\n"
            f"ingress: {{http_port: {free_port()}, https_port: {https_port}}}\n"
        )
        stack = prepare(folder / "nachos-deploy.yaml", cwd=folder, environ=dict(os.environ))
        inbound: Inbound | None = None
        print(f"load average before (1, 5, 15 min): {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
        try:
            started = time.monotonic()
            result = lifecycle.up(stack, timeout=120)
            print(f"up: {time.monotonic() - started:.1f} s; webhook {result.webhooks[0].url} proven")
            ingress = stack.plan.ingress
            assert ingress is not None and ingress.root_cert_file is not None
            context = ssl.create_default_context(cafile=str(stack.output_dir / ingress.root_cert_file))
            route = ingress.routes[0]
            channel = docker("ps", "-q", "--filter", f"label=com.docker.compose.project={project}",
                             "--filter", "label=com.docker.compose.service=whatsapp")  # fmt: skip
            template = f'{{{{(index .NetworkSettings.Networks "{project}_{route.network}").IPAddress}}}}'
            address = docker("inspect", "-f", template, channel)
            inbound = Inbound(result.endpoints.nats_url)
            sidecar = container(project, "bus-whatsapp")
            period = docker("inspect", "-f", "{{.HostConfig.NanoCpus}} {{.HostConfig.CpuPeriod}} "
                            "{{.HostConfig.CpuQuota}}", sidecar)  # fmt: skip
            print(f"the channel's sidecar: NanoCpus, CpuPeriod, CpuQuota {period}; {throttling(project)}")

            def via_ingress() -> http.client.HTTPConnection:
                return http.client.HTTPSConnection("localhost", https_port, timeout=10, context=context)

            def straight() -> http.client.HTTPConnection:
                return http.client.HTTPConnection(address, route.upstream_port, timeout=10)

            # The paced row first: a row at full rate spends the sidecar's CPU quota (the channel's
            # flood cap) and a row after it would start throttled, which a chat's pace never is.
            paced = (
                [measure(Row(f"via the ingress ({args.rate:g} posts a second)"), via_ingress, inbound,
                         args.paced, args.warm_up, fresh=False, rate=args.rate)]
                if args.paced
                else []
            )  # fmt: skip
            rows = [
                measure(Row("via the ingress (HTTPS, kept alive)"), via_ingress, inbound, args.posts,
                        args.warm_up, fresh=False),
                *paced,
                measure(Row("straight to the channel (plain HTTP, the floor)"), straight, inbound,
                        args.posts, args.warm_up, fresh=False),
            ]  # fmt: skip
            if args.fresh:
                rows.insert(
                    1,
                    measure(Row("via the ingress (HTTPS, new connection each)"), via_ingress, inbound,
                            args.fresh, min(args.warm_up, 10), fresh=True),
                )  # fmt: skip
            probe = ssl.create_default_context(cafile=str(stack.output_dir / ingress.root_cert_file))
            with (
                socket.create_connection(("127.0.0.1", https_port)) as raw,
                probe.wrap_socket(raw, server_hostname="localhost") as sock,
            ):
                cipher = sock.cipher()
                negotiated = f"{sock.version()}, {cipher[0] if cipher else 'no cipher'}"
            print(f"TLS with the ingress: {negotiated}; channel at {address}:{route.upstream_port}")
            report(rows)
            print(f"the channel's sidecar after the rows: {throttling(project)}")
            print(f"load average after (1, 5, 15 min): {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
            memory = docker("stats", "--no-stream", "--format", "{{.Name}} {{.MemUsage}}")
            for line in memory.splitlines():
                if line.startswith(f"{project}-ingress") or line.startswith(f"{project}-whatsapp"):
                    print(f"memory after: {line}")
        finally:
            if inbound is not None:
                inbound.close()
            teardown.down(stack, volumes=True)


if __name__ == "__main__":
    try:
        main()
    except DeployError as exc:  # the stack did not come up: said as nachos-deploy says it, no traceback
        raise SystemExit(f"benchmark not run: {exc.message}") from None

"""What TLS on the bus's client port costs, through the forwarder (bus-ports), against plaintext.

Brings up two bus-only stacks on engine-picked loopback ports, one with ``bus.tls.mode: off`` and one
with ``on`` (nachos-deploy's own CA), and measures from the host, through docker-proxy and bus-ports:

- connect: a nats-py client from TCP connect to its first PONG (CONNECT accepted), ``--connects``
  times, p50 / p99: plaintext; TLS handshake first (how the host's own clients connect: nothing in
  clear); TLS after the server's INFO (NATS's usual order, what a client gets without
  ``tls_handshake_first``: the hub's ``handshake_first: auto`` sends it the INFO after 50 ms);
- request/reply: ``--requests`` requests of ``--size`` bytes, one in flight, requester and responder
  each on its own connection through the forwarder, p50 / p99.

Prints the figures side by side; no pass/fail. Usage:

    .venv/bin/python benchmarks/bus_tls.py [--connects 100] [--requests 2000] [--size 128]
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import statistics
import time
import uuid
from dataclasses import dataclass
from typing import Any

import nats

from nachos_deploy.interfaces import api

BUS: dict[str, object] = {"client_port": 0, "monitor_port": 0, "healthcheck_interval": "500ms"}
BUS_ONLY: dict[str, object] = {
    "bus": BUS,
    "components": {"gateway": {"enabled": False}, "llm-proxy": {"enabled": False}},
}


@dataclass
class Figures:
    connect: list[float]
    requests: list[float]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def connect_times(url: str, tls: ssl.SSLContext | None, first: bool, count: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        client = await nats.connect(
            url, tls=tls, tls_handshake_first=first, allow_reconnect=False, max_reconnect_attempts=1
        )
        await client.flush()  # the first PONG: CONNECT was accepted
        times.append((time.perf_counter() - started) * 1000)
        await client.close()
    return times


async def request_times(url: str, tls: ssl.SSLContext | None, count: int, size: int) -> list[float]:
    options: dict[str, Any] = {"tls": tls, "tls_handshake_first": tls is not None, "allow_reconnect": False}
    responder = await nats.connect(url, **options)
    requester = await nats.connect(url, **options)
    subject = f"bench.tls.{uuid.uuid4().hex[:8]}"

    async def echo(msg: Any) -> None:
        await msg.respond(msg.data)

    await responder.subscribe(subject, cb=echo)
    await responder.flush()
    payload = b"x" * size
    for _ in range(50):  # warm up
        await requester.request(subject, payload, timeout=5)
    times = []
    for _ in range(count):
        started = time.perf_counter()
        await requester.request(subject, payload, timeout=5)
        times.append((time.perf_counter() - started) * 1000)
    await requester.close()
    await responder.close()
    return times


def row(label: str, values: list[float]) -> str:
    return f"  {label:<42} p50 {statistics.median(values):7.2f} ms   p99 {percentile(values, 0.99):7.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connects", type=int, default=100)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()
    tag = uuid.uuid4().hex[:6]
    plain = api.start({**BUS_ONLY, "project": f"bench-plain-{tag}"})
    try:
        secure = api.start({**BUS_ONLY, "project": f"bench-tls-{tag}", "bus": {**BUS, "tls": {"mode": "on"}}})
        try:
            assert secure.nats_url.startswith("tls://") and secure.ca_file
            trusted = ssl.create_default_context(cafile=secure.ca_file)
            connects = {
                "plaintext": asyncio.run(connect_times(plain.nats_url, None, False, args.connects)),
                "TLS, handshake first (the host's clients)": asyncio.run(
                    connect_times(secure.nats_url, trusted, True, args.connects)
                ),
                "TLS after INFO (a client's default)": asyncio.run(
                    connect_times(secure.nats_url, trusted, False, args.connects)
                ),
            }
            requests = {
                "plaintext": asyncio.run(request_times(plain.nats_url, None, args.requests, args.size)),
                "TLS": asyncio.run(request_times(secure.nats_url, trusted, args.requests, args.size)),
            }
        finally:
            secure.stop()
    finally:
        plain.stop()
    print(f"Connect (TCP connect to first PONG), {args.connects} each, through docker-proxy and bus-ports:")
    for label, values in connects.items():
        print(row(label, values))
    print(f"Request/reply, {args.size} B, {args.requests} each, one in flight, through bus-ports:")
    for label, values in requests.items():
        print(row(label, values))


if __name__ == "__main__":
    main()

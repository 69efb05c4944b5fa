"""Measure the bus against its targets: start < 2 s, p99 < 10 ms, memory < 50 MB.

Runs on the real engine with a throwaway project on engine-picked loopback ports, and prints figures
(no pass/fail assertions: compare them with the targets). Usage:

    .venv/bin/python benchmarks/bus.py [--runs 5] [--requests 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import nats
from nats.aio.msg import Msg

from nachos_deploy.docker import engine
from nachos_deploy.io.stack import prepare
from nachos_deploy.lifecycle import down as teardown
from nachos_deploy.lifecycle import up as lifecycle
from nachos_deploy.targets.compose import compose_client


async def round_trips(nats_url: str, count: int) -> list[float]:
    """Request/reply through the bus container between two host clients; milliseconds each."""
    responder = await nats.connect(nats_url, allow_reconnect=False)
    requester = await nats.connect(nats_url, allow_reconnect=False)
    try:

        async def answer(msg: Msg) -> None:
            await msg.respond(msg.data)

        await responder.subscribe("bench.echo", cb=answer)
        await responder.flush()
        samples = []
        for _ in range(count):
            start = time.perf_counter()
            await requester.request("bench.echo", b"x" * 128, timeout=2)
            samples.append((time.perf_counter() - start) * 1000)
        return samples
    finally:
        await requester.close()
        await responder.close()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "nachos-deploy.yaml").write_text(
            f"project: bench-{uuid.uuid4().hex[:8]}\n"
            "bus: {client_port: 0, monitor_port: 0}\n"
            "components: {gateway: {enabled: false}, llm-proxy: {enabled: false}}\n"
        )
        stack = prepare(folder / "nachos-deploy.yaml", cwd=folder, environ={})
        starts, downs, gates = [], [], []
        samples: list[float] = []
        memory = forwarder = None
        try:
            for run in range(args.runs):
                result = lifecycle.up(stack, timeout=60)
                starts.append(result.phases["total"])
                gates.append(result.phases["bus"])
                if run == 0:
                    samples = asyncio.run(round_trips(result.endpoints.nats_url, args.requests))
                    with compose_client(stack) as client:
                        states = engine.states(client)
                    memory = engine.container_memory(states["bus"].container)
                    forwarder = engine.container_memory(states["bus-ports"].container)
                mark = time.monotonic()
                teardown.down(stack, volumes=True)
                downs.append(time.monotonic() - mark)
        finally:
            teardown.down(stack, volumes=True)

    print(
        f"bus-only stack, `up` to proven healthy (median of {args.runs}): "
        f"{statistics.median(starts):.2f} s total, {statistics.median(gates):.2f} s bus phase "
        f"(target < 2 s)"
    )
    print(
        f"request/reply through the bus, {len(samples)} requests: p50 {percentile(samples, 0.5):.3f} ms, "
        f"p99 {percentile(samples, 0.99):.3f} ms, max {max(samples):.3f} ms (target p99 < 10 ms)"
    )
    if memory is not None:
        print(f"bus container memory after the requests: {memory / 1024**2:.1f} MiB (target < 50 MB)")
    if forwarder is not None:
        print(f"port forwarder (bus-ports) memory: {forwarder / 1024**2:.1f} MiB")
    print(f"down --volumes (median): {statistics.median(downs):.2f} s")


if __name__ == "__main__":
    main()

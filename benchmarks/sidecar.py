"""What the security layout costs: the same stack with bus.auth on (a sidecar per component) and off.

For each mode: a cold `up` of four probe components (gateway, llm-proxy, a channel, a tool) under the
defaults plus an echo responder, request/reply from the host to that responder (through the hub and,
with auth, its sidecar), containers, and memory per sidecar. Prints figures; no pass/fail. Usage:

    .venv/bin/python benchmarks/sidecar.py [--requests 2000]
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
from bus import percentile  # benchmarks/ is on sys.path when this file runs

from nachos_deploy.docker import engine
from nachos_deploy.io.stack import prepare
from nachos_deploy.lifecycle import down as teardown
from nachos_deploy.lifecycle import up as lifecycle
from nachos_deploy.targets.compose import compose_client

PROBE = "nachos-deploy/probe:latest"


async def round_trips(nats_url: str, count: int) -> list[float]:
    client = await nats.connect(nats_url, allow_reconnect=False)
    try:
        samples = []
        for _ in range(count):
            start = time.perf_counter()
            await client.request("bench.echo", b"x" * 128, timeout=2)
            samples.append((time.perf_counter() - start) * 1000)
        return samples
    finally:
        await client.close()


def measure(auth: bool, requests: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "nachos-deploy.yaml").write_text(
            f"project: bench-sc-{uuid.uuid4().hex[:8]}\n"
            f"bus: {{client_port: 0, monitor_port: 0, auth: {str(auth).lower()}}}\n"
            "components:\n"
            f"  gateway: {{image: {PROBE}, egress: false}}\n"
            f"  llm-proxy: {{image: {PROBE}, egress: false}}\n"
            f"  telegram: {{enabled: true, image: {PROBE}, egress: false}}\n"
            f"  filesystem: {{enabled: true, image: {PROBE}}}\n"
            f"  echo: {{image: {PROBE}, healthcheck: false, environment: {{PROBE_SUBJECTS: bench.echo}},\n"
            "          permissions: {respond: [bench.echo]}}\n"
        )
        stack = prepare(folder / "nachos-deploy.yaml", cwd=folder, environ={"TELEGRAM_BOT_TOKEN": "x"})
        try:
            teardown.down(stack, volumes=True)
            result = lifecycle.up(stack, timeout=120)
            samples = asyncio.run(round_trips(result.endpoints.nats_url, requests))
            with compose_client(stack) as client:
                states = engine.states(client)
            names = {sidecar.service.name for sidecar in stack.plan.sidecars}
            sidecars = [s for name, s in states.items() if name in names]
            memory = [engine.container_memory(s.container) or 0 for s in sidecars]
        finally:
            teardown.down(stack, volumes=True)
    mode = "auth on, sidecars" if auth else "auth off, open bus"
    print(
        f"{mode}: {len(states)} containers, cold up {result.phases['total']:.2f} s "
        f"(components phase {result.phases['components']:.2f} s)"
    )
    print(
        f"  request/reply host -> echo component, {requests}: p50 {percentile(samples, 0.5):.3f} ms, "
        f"p99 {percentile(samples, 0.99):.3f} ms"
    )
    if memory:
        print(
            f"  sidecar memory: median {statistics.median(memory) / 1024**2:.1f} MiB, "
            f"max {max(memory) / 1024**2:.1f} MiB, total {sum(memory) / 1024**2:.1f} MiB"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    for auth in (False, True):
        measure(auth, args.requests)


if __name__ == "__main__":
    main()

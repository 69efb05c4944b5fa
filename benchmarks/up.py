"""Measure a cold `up` of four components under the defaults (goal: under 10 s on 2 cores).

The four are the probe playing gateway, llm-proxy, a channel and the filesystem tool, each with
nothing set about its health: the gateway's rendered `node -e fetch(/health)` check runs, the
others' image check (30 s, never passing, as the platform's filesystem tool ships) is switched off
by the defaults, and the gateway writes its database to a fresh volume as uid 1001. Each run starts
from nothing (`down --volumes` before it) and prints the phases; a warm `up` on the running stack is
measured too. No pass/fail: compare with the goal. Usage:

    .venv/bin/python benchmarks/up.py [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from nachos_deploy.io.stack import prepare
from nachos_deploy.lifecycle import up as lifecycle
from nachos_deploy.lifecycle.down import down

PROBE = "nachos-deploy/probe:latest"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "nachos-deploy.yaml").write_text(
            f"project: bench-up-{uuid.uuid4().hex[:8]}\n"
            "bus: {client_port: 0, monitor_port: 0}\n"
            "components:\n"
            f"  gateway: {{image: {PROBE}, egress: false}}\n"
            f"  llm-proxy: {{image: {PROBE}, egress: false}}\n"
            f"  telegram: {{enabled: true, image: {PROBE}, egress: false}}\n"
            f"  filesystem: {{enabled: true, image: {PROBE}}}\n"
        )
        stack = prepare(folder / "nachos-deploy.yaml", cwd=folder, environ={"TELEGRAM_BOT_TOKEN": "x"})
        colds: list[dict[str, float]] = []
        warms: list[float] = []
        try:
            for _ in range(args.runs):
                down(stack, volumes=True)
                colds.append(lifecycle.up(stack, timeout=120).phases)
                mark = time.monotonic()
                lifecycle.up(stack, timeout=120)
                warms.append(time.monotonic() - mark)
        finally:
            down(stack, volumes=True)

    for name in ("prepare", "bus", "components", "total"):
        values = [phases[name] for phases in colds]
        print(
            f"cold up, {name:<10}: median {statistics.median(values):.2f} s (runs: "
            + ", ".join(f"{v:.2f}" for v in values)
            + ")"
        )
    print(f"cold up of 4 components: {statistics.median(p['total'] for p in colds):.2f} s (goal < 10 s)")
    print(f"warm up on the running stack: median {statistics.median(warms):.2f} s")


if __name__ == "__main__":
    main()

"""Networks that scale (docs/networks.md): one stack of 100 probe components, then five stacks of 20
side by side, each network on its own small subnet of networks.pool. Before issue 20 each of those
networks took one of the engine's ~31 default ranges (a /16 or a /20), and 24 components failed.

For each case it prints the wall time of `nachos-deploy up` and the time per component, next to the
anchor: plain `docker compose up -d --wait` of the same rendered files (what nachos-deploy adds on
top: the bus proven first, the judging). The stacks are removed with `down --volumes` after each
run. Heavy: run it when the machine is otherwise idle. No pass/fail. Usage:

    .venv/bin/python benchmarks/networks.py [--big 100] [--stacks 5] [--each 20] [--skip-anchor] [--skip-big]
"""

from __future__ import annotations

import argparse
import ipaddress
import itertools
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import yaml

from nachos_deploy.core import subnets
from nachos_deploy.core.config import HEALTHCHECK_BUDGET, DeployConfig
from nachos_deploy.core.plan import make_plan
from nachos_deploy.docker import engine
from tests import test_network_pools as pools

TIMEOUT = 1800


def document(project: str, count: int, budget: float | None = None) -> dict[str, object]:
    """tests/test_network_pools.py's stack of ``count`` probe tools in the default pool. ``budget``:
    the stack's healthchecks.budget (its checks' runs a second), when not nachos-deploy's default."""
    found = pools.document(project, count, None)
    if budget is not None:
        found["healthchecks"] = {"budget": budget}
    return found


def deploy_file(folder: Path, project: str, count: int, budget: float | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "nachos-deploy.yaml"
    path.write_text(yaml.safe_dump(document(project, count, budget)))
    return path


def projects(name: str, stacks: int, each: int) -> list[str]:
    """Random names whose blocks of the default pool overlap neither each other nor a network the
    engine has now: two names can draw overlapping blocks, and `up` then moves one of them
    (docs/networks.md#collisions), but the anchor, plain `docker compose up` of the rendered files,
    would be refused."""
    taken = [network for n in engine.engine_subnets() for network in subnets.ipv4_networks(n.subnets)]
    while True:
        names = [f"bench-net-{name}-{index}-{uuid.uuid4().hex[:6]}" for index in range(stacks)]
        plans = [make_plan(DeployConfig.model_validate(document(n, each))).subnets for n in names]
        blocks = [ipaddress.IPv4Network(p.block) for p in plans if p is not None]
        apart = not any(one.overlaps(two) for one, two in itertools.combinations(blocks, 2))
        free = not any(block.overlaps(other) for block in blocks for other in taken)
        if apart and free:
            return names


def nachos(file: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "nachos_deploy", args[0], "-c", str(file), *args[1:]],
        cwd=file.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def compose(file: Path, *args: str) -> subprocess.Popen[str]:
    rendered = file.parent / ".nachos" / "docker-compose.yml"
    return subprocess.Popen(
        ["docker", "compose", "-f", str(rendered), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


class Failed(Exception):
    """A run that did not end with exit 0: reported beside the figures, and the next case still runs."""


def finish(processes: list[subprocess.Popen[str]], what: str) -> None:
    failures = []
    for process in processes:
        _, err = process.communicate(timeout=TIMEOUT)
        if process.returncode != 0:
            first = next((line for line in err.splitlines() if line.startswith("error")), err[-300:])
            failures.append(f"{what} failed (exit {process.returncode}): {first[:300]}")
    if failures:
        raise Failed("; ".join(failures))


def say(lines: list[str], line: str) -> None:
    lines.append(line)
    print(line, flush=True)


def removed(
    finisher: Callable[[list[subprocess.Popen[str]], str], None],
    processes: list[subprocess.Popen[str]],
    what: str,
    lines: list[str],
) -> None:
    """A removal that fails (Docker 20.10 under load can keep a stale endpoint on a network) is said
    and the benchmark goes on: the next stacks take other names and blocks."""
    try:
        finisher(processes, what)
    except Failed as failed:
        say(lines, str(failed)[:300])


def load() -> str:
    """The 1-minute load average now: on a shared machine the figures mean little without it."""
    return f"load {os.getloadavg()[0]:.1f} before"


def timed(start: list[subprocess.Popen[str]], what: str) -> float:
    mark = time.monotonic()
    finish(start, what)
    return time.monotonic() - mark


def case(folder: Path, name: str, stacks: int, each: int, anchor: bool) -> list[str]:
    """``stacks`` stacks of ``each`` components at once: nachos-deploy's up, then Compose's. Stacks
    side by side share the engine's healthcheck budget, as docs/components.md advises: each gets
    healthchecks.budget = the default / ``stacks`` (five stacks of 20 at 12 a second each ran 60
    a second, and their checks overran their timeouts)."""
    budget = HEALTHCHECK_BUDGET / stacks if stacks > 1 else None
    files = [
        deploy_file(folder / f"{name}-{index}", project, each, budget)
        for index, project in enumerate(projects(name, stacks, each))
    ]
    if budget is not None:
        print(f"{name}: healthchecks.budget {budget:g} a second in each stack", flush=True)
    total = stacks * each
    lines: list[str] = []
    try:
        finish([nachos(file, "render") for file in files], "render")
        before = load()
        try:
            seconds = timed(
                [nachos(file, "up", "--timeout", str(TIMEOUT)) for file in files], "nachos-deploy up"
            )
            say(
                lines,
                f"{name}: {stacks} x {each} components, nachos-deploy up: {seconds:.1f} s, "
                f"{seconds / total:.3f} s per component ({before})",
            )
        except Failed as failed:
            say(lines, f"{name}: {stacks} x {each} components, {failed} ({before})")
        removed(finish, [nachos(file, "down", "--volumes", "--yes") for file in files], "down", lines)
        if anchor:
            before = load()
            try:
                seconds = timed([compose(file, "up", "-d", "--wait") for file in files], "docker compose up")
                say(
                    lines,
                    f"{name}: {stacks} x {each} components, docker compose up -d --wait (anchor): "
                    f"{seconds:.1f} s, {seconds / total:.3f} s per component ({before})",
                )
            except Failed as failed:
                say(lines, f"{name}: {stacks} x {each} components, {failed} ({before})")
            downs = [compose(file, "down", "-v", "-t", "2") for file in files]
            removed(finish, downs, "docker compose down", lines)
    finally:
        for file in files:
            subprocess.run(
                [sys.executable, "-m", "nachos_deploy", "down", "-c", str(file), "--volumes", "--yes"],
                cwd=file.parent,
                capture_output=True,
            )
    print(f"{name}: load average after the case {os.getloadavg()[0]:.1f} (2 cores)", flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big", type=int, default=100, help="components of the one big stack")
    parser.add_argument("--stacks", type=int, default=5, help="stacks side by side")
    parser.add_argument("--each", type=int, default=20, help="components of each of those stacks")
    parser.add_argument("--skip-anchor", action="store_true", help="no plain `docker compose up`")
    parser.add_argument("--skip-big", action="store_true", help="only the stacks side by side")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.1f} (2 cores)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if not args.skip_big:
            case(folder, "one", 1, args.big, not args.skip_anchor)
        case(folder, "side-by-side", args.stacks, args.each, not args.skip_anchor)


if __name__ == "__main__":
    main()

"""nachos-deploy beside the engine's floor and beside `docker compose --wait`, in one run.

Every command runs as a subprocess on the same rendered files, interleaved round by round (so a
busy moment of the machine hits all of them alike), from the same starting state; the figures are
medians. Printed side by side with the issue's targets; no pass/fail (see `make bench`). Compose
waits for `bus` alone (as `up --only bus` gates on the bus, not on its forwarder's own check).

- bus only, from nothing: the floor (`docker compose up -d bus bus-ports`, then GET /healthz through
  the published port every 10 ms), `nachos-deploy up --only bus` after `nachos-deploy down --volumes`
  in the same folder (its output written before), as a first up in a fresh folder (a new deploy file
  and output folder each round: what every CI job gets), and `compose up -d --wait` with the rendered
  1 s healthcheck and with the 10 s interval of the platform's own compose file;
- the demo stack (four probe components with their sidecars), from nothing: `nachos-deploy up` and
  Compose's best on the same file: `compose up -d`, then `compose up -d --wait` of the services that
  have a healthcheck (since issue 18 every long-running one has: a component's asks whether it is on
  the bus, so Compose now waits for what `up` proves; before, the components whose check was off
  were left out);
- the running demo stack: an unchanged `nachos-deploy up`, `nachos-deploy status`;
- `nachos-deploy down` and `docker compose down` of the running demo stack.

Usage: .venv/bin/python benchmarks/ratios.py [--runs 5] [--prefix bench]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "nachos_deploy"]
PROBE = "nachos-deploy/probe:latest"


def timed(command: list[str], **kwargs: object) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, **kwargs)  # type: ignore[call-overload]
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}): {done.stderr[-800:]}")
    return elapsed


class Stack:
    """One deploy file, rendered once, and the commands that act on it."""

    def __init__(
        self, folder: Path, body: str, interval: str = "1s", prefix: str = "bench", warm: bool = True
    ) -> None:
        self.project = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.file = folder / f"{self.project}.yaml"
        self.file.write_text(
            f"project: {self.project}\noutput: {self.project}\n"
            # publish_monitor: the floor polls /healthz through the forwarder (since issue 19 the
            # monitoring port is not published by default); nachos-deploy runs the same files.
            "bus: {client_port: 0, monitor_port: 0, publish_monitor: true, "
            f"healthcheck_interval: {interval}}}\n{body}"
        )
        self.output = folder / self.project
        if warm:  # the first up makes the credentials the rendered files mount; compose runs reuse them
            subprocess.run([*CLI, "up", "-c", str(self.file)], check=True, capture_output=True, timeout=300)
            self.down()

    def cli(self, *args: str) -> list[str]:
        return [*CLI, *args, "-c", str(self.file)]

    def compose(self, *args: str) -> list[str]:
        files = ["-f", str(self.output / "docker-compose.yml")]
        return [
            "docker",
            "compose",
            "-p",
            self.project,
            *files,
            "--project-directory",
            str(self.output),
            *args,
        ]

    def checked(self) -> list[str]:
        """Services with a healthcheck Compose can wait for."""
        document = yaml.safe_load((self.output / "docker-compose.yml").read_text())
        return sorted(
            name
            for name, service in document["services"].items()
            if service.get("healthcheck") and not service["healthcheck"].get("disable")
        )

    def compose_wait(self) -> float:
        return timed(self.compose("up", "-d")) + timed(self.compose("up", "-d", "--wait", *self.checked()))

    def down(self) -> float:
        return timed(self.compose("down", "--volumes", "--timeout", "10"))

    def floor(self) -> float:
        """Create and start the bus and its forwarder, then poll /healthz every 10 ms."""
        start = time.perf_counter()
        timed(self.compose("up", "-d", "bus", "bus-ports"))
        port = (
            subprocess.run(
                self.compose("port", "bus-ports", "8222"), capture_output=True, text=True, check=True
            )
            .stdout.strip()
            .rsplit(":", 1)[-1]
        )
        if not port.isdigit():
            raise SystemExit(f"{self.project}: bus-ports publishes no monitoring port (8222)")
        deadline = start + 120
        while time.perf_counter() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as answer:
                    if answer.status == 200:
                        return time.perf_counter() - start
            except OSError:
                pass
            time.sleep(0.01)
        raise SystemExit(f"{self.project}: the bus did not answer /healthz within 120 s")


def compile_package() -> None:
    """Byte-compile nachos_deploy first, as an installed wheel is: with PYTHONDONTWRITEBYTECODE set
    (as on these machines), a changed module would otherwise be compiled on every start (~30 ms)."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "nachos_deploy")], check=True)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def run_rounds(runs: int, steps: dict[str, Callable[[], float]], figures: dict[str, list[float]]) -> None:
    for _ in range(runs):
        for name, step in steps.items():
            figures.setdefault(name, []).append(step())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--prefix", default="bench", help="project names start with this (on a shared engine, yours)"
    )
    args = parser.parse_args()
    compile_package()
    figures: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        bus_only = "components: {gateway: {enabled: false}, llm-proxy: {enabled: false}}\n"
        demo = (
            "components:\n"
            f"  gateway: {{image: {PROBE}, egress: false}}\n"
            f"  llm-proxy: {{image: {PROBE}, egress: false}}\n"
            f"  webchat: {{enabled: true, image: {PROBE}}}\n"
            f"  filesystem: {{enabled: true, image: {PROBE}}}\n"
        )
        bus = Stack(folder, bus_only, prefix=args.prefix)
        slow = Stack(folder, bus_only, "10s", prefix=args.prefix)
        stack = Stack(folder, demo, prefix=args.prefix)

        def then_down(target: Stack, command: list[str]) -> Callable[[], float]:
            def step() -> float:
                elapsed = timed(command)
                target.down()
                return elapsed

            return step

        def after_own_down() -> float:
            """An up after `nachos-deploy down` in the same folder (its files written before)."""
            elapsed = timed(bus.cli("up", "--only", "bus"))
            timed(bus.cli("down", "--volumes", "--yes"))
            return elapsed

        def fresh_folder() -> float:
            """A first up in a fresh folder: a new deploy file, output folder and project, as a CI
            job from a fresh clone gets (no record, nothing rendered yet, no credentials)."""
            fresh = Stack(folder, bus_only, prefix=args.prefix, warm=False)
            elapsed = timed(fresh.cli("up", "--only", "bus"))
            timed(fresh.cli("down", "--volumes", "--yes"))
            return elapsed

        def floor() -> float:
            elapsed = bus.floor()
            bus.down()
            return elapsed

        run_rounds(
            args.runs,
            {
                "bus: floor": floor,
                "bus: nachos-deploy up --only bus": after_own_down,
                "bus: the same, first up in a fresh folder": fresh_folder,
                "bus: compose up --wait (1s check)": then_down(bus, bus.compose("up", "-d", "--wait", "bus")),
                "bus: compose up --wait (10s check)": then_down(
                    slow, slow.compose("up", "-d", "--wait", "bus")
                ),
            },
            figures,
        )

        def demo_round() -> float:
            elapsed = timed(stack.cli("up"))
            figures.setdefault("demo: unchanged nachos-deploy up", []).append(timed(stack.cli("up")))
            figures.setdefault("demo: nachos-deploy status", []).append(timed(stack.cli("status")))
            figures.setdefault("demo: nachos-deploy down", []).append(timed(stack.cli("down")))
            stack.compose_wait()
            figures.setdefault("demo: compose down", []).append(timed(stack.compose("down")))
            stack.down()
            return elapsed

        def compose_demo() -> float:
            elapsed = stack.compose_wait()
            stack.down()
            return elapsed

        run_rounds(
            args.runs,
            {"demo: nachos-deploy up": demo_round, "demo: compose up --wait": compose_demo},
            figures,
        )
        for target in (bus, slow, stack):
            target.down()

    def m(name: str) -> float:
        return median(figures[name])

    print(f"medians of {args.runs} runs, seconds")
    for name, values in figures.items():
        print(f"  {name:<40} {median(values):6.2f}   ({', '.join(f'{v:.2f}' for v in values)})")
    print("ratios (target)")
    rows = [
        ("bus up / floor", m("bus: nachos-deploy up --only bus") / m("bus: floor"), "<= 1.3"),
        ("bus first up / floor", m("bus: the same, first up in a fresh folder") / m("bus: floor"), "<= 1.4"),
        (
            "bus up / compose --wait (1s)",
            m("bus: nachos-deploy up --only bus") / m("bus: compose up --wait (1s check)"),
            "",
        ),
        (
            "bus up / compose --wait (10s)",
            m("bus: nachos-deploy up --only bus") / m("bus: compose up --wait (10s check)"),
            "",
        ),
        ("demo up / compose --wait", m("demo: nachos-deploy up") / m("demo: compose up --wait"), "<= 0.6"),
        ("unchanged up (s)", m("demo: unchanged nachos-deploy up"), "< 1 s"),
        ("status (s)", m("demo: nachos-deploy status"), "< 0.5 s"),
        ("down / compose down", m("demo: nachos-deploy down") / m("demo: compose down"), "<= 1.2"),
    ]
    for name, value, goal in rows:
        print(f"  {name:<40} {value:6.2f}   {goal}")


if __name__ == "__main__":
    main()
